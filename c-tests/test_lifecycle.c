/*
 * test_lifecycle.c — opening and closing under pressure: handles of one process racing each
 * other, a process stopped in the middle of its open, a waiter killed while it waits, hooks
 * that re-enter, bytes changed from outside, and paths, options and permissions that are wrong.
 *
 * Several tests hold one thread at a named test point (TSHM_TEST_PAUSE_AT, see
 * src/testpoint.rs): the library writes the point's name to a socket and waits for a byte back,
 * so the test decides what happens in between. Points are armed in a fresh child, before its
 * first libtshm call. A watchdog turns a hang into a failure.
 */
#include "harness.h"

#include <dirent.h>
#include <poll.h>
#include <pthread.h>
#include <sys/socket.h>

static void watchdog_fired(int sig) {
    (void)sig;
    static const char msg[] = "FAIL watchdog: the test hung\n";
    if (write(2, msg, sizeof msg - 1) < 0) {}
    _exit(99);
}

/* Fails the whole run if the current test does not finish within `seconds`. */
static void watchdog(unsigned seconds) {
    signal(SIGALRM, watchdog_fired);
    alarm(seconds);
}

static int exists(const char *path) {
    struct stat st;
    return lstat(path, &st) == 0;
}

static off_t file_size(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 ? st.st_size : -1;
}

/* Reads `n` bytes at `off` of `path` in a child process: this process must not open and close
 * a descriptor of its own on a sidecar it uses (under POSIX locks that would drop its locks). */
static void read_in_child(const char *path, off_t off, void *out, size_t n) {
    int p[2];
    if (pipe(p) != 0) exit(2);
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        char buf[64] = {0};
        int fd = open(path, O_RDONLY | O_CLOEXEC);
        if (fd < 0 || pread(fd, buf, n, off) != (ssize_t)n) _exit(3);
        if (write(p[1], buf, n) != (ssize_t)n) _exit(3);
        _exit(0);
    }
    close(p[1]);
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(p[0], (char *)out + got, n - got);
        if (r <= 0) break;
        got += (size_t)r;
    }
    close(p[0]);
    CHECK(got == n);
    CHECK(child_wait(kid) == 0);
}

/* Writes `n` bytes at `off` of `path` in a child process (see read_in_child). */
static void write_in_child(const char *path, off_t off, const void *buf, size_t n) {
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        int fd = open(path, O_RDWR | O_CLOEXEC);
        if (fd < 0 || pwrite(fd, buf, n, off) != (ssize_t)n) _exit(3);
        _exit(0);
    }
    CHECK(child_wait(kid) == 0);
}

/* ---- test points ------------------------------------------------------------------------- */

/* Arms test point `name` in this (freshly forked) process; returns the test's end. */
static int arm_pause(const char *name) {
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sp) != 0) exit(2);
    char fd[16];
    snprintf(fd, sizeof fd, "%d", sp[1]);
    setenv("TSHM_TEST_PAUSE_AT", name, 1);
    setenv("TSHM_TEST_PAUSE_FD", fd, 1);
    return sp[0];
}

/* Lets the thread paused at a test point go on (or lets the next one pass without waiting). */
static void resume(int fd) {
    char c = 1;
    if (write(fd, &c, 1) != 1) exit(2);
}

/* ------------------------------------------------------------------------------------------ */
/* A read-only and a writable handle opening at once in one process                             */
/* ------------------------------------------------------------------------------------------ */

struct pair_race {
    const char *db;
    pthread_barrier_t go;
    tshm *h[2];
    int rc[2];
};

struct pair_arg {
    struct pair_race *race;
    int k;
};

static void *open_one(void *p) {
    struct pair_arg *a = p;
    tshm_options o;
    tshm_options_init(&o);
    o.flags = a->k == 0 ? TSHM_OPEN_READONLY : 0;
    pthread_barrier_wait(&a->race->go);
    a->race->rc[a->k] = tshm_open(a->race->db, &o, &a->race->h[a->k]);
    return NULL;
}

static void readonly_and_writable_open_race(void *arg) {
    const char *db = arg;
    for (int trial = 0; trial < 400; trial++) {
        struct pair_race race;
        memset(&race, 0, sizeof race);
        race.db = db;
        pthread_barrier_init(&race.go, NULL, 2);
        pthread_t t[2];
        struct pair_arg args[2] = {{&race, 0}, {&race, 1}};
        for (int k = 0; k < 2; k++) pthread_create(&t[k], NULL, open_one, &args[k]);
        for (int k = 0; k < 2; k++) pthread_join(t[k], NULL);
        pthread_barrier_destroy(&race.go);
        CHECK_RC(race.rc[0], TSHM_OK);
        CHECK_RC(race.rc[1], TSHM_OK);
        if (race.rc[1] == TSHM_OK) {
            /* the writable handle writes shared memory: it must be mapped writable */
            CHECK(info_of(race.h[1]).readonly == 0);
            CHECK_RC(tshm_writer_acquire(race.h[1], 1000), TSHM_OK);
            CHECK_RC(tshm_writer_release(race.h[1]), TSHM_OK);
        }
        if (race.rc[0] == TSHM_OK) close_ok(race.h[0]);
        if (race.rc[1] == TSHM_OK) close_ok(race.h[1]);
        if (harness_failed) return;
    }
}

static void test_readonly_and_writable_handles_opening_at_once(void) {
    const char *db = test_db("lc-pair.db");
    tshm *other = open_with(db, 0, 0, TSHM_READERS_CAS); /* "another process attached" */
    CHECK(other != NULL);
    /* The racing opens run in a child: a SIGSEGV there is a result, not the end of the run. */
    CHECK(in_child(readonly_and_writable_open_race, (void *)db) == 0);
    close_ok(other);
}

