/*
 * table.c -- the hash index and the record allocator. No locking here: every
 * function runs with the dict's mutex held (guard.c), and every mutation goes
 * through the undo log (w64/wlog, lock.c). It also owns the expiry clock
 * (now_ns) every TTL is measured on.
 *
 * INDEX. Open addressing with linear probing over 8-byte slots (see
 * layout.h). The load factor, tombstones included, is kept at or below 87.5%
 * (LOAD_NUM / LOAD_DEN); when an insert would pass it, grow_index() takes
 * slots from the top of the arena and rebuilds the index (see GROWING THE
 * INDEX below). Deletion uses backward shift, so the index normally
 * holds no tombstones: the deleted slot becomes TOMB, entries that can move
 * closer to their home slide back into it one by one, and the final hole
 * becomes EMPTY. Each move is two logged stores; if the undo log runs short
 * mid-shift, the operation commits the prefix (a TOMB marks the hole, which is
 * a valid state: lookups probe past it, inserts reuse it) and continues.
 *
 * ALLOCATOR. Records live in segregated size classes (layout.h class_units):
 * a LIFO free list per class plus a bump pointer; blocks are never merged
 * (a borrowed one is split in place into class-sized pieces), so the arena
 * is always a gap-free sequence of blocks from unit FIRST_UNIT to `bump`
 * (table_check walks it). An allocation takes the exact class's free list,
 * then the bump pointer, then (borrowing) the smallest larger class with a
 * free block, split: the rest goes back on the lists as class-sized blocks. Free space scattered in holes is gathered at the top
 * by compaction (below), the one pass that moves or re-carves blocks.
 *
 * EXPIRY. Lazy: readers treat a record past its deadline as absent. Writers
 * sweep SWEEP_SLOTS slots per insert when any record has a TTL, and before a
 * dict reports Full, reclaim_expired(all) removes every expired record. The
 * header's exp_hint (no deadline lies before it) makes a repeated Full O(1)
 * until something can actually have expired.
 */
#include <stdlib.h>
#include <stdio.h>
#include <time.h>

#include "table.h"
#include "seq.h"
#include "fault.h"
#include "hash.h"
#include "lock.h"
#include "notify.h"

static int64_t clock_shift_ns;

void shmdict_clock_shift(int64_t ns) { clock_shift_ns += ns; }

uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + (uint64_t)clock_shift_ns;
}

/* Absolute deadline for "expires in exptime seconds" (0 = never). */
uint64_t deadline_ns(uint64_t now, double exptime)
{
    if (!(exptime > 0))
        return 0;
    double ns = exptime * 1e9;
    if (ns >= (double)(UINT64_MAX - now - 1))
        return UINT64_MAX - 1;
    uint64_t d = now + (uint64_t)ns;
    return d > now ? d : now + 1;
}

/* ---- records -------------------------------------------------------------- */

/* The record a slot points at, after checking everything the file could have
 * gotten wrong; NULL means corrupt. */
rec_t *rec_at(shmdict_t *h, uint64_t slot)
{
    uint64_t unit = slot_unit(slot);
    uint64_t bump = h->hdr->bump;
    if (bump > h->units)
        return NULL;
    if (unit < FIRST_UNIT || unit + REC_HDR / UNIT > bump)
        return NULL;
    rec_t *r = unit_ptr(h, unit);
    int cls = r->cls & 0x7f;
    if (cls >= NCLASS || r->type < SHMDICT_T_BOOL || r->type > SHMDICT_T_LIST || r->klen == 0)
        return NULL;
    uint64_t cu = class_units(cls);
    if (unit + cu > bump)
        return NULL;
    if ((rec_bytes(r) + UNIT - 1) / UNIT > cu) /* a list's start + vlen too */
        return NULL;
    return r;
}

/* The one block validator of every arena walker (compaction, index rebuild,
 * free_space, check): the block at unit u, below bump, has a class whose size
 * fits before bump. Says nothing of the block's contents. */
bool block_ok(const shmdict_t *h, uint64_t u, uint64_t bump)
{
    int c = unit_ptr(h, u)->cls & 0x7f;
    return u + MIN_BLOCK <= bump && c >= MIN_BLOCK - 1 && c < NCLASS && u + class_units(c) <= bump;
}

/* ---- geometry -------------------------------------------------------------- */

/* Point the handle at the index and arena that hdr->index_cap describes:
 * the index is the last index_cap * 8 bytes before h->size (the dict's size,
 * bound by grow.c map_sync), the arena runs from arena_off (fixed at
 * creation) up to it. Everything is checked: a scribbled
 * index_cap gives ECORRUPT, never an index outside the mapping. */
int table_bind(shmdict_t *h)
{
    header_t *H = h->hdr;
    uint64_t cap = H->index_cap, aoff = (uint64_t)(h->arena - h->base), size = h->size;
    if (size > h->map_size || cap < 1 || cap > (1ull << 32) || aoff > size || cap > (size - aoff) / 8)
        return SHMDICT_ECORRUPT;
    uint64_t units = (size - aoff - cap * 8) / UNIT;
    if (units <= FIRST_UNIT + MIN_REC_UNITS || units > (1ull << 32) || H->bump > units)
        return SHMDICT_ECORRUPT;
    h->cap = cap;
    h->units = units;
    h->slots = (uint64_t *)(h->base + size - cap * 8);
    return SHMDICT_OK;
}

