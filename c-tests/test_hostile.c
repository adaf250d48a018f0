/*
 * test_hostile.c — resource limits and hostile environments.
 *
 * Each scenario runs in a child process (a crash, SIGBUS or hang shows as its exit status) and
 * checks a documented error code and message, then that nothing committed is lost: the state
 * is still readable by another process, and after a reopen.
 *
 *  - a disk that fills up while the sidecar grows (a small tmpfs mounted in a private mount
 *    namespace; needs root, else SKIP);
 *  - the file-size limit at the sidecar's creation;
 *  - no descriptor left at open (RLIMIT_NOFILE);
 *  - unwritable directories, permissions changed underneath, an unreadable database file;
 *  - a sidecar replaced (renamed over, unlinked) while processes are attached.
 *
 * `test_hostile [name-part]` runs only the tests whose name contains the argument.
 */
#define _GNU_SOURCE
#include "harness.h"

#include <dirent.h>
#include <sched.h>
#include <sys/mount.h>
#include <sys/resource.h>

static void check_child(int rc, const char *what) {
    if (rc != 0) fprintf(stderr, "FAIL %s: child exited %d%s\n", what, rc, rc == 128 + SIGBUS ? " (SIGBUS)" : "");
    CHECK(rc == 0);
}

static int msg_has(const char *part) {
    const char *m = tshm_errmsg();
    if (m != NULL && strstr(m, part) != NULL) return 1;
    fprintf(stderr, "  message lacks \"%s\": %s\n", part, m ? m : "(none)");
    return 0;
}

/* Creates the database file (the sidecar's owner and mode follow it). */
static void make_db(const char *db, mode_t mode) {
    int fd = open(db, O_RDWR | O_CREAT | O_CLOEXEC, mode);
    if (fd < 0 || write(fd, "db", 2) != 2) {
        perror(db);
        exit(2);
    }
    fchmod(fd, mode);
    close(fd);
}

static int open_rc(const char *db, uint32_t flags, tshm **out) {
    tshm_options o;
    tshm_options_init(&o);
    o.flags = flags;
    *out = NULL;
    return tshm_open(db, &o, out);
}

/* Descriptors open in this process. */
static int open_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    int n = 0;
    if (d == NULL) return -1;
    while (readdir(d) != NULL) n++;
    closedir(d);
    return n - 3; /* ".", ".." and the directory's own descriptor */
}

/* Root passes permission checks: a child that tests them becomes nobody. */
static int become_nobody(void) {
    if (setgid(65534) != 0 || setuid(65534) != 0) {
        fprintf(stderr, "FAIL cannot become uid 65534: %s\n", strerror(errno));
        harness_failed++;
        return 0;
    }
    return 1;
}

/* ------------------------------------------------------------------------------------------ */
/* 1. Disk full while the sidecar grows                                                        */
/* ------------------------------------------------------------------------------------------ */

static uint32_t page_of(uint64_t f) { return (uint32_t)((f * 2654435761u) % 50000); }

/* Every committed frame up to `upto` is found as the newest of its page. */
static int lookups_ok(tshm *h, uint64_t upto) {
    for (uint64_t f = upto > 3000 ? upto - 3000 : 1; f <= upto; f++) {
        uint64_t got = 0;
        int rc = tshm_index_find(h, page_of(f), upto, &got);
        if (rc != TSHM_OK || got < f) {
            fprintf(stderr, "  lookup of frame %llu: %s, got %llu\n", (unsigned long long)f,
                    tshm_errstr(rc), (unsigned long long)got);
            return 0;
        }
    }
    return 1;
}

static int write_file(const char *path, size_t bytes) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    static char buf[65536];
    memset(buf, 0x5a, sizeof buf);
    size_t done = 0;
    while (done < bytes) {
        ssize_t n = write(fd, buf, bytes - done < sizeof buf ? bytes - done : sizeof buf);
        if (n <= 0) break;
        done += (size_t)n;
    }
    close(fd);
    return done == bytes ? 0 : -1;
}

/* A reader in another process: opens, finds every committed frame, closes. */
static void reader_finds_committed(void *arg) {
    const uint64_t *upto = arg;
    tshm *h = open_with(getenv("HOSTILE_DB"), 0, 0, 0);
    CHECK(h != NULL);
    if (h == NULL) return;
    tshm_snapshot s;
    CHECK_RC(tshm_snapshot_get(h, &s), TSHM_OK);
    CHECK(s.max_frame == *upto);
    CHECK(lookups_ok(h, *upto));
    void *region = NULL;
    CHECK_RC(tshm_region(h, 0, 4096, 0, &region), TSHM_OK);
    CHECK(region != NULL && ((volatile uint64_t *)region)[0] == 0x5eed);
    close_ok(h);
}

/* In a child: mounts a tmpfs of `opts` at mnt in a private mount namespace (so nothing leaks
 * if the test dies), or reports `test` as skipped and ends the child. */
static void tmpfs_or_skip(const char *mnt, const char *name, const char *opts, const char *test) {
    if (unshare(CLONE_NEWNS) != 0 || mount(NULL, "/", NULL, MS_REC | MS_PRIVATE, NULL) != 0 ||
        mount(name, mnt, "tmpfs", 0, opts) != 0) {
        printf("SKIP %s: cannot mount a tmpfs in a private namespace: %s\n", test, strerror(errno));
        fflush(NULL);
        _exit(0);
    }
}

