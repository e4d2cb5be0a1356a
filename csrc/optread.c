/*
 * optread.c -- keyed reads without the lock: get, `in`, ttl and version find
 * their key and copy its record here, validated by the sequence words of
 * seq.c (the protocol is described there), and fall back to the lock
 * (OPT_LOCK) when validation keeps failing or a write to the key's stripe is
 * in flight. Nothing shared is written, except the CLOCK referenced bit of an
 * evicting dict's record, by compare-and-swap, once per record between sweeps.
 *
 * A reader can see a half-written record or a slot that now points elsewhere:
 * every slot and record word is loaded once into a local, every unit, class,
 * key and value length is checked against this handle's arena before a byte
 * is read, and every loop is bounded by index_cap. What looks corrupt is
 * re-validated and, if the words did not change, left to the locked path,
 * which reports it.
 */
#include "optread.h"
#include "seq.h"
#include "table.h"

#define OPT_TRIES 4   /* validations that may fail before the lock is taken */
#define OPT_SPIN 256  /* pauses waiting for an odd word to become even */

enum { PROBE_MISS = OPT_MISS, PROBE_HIT = OPT_HIT, PROBE_BAD = 3 };

static inline uint64_t load64(const uint64_t *p) { return __atomic_load_n(p, __ATOMIC_RELAXED); }

/* The record slot s names, through g, its type word read once into *w8 and
 * *hd: NULL if the unit, class, type or key length do not fit g's arena. */
static rec_t *rec_checked(const struct ro_geo *g, uint64_t s, uint64_t *w8, rec_t *hd)
{
    uint64_t unit = slot_unit(s), units = g->units;
    if (unit < FIRST_UNIT || unit >= units || units - unit < MIN_REC_UNITS)
        return NULL;
    rec_t *r = (rec_t *)(g->arena + unit * UNIT);
    *w8 = load64((const uint64_t *)(const void *)&r->klen);
    memcpy(&hd->klen, w8, 8);
    int cls = hd->cls & 0x7f;
    if (cls >= NCLASS || hd->type < SHMDICT_T_BOOL || hd->type > SHMDICT_T_LIST || hd->klen == 0 ||
        class_units(cls) > units - unit || REC_HDR + (uint64_t)hd->klen > class_units(cls) * UNIT)
        return NULL;
    return r;
}

/* Probe the index of geometry g for key; on a hit, copy the record's words
 * (and its str/bytes value, if it fits buf) into o and *r_out. */
static int probe(const struct ro_geo *g, const char *key, size_t klen, uint32_t tag, opt_rec_t *o,
                 char *buf, size_t cap, rec_t **r_out, uint64_t *w8_out)
{
    uint64_t ncap = g->cap, i = ((uint64_t)tag * ncap) >> 32;
    for (uint64_t n = 0; n < ncap; n++) {
        uint64_t s = load64(&g->slots[i]);
        if (s == SLOT_EMPTY)
            return PROBE_MISS;
        if (s != SLOT_TOMB && slot_tag(s) == tag) {
            uint64_t w8;
            rec_t hd, *r = rec_checked(g, s, &w8, &hd);
            if (!r)
                return PROBE_BAD;
            uint64_t bytes = class_units(hd.cls & 0x7f) * UNIT;
            if (hd.klen == klen && memcmp(r->data, key, klen) == 0) {
                uint64_t num = load64(&r->num.u);
                o->type = hd.type;
                o->ver = hd.ver;
                o->expires = load64(&r->expires);
                o->num = num;
                o->vlen = 0;
                if (hd.type == SHMDICT_T_STR || hd.type == SHMDICT_T_BYTES) {
                    uint64_t vlen = num & 0xffffffffu; /* num.s.vlen: the low half (layout.h, little-endian) */
                    if (vlen > bytes - REC_HDR - hd.klen)
                        return PROBE_BAD;
                    o->vlen = vlen;
                    if (buf && vlen && vlen <= cap)
                        memcpy(buf, r->data + klen, vlen);
                }
                *r_out = r;
                *w8_out = w8;
                return PROBE_HIT;
            }
        }
        if (++i == ncap)
            i = 0;
    }
    return PROBE_MISS;
}

