/*
 * record.c -- what every family of operations shares: making room for a
 * block (the one escalation: reclaim, borrow, compact, grow, evict), storing
 * key = value (put: insert, overwrite in place, or replace), finding a live
 * record (lookup), the CLOCK eviction step (evict_some), the live count,
 * walking live records, and packing a value into a caller's buffer.
 *
 * Every public entry point (kv.c, list.c, scan.c, batch.c, stats.c, evict.c,
 * limit.c, window.c) has one shape:
 *
 *     validate arguments -> hash the key (no lock needed: the seed is
 *     immutable) -> lock -> table work -> commit -> unlock -> return rc
 *
 * with a single unlock exit. Nothing inside the lock runs Python code. A
 * plain operation allocates nothing and makes no system call (clock_gettime
 * is a vDSO read); the bulk steps an allocation may escalate to do: an index
 * growth allocates a private copy of the old index, a file growth calls
 * posix_fallocate and may map the file again, and each bulk step first calls
 * the binding's hook (about_to_block, lock.c), which releases the GIL. Every
 * store to live state goes through put() / w64() / delete_at() and so
 * through the undo log, and every store into the file is a crash point
 * (STORED(), fault.h).
 */
#include "record.h"
#include "fault.h"
#include "notify.h"

static inline void lower_hint(header_t *H, uint64_t deadline)
{
    if (deadline && deadline < H->exp_hint) {
        H->exp_hint = deadline; /* unlogged: a hint that is too early only costs a scan */
        STORED();
    }
}

/* Give a live record a new deadline (logged), keeping n_ttl right. */
void set_deadline(shmdict_t *h, rec_t *r, uint64_t deadline)
{
    header_t *H = h->hdr;
    if (r->expires == deadline)
        return;
    if (!r->expires != !deadline)
        w64(h, &H->n_ttl, deadline ? H->n_ttl + 1 : H->n_ttl - 1);
    lower_hint(H, deadline);
    w64(h, &r->expires, deadline);
}

static void fill(rec_t *r, int cls, const char *key, size_t klen, const value_t *v, uint64_t deadline,
                 uint32_t ver)
{
    r->expires = deadline;
    r->klen = (uint16_t)klen;
    r->type = (uint8_t)v->type;
    r->cls = (uint8_t)cls;
    r->ver = ver;
    if (is_numeric(v->type)) {
        r->num.u = v->num;
        memcpy(r->data, key, klen);
    } else if (v->type == SHMDICT_T_LIST) {
        /* a whole list (snapshot load): v->num elements packed in v->buf,
         * live part at the start of the area (see list.c) */
        r->num.s.vlen = (uint32_t)v->len;
        r->num.s.reserved = 0;
        memcpy(r->data, key, klen);
        uint64_t count = v->num;
        memcpy(r->data + pad8(klen), &count, 8);
        memcpy(r->data + pad8(klen) + 8, v->buf, v->len);
    } else {
        r->num.s.vlen = (uint32_t)v->len;
        r->num.s.reserved = 0;
        memcpy(r->data, key, klen);
        if (v->len)
            memcpy(r->data + klen, v->buf, v->len);
    }
    STORED(); /* an unpublished block (or one backed up): a crash state like any other */
}

/* Rewrite the live record `old` in place with key = v: its block is large
 * enough. The old bytes go to the backup area first (wbackup), so a crash
 * restores them. */
static void rewrite(shmdict_t *h, rec_t *old, const char *key, size_t klen, uint64_t hash,
                    const value_t *v, uint64_t deadline, uint32_t *ver_out)
{
    header_t *H = h->hdr;
    uint64_t old_bytes = rec_bytes(old); /* a list's whole element area too */
    uint32_t ver = next_ver(old->ver);
    bool had_ttl = old->expires != 0;
    wbackup(h, old, old_bytes);
    FAULT(OVERWRITE_BACKED);
    fill(old, old->cls & 0x7f, key, klen, v, deadline, ver);
    FAULT(OVERWRITE_REWRITTEN);
    if (had_ttl != (deadline != 0))
        w64(h, &H->n_ttl, deadline ? H->n_ttl + 1 : H->n_ttl - 1);
    lower_hint(H, deadline);
    note_change(h, hash, EV_SET, key, klen);
    commit(h);
    *ver_out = ver;
}

