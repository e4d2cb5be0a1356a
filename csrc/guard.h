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
int recover(shmdict_t *h);
/* This thread's deadline (CLOCK_MONOTONIC ns, 0 = none) for every lock wait,
 * on top of the handle's lock timeout: push returns the previous one, which
 * the caller restores with pop. The effective deadline is the earlier one. */
uint64_t deadline_push(uint64_t abs_ns);
void deadline_pop(uint64_t prev);

#endif /* SHMDICT_GUARD_H */
