/*
 * kv.c -- the keyed operations on one scalar value: get, pop, set, delete,
 * incr, ttl, expire, and flush_all (empty the whole dict under the redo
 * protocol described in lock.c; recovery, guard.c, redoes it). get and ttl
 * (and so `in` and version) read without the lock first (optread.c).
 */
#include <errno.h>
#include <math.h>

#include "record.h"
#include "fault.h"
#include "notify.h"
#include "optread.h"
#include "kv.h"

static int get_locked_hashed(shmdict_t *h, const char *key, size_t klen, uint64_t hash, shmdict_out_t *out,
                             char *buf, size_t cap);

int shmdict_get(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out, char *buf, size_t cap)
{
    if (check_key(klen))
        return SHMDICT_EINVAL;
    uint64_t hash = hash_key(h, key, klen), t = 0;
    opt_rec_t o;
    int f = opt_lookup(h, key, klen, hash, &o, buf, cap, &t);
    if (__builtin_expect(f != OPT_LOCK, 1)) {
        seq_count(h, f == OPT_HIT);
        if (f == OPT_MISS)
            return SHMDICT_ENOTFOUND;
        if (o.type == SHMDICT_T_LIST)
            return SHMDICT_EWRONGTYPE;
        out->ver = o.ver;
        if (is_numeric(o.type)) {
            memcpy(&out->i, &o.num, 8);
            memcpy(&out->f, &o.num, 8);
        } else {
            out->len = o.vlen; /* copied into buf when it fits, as read_value */
        }
        return o.type;
    }
    return get_locked_hashed(h, key, klen, hash, out, buf, cap);
}

static int get_locked_hashed(shmdict_t *h, const char *key, size_t klen, uint64_t hash, shmdict_out_t *out,
                             char *buf, size_t cap)
{
    LOCK_LOOKUP(h, key, klen, hash, false);
    rc = i < -1 ? SHMDICT_ECORRUPT : i < 0 ? SHMDICT_ENOTFOUND : read_value(r, out, buf, cap);
    seq_count(h, i >= 0);
    unlock_dict(h);
    return rc;
}

