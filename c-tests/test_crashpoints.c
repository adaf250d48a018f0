/*
 * test_crashpoints.c — a process killed at any test point leaves a sidecar others can use.
 *
 * For every point of src/testpoint.rs (its NAMES; tests/testpoints.rs checks that this file has
 * a case for each), and for each setup the point is reached in, a child arms
 * TSHM_TEST_CRASH_AT=<point> before its first libtshm call and runs an operation sequence that
 * passes the point: open, writer, index appends, publish, rollback, a read transaction, the
 * checkpointer, engine locks, a region, close. It must die of SIGKILL (so the point really is
 * on that path). Then this process checks that what the child left is usable and consistent:
 * the snapshot is the old one or the child's, the writer and checkpointer roles and every
 * engine lock can be taken, the index agrees with the snapshot, a read transaction pins and no
 * dead reader's pin counts, no slot or role is held by anyone alive, `tshm check` passes
 * (TSHM_BIN), the last close is the last, and the next open initializes cleanly.
 *
 * Setups: the child alone, or joining this process's handle; with index entries above the
 * committed frame (the child's writer acquire trims them); with every instance slot but a dead
 * one's held (the child takes the dead one over); with every reader slot but a dead one's held;
 * with an engine lock held here (the child probes its holder). Synchronization is by process
 * exit and sockets, never by sleeping.
 */
#include "harness.h"

#include <pthread.h>
#include <sys/socket.h>

/* Setups (a point lists those it is reached in). */
#define ALONE 1           /* nobody else attached */
#define ATTACHED 2        /* this process holds a handle */
#define PENDING_TRIM 4    /* ... and left index entries above the committed frame */
#define INSTANCES_FULL 8  /* ... and holds every instance slot but a dead process's */
#define READERS_FULL 16   /* ... and holds every reader slot but a dead process's */
#define ENGINE_HELD 32    /* ... and holds engine lock slot 5 EXCLUSIVE */
#define SPARSE 64         /* nobody attached; a page of the sidecar has no storage */
#define ROLES_DEAD 128    /* attached; a dead process holds the writer and checkpointer roles */
#define LAST_SETUP ROLES_DEAD

/* How the child reaches the point. */
enum action { SCRIPT, NODE_RACE, OBSERVE };

struct point {
    const char *name;
    int setups;
    enum action action;
};

static const struct point POINTS[] = {
    {"open_holding_init", ALONE | ATTACHED, SCRIPT},
    {"open_initialized", ALONE, SCRIPT},
    {"instance_claim", ALONE | ATTACHED, SCRIPT},
    {"instance_reclaim", INSTANCES_FULL, SCRIPT},
    {"writer_claim", ALONE | ATTACHED, SCRIPT},
    {"ckpt_claim", ALONE | ATTACHED, SCRIPT},
    {"writer_release", ALONE | ATTACHED, SCRIPT},
    {"ckpt_release", ALONE | ATTACHED, SCRIPT},
    {"writer_reclaim", ROLES_DEAD, SCRIPT},
    {"ckpt_reclaim", ROLES_DEAD, SCRIPT},
    {"trim_mark", PENDING_TRIM, SCRIPT},
    {"truncate_mark", ALONE | ATTACHED, SCRIPT},
    {"append_entry", ALONE | ATTACHED | PENDING_TRIM, SCRIPT},
    {"pool_zeroed", ALONE | ATTACHED, SCRIPT},
    {"block_unit", ALONE | ATTACHED, SCRIPT},
    {"publish_copy", ALONE | ATTACHED, SCRIPT},
    {"publish_seq", ALONE | ATTACHED, SCRIPT},
    {"reader_claim", ALONE | ATTACHED, SCRIPT},
    {"reader_reclaim", READERS_FULL, SCRIPT},
    {"reader_pin", ALONE | ATTACHED | READERS_FULL, SCRIPT},
    {"reader_end", ALONE | ATTACHED, SCRIPT},
    {"engine_grant", ALONE | ATTACHED | ENGINE_HELD, SCRIPT},
    {"engine_release", ALONE | ATTACHED, SCRIPT},
    {"engine_probe", ENGINE_HELD, SCRIPT},
    {"region_create", ALONE | ATTACHED, SCRIPT},
    {"hole_storage", SPARSE, SCRIPT},
    {"close_init", ALONE | ATTACHED, SCRIPT},
    {"close_upgrade", ALONE | ATTACHED, SCRIPT},
    {"close_last_hook", ALONE, SCRIPT},
    {"close_last_done", ALONE, SCRIPT},
    {"node_drop", ALONE | ATTACHED, SCRIPT},
    {"node_get_waits", ALONE | ATTACHED, NODE_RACE},
    {"observe_mapped", ALONE | ATTACHED, OBSERVE},
};
#define NPOINTS (sizeof POINTS / sizeof POINTS[0])

