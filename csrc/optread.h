/*
 * optread.h -- keyed reads that take no lock and write nothing shared
 * (optread.c); seq.c describes the protocol.
 */
#ifndef SHMDICT_OPTREAD_H
#define SHMDICT_OPTREAD_H

#include "layout.h"

enum { OPT_MISS = 0, OPT_HIT = 1, OPT_LOCK = 2 };

/* A copy of a live record's words, taken without the lock and validated. */
typedef struct opt_rec {
    int type;
    uint32_t ver;
    uint64_t expires;
    uint64_t num;  /* the number, or (str/bytes) the value's length in the low 32 bits */
    uint64_t vlen; /* str/bytes: value bytes (copied into buf when vlen <= cap) */
} opt_rec_t;

/* OPT_HIT (o filled), OPT_MISS (absent or expired), or OPT_LOCK: the caller
 * must take the lock (a write to the key's stripe kept going, a bulk step,
 * a stale mapping, or something that looked corrupt). *now: as lookup(). */
int opt_lookup(shmdict_t *h, const char *key, size_t klen, uint64_t hash, opt_rec_t *o, char *buf,
               size_t cap, uint64_t *now);

/* The probe alone, through geometry g (the caller validates: kv.c's update
 * in place holds the key's stripe lock): OPT_HIT with o filled and *r the
 * record, OPT_MISS, or OPT_LOCK when something looked corrupt. */
int opt_probe(const struct ro_geo *g, const char *key, size_t klen, uint32_t tag, opt_rec_t *o, rec_t **r);

/* Call fn(ctx, key, klen) for every live key without the lock (restart(ctx)
 * first, before each pass; fn returns false to stop): OPT_HIT if the pass
 * held still, so that what fn kept is one instant's keys; OPT_LOCK: take
 * the lock and walk again (writers kept moving, or something looked corrupt).
 * The key's bytes are the file's, valid only if OPT_HIT comes back: copy them. */
int opt_each_live(shmdict_t *h, bool (*fn)(void *, const char *, uint64_t), void (*restart)(void *), void *ctx);
/* One batch of a scan's cursor walk (table.c index_walk), the same way. */
int opt_cursor_walk(shmdict_t *h, uint64_t cursor, bool (*fn)(void *, const char *, uint64_t),
                    bool (*done)(const void *), void (*restart)(void *), void *ctx, uint64_t *next);

/* A consistent read of many keys without the lock (get_many): begin, look
 * each key up (its stripe's word is noted the first time), then valid() says
 * whether no stripe looked at and no bulk step changed since: then every
 * copy belongs to one instant, as under one lock hold. */
typedef struct opt_snap {
    struct ro_geo g;
    uint32_t bulk;
    uint64_t seen;               /* stripes whose word is in sv */
    uint32_t sv[NSTRIPES];
} opt_snap_t;

enum { OPT_AGAIN = 3 };          /* snap_lookup: a stripe is being written (or looks corrupt): retry or lock */

bool opt_snap_begin(shmdict_t *h, opt_snap_t *s);
int opt_snap_lookup(opt_snap_t *s, const char *key, size_t klen, uint64_t hash, opt_rec_t *o, char *buf,
                    size_t cap);
bool opt_snap_valid(const opt_snap_t *s);

#endif /* SHMDICT_OPTREAD_H */
