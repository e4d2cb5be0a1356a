/*
 * lock.c -- the dict's process-shared robust mutex, and the undo log that
 * makes every operation all-or-nothing when its process dies mid-way.
 *
 * THE LOCK
 * One pthread mutex in the header: PTHREAD_PROCESS_SHARED, ROBUST, type
 * NORMAL, no priority inheritance (PI mutexes find owners by TID in the
 * waiter's PID namespace, which is wrong across containers). When a holder
 * dies -- SIGKILL included -- the kernel walks its robust list, marks the
 * futex OWNER_DIED and wakes a waiter, whose pthread_mutex_lock() returns
 * EOWNERDEAD. That locker repairs the table (recover()) and only then calls
 * pthread_mutex_consistent(). glibc robust mutexes never spin, so lock_dict()
 * spins briefly on trylock before paying for a FUTEX_WAIT.
 *
 * THE UNDO LOG
 * Every store to reachable shared state -- an index slot, a counter, the bump
 * pointer, a free-list head or link, a live record's number, type word or
 * expiry -- goes through w64(): it appends (offset, old value) to the log in
 * the header, makes the entry count visible, and only then stores the new
 * value. Stores into a block that is not yet published (a freshly allocated
 * record being filled) are not logged: rolling back the allocator makes those
 * bytes garbage again. commit() clears the log: from that instant the
 * operation is applied.
 *
 *   writer:   log[n] = {off, *p}  ->  n = n + 1  ->  *p = v  ...  n = 0
 *   recovery: for k = n-1 .. 0:  word(log[k].off) = log[k].old;  n = 0
 *
 * Only compiler barriers order these: the observer of a half-done operation
 * is a later process that took the lock after the writer died, and the
 * kernel's exit path plus the mutex hand-off order all of the dead writer's
 * stores before the recoverer's loads. A crash between the log append and
 * the count update leaves an entry beyond n, which is ignored; a crash between
 * the count update and the store restores a value equal to the current one.
 * Recovery is idempotent: if the recoverer dies too, the next locker gets
 * EOWNERDEAD again and replays the same log.
 *
 * REWRITING A RECORD IN PLACE
 * When a new value fits the old record's block, the record is rewritten where
 * it is instead of moving (this is what lets a full dict take an update of
 * the same size). wbackup() first copies the old record, up to BACKUP_MAX
 * bytes, into the header's backup area, then appends a log entry flagged
 * ULOG_BACKUP whose `old` field is the length; recovery copies the bytes
 * back. One backup per operation: the area holds one record.
 *
 * BULK OPERATIONS
 * flush_all cannot log O(n) stores. It commits flush_pending = 1 first, then
 * clears the table with idempotent plain stores, then clears the flag;
 * recovery re-runs the clear whenever it finds the flag set (redo). The
 * defrag pass (table.c) follows the same protocol with defrag_pending.
 *
 * A log that fails validation (count or offset out of range) is never
 * guessed at: the table is marked corrupt, and every operation reports
 * SHMDICT_ECORRUPT until flush_all() re-initialises it.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <time.h>

#include "layout.h"

#define CBAR() atomic_signal_fence(memory_order_seq_cst)

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

static int mutex_init(pthread_mutex_t *mu)
{
    pthread_mutexattr_t a;
    int r = pthread_mutexattr_init(&a);
    if (!r) r = pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    if (!r) r = pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (!r) r = pthread_mutexattr_settype(&a, PTHREAD_MUTEX_NORMAL);
    if (!r) r = pthread_mutexattr_setprotocol(&a, PTHREAD_PRIO_NONE);
    if (!r) r = pthread_mutex_init(mu, &a);
    pthread_mutexattr_destroy(&a);
    if (r) {
        errno = r;
        return SHMDICT_ESYS;
    }
    return SHMDICT_OK;
}

int lock_init(header_t *hdr) { return mutex_init(&hdr->lock.mu); }

static void log_word(shmdict_t *h, uint64_t *p)
{
    header_t *H = h->hdr;
    uint64_t n = H->ulog_n;
    if (n >= ULOG_MAX)
        abort(); /* a bug: an operation outgrew the log. Dying holding the lock rolls it back. */
    H->ulog[n].off = (uint64_t)((char *)p - h->base);
    H->ulog[n].old = *p;
    CBAR();
    H->ulog_n = n + 1;
    CBAR();
}

void w64(shmdict_t *h, uint64_t *p, uint64_t v)
{
    log_word(h, p);
    __atomic_store_n(p, v, __ATOMIC_RELAXED); /* aligned 8-byte store: never torn */
}

/* Save len bytes at p (a live record about to be rewritten in place). */
void wbackup(shmdict_t *h, void *p, uint64_t len)
{
    header_t *H = h->hdr;
    uint64_t n = H->ulog_n;
    if (n >= ULOG_MAX || len > BACKUP_MAX)
        abort(); /* a bug, as in log_word */
    memcpy(H->backup, p, len);
    H->ulog[n].off = (uint64_t)((char *)p - h->base) | ULOG_BACKUP;
    H->ulog[n].old = len;
    CBAR();
    H->ulog_n = n + 1;
    CBAR();
}

