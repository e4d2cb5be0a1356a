/*
 * list.c -- lists: lpush/rpush (push), lpop/rpop (pop_end) and llen, one
 * record per list, moved to a larger block through put()'s escalation when
 * an end is full. The record layout is below; its inline accessors
 * (list_area, list_count, list_cap) are in record.h because packing a value
 * (record.c) reads a list too.
 */
#include "record.h"
#include "fault.h"
#include "notify.h"

/* ---- lists ---------------------------------------------------------------------
 *
 * A list is ONE record of type LIST (see rec_bytes in layout.h):
 *
 *   header | key, padded to 8 | u64 count | element area (C bytes)
 *                                           [ free | live elements | free ]
 *                                                    ^start (num.s.reserved), vlen bytes
 *   element: u32 n | u8 type | payload (n bytes: 8 for numbers) | u32 n
 *
 * The trailing copy of n lets rpop find the last element. Push and pop at
 * either end are O(1) when the area has room on that side: the new element's
 * bytes go outside the live part (unreachable, so unlogged), then one logged
 * store of the num word (start, vlen), one of count, one of the version
 * word, commit. When that side is full the list moves to a new block with
 * room on both sides (at least twice the live bytes), making room as put()
 * does (room_take/room_climb, record.c) -- reclaim, borrow, compact, grow, evict -- and the
 * same publish-then-free order, so a crash leaves the old record or the new
 * one. A list whose last element is popped is deleted. Records never move
 * otherwise, so one key's list is always one contiguous block: its total
 * size is bounded by the largest item the dict can hold. */

static void elem_write(char *dst, const value_t *v)
{
    uint32_t n = is_numeric(v->type) ? 8 : (uint32_t)v->len;
    memcpy(dst, &n, 4);
    dst[4] = (char)v->type;
    if (is_numeric(v->type))
        memcpy(dst + 5, &v->num, 8);
    else if (n)
        memcpy(dst + 5, v->buf, n);
    memcpy(dst + 5 + n, &n, 4);
}

static inline uint64_t num_word(uint32_t vlen, uint32_t start) { return (uint64_t)start << 32 | vlen; }

/* Write key's list as a new block: the live elements of `src` (NULL: none)
 * plus element v on the left or right, centred in an area of at least
 * `want` bytes. Replaces the record at the key's slot, or inserts it.
 * Commits; on failure nothing is applied. */
