/*
 * resize.c -- growing a dict on request: resize, the automatic-growth limit
 * (max_size), and the size now. The growth step and its crash protocol are
 * grow.c's; put() calls grow_auto when a dict with a max_size is full.
 */
#include <errno.h>
#include <fcntl.h>

#include "guard.h"
#include "grow.h"
#include "lock.h"

uint64_t shmdict_size(shmdict_t *h) { return __atomic_load_n(&h->hdr->size_user, __ATOMIC_RELAXED); }

int shmdict_resize(shmdict_t *h, uint64_t size)
{
    if (size < SHMDICT_MIN_SIZE || size > MAX_BYTES)
        return SHMDICT_EINVAL;
    uint64_t bytes = (size + PAGE - 1) / PAGE * PAGE;
    /* Space first, before the lock: a full filesystem fails here with the
     * dict unchanged, and other processes keep working while the kernel
     * allocates the pages. A longer file than the dict is a valid dict. */
    bool allocated = false;
    uint64_t now = __atomic_load_n(&h->hdr->size, __ATOMIC_RELAXED); /* a hint: checked under the lock */
    if (bytes > now) {
        int e; /* only the new part: creation and earlier growths reserved the rest */
        do
            e = posix_fallocate(h->fd, (off_t)now, (off_t)(bytes - now));
        while (e == EINTR);
        if (e) {
            errno = e;
            return SHMDICT_ESYS;
        }
        allocated = true;
    }
    int rc = lock_dict(h);
    if (rc)
        return rc;
    header_t *H = h->hdr;
    if (size < H->size_user) {
        rc = SHMDICT_EINVAL; /* dicts never shrink */
    } else if (bytes > h->size) {
        rc = grow_to(h, bytes, size, allocated);
    } else if (size > H->size_user) { /* within the page the dict already has */
        w64(h, &H->size_user, size);
        commit(h);
    }
    unlock_dict(h);
    return rc;
}

int shmdict_set_max_size(shmdict_t *h, uint64_t max_size)
{
    if (max_size && (max_size < SHMDICT_MIN_SIZE || max_size > MAX_BYTES))
        return SHMDICT_EINVAL;
    int rc = lock_dict(h);
    if (rc)
        return rc;
    /* a policy word, as hdr->flags: one aligned store under the lock */
    __atomic_store_n(&h->hdr->max_size, max_size, __ATOMIC_RELAXED);
    unlock_dict(h);
    return SHMDICT_OK;
}
