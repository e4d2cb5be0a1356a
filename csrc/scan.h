/*
 * scan.h -- what scan.c shares with the floor above: the glob matcher
 * (Python's fnmatch.fnmatchcase on UTF-8), used by watch.c to filter events.
 */
#ifndef SHMDICT_SCAN_H
#define SHMDICT_SCAN_H

#include <stdbool.h>
#include <stdint.h>

bool glob_match(const char *pat, uint64_t pn, const char *str, uint64_t sn);

#endif /* SHMDICT_SCAN_H */
