/*
 * record.h -- what every family of operations shares (record.c): making
 * room for a block, storing a value (put), finding a live one (lookup), the CLOCK eviction step, walking
 * live records, packing values, and the inline helpers on a record's words,
 * its value and a list record's layout. BEGIN is the opening of every keyed
 * operation: validate the key, hash it, lock, look it up.
 */
#ifndef SHMDICT_RECORD_H
#define SHMDICT_RECORD_H

#include "grow.h"
#include "guard.h"
#include "hash.h"
#include "lock.h"
#include "seq.h"
#include "table.h"

/* A value to store: numeric types carry their 8 bytes in num; str/bytes
 * buf/len; a whole LIST (snapshot.c) its packed elements in buf/len and
 * their count in num. */
typedef struct value {
    int type;
    uint64_t num;
    const char *buf;
    size_t len;
} value_t;

/* Making room for a block (record.c): the escalation put() and list.c share. */
typedef struct room {
    int stage;       /* 0: exact class and bump only; 1: expired reclaimed, borrowing allowed */
    bool compacted;  /* a compaction pass ran since the last eviction */
    bool no_room;    /* a growth failed for want of space (an evicting dict evicts instead) */
    bool evicting;   /* the dict evicts, and this store allows it */
    uint64_t now;    /* the clock, once read */
} room_t;
#define ROOM_AGAIN 1 /* room_take grew the index: find the key's slot again */
void room_init(room_t *e, const shmdict_t *h, int flags, uint64_t now);
int room_take(shmdict_t *h, room_t *e, bool need_slot, uint64_t units, uint64_t *unit, int *cls);
int room_climb(shmdict_t *h, room_t *e, uint64_t units, int64_t keep);

int put(shmdict_t *h, const char *key, size_t klen, uint64_t hash, const value_t *v,
        uint64_t deadline, uint64_t now, int flags, uint32_t *ver_out);
int64_t lookup(shmdict_t *h, const char *key, size_t klen, uint64_t hash, rec_t **r_out,
               uint64_t *now);
void set_deadline(shmdict_t *h, rec_t *r, uint64_t deadline);
int evict_some(shmdict_t *h, int64_t keep);
int64_t live_count(shmdict_t *h, bool reclaim);
int for_each_live(shmdict_t *h, bool (*fn)(rec_t *, void *), void *ctx);
int cursor_walk(shmdict_t *h, uint64_t cursor, int (*visit)(shmdict_t *, uint64_t, void *),
                bool (*done)(const void *), void *ctx, uint64_t *next); /* scan and export's batches */
uint64_t pack_value(const rec_t *r, char *buf, size_t cap, uint64_t used);

static inline uint64_t *word8(rec_t *r) { return (uint64_t *)(void *)&r->klen; }

/* The 8-byte word at record offset 8, with a new type and version. */
static inline uint64_t word8_with(const rec_t *r, int type, uint32_t ver)
{
    rec_t t = *r;
    uint64_t w;
    t.type = (uint8_t)type;
    t.ver = ver;
    memcpy(&w, &t.klen, 8);
    return w;
}

static inline int check_key(size_t klen)
{
    return klen == 0 || klen > SHMDICT_MAX_KEY ? SHMDICT_EINVAL : SHMDICT_OK;
}

/* Lock and look the key up. A writer (mark) first takes the key's stripe
 * and makes it odd for lock-free readers (seq.c): every keyed operation that
 * may store opens with BEGIN; read-only ones with BEGIN_RO, which takes the
 * stripe only (an update in place must not be half way through the record). */
#define LOCK_LOOKUP(h, key, klen, hash, mark)                                  \
    int rc = lock_dict(h);                                                     \
    if (rc)                                                                    \
        return rc;                                                             \
    if ((rc = lock_stripe(h, (uint32_t)(hash >> 32), mark)) != SHMDICT_OK) {   \
        unlock_dict(h);                                                        \
        return rc;                                                             \
    }                                                                          \
    rec_t *r = NULL;                                                           \
    uint64_t now = 0;                                                          \
    int64_t i = lookup(h, key, klen, hash, &r, &now);                          \
    (void)i

