/*
 * ops.c -- the public entry points. Each has one shape:
 *
 *     validate arguments -> hash the key (no lock needed: the seed is
 *     immutable) -> lock -> table work -> commit -> unlock -> return rc
 *
 * with a single unlock exit. Nothing inside the lock allocates memory, makes
 * a system call (clock_gettime is a vDSO read) or calls back into Python.
 */
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>

#include "layout.h"

static inline bool expired(const rec_t *r, uint64_t now)
{
    return r->expires && r->expires <= now;
}

static inline uint64_t *word8(rec_t *r) { return (uint64_t *)(void *)&r->klen; }

/* The 8-byte word at record offset 8, with a new type and version. */
static inline uint64_t word8_with(const rec_t *r, int type, uint32_t ver)
{
    rec_t t = *r;
    uint64_t w;
    t.type = (uint8_t)type;
    t.ver = ver;
    memcpy(&w, &t.klen, 8);
    return w;
}

static inline void lower_hint(header_t *H, uint64_t deadline)
{
    if (deadline && deadline < H->exp_hint)
        H->exp_hint = deadline; /* unlogged: a hint that is too early only costs a scan */
}

/* Give a live record a new deadline (logged), keeping n_ttl right. */
static void set_deadline(shmdict_t *h, rec_t *r, uint64_t deadline)
{
    header_t *H = h->hdr;
    if (r->expires == deadline)
        return;
    if (!r->expires != !deadline)
        w64(h, &H->n_ttl, deadline ? H->n_ttl + 1 : H->n_ttl - 1);
    lower_hint(H, deadline);
    w64(h, &r->expires, deadline);
}

static void fill(rec_t *r, int cls, const char *key, size_t klen, const value_t *v, uint64_t deadline,
                 uint32_t ver)
{
    r->expires = deadline;
    r->klen = (uint16_t)klen;
    r->type = (uint8_t)v->type;
    r->cls = (uint8_t)cls;
    r->ver = ver;
    if (is_numeric(v->type)) {
        r->num.u = v->num;
        memcpy(r->data, key, klen);
    } else {
        r->num.s.vlen = (uint32_t)v->len;
        r->num.s.reserved = 0;
        memcpy(r->data, key, klen);
        if (v->len)
            memcpy(r->data + klen, v->buf, v->len);
    }
}

/* Rewrite the live record `old` in place with key = v: its block is large
 * enough. The old bytes go to the backup area first (wbackup), so a crash
 * restores them. */
static void rewrite(shmdict_t *h, rec_t *old, const char *key, size_t klen, uint64_t hash,
                    const value_t *v, uint64_t deadline, uint32_t *ver_out)
{
    header_t *H = h->hdr;
    uint64_t old_bytes = rec_bytes(old); /* a list's whole element area too */
    uint32_t ver = next_ver(old->ver);
    bool had_ttl = old->expires != 0;
    wbackup(h, old, old_bytes);
    FAULT(OVERWRITE_BACKED);
    fill(old, old->cls & 0x7f, key, klen, v, deadline, ver);
    FAULT(OVERWRITE_REWRITTEN);
    if (had_ttl != (deadline != 0))
        w64(h, &H->n_ttl, deadline ? H->n_ttl + 1 : H->n_ttl - 1);
    lower_hint(H, deadline);
    note_change(h, hash, EV_SET, key, klen);
    commit(h);
    *ver_out = ver;
}

/* Can the record `old` be rewritten in place with a record of `units`? */
static bool fits_in_place(const rec_t *old, uint64_t units)
{
    uint64_t old_bytes = rec_bytes(old);
    return units <= class_units(old->cls & 0x7f) && old_bytes <= BACKUP_MAX;
}

static int evict_some(shmdict_t *h, int64_t keep, uint64_t units, uint64_t *evicted);
static int64_t live_count(shmdict_t *h, bool reclaim);

/* Store key = v with the given deadline: insert, overwrite in place, or
 * replace with a new block. Commits; on failure nothing of this store is
 * applied.
 *
 * When there is no room it escalates, cheapest first: (0) the exact class and
 * the bump pointer; (1) the same after reclaiming every expired record;
 * (2) after a defrag pass, also borrowing a block of a larger class. An update
 * that fits its key's current block is rewritten in place rather than refused. */
int put(shmdict_t *h, const char *key, size_t klen, uint64_t hash, const value_t *v,
               uint64_t deadline, uint64_t now, int flags, uint32_t *ver_out)
{
    header_t *H = h->hdr;
    uint64_t units = rec_units(klen, v->type, v->len);
    if (class_of(units) >= NCLASS || units > h->units - FIRST_UNIT)
        return SHMDICT_ETOOBIG;
    if (H->n_ttl && reclaim_expired(h, now, false) < 0)
        return SHMDICT_ECORRUPT;
    uint64_t evicted = 0;

    for (int stage = 0;; stage++) {
        int64_t ins, i = find_slot(h, key, klen, hash, &ins);
        if (i < -1)
            return SHMDICT_ECORRUPT;
        rec_t *old = i >= 0 ? rec_at(h, h->slots[i]) : NULL;
        int rc;
        if (flags & (SHMDICT_SET_NX | SHMDICT_SET_XX)) {
            bool live = old && !(old->expires && old->expires <= (now ? now : (now = now_ns())));
            if ((flags & SHMDICT_SET_NX) && live)
                return SHMDICT_EEXIST;
            if ((flags & SHMDICT_SET_XX) && !live)
                return SHMDICT_ENOTFOUND;
        }

        if (old && is_numeric(old->type) && is_numeric(v->type)) {
            uint32_t ver = next_ver(old->ver);
            w64(h, &old->num.u, v->num);
            FAULT(OVERWRITE_INPLACE);
            w64(h, word8(old), word8_with(old, v->type, ver));
            set_deadline(h, old, deadline);
            note_change(h, hash, EV_SET, key, klen);
            FAULT(OVERWRITE_COUNTED);
            commit(h);
            *ver_out = ver;
            return SHMDICT_OK;
        }
        if (old && fits_in_place(old, units) && class_of(units) == (old->cls & 0x7f)) {
            rewrite(h, old, key, klen, hash, v, deadline, ver_out);
            return SHMDICT_OK;
        }

        uint64_t unit = 0;
        int cls = 0;
        if (!old && (ins < 0 || (h->slots[ins] == SLOT_EMPTY &&
                                 (H->count + H->tombs + 1) * 100 > h->cap * LOAD_NUM)))
            rc = SHMDICT_EFULL; /* the index is at its load limit */
        else
            rc = alloc_units(h, units, stage >= 2, &unit, &cls);

        if (rc == SHMDICT_OK) {
            uint32_t ver = next_ver(old ? old->ver : (uint32_t)H->gen);
            rec_t *r = unit_ptr(h, unit);
            uint64_t bytes = class_units(cls) * UNIT;
            if (old)
                FAULT(OVERWRITE_ALLOCATED);
            else
                FAULT(INSERT_ALLOCATED);
            fill(r, cls, key, klen, v, deadline, ver);
            lower_hint(H, deadline);
            if (old) {
                uint64_t old_unit = slot_unit(h->slots[i]);
                uint64_t old_bytes = class_units(old->cls & 0x7f) * UNIT;
                FAULT(OVERWRITE_FILLED);
                w64(h, &h->slots[i], (hash >> 32) << 32 | unit);
                FAULT(OVERWRITE_PUBLISHED);
                if (!old->expires != !deadline)
                    w64(h, &H->n_ttl, deadline ? H->n_ttl + 1 : H->n_ttl - 1);
                free_block(h, old_unit, old);
                FAULT(OVERWRITE_FREED);
                w64(h, &H->used_bytes, H->used_bytes - old_bytes + bytes);
                FAULT(OVERWRITE_COUNTED);
            } else {
                FAULT(INSERT_FILLED);
                if (h->slots[ins] == SLOT_TOMB)
                    w64(h, &H->tombs, H->tombs - 1);
                w64(h, &h->slots[ins], (hash >> 32) << 32 | unit);
                FAULT(INSERT_PUBLISHED);
                w64(h, &H->count, H->count + 1);
                w64(h, &H->used_bytes, H->used_bytes + bytes);
                if (deadline)
                    w64(h, &H->n_ttl, H->n_ttl + 1);
                FAULT(INSERT_COUNTED);
            }
            note_change(h, hash, EV_SET, key, klen);
            commit(h);
            *ver_out = ver;
            return SHMDICT_OK;
        }
        if (rc != SHMDICT_EFULL)
            return rc;
        if (old && fits_in_place(old, units)) {
            rewrite(h, old, key, klen, hash, v, deadline, ver_out); /* a full dict still takes an update that fits */
            return SHMDICT_OK;
        }
        if (stage == 0) {
            if (reclaim_expired(h, now ? now : (now = now_ns()), true) < 0)
                return SHMDICT_ECORRUPT;
        } else if (stage == 1) {
            if (defrag(h) != SHMDICT_OK)
                return SHMDICT_ECORRUPT;
        } else if ((H->flags & HF_EVICT) && !(flags & SHMDICT_SET_NOEVICT)) {
            rc = evict_some(h, i, units, &evicted); /* EFULL once nothing is left to evict */
            if (rc != SHMDICT_OK)
                return rc;
            stage = 1; /* the loop's stage++ retries with borrowing */
        } else {
            return SHMDICT_EFULL;
        }
    }
}