static void disk_full_in_namespace(void *arg) {
    const char *mnt = arg;
    tmpfs_or_skip(mnt, "tshm-full", "size=3072k", "test_disk_full_while_the_sidecar_grows");
    char db[700], filler[700], other[700];
    snprintf(db, sizeof db, "%s/full.db", mnt);
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    snprintf(other, sizeof other, "%s/other.db", mnt);
    setenv("HOSTILE_DB", db, 1);
    make_db(db, 0644);
    make_db(other, 0644);
    CHECK(write_file(filler, 768 * 1024) == 0);

    tshm *h = open_with(db, 0, 0, 0);
    CHECK(h != NULL);
    if (h == NULL) return;
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    void *region = NULL;
    CHECK_RC(tshm_region(h, 0, 4096, 1, &region), TSHM_OK);
    if (region != NULL) ((volatile uint64_t *)region)[0] = 0x5eed;

    /* Grow the index until the disk is full, committing as it goes. */
    uint64_t f = 0;
    int rc = TSHM_OK;
    while (f < 10000000) {
        rc = tshm_index_append(h, page_of(f + 1), f + 1);
        if (rc != TSHM_OK) break;
        f++;
        if (f % 1000 == 0) publish_max_frame(h, f);
    }
    CHECK_RC(rc, TSHM_FULL);
    CHECK(msg_has("No space left on device"));
    CHECK(f > 10000);
    /* The uncommitted appends are rolled back; the committed state answers. */
    publish_max_frame(h, f);
    CHECK(lookups_ok(h, f));
    /* Regions grow the same pool: full too, and a failed growth can be retried. */
    void *r1 = NULL;
    for (int i = 0; i < 3; i++) {
        CHECK_RC(tshm_region(h, 1, 4096, 1, &r1), TSHM_FULL);
        CHECK(r1 == NULL);
    }
    tshm_index_stats st;
    CHECK_RC(tshm_index_stats_get(h, &st), TSHM_OK);
    CHECK(st.entries == f);

    /* Another process joins the full sidecar and reads everything (maps every grown page). */
    check_child(in_child(reader_finds_committed, &f), "reader on a full disk");
    /* A new sidecar cannot even be created on the full disk: FULL, nothing half made. */
    tshm *o = NULL;
    CHECK_RC(open_rc(other, 0, &o), TSHM_FULL);
    CHECK(o == NULL);
    CHECK(msg_has("No space left on device"));

    /* Space comes back: the writer carries on where it stopped. */
    CHECK(unlink(filler) == 0);
    for (int i = 0; i < 2000; i++) {
        rc = tshm_index_append(h, page_of(f + 1), f + 1);
        if (rc != TSHM_OK) break;
        f++;
    }
    CHECK_RC(rc, TSHM_OK);
    publish_max_frame(h, f);
    CHECK(lookups_ok(h, f));
    CHECK_RC(tshm_region(h, 1, 4096, 1, &r1), TSHM_OK);
    CHECK(r1 != NULL);
    CHECK_RC(open_rc(other, 0, &o), TSHM_OK);
    close_ok(o);
    check_child(in_child(reader_finds_committed, &f), "reader after space came back");
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
    close_ok(h);
}

static int has_hole(const char *path) {
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    off_t h = fd >= 0 ? lseek(fd, 0, SEEK_HOLE) : -1;
    int r = fd >= 0 && fstat(fd, &st) == 0 && h < st.st_size;
    if (fd >= 0) close(fd);
    return r;
}

/* Fills the filesystem of `path` with a file at `path` until it is full. */
static void fill_up(const char *path) {
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    static char buf[4096];
    memset(buf, 0x5a, sizeof buf);
    while (fd >= 0 && write(fd, buf, sizeof buf) > 0) {}
    while (fd >= 0 && write(fd, buf, 1) > 0) {}
    if (fd >= 0) close(fd);
}

static void open_sparse_in_child(void *arg) {
    tshm *h = NULL;
    int rc = open_rc(arg, 0, &h);
    CHECK_RC(rc, TSHM_FULL);
    CHECK(h == NULL);
    CHECK(msg_has("No space left on device"));
    CHECK(msg_has("sparse"));
}

/* A read-only handle whose process may write the file: the process's mapping is writable
 * (later handles share it), so the holes need storage all the same. */
static void open_sparse_readonly_in_child(void *arg) {
    tshm *h = NULL;
    CHECK_RC(open_rc(arg, TSHM_OPEN_READONLY, &h), TSHM_FULL);
    CHECK(h == NULL);
    CHECK(msg_has("sparse"));
}

/* A sidecar whose pages have no storage behind them (a sparse copy: its header page and
 * holes) on a full disk: touching a hole through the mapping would be SIGBUS. */
/* A process that may only read the sidecar, on the full disk, after a writable open gave the
 * holes storage: reads everything. */