/* Can the record `old` be rewritten in place with a record of `units`? */
static bool fits_in_place(const rec_t *old, uint64_t units)
{
    uint64_t old_bytes = rec_bytes(old);
    return units <= class_units(old->cls & 0x7f) && old_bytes <= BACKUP_MAX;
}

/* ---- making room: the one escalation every allocation shares --------------
 *
 * put() and a list that moves to a larger block (list.c) allocate through
 * room_take() and, when it reports EFULL, climb one step with room_climb()
 * and try again, cheapest step first:
 *   0. the exact class's free list, then the bump pointer;
 *   1. after reclaiming every expired record, the same, then borrowing: the
 *      smallest larger class with a free block, split to size;
 *   2. a compaction pass when the free space would hold the block but lies
 *      in holes (an evicting dict only when the holes are worth it,
 *      compact_would_fit), once per eviction;
 *   3. a dict with a max_size grows (grow_auto: at least doubling);
 *   4. an evicting dict evicts one CLOCK victim (never the key being stored);
 *   otherwise EFULL.
 * A new key whose index is at its load limit first grows the index
 * (grow_index); the slot numbers change, so the caller looks the key up again
 * (ROOM_AGAIN). Every step commits its own transaction and runs with the log
 * empty: the caller has stored nothing of its own operation yet. Bounded:
 * steps 0-3 run at most once between two evictions, and each eviction
 * removes a record. */
void room_init(room_t *e, const shmdict_t *h, int flags, uint64_t now)
{
    e->stage = 0;
    e->compacted = e->no_room = false;
    e->evicting = (h->hdr->flags & HF_EVICT) && !(flags & SHMDICT_SET_NOEVICT);
    e->now = now;
}

int room_take(shmdict_t *h, room_t *e, bool need_slot, uint64_t units, uint64_t *unit, int *cls)
{
    if (need_slot) {
        int rc = grow_index(h);
        return rc == SHMDICT_OK ? ROOM_AGAIN : rc;
    }
    return alloc_units(h, units, e->stage >= 1, unit, cls);
}

int room_climb(shmdict_t *h, room_t *e, uint64_t units, int64_t keep)
{
    if (e->stage == 0) {
        e->stage = 1;
        if (!e->now)
            e->now = now_ns();
        return reclaim_expired(h, e->now, true) < 0 ? SHMDICT_ECORRUPT : SHMDICT_OK;
    }
    if (!e->compacted && compact_would_fit(h, units, e->evicting)) {
        e->compacted = true; /* a second pass without an eviction between could only loop */
        return compact(h) != SHMDICT_OK ? SHMDICT_ECORRUPT : SHMDICT_OK;
    }
    if (!e->no_room) {
        int rc = grow_auto(h, units); /* EFULL: no max_size, or at it */
        if (rc == SHMDICT_OK)
            return SHMDICT_OK;
        if (rc == SHMDICT_ESYS && e->evicting)
            e->no_room = true; /* the filesystem is full: a cache evicts instead */
        else if (rc != SHMDICT_EFULL)
            return rc;
    }
    if (!e->evicting)
        return SHMDICT_EFULL;
    e->compacted = false; /* the victim's block may complete a hole worth gathering */
    return evict_some(h, keep); /* EFULL once nothing is left to evict */
}

/* Store key = v with the given deadline: insert, overwrite in place, or
 * replace with a new block (making room as above). Commits; on failure
 * nothing of this store is applied. An update that fits its key's current
 * block is rewritten in place rather than refused. */