static void test_readwrite_open_after_readonly_open_in_one_process(void) {
    const char *db = test_db("lc-ro-then-rw.db");
    tshm *maker = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(maker != NULL);
    if (maker == NULL) return;
    CHECK_RC(tshm_writer_acquire(maker, 0), TSHM_OK);
    CHECK_RC(tshm_index_append(maker, 7, 1), TSHM_OK);
    publish_max_frame(maker, 1);
    CHECK_RC(tshm_writer_release(maker), TSHM_OK);
    close_ok(maker); /* the last one: that session is over */

    tshm *r = open_with(db, TSHM_OPEN_READONLY, 0, 0);
    CHECK(r != NULL);
    if (r == NULL) return;
    CHECK(info_of(r).readonly == 1);
    tshm *w = NULL;
    CHECK_RC(tshm_open(db, NULL, &w), TSHM_OK);
    if (w != NULL) {
        CHECK(info_of(w).readonly == 0);
        /* it joins the session the read-only handle opened: the state it finds is intact */
        CHECK(info_of(w).initialized == 0);
        uint64_t f = 0;
        CHECK_RC(tshm_index_find(w, 7, UINT64_MAX, &f), TSHM_OK);
        CHECK(f == 1);
        CHECK_RC(tshm_writer_acquire(w, 0), TSHM_OK);
        publish_max_frame(w, 9);
        CHECK_RC(tshm_writer_release(w), TSHM_OK);
        tshm_snapshot s;
        memset(&s, 0, sizeof s);
        CHECK_RC(tshm_snapshot_get(r, &s), TSHM_OK);
        CHECK(s.max_frame == 9);
        /* the read-only handle stays read-only */
        CHECK_RC(tshm_writer_acquire(r, 0), TSHM_READONLY);
        /* an EXCLUSIVE open against this process's SHARED handles fails and changes nothing:
         * another process still joins */
        tshm *x = NULL;
        CHECK(open_with(db, TSHM_OPEN_EXCLUSIVE, 0, 0) == NULL);
        fflush(NULL);
        pid_t kid = fork();
        if (kid == 0) {
            x = open_with(db, 0, 0, 0);
            _exit(x != NULL && tshm_close(x, NULL) == TSHM_OK ? 0 : 1);
        }
        CHECK(child_wait(kid) == 0);
        close_ok(w);
    }
    close_ok(r);
}

/* ------------------------------------------------------------------------------------------ */
/* A closing node and a new node of the same sidecar in one process                              */
/* ------------------------------------------------------------------------------------------ */

struct node_race {
    const char *db;
    tshm *h;
    int rc;
    int done_fd; /* a byte is written here when the open returned */
};

static void *open_close(void *p) {
    struct node_race *n = p;
    tshm *h = NULL;
    n->rc = tshm_open(n->db, NULL, &h);
    if (n->rc == TSHM_OK) n->rc = tshm_close(h, NULL); /* the node's drop pauses */
    return NULL;
}

static void *open_and_tell(void *p) {
    struct node_race *n = p;
    n->rc = tshm_open(n->db, NULL, &n->h);
    char c = 1;
    if (write(n->done_fd, &c, 1) != 1) {}
    return NULL;
}

/* A process that answers "can you open this EXCLUSIVE now?" with the result code. */
static pid_t start_prober(const char *db, int *cmd_fd, int *res_fd) {
    int cmd[2], res[2];
    if (pipe(cmd) != 0 || pipe(res) != 0) exit(2);
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        close(cmd[1]);
        close(res[0]);
        char c;
        while (read(cmd[0], &c, 1) == 1) {
            tshm_options o;
            tshm_options_init(&o);
            o.flags = TSHM_OPEN_EXCLUSIVE;
            tshm *h = NULL;
            int rc = tshm_open(db, &o, &h);
            if (rc == TSHM_OK) tshm_close(h, NULL);
            if (write(res[1], &rc, sizeof rc) != sizeof rc) _exit(3);
        }
        _exit(0);
    }
    close(cmd[0]);
    close(res[1]);
    *cmd_fd = cmd[1];
    *res_fd = res[0];
    return kid;
}

static void closing_node_race(void *arg) {
    const char *db = arg;
    int cmd, res;
    pid_t prober = start_prober(db, &cmd, &res);
    int ctl = arm_pause("node_drop");

    /* T1 opens and closes the only handle; the node's drop stops at its test point. */
    struct node_race n1 = {db, NULL, -1, -1};
    pthread_t t1, t2;
    pthread_create(&t1, NULL, open_close, &n1);
    char line[64];
    CHECK(read_line(ctl, line, sizeof line) && strcmp(line, "node_drop") == 0);

    /* T2 opens the same sidecar while that drop is pending: it either has to wait for the drop
     * (and says so) or it opened a second descriptor on the inode. */
    int done[2];
    if (pipe(done) != 0) exit(2);
    struct node_race n2 = {db, NULL, -1, done[1]};
    pthread_create(&t2, NULL, open_and_tell, &n2);
    struct pollfd pf[2] = {{ctl, POLLIN, 0}, {done[0], POLLIN, 0}};
    while (poll(pf, 2, -1) < 0 && errno == EINTR) {}
    if (pf[0].revents & POLLIN) {
        CHECK(read_line(ctl, line, sizeof line) && strcmp(line, "node_get_waits") == 0);
    }
    resume(ctl); /* the old node's drop finishes: forget it, close its descriptor */
    pthread_join(t1, NULL);
    CHECK_RC(n1.rc, TSHM_OK);
    pthread_join(t2, NULL);
    CHECK_RC(n2.rc, TSHM_OK);

    /* T2's handle is attached: another process cannot open EXCLUSIVE, and T2 can write. */
    char c = 1;
    int rc = -1;
    if (write(cmd, &c, 1) != 1 || read(res, &rc, sizeof rc) != sizeof rc) rc = -1;
    CHECK_RC(rc, TSHM_CONFLICT);
    if (n2.rc == TSHM_OK) {
        CHECK_RC(tshm_writer_acquire(n2.h, 0), TSHM_OK);
        CHECK_RC(tshm_writer_release(n2.h), TSHM_OK);
        resume(ctl); /* let this handle's node drop pass its test point */
        close_ok(n2.h);
    }
    close(cmd);
    close(res);
    CHECK(child_wait(prober) == 0);
}

