/*
 * layout.h -- the on-disk (in-/dev/shm) format of a shmdict file, and the
 * private helpers every C file shares. Not part of the cffi interface.
 *
 *   +--------------------+ 0
 *   | header  (16 KiB)   |  identity, geometry, the mutex, table state,
 *   |                    |  free-list heads, undo log, futex words, and
 *   |                    |  the 64 stripes (a lock, sequence word, log each)
 *   +--------------------+ events_off (16-byte aligned; absent with events=0)
 *   | event ring         |  notify.c
 *   +--------------------+ arena_off (page aligned)
 *   | arena              |  records in 8-byte units, growing up from unit
 *   |   ...              |  FIRST_UNIT (units 0 and 1 are never used) to bump
 *   +--------------------+ index_off = size - index_cap * 8
 *   | index              |  u64 slot[index_cap]: open addressing, linear probe
 *   +--------------------+ size (the header's `size`: the file may be longer)
 *
 * The index and the arena share the space between arena_off and the end of
 * the file: the index starts small and takes space from the top of the arena
 * as entries arrive (grow_index, table.c), so a dict of small items gets the
 * slots it needs and a dict of large items keeps its bytes for values.
 * index_cap and size live with the table state and change under the lock;
 * every handle re-derives index_off and arena_units from them (grow.c
 * map_sync, table.c table_bind) when it sees a new value. A growth (grow.c)
 * makes the file longer and moves the index to its new end: the arena grows
 * by the difference, nothing else moves.
 *
 * All links are offsets or unit numbers, never pointers: every process maps
 * the file at its own address. Everything read from the file is untrusted:
 * header fields are validated at attach, and every unit, length and slot is
 * bounds-checked before it is used (see rec_at() in table.c). All loops over
 * shared structures are bounded by index_cap, the class count or the undo-log
 * size, so a corrupted file yields SHMDICT_ECORRUPT, never a crash or a hang.
 *
 * INDEX SLOT (u64): 0 = EMPTY, 1 = TOMB (left only when a delete had to commit
 * its backward shift in pieces), else (u64)tag << 32 | unit, where tag is the
 * high 32 bits of the key's SipHash-1-3 and unit >= 2 locates the record. The
 * home slot is derived from the tag alone (home = tag * index_cap >> 32), so
 * moving slots never needs to touch records.
 *
 * RECORD (8-byte aligned, size rounded up to its size class):
 *    0  u64 expires   CLOCK_BOOTTIME deadline in ns, 0 = never.
 *                     In a FREE block: the next free unit of its class.
 *    8  u16 klen      key length
 *   10  u8  type      SHMDICT_T_*, 0 = FREE
 *   11  u8  cls       size class (bit 7 reserved for a CLOCK "accessed" bit)
 *   12  u32 ver       per-key version: bumped by every change of the value or TTL
 *   16  u64 num       int64 / double / bool for numeric types, so incr is one
 *                     aligned 8-byte store; for str/bytes: u32 vlen, u32 reserved
 *   24  key[klen], then value[vlen] (str/bytes only)
 * Bytes at 8..15 form one 8-byte word, so a type change plus version bump is
 * one logged store.
 *
 * Per-entry cost: 24 bytes of record header, the key and the value (none
 * for a number), rounded up to 8 bytes, plus one 8-byte index slot at <= 87.5%
 * load: 24 + key + value (rounded to 8) + 8 / 0.875 bytes, i.e. 41.2 bytes for
 * an 8-byte key and an int.
 */
#ifndef SHMDICT_LAYOUT_H
#define SHMDICT_LAYOUT_H

#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "shmdict.h"

