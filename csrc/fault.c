/*
 * fault.c -- named crash points for fault-injection tests (private).
 *
 * FAULT(id) in the table code compiles to one load and one predictable
 * branch. A test arms one point in its own process; the nth time an
 * operation reaches it, the process SIGKILLs itself, mid-operation and
 * holding the lock, exactly as a worker killed by gunicorn would die.
 * Armed with "store", the process dies right after the nth store into the
 * mapping instead (STORED(), fault.h), or with nth = 0 only counts them.
 */
#include <signal.h>
#include <string.h>

#include "fault.h"
#include "shmdict.h"

#define X_NAME(id, name) name,
static const char *const names[] = {FAULT_POINTS(X_NAME)};
#undef X_NAME

int fault_armed = -1;
static int fault_countdown;
uint64_t fault_stores_left;
static uint64_t fault_stores_seen;

/* "store": die right after the nth store into the mapping (n = 0: count
 * stores without dying, read back with shmdict_fault_stores). */
static void arm_stores(int nth)
{
    fault_stores_seen = 0;
    fault_stores_left = nth > 0 ? (uint64_t)nth : UINT64_MAX;
}

long long shmdict_fault_stores(void) { return (long long)fault_stores_seen; }

void fault_store_hit(void)
{
    fault_stores_seen++;
    if (--fault_stores_left == 0)
        for (;;)
            raise(SIGKILL);
}

int shmdict_fault_count(void) { return FP_COUNT; }

const char *shmdict_fault_name(int i)
{
    return i >= 0 && i < FP_COUNT ? names[i] : NULL;
}

int shmdict_fault_arm(const char *name, int nth)
{
    fault_armed = -1;
    fault_stores_left = 0;
    if (!name)
        return SHMDICT_OK;
    if (strcmp(name, "store") == 0) {
        arm_stores(nth);
        return SHMDICT_OK;
    }
    for (int i = 0; i < FP_COUNT; i++) {
        if (strcmp(names[i], name) == 0) {
            fault_countdown = nth > 0 ? nth : 1;
            fault_armed = i;
            return SHMDICT_OK;
        }
    }
    return SHMDICT_EINVAL;
}

void fault_hit(int point)
{
    if (point == fault_armed && --fault_countdown <= 0)
        for (;;)
            raise(SIGKILL);
}
