/*
 * grow.c -- the dict's size, and growing it while processes use it.
 *
 * The header's `size` is the dict's size in bytes now; the index is the last
 * index_cap slots before it (layout.h), the arena ends where the index
 * begins. A growth makes the file longer, moves the index to the new end and
 * so gives the arena everything in between. Records never move, so a pointer
 * to one stays good across a growth.
 *
 * THE GROWTH STEP (grow_to; lock held, undo log empty):
 *   1. posix_fallocate the file to the new size. A full filesystem fails
 *      here (ENOSPC) with the dict unchanged; a file longer than `size` is a
 *      valid dict (the next growth reuses the room). resize() does this
 *      before it takes the lock, so the lock is not held while the kernel
 *      allocates pages.
 *   2. Map the new size in this process (see MAPPINGS).
 *   3. Logged: defrag_pending = DEFRAG_GROW, size, size_user; commit. From
 *      here the header describes the new geometry, whose index lies at the
 *      new end of the file and is not yet written.
 *   4. memmove the index to its new place. A slot's home depends on the tag
 *      and index_cap only (layout.h), never on where the index lies, so the
 *      moved index is valid as it is. The source is arena top above bump and
 *      old index, the destination lies above it: no record is touched.
 *   5. defrag_pending = 0.
 * A process killed in steps 1-3 leaves the old dict (the undo log takes the
 * header stores back); killed in 4-5 it leaves the new one: recover()
 * (guard.c) rebuilds the index at the new end from the records
 * (reindex_pass), which does not need the old index at all.
 *
 * MAPPINGS. Every handle maps the file once; when it sees a larger `size`
 * (map_sync, on every lock acquisition: one compare), it first tries to
 * extend its mapping in place (mremap without MAYMOVE), else maps the file
 * again at a new address, reserving twice the size (or up to max_size) of
 * address space so that the next growths only check the file's length.
 * The old mapping stays until the handle closes: another thread of the
 * process may still be reading through it (a futex word, the mutex, a
 * record), and both map the same pages of the same file. So a handle that
 * follows n doublings holds about log2 of them in mappings, and address
 * space, not memory, is what they cost.
 * The growth is checked against the file's real size (fstat): a header that
 * claims more than the file holds is corruption, never a mapping past its
 * end (SIGBUS).
 */
/* mremap: _GNU_SOURCE comes from the build (csrc/build.py) */
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>

#include "grow.h"
#include "fault.h"
#include "lock.h"
#include "seq.h"
#include "table.h"

struct old_map {
    struct old_map *next;
    char *base;
    uint64_t len;
};

static uint64_t max_bytes(const header_t *H)
{
    uint64_t max = __atomic_load_n(&H->max_size, __ATOMIC_RELAXED) / PAGE * PAGE;
    return max > MAX_BYTES ? MAX_BYTES : max;
}

/* Address space to reserve for a mapping that must cover `bytes`: twice as
 * much, or up to max_size, so that the growths after this one need no new
 * mapping (on 64-bit systems: address space is cheap there, and unused
 * pages of a mapping cost nothing). */
static uint64_t reserve_len(const shmdict_t *h, uint64_t bytes)
{
    if (sizeof(void *) < 8)
        return bytes;
    uint64_t len = bytes <= MAX_BYTES / 2 ? 2 * bytes : MAX_BYTES, max = max_bytes(h->hdr);
    return max > len ? max : len < bytes ? bytes : len;
}

/* Make the mapping cover `bytes` of the file (bytes > h->map_size). */
static int map_more(shmdict_t *h, uint64_t bytes)
{
    struct stat st;
    if (h->fd < 0 || fstat(h->fd, &st) != 0)
        return SHMDICT_ESYS;
    if ((uint64_t)st.st_size < bytes)
        return SHMDICT_ECORRUPT; /* the header claims more than the file holds */
    if (bytes <= h->map_len) {
        h->map_size = bytes; /* reserved by an earlier mapping: now backed by the file */
        return SHMDICT_OK;
    }
    uint64_t len = reserve_len(h, bytes);
    if (mremap(h->base, h->map_len, len, 0) != MAP_FAILED) {
        h->map_len = len; /* extended where it was: every pointer stays good */
        h->map_size = bytes;
        return SHMDICT_OK;
    }
    struct old_map *o = malloc(sizeof *o);
    if (!o) {
        errno = ENOMEM;
        return SHMDICT_ESYS;
    }
    char *p = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED, h->fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        free(o);
        errno = e;
        return SHMDICT_ESYS;
    }
    o->base = h->base;
    o->len = h->map_len;
    o->next = h->old_maps;
    h->old_maps = o;
    uint64_t aoff = (uint64_t)(h->arena - h->base), soff = (uint64_t)((char *)h->slots - h->base);
    h->arena = p + aoff;
    h->slots = (uint64_t *)(p + soff); /* still the old geometry until table_bind */
    h->hdr = (header_t *)p;
    h->base = p;
    h->map_size = bytes;
    h->map_len = len;
    return SHMDICT_OK;
}