static void read_sparse_as_reader_in_child(void *arg) {
    if (!become_nobody()) return;
    tshm *h = NULL;
    CHECK_RC(open_rc(arg, 0, &h), TSHM_OK);
    if (h == NULL) return;
    CHECK(info_of(h).readonly == 1);
    uint64_t got = 0;
    CHECK_RC(tshm_index_find(h, 8, 1, &got), TSHM_OK);
    CHECK(got == 1);
    tshm_index_stats st;
    CHECK_RC(tshm_index_stats_get(h, &st), TSHM_OK);
    tshm_owner_info oi;
    for (uint32_t role = 0; role < 3 + 64; role++) tshm_owner(h, role, &oi);
    close_ok(h);
}

struct sparse_case {
    char mnt[600];
    int no_fallocate; /* as on a filesystem without fallocate (test point) */
};

static void sparse_sidecar_in_namespace(void *arg) {
    const struct sparse_case *sc = arg;
    const char *mnt = sc->mnt;
    if (sc->no_fallocate) setenv("TSHM_TEST_FAIL_AT", "hole_storage", 1);
    tmpfs_or_skip(mnt, "tshm-sparse", "size=2m", "test_sparse_sidecar_on_a_full_disk");
    char db[700], filler[700], tmp[800];
    snprintf(db, sizeof db, "%s/sparse.db", mnt);
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    make_db(db, 0644);
    tshm *h = open_with(db, 0, 0, 0);
    CHECK(h != NULL);
    close_ok(h);
    /* the sparse copy, in a child (this process must not open and close the sidecar) */
    const char *side = sidecar_of(db);
    snprintf(tmp, sizeof tmp, "%s.sparse", side);
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        char page[4096];
        struct stat st;
        int in = open(side, O_RDONLY | O_CLOEXEC);
        int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
        if (in < 0 || out < 0 || fstat(in, &st) != 0 || pread(in, page, sizeof page, 0) != 4096 ||
            ftruncate(out, st.st_size) != 0 || pwrite(out, page, sizeof page, 0) != 4096)
            _exit(3);
        _exit(0);
    }
    CHECK(child_wait(kid) == 0);
    CHECK(rename(tmp, side) == 0);
    fill_up(filler);
    CHECK(has_hole(side));
    if (!sc->no_fallocate) {
        check_child(in_child(open_sparse_in_child, db), "writable open of a sparse sidecar");
        check_child(in_child(open_sparse_readonly_in_child, db), "read-only open of a sparse sidecar");
    } else {
        /* zeros written over the holes instead: FULL all the same */
        CHECK_RC(open_rc(db, 0, &h), TSHM_FULL);
        CHECK(h == NULL);
        CHECK(msg_has("No space left on device"));
    }
    /* Space comes back: a writable open gives the holes storage, and everyone can join. */
    CHECK(unlink(filler) == 0);
    h = open_with(db, 0, 0, 0);
    CHECK(h != NULL);
    if (h == NULL) return;
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    CHECK_RC(tshm_index_append(h, 8, 1), TSHM_OK);
    publish_max_frame(h, 1);
    fill_up(filler);
    check_child(in_child(read_sparse_as_reader_in_child, db), "reader of a mended sidecar");
    tshm *r = NULL;
    CHECK_RC(open_rc(db, TSHM_OPEN_READONLY, &r), TSHM_OK);
    if (r != NULL) {
        uint64_t got = 0;
        CHECK_RC(tshm_index_find(r, 8, 1, &got), TSHM_OK);
        CHECK(got == 1);
        close_ok(r);
    }
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
    close_ok(h);
}

static void test_sparse_sidecar_on_a_full_disk(void) {
    if (geteuid() != 0) {
        printf("SKIP test_sparse_sidecar_on_a_full_disk: needs root to mount a tmpfs\n");
        return;
    }
    for (int no_fallocate = 0; no_fallocate < 2; no_fallocate++) {
        struct sparse_case sc = {.no_fallocate = no_fallocate};
        snprintf(sc.mnt, sizeof sc.mnt, "%s.mnt", test_db("sparse"));
        mkdir(sc.mnt, 0755);
        check_child(in_child(sparse_sidecar_in_namespace, &sc), no_fallocate ? "sparse sidecar, no fallocate" : "sparse sidecar");
        rmdir(sc.mnt);
    }
}

/* Adds `delta` to the u64 at `off` of `path`, in a child: this process must not open and close
 * a sidecar it has handles on (a POSIX close would drop its locks). */
static void add_in_child(const char *path, off_t off, uint64_t delta) {
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        uint64_t v = 0;
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0 || pread(fd, &v, 8, off) != 8) _exit(3);
        v += delta;
        if (pwrite(fd, &v, 8, off) != 8) _exit(3);
        _exit(0);
    }
    CHECK(child_wait(kid) == 0);
}

static void reader_of_region_in_child(void *arg) {
    if (geteuid() == 0 && !become_nobody()) return;
    tshm *h = NULL;
    CHECK_RC(open_rc(arg, TSHM_OPEN_READONLY, &h), TSHM_OK);
    if (h == NULL) return;
    void *r = NULL;
    CHECK_RC(tshm_region(h, 1, 4096, 0, &r), TSHM_OK);
    CHECK(r != NULL && ((volatile uint64_t *)r)[7] == 77);
    close_ok(h);
}