int64_t find_slot(shmdict_t *h, const char *key, size_t klen, uint64_t hash, int64_t *ins)
{
    uint32_t tag = (uint32_t)(hash >> 32);
    uint64_t cap = h->cap, i = home_of(h, tag);
    const uint64_t *slots = h->slots;
    *ins = -1;
    for (uint64_t n = 0; n < cap; n++) {
        uint64_t s = slots[i];
        if (s == SLOT_EMPTY) {
            if (*ins < 0)
                *ins = (int64_t)i;
            return -1;
        }
        if (s == SLOT_TOMB) {
            if (*ins < 0)
                *ins = (int64_t)i;
        } else if (slot_tag(s) == tag) {
            rec_t *r = rec_at(h, s);
            if (!r)
                return SHMDICT_ECORRUPT;
            if (r->klen == klen && memcmp(r->data, key, klen) == 0)
                return (int64_t)i;
        }
        if (++i == cap)
            i = 0;
    }
    return -1;
}

/* ---- allocator ------------------------------------------------------------ */

/* Largest class whose size is <= units (units >= 1). */
static int class_floor(uint64_t units)
{
    int c = class_of(units);
    if (c >= NCLASS || class_units(c) > units)
        c--;
    return c < NCLASS ? c : NCLASS - 1;
}

/* Size of the first class-sized piece to carve from a free run of len units
 * (len >= MIN_BLOCK; the rest of a borrowed block): as large as possible,
 * never leaving a 1-unit sliver. */
static uint64_t carve_len(uint64_t len)
{
    int c = class_floor(len);
    if (len - class_units(c) == 1)
        c--; /* above 64 units classes step by >= 16 units, so the rest is >= 17 */
    return class_units(c);
}

/* For free_space (stats.c): the largest class that fits, exported. */
int class_floor_units(uint64_t units) { return class_floor(units); }

/* Turn [at, end) -- inside a block already logged or unpublished -- into free
 * blocks of class sizes and push them on their lists. The headers are plain
 * stores; the list heads are logged. */
static void push_free_run(shmdict_t *h, uint64_t at, uint64_t end)
{
    header_t *H = h->hdr;
    while (at < end) {
        uint64_t len = carve_len(end - at);
        int c = class_of(len);
        rec_t *p = unit_ptr(h, at);
        rec_t hd = {0};
        hd.type = T_FREE;
        hd.cls = (uint8_t)c;
        hd.expires = H->free_head[c];
        memcpy(p, &hd, 16);
        STORED();
        w64(h, &H->free_head[c], at);
        at += len;
    }
}

/* Pop the head of class c's free list; the popped block's link and type
 * words are logged because the caller fills the block with plain stores. */
static int pop_free(shmdict_t *h, int c, uint64_t *unit_out)
{
    header_t *H = h->hdr;
    uint64_t u = H->free_head[c], cu = class_units(c);
    if (u < FIRST_UNIT || c < MIN_BLOCK - 1 || u + cu > H->bump || H->bump > h->units)
        return SHMDICT_ECORRUPT;
    rec_t *r = unit_ptr(h, u);
    if (r->type != T_FREE || (r->cls & 0x7f) != c)
        return SHMDICT_ECORRUPT;
    w64(h, &H->free_head[c], r->expires);
    wlog(h, &r->expires);
    wlog(h, (uint64_t *)&r->klen);
    *unit_out = u;
    return SHMDICT_OK;
}

/* Allocate a block of at least `units`: the exact class's free list, the bump
 * pointer, then (with borrow) the smallest larger class that has a free block.
 * Writes nothing unless it succeeds. */
int alloc_units(shmdict_t *h, uint64_t units, bool borrow, uint64_t *unit_out, int *cls_out)
{
    header_t *H = h->hdr;
    int c = class_of(units);
    if (c >= NCLASS)
        return SHMDICT_ETOOBIG;
    if (units > h->units - FIRST_UNIT)
        return SHMDICT_EFULL; /* larger than the arena now: only a growth can make room */
    uint64_t cu = class_units(c);
    *cls_out = c;
    if (H->free_head[c])
        return pop_free(h, c, unit_out);
    uint64_t bump = H->bump;
    if (bump > h->units)
        return SHMDICT_ECORRUPT;
    if (cu <= h->units - bump) {
        w64(h, &H->bump, bump + cu);
        *unit_out = bump;
        return SHMDICT_OK;
    }
    for (int c2 = c + 1; borrow && c2 < NCLASS; c2++) {
        if (H->free_head[c2]) {
            uint64_t u, have = class_units(c2);
            int rc = pop_free(h, c2, &u);
            if (rc)
                return rc;
            if (have - cu == 1) /* no 1-unit slivers: keep it (cu <= 63 here, an exact class) */
                cu = class_units(++c);
            push_free_run(h, u + cu, u + have); /* split: the rest goes back on the lists */
            *cls_out = c;
            *unit_out = u;
            return SHMDICT_OK;
        }
    }
    return SHMDICT_EFULL;
}

