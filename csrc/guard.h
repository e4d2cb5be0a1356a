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

#endif /* SHMDICT_GUARD_H */
