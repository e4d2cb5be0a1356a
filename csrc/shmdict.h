/*
 * shmdict.h -- public C API of shmdict: a hash table with per-key TTL that
 * lives in one mmap(MAP_SHARED) file and is shared by every process that
 * maps it.
 *
 * THREAD AND PROCESS SAFETY. Every access function takes the dict's
 * process-shared robust mutex for the whole operation, so each call is atomic
 * with respect to every other thread and process using the same file. A
 * process killed at any instruction, even while holding the mutex, leaves a
 * table that the next locker repairs (see lock.c): the interrupted operation
 * is then either wholly applied or not applied at all.
 *
 * This header is compiled *and* fed to cffi's cdef (csrc/build.py drops the
 * preprocessor lines), so it must stay in cffi's C dialect: constants are
 * enums, no macros, no inline functions, no attributes.
 *
 * Return codes: >= 0 success (some calls return a count or a value type);
 * < 0 one of the SHMDICT_E* codes below. SHMDICT_ESYS leaves errno set.
 */
#ifndef SHMDICT_H
#define SHMDICT_H

#include <stddef.h>
#include <stdint.h>

typedef struct shmdict shmdict_t; /* per-process handle: one mapping */

enum {
    SHMDICT_OK        =   0,
    SHMDICT_ENOTFOUND =  -1, /* key absent or expired */
    SHMDICT_EFULL     =  -2, /* no room, even after reclaiming expired items */
    SHMDICT_ETOOBIG   =  -3, /* item larger than this dict could ever hold */
    SHMDICT_ECORRUPT  =  -4, /* inconsistent file: bad header, offset out of bounds, bad undo log */
    SHMDICT_ENOTNUM   =  -5, /* incr on a value that is not an int or float */
    SHMDICT_EOVERFLOW =  -6, /* int64 overflow in incr; the value is unchanged */
    SHMDICT_ESYS      =  -7, /* a system call failed; errno says why */
    SHMDICT_EVERSION  =  -8, /* not a shmdict file, or another layout version / ABI */
    SHMDICT_ELOCK     =  -9, /* the mutex is unusable (ENOTRECOVERABLE or another pthread error) */
    SHMDICT_EINVAL    = -10, /* an argument C was given is out of range */
    SHMDICT_ERANGE    = -11, /* output buffer too small: out->len holds the size needed */
    SHMDICT_EEXIST    = -12, /* SHMDICT_SET_NX: the key is present */
    SHMDICT_ETIMEDOUT = -13, /* a wait ran out of time */
    SHMDICT_EINTR     = -14, /* a wait was interrupted by a signal: call again */
    SHMDICT_ECLOSED   = -15, /* the handle is being closed */
    SHMDICT_EWRONGTYPE = -16, /* a scalar operation on a list, or a list operation on a scalar */
    SHMDICT_ELOCKTIMEOUT = -17, /* the dict's lock was not acquired in time (held by a stopped or
                                 * stuck process); nothing was changed */
    SHMDICT_EUNTRUSTED = -18  /* attach: the file's owner or mode is not trusted (shmdict_attach) */
};

/* shmdict_attach flags. */
enum {
    SHMDICT_TRUST_SHARED = 1 /* accept a file writable by its group or by others */
};

/* Kinds of change, as reported by shmdict_events. */
enum {
    SHMDICT_EV_SET    = 1, /* set, incr, expire() and every other store */
    SHMDICT_EV_DELETE = 2,
    SHMDICT_EV_EXPIRE = 3, /* an expired item was reclaimed */
    SHMDICT_EV_EVICT  = 4,
    SHMDICT_EV_FLUSH  = 5  /* flush_all: every key went away */
};

/* shmdict_set flags. An expired key counts as absent. */
enum {
    SHMDICT_SET_ALWAYS = 0,
    SHMDICT_SET_NX     = 1, /* only if absent, else EEXIST (add, setdefault) */
    SHMDICT_SET_XX     = 2, /* only if present, else ENOTFOUND (replace) */
    SHMDICT_SET_NOEVICT = 4, /* never evict, even in an evicting dict: EFULL (safe_set, safe_add) */
    SHMDICT_SET_MASK   = 7
};