/* ---- walks of every key, without the lock --------------------------------------
 *
 * A pass is kept only if no stripe and no bulk step moved while it ran
 * (every stripe's word read before, all even, and after). Each slot and
 * record word is read once and checked as probe() checks them; a key's
 * bytes are bounded by its record's block. A pass that keeps failing
 * (writers somewhere in the dict: any stripe counts) goes to the lock after
 * OPT_WALK_TRIES. */
#define OPT_WALK_TRIES 2

typedef struct opt_pass {
    struct ro_geo g;
    uint32_t bulk, sv[NSTRIPES];
} opt_pass_t;

/* 1: begun; 0: a write in flight (after a short pause: try again); -1: the lock */
static int pass_begin(shmdict_t *h, opt_pass_t *p)
{
    if (!seq_geometry(h, &p->g))
        return -1;
    header_t *H = p->g.hdr;
    uint32_t odd = p->bulk = __atomic_load_n(&H->seq_bulk, __ATOMIC_ACQUIRE);
    for (int s = 0; s < NSTRIPES; s++)
        odd |= p->sv[s] = __atomic_load_n(&H->stripes[s].seq, __ATOMIC_ACQUIRE);
    if (odd & 1) {
        for (int k = 0; k < OPT_SPIN; k++)
            cpu_relax();
        return 0;
    }
    return load64(&H->index_cap) == p->g.cap && load64(&H->size) == p->g.size ? 1 : -1;
}

static bool pass_held(const opt_pass_t *p)
{
    const header_t *H = p->g.hdr;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (__atomic_load_n(&H->seq_bulk, __ATOMIC_RELAXED) != p->bulk)
        return false;
    for (int s = 0; s < NSTRIPES; s++)
        if (__atomic_load_n(&H->stripes[s].seq, __ATOMIC_RELAXED) != p->sv[s])
            return false;
    return true;
}

typedef struct opt_walk {
    const struct ro_geo *g;
    uint64_t now;
    bool (*fn)(void *, const char *, uint64_t);
    void *ctx;
    bool bad;
} opt_walk_t;

/* One slot of a walk: its key to fn unless expired; < 0 ends the walk. */
static int visit(uint64_t s, void *p)
{
    opt_walk_t *w = p;
    uint64_t w8;
    rec_t hd, *r = rec_checked(w->g, s, &w8, &hd);
    if (!r) {
        w->bad = true;
        return -1;
    }
    uint64_t exp = load64(&r->expires);
    if (exp && exp <= w->now)
        return 0;
    return w->fn(w->ctx, r->data, hd.klen) ? 0 : -1;
}

int opt_cursor_walk(shmdict_t *h, uint64_t cursor, bool (*fn)(void *, const char *, uint64_t),
                    bool (*done)(const void *), void (*restart)(void *), void *ctx, uint64_t *next)
{
    uint64_t now = now_ns();
    for (int t = 0; t < OPT_WALK_TRIES; t++) {
        opt_pass_t p;
        int b = pass_begin(h, &p);
        if (b < 0)
            return OPT_LOCK;
        if (b == 0)
            continue;
        restart(ctx);
        opt_walk_t w = {&p.g, now, fn, ctx, false};
        index_walk(p.g.slots, p.g.cap, cursor, visit, &w, done, ctx, next);
        if (!pass_held(&p))
            continue; /* something moved under the pass: it is not used */
        return w.bad ? OPT_LOCK : OPT_HIT; /* stable and wrong: the locked path reports it */
    }
    return OPT_LOCK;
}

static bool never_done(const void *ctx)
{
    (void)ctx;
    return false;
}

/* Every entry once: a cursor walk from 0 that no EMPTY slot ends (the
 * wrapped entries come last). */
int opt_each_live(shmdict_t *h, bool (*fn)(void *, const char *, uint64_t), void (*restart)(void *), void *ctx)
{
    uint64_t next;
    return opt_cursor_walk(h, 0, fn, never_done, restart, ctx, &next);
}

int opt_probe(const struct ro_geo *g, const char *key, size_t klen, uint32_t tag, opt_rec_t *o, rec_t **r)
{
    uint64_t w8;
    int rc = probe(g, key, klen, tag, o, NULL, 0, r, &w8);
    return rc == PROBE_BAD ? OPT_LOCK : rc;
}

bool opt_snap_begin(shmdict_t *h, opt_snap_t *s)
{
    if (!seq_geometry(h, &s->g))
        return false;
    header_t *H = s->g.hdr;
    s->bulk = __atomic_load_n(&H->seq_bulk, __ATOMIC_ACQUIRE);
    s->seen = 0;
    return !(s->bulk & 1) && load64(&H->index_cap) == s->g.cap && load64(&H->size) == s->g.size;
}

