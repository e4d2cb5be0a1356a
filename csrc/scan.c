/*
 * scan.c -- listing keys: keys, items (keys with values, optionally matching a
 * glob pattern, as one consistent snapshot; keys alone read without the lock
 * when they can be), scan (a cursor over the index that never misses a key
 * present throughout), and the glob matcher.
 */
#include "scan.h"
#include "record.h"
#include "guard.h"
#include "optread.h"

/* ---- glob matching (Python's fnmatch.fnmatchcase) --------------------------------
 *
 * '*' any run, '?' one character, '[seq]' / '[!seq]' a set with ranges; a '['
 * without a closing ']' is literal; a ']' first in a set is literal. UTF-8
 * aware ('?' and sets consume a whole code point). Iterative with one
 * backtrack point: O(len(key) * len(pattern)), never recursive. */

static uint32_t utf8_next(const unsigned char *s, uint64_t n, uint64_t *at)
{
    uint64_t i = *at;
    uint32_t c = s[i];
    int extra = c < 0x80 ? 0 : c < 0xe0 ? 1 : c < 0xf0 ? 2 : 3;
    if (c >= 0x80)
        c &= 0x3fu >> extra;
    for (i++; extra > 0 && i < n && (s[i] & 0xc0) == 0x80; extra--, i++)
        c = c << 6 | (s[i] & 0x3f);
    *at = i;
    return c;
}

/* Match c against the set starting at p[at] == '['. Returns the position
 * after the set, or 0 if the set is unterminated (then '[' is literal). */
static uint64_t match_set(const unsigned char *p, uint64_t pn, uint64_t at, uint32_t c, bool *hit)
{
    uint64_t i = at + 1;
    bool neg = false;
    if (i < pn && p[i] == '!') {
        neg = true;
        i++;
    }
    bool first = true, m = false;
    while (i < pn && (first || p[i] != ']')) {
        first = false;
        uint32_t lo = utf8_next(p, pn, &i), hi = lo;
        if (i + 1 < pn && p[i] == '-' && p[i + 1] != ']') {
            i++;
            hi = utf8_next(p, pn, &i);
        }
        if (lo <= c && c <= hi)
            m = true;
    }
    if (i >= pn)
        return 0;
    *hit = m != neg;
    return i + 1;
}

bool glob_match(const char *pat, uint64_t pn, const char *str, uint64_t sn)
{
    const unsigned char *p = (const unsigned char *)pat, *s = (const unsigned char *)str;
    uint64_t pi = 0, si = 0, star_p = UINT64_MAX, star_s = 0;
    while (si < sn) {
        if (pi < pn && p[pi] == '*') {
            star_p = ++pi;
            star_s = si;
            continue;
        }
        if (pi < pn) {
            uint64_t s2 = si;
            uint32_t c = utf8_next(s, sn, &s2);
            if (p[pi] == '?') {
                pi++;
                si = s2;
                continue;
            }
            if (p[pi] == '[') {
                bool hit = false;
                uint64_t after = match_set(p, pn, pi, c, &hit);
                if (after) {
                    if (hit) {
                        pi = after;
                        si = s2;
                        continue;
                    }
                    goto backtrack;
                }
            }
            if (p[pi] == s[si]) {
                pi++;
                si++;
                continue;
            }
        }
    backtrack:
        if (star_p == UINT64_MAX)
            return false;
        pi = star_p;
        utf8_next(s, sn, &star_s); /* the star takes one more character */
        si = star_s;
    }
    while (pi < pn && p[pi] == '*')
        pi++;
    return pi == pn;
}

/* ---- keys(match), scan, items ------------------------------------------------------ */

typedef struct walk {
    char *buf;
    size_t cap;
    uint64_t used, n, max;
    const char *pat;
    uint64_t plen;
    bool values;
    bool corrupt; /* a list record failed list_invalid() */
} walk_t;

/* Pack a key (and, given r, its value) if it matches; false once max is reached. */
static bool pack_item(walk_t *w, const char *key, uint64_t klen, rec_t *r)
{
    if (w->pat && !glob_match(w->pat, w->plen, key, klen))
        return true;
    uint64_t need = 4 + klen;
    if (w->used + need <= w->cap) {
        uint32_t len = (uint32_t)klen;
        memcpy(w->buf + w->used, &len, 4);
        memcpy(w->buf + w->used + 4, key, klen);
    }
    w->used += need;
    if (r && r->type == SHMDICT_T_LIST && list_invalid(r)) {
        w->corrupt = true;
        return false;
    }
    if (r)
        w->used = pack_value(r, w->buf, w->cap, w->used);
    w->n++;
    return !(w->max && w->n >= w->max);
}

static bool pack_key(walk_t *w, const char *key, uint64_t klen) { return pack_item(w, key, klen, NULL); }

/* Pack r's key (and value, if asked) if it matches; false once max is reached. */
static bool pack_rec(rec_t *r, void *p)
{
    walk_t *w = p;
    return pack_item(w, r->data, r->klen, w->values ? r : NULL);
}

/* The walk without the lock (optread.c): what it packs counts only if the pass held still. */
static bool opt_key(void *p, const char *key, uint64_t klen) { return pack_key(p, key, klen); }
static void opt_restart(void *p)
{
    walk_t *w = p;
    w->used = w->n = 0;
}