/* Value types, as stored in a record. 0 marks a free block. */
enum {
    SHMDICT_T_BOOL  = 1,
    SHMDICT_T_INT   = 2,
    SHMDICT_T_FLOAT = 3,
    SHMDICT_T_STR   = 4, /* UTF-8 text */
    SHMDICT_T_BYTES = 5,
    SHMDICT_T_LIST  = 6  /* a list of scalars (list.c); get-like calls give EWRONGTYPE */
};

enum {
    SHMDICT_LAYOUT_VERSION = 5, /* 3: fewer space mechanisms, checked header words (layout.h); 4: lock-free readers' sequence words (seq.c); 5: a lock and log per stripe of keys (seq.c) */
    SHMDICT_MAX_KEY        = 65535,     /* bytes of UTF-8 */
    SHMDICT_MIN_SIZE       = 32768,     /* bytes */
    SHMDICT_MAX_SIZE_MB    = 32768,     /* 32 GiB: 2^32 arena units of 8 bytes */
    SHMDICT_NAME_MAX       = 200
};

/* Scalar results of one call. Str/bytes values go to a caller buffer. */
typedef struct shmdict_out {
    int64_t  i;   /* int or bool value; counts */
    double   f;   /* float value; remaining TTL in seconds (0 = never) */
    uint64_t len; /* str/bytes length (may exceed the buffer: retry), or bytes needed */
    uint32_t ver; /* per-key version of what was read or written */
} shmdict_out_t;

typedef struct shmdict_info {
    uint64_t size;          /* the size now: asked for at creation or by resize, or grown to */
    uint64_t file_size;     /* bytes of the file in use (size rounded up to a page) */
    uint64_t capacity;      /* bytes of the record arena */
    uint64_t index_cap;     /* slots in the hash index */
    uint64_t count;         /* records in the index, expired-not-reclaimed included */
    uint64_t used_bytes;    /* bytes held by live records, class rounding included */
    uint64_t free_bytes;    /* arena bytes not held by live records */
    uint64_t recoveries;    /* dead lock holders whose operation was repaired */
    uint64_t creator_pid;
    uint64_t dev;           /* identity of the file this handle mapped */
    uint64_t ino;
    uint64_t events_cap;    /* bytes of the event ring (0: no events) */
    uint32_t layout_version;
} shmdict_info_t;

/* ---- lifecycle ---------------------------------------------------------- */

/* Create <dir>/shmdict.<name> with `size` bytes, reserved up front, with an
 * event ring for about `events` changes (0: none), file mode `mode` (read and
 * write bits only, a subset of 0666, else EINVAL) and group `gid` (-1: the
 * creator's). Nobody can attach before it is fully initialised, and it is
 * never visible with another mode or group. SHMDICT_ESYS with errno EEXIST
 * if the name exists, ENOSPC if the filesystem cannot hold it, EPERM if the
 * creator may not give the file that group. */
int shmdict_create(const char *dir, const char *name, uint64_t size, int mode, int64_t gid,
                   uint64_t events, shmdict_t **out);
/* Attach to an existing dict: ESYS/ENOENT if missing, EVERSION or ECORRUPT
 * if the file is not a valid dict of this layout. Never follows a symlink.
 * EUNTRUSTED if the opened file is owned by anyone but the effective user,
 * root or also_uid (-1: nobody else), or is writable by its group or others
 * without SHMDICT_TRUST_SHARED in flags; then why->i = the file's uid and
 * why->len = its st_mode (why may be NULL). Name: [A-Za-z0-9][A-Za-z0-9._-]*,
 * at most SHMDICT_NAME_MAX bytes, else EINVAL (shmdict_create too). */
int shmdict_attach(const char *dir, const char *name, int flags, int64_t also_uid, shmdict_out_t *why,
                   shmdict_t **out);
