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
 * EOWNERDEAD. That locker repairs the table (recover(), guard.c) and only
 * then calls pthread_mutex_consistent(). glibc robust mutexes never spin, so
 * lock_dict() (guard.c) spins briefly on trylock before paying for a
 * FUTEX_WAIT. This file owns the mutex's initialisation and the log's writer
 * side; guard.c owns taking the lock and the recovery that replays the log.
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
 * EOWNERDEAD again and replays the same log. The count word also carries a
 * stamp (ulog_stamp below), so a scribbled count is refused, not replayed.
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
 * flush_all cannot log O(n) stores. It commits flush_pending = FLUSH_PENDING first, then
 * clears the table with idempotent plain stores, then clears the flag;
 * recovery re-runs the clear whenever it finds the flag set (redo). The
 * compaction pass and the index rebuild (table.c) and the growth (grow.c)
 * follow the same protocol with defrag_pending (which of them is pending).
 *
 * A log that fails validation (count or offset out of range) is never
 * guessed at: the table is marked corrupt, and every operation reports
 * SHMDICT_ECORRUPT until flush_all() re-initialises it.
 */
#include <errno.h>
#include <stddef.h>
#include <stdlib.h>

#include "lock.h"
#include "fault.h"

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

int lock_init(header_t *hdr)
{
    int rc = mutex_init(&hdr->lock.mu);
    for (int s = 0; s < NSTRIPES && rc == SHMDICT_OK; s++)
        rc = mutex_init(&hdr->stripes[s].lock.mu); /* seq.c */
    return rc;
}

int lock_init_one(pthread_mutex_t *mu) { return mutex_init(mu); }

/* The high half of ulog_n: gen's low half, which no store changes while an
 * operation's log is open (commit() empties the log, then bumps gen).
 * Recovery replays a log only if its stamp is gen's (layout.h): a scribbled
 * count never replays entries of an operation that has long committed. */
static inline uint64_t ulog_stamp(const header_t *H) { return (uint64_t)(uint32_t)H->gen << 32; }

static void log_word(shmdict_t *h, uint64_t *p)
{
    header_t *H = h->hdr;
    uint64_t n = ulog_len(H->ulog_n);
    if (n >= ULOG_MAX)
        abort(); /* a bug: an operation outgrew the log. Dying holding the lock rolls it back. */
    H->ulog[n].off = (uint64_t)((char *)p - h->base);
    STORED();
    H->ulog[n].old = *p;
    STORED();
    CBAR();
    H->ulog_n = ulog_stamp(H) | (n + 1);
    CBAR();
    STORED();
}

void w64(shmdict_t *h, uint64_t *p, uint64_t v)
{
    log_word(h, p);
    __atomic_store_n(p, v, __ATOMIC_RELAXED); /* aligned 8-byte store: never torn */
    STORED();
}

/* Save len bytes at p (a live record about to be rewritten in place). */
void wbackup(shmdict_t *h, void *p, uint64_t len)
{
    header_t *H = h->hdr;
    uint64_t n = ulog_len(H->ulog_n);
    if (n >= ULOG_MAX || len > BACKUP_MAX)
        abort(); /* a bug, as in log_word */
    memcpy(H->backup, p, len);
    STORED();
    H->ulog[n].off = (uint64_t)((char *)p - h->base) | ULOG_BACKUP;
    STORED();
    H->ulog[n].old = len;
    STORED();
    CBAR();
    H->ulog_n = ulog_stamp(H) | (n + 1);
    CBAR();
    STORED();
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
    STORED();
    H->gen++; /* unlogged: a lost increment after a crash is harmless */
    STORED();
}


/* The binding's hook (shmdict_on_block in shmdict.h), called right before a
 * thread blocks on the busy lock (guard.c) and before a bulk step that runs
 * in O(dict) under the lock: a compaction, an index or file growth, a flush,
 * a recovery (table.c, grow.c, guard.c). The CPython type releases the GIL
 * there, so other threads run meanwhile; the call then finishes without it.
 * Atomic: set once by a binding at import. */
static void (*_Atomic block_hook)(void);

void shmdict_on_block(void (*fn)(void)) { atomic_store(&block_hook, fn); }

void about_to_block(void)
{
    void (*fn)(void) = atomic_load_explicit(&block_hook, memory_order_relaxed);
    if (fn)
        fn();
}

/* Attach-time check of the mutex bytes: a file whose mutex is not a robust,
 * process-shared one (garbage, or made by another libc) would make
 * pthread_mutex_lock misbehave. glibc keeps the kind in __data.__kind.
 * The stripes' mutexes (seq.c) are checked alike. */
bool lock_looks_valid(const header_t *hdr)
{
#ifdef __GLIBC__
    pthread_mutex_t probe;
    if (mutex_init(&probe) != SHMDICT_OK)
        return false;
    int kind = probe.__data.__kind;
    pthread_mutex_destroy(&probe);
    for (int s = 0; s < NSTRIPES; s++)
        if (hdr->stripes[s].lock.mu.__data.__kind != kind)
            return false;
    return hdr->lock.mu.__data.__kind == kind;
#else
    (void)hdr;
    return true;
#endif
}
