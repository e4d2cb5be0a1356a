/*
 * stats.c -- how full the dict is and what it has done: len, stats (with
 * free_space, the largest item that fits now), info, and check (the full
 * integrity check, table_check in table.c).
 */
#include <stdio.h>

#include "record.h"
#include "guard.h"
#include "table.h"

int64_t shmdict_len(shmdict_t *h)
{
    int rc = lock_dict(h);
    if (rc)
        return rc;
    int64_t n = live_count(h, true);
    unlock_dict(h);
    return n;
}

int shmdict_check(shmdict_t *h, char *msg, size_t cap)
{
    int rc = lock_dict_any(h);
    if (rc)
        return rc;
    /* every record as it is, no update in place half way (seq.c) */
    if ((rc = lock_stripes_all(h)) != SHMDICT_OK && rc != SHMDICT_ECORRUPT) {
        unlock_dict(h);
        return rc;
    }
    if (rc == SHMDICT_ECORRUPT)
        snprintf(msg, cap, "a stripe's undo log was not written by an update (cleared; flush_all() resets the dict)");
    else
        rc = table_check(h, msg, cap);
    for (uint64_t i = 0; rc == SHMDICT_OK && i < h->cap; i++) { /* the table is sound: walk lists */
        rec_t *r = h->slots[i] > SLOT_TOMB ? rec_at(h, h->slots[i]) : NULL;
        const char *why = r && r->type == SHMDICT_T_LIST ? list_invalid(r) : NULL;
        if (why) {
            snprintf(msg, cap, "list at slot %llu: %s", (unsigned long long)i, why);
            rc = SHMDICT_ECORRUPT;
        }
    }
    unlock_dict(h);
    return rc;
}

int shmdict_info(shmdict_t *h, shmdict_info_t *out)
{
    int rc = lock_dict_any(h);
    if (rc)
        return rc;
    header_t *H = h->hdr;
    out->size = H->size_user;
    out->file_size = h->size;
    out->capacity = (h->units - FIRST_UNIT) * UNIT;
    out->index_cap = h->cap;
    out->count = H->count;
    out->used_bytes = H->used_bytes;
    out->free_bytes = out->capacity - H->used_bytes;
    out->recoveries = H->recoveries;
    out->creator_pid = H->creator_pid;
    out->dev = h->dev;
    out->ino = h->ino;
    out->events_cap = h->ev_cap;
    out->layout_version = H->layout_version;
    unlock_dict(h);
    return SHMDICT_OK;
}

/* shmdict_info without the lock, for listings that must never wait (the
 * CLI's `ls`): each header word is loaded once, atomically; the words may
 * come from different moments if a writer runs meanwhile, and a holder that
 * died or stopped mid-operation may show its half-done counts. Nothing read
 * here is used as an offset or a length. Never blocks, never repairs. */
int shmdict_peek(shmdict_t *h, shmdict_info_t *out)
{
    header_t *H = h->hdr;
    uint64_t used = __atomic_load_n(&H->used_bytes, __ATOMIC_RELAXED);
    out->size = __atomic_load_n(&H->size_user, __ATOMIC_RELAXED);
    out->file_size = h->size;
    out->capacity = (h->units - FIRST_UNIT) * UNIT;
    out->index_cap = h->cap;
    out->count = __atomic_load_n(&H->count, __ATOMIC_RELAXED);
    out->used_bytes = used <= out->capacity ? used : out->capacity;
    out->free_bytes = out->capacity - out->used_bytes;
    out->recoveries = __atomic_load_n(&H->recoveries, __ATOMIC_RELAXED);
    out->creator_pid = __atomic_load_n(&H->creator_pid, __ATOMIC_RELAXED);
    out->dev = h->dev;
    out->ino = h->ino;
    out->events_cap = h->ev_cap;
    out->layout_version = H->layout_version;
    return SHMDICT_OK;
}

/* The largest block (in units) an insert could obtain right now, following
 * the escalation (record.c room_climb): the exact class's free list and the
 * bump pointer, then (after reclaiming expired records) any larger free block
 * split to size, then a compaction pass that gathers every hole at the top.
 * Walks the arena: O(arena), under the lock, read-only. A record is "free"
 * here if it is a free block, or (reclaim would free it) an expired live
 * record. A new key also needs an index slot: if the index is at its load
 * limit and cannot grow, nothing fits. */