static void test_closing_last_handle_keeps_a_new_nodes_locks(void) {
    const char *db = test_db("lc-node.db");
    CHECK(in_child(closing_node_race, (void *)db) == 0);
}

/* ------------------------------------------------------------------------------------------ */
/* A process stopped in the middle of its open                                                   */
/* ------------------------------------------------------------------------------------------ */

struct opener {
    const char *db;
    tshm *h;
    int rc;
};

static void *open_in_thread(void *p) {
    struct opener *o = p;
    o->rc = tshm_open(o->db, NULL, &o->h);
    return NULL;
}

static void test_process_stopped_in_its_open_stalls_nothing_here(void) {
    const char *db = test_db("lc-stopped.db");
    tshm *h1 = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(h1 != NULL);
    if (h1 == NULL) return;
    CHECK_RC(tshm_writer_acquire(h1, 0), TSHM_OK);

    /* B stops while it holds the init byte in the middle of its open. */
    int sp[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sp) != 0) exit(2);
    fflush(NULL);
    pid_t b = fork();
    if (b == 0) {
        close(sp[0]);
        char fd[16];
        snprintf(fd, sizeof fd, "%d", sp[1]);
        setenv("TSHM_TEST_PAUSE_AT", "open_holding_init", 1);
        setenv("TSHM_TEST_PAUSE_FD", fd, 1);
        tshm *h = open_with(db, 0, 0, 0);
        _exit(h != NULL && tshm_close(h, NULL) == TSHM_OK ? 0 : 1);
    }
    close(sp[1]);
    char line[64];
    CHECK(read_line(sp[0], line, sizeof line) && strcmp(line, "open_holding_init") == 0);
    kill(b, SIGSTOP);
    int st;
    CHECK(waitpid(b, &st, WUNTRACED) == b && WIFSTOPPED(st));

    /* Here, another handle opens and the first one releases the writer role: neither waits. */
    watchdog(30);
    struct opener o = {db, NULL, -1};
    pthread_t t;
    pthread_create(&t, NULL, open_in_thread, &o);
    CHECK_RC(tshm_writer_release(h1), TSHM_OK);
    pthread_join(t, NULL);
    CHECK_RC(o.rc, TSHM_OK);
    if (o.rc == TSHM_OK) {
        CHECK_RC(tshm_writer_acquire(o.h, 0), TSHM_OK);
        CHECK_RC(tshm_writer_release(o.h), TSHM_OK);
        close_ok(o.h); /* not the process's last handle: no init byte needed either */
    }
    alarm(0);

    kill(b, SIGCONT);
    resume(sp[0]);
    CHECK(child_wait(b) == 0);
    close(sp[0]);
    close_ok(h1);
}

/* ------------------------------------------------------------------------------------------ */
/* A waiter killed while it waits                                                               */
/* ------------------------------------------------------------------------------------------ */

enum {
    WRITER_WAITERS_OFFSET = 200, /* header byte map: u32 writer waiter count (byte-lock roles) */
    WRITER_WORD_OFFSET = 168,    /* u64 writer role word (shared-memory roles) */
};
static const uint64_t ROLE_WAITERS_BIT = 1ull << 47;

/* Whether a writer waiter is announced in the sidecar: the count (byte-lock roles) or the
 * waiters bit of the role word (shared-memory roles). */
static int writer_waiters(const char *db, uint32_t strategy) {
    if (strategy == TSHM_ROLES_BYTELOCK) {
        uint32_t v = 0xffffffffu;
        read_in_child(sidecar_of(db), WRITER_WAITERS_OFFSET, &v, sizeof v);
        return (int)v;
    }
    uint64_t w = ~0ull;
    read_in_child(sidecar_of(db), WRITER_WORD_OFFSET, &w, sizeof w);
    return (w & ROLE_WAITERS_BIT) != 0;
}

/* A child that opens db and waits up to timeout_ms for the writer role: it exits 0 holding it,
 * 3 when the wait failed, 1 when it could not open. */
static pid_t writer_waiter(const char *db, uint32_t timeout_ms) {
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(60); /* a test that stalls does not leave it behind */
        tshm *x = open_with(db, 0, 0, 0);
        if (x == NULL) _exit(1);
        _exit(tshm_writer_acquire(x, timeout_ms) == TSHM_OK ? 0 : 3);
    }
    return pid;
}