#define MAGIC "SHMDICT\x01"          /* 8 bytes; written last at creation */
#define HEADER_SIZE 16384u
#define PAGE 4096u                     /* sizes are multiples of this */
#define MAX_BYTES ((uint64_t)SHMDICT_MAX_SIZE_MB << 20)
#define UNIT 8u                        /* arena allocation unit, bytes */
#define FIRST_UNIT 2u                  /* slot values 0 and 1 are EMPTY and TOMB */
#define SLOT_EMPTY 0ull
#define SLOT_TOMB 1ull
#define REC_HDR 24u
#define MIN_BLOCK 2                    /* units: a free block needs its link and type words */
#define NCLASS 168                     /* 64 exact classes (8..512 B) + 4 per power of two */
#define ULOG_MAX 64                    /* undo-log entries; an operation needs < 20 */
#define BACKUP_MAX 4096u               /* bytes of a record that can be rewritten in place */
#define ULOG_BACKUP (1ull << 63)        /* log entry flag: restore `old` bytes from backup[] */
#define LOAD_NUM 7                     /* max (count + tombs) / index_cap = LOAD_NUM / LOAD_DEN */
#define LOAD_DEN 8                     /*   = 87.5% */
#define INDEX_MIN_CAP 64u              /* the index never has fewer slots */
#define BYTES_PER_SLOT0 256u           /* a new dict's index: one slot per 256 bytes of dict */
#define MIN_REC_UNITS ((REC_HDR + 1 + UNIT - 1) / UNIT) /* the smallest record: 4 units */
#define SWEEP_SLOTS 4u                 /* expired-item slots examined per insert */
#define NBUCKETS 128                   /* futex words for per-key waits */
#define EV_WORD NBUCKETS               /* futex word of the event ring */
#define WAITERS 0x80000000u            /* futex word bit: somebody sleeps on it */
#define NSTRIPES 64                    /* sequence words for optimistic reads (seq.c) */

enum { T_FREE = 0 };

/* A HEADER THAT CANNOT LIE QUIETLY. A word whose value changes what recovery
 * does or where the table lies is written so that a scribble of it (one
 * word, any value) is refused as corruption instead of obeyed:
 *  - flush_pending and defrag_pending hold PENDING(step), a tag in the high
 *    half: a scribbled nonzero word that is not a tagged step is ECORRUPT,
 *    never a flush redo that silently empties the dict;
 *  - ulog_n holds the entry count in its low half and, in its high half, the
 *    low half of gen when the operation logged its first entry (lock.c): a
 *    count whose stamp is not gen's is ECORRUPT, never a replay of stale
 *    entries;
 *  - geo_check = geo_sum(index_cap, size), stored with them in the same
 *    transaction: a handle follows a new size or index only if it matches;
 *  - ident_check = ident_sum(...) over the identity fields and the seed,
 *    checked at attach (a new seed would make every key unreachable);
 *  - flags keeps its complement in its high half (flags_word).
 * Everything else is a counter checked on every lock (guard.c counters_sane),
 * a hint any value of which is valid, or a statistic. */
#define PENDING_TAG 0x50454e4400000000ull /* "PEND" */
#define PENDING(step) (PENDING_TAG | (uint64_t)(step))
/* header.defrag_pending: which bulk memory step recovery must redo (step 1 was
 * a merge pass of adjacent free blocks, dropped in layout 3: compaction and
 * borrowing gave the same fill at a fraction of the cost, docs/reliability.md) */
#define DEFRAG_COMPACT PENDING(2)
#define DEFRAG_REINDEX PENDING(3)
#define DEFRAG_GROW PENDING(4)
#define FLUSH_PENDING PENDING(1)       /* header.flush_pending while a flush_all is applied */

static inline uint64_t mix64(uint64_t x)  /* splitmix64's finaliser */
{
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
static inline uint64_t geo_sum(uint64_t index_cap, uint64_t size)
{
    return mix64(mix64(index_cap ^ 0x67656f) ^ size);
}
static inline uint64_t flags_word(uint64_t flags)
{
    return (uint32_t)flags | (uint64_t)(uint32_t)~flags << 32;
}
static inline bool flags_ok(uint64_t w) { return (uint32_t)(w >> 32) == (uint32_t)~w; }
static inline uint64_t ulog_len(uint64_t ulog_n) { return ulog_n & 0xffffffffu; }

/* One pause in a spin loop (the lock's trylock spin, a reader waiting out a write). */
static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
    __builtin_ia32_pause();
#elif defined(__aarch64__)
    __asm__ __volatile__("yield");
#endif
}

/* A robust mutex that can never be taken again: its owner died and its next
 * locker unlocked it without marking it consistent. glibc marks that for
 * good in the owner field, and a failed attempt may leave its own TID in
 * the lock word, so a trylock can say EBUSY: this field is what tells. */