/* An allocator killed between reserving a pool unit and writing it (the reservation counter,
 * header word 616, one ahead of the units written) leaves a unit without storage below the
 * next one; nothing ever touches it, so a reader on the full disk reads everything else. */
static void killed_allocator_in_namespace(void *arg) {
    const char *mnt = arg;
    tmpfs_or_skip(mnt, "tshm-hole", "size=3m", "test_allocator_killed_after_its_reservation_on_a_full_disk");
    char db[700], filler[700];
    snprintf(db, sizeof db, "%s/hole.db", mnt);
    snprintf(filler, sizeof filler, "%s/filler", mnt);
    make_db(db, 0644);
    tshm *h = open_with(db, 0, 0, 0);
    CHECK(h != NULL);
    if (h == NULL) return;
    void *r0 = NULL, *r1 = NULL;
    CHECK_RC(tshm_region(h, 0, 4096, 1, &r0), TSHM_OK);
    add_in_child(sidecar_of(db), 616, 1); /* the killed allocator's reservation */
    CHECK_RC(tshm_region(h, 1, 4096, 1, &r1), TSHM_OK);
    if (r1 != NULL) ((volatile uint64_t *)r1)[7] = 77;
    fill_up(filler);
    check_child(in_child(reader_of_region_in_child, (void *)db), "reader of a grown sidecar");
    close_ok(h);
}

static void test_allocator_killed_after_its_reservation_on_a_full_disk(void) {
    if (geteuid() != 0) {
        printf("SKIP test_allocator_killed_after_its_reservation_on_a_full_disk: needs root to "
               "mount a tmpfs\n");
        return;
    }
    char mnt[600];
    snprintf(mnt, sizeof mnt, "%s.mnt", test_db("hole"));
    mkdir(mnt, 0755);
    check_child(in_child(killed_allocator_in_namespace, mnt), "killed allocator");
    rmdir(mnt);
}

static void test_disk_full_while_the_sidecar_grows(void) {
    if (geteuid() != 0) {
        printf("SKIP test_disk_full_while_the_sidecar_grows: needs root to mount a tmpfs\n");
        return;
    }
    char mnt[600];
    snprintf(mnt, sizeof mnt, "%s.mnt", test_db("full"));
    mkdir(mnt, 0755);
    check_child(in_child(disk_full_in_namespace, mnt), "disk full");
    rmdir(mnt);
}

/* ------------------------------------------------------------------------------------------ */
/* 2. The file-size limit when the sidecar is created                                           */
/* ------------------------------------------------------------------------------------------ */

static void fsize_limit_at_creation(void *arg) {
    const char *db = arg;
    signal(SIGXFSZ, SIG_DFL); /* the default kills: the library must never write past it */
    struct rlimit rl = {.rlim_cur = 16384, .rlim_max = RLIM_INFINITY};
    CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
    tshm *h = NULL;
    CHECK_RC(open_rc(db, 0, &h), TSHM_FULL);
    CHECK(h == NULL);
    CHECK(msg_has("file-size limit"));
    struct stat st;
    CHECK(stat(sidecar_of(db), &st) == 0 && st.st_size <= 16384);
    rl.rlim_cur = RLIM_INFINITY;
    CHECK(setrlimit(RLIMIT_FSIZE, &rl) == 0);
    h = open_with(db, 0, 0, 0);
    CHECK(h != NULL);
    if (h != NULL) {
        CHECK(info_of(h).initialized == 1);
        CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
        CHECK_RC(tshm_index_append(h, 7, 1), TSHM_OK);
        publish_max_frame(h, 1);
        CHECK_RC(tshm_writer_release(h), TSHM_OK);
        close_ok(h);
    }
}

static void test_file_size_limit_when_the_sidecar_is_created(void) {
    const char *db = test_db("hostile-fsize.db");
    make_db(db, 0644);
    check_child(in_child(fsize_limit_at_creation, (void *)db), "file-size limit at creation");
}

/* ------------------------------------------------------------------------------------------ */
/* 3. No descriptor left at open                                                                */
/* ------------------------------------------------------------------------------------------ */

/* Opens with only `spare` descriptors left below the limit; returns the code. */
static int open_with_spare_fds(const char *db, int spare, tshm **out) {
    struct rlimit old, rl;
    getrlimit(RLIMIT_NOFILE, &old);
    /* the lowest free descriptor, and every one above it, is free: the limit makes them so */
    int lowest = dup(0);
    close(lowest);
    rl = old;
    rl.rlim_cur = (rlim_t)(lowest + spare);
    setrlimit(RLIMIT_NOFILE, &rl);
    int rc = open_rc(db, 0, out);
    setrlimit(RLIMIT_NOFILE, &old);
    return rc;
}

