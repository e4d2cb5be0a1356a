/*
 * guard.c -- taking and releasing the dict's lock, and recover(): the repair
 * the next locker makes when pthread_mutex_lock() reports EOWNERDEAD (the
 * holder died) or finds a log left behind. Recovery replays the undo log
 * backwards (lock.c describes the log), re-derives the geometry (the dict
 * or its index may have grown: map_sync in grow.c, table_bind), then redoes
 * an interrupted bulk step -- a flush_all (table_reset), a compaction
 * (compact_pass), or an index rebuild
 * (reindex_pass) after an index growth or a growth of the dict, all table.c
 * -- and wakes every futex word (notify.c). This is the one place that knows
 * every bulk step: a new one adds its redo here.
 *
 * Every wait for the mutex has a deadline (see "bounded waits" below).
 *
 * unlock_dict() also gives an emptied dict its arena back in one piece
 * (a compaction of nothing: bump back to the bottom) before releasing the
 * mutex, and wakes waiters after it.
 */
#include <errno.h>
#include <stddef.h>
#include <time.h>

#include "guard.h"
#include "fault.h"
#include "grow.h"
#include "lock.h"
#include "notify.h"
#include "seq.h"
#include "table.h"

/* Is [off, off+8) a word that operations may log? Header table state or the
 * index/arena; never identity fields, the mutex or the log itself. */
static bool loggable(const shmdict_t *h, uint64_t off)
{
    if (off % 8)
        return false;
    if (off >= offsetof(header_t, gen) && off + 8 <= offsetof(header_t, ulog_n))
        return true;
    return off >= HEADER_SIZE && off <= h->size - 8;
}

/* Roll back the operation in flight, then redo an interrupted flush.
 * Returns OK, or ECORRUPT after marking the table corrupt. */
int recover(shmdict_t *h)
{
    /* First follow the size as the dead holder left it (grown, perhaps not
     * committed): every offset its log names lies inside it. */
    int rc = map_sync(h);
    if (rc == SHMDICT_ESYS)
        return rc; /* this process cannot map it: leave the repair to the next locker */
    about_to_block(); /* a redo may be a whole bulk step: let the binding's other threads run */
    header_t *H = h->hdr;
    uint64_t w = H->ulog_n, n = ulog_len(w);
    /* Lock-free readers (seq.c): the dead holder's odd words become ours, and
     * they all retry or take the lock until the repair is released at unlock. */
    seq_adopt(h);
    seq_bulk(h);
    if (rc || n > ULOG_MAX || (n && w >> 32 != (uint32_t)H->gen))
        goto bad; /* a count the operation's stamp does not vouch for (layout.h) */
    if ((H->flush_pending && H->flush_pending != FLUSH_PENDING) ||
        (H->defrag_pending && (H->defrag_pending & ~0xffull) != PENDING_TAG))
        goto bad; /* a pending word nobody wrote: obeying it could empty the dict */
    for (uint64_t k = 0; k < n; k++) {
        uint64_t off = H->ulog[k].off & ~ULOG_BACKUP, len = H->ulog[k].old;
        if (H->ulog[k].off & ULOG_BACKUP) {
            if (len > BACKUP_MAX || off < (uint64_t)(h->arena - h->base) || off > h->size || len > h->size - off)
                goto bad;
        } else if (!loggable(h, off)) {
            goto bad;
        }
    }
    for (uint64_t k = n; k-- > 0;) {
        uint64_t off = H->ulog[k].off & ~ULOG_BACKUP;
        if (H->ulog[k].off & ULOG_BACKUP)
            memcpy(h->base + off, H->backup, H->ulog[k].old);
        else
            __atomic_store_n((uint64_t *)(h->base + off), H->ulog[k].old, __ATOMIC_RELAXED);
        STORED();
        if (k == n / 2)
            FAULT(RECOVER_RESTORED);
    }
    CBAR();
    H->ulog_n = 0;
    CBAR();
    STORED();
    if (map_sync(h) != SHMDICT_OK) /* the replay may have taken a growth back */
        goto bad;
    if (!H->flush_pending && table_bind(h) != SHMDICT_OK)
        goto bad; /* (a pending flush resets the index itself) */
    if (H->flush_pending) {
        table_reset(h);
        H->corrupt = 0; /* what flush_all clears: its redo clears it too */
        STORED();
        CBAR();
        H->flush_pending = 0;
        STORED();
    }
    if (H->defrag_pending) {
        uint64_t step = H->defrag_pending;
        /* a growth's redo is an index rebuild at the file's new end (grow.c) */
        rc = step == DEFRAG_COMPACT ? compact_pass(h)
           : step == DEFRAG_REINDEX || step == DEFRAG_GROW ? reindex_pass(h)
           : SHMDICT_ECORRUPT;
        if (rc != SHMDICT_OK)
            goto bad;
        CBAR();
        H->defrag_pending = 0;
        STORED();
    }
    ring_repair(h); /* a kill while the tail moved (notify.c) */
    wake_all(h); /* the dead writer may have bumped futex words without waking */
    /* O(1) sanity: the allocator and counters must be in range. */
    if (H->bump < FIRST_UNIT || H->bump > h->units || H->count > h->cap || H->tombs > h->cap)
        goto bad;
    return SHMDICT_OK;
bad:
    H->corrupt = 1;
    return SHMDICT_ECORRUPT;
}