static inline bool mutex_unrecoverable(const pthread_mutex_t *mu)
{
#ifdef __GLIBC__
    return __atomic_load_n(&mu->__data.__owner, __ATOMIC_RELAXED) == 0x7ffffffe; /* PTHREAD_MUTEX_NOTRECOVERABLE */
#else
    (void)mu;
    return false; /* elsewhere a trylock says so */
#endif
}

/* header.flags */
#define HF_EVICT 1ull                  /* a full dict evicts (CLOCK) instead of failing */
#define CLS_REF 0x80u                  /* cls bit 7: CLOCK "referenced" bit (a hint, unlogged) */

/* ABI stamp: the mutex and struct layout are C library and architecture
 * specific. glibc and musl mutexes are both 40 bytes on x86-64 but lay their
 * words out differently, so the C library is stamped too: a musl process (an
 * Alpine container sharing /dev/shm) attaching a glibc-made dict, or the
 * reverse, would break mutual exclusion. Bytes, low to high: architecture,
 * pointer size, mutex size, C library ('G' glibc, 'M' any other: musl). */
#if defined(__x86_64__)
#define ABI_ARCH 0x01u
#elif defined(__aarch64__)
#define ABI_ARCH 0x02u
#elif defined(__i386__)
#define ABI_ARCH 0x03u
#elif defined(__arm__)
#define ABI_ARCH 0x04u
#elif defined(__powerpc64__)
#define ABI_ARCH 0x05u
#elif defined(__s390x__)
#define ABI_ARCH 0x06u
#elif defined(__riscv)
#define ABI_ARCH 0x07u
#else
#define ABI_ARCH 0x7fu
#endif
#ifdef __GLIBC__
#define ABI_LIBC ((uint32_t)'G')
#else
#define ABI_LIBC ((uint32_t)'M')
#endif
#define ABI_STAMP ((uint32_t)(ABI_LIBC << 24 | sizeof(pthread_mutex_t) << 16 | sizeof(void *) << 8 | ABI_ARCH))

typedef struct ulog_entry {
    uint64_t off; /* byte offset of the word from the file start */
    uint64_t old; /* its value before the store */
} ulog_entry_t;

/* One stripe of keys (seq.c). The lock is taken by the dict lock's holder
 * before it changes, frees or reads the value of a record of the stripe (or
 * moves its slot), and alone by an update in place (kv.c incr_in_place),
 * which logs its stores in the stripe's own undo log. */
typedef struct stripe {
    union {
        pthread_mutex_t mu;
        char pad[64];
    } lock;                /* 0: the lock alone on its line: a waiter's spin touches nothing else */
    uint64_t ulog_n;       /* 64: gen stamp << 32 | entries, as the dict's log (lock.c) */
    uint64_t gen;          /* 72: this stripe's committed updates in place */
    ulog_entry_t ulog[2];  /* 80: an update in place stores two words: the number, then the type word */
    uint32_t seq;          /* 112: odd while the holder may be changing what readers of the stripe see */
    uint32_t pad0;
    uint64_t ev_skipped;   /* 120: events of updates in place nobody listened to (monotone, notify.c) */
} stripe_t;

_Static_assert(sizeof(pthread_mutex_t) <= 64, "a stripe's mutex fits its line");
_Static_assert(sizeof(stripe_t) == 128, "a stripe is two cache lines");

