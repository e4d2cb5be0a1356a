/*
 * notify.h -- change notification primitives (notify.c): the per-key futex
 * words and the event ring's writer side. Waiting and reading the ring are
 * watch.c's.
 */
#ifndef SHMDICT_NOTIFY_H
#define SHMDICT_NOTIFY_H

#include <linux/futex.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "layout.h"

enum { EV_SKIP = 0, EV_SET = 1, EV_DELETE = 2, EV_EXPIRE = 3, EV_EVICT = 4, EV_FLUSH = 5 };
/* Inside an operation's transaction: record the change of a key (appends to
 * the event ring, logged) and bump its bucket (woken after unlock). */
void note_change(shmdict_t *h, uint64_t hash, int op, const char *key, size_t klen);
void note_flush(shmdict_t *h);
/* Under the lock, before reading the ring (watch.c): register as a listener
 * for a while, and settle events counted while nobody listened. */
void ev_listen(shmdict_t *h);
void wake_pending(shmdict_t *h); /* after unlock: FUTEX_WAKE the buckets this thread bumped */
void wake_all(shmdict_t *h);     /* recovery: a dead writer may have bumped without waking */
void ring_repair(shmdict_t *h);  /* recovery: the event ring's tail_seq after a kill mid-append */
uint32_t next_ver(uint32_t v);
/* Updates in place under one stripe's lock (kv.c): may one run (nobody
 * listens to the ring)? Count its event in the stripe; after releasing the
 * stripe, wake the key's waiters. */
bool ev_listening(shmdict_t *h);
void note_in_place(shmdict_t *h, stripe_t *st);
void wake_in_place(shmdict_t *h, uint64_t hash);

static inline long futex(uint32_t *w, int op, uint32_t val, const struct timespec *ts)
{
    return syscall(SYS_futex, w, op, val, ts, NULL, 0);
}

/* ---- the event ring's entries (format: notify.c) ---------------------------- */

typedef struct ev {
    uint32_t size;
    uint8_t op;
    uint8_t zero;
    uint16_t klen;
    uint64_t seq;
    char key[];
} ev_t;

static inline uint64_t ev_size(size_t klen) { return (sizeof(ev_t) + klen + 15) & ~(uint64_t)15; }
static inline ev_t *ev_at(shmdict_t *h, uint64_t pos)
{
    return (ev_t *)(h->base + h->ev_off + pos % h->ev_cap);
}


#endif /* SHMDICT_NOTIFY_H */