/* Return a live block to its class's free list (3 logged stores). */
void free_block(shmdict_t *h, uint64_t unit, rec_t *r)
{
    header_t *H = h->hdr;
    int c = r->cls & 0x7f;
    rec_t freed = *r;
    freed.type = T_FREE;
    uint64_t w;
    memcpy(&w, &freed.klen, 8);
    w64(h, (uint64_t *)&r->klen, w);
    w64(h, &r->expires, H->free_head[c]);
    w64(h, &H->free_head[c], unit);
    H->frees_since_compact++; /* a hint, unlogged */
    STORED();
}

/* ---- compaction ----------------------------------------------------------------
 *
 * Free blocks never merge, so after churn the free space can be scattered in
 * pieces too small for a large item. Compaction slides every live record down, in arena order, over the free
 * blocks below it, so all free space ends up above bump in one piece. A
 * record's index slot is found from its key's hash (the slot whose tag
 * matches and whose unit is the record's old or new place) and repointed.
 *
 * A bulk step under the redo protocol. compact() commits
 * defrag_pending = DEFRAG_COMPACT with the cursor compact_at at the start,
 * then compact_pass() runs with plain stores and recover() re-runs it from
 * the cursor after a crash. The cursor is one atomic word, dst << 32 | src:
 * below dst the records are compacted (and indexed there), [dst, src) is
 * garbage, and from src up the arena is the original tiling. Each record of
 * n units at src moves to dst in chunks of g = src - dst units (all of it at
 * once when g >= n): chunk k is copied from src + k*g to dst + k*g, which
 * overwrites only source units already copied, and after each chunk the
 * progress word compact_piece = src << 32 | chunks-done is stored. So a redo
 * resumes at the first chunk not recorded, whose source is still intact; it
 * reads the record's class from src when no chunk is recorded, else from dst
 * (chunk 0 holds the header's first two units, as g >= MIN_BLOCK). A stale
 * progress word names a smaller src, so it is never mistaken for the current
 * record's. Then the slot is repointed (idempotent: it matches old or new
 * unit) and the cursor advances in one store. At the end bump = dst and the
 * free lists, cleared at the start, stay empty. */

static int compact_move(shmdict_t *h, uint64_t dst, uint64_t src, uint64_t n)
{
    header_t *H = h->hdr;
    uint64_t g = src - dst, prog = H->compact_piece;
    uint64_t k = prog >> 32 == src ? (prog & 0xffffffffu) : 0;
    for (uint64_t at = k * g; at < n; at += g, k++) {
        uint64_t len = n - at < g ? n - at : g;
        memcpy(h->arena + (dst + at) * UNIT, h->arena + (src + at) * UNIT, len * UNIT);
        STORED();
        __atomic_store_n(&H->compact_piece, src << 32 | (k + 1), __ATOMIC_RELAXED);
        STORED();
        FAULT(COMPACT_CHUNK);
    }
    rec_t *r = unit_ptr(h, dst);
    if (r->klen == 0 || (rec_bytes(r) + UNIT - 1) / UNIT > n)
        return SHMDICT_ECORRUPT;
    uint32_t tag = (uint32_t)(hash_key(h, r->data, r->klen) >> 32);
    uint64_t i = home_of(h, tag);
    for (uint64_t m = 0; m < h->cap; m++, i = i + 1 == h->cap ? 0 : i + 1) {
        uint64_t s = h->slots[i];
        if (s == SLOT_EMPTY)
            break;
        if (s != SLOT_TOMB && slot_tag(s) == tag && (slot_unit(s) == src || slot_unit(s) == dst)) {
            __atomic_store_n(&h->slots[i], (uint64_t)tag << 32 | dst, __ATOMIC_RELAXED);
            STORED();
            return SHMDICT_OK;
        }
    }
    return SHMDICT_ECORRUPT; /* a live record no slot points at */
}

int compact_pass(shmdict_t *h)
{
    header_t *H = h->hdr;
    uint64_t bump = H->bump, at = H->compact_at, dst = at >> 32, src = at & 0xffffffffu;
    if (dst == bump && src > bump && src <= h->units)
        src = bump; /* the pass had finished and lowered bump to dst: nothing is left to move */
    if (bump < FIRST_UNIT || bump > h->units || dst < FIRST_UNIT || dst > src || src > bump)
        return SHMDICT_ECORRUPT;
    memset(H->free_head, 0, sizeof H->free_head);
    STORED();
    while (src < bump) {
        uint64_t prog = H->compact_piece;
        bool started = prog >> 32 == src && (prog & 0xffffffffu) > 0 && dst < src;
        rec_t *r = unit_ptr(h, started ? dst : src); /* type and class: the header's 2nd unit */
        int c = r->cls & 0x7f;
        if (src + MIN_BLOCK > bump || c < MIN_BLOCK - 1 || c >= NCLASS || src + class_units(c) > bump)
            return SHMDICT_ECORRUPT; /* (block_ok's test, on the class read from dst or src) */
        uint64_t n = class_units(c);
        if (r->type == T_FREE && !started) {
            src += n;
        } else {
            if (r->type < SHMDICT_T_BOOL || r->type > SHMDICT_T_LIST)
                return SHMDICT_ECORRUPT;
            if (dst < src) {
                int rc = compact_move(h, dst, src, n);
                if (rc)
                    return rc;
            }
            dst += n;
            src += n;
        }
        __atomic_store_n(&H->compact_at, dst << 32 | src, __ATOMIC_RELAXED);
        STORED();
        FAULT(COMPACT_MOVED);
    }
    H->bump = dst;
    STORED();
    H->frees_since_compact = 0;
    STORED();
    return SHMDICT_OK;
}

