/*
 * batch.c -- several keys per lock hold: get_many, set_many, and cas
 * (compare-and-set of one key's value).
 */
#include <math.h>

#include "record.h"
#include "fault.h"
#include "optread.h"

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

/* get_many without the lock (optread.c): every key looked up and copied,
 * then every stripe looked at checked unchanged -- one snapshot, as one lock
 * hold gives. TAKE_LOCK: take the lock (a write kept getting in the way, a
 * list value, which the locked path validates, or something that looked
 * corrupt). Input already validated. */
#define TAKE_LOCK INT64_MIN
static int64_t get_many_optimistic(shmdict_t *h, const char *keys, uint64_t n, char *buf, size_t cap,
                                   shmdict_out_t *out)
{
    for (int tries = 0; tries < 4; tries++) {
        opt_snap_t s;
        if (!opt_snap_begin(h, &s))
            return TAKE_LOCK;
        uint64_t used = 0, pos = 0, now = 0, hits = 0;
        bool again = false;
        for (uint64_t k = 0; k < n && !again; k++) {
            uint32_t kl = get_u32(keys + pos);
            const char *key = keys + pos + 4;
            pos += 4 + (uint64_t)kl;
            opt_rec_t o;
            uint64_t room = cap > used + 5 ? cap - used - 5 : 0;
            int f = opt_snap_lookup(&s, key, kl, hash_key(h, key, kl), &o, buf + (cap > used + 5 ? used + 5 : 0),
                                    room);
            if (f == OPT_HIT && o.expires && o.expires <= (now ? now : (now = now_ns())))
                f = OPT_MISS;
            if (f == OPT_AGAIN || (f == OPT_HIT && o.type == SHMDICT_T_LIST)) {
                again = true;
            } else if (f == OPT_MISS) {
                if (used < cap)
                    buf[used] = 0;
                used++;
            } else { /* packed as pack_value (record.c); the value bytes were copied in place */
                uint64_t need = 1 + (is_numeric(o.type) ? 8 : 4 + o.vlen);
                if (used + need <= cap) {
                    buf[used] = (char)o.type;
                    if (is_numeric(o.type)) {
                        memcpy(buf + used + 1, &o.num, 8);
                    } else {
                        uint32_t vl = (uint32_t)o.vlen;
                        memcpy(buf + used + 1, &vl, 4);
                    }
                }
                used += need;
                hits++;
            }
        }
        if (!again && opt_snap_valid(&s)) {
            for (uint64_t k = 0; k < n; k++)
                seq_count(h, k < hits);
            out->len = used;
            return used > cap ? SHMDICT_ERANGE : (int64_t)hits;
        }
    }
    return TAKE_LOCK;
}

/* Read n keys, under one lock hold per SHMDICT_BATCH_HOLD keys (each run of
 * that many keys is one snapshot). Returns the number found, or ERANGE with
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
    if (n <= SHMDICT_BATCH_HOLD) { /* one snapshot without the lock, if no write gets in its way */
        int64_t f = get_many_optimistic(h, keys, n, buf, cap, out);
        if (f != TAKE_LOCK)
            return f;
    }
    int rc = lock_dict(h);
    if (rc)
        return rc;
    uint64_t used = 0, now = 0;
    int64_t found = 0;
    pos = 0;
    for (uint64_t k = 0; k < n; k++) {
        uint32_t kl = get_u32(keys + pos);
        const char *key = keys + pos + 4;
        pos += 4 + (uint64_t)kl;
        if (k && k % SHMDICT_BATCH_HOLD == 0) { /* bound the hold: let others in */
            unlock_dict(h);
            if ((rc = lock_dict(h)) != SHMDICT_OK)
                return rc;
            now = 0;
        }
        rec_t *r = NULL;
        uint64_t hash = hash_key(h, key, kl);
        if ((rc = lock_stripe(h, (uint32_t)(hash >> 32), false)) != SHMDICT_OK) {
            found = rc; /* no update in place half way through it (seq.c) */
            goto out;
        }
        int64_t i = lookup(h, key, kl, hash, &r, &now);
        if (i < -1) {
            found = SHMDICT_ECORRUPT;
            goto out;
        }
        if (i < 0) {
            if (used < cap)
                buf[used] = 0;
            used++;
            seq_count(h, false);
        } else {
            if (r->type == SHMDICT_T_LIST && list_invalid(r)) {
                found = SHMDICT_ECORRUPT; /* never a truncated or misframed list */
                goto out;
            }
            used = pack_value(r, buf, cap, used);
            seq_count(h, true);
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

/* Store n packed items in order, under one lock hold per SHMDICT_BATCH_HOLD
 * items. Returns n, or an error
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
        if (class_of(units) >= NCLASS || units > units_ever(h) - FIRST_UNIT)
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
        if (k && k % SHMDICT_BATCH_HOLD == 0) { /* bound the hold; each item is its own transaction */
            unlock_dict(h);
            if ((rc = lock_dict(h)) != SHMDICT_OK) {
                out->i = done;
                return rc;
            }
            if (now)
                now = now_ns(); /* the deadline stays the one computed at the start */
        }
        pos += parse_item(items + pos, items_len - pos, &key, &kl, &v);
        uint32_t ver;
        uint64_t hash = hash_key(h, key, kl);
        if ((rc = lock_stripe(h, (uint32_t)(hash >> 32), true)) != SHMDICT_OK)
            break; /* (the items before it are stored: each is its own transaction) */
        rc = put(h, key, kl, hash, &v, deadline, now, flags, &ver);
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