/* This build's ABI stamp (C library, mutex size, pointer size, architecture):
 * a dict stamped otherwise is refused by attach with EVERSION. */
uint32_t shmdict_abi(void);
/* Unmap and free the handle. The caller guarantees no call is in flight. */
void shmdict_close(shmdict_t *h);
int shmdict_info(shmdict_t *h, shmdict_info_t *out);
/* The same from the header without taking the lock (never waits): each word
 * read once, possibly from different moments; for listings (the CLI's ls). */
int shmdict_peek(shmdict_t *h, shmdict_info_t *out);

/* ---- size (grow.c, resize.c) ---------------------------------------------- */

/* The dict's size now, in bytes, as every process sees it from its next
 * operation (no lock taken). */
uint64_t shmdict_size(shmdict_t *h);
/* Grow the live dict to `size` bytes: the file first (ESYS with errno
 * ENOSPC if the filesystem cannot hold it: nothing changed), then the index
 * moves to the new end under the lock. EINVAL if size is smaller than the
 * size now or out of [SHMDICT_MIN_SIZE, SHMDICT_MAX_SIZE_MB MiB]; the same
 * size is a no-op. */
int shmdict_resize(shmdict_t *h, uint64_t size);
/* A full dict grows itself (doubling, up to max_size bytes) instead of
 * failing with EFULL; 0 turns that off. The limit belongs to the dict.
 * EINVAL outside [SHMDICT_MIN_SIZE, SHMDICT_MAX_SIZE_MB MiB]. */
int shmdict_set_max_size(shmdict_t *h, uint64_t max_size);

/* ---- access ------------------------------------------------------------- */

/* Read `key`. Returns its type (> 0) or ENOTFOUND. Numbers go to out->i /
 * out->f; str/bytes are copied into buf (up to cap bytes) with out->len the
 * full length: if out->len > cap, call again with a larger buffer. */
int shmdict_get(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out, char *buf, size_t cap);
/* Store a value of `type`: i for bool/int, f for float, val/vlen for
 * str/bytes. exptime > 0: expires after that many seconds; else never.
 * flags: SHMDICT_SET_*. EFULL / ETOOBIG leave the dict unchanged. */
int shmdict_set(shmdict_t *h, const char *key, size_t klen, int type, int64_t i, double f,
                const char *val, size_t vlen, double exptime, int flags);
/* Read and delete `key` in one step, as shmdict_get; if a str/bytes value
 * does not fit in cap, ERANGE (out->len = its length) and nothing is deleted. */
int shmdict_pop(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out, char *buf, size_t cap);
/* OK if the key existed (and is now gone), else ENOTFOUND. */
int shmdict_delete(shmdict_t *h, const char *key, size_t klen);
/* Atomic add of delta (dtype INT: di, FLOAT: df). Missing key: ENOTFOUND
 * unless itype != 0, then the key is created as init + delta with init_ttl.
 * set_ttl != 0: the TTL becomes exptime (<= 0 clears it); else it is kept.
 * Returns the result type (INT or FLOAT) with the value in out->i / out->f. */
int shmdict_incr(shmdict_t *h, const char *key, size_t klen, int dtype, int64_t di, double df,
                 int itype, int64_t ii, double fi, double init_ttl, int set_ttl, double exptime,
                 shmdict_out_t *out);
/* OK with out->f = remaining seconds (0 = never expires), or ENOTFOUND. */
int shmdict_ttl(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out);
/* Set (exptime > 0) or clear (<= 0) the TTL of a live key; ENOTFOUND if none. */
int shmdict_expire(shmdict_t *h, const char *key, size_t klen, double exptime);
int shmdict_flush_all(shmdict_t *h);
/* Number of live (unexpired) keys. */
int64_t shmdict_len(shmdict_t *h);
/* Live keys, packed as (u32 little-endian length, bytes) into buf, at most
 * max_count of them if max_count > 0. Returns the number of keys, or ERANGE
 * with out->len the bytes needed. */
int64_t shmdict_keys(shmdict_t *h, char *buf, size_t cap, uint64_t max_count, shmdict_out_t *out);

