/*
 * guard.h -- taking and releasing the dict's lock, with the repair after a
 * dead holder (guard.c).
 */
#ifndef SHMDICT_GUARD_H
#define SHMDICT_GUARD_H

#include "layout.h"

int lock_dict(shmdict_t *h);
int lock_dict_any(shmdict_t *h); /* also hands over a table marked corrupt */
void unlock_dict(shmdict_t *h);
/* With the dict lock held, before the operation's first store: the lock of
 * the stripe of keys with this tag (mark: it writes them; seq.c), or of
 * every stripe, with the dict lock's deadline. ELOCKTIMEOUT, ELOCK (a mutex
 * that can never be taken): nothing taken that unlock_dict would not
 * release. ECORRUPT: had, but a stripe log no update wrote was found (and
 * cleared, the dict marked corrupt). */
int lock_stripe(shmdict_t *h, uint32_t tag, bool mark);
/* An update in place (kv.c) whose stripe stayed busy through seq_trylock's
 * spin: sleep for it without the dict lock, with the dict lock's deadline
 * (the binding may let its other threads run). What pthread returned:
 * 0, EOWNERDEAD, ETIMEDOUT... */
int stripe_wait(shmdict_t *h, uint32_t s);
int lock_stripes_all(shmdict_t *h);
/* lock_dict, then every stripe: before reading many records' values (items,
 * scan, dump, check: seq.c). */
int lock_dict_values(shmdict_t *h);
int recover(shmdict_t *h);
/* This thread's deadline (CLOCK_MONOTONIC ns, 0 = none) for every lock wait,
 * on top of the handle's lock timeout: push returns the previous one, which
 * the caller restores with pop. The effective deadline is the earlier one. */
uint64_t deadline_push(uint64_t abs_ns);
void deadline_pop(uint64_t prev);

#endif /* SHMDICT_GUARD_H */