static int largest_fit(shmdict_t *h, uint64_t now, uint64_t *units_out, uint64_t *expired_out)
{
    header_t *H = h->hdr;
    uint64_t bump = H->bump, best_block = 0, n_expired = 0, free_sum = 0;
    if (bump < FIRST_UNIT || bump > h->units)
        return SHMDICT_ECORRUPT;
    for (uint64_t u = FIRST_UNIT; u < bump;) {
        if (!block_ok(h, u, bump))
            return SHMDICT_ECORRUPT;
        rec_t *r = unit_ptr(h, u);
        uint64_t cu = class_units(r->cls & 0x7f);
        bool is_free = r->type == T_FREE;
        if (!is_free && expired(r, now)) {
            is_free = true;
            n_expired++;
        }
        if (is_free) {
            free_sum += cu;
            if (cu > best_block)
                best_block = cu;
        }
        u += cu;
    }
    uint64_t tail = h->units - bump; /* the bump pointer's room */
    uint64_t live = H->count - (n_expired <= H->count ? n_expired : H->count), free_units;
    bool index_full = (live + H->tombs + 1) * LOAD_DEN > h->cap * LOAD_NUM;
    uint64_t grow_top = 0, grow_all = 0, best = 0;
    if (index_full) { /* put grows the index first, compacting if that gives it more */
        grow_top = index_growth(h, true, &free_units);
        grow_all = index_growth(h, false, &free_units);
        if (grow_all == 0) {
            *units_out = 0; /* no index slot for a new key */
            *expired_out = n_expired;
            return SHMDICT_OK;
        }
    }
    if (!index_full || grow_top == grow_all) {
        tail -= grow_top;
        best = tail ? class_units(class_floor_units(tail)) : 0;
        if (best_block > best)
            best = best_block;
    }
    /* A compaction pass gathers every hole at the top (an evicting dict
     * compacts only when the holes are worth it: compact_would_fit). */
    uint64_t gathered = free_sum + (h->units - bump);
    bool amortised = (H->flags & HF_EVICT) != 0;
    if (free_sum && (!amortised || free_sum >= h->units / 16) && gathered > grow_all + MIN_BLOCK) {
        uint64_t g = class_units(class_floor_units(gathered - grow_all));
        if (g > best)
            best = g;
    }
    *units_out = best;
    *expired_out = n_expired;
    return SHMDICT_OK;
}

int shmdict_stats(shmdict_t *h, shmdict_stats_t *out)
{
    int rc = lock_dict(h);
    if (rc)
        return rc;
    header_t *H = h->hdr;
    seq_stats_flush(h); /* this process's hits, misses and lock count (seq.c); others' within a batch */
    uint64_t units = 0, n_expired = 0;
    rc = largest_fit(h, now_ns(), &units, &n_expired);
    if (rc == SHMDICT_OK) {
        out->size = H->size_user;
        out->capacity = (h->units - FIRST_UNIT) * UNIT;
        out->free_space = units > REC_HDR / UNIT ? units * UNIT - REC_HDR : 0;
        out->entries = H->count - n_expired;
        out->records = H->count;
        out->expired_pending = n_expired;
        out->used_bytes = H->used_bytes;
        out->free_bytes = out->capacity - H->used_bytes;
        out->index_cap = h->cap;
        out->index_used = H->count + H->tombs;
        out->index_limit = h->cap * LOAD_NUM / LOAD_DEN;
        out->hits = H->st_hits;
        out->misses = H->st_misses;
        out->expired = H->st_expired;
        out->evictions = H->st_evictions;
        out->lock_acquisitions = H->st_locks;
        out->lock_waits = H->st_lock_waits;
        out->lock_wait_ns = H->st_lock_wait_ns;
        out->recoveries = H->recoveries;
        out->index_growths = H->index_growths;
        out->compactions = H->compactions;
        out->index_bytes = h->cap * 8;
        out->hole_bytes = H->bump - FIRST_UNIT >= H->used_bytes / UNIT
                              ? (H->bump - FIRST_UNIT - H->used_bytes / UNIT) * UNIT : 0;
        out->growths = H->growths;
        out->max_size = H->max_size;
        out->evict = (int)(H->flags & HF_EVICT);
    }
    unlock_dict(h);
    return rc;
}