/* Find a live (unexpired) record. Returns slot index, -1, or ECORRUPT. */
int64_t lookup(shmdict_t *h, const char *key, size_t klen, uint64_t hash, rec_t **r_out,
                      uint64_t *now)
{
    int64_t ins, i = find_slot(h, key, klen, hash, &ins);
    if (i < 0)
        return i;
    rec_t *r = rec_at(h, h->slots[i]);
    if (r->expires) {
        if (!*now)
            *now = now_ns();
        if (r->expires <= *now)
            return -1;
    }
    if (__builtin_expect(h->hdr->flags & HF_EVICT, 0) && !(r->cls & CLS_REF))
        r->cls |= CLS_REF; /* CLOCK: referenced (an unlogged hint) */
    *r_out = r;
    return i;
}

static inline int check_key(size_t klen)
{
    return klen == 0 || klen > SHMDICT_MAX_KEY ? SHMDICT_EINVAL : SHMDICT_OK;
}

#define BEGIN(h, key, klen)                                                    \
    if (check_key(klen))                                                       \
        return SHMDICT_EINVAL;                                                 \
    uint64_t hash = hash_key(h, key, klen);                                    \
    int rc = lock_dict(h);                                                     \
    if (rc)                                                                    \
        return rc;                                                             \
    rec_t *r = NULL;                                                           \
    uint64_t now = 0;                                                          \
    int64_t i = lookup(h, key, klen, hash, &r, &now);                          \
    (void)i

/* Copy r's value out; returns its type. */
static int read_value(const rec_t *r, shmdict_out_t *out, char *buf, size_t cap)
{
    if (__builtin_expect(r->type == SHMDICT_T_LIST, 0))
        return SHMDICT_EWRONGTYPE; /* get on a list key */
    out->ver = r->ver;
    if (is_numeric(r->type)) {
        out->i = r->num.i;
        out->f = r->num.f;
    } else {
        uint64_t n = r->num.s.vlen;
        out->len = n;
        if (n <= cap && n)
            memcpy(buf, r->data + r->klen, n);
    }
    return r->type;
}

int shmdict_get(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out, char *buf, size_t cap)
{
    BEGIN(h, key, klen);
    rc = i < -1 ? SHMDICT_ECORRUPT : i < 0 ? SHMDICT_ENOTFOUND : read_value(r, out, buf, cap);
    ++*(i >= 0 ? &h->hdr->st_hits : &h->hdr->st_misses); /* statistics, unlogged */
    unlock_dict(h);
    return rc;
}

int shmdict_pop(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out, char *buf, size_t cap)
{
    BEGIN(h, key, klen);
    if (i < -1) {
        rc = SHMDICT_ECORRUPT;
    } else if (i < 0) {
        rc = SHMDICT_ENOTFOUND;
    } else {
        rc = read_value(r, out, buf, cap);
        if (rc < 0) {
            /* a list: nothing to pop this way */
        } else if (!is_numeric(r->type) && out->len > cap) {
            rc = SHMDICT_ERANGE;
        } else if (delete_at(h, (uint64_t)i, r)) {
            rc = SHMDICT_ECORRUPT; /* refused before any store */
        } else {
            commit(h);
        }
    }
    unlock_dict(h);
    return rc;
}

static int make_value(value_t *v, int type, int64_t i, double f, const char *val, size_t vlen)
{
    v->type = type;
    v->buf = val;
    v->len = 0;
    switch (type) {
    case SHMDICT_T_BOOL:
        v->num = i != 0;
        return SHMDICT_OK;
    case SHMDICT_T_INT:
        v->num = (uint64_t)i;
        return SHMDICT_OK;
    case SHMDICT_T_FLOAT:
        memcpy(&v->num, &f, 8);
        return SHMDICT_OK;
    case SHMDICT_T_STR:
    case SHMDICT_T_BYTES:
        if (vlen > UINT32_MAX)
            return SHMDICT_ETOOBIG;
        v->len = vlen;
        v->num = 0;
        return SHMDICT_OK;
    default:
        return SHMDICT_EINVAL;
    }
}

int shmdict_set(shmdict_t *h, const char *key, size_t klen, int type, int64_t i, double f,
                const char *val, size_t vlen, double exptime, int flags)
{
    value_t v;
    if (check_key(klen) || isnan(exptime) || flags < 0 || (flags & ~SHMDICT_SET_MASK) ||
        (flags & SHMDICT_SET_NX && flags & SHMDICT_SET_XX))
        return SHMDICT_EINVAL;
    int rc = make_value(&v, type, i, f, val, vlen);
    if (rc)
        return rc;
    uint64_t hash = hash_key(h, key, klen);
    rc = lock_dict(h);
    if (rc)
        return rc;
    uint64_t now = exptime > 0 || h->hdr->n_ttl ? now_ns() : 0;
    uint32_t ver;
    rc = put(h, key, klen, hash, &v, deadline_ns(now, exptime), now, flags, &ver);
    unlock_dict(h);
    return rc;
}

int shmdict_delete(shmdict_t *h, const char *key, size_t klen)
{
    if (check_key(klen))
        return SHMDICT_EINVAL;
    uint64_t hash = hash_key(h, key, klen);
    int rc = lock_dict(h);
    if (rc)
        return rc;
    int64_t ins, i = find_slot(h, key, klen, hash, &ins);
    if (i < -1) {
        rc = SHMDICT_ECORRUPT;
    } else if (i < 0) {
        rc = SHMDICT_ENOTFOUND;
    } else {
        rec_t *r = rec_at(h, h->slots[i]);
        bool was_live = !expired(r, r->expires ? now_ns() : 0);
        if (delete_at_op(h, (uint64_t)i, r, was_live ? EV_DELETE : EV_EXPIRE)) { /* expired: reclaimed */
            rc = SHMDICT_ECORRUPT;
        } else {
            commit(h);
            rc = was_live ? SHMDICT_OK : SHMDICT_ENOTFOUND;
        }
    }
    unlock_dict(h);
    return rc;
}

/* A float sum of finite operands that is not finite overflowed: refused like
 * an int overflow, value unchanged (an inf or nan already stored stays as
 * Python arithmetic would have it). */
static bool float_overflow(double a, double b, double sum)
{
    return isfinite(a) && isfinite(b) && !isfinite(sum);
}

int shmdict_incr(shmdict_t *h, const char *key, size_t klen, int dtype, int64_t di, double df,
                 int itype, int64_t ii, double fi, double init_ttl, int set_ttl, double exptime,
                 shmdict_out_t *out)
{
    if ((dtype != SHMDICT_T_INT && dtype != SHMDICT_T_FLOAT) ||
        (itype != 0 && itype != SHMDICT_T_INT && itype != SHMDICT_T_FLOAT) || isnan(init_ttl) ||
        isnan(exptime))
        return SHMDICT_EINVAL;
    BEGIN(h, key, klen);
    if (!now)
        now = now_ns();
    value_t v = {0, 0, NULL, 0};
    uint64_t deadline;
    if (i < -1) {
        rc = SHMDICT_ECORRUPT;
        goto out;
    }
    if (i >= 0) {
        int type = r->type;
        if (type != SHMDICT_T_INT && type != SHMDICT_T_FLOAT) {
            rc = SHMDICT_ENOTNUM;
            goto out;
        }
        if (type == SHMDICT_T_INT && dtype == SHMDICT_T_INT) {
            int64_t sum;
            if (__builtin_add_overflow(r->num.i, di, &sum)) {
                rc = SHMDICT_EOVERFLOW;
                goto out;
            }
            v.type = SHMDICT_T_INT;
            v.num = (uint64_t)sum;
        } else {
            double a = type == SHMDICT_T_INT ? (double)r->num.i : r->num.f;
            double b = dtype == SHMDICT_T_INT ? (double)di : df;
            double sum = a + b;
            if (float_overflow(a, b, sum)) {
                rc = SHMDICT_EOVERFLOW;
                goto out;
            }
            v.type = SHMDICT_T_FLOAT;
            memcpy(&v.num, &sum, 8);
        }
        uint32_t ver = next_ver(r->ver);
        w64(h, &r->num.u, v.num);
        FAULT(INCR_STORED);
        w64(h, word8(r), word8_with(r, v.type, ver));
        if (set_ttl)
            set_deadline(h, r, deadline_ns(now, exptime));
        note_change(h, hash, EV_SET, key, klen);
        FAULT(INCR_TTL);
        commit(h);
        out->ver = ver;
    } else {
        if (!itype) {
            rc = SHMDICT_ENOTFOUND;
            goto out;
        }
        if (itype == SHMDICT_T_INT && dtype == SHMDICT_T_INT) {
            int64_t sum;
            if (__builtin_add_overflow(ii, di, &sum)) {
                rc = SHMDICT_EOVERFLOW;
                goto out;
            }
            v.type = SHMDICT_T_INT;
            v.num = (uint64_t)sum;
        } else {
            double a = itype == SHMDICT_T_INT ? (double)ii : fi;
            double b = dtype == SHMDICT_T_INT ? (double)di : df;
            double sum = a + b;
            if (float_overflow(a, b, sum)) {
                rc = SHMDICT_EOVERFLOW;
                goto out;
            }
            v.type = SHMDICT_T_FLOAT;
            memcpy(&v.num, &sum, 8);
        }
        deadline = deadline_ns(now, set_ttl ? exptime : init_ttl);
        rc = put(h, key, klen, hash, &v, deadline, now, SHMDICT_SET_ALWAYS, &out->ver);
        if (rc)
            goto out;
    }
    memcpy(&out->i, &v.num, 8);
    memcpy(&out->f, &v.num, 8);
    rc = v.type;
out:
    unlock_dict(h);
    return rc;
}