static void test_waiter_killed_while_waiting_is_forgotten_when_alone(void) {
    const char *db = test_db("lc-waiter.db");
    tshm *h = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(h != NULL);
    if (h == NULL) return;
    uint32_t strategy = info_of(h).role_strategy;
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    pid_t w = writer_waiter(db, 600000); /* waits until killed */
    /* The waiter announces itself in the sidecar before it sleeps. */
    watchdog(30);
    while (writer_waiters(db, strategy) != 1) sched_yield();
    alarm(0);
    child_kill(w);
    CHECK(writer_waiters(db, strategy) == 1); /* it could not take itself off */
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
    if (strategy == TSHM_ROLES_SHM) {
        /* The release handed the role to the dead waiter: a dead holder, taken over at once by
         * the next acquire; its release finds nobody waiting and frees the role. */
        CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
        CHECK_RC(tshm_writer_release(h), TSHM_OK);
        CHECK(writer_waiters(db, strategy) == 0);
    }
    int last = -1;
    CHECK_RC(tshm_close(h, &last), TSHM_OK);
    CHECK(last == 1);
    /* The last closer was provably alone: no waiter is left to wake on every release. */
    CHECK(writer_waiters(db, strategy) == 0);
}

/* Writer waiters queued now (shared-memory roles): instance records with a writer ticket. */
static int writer_tickets(const char *db) {
    uint64_t inst_off = 0;
    uint32_t hwm = 0;
    read_in_child(sidecar_of(db), 40, &inst_off, sizeof inst_off); /* header: instances offset */
    read_in_child(sidecar_of(db), 632, &hwm, sizeof hwm);          /* instance high-water mark */
    int n = 0;
    for (uint32_t i = 0; i < hwm && i < 64; i++) {
        uint64_t t = 0;
        read_in_child(sidecar_of(db), (off_t)(inst_off + 128u * i + 32u), &t, sizeof t);
        n += t != 0;
    }
    return n;
}

/* The oldest waiter is killed in the queue; the release hands the role to it (dead) and the
 * next waiter, alive, takes it over within its wait slice instead of waiting for its time-out. */
static void test_dead_waiter_chosen_by_a_release_is_passed_over(void) {
    const char *db = test_db("lc-dead-first.db");
    tshm *h = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(h != NULL);
    if (h == NULL) return;
    if (info_of(h).role_strategy != TSHM_ROLES_SHM) {
        close_ok(h);
        return; /* byte-lock roles have no queue */
    }
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    pid_t first = writer_waiter(db, 600000); /* waits until killed */
    watchdog(30);
    while (writer_tickets(db) != 1) sched_yield();
    /* far shorter than the first waiter's 600 s, far longer than a slice */
    pid_t second = writer_waiter(db, 20000);
    while (writer_tickets(db) != 2) sched_yield();
    alarm(0);
    child_kill(first);
    CHECK_RC(tshm_writer_release(h), TSHM_OK); /* to the oldest ticket: the dead one */
    CHECK(child_wait(second) == 0);
    CHECK_RC(tshm_writer_acquire(h, 5000), TSHM_OK);
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
    close_ok(h);
}

/* ------------------------------------------------------------------------------------------ */
/* The last-close hook opening its own database                                                 */
/* ------------------------------------------------------------------------------------------ */

struct reentry {
    const char *db;
    int calls, rc;
    int msg_ok;
};

static void reopen_from_hook(tshm *h, void *ctx) {
    (void)h;
    struct reentry *r = ctx;
    r->calls++;
    tshm *again = NULL;
    r->rc = tshm_open(r->db, NULL, &again);
    const char *m = tshm_errmsg();
    r->msg_ok = m != NULL && strstr(m, "last-close hook") != NULL;
    if (r->rc == TSHM_OK) tshm_close(again, NULL);
}

struct nested {
    const char *db_x;
    tshm *y; /* the last handle of another database, closed inside x's hook */
    int y_calls, rc;
};

static void count_call(tshm *h, void *ctx) {
    (void)h;
    ((struct nested *)ctx)->y_calls++;
}

static void close_other_then_reopen(tshm *h, void *ctx) {
    (void)h;
    struct nested *n = ctx;
    int last = -1;
    CHECK_RC(tshm_close(n->y, &last), TSHM_OK); /* y's hook runs inside this one */
    CHECK(last == 1);
    tshm *again = NULL;
    n->rc = tshm_open(n->db_x, NULL, &again);
    if (n->rc == TSHM_OK) tshm_close(again, NULL);
}

static void test_nested_last_close_hooks_refuse_reopening_either(void) {
    const char *x = test_db("lc-hook-x.db");
    const char *y = test_db("lc-hook-y.db");
    struct nested n = {x, NULL, 0, -1};
    tshm_options o;
    tshm_options_init(&o);
    o.on_last_close = count_call;
    o.ctx = &n;
    CHECK_RC(tshm_open(y, &o, &n.y), TSHM_OK);
    o.on_last_close = close_other_then_reopen;
    tshm *hx = NULL;
    CHECK_RC(tshm_open(x, &o, &hx), TSHM_OK);
    if (hx == NULL || n.y == NULL) return;
    watchdog(30);
    CHECK_RC(tshm_close(hx, NULL), TSHM_OK);
    alarm(0);
    CHECK(n.y_calls == 1);
    CHECK_RC(n.rc, TSHM_MISUSE);
}

/* Threads of one handle race for the writer role while another process keeps taking it. */
struct sibling_race {
    tshm *h;
    int inside;   /* threads of the handle that believe they hold the role now */
    int overlaps; /* a thread found another inside */
    int ok, busy, misuse, bad_rc, release_failed;
};