/* ---- rate limiting (window.c) ------------------------------------------- */

/* Moving window: `key` holds the timestamps of up to `limit` hits within the
 * last `expiry` seconds (a bytes value). amount > 0: if the hits in the
 * window plus amount are <= limit, record amount hits now, drop hits outside
 * the window, set the key's TTL to expiry and return 1; else return 0 and
 * change nothing. amount == 0 only reports. Either way out->i = hits in the
 * window (after the call) and out->f = age in seconds of the oldest of them
 * (0 if none). buf/cap is caller scratch of at least 8 * limit bytes, so
 * nothing is allocated under the lock. ENOTNUM if the key holds another
 * value; EINVAL for limit 0 or > 2^24, or expiry not in (0, 1e9) s. */
int shmdict_window(shmdict_t *h, const char *key, size_t klen, uint64_t limit, double expiry,
                   uint64_t amount, char *buf, size_t cap, shmdict_out_t *out);

/* ---- more operations (ngx.shared.DICT parity and beyond) ----------------- */

/* As shmdict_get, but an expired record not yet reclaimed is returned too,
 * with *stale = 1. */
int shmdict_get_stale(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out, char *buf,
                      size_t cap, int *stale);
/* Free up to max_count (0 = all) expired records; returns how many. */
int64_t shmdict_flush_expired(shmdict_t *h, uint64_t max_count);
/* evict = 1 turns CLOCK eviction on for the whole dict (it stays on); 0 leaves
 * the policy alone. Returns the policy now in force (0 or 1). */
int shmdict_configure(shmdict_t *h, int evict);
/* Compare-and-set: if the live value equals the expected one (same type and
 * value; etype 0 = expected absent), store the new one. 1 stored, 0 not. */
int shmdict_cas(shmdict_t *h, const char *key, size_t klen, int etype, int64_t ei, double ef,
                const char *eval, size_t elen, int ntype, int64_t ni, double nf, const char *nval,
                size_t nlen, double exptime, shmdict_out_t *out);
/* Many keys, one lock hold per SHMDICT_BATCH_HOLD of them. keys: n x (u32
 * klen, key). Output: n x (u8 type, 0 = missing; 8 bytes for bool/int/float,
 * u32 len + bytes for str/bytes). Returns the number found, or ERANGE with
 * out->len needed. */
int64_t shmdict_get_many(shmdict_t *h, const char *keys, size_t keys_len, uint64_t n, char *buf,
                         size_t cap, shmdict_out_t *out);
/* Store n items (u32 klen, key, value packed as above) in order, one lock
 * hold per SHMDICT_BATCH_HOLD items; flags as shmdict_set (add/replace skip,
 * not fail). Returns n, or an error with out->i = items stored before it. */
int64_t shmdict_set_many(shmdict_t *h, const char *items, size_t items_len, uint64_t n,
                         double exptime, int flags, shmdict_out_t *out);
/* Snapshot of live keys (with_values: and values, packed as get_many's output
 * after each key) matching glob pat (NULL = all), at most max_count (0 = all).
 * Returns the count, or ERANGE with out->len needed. */
int64_t shmdict_items(shmdict_t *h, const char *pat, size_t plen, uint64_t max_count, int with_values,
                      char *buf, size_t cap, shmdict_out_t *out);
/* One scan batch from slot `cursor`: examines at least `count` live keys
 * unless the index ends, returning those matching pat (NULL = all); out->i =
 * next cursor (0 = done). Returns the number returned, or ERANGE. */
int64_t shmdict_scan(shmdict_t *h, uint64_t cursor, uint64_t count, const char *pat, size_t plen,
                     char *buf, size_t cap, shmdict_out_t *out);
/* GCRA rate limit: 1 admitted, 0 refused; out->i = remaining, out->f =
 * seconds until the bucket is full. ENOTNUM if the key holds a non-int. */
int shmdict_limit(shmdict_t *h, const char *key, size_t klen, double rate, double per, double burst,
                  shmdict_out_t *out);
