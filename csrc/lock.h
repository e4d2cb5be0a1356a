/*
 * lock.h -- the dict's process-shared robust mutex and the undo log (lock.c).
 * Taking the lock and repairing after a dead holder is guard.c's job.
 */
#ifndef SHMDICT_LOCK_H
#define SHMDICT_LOCK_H

#include "layout.h"

/* A compiler barrier: orders the undo log's stores (see lock.c). */
#define CBAR() atomic_signal_fence(memory_order_seq_cst)

int lock_init(header_t *hdr);            /* at creation: the dict's mutex and every stripe's */
int lock_init_one(pthread_mutex_t *mu);  /* one of them again (repair.c) */
bool lock_looks_valid(const header_t *hdr);
void w64(shmdict_t *h, uint64_t *p, uint64_t v);
void wlog(shmdict_t *h, uint64_t *p);
void wbackup(shmdict_t *h, void *p, uint64_t len);
void commit(shmdict_t *h);
void about_to_block(void); /* before sleeping on the lock or a long bulk step: the binding's hook */

#endif /* SHMDICT_LOCK_H */
