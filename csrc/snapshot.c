/*
 * snapshot.c -- the table side of dump and load: export live items into a
 * caller buffer in batches, and store a validated batch of items. The file
 * around the items (magic, version, blocks, checksums, trailer) is written
 * and checked by shmdict/_snapshot.py, which documents the whole format.
 *
 * ONE ITEM, all integers little-endian:
 *
 *     u32 klen | key (klen bytes of UTF-8, 1..65535) | u8 type | u64 deadline | value
 *
 *   deadline  wall-clock expiry, ns since the Unix epoch (CLOCK_REALTIME);
 *             0 = never expires
 *   value     type 1 bool, 2 int, 3 float: 8 bytes (bool: 0 or 1; int:
 *               int64; float: IEEE-754 double)
 *             type 4 str, 5 bytes: u32 len | len bytes (str: UTF-8)
 *             type 6 list: u32 count | u32 len | len bytes holding count
 *               elements, each u32 n | u8 type (1..5) | n bytes | u32 n
 *               (numbers: n = 8) -- the layout of a list record's live part
 *
 * EXPORT (shmdict_export) copies up to about `count` live items per call,
 * each read whole under the lock, and returns a cursor for the next call:
 * the cursor walk scan uses (cursor_walk, record.c).
 * The cursor is a position in the space of 32-bit hash tags, naming the slot
 * home_of(cursor) of the index at its current size (the index can grow
 * between calls: it is then rebuilt, and every key whose tag is at least the
 * cursor lies at or after that slot, or wrapped; as for scan, scan.c). Give each
 * entry a "logical position": its slot, or its slot + capacity if its probe
 * run wrapped past the end of the index (home > slot). Linear probing keeps
 * every slot from an entry's home to its slot occupied (TOMB counts as
 * occupied); inserts never move entries, and a delete's backward shift only
 * moves an entry to a lower logical position, never below its home. A batch
 * covers logical positions [cursor, c) where slot c < capacity is EMPTY when
 * the batch ends: every entry then at logical >= c has its home >= c (its
 * probe run would otherwise cross the EMPTY slot), so it stays >= c until
 * a later batch. The last batch reaches the end of the index and continues
 * with the wrapped entries at the start of it, up to the first EMPTY slot
 * (every wrapped entry lies before it). Normal batches skip wrapped entries.
 * Hence: an item present for the whole dump is exported exactly once (at
 * least once if the index grew during the dump: the start slot rounds down);
 * items written or deleted meanwhile may or may not be; the dump is NOT one
 * point-in-time image of the whole dict (each item is). Items expired at the
 * time their batch runs are left out.
 *
 * IMPORT (shmdict_import) first validates (store = 0, no lock) every item of
 * a buffer: bounds, types, UTF-8 of keys and str values, list structure,
 * and that each item could fit in this dict; it reports how many items are
 * still live and the arena bytes they need, so the caller can refuse a
 * snapshot that can never fit before anything is written. Then (store = 1)
 * it stores up to max_items items (or about budget bytes of them) under one
 * lock hold, in order, each with
 * put(): each item is its own transaction (crash safe through the undo log,
 * all of one item or nothing of it), and a crash between items (crash point
 * import.item) leaves the items before it stored. Items whose deadline has
 * passed are skipped; the others keep the time that remains, converted to
 * the TTL clock. Nothing is allocated under the lock.
 */
#include <stdio.h>
#include <time.h>

#include "fault.h"
#include "record.h"