int shmdict_ttl(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out)
{
    BEGIN(h, key, klen);
    if (i < -1) {
        rc = SHMDICT_ECORRUPT;
    } else if (i < 0) {
        rc = SHMDICT_ENOTFOUND;
    } else {
        out->f = r->expires ? (double)(r->expires - now) / 1e9 : 0.0;
        out->ver = r->ver;
    }
    unlock_dict(h);
    return rc;
}

int shmdict_expire(shmdict_t *h, const char *key, size_t klen, double exptime)
{
    if (isnan(exptime))
        return SHMDICT_EINVAL;
    BEGIN(h, key, klen);
    if (i < -1) {
        rc = SHMDICT_ECORRUPT;
    } else if (i < 0) {
        rc = SHMDICT_ENOTFOUND;
    } else {
        if (!now)
            now = now_ns();
        w64(h, word8(r), word8_with(r, r->type, next_ver(r->ver)));
        set_deadline(h, r, deadline_ns(now, exptime));
        note_change(h, hash, EV_SET, key, klen);
        FAULT(EXPIRE_STORED);
        commit(h);
    }
    unlock_dict(h);
    return rc;
}

int shmdict_flush_all(shmdict_t *h)
{
    int rc = lock_dict_any(h);
    if (rc)
        return rc;
    header_t *H = h->hdr;
    if (H->corrupt)
        H->ulog_n = 0; /* recovery refused this log and left it: the reset below supersedes it */
    w64(h, &H->flush_pending, 1);
    note_flush(h);
    commit(h);
    FAULT(FLUSH_MARKED);
    table_reset(h);
    H->corrupt = 0;
    atomic_signal_fence(memory_order_seq_cst);
    H->flush_pending = 0;
    unlock_dict(h);
    return SHMDICT_OK;
}

/* Call fn(record) for every live record; stops early when fn returns false.
 * Runs under the lock; O(index). */
static int for_each_live(shmdict_t *h, bool (*fn)(rec_t *, void *), void *ctx)
{
    uint64_t now = h->hdr->n_ttl ? now_ns() : 0;
    for (uint64_t i = 0; i < h->cap; i++) {
        uint64_t s = h->slots[i];
        if (s <= SLOT_TOMB)
            continue;
        rec_t *r = rec_at(h, s);
        if (!r)
            return SHMDICT_ECORRUPT;
        if (expired(r, now))
            continue;
        if (!fn(r, ctx))
            break;
    }
    return SHMDICT_OK;
}

static bool count_one(rec_t *r, void *ctx)
{
    (void)r;
    ++*(int64_t *)ctx;
    return true;
}

int64_t shmdict_len(shmdict_t *h)
{
    int rc = lock_dict(h);
    if (rc)
        return rc;
    int64_t n = live_count(h, true);
    unlock_dict(h);
    return n;
}

typedef struct keys_ctx {
    char *buf;
    size_t cap, used;
    uint64_t max, n;
} keys_ctx_t;

static bool pack_key(rec_t *r, void *p)
{
    keys_ctx_t *c = p;
    size_t need = 4 + r->klen;
    if (c->used + need <= c->cap) {
        uint32_t len = r->klen;
        memcpy(c->buf + c->used, &len, 4);
        memcpy(c->buf + c->used + 4, r->data, r->klen);
    }
    c->used += need;
    c->n++;
    return !(c->max && c->n >= c->max);
}

int64_t shmdict_keys(shmdict_t *h, char *buf, size_t cap, uint64_t max_count, shmdict_out_t *out)
{
    int rc = lock_dict(h);
    if (rc)
        return rc;
    keys_ctx_t c = {buf, cap, 0, max_count, 0};
    rc = for_each_live(h, pack_key, &c);
    unlock_dict(h);
    out->len = c.used;
    if (rc)
        return rc;
    return c.used > cap ? SHMDICT_ERANGE : (int64_t)c.n;
}

int shmdict_check(shmdict_t *h, char *msg, size_t cap)
{
    int rc = lock_dict_any(h);
    if (rc)
        return rc;
    rc = table_check(h, msg, cap);
    unlock_dict(h);
    return rc;
}

int shmdict_info(shmdict_t *h, shmdict_info_t *out)
{
    int rc = lock_dict_any(h);
    if (rc)
        return rc;
    header_t *H = h->hdr;
    out->size = H->user_size;
    out->file_size = h->map_size;
    out->capacity = (h->units - FIRST_UNIT) * UNIT;
    out->index_cap = h->cap;
    out->count = H->count;
    out->used_bytes = H->used_bytes;
    out->free_bytes = out->capacity - H->used_bytes;
    out->recoveries = H->recoveries;
    out->creator_pid = H->creator_pid;
    out->dev = h->dev;
    out->ino = h->ino;
    out->events_cap = h->ev_cap;
    out->layout_version = H->layout_version;
    unlock_dict(h);
    return SHMDICT_OK;
}

const char *shmdict_strerror(int rc)
{
    switch (rc) {
    case SHMDICT_OK: return "success";
    case SHMDICT_ENOTFOUND: return "key not found";
    case SHMDICT_EFULL: return "dict is full";
    case SHMDICT_ETOOBIG: return "item is larger than the dict can hold";
    case SHMDICT_ECORRUPT: return "dict is corrupt";
    case SHMDICT_ENOTNUM: return "value is not a number";
    case SHMDICT_EOVERFLOW: return "overflow: the result does not fit its type";
    case SHMDICT_ESYS: return "system call failed";
    case SHMDICT_EVERSION: return "not a shmdict file of a compatible layout version";
    case SHMDICT_ELOCK: return "the dict's lock is unusable";
    case SHMDICT_EINVAL: return "invalid argument";
    case SHMDICT_ERANGE: return "buffer too small";
    case SHMDICT_EEXIST: return "key exists";
    case SHMDICT_EWRONGTYPE: return "wrong kind of value: a list where a scalar is needed, or a scalar where a list is";
    case SHMDICT_ELOCKTIMEOUT: return "timed out waiting for the dict's lock";
    case SHMDICT_EUNTRUSTED: return "the file's owner or mode is not trusted";
    default: return "unknown error";
    }
}

/* ==========================================================================
 * ngx.shared.DICT parity and what its users asked for (README "More
 * operations"). Same shape as above: validate -> hash -> lock -> table work
 * -> commit -> unlock. Every store goes through put() / w64() / delete_at()
 * and so through the undo log; each new step has a crash point.
 * ========================================================================== */

/* Live records: O(1) when no TTL can have passed (exp_hint says no record
 * expires before it, so count is exact). Otherwise, with reclaim, every
 * expired record is reclaimed (each in its own transaction) and exp_hint
 * moves to the next deadline, so the next calls are O(1) again until it
 * passes; without reclaim (read-only callers), one counting pass. */
static int64_t live_count(shmdict_t *h, bool reclaim)
{
    header_t *H = h->hdr;
    if (H->count > h->cap)
        return SHMDICT_ECORRUPT; /* a scribbled count must not come back as a negative "error code" */
    if (H->n_ttl == 0)
        return (int64_t)H->count;
    uint64_t now = now_ns();
    if (H->exp_hint && now < H->exp_hint)
        return (int64_t)H->count;
    if (reclaim) {
        int rc = reclaim_expired(h, now, true);
        FAULT(LEN_RECLAIMED);
        return rc < 0 ? rc : (int64_t)H->count;
    }
    int64_t n = 0;
    int rc = for_each_live(h, count_one, &n);
    return rc ? rc : n;
}