#define REGION_SIZE 32768
#define MAX_HANDLES 1100

/* What this process holds during one case. */
struct world {
    const char *db;
    int setup;
    tshm *h[MAX_HANDLES]; /* h[0] is the one the checks use */
    int nh;
    uint32_t slots[MAX_HANDLES];
    int nslots;
    uint64_t max0; /* the committed frame before the child ran */
};

static void watchdog_fired(int sig) {
    (void)sig;
    static const char msg[] = "FAIL watchdog: the test hung\n";
    if (write(2, msg, sizeof msg - 1) < 0) {}
    _exit(99);
}

static tshm *open_db(const char *db, uint32_t readers) {
    return open_with(db, 0, readers, 0);
}

/* The first handle of a world whose instance table is to be filled: a small table. */
static tshm *open_small_instances(const char *db) {
    tshm_options o;
    tshm_options_init(&o);
    o.instance_slots = 32;
    tshm *h = NULL;
    return tshm_open(db, &o, &h) == TSHM_OK ? h : NULL;
}

/* ---- the child ------------------------------------------------------------------------- */

static void on_last(tshm *h, void *ctx) {
    (void)h;
    (void)ctx;
}

/* The operation sequence: each step's failure exits with its own code (a point that is not on
 * the path lets the child run to the end and exit 0). */
static void script(const char *db) {
    tshm_options o;
    tshm_options_init(&o);
    o.on_last_close = on_last;
    tshm *h = NULL;
    if (tshm_open(db, &o, &h) != TSHM_OK) _exit(20);
    if (tshm_writer_acquire(h, 2000) != TSHM_OK) _exit(21);
    tshm_snapshot s;
    if (tshm_snapshot_get(h, &s) != TSHM_OK) _exit(22);
    uint64_t base = s.max_frame;
    for (uint32_t p = 1; p <= 3; p++)
        if (tshm_index_append(h, p, base + p) != TSHM_OK) _exit(23);
    s.max_frame = base + 3;
    if (tshm_publish(h, &s, TSHM_SNAP_MAX_FRAME) != TSHM_OK) _exit(24);
    if (tshm_index_append(h, 4, base + 4) != TSHM_OK || tshm_index_truncate(h, base + 3) != TSHM_OK)
        _exit(25);
    uint32_t slot;
    if (tshm_reader_begin(h, &slot, &s) != TSHM_OK || tshm_reader_end(h, slot) != TSHM_OK) _exit(26);
    if (tshm_checkpointer_acquire(h, 2000) != TSHM_OK || tshm_checkpointer_release(h) != TSHM_OK) _exit(27);
    if (tshm_lock(h, 0, 2, TSHM_LOCK_EXCLUSIVE) != TSHM_OK ||
        tshm_lock(h, 0, 2, TSHM_LOCK_EXCLUSIVE | TSHM_LOCK_UNLOCK) != TSHM_OK)
        _exit(28);
    int rc = tshm_lock(h, 5, 1, TSHM_LOCK_SHARED); /* BUSY while this process's parent holds it */
    if (rc == TSHM_OK) rc = tshm_lock(h, 5, 1, TSHM_LOCK_SHARED | TSHM_LOCK_UNLOCK);
    if (rc != TSHM_OK && rc != TSHM_BUSY) _exit(29);
    void *ptr = NULL;
    if (tshm_region(h, 0, REGION_SIZE, 1, &ptr) != TSHM_OK) _exit(30);
    if (tshm_writer_release(h) != TSHM_OK) _exit(31);
    if (tshm_close(h, NULL) != TSHM_OK) _exit(32);
    _exit(0);
}

static void *open_close(void *arg) {
    tshm *h = open_db(arg, 0);
    if (h != NULL) tshm_close(h, NULL); /* its node's drop stops at node_drop */
    return NULL;
}

/* One thread's close stops while dropping the process's node; another opens meanwhile and
 * has to wait for that drop (node_get_waits, where the process dies). */
static void node_race(const char *db) {
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) _exit(40);
    char fd[16];
    snprintf(fd, sizeof fd, "%d", sp[1]);
    setenv("TSHM_TEST_PAUSE_AT", "node_drop", 1);
    setenv("TSHM_TEST_PAUSE_FD", fd, 1);
    pthread_t t;
    pthread_create(&t, NULL, open_close, (void *)db);
    char line[64];
    if (!read_line(sp[0], line, sizeof line) || strcmp(line, "node_drop") != 0) _exit(41);
    tshm *h = open_db(db, 0);
    (void)h;
    _exit(0);
}

