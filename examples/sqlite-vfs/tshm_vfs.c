/*
 * tshm_vfs.c — a SQLite VFS shim whose shared memory runs on libtshm.
 *
 * Built as the loadable extension libtshm_sqlite.so (entry point sqlite3_tshmsqlite_init)
 * against the system's sqlite3ext.h; it never links a SQLite of its own. It registers the VFS
 * "tshm", which wraps the default unix VFS: every file operation is forwarded untouched, and
 * only the four shared-memory methods of main database files change:
 *
 *   xShmMap      tshm_region: SQLite's wal-index regions live in the <db>-tshm sidecar
 *   xShmLock     SQLite's WAL_WRITE_LOCK (slot 0) is libtshm's writer role, which a
 *                connection can wait for (below); slots 1..7 are libtshm engine lock slots
 *                1..7 (tshm_lock: non-blocking, all-or-nothing). Connections of one process
 *                conflict as processes do.
 *   xShmBarrier  a full fence
 *   xShmUnmap    closes the connection's libtshm handle; the sidecar is never deleted
 *
 * Each connection has its own libtshm handle. The first process to open the sidecar when
 * nobody has it open finds the regions zeroed, so SQLite recovers from the WAL, as with its
 * own dead-man switch.
 *
 * Fail-closed against stock SQLite: a process using the plain unix VFS on the same database
 * would use <db>-shm and never see libtshm's locks. So every shim connection also holds
 * open-file-description read locks on <db>-shm bytes 120, 121 and 122 (SQLite's WAL write,
 * checkpoint and recover locks) and 128 (its dead-man switch), and the shim keeps that file
 * empty. It takes the first three before it looks at the dead-man switch, so a stock process
 * that arrives at any moment is not first (byte 128 is held) or cannot build a wal-index: it
 * finds none, and cannot take the write or recover lock to recover, write or checkpoint;
 * every query fails with SQLITE_BUSY or SQLITE_PROTOCOL. A stock process that is already
 * there has initialized <db>-shm or holds one of those locks; a shim connection that finds
 * that refuses with SQLITE_PROTOCOL.
 *
 * Read-only connections work as with stock SQLite. Where this user can write <db>-shm and the
 * sidecar, a read-only connection uses an ordinary handle. Where not (a database, -shm or
 * sidecar it cannot write, a directory it cannot write, or ?readonly_shm=1), <db>-shm is
 * opened read-only (read locks need no more), and:
 *   - while another shim connection has a libtshm handle (each holds a read lock on <db>-shm
 *     byte 129 while it does), the connection opens a read-only handle: xShmMap answers
 *     SQLITE_READONLY with the regions mapped read-only, and SQLite takes only SHARED locks,
 *     which libtshm gives read-only handles as kernel read locks its EXCLUSIVE lockers check;
 *   - while none has, the sidecar's regions may be left from an earlier session, so xShmMap
 *     answers SQLITE_READONLY_CANTINIT and SQLite builds a private wal-index from the WAL for
 *     each read transaction, holding WAL_READ_LOCK(0) as a read lock on <db>-shm byte 123,
 *     which shim checkpointers respect. SQLite asks again at each transaction and switches to
 *     the shared regions once a handle can be opened.
 *
 * Waiting for the write lock. A connection that asks for WAL_WRITE_LOCK while another holds
 * it is queued in libtshm's writer role and handed the lock when it is released (arrival
 * order, one futex wake), or when its holder dies (within 2.5 ms):
 *   - SQLite built with SQLITE_ENABLE_SETLK_TIMEOUT tells the VFS how long to block with
 *     SQLITE_FCNTL_LOCK_TIMEOUT (its busy timeout), and does so only where it holds no lock
 *     that the holder could be waiting for (it takes the write lock before its read lock);
 *     a wait that times out is SQLITE_BUSY_TIMEOUT.
 *   - Any SQLite waits up to tshm_wait_ms milliseconds (URI parameter; default the
 *     environment variable TSHM_SQLITE_WAIT_MS read when the extension loads; 0, the default,
 *     tries once as the unix VFS does), in all: SQLite's busy handler retries on top of the
 *     wait, and the retries share what is left of it until the lock is taken. Such a SQLite
 *     asks for the write lock while it holds a read mark. The holder of the write lock may
 *     itself wait for read marks (a FULL, RESTART or TRUNCATE checkpoint, which holds the
 *     checkpoint lock too): when one of its exclusive read-mark requests fails, it holds
 *     engine lock slot 8 (STEP_ASIDE_SLOT) exclusively until it releases the write lock, and a
 *     waiter holding a read mark that sees slot 8 held stops waiting (SQLITE_BUSY) within one
 *     wait slice, instead of holding up the checkpoint until its wait runs out.
 * No other lock ever waits.
 *
 * Loading sets the VFS as the default when the environment variable TSHM_SQLITE_DEFAULT is
 * set to 1; otherwise open with vfs "tshm" (URI ?vfs=tshm or sqlite3_open_v2's zVfs).
 */