static void *sibling_loop(void *arg) {
    struct sibling_race *r = arg;
    unsigned seed = (unsigned)(uintptr_t)&seed;
    for (int i = 0; i < 20000; i++) {
        static const uint32_t timeouts[] = {0, 1, 20};
        int rc = tshm_writer_acquire(r->h, timeouts[rand_r(&seed) % 3]);
        if (rc == TSHM_OK) {
            if (__atomic_add_fetch(&r->inside, 1, __ATOMIC_SEQ_CST) != 1)
                __atomic_add_fetch(&r->overlaps, 1, __ATOMIC_SEQ_CST);
            __atomic_add_fetch(&r->ok, 1, __ATOMIC_SEQ_CST);
            for (volatile int k = rand_r(&seed) % 2000; k > 0; k--) {}
            __atomic_sub_fetch(&r->inside, 1, __ATOMIC_SEQ_CST);
            if (tshm_writer_release(r->h) != TSHM_OK)
                __atomic_add_fetch(&r->release_failed, 1, __ATOMIC_SEQ_CST);
        } else if (rc == TSHM_BUSY) {
            __atomic_add_fetch(&r->busy, 1, __ATOMIC_SEQ_CST);
        } else if (rc == TSHM_MISUSE) {
            __atomic_add_fetch(&r->misuse, 1, __ATOMIC_SEQ_CST);
        } else {
            __atomic_add_fetch(&r->bad_rc, 1, __ATOMIC_SEQ_CST);
        }
    }
    return NULL;
}

/* Four threads of one handle loop on acquire (try-once, 1 ms, 20 ms) and release while a
 * second process takes and gives the role back, so that they race each other on the fast path,
 * in the queue and at handoffs. Never do two threads of the handle hold the role at once; a
 * thread that loses to a sibling gets TSHM_MISUSE (or TSHM_BUSY), never anything else; every
 * release by the thread that holds succeeds; and afterwards nothing is stuck: another handle
 * takes the role at once. For both role strategies. */
static void test_threads_of_one_handle_never_hold_the_writer_role_twice(void) {
    static const uint32_t strategies[] = {TSHM_ROLES_SHM, TSHM_ROLES_BYTELOCK};
    for (int s = 0; s < 2; s++) {
        const char *db = test_db(s == 0 ? "lc-siblings-shm.db" : "lc-siblings-byte.db");
        tshm_options o;
        tshm_options_init(&o);
        o.role_strategy = strategies[s];
        tshm *h = NULL;
        CHECK_RC(tshm_open(db, &o, &h), TSHM_OK);
        if (h == NULL) return;
        watchdog(120);
        int ready[2], stop[2];
        if (pipe(ready) != 0 || pipe(stop) != 0) exit(2);
        fflush(NULL);
        pid_t other = fork();
        if (other == 0) {
            close(ready[0]);
            close(stop[1]);
            tshm *x = NULL;
            if (tshm_open(db, &o, &x) != TSHM_OK) _exit(1);
            if (write(ready[1], "r", 1) != 1) _exit(2);
            /* Until the parent closes its end of `stop`. */
            for (struct pollfd pf = {stop[0], POLLIN, 0}; poll(&pf, 1, 0) == 0;) {
                int rc = tshm_writer_acquire(x, 50);
                if (rc == TSHM_BUSY) continue;
                if (rc != TSHM_OK) _exit(4);
                for (volatile int k = 0; k < 2000; k++) {}
                if (tshm_writer_release(x) != TSHM_OK) _exit(5);
            }
            _exit(tshm_close(x, NULL) == TSHM_OK ? 0 : 6);
        }
        close(ready[1]);
        close(stop[0]);
        char c;
        CHECK(read(ready[0], &c, 1) == 1);
        struct sibling_race r;
        memset(&r, 0, sizeof r);
        r.h = h;
        pthread_t t[4];
        for (int k = 0; k < 4; k++) pthread_create(&t[k], NULL, sibling_loop, &r);
        for (int k = 0; k < 4; k++) pthread_join(t[k], NULL);
        close(stop[1]);
        close(ready[0]);
        CHECK(child_wait(other) == 0);
        alarm(0);
        if (r.overlaps != 0 || r.bad_rc != 0 || r.release_failed != 0)
            fprintf(stderr, "  strategy %u: %d overlaps, %d other codes, %d failed releases\n",
                    strategies[s], r.overlaps, r.bad_rc, r.release_failed);
        CHECK(r.overlaps == 0);
        CHECK(r.bad_rc == 0);
        CHECK(r.release_failed == 0);
        CHECK(r.ok > 0);
        CHECK(r.misuse > 0); /* the siblings did race */
        /* Nothing stuck: the handle and a new one each take and give back the role at once. */
        CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
        CHECK_RC(tshm_writer_release(h), TSHM_OK);
        tshm *y = NULL;
        CHECK_RC(tshm_open(db, &o, &y), TSHM_OK);
        if (y != NULL) {
            CHECK_RC(tshm_writer_acquire(y, 0), TSHM_OK);
            CHECK_RC(tshm_writer_release(y), TSHM_OK);
            close_ok(y);
        }
        close_ok(h);
    }
}