int put(shmdict_t *h, const char *key, size_t klen, uint64_t hash, const value_t *v,
               uint64_t deadline, uint64_t now, int flags, uint32_t *ver_out)
{
    header_t *H = h->hdr;
    uint64_t units = rec_units(klen, v->type, v->len);
    if (class_of(units) >= NCLASS || units > units_ever(h) - FIRST_UNIT)
        return SHMDICT_ETOOBIG;
    seq_mark(h, (uint32_t)(hash >> 32)); /* lock-free readers of this key's stripe: a write is in flight */
    if (H->n_ttl && reclaim_expired(h, now, false) < 0)
        return SHMDICT_ECORRUPT;
    room_t room;
    room_init(&room, h, flags, now);

    for (;;) {
        H = h->hdr; /* a growth may have mapped the dict again (the old mapping stays valid) */
        if (room.now)
            now = room.now;
        int64_t ins, i = find_slot(h, key, klen, hash, &ins);
        if (i < -1)
            return SHMDICT_ECORRUPT;
        rec_t *old = i >= 0 ? rec_at(h, h->slots[i]) : NULL;
        int rc;
        if (flags & (SHMDICT_SET_NX | SHMDICT_SET_XX)) {
            bool live = old && !(old->expires && old->expires <= (now ? now : (now = now_ns())));
            if ((flags & SHMDICT_SET_NX) && live)
                return SHMDICT_EEXIST;
            if ((flags & SHMDICT_SET_XX) && !live)
                return SHMDICT_ENOTFOUND;
        }

        if (old && is_numeric(old->type) && is_numeric(v->type)) {
            uint32_t ver = next_ver(old->ver);
            w64(h, &old->num.u, v->num);
            FAULT(OVERWRITE_INPLACE);
            w64(h, word8(old), word8_with(old, v->type, ver));
            set_deadline(h, old, deadline);
            note_change(h, hash, EV_SET, key, klen);
            FAULT(OVERWRITE_COUNTED);
            commit(h);
            *ver_out = ver;
            return SHMDICT_OK;
        }
        if (old && fits_in_place(old, units) && class_of(units) == (old->cls & 0x7f)) {
            rewrite(h, old, key, klen, hash, v, deadline, ver_out);
            return SHMDICT_OK;
        }

        uint64_t unit = 0;
        int cls = 0;
        bool need_slot = !old && (ins < 0 || (h->slots[ins] == SLOT_EMPTY && index_full(h)));
        rc = room_take(h, &room, need_slot, units, &unit, &cls);
        if (rc == ROOM_AGAIN)
            continue;
        if (rc == SHMDICT_OK) {
            uint32_t ver = next_ver(old ? old->ver : (uint32_t)H->gen);
            rec_t *r = unit_ptr(h, unit);
            uint64_t bytes = class_units(cls) * UNIT;
            if (old)
                FAULT(OVERWRITE_ALLOCATED);
            else
                FAULT(INSERT_ALLOCATED);
            fill(r, cls, key, klen, v, deadline, ver);
            lower_hint(H, deadline);
            if (old) {
                uint64_t old_unit = slot_unit(h->slots[i]);
                uint64_t old_bytes = class_units(old->cls & 0x7f) * UNIT;
                FAULT(OVERWRITE_FILLED);
                w64(h, &h->slots[i], (hash >> 32) << 32 | unit);
                FAULT(OVERWRITE_PUBLISHED);
                if (!old->expires != !deadline)
                    w64(h, &H->n_ttl, deadline ? H->n_ttl + 1 : H->n_ttl - 1);
                free_block(h, old_unit, old);
                FAULT(OVERWRITE_FREED);
                w64(h, &H->used_bytes, H->used_bytes - old_bytes + bytes);
                FAULT(OVERWRITE_COUNTED);
            } else {
                FAULT(INSERT_FILLED);
                if (h->slots[ins] == SLOT_TOMB)
                    w64(h, &H->tombs, H->tombs - 1);
                w64(h, &h->slots[ins], (hash >> 32) << 32 | unit);
                FAULT(INSERT_PUBLISHED);
                w64(h, &H->count, H->count + 1);
                w64(h, &H->used_bytes, H->used_bytes + bytes);
                if (deadline)
                    w64(h, &H->n_ttl, H->n_ttl + 1);
                FAULT(INSERT_COUNTED);
            }
            note_change(h, hash, EV_SET, key, klen);
            commit(h);
            *ver_out = ver;
            return SHMDICT_OK;
        }
        if (rc != SHMDICT_EFULL)
            return rc;
        if (old && fits_in_place(old, units)) {
            rewrite(h, old, key, klen, hash, v, deadline, ver_out); /* a full dict still takes an update that fits */
            return SHMDICT_OK;
        }
        if ((rc = room_climb(h, &room, units, i)) != SHMDICT_OK)
            return rc;
    }
}

