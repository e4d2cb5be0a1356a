/*
 * notify.c -- change notification without a server: futex words in the
 * mapping for "wait until this key changes", and an event ring in the file
 * for "watch the stream of changes". This file owns the writer's side
 * (bumping and waking words, appending events inside an operation's
 * transaction) and calls no operation; the waiting side is watch.c.
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
 * sleep at most WAIT_SLICE_NS (watch.c) at a time anyway. Wake-ups may be spurious
 * (keys share buckets): waiters always re-check the key's version.
 *
 * PER-KEY VERSIONS. Every record carries `ver`, bumped by each change of its
 * value or TTL (record.c and the operation files); a new record starts from the global operation
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
 * (unlogged), and head and seq move through w64, so a rolled-back operation
 * leaves no event behind. When the ring is full, the oldest entries are
 * dropped first, outside the transaction (see append_event): a rollback
 * cannot restore bytes the new entry overwrote, so it must not restore a
 * tail that points at them.
 * Readers (watch.c) copy under the dict lock, checking each entry's size and sequence;
 * a reader that fell behind the tail gets "lost N" and resumes at the tail.
 * A slow or dead reader costs writers nothing.
 *
 * NOBODY LISTENING. Appending costs a write about two hundred instructions
 * and a few shared cache lines, mostly for nobody. Readers of the ring --
 * watchers, and waiters on a missing key -- call ev_listen() under the lock
 * before they read it: it pushes ev_listen_until LISTEN_NS ahead (a header
 * store at most every LISTEN_NS / 2). Writers append while their clock is
 * before it, and otherwise only count the event (ev_skipped, one logged
 * store). A writer's clock is a reading it took earlier (refreshed every
 * CLOCK_EVERY changes): behind the real time, so it only ever errs towards
 * appending. The first ev_listen() or append after skipped events settles them:
 * ev_seq moves past them and the ring is emptied (tail = head), so every
 * cursor from before learns, as "lost N", how many events it did not get
 * (the counted ones and those it had not read yet) -- never silently nothing. A listener stays registered as long as it comes
 * back within LISTEN_NS (watch.c sleeps at most a second at a time).
 *
 * UPDATES IN PLACE (kv.c incr_in_place) hold only their key's stripe lock,
 * so they never append: they run only while nobody listens (ev_listening,
 * the same test with a per-thread clock) and count their event in their
 * stripe (note_in_place, before the update commits: a rolled-back update
 * over-counts, never hides one). The next ev_listen() settles those counts
 * with the dict's own (ev_settled: the stripes' sum already settled). A
 * watcher that starts while an update in place is under way may see that
 * one event as "lost 1". They bump and wake the key's futex word after
 * releasing the stripe, behind a full fence (wake_in_place).
 */
#include <limits.h>

#include "notify.h"
#include "fault.h"
#include "lock.h"

#define LISTEN_NS 4000000000ull /* a listener is assumed gone this long after its last look */
#define CLOCK_EVERY 64u          /* changes a writer notes between two clock readings */

static uint64_t mono_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

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

/* Events of updates in place counted in the stripes since the last settle.
 * The stripes' counters only grow (unlogged, outside the dict lock), and
 * ev_settled is their sum when the last settle took them in. */
static uint64_t stripe_skipped(shmdict_t *h, uint64_t *total)
{
    uint64_t t = 0;
    for (int s = 0; s < NSTRIPES; s++)
        t += __atomic_load_n(&h->hdr->stripes[s].ev_skipped, __ATOMIC_RELAXED);
    *total = t;
    return t - h->hdr->ev_settled;
}

/* Events were counted, not appended: move the sequence past them and empty
 * the ring, so that every reader's cursor reports them lost. Logged. */
static void settle_skipped(shmdict_t *h, uint64_t in_stripes, uint64_t total)
{
    header_t *H = h->hdr;
    uint64_t seq = H->ev_seq + H->ev_skipped + in_stripes;
    w64(h, &H->ev_seq, seq);
    w64(h, &H->ev_tail, H->ev_head);
    w64(h, &H->ev_tail_seq, seq);
    w64(h, &H->ev_skipped, 0);
    if (in_stripes)
        w64(h, &H->ev_settled, total);
}