static void no_descriptor_left(void *arg) {
    const char *dir = arg;
    char db[700];
    for (int spare = 0; spare < 2; spare++) {
        /* spare 0: the sidecar cannot be opened; spare 1: it can, but nothing more */
        snprintf(db, sizeof db, "%s/nofile-%d.db", dir, spare);
        make_db(db, 0644);
        int before = open_fds();
        tshm *h = NULL;
        int rc = open_with_spare_fds(db, spare, &h);
        if (rc == TSHM_OK) {
            /* the open needed no more than the spare ones: nothing to test at this count */
            close_ok(h);
            continue;
        }
        CHECK_RC(rc, TSHM_CANTOPEN);
        CHECK(tshm_errno() == EMFILE);
        CHECK(msg_has("Too many open files"));
        CHECK(h == NULL);
        CHECK(open_fds() == before); /* nothing half opened is left behind */
        /* With descriptors again, the open works and the handle is complete. */
        h = open_with(db, 0, 0, 0);
        CHECK(h != NULL);
        if (h == NULL) continue;
        CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
        CHECK_RC(tshm_index_append(h, 3, 1), TSHM_OK);
        publish_max_frame(h, 1);
        CHECK_RC(tshm_writer_release(h), TSHM_OK);
        /* A second handle of the process needs no descriptor at all. */
        tshm *h2 = NULL;
        CHECK_RC(open_with_spare_fds(db, 0, &h2), TSHM_OK);
        if (h2 != NULL) {
            uint64_t got = 0;
            CHECK_RC(tshm_index_find(h2, 3, 1, &got), TSHM_OK);
            CHECK(got == 1);
            close_ok(h2);
        }
        close_ok(h);
    }
    /* A later handle needs no descriptor even when the database file appeared only after the
     * process's first handle opened (no guard descriptor was opened for it then). */
    snprintf(db, sizeof db, "%s/nofile-late.db", dir);
    tshm *first = open_with(db, 0, 0, 0);
    CHECK(first != NULL);
    make_db(db, 0644);
    tshm *later = NULL;
    CHECK_RC(open_with_spare_fds(db, 0, &later), TSHM_OK);
    close_ok(later);
    close_ok(first);
}

static void test_no_descriptor_left_at_open(void) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s.d", test_db("nofile"));
    mkdir(dir, 0755);
    check_child(in_child(no_descriptor_left, dir), "no descriptor left");
}

/* ------------------------------------------------------------------------------------------ */
/* 4. Read-only directories and permissions changed underneath                                  */
/* ------------------------------------------------------------------------------------------ */

struct perm_case {
    const char *dir;
    int go[2], done[2];
};

/* As nobody, in a directory it cannot write: a missing sidecar cannot be made, an existing
 * writable one is used as usual, one chmod 0400 underneath is refused, and an unreadable
 * database file stops nothing (libtshm never reads it). */
static void perm_opener(void *arg) {
    struct perm_case *pc = arg;
    if (!become_nobody()) return;
    char db[700];
    tshm *h = NULL;
    snprintf(db, sizeof db, "%s/missing.db", pc->dir);
    CHECK_RC(open_rc(db, 0, &h), TSHM_CANTOPEN);
    CHECK(tshm_errno() == EACCES);
    CHECK(msg_has("create"));
    CHECK(access(sidecar_of(db), F_OK) != 0);

    snprintf(db, sizeof db, "%s/shared.db", pc->dir);
    CHECK_RC(open_rc(db, 0, &h), TSHM_OK);
    if (h != NULL) {
        CHECK(info_of(h).readonly == 0);
        uint64_t got = 0;
        CHECK_RC(tshm_index_find(h, 5, 1, &got), TSHM_OK);
        CHECK(got == 1);
        close_ok(h);
    }
    /* the parent chmods the sidecar 0400 while it stays attached */
    char c = 'g';
    CHECK(write(pc->go[1], &c, 1) == 1 && read(pc->done[0], &c, 1) == 1);
    CHECK_RC(open_rc(db, 0, &h), TSHM_CANTOPEN);
    CHECK(tshm_errno() == EACCES);
    CHECK(h == NULL);
    CHECK_RC(open_rc(db, TSHM_OPEN_READONLY, &h), TSHM_CANTOPEN);
    /* back to 0644 for others: a read-only handle that sees the attached writer's commits */
    CHECK(write(pc->go[1], &c, 1) == 1 && read(pc->done[0], &c, 1) == 1);
    CHECK_RC(open_rc(db, 0, &h), TSHM_OK);
    if (h != NULL) {
        CHECK(info_of(h).readonly == 1);
        tshm_snapshot s;
        CHECK_RC(tshm_snapshot_get(h, &s), TSHM_OK);
        CHECK(s.max_frame == 2);
        uint64_t got = 0;
        CHECK_RC(tshm_index_find(h, 6, 2, &got), TSHM_OK);
        CHECK(got == 2);
        close_ok(h);
    }
    /* the database file itself unreadable (mode 0000) */
    CHECK(write(pc->go[1], &c, 1) == 1 && read(pc->done[0], &c, 1) == 1);
    CHECK_RC(open_rc(db, TSHM_OPEN_READONLY, &h), TSHM_OK);
    if (h != NULL) {
        tshm_snapshot s;
        CHECK_RC(tshm_snapshot_get(h, &s), TSHM_OK);
        CHECK(s.max_frame == 2);
        close_ok(h);
    }
}

