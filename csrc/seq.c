/*
 * seq.c -- the stripes of keys: sequence words for reads that take no lock
 * (optread.c), a lock and undo log per stripe for updates in place that take
 * no dict lock (kv.c incr_in_place), and the statistics a process keeps for
 * itself.
 *
 * THE PROTOCOL (a seqlock per stripe of keys, plus one for bulk steps)
 * Keys fall into NSTRIPES stripes by their tag (the high half of the hash:
 * every record a reader of key K can reach through a slot with K's tag is of
 * K's stripe). stripes[s].seq is even when stable, odd while the holder of
 * the stripe's lock may be changing something a reader of stripe s looks at:
 *
 *   writer (dict lock): seq_mark(tag) -> stores -> ... -> seq_release at unlock
 *   reader (no lock):   b1 = seq_bulk, s1 = stripes[s].seq (both even, acquire)
 *                       -> geometry still current -> probe, copy (every offset
 *                       and length bounds-checked, each word read once)
 *                       -> acquire fence -> s1, b1 unchanged? else retry
 *
 * What a writer marks: the key it works on (BEGIN in record.h, put() in
 * record.c), each key it deletes (delete_at_op: its own record is freed) and
 * each key whose slot a backward shift moves (table.c). Inserting a key into
 * an empty slot, or a tombstone, changes no other key's probe path; the hole
 * a backward shift finally empties lies on no unmoved key's path. Stores to
 * unpublished blocks are reachable only through a slot that changed, and that
 * change marked its stripe. Bulk steps -- compaction, index growth, growth of
 * the file, flush (table_reset) and their redo in recovery -- mark seq_bulk
 * instead, which every reader checks. The CLOCK referenced bit is a hint: a
 * reader sets it with a compare-and-swap on the record's type word, which
 * fails if anything else in that word changed.
 *
 * A holder that dies leaves odd words: readers of those stripes fall back to
 * the lock, whose next holder recovers (guard.c), adopts the odd words as its
 * own marks (seq_adopt) and releases them at unlock, each word moving on to a
 * new even value: a reader that began before the dead writer's first store
 * sees a different word and retries. A table marked corrupt keeps seq_bulk
 * odd, so readers go to the lock, which reports it.
 *
 * Ordering: a mark is a store followed by a release fence (the mark before
 * the data stores); a release is a release fence then the store. Readers load
 * the words with acquire and re-load them after an acquire fence. On x86
 * these are plain moves and compiler barriers.
 *
 * STRIPE LOCKS. Each stripe also has a robust mutex and a two-entry undo
 * log (layout.h stripe_t). Whoever holds a stripe's lock owns its records'
 * numbers and type words (version included), its records' lives (freeing,
 * moving) and its sequence word:
 *
 *   - the dict lock's holder takes a stripe's lock in seq_mark (it writes a
 *     key of the stripe, frees one, or moves one's slot), in seq_hold (it
 *     reads a number or version of the stripe under the dict lock), or for
 *     all stripes (seq_hold_all before reading many values; seq_bulk before
 *     a bulk step), and releases them all at unlock (seq_release). Its
 *     stores go to the dict's undo log as before;
 *   - an update in place (an incr of a live number that changes no TTL,
 *     kv.c) takes only its key's stripe (stripe_begin), without the dict
 *     lock, and logs its two stores (the number, then the type word with
 *     the version) in the stripe's own log: stripe_w64, stripe_commit.
 *
 * Lock order: the dict lock before any stripe lock. An update in place
 * waits for its one stripe holding no lock, and while it holds the stripe
 * waits for nothing (whatever it cannot do there, it does after releasing
 * it, under the dict lock), so no cycle exists. The dict lock's holder waits
 * for a busy stripe: an update in place holds it for a few dozen
 * instructions. Waiting is a spin, then a few yields (with more processes
 * than CPUs the holder has most likely lost its CPU to the waiter's
 * neighbour), then a sleep in the kernel (seq_trylock; guard.c). The
 * stripe's mutex has its cache line to itself, so a waiter's trylocks do
 * not slow the holder's stores to the sequence word and the log.
 *
 * Death. A dead updater's stripe lock comes back EOWNERDEAD to the next
 * taker, with its log: whoever takes the stripe next replays a nonempty
 * log (newest entry first, as lock.c's) before anything else, then the
 * updater's odd word is even again. A dead dict-lock holder leaves odd
 * words and its own log: only the dict lock's next holder may repair that
 * (guard.c recover: seq_adopt takes every odd stripe), so an updater that
 * finds its stripe's word odd after taking the lock backs off to the dict
 * lock. An updater that died before logging or after committing leaves an
 * odd word and an empty log: it backs off too, and the dict lock's holder
 * adopts the word (nothing to undo) and releases it. A stripe log that
 * names a word outside the arena, or whose stamp is not its gen's, is never
 * replayed: the dict is marked corrupt (flush_all clears it).
 *
 * THE READERS' GEOMETRY. Lock holders may re-point the handle (a growth
 * maps the file again, an index growth moves the index) while another thread
 * of the process reads without the lock; readers therefore use h->ro, a copy
 * republished at unlock under the handle's own sequence word. Old mappings
 * stay mapped until close (grow.c), so a copy is always safe to read through;
 * whether it is current is checked against the header (index_cap, size).
 */
