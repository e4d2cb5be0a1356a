/*
 * repair.c -- re-initialising a dict's mutex, or a stripe's (seq.c), that
 * can never be taken again (shmdict_repair), for `shmdict repair NAME`.
 *
 * A robust mutex whose owner died and whose next locker did not mark it
 * consistent is ENOTRECOVERABLE for good: every lock attempt fails at once,
 * so no process holds it and none sleeps on it. Re-initialising it in place
 * is then safe against the processes still attached: their next lock
 * attempt finds a fresh mutex (one they may have been refused by a moment
 * before). Repairers are serialised by an OFD byte lock on the dict file
 * (one byte just below the named locks' range, flock.c), and each checks
 * the state again under it, so two repairs never re-initialise one mutex
 * twice over a locker that got in between. After re-initialising, the
 * repair takes the lock like any operation: a log the dead owner left is
 * rolled back, a pending bulk step redone (guard.c recover).
 *
 * A mutex that is merely held -- by a live process, a stopped one, or a
 * word naming a thread that does not exist (scribbled, or a checkpoint
 * restored elsewhere) -- is left alone unless `force` is given AND the
 * owner's thread id names no thread of this PID namespace: re-initialising a
 * mutex a live process holds would break mutual exclusion. Waiters sleeping
 * on such a word have bounded waits (lock_timeout) and retry on a fresh one.
 */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <limits.h>

#include "guard.h"
#include "lock.h"
#include "notify.h"
#include "seq.h"

#define REPAIR_BYTE ((1ull << 62) - 1) /* below flock.c's named-lock range */

/* The owner TID in the mutex word (glibc), 0 if none or unknown. */
static int64_t owner_tid(const pthread_mutex_t *mu)
{
#ifdef __GLIBC__
    uint32_t tid = (uint32_t)__atomic_load_n(&mu->__data.__lock, __ATOMIC_RELAXED) & 0x3fffffffu;
    return tid > 0 && tid <= 4194304u ? (int64_t)tid : 0;
#else
    (void)mu;
    return 0;
#endif
}

/* A fresh mutex in place, then a wake of anyone asleep on the old word (a
 * locker that found it "held" by a failed attempt): they take the new one. */
static int reinit(pthread_mutex_t *mu)
{
    int rc = lock_init_one(mu);
    futex((uint32_t *)(void *)mu, FUTEX_WAKE, INT_MAX, NULL);
    return rc;
}

static int hold_repair_byte(int fd, short type)
{
    struct flock fl = {0};
    fl.l_type = type;
    fl.l_whence = SEEK_SET;
    fl.l_start = (off_t)REPAIR_BYTE;
    fl.l_len = 1;
    int r;
    do
        r = fcntl(fd, F_OFD_SETLKW, &fl);
    while (r != 0 && errno == EINTR);
    return r;
}

/* One mutex: 0 usable (a dead owner's repair done, for the dict's; left to
 * the stripe's next taker, for a stripe's: guard.c, seq.c), 1 re-initialised,
 * ELOCK held by a live thread (or one that cannot be judged) and not forced.
 * glibc marks a mutex unrecoverable for good in its owner field; a failed
 * attempt may even leave its own TID in the lock word (and waiters behind
 * it), so the field, not a trylock, says whether it is unrecoverable. */
static int repair_one(shmdict_t *h, pthread_mutex_t *mu, bool dict, int force)
{
    int r = mutex_unrecoverable(mu) ? ENOTRECOVERABLE : pthread_mutex_trylock(mu);
    /* a stripe is held for a few dozen instructions at a time: look again */
    for (int i = 0; r == EBUSY && !dict && i < 100; i++) {
        usleep(1000);
        r = mutex_unrecoverable(mu) ? ENOTRECOVERABLE : pthread_mutex_trylock(mu);
    }
    if (r == 0) {
        pthread_mutex_unlock(mu); /* usable */
        return SHMDICT_OK;
    }
    if (r == EOWNERDEAD) {
        if (dict) {
            recover(h); /* as lock_dict does: repair, then mark it consistent */
            h->hdr->recoveries++;
        }
        int c = pthread_mutex_consistent(mu);
        if (dict) {
            seq_release(h); /* the stripes the recovery took */
            seq_publish(h);
        }
        if (c != 0)
            return SHMDICT_ELOCK;
        pthread_mutex_unlock(mu);
        return SHMDICT_OK;
    }
    if (r == ENOTRECOVERABLE)
        return reinit(mu) ? SHMDICT_ESYS : 1; /* nobody can hold it */
    if (r == EBUSY) {
        int64_t tid = owner_tid(mu);
        if (!force || tid == 0 || kill((pid_t)tid, 0) == 0 || errno != ESRCH)
            return SHMDICT_ELOCK; /* a live (or unknown) holder: never taken from it */
        return reinit(mu) ? SHMDICT_ESYS : 1; /* the word names a thread that does not exist */
    }
    return SHMDICT_ELOCK;
}

/* Returns 0: every lock was usable (a dead owner's work, if any, repaired as
 * by any operation); 1: one or more were re-initialised; ELOCK: one is held
 * by a live thread (or one that cannot be judged) and not forced; ESYS;
 * ECORRUPT from the recovery that follows. The dict's mutex first, then
 * every stripe's (seq.c): a stripe's that can never be taken would
 * otherwise refuse every operation on its keys, flush_all included. */
int shmdict_repair(shmdict_t *h, int force)
{
    if (hold_repair_byte(h->fd, F_WRLCK) != 0)
        return SHMDICT_ESYS;
    int repaired = 0, rc = repair_one(h, h->mu, true, force);
    if (rc == 1) {
        repaired = 1;
        rc = SHMDICT_OK;
    }
    for (uint32_t s = 0; s < NSTRIPES && rc == SHMDICT_OK; s++) {
        rc = repair_one(h, &stripe_at(h, s)->lock.mu, false, force);
        if (rc == 1) {
            repaired = 1;
            rc = SHMDICT_OK;
        }
    }
    if (rc == SHMDICT_OK) {
        rc = lock_dict_any(h); /* rolls back what the dead owner left, redoes a bulk step */
        if (rc == SHMDICT_OK)
            unlock_dict(h);
    }
    hold_repair_byte(h->fd, F_UNLCK);
    return rc ? rc : repaired;
}