#define _GNU_SOURCE
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include "tshm.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Bytes of <db>-shm that SQLite's unix VFS locks: 120 + slot for its 8 lock slots, 128 its
 * dead-man switch. 129 is the shim's own. */
#define UNIX_SHM_BASE 120
#define UNIX_SHM_WRITE 120   /* WAL_WRITE_LOCK */
#define UNIX_SHM_CKPT 121    /* WAL_CKPT_LOCK */
#define UNIX_SHM_RECOVER 122 /* WAL_RECOVER_LOCK */
#define UNIX_SHM_READ0 123   /* WAL_READ_LOCK(0) */
#define UNIX_SHM_DMS 128
#define SHIM_ATTACHED 129 /* held shared by every shim connection that has a libtshm handle */

#define WRITE_SLOT 0      /* SQLite's WAL_WRITE_LOCK: libtshm's writer role */
#define CKPT_SLOT 1       /* SQLite's WAL_CKPT_LOCK */
#define READ_SLOTS 0xf8u  /* SQLite's WAL_READ_LOCK(0..4): slots 3..7 */
#define STEP_ASIDE_SLOT 8 /* engine lock: the write lock's holder waits for read marks */

/* TSHM_SQLITE_WAIT_MS when the extension loaded: the default of tshm_wait_ms. */
static int default_wait_ms;

/* Test stop points, compiled only into the tests' build of the shim (-DTSHM_TEST_HOOKS):
 * TSHM_SQLITE_TEST_STOP="<name>:<notify fd>:<resume fd>" or "<name>:kill", read once per
 * connection when it attaches. At the named point the connection writes one byte to the notify
 * descriptor and waits for one byte on the resume descriptor, or SIGKILLs its process. The
 * points, each where a stop or a kill leaves a state of its own:
 *   locked   the guard holds its read locks on the write, checkpoint and recover bytes;
 *   dms_won  it holds the dead-man switch exclusively (nobody else has the database open),
 *            before it empties <db>-shm and downgrades the switch;
 *   dms      the switch is held shared, <db>-shm not yet checked;
 *   checked  the guard is complete, the libtshm handle not yet opened;
 *   region   xShmMap is about to create a wal-index region in the sidecar.
 * The installed shim has none of them: no environment lookup, no name. */
#ifdef TSHM_TEST_HOOKS
typedef struct { char name[16]; int notify, resume, kill; } StopPoint;

static void stop_point_read(StopPoint *sp) {
    const char *v = getenv("TSHM_SQLITE_TEST_STOP");
    char how[8] = {0};
    memset(sp, 0, sizeof *sp);
    if (v == NULL) return;
    if (sscanf(v, "%15[a-z_]:%d:%d", sp->name, &sp->notify, &sp->resume) == 3) return;
    if (sscanf(v, "%15[a-z_]:%7[a-z]", sp->name, how) == 2 && strcmp(how, "kill") == 0) {
        sp->kill = 1;
        return;
    }
    sp->name[0] = 0;
}

static void stop_point(const StopPoint *sp, const char *name) {
    char c = 's';
    if (sp->name[0] == 0 || strcmp(sp->name, name) != 0) return;
    if (sp->kill) raise(SIGKILL);
    if (write(sp->notify, &c, 1) == 1 && read(sp->resume, &c, 1) == 1) {}
}
#else
typedef struct { char none; } StopPoint;
#define stop_point_read(sp) ((void)(sp))
#define stop_point(sp, name) ((void)(sp))
#endif

typedef struct ShimFile {
    sqlite3_file base;
    tshm *h;          /* this connection's libtshm handle, opened at the first xShmMap */
    int readonly;     /* h is read-only: the wal-index is mapped read-only (SQLITE_READONLY) */
    int guard_fd;     /* <db>-shm, holding the read locks of the stock-SQLite guard */
    int guard_rdonly; /* ... opened O_RDONLY (this user cannot write it) */
    unsigned guard_slots; /* lock slots held SHARED on <db>-shm bytes while h is NULL */
    unsigned shared_slots; /* lock slots 1..7 held SHARED through h */
    unsigned excl_slots;   /* lock slots 1..7 held EXCLUSIVE through h */
    int holds_write;      /* holds the writer role (WAL_WRITE_LOCK) */
    int step_aside;       /* holds STEP_ASIDE_SLOT exclusively */
    int lock_timeout_ms;  /* SQLITE_FCNTL_LOCK_TIMEOUT: how long SQLite wants this lock to block */
    int stepped_aside;    /* the last wait for the write lock stopped to let a checkpoint on */
    int wait_ms;          /* tshm_wait_ms */
    int wait_left_ms;     /* of wait_ms, what the waits since the last success left */
    const char *path; /* SQLite keeps the name valid until xClose */
    StopPoint stop;   /* test builds: this connection's stop point */
} ShimFile;

