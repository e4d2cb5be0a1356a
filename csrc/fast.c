/*
 * fast.c -- the Python hot path: get, set, incr and `in` with as few
 * arguments as possible, and int results returned directly.
 *
 * WHY. Through cffi, the cost of a call is mostly its arguments: every call
 * builds an argument tuple, each pointer argument (the handle, the key, an
 * out-struct, a buffer) costs a type check and a conversion, and reading a
 * field of an out-struct from Python is one more attribute lookup. The table
 * work itself (hash, lock, probe, unlock) is well under 100 ns. So these
 * entry points take only (handle, key, klen[, value]) and return an int64:
 * the value itself for an int, or a reserved CODE for everything else.
 *
 * RESERVED CODES. Results in [INT64_MIN, INT64_MIN + SHMDICT_FAST_CODES) are
 * codes, never values (an int stored in that range is reported as "present,
 * type INT", like any value that cannot travel in the return value):
 *     INT64_MIN + t            (1 <= t <= 5)  present, of type t
 *     INT64_MIN + 32 - rc      (rc < 0)       the SHMDICT_E* code rc
 * A code other than "not found" sends the caller to the general entry point
 * (kv.c), which re-runs the operation: so a fast call that returns a code
 * must have changed nothing. Nothing here is thread-local or static: the GIL
 * is released during every call.
 *
 * A NULL handle (a closed SharedDict) gives EINVAL instead of a crash, which
 * lets Python skip its own "closed?" check on the hot path.
 */
#include "fault.h"
#include "guard.h"
#include "hash.h"
#include "lock.h"
#include "notify.h"
#include "table.h"

#define CODE_BASE INT64_MIN
#define CODE_TYPE(t) (CODE_BASE + (t))
#define CODE_ERR(rc) (CODE_BASE + 32 - (rc))
#define FIRST_VALUE (CODE_BASE + SHMDICT_FAST_CODES)

_Static_assert(SHMDICT_FAST_CODES == 64, "types (1..5) and errors (33..63) fit the reserved range");

int64_t shmdict_get_fast(shmdict_t *h, const char *key, size_t klen)
{
    shmdict_out_t out;
    if (__builtin_expect(h == NULL, 0))
        return CODE_ERR(SHMDICT_EINVAL);
    int rc = shmdict_get(h, key, klen, &out, NULL, 0); /* str/bytes: nothing copied */
    if (rc == SHMDICT_T_INT && out.i >= FIRST_VALUE)
        return out.i;
    return rc > 0 ? CODE_TYPE(rc) : CODE_ERR(rc);
}

/* Add delta to a live int, keeping its TTL: the same stores, crash points,
 * version bump and change event as shmdict_incr's in-place path (kv.c: keep
 * the two in step). Every other case -- a missing
 * or expired key (init), a float, not a number, an overflow, a result in the
 * reserved range -- returns a code and changes nothing; shmdict_incr then
 * does it (or reports it). */
int64_t shmdict_incr_fast(shmdict_t *h, const char *key, size_t klen, int64_t delta)
{
    if (__builtin_expect(h == NULL, 0) || klen == 0 || klen > SHMDICT_MAX_KEY)
        return CODE_ERR(SHMDICT_EINVAL);
    uint64_t hash = hash_key(h, key, klen);
    int rc = lock_dict(h);
    if (rc)
        return CODE_ERR(rc);
    int64_t res, ins, i = find_slot(h, key, klen, hash, &ins);
    rec_t *r = i >= 0 ? rec_at(h, h->slots[i]) : NULL;
    if (i < -1 || (i >= 0 && !r)) {
        res = CODE_ERR(SHMDICT_ECORRUPT);
    } else if (!r || (r->expires && r->expires <= now_ns())) {
        res = CODE_ERR(SHMDICT_ENOTFOUND);
    } else if (r->type != SHMDICT_T_INT) {
        res = CODE_TYPE(r->type);
    } else if (__builtin_add_overflow(r->num.i, delta, &res) || res < FIRST_VALUE) {
        res = CODE_ERR(SHMDICT_EOVERFLOW);
    } else {
        if (__builtin_expect(h->hdr->flags & HF_EVICT, 0) && !(r->cls & CLS_REF))
            r->cls |= CLS_REF; /* CLOCK: referenced (an unlogged hint), as record.c lookup() */
        rec_t t = *r; /* the word at offset 8 (klen, type, cls, ver) with the next version */
        uint64_t w8;
        t.ver = next_ver(r->ver);
        memcpy(&w8, &t.klen, 8);
        w64(h, &r->num.u, (uint64_t)res);
        FAULT(INCR_STORED);
        w64(h, (uint64_t *)(void *)&r->klen, w8);
        note_change(h, hash, EV_SET, key, klen);
        FAULT(INCR_TTL);
        commit(h);
    }
    unlock_dict(h);
    return res;
}

int shmdict_set_int(shmdict_t *h, const char *key, size_t klen, int64_t value)
{
    if (__builtin_expect(h == NULL, 0))
        return SHMDICT_EINVAL;
    return shmdict_set(h, key, klen, SHMDICT_T_INT, value, 0.0, NULL, 0, 0.0, SHMDICT_SET_ALWAYS);
}

int shmdict_set_buf(shmdict_t *h, const char *key, size_t klen, const char *val, size_t vlen, int type)
{
    if (__builtin_expect(h == NULL, 0) || (type != SHMDICT_T_STR && type != SHMDICT_T_BYTES))
        return SHMDICT_EINVAL;
    return shmdict_set(h, key, klen, type, 0, 0.0, val, vlen, 0.0, SHMDICT_SET_ALWAYS);
}
