/*
 * evict.c -- expired and evicted items as the user sees them: turning CLOCK
 * eviction on (configure), reading a value past its TTL (get_stale), and
 * freeing expired items on demand (flush_expired). The eviction step itself,
 * which put() runs when the dict is full, is evict_some in record.c.
 */
#include "record.h"
#include "fault.h"
#include "guard.h"
#include "notify.h"

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
        __atomic_store_n(&h->hdr->flags, flags_word((uint32_t)h->hdr->flags | HF_EVICT), __ATOMIC_RELAXED);
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
    if ((rc = lock_stripe(h, (uint32_t)(hash >> 32), false)) != SHMDICT_OK) {
        unlock_dict(h); /* (no update in place half way through it: seq.c) */
        return rc;
    }
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