/* ---- eviction ---------------------------------------------------------------
 *
 * CLOCK over the index. Every keyed access that finds a live record (lookup)
 * sets its referenced bit (cls bit 7, an unlogged hint). When a put finds no
 * room even after reclaiming and defragmenting, the hand sweeps the index
 * from clock_hand: a referenced record loses its bit and is passed over, the
 * first unreferenced one is evicted (deleted in its own transaction,
 * counted). Each call evicts one victim; put() retries the allocation after
 * each, and once the victims freed as many units as the item needs (or no
 * victim is left) a defrag pass merges them. The key being stored (slot
 * `keep`) is never a victim. Bounded: two full turns of the hand, then EFULL
 * (nothing evictable). */
static int evict_some(shmdict_t *h, int64_t keep, uint64_t units, uint64_t *evicted)
{
    header_t *H = h->hdr;
    uint64_t cap = h->cap, i = H->clock_hand % cap;
    for (uint64_t n = 0; n < 2 * cap + 1; n++, i = i + 1 == cap ? 0 : i + 1) {
        uint64_t s = h->slots[i];
        if (s <= SLOT_TOMB || (int64_t)i == keep)
            continue;
        rec_t *r = rec_at(h, s);
        if (!r)
            return SHMDICT_ECORRUPT;
        if (r->cls & CLS_REF) {
            r->cls &= (uint8_t)~CLS_REF; /* second chance; a hint, unlogged */
            continue;
        }
        uint64_t got = class_units(r->cls & 0x7f);
        if (delete_at_op(h, i, r, EV_EVICT))
            return SHMDICT_ECORRUPT;
        FAULT(EVICT_DELETED);
        commit(h);
        H->clock_hand = i; /* the backward shift may have moved an entry into slot i */
        H->st_evictions++;
        *evicted += got;
        if (*evicted >= units) {
            *evicted = 0;
            if (defrag(h) != SHMDICT_OK)
                return SHMDICT_ECORRUPT;
        }
        return SHMDICT_OK;
    }
    H->clock_hand = i;
    if (*evicted) { /* nothing left to evict: merge what the last victims freed, then retry */
        *evicted = 0;
        return defrag(h) != SHMDICT_OK ? SHMDICT_ECORRUPT : SHMDICT_OK;
    }
    return SHMDICT_EFULL;
}

/* Turn eviction on for the whole dict (it stays on). A plain aligned store
 * under the lock: a policy word, not table state. */
int shmdict_configure(shmdict_t *h, int evict)
{
    if (evict != 0 && evict != 1)
        return SHMDICT_EINVAL;
    int rc = lock_dict(h);
    if (rc)
        return rc;
    if (evict)
        __atomic_store_n(&h->hdr->flags, h->hdr->flags | HF_EVICT, __ATOMIC_RELAXED);
    rc = (int)(h->hdr->flags & HF_EVICT);
    unlock_dict(h);
    return rc;
}

/* ---- get_stale, flush_expired ------------------------------------------------ */

int shmdict_get_stale(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out, char *buf,
                      size_t cap, int *stale)
{
    if (check_key(klen))
        return SHMDICT_EINVAL;
    uint64_t hash = hash_key(h, key, klen);
    int rc = lock_dict(h);
    if (rc)
        return rc;
    int64_t ins, i = find_slot(h, key, klen, hash, &ins);
    if (i < -1) {
        rc = SHMDICT_ECORRUPT;
    } else if (i < 0) {
        rc = SHMDICT_ENOTFOUND;
    } else {
        rec_t *r = rec_at(h, h->slots[i]);
        *stale = expired(r, r->expires ? now_ns() : 0);
        rc = read_value(r, out, buf, cap);
    }
    unlock_dict(h);
    return rc;
}

/* Free up to max_count (0: all) expired records; returns how many. */
int64_t shmdict_flush_expired(shmdict_t *h, uint64_t max_count)
{
    int rc = lock_dict(h);
    if (rc)
        return rc;
    header_t *H = h->hdr;
    int64_t removed = 0;
    uint64_t now = now_ns(), hint = UINT64_MAX, i = 0;
    for (uint64_t todo = H->n_ttl ? h->cap : 0; todo > 0;) {
        uint64_t s = h->slots[i];
        if (s > SLOT_TOMB) {
            rec_t *r = rec_at(h, s);
            if (!r) {
                removed = SHMDICT_ECORRUPT;
                goto out;
            }
            if (expired(r, now)) {
                if (max_count && (uint64_t)removed >= max_count)
                    goto out; /* stop before it: exp_hint stays as it was */
                if (delete_at_op(h, i, r, EV_EXPIRE)) {
                    removed = SHMDICT_ECORRUPT;
                    goto out;
                }
                FAULT(FLUSH_EXPIRED_DELETED);
                commit(h);
                H->st_expired++;
                removed++;
                continue; /* another entry may have shifted into slot i */
            }
            if (r->expires && r->expires < hint)
                hint = r->expires;
        }
        todo--;
        i++;
    }
    H->exp_hint = hint; /* a full pass: no record left expires before hint */
out:
    unlock_dict(h);
    return removed;
}

/* ---- capacity, free_space, stats --------------------------------------------- */

/* The largest block (in units) an insert could obtain right now, following
 * put()'s escalation: the exact class's free list and the bump pointer, then
 * (after reclaiming expired records and a defrag pass) any larger free block
 * split to size. Walks the arena: O(arena), under the lock, read-only.
 * A record is "free" here if it is a free block, or (reclaim would free it)
 * an expired live record. Merged runs count only when put would run a defrag
 * pass (something was freed since the last one, or something expired);
 * otherwise only single blocks count. A new key also needs an index slot: if
 * the index is at its load limit even after reclaiming, nothing fits. */
static int largest_fit(shmdict_t *h, uint64_t now, uint64_t *units_out, uint64_t *expired_out)
{
    header_t *H = h->hdr;
    uint64_t bump = H->bump, best_block = 0, best_run = 0, run = 0, n_expired = 0;
    if (bump < FIRST_UNIT || bump > h->units)
        return SHMDICT_ECORRUPT;
    for (uint64_t u = FIRST_UNIT; u < bump;) {
        rec_t *r = unit_ptr(h, u);
        int c = r->cls & 0x7f;
        if (u + MIN_BLOCK > bump || c < MIN_BLOCK - 1 || c >= NCLASS || u + class_units(c) > bump)
            return SHMDICT_ECORRUPT;
        uint64_t cu = class_units(c);
        bool is_free = r->type == T_FREE;
        if (!is_free && expired(r, now)) {
            is_free = true;
            n_expired++;
        }
        if (is_free) {
            run += cu;
            if (cu > best_block)
                best_block = cu;
        } else {
            if (run >= MIN_BLOCK && carve_units(run) > best_run)
                best_run = carve_units(run);
            run = 0;
        }
        u += cu;
    }
    bool merges = H->frees_since_defrag > 0 || n_expired > 0;
    uint64_t tail = h->units - bump; /* the bump pointer's room */
    if (merges)
        tail += run;                 /* a free run at the end goes back to the bump pointer */
    else if (run >= MIN_BLOCK && carve_units(run) > best_run)
        best_run = carve_units(run);
    uint64_t best = tail ? class_units(class_floor_units(tail)) : 0;
    if (best_block > best)
        best = best_block;
    if (merges && best_run > best)
        best = best_run;
    uint64_t live = H->count - (n_expired <= H->count ? n_expired : H->count);
    if ((live + H->tombs + 1) * 100 > h->cap * LOAD_NUM)
        best = 0; /* no index slot for a new key */
    *units_out = best;
    *expired_out = n_expired;
    return SHMDICT_OK;
}

int shmdict_stats(shmdict_t *h, shmdict_stats_t *out)
{
    int rc = lock_dict(h);
    if (rc)
        return rc;
    header_t *H = h->hdr;
    uint64_t units = 0, n_expired = 0;
    rc = largest_fit(h, now_ns(), &units, &n_expired);
    if (rc == SHMDICT_OK) {
        out->size = H->user_size;
        out->capacity = (h->units - FIRST_UNIT) * UNIT;
        out->free_space = units > REC_HDR / UNIT ? units * UNIT - REC_HDR : 0;
        out->entries = H->count - n_expired;
        out->records = H->count;
        out->expired_pending = n_expired;
        out->used_bytes = H->used_bytes;
        out->free_bytes = out->capacity - H->used_bytes;
        out->index_cap = h->cap;
        out->index_used = H->count + H->tombs;
        out->index_limit = h->cap * LOAD_NUM / 100;
        out->hits = H->st_hits;
        out->misses = H->st_misses;
        out->expired = H->st_expired;
        out->evictions = H->st_evictions;
        out->lock_acquisitions = H->st_locks;
        out->lock_waits = H->st_lock_waits;
        out->lock_wait_ns = H->st_lock_wait_ns;
        out->recoveries = H->recoveries;
        out->evict = (int)(H->flags & HF_EVICT);
    }
    unlock_dict(h);
    return rc;
}