/* Log a word that is about to be overwritten by unlogged stores (a block
 * popped from a free list is filled in place; its link and type words must
 * come back if the operation is rolled back). */
void wlog(shmdict_t *h, uint64_t *p)
{
    log_word(h, p);
}

void commit(shmdict_t *h)
{
    header_t *H = h->hdr;
    CBAR();
    H->ulog_n = 0;
    CBAR();
    H->gen++; /* unlogged: a lost increment after a crash is harmless */
}

/* Is [off, off+8) a word that operations may log? Header table state or the
 * index/arena; never identity fields, the mutex or the log itself. */
static bool loggable(const shmdict_t *h, uint64_t off)
{
    if (off % 8)
        return false;
    if (off >= offsetof(header_t, gen) && off + 8 <= offsetof(header_t, ulog_n))
        return true;
    return off >= HEADER_SIZE && off <= h->map_size - 8;
}

/* Roll back the operation in flight, then redo an interrupted flush.
 * Returns OK, or ECORRUPT after marking the table corrupt. */
int recover(shmdict_t *h)
{
    header_t *H = h->hdr;
    uint64_t n = H->ulog_n;
    if (n > ULOG_MAX)
        goto bad;
    for (uint64_t k = 0; k < n; k++) {
        uint64_t off = H->ulog[k].off & ~ULOG_BACKUP, len = H->ulog[k].old;
        if (H->ulog[k].off & ULOG_BACKUP) {
            if (len > BACKUP_MAX || off < (uint64_t)(h->arena - h->base) || off > h->map_size || len > h->map_size - off)
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
        if (k == n / 2)
            FAULT(RECOVER_RESTORED);
    }
    CBAR();
    H->ulog_n = 0;
    CBAR();
    if (H->flush_pending) {
        table_reset(h);
        CBAR();
        H->flush_pending = 0;
    }
    if (H->defrag_pending) {
        if (defrag_pass(h) != SHMDICT_OK)
            goto bad;
        CBAR();
        H->defrag_pending = 0;
    }
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

uint64_t mono_now_ns(void)
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
    struct timespec ts = {(time_t)(deadline / 1000000000u), (long)(deadline % 1000000000u)};
    int r;
    do
        r = pthread_mutex_clocklock(mu, CLOCK_MONOTONIC, &ts);
    while (r == EINTR);
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
           H->bump >= FIRST_UNIT && H->bump <= h->units && H->used_bytes <= H->bump * UNIT;
}

/* Take the lock; repair after a dead holder. With allow_corrupt (flush_all,
 * check), a table marked corrupt is still handed over. */
static int lock_impl(shmdict_t *h, bool allow_corrupt)
{
    header_t *H = h->hdr;
    pthread_mutex_t *mu = &H->lock.mu;
    int r = pthread_mutex_trylock(mu);
    for (int spin = 0; r == EBUSY && spin < 200; spin++) {
        cpu_relax();
        r = pthread_mutex_trylock(mu);
    }
    if (r == EBUSY) {
        struct timespec t0, t1; /* only a contended acquisition pays for the clock reads */
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
    if (r == EOWNERDEAD) {
        recover(h);
        H->recoveries++;
        if (pthread_mutex_consistent(mu)) {
            pthread_mutex_unlock(mu);
            return SHMDICT_ELOCK;
        }
    } else if (r != 0) {
        return SHMDICT_ELOCK;
    } else if (__builtin_expect(H->ulog_n != 0 || H->flush_pending != 0 || H->defrag_pending != 0, 0)) {
        recover(h); /* a holder that vanished without the kernel's help (e.g. checkpoint/restore) */
    }
    H->st_locks++; /* statistics: plain stores under the lock */
    if (__builtin_expect(H->corrupt != 0 || !counters_sane(h), 0) && !allow_corrupt) {
        pthread_mutex_unlock(mu);
        return SHMDICT_ECORRUPT;
    }
    return SHMDICT_OK;
}

int lock_dict(shmdict_t *h) { return lock_impl(h, false); }
int lock_dict_any(shmdict_t *h) { return lock_impl(h, true); }

void unlock_dict(shmdict_t *h)
{
    header_t *H = h->hdr;
    /* An emptied dict gets its whole arena back in one piece: without this,
     * free blocks scattered in size classes would serve the next fill worse
     * than a fresh dict. Every operation has committed by now (log empty). */
    if (__builtin_expect(H->count == 0 && H->frees_since_defrag != 0 && H->ulog_n == 0, 0))
        defrag(h);
    pthread_mutex_unlock(&H->lock.mu);
    wake_pending(h); /* FUTEX_WAKE only where someone waits, and outside the lock */
}

/* Attach-time check of the mutex bytes: a file whose mutex is not a robust,
 * process-shared one (garbage, or made by another libc) would make
 * pthread_mutex_lock misbehave. glibc keeps the kind in __data.__kind. */
bool lock_looks_valid(const header_t *hdr)
{
#ifdef __GLIBC__
    pthread_mutex_t probe;
    if (mutex_init(&probe) != SHMDICT_OK)
        return false;
    int kind = probe.__data.__kind;
    pthread_mutex_destroy(&probe);
    return hdr->lock.mu.__data.__kind == kind;
#else
    (void)hdr;
    return true;
#endif
}