/* Free units below bump (in free blocks: what compaction would gather). */
static uint64_t holes(const shmdict_t *h)
{
    const header_t *H = h->hdr;
    uint64_t used = H->used_bytes / UNIT;
    return H->bump >= FIRST_UNIT + used ? H->bump - FIRST_UNIT - used : 0;
}

/* Would a compaction pass make room for a block of `units` that the free
 * lists and the bump pointer cannot give? With `amortised` (an evicting dict,
 * which would otherwise evict), only when the holes are worth it: at least
 * 1/16 of the arena, so passes cost O(1) per unit they give back. */
bool compact_would_fit(const shmdict_t *h, uint64_t units, bool amortised)
{
    uint64_t hole = holes(h), top = h->units - h->hdr->bump;
    if (hole == 0 || h->hdr->bump > h->units)
        return false;
    if (amortised && hole < h->units / 16)
        return false;
    int c = class_of(units);
    return c < NCLASS && class_units(c) <= hole + top;
}

/* Run a compaction pass (see above). Lock held, log empty. */
int compact(shmdict_t *h)
{
    header_t *H = h->hdr;
    if (H->ulog_n)
        return SHMDICT_ECORRUPT;
    seq_bulk(h); /* records move: lock-free readers retry (seq.c) */
    about_to_block(); /* O(arena): the binding lets its other threads run */
    w64(h, &H->defrag_pending, DEFRAG_COMPACT);
    w64(h, &H->compact_at, (uint64_t)FIRST_UNIT << 32 | FIRST_UNIT);
    w64(h, &H->compact_piece, 0);
    commit(h);
    FAULT(COMPACT_MARKED);
    int rc = compact_pass(h);
    if (rc) {
        H->corrupt = 1;
        return rc;
    }
    atomic_signal_fence(memory_order_seq_cst);
    H->defrag_pending = 0;
    STORED();
    H->compact_at = H->compact_piece = 0; /* no stale cursor left for a later step to misread */
    STORED();
    H->compactions++;
    return SHMDICT_OK;
}

/* ---- growing the index ----------------------------------------------------------
 *
 * The index is the file's last index_cap slots and the arena ends where it
 * begins, so the index grows downward into the free top of the arena (units
 * at or above bump). A growth is a bulk step under the redo protocol:
 *
 *   1. logged: defrag_pending = DEFRAG_REINDEX, index_cap = new_cap; commit.
 *      From here the header describes the new geometry (the arena is smaller,
 *      but bump is at or below its new end, so no record is in the way).
 *   2. Rebuild the new index: normally from a private copy of the old one
 *      (reindex_from: entries move by their tags, no record is read), and
 *      as redo after a crash, or without memory for the copy, with
 *      reindex_pass(): zero the new index, walk the arena and insert every
 *      live record at the slot its key's hash gives. Plain stores; neither
 *      writes the arena, so the step can be redone from the start after a
 *      crash at any point (recover() runs reindex_pass).
 *   3. defrag_pending = 0.
 *
 * The size: the index should end up with as many slots as the free space
 * could still fill with records of the mean size so far (at the load limit),
 * and no more, so a dict of small items reaches the best density and a dict
 * of large items gives the index only what it uses. Solving
 *   (cap + d) * 7/8 - entries = (free - d) / avg
 * for d gives the balance below. A growth takes at most the current capacity
 * (doubling) and at least 1/32 of it, so the O(entries) rebuilds cost O(1)
 * amortised per insert; if later items are smaller than the mean, the index
 * fills again and the next growth balances on the new mean. */

/* The two rebuilds of step 2 share their start (a zeroed index), the
 * insertion of an entry at its tag's place, and their end (the counters). */
static int reindex_begin(shmdict_t *h)
{
    uint64_t bump = h->hdr->bump;
    if (bump < FIRST_UNIT || bump > h->units)
        return SHMDICT_ECORRUPT;
    memset(h->slots, 0, h->cap * sizeof(uint64_t));
    STORED();
    FAULT(REINDEX_CLEARED);
    return SHMDICT_OK;
}

/* Entry s (tag << 32 | unit) at the first free slot from its home; the
 * caller has checked that fewer than cap entries are in, so the probe ends.
 * n: the entries inserted before it. */