#include <errno.h>
#include <sched.h>

#include "seq.h"
#include "fault.h"

#define CBAR_() atomic_signal_fence(memory_order_seq_cst)

static inline uint32_t load32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void store32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

/* Odd, and different from any value a reader may have seen even. */
static inline void make_odd(uint32_t *w)
{
    uint32_t v = load32(w);
    store32(w, v + ((v & 1) ? 2 : 1));
}

/* ---- a stripe's undo log ------------------------------------------------------ */

static inline uint64_t stripe_stamp(const stripe_t *st) { return (uint64_t)(uint32_t)st->gen << 32; }

void stripe_w64(stripe_t *st, const struct ro_geo *g, uint64_t *p, uint64_t v)
{
    uint64_t n = ulog_len(st->ulog_n);
    st->ulog[n].off = (uint64_t)((char *)p - (char *)g->hdr);
    STORED();
    st->ulog[n].old = __atomic_load_n(p, __ATOMIC_RELAXED);
    STORED();
    CBAR_();
    st->ulog_n = stripe_stamp(st) | (n + 1);
    CBAR_();
    STORED();
    __atomic_store_n(p, v, __ATOMIC_RELAXED);
    STORED();
}

void stripe_commit(stripe_t *st)
{
    CBAR_();
    st->ulog_n = 0;
    CBAR_();
    STORED();
    st->gen++;
    STORED();
}

/* Undo what a dead updater logged: base is the file's first byte in the
 * caller's mapping, [arena_off, size) the arena it may name. False (and
 * nothing stored) if the log is not one an updater wrote. */
static bool stripe_replay(stripe_t *st, char *base, uint64_t arena_off, uint64_t size)
{
    uint64_t w = st->ulog_n, n = ulog_len(w);
    if (n > 2 || w >> 32 != (uint32_t)st->gen)
        return false;
    ulog_entry_t e[2];
    for (uint64_t k = 0; k < n; k++) {
        e[k] = st->ulog[k];
        if (e[k].off % 8 || e[k].off < arena_off || e[k].off > size - 8)
            return false;
    }
    for (uint64_t k = n; k-- > 0;) {
        __atomic_store_n((uint64_t *)(void *)(base + e[k].off), e[k].old, __ATOMIC_RELAXED);
        STORED();
    }
    CBAR_();
    st->ulog_n = 0;
    CBAR_();
    STORED();
    return true;
}

/* ---- the dict lock's holder and the stripes ----------------------------------- */

int seq_trylock(shmdict_t *h, uint32_t s)
{
    pthread_mutex_t *mu = &stripe_at(h, s)->lock.mu;
    if (__builtin_expect(mutex_unrecoverable(mu), 0))
        return ENOTRECOVERABLE;
    int r = pthread_mutex_trylock(mu);
    for (int spin = 0; r == EBUSY && spin < 200; spin++) {
        cpu_relax();
        r = pthread_mutex_trylock(mu);
    }
    /* Still busy after a few hundred pauses, for a hold of a few dozen
     * instructions: its holder lost its CPU, most likely to a process
     * pinned beside it -- perhaps this one. Yielding lets it finish, where
     * a sleep in the kernel would leave it waiting for its next time slice
     * while the co-runner goes on. */
    for (int y = 0; r == EBUSY && y < 16; y++) {
        sched_yield();
        r = pthread_mutex_trylock(mu);
    }
    return r;
}

/* Whether the lock that returned r is ours now. A dead owner's is marked
 * consistent at once: what it left is judged from the stripe's log. */
static bool owned(pthread_mutex_t *mu, int r)
{
    if (r == EOWNERDEAD)
        pthread_mutex_consistent(mu);
    return r == 0 || r == EOWNERDEAD;
}

