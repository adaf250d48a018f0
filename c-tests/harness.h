/*
 * harness.h — a tiny test harness for libtshm's C tests.
 *
 * CHECK(cond) records a pass or a failure (with file, line and the expression); CHECK_RC(call,
 * expected) also prints tshm_errmsg() when the code differs. harness_done() prints the closing
 * line "N passed, N failed" and returns the process exit status.
 *
 * Multi-process helpers: a gate is a pipe that many children block on and that the parent opens
 * for all of them at once by closing its write end, so children start "at the same instant"
 * without sleeps; child_* helpers fork, report through a pipe, and collect exit statuses.
 */
#ifndef TSHM_HARNESS_H
#define TSHM_HARNESS_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "tshm.h"

static int harness_passed, harness_failed;

#define CHECK(cond)                                                                    \
    do {                                                                               \
        if (cond) {                                                                    \
            harness_passed++;                                                          \
        } else {                                                                       \
            harness_failed++;                                                          \
            fprintf(stderr, "FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);            \
        }                                                                              \
    } while (0)

#define CHECK_RC(call, expected)                                                       \
    do {                                                                               \
        int rc_ = (call);                                                              \
        if (rc_ == (expected)) {                                                       \
            harness_passed++;                                                          \
        } else {                                                                       \
            const char *m_ = tshm_errmsg();                                            \
            harness_failed++;                                                          \
            fprintf(stderr, "FAIL %s:%d: %s returned %d (%s), expected %d; %s\n",      \
                    __FILE__, __LINE__, #call, rc_, tshm_errstr(rc_), (expected),      \
                    m_ ? m_ : "(no message)");                                         \
        }                                                                              \
    } while (0)

/* Prints the closing line and returns the exit status for main(). */
static inline int harness_done(const char *name) {
    printf("%s: %d passed, %d failed\n", name, harness_passed, harness_failed);
    return harness_failed == 0 ? 0 : 1;
}

static int harness_remove_entry(const char *path, const struct stat *st, int type, struct FTW *f) {
    (void)st, (void)type, (void)f;
    remove(path);
    return 0;
}

/* This process's directory, <TSHM_TEST_DIR or /tmp>/tshm-c-PID. One of that name left by an
 * earlier run is emptied at the first use: in a fresh PID namespace (a CI container) each run
 * repeats the last one's PIDs, and no test may start from another run's files. */
static inline const char *test_dir(void) {
    static char dir[400];
    static pid_t made_for;
    if (made_for != getpid()) {
        const char *base = getenv("TSHM_TEST_DIR");
        snprintf(dir, sizeof dir, "%s/tshm-c-%d", base ? base : "/tmp", (int)getpid());
        nftw(dir, harness_remove_entry, 16, FTW_DEPTH | FTW_PHYS);
        mkdir(dir, 0755);
        made_for = getpid();
    }
    return dir;
}

/* A fresh database path in this process's directory; removes any old sidecar. */
static inline const char *test_db(const char *name) {
    static char buf[8][512];
    static int next;
    char *p = buf[next++ % 8];
    snprintf(p, 512, "%s/%s", test_dir(), name);
    char side[600];
    snprintf(side, sizeof side, "%s-tshm", p);
    unlink(side);
    return p;
}

/* The sidecar path of db (one of four rotating buffers). */
static inline const char *sidecar_of(const char *db) {
    static char buf[4][800];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, sizeof buf[0], "%s-tshm", db);
    return p;
}

static inline double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* A one-shot gate: children call gate_wait(), the parent gate_open(). */
typedef struct { int fd[2]; } gate;

static inline void gate_init(gate *g) {
    if (pipe(g->fd) != 0) { perror("pipe"); exit(2); }
}
/* In a child: close the write end and block until the parent opens the gate. */
static inline void gate_wait(gate *g) {
    char c;
    close(g->fd[1]);
    while (read(g->fd[0], &c, 1) < 0 && errno == EINTR) {}
}
static inline void gate_open(gate *g) {
    close(g->fd[1]);
    close(g->fd[0]);
}

/* A report channel: children write fixed-size records, the parent reads them. */
typedef struct { int fd[2]; } channel;

static inline void channel_init(channel *c) {
    if (pipe(c->fd) != 0) { perror("pipe"); exit(2); }
}
static inline void channel_send(channel *c, const void *rec, size_t n) {
    if (write(c->fd[1], rec, n) != (ssize_t)n) _exit(3);
}
/* Reads exactly n bytes; returns 0 on EOF or error. */
static inline int channel_recv(channel *c, void *rec, size_t n) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = read(c->fd[0], (char *)rec + got, n - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return 0;
        got += (size_t)r;
    }
    return 1;
}

/* Waits for a child; returns its exit code, or 128 + signal. */
static inline int child_wait(pid_t pid) {
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    if (WIFEXITED(st)) return WEXITSTATUS(st);
    if (WIFSIGNALED(st)) return 128 + WTERMSIG(st);
    return 255;
}

/* Kills a child with SIGKILL and reaps it. */
static inline void child_kill(pid_t pid) {
    kill(pid, SIGKILL);
    child_wait(pid);
}

/* In a child: closes every descriptor above 2 but `a` and `b` (so that pipes to other children
 * see their end-of-file when the parent closes its end). */
static inline int keep_only_fds(int a, int b) {
    unsigned lo = (unsigned)(a < b ? a : b), hi = (unsigned)(a < b ? b : a);
    if (lo > 3 && close_range(3, lo - 1, 0) != 0) return -1;
    if (hi > lo + 1 && close_range(lo + 1, hi - 1, 0) != 0) return -1;
    return close_range(hi + 1, ~0u, 0);
}

/* A child process that serves the parent's requests: serve(in, out, ctx) reads them from `in`
 * until end-of-file and writes its answers to `out`; the child then exits 0 (serve may exit
 * otherwise itself). The child keeps no other inherited descriptor and dies on SIGALRM after
 * `seconds`. The parent writes requests to `cmd` and reads answers from `res`. */
typedef struct {
    pid_t pid;
    int cmd, res;
} server;

static inline server server_start(void (*serve)(int in, int out, void *ctx), void *ctx, unsigned seconds) {
    int c[2], r[2];
    if (pipe(c) != 0 || pipe(r) != 0) exit(2);
    fflush(NULL);
    server s = {fork(), c[1], r[0]};
    if (s.pid < 0) exit(2);
    if (s.pid == 0) {
        if (keep_only_fds(c[0], r[1]) != 0) _exit(3);
        signal(SIGALRM, SIG_DFL);
        alarm(seconds);
        serve(c[0], r[1], ctx);
        _exit(0);
    }
    close(c[0]);
    close(r[1]);
    return s;
}

/* Ends the requests (end-of-file) and reaps the child: its status, as child_wait. */
static inline int server_stop(server *s) {
    close(s->cmd);
    close(s->res);
    return child_wait(s->pid);
}

/* The handle's info (zeroed when the call fails, which is a failed check). */
static inline tshm_info info_of(const tshm *h) {
    tshm_info i;
    memset(&i, 0, sizeof i);
    CHECK_RC(tshm_info_get(h, &i), TSHM_OK);
    return i;
}

/* Closes h (if any), which must succeed. */
static inline void close_ok(tshm *h) {
    if (h != NULL) CHECK_RC(tshm_close(h, NULL), TSHM_OK);
}

/* Runs fn in a child and returns its exit status (128 + signal if it died). */
static inline int in_child(void (*fn)(void *), void *arg) {
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        harness_failed = 0; /* the child's verdict is its own */
        alarm(60);
        fn(arg);
        printf("  (child: %d passed, %d failed)\n", harness_passed, harness_failed);
        fflush(NULL);
        _exit(harness_failed == 0 ? 0 : 1);
    }
    return child_wait(kid);
}