/* Live keys (values too, if with_values) matching pat (NULL: all), at most
 * max_count (0: all), packed as described above: a consistent snapshot, one
 * instant's keys. Keys alone are read without the lock when no write gets in
 * the way of a whole pass (optread.c opt_each_live); values, and keys while
 * writers keep going, in one lock hold. Returns the count, or ERANGE with
 * out->len needed. */
int64_t shmdict_items(shmdict_t *h, const char *pat, size_t plen, uint64_t max_count, int with_values,
                      char *buf, size_t cap, shmdict_out_t *out)
{
    walk_t w = {buf, cap, 0, 0, max_count, pat, plen, with_values != 0, false};
    int rc;
    if (with_values || opt_each_live(h, opt_key, opt_restart, &w) != OPT_HIT) {
        /* values: no update in place half way through one (seq.c) */
        rc = with_values ? lock_dict_values(h) : lock_dict(h);
        if (rc)
            return rc;
        opt_restart(&w);
        rc = for_each_live(h, pack_rec, &w);
        unlock_dict(h);
        if (rc)
            return rc;
    }
    out->len = w.used;
    if (w.corrupt)
        return SHMDICT_ECORRUPT;
    return w.used > cap ? SHMDICT_ERANGE : (int64_t)w.n;
}

int64_t shmdict_keys(shmdict_t *h, char *buf, size_t cap, uint64_t max_count, shmdict_out_t *out)
{
    return shmdict_items(h, NULL, 0, max_count, 0, buf, cap, out);
}

/* One batch of a scan: without the lock when the pass holds still (optread.c
 * opt_cursor_walk), else in one lock hold (cursor_walk, record.c, which
 * dump's export batches share). Both walk table.c's index_walk; this is why
 * it is right.
 *
 * THE CURSOR is a position in the space of 32-bit hash tags: it names the
 * slot the next batch starts at as home_of(cursor) (cursor * index_cap >> 32),
 * so it keeps its meaning when the index grows between batches. A batch
 * examines slots from there and, once it has examined `count` live keys
 * (matching or not), keeps going to the end of the current cluster: it stops
 * just before an EMPTY slot c and returns the smallest tag whose home is c
 * (0 = done: a cursor past the end ends the scan too).
 *
 * WRAPPED ENTRIES -- those whose probe ran past the end of the index into the
 * run that starts at slot 0, i.e. whose home is after their slot -- are
 * skipped where they sit and returned by the batch that reaches the end of
 * the index, which then walks that run for them. So every entry is visited
 * in home order.
 *
 * WHY A KEY PRESENT THROUGHOUT IS NEVER MISSED. Inserts never move entries;
 * only a delete's backward shift does, and it moves an entry back toward its
 * home, never past it, and only through occupied slots. When a batch ends,
 * the cursor slot c is EMPTY, so every entry at a slot >= c then has its home
 * at >= c too (its probe path from home to its slot is occupied, so it cannot
 * cross c), and every key with a tag below the returned cursor was visited;
 * afterwards an entry can only move back as far as its home, so it stays at
 * >= c and a later batch sees it. When the index grows between batches it is
 * rebuilt: a key whose tag is at least the cursor has its new home at or
 * after the new start slot, so it sits after it or, wrapped, in the run the
 * last batch walks. A key can be returned twice only across such a growth
 * (the start slot rounds down). Keys inserted or deleted during the scan may
 * or may not appear.
 */
typedef struct scanner {
    walk_t w;
    uint64_t now, seen, count;
} scanner_t;

static int scan_one(shmdict_t *h, uint64_t s, void *p)
{
    scanner_t *c = p;
    rec_t *r = rec_at(h, s);
    if (!r)
        return SHMDICT_ECORRUPT;
    if (!expired(r, c->now)) {
        pack_rec(r, &c->w);
        c->seen++; /* live keys examined, matching or not: the work per batch */
    }
    return 0;
}

static bool scan_done(const void *p)
{
    const scanner_t *c = p;
    return c->seen >= c->count;
}

/* The same batch without the lock (optread.c): every live key examined counts. */
static bool opt_scan_key(void *p, const char *key, uint64_t klen)
{
    scanner_t *c = p;
    pack_key(&c->w, key, klen);
    c->seen++;
    return true;
}

static void opt_scan_restart(void *p)
{
    scanner_t *c = p;
    c->w.used = c->w.n = c->seen = 0;
}

int64_t shmdict_scan(shmdict_t *h, uint64_t cursor, uint64_t count, const char *pat, size_t plen,
                     char *buf, size_t cap, shmdict_out_t *out)
{
    if (count == 0)
        return SHMDICT_EINVAL;
    scanner_t c = {{buf, cap, 0, 0, 0, pat, plen, false, false}, 0, 0, count};
    uint64_t next;
    if (opt_cursor_walk(h, cursor, opt_scan_key, scan_done, opt_scan_restart, &c, &next) != OPT_HIT) {
        int rc = lock_dict(h); /* (keys only: an update in place changes no key) */
        if (rc)
            return rc;
        opt_scan_restart(&c);
        c.now = h->hdr->n_ttl ? now_ns() : 0;
        int64_t res = cursor_walk(h, cursor, scan_one, scan_done, &c, &next);
        unlock_dict(h);
        if (res)
            return res;
    }
    out->i = (int64_t)next;
    out->len = c.w.used;
    return c.w.used > cap ? SHMDICT_ERANGE : (int64_t)c.w.n;
}
