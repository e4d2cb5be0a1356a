/*
 * seq.c -- sequence words for reads that take no lock (optread.c), and the
 * statistics a process keeps for itself.
 *
 * THE PROTOCOL (a seqlock per stripe of keys, plus one for bulk steps)
 * Keys fall into NSTRIPES stripes by their tag (the high half of the hash:
 * every record a reader of key K can reach through a slot with K's tag is of
 * K's stripe). header.seq_stripe[s] is even when stable, odd while a lock
 * holder may be changing something a reader of stripe s looks at:
 *
 *   writer (lock held): seq_mark(tag) -> stores -> ... -> seq_release at unlock
 *   reader (no lock):   b1 = seq_bulk, s1 = seq_stripe[s] (both even, acquire)
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
 * THE READERS' GEOMETRY. Lock holders may re-point the handle (a growth
 * maps the file again, an index growth moves the index) while another thread
 * of the process reads without the lock; readers therefore use h->ro, a copy
 * republished at unlock under the handle's own sequence word. Old mappings
 * stay mapped until close (grow.c), so a copy is always safe to read through;
 * whether it is current is checked against the header (index_cap, size).
 */
#include "seq.h"

static inline uint32_t load32(const uint32_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }
static inline void store32(uint32_t *p, uint32_t v) { __atomic_store_n(p, v, __ATOMIC_RELAXED); }

/* Odd, and different from any value a reader may have seen even. */
static inline void make_odd(uint32_t *w)
{
    uint32_t v = load32(w);
    store32(w, v + ((v & 1) ? 2 : 1));
}

void seq_mark_slow(shmdict_t *h, uint32_t s)
{
    h->seq_marks |= 1ull << s;
    make_odd(&h->hdr->seq_stripe[s]);
    __atomic_thread_fence(__ATOMIC_RELEASE);
}

void seq_bulk(shmdict_t *h)
{
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
    if (!h->seq_marks && !h->seq_bulk_marked)
        return;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    for (uint64_t m = h->seq_marks; m; m &= m - 1) {
        uint32_t *w = &H->seq_stripe[__builtin_ctzll(m)];
        uint32_t v = load32(w);
        store32(w, v + (v & 1));
    }
    h->seq_marks = 0;
    if (h->seq_bulk_marked) {
        uint32_t v = load32(&H->seq_bulk);
        store32(&H->seq_bulk, v + (v & 1));
        h->seq_bulk_marked = 0;
    }
}

void seq_adopt(shmdict_t *h)
{
    header_t *H = h->hdr;
    for (uint32_t s = 0; s < NSTRIPES; s++)
        if (load32(&H->seq_stripe[s]) & 1)
            h->seq_marks |= 1ull << s;
    if (load32(&H->seq_bulk) & 1)
        h->seq_bulk_marked = 1;
}

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
