/*
 * notify.c -- change notification without a server: futex words in the
 * mapping for "wait until this key changes", and an event ring in the file
 * for "watch the stream of changes".
 *
 * FUTEX WORDS. The header holds NBUCKETS + 1 32-bit words; a key belongs to
 * bucket tag % NBUCKETS. Each word is a 31-bit sequence plus the WAITERS bit.
 * Futexes on a MAP_SHARED file are keyed by (inode, offset), so every process
 * -- at whatever address it mapped the file -- sleeps on the same word.
 *
 *   waiter:  s = word | WAITERS (set with a CAS);
 *            lock; is the key's version still `since`? unlock;
 *            FUTEX_WAIT(word, s, timeout)
 *   writer:  inside the lock, after its change: if word has WAITERS, then
 *            word = (word + 1) & ~WAITERS and remember the bucket;
 *            after unlock: FUTEX_WAKE(word, all)
 *
 * No wake-up is lost: the writer looks at the word under the lock, after its
 * change. If the waiter had set WAITERS by then, the writer moves the word,
 * so FUTEX_WAIT returns at once or is woken; if not, the waiter's locked
 * check comes after the change and sees it. When nobody waits, writers pay
 * one plain load per word -- no atomic read-modify-write, no system call --
 * and they never block on a reader. A waiter killed at any moment leaves at most a stale WAITERS bit,
 * which costs one extra wake. A writer killed between its bump and its wake
 * leaves sleepers unwoken: recovery wakes every word (wake_all), and waiters
 * sleep at most WAIT_SLICE_NS at a time anyway. Wake-ups may be spurious
 * (keys share buckets): waiters always re-check the key's version.
 *
 * PER-KEY VERSIONS. Every record carries `ver`, bumped by each change of its
 * value or TTL (see ops.c); a new record starts from the global operation
 * counter, so a deleted and re-created key does not repeat an old version.
 * A missing key has version 0.
 *
 * EVENT RING. events_cap bytes between the index and the arena. Entries:
 *
 *   u32 size (bytes, a multiple of 16)   u8 op   u8 0   u16 klen
 *   u64 seq                              key[klen], zero-padded to 16
 *
 * ev_head/ev_tail are absolute byte positions (physical = pos % cap) and
 * ev_seq/ev_tail_seq the matching sequence numbers; an entry that would
 * straddle the end is preceded by an EV_SKIP filler. Appending is part of the
 * operation's transaction: the entry's bytes lie beyond the published head
 * (unlogged), and head, seq and -- when old entries are overwritten -- tail
 * move through w64, so a rolled-back operation leaves no event behind.
 * Readers copy under the dict lock, checking each entry's size and sequence;
 * a reader that fell behind the tail gets "lost N" and resumes at the tail.
 * Nothing about a reader is stored in the file: a slow or dead reader costs
 * writers nothing.
 */
#include <errno.h>
#include <limits.h>
#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "layout.h"

#define WAIT_SLICE_NS 1000000000ull /* a sleeper re-checks at least once a second */

static __thread uint64_t wake_mask[(NBUCKETS + 1 + 63) / 64];
static __thread int wake_any;

uint32_t next_ver(uint32_t v) { return v + 1 ? v + 1 : 1; }

static void bump(header_t *H, int b)
{
    uint32_t *w = &H->notify_seq[b];
    uint32_t old = __atomic_load_n(w, __ATOMIC_ACQUIRE), nw;
    if (!(old & WAITERS))
        return; /* nobody sleeps on it: nothing to do */
    do
        nw = (old + 1) & ~WAITERS;
    while (!__atomic_compare_exchange_n(w, &old, nw, true, __ATOMIC_RELEASE, __ATOMIC_RELAXED));
    if (old & WAITERS) {
        wake_mask[b / 64] |= 1ull << (b % 64);
        wake_any = 1;
    }
}

static long futex(uint32_t *w, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, w, op, val, ts, NULL, 0);
}

void wake_pending(shmdict_t *h)
{
    if (!wake_any)
        return;
    wake_any = 0;
    for (int b = 0; b <= NBUCKETS; b++) {
        if (wake_mask[b / 64] & (1ull << (b % 64))) {
            wake_mask[b / 64] &= ~(1ull << (b % 64));
            futex(&h->hdr->notify_seq[b], FUTEX_WAKE, INT_MAX, NULL);
        }
    }
}

void wake_all(shmdict_t *h)
{
    for (int b = 0; b <= NBUCKETS; b++)
        __atomic_fetch_add(&h->hdr->notify_seq[b], 1, __ATOMIC_ACQ_REL); /* move every word */
    for (int b = 0; b <= NBUCKETS; b++) /* a dead writer's bump may have cleared the bit */
        wake_mask[b / 64] |= 1ull << (b % 64);
    wake_any = 1;
}

/* ---- the event ring -------------------------------------------------------- */

typedef struct ev {
    uint32_t size;
    uint8_t op;
    uint8_t zero;
    uint16_t klen;
    uint64_t seq;
    char key[];
} ev_t;

static inline uint64_t ev_size(size_t klen) { return (sizeof(ev_t) + klen + 15) & ~(uint64_t)15; }
static inline ev_t *ev_at(shmdict_t *h, uint64_t pos)
{
    return (ev_t *)(h->base + h->ev_off + pos % h->ev_cap);
}

/* Drop entries at the tail until `need` more bytes fit. Returns false if the
 * ring is inconsistent (then the caller resets it). */