int opt_snap_lookup(opt_snap_t *s, const char *key, size_t klen, uint64_t hash, opt_rec_t *o, char *buf,
                    size_t cap)
{
    uint32_t tag = (uint32_t)(hash >> 32), st = seq_stripe_of(tag);
    if (!(s->seen >> st & 1)) {
        s->sv[st] = __atomic_load_n(&s->g.hdr->stripes[st].seq, __ATOMIC_ACQUIRE);
        s->seen |= 1ull << st;
    }
    if (s->sv[st] & 1)
        return OPT_AGAIN;
    rec_t *r;
    uint64_t w8;
    int rc = probe(&s->g, key, klen, tag, o, buf, cap, &r, &w8);
    return rc == PROBE_BAD ? OPT_AGAIN : rc;
}

bool opt_snap_valid(const opt_snap_t *s)
{
    const header_t *H = s->g.hdr;
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    for (uint64_t m = s->seen; m; m &= m - 1) {
        int st = __builtin_ctzll(m);
        if (__atomic_load_n(&H->stripes[st].seq, __ATOMIC_RELAXED) != s->sv[st])
            return false;
    }
    return __atomic_load_n(&H->seq_bulk, __ATOMIC_RELAXED) == s->bulk;
}

int opt_lookup(shmdict_t *h, const char *key, size_t klen, uint64_t hash, opt_rec_t *o, char *buf,
               size_t cap, uint64_t *now)
{
    uint32_t tag = (uint32_t)(hash >> 32);
    uint32_t stripe = seq_stripe_of(tag);
    for (int t = 0; t < OPT_TRIES; t++) {
        struct ro_geo g;
        if (!seq_geometry(h, &g))
            return OPT_LOCK;
        header_t *H = g.hdr;
        uint32_t b1 = __atomic_load_n(&H->seq_bulk, __ATOMIC_ACQUIRE);
        uint32_t s1 = __atomic_load_n(&H->stripes[stripe].seq, __ATOMIC_ACQUIRE);
        if ((b1 | s1) & 1) { /* a write in flight: wait a moment for it, not for the lock */
            for (int k = 0; k < OPT_SPIN && __atomic_load_n(&H->stripes[stripe].seq, __ATOMIC_RELAXED) == s1 &&
                            __atomic_load_n(&H->seq_bulk, __ATOMIC_RELAXED) == b1; k++)
                cpu_relax();
            continue;
        }
        /* The geometry this handle's copy describes is the dict's now (a growth
         * or an index growth since: the lock follows it). */
        if (load64(&H->index_cap) != g.cap || load64(&H->size) != g.size)
            return OPT_LOCK;
        uint64_t flags = load64(&H->flags);
        rec_t *r = NULL;
        uint64_t w8 = 0;
        int rc = probe(&g, key, klen, tag, o, buf, cap, &r, &w8);
        __atomic_thread_fence(__ATOMIC_ACQUIRE);
        if (__atomic_load_n(&H->stripes[stripe].seq, __ATOMIC_RELAXED) != s1 ||
            __atomic_load_n(&H->seq_bulk, __ATOMIC_RELAXED) != b1)
            continue; /* something moved under the copy: it is not used */
        if (rc == PROBE_BAD)
            return OPT_LOCK; /* stable and wrong: the locked path reports the corruption */
        if (rc == PROBE_HIT) {
            if (o->expires) {
                if (!*now)
                    *now = now_ns();
                if (o->expires <= *now)
                    return OPT_MISS;
            }
            if (__builtin_expect((flags & HF_EVICT) != 0, 0)) {
                rec_t hd;
                memcpy(&hd.klen, &w8, 8);
                if (!(hd.cls & CLS_REF)) { /* CLOCK: referenced; fails harmlessly if the word changed */
                    uint64_t nw;
                    hd.cls |= CLS_REF;
                    memcpy(&nw, &hd.klen, 8);
                    __atomic_compare_exchange_n((uint64_t *)(void *)&r->klen, &w8, nw, false, __ATOMIC_RELAXED,
                                                __ATOMIC_RELAXED);
                }
            }
        }
        return rc;
    }
    return OPT_LOCK;
}
