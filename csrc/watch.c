/*
 * watch.c -- waiting for changes: a key's version (shmdict_version), waiting
 * until a key changes (shmdict_wait), reading the event ring
 * (shmdict_events), and waking every waiter of a handle being closed
 * (shmdict_interrupt). The protocol -- futex words, WAITERS bit, the ring's
 * entries -- is described in notify.c, which owns the writer's side.
 */
#include <errno.h>
#include <limits.h>
#include <time.h>

#include "guard.h"
#include "hash.h"
#include "kv.h"
#include "notify.h"

#define WAIT_SLICE_NS 1000000000ull /* a sleeper re-checks at least once a second */

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* Announce a waiter on word w: returns its value with WAITERS set. */
static uint32_t arm(uint32_t *w)
{
    uint32_t s = __atomic_load_n(w, __ATOMIC_ACQUIRE);
    while (!(s & WAITERS) &&
           !__atomic_compare_exchange_n(w, &s, s | WAITERS, true, __ATOMIC_ACQ_REL, __ATOMIC_ACQUIRE))
        ;
    return s | WAITERS;
}

/* Sleep while word w still holds s, until the deadline (0 = none), `until`
 * (0 = none) or one slice at most. OK (re-check), ETIMEDOUT, EINTR (a
 * signal: let Python run its handlers, then call again) or ECLOSED. */
static int sleep_on(shmdict_t *h, uint32_t *w, uint32_t s, uint64_t deadline, uint64_t until)
{
    uint64_t now = mono_ns(), wait = WAIT_SLICE_NS;
    if (deadline) {
        if (now >= deadline)
            return SHMDICT_ETIMEDOUT;
        if (deadline - now < wait)
            wait = deadline - now;
    }
    if (until && until - now < wait)
        wait = until > now ? until - now : 1;
    struct timespec ts = {(time_t)(wait / 1000000000u), (long)(wait % 1000000000u)};
    if (__atomic_load_n(&h->closing, __ATOMIC_ACQUIRE))
        return SHMDICT_ECLOSED;
    if (futex(w, FUTEX_WAIT, s, &ts) != 0 && errno == EINTR)
        return SHMDICT_EINTR;
    return SHMDICT_OK;
}

static uint64_t to_deadline(double timeout)
{
    if (!(timeout >= 0))
        return 0; /* negative or NaN: wait forever */
    double ns = timeout * 1e9;
    uint64_t now = mono_ns();
    return ns > (double)(UINT64_MAX - now - 1) ? UINT64_MAX - 1 : now + (uint64_t)ns + 1;
}

int shmdict_version(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out)
{
    out->ver = 0;
    return shmdict_ttl(h, key, klen, out) == SHMDICT_ECORRUPT ? SHMDICT_ECORRUPT : SHMDICT_OK;
}

/* A MISSING KEY HAS NO VERSION TO COMPARE: missing -> set -> deleted (or
 * expired) looks unchanged to a waiter that saw it missing both times. The
 * event ring remembers: was there an event for this key at or after sequence
 * since[1]? Under the lock. 1 also when the ring cannot tell (events from
 * there were overwritten, or an entry is inconsistent): a waiter then returns
 * rather than risk sleeping through a change. When nothing is found, the
 * cursor moves to the head (since[1] = next sequence, since[2] = its
 * position), so the next look reads only newer entries. */
static int key_event_since(shmdict_t *h, const char *key, size_t klen, uint64_t *since)
{
    int rc = lock_dict(h);
    if (rc)
        return rc;
    header_t *H = h->hdr;
    ev_listen(h); /* writers keep appending while this waiter looks (notify.c) */
    int found = 0;
    uint64_t seq = since[1], tail = H->ev_tail, head = H->ev_head;
    if (H->ev_tail_seq > seq || head < tail || head - tail > h->ev_cap || tail % 16) {
        found = 1;
        goto out;
    }
    uint64_t pos = since[2] >= tail && since[2] <= head && since[2] % 16 == 0 ? since[2] : tail;
    while (pos < head) { /* at most ev_cap / 16 entries: each is >= 16 bytes */
        ev_t *e = ev_at(h, pos);
        uint64_t phys = pos % h->ev_cap;
        if (e->size < sizeof(ev_t) || e->size % 16 || e->size > h->ev_cap - phys ||
            e->size > head - pos || e->op > EV_FLUSH || ev_size(e->klen) > e->size) {
            found = 1;
            break;
        }
        if (e->op != EV_SKIP && e->op != EV_FLUSH && e->seq >= seq && e->klen == klen &&
            memcmp(e->key, key, klen) == 0) {
            found = 1;
            break;
        }
        pos += e->size;
    }
    if (!found) {
        since[1] = H->ev_seq;
        since[2] = head;
    }
out:
    unlock_dict(h);
    return found;
}