static bool make_room(shmdict_t *h, uint64_t need, uint64_t *tail, uint64_t *tail_seq)
{
    header_t *H = h->hdr;
    while (H->ev_head + need - *tail > h->ev_cap) {
        if (*tail >= H->ev_head)
            return false;
        ev_t *e = ev_at(h, *tail);
        uint64_t phys = *tail % h->ev_cap;
        if (e->size < sizeof(ev_t) || e->size % 16 || e->size > h->ev_cap - phys || e->size > H->ev_head - *tail)
            return false;
        if (e->op != EV_SKIP)
            ++*tail_seq;
        *tail += e->size;
    }
    return true;
}

static void append_event(shmdict_t *h, int op, const char *key, size_t klen)
{
    header_t *H = h->hdr;
    uint64_t cap = h->ev_cap;
    if (!cap)
        return;
    uint64_t size = ev_size(klen), head = H->ev_head, seq = H->ev_seq;
    if (head % 16) { /* entries are 16-aligned: a scribbled head would misalign every entry */
        head = (head + 15) & ~15ull;
        w64(h, &H->ev_head, head);
    }
    if (H->ev_tail > head || head - H->ev_tail > cap || H->ev_tail_seq > seq || H->ev_tail % 16) {
        w64(h, &H->ev_tail, head); /* inconsistent after a scribble: start over */
        w64(h, &H->ev_tail_seq, seq);
    }
    if (size > cap / 2) {
        /* Too large to keep: record the gap so readers report it as lost. */
        w64(h, &H->ev_seq, seq + 1);
        w64(h, &H->ev_tail, head);
        w64(h, &H->ev_tail_seq, seq + 1);
        return;
    }
    uint64_t phys = head % cap, skip = phys + size > cap ? cap - phys : 0;
    uint64_t tail = H->ev_tail, tail_seq = H->ev_tail_seq;
    if (!make_room(h, skip + size, &tail, &tail_seq)) {
        tail = head;
        tail_seq = seq;
    }
    if (tail != H->ev_tail) {
        w64(h, &H->ev_tail, tail);
        w64(h, &H->ev_tail_seq, tail_seq);
    }
    if (skip) {
        ev_t *f = ev_at(h, head);
        f->size = (uint32_t)skip;
        f->op = EV_SKIP;
        f->zero = 0;
        f->klen = 0;
        f->seq = seq;
        head += skip;
    }
    ev_t *e = ev_at(h, head);
    e->size = (uint32_t)size;
    e->op = (uint8_t)op;
    e->zero = 0;
    e->klen = (uint16_t)klen;
    e->seq = seq;
    memcpy(e->key, key, klen);
    memset(e->key + klen, 0, size - sizeof(ev_t) - klen);
    w64(h, &H->ev_seq, seq + 1);
    w64(h, &H->ev_head, head + size);
    FAULT(EVENT_APPENDED);
}

void note_change(shmdict_t *h, uint64_t hash, int op, const char *key, size_t klen)
{
    header_t *H = h->hdr;
    append_event(h, op, key, klen);
    bump(H, (int)((hash >> 32) % NBUCKETS));
    if (h->ev_cap)
        bump(H, EV_WORD);
}

void note_flush(shmdict_t *h)
{
    append_event(h, EV_FLUSH, "", 0);
    for (int b = 0; b <= NBUCKETS; b++)
        bump(h->hdr, b);
}

/* ---- waiting ---------------------------------------------------------------- */

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
 * `seq`? Under the lock. 1 also when the ring cannot tell (events from `seq`
 * were overwritten, or an entry is inconsistent): a waiter then returns
 * rather than risk sleeping through a change. */
static int key_event_since(shmdict_t *h, const char *key, size_t klen, uint64_t seq)
{
    int rc = lock_dict(h);
    if (rc)
        return rc;
    header_t *H = h->hdr;
    int found = 0;
    uint64_t pos = H->ev_tail, next = H->ev_tail_seq;
    if (next > seq || H->ev_head < pos || H->ev_head - pos > h->ev_cap || pos % 16) {
        found = 1;
        goto out;
    }
    while (pos < H->ev_head) { /* at most ev_cap / 16 entries: each is >= 16 bytes */
        ev_t *e = ev_at(h, pos);
        uint64_t phys = pos % h->ev_cap;
        if (e->size < sizeof(ev_t) || e->size % 16 || e->size > h->ev_cap - phys ||
            e->size > H->ev_head - pos || e->op > EV_FLUSH || ev_size(e->klen) > e->size) {
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
out:
    unlock_dict(h);
    return found;
}

static int wait_impl(shmdict_t *h, const char *key, size_t klen, uint32_t since, uint64_t deadline,
                     shmdict_out_t *out, char *buf, size_t cap)
{
    uint64_t hash = hash_key(h, key, klen);
    uint32_t *w = &h->hdr->notify_seq[(hash >> 32) % NBUCKETS];
    /* Waiting on a missing key: remember where the event ring stood. An event
     * for the key after this point is a change, even if it is missing again. */
    uint64_t seq0 = h->ev_cap ? __atomic_load_n(&h->hdr->ev_seq, __ATOMIC_ACQUIRE) : 0;
    for (;;) {
        uint32_t s = arm(w); /* before the check: see the protocol above */
        /* Read the key's version and value in one locked call. */
        out->ver = 0;
        out->len = 0;
        int rc = shmdict_get(h, key, klen, out, buf, cap);
        if (rc < 0 && rc != SHMDICT_ENOTFOUND)
            return rc;
        uint32_t ver = rc == SHMDICT_ENOTFOUND ? 0 : out->ver;
        if (ver != since)
            return rc; /* changed: its value (or ENOTFOUND: it went away) */
        if (!ver && h->ev_cap) {
            int ch = key_event_since(h, key, klen, seq0);
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
int shmdict_wait(shmdict_t *h, const char *key, size_t klen, uint32_t since, double timeout,
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