static int list_move(shmdict_t *h, const char *key, size_t klen, uint64_t hash, rec_t *src,
                     const value_t *v, bool left, uint64_t want, uint64_t now)
{
    header_t *H = h->hdr;
    uint64_t esz = (is_numeric(v->type) ? 8 : v->len) + 9;
    /* src's live length is read once: the new block is sized from it and the
     * copy below uses it, never a second read of the file */
    uint64_t src_len = src ? src->num.s.vlen : 0;
    uint64_t live = src_len + esz, count = (src ? *list_count(src) : 0) + 1;
    uint64_t units = (REC_HDR + pad8(klen) + 8 + want + UNIT - 1) / UNIT;
    if (class_of(units) >= NCLASS || units > units_ever(h) - FIRST_UNIT)
        units = (REC_HDR + pad8(klen) + 8 + live + UNIT - 1) / UNIT; /* no slack then */
    if (live > UINT32_MAX / 2 || class_of(units) >= NCLASS || units > units_ever(h) - FIRST_UNIT)
        return SHMDICT_ETOOBIG;
    room_t room;
    room_init(&room, h, 0, now);
    for (;;) {
        H = h->hdr; /* a growth may have mapped the dict again */
        int64_t ins, i = find_slot(h, key, klen, hash, &ins);
        if (i < -1)
            return SHMDICT_ECORRUPT;
        rec_t *old = i >= 0 ? rec_at(h, h->slots[i]) : NULL;
        uint64_t src_start = 0;
        if (src) {
            src = old; /* the key's own record: a compaction pass may have moved it */
            if (!src || src->type != SHMDICT_T_LIST || src->num.s.vlen != src_len)
                return SHMDICT_ECORRUPT; /* nothing of this push is stored yet */
            src_start = src->num.s.reserved;
            if (src_start > list_cap(src->cls & 0x7f, klen) || src_len > list_cap(src->cls & 0x7f, klen) - src_start)
                return SHMDICT_ECORRUPT;
        }
        uint64_t unit = 0;
        int cls = 0, rc;
        rc = room_take(h, &room, !old && (ins < 0 || (h->slots[ins] == SLOT_EMPTY && index_full(h))), units,
                       &unit, &cls);
        if (rc == ROOM_AGAIN)
            continue; /* the index grew: slot numbers changed */
        if (rc == SHMDICT_OK) {
            FAULT(LIST_ALLOCATED);
            rec_t *r = unit_ptr(h, unit);
            uint64_t cap = list_cap(cls, klen), start = (cap - live) / 2;
            char *area = r->data + pad8(klen) + 8;
            r->expires = old && src ? old->expires : 0; /* a push keeps the TTL; a new list has none */
            r->klen = (uint16_t)klen;
            r->type = SHMDICT_T_LIST;
            r->cls = (uint8_t)cls;
            r->ver = next_ver(old ? old->ver : (uint32_t)H->gen);
            r->num.u = num_word((uint32_t)live, (uint32_t)start);
            memcpy(r->data, key, klen);
            *list_count(r) = count;
            uint64_t at = start;
            if (left) {
                elem_write(area + at, v);
                at += esz;
            }
            if (src && src_len) {
                memcpy(area + at, list_area(src) + src_start, src_len);
                at += src_len;
            }
            if (!left)
                elem_write(area + at, v);
            STORED(); /* the new block, unpublished */
            FAULT(LIST_FILLED);
            uint64_t nbytes = class_units(cls) * UNIT;
            if (old) {
                uint64_t old_unit = slot_unit(h->slots[i]), old_bytes = class_units(old->cls & 0x7f) * UNIT;
                w64(h, &h->slots[i], (hash >> 32) << 32 | unit);
                FAULT(LIST_PUBLISHED);
                if (old->expires && !r->expires)
                    w64(h, &H->n_ttl, H->n_ttl - 1);
                free_block(h, old_unit, old);
                w64(h, &H->used_bytes, H->used_bytes - old_bytes + nbytes);
            } else {
                if (h->slots[ins] == SLOT_TOMB)
                    w64(h, &H->tombs, H->tombs - 1);
                w64(h, &h->slots[ins], (hash >> 32) << 32 | unit);
                FAULT(LIST_PUBLISHED);
                w64(h, &H->count, H->count + 1);
                w64(h, &H->used_bytes, H->used_bytes + nbytes);
            }
            note_change(h, hash, EV_SET, key, klen);
            commit(h);
            return SHMDICT_OK;
        }
        if (rc != SHMDICT_EFULL)
            return rc;
        if ((rc = room_climb(h, &room, units, i)) != SHMDICT_OK) /* never src: it is live and kept */
            return rc;
    }
}

/* lpush (left = 1) / rpush: returns the new length in out->i. */
int shmdict_push(shmdict_t *h, const char *key, size_t klen, int left, int type, int64_t iv, double fv,
                 const char *val, size_t vlen, shmdict_out_t *out)
{
    value_t v;
    int vrc = make_value(&v, type, iv, fv, val, vlen);
    if (vrc)
        return vrc;
    if (vlen > UINT32_MAX / 4)
        return SHMDICT_ETOOBIG;
    BEGIN(h, key, klen);
    if (!now)
        now = now_ns();
    uint64_t esz = (is_numeric(type) ? 8 : v.len) + 9;
    if (i < -1) {
        rc = SHMDICT_ECORRUPT;
    } else if (i >= 0 && r->type != SHMDICT_T_LIST) {
        rc = SHMDICT_EWRONGTYPE;
    } else if (i < 0) {
        /* absent or expired: a new list (an expired one is replaced whole) */
        rc = list_move(h, key, klen, hash, NULL, &v, left != 0, esz * 4 > 64 ? esz * 4 : 64, now);
        out->i = 1;
    } else {
        uint64_t start = r->num.s.reserved, live = r->num.s.vlen, cap = list_cap(r->cls & 0x7f, klen);
        uint64_t count = *list_count(r);
        char *area = r->data + pad8(klen) + 8;
        uint64_t dest = left ? cap - live : 0; /* where a slide would put the live part */
        if (count == 0 || count > live / 9 || start + live > cap) {
            rc = SHMDICT_ECORRUPT;
            goto out;
        }
        if (!(left ? start >= esz : cap - start - live >= esz) && live + esz <= cap &&
            (left ? dest >= start + live : start >= live)) {
            /* No room on this side, but the other side's free part can take
             * the whole live part without overlapping it: copy it there
             * (unlogged: outside the live part), then switch with one logged
             * store. A queue (rpush + lpop) so stays in its block. */
            memcpy(area + dest, area + start, live);
            STORED();
            w64(h, &r->num.u, num_word((uint32_t)live, (uint32_t)dest));
            FAULT(LIST_SLID);
            start = dest;
        }
        if (left ? start >= esz : cap - start - live >= esz) {
            uint64_t nstart = left ? start - esz : start;
            elem_write(area + (left ? nstart : start + live), &v); /* outside the live part: unlogged */
            STORED();
            w64(h, &r->num.u, num_word((uint32_t)(live + esz), (uint32_t)nstart));
            FAULT(LIST_PUSHED);
            w64(h, list_count(r), count + 1);
            w64(h, word8(r), word8_with(r, SHMDICT_T_LIST, next_ver(r->ver)));
            note_change(h, hash, EV_SET, key, klen);
            commit(h);
            out->i = (int64_t)count + 1;
        } else {
            rc = list_move(h, key, klen, hash, r, &v, left != 0, 2 * (live + esz), now);
            if (rc == SHMDICT_EFULL) /* no room to double: try just what it needs */
                rc = list_move(h, key, klen, hash, r, &v, left != 0, live + esz, now);
            out->i = (int64_t)count + 1;
        }
    }
out:
    unlock_dict(h);
    return rc;
}