typedef struct header {
    /* ---- identity and geometry: written once at creation, then read-only */
    char magic[8];              /*   0 */
    uint32_t layout_version;    /*   8 */
    uint32_t header_size;       /*  12 */
    uint64_t file_size;         /*  16: bytes at creation (the size now is `size` below) */
    uint32_t abi;               /*  24 */
    uint32_t endian;            /*  28: 0x01020304 as written by the creator */
    uint64_t index_min;         /*  32: index slots at creation and after flush_all */
    uint64_t ident_check;       /*  40: ident_sum() of the fields it names (attach checks it) */
    uint64_t arena_off;         /*  48 */
    uint64_t reserved_geo2;     /*  56 */
    uint64_t seed[2];           /*  64: SipHash key, from getrandom */
    uint64_t creator_pid;       /*  80 */
    uint64_t created_realtime;  /*  88: ns since the epoch */
    uint64_t user_size;         /*  96: size asked for */
    uint64_t flags;             /* 104: flags_word(HF_* policy bits); set once, right after
                                 *      creation (shmdict_configure), by a plain aligned store */
    uint64_t events_off;        /* 112: event ring (notify.c), between index and arena */
    uint64_t events_cap;        /* 120: its bytes, a multiple of 16; 0 = no events */
    /* 128: optimistic reads (seq.c): odd while a bulk step (compaction, index
     * growth, growth, flush) may move what readers look at, or while the table
     * is marked corrupt. On this read-mostly line: every lock-free reader loads it. */
    uint32_t seq_bulk;
    uint32_t seq_reserved;
    /* 136: the event ring has a listener until this CLOCK_MONOTONIC instant (ns):
     * refreshed by watchers and key waiters under the lock (notify.c listen);
     * until then writers append events, after it they only count them. */
    uint64_t ev_listen_until;
    char pad0[256 - 144];

    /* ---- the lock, on its own cache lines */
    union {
        pthread_mutex_t mu;
        char pad[64];
    } lock;                     /* 256 */
    char pad1[64];

    /* ---- mutable table state: every store goes through W64 (lock.c) */
    uint64_t gen;               /* 384: committed-operation counter */
    uint64_t count;             /* records in the index (expired included) */
    uint64_t tombs;             /* TOMB slots */
    uint64_t n_ttl;             /* records with expires != 0 */
    uint64_t used_bytes;        /* class bytes of live records */
    uint64_t bump;              /* first never-allocated unit */
    uint64_t exp_hint;          /* no record expires before this (ns); 0 = unknown */
    uint64_t flush_pending;     /* FLUSH_PENDING: a flush_all is being applied (redo on recovery) */
    uint64_t corrupt;           /* recovery failed: refuse operations until flush_all */
    uint64_t expire_hand;       /* sweep position (unlogged: any value is valid) */
    uint64_t clock_hand;        /* reserved: CLOCK eviction hand */
    uint64_t recoveries;        /* EOWNERDEAD repairs */
    uint64_t defrag_pending;    /* a bulk memory step is being applied (redo on recovery):
                                 * DEFRAG_COMPACT, DEFRAG_REINDEX (table.c) or DEFRAG_GROW (grow.c) */
    uint64_t frees_since_compact;/* hint: blocks freed since the last compaction */
    /* statistics (stats.c shmdict_stats): unlogged increments. They are
     * diagnostics, not state: an operation rolled back after a crash may leave
     * its increment behind. Hits, misses and lock acquisitions are counted in
     * each process and added here in batches (seq.c seq_stats_flush). */
    uint64_t st_hits;           /* keyed reads that found a live value */
    uint64_t st_misses;         /* keyed reads that found nothing */
    uint64_t st_expired;        /* expired records reclaimed */
    uint64_t st_evictions;      /* live records evicted by CLOCK (HF_EVICT) */
    uint64_t st_locks;          /* lock acquisitions */
    uint64_t st_lock_waits;     /* acquisitions that had to sleep in the kernel */
    uint64_t st_lock_wait_ns;   /* time spent sleeping for the lock */
    uint64_t geo_check;         /* geo_sum(index_cap, size): changed with them, in their transaction */
    uint64_t ev_settled;        /* the sum of the stripes' ev_skipped at the last settle (notify.c) */
    uint64_t stat_reserved[4]; /* reserved */
    uint64_t ev_skipped;        /* events counted, not appended: nobody listened (notify.c) */
    uint64_t ev_head;           /* event ring (notify.c): absolute byte position of the next entry */
    uint64_t ev_tail;           /* absolute position of the oldest entry kept */
    uint64_t ev_seq;            /* sequence number of the next event */
    uint64_t ev_tail_seq;       /* sequence number of the entry at ev_tail */
    uint64_t free_head[NCLASS]; /* first free unit of each size class, 0 = none */
    /* geometry and memory reorganisation (table.c) */
    uint64_t index_cap;         /* index slots; the index is the file's last index_cap * 8 bytes
                                 * and the arena ends where it starts. Changed only by a
                                 * reindex step (one logged store, then the redo) */
    uint64_t compact_at;        /* compaction cursor: dst << 32 | src (units), one atomic word */
    uint64_t compact_piece;     /* src << 32 | pieces of the record at src already copied */
    uint64_t index_growths;     /* statistics: reindex steps that grew the index */
    uint64_t compactions;       /* statistics: compaction passes */
    uint64_t size;              /* the dict's bytes now, a page multiple: the index ends here.
                                 * >= file_size; the file may be longer (a growth that never
                                 * committed). Changed only by a growth step (grow.c) */
    uint64_t size_user;         /* the size `size` reports: asked for at creation or by the
                                 * last resize, or reached by automatic growth */
    uint64_t max_size;          /* automatic growth up to this many bytes; 0 = none. A policy
                                 * word (grow.c shmdict_set_max_size) */
    uint64_t growths;           /* statistics: growth steps */

    /* ---- undo log (lock.c) */
    uint64_t ulog_n;            /* gen stamp << 32 | entries (ulog_len) */
    ulog_entry_t ulog[ULOG_MAX];

    /* ---- change notification (notify.c): futex words, 31-bit sequence |
     * WAITERS bit. notify_seq[b] for keys whose tag % NBUCKETS == b; the last
     * word for the event ring. Not table state: never logged. */
    uint32_t notify_seq[129];
    uint32_t pad2;

    /* ---- the old bytes of a record being rewritten in place (lock.c) */
    char backup[BACKUP_MAX];

    /* ---- the stripes of keys (seq.c): stripe = tag % NSTRIPES. Each has
     * its own lock, sequence word and small undo log, on its own two cache
     * lines, so that writers of keys in different stripes share no line. */
    _Alignas(64) stripe_t stripes[NSTRIPES];
} header_t;