static void reindex_put(shmdict_t *h, uint64_t s, uint64_t n)
{
    uint64_t cap = h->cap, i = home_of(h, slot_tag(s));
    while (h->slots[i] != SLOT_EMPTY)
        i = i + 1 == cap ? 0 : i + 1;
    h->slots[i] = s;
    STORED();
    if ((n + 1) % 4096 == 0)
        FAULT(REINDEX_INSERTED);
}

static int reindex_end(shmdict_t *h, uint64_t n)
{
    h->hdr->count = n;
    STORED();
    h->hdr->tombs = 0;
    STORED();
    return SHMDICT_OK;
}

/* Rebuild the index from the arena (step 2 above): every live record at the
 * slot its key's hash gives. */
int reindex_pass(shmdict_t *h)
{
    uint64_t bump = h->hdr->bump, n = 0;
    int rc = reindex_begin(h);
    if (rc)
        return rc;
    for (uint64_t u = FIRST_UNIT; u < bump;) {
        if (!block_ok(h, u, bump))
            return SHMDICT_ECORRUPT;
        rec_t *r = unit_ptr(h, u);
        int c = r->cls & 0x7f;
        if (r->type != T_FREE) {
            if (r->type < SHMDICT_T_BOOL || r->type > SHMDICT_T_LIST || r->klen == 0 ||
                (rec_bytes(r) + UNIT - 1) / UNIT > class_units(c) || n >= h->cap)
                return SHMDICT_ECORRUPT;
            reindex_put(h, (hash_key(h, r->data, r->klen) >> 32) << 32 | u, n++);
        }
        u += class_units(c);
    }
    return reindex_end(h, n);
}

/* The same rebuild from a copy of the old index (the normal path of a
 * growth): an entry's home slot depends only on its tag and the index's
 * size, so the entries move by their tags without reading a record or
 * hashing a key. The arena is left as it is, so recovery after a crash in
 * here redoes the step with reindex_pass. An entry that points outside the
 * arena's used part sends the rebuild to reindex_pass too, which judges the
 * records themselves. */
static int reindex_from(shmdict_t *h, const uint64_t *old, uint64_t old_cap)
{
    uint64_t bump = h->hdr->bump, n = 0;
    int rc = reindex_begin(h);
    if (rc)
        return rc;
    for (uint64_t k = 0; k < old_cap; k++) {
        uint64_t s = old[k];
        if (s <= SLOT_TOMB)
            continue;
        if (slot_unit(s) < FIRST_UNIT || slot_unit(s) >= bump || n >= h->cap)
            return reindex_pass(h);
        reindex_put(h, s, n++);
    }
    return reindex_end(h, n);
}

/* Would one more key pass the index's load limit? */
bool index_full(const shmdict_t *h)
{
    return (h->hdr->count + h->hdr->tombs + 1) * LOAD_DEN > h->cap * LOAD_NUM;
}

/* How many slots grow_index() would add now (0: it cannot), and the units
 * free in the arena (live records' bytes aside) in *free_out. With top_only,
 * as the arena is now; without, after a compaction pass. Read-only. */
uint64_t index_growth(const shmdict_t *h, bool top_only, uint64_t *free_out)
{
    const header_t *H = h->hdr;
    uint64_t cap = h->cap, entries = H->count + H->tombs, bump = H->bump;
    uint64_t used = H->used_bytes / UNIT;
    *free_out = 0;
    if (bump < FIRST_UNIT || bump > h->units || used > h->units - FIRST_UNIT || entries > cap)
        return 0;
    uint64_t free_units = h->units - FIRST_UNIT - used;
    *free_out = free_units;
    if (free_units < 2 * MIN_REC_UNITS)
        return 0; /* slots for records that could not be stored */
    /* balance, with `avg` the mean record size in units (at least the smallest) */
    uint64_t records = H->count ? H->count : 1;
    double avg = used / records < MIN_REC_UNITS ? MIN_REC_UNITS : (double)used / (double)records;
    double load = (double)LOAD_NUM / LOAD_DEN;
    double want = ((double)free_units + avg * ((double)entries - load * (double)cap)) / (load * avg + 1);
    uint64_t d = want > 0 ? (uint64_t)want + 1 : 0;
    if (d < 8 || d < cap / 32)
        d = cap / 32 > 8 ? cap / 32 : 8; /* a rebuild is O(entries): never for a handful of slots */
    if (d > cap)
        d = cap; /* at most double */
    if (d > (1ull << 32) - cap)
        d = (1ull << 32) - cap;
    if (d > free_units - MIN_REC_UNITS)
        d = free_units - MIN_REC_UNITS; /* leave room for the record that needs the slot */
    if (top_only && d > h->units - bump)
        d = h->units - bump; /* only the free top of the arena can become index */
    if ((entries + 1) * LOAD_DEN > (cap + d) * LOAD_NUM)
        return 0; /* not even one more entry */
    return d;
}

/* Give the index more slots (see above). Runs with the lock held and the
 * undo log empty (between operations' transactions). OK: the index grew
 * (slot numbers changed: look the key up again); EFULL: the arena has no
 * room it could spare; ECORRUPT. */
