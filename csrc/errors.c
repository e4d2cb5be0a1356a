/*
 * errors.c -- the message for each SHMDICT_E* return code.
 */
#include "shmdict.h"

const char *shmdict_strerror(int rc)
{
    switch (rc) {
    case SHMDICT_OK: return "success";
    case SHMDICT_ENOTFOUND: return "key not found";
    case SHMDICT_EFULL: return "dict is full: delete or expire items, grow it (resize(), or max_size= to grow by itself), or open it with evict=True to drop the least recently used items";
    case SHMDICT_ETOOBIG: return "item is larger than the dict can hold: grow the dict (resize(), or max_size=) or store a smaller item";
    case SHMDICT_ECORRUPT: return "dict is corrupt";
    case SHMDICT_ENOTNUM: return "value is not a number";
    case SHMDICT_EOVERFLOW: return "overflow: the result does not fit its type";
    case SHMDICT_ESYS: return "system call failed";
    case SHMDICT_EVERSION: return "not a shmdict file of a compatible layout version";
    case SHMDICT_ELOCK: return "the dict's lock is unusable (shmdict repair NAME re-initialises one that can never be taken again)";
    case SHMDICT_EINVAL: return "invalid argument";
    case SHMDICT_ERANGE: return "buffer too small";
    case SHMDICT_EEXIST: return "key exists";
    case SHMDICT_EWRONGTYPE: return "wrong kind of value: a list where a scalar is needed, or a scalar where a list is";
    case SHMDICT_ELOCKTIMEOUT: return "timed out waiting for the dict's lock";
    case SHMDICT_EUNTRUSTED: return "the file's owner or mode is not trusted";
    default: return "unknown error";
    }
}