/* Reads one line from fd into buf (without its newline); 0 at end of file or on an error. */
static inline int read_line(int fd, char *buf, size_t cap) {
    size_t n = 0;
    while (n + 1 < cap) {
        char c;
        ssize_t r = read(fd, &c, 1);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return 0;
        if (c == '\n') break;
        buf[n++] = c;
    }
    buf[n] = 0;
    return 1;
}

/* Whether the suite runs with the seed's strategies (`TSHM_TEST_STRATEGIES=seed`, test builds):
 * byte locks for readers and roles wherever the default was asked for. */
static inline int seed_strategies(void) {
    const char *v = getenv("TSHM_TEST_STRATEGIES");
    return v != NULL && strcmp(v, "seed") == 0;
}

/* Opens db with the given flags (and reader settings); returns the handle or NULL. */
static inline tshm *open_with(const char *db, uint32_t flags, uint32_t readers, uint32_t strategy) {
    tshm_options o;
    tshm *h = NULL;
    tshm_options_init(&o);
    o.flags = flags;
    o.reader_slots = readers;
    o.reader_strategy = strategy;
    int rc = tshm_open(db, &o, &h);
    if (rc != TSHM_OK) {
        const char *m = tshm_errmsg();
        fprintf(stderr, "open %s: %s (%s)\n", db, tshm_errstr(rc), m ? m : "");
        return NULL;
    }
    return h;
}