/* Stripe s's lock is this holder of the dict lock's now (r: what locking it
 * returned): repair after a dead updater, adopt an odd word a dead holder
 * left (it is released, even, at unlock like a mark). ELOCK: a mutex that
 * can never be taken (shmdict repair re-initialises it): not had, nothing
 * else changed. ECORRUPT: a stripe log no updater wrote, cleared, and the
 * dict marked corrupt. */
int seq_took(shmdict_t *h, uint32_t s, int r)
{
    stripe_t *st = stripe_at(h, s);
    if (!owned(&st->lock.mu, r))
        return SHMDICT_ELOCK; /* a mutex nobody can take (ENOTRECOVERABLE, or a scribble) */
    h->seq_held |= 1ull << s;
    int rc = SHMDICT_OK;
    if (__builtin_expect(st->ulog_n != 0, 0)) {
        if (stripe_replay(st, h->base, (uint64_t)(h->arena - h->base), h->size)) {
            h->hdr->recoveries++; /* a dead updater's half-done update, undone */
        } else {
            h->hdr->corrupt = 1; /* a log no updater wrote: never guessed at */
            st->ulog_n = 0;
            STORED();
            rc = SHMDICT_ECORRUPT;
        }
    }
    if (load32(&st->seq) & 1)
        h->seq_marks |= 1ull << s;
    return rc;
}

/* Take stripe s's lock for this holder of the dict lock, in the middle of
 * an operation: without a deadline (guard.c lock_stripe is the timed way,
 * where a call can still give up): an updater holds it for a few dozen
 * instructions, and a dead one's comes back EOWNERDEAD. */
static void take(shmdict_t *h, uint32_t s)
{
    int r = seq_trylock(h, s);
    if (r == EBUSY)
        r = pthread_mutex_lock(&stripe_at(h, s)->lock.mu);
    /* ECORRUPT: the operation goes on (its own log is sound); the next lock
     * reports it. ELOCK in the middle of an operation: the stripe is not
     * this holder's, so its records must not be trusted to stay as they
     * are: the dict is refused until a repair and a flush_all. */
    if (seq_took(h, s, r) == SHMDICT_ELOCK)
        h->hdr->corrupt = 1;
}

void seq_hold_slow(shmdict_t *h, uint32_t s) { take(h, s); }