int map_sync(shmdict_t *h)
{
    uint64_t size = __atomic_load_n(&h->hdr->size, __ATOMIC_RELAXED);
    if (size == h->size)
        return SHMDICT_OK;
    uint64_t aoff = (uint64_t)(h->arena - h->base);
    if (size % PAGE || size <= aoff || size < h->size0 || size > MAX_BYTES)
        return SHMDICT_ECORRUPT; /* a dict never shrinks below its size at creation */
    if (size > h->map_size) {
        int rc = map_more(h, size);
        if (rc)
            return rc;
    }
    h->size = size; /* smaller is fine too: a growth this handle saw was rolled back */
    return SHMDICT_OK;
}

int grow_to(shmdict_t *h, uint64_t bytes, uint64_t size_user, bool allocated)
{
    header_t *H = h->hdr;
    uint64_t old = h->size, cap = h->cap;
    if (H->ulog_n || bytes % PAGE || bytes <= old || bytes > MAX_BYTES)
        return SHMDICT_ECORRUPT;
    if (!allocated) { /* only the new part: [0, old) was reserved by creation and earlier growths */
        int e;
        do
            e = posix_fallocate(h->fd, (off_t)old, (off_t)(bytes - old));
        while (e == EINTR);
        if (e) {
            errno = e;
            return SHMDICT_ESYS;
        }
    }
    FAULT(GROW_ALLOCATED);
    about_to_block(); /* a new mapping and an O(index) move: the binding lets its other threads run */
    if (bytes > h->map_size) {
        int rc = map_more(h, bytes);
        if (rc)
            return rc;
        H = h->hdr;
    }
    seq_bulk(h); /* the index moves: lock-free readers retry (seq.c) */
    w64(h, &H->defrag_pending, DEFRAG_GROW);
    w64(h, &H->size, bytes);
    w64(h, &H->geo_check, geo_sum(H->index_cap, bytes));
    w64(h, &H->size_user, size_user);
    commit(h);
    FAULT(GROW_MARKED);
    memmove(h->base + bytes - cap * 8, h->base + old - cap * 8, cap * 8);
    STORED();
    FAULT(GROW_MOVED);
    h->size = bytes;
    if (table_bind(h) != SHMDICT_OK) {
        H->corrupt = 1;
        return SHMDICT_ECORRUPT;
    }
    atomic_signal_fence(memory_order_seq_cst);
    H->defrag_pending = 0;
    STORED();
    H->growths++;
    return SHMDICT_OK;
}

uint64_t units_ever(const shmdict_t *h)
{
    uint64_t max = max_bytes(h->hdr), aoff = (uint64_t)(h->arena - h->base);
    if (max <= h->size || max - aoff <= h->cap * 8)
        return h->units;
    uint64_t units = (max - aoff - h->cap * 8) / UNIT;
    return units > (1ull << 32) ? 1ull << 32 : units;
}

int grow_auto(shmdict_t *h, uint64_t units)
{
    header_t *H = h->hdr;
    uint64_t max = max_bytes(H), cur = h->size;
    if (max <= cur || H->ulog_n)
        return SHMDICT_EFULL;
    /* Double, or more if the item needs it (its block plus the index's share
     * of what it adds): a dict that grows by doubling pays O(1) per byte. */
    int c = class_of(units);
    uint64_t need = cur + (c < NCLASS ? class_units(c) : units) * UNIT * 2;
    uint64_t want = cur > max / 2 ? max : 2 * cur;
    if (need > want)
        want = (need + PAGE - 1) / PAGE * PAGE;
    if (want > max)
        want = max;
    return grow_to(h, want, want, false);
}

void maps_release(shmdict_t *h)
{
    munmap(h->base, h->map_len);
    for (struct old_map *o = h->old_maps, *next; o; o = next) {
        next = o->next;
        munmap(o->base, o->len);
        free(o);
    }
    h->old_maps = NULL;
}
