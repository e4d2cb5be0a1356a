/*
 * segment.c -- creating, attaching and closing a dict file.
 *
 * CREATE. The file is built where nobody can see it and published in one
 * step, so no process can ever attach to a half-initialised dict:
 *   1. open(dir, O_TMPFILE) -- an unnamed inode (fallback: a dot-named temp
 *      file created O_EXCL|O_NOFOLLOW, unlinked after publishing);
 *   2. fchown to the requested group, if any, then fchmod to the requested
 *      mode (umask does not apply): the file is never visible otherwise;
 *   3. posix_fallocate the whole size: a full /dev/shm fails here with ENOSPC
 *      instead of SIGBUS on first touch much later;
 *   4. mmap and initialise: geometry, random SipHash seed, robust mutex, and
 *      the magic last;
 *   5. linkat() into place: fails with EEXIST and replaces nothing if the name
 *      exists (a symlink there included).
 *
 * ATTACH opens with O_NOFOLLOW, checks who owns the file and who may write
 * it (see trusted() below), maps the file's real size (not the size the
 * header claims), and validates every header field against it before the
 * handle is returned. The geometry is then copied into the per-process
 * handle, so a later scribble over the header cannot move the index or arena
 * outside what was checked. The handle keeps its own descriptor of the file,
 * to map it again when the dict grows (grow.c); closing the handle unmaps
 * every mapping it made and closes the descriptor.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "grow.h"
#include "lock.h"
#include "seq.h"
#include "table.h"

static uint64_t round_up(uint64_t x, uint64_t to) { return (x + to - 1) / to * to; }

static int fail_errno(int e)
{
    errno = e;
    return SHMDICT_ESYS;
}

static bool name_char(char c, bool first)
{
    if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'))
        return true;
    return !first && (c == '.' || c == '_' || c == '-');
}

/* The file name of a dict: [A-Za-z0-9][A-Za-z0-9._-]{0,199}, the same rule
 * the bindings apply, so no slash, dot-dot, control character or byte >= 0x80
 * reaches a path even if a binding's own check were bypassed. */
static int file_name(char *out, size_t cap, const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > SHMDICT_NAME_MAX)
        return SHMDICT_EINVAL;
    for (size_t i = 0; i < n; i++)
        if (!name_char(name[i], i == 0))
            return SHMDICT_EINVAL;
    snprintf(out, cap, "shmdict.%s", name);
    return SHMDICT_OK;
}

/* TRUST. /dev/shm is world-writable: anyone can create shmdict.<name> before
 * the service that means to use it. An attached file is trusted only if it is
 * owned by the caller's effective user, by root, or by the one other uid the
 * caller named, and -- unless the caller passed SHMDICT_TRUST_SHARED -- is not
 * writable by its group or by others. Judged on the descriptor we opened
 * (fstat), never on the path, so the file cannot be swapped in between. */
static bool trusted(const struct stat *st, int flags, int64_t also_uid)
{
    uid_t me = geteuid();
    bool owner_ok = st->st_uid == me || st->st_uid == 0 || (also_uid >= 0 && (int64_t)st->st_uid == also_uid);
    bool mode_ok = (flags & SHMDICT_TRUST_SHARED) || !(st->st_mode & (S_IWGRP | S_IWOTH));
    return owner_ok && mode_ok;
}

/* Map fd and fill the handle's view of the geometry. */
static int map_handle(int fd, uint64_t size, shmdict_t **out)
{
    shmdict_t *h = calloc(1, sizeof *h);
    if (!h)
        return fail_errno(ENOMEM);
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_SHARED, fd, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        free(h);
        return fail_errno(e);
    }
    h->base = p;
    h->map_size = h->map_len = size;
    h->hdr = p;
    h->mu = &h->hdr->lock.mu;
    h->fd = fcntl(fd, F_DUPFD_CLOEXEC, 0); /* its own descriptor, to map more when the dict grows */
    if (h->fd < 0) {
        int e = errno;
        munmap(p, size);
        free(h);
        return fail_errno(e);
    }
    *out = h;
    return SHMDICT_OK;
}

/* The identity fields attach relies on, read from the file ONCE (validate)
 * and used from this copy (bind_geometry): a process scribbling the file
 * between the check and the use cannot move the arena or the event ring
 * outside the mapping. */
typedef struct ident {
    uint64_t seed[2], arena_off, events_off, events_cap, index_min, file_size, header_size, check;
} ident_t;

