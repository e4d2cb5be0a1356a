/*
 * table.h -- the hash index, the record allocator, expiry and the integrity
 * check (table.c), plus the expiry clock. Everything here runs with the lock
 * held and stores through the undo log.
 */
#ifndef SHMDICT_TABLE_H
#define SHMDICT_TABLE_H

#include "layout.h"

/* find: slot index of key, -1 if absent, or SHMDICT_ECORRUPT (< -1).
 * *ins receives the first reusable slot on the probe path (or -1). */
int64_t find_slot(shmdict_t *h, const char *key, size_t klen, uint64_t hash, int64_t *ins);
rec_t *rec_at(shmdict_t *h, uint64_t slot);
bool block_ok(const shmdict_t *h, uint64_t u, uint64_t bump); /* the arena walkers' block check */
int alloc_units(shmdict_t *h, uint64_t units, bool borrow, uint64_t *unit_out, int *cls_out);
int table_bind(shmdict_t *h);            /* handle geometry from hdr->index_cap */
bool index_full(const shmdict_t *h);     /* one more key would pass the load limit */
uint64_t index_growth(const shmdict_t *h, bool top_only, uint64_t *free_out); /* slots grow_index adds */
int grow_index(shmdict_t *h);            /* OK (grew: find slots again), EFULL, ECORRUPT */
int reindex_pass(shmdict_t *h);          /* rebuild the index from the arena (redo) */
bool compact_would_fit(const shmdict_t *h, uint64_t units, bool amortised);
int compact(shmdict_t *h);               /* gather all free space above bump */
int compact_pass(shmdict_t *h);          /* its idempotent body (redo) */
int class_floor_units(uint64_t units);   /* largest class of at most `units` */
void free_block(shmdict_t *h, uint64_t unit, rec_t *r);
int delete_at(shmdict_t *h, uint64_t i, rec_t *r); /* emits EV_DELETE */
int delete_at_op(shmdict_t *h, uint64_t i, rec_t *r, int ev_op);
int reclaim_expired(shmdict_t *h, uint64_t now, bool all);
void table_reset(shmdict_t *h);
int table_check(shmdict_t *h, char *msg, size_t cap);
/* One batch of a cursor walk over an index (scan.c says why it never misses
 * a key present throughout): each slot read once; visit(s, vctx) < 0 stops
 * the walk with that value; done(dctx) at an EMPTY slot ends the batch.
 * *next: the next batch's cursor (0: over). Under the lock (record.c
 * cursor_walk) or without it (optread.c opt_cursor_walk). */
int index_walk(const uint64_t *slots, uint64_t cap, uint64_t cursor, int (*visit)(uint64_t, void *), void *vctx,
               bool (*done)(const void *), const void *dctx, uint64_t *next);
uint64_t now_ns(void);
uint64_t deadline_ns(uint64_t now, double exptime);

static inline bool expired(const rec_t *r, uint64_t now)
{
    return r->expires && r->expires <= now;
}

#endif /* SHMDICT_TABLE_H */