/* ---- bounded waits ----------------------------------------------------------
 *
 * A stopped holder (SIGSTOP, a debugger, a frozen cgroup) is alive, so the
 * kernel never marks the mutex OWNER_DIED, and a scribbled mutex word names a
 * holder that will never unlock. Every wait for the lock therefore has a
 * deadline: the handle's lock timeout (shmdict_set_lock_timeout) and this
 * thread's call deadline (shmdict_deadline: wait/watch/get_or_set bound their
 * own lock waits by their own timeouts), whichever comes first. The wait is
 * pthread_mutex_clocklock on CLOCK_MONOTONIC, which keeps the robust
 * semantics: EOWNERDEAD is handled below exactly as after pthread_mutex_lock.
 * A timed-out operation returns ELOCKTIMEOUT before touching the table.
 */
static __thread uint64_t call_deadline; /* CLOCK_MONOTONIC ns; 0 = none */
static __thread int64_t last_holder;    /* TID seen at this thread's last timeout */

static uint64_t mono_now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

uint64_t deadline_push(uint64_t abs_ns)
{
    uint64_t prev = call_deadline;
    if (abs_ns && (!prev || abs_ns < prev))
        call_deadline = abs_ns;
    return prev;
}

void deadline_pop(uint64_t prev) { call_deadline = prev; }

uint64_t shmdict_deadline(uint64_t abs_ns)
{
    uint64_t prev = call_deadline;
    call_deadline = abs_ns;
    return prev;
}

void shmdict_set_lock_timeout(shmdict_t *h, double seconds)
{
    if (!(seconds >= 0)) /* negative or NaN: no bound */
        h->lock_timeout_ns = 0;
    else if (seconds > 1e9) /* ~31 years: no bound in practice, and no overflow below */
        h->lock_timeout_ns = 0;
    else
        h->lock_timeout_ns = (uint64_t)(seconds * 1e9) + 1; /* 0 s still means "try once" */
}

int64_t shmdict_lock_holder(void) { return last_holder; }

/* The holder's thread id from the mutex word, 0 if it does not look like one.
 * glibc stores the owner's TID in the robust futex word (FUTEX_TID_MASK); the
 * word lives in a file anyone with write access may scribble on, so it is a
 * hint for a message, range-checked against the kernel's PID_MAX_LIMIT. */
static int64_t holder_tid(const pthread_mutex_t *mu)
{
#ifdef __GLIBC__
    uint32_t word = (uint32_t)__atomic_load_n(&mu->__data.__lock, __ATOMIC_RELAXED);
    uint32_t tid = word & 0x3fffffffu; /* FUTEX_TID_MASK */
    return tid > 0 && tid <= 4194304u ? (int64_t)tid : 0;
#else
    (void)mu;
    return 0;
#endif
}