/* Publishes only max_frame (the handle must hold the writer or checkpointer role). */
static inline void publish_max_frame(tshm *h, uint64_t frame) {
    tshm_snapshot s;
    memset(&s, 0, sizeof s);
    s.max_frame = frame;
    CHECK_RC(tshm_publish(h, &s, TSHM_SNAP_MAX_FRAME), TSHM_OK);
}

/* Runs a script of steps with each of `nprocs` participants in its own process: participant k
 * is set up by open(k) in its child, step i is run by participant who(i) with run(state, i),
 * and each result goes to check(i, rc) in the parent, in script order. */
typedef struct {
    int nprocs;
    unsigned nsteps;
    void *(*open)(int k);
    int (*who)(unsigned i);
    int (*run)(void *state, unsigned i);
    void (*close)(void *state);
    void (*check)(unsigned i, int rc);
} script_in_processes;

static inline void run_script_in_processes(const script_in_processes *sc) {
    int cmd[16][2], res[16][2];
    pid_t kid[16];
    for (int k = 0; k < sc->nprocs && k < 16; k++) {
        if (pipe(cmd[k]) != 0 || pipe(res[k]) != 0) exit(2);
        kid[k] = fork();
        if (kid[k] == 0) {
            for (int j = 0; j < k; j++) { /* the parent's ends for earlier participants */
                close(cmd[j][1]);
                close(res[j][0]);
            }
            close(cmd[k][1]);
            close(res[k][0]);
            void *state = sc->open(k);
            unsigned i;
            while (read(cmd[k][0], &i, sizeof i) == sizeof i) {
                int rc = sc->run(state, i);
                if (write(res[k][1], &rc, sizeof rc) != sizeof rc) _exit(3);
            }
            sc->close(state);
            _exit(0);
        }
        close(cmd[k][0]);
        close(res[k][1]);
    }
    for (unsigned i = 0; i < sc->nsteps; i++) {
        int k = sc->who(i), rc = -1;
        if (write(cmd[k][1], &i, sizeof i) != sizeof i || read(res[k][0], &rc, sizeof rc) != sizeof rc) rc = -1;
        sc->check(i, rc);
    }
    for (int k = 0; k < sc->nprocs && k < 16; k++) {
        close(cmd[k][1]);
        close(res[k][0]);
        CHECK(child_wait(kid[k]) == 0);
    }
}

#endif