/* The identity fields whose scribble would move the table or re-key it. */
static inline uint64_t ident_sum(uint64_t seed0, uint64_t seed1, uint64_t arena_off, uint64_t events_off,
                                 uint64_t events_cap, uint64_t index_min, uint64_t file_size, uint64_t header_size)
{
    uint64_t x = 0x6964656e74ull;
    const uint64_t w[] = {seed0, seed1, arena_off, events_off, events_cap, index_min, file_size, header_size};
    for (size_t i = 0; i < sizeof w / sizeof w[0]; i++)
        x = mix64(x ^ w[i]);
    return x;
}

_Static_assert(sizeof(pthread_mutex_t) <= 64, "mutex fits its line");
_Static_assert(sizeof(header_t) <= HEADER_SIZE, "header fits its page");
_Static_assert(offsetof(header_t, lock) == 256, "lock at 256");
_Static_assert(offsetof(header_t, free_head) == 640, "statistics took only reserved words");
_Static_assert(offsetof(header_t, seq_bulk) == 128, "seq_bulk took only padding");
_Static_assert(offsetof(header_t, ev_skipped) == 600 && offsetof(header_t, ev_head) == 608,
               "ev_skipped took a reserved word, on the line of ev_head");

typedef struct rec {
    uint64_t expires;
    uint16_t klen;
    uint8_t type;
    uint8_t cls;
    uint32_t ver;
    union {
        int64_t i;
        double f;
        struct {
            uint32_t vlen;
            uint32_t reserved;
        } s;
        uint64_t u;
    } num;
    char data[];
} rec_t;

_Static_assert(sizeof(rec_t) == REC_HDR, "record header is 24 bytes");

/* The per-process handle. */
struct old_map; /* a mapping replaced by a larger one, kept until close (grow.c) */

struct shmdict {
    char *base;
    uint64_t map_size; /* bytes of the current mapping the file is known to hold (>= size) */
    uint64_t map_len;  /* bytes the current mapping reserves (>= map_size; the rest lies past
                        * the file's end until a growth: never touched before map_size covers it) */
    uint64_t size;     /* the dict's bytes this handle is bound to: a validated copy of hdr->size */
    int fd;            /* the dict file, kept open to map it again when it grows */
    struct old_map *old_maps;
    /* The mutex in the first mapping, which stays until close: a robust
     * mutex must be unlocked at the address it was locked at (glibc links
     * it into the thread's robust list by address), so every lock and unlock
     * uses this one even after the dict grew and hdr moved. */
    pthread_mutex_t *mu;
    header_t *hdr;
    uint64_t *slots;
    char *arena;
    uint64_t cap;      /* index slots: a validated copy of hdr->index_cap (table_bind) */
    uint64_t units;    /* arena units, derived from cap and the mapping */
    uint64_t cap0;     /* index slots at creation (hdr->index_min, checked at attach) */
    uint64_t size0;    /* the dict's size at creation (hdr->file_size, checked at attach): it never shrinks below */
    uint64_t ev_off, ev_cap;
    uint64_t seed[2];  /* the SipHash key: copied once at attach, after ident_check (hash.c) */
    uint64_t dev, ino;
    int closing;       /* shmdict_interrupt: waiters return ECLOSED */
    uint64_t lock_timeout_ns; /* bound on every wait for the dict's lock; 0 = none (guard.c) */