int grow_index(shmdict_t *h)
{
    header_t *H = h->hdr;
    uint64_t free_units, cap = h->cap;
    if (H->ulog_n)
        return SHMDICT_ECORRUPT;
    if (index_growth(h, false, &free_units) > index_growth(h, true, &free_units) && compact(h))
        return SHMDICT_ECORRUPT; /* the free space is in holes: gather it at the top first */
    uint64_t d = index_growth(h, true, &free_units);
    if (d == 0)
        return SHMDICT_EFULL;
    about_to_block(); /* O(entries): the binding lets its other threads run */
    /* A private copy of the old index, taken before anything changes: the
     * new index covers the old one's place. Without memory for it, the
     * rebuild reads the records instead (slower: it hashes every key). */
    uint64_t *old = malloc(cap * sizeof(uint64_t));
    if (old)
        memcpy(old, h->slots, cap * sizeof(uint64_t));
    seq_bulk(h); /* the index moves: lock-free readers retry (seq.c) */
    w64(h, &H->defrag_pending, DEFRAG_REINDEX);
    w64(h, &H->index_cap, cap + d);
    w64(h, &H->geo_check, geo_sum(cap + d, H->size));
    commit(h);
    FAULT(REINDEX_MARKED);
    int rc = table_bind(h);
    if (rc == SHMDICT_OK)
        rc = old ? reindex_from(h, old, cap) : reindex_pass(h);
    free(old);
    if (rc) {
        H->corrupt = 1;
        return SHMDICT_ECORRUPT;
    }
    atomic_signal_fence(memory_order_seq_cst);
    H->defrag_pending = 0;
    STORED();
    H->index_growths++;
    return SHMDICT_OK;
}

/* ---- the cursor walk ---------------------------------------------------------- */

/* From slot home(cursor), visit every entry whose probe did not wrap, in slot
 * order, until done() holds at an EMPTY slot; the batch that reaches the end
 * of the index then visits the wrapped entries of the run at slot 0. */
int index_walk(const uint64_t *slots, uint64_t cap, uint64_t cursor, int (*visit)(uint64_t, void *), void *vctx,
               bool (*done)(const void *), const void *dctx, uint64_t *next)
{
    uint64_t i = cursor >= (1ull << 32) ? cap : (uint64_t)(((unsigned __int128)cursor * cap) >> 32);
    int rc = 0;
    for (; i < cap && rc >= 0; i++) {
        uint64_t s = __atomic_load_n(&slots[i], __ATOMIC_RELAXED);
        if (s == SLOT_EMPTY) {
            if (done(dctx))
                break; /* a batch ends only just before an EMPTY slot */
            continue;
        }
        if (s != SLOT_TOMB && (((uint64_t)slot_tag(s) * cap) >> 32) <= i)
            rc = visit(s, vctx); /* (a wrapped entry: the batch that reaches the end takes it) */
    }
    for (uint64_t j = 0; i == cap && rc >= 0 && j < cap; j++) {
        uint64_t s = __atomic_load_n(&slots[j], __ATOMIC_RELAXED);
        if (s == SLOT_EMPTY)
            break;
        if (s != SLOT_TOMB && (((uint64_t)slot_tag(s) * cap) >> 32) > j)
            rc = visit(s, vctx); /* the wrapped entries of the run at slot 0 */
    }
    *next = i < cap ? (uint64_t)((((unsigned __int128)i << 32) + cap - 1) / cap) : 0;
    return rc;
}

/* ---- delete with backward shift ---------------------------------------------- */

/* Is x in the cyclic half-open range (a, b]? */
static bool in_range(uint64_t x, uint64_t a, uint64_t b)
{
    return a <= b ? (a < x && x <= b) : (a < x || x <= b);
}

/* Remove the record r at slot i: free it, fix the counters, close the gap.
 * The caller commits. */
int delete_at(shmdict_t *h, uint64_t i, rec_t *r) { return delete_at_op(h, i, r, EV_DELETE); }

