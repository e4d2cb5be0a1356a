/*
 * grow.h -- the dict's size: following the file as it grows (map_sync), the
 * growth step itself (grow_to, grow_auto) and the mappings a handle keeps
 * until it closes (grow.c).
 */
#ifndef SHMDICT_GROW_H
#define SHMDICT_GROW_H

#include "layout.h"

/* Bind the handle to hdr->size, mapping more of the file first if needed.
 * The caller binds the index (table_bind) next. OK; ECORRUPT for a size the
 * file cannot hold; ESYS (errno) when the process cannot map it. */
int map_sync(shmdict_t *h);
/* Grow to `bytes` (a page multiple above h->size), reporting `size_user`.
 * Lock held, log empty. `allocated`: the caller already reserved the space.
 * OK, or ESYS (ENOSPC: no room; nothing changed), ECORRUPT. */
int grow_to(shmdict_t *h, uint64_t bytes, uint64_t size_user, bool allocated);
/* put()'s growth step: grow toward hdr->max_size, at least doubling, so that
 * a block of `units` fits. EFULL when growth is off or at its limit. */
int grow_auto(shmdict_t *h, uint64_t units);
/* Arena units the dict could have at its automatic-growth limit (h->units if
 * none): an item larger than this can never be stored. */
uint64_t units_ever(const shmdict_t *h);
/* Unmap every mapping of the handle (shmdict_close). */
void maps_release(shmdict_t *h);

#endif /* SHMDICT_GROW_H */