/* Named locks: the lock byte's offset for a name, and take (op 1, try) or
 * release (op 0) it on an fd of the dict file: OK, 1 if held elsewhere, ESYS. */
int64_t shmdict_lock_offset(shmdict_t *h, const char *name, size_t len);
int shmdict_flock(int fd, int64_t off, int op);

/* Lists: push (left = 1: lpush, else rpush) a scalar, out->i = new length;
 * pop an end like shmdict_get (ENOTFOUND if absent); llen (0 if absent).
 * EWRONGTYPE on a key that holds a scalar. */
int shmdict_push(shmdict_t *h, const char *key, size_t klen, int left, int type, int64_t iv, double fv,
                 const char *val, size_t vlen, shmdict_out_t *out);
int shmdict_pop_end(shmdict_t *h, const char *key, size_t klen, int left, shmdict_out_t *out, char *buf,
                    size_t cap);
int64_t shmdict_llen(shmdict_t *h, const char *key, size_t klen);

typedef struct shmdict_stats {
    uint64_t size;              /* the size now (shmdict_info) */
    uint64_t capacity;          /* bytes of the record arena */
    uint64_t free_space;        /* largest key + value (bytes) a new str/bytes item may have now */
    uint64_t entries;           /* live records */
    uint64_t records;           /* records in the index, expired-not-reclaimed included */
    uint64_t expired_pending;   /* expired records not yet reclaimed */
    uint64_t used_bytes;        /* arena bytes held by records (class rounding included) */
    uint64_t free_bytes;        /* capacity - used_bytes: not all of it usable by one item */
    uint64_t index_cap;         /* index slots */
    uint64_t index_used;        /* slots in use (records + tombstones) */
    uint64_t index_limit;       /* entries the index takes before it grows (87.5% of its slots) */
    uint64_t hits, misses;      /* keyed reads (get, get_many, ...) */
    uint64_t expired;           /* expired records reclaimed */
    uint64_t evictions;         /* live records evicted */
    uint64_t lock_acquisitions;
    uint64_t lock_waits;        /* acquisitions that slept */
    uint64_t lock_wait_ns;      /* total time slept */
    uint64_t recoveries;        /* dead lock holders repaired (EOWNERDEAD) */
    uint64_t index_growths;     /* times the index grew into the arena */
    uint64_t compactions;       /* compaction passes (free space in holes gathered) */
    uint64_t index_bytes;       /* bytes of the index (index_cap * 8): with capacity, the split */
    uint64_t hole_bytes;        /* free arena bytes below the highest record (in holes) */
    uint64_t growths;           /* times the dict grew (resize or automatic) */
    uint64_t max_size;          /* automatic growth limit in bytes, 0 = none */
    int evict;                  /* 1 if the dict evicts when full */
} shmdict_stats_t;

/* Statistics and the honest free_space (O(arena): walks the records). */
int shmdict_stats(shmdict_t *h, shmdict_stats_t *out);

/* ---- notification (watch.c) ---------------------------------------------- */

/* out->ver = the key's version; a missing key: out->ver = 0, and in a dict
 * with an event ring out->len = 1 and out->i = the ring sequence from which
 * an event for the key is a change (shmdict_wait's since[1]). Errors such as
 * ELOCKTIMEOUT are returned, never turned into a version. */
int shmdict_version(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out);
/* Block until the key changes, then return like shmdict_get (ENOTFOUND: it
 * went away). since is a cursor the caller keeps across calls (after EINTR,
 * or to wait in slices): since[0] = the version it changes from (a value
 * from shmdict_version; UINT64_MAX: the version at the first look, i.e. the
 * next change); since[1] = the event ring's sequence from which an event for
 * the key counts as a change while it is missing (UINT64_MAX: now), so a
 * missing key set and then deleted, or expiring, before the waiter looks
 * again is seen (dicts with an event ring); since[2] = the ring position up
 * to which that was checked (UINT64_MAX: none), kept by the call. timeout < 0: no limit. ETIMEDOUT,
 * EINTR (call again after running signal handlers) or ECLOSED otherwise.
 * The waits for the dict's lock are bounded by the handle's lock timeout and
 * this thread's shmdict_deadline (ELOCKTIMEOUT), not by `timeout`. */
