/*
 * limit.c -- the GCRA rate limiter (shmdict_limit): one record per key holds
 * its theoretical arrival time. The moving-window limiter is window.c.
 */
#include <math.h>

#include "record.h"
#include "fault.h"
#include "notify.h"

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