    /* Optimistic reads (seq.c). Written only by the thread holding the lock. */
    uint64_t seq_held;     /* stripes whose lock this lock holder took (bit s: stripes[s]) */
    uint64_t seq_marks;    /* ... and made odd (a subset of seq_held) */
    int seq_bulk_marked;   /* ... and the bulk word */
    uint64_t ev_clock;     /* a CLOCK_MONOTONIC reading from the past (notify.c): never ahead of now */
    uint32_t ev_writes;    /* changes noted since ev_clock was read */
    /* The geometry lock-free readers use: a consistent copy of base/hdr/slots/
     * arena/size/cap/units, republished at unlock when it changed, under the
     * handle's own sequence word (other threads of this process read it). */
    uint32_t ro_seq;
    struct ro_geo {
        header_t *hdr;
        uint64_t *slots;
        char *arena;
        uint64_t size, cap, units;
    } ro;
    /* Statistics kept in the process (no shared cache line written per
     * operation), added to the header's counters by seq_stats_flush. */
    uint64_t st_hits, st_misses, st_locks;
};

/* ---- helpers shared by the C files -------------------------------------- */

static inline bool is_numeric(int type)
{
    return type == SHMDICT_T_BOOL || type == SHMDICT_T_INT || type == SHMDICT_T_FLOAT;
}

/* Bytes of record r that hold data: header, key, value. A LIST record keeps
 * its key padded to 8, then a u64 element count, then an element area whose
 * live part is [num.s.reserved, num.s.reserved + num.s.vlen) (list.c). */
static inline uint64_t rec_bytes(const rec_t *r)
{
    if (is_numeric(r->type))
        return REC_HDR + r->klen;
    if (r->type == SHMDICT_T_LIST)
        return REC_HDR + (((uint64_t)r->klen + 7) & ~7ull) + 8 + (uint64_t)r->num.s.reserved + r->num.s.vlen;
    return REC_HDR + r->klen + (uint64_t)r->num.s.vlen;
}

static inline rec_t *unit_ptr(const shmdict_t *h, uint64_t unit)
{
    return (rec_t *)(h->arena + unit * UNIT);
}

static inline uint64_t slot_unit(uint64_t s) { return s & 0xffffffffu; }
static inline uint32_t slot_tag(uint64_t s) { return (uint32_t)(s >> 32); }
static inline uint64_t home_of(const shmdict_t *h, uint32_t tag)
{
    return ((uint64_t)tag * h->cap) >> 32;
}

/* Size classes, in 8-byte units: 1..64 exactly, then four per power of two. */
static inline uint64_t class_units(int c)
{
    if (c < 64)
        return (uint64_t)c + 1;
    int g = (c - 64) / 4, s = (c - 64) % 4;
    uint64_t base = 64ull << g;
    return base + (base / 4) * (uint64_t)(s + 1);
}

static inline int class_of(uint64_t units)
{
    if (units <= 64)
        return units ? (int)units - 1 : 0;
    int g = 63 - __builtin_clzll((units - 1) / 64);   /* 64<<g < units <= 128<<g */
    int c = 64 + 4 * g;
    while (c < NCLASS && class_units(c) < units)
        c++;
    return c; /* NCLASS if too large */
}

/* A LIST value (snapshot.c) is its packed elements: vlen bytes after the
 * key padded to 8 and the u64 count. */
static inline uint64_t rec_units(uint64_t klen, int type, uint64_t vlen)
{
    uint64_t bytes = type == SHMDICT_T_LIST ? REC_HDR + ((klen + 7) & ~7ull) + 8 + vlen
                                            : REC_HDR + klen + (is_numeric(type) ? 0 : vlen);
    return (bytes + UNIT - 1) / UNIT;
}

#endif /* SHMDICT_LAYOUT_H */