int delete_at_op(shmdict_t *h, uint64_t i, rec_t *r, int ev_op)
{
    header_t *H = h->hdr;
    uint64_t *slots = h->slots, cap = h->cap;
    uint64_t unit = slot_unit(slots[i]);
    uint64_t cls_bytes = class_units(r->cls & 0x7f) * UNIT;
    /* Counters that would wrap below zero were scribbled on: refuse before any store. */
    if (H->count == 0 || H->used_bytes < cls_bytes || (r->expires && H->n_ttl == 0) || H->tombs >= cap)
        return SHMDICT_ECORRUPT;

    seq_mark(h, slot_tag(slots[i])); /* its lock-free readers (seq.c) */
    note_change(h, (uint64_t)slot_tag(slots[i]) << 32, ev_op, r->data, r->klen);
    w64(h, &slots[i], SLOT_TOMB);
    w64(h, &H->tombs, H->tombs + 1);
    FAULT(DELETE_TOMBED);
    if (r->expires)
        w64(h, &H->n_ttl, H->n_ttl - 1);
    free_block(h, unit, r);
    FAULT(DELETE_FREED);
    w64(h, &H->count, H->count - 1);
    w64(h, &H->used_bytes, H->used_bytes - cls_bytes);
    FAULT(DELETE_COUNTED);

    uint64_t hole = i, j = i;
    for (uint64_t n = 1; n < cap; n++) {
        if (++j == cap)
            j = 0;
        uint64_t s = slots[j];
        if (s == SLOT_EMPTY)
            break;
        if (s == SLOT_TOMB || in_range(home_of(h, slot_tag(s)), hole, j))
            continue; /* stays: its home lies after the hole */
        if (ulog_len(H->ulog_n) + 4 > ULOG_MAX)
            commit(h); /* hole is a counted TOMB: a valid state to stop in */
        seq_mark(h, slot_tag(s)); /* its slot moves: its lock-free readers retry (seq.c) */
        w64(h, &slots[hole], s);
        w64(h, &slots[j], SLOT_TOMB);
        hole = j;
        FAULT(DELETE_SHIFTED);
    }
    /* Nothing after the hole, up to the next EMPTY, probes through it. */
    w64(h, &slots[hole], SLOT_EMPTY);
    w64(h, &H->tombs, H->tombs - 1);
    return SHMDICT_OK;
}

/* ---- expiry ------------------------------------------------------------------- */

/* all == false: sweep a few slots from the hand. all == true: remove every
 * expired record (unless exp_hint proves none can have expired). Each victim
 * is deleted in its own committed transaction. Returns the number removed,
 * or ECORRUPT. */
int reclaim_expired(shmdict_t *h, uint64_t now, bool all)
{
    header_t *H = h->hdr;
    uint64_t cap = h->cap;
    if (H->n_ttl == 0)
        return 0;
    if (all && H->exp_hint && now < H->exp_hint)
        return 0;
    uint64_t i = all ? 0 : H->expire_hand % cap;
    uint64_t todo = all ? cap : SWEEP_SLOTS, hint = UINT64_MAX;
    int removed = 0;
    while (todo > 0) {
        uint64_t s = h->slots[i];
        if (s > SLOT_TOMB) {
            rec_t *r = rec_at(h, s);
            if (!r)
                return SHMDICT_ECORRUPT;
            if (expired(r, now)) {
                if (delete_at_op(h, i, r, EV_EXPIRE))
                    return SHMDICT_ECORRUPT;
                FAULT(RECLAIM_DELETED);
                commit(h);
                H->st_expired++;
                STORED();
                removed++;
                continue; /* another entry may have shifted into slot i */
            }
            if (r->expires && r->expires < hint)
                hint = r->expires;
        }
        todo--;
        if (++i == cap)
            i = 0;
    }
    if (all)
        H->exp_hint = hint; /* a hint: never too late, since every TTL store lowers it */
    else
        H->expire_hand = i;
    STORED();
    return removed;
}

/* ---- bulk ------------------------------------------------------------------- */

/* Empty the table with plain, idempotent stores (flush_all and its redo). */
void table_reset(shmdict_t *h)
{
    header_t *H = h->hdr;
    seq_bulk(h); /* everything goes: lock-free readers retry (seq.c) */
    about_to_block(); /* O(index) */
    /* The size this handle mapped and checked against the file: a scribbled
     * size is repaired here (a legitimate one equals it: lock_dict follows it). */
    H->size = h->size;
    STORED();
    if (H->size_user > h->size || H->size_user + PAGE <= h->size)
        H->size_user = h->size;
    STORED();
    H->index_cap = h->cap0; /* back to the size it was created with: the arena gets its top back */
    STORED();
    H->geo_check = geo_sum(h->cap0, h->size);
    STORED();
    H->bump = FIRST_UNIT;
    STORED();
    table_bind(h);          /* cannot fail: cap0 was checked at attach, and bump is at the bottom */
    memset(h->slots, 0, h->cap * sizeof(uint64_t));
    STORED();
    FAULT(FLUSH_CLEARED);
    memset(H->free_head, 0, sizeof H->free_head);
    STORED();
    H->count = H->tombs = H->n_ttl = H->used_bytes = 0;
    STORED();
    H->bump = FIRST_UNIT;
    H->exp_hint = 0;
    H->expire_hand = H->clock_hand = 0;
    H->frees_since_compact = 0;
    STORED();
    H->defrag_pending = 0;
    STORED();
    H->compact_at = H->compact_piece = 0;
    STORED();
    if (!flags_ok(H->flags)) /* the policy's low half is kept: flush_all is the way out of CorruptError */
        __atomic_store_n(&H->flags, flags_word((uint32_t)H->flags), __ATOMIC_RELAXED);
    STORED();
}

/* ---- integrity check -------------------------------------------------------- */

#define FAIL(...)                                                              \
    do {                                                                       \
        snprintf(msg, msgcap, __VA_ARGS__);                                    \
        rc = SHMDICT_ECORRUPT;                                                 \
        goto out;                                                              \
    } while (0)