/* Runs the child for point `p`; returns its exit status (128 + signal). */
static int run_child(const struct point *p, const char *db) {
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        alarm(20);
        setenv("TSHM_TEST_CRASH_AT", p->name, 1); /* before the child's first libtshm call */
        switch (p->action) {
        case SCRIPT: script(db); break;
        case NODE_RACE: node_race(db); break;
        case OBSERVE: {
            const char *bin = getenv("TSHM_BIN");
            if (bin == NULL) _exit(50);
            execl(bin, bin, "inspect", db, (char *)NULL);
            _exit(51);
        }
        }
        _exit(52);
    }
    return child_wait(kid);
}

/* ---- this process ---------------------------------------------------------------------- */

/* Runs the inspector's check on db; returns its exit status (its report shown when it is not
 * 0), or 0 without TSHM_BIN. */
static int tshm_check(const char *db, int idle) {
    const char *bin = getenv("TSHM_BIN");
    if (bin == NULL) return 0;
    int out[2];
    if (pipe(out) != 0) exit(2);
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        dup2(out[1], 1);
        dup2(out[1], 2);
        if (idle)
            execl(bin, bin, "check", "--idle", db, (char *)NULL);
        else
            execl(bin, bin, "check", db, (char *)NULL);
        _exit(127);
    }
    close(out[1]);
    char buf[4096];
    size_t n = 0;
    ssize_t r;
    while (n + 1 < sizeof buf && (r = read(out[0], buf + n, sizeof buf - 1 - n)) != 0) {
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) break;
        n += (size_t)r;
    }
    buf[n] = 0;
    close(out[0]);
    int st = child_wait(kid);
    if (st != 0) fprintf(stderr, "tshm check%s %s: exit %d: %s", idle ? " --idle" : "", db, st, buf);
    return st;
}

/* A process that opens db, takes what `what` says and dies without letting go. */
static void dead_holder(const char *db, int what) {
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        tshm *h = open_db(db, 0);
        if (h == NULL) _exit(60);
        uint32_t slot;
        tshm_snapshot s;
        if (what == READERS_FULL && tshm_reader_begin(h, &slot, &s) != TSHM_OK) _exit(61);
        if (what == ROLES_DEAD && (tshm_writer_acquire(h, 0) != TSHM_OK ||
                                   tshm_checkpointer_acquire(h, 0) != TSHM_OK))
            _exit(62);
        _exit(0); /* no close: its instance record (and reader slot) stay behind */
    }
    CHECK(child_wait(kid) == 0);
}

static void set_up(struct world *w) {
    int fd = open(w->db, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644); /* the inspector wants one */
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
    w->nh = 0;
    w->nslots = 0;
    w->max0 = 0;
    if (w->setup == ALONE) return;
    if (w->setup == SPARSE) {
        /* a session came and went, then the sidecar's last page lost its storage (a sparse
         * copy); the child's writable open gives it storage again */
        tshm *h = open_db(w->db, 0);
        CHECK(h != NULL);
        if (h != NULL) CHECK_RC(tshm_close(h, NULL), TSHM_OK);
        int sfd = open(sidecar_of(w->db), O_RDWR | O_CLOEXEC);
        struct stat st;
        CHECK(sfd >= 0 && fstat(sfd, &st) == 0 && st.st_size >= 8192);
        if (sfd >= 0) {
            CHECK(fallocate(sfd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE, st.st_size - 4096, 4096) == 0);
            close(sfd);
        }
        return;
    }
    w->h[w->nh] = w->setup == INSTANCES_FULL ? open_small_instances(w->db)
                                             : open_db(w->db, w->setup == READERS_FULL ? 64 : 0);
    CHECK(w->h[w->nh] != NULL);
    if (w->h[w->nh] == NULL) return;
    tshm *h = w->h[w->nh++];
    switch (w->setup) {
    case PENDING_TRIM:
        /* a writer appended and let go without committing: the index tail is above max_frame */
        CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
        CHECK_RC(tshm_index_append(h, 9, 1), TSHM_OK);
        CHECK_RC(tshm_index_append(h, 8, 2), TSHM_OK);
        CHECK_RC(tshm_writer_release(h), TSHM_OK);
        break;
    case INSTANCES_FULL: {
        dead_holder(w->db, INSTANCES_FULL);
        tshm_info i;
        CHECK_RC(tshm_info_get(h, &i), TSHM_OK);
        /* every free instance slot: only the dead process's is left to take over */
        while (w->nh < (int)i.instance_slots - 1 && w->nh < MAX_HANDLES) {
            w->h[w->nh] = open_db(w->db, 0);
            if (w->h[w->nh] == NULL) break;
            w->nh++;
        }
        CHECK(w->nh == (int)i.instance_slots - 1);
        break;
    }
    case READERS_FULL: {
        dead_holder(w->db, READERS_FULL);
        tshm_info i;
        CHECK_RC(tshm_info_get(h, &i), TSHM_OK);
        tshm_snapshot s;
        /* each at a snapshot of its own: one handle's transactions at one snapshot share */
        CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
        while (w->nslots < (int)i.reader_slots - 1) {
            publish_max_frame(h, (uint64_t)w->nslots + 1);
            if (tshm_reader_begin(h, &w->slots[w->nslots], &s) != TSHM_OK) break;
            w->nslots++;
        }
        CHECK_RC(tshm_writer_release(h), TSHM_OK);
        CHECK(w->nslots == (int)i.reader_slots - 1);
        break;
    }
    case ENGINE_HELD:
        CHECK_RC(tshm_lock(h, 5, 1, TSHM_LOCK_EXCLUSIVE), TSHM_OK);
        break;
    case ROLES_DEAD:
        dead_holder(w->db, ROLES_DEAD);
        break;
    }
    tshm_snapshot s;
    CHECK_RC(tshm_snapshot_get(h, &s), TSHM_OK);
    w->max0 = s.max_frame;
}