static void test_last_close_hook_opening_its_database_is_misuse(void) {
    const char *db = test_db("lc-hook.db");
    struct reentry r = {db, 0, -1, 0};
    tshm_options o;
    tshm_options_init(&o);
    o.on_last_close = reopen_from_hook;
    o.ctx = &r;
    tshm *h = NULL;
    CHECK_RC(tshm_open(db, &o, &h), TSHM_OK);
    if (h == NULL) return;
    watchdog(30);
    int last = -1;
    CHECK_RC(tshm_close(h, &last), TSHM_OK);
    alarm(0);
    CHECK(last == 1);
    CHECK(r.calls == 1);
    CHECK_RC(r.rc, TSHM_MISUSE);
    CHECK(r.msg_ok);
    /* and the database opens normally afterwards */
    tshm *again = open_with(db, 0, 0, 0);
    CHECK(again != NULL);
    if (again != NULL) {
        CHECK(info_of(again).initialized == 1);
        close_ok(again);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* Bytes changed from outside; read-only handles                                                */
/* ------------------------------------------------------------------------------------------ */

static void test_reader_slot_overwritten_from_outside_is_corrupt(void) {
    const char *db = test_db("lc-slot.db");
    tshm *h = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(h != NULL);
    if (h == NULL) return;
    uint32_t slot = 0;
    tshm_snapshot s;
    CHECK_RC(tshm_reader_begin(h, &slot, &s), TSHM_OK);
    uint64_t readers_off = 0, zero = 0;
    read_in_child(sidecar_of(db), 32, &readers_off, sizeof readers_off); /* header: readers offset */
    write_in_child(sidecar_of(db), (off_t)(readers_off + 16u * slot), &zero, sizeof zero);
    CHECK_RC(tshm_reader_end(h, slot), TSHM_CORRUPT);
    close_ok(h);
}

static void test_readonly_handle_never_creates_regions(void) {
    const char *db = test_db("lc-region.db");
    tshm *w = open_with(db, 0, 0, TSHM_READERS_CAS);
    tshm *r = open_with(db, TSHM_OPEN_READONLY, 0, 0);
    CHECK(w != NULL && r != NULL);
    if (w == NULL || r == NULL) {
        close_ok(r);
        close_ok(w);
        return;
    }
    const off_t before = file_size(sidecar_of(db));
    void *p = (void *)&before;
    CHECK_RC(tshm_region(r, 3, 32768, 1, &p), TSHM_READONLY);
    CHECK(p == (void *)&before);
    CHECK(file_size(sidecar_of(db)) == before);
    CHECK_RC(tshm_region(w, 3, 32768, 0, &p), TSHM_OK);
    CHECK(p == NULL); /* nothing was made */

    void *pw = NULL, *pr = NULL;
    CHECK_RC(tshm_region(w, 3, 32768, 1, &pw), TSHM_OK);
    CHECK(pw != NULL);
    CHECK_RC(tshm_region(r, 3, 32768, 1, &pr), TSHM_OK); /* an existing one is found */
    CHECK(pr == pw);
    close_ok(r);
    close_ok(w);
}

/* ------------------------------------------------------------------------------------------ */
/* Paths, options and permissions that are wrong                                                */
/* ------------------------------------------------------------------------------------------ */

static int dir_is_empty(const char *path) {
    DIR *d = opendir(path);
    if (d == NULL) return 0;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0) n++;
    closedir(d);
    return n == 0;
}

static void test_paths_naming_no_database_file_create_nothing(void) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s.d", test_db("lc-paths"));
    mkdir(dir, 0755);
    char cwd[1024];
    if (getcwd(cwd, sizeof cwd) == NULL || chdir(dir) != 0) exit(2);
    mkdir("sub", 0755);

    tshm *out = NULL;
    CHECK_RC(tshm_open("", NULL, &out), TSHM_MISUSE);
    CHECK(out == NULL && !exists("-tshm"));
    CHECK_RC(tshm_open("sub", NULL, &out), TSHM_CANTOPEN);
    CHECK(tshm_errno() == EISDIR);
    CHECK(out == NULL && !exists("sub-tshm"));
    CHECK_RC(tshm_open("sub/", NULL, &out), TSHM_MISUSE);
    CHECK_RC(tshm_open("sub/.", NULL, &out), TSHM_MISUSE);
    CHECK_RC(tshm_open("sub/..", NULL, &out), TSHM_MISUSE);
    CHECK(out == NULL && dir_is_empty("sub"));
    rmdir("sub");
    CHECK(dir_is_empty("."));
    if (chdir(cwd) != 0) exit(2);
}

static void test_option_sizes_out_of_any_range_are_refused(void) {
    const char *db = test_db("lc-opts.db");
    struct {
        tshm_options o;
        unsigned char later[32];
    } big;
    memset(&big, 0, sizeof big);
    tshm_options_init(&big.o);
    tshm *h = NULL;

    big.o.size = UINT32_MAX;
    CHECK_RC(tshm_open(db, &big.o, &h), TSHM_MISUSE);
    big.o.size = sizeof big.o - 1;
    CHECK_RC(tshm_open(db, &big.o, &h), TSHM_MISUSE);
    CHECK(h == NULL && !exists(sidecar_of(db)));

    /* A later header's larger struct: this library cannot know what its new fields ask. */
    big.o.size = sizeof big;
    CHECK_RC(tshm_open(db, &big.o, &h), TSHM_NOTSUPPORTED);
    CHECK(h == NULL && !exists(sidecar_of(db)));
    big.o.size = sizeof big.o;

    /* A caller built against the first header (the struct ended at index_limit) gets the
     * defaults for the later fields, whatever its memory holds there. */
    big.o.size = offsetof(tshm_options, instance_slots);
    big.o.instance_slots = 7;
    big.o.role_strategy = 99;
    CHECK_RC(tshm_open(db, &big.o, &h), TSHM_OK);
    if (h != NULL) {
        tshm_info i;
        CHECK_RC(tshm_info_get(h, &i), TSHM_OK);
        CHECK(i.instance_slots == 4096 &&
              i.role_strategy == (seed_strategies() ? TSHM_ROLES_BYTELOCK : TSHM_ROLES_SHM));
        close_ok(h);
    }
    h = NULL;
    big.o.size = offsetof(tshm_options, instance_slots) + 4; /* no version's size */
    CHECK_RC(tshm_open(db, &big.o, &h), TSHM_MISUSE);
    big.o.size = sizeof big.o;
    big.o.instance_slots = 0;
    big.o.role_strategy = 0;

    big.o.index_limit = UINT64_MAX;
    CHECK_RC(tshm_open(db, &big.o, &h), TSHM_MISUSE);
    big.o.index_limit = 4294967294u; /* the format's limit itself */
    CHECK_RC(tshm_open(db, &big.o, &h), TSHM_OK);
    close_ok(h);
}