/* ---- cas ------------------------------------------------------------------------ */

/* Does the live record r hold exactly value e (same type, equal value)? */
static bool same_value(const rec_t *r, const value_t *e)
{
    if (r->type != e->type)
        return false;
    if (r->type == SHMDICT_T_FLOAT) {
        double a, b;
        memcpy(&a, &r->num.u, 8);
        memcpy(&b, &e->num, 8);
        return a == b;
    }
    if (is_numeric(r->type))
        return r->num.u == e->num;
    return r->num.s.vlen == e->len && (e->len == 0 || memcmp(r->data + r->klen, e->buf, e->len) == 0);
}

/* Compare-and-set: store new if the live value equals expected (etype 0:
 * expected absent). Returns 1 if stored, 0 if not (out->ver: the version
 * stored), or an error (EFULL / ETOOBIG leave the dict unchanged). */
int shmdict_cas(shmdict_t *h, const char *key, size_t klen, int etype, int64_t ei, double ef,
                const char *eval, size_t elen, int ntype, int64_t ni, double nf, const char *nval,
                size_t nlen, double exptime, shmdict_out_t *out)
{
    value_t e = {0, 0, NULL, 0}, v;
    if (check_key(klen) || isnan(exptime))
        return SHMDICT_EINVAL;
    int vrc = etype ? make_value(&e, etype, ei, ef, eval, elen) : SHMDICT_OK;
    if (vrc == SHMDICT_OK)
        vrc = make_value(&v, ntype, ni, nf, nval, nlen);
    if (vrc)
        return vrc;
    BEGIN(h, key, klen);
    if (i < -1) {
        rc = SHMDICT_ECORRUPT;
    } else if (etype ? i < 0 || !same_value(r, &e) : i >= 0) {
        rc = 0;
    } else {
        if (!now)
            now = now_ns();
        FAULT(CAS_MATCHED);
        rc = put(h, key, klen, hash, &v, deadline_ns(now, exptime), now, SHMDICT_SET_ALWAYS, &out->ver);
        if (rc == SHMDICT_OK)
            rc = 1;
    }
    unlock_dict(h);
    return rc;
}

/* ---- get_many / set_many ---------------------------------------------------------
 *
 * Packed buffers, little-endian, no padding:
 *   keys:   n x (u32 klen, key)
 *   values: n x (u8 type (0 = missing), then 8 bytes for bool/int/float or
 *           u32 vlen + bytes for str/bytes)
 *   items:  n x (u32 klen, key, value as above)  (set_many input, items output) */

static inline uint32_t get_u32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

/* Size of the packed value of r. */
static inline uint64_t packed_size(const rec_t *r)
{
    return 1 + (is_numeric(r->type) ? 8 : 4 + (uint64_t)r->num.s.vlen);
}

static const char *list_area(const rec_t *r);

/* Append r's value at buf+used if it fits; returns the new used. */
static uint64_t pack_value(const rec_t *r, char *buf, size_t cap, uint64_t used)
{
    uint64_t need = packed_size(r);
    if (used + need <= cap) {
        char *p = buf + used;
        *p++ = (char)r->type;
        if (is_numeric(r->type)) {
            memcpy(p, &r->num.u, 8);
        } else {
            uint32_t n = r->num.s.vlen;
            memcpy(p, &n, 4);
            if (n) /* a list: its live elements, packed as in the record */
                memcpy(p + 4, r->type == SHMDICT_T_LIST ? list_area(r) + r->num.s.reserved : r->data + r->klen, n);
        }
    }
    return used + need;
}

/* Read n keys under one lock hold. Returns the number found, or ERANGE with
 * out->len the bytes needed, or EINVAL for a malformed key buffer. */
int64_t shmdict_get_many(shmdict_t *h, const char *keys, size_t keys_len, uint64_t n, char *buf,
                         size_t cap, shmdict_out_t *out)
{
    /* Validate the whole input before locking: bad input changes nothing. */
    uint64_t pos = 0;
    for (uint64_t k = 0; k < n; k++) {
        if (keys_len - pos < 4)
            return SHMDICT_EINVAL;
        uint32_t kl = get_u32(keys + pos);
        if (check_key(kl) || keys_len - pos - 4 < kl)
            return SHMDICT_EINVAL;
        pos += 4 + (uint64_t)kl;
    }
    if (pos != keys_len)
        return SHMDICT_EINVAL;
    int rc = lock_dict(h);
    if (rc)
        return rc;
    header_t *H = h->hdr;
    uint64_t used = 0, now = 0;
    int64_t found = 0;
    pos = 0;
    for (uint64_t k = 0; k < n; k++) {
        uint32_t kl = get_u32(keys + pos);
        const char *key = keys + pos + 4;
        pos += 4 + (uint64_t)kl;
        rec_t *r = NULL;
        int64_t i = lookup(h, key, kl, hash_key(h, key, kl), &r, &now);
        if (i < -1) {
            found = SHMDICT_ECORRUPT;
            goto out;
        }
        if (i < 0) {
            if (used < cap)
                buf[used] = 0;
            used++;
            H->st_misses++;
        } else {
            if (r->type == SHMDICT_T_LIST && list_invalid(r)) {
                found = SHMDICT_ECORRUPT; /* never a truncated or misframed list */
                goto out;
            }
            used = pack_value(r, buf, cap, used);
            H->st_hits++;
            found++;
        }
    }
out:
    unlock_dict(h);
    out->len = used;
    if (found >= 0 && used > cap)
        return SHMDICT_ERANGE;
    return found;
}

/* Parse one packed item at p (remaining len bytes). Returns its size or 0. */
static uint64_t parse_item(const char *p, uint64_t len, const char **key, uint32_t *klen, value_t *v)
{
    if (len < 5)
        return 0;
    uint32_t kl = get_u32(p);
    if (check_key(kl) || len - 4 < (uint64_t)kl + 1)
        return 0;
    *key = p + 4;
    *klen = kl;
    uint64_t at = 4 + (uint64_t)kl;
    int type = (unsigned char)p[at++];
    v->type = type;
    v->buf = NULL;
    v->len = 0;
    if (is_numeric(type)) {
        if (len - at < 8)
            return 0;
        memcpy(&v->num, p + at, 8);
        if (type == SHMDICT_T_BOOL)
            v->num = v->num != 0;
        return at + 8;
    }
    if ((type != SHMDICT_T_STR && type != SHMDICT_T_BYTES) || len - at < 4)
        return 0;
    uint32_t vl = get_u32(p + at);
    at += 4;
    if (len - at < vl)
        return 0;
    v->num = 0;
    v->buf = p + at;
    v->len = vl;
    return at + vl;
}

/* Store n packed items under one lock hold, in order. Returns n, or an error
 * with out->i = the number stored before it (each item is its own
 * transaction: on EFULL the earlier items stay stored). A malformed buffer
 * (EINVAL) or an item that can never fit (ETOOBIG) changes nothing. */
int64_t shmdict_set_many(shmdict_t *h, const char *items, size_t items_len, uint64_t n,
                         double exptime, int flags, shmdict_out_t *out)
{
    const char *key;
    uint32_t kl;
    value_t v;
    out->i = 0;
    if (isnan(exptime) || flags < 0 || (flags & ~SHMDICT_SET_MASK) ||
        (flags & SHMDICT_SET_NX && flags & SHMDICT_SET_XX))
        return SHMDICT_EINVAL;
    uint64_t pos = 0;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t sz = parse_item(items + pos, items_len - pos, &key, &kl, &v);
        if (!sz)
            return SHMDICT_EINVAL;
        uint64_t units = rec_units(kl, v.type, v.len);
        if (class_of(units) >= NCLASS || units > h->units - FIRST_UNIT)
            return SHMDICT_ETOOBIG;
        pos += sz;
    }
    if (pos != items_len)
        return SHMDICT_EINVAL;
    int rc = lock_dict(h);
    if (rc)
        return rc;
    uint64_t now = exptime > 0 || h->hdr->n_ttl ? now_ns() : 0, deadline = deadline_ns(now, exptime);
    int64_t done = 0;
    pos = 0;
    for (uint64_t k = 0; k < n; k++) {
        pos += parse_item(items + pos, items_len - pos, &key, &kl, &v);
        uint32_t ver;
        rc = put(h, key, kl, hash_key(h, key, kl), &v, deadline, now, flags, &ver);
        if (rc == SHMDICT_EEXIST || rc == SHMDICT_ENOTFOUND)
            rc = SHMDICT_OK; /* add/replace semantics: skipped, not an error */
        if (rc)
            break;
        done++;
        FAULT(SET_MANY_ITEM);
    }
    unlock_dict(h);
    out->i = done;
    return rc ? rc : done;
}