#define ORIGFILE(p) ((sqlite3_file *)(((ShimFile *)(p)) + 1))
#define ORIGVFS ((sqlite3_vfs *)shim_vfs.pAppData)

static sqlite3_vfs shim_vfs;

/* ---------------------------------------------------------------------------------------- */
/* The stock-SQLite guard                                                                     */

static int ofd_lock(int fd, short type, off_t byte) {
    struct flock l;
    memset(&l, 0, sizeof l);
    l.l_type = type;
    l.l_whence = SEEK_SET;
    l.l_start = byte;
    l.l_len = 1;
    return fcntl(fd, F_OFD_SETLK, &l);
}

/* Whether another open file description (any process, or another connection here) holds a
 * lock on `byte`: 1 yes, 0 no, -1 error. */
static int ofd_held(int fd, off_t byte) {
    struct flock l;
    memset(&l, 0, sizeof l);
    l.l_type = F_WRLCK;
    l.l_whence = SEEK_SET;
    l.l_start = byte;
    l.l_len = 1;
    if (fcntl(fd, F_OFD_GETLK, &l) != 0) return -1;
    return l.l_type != F_UNLCK;
}

static char *suffixed(const char *path, const char *sfx) {
    size_t n = strlen(path), m = strlen(sfx);
    char *r = malloc(n + m + 1);
    if (r != NULL) {
        memcpy(r, path, n);
        memcpy(r + n, sfx, m + 1);
    }
    return r;
}

/* Takes the guard: every lock first, then the decisions, so that a stock process can never
 * find a moment in which it could recover or checkpoint:
 *   1. read locks on 120, 121, 122 (write, checkpoint, recover): a stock process that joins
 *      from now on can take none of them exclusively, so it can never build a wal-index of
 *      its own, write or checkpoint; failing here means a stock process is at work;
 *   2. the dead-man switch 128: exclusive when nobody (stock or shim) has the database open,
 *      then empty <db>-shm and downgrade in place; shared otherwise;
 *   3. <db>-shm must be empty: only stock SQLite ever writes it.
 * A user who cannot write <db>-shm opens it read-only (read locks need only read access) and
 * never takes the switch exclusively; as with stock SQLite, there is no -shm without a
 * writer having created it. */