struct ro_rw_race {
    const char *db;
    volatile int stop;
    int bad;
};

static void *ro_open_close_loop(void *p) {
    struct ro_rw_race *r = p;
    tshm_options o;
    tshm_options_init(&o);
    o.flags = TSHM_OPEN_READONLY;
    while (!r->stop) {
        tshm *h = NULL;
        if (tshm_open(r->db, &o, &h) == TSHM_OK) tshm_close(h, NULL);
    }
    return NULL;
}

static void open_in_unwritable_directory(void *arg) {
    const char *dir = arg;
    if (geteuid() == 0) {
        /* root passes permission checks: become nobody for this */
        if (setgid(65534) != 0 || setuid(65534) != 0) {
            fprintf(stderr, "FAIL cannot become uid 65534: %s\n", strerror(errno));
            harness_failed++;
            return;
        }
    }
    char db[700];
    snprintf(db, sizeof db, "%s/app.db", dir);
    tshm *h = NULL;
    CHECK_RC(tshm_open(db, NULL, &h), TSHM_CANTOPEN);
    CHECK(tshm_errno() == EACCES);
    const char *m = tshm_errmsg();
    CHECK(m != NULL && strstr(m, "create") != NULL);
    CHECK(h == NULL && !exists(sidecar_of(db)));
    tshm_options o;
    tshm_options_init(&o);
    o.flags = TSHM_OPEN_READONLY;
    CHECK_RC(tshm_open(db, &o, &h), TSHM_NOTFOUND); /* the documented legacy-path answer */

    /* A sidecar this user may only read gives a read-only handle on a read-write open. */
    snprintf(db, sizeof db, "%s/readable.db", dir);
    h = NULL;
    CHECK_RC(tshm_open(db, NULL, &h), TSHM_OK);
    if (h != NULL) {
        CHECK(info_of(h).readonly == 1);
        tshm_snapshot s;
        CHECK_RC(tshm_snapshot_get(h, &s), TSHM_OK);
        close_ok(h);
    }
    /* Read-only and (refused) read-write opens of that sidecar racing in two threads. */
    snprintf(db, sizeof db, "%s/readable.db", dir);
    struct ro_rw_race race = {db, 0, 0};
    pthread_t t;
    pthread_create(&t, NULL, ro_open_close_loop, &race);
    for (int i = 0; i < 3000; i++) {
        tshm *x = NULL;
        int rc = tshm_open(db, NULL, &x);
        if (rc == TSHM_OK) {
            if (info_of(x).readonly != 1) race.bad++;
            tshm_close(x, NULL);
        } else if (rc != TSHM_READONLY) {
            race.bad++;
        }
    }
    race.stop = 1;
    pthread_join(t, NULL);
    CHECK(race.bad == 0);

    /* A FIFO where the sidecar should be is refused at once (it would block an open). */
    snprintf(db, sizeof db, "%s/fifo.db", dir);
    h = NULL;
    CHECK_RC(tshm_open(db, NULL, &h), TSHM_CANTOPEN);
    CHECK(h == NULL);
}

static void test_readwrite_open_in_unwritable_directory_says_why(void) {
    char dir[600];
    snprintf(dir, sizeof dir, "%s.d", test_db("lc-noperm"));
    mkdir(dir, 0755);
    char path[700];
    snprintf(path, sizeof path, "%s/readable.db", dir);
    tshm *maker = open_with(path, 0, 0, TSHM_READERS_CAS); /* root's sidecar, mode 0644 */
    CHECK(maker != NULL);
    close_ok(maker);
    snprintf(path, sizeof path, "%s/readable.db-tshm", dir);
    chmod(path, 0644);
    snprintf(path, sizeof path, "%s/fifo.db-tshm", dir);
    CHECK(mkfifo(path, 0444) == 0);
    chmod(dir, 0555);
    CHECK(in_child(open_in_unwritable_directory, dir) == 0);
    chmod(dir, 0755);
}

/* ------------------------------------------------------------------------------------------ */
/* A close whose protocol step fails                                                            */
/* ------------------------------------------------------------------------------------------ */

static void failing_close(void *arg) {
    const char *db = arg;
    setenv("TSHM_TEST_FAIL_AT", "close_init", 1);
    tshm *h = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(h != NULL);
    if (h == NULL) return;
    const uint32_t inst = info_of(h).instance;
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    int last = -1;
    CHECK_RC(tshm_close(h, &last), TSHM_IOERR); /* reported... */
    /* ...but the handle let go of everything: its instance record is cleared, and a new
     * handle opens, writes and finds itself alone. */
    uint64_t instances_off = 0, id = 1;
    read_in_child(sidecar_of(db), 40, &instances_off, sizeof instances_off);
    read_in_child(sidecar_of(db), (off_t)(instances_off + 64u * inst), &id, sizeof id);
    CHECK(id == 0);
    tshm *again = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(again != NULL);
    if (again != NULL) {
        CHECK(info_of(again).initialized == 1);
        CHECK_RC(tshm_writer_acquire(again, 0), TSHM_OK);
        CHECK_RC(tshm_writer_release(again), TSHM_OK);
        tshm_close(again, NULL); /* fails at the same point again */
    }
}

static void test_close_that_fails_still_lets_go_of_everything(void) {
    const char *db = test_db("lc-failclose.db");
    CHECK(in_child(failing_close, (void *)db) == 0);
}