/* Everything the table promises, in O(index + arena):
 *  1. the arena from FIRST_UNIT to bump is a gap-free sequence of blocks;
 *  2. every index entry points at the start of a distinct live block whose
 *     key hashes to the entry's tag and is found by a lookup at that slot;
 *  3. every free list holds free blocks of its class, each once;
 *  4. every block is either indexed or free (no leak), and the counters agree. */
int table_check(shmdict_t *h, char *msg, size_t msgcap)
{
    header_t *H = h->hdr;
    int rc = SHMDICT_OK;
    uint64_t bump = H->bump, units = h->units;
    uint8_t *start = NULL;
    if (msgcap)
        msg[0] = 0;
    if (H->ulog_n != 0 || H->flush_pending || H->defrag_pending)
        FAIL("an operation is unfinished (undo log of %llu entries, flush %s, bulk step %s)",
             (unsigned long long)ulog_len(H->ulog_n), H->flush_pending ? "pending" : "none",
             H->defrag_pending ? "pending" : "none");
    if (H->geo_check != geo_sum(H->index_cap, H->size))
        FAIL("geometry check word does not match index_cap and size");
    if (!flags_ok(H->flags))
        FAIL("flags word is not a flags word");
    if (H->corrupt)
        FAIL("table marked corrupt by a failed recovery");
    if (bump < FIRST_UNIT || bump > units)
        FAIL("bump pointer %llu out of range", (unsigned long long)bump);
    start = calloc(bump / 8 + 1, 1);
    if (!start)
        FAIL("out of memory for the check");

    uint64_t live_blocks = 0, free_blocks = 0;
    for (uint64_t u = FIRST_UNIT; u < bump;) {
        rec_t *r = unit_ptr(h, u);
        int c = r->cls & 0x7f;
        if (!block_ok(h, u, bump))
            FAIL("block at unit %llu (class %d) overruns the arena or has a bad class", (unsigned long long)u, c);
        start[u / 8] |= (uint8_t)(1u << (u % 8));
        if (r->type == T_FREE)
            free_blocks++;
        else
            live_blocks++;
        u += class_units(c);
    }

    uint64_t entries = 0, tombs = 0, n_ttl = 0, used = 0;
    for (uint64_t i = 0; i < h->cap; i++) {
        uint64_t s = h->slots[i];
        if (s == SLOT_EMPTY)
            continue;
        if (s == SLOT_TOMB) {
            tombs++;
            continue;
        }
        rec_t *r = rec_at(h, s);
        uint64_t u = slot_unit(s);
        if (!r)
            FAIL("slot %llu points at an invalid record", (unsigned long long)i);
        if (!(start[u / 8] & (1u << (u % 8))))
            FAIL("slot %llu points inside a block or at a block indexed twice", (unsigned long long)i);
        start[u / 8] &= (uint8_t)~(1u << (u % 8));
        uint64_t hash = hash_key(h, r->data, r->klen);
        if ((uint32_t)(hash >> 32) != slot_tag(s))
            FAIL("slot %llu tag does not match its key", (unsigned long long)i);
        int64_t ins, at = find_slot(h, r->data, r->klen, hash, &ins);
        if (at != (int64_t)i)
            FAIL("key at slot %llu is not found by lookup (found %lld)", (unsigned long long)i,
                 (long long)at);
        entries++;
        n_ttl += r->expires != 0;
        used += class_units(r->cls & 0x7f) * UNIT;
    }
    if (entries != live_blocks)
        FAIL("%llu live blocks but %llu index entries (leak)", (unsigned long long)live_blocks,
             (unsigned long long)entries);

    uint64_t freed = 0;
    for (int c = 0; c < NCLASS; c++) {
        for (uint64_t u = H->free_head[c]; u; u = unit_ptr(h, u)->expires) {
            if (u < FIRST_UNIT || u >= bump || !(start[u / 8] & (1u << (u % 8))))
                FAIL("free list %d: unit %llu is not a free block start", c, (unsigned long long)u);
            rec_t *r = unit_ptr(h, u);
            if (r->type != T_FREE || (r->cls & 0x7f) != c)
                FAIL("free list %d: unit %llu has type %d class %d", c, (unsigned long long)u, r->type,
                     r->cls & 0x7f);
            start[u / 8] &= (uint8_t)~(1u << (u % 8));
            if (++freed > free_blocks)
                FAIL("free list %d is longer than the free blocks (cycle?)", c);
        }
    }
    if (freed != free_blocks)
        FAIL("%llu free blocks but %llu on free lists (leak)", (unsigned long long)free_blocks,
             (unsigned long long)freed);
    if (entries != H->count)
        FAIL("count is %llu, index holds %llu", (unsigned long long)H->count, (unsigned long long)entries);
    if (tombs != H->tombs)
        FAIL("tombs is %llu, index holds %llu", (unsigned long long)H->tombs, (unsigned long long)tombs);
    if (n_ttl != H->n_ttl)
        FAIL("n_ttl is %llu, records with TTL %llu", (unsigned long long)H->n_ttl, (unsigned long long)n_ttl);
    if (used != H->used_bytes)
        FAIL("used_bytes is %llu, records hold %llu", (unsigned long long)H->used_bytes,
             (unsigned long long)used);
out:
    free(start);
    return rc;
}