static void ident_read(const header_t *H, ident_t *g)
{
    const volatile header_t *V = H; /* each word loaded exactly once, here */
    g->seed[0] = V->seed[0];
    g->seed[1] = V->seed[1];
    g->arena_off = V->arena_off;
    g->events_off = V->events_off;
    g->events_cap = V->events_cap;
    g->index_min = V->index_min;
    g->file_size = V->file_size;
    g->header_size = V->header_size;
    g->check = V->ident_check;
}

static uint64_t ident_of(const ident_t *g)
{
    return ident_sum(g->seed[0], g->seed[1], g->arena_off, g->events_off, g->events_cap, g->index_min,
                     g->file_size, g->header_size);
}

/* The fixed geometry (arena start, event ring, the index's first size) from
 * the validated copy, then the size and index as the header has them now
 * (map_sync, table_bind). Without the lock: a growth or an index growth in
 * another process can change size and index_cap between the two reads, so
 * an inconsistent pair is read again a few times before it counts as
 * corruption. Every lock acquisition binds again if either changed. */
static int bind_geometry(shmdict_t *h, const ident_t *g)
{
    h->arena = h->base + g->arena_off;
    h->slots = (uint64_t *)h->arena;
    h->ev_off = g->events_off;
    h->ev_cap = g->events_cap;
    h->cap0 = g->index_min;
    h->size0 = g->file_size;
    h->seed[0] = g->seed[0];
    h->seed[1] = g->seed[1];
    int rc = SHMDICT_ECORRUPT;
    bool vouched = false;
    for (int tries = 0; tries < 4 && rc == SHMDICT_ECORRUPT; tries++) {
        h->size = 0;
        uint64_t cap = __atomic_load_n(&h->hdr->index_cap, __ATOMIC_RELAXED);
        uint64_t size = __atomic_load_n(&h->hdr->size, __ATOMIC_RELAXED);
        vouched = __atomic_load_n(&h->hdr->geo_check, __ATOMIC_RELAXED) == geo_sum(cap, size);
        /* A pair geo_check does not vouch for is a growth under way elsewhere,
         * one a dead holder left uncommitted, or a scribble: read again, and
         * at the last try bind to it all the same (bounds-checked against the
         * file); the first lock then rolls a dead holder's growth back, or
         * refuses a scribble (guard.c counters_sane). */
        if (tries < 3 && !vouched)
            continue;
        rc = map_sync(h);
        if (rc == SHMDICT_OK)
            rc = table_bind(h);
    }
    /* Lock-free reads can start before this handle's first lock (seq.c), but
     * only on a geometry geo_check vouches for: readers of an unvouched one
     * would probe a scribbled index_cap and miss. They take the lock instead,
     * which follows a growth or refuses the scribble. */
    if (rc == SHMDICT_OK && vouched)
        seq_publish(h);
    return rc;
}

/* Header checks on the copy g, against the real file size. EVERSION: not
 * ours at all; ECORRUPT: ours but inconsistent. */
static int validate(const header_t *H, uint64_t st_size, ident_t *g)
{
    if (memcmp(H->magic, MAGIC, 8) != 0)
        return SHMDICT_EVERSION;
    if (H->layout_version != SHMDICT_LAYOUT_VERSION || H->abi != ABI_STAMP || H->endian != 0x01020304u)
        return SHMDICT_EVERSION;
    ident_read(H, g);
    if (g->check != ident_of(g))
        return SHMDICT_ECORRUPT; /* an identity field (or the seed) was scribbled on */
    /* file_size: the size at creation; the file may be longer (grow.c) */
    if (g->header_size != HEADER_SIZE || g->file_size % PAGE || g->file_size > st_size)
        return SHMDICT_ECORRUPT;
    uint64_t size0 = g->file_size;
    if (g->arena_off % PAGE || g->arena_off < HEADER_SIZE || g->arena_off > size0)
        return SHMDICT_ECORRUPT;
    if (g->events_cap && (g->events_cap % 16 || g->events_off % 16 || g->events_off < HEADER_SIZE ||
                          g->events_off > g->arena_off || /* else the next line wraps */
                          g->events_cap > g->arena_off - g->events_off))
        return SHMDICT_ECORRUPT;
    /* the index at its first size must leave an arena (table_bind checks the current one) */
    if (g->index_min < 1 || g->index_min > (size0 - g->arena_off) / 8 ||
        (size0 - g->arena_off - g->index_min * 8) / UNIT <= FIRST_UNIT + MIN_REC_UNITS)
        return SHMDICT_ECORRUPT;
    if (H->size < size0) /* a dict never shrinks (and map_sync checks the upper end) */
        return SHMDICT_ECORRUPT;
    if (ulog_len(H->ulog_n) > ULOG_MAX || H->bump < FIRST_UNIT || !flags_ok(H->flags))
        return SHMDICT_ECORRUPT;
    if (!lock_looks_valid(H))
        return SHMDICT_ECORRUPT;
    return SHMDICT_OK;
}