/* Find a live (unexpired) record. Returns slot index, -1, or ECORRUPT. */
int64_t lookup(shmdict_t *h, const char *key, size_t klen, uint64_t hash, rec_t **r_out,
                      uint64_t *now)
{
    int64_t ins, i = find_slot(h, key, klen, hash, &ins);
    if (i < 0)
        return i;
    rec_t *r = rec_at(h, h->slots[i]);
    if (r->expires) {
        if (!*now)
            *now = now_ns();
        if (r->expires <= *now)
            return -1;
    }
    if (__builtin_expect(h->hdr->flags & HF_EVICT, 0) && !(r->cls & CLS_REF))
        __atomic_fetch_or(&r->cls, CLS_REF, __ATOMIC_RELAXED); /* CLOCK: referenced (an unlogged hint) */
    *r_out = r;
    return i;
}

/* Call fn(record) for every live record; stops early when fn returns false.
 * Runs under the lock; O(index). */
int for_each_live(shmdict_t *h, bool (*fn)(rec_t *, void *), void *ctx)
{
    uint64_t now = h->hdr->n_ttl ? now_ns() : 0;
    for (uint64_t i = 0; i < h->cap; i++) {
        uint64_t s = h->slots[i];
        if (s <= SLOT_TOMB)
            continue;
        rec_t *r = rec_at(h, s);
        if (!r)
            return SHMDICT_ECORRUPT;
        if (expired(r, now))
            continue;
        if (!fn(r, ctx))
            break;
    }
    return SHMDICT_OK;
}

/* One batch of the cursor walk scan and export share, under the lock: the
 * walk is table.c's index_walk over this handle's index; visit returns < 0
 * to stop with that error. */
typedef struct locked_walk {
    shmdict_t *h;
    int (*visit)(shmdict_t *, uint64_t, void *);
    void *ctx;
} locked_walk_t;

static int locked_visit(uint64_t s, void *p)
{
    locked_walk_t *w = p;
    return w->visit(w->h, s, w->ctx);
}

int cursor_walk(shmdict_t *h, uint64_t cursor, int (*visit)(shmdict_t *, uint64_t, void *),
                bool (*done)(const void *), void *ctx, uint64_t *next)
{
    locked_walk_t w = {h, visit, ctx};
    int rc = index_walk(h->slots, h->cap, cursor, locked_visit, &w, done, ctx, next);
    return rc < 0 ? rc : SHMDICT_OK;
}

static bool count_one(rec_t *r, void *ctx)
{
    (void)r;
    ++*(int64_t *)ctx;
    return true;
}

/* Live records: O(1) when no TTL can have passed (exp_hint says no record
 * expires before it, so count is exact). Otherwise, with reclaim, every
 * expired record is reclaimed (each in its own transaction) and exp_hint
 * moves to the next deadline, so the next calls are O(1) again until it
 * passes; without reclaim (read-only callers), one counting pass. */
int64_t live_count(shmdict_t *h, bool reclaim)
{
    header_t *H = h->hdr;
    if (H->count > h->cap)
        return SHMDICT_ECORRUPT; /* a scribbled count must not come back as a negative "error code" */
    if (H->n_ttl == 0)
        return (int64_t)H->count;
    uint64_t now = now_ns();
    if (H->exp_hint && now < H->exp_hint)
        return (int64_t)H->count;
    if (reclaim) {
        int rc = reclaim_expired(h, now, true);
        FAULT(LEN_RECLAIMED);
        return rc < 0 ? rc : (int64_t)H->count;
    }
    int64_t n = 0;
    int rc = for_each_live(h, count_one, &n);
    return rc ? rc : n;
}

/* ---- eviction ---------------------------------------------------------------
 *
 * CLOCK over the index. Every keyed access that finds a live record (lookup)
 * sets its referenced bit (cls bit 7, an unlogged hint). When an allocation
 * finds no room even after reclaiming, compacting and growing (room_climb),
 * the hand sweeps the index from clock_hand: a referenced record loses its
 * bit and is passed over, the first unreferenced one is evicted (deleted in
 * its own transaction, counted). Each call evicts one victim; the caller
 * retries the allocation after each (its block serves an item of its class
 * or smaller at once, and holes of victims are gathered by compaction once
 * they are worth it). The key being stored (slot `keep`) is never a victim.
 * Bounded: two full turns of the hand, then EFULL (nothing evictable). */