static void test_unwritable_directory_and_permissions_changed_underneath(void) {
    if (geteuid() != 0) {
        printf("SKIP test_unwritable_directory_and_permissions_changed_underneath: needs root "
               "(to test permissions as another user)\n");
        return;
    }
    char dir[600], db[700];
    snprintf(dir, sizeof dir, "%s.d", test_db("perm"));
    mkdir(dir, 0755);
    snprintf(db, sizeof db, "%s/shared.db", dir);
    make_db(db, 0666);
    tshm *w = open_with(db, 0, 0, 0); /* root, attached throughout */
    CHECK(w != NULL);
    if (w == NULL) return;
    CHECK_RC(tshm_writer_acquire(w, 0), TSHM_OK);
    CHECK_RC(tshm_index_append(w, 5, 1), TSHM_OK);
    publish_max_frame(w, 1);
    struct perm_case pc = {.dir = dir};
    if (pipe(pc.go) != 0 || pipe(pc.done) != 0) exit(2);
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        harness_failed = 0;
        alarm(60);
        perm_opener(&pc);
        _exit(harness_failed == 0 ? 0 : 1);
    }
    char c;
    const char *side = sidecar_of(db);
    /* step 1: chmod 0400 underneath the attached writer */
    if (read(pc.go[0], &c, 1) == 1) {
        CHECK(chmod(side, 0400) == 0);
        CHECK_RC(tshm_index_append(w, 6, 2), TSHM_OK); /* the attached writer carries on */
        publish_max_frame(w, 2);
        CHECK(write(pc.done[1], &c, 1) == 1);
    }
    /* step 2: readable by others, not writable */
    if (read(pc.go[0], &c, 1) == 1) {
        CHECK(chmod(side, 0644) == 0);
        CHECK(write(pc.done[1], &c, 1) == 1);
    }
    /* step 3: the database file unreadable */
    if (read(pc.go[0], &c, 1) == 1) {
        CHECK(chmod(db, 0000) == 0);
        CHECK(write(pc.done[1], &c, 1) == 1);
    }
    check_child(child_wait(kid), "opener as nobody");
    chmod(db, 0666);
    uint64_t got = 0;
    CHECK_RC(tshm_index_find(w, 6, 2, &got), TSHM_OK);
    CHECK(got == 2);
    CHECK_RC(tshm_writer_release(w), TSHM_OK);
    close_ok(w);
}

/* A read-only filesystem (a tmpfs remounted read-only in a private namespace): a missing
 * sidecar cannot be made (CANTOPEN, EROFS); an existing one gives read-only handles that see
 * the state its last session left. */
static void read_only_fs_in_namespace(void *arg) {
    const char *mnt = arg;
    tmpfs_or_skip(mnt, "tshm-ro", "size=4m", "test_read_only_filesystem");
    char db[700], missing[700];
    snprintf(db, sizeof db, "%s/ro.db", mnt);
    snprintf(missing, sizeof missing, "%s/missing.db", mnt);
    make_db(db, 0644);
    make_db(missing, 0644);
    tshm *w = open_with(db, 0, 0, 0);
    CHECK(w != NULL);
    if (w == NULL) return;
    CHECK_RC(tshm_writer_acquire(w, 0), TSHM_OK);
    CHECK_RC(tshm_index_append(w, 4, 1), TSHM_OK);
    publish_max_frame(w, 1);
    CHECK_RC(tshm_writer_release(w), TSHM_OK);
    close_ok(w);
    if (mount(NULL, mnt, NULL, MS_REMOUNT | MS_RDONLY, NULL) != 0) {
        fprintf(stderr, "FAIL remount read-only: %s\n", strerror(errno));
        harness_failed++;
        return;
    }
    tshm *h = NULL;
    CHECK_RC(open_rc(missing, 0, &h), TSHM_CANTOPEN);
    CHECK(tshm_errno() == EROFS);
    CHECK(msg_has("create"));
    CHECK_RC(open_rc(db, 0, &h), TSHM_OK);
    if (h != NULL) {
        CHECK(info_of(h).readonly == 1);
        tshm_snapshot snap;
        CHECK_RC(tshm_snapshot_get(h, &snap), TSHM_OK);
        CHECK(snap.max_frame == 1);
        uint64_t got = 0;
        CHECK_RC(tshm_index_find(h, 4, 1, &got), TSHM_OK);
        CHECK(got == 1);
        CHECK_RC(tshm_writer_acquire(h, 0), TSHM_READONLY);
        void *r = NULL;
        CHECK_RC(tshm_region(h, 0, 4096, 1, &r), TSHM_READONLY);
        close_ok(h);
    }
    tshm *x = NULL;
    CHECK_RC(open_rc(db, TSHM_OPEN_EXCLUSIVE, &x), TSHM_READONLY);
}

static void test_read_only_filesystem(void) {
    if (geteuid() != 0) {
        printf("SKIP test_read_only_filesystem: needs root to mount a tmpfs\n");
        return;
    }
    char mnt[600];
    snprintf(mnt, sizeof mnt, "%s.mnt", test_db("rofs"));
    mkdir(mnt, 0755);
    check_child(in_child(read_only_fs_in_namespace, mnt), "read-only filesystem");
    rmdir(mnt);
}

/* ------------------------------------------------------------------------------------------ */
/* 5. A sidecar replaced while processes are attached                                           */
/* ------------------------------------------------------------------------------------------ */

enum replace_how { RENAME_EMPTY, UNLINK, RENAME_COPY };