/* Event ring bytes for about `events` entries of 64 bytes, at most 1/8 of the dict. */
static uint64_t ring_bytes(uint64_t events, uint64_t size)
{
    uint64_t max = size / 8 / 16 * 16;
    if (events > max / 64)
        return max;
    return events * 64;
}

static void init_header(shmdict_t *h, uint64_t user_size, uint64_t file_size, uint64_t events)
{
    header_t *H = h->hdr;
    uint64_t events_off = HEADER_SIZE;
    uint64_t events_cap = ring_bytes(events, user_size);
    uint64_t arena_off = round_up(events_off + events_cap, PAGE);
    uint64_t cap = user_size / BYTES_PER_SLOT0; /* grows as entries arrive (table.c grow_index) */
    if (cap < INDEX_MIN_CAP)
        cap = INDEX_MIN_CAP;
    if ((file_size - arena_off) / UNIT - cap > (1ull << 32))
        cap = (file_size - arena_off) / UNIT - (1ull << 32); /* slot unit numbers are 32-bit */
    H->layout_version = SHMDICT_LAYOUT_VERSION;
    H->header_size = HEADER_SIZE;
    H->file_size = file_size;
    H->abi = ABI_STAMP;
    H->endian = 0x01020304u;
    H->index_min = cap;
    H->index_cap = cap;
    H->arena_off = arena_off;
    H->events_off = events_cap ? events_off : 0;
    H->events_cap = events_cap;
    if (getrandom(H->seed, sizeof H->seed, 0) != sizeof H->seed) {
        struct timespec ts; /* getrandom cannot fail for 16 bytes after boot; belt and braces */
        clock_gettime(CLOCK_REALTIME, &ts);
        H->seed[0] = (uint64_t)ts.tv_nsec * 0x9e3779b97f4a7c15ull ^ (uint64_t)getpid();
        H->seed[1] = (uint64_t)ts.tv_sec * 0xbf58476d1ce4e5b9ull ^ (uint64_t)(uintptr_t)h;
    }
    H->creator_pid = (uint64_t)getpid();
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    H->created_realtime = (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
    H->user_size = user_size;
    H->size = file_size;
    H->size_user = user_size;
    H->bump = FIRST_UNIT;
    H->flags = flags_word(0);
    H->geo_check = geo_sum(cap, file_size);
    H->ident_check = ident_sum(H->seed[0], H->seed[1], arena_off, H->events_off, events_cap, cap, file_size,
                               HEADER_SIZE);
    ident_t g;
    ident_read(H, &g);
    bind_geometry(h, &g); /* cannot fail: sizes >= SHMDICT_MIN_SIZE leave an arena */
}

int shmdict_create(const char *dir, const char *name, uint64_t size, int mode, int64_t gid,
                   uint64_t events, shmdict_t **out)
{
    char fname[SHMDICT_NAME_MAX + 16], tmpname[SHMDICT_NAME_MAX + 64] = "";
    int rc = file_name(fname, sizeof fname, name);
    if (rc)
        return rc;
    if (size < SHMDICT_MIN_SIZE || size > (uint64_t)SHMDICT_MAX_SIZE_MB << 20 || mode < 0 ||
        (mode & ~0666) ||  /* read/write bits only: never setuid, setgid, sticky or execute */
        gid < -1 || gid >= (int64_t)UINT32_MAX)
        return SHMDICT_EINVAL;
    uint64_t file_size = round_up(size, PAGE);

    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return SHMDICT_ESYS;
    int fd = openat(dfd, ".", O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd < 0) {
        unsigned rnd = 0;
        if (getrandom(&rnd, sizeof rnd, 0) != sizeof rnd)
            rnd = (unsigned)clock();
        snprintf(tmpname, sizeof tmpname, ".shmdict-tmp.%s.%d.%08x", name, (int)getpid(), rnd);
        fd = openat(dfd, tmpname, O_CREAT | O_EXCL | O_NOFOLLOW | O_RDWR | O_CLOEXEC, 0600);
        if (fd < 0) {
            rc = SHMDICT_ESYS;
            goto out_dir;
        }
    }
    shmdict_t *h = NULL;
    int e;
    if ((gid >= 0 && fchown(fd, (uid_t)-1, (gid_t)gid) != 0) || fchmod(fd, (mode_t)mode) != 0 ||
        ftruncate(fd, (off_t)file_size) != 0)
        goto sys;
    if ((e = posix_fallocate(fd, 0, (off_t)file_size)) != 0) {
        errno = e;
        goto sys;
    }
    rc = map_handle(fd, file_size, &h);
    if (rc)
        goto out_fd;
    init_header(h, size, file_size, events);
    rc = lock_init(h->hdr);
    if (rc)
        goto out_map;
    __atomic_thread_fence(__ATOMIC_RELEASE);
    memcpy(h->hdr->magic, MAGIC, 8); /* last: only now is it a dict */

    if (tmpname[0]) {
        if (linkat(dfd, tmpname, dfd, fname, 0) != 0)
            goto sys_map;
        unlinkat(dfd, tmpname, 0);
        tmpname[0] = 0;
    } else {
        char proc[64];
        snprintf(proc, sizeof proc, "/proc/self/fd/%d", fd);
        if (linkat(AT_FDCWD, proc, dfd, fname, AT_SYMLINK_FOLLOW) != 0) {
            if (errno == EEXIST || linkat(fd, "", dfd, fname, AT_EMPTY_PATH) != 0)
                goto sys_map;
        }
    }
    struct stat st;
    if (fstat(fd, &st) == 0) {
        h->dev = (uint64_t)st.st_dev;
        h->ino = (uint64_t)st.st_ino;
    }
    *out = h;
    rc = SHMDICT_OK;
    goto out_fd;

sys_map:
    e = errno;
    shmdict_close(h);
    errno = e;
    rc = SHMDICT_ESYS;
    goto out_fd;
out_map:
    shmdict_close(h);
    goto out_fd;
sys:
    rc = SHMDICT_ESYS;
out_fd:
    e = errno;
    if (tmpname[0])
        unlinkat(dfd, tmpname, 0);
    close(fd);
    errno = e;
out_dir:
    e = errno;
    close(dfd);
    errno = e;
    return rc;
}

int shmdict_attach(const char *dir, const char *name, int flags, int64_t also_uid, shmdict_out_t *why,
                   shmdict_t **out)
{
    char fname[SHMDICT_NAME_MAX + 16];
    int rc = file_name(fname, sizeof fname, name);
    if (rc)
        return rc;
    int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd < 0)
        return SHMDICT_ESYS;
    int fd = openat(dfd, fname, O_RDWR | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK);
    int e = errno;
    close(dfd);
    if (fd < 0)
        return fail_errno(e);
    struct stat st;
    shmdict_t *h = NULL;
    if (fstat(fd, &st) != 0) {
        rc = SHMDICT_ESYS;
    } else if (!S_ISREG(st.st_mode)) {
        rc = SHMDICT_EVERSION;
    } else if (!trusted(&st, flags, also_uid)) {
        if (why) {
            why->i = (int64_t)st.st_uid;
            why->len = (uint64_t)st.st_mode;
        }
        rc = SHMDICT_EUNTRUSTED;
    } else if ((uint64_t)st.st_size < HEADER_SIZE + PAGE ||
               (uint64_t)st.st_size > ((uint64_t)SHMDICT_MAX_SIZE_MB << 20) + PAGE) {
        rc = SHMDICT_ECORRUPT;
    } else if ((rc = map_handle(fd, (uint64_t)st.st_size, &h)) == SHMDICT_OK) {
        ident_t g;
        rc = validate(h->hdr, (uint64_t)st.st_size, &g);
        if (rc == SHMDICT_OK)
            rc = bind_geometry(h, &g);
        if (rc) {
            shmdict_close(h);
        } else {
            h->dev = (uint64_t)st.st_dev;
            h->ino = (uint64_t)st.st_ino;
            *out = h;
        }
    }
    e = errno;
    close(fd);
    errno = e;
    return rc;
}

uint32_t shmdict_abi(void) { return ABI_STAMP; }

void shmdict_close(shmdict_t *h)
{
    if (!h)
        return;
    seq_stats_flush(h); /* this process's counts into the header's (seq.c) */
    maps_release(h);
    close(h->fd);
    free(h);
}