int shmdict_wait(shmdict_t *h, const char *key, size_t klen, uint64_t *since, double timeout,
                 shmdict_out_t *out, char *buf, size_t cap);
/* Events after cursor {position, sequence} ({0, UINT64_MAX}: from now) for
 * keys matching glob pat (plen bytes; NULL: all; flush events always),
 * packed as (u8 op, u16 klen, key) into buf; blocks until there is one.
 * Returns how many, with out->i = events lost before them (overwritten),
 * and advances the cursor. EINVAL if the dict has no event ring; ERANGE with
 * out->len = the bytes needed if not even the next event fits in cap. Lock
 * waits as for shmdict_wait. */
int shmdict_events(shmdict_t *h, uint64_t *cursor, const char *pat, size_t plen, char *buf, size_t cap,
                   double timeout, shmdict_out_t *out);
/* Wake this handle's waiters with ECLOSED (before closing it). */
void shmdict_interrupt(shmdict_t *h);

/* ---- snapshots (snapshot.c): dump and load -------------------------------- */

/* Items are packed as snapshot.c describes: u32 klen, key, u8 type, u64
 * wall-clock deadline (ns since the epoch, 0 = never), value.
 *
 * Export one batch of live items from slot `cursor` (0 to start), in one lock
 * hold: at least `count` records examined, or `budget` bytes packed, unless
 * the index ends. Deadlines are converted with wall_now (the caller's
 * CLOCK_REALTIME, ns). Returns the number of items with out->i = the next
 * cursor (0 = done) and out->len = bytes, or ERANGE with out->len = bytes
 * needed (call again with the same cursor and a larger buffer). An item
 * present for the whole export is returned exactly once. */
int64_t shmdict_export(shmdict_t *h, uint64_t cursor, uint64_t count, uint64_t budget, uint64_t wall_now,
                       char *buf, size_t cap, shmdict_out_t *out);
/* store = 0: validate every item of items[0, len) without locking; returns
 * their number, out->i = how many are still live at wall_now and out->len
 * = the arena bytes those need. ECORRUPT if malformed; ETOOBIG if one could
 * never fit in this dict.
 * store = 1: validate, then store up to max_items items (stopping at the
 * first item that ends at or past `budget` bytes) in order under one lock hold (each its own transaction; expired ones skipped); returns the
 * number of items consumed, out->i = stored, out->len = bytes consumed. On
 * an error (EFULL...) the items before it stay stored: out->i / out->len
 * count them. */
int64_t shmdict_import(shmdict_t *h, const char *items, size_t len, uint64_t max_items, uint64_t budget,
                       uint64_t wall_now, int store, shmdict_out_t *out);
/* Salvage (no lock, no store): the items of index slots [from, from + count)
 * that are still whole, in the export format. Returns their number with
 * out->i = the next `from` (0 = done), out->len = bytes, out->ver = records
 * refused as damaged; ERANGE with out->len = bytes needed if not even one
 * item fits in cap. */
int64_t shmdict_salvage(shmdict_t *h, uint64_t from, uint64_t count, uint64_t wall_now, char *buf, size_t cap,
                        shmdict_out_t *out);
/* Repair the dict's mutex if it can never be taken again (ENOTRECOVERABLE),
 * safely against attached processes; with force, also one whose word names
 * an owner thread that does not exist in this PID namespace. Then take the
 * lock once (rolling back what a dead owner left). Returns 0 (the lock was
 * usable), 1 (re-initialised), ELOCK (held by a live thread: left alone). */
int shmdict_repair(shmdict_t *h, int force);

/* ---- bounded lock waits (lock.c) ------------------------------------------ */

/* Bound every wait of this handle for the dict's lock to `seconds` (< 0 or
 * NaN: no bound); past it, the operation returns ELOCKTIMEOUT having changed
 * nothing. Set it before the handle is shared between threads. */