/* The wait itself, after spinning: untimed, or until the earlier deadline. */
static int lock_wait(shmdict_t *h, pthread_mutex_t *mu)
{
    uint64_t now = mono_now_ns(), deadline = call_deadline;
    if (h->lock_timeout_ns && (!deadline || now + h->lock_timeout_ns < deadline))
        deadline = now + h->lock_timeout_ns;
    if (!deadline)
        return pthread_mutex_lock(mu);
    int r;
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 30))
    struct timespec ts = {(time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u)};
    do
        r = pthread_mutex_clocklock(mu, CLOCK_MONOTONIC, &ts);
    while (r == EINTR);
#else
    /* No clocklock (musl, older glibc): timedlock measures CLOCK_REALTIME, so
     * the remaining time is moved onto it; a wall-clock step during the wait
     * then lengthens or shortens this one bound, nothing else. */
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t rt = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec + (deadline > now ? deadline - now : 0);
    ts.tv_sec = (time_t)(rt / 1000000000u);
    ts.tv_nsec = (long)(rt % 1000000000u);
    do
        r = pthread_mutex_timedlock(mu, &ts);
    while (r == EINTR);
#endif
    if (r == ETIMEDOUT)
        last_holder = holder_tid(mu);
    return r;
}

/* O(1), on every acquisition: the header counters are in range (one cache
 * line). A scribbled counter makes operations fail with ECORRUPT instead of
 * wrapping below zero or reporting a full dict; check() says which one, and
 * flush_all() (which takes the lock with allow_corrupt) resets them. */
static bool counters_sane(const shmdict_t *h)
{
    const header_t *H = h->hdr;
    return H->count <= h->cap && H->tombs <= h->cap - H->count && H->n_ttl <= H->count &&
           H->bump >= FIRST_UNIT && H->bump <= h->units && H->used_bytes <= H->bump * UNIT &&
           flags_ok(H->flags) && H->geo_check == geo_sum(H->index_cap, H->size);
}

/* Release the mutex on a path that did not go through unlock_dict: the
 * marks a recovery adopted are released too (seq.c). */
static void unlock_raw(shmdict_t *h)
{
    seq_release(h);
    seq_publish(h);
    pthread_mutex_unlock(h->mu);
}

/* Take the lock; repair after a dead holder. With allow_corrupt (flush_all,
 * check), a table marked corrupt is still handed over. */