#define BEGIN_MODE(h, key, klen, mark)                                         \
    if (check_key(klen))                                                       \
        return SHMDICT_EINVAL;                                                 \
    uint64_t hash = hash_key(h, key, klen);                                    \
    LOCK_LOOKUP(h, key, klen, hash, mark)

#define BEGIN(h, key, klen) BEGIN_MODE(h, key, klen, true)
#define BEGIN_RO(h, key, klen) BEGIN_MODE(h, key, klen, false)

/* Copy r's value out; returns its type. */
static inline int read_value(const rec_t *r, shmdict_out_t *out, char *buf, size_t cap)
{
    if (__builtin_expect(r->type == SHMDICT_T_LIST, 0))
        return SHMDICT_EWRONGTYPE; /* get on a list key */
    out->ver = r->ver;
    if (is_numeric(r->type)) {
        out->i = r->num.i;
        out->f = r->num.f;
    } else {
        /* read once, bounded by the block (see pack_value) */
        uint64_t n = r->num.s.vlen, klen = r->klen, room = class_units(r->cls & 0x7f) * UNIT - REC_HDR;
        if (klen > room || n > room - klen)
            n = 0;
        out->len = n;
        if (n <= cap && n)
            memcpy(buf, r->data + klen, n);
    }
    return r->type;
}

static inline int make_value(value_t *v, int type, int64_t i, double f, const char *val, size_t vlen)
{
    v->type = type;
    v->buf = val;
    v->len = 0;
    switch (type) {
    case SHMDICT_T_BOOL:
        v->num = i != 0;
        return SHMDICT_OK;
    case SHMDICT_T_INT:
        v->num = (uint64_t)i;
        return SHMDICT_OK;
    case SHMDICT_T_FLOAT:
        memcpy(&v->num, &f, 8);
        return SHMDICT_OK;
    case SHMDICT_T_STR:
    case SHMDICT_T_BYTES:
        if (vlen > UINT32_MAX)
            return SHMDICT_ETOOBIG;
        v->len = vlen;
        v->num = 0;
        return SHMDICT_OK;
    default:
        return SHMDICT_EINVAL;
    }
}

/* ---- a list record's layout (list.c) ---------------------------------------- */

static inline uint64_t pad8(uint64_t n) { return (n + 7) & ~7ull; }
static inline const char *list_area(const rec_t *r) { return r->data + pad8(r->klen) + 8; }
static inline uint64_t *list_count(rec_t *r) { return (uint64_t *)(void *)(r->data + pad8(r->klen)); }
/* Element area capacity of a block of class cls holding key length klen. */
static inline uint64_t list_cap(int cls, uint64_t klen)
{
    return class_units(cls) * UNIT - REC_HDR - pad8(klen) - 8;
}


/* Validate the element at area offset `at` (within [lo, hi) live bounds),
 * reading its size from the front (front = true) or from the back (`at` is
 * then the end). Returns its total size, or 0 if malformed. */
static inline uint64_t elem_check(const char *area, uint64_t lo, uint64_t hi, uint64_t at, bool front)
{
    uint32_t n, n2;
    if (hi - lo < 9)
        return 0;
    if (front) {
        memcpy(&n, area + at, 4);
        if ((uint64_t)n + 9 > hi - at)
            return 0;
        memcpy(&n2, area + at + 5 + n, 4);
    } else {
        memcpy(&n, area + at - 4, 4);
        if ((uint64_t)n + 9 > at - lo)
            return 0;
        memcpy(&n2, area + at - 9 - n, 4);
    }
    uint64_t start = front ? at : at - 9 - n;
    int type = (unsigned char)area[start + 4];
    if (n != n2 || type < SHMDICT_T_BOOL || type > SHMDICT_T_BYTES || (is_numeric(type) && n != 8))
        return 0;
    return (uint64_t)n + 9;
}

/* check() and every reader that hands a whole list out (record.c): NULL if
 * the list record is well formed, else what is wrong. O(elements). */
const char *list_invalid(const rec_t *r);

#endif /* SHMDICT_RECORD_H */