void ev_listen(shmdict_t *h)
{
    header_t *H = h->hdr;
    if (!h->ev_cap)
        return;
    uint64_t total, in_stripes = stripe_skipped(h, &total);
    if (H->ev_skipped || in_stripes) {
        settle_skipped(h, in_stripes, total);
        commit(h);
    }
    uint64_t now = mono_now();
    if (__atomic_load_n(&H->ev_listen_until, __ATOMIC_RELAXED) < now + LISTEN_NS / 2)
        __atomic_store_n(&H->ev_listen_until, now + LISTEN_NS, __ATOMIC_RELAXED);
}

/* Does anyone read the ring? (Errs towards yes: see NOBODY LISTENING.) */
static bool listened(shmdict_t *h)
{
    if (h->ev_writes++ % CLOCK_EVERY == 0)
        h->ev_clock = mono_now();
    return h->ev_clock < __atomic_load_n(&h->hdr->ev_listen_until, __ATOMIC_RELAXED);
}

static void append_event(shmdict_t *h, int op, const char *key, size_t klen)
{
    header_t *H = h->hdr;
    uint64_t cap = h->ev_cap;
    if (!cap)
        return;
    if (!listened(h)) {
        w64(h, &H->ev_skipped, H->ev_skipped + 1);
        return;
    }
    if (H->ev_skipped)
        settle_skipped(h, 0, 0); /* (the stripes' count is settled by the listener's next look) */
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
        /* Dropping the oldest entries is NOT part of the transaction: the new
         * entry's bytes overwrite them before the operation commits, and the
         * undo log could not bring those bytes back. So the tail moves for
         * good, with plain stores, before the first byte is overwritten; a
         * rolled-back operation then leaves the ring at its old head with
         * every entry from the new tail on intact (the dropped ones are
         * reported lost, as they would have been anyway). tail_seq is stored
         * first; a kill between the two stores is mended by ring_repair. */
        __atomic_store_n(&H->ev_tail_seq, tail_seq, __ATOMIC_RELAXED);
        STORED();
        __atomic_store_n(&H->ev_tail, tail, __ATOMIC_RELAXED);
        STORED();
    }
    if (skip) {
        ev_t *f = ev_at(h, head);
        f->size = (uint32_t)skip;
        f->op = EV_SKIP;
        f->zero = 0;
        f->klen = 0;
        f->seq = seq;
        STORED();
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
    STORED();
    w64(h, &H->ev_seq, seq + 1);
    w64(h, &H->ev_head, head + size);
    FAULT(EVENT_APPENDED);
}

/* ---- updates in place (kv.c incr_in_place) -------------------------------- */

bool ev_listening(shmdict_t *h)
{
    static __thread uint64_t seen, writes; /* as listened(), per thread: no dict lock here */
    if (!h->ev_cap)
        return false;
    if (writes++ % CLOCK_EVERY == 0)
        seen = mono_now();
    return seen < __atomic_load_n(&h->hdr->ev_listen_until, __ATOMIC_RELAXED);
}

void note_in_place(shmdict_t *h, stripe_t *st)
{
    if (h->ev_cap) {
        __atomic_store_n(&st->ev_skipped, st->ev_skipped + 1, __ATOMIC_RELAXED);
        STORED();
    }
}

void wake_in_place(shmdict_t *h, uint64_t hash)
{
    /* The change and the release of the stripe are visible before the futex
     * words are looked at: a waiter sets WAITERS, then reads the version. */
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
    bump(h->hdr, (int)((hash >> 32) % NBUCKETS));
    if (h->ev_cap)
        bump(h->hdr, EV_WORD);
    wake_pending(h);
}

/* Recovery, after the undo log is replayed: a kill between the two plain
 * stores that move the tail leaves tail_seq one step ahead of the tail; the
 * entry at the tail carries its own sequence number (a filler carries the
 * next entry's), which is the truth. Anything it cannot vouch for is left to
 * append_event's consistency check, which starts the ring over. */
void ring_repair(shmdict_t *h)
{
    header_t *H = h->hdr;
    uint64_t cap = h->ev_cap, tail = H->ev_tail, head = H->ev_head;
    if (!cap || tail >= head || head - tail > cap || tail % 16)
        return;
    const ev_t *e = ev_at(h, tail);
    uint64_t seq = e->seq, size = e->size;
    if (size < sizeof(ev_t) || size % 16 || size > cap - tail % cap || size > head - tail || seq > H->ev_seq)
        return;
    if (H->ev_tail_seq != seq) {
        H->ev_tail_seq = seq;
        STORED();
    }
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
