/*
 * flock.c -- named locks: open-file-description byte locks on the dict's
 * file, at an offset derived from the name's hash. Separate from the table
 * and its mutex.
 */
#include <errno.h>
#include <fcntl.h>
#include <string.h>

#include "hash.h"

/* ---- named locks: open-file-description locks on the dict file -------------------
 *
 * A named lock is a one-byte fcntl(F_OFD_SETLK) write lock on the dict's
 * file at offset 2^62 + (SipHash of the name mod 2^62): far beyond the file's
 * end, so it never interacts with the data, and keyed by the file's own seed
 * so every process agrees. The kernel drops it when the holder's file
 * description is closed -- including when the holder dies -- so it is robust
 * by construction, and it is separate from the table mutex. */
int64_t shmdict_lock_offset(shmdict_t *h, const char *name, size_t len)
{
    return (int64_t)((1ull << 62) | (hash_key(h, name, len) & ((1ull << 62) - 1)));
}

/* op 1: try to take the lock on fd at off; 0: release it. Returns OK, 1 if
 * another description holds it, or ESYS (errno set; EINTR: call again). */
int shmdict_flock(int fd, int64_t off, int op)
{
    struct flock fl;
    memset(&fl, 0, sizeof fl);
    fl.l_type = op ? F_WRLCK : F_UNLCK;
    fl.l_whence = SEEK_SET;
    fl.l_start = off;
    fl.l_len = 1;
    if (fcntl(fd, F_OFD_SETLK, &fl) == 0)
        return SHMDICT_OK;
    if (op && (errno == EAGAIN || errno == EACCES))
        return 1;
    return SHMDICT_ESYS;
}