/* ---- glob matching (Python's fnmatch.fnmatchcase) --------------------------------
 *
 * '*' any run, '?' one character, '[seq]' / '[!seq]' a set with ranges; a '['
 * without a closing ']' is literal; a ']' first in a set is literal. UTF-8
 * aware ('?' and sets consume a whole code point). Iterative with one
 * backtrack point: O(len(key) * len(pattern)), never recursive. */

static uint32_t utf8_next(const unsigned char *s, uint64_t n, uint64_t *at)
{
    uint64_t i = *at;
    uint32_t c = s[i];
    int extra = c < 0x80 ? 0 : c < 0xe0 ? 1 : c < 0xf0 ? 2 : 3;
    if (c >= 0x80)
        c &= 0x3fu >> extra;
    for (i++; extra > 0 && i < n && (s[i] & 0xc0) == 0x80; extra--, i++)
        c = c << 6 | (s[i] & 0x3f);
    *at = i;
    return c;
}

/* Match c against the set starting at p[at] == '['. Returns the position
 * after the set, or 0 if the set is unterminated (then '[' is literal). */
static uint64_t match_set(const unsigned char *p, uint64_t pn, uint64_t at, uint32_t c, bool *hit)
{
    uint64_t i = at + 1;
    bool neg = false;
    if (i < pn && p[i] == '!') {
        neg = true;
        i++;
    }
    bool first = true, m = false;
    while (i < pn && (first || p[i] != ']')) {
        first = false;
        uint32_t lo = utf8_next(p, pn, &i), hi = lo;
        if (i + 1 < pn && p[i] == '-' && p[i + 1] != ']') {
            i++;
            hi = utf8_next(p, pn, &i);
        }
        if (lo <= c && c <= hi)
            m = true;
    }
    if (i >= pn)
        return 0;
    *hit = m != neg;
    return i + 1;
}

static bool glob_match(const char *pat, uint64_t pn, const char *str, uint64_t sn)
{
    const unsigned char *p = (const unsigned char *)pat, *s = (const unsigned char *)str;
    uint64_t pi = 0, si = 0, star_p = UINT64_MAX, star_s = 0;
    while (si < sn) {
        if (pi < pn && p[pi] == '*') {
            star_p = ++pi;
            star_s = si;
            continue;
        }
        if (pi < pn) {
            uint64_t s2 = si;
            uint32_t c = utf8_next(s, sn, &s2);
            if (p[pi] == '?') {
                pi++;
                si = s2;
                continue;
            }
            if (p[pi] == '[') {
                bool hit = false;
                uint64_t after = match_set(p, pn, pi, c, &hit);
                if (after) {
                    if (hit) {
                        pi = after;
                        si = s2;
                        continue;
                    }
                    goto backtrack;
                }
            }
            if (p[pi] == s[si]) {
                pi++;
                si++;
                continue;
            }
        }
    backtrack:
        if (star_p == UINT64_MAX)
            return false;
        pi = star_p;
        utf8_next(s, sn, &star_s); /* the star takes one more character */
        si = star_s;
    }
    while (pi < pn && p[pi] == '*')
        pi++;
    return pi == pn;
}

/* ---- keys(match), scan, items ------------------------------------------------------ */

typedef struct walk {
    char *buf;
    size_t cap;
    uint64_t used, n, max;
    const char *pat;
    uint64_t plen;
    bool values;
    bool corrupt; /* a list record failed list_invalid() */
} walk_t;

/* Pack r's key (and value) if it matches; false once max is reached. */
static bool pack_rec(rec_t *r, void *p)
{
    walk_t *w = p;
    if (w->pat && !glob_match(w->pat, w->plen, r->data, r->klen))
        return true;
    uint64_t need = 4 + (uint64_t)r->klen;
    if (w->used + need <= w->cap) {
        uint32_t len = r->klen;
        memcpy(w->buf + w->used, &len, 4);
        memcpy(w->buf + w->used + 4, r->data, r->klen);
    }
    w->used += need;
    if (w->values && r->type == SHMDICT_T_LIST && list_invalid(r)) {
        w->corrupt = true;
        return false;
    }
    if (w->values)
        w->used = pack_value(r, w->buf, w->cap, w->used);
    w->n++;
    return !(w->max && w->n >= w->max);
}

/* Live keys (values too, if with_values) matching pat (NULL: all), at most
 * max_count (0: all), packed as described above, in one lock hold: a
 * consistent snapshot. Returns the count, or ERANGE with out->len needed. */
int64_t shmdict_items(shmdict_t *h, const char *pat, size_t plen, uint64_t max_count, int with_values,
                      char *buf, size_t cap, shmdict_out_t *out)
{
    int rc = lock_dict(h);
    if (rc)
        return rc;
    walk_t w = {buf, cap, 0, 0, max_count, pat, plen, with_values != 0, false};
    rc = for_each_live(h, pack_rec, &w);
    unlock_dict(h);
    out->len = w.used;
    if (rc)
        return rc;
    if (w.corrupt)
        return SHMDICT_ECORRUPT;
    return w.used > cap ? SHMDICT_ERANGE : (int64_t)w.n;
}

/* One batch of a scan, in one lock hold.
 *
 * THE CURSOR is a slot index. A batch examines slots from the cursor and, once
 * it has examined `count` live keys (matching or not), keeps going to the end
 * of the current cluster: it stops only just before an EMPTY slot (or at the
 * end of the index), and returns that slot as the next cursor (0 = done).
 *
 * WHY A KEY PRESENT THROUGHOUT IS NEVER MISSED. Inserts never move entries;
 * only a delete's backward shift does, and it moves an entry back toward its
 * home, never past it, and only through occupied slots. When a batch ends,
 * the cursor slot c is EMPTY, so every entry at a slot >= c then has its home
 * at >= c too (its probe path from home to its slot is occupied, so it cannot
 * cross c); afterwards it can only move back as far as its home, so it stays
 * at >= c and a later batch sees it. Entries that wrap around the end of the
 * index sit in the occupied run that starts at slot 0, which the first batch
 * covers entirely. A key can be returned twice: an entry of that wrapped run
 * that a delete shifts back across the end of the index is seen again by the
 * last batch. Keys inserted or deleted during the scan may or may not appear,
 */
int64_t shmdict_scan(shmdict_t *h, uint64_t cursor, uint64_t count, const char *pat, size_t plen,
                     char *buf, size_t cap, shmdict_out_t *out)
{
    if (count == 0)
        return SHMDICT_EINVAL;
    int rc = lock_dict(h);
    if (rc)
        return rc;
    walk_t w = {buf, cap, 0, 0, 0, pat, plen, false, false};
    uint64_t now = h->hdr->n_ttl ? now_ns() : 0, i = cursor, seen = 0;
    int64_t res = 0;
    for (; i < h->cap; i++) {
        uint64_t s = h->slots[i];
        if (s == SLOT_EMPTY) {
            if (seen >= count) /* live keys examined, matching or not: the work per batch */
                break;
            continue;
        }
        if (s == SLOT_TOMB)
            continue;
        rec_t *r = rec_at(h, s);
        if (!r) {
            res = SHMDICT_ECORRUPT;
            break;
        }
        if (!expired(r, now)) {
            pack_rec(r, &w);
            seen++;
        }
    }
    unlock_dict(h);
    out->i = (int64_t)(i < h->cap ? i : 0);
    out->len = w.used;
    if (res)
        return res;
    return w.used > cap ? SHMDICT_ERANGE : (int64_t)w.n;
}

/* ---- limit: GCRA in one record ----------------------------------------------------
 *
 * The record holds the theoretical arrival time TAT (an int, ns on the TTL
 * clock) and expires at TAT, when the bucket is full again (an absent key is
 * a full bucket). Emission interval T = per / rate; the bucket holds
 * rate + burst requests: a request at `now` is admitted iff
 * max(TAT, now) + T - now <= (rate + burst) * T, and then TAT advances by T.
 * out->i = requests still admissible now, out->f = seconds until the bucket
 * is full. Returns 1 admitted, 0 refused (nothing written), or an error. */
