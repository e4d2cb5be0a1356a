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

/* Stripe s as the first mapping holds it: a robust mutex is locked and
 * unlocked at one address (layout.h), and every word of the stripe is read
 * and written there too (any mapping sees the same bytes). */
static inline stripe_t *stripe_at(const shmdict_t *h, uint32_t s)
{
    header_t *H0 = (header_t *)(void *)((char *)h->mu - offsetof(header_t, lock));
    return &H0->stripes[s];
}

void seq_mark_slow(shmdict_t *h, uint32_t s);
void seq_hold_slow(shmdict_t *h, uint32_t s);

/* Before the first store that a reader of keys with this tag could see, or
 * that frees or moves a record or slot of the tag's stripe: take the
 * stripe's lock and make its word odd (once per lock hold). */
static inline void seq_mark(shmdict_t *h, uint32_t tag)
{
    uint32_t s = seq_stripe_of(tag);
    if (!(h->seq_marks >> s & 1))
        seq_mark_slow(h, s);
}

/* Before reading the number or version of a record of the tag's stripe
 * under the dict lock: take the stripe's lock (an update in place, kv.c,
 * may otherwise be half way through it). */
static inline void seq_hold(shmdict_t *h, uint32_t tag)
{
    uint32_t s = seq_stripe_of(tag);
    if (!(h->seq_held >> s & 1))
        seq_hold_slow(h, s);
}

void seq_hold_all(shmdict_t *h); /* before reading many records' values (scan, dump, check) */
/* The pieces of a timed take (guard.c lock_stripe): trylock with a short
 * spin (0, EOWNERDEAD or EBUSY), then -- once locked -- the bookkeeping. */
int seq_trylock(shmdict_t *h, uint32_t s);
int seq_took(shmdict_t *h, uint32_t s, int r);
void seq_bulk(shmdict_t *h);      /* before a bulk step moves records or slots: every stripe, and the bulk word */
void seq_release(shmdict_t *h);   /* at unlock: every mark made even again, every stripe lock released */
void seq_adopt(shmdict_t *h);     /* recovery: odd words a dead holder left become this holder's marks */
void seq_publish(shmdict_t *h);   /* at unlock: the readers' copy of the geometry follows the handle's */
void seq_stats_flush(shmdict_t *h); /* the process's counters into the header's */

/* A reader's consistent copy of the handle's geometry; false while it is being republished. */
bool seq_geometry(shmdict_t *h, struct ro_geo *g);

/* ---- updates in place under one stripe's lock (kv.c incr_in_place) ---------- */

/* Stripe s's lock, taken without the dict lock (r: what seq_trylock or a
 * wait returned), made an updater's: a dead updater's log replayed, the
 * word made odd; true. False, and the lock released (or never had): go to
 * the dict lock (a dead holder's odd word, or a log only it may judge).
 * g: the geometry the caller reads through. */
bool stripe_begin(shmdict_t *h, uint32_t s, const struct ro_geo *g, int r);
/* Store v at p (inside g's arena), logged in the stripe's undo log. */
void stripe_w64(stripe_t *st, const struct ro_geo *g, uint64_t *p, uint64_t v);
void stripe_commit(stripe_t *st);
void stripe_end(shmdict_t *h, uint32_t s); /* the word even again, the lock released */

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