static void test_symlinked_sidecar_is_refused(void) {
    const char *db = test_db("lc-link.db");
    const char *real = test_db("lc-link-target.db");
    tshm *t = open_with(real, 0, 0, TSHM_READERS_CAS); /* the target is open in this process */
    CHECK(t != NULL);
    CHECK(symlink(sidecar_of(real), sidecar_of(db)) == 0);
    tshm *h = NULL;
    CHECK_RC(tshm_open(db, NULL, &h), TSHM_CANTOPEN);
    CHECK(h == NULL);
    close_ok(t);
    unlink(sidecar_of(db));
}

struct churn {
    const char *db;
    volatile int stop;
};

static void *churn_open_close(void *p) {
    struct churn *c = p;
    while (!c->stop) {
        tshm *h = NULL;
        if (tshm_open(c->db, NULL, &h) == TSHM_OK) tshm_close(h, NULL);
    }
    return NULL;
}

/* A child of a process with an open handle closes every inherited descriptor (as a daemon does
 * after fork) and opens files of its own, which take the freed numbers. Neither its own open
 * of the same database nor closing the inherited handle may close one of them: libtshm lets go
 * of the descriptors it inherited at the fork, not later by number. */
static void test_child_that_closed_inherited_descriptors_keeps_its_own(void) {
    const char *db = test_db("lc-closefrom.db");
    tshm *h = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(h != NULL);
    if (h == NULL) return;
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        alarm(30);
        if (close_range(3, ~0u, 0) != 0) _exit(2);
        int mine[32];
        for (int k = 0; k < 32; k++) mine[k] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        tshm *x = NULL;
        if (tshm_open(db, NULL, &x) != TSHM_OK) _exit(3);
        if (tshm_writer_acquire(x, 0) != TSHM_BUSY) _exit(4); /* the parent holds it */
        tshm_close(h, NULL); /* the inherited handle: only its memory goes */
        struct stat null, st;
        if (stat("/dev/null", &null) != 0) _exit(6);
        int lost = 0; /* closed, or closed and reused by another file */
        for (int k = 0; k < 32; k++)
            lost += mine[k] < 0 || fstat(mine[k], &st) != 0 || st.st_rdev != null.st_rdev || st.st_ino != null.st_ino;
        if (tshm_close(x, NULL) != TSHM_OK) _exit(5);
        _exit(lost == 0 ? 0 : 10);
    }
    int st = child_wait(pid);
    if (st != 0) fprintf(stderr, "  child exited %d (10: libtshm closed descriptors of its own)\n", st);
    CHECK(st == 0);
    CHECK_RC(tshm_writer_release(h), TSHM_OK); /* the parent's handle is intact */
    close_ok(h);
}

static void test_children_forked_during_opens_close_inherited_handles(void) {
#if defined(__SANITIZE_ADDRESS__)
    /* gcc's libasan (12) takes no lock around fork(): a child forked while the churning thread
     * is inside the sanitizer's allocator hangs at its first allocation, whatever libtshm does
     * (a child of this test hung once so). The plain builds run it on both backends. */
    printf("SKIP test_children_forked_during_opens_close_inherited_handles: the ASan runtime is "
           "not fork-safe with threads\n");
    return;
#endif
    const char *db1 = test_db("lc-fork1.db");
    struct churn c = {test_db("lc-fork2.db"), 0};
    tshm *h = open_with(db1, 0, 0, TSHM_READERS_CAS);
    CHECK(h != NULL);
    if (h == NULL) return;
    pthread_t t;
    pthread_create(&t, NULL, churn_open_close, &c);
    int hung = 0;
    for (int i = 0; i < 100; i++) {
        fflush(NULL);
        pid_t kid = fork();
        if (kid == 0) {
            alarm(10); /* a child stuck on a lock its parent's thread held at fork */
            tshm_close(h, NULL);
            tshm *mine = NULL;
            int rc = tshm_open(db1, NULL, &mine);
            if (rc == TSHM_OK) tshm_close(mine, NULL);
            _exit(rc == TSHM_OK ? 0 : 1);
        }
        if (child_wait(kid) != 0) hung++;
    }
    c.stop = 1;
    pthread_join(t, NULL);
    CHECK(hung == 0);
    close_ok(h);
}

/* `test_lifecycle [part-of-a-name]` runs the tests whose names contain the argument. */
int main(int argc, char **argv) {
    static const struct {
        const char *name;
        void (*fn)(void);
    } tests[] = {
#define T(f) {#f, f}
        T(test_readonly_and_writable_handles_opening_at_once),
        T(test_readwrite_open_after_readonly_open_in_one_process),
        T(test_closing_last_handle_keeps_a_new_nodes_locks),
        T(test_process_stopped_in_its_open_stalls_nothing_here),
        T(test_waiter_killed_while_waiting_is_forgotten_when_alone),
        T(test_dead_waiter_chosen_by_a_release_is_passed_over),
        T(test_threads_of_one_handle_never_hold_the_writer_role_twice),
        T(test_last_close_hook_opening_its_database_is_misuse),
        T(test_reader_slot_overwritten_from_outside_is_corrupt),
        T(test_readonly_handle_never_creates_regions),
        T(test_paths_naming_no_database_file_create_nothing),
        T(test_option_sizes_out_of_any_range_are_refused),
        T(test_readwrite_open_in_unwritable_directory_says_why),
        T(test_close_that_fails_still_lets_go_of_everything),
        T(test_nested_last_close_hooks_refuse_reopening_either),
        T(test_symlinked_sidecar_is_refused),
        T(test_children_forked_during_opens_close_inherited_handles),
        T(test_child_that_closed_inherited_descriptors_keeps_its_own),
#undef T
    };
    for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++)
        if (argc < 2 || strstr(tests[i].name, argv[1]) != NULL) tests[i].fn();
    return harness_done("test_lifecycle");
}