int shmdict_limit(shmdict_t *h, const char *key, size_t klen, double rate, double per, double burst,
                  shmdict_out_t *out)
{
    if (!(rate > 0) || !(per > 0) || !(burst >= 0) || !(rate + burst >= 1) || isinf(rate) ||
        isinf(per) || isinf(burst))
        return SHMDICT_EINVAL;
    double t_ns = per * 1e9 / rate, lim_ns = (rate + burst) * t_ns;
    if (!(t_ns >= 1) || t_ns > 4e18 || lim_ns > 4e18)
        return SHMDICT_EINVAL;
    uint64_t T = (uint64_t)t_ns, L = (uint64_t)lim_ns;
    BEGIN(h, key, klen);
    if (!now)
        now = now_ns();
    if (i < -1) {
        rc = SHMDICT_ECORRUPT;
        goto out;
    }
    if (i >= 0 && r->type != SHMDICT_T_INT) {
        rc = SHMDICT_ENOTNUM;
        goto out;
    }
    uint64_t tat = i >= 0 && (uint64_t)r->num.i > now ? (uint64_t)r->num.i : now;
    uint64_t next = tat + T;
    if (next - now > L) {
        out->i = 0;
        out->f = (double)(tat - now) / 1e9;
        rc = 0;
        goto out;
    }
    if (i >= 0) {
        w64(h, &r->num.u, next);
        FAULT(LIMIT_STORED);
        w64(h, word8(r), word8_with(r, SHMDICT_T_INT, next_ver(r->ver)));
        set_deadline(h, r, next);
        note_change(h, hash, EV_SET, key, klen);
        FAULT(LIMIT_TTL);
        commit(h);
    } else {
        value_t v = {SHMDICT_T_INT, next, NULL, 0};
        uint32_t ver;
        rc = put(h, key, klen, hash, &v, next, now, SHMDICT_SET_ALWAYS, &ver);
        if (rc)
            goto out;
    }
    out->i = (int64_t)((L - (next - now)) / T);
    out->f = (double)(next - now) / 1e9;
    rc = 1;
out:
    unlock_dict(h);
    return rc;
}

/* ---- named locks: open-file-description locks on the dict file -------------------
 *
 * A named lock is a one-byte fcntl(F_OFD_SETLK) write lock on the dict's
 * file at offset 2^62 + (SipHash of the name mod 2^62): far beyond the file's
 * end, so it never interacts with the data, and keyed by the file's own seed
 * so every process agrees. The kernel drops it when the holder's file
 * description is closed -- including when the holder dies -- so it is robust
 * by construction, and it is separate from the table mutex. */
int64_t shmdict_lock_offset(shmdict_t *h, const char *name, size_t len)
{
    return (int64_t)((1ull << 62) | (hash_key(h, name, len) & ((1ull << 62) - 1)));
}

/* op 1: try to take the lock on fd at off; 0: release it. Returns OK, 1 if
 * another description holds it, or ESYS (errno set; EINTR: call again). */
int shmdict_flock(int fd, int64_t off, int op)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = op ? F_WRLCK : F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = off;
    fl.l_len = 1;
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
        return SHMDICT_OK;
    if (op && (errno == EAGAIN || errno == EACCES))
        return 1;
    return SHMDICT_ESYS;
}

/* ---- lists ---------------------------------------------------------------------
 *
 * A list is ONE record of type LIST (see rec_bytes in layout.h):
 *
 *   header | key, padded to 8 | u64 count | element area (C bytes)
 *                                           [ free | live elements | free ]
 *                                                    ^start (num.s.reserved), vlen bytes
 *   element: u32 n | u8 type | payload (n bytes: 8 for numbers) | u32 n
 *
 * The trailing copy of n lets rpop find the last element. Push and pop at
 * either end are O(1) when the area has room on that side: the new element's
 * bytes go outside the live part (unreachable, so unlogged), then one logged
 * store of the num word (start, vlen), one of count, one of the version
 * word, commit. When that side is full the list moves to a new block with
 * room on both sides (at least twice the live bytes), through the same
 * escalation as put() -- reclaim expired, defrag, borrow, evict -- and the
 * same publish-then-free order, so a crash leaves the old record or the new
 * one. A list whose last element is popped is deleted. Records never move
 * otherwise, so one key's list is always one contiguous block: its total
 * size is bounded by the largest item the dict can hold. */

static inline uint64_t pad8(uint64_t n) { return (n + 7) & ~7ull; }
static const char *list_area(const rec_t *r) { return r->data + pad8(r->klen) + 8; }
static inline uint64_t *list_count(rec_t *r) { return (uint64_t *)(void *)(r->data + pad8(r->klen)); }
/* Element area capacity of a block of class cls holding key length klen. */
static inline uint64_t list_cap(int cls, uint64_t klen)
{
    return class_units(cls) * UNIT - REC_HDR - pad8(klen) - 8;
}

/* Validate the element at area offset `at` (within [lo, hi) live bounds),
 * reading its size from the front (front = true) or from the back (`at` is
 * then the end). Returns its total size, or 0 if malformed. */
static uint64_t elem_check(const char *area, uint64_t lo, uint64_t hi, uint64_t at, bool front)
{
    uint32_t n, n2;
    if (hi - lo < 9)
        return 0;
    if (front) {
        memcpy(&n, area + at, 4);
        if ((uint64_t)n + 9 > hi - at)
            return 0;
        memcpy(&n2, area + at + 5 + n, 4);
    } else {
        memcpy(&n, area + at - 4, 4);
        if ((uint64_t)n + 9 > at - lo)
            return 0;
        memcpy(&n2, area + at - 9 - n, 4);
    }
    uint64_t start = front ? at : at - 9 - n;
    int type = (unsigned char)area[start + 4];
    if (n != n2 || type < SHMDICT_T_BOOL || type > SHMDICT_T_BYTES || (is_numeric(type) && n != 8))
        return 0;
    return (uint64_t)n + 9;
}

/* check() and every reader that hands a whole list out: the live part lies in
 * the block's element area, is a whole run of well-formed elements, and there
 * are as many as the stored count (a list with no element is deleted, never
 * kept). NULL if valid, else what is wrong. O(elements). */
const char *list_invalid(const rec_t *r)
{
    uint64_t cap = list_cap(r->cls & 0x7f, r->klen), lo = r->num.s.reserved, len = r->num.s.vlen;
    if (class_units(r->cls & 0x7f) * UNIT < REC_HDR + pad8(r->klen) + 8 || lo > cap || len > cap - lo)
        return "live part lies outside its block";
    const char *area = list_area(r);
    uint64_t at = lo, hi = lo + len, n = 0;
    while (at < hi) { /* each element is >= 9 bytes: at most len / 9 steps */
        uint64_t sz = elem_check(area, lo, hi, at, true);
        if (!sz)
            return "malformed element (its length, type or trailing length)";
        at += sz;
        n++;
    }
    uint64_t count;
    memcpy(&count, area - 8, 8);
    if (n == 0)
        return "no elements (an empty list is deleted, never kept)";
    if (n != count)
        return "stored element count differs from the elements";
    return NULL;
}

static void elem_write(char *dst, const value_t *v)
{
    uint32_t n = is_numeric(v->type) ? 8 : (uint32_t)v->len;
    memcpy(dst, &n, 4);
    dst[4] = (char)v->type;
    if (is_numeric(v->type))
        memcpy(dst + 5, &v->num, 8);
    else if (n)
        memcpy(dst + 5, v->buf, n);
    memcpy(dst + 5 + n, &n, 4);
}

static inline uint64_t num_word(uint32_t vlen, uint32_t start) { return (uint64_t)start << 32 | vlen; }

/* Write key's list as a new block: the live elements of `src` (NULL: none)
 * plus element v on the left or right, centred in an area of at least
 * `want` bytes. Replaces the record at the key's slot, or inserts it.
 * Commits; on failure nothing is applied. */
