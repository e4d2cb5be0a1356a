/*
 * hash.h -- SipHash-1-3 of a key, keyed by the dict file's random seed
 * (hash.c). The high 32 bits are the key's index tag.
 */
#ifndef SHMDICT_HASH_H
#define SHMDICT_HASH_H

#include "layout.h"

uint64_t hash_key(const shmdict_t *h, const char *key, size_t klen);

#endif /* SHMDICT_HASH_H */
