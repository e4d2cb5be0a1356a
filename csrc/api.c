/*
 * api.c -- the core's entry points as one table, for a second binding in the
 * same process.
 *
 * WHY. The CPython type (csrc/python/pytype.c, module shmdict._speed) must call the
 * very same core as the cffi module: one set of crash points, one TTL clock
 * shift, one handle per dict. Linking the core into both extensions would give
 * two copies whose statics disagree. So the cffi module, which holds the core,
 * hands out this table (shmdict_api), and the CPython type calls through it.
 * The table is filled here, where the compiler checks every pointer against
 * its prototype in shmdict.h.
 */
#include "shmdict.h"

static const shmdict_api_t API = {
    .size = sizeof(shmdict_api_t),
    .abi = SHMDICT_API_ABI,
    .get = shmdict_get,
    .pop = shmdict_pop,
    .set = shmdict_set,
    .del = shmdict_delete,
    .incr = shmdict_incr,
    .get_many = shmdict_get_many,
    .set_many = shmdict_set_many,
    .strerror = shmdict_strerror,
    .on_block = shmdict_on_block,
};

const shmdict_api_t *shmdict_api(void) { return &API; }
