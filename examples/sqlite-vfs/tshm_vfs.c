/*
 * tshm_vfs.c — a SQLite VFS shim whose shared memory runs on libtshm.
 *
 * Built as the loadable extension libtshm_sqlite.so (entry point sqlite3_tshmsqlite_init)
 * against the system's sqlite3ext.h; it never links a SQLite of its own. It registers the VFS
 * "tshm", which wraps the default unix VFS: every file operation is forwarded untouched, and
 * only the four shared-memory methods of main database files change:
 *
 *   xShmMap      tshm_region: SQLite's wal-index regions live in the <db>-tshm sidecar
 *   xShmLock     tshm_lock: SQLite's 8 lock slots are libtshm engine lock slots 0..7
 *                (non-blocking, all-or-nothing, connections of one process conflict as
 *                processes do)
 *   xShmBarrier  a full fence
 *   xShmUnmap    closes the connection's libtshm handle; the sidecar is never deleted
 *
 * Each connection has its own libtshm handle. The first process to open the sidecar when
 * nobody has it open finds the regions zeroed, so SQLite recovers from the WAL, as with its
 * own dead-man switch.
 *
 * Fail-closed against stock SQLite: a process using the plain unix VFS on the same database
 * would use <db>-shm and never see libtshm's locks. So every shim connection also holds
 * open-file-description read locks on <db>-shm bytes 120 (SQLite's WAL write lock) and 128 (its
 * dead-man switch), and the shim keeps that file empty. A stock process that arrives later is
 * not first (byte 128 is held), finds no valid wal-index, and cannot take the write lock to
 * recover or write: every query fails with SQLITE_BUSY. A stock process that is already there
 * has initialized <db>-shm; a shim connection that finds it non-empty while byte 128 is held
 * refuses with SQLITE_PROTOCOL.
 *
 * Loading sets the VFS as the default when the environment variable TSHM_SQLITE_DEFAULT is
 * set to 1; otherwise open with vfs "tshm" (URI ?vfs=tshm or sqlite3_open_v2's zVfs).
 */
#define _GNU_SOURCE
#include <sqlite3ext.h>
SQLITE_EXTENSION_INIT1

#include "tshm.h"

#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define UNIX_SHM_WRITE 120 /* SQLite's unix VFS: lock byte of WAL_WRITE_LOCK in <db>-shm */
#define UNIX_SHM_DMS 128   /* ... and its dead-man switch */

typedef struct ShimFile {
    sqlite3_file base;
    tshm *h;         /* this connection's libtshm handle, opened at the first xShmMap */
    int readonly;    /* the handle could not open the sidecar for writing */
    int guard_fd;    /* <db>-shm, holding the read locks of the stock-SQLite guard */
    const char *path; /* SQLite keeps the name valid until xClose */
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

static int guard_take(ShimFile *p) {
    size_t n = strlen(p->path);
    char *shm = malloc(n + 5);
    if (shm == NULL) return SQLITE_NOMEM;
    memcpy(shm, p->path, n);
    memcpy(shm + n, "-shm", 5);
    struct stat st;
    mode_t mode = stat(p->path, &st) == 0 ? (st.st_mode & 0666) : 0644;
    int fd = open(shm, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, mode);
    free(shm);
    if (fd < 0) return SQLITE_IOERR_SHMOPEN;
    int rc = SQLITE_OK;
    if (ofd_lock(fd, F_WRLCK, UNIX_SHM_DMS) == 0) {
        /* nobody, stock or shim, has the database open: start from an empty <db>-shm */
        if (ftruncate(fd, 0) != 0 || ofd_lock(fd, F_RDLCK, UNIX_SHM_DMS) != 0) rc = SQLITE_IOERR_SHMOPEN;
    } else if (ofd_lock(fd, F_RDLCK, UNIX_SHM_DMS) != 0) {
        rc = SQLITE_BUSY; /* a stock process is initializing <db>-shm right now */
    } else if (fstat(fd, &st) != 0 || st.st_size > 0) {
        rc = SQLITE_PROTOCOL; /* only stock SQLite writes <db>-shm: it is using the database */
    }
    if (rc == SQLITE_OK && ofd_lock(fd, F_RDLCK, UNIX_SHM_WRITE) != 0)
        rc = SQLITE_PROTOCOL; /* a stock writer holds its write lock */
    if (rc != SQLITE_OK) {
        close(fd);
        return rc;
    }
    p->guard_fd = fd;
    return SQLITE_OK;
}

static int attach(ShimFile *p) {
    if (p->h != NULL) return SQLITE_OK;
    int rc = guard_take(p);
    if (rc != SQLITE_OK) return rc;
    rc = tshm_open(p->path, NULL, &p->h);
    if (rc == TSHM_OK) {
        tshm_info info;
        p->readonly = tshm_info_get(p->h, &info) == TSHM_OK && info.readonly;
        return SQLITE_OK;
    }
    close(p->guard_fd);
    p->guard_fd = -1;
    p->h = NULL;
    return rc == TSHM_BUSY ? SQLITE_BUSY : rc == TSHM_CONFLICT ? SQLITE_PROTOCOL : SQLITE_IOERR_SHMOPEN;
}

static void detach(ShimFile *p) {
    if (p->h != NULL) tshm_close(p->h, NULL);
    p->h = NULL;
    if (p->guard_fd >= 0) close(p->guard_fd);
    p->guard_fd = -1;
}

/* ---------------------------------------------------------------------------------------- */
/* Shared memory                                                                              */

static int shimShmMap(sqlite3_file *f, int iRegion, int szRegion, int bExtend, void volatile **pp) {
    ShimFile *p = (ShimFile *)f;
    int rc = attach(p);
    if (rc != SQLITE_OK) return rc;
    /* a sidecar this user cannot write: SQLite falls back to its private wal-index */
    if (p->readonly) return SQLITE_READONLY_CANTINIT;
    void *ptr = NULL;
    rc = tshm_region(p->h, (uint32_t)iRegion, (size_t)szRegion, bExtend, &ptr);
    if (rc == TSHM_READONLY) return SQLITE_READONLY_CANTINIT;
    if (rc != TSHM_OK) return SQLITE_IOERR_SHMMAP;
    *pp = ptr;
    return SQLITE_OK;
}

static int shimShmLock(sqlite3_file *f, int offset, int n, int flags) {
    ShimFile *p = (ShimFile *)f;
    int rc = attach(p);
    if (rc != SQLITE_OK) return rc;
    uint32_t tf = (flags & SQLITE_SHM_SHARED) ? TSHM_LOCK_SHARED : TSHM_LOCK_EXCLUSIVE;
    if (flags & SQLITE_SHM_UNLOCK) tf |= TSHM_LOCK_UNLOCK;
    rc = tshm_lock(p->h, (uint32_t)offset, (uint32_t)n, tf);
    if (rc == TSHM_OK) return SQLITE_OK;
    if (rc == TSHM_BUSY) return SQLITE_BUSY;
    /* releasing a lock that is not held is harmless, as in the unix VFS; converting a slot
     * this connection holds in the other mode is refused as a conflict, never granted */
    if (rc == TSHM_MISUSE) return (flags & SQLITE_SHM_UNLOCK) ? SQLITE_OK : SQLITE_BUSY;
    return SQLITE_IOERR_SHMLOCK;
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
    const char *dflt = getenv("TSHM_SQLITE_DEFAULT");
    int rc = sqlite3_vfs_register(&shim_vfs, dflt != NULL && strcmp(dflt, "1") == 0);
    return rc == SQLITE_OK ? SQLITE_OK_LOAD_PERMANENTLY : rc;
}