static int list_move(shmdict_t *h, const char *key, size_t klen, uint64_t hash, rec_t *src,
                     const value_t *v, bool left, uint64_t want, uint64_t now)
{
    header_t *H = h->hdr;
    uint64_t esz = (is_numeric(v->type) ? 8 : v->len) + 9;
    uint64_t live = (src ? src->num.s.vlen : 0) + esz, count = (src ? *list_count(src) : 0) + 1;
    uint64_t units = (REC_HDR + pad8(klen) + 8 + want + UNIT - 1) / UNIT, evicted = 0;
    if (class_of(units) >= NCLASS || units > h->units - FIRST_UNIT)
        units = (REC_HDR + pad8(klen) + 8 + live + UNIT - 1) / UNIT; /* no slack then */
    if (live > UINT32_MAX / 2 || class_of(units) >= NCLASS || units > h->units - FIRST_UNIT)
        return SHMDICT_ETOOBIG;
    for (int stage = 0;; stage++) {
        int64_t ins, i = find_slot(h, key, klen, hash, &ins);
        if (i < -1)
            return SHMDICT_ECORRUPT;
        rec_t *old = i >= 0 ? rec_at(h, h->slots[i]) : NULL;
        uint64_t unit = 0;
        int cls = 0, rc;
        if (!old && (ins < 0 || (h->slots[ins] == SLOT_EMPTY &&
                                 (H->count + H->tombs + 1) * 100 > h->cap * LOAD_NUM)))
            rc = SHMDICT_EFULL;
        else
            rc = alloc_units(h, units, stage >= 2, &unit, &cls);
        if (rc == SHMDICT_OK) {
            FAULT(LIST_ALLOCATED);
            rec_t *r = unit_ptr(h, unit);
            uint64_t cap = list_cap(cls, klen), start = (cap - live) / 2;
            char *area = r->data + pad8(klen) + 8;
            r->expires = old && src ? old->expires : 0; /* a push keeps the TTL; a new list has none */
            r->klen = (uint16_t)klen;
            r->type = SHMDICT_T_LIST;
            r->cls = (uint8_t)cls;
            r->ver = next_ver(old ? old->ver : (uint32_t)H->gen);
            r->num.u = num_word((uint32_t)live, (uint32_t)start);
            memcpy(r->data, key, klen);
            *list_count(r) = count;
            uint64_t at = start;
            if (left) {
                elem_write(area + at, v);
                at += esz;
            }
            if (src && src->num.s.vlen) {
                memcpy(area + at, list_area(src) + src->num.s.reserved, src->num.s.vlen);
                at += src->num.s.vlen;
            }
            if (!left)
                elem_write(area + at, v);
            FAULT(LIST_FILLED);
            uint64_t nbytes = class_units(cls) * UNIT;
            if (old) {
                uint64_t old_unit = slot_unit(h->slots[i]), old_bytes = class_units(old->cls & 0x7f) * UNIT;
                w64(h, &h->slots[i], (hash >> 32) << 32 | unit);
                FAULT(LIST_PUBLISHED);
                if (old->expires && !r->expires)
                    w64(h, &H->n_ttl, H->n_ttl - 1);
                free_block(h, old_unit, old);
                w64(h, &H->used_bytes, H->used_bytes - old_bytes + nbytes);
            } else {
                if (h->slots[ins] == SLOT_TOMB)
                    w64(h, &H->tombs, H->tombs - 1);
                w64(h, &h->slots[ins], (hash >> 32) << 32 | unit);
                FAULT(LIST_PUBLISHED);
                w64(h, &H->count, H->count + 1);
                w64(h, &H->used_bytes, H->used_bytes + nbytes);
            }
            note_change(h, hash, EV_SET, key, klen);
            commit(h);
            return SHMDICT_OK;
        }
        if (rc != SHMDICT_EFULL)
            return rc;
        if (stage == 0) {
            if (reclaim_expired(h, now, true) < 0) /* never src: it is live */
                return SHMDICT_ECORRUPT;
        } else if (stage == 1) {
            if (defrag(h) != SHMDICT_OK)
                return SHMDICT_ECORRUPT;
        } else if (H->flags & HF_EVICT) {
            rc = evict_some(h, i, units, &evicted);
            if (rc != SHMDICT_OK)
                return rc;
            stage = 1;
        } else {
            return SHMDICT_EFULL;
        }
    }
}

/* lpush (left = 1) / rpush: returns the new length in out->i. */
int shmdict_push(shmdict_t *h, const char *key, size_t klen, int left, int type, int64_t iv, double fv,
                 const char *val, size_t vlen, shmdict_out_t *out)
{
    value_t v;
    int vrc = make_value(&v, type, iv, fv, val, vlen);
    if (vrc)
        return vrc;
    if (vlen > UINT32_MAX / 4)
        return SHMDICT_ETOOBIG;
    BEGIN(h, key, klen);
    if (!now)
        now = now_ns();
    uint64_t esz = (is_numeric(type) ? 8 : v.len) + 9;
    if (i < -1) {
        rc = SHMDICT_ECORRUPT;
    } else if (i >= 0 && r->type != SHMDICT_T_LIST) {
        rc = SHMDICT_EWRONGTYPE;
    } else if (i < 0) {
        /* absent or expired: a new list (an expired one is replaced whole) */
        rc = list_move(h, key, klen, hash, NULL, &v, left != 0, esz * 4 > 64 ? esz * 4 : 64, now);
        out->i = 1;
    } else {
        uint64_t start = r->num.s.reserved, live = r->num.s.vlen, cap = list_cap(r->cls & 0x7f, klen);
        uint64_t count = *list_count(r);
        char *area = r->data + pad8(klen) + 8;
        uint64_t dest = left ? cap - live : 0; /* where a slide would put the live part */
        if (count == 0 || count > live / 9 || start + live > cap) {
            rc = SHMDICT_ECORRUPT;
            goto out;
        }
        if (!(left ? start >= esz : cap - start - live >= esz) && live + esz <= cap &&
            (left ? dest >= start + live : start >= live)) {
            /* No room on this side, but the other side's free part can take
             * the whole live part without overlapping it: copy it there
             * (unlogged: outside the live part), then switch with one logged
             * store. A queue (rpush + lpop) so stays in its block. */
            memcpy(area + dest, area + start, live);
            w64(h, &r->num.u, num_word((uint32_t)live, (uint32_t)dest));
            FAULT(LIST_SLID);
            start = dest;
        }
        if (left ? start >= esz : cap - start - live >= esz) {
            uint64_t nstart = left ? start - esz : start;
            elem_write(area + (left ? nstart : start + live), &v); /* outside the live part: unlogged */
            w64(h, &r->num.u, num_word((uint32_t)(live + esz), (uint32_t)nstart));
            FAULT(LIST_PUSHED);
            w64(h, list_count(r), count + 1);
            w64(h, word8(r), word8_with(r, SHMDICT_T_LIST, next_ver(r->ver)));
            note_change(h, hash, EV_SET, key, klen);
            commit(h);
            out->i = (int64_t)count + 1;
        } else {
            rc = list_move(h, key, klen, hash, r, &v, left != 0, 2 * (live + esz), now);
            if (rc == SHMDICT_EFULL) /* no room to double: try just what it needs */
                rc = list_move(h, key, klen, hash, r, &v, left != 0, live + esz, now);
            out->i = (int64_t)count + 1;
        }
    }
out:
    unlock_dict(h);
    return rc;
}

/* lpop (left = 1) / rpop: the element's value as shmdict_get returns one;
 * ERANGE (out->len = its size, nothing removed) if buf is too small. */
int shmdict_pop_end(shmdict_t *h, const char *key, size_t klen, int left, shmdict_out_t *out, char *buf,
                    size_t cap)
{
    BEGIN(h, key, klen);
    if (i < -1) {
        rc = SHMDICT_ECORRUPT;
    } else if (i < 0) {
        rc = SHMDICT_ENOTFOUND;
    } else if (r->type != SHMDICT_T_LIST) {
        rc = SHMDICT_EWRONGTYPE;
    } else {
        uint64_t start = r->num.s.reserved, live = r->num.s.vlen, acap = list_cap(r->cls & 0x7f, klen);
        uint64_t count = *list_count(r);
        const char *area = list_area(r);
        uint64_t esz = start + live <= acap && count && count <= live / 9
                           ? elem_check(area, start, start + live, left ? start : start + live, left)
                           : 0;
        if (!esz) {
            rc = SHMDICT_ECORRUPT;
            goto out;
        }
        const char *e = area + (left ? start : start + live - esz);
        uint32_t n;
        memcpy(&n, e, 4);
        int type = (unsigned char)e[4];
        out->ver = r->ver;
        if (is_numeric(type)) {
            memcpy(&out->i, e + 5, 8);
            memcpy(&out->f, e + 5, 8);
        } else {
            out->len = n;
            if (n > cap) {
                rc = SHMDICT_ERANGE;
                goto out;
            }
            if (n)
                memcpy(buf, e + 5, n);
        }
        if (count == 1) {
            if (delete_at(h, (uint64_t)i, r)) {
                rc = SHMDICT_ECORRUPT;
                goto out;
            }
        } else {
            w64(h, &r->num.u, num_word((uint32_t)(live - esz), (uint32_t)(left ? start + esz : start)));
            FAULT(LIST_POPPED);
            w64(h, list_count(r), count - 1);
            w64(h, word8(r), word8_with(r, SHMDICT_T_LIST, next_ver(r->ver)));
            note_change(h, hash, EV_SET, key, klen);
        }
        commit(h);
        rc = type;
    }
out:
    unlock_dict(h);
    return rc;
}

/* Length of the list at key (0 if absent), or EWRONGTYPE. */
int64_t shmdict_llen(shmdict_t *h, const char *key, size_t klen)
{
    BEGIN(h, key, klen);
    int64_t n = 0;
    if (i < -1)
        n = SHMDICT_ECORRUPT;
    else if (i >= 0 && r->type != SHMDICT_T_LIST)
        n = SHMDICT_EWRONGTYPE;
    else if (i >= 0) {
        n = (int64_t)*list_count(r);
        if (n < 1 || (uint64_t)n > r->num.s.vlen / 9) /* O(1) sanity; check() walks the elements */
            n = SHMDICT_ECORRUPT;
    }
    (void)rc;
    unlock_dict(h);
    return n;
}