void shmdict_set_lock_timeout(shmdict_t *h, double seconds);
/* This thread's deadline for every lock wait, on any handle, as an absolute
 * CLOCK_MONOTONIC time in ns (0 = none); returns the previous deadline. The
 * effective bound is the earlier of this and the handle's lock timeout. */
uint64_t shmdict_deadline(uint64_t abs_ns);
/* The thread id of the lock holder as seen by this thread's last
 * ELOCKTIMEOUT (0 if unknown). glibc keeps it in the mutex word. */
int64_t shmdict_lock_holder(void);

/* ---- bindings (api.c): the core's entry points as one table -------------- */

/* A second binding in the same process (the CPython type in csrc/python/pytype.c)
 * reaches the one copy of the core through this table rather than linking
 * its own: crash points, clock shift and handles are then shared with the
 * cffi module. `size` and `abi` let the binding refuse a table it does not
 * know. */
enum { SHMDICT_API_ABI = 1 };
typedef struct shmdict_api {
    uint32_t size; /* sizeof(shmdict_api_t) */
    uint32_t abi;  /* SHMDICT_API_ABI */
    int (*get)(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out, char *buf, size_t cap);
    int (*pop)(shmdict_t *h, const char *key, size_t klen, shmdict_out_t *out, char *buf, size_t cap);
    int (*set)(shmdict_t *h, const char *key, size_t klen, int type, int64_t i, double f,
               const char *val, size_t vlen, double exptime, int flags);
    int (*del)(shmdict_t *h, const char *key, size_t klen);
    int (*incr)(shmdict_t *h, const char *key, size_t klen, int dtype, int64_t di, double df,
                int itype, int64_t ii, double fi, double init_ttl, int set_ttl, double exptime,
                shmdict_out_t *out);
    int64_t (*get_many)(shmdict_t *h, const char *keys, size_t keys_len, uint64_t n, char *buf,
                        size_t cap, shmdict_out_t *out);
    int64_t (*set_many)(shmdict_t *h, const char *items, size_t items_len, uint64_t n,
                        double exptime, int flags, shmdict_out_t *out);
    const char *(*strerror)(int rc);
    void (*on_block)(void (*fn)(void));
} shmdict_api_t;
const shmdict_api_t *shmdict_api(void);
/* fn (NULL: none) is called by a thread right before it blocks on a busy dict
 * lock, after the brief spin, and before a long bulk step under the lock
 * (compaction, index or file growth, flush, recovery). The call then runs to
 * completion; fn must not call into shmdict. A binding uses it to let other
 * threads run meanwhile (the CPython type releases the GIL there).
 * Process-wide. */
void shmdict_on_block(void (*fn)(void));
/* A batch (get_many, set_many) holds the lock for at most this many keys at a
 * time, so a huge batch cannot stall every other process for long. */
enum { SHMDICT_BATCH_HOLD = 1024 };

/* ---- diagnostics --------------------------------------------------------- */

/* Full integrity check under the lock (O(table)): every slot, record, free
 * list and counter. OK, or ECORRUPT with a message in msg. */
int shmdict_check(shmdict_t *h, char *msg, size_t cap);
const char *shmdict_strerror(int rc);

/* ---- test seams (private: not part of the Python API) -------------------- */

/* Crash points: every step of every mutating operation has a name. Arming
 * one makes *this process* SIGKILL itself the nth time it reaches that step.
 * Disarmed, each point costs one predictable branch. */
int shmdict_fault_count(void);
const char *shmdict_fault_name(int i);
int shmdict_fault_arm(const char *name, int nth); /* name NULL disarms; EINVAL if unknown;
                                                  * "store": die after the nth store into the
                                                  * mapping (0: only count them) */
long long shmdict_fault_stores(void);            /* stores counted since "store" was armed */
/* Shift this process's TTL clock forward by ns (tests of expiry without sleeping). */
void shmdict_clock_shift(int64_t ns);

#endif /* SHMDICT_H */
