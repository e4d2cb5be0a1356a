/*
 * kv.h -- what kv.c offers the floors above it besides the public entry
 * points: a get that always takes the lock (watch.c's waiting protocol needs
 * the lock's ordering; shmdict_get may answer without it).
 */
#ifndef SHMDICT_KV_H
#define SHMDICT_KV_H

#include "layout.h"

int get_locked(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out, char *buf, size_t cap);

#endif /* SHMDICT_KV_H */