static int wait_impl(shmdict_t *h, const char *key, size_t klen, uint64_t *since, uint64_t deadline,
                     shmdict_out_t *out, char *buf, size_t cap)
{
    uint64_t hash = hash_key(h, key, klen);
    uint32_t *w = &h->hdr->notify_seq[(hash >> 32) % NBUCKETS];
    /* Waiting on a missing key: remember where the event ring stood, before
     * the first look. An event for the key from there on is a change, even if
     * it is missing again. Kept in the caller's cursor across calls. */
    if (since[1] == UINT64_MAX) { /* read under the lock: never a sequence a rollback takes back */
        int rc = h->ev_cap ? lock_dict(h) : SHMDICT_OK;
        if (rc)
            return rc;
        if (h->ev_cap)
            ev_listen(h); /* from here on, writers append (notify.c) */
        since[1] = h->ev_cap ? h->hdr->ev_seq : 0;
        if (h->ev_cap)
            unlock_dict(h);
    }
    for (;;) {
        uint32_t s = arm(w); /* before the check: see the protocol above */
        /* Read the key's version and value in one locked call (the protocol
         * above needs the lock: a lock-free read could miss a writer that
         * looked at the word before this waiter armed it). */
        out->ver = 0;
        out->len = 0;
        int rc = get_locked(h, key, klen, out, buf, cap);
        if (rc < 0 && rc != SHMDICT_ENOTFOUND)
            return rc;
        uint32_t ver = rc == SHMDICT_ENOTFOUND ? 0 : out->ver;
        if (since[0] == UINT64_MAX)
            since[0] = ver; /* "the next change": this is the state it changes from */
        if (ver != since[0])
            return rc; /* changed: its value (or ENOTFOUND: it went away) */
        if (!ver && h->ev_cap) {
            int ch = key_event_since(h, key, klen, since);
            if (ch < 0)
                return ch;
            if (ch)
                return SHMDICT_ENOTFOUND; /* set and gone again: a change, and now missing */
        }
        /* A key with a TTL changes when it expires, with or without a writer. */
        uint64_t until = 0;
        if (ver) {
            shmdict_out_t t;
            if (shmdict_ttl(h, key, klen, &t) == SHMDICT_OK && t.f > 0)
                until = mono_ns() + (uint64_t)(t.f * 1e9) + 1000000;
        }
        rc = sleep_on(h, w, s, deadline, until);
        if (rc != SHMDICT_OK)
            return rc;
    }
}

/* The caller's timeout bounds its waits for the dict's lock too: a stopped
 * lock holder must not hold a waiter past its deadline (lock.c). */
int shmdict_wait(shmdict_t *h, const char *key, size_t klen, uint64_t *since, double timeout,
                 shmdict_out_t *out, char *buf, size_t cap)
{
    if (klen == 0 || klen > SHMDICT_MAX_KEY)
        return SHMDICT_EINVAL;
    uint64_t deadline = to_deadline(timeout);
    uint64_t prev = deadline_push(deadline);
    int rc = wait_impl(h, key, klen, since, deadline, out, buf, cap);
    deadline_pop(prev);
    return rc;
}

static int events_impl(shmdict_t *h, uint64_t *cursor, char *buf, size_t cap, uint64_t deadline,
                       shmdict_out_t *out)
{
    header_t *H = h->hdr;
    uint32_t *w = &H->notify_seq[EV_WORD];
    for (;;) {
        uint32_t s = arm(w);
        int rc = lock_dict(h);
        if (rc)
            return rc;
        ev_listen(h); /* writers keep appending while this reader comes back (notify.c) */
        /* cursor[0] = position, cursor[1] = next sequence wanted; ~0 = start now */
        if (cursor[1] == UINT64_MAX) {
            cursor[0] = H->ev_head;
            cursor[1] = H->ev_seq;
        }
        out->i = 0;
        if (cursor[1] < H->ev_tail_seq || cursor[1] > H->ev_seq || cursor[0] > H->ev_head ||
            cursor[0] < H->ev_tail) {
            out->i = cursor[1] < H->ev_tail_seq ? (int64_t)(H->ev_tail_seq - cursor[1]) : 1;
            cursor[0] = H->ev_tail;
            cursor[1] = H->ev_tail_seq;
        }
        size_t used = 0;
        int64_t n = 0;
        while (cursor[0] < H->ev_head) {
            /* entries are 16-aligned: a scribbled tail or head must not misalign the read */
            ev_t *e = cursor[0] % 16 ? NULL : ev_at(h, cursor[0]);
            uint64_t phys = cursor[0] % h->ev_cap;
            if (!e || e->size < sizeof(ev_t) || e->size % 16 || e->size > h->ev_cap - phys ||
                e->size > H->ev_head - cursor[0] || (e->op != EV_SKIP && e->seq != cursor[1]) ||
                e->op > EV_FLUSH || ev_size(e->klen) > e->size) {
                /* Inconsistent entry: report everything up to the head as lost. */
                out->i += (int64_t)(H->ev_seq - cursor[1]);
                cursor[0] = H->ev_head;
                cursor[1] = H->ev_seq;
                break;
            }
            if (e->op != EV_SKIP) {
                if (used + 3 + e->klen > cap) {
                    if (!n && !out->i) { /* not even one fits: ask for room, never stall */
                        unlock_dict(h);
                        out->len = 3 + (uint64_t)e->klen;
                        return SHMDICT_ERANGE;
                    }
                    break;
                }
                buf[used] = (char)e->op;
                memcpy(buf + used + 1, &e->klen, 2);
                memcpy(buf + used + 3, e->key, e->klen);
                used += 3 + (size_t)e->klen;
                n++;
                cursor[1]++;
            }
            cursor[0] += e->size;
        }
        unlock_dict(h);
        out->len = used;
        if (n || out->i)
            return (int)n;
        rc = sleep_on(h, w, s, deadline, 0);
        if (rc != SHMDICT_OK)
            return rc;
    }
}

int shmdict_events(shmdict_t *h, uint64_t *cursor, char *buf, size_t cap, double timeout,
                   shmdict_out_t *out)
{
    if (!h->ev_cap)
        return SHMDICT_EINVAL;
    uint64_t deadline = to_deadline(timeout);
    uint64_t prev = deadline_push(deadline);
    int rc = events_impl(h, cursor, buf, cap, deadline, out);
    deadline_pop(prev);
    return rc;
}

void shmdict_interrupt(shmdict_t *h)
{
    __atomic_store_n(&h->closing, 1, __ATOMIC_RELEASE);
    for (int b = 0; b <= NBUCKETS; b++)
        futex(&h->hdr->notify_seq[b], FUTEX_WAKE, INT_MAX, NULL);
}
