/*
 * seq.h -- the sequence words that let readers run without the lock (seq.c
 * describes the protocol): the writer's marks, their release at unlock, the
 * repair after a dead writer, the readers' geometry, and the statistics a
 * process keeps for itself.
 */
#ifndef SHMDICT_SEQ_H
#define SHMDICT_SEQ_H

#include "layout.h"

static inline uint32_t seq_stripe_of(uint32_t tag) { return tag % NSTRIPES; }

void seq_mark_slow(shmdict_t *h, uint32_t s);

/* Before the first store that a reader of keys with this tag could see:
 * make the tag's stripe word odd (once per lock hold). */
static inline void seq_mark(shmdict_t *h, uint32_t tag)
{
    uint32_t s = seq_stripe_of(tag);
    if (!(h->seq_marks >> s & 1))
        seq_mark_slow(h, s);
}

void seq_bulk(shmdict_t *h);      /* before a bulk step moves records or slots */
void seq_release(shmdict_t *h);   /* at unlock: every mark made even again */
void seq_adopt(shmdict_t *h);     /* recovery: odd words a dead holder left become this holder's marks */
void seq_publish(shmdict_t *h);   /* at unlock: the readers' copy of the geometry follows the handle's */
void seq_stats_flush(shmdict_t *h); /* the process's counters into the header's */

/* A reader's consistent copy of the handle's geometry; false while it is being republished. */
bool seq_geometry(shmdict_t *h, struct ro_geo *g);

#define SEQ_STATS_BATCH 4096u /* counts a process keeps before adding them to the header */

/* Count one keyed read (hit or miss) in the process. */
static inline void seq_count(shmdict_t *h, bool hit)
{
    uint64_t *c = hit ? &h->st_hits : &h->st_misses;
    uint64_t v = __atomic_load_n(c, __ATOMIC_RELAXED) + 1;
    __atomic_store_n(c, v, __ATOMIC_RELAXED); /* threads of one process may lose a count: statistics */
    if (__builtin_expect(v >= SEQ_STATS_BATCH, 0))
        seq_stats_flush(h);
}

#endif /* SHMDICT_SEQ_H */
