/*
 * watch.c -- waiting for changes: a key's version (shmdict_version), waiting
 * until a key changes (shmdict_wait), reading the event ring
 * (shmdict_events), and waking every waiter of a handle being closed
 * (shmdict_interrupt). The protocol -- futex words, WAITERS bit, the ring's
 * entries -- is described in notify.c, which owns the writer's side.
 *
 * TIMEOUTS. A call's `timeout` bounds its wait for a change. Its waits for
 * the dict's lock are bounded by the handle's lock timeout and this thread's
 * call deadline (shmdict_deadline), which the binding sets once per caller's
 * call: a binding that waits in slices (asyncio) keeps one lock deadline for
 * all of them, so no slice's end turns into a zero lock timeout. A lock not
 * had in time is ELOCKTIMEOUT, never a value.
 *
 * EXPIRY AS AN EVENT. Nobody writes when a TTL passes, so a watcher that
 * finds nothing new reclaims the expired records itself (each reclaim is a
 * committed delete that appends an `expire` event) and sleeps at most until
 * the header's exp_hint, the earliest deadline: `expire` events come when the
 * TTL passes, not whenever a writer happens to sweep.
 */
#include <errno.h>
#include <limits.h>
#include <time.h>

#include "guard.h"
#include "hash.h"
#include "kv.h"
#include "notify.h"
#include "scan.h"
#include "table.h"

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
    if (until) /* a deadline already passed re-checks at once, not after a whole slice */
        wait = until <= now ? 1 : until - now < wait ? until - now : wait;
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

/* The ring's next sequence, read under the lock: never a sequence that a
 * rollback takes back (a dead writer's event is undone with its operation). */
static int ring_seq(shmdict_t *h, uint64_t *seq)
{
    int rc = lock_dict(h);
    if (rc)
        return rc;
    ev_listen(h); /* settles skipped events, and writers append from here on (notify.c) */
    *seq = h->hdr->ev_seq;
    unlock_dict(h);
    return SHMDICT_OK;
}

/* A present key: OK, out->ver its version, out->len = 0. A missing key: OK,
 * out->ver = 0 and -- with an event ring -- out->len = 1 and out->i = the
 * ring's sequence when it was seen missing, for shmdict_wait's since[1]: an
 * event for the key from there on is a change. The sequence is read before
 * the look that finds the key missing, so nothing after the look escapes it.
 * Errors (ELOCKTIMEOUT, ECORRUPT, ...) are returned, never a version. */
