/*
 * fault.h -- crash points (fault.c), of two kinds:
 *  - named: FAULT(id) marks a step of a mutating operation at which a test
 *    can have the process SIGKILL itself (tests/test_crash_sweep.py);
 *  - every store: STORED() follows each store into the mapping (a logged
 *    word, a log entry, a plain store of a bulk pass, a memcpy/memmove/memset
 *    into the file), so a test armed with "store" dies right after the nth
 *    one, wherever it is (tests/test_crash_stores.py enumerates them all).
 * A store no STORED() follows is a crash state no sweep reaches: every new
 * store into the file gets one.
 */
#ifndef SHMDICT_FAULT_H
#define SHMDICT_FAULT_H

/* Every crash point, as "<operation>.<step>". */
#define FAULT_POINTS(X)                                                                  \
    X(INSERT_ALLOCATED, "insert.allocated")     /* block allocated, not yet filled */    \
    X(INSERT_FILLED, "insert.filled")           /* record written, not published */      \
    X(INSERT_PUBLISHED, "insert.published")     /* slot points at it, counters stale */  \
    X(INSERT_COUNTED, "insert.counted")         /* all stores done, log not cleared */   \
    X(OVERWRITE_ALLOCATED, "overwrite.allocated")                                        \
    X(OVERWRITE_FILLED, "overwrite.filled")                                              \
    X(OVERWRITE_PUBLISHED, "overwrite.published")                                        \
    X(OVERWRITE_FREED, "overwrite.freed")       /* old block back on its free list */    \
    X(OVERWRITE_INPLACE, "overwrite.inplace")   /* number stored in place, TTL pending */\
    X(OVERWRITE_BACKED, "overwrite.backed")     /* old record saved to the backup area */\
    X(OVERWRITE_REWRITTEN, "overwrite.rewritten") /* record rewritten in place */        \
    X(OVERWRITE_COUNTED, "overwrite.counted")                                            \
    X(DELETE_TOMBED, "delete.tombed")           /* slot marked TOMB */                   \
    X(DELETE_SHIFTED, "delete.shifted")         /* one backward-shift step done */       \
    X(DELETE_FREED, "delete.freed")                                                      \
    X(DELETE_COUNTED, "delete.counted")                                                  \
    X(INCR_STORED, "incr.stored")               /* new number stored, TTL pending */     \
    X(INCR_TTL, "incr.ttl")                     /* TTL stored, counters pending */       \
    X(INCR_IN_PLACE, "incr.in_place")           /* stripe only: number stored, version pending */\
    X(EXPIRE_STORED, "expire.stored")                                                    \
    X(RECLAIM_DELETED, "reclaim.deleted")       /* one expired victim removed */         \
    X(REINDEX_MARKED, "reindex.marked")         /* new index_cap committed, index garbage */\
    X(REINDEX_CLEARED, "reindex.cleared")       /* new index zeroed, nothing inserted */ \
    X(REINDEX_INSERTED, "reindex.inserted")     /* every 4096th record reinserted */     \
    X(COMPACT_MARKED, "compact.marked")         /* cursor committed, nothing moved */    \
    X(COMPACT_CHUNK, "compact.chunk")           /* one chunk of a record copied down */  \
    X(COMPACT_MOVED, "compact.moved")           /* one block passed, cursor stored */    \
    X(GROW_ALLOCATED, "grow.allocated")         /* file longer, dict unchanged */        \
    X(GROW_MARKED, "grow.marked")               /* new size committed, index not moved */\
    X(GROW_MOVED, "grow.moved")                 /* index moved, growth not finished */   \
    X(FLUSH_MARKED, "flush.marked")             /* flush_pending committed */            \
    X(FLUSH_CLEARED, "flush.cleared")           /* index zeroed, allocator not reset */  \
    X(EVENT_APPENDED, "event.appended")         /* event written, op not committed */    \
    X(RECOVER_RESTORED, "recover.restored")     /* a crash inside recovery itself */      \
    X(FLUSH_EXPIRED_DELETED, "flush_expired.deleted") /* one expired item freed */       \
    X(LEN_RECLAIMED, "len.reclaimed")           /* len() reclaimed the expired items */  \
    X(EVICT_DELETED, "evict.deleted")           /* one CLOCK victim removed */           \
    X(CAS_MATCHED, "cas.matched")               /* compared equal, store not begun */    \
    X(SET_MANY_ITEM, "set_many.item")           /* some items stored, not all */         \
    X(LIMIT_STORED, "limit.stored")             /* new TAT stored, TTL pending */        \
    X(LIMIT_TTL, "limit.ttl")                   /* TTL stored, log not cleared */         \
    X(LIST_PUSHED, "list.pushed")               /* element in, count/version pending */  \
    X(LIST_SLID, "list.slid")                   /* live part copied across, push pending */\
    X(LIST_POPPED, "list.popped")               /* element out, count/version pending */ \
    X(LIST_ALLOCATED, "list.allocated")         /* moving: new block taken, not filled */\
    X(LIST_FILLED, "list.filled")               /* moving: new block filled, unpublished */\
    X(LIST_PUBLISHED, "list.published")         /* moving: slot points at it, old not freed */\
    X(WINDOW_BUILT, "window.built")             /* new timestamp list built, not stored */\
    X(IMPORT_ITEM, "import.item")               /* a snapshot load: some items stored */

#define X_ENUM(id, name) FP_##id,
enum { FAULT_POINTS(X_ENUM) FP_COUNT };
#undef X_ENUM

extern int fault_armed; /* -1 when disarmed */
void fault_hit(int point);
#define FAULT(id)                                                 \
    do {                                                          \
        if (__builtin_expect(fault_armed == FP_##id, 0))          \
            fault_hit(FP_##id);                                   \
    } while (0)

#include <stdint.h>
extern uint64_t fault_stores_left; /* stores until the kill; 0 when disarmed */
void fault_store_hit(void);
#define STORED()                                                  \
    do {                                                          \
        if (__builtin_expect(fault_stores_left != 0, 0))          \
            fault_store_hit();                                    \
    } while (0)

#endif /* SHMDICT_FAULT_H */