void seq_mark_slow(shmdict_t *h, uint32_t s)
{
    if (!(h->seq_held >> s & 1))
        take(h, s); /* (if it could not be had, the dict is now marked corrupt; the
                     * word is still made odd for readers, and even at unlock) */
    if (!(h->seq_marks >> s & 1)) {
        h->seq_marks |= 1ull << s;
        make_odd(&stripe_at(h, s)->seq);
    }
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

void seq_hold_all(shmdict_t *h)
{
    for (uint32_t s = 0; s < NSTRIPES; s++)
        if (!(h->seq_held >> s & 1))
            take(h, s);
}

void seq_bulk(shmdict_t *h)
{
    seq_hold_all(h); /* no update in place runs while records or slots move */
    if (!h->seq_bulk_marked) {
        h->seq_bulk_marked = 1;
        make_odd(&h->hdr->seq_bulk);
        __atomic_thread_fence(__ATOMIC_RELEASE);
    }
}

void seq_release(shmdict_t *h)
{
    header_t *H = h->hdr;
    if (__builtin_expect(H->corrupt != 0, 0)) { /* readers must ask the lock, which reports it */
        if (!(load32(&H->seq_bulk) & 1))
            store32(&H->seq_bulk, load32(&H->seq_bulk) + 1);
        h->seq_bulk_marked = 0;
    }
    if (!h->seq_held && !h->seq_marks && !h->seq_bulk_marked)
        return;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    for (uint64_t m = h->seq_marks; m; m &= m - 1) {
        uint32_t *w = &stripe_at(h, (uint32_t)__builtin_ctzll(m))->seq;
        uint32_t v = load32(w);
        store32(w, v + (v & 1));
    }
    if (h->seq_bulk_marked) {
        uint32_t v = load32(&H->seq_bulk);
        store32(&H->seq_bulk, v + (v & 1));
        h->seq_bulk_marked = 0;
    }
    for (uint64_t m = h->seq_held; m; m &= m - 1)
        pthread_mutex_unlock(&stripe_at(h, (uint32_t)__builtin_ctzll(m))->lock.mu);
    h->seq_marks = h->seq_held = 0;
}

void seq_adopt(shmdict_t *h)
{
    for (uint32_t s = 0; s < NSTRIPES; s++)
        if (load32(&stripe_at(h, s)->seq) & 1)
            seq_mark_slow(h, s);
}

/* ---- an update in place ------------------------------------------------------- */

bool stripe_begin(shmdict_t *h, uint32_t s, const struct ro_geo *g, int r)
{
    stripe_t *st = stripe_at(h, s);
    pthread_mutex_t *mu = &st->lock.mu;
    if (!owned(mu, r))
        return false;
    if (__builtin_expect(st->ulog_n != 0, 0)) {
        /* a dead updater's stores: undo them (its word was made odd before its first) */
        if (!stripe_replay(st, (char *)g->hdr, (uint64_t)(g->arena - (char *)g->hdr), g->size)) {
            pthread_mutex_unlock(mu); /* the dict lock's holder decides (take) */
            return false;
        }
        __atomic_fetch_add(&g->hdr->recoveries, 1, __ATOMIC_RELAXED); /* (a statistic) */
        uint32_t v = load32(&st->seq);
        __atomic_thread_fence(__ATOMIC_RELEASE);
        store32(&st->seq, v + (v & 1));
    }
    if (load32(&st->seq) & 1) { /* a dead holder's mark: the dict lock's next holder repairs it */
        pthread_mutex_unlock(mu);
        return false;
    }
    make_odd(&st->seq);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    return true;
}

void stripe_end(shmdict_t *h, uint32_t s)
{
    stripe_t *st = stripe_at(h, s);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    uint32_t v = load32(&st->seq);
    store32(&st->seq, v + (v & 1));
    STORED();
    pthread_mutex_unlock(&st->lock.mu);
}

/* ---- the readers' geometry, and statistics ------------------------------------ */

void seq_publish(shmdict_t *h)
{
    struct ro_geo *g = &h->ro;
    if (__builtin_expect(g->hdr == h->hdr && g->slots == h->slots && g->arena == h->arena &&
                         g->size == h->size && g->cap == h->cap && g->units == h->units, 1))
        return;
    store32(&h->ro_seq, load32(&h->ro_seq) + 1);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    __atomic_store_n(&g->hdr, h->hdr, __ATOMIC_RELAXED);
    __atomic_store_n(&g->slots, h->slots, __ATOMIC_RELAXED);
    __atomic_store_n(&g->arena, h->arena, __ATOMIC_RELAXED);
    __atomic_store_n(&g->size, h->size, __ATOMIC_RELAXED);
    __atomic_store_n(&g->cap, h->cap, __ATOMIC_RELAXED);
    __atomic_store_n(&g->units, h->units, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_RELEASE);
    store32(&h->ro_seq, load32(&h->ro_seq) + 1);
}

bool seq_geometry(shmdict_t *h, struct ro_geo *g)
{
    uint32_t s = __atomic_load_n(&h->ro_seq, __ATOMIC_ACQUIRE);
    if (s & 1)
        return false;
    g->hdr = __atomic_load_n(&h->ro.hdr, __ATOMIC_RELAXED);
    g->slots = __atomic_load_n(&h->ro.slots, __ATOMIC_RELAXED);
    g->arena = __atomic_load_n(&h->ro.arena, __ATOMIC_RELAXED);
    g->size = __atomic_load_n(&h->ro.size, __ATOMIC_RELAXED);
    g->cap = __atomic_load_n(&h->ro.cap, __ATOMIC_RELAXED);
    g->units = __atomic_load_n(&h->ro.units, __ATOMIC_RELAXED);
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    return load32(&h->ro_seq) == s && g->hdr && g->cap;
}

void seq_stats_flush(shmdict_t *h)
{
    header_t *H = h->hdr;
    uint64_t hits = __atomic_exchange_n(&h->st_hits, 0, __ATOMIC_RELAXED);
    uint64_t misses = __atomic_exchange_n(&h->st_misses, 0, __ATOMIC_RELAXED);
    uint64_t locks = __atomic_exchange_n(&h->st_locks, 0, __ATOMIC_RELAXED);
    if (hits)
        __atomic_fetch_add(&H->st_hits, hits, __ATOMIC_RELAXED);
    if (misses)
        __atomic_fetch_add(&H->st_misses, misses, __ATOMIC_RELAXED);
    if (locks)
        __atomic_fetch_add(&H->st_locks, locks, __ATOMIC_RELAXED);
}