int evict_some(shmdict_t *h, int64_t keep)
{
    header_t *H = h->hdr;
    uint64_t cap = h->cap, i = H->clock_hand % cap;
    for (uint64_t n = 0; n < 2 * cap + 1; n++, i = i + 1 == cap ? 0 : i + 1) {
        uint64_t s = h->slots[i];
        if (s <= SLOT_TOMB || (int64_t)i == keep)
            continue;
        rec_t *r = rec_at(h, s);
        if (!r)
            return SHMDICT_ECORRUPT;
        if (r->cls & CLS_REF) {
            __atomic_fetch_and(&r->cls, (uint8_t)~CLS_REF, __ATOMIC_RELAXED); /* second chance; a hint, unlogged */
            STORED();
            continue;
        }
        if (delete_at_op(h, i, r, EV_EVICT))
            return SHMDICT_ECORRUPT;
        FAULT(EVICT_DELETED);
        commit(h);
        H->clock_hand = i; /* the backward shift may have moved an entry into slot i */
        H->st_evictions++;
        STORED();
        return SHMDICT_OK;
    }
    H->clock_hand = i;
    return SHMDICT_EFULL;
}

/* ---- packing values ----------------------------------------------------------
 *
 * A packed value (get_many, items), little-endian, no padding: u8 type
 * (0 = missing), then 8 bytes for bool/int/float, or u32 vlen + bytes for
 * str/bytes (a list: its live elements, packed as in the record). */

/* Append r's value at buf+used if it fits; returns the new used. Every word
 * is read once and the value's bytes are bounded by its block, so a record
 * changed after rec_at checked it can garble a value, never reach past it. */
uint64_t pack_value(const rec_t *r, char *buf, size_t cap, uint64_t used)
{
    int type = r->type, cls = r->cls & 0x7f;
    uint64_t klen = r->klen, num = r->num.u;
    uint64_t n = (uint32_t)num, from = type == SHMDICT_T_LIST ? num >> 32 : klen;
    uint64_t room = type == SHMDICT_T_LIST ? list_cap(cls, klen) : class_units(cls) * UNIT - REC_HDR;
    if (!is_numeric(type) && (from > room || n > room - from))
        n = 0; /* out of its block: nothing is copied */
    uint64_t need = 1 + (is_numeric(type) ? 8 : 4 + n);
    if (used + need <= cap) {
        char *p = buf + used;
        *p++ = (char)type;
        if (is_numeric(type)) {
            memcpy(p, &num, 8);
        } else {
            uint32_t n32 = (uint32_t)n;
            memcpy(p, &n32, 4);
            if (n) /* a list: its live elements, packed as in the record */
                memcpy(p + 4, type == SHMDICT_T_LIST ? list_area(r) + from : r->data + from, n);
        }
    }
    return used + need;
}

/* A list record is well formed: its live part lies in the block's element
 * area, is a whole run of valid elements, and there are as many as the stored
 * count (a list with no element is deleted, never kept). Each element is at
 * least 9 bytes, so the walk takes at most vlen / 9 steps. */
const char *list_invalid(const rec_t *r)
{
    uint64_t cls_bytes = class_units(r->cls & 0x7f) * UNIT;
    if (cls_bytes < REC_HDR + pad8(r->klen) + 8)
        return "block too small for its key and count";
    uint64_t cap = list_cap(r->cls & 0x7f, r->klen), lo = r->num.s.reserved, len = r->num.s.vlen;
    if (lo > cap || len > cap - lo)
        return "live part lies outside its block";
    const char *area = list_area(r);
    uint64_t at = lo, hi = lo + len, n = 0, count;
    while (at < hi) {
        uint64_t sz = elem_check(area, lo, hi, at, true);
        if (!sz)
            return "malformed element (its length, type or trailing length)";
        at += sz;
        n++;
    }
    memcpy(&count, area - 8, 8);
    if (n == 0)
        return "no elements (an empty list is deleted, never kept)";
    if (n != count)
        return "stored element count differs from the elements";
    return NULL;
}