int shmdict_version(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out)
{
    uint64_t seq = 0;
    int rc = shmdict_ttl(h, key, klen, out);
    if (rc == SHMDICT_ENOTFOUND && h->ev_cap) { /* again, after reading where the ring stands */
        rc = ring_seq(h, &seq);
        if (rc == SHMDICT_OK)
            rc = shmdict_ttl(h, key, klen, out);
    }
    if (rc == SHMDICT_ENOTFOUND) {
        out->ver = 0;
        out->len = h->ev_cap ? 1 : 0;
        out->i = (int64_t)seq;
        return SHMDICT_OK;
    }
    if (rc == SHMDICT_OK)
        out->len = 0;
    return rc;
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
    if (since[1] == UINT64_MAX) {
        uint64_t seq = 0;
        int rc = h->ev_cap ? ring_seq(h, &seq) : SHMDICT_OK;
        if (rc)
            return rc;
        since[1] = seq;
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

/* Lock waits: see TIMEOUTS above. */
int shmdict_wait(shmdict_t *h, const char *key, size_t klen, uint64_t *since, double timeout,
                 shmdict_out_t *out, char *buf, size_t cap)
{
    if (klen == 0 || klen > SHMDICT_MAX_KEY)
        return SHMDICT_EINVAL;
    return wait_impl(h, key, klen, since, to_deadline(timeout), out, buf, cap);
}

#define RECLAIM_EVERY_NS 100000000ull /* a watcher's full reclaim pass: at most every 100 ms */

/* Reclaim expired records (their `expire` events) if exp_hint says one may
 * have expired and this call has not done so in the last RECLAIM_EVERY_NS
 * (*last: its last pass, CLOCK_MONOTONIC): a pass walks the index, and a dict
 * whose items expire all the time would otherwise be walked at every wake.
 * Under the lock. Returns when to look again (CLOCK_MONOTONIC ns; 0: no TTL
 * left). */
static uint64_t expire_due(shmdict_t *h, uint64_t *last)
{
    header_t *H = h->hdr;
    if (!H->n_ttl)
        return 0;
    uint64_t now = now_ns(), mono = mono_ns();
    if ((!H->exp_hint || now >= H->exp_hint) && (!*last || mono - *last >= RECLAIM_EVERY_NS)) {
        reclaim_expired(h, now, true); /* commits each delete; ECORRUPT shows at the next lock */
        *last = mono;
    }
    uint64_t hint = H->exp_hint;
    if (!H->n_ttl || !hint)
        return 0;
    uint64_t at = mono + (hint > now ? hint - now : 0) + 1000000; /* 1 ms late: surely past it */
    uint64_t next = *last ? *last + RECLAIM_EVERY_NS : 0;
    return at > next ? at : next;
}

static int events_impl(shmdict_t *h, uint64_t *cursor, const char *pat, size_t plen, char *buf, size_t cap,
                       uint64_t deadline, shmdict_out_t *out)
{
    header_t *H = h->hdr;
    uint32_t *w = &H->notify_seq[EV_WORD];
    uint64_t last_reclaim = 0;
    for (;;) {
        uint32_t s = arm(w);
        int rc = lock_dict(h);
        if (rc)
            return rc;
        ev_listen(h); /* writers keep appending while this reader comes back (notify.c) */
        /* Only a reader that may wait reclaims what expired (its expire events
         * are what it waits for); a look that cannot wait changes nothing. */
        uint64_t until = deadline == 0 || mono_ns() < deadline ? expire_due(h, &last_reclaim) : 0;
        /* The ring's bounds, read once under the lock and checked before any
         * entry is: a scribbled head or tail must neither misalign the walk
         * nor send it past ev_cap bytes (the walk is then O(ev_cap / 16)). */
        uint64_t head = H->ev_head, tail = H->ev_tail, seq = H->ev_seq, tail_seq = H->ev_tail_seq;
        bool sane = tail <= head && head - tail <= h->ev_cap && tail % 16 == 0 && head % 16 == 0 &&
                    tail_seq <= seq;
        /* cursor[0] = position, cursor[1] = next sequence wanted; ~0 = start now */
        if (cursor[1] == UINT64_MAX) {
            cursor[0] = head;
            cursor[1] = seq;
        }
        out->i = 0;
        if (!sane) { /* report everything up to the head as lost (at least one), once */
            if (cursor[0] != head || cursor[1] != seq)
                out->i = cursor[1] < seq ? (int64_t)(seq - cursor[1]) : 1;
            cursor[0] = head; /* the next append starts the ring over from here (notify.c) */
            cursor[1] = seq;
        } else if (cursor[1] < tail_seq || cursor[1] > seq || cursor[0] > head || cursor[0] < tail ||
                   cursor[0] % 16) {
            out->i = cursor[1] < tail_seq ? (int64_t)(tail_seq - cursor[1]) : 1;
            cursor[0] = tail;
            cursor[1] = tail_seq;
        }
        size_t used = 0;
        int64_t n = 0;
        while (sane && cursor[0] < head) {
            ev_t *e = ev_at(h, cursor[0]);
            uint64_t phys = cursor[0] % h->ev_cap;
            uint32_t size = e->size;
            uint16_t klen = e->klen;
            uint8_t op = e->op;
            if (size < sizeof(ev_t) || size % 16 || size > h->ev_cap - phys || size > head - cursor[0] ||
                (op != EV_SKIP && e->seq != cursor[1]) || op > EV_FLUSH || ev_size(klen) > size) {
                /* Inconsistent entry: report everything up to the head as lost. */
                out->i += (int64_t)(seq - cursor[1]);
                cursor[0] = head;
                cursor[1] = seq;
                break;
            }
            if (op != EV_SKIP) {
                /* Filtered here, under the lock: events for other keys are passed
                 * over without being copied, so they neither fill the caller's
                 * buffer nor make it fall behind. A flush concerns every key. */
                bool want = op == EV_FLUSH || !pat || glob_match(pat, plen, e->key, klen);
                if (want && used + 3 + klen > cap) {
                    if (!n && !out->i) { /* not even one fits: ask for room, never stall */
                        unlock_dict(h);
                        out->len = 3 + (uint64_t)klen;
                        return SHMDICT_ERANGE;
                    }
                    break;
                }
                if (want) {
                    buf[used] = (char)op;
                    memcpy(buf + used + 1, &klen, 2);
                    memcpy(buf + used + 3, e->key, klen);
                    used += 3 + (size_t)klen;
                    n++;
                }
                cursor[1]++;
            }
            cursor[0] += size;
        }
        unlock_dict(h);
        out->len = used;
        if (n || out->i)
            return (int)n;
        rc = sleep_on(h, w, s, deadline, until);
        if (rc != SHMDICT_OK)
            return rc;
    }
}

/* Lock waits: see TIMEOUTS above. pat (plen bytes; NULL = every key) is a
 * glob matched in here. */
int shmdict_events(shmdict_t *h, uint64_t *cursor, const char *pat, size_t plen, char *buf, size_t cap,
                   double timeout, shmdict_out_t *out)
{
    if (!h->ev_cap)
        return SHMDICT_EINVAL;
    return events_impl(h, cursor, pat, plen, buf, cap, to_deadline(timeout), out);
}

void shmdict_interrupt(shmdict_t *h)
{
    __atomic_store_n(&h->closing, 1, __ATOMIC_RELEASE);
    for (int b = 0; b <= NBUCKETS; b++)
        futex(&h->hdr->notify_seq[b], FUTEX_WAKE, INT_MAX, NULL);
}