static inline uint32_t rd32(const char *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static inline uint64_t rd64(const char *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

/* Strict UTF-8, as Python's codec: no overlong forms, no surrogates, nothing
 * above U+10FFFF. */
static bool utf8_ok(const char *str, uint64_t n)
{
    const unsigned char *s = (const unsigned char *)str;
    uint64_t i = 0;
    while (i < n) {
        if (n - i >= 8) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (!(w & 0x8080808080808080ull)) {
                i += 8;
                continue;
            }
        }
        unsigned c = s[i];
        if (c < 0x80) {
            i++;
        } else if (c >= 0xc2 && c <= 0xdf) {
            if (n - i < 2 || (s[i + 1] & 0xc0) != 0x80)
                return false;
            i += 2;
        } else if (c >= 0xe0 && c <= 0xef) {
            if (n - i < 3 || (s[i + 1] & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80)
                return false;
            if ((c == 0xe0 && s[i + 1] < 0xa0) || (c == 0xed && s[i + 1] > 0x9f))
                return false; /* overlong; surrogate */
            i += 3;
        } else if (c >= 0xf0 && c <= 0xf4) {
            if (n - i < 4 || (s[i + 1] & 0xc0) != 0x80 || (s[i + 2] & 0xc0) != 0x80 ||
                (s[i + 3] & 0xc0) != 0x80)
                return false;
            if ((c == 0xf0 && s[i + 1] < 0x90) || (c == 0xf4 && s[i + 1] > 0x8f))
                return false; /* overlong; above U+10FFFF */
            i += 4;
        } else {
            return false;
        }
    }
    return true;
}

/* Are len bytes at p exactly `count` well-formed list elements? utf8: also
 * check str elements' text. */
static bool elems_ok(const char *p, uint64_t len, uint64_t count, bool utf8)
{
    uint64_t pos = 0, n = 0;
    while (pos < len) {
        if (len - pos < 9)
            return false;
        uint32_t en = rd32(p + pos);
        if (en > len - pos - 9 || rd32(p + pos + 5 + en) != en)
            return false;
        int type = (unsigned char)p[pos + 4];
        if (type < SHMDICT_T_BOOL || type > SHMDICT_T_BYTES || (is_numeric(type) && en != 8))
            return false;
        if (type == SHMDICT_T_BOOL && rd64(p + pos + 5) > 1)
            return false;
        if (utf8 && type == SHMDICT_T_STR && !utf8_ok(p + pos + 5, en))
            return false;
        pos += 9 + (uint64_t)en;
        n++;
    }
    return n == count;
}

/* ---- export ----------------------------------------------------------------- */

typedef struct exporter {
    char *buf;
    size_t cap;
    uint64_t used, n;
    uint64_t now, wall_now;
} exporter_t;

/* Append the record at slot value s, unless it has expired. */
static int export_one(shmdict_t *h, uint64_t s, exporter_t *e)
{
    rec_t *r = rec_at(h, s);
    if (!r)
        return SHMDICT_ECORRUPT;
    uint64_t wall = 0;
    if (r->expires) {
        if (!e->now)
            e->now = now_ns();
        if (r->expires <= e->now)
            return SHMDICT_OK;
        uint64_t left = r->expires - e->now;
        wall = left >= UINT64_MAX - e->wall_now ? UINT64_MAX : e->wall_now + left;
    }
    uint64_t klen = r->klen, vlen = 0, count = 0, head = 4 + klen + 1 + 8;
    const char *val = NULL;
    uint64_t need;
    if (is_numeric(r->type)) {
        need = head + 8;
    } else if (r->type == SHMDICT_T_LIST) {
        uint64_t start = r->num.s.reserved, acap = class_units(r->cls & 0x7f) * UNIT;
        vlen = r->num.s.vlen;
        if (REC_HDR + pad8(klen) + 8 + start + vlen > acap) /* rec_at checked it too */
            return SHMDICT_ECORRUPT;
        count = rd64(r->data + pad8(klen));
        val = r->data + pad8(klen) + 8 + start;
        if (count == 0 || !elems_ok(val, vlen, count, false))
            return SHMDICT_ECORRUPT;
        need = head + 8 + vlen;
    } else {
        vlen = r->num.s.vlen;
        val = r->data + klen;
        need = head + 4 + vlen;
    }
    if (e->used + need <= e->cap) {
        char *p = e->buf + e->used;
        uint32_t kl = (uint32_t)klen, vl = (uint32_t)vlen;
        memcpy(p, &kl, 4);
        memcpy(p + 4, r->data, klen);
        p += 4 + klen;
        *p++ = (char)r->type;
        memcpy(p, &wall, 8);
        p += 8;
        if (is_numeric(r->type)) {
            memcpy(p, &r->num.u, 8);
        } else {
            if (r->type == SHMDICT_T_LIST) {
                uint32_t c = (uint32_t)count;
                memcpy(p, &c, 4);
                p += 4;
            }
            memcpy(p, &vl, 4);
            if (vlen)
                memcpy(p + 4, val, vlen);
        }
    }
    e->used += need;
    e->n++;
    return SHMDICT_OK;
}

typedef struct export_batch {
    exporter_t e;
    uint64_t seen, count, budget;
} export_batch_t;

static int export_visit(shmdict_t *h, uint64_t s, void *p)
{
    export_batch_t *x = p;
    x->seen++;
    return export_one(h, s, &x->e);
}

static bool export_done(const void *p)
{
    const export_batch_t *x = p;
    return x->seen >= x->count || x->e.used >= x->budget;
}

int64_t shmdict_export(shmdict_t *h, uint64_t cursor, uint64_t count, uint64_t budget, uint64_t wall_now,
                       char *buf, size_t cap, shmdict_out_t *out)
{
    out->i = 0;
    out->len = 0;
    if (count == 0 || cursor > (1ull << 32))
        return SHMDICT_EINVAL;
    int rc = lock_dict_values(h); /* values: no update in place half way through one (seq.c) */
    if (rc)
        return rc;
    export_batch_t x = {{buf, cap, 0, 0, h->hdr->n_ttl ? now_ns() : 0, wall_now}, 0, count, budget};
    uint64_t next;
    rc = cursor_walk(h, cursor, export_visit, export_done, &x, &next);
    unlock_dict(h);
    if (rc)
        return rc;
    out->i = (int64_t)next;
    out->len = x.e.used;
    return x.e.used > cap ? SHMDICT_ERANGE : (int64_t)x.e.n;
}

/* ---- salvage -----------------------------------------------------------------
 *
 * What is still readable from a dict that can no longer be used -- marked
 * corrupt, or with a mutex that cannot be recovered -- in the export format,
 * WITHOUT the lock and without writing a byte of the file. Index slots
 * [from, from + count) are read in order; a slot's record is taken only if,
 * read once into a copy, it is whole: inside the arena, its class fitting,
 * its value inside its block, its key hashing to the slot's tag (so a slot
 * that points at the wrong place is refused, not followed), keys and str
 * values valid UTF-8, a list's elements well formed. The bytes are copied
 * into the caller's buffer first and judged there, so a record that changes
 * meanwhile is refused or copied whole, never read past its block. Expired
 * items are left out. A dict whose index itself is lost yields nothing;
 * check() then says why. */
int64_t shmdict_salvage(shmdict_t *h, uint64_t from, uint64_t count, uint64_t wall_now, char *buf, size_t cap,
                        shmdict_out_t *out)
{
    uint64_t n = 0, used = 0, refused = 0, now = now_ns(), i = from, end;
    out->i = 0;
    out->len = 0;
    out->ver = 0;
    if (count == 0 || from > h->cap)
        return SHMDICT_EINVAL;
    end = count < h->cap - from ? from + count : h->cap;
    for (; i < end; i++) {
        uint64_t s = __atomic_load_n(&h->slots[i], __ATOMIC_RELAXED), unit = slot_unit(s);
        if (s <= SLOT_TOMB)
            continue;
        rec_t hd;
        if (unit < FIRST_UNIT || unit + MIN_REC_UNITS > h->units) {
            refused++;
            continue;
        }
        memcpy(&hd, unit_ptr(h, unit), sizeof hd); /* read once: everything below uses the copy */
        int cls = hd.cls & 0x7f, type = hd.type;
        uint64_t klen = hd.klen, vlen = 0, from_off = 0, lcount = 0;
        if (cls >= NCLASS || type < SHMDICT_T_BOOL || type > SHMDICT_T_LIST || klen == 0 ||
            unit + class_units(cls) > h->units) {
            refused++;
            continue;
        }
        uint64_t room = class_units(cls) * UNIT - REC_HDR; /* bytes after the record header */
        if (type == SHMDICT_T_LIST) {
            vlen = hd.num.s.vlen;
            from_off = pad8(klen) + 8 + hd.num.s.reserved;
            if (pad8(klen) + 8 > room || hd.num.s.reserved > room - pad8(klen) - 8 || vlen > room - from_off) {
                refused++;
                continue;
            }
            lcount = rd64(unit_ptr(h, unit)->data + pad8(klen));
        } else if (!is_numeric(type)) {
            vlen = hd.num.s.vlen;
            from_off = klen;
            if (klen > room || vlen > room - klen) {
                refused++;
                continue;
            }
        } else if (klen > room) {
            refused++;
            continue;
        }
        uint64_t wall = 0;
        if (hd.expires) {
            if (hd.expires <= now)
                continue;
            uint64_t left = hd.expires - now;
            wall = left >= UINT64_MAX - wall_now ? UINT64_MAX : wall_now + left;
        }
        uint64_t need = 4 + klen + 1 + 8 + (is_numeric(type) ? 8 : type == SHMDICT_T_LIST ? 8 + vlen : 4 + vlen);
        if (used + need > cap) {
            if (n == 0 && used == 0) {
                out->i = (int64_t)i;
                out->len = need;
                return SHMDICT_ERANGE; /* not even this one item fits: a larger buffer, same `from` */
            }
            break;
        }
        const char *rd = unit_ptr(h, unit)->data;
        char *p = buf + used, *key = p + 4, *val;
        uint32_t kl = (uint32_t)klen, vl = (uint32_t)vlen;
        memcpy(p, &kl, 4);
        memcpy(key, rd, klen);
        p = key + klen;
        *p++ = (char)type;
        memcpy(p, &wall, 8);
        p += 8;
        if (is_numeric(type)) {
            memcpy(p, &hd.num.u, 8);
            val = p;
        } else {
            if (type == SHMDICT_T_LIST) {
                uint32_t c = (uint32_t)lcount;
                memcpy(p, &c, 4);
                p += 4;
            }
            memcpy(p, &vl, 4);
            val = p + 4;
            if (vlen)
                memcpy(val, rd + from_off, vlen);
        }
        /* judged on the copy */
        bool ok = (uint32_t)(hash_key(h, key, klen) >> 32) == slot_tag(s) && utf8_ok(key, klen);
        if (ok && type == SHMDICT_T_STR)
            ok = utf8_ok(val, vlen);
        else if (ok && type == SHMDICT_T_BOOL)
            ok = rd64(val) <= 1;
        else if (ok && type == SHMDICT_T_LIST)
            ok = lcount > 0 && lcount <= UINT32_MAX && elems_ok(val, vlen, lcount, true);
        if (!ok) {
            refused++;
            continue;
        }
        used += need;
        n++;
    }
    out->i = i < h->cap ? (int64_t)i : 0;
    out->len = used;
    out->ver = (uint32_t)refused;
    return (int64_t)n;
}

/* ---- import ----------------------------------------------------------------- */

typedef struct item {
    const char *key;
    uint32_t klen;
    uint64_t wall;
    value_t v;
} item_t;

/* Parse and validate the item at p (len bytes left). Returns its size, or 0
 * if it is malformed. */
static uint64_t parse_one(const char *p, uint64_t len, item_t *it)
{
    if (len < 4)
        return 0;
    uint32_t kl = rd32(p);
    if (kl == 0 || kl > SHMDICT_MAX_KEY || len - 4 < (uint64_t)kl + 9 || !utf8_ok(p + 4, kl))
        return 0;
    it->key = p + 4;
    it->klen = kl;
    uint64_t at = 4 + (uint64_t)kl;
    int type = (unsigned char)p[at];
    it->wall = rd64(p + at + 1);
    at += 9;
    it->v.type = type;
    it->v.num = 0;
    it->v.buf = NULL;
    it->v.len = 0;
    if (is_numeric(type)) {
        if (len - at < 8)
            return 0;
        it->v.num = rd64(p + at);
        if (type == SHMDICT_T_BOOL && it->v.num > 1)
            return 0;
        return at + 8;
    }
    uint64_t count = 0;
    if (type == SHMDICT_T_LIST) {
        if (len - at < 4)
            return 0;
        count = rd32(p + at);
        at += 4;
    } else if (type != SHMDICT_T_STR && type != SHMDICT_T_BYTES) {
        return 0;
    }
    if (len - at < 4)
        return 0;
    uint32_t vl = rd32(p + at);
    at += 4;
    if (len - at < vl)
        return 0;
    const char *val = p + at;
    if (type == SHMDICT_T_STR && !utf8_ok(val, vl))
        return 0;
    if (type == SHMDICT_T_LIST && (count == 0 || vl > UINT32_MAX / 2 || !elems_ok(val, vl, count, true)))
        return 0;
    it->v.num = count;
    it->v.buf = val;
    it->v.len = vl;
    return at + vl;
}

static inline bool fits_ever(const shmdict_t *h, const item_t *it, uint64_t *bytes)
{
    uint64_t units = rec_units(it->klen, it->v.type, it->v.len);
    int cls = class_of(units);
    if (cls >= NCLASS || units > units_ever(h) - FIRST_UNIT)
        return false;
    *bytes = class_units(cls) * UNIT;
    return true;
}

int64_t shmdict_import(shmdict_t *h, const char *items, size_t len, uint64_t max_items, uint64_t budget,
                       uint64_t wall_now, int store, shmdict_out_t *out)
{
    item_t it;
    out->i = 0;
    out->len = 0;
    out->f = 0;
    uint64_t pos = 0, n = 0, live = 0, bytes = 0, b;
    /* Validate first (no lock): a malformed item changes nothing. */
    while (pos < len && (!store || (n < max_items && pos < budget))) {
        uint64_t sz = parse_one(items + pos, len - pos, &it);
        if (!sz)
            return SHMDICT_ECORRUPT;
        if (!it.wall || it.wall > wall_now) {
            if (!fits_ever(h, &it, &b))
                return SHMDICT_ETOOBIG;
            live++;
            bytes += b;
        }
        pos += sz;
        n++;
    }
    if (!store) {
        out->i = (int64_t)live;
        out->len = bytes;
        return (int64_t)n;
    }
    uint64_t end = pos;
    int rc = lock_dict(h);
    if (rc)
        return rc;
    uint64_t now = now_ns();
    int64_t stored = 0;
    for (pos = 0; pos < end;) {
        uint64_t sz = parse_one(items + pos, end - pos, &it);
        if (it.wall && it.wall <= wall_now) {
            pos += sz; /* already expired: skipped */
            continue;
        }
        uint64_t deadline = 0;
        if (it.wall) {
            uint64_t left = it.wall - wall_now;
            deadline = left >= UINT64_MAX - 1 - now ? UINT64_MAX - 1 : now + left;
        }
        uint32_t ver;
        uint64_t hash = hash_key(h, it.key, it.klen);
        if ((rc = lock_stripe(h, (uint32_t)(hash >> 32), true)) != SHMDICT_OK)
            break;
        rc = put(h, it.key, it.klen, hash, &it.v, deadline, now, SHMDICT_SET_ALWAYS, &ver);
        if (rc)
            break;
        pos += sz;
        stored++;
        FAULT(IMPORT_ITEM);
    }
    unlock_dict(h);
    out->i = stored;
    out->len = pos;
    return rc ? rc : (int64_t)n;
}