int get_locked(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out, char *buf, size_t cap)
{
    if (check_key(klen))
        return SHMDICT_EINVAL;
    return get_locked_hashed(h, key, klen, hash_key(h, key, klen), out, buf, cap);
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
    if ((rc = lock_stripe(h, (uint32_t)(hash >> 32), true)) != SHMDICT_OK) { /* before put's first store */
        unlock_dict(h);
        return rc;
    }
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
    if ((rc = lock_stripe(h, (uint32_t)(hash >> 32), true)) != SHMDICT_OK) {
        unlock_dict(h);
        return rc;
    }
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

/* v = a + delta, where a is (atype, ai, af) and delta (dtype, di, df):
 * int + int stays an int (EOVERFLOW past int64); a float on either side gives
 * a float, and a float sum of finite operands that is not finite is refused
 * the same way (an inf or nan already stored stays as Python arithmetic would
 * have it). Nothing is stored here. */
static int add_numbers(int atype, int64_t ai, double af, int dtype, int64_t di, double df, value_t *v)
{
    if (atype == SHMDICT_T_INT && dtype == SHMDICT_T_INT) {
        int64_t sum;
        if (__builtin_add_overflow(ai, di, &sum))
            return SHMDICT_EOVERFLOW;
        v->type = SHMDICT_T_INT;
        v->num = (uint64_t)sum;
        return SHMDICT_OK;
    }
    double a = atype == SHMDICT_T_INT ? (double)ai : af;
    double b = dtype == SHMDICT_T_INT ? (double)di : df;
    double sum = a + b;
    if (isfinite(a) && isfinite(b) && !isfinite(sum))
        return SHMDICT_EOVERFLOW;
    v->type = SHMDICT_T_FLOAT;
    memcpy(&v->num, &sum, 8);
    return SHMDICT_OK;
}

/* AN UPDATE IN PLACE: the incr of a live number that changes no TTL takes
 * its key's stripe lock alone, not the dict lock (seq.c describes the stripe
 * locks), so writers of keys in different stripes share no cache line. It
 * stores two words, each logged in the stripe's own undo log: the number,
 * then the type word with the new version; a kill after either is rolled
 * back by the stripe's next taker. Everything it needs is checked under the
 * stripe lock: no bulk step is under way (they take every stripe), the
 * geometry it probes is the dict's, the key is there and a live number, the
 * sum fits, and nobody listens to the event ring (then the event is only
 * counted, as the dict lock's writers do; notify.c). Anything else -- a
 * missing or expired key, a TTL to set, a listener, an overflow -- returns
 * 0: the locked path decides, and reports. 1: done, *type the result's
 * type. A busy stripe is waited for (a few dozen instructions, unless its
 * holder lost its CPU) without the dict lock, with the dict lock's
 * deadline: ELOCKTIMEOUT past it. */
static int incr_in_place(shmdict_t *h, const char *key, size_t klen, uint64_t hash, int dtype, int64_t di,
                         double df, shmdict_out_t *out, int *type)
{
    struct ro_geo g;
    if (!seq_geometry(h, &g) || ev_listening(h))
        return 0;
    uint32_t tag = (uint32_t)(hash >> 32), s = seq_stripe_of(tag);
    int lr = seq_trylock(h, s);
    if (lr == EBUSY && (lr = stripe_wait(h, s)) == ETIMEDOUT)
        return SHMDICT_ELOCKTIMEOUT; /* (a busy stripe is waited for here, not under the dict lock) */
    if (!stripe_begin(h, s, &g, lr))
        return 0;
    header_t *H = g.hdr;
    stripe_t *st = stripe_at(h, s);
    int done = 0;
    opt_rec_t o;
    rec_t *r;
    value_t v;
    if ((__atomic_load_n(&H->seq_bulk, __ATOMIC_ACQUIRE) & 1) ||
        __atomic_load_n(&H->index_cap, __ATOMIC_RELAXED) != g.cap ||
        __atomic_load_n(&H->size, __ATOMIC_RELAXED) != g.size)
        goto out;
    /* Under the stripe lock nobody else changes, frees or moves this key's
     * record or slot: a hit is the key's live record (a miss may be a slot
     * of another stripe moving: the locked path decides). */
    if (opt_probe(&g, key, klen, tag, &o, &r) != OPT_HIT || (o.type != SHMDICT_T_INT && o.type != SHMDICT_T_FLOAT))
        goto out;
    if (o.expires && o.expires <= now_ns())
        goto out;
    int64_t ci;
    double cf;
    memcpy(&ci, &o.num, 8);
    memcpy(&cf, &o.num, 8);
    if (add_numbers(o.type, ci, cf, dtype, di, df, &v))
        goto out;
    uint64_t w8 = __atomic_load_n(word8(r), __ATOMIC_RELAXED);
    rec_t hd;
    memcpy(&hd.klen, &w8, 8);
    if (hd.type != o.type || hd.ver != o.ver)
        goto out; /* (cannot change under the stripe lock: a scribble) */
    hd.type = (uint8_t)v.type;
    hd.ver = next_ver(o.ver);
    if (__atomic_load_n(&H->flags, __ATOMIC_RELAXED) & HF_EVICT)
        hd.cls |= CLS_REF; /* CLOCK: referenced, as lookup() marks it */
    memcpy(&w8, &hd.klen, 8);
    stripe_w64(st, &g, &r->num.u, v.num);
    FAULT(INCR_IN_PLACE);
    stripe_w64(st, &g, word8(r), w8);
    note_in_place(h, st);
    stripe_commit(st);
    out->ver = hd.ver;
    memcpy(&out->i, &v.num, 8);
    memcpy(&out->f, &v.num, 8);
    *type = v.type;
    done = 1;
out:
    stripe_end(h, s);
    if (done)
        wake_in_place(h, hash);
    return done;
}

int shmdict_incr(shmdict_t *h, const char *key, size_t klen, int dtype, int64_t di, double df,
                 int itype, int64_t ii, double fi, double init_ttl, int set_ttl, double exptime,
                 shmdict_out_t *out)
{
    if ((dtype != SHMDICT_T_INT && dtype != SHMDICT_T_FLOAT) ||
        (itype != 0 && itype != SHMDICT_T_INT && itype != SHMDICT_T_FLOAT) || isnan(init_ttl) ||
        isnan(exptime))
        return SHMDICT_EINVAL;
    if (check_key(klen))
        return SHMDICT_EINVAL;
    uint64_t hash = hash_key(h, key, klen);
    int type, f = set_ttl ? 0 : incr_in_place(h, key, klen, hash, dtype, di, df, out, &type);
    if (f)
        return f > 0 ? type : f;
    LOCK_LOOKUP(h, key, klen, hash, true);
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
        rc = add_numbers(type, r->num.i, r->num.f, dtype, di, df, &v);
        if (rc)
            goto out;
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
        rc = add_numbers(itype, ii, fi, dtype, di, df, &v);
        if (rc)
            goto out;
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
    if (check_key(klen))
        return SHMDICT_EINVAL;
    uint64_t hash = hash_key(h, key, klen), t = 0;
    opt_rec_t o;
    int f = opt_lookup(h, key, klen, hash, &o, NULL, 0, &t);
    if (__builtin_expect(f != OPT_LOCK, 1)) {
        if (f == OPT_MISS)
            return SHMDICT_ENOTFOUND;
        out->f = o.expires ? (double)(o.expires - t) / 1e9 : 0.0;
        out->ver = o.ver;
        return SHMDICT_OK;
    }
    LOCK_LOOKUP(h, key, klen, hash, false);
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
    if ((rc = lock_stripes_all(h)) != SHMDICT_OK) { /* (timed; a stripe log no updater wrote is cleared) */
        if (rc != SHMDICT_ECORRUPT) {
            unlock_dict(h);
            return rc;
        }
    }
    header_t *H = h->hdr;
    if (H->corrupt)
        H->ulog_n = 0; /* recovery refused this log and left it: the reset below supersedes it */
    seq_bulk(h); /* lock-free readers: everything goes (seq.c) */
    w64(h, &H->flush_pending, FLUSH_PENDING);
    note_flush(h);
    commit(h);
    FAULT(FLUSH_MARKED);
    table_reset(h);
    H->corrupt = 0;
    STORED();
    atomic_signal_fence(memory_order_seq_cst);
    H->flush_pending = 0;
    STORED();
    unlock_dict(h);
    return SHMDICT_OK;
}