static int lock_impl(shmdict_t *h, bool allow_corrupt)
{
    header_t *H = h->hdr;
    pthread_mutex_t *mu = h->mu; /* always at one address: see layout.h */
    int r = pthread_mutex_trylock(mu);
    for (int spin = 0; r == EBUSY && spin < 200; spin++) {
        cpu_relax();
        r = pthread_mutex_trylock(mu);
    }
    if (r == EBUSY) {
        struct timespec t0, t1; /* only a contended acquisition pays for the clock reads */
        about_to_block();
        clock_gettime(CLOCK_MONOTONIC, &t0);
        r = lock_wait(h, mu);
        if (r == ETIMEDOUT)
            return SHMDICT_ELOCKTIMEOUT; /* nothing touched: the lock was never ours */
        clock_gettime(CLOCK_MONOTONIC, &t1);
        if (r == 0 || r == EOWNERDEAD) {
            H->st_lock_waits++;
            H->st_lock_wait_ns += (uint64_t)((t1.tv_sec - t0.tv_sec) * 1000000000ll + (t1.tv_nsec - t0.tv_nsec));
        }
    }
    int rc = SHMDICT_OK;
    if (r == EOWNERDEAD) {
        rc = recover(h);
        H->recoveries++;
        if (pthread_mutex_consistent(mu)) {
            unlock_raw(h);
            wake_pending(h); /* recover() woke every word: never leave that to another dict's unlock */
            return SHMDICT_ELOCK;
        }
    } else if (r != 0) {
        return SHMDICT_ELOCK;
    } else if (__builtin_expect(H->ulog_n != 0 || H->flush_pending != 0 || H->defrag_pending != 0, 0)) {
        rc = recover(h); /* a holder that vanished without the kernel's help (e.g. checkpoint/restore) */
    }
    /* Another process grew the dict or its index: follow (grow.c, table.c).
     * Unmappable here (ESYS): this call fails, the dict is fine. A size or
     * index_cap that does not fit the file is corruption. */
    if (rc != SHMDICT_ESYS && __builtin_expect(h->size != H->size || h->cap != H->index_cap, 0)) {
        int g = H->geo_check == geo_sum(H->index_cap, H->size) ? map_sync(h) : SHMDICT_ECORRUPT;
        if (g == SHMDICT_OK)
            g = table_bind(h);
        if (g == SHMDICT_ECORRUPT)
            H->corrupt = 1; /* flush_all repairs it: table_reset binds to this handle's size */
        if (g == SHMDICT_ESYS)
            rc = g;
    }
    if (rc == SHMDICT_ESYS) {
        int e = errno;
        unlock_raw(h);
        wake_pending(h);
        errno = e;
        return SHMDICT_ESYS; /* recovery, if it was due, is left to the next locker */
    }
    /* statistics, kept in the process (seq.c): no shared line written for it */
    __atomic_store_n(&h->st_locks, __atomic_load_n(&h->st_locks, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
    if (__builtin_expect(H->corrupt == 0 && !counters_sane(h), 0))
        H->corrupt = 1; /* kept until flush_all: lock-free readers then ask the lock too (seq.c) */
    if (__builtin_expect(H->corrupt != 0, 0) && !allow_corrupt) {
        unlock_raw(h);
        wake_pending(h); /* this thread's wake mask names this dict's words: wake them here */
        return SHMDICT_ECORRUPT;
    }
    return SHMDICT_OK;
}

int lock_dict(shmdict_t *h) { return lock_impl(h, false); }

int stripe_wait(shmdict_t *h, uint32_t s)
{
    about_to_block();
    return lock_wait(h, &stripe_at(h, s)->lock.mu);
}

/* A stripe's lock for the dict lock's holder, at the start of an operation
 * (before its first store), with the dict lock's deadline: a stopped updater
 * makes the call time out like a stopped dict-lock holder does. */
static int take_stripe(shmdict_t *h, uint32_t s)
{
    if (h->seq_held >> s & 1)
        return SHMDICT_OK;
    int r = seq_trylock(h, s);
    if (r == EBUSY && (r = stripe_wait(h, s)) == ETIMEDOUT)
        return SHMDICT_ELOCKTIMEOUT;
    return seq_took(h, s, r);
}

/* mark: the operation writes the stripe (seq.c seq_mark), else it only reads it. */
int lock_stripe(shmdict_t *h, uint32_t tag, bool mark)
{
    int rc = take_stripe(h, seq_stripe_of(tag));
    if (rc == SHMDICT_OK && mark)
        seq_mark(h, tag);
    return rc;
}

int lock_stripes_all(shmdict_t *h)
{
    int bad = SHMDICT_OK;
    for (uint32_t s = 0; s < NSTRIPES; s++) {
        int rc = take_stripe(h, s);
        if (rc == SHMDICT_ECORRUPT)
            bad = rc; /* (the stripe is had, its bad log cleared: take the others too) */
        else if (rc)
            return rc;
    }
    return bad;
}

int lock_dict_values(shmdict_t *h)
{
    int rc = lock_dict(h);
    if (rc == SHMDICT_OK && (rc = lock_stripes_all(h)) != SHMDICT_OK)
        unlock_dict(h);
    return rc;
}
int lock_dict_any(shmdict_t *h) { return lock_impl(h, true); }

void unlock_dict(shmdict_t *h)
{
    header_t *H = h->hdr;
    /* An emptied dict gets its whole arena back in one piece: without this,
     * free blocks scattered in size classes would serve the next fill worse
     * than a fresh dict. Every operation has committed by now (log empty). */
    if (__builtin_expect(H->count == 0 && H->frees_since_compact != 0 && H->ulog_n == 0, 0))
        compact(h);
    seq_release(h); /* lock-free readers: the writes are done (seq.c) */
    seq_publish(h);
    pthread_mutex_unlock(h->mu);
    wake_pending(h); /* FUTEX_WAKE only where someone waits, and outside the lock */
}