/* lpop (left = 1) / rpop: the element's value as shmdict_get returns one;
 * ERANGE (out->len = its size, nothing removed) if buf is too small. */
int shmdict_pop_end(shmdict_t *h, const char *key, size_t klen, int left, shmdict_out_t *out, char *buf,
                    size_t cap)
{
    BEGIN(h, key, klen);
    if (i < -1) {
        rc = SHMDICT_ECORRUPT;
    } else if (i < 0) {
        rc = SHMDICT_ENOTFOUND;
    } else if (r->type != SHMDICT_T_LIST) {
        rc = SHMDICT_EWRONGTYPE;
    } else {
        uint64_t start = r->num.s.reserved, live = r->num.s.vlen, acap = list_cap(r->cls & 0x7f, klen);
        uint64_t count = *list_count(r);
        const char *area = list_area(r);
        uint64_t esz = start + live <= acap && count && count <= live / 9
                           ? elem_check(area, start, start + live, left ? start : start + live, left)
                           : 0;
        if (!esz) {
            rc = SHMDICT_ECORRUPT;
            goto out;
        }
        const char *e = area + (left ? start : start + live - esz);
        uint32_t n;
        memcpy(&n, e, 4);
        int type = (unsigned char)e[4];
        out->ver = r->ver;
        if (is_numeric(type)) {
            memcpy(&out->i, e + 5, 8);
            memcpy(&out->f, e + 5, 8);
        } else {
            out->len = n;
            if (n > cap) {
                rc = SHMDICT_ERANGE;
                goto out;
            }
            if (n)
                memcpy(buf, e + 5, n);
        }
        if (count == 1) {
            if (delete_at(h, (uint64_t)i, r)) {
                rc = SHMDICT_ECORRUPT;
                goto out;
            }
        } else {
            w64(h, &r->num.u, num_word((uint32_t)(live - esz), (uint32_t)(left ? start + esz : start)));
            FAULT(LIST_POPPED);
            w64(h, list_count(r), count - 1);
            w64(h, word8(r), word8_with(r, SHMDICT_T_LIST, next_ver(r->ver)));
            note_change(h, hash, EV_SET, key, klen);
        }
        commit(h);
        rc = type;
    }
out:
    unlock_dict(h);
    return rc;
}

/* Length of the list at key (0 if absent), or EWRONGTYPE. */
int64_t shmdict_llen(shmdict_t *h, const char *key, size_t klen)
{
    BEGIN_RO(h, key, klen);
    int64_t n = 0;
    if (i < -1)
        n = SHMDICT_ECORRUPT;
    else if (i >= 0 && r->type != SHMDICT_T_LIST)
        n = SHMDICT_EWRONGTYPE;
    else if (i >= 0) {
        n = (int64_t)*list_count(r);
        if (n < 1 || (uint64_t)n > r->num.s.vlen / 9) /* O(1) sanity; check() walks the elements */
            n = SHMDICT_ECORRUPT;
    }
    (void)rc;
    unlock_dict(h);
    return n;
}
