/*
 * ops.c -- the public entry points. Each has one shape:
 *
 *     validate arguments -> hash the key (no lock needed: the seed is
 *     immutable) -> lock -> table work -> commit -> unlock -> return rc
 *
 * with a single unlock exit. Nothing inside the lock allocates memory, makes
 * a system call (clock_gettime is a vDSO read) or calls back into Python.
 */
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
    uint64_t old_bytes = REC_HDR + old->klen + (is_numeric(old->type) ? 0 : old->num.s.vlen);
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
    uint64_t old_bytes = REC_HDR + old->klen + (is_numeric(old->type) ? 0 : old->num.s.vlen);
    return units <= class_units(old->cls & 0x7f) && old_bytes <= BACKUP_MAX;
}

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

    for (int stage = 0;; stage++) {
        int64_t ins, i = find_slot(h, key, klen, hash, &ins);
        if (i < -1)
            return SHMDICT_ECORRUPT;
        rec_t *old = i >= 0 ? rec_at(h, h->slots[i]) : NULL;
        int rc;
        if (flags != SHMDICT_SET_ALWAYS) {
            bool live = old && !(old->expires && old->expires <= (now ? now : (now = now_ns())));
            if (flags == SHMDICT_SET_NX && live)
                return SHMDICT_EEXIST;
            if (flags == SHMDICT_SET_XX && !live)
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
        if (!is_numeric(r->type) && out->len > cap) {
            rc = SHMDICT_ERANGE;
        } else {
            delete_at(h, (uint64_t)i, r);
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
    if (check_key(klen) || isnan(exptime) || flags < SHMDICT_SET_ALWAYS || flags > SHMDICT_SET_XX)
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
        delete_at_op(h, (uint64_t)i, r, was_live ? EV_DELETE : EV_EXPIRE); /* expired: reclaimed */
        commit(h);
        rc = was_live ? SHMDICT_OK : SHMDICT_ENOTFOUND;
    }
    unlock_dict(h);
    return rc;
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
            double sum = a + (dtype == SHMDICT_T_INT ? (double)di : df);
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
            double sum = a + (dtype == SHMDICT_T_INT ? (double)di : df);
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
    int64_t n = 0;
    if (h->hdr->n_ttl == 0)
        n = (int64_t)h->hdr->count; /* O(1) unless some key has a TTL */
    else if ((rc = for_each_live(h, count_one, &n)) != SHMDICT_OK)
        n = rc;
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
    case SHMDICT_EOVERFLOW: return "integer overflow";
    case SHMDICT_ESYS: return "system call failed";
    case SHMDICT_EVERSION: return "not a shmdict file of a compatible layout version";
    case SHMDICT_ELOCK: return "the dict's lock is unusable";
    case SHMDICT_EINVAL: return "invalid argument";
    case SHMDICT_ERANGE: return "buffer too small";
    case SHMDICT_EEXIST: return "key exists";
    default: return "unknown error";
    }
}