static void replace_sidecar(const char *db, enum replace_how how) {
    const char *side = sidecar_of(db);
    char tmp[800];
    snprintf(tmp, sizeof tmp, "%s.new", side);
    if (how == UNLINK) {
        CHECK(unlink(side) == 0);
        return;
    }
    int out = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    CHECK(out >= 0);
    if (how == RENAME_COPY) {
        /* a byte copy through a child: this process must not open and close the sidecar */
        fflush(NULL);
        pid_t kid = fork();
        if (kid == 0) {
            int in = open(side, O_RDONLY | O_CLOEXEC);
            char buf[65536];
            ssize_t n;
            while (in >= 0 && (n = read(in, buf, sizeof buf)) > 0)
                if (write(out, buf, (size_t)n) != n) _exit(3);
            _exit(in >= 0 ? 0 : 3);
        }
        CHECK(child_wait(kid) == 0);
    }
    close(out);
    CHECK(rename(tmp, side) == 0);
}

/* A second process opening after the replacement: refused, never a second writer. */
static void opener_after_replacement(void *arg) {
    const char *db = arg;
    tshm *h = NULL;
    int rc = open_rc(db, 0, &h);
    if (rc == TSHM_OK) {
        int w = tshm_writer_acquire(h, 0);
        fprintf(stderr, "FAIL the open after the replacement succeeded (initialized %d); writer "
                        "acquire: %s%s\n",
                info_of(h).initialized, tshm_errstr(w),
                w == TSHM_OK ? ": two processes hold the writer role at once" : "");
        harness_failed++;
        return;
    }
    CHECK_RC(rc, TSHM_BUSY);
    CHECK(msg_has("replaced"));
    CHECK(h == NULL);
    /* a read-only opener is refused the same way (it would read another session's state) */
    CHECK(open_rc(db, TSHM_OPEN_READONLY, &h) != TSHM_OK);
    CHECK(h == NULL);
}

static void replaced_while_attached(enum replace_how how) {
    const char *names[] = {"repl-rename.db", "repl-unlink.db", "repl-copy.db"};
    const char *db = test_db(names[how]);
    make_db(db, 0644);
    tshm *a = open_with(db, 0, 0, 0);
    CHECK(a != NULL);
    if (a == NULL) return;
    CHECK_RC(tshm_writer_acquire(a, 0), TSHM_OK);
    CHECK_RC(tshm_index_append(a, 9, 1), TSHM_OK);
    publish_max_frame(a, 1);

    replace_sidecar(db, how);
    check_child(in_child(opener_after_replacement, (void *)db), "opener after the replacement");

    /* This process, attached to the old file, is refused a second handle on the new one too. */
    tshm *a2 = NULL;
    int rc = open_rc(db, 0, &a2);
    CHECK_RC(rc, TSHM_BUSY);
    if (rc == TSHM_OK) close_ok(a2);
    else CHECK(msg_has("replaced"));
    /* The attached process carries on undisturbed on the file it has. */
    CHECK_RC(tshm_index_append(a, 9, 2), TSHM_OK);
    publish_max_frame(a, 2);
    uint64_t got = 0;
    CHECK_RC(tshm_index_find(a, 9, 2, &got), TSHM_OK);
    CHECK(got == 2);
    CHECK_RC(tshm_writer_release(a), TSHM_OK);
    close_ok(a);

    /* Once everyone attached to the old file has gone, the new one starts a fresh session. */
    tshm *b = open_with(db, 0, 0, 0);
    CHECK(b != NULL);
    if (b != NULL) {
        CHECK(info_of(b).initialized == 1);
        CHECK_RC(tshm_writer_acquire(b, 0), TSHM_OK);
        CHECK_RC(tshm_writer_release(b), TSHM_OK);
        close_ok(b);
    }
}

static void test_sidecar_renamed_over_while_attached(void) { replaced_while_attached(RENAME_EMPTY); }
static void test_sidecar_unlinked_while_attached(void) { replaced_while_attached(UNLINK); }
static void test_sidecar_replaced_by_a_copy_while_attached(void) { replaced_while_attached(RENAME_COPY); }

/* One database file under two names (a symbolic link): two sidecars, so two sessions on one
 * database; the second is refused while the first is attached. */
static void second_name_opener(void *arg) {
    tshm *h = NULL;
    CHECK_RC(open_rc(arg, 0, &h), TSHM_BUSY);
    CHECK(msg_has("another name"));
}

static void test_database_under_a_second_name_is_refused_while_attached(void) {
    const char *db = test_db("two-names.db");
    char alias[700];
    snprintf(alias, sizeof alias, "%s.alias", db);
    make_db(db, 0644);
    unlink(alias);
    unlink(sidecar_of(alias));
    CHECK(symlink(db, alias) == 0);
    tshm *a = open_with(db, 0, 0, 0);
    CHECK(a != NULL);
    check_child(in_child(second_name_opener, alias), "opener of the second name");
    tshm *h = NULL;
    CHECK_RC(open_rc(alias, 0, &h), TSHM_BUSY);
    close_ok(a);
    h = open_with(alias, 0, 0, 0);
    CHECK(h != NULL);
    close_ok(h);
}