/* After the child died: everything it may have left is usable and consistent. */
static void verify(struct world *w, const char *what) {
    int failed = harness_failed;
    int fresh = w->nh == 0;
    if (fresh) {
        w->h[0] = open_db(w->db, 0);
        CHECK(w->h[0] != NULL);
        if (w->h[0] == NULL) return;
        w->nh = 1;
    }
    tshm *h = w->h[0];
    tshm_info info;
    CHECK_RC(tshm_info_get(h, &info), TSHM_OK);
    /* a first opener forgot the index (the engine rebuilds it from its WAL) */
    int forgot = fresh && info.initialized;
    /* what this process held for the setup goes first */
    for (int i = 0; i < w->nslots; i++) CHECK_RC(tshm_reader_end(h, w->slots[i]), TSHM_OK);
    w->nslots = 0;
    if (w->setup == ENGINE_HELD) CHECK_RC(tshm_lock(h, 5, 1, TSHM_LOCK_EXCLUSIVE | TSHM_LOCK_UNLOCK), TSHM_OK);

    tshm_snapshot s;
    CHECK_RC(tshm_snapshot_get(h, &s), TSHM_OK);
    uint64_t max = s.max_frame;
    CHECK(max == w->max0 || max == w->max0 + 3); /* the old snapshot or the child's */
    CHECK_RC(tshm_writer_acquire(h, 2000), TSHM_OK); /* trims what the child left above max */
    tshm_index_stats st;
    CHECK_RC(tshm_index_stats_get(h, &st), TSHM_OK);
    CHECK(st.tail_frame == (forgot ? 0 : max));
    uint64_t f = 0;
    for (uint32_t p = 1; p <= 4; p++) {
        int rc = tshm_index_find(h, p, max, &f);
        if (p <= 3 && max == w->max0 + 3 && !forgot) {
            CHECK_RC(rc, TSHM_OK);
            CHECK(rc != TSHM_OK || f == w->max0 + p);
        } else {
            CHECK_RC(rc, TSHM_NOTFOUND);
        }
    }
    CHECK_RC(tshm_index_append(h, 7, max + 1), TSHM_OK);
    s.max_frame = max + 1;
    CHECK_RC(tshm_publish(h, &s, TSHM_SNAP_MAX_FRAME), TSHM_OK);
    CHECK_RC(tshm_index_find(h, 7, max + 1, &f), TSHM_OK);
    CHECK(f == max + 1);
    /* a full checkpoint and a WAL restart: nothing is left pending */
    s.nbackfills = max + 1;
    CHECK_RC(tshm_publish(h, &s, TSHM_SNAP_NBACKFILLS), TSHM_OK);
    CHECK_RC(tshm_index_reset(h), TSHM_OK);

    uint32_t slot;
    CHECK_RC(tshm_reader_begin(h, &slot, &s), TSHM_OK);
    CHECK(s.max_frame == max + 1);
    uint64_t pin = 0;
    CHECK_RC(tshm_min_reader_frame(h, &pin), TSHM_OK);
    CHECK(pin == max + 1);
    CHECK_RC(tshm_reader_end(h, slot), TSHM_OK);
    CHECK_RC(tshm_min_reader_frame(h, &pin), TSHM_OK);
    CHECK(pin == TSHM_NO_FRAME); /* a dead reader's pin does not count */
    CHECK_RC(tshm_checkpointer_acquire(h, 2000), TSHM_OK);
    CHECK_RC(tshm_checkpointer_release(h), TSHM_OK);
    CHECK_RC(tshm_lock(h, 0, TSHM_ENGINE_LOCKS, TSHM_LOCK_EXCLUSIVE), TSHM_OK); /* dead holders' too */
    CHECK_RC(tshm_lock(h, 0, TSHM_ENGINE_LOCKS, TSHM_LOCK_EXCLUSIVE | TSHM_LOCK_UNLOCK), TSHM_OK);
    void *ptr = NULL;
    CHECK_RC(tshm_region(h, 0, REGION_SIZE, 1, &ptr), TSHM_OK);
    CHECK(ptr != NULL);
    CHECK_RC(tshm_writer_release(h), TSHM_OK);

    /* nobody alive holds a role or pins a slot (a live handle keeps its slot, unpinned) */
    CHECK_RC(tshm_info_get(h, &info), TSHM_OK);
    for (uint32_t role = 1; role < 3 + info.reader_slots; role++) {
        tshm_owner_info o;
        CHECK_RC(tshm_owner(h, role, &o), TSHM_OK);
        int kept = role >= TSHM_ROLE_READER0 && o.frame == TSHM_NO_FRAME;
        if (o.alive && !kept) fprintf(stderr, "%s: role %u still held by a live holder\n", what, role);
        CHECK(!o.alive || kept);
    }
    CHECK(tshm_check(w->db, 0) == 0);

    /* the last close is the last: no instance of the dead child counts as attached */
    for (int i = w->nh - 1; i >= 0; i--) {
        int last = -1;
        CHECK_RC(tshm_close(w->h[i], &last), TSHM_OK);
        CHECK(last == (i == 0));
    }
    w->nh = 0;
    CHECK(tshm_check(w->db, 1) == 0);
    tshm *again = open_db(w->db, 0);
    CHECK(again != NULL);
    if (again != NULL) {
        CHECK_RC(tshm_info_get(again, &info), TSHM_OK);
        CHECK(info.initialized == 1);
        int last = 0;
        CHECK_RC(tshm_close(again, &last), TSHM_OK);
        CHECK(last == 1);
    }
    if (harness_failed != failed) fprintf(stderr, "  (after a kill at %s)\n", what);
}

