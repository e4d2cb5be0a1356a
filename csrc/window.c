/*
 * window.c -- the moving-window rate limit primitive (limits' "moving
 * window" strategy), as one locked read-modify-write.
 *
 * A window key holds a bytes value: up to `limit` hit timestamps, u64
 * nanoseconds of the TTL clock (CLOCK_BOOTTIME, shared by every process on
 * the host), newest first. A hit at ts is inside the window while
 * now - ts < expiry. Acquiring `amount` hits succeeds when the hits inside
 * the window plus `amount` do not exceed `limit`; the new list is then
 * [now] * amount followed by the in-window hits (older ones are dropped), and
 * the key's TTL becomes `expiry`: the key disappears exactly when its newest
 * hit leaves the window.
 *
 * This is redis' acquire_moving_window.lua (LINDEX limit-amount, LPUSH,
 * LTRIM, EXPIRE) without the round trips: the check and the store happen
 * under one hold of the dict's mutex, so concurrent workers can never admit
 * more than `limit` hits per window between them.
 *
 * The new list is built in a buffer the caller owns (nothing is allocated
 * under the lock) and stored with put(), which provides the crash safety: a
 * process killed anywhere in here leaves either the old list or the new one.
 * Timestamps read from the file are untrusted but harmless: an unsorted or
 * future-dated list can only make the count wrong for that key, never read
 * out of bounds (rec_at() has validated the value's length).
 */
#include <math.h>

#include "record.h"
#include "fault.h"

enum { WINDOW_MAX_LIMIT = 1 << 24 }; /* 128 MiB of timestamps: far beyond any real limit */

int shmdict_window(shmdict_t *h, const char *key, size_t klen, uint64_t limit, double expiry,
                   uint64_t amount, char *buf, size_t cap, shmdict_out_t *out)
{
    if (klen == 0 || klen > SHMDICT_MAX_KEY || limit == 0 || limit > WINDOW_MAX_LIMIT ||
        !(expiry > 0) || !(expiry < 1e9) || cap < limit * 8)
        return SHMDICT_EINVAL;
    uint64_t span = (uint64_t)(expiry * 1e9);
    if (span == 0)
        span = 1;
    uint64_t hash = hash_key(h, key, klen);
    int rc = lock_dict(h);
    if (rc)
        return rc;
    if ((rc = lock_stripe(h, (uint32_t)(hash >> 32), true)) != SHMDICT_OK) {
        unlock_dict(h); /* (it writes the key: its stripe first, seq.c) */
        return rc;
    }
    rec_t *r = NULL;
    uint64_t now = now_ns();
    int64_t i = lookup(h, key, klen, hash, &r, &now);
    const char *src = NULL;
    uint64_t n = 0, oldest = now;
    if (i < -1) {
        rc = SHMDICT_ECORRUPT;
        goto out;
    }
    if (i >= 0) {
        if (r->type != SHMDICT_T_BYTES || r->num.s.vlen % 8) {
            rc = SHMDICT_ENOTNUM; /* the key holds something that is not a window */
            goto out;
        }
        uint64_t total = r->num.s.vlen / 8;
        src = r->data + r->klen;
        for (; n < total && n < limit; n++) { /* bounded by the value's validated length */
            uint64_t ts;
            memcpy(&ts, src + 8 * n, 8);
            if (ts <= now && now - ts >= span)
                break; /* this hit and every older one are outside the window */
            oldest = ts < now ? ts : now;
        }
    }
    out->ver = r ? r->ver : 0;
    if (amount == 0 || amount > limit || n + amount > limit) {
        rc = 0; /* refused, or only asked: nothing changes */
    } else {
        for (uint64_t k = 0; k < amount; k++)
            memcpy(buf + 8 * k, &now, 8);
        if (n)
            memcpy(buf + 8 * amount, src, 8 * n);
        FAULT(WINDOW_BUILT);
        value_t v = {SHMDICT_T_BYTES, 0, buf, (size_t)(8 * (amount + n))};
        rc = put(h, key, klen, hash, &v, deadline_ns(now, expiry), now, SHMDICT_SET_ALWAYS, &out->ver);
        if (rc == SHMDICT_OK) {
            rc = 1;
            n += amount;
            if (n == amount)
                oldest = now;
        }
    }
    if (rc >= 0) {
        out->i = (int64_t)n;
        out->f = (double)(now - oldest) / 1e9;
    }
out:
    unlock_dict(h);
    return rc;
}