/* Runs `kvlog <args...>` (KVLOG_BIN); returns its exit status, its stdout in out. */
static int kvlog_run(char *out, size_t cap, const char *a1, const char *a2, const char *a3,
                     const char *a4, const char *a5) {
    int p[2];
    if (pipe(p) != 0) exit(2);
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        dup2(p[1], 1);
        close(p[0]);
        close(p[1]);
        const char *bin = getenv("KVLOG_BIN");
        execl(bin, bin, a1, a2, a3, a4, a5, (char *)NULL);
        _exit(127);
    }
    close(p[1]);
    size_t got = 0;
    ssize_t n;
    while (got + 1 < cap && (n = read(p[0], out + got, cap - 1 - got)) > 0) got += (size_t)n;
    out[got] = 0;
    close(p[0]);
    return child_wait(kid);
}

/* The same with a real engine: a kvlog database whose sidecar is renamed over while another
 * process is attached and holds the writer role. kvlog's writer is refused (before the fix it
 * committed beside the attached writer); once that process has gone, every commit is there. */
static void test_sidecar_replaced_under_a_kvlog_database(void) {
    if (getenv("KVLOG_BIN") == NULL) {
        printf("SKIP test_sidecar_replaced_under_a_kvlog_database: set KVLOG_BIN (make "
               "hostile-kvlog)\n");
        return;
    }
    const char *db = test_db("hostile-kv.db");
    char out[4096];
    CHECK(kvlog_run(out, sizeof out, "put", db, "k1", "one", NULL) == 0);
    tshm *a = open_with(db, 0, 0, 0);
    CHECK(a != NULL);
    if (a == NULL) return;
    CHECK_RC(tshm_writer_acquire(a, 0), TSHM_OK);
    replace_sidecar(db, RENAME_EMPTY);
    int rc = kvlog_run(out, sizeof out, "put", db, "k2", "two", NULL);
    if (rc == 0) fprintf(stderr, "FAIL kvlog committed beside the attached writer\n");
    CHECK(rc != 0);
    CHECK_RC(tshm_writer_release(a), TSHM_OK);
    close_ok(a);
    CHECK(kvlog_run(out, sizeof out, "put", db, "k3", "three", NULL) == 0);
    CHECK(kvlog_run(out, sizeof out, "get", db, "k1", NULL, NULL) == 0 && strcmp(out, "one\n") == 0);
    CHECK(kvlog_run(out, sizeof out, "get", db, "k3", NULL, NULL) == 0 && strcmp(out, "three\n") == 0);
    CHECK(kvlog_run(out, sizeof out, "check", db, NULL, NULL, NULL) == 0);
}

/* A process attached to the database forks a child that never uses libtshm, and dies. The
 * child must not keep the dead parent's attach byte held through an inherited descriptor:
 * the sidecar removed (nobody is attached), a new opener starts a fresh session. */
static void test_idle_child_of_a_dead_process_holds_no_attach_byte(void) {
    const char *db = test_db("idle-child.db");
    make_db(db, 0644);
    int ready[2], hold[2];
    if (pipe(ready) != 0 || pipe(hold) != 0) exit(2);
    fflush(NULL);
    pid_t p = fork();
    if (p == 0) {
        close(ready[0]);
        close(hold[1]);
        tshm *h = open_with(db, 0, 0, 0);
        if (h == NULL) _exit(3);
        pid_t q = fork();
        if (q == 0) {
            /* ready only once fork() returned here: the child handler already ran */
            char c;
            if (write(ready[1], "r", 1) != 1) _exit(3);
            close(ready[1]);
            while (read(hold[0], &c, 1) < 0 && errno == EINTR) {}
            _exit(0);
        }
        if (q < 0) _exit(3);
        close(ready[1]);
        pause();
        _exit(0);
    }
    close(ready[1]);
    close(hold[0]);
    char c;
    CHECK(read(ready[0], &c, 1) == 1);
    close(ready[0]);
    child_kill(p);
    CHECK(unlink(sidecar_of(db)) == 0);
    tshm *h = NULL;
    CHECK_RC(open_rc(db, 0, &h), TSHM_OK);
    if (h != NULL) {
        CHECK(info_of(h).initialized == 1);
        close_ok(h);
    }
    close(hold[1]); /* the idle child exits */
}

int main(int argc, char **argv) {
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
#define T(f) {#f, f}
        T(test_disk_full_while_the_sidecar_grows),
        T(test_sparse_sidecar_on_a_full_disk),
        T(test_allocator_killed_after_its_reservation_on_a_full_disk),
        T(test_file_size_limit_when_the_sidecar_is_created),
        T(test_no_descriptor_left_at_open),
        T(test_unwritable_directory_and_permissions_changed_underneath),
        T(test_read_only_filesystem),
        T(test_sidecar_renamed_over_while_attached),
        T(test_sidecar_unlinked_while_attached),
        T(test_sidecar_replaced_by_a_copy_while_attached),
        T(test_sidecar_replaced_under_a_kvlog_database),
        T(test_database_under_a_second_name_is_refused_while_attached),
        T(test_idle_child_of_a_dead_process_holds_no_attach_byte),
#undef T
    };
    signal(SIGPIPE, SIG_IGN);
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (argc < 2 || strstr(tests[i].name, argv[1]) != NULL) tests[i].fn();
    return harness_done("test_hostile");
}