static int guard_take(ShimFile *p) {
    stop_point_read(&p->stop);
    const StopPoint *sp = &p->stop;
    char *shm = suffixed(p->path, "-shm");
    if (shm == NULL) return SQLITE_NOMEM;
    struct stat st;
    mode_t mode = stat(p->path, &st) == 0 ? (st.st_mode & 0666) : 0644;
    int rdonly = sqlite3_uri_boolean(p->path, "readonly_shm", 0);
    int fd = rdonly ? -1 : open(shm, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode);
    if (fd < 0 && (rdonly || errno == EACCES || errno == EROFS || errno == EPERM)) {
        rdonly = 1;
        fd = open(shm, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    }
    free(shm);
    if (fd < 0) return SQLITE_CANTOPEN;
    int rc = SQLITE_OK;
    if (ofd_lock(fd, F_RDLCK, UNIX_SHM_WRITE) != 0 || ofd_lock(fd, F_RDLCK, UNIX_SHM_CKPT) != 0 ||
        ofd_lock(fd, F_RDLCK, UNIX_SHM_RECOVER) != 0)
        rc = errno == EAGAIN || errno == EACCES ? SQLITE_PROTOCOL : SQLITE_IOERR_SHMOPEN;
    stop_point(sp, "locked");
    if (rc == SQLITE_OK) {
        if (!rdonly && ofd_lock(fd, F_WRLCK, UNIX_SHM_DMS) == 0) {
            /* nobody, stock or shim, has the database open: start from an empty <db>-shm */
            stop_point(sp, "dms_won");
            if (ftruncate(fd, 0) != 0 || ofd_lock(fd, F_RDLCK, UNIX_SHM_DMS) != 0) rc = SQLITE_IOERR_SHMOPEN;
        } else if (ofd_lock(fd, F_RDLCK, UNIX_SHM_DMS) != 0) {
            rc = SQLITE_BUSY; /* a stock process is initializing <db>-shm right now */
        }
    }
    stop_point(sp, "dms");
    if (rc == SQLITE_OK && (fstat(fd, &st) != 0 || st.st_size > 0))
        rc = SQLITE_PROTOCOL; /* only stock SQLite writes <db>-shm: it is using the database */
    stop_point(sp, "checked");
    if (rc != SQLITE_OK) {
        close(fd);
        return rc;
    }
    p->guard_fd = fd;
    p->guard_rdonly = rdonly;
    return SQLITE_OK;
}

/* A read-only handle on the sidecar: only while another shim connection has a handle open
 * (SHIM_ATTACHED), which proves the wal-index in the sidecar belongs to this session of the
 * database, like a held dead-man switch for stock SQLite. Returns 1 when opened; 0 when
 * nobody is attached (SQLite then keeps a private wal-index, READONLY_CANTINIT). */
static int open_readonly(ShimFile *p) {
    if (ofd_held(p->guard_fd, SHIM_ATTACHED) != 1) return 0;
    tshm_options o;
    tshm_options_init(&o);
    o.flags = TSHM_OPEN_READONLY;
    if (tshm_open(p->path, &o, &p->h) != TSHM_OK) {
        p->h = NULL;
        return 0;
    }
    p->readonly = 1;
    ofd_lock(p->guard_fd, F_RDLCK, SHIM_ATTACHED);
    return 1;
}

/* Whether this user can write the sidecar (or, when it does not exist yet, create it). */
static int sidecar_writable(const char *path) {
    char *side = suffixed(path, "-tshm");
    if (side == NULL) return 1;
    int ok = faccessat(AT_FDCWD, side, W_OK, AT_EACCESS) == 0 || errno == ENOENT;
    free(side);
    return ok;
}

static int attach(ShimFile *p) {
    if (p->guard_fd >= 0) return SQLITE_OK;
    int rc = guard_take(p);
    if (rc != SQLITE_OK) return rc;
    if (p->guard_rdonly || !sidecar_writable(p->path)) {
        open_readonly(p); /* or no handle yet: see shimShmMap */
        return SQLITE_OK;
    }
    rc = tshm_open(p->path, NULL, &p->h);
    if (rc == TSHM_OK) {
        tshm_info info;
        if (tshm_info_get(p->h, &info) == TSHM_OK && info.readonly) {
            /* the sidecar turned out read-only: the rules of open_readonly apply */
            tshm_close(p->h, NULL);
            p->h = NULL;
            open_readonly(p);
            return SQLITE_OK;
        }
        ofd_lock(p->guard_fd, F_RDLCK, SHIM_ATTACHED);
        return SQLITE_OK;
    }
    /* a full sidecar (every instance slot taken, or no disk space for it) is SQLITE_FULL, not
     * an I/O error; libtshm's own account goes to SQLite's error log */
    int src = rc == TSHM_BUSY       ? SQLITE_BUSY
              : rc == TSHM_CONFLICT ? SQLITE_PROTOCOL
              : rc == TSHM_FULL     ? SQLITE_FULL
                                    : SQLITE_IOERR_SHMOPEN;
    const char *why = tshm_errmsg();
    sqlite3_log(src, "tshm: cannot attach to the sidecar of %s: %s", p->path, why ? why : tshm_errstr(rc));
    close(p->guard_fd);
    p->guard_fd = -1;
    p->h = NULL;
    return src;
}

static void detach(ShimFile *p) {
    if (p->h != NULL) {
        struct flock l;
        memset(&l, 0, sizeof l);
        l.l_type = F_UNLCK;
        l.l_whence = SEEK_SET;
        l.l_start = SHIM_ATTACHED;
        l.l_len = 1;
        fcntl(p->guard_fd, F_OFD_SETLK, &l); /* before the handle goes: see open_readonly */
        tshm_close(p->h, NULL);
    }
    p->h = NULL;
    p->readonly = 0;
    p->guard_slots = 0;
    p->shared_slots = 0;
    p->excl_slots = 0;
    p->holds_write = 0;
    p->step_aside = 0;
    if (p->guard_fd >= 0) close(p->guard_fd);
    p->guard_fd = -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Shared memory                                                                              */

/* Read-only connections (a -shm or sidecar this user cannot write), as with stock SQLite:
 * while another shim connection has the sidecar open, the wal-index regions are mapped
 * read-only and every xShmMap answers SQLITE_READONLY; SQLite then only reads them and takes
 * only SHARED locks (libtshm's read-only holders). While nobody has, xShmMap answers
 * SQLITE_READONLY_CANTINIT: SQLite builds a private wal-index from the WAL for each read
 * transaction, holding WAL_READ_LOCK(0) as a read lock on <db>-shm byte 123 (as stock SQLite
 * does), which a shim checkpointer respects (shimShmLock); it asks xShmMap again at every
 * transaction and switches over once a handle can be opened. */
static int shimShmMap(sqlite3_file *f, int iRegion, int szRegion, int bExtend, void volatile **pp) {
    ShimFile *p = (ShimFile *)f;
    int rc = attach(p);
    if (rc != SQLITE_OK) return rc;
    *pp = NULL;
    if (p->h == NULL && !open_readonly(p)) return SQLITE_READONLY_CANTINIT;
    void *ptr = NULL;
#ifdef TSHM_TEST_HOOKS
    if (bExtend && !p->readonly && p->stop.name[0] != 0) {
        void *have = NULL; /* the point is where a region is created, not where one is found */
        if (tshm_region(p->h, (uint32_t)iRegion, (size_t)szRegion, 0, &have) == TSHM_OK && have == NULL)
            stop_point(&p->stop, "region");
    }
#endif
    rc = tshm_region(p->h, (uint32_t)iRegion, (size_t)szRegion, p->readonly ? 0 : bExtend, &ptr);
    if (rc != TSHM_OK) return SQLITE_IOERR_SHMMAP;
    *pp = ptr;
    return p->readonly ? SQLITE_READONLY : SQLITE_OK;
}

/* Without a libtshm handle (READONLY_CANTINIT): SHARED locks are read locks on <db>-shm, as
 * stock SQLite takes them; 120..122 are held by the guard already. */
static int guard_shm_lock(ShimFile *p, int offset, int n, int flags) {
    if (flags & SQLITE_SHM_EXCLUSIVE) return (flags & SQLITE_SHM_UNLOCK) ? SQLITE_OK : SQLITE_READONLY;
    if (n != 1 || offset < 3 || (flags & SQLITE_SHM_UNLOCK)) return SQLITE_OK;
    if (p->guard_slots & 1u << offset) return SQLITE_OK;
    if (ofd_lock(p->guard_fd, F_RDLCK, UNIX_SHM_BASE + offset) != 0)
        return errno == EAGAIN || errno == EACCES ? SQLITE_BUSY : SQLITE_IOERR_SHMLOCK;
    p->guard_slots |= 1u << offset;
    return SQLITE_OK;
}

/* Slots 1..7 as libtshm engine locks. */
static int engine_lock(ShimFile *p, int offset, int n, int flags) {
    uint32_t tf = (flags & SQLITE_SHM_SHARED) ? TSHM_LOCK_SHARED : TSHM_LOCK_EXCLUSIVE;
    if (flags & SQLITE_SHM_UNLOCK) tf |= TSHM_LOCK_UNLOCK;
    int rc = tshm_lock(p->h, (uint32_t)offset, (uint32_t)n, tf);
    if (rc == TSHM_OK && tf == TSHM_LOCK_EXCLUSIVE && offset <= 3 && offset + n > 3 &&
        ofd_held(p->guard_fd, UNIX_SHM_READ0) != 0) {
        /* a connection without a handle reads with its own wal-index under WAL_READ_LOCK(0):
         * no checkpoint may copy frames into the database meanwhile */
        tshm_lock(p->h, (uint32_t)offset, (uint32_t)n, TSHM_LOCK_EXCLUSIVE | TSHM_LOCK_UNLOCK);
        rc = TSHM_BUSY;
    }
    unsigned bits = ((1u << n) - 1) << offset;
    if (rc == TSHM_OK) {
        unsigned *held = (flags & SQLITE_SHM_SHARED) ? &p->shared_slots : &p->excl_slots;
        *held = (flags & SQLITE_SHM_UNLOCK) ? *held & ~bits : *held | bits;
    }
    if (rc == TSHM_BUSY && tf == TSHM_LOCK_EXCLUSIVE && (bits & READ_SLOTS) && p->holds_write &&
        (p->excl_slots & 1u << CKPT_SLOT) && !p->step_aside) {
        /* A checkpoint holding the write lock (FULL, RESTART, TRUNCATE) waits for read marks:
         * waiters for the write lock that hold one must not wait meanwhile (see the top of
         * this file). A writer's one try to restart the log holds no checkpoint lock. */
        p->step_aside = tshm_lock(p->h, STEP_ASIDE_SLOT, 1, TSHM_LOCK_EXCLUSIVE) == TSHM_OK;
    }
    if (rc == TSHM_OK) return SQLITE_OK;
    if (rc == TSHM_BUSY) return SQLITE_BUSY;
    if (rc == TSHM_READONLY) return SQLITE_READONLY;
    /* releasing a lock that is not held is harmless, as in the unix VFS; converting a slot
     * this connection holds in the other mode is refused as a conflict, never granted */
    if (rc == TSHM_MISUSE) return (flags & SQLITE_SHM_UNLOCK) ? SQLITE_OK : SQLITE_BUSY;
    return SQLITE_IOERR_SHMLOCK;
}

/* Asked by libtshm while this connection waits for the write lock: go on unless it holds a
 * read mark and the holder waits for read marks (STEP_ASIDE_SLOT is held). */
static int keep_waiting(void *ctx) {
    ShimFile *p = ctx;
    if ((p->shared_slots & READ_SLOTS) == 0) return 1;
    if (tshm_lock(p->h, STEP_ASIDE_SLOT, 1, TSHM_LOCK_SHARED) != TSHM_OK) {
        p->stepped_aside = 1;
        return 0;
    }
    tshm_lock(p->h, STEP_ASIDE_SLOT, 1, TSHM_LOCK_SHARED | TSHM_LOCK_UNLOCK);
    return 1;
}

/* WAL_WRITE_LOCK (and, in one request, the slots after it). SHARED is only asked by read-only
 * connections, to learn whether a writer is at work: granted when no live handle holds it. */
static int write_lock(ShimFile *p, int n, int flags) {
    if (flags & SQLITE_SHM_SHARED) {
        if (flags & SQLITE_SHM_UNLOCK) return SQLITE_OK;
        tshm_owner_info o;
        if (tshm_owner(p->h, TSHM_ROLE_WRITER, &o) != TSHM_OK) return SQLITE_IOERR_SHMLOCK;
        return o.alive ? SQLITE_BUSY : SQLITE_OK;
    }
    if (p->readonly) return (flags & SQLITE_SHM_UNLOCK) ? SQLITE_OK : SQLITE_READONLY;
    if (flags & SQLITE_SHM_UNLOCK) {
        if (n > 1) engine_lock(p, 1, n - 1, flags);
        if (p->step_aside) tshm_lock(p->h, STEP_ASIDE_SLOT, 1, TSHM_LOCK_EXCLUSIVE | TSHM_LOCK_UNLOCK);
        p->step_aside = 0;
        if (!p->holds_write) return SQLITE_OK;
        p->holds_write = 0;
        return tshm_writer_release(p->h) == TSHM_OK ? SQLITE_OK : SQLITE_IOERR_SHMLOCK;
    }
    int timed = p->lock_timeout_ms > 0;
    int wait = timed ? p->lock_timeout_ms : p->wait_left_ms;
    p->stepped_aside = 0;
    int rc = tshm_writer_acquire(p->h, 0); /* a free lock costs one CAS, nothing timed */
    if (rc == TSHM_BUSY && wait > 0) {
        struct timespec t0, t1;
        clock_gettime(CLOCK_MONOTONIC, &t0);
        rc = tshm_writer_acquire_while(p->h, (uint32_t)wait, keep_waiting, p);
        clock_gettime(CLOCK_MONOTONIC, &t1);
        /* SQLite's busy handler retries on top of this wait: one tshm_wait_ms serves all the
         * retries until the lock is taken, so they never add up to more */
        long waited = (t1.tv_sec - t0.tv_sec) * 1000 + (t1.tv_nsec - t0.tv_nsec) / 1000000;
        if (!timed) p->wait_left_ms = waited >= p->wait_left_ms ? 0 : p->wait_left_ms - (int)waited;
    }
    if (rc == TSHM_BUSY) return timed && !p->stepped_aside ? SQLITE_BUSY_TIMEOUT : SQLITE_BUSY;
    if (rc == TSHM_MISUSE) return SQLITE_BUSY; /* held by this connection already */
    if (rc != TSHM_OK) return rc == TSHM_READONLY ? SQLITE_READONLY : SQLITE_IOERR_SHMLOCK;
    p->holds_write = 1;
    p->wait_left_ms = p->wait_ms;
    if (n > 1) {
        int erc = engine_lock(p, 1, n - 1, flags);
        if (erc != SQLITE_OK) {
            p->holds_write = 0;
            tshm_writer_release(p->h);
            return erc;
        }
    }
    return SQLITE_OK;
}

static int shimShmLock(sqlite3_file *f, int offset, int n, int flags) {
    ShimFile *p = (ShimFile *)f;
    int rc = attach(p);
    if (rc != SQLITE_OK) return rc;
    if ((flags & SQLITE_SHM_UNLOCK) && n == 1 && offset < 8 && (p->guard_slots & 1u << offset)) {
        /* taken before this connection had a handle */
        struct flock l;
        memset(&l, 0, sizeof l);
        l.l_type = F_UNLCK;
        l.l_whence = SEEK_SET;
        l.l_start = UNIX_SHM_BASE + offset;
        l.l_len = 1;
        p->guard_slots &= ~(1u << offset);
        return fcntl(p->guard_fd, F_OFD_SETLK, &l) == 0 ? SQLITE_OK : SQLITE_IOERR_SHMLOCK;
    }
    if (p->h == NULL) return guard_shm_lock(p, offset, n, flags);
    if (offset == WRITE_SLOT) return write_lock(p, n, flags);
    return engine_lock(p, offset, n, flags);
}

static void shimShmBarrier(sqlite3_file *f) {
    (void)f;
    __atomic_thread_fence(__ATOMIC_SEQ_CST);
}

static int shimShmUnmap(sqlite3_file *f, int deleteFlag) {
    (void)deleteFlag; /* the sidecar is never deleted: another process may be opening it */
    detach((ShimFile *)f);
    return SQLITE_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Everything else is forwarded                                                               */

static int shimClose(sqlite3_file *f) {
    detach((ShimFile *)f);
    sqlite3_file *o = ORIGFILE(f);
    int rc = o->pMethods ? o->pMethods->xClose(o) : SQLITE_OK;
    return rc;
}
#define O ORIGFILE(f)
static int shimRead(sqlite3_file *f, void *b, int n, sqlite3_int64 off) { return O->pMethods->xRead(O, b, n, off); }
static int shimWrite(sqlite3_file *f, const void *b, int n, sqlite3_int64 off) { return O->pMethods->xWrite(O, b, n, off); }
static int shimTruncate(sqlite3_file *f, sqlite3_int64 size) { return O->pMethods->xTruncate(O, size); }
static int shimSync(sqlite3_file *f, int flags) { return O->pMethods->xSync(O, flags); }
static int shimFileSize(sqlite3_file *f, sqlite3_int64 *s) { return O->pMethods->xFileSize(O, s); }
static int shimLock(sqlite3_file *f, int l) { return O->pMethods->xLock(O, l); }
static int shimUnlock(sqlite3_file *f, int l) { return O->pMethods->xUnlock(O, l); }
static int shimCheckReservedLock(sqlite3_file *f, int *r) { return O->pMethods->xCheckReservedLock(O, r); }
static int shimSectorSize(sqlite3_file *f) { return O->pMethods->xSectorSize(O); }
static int shimDeviceCharacteristics(sqlite3_file *f) { return O->pMethods->xDeviceCharacteristics(O); }
static int shimFetch(sqlite3_file *f, sqlite3_int64 off, int n, void **pp) { return O->pMethods->xFetch(O, off, n, pp); }
static int shimUnfetch(sqlite3_file *f, sqlite3_int64 off, void *p) { return O->pMethods->xUnfetch(O, off, p); }
static int shimFileControl(sqlite3_file *f, int op, void *arg) {
    if (op == SQLITE_FCNTL_LOCK_TIMEOUT) {
        /* SQLite (SETLK_TIMEOUT builds) says how long the next locks may block: the write lock
         * waits that long (shimShmLock); the unix VFS below keeps its own copy for its locks */
        ShimFile *p = (ShimFile *)f;
        int want = *(int *)arg, old = p->lock_timeout_ms;
        int rc = O->pMethods->xFileControl(O, op, arg);
        p->lock_timeout_ms = want > 0 ? want : 0;
        *(int *)arg = old;
        return rc == SQLITE_NOTFOUND ? SQLITE_OK : rc;
    }
    int rc = O->pMethods->xFileControl(O, op, arg);
    if (op == SQLITE_FCNTL_VFSNAME && rc == SQLITE_OK)
        *(char **)arg = sqlite3_mprintf("tshm/%z", *(char **)arg);
    return rc;
}
#undef O

static const sqlite3_io_methods shim_io = {
    3, shimClose, shimRead, shimWrite, shimTruncate, shimSync, shimFileSize, shimLock, shimUnlock,
    shimCheckReservedLock, shimFileControl, shimSectorSize, shimDeviceCharacteristics,
    shimShmMap, shimShmLock, shimShmBarrier, shimShmUnmap, shimFetch, shimUnfetch,
};

static int shimOpen(sqlite3_vfs *vfs, const char *name, sqlite3_file *f, int flags, int *out) {
    (void)vfs;
    if (!(flags & SQLITE_OPEN_MAIN_DB) || name == NULL)
        return ORIGVFS->xOpen(ORIGVFS, name, f, flags, out);
    ShimFile *p = (ShimFile *)f;
    memset(p, 0, sizeof *p);
    p->guard_fd = -1;
    p->path = name;
    sqlite3_int64 w = sqlite3_uri_int64(name, "tshm_wait_ms", default_wait_ms);
    p->wait_ms = w < 0 ? 0 : w > INT32_MAX ? INT32_MAX : (int)w;
    p->wait_left_ms = p->wait_ms;
    int rc = ORIGVFS->xOpen(ORIGVFS, name, ORIGFILE(f), flags, out);
    /* SQLite calls xClose whenever pMethods is set, even after a failed open: keep ours set
     * exactly when the wrapped file needs closing */
    p->base.pMethods = ORIGFILE(f)->pMethods != NULL ? &shim_io : NULL;
    return rc;
}

#define V ORIGVFS
static int shimDelete(sqlite3_vfs *v, const char *z, int s) { (void)v; return V->xDelete(V, z, s); }
static int shimAccess(sqlite3_vfs *v, const char *z, int fl, int *r) { (void)v; return V->xAccess(V, z, fl, r); }
static int shimFullPathname(sqlite3_vfs *v, const char *z, int n, char *o) { (void)v; return V->xFullPathname(V, z, n, o); }
static void *shimDlOpen(sqlite3_vfs *v, const char *z) { (void)v; return V->xDlOpen(V, z); }
static void shimDlError(sqlite3_vfs *v, int n, char *z) { (void)v; V->xDlError(V, n, z); }
static void (*shimDlSym(sqlite3_vfs *v, void *p, const char *z))(void) { (void)v; return V->xDlSym(V, p, z); }
static void shimDlClose(sqlite3_vfs *v, void *p) { (void)v; V->xDlClose(V, p); }
static int shimRandomness(sqlite3_vfs *v, int n, char *z) { (void)v; return V->xRandomness(V, n, z); }
static int shimSleep(sqlite3_vfs *v, int us) { (void)v; return V->xSleep(V, us); }
static int shimCurrentTime(sqlite3_vfs *v, double *t) { (void)v; return V->xCurrentTime(V, t); }
static int shimGetLastError(sqlite3_vfs *v, int n, char *z) { (void)v; return V->xGetLastError(V, n, z); }
static int shimCurrentTimeInt64(sqlite3_vfs *v, sqlite3_int64 *t) { (void)v; return V->xCurrentTimeInt64(V, t); }
#undef V

#ifdef _WIN32
__declspec(dllexport)
#endif
int sqlite3_tshmsqlite_init(sqlite3 *db, char **err, const sqlite3_api_routines *api) {
    (void)db;
    (void)err;
    SQLITE_EXTENSION_INIT2(api);
    if (sqlite3_vfs_find("tshm") != NULL) return SQLITE_OK_LOAD_PERMANENTLY;
    sqlite3_vfs *orig = sqlite3_vfs_find("unix");
    if (orig == NULL) orig = sqlite3_vfs_find(NULL);
    if (orig == NULL) return SQLITE_ERROR;
    shim_vfs.iVersion = orig->iVersion < 2 ? orig->iVersion : 2;
    shim_vfs.szOsFile = orig->szOsFile + (int)sizeof(ShimFile);
    shim_vfs.mxPathname = orig->mxPathname;
    shim_vfs.zName = "tshm";
    shim_vfs.pAppData = orig;
    shim_vfs.xOpen = shimOpen;
    shim_vfs.xDelete = shimDelete;
    shim_vfs.xAccess = shimAccess;
    shim_vfs.xFullPathname = shimFullPathname;
    shim_vfs.xDlOpen = shimDlOpen;
    shim_vfs.xDlError = shimDlError;
    shim_vfs.xDlSym = shimDlSym;
    shim_vfs.xDlClose = shimDlClose;
    shim_vfs.xRandomness = shimRandomness;
    shim_vfs.xSleep = shimSleep;
    shim_vfs.xCurrentTime = shimCurrentTime;
    shim_vfs.xGetLastError = shimGetLastError;
    shim_vfs.xCurrentTimeInt64 = shimCurrentTimeInt64;
    const char *wait = getenv("TSHM_SQLITE_WAIT_MS");
    default_wait_ms = wait != NULL ? atoi(wait) : 0;
    if (default_wait_ms < 0) default_wait_ms = 0;
    const char *dflt = getenv("TSHM_SQLITE_DEFAULT");
    int rc = sqlite3_vfs_register(&shim_vfs, dflt != NULL && strcmp(dflt, "1") == 0);
    return rc == SQLITE_OK ? SQLITE_OK_LOAD_PERMANENTLY : rc;
}