static const char *setup_name(int s) {
    switch (s) {
    case ALONE: return "alone";
    case ATTACHED: return "attached";
    case PENDING_TRIM: return "pending-trim";
    case INSTANCES_FULL: return "instances-full";
    case READERS_FULL: return "readers-full";
    case ENGINE_HELD: return "engine-held";
    case SPARSE: return "sparse";
    case ROLES_DEAD: return "roles-dead";
    }
    return "?";
}

static struct world world;

int main(void) {
    signal(SIGALRM, watchdog_fired);
    alarm(120);
    int cases = 0;
    double t0 = now_ms();
    for (size_t i = 0; i < NPOINTS; i++) {
        const struct point *p = &POINTS[i];
        for (int setup = 1; setup <= LAST_SETUP; setup <<= 1) {
            if (!(p->setups & setup)) continue;
            char name[80], what[128];
            snprintf(name, sizeof name, "crash-%s-%s.db", p->name, setup_name(setup));
            snprintf(what, sizeof what, "%s (%s)", p->name, setup_name(setup));
            world.db = test_db(name);
            world.setup = setup;
            set_up(&world);
            if (p->action == OBSERVE && setup == ALONE) {
                tshm *h = open_db(world.db, 0); /* an observer needs a sidecar to observe */
                CHECK(h != NULL);
                if (h != NULL) CHECK_RC(tshm_close(h, NULL), TSHM_OK);
            }
            int st = run_child(p, world.db);
            if (st != 128 + SIGKILL)
                fprintf(stderr, "%s: the child %s %d, not killed at the point\n", what,
                        st > 128 ? "died of signal" : "exited", st > 128 ? st - 128 : st);
            CHECK(st == 128 + SIGKILL);
            verify(&world, what);
            cases++;
        }
    }
    printf("%d kills at %zu points survived in %.0f ms\n", cases, NPOINTS, now_ms() - t0);
    return harness_done("test_crashpoints");
}
