/*
 * torture.c — the crash-torture supervisor: rounds of two bank workloads on libtshm, each a set
 * of real processes, with processes SIGKILLed at random moments or at named crash points, and a
 * verification of every round's outcome.
 *
 *   torture [--rounds N] [--seed S] [--only R] [--scenario NAME] [--selftest] [--points "P ..."]
 *           [--dir DIR] [--json FILE]
 *   torture sql|kv ...            one worker process (workers.c)
 *
 * Each round starts from fresh databases and runs, side by side:
 *   kv   kvlog's bank workload ($KVLOG_BIN bank writer|reader|checkpointer): two writers, a
 *        reader, a checkpointer; durable in some rounds (KVLOG_DURABLE=1);
 *   sql  the SQLite bank workload through the tshm VFS shim (workers.c, the shim loaded from
 *        $TSHM_SQLITE_EXT): two writers, a reader, a checkpointer, WAL mode.
 * The lock backend (TSHM_LOCK_BACKEND) is chosen per round. Each workload gets one scenario:
 *   kill         a random process SIGKILLed at a random moment, then restarted
 *   point        a process restarted armed with a crash point from the list (libtshm's
 *                "tshm:<name>" via TSHM_TEST_CRASH_AT, kvlog's "kvlog:<name>" stop points,
 *                "kvfail:publish", the shim's "shim:<name>" stop points); once it died there (or
 *                failed, for kvfail) it is restarted unarmed
 *   kill-all     every process SIGKILLed at once, then all reopened together (in half the
 *                rounds one of them first and alone, armed at a first-opener point:
 *                tshm:open_initialized, tshm:open_holding_init, shim:dms_won, ...)
 *   open-race    the same, and some of the reopening processes SIGKILLed within milliseconds,
 *                during their first open (one more killed and restarted armed with
 *                tshm:open_holding_init)
 *   big          a large transaction (frame index / wal-index growth) SIGKILLed at a random
 *                moment, or armed at a growth point (tshm:pool_zeroed, tshm:append_entry,
 *                tshm:region_create, shim:region), or left to commit
 *   final-ckpt   the last process to close is killed during its final checkpoint
 *                (kvlog:mid-checkpoint, tshm:close_last_hook, tshm:close_last_done, or at a
 *                random moment of its close)
 *   unpublished  (kv) a writer stopped with its commit frame written but not published
 *                (kvlog:commit-unpublished, or tshm:publish_copy: half the snapshot copied),
 *                then every process of the workload SIGKILLed
 * At the end of a round every process still running is stopped (SIGTERM), and a fresh process
 * opens each database (recovering it when nobody closed last) and checks:
 *   - every commit whose id a writer reported after its commit returned is there, no rolled
 *     back or never attempted one is, a transfer in flight at a kill is there or not; the
 *     balances are exactly the effect of the transfers that are there;
 *   - every snapshot any reader read summed to the bank's total (readers report violations);
 *   - PRAGMA integrity_check / kv_check and `kvlog check`, then `tshm check --idle` (no slot,
 *     role or handle left behind once every process closed);
 *   - no process exited unexpectedly, reported a bounded wait that ran out, or outlived its
 *     deadline (stuck processes are killed and reported; the supervisor has a watchdog too).
 * A failing round's files (databases, WALs, sidecars, every process's stderr, the events) are
 * copied to DIR/failed-<round>/; the exit status is 1 when any round failed. A JSON summary
 * goes to --json. Every round's plan derives from the seed and the round number, so
 * `--seed S --only R` replays one round's plan (timing differs from run to run).
 *
 * --selftest checks the checker: before each verification it falsifies the supervisor's record
 * of one transaction (acknowledged <-> rolled back), and fails unless every verification
 * rejects the database against it.
 *
 * Environment: KVLOG_BIN, TSHM_BIN, TSHM_SQLITE_EXT (required); TORTURE_RUN_DIR, where rounds
 * run (default: a directory of this process in /dev/shm, else DIR/run).
 */
#define _GNU_SOURCE
#include "torture.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { KV, SQ, NWL };
enum { WRITER, READER, CKPT, BIG };
enum { ST_PENDING, ST_ACKED, ST_ROLLED, ST_INFLIGHT };
enum { ACCOUNTS = 200, MAXPROC = 16, MAXFAIL = 16, MAX_INFLIGHT = 20 };
enum { RUN, HOLD, END };

static const char *wl_name[NWL] = {"kv", "sql"};
static const char *role_name[] = {"writer", "reader", "checkpointer", "big"};
static const char *scenarios[] = {"kill", "point", "kill-all", "open-race", "big", "final-ckpt", "unpublished"};
static const int scen_weight[] = {30, 30, 8, 8, 8, 8, 8};
#define NSCEN 7

/* bank_slot of kvlog's bank.h: the readers' violation counter is read from it */
struct bank_slot_view { uint64_t pid, role, commits, aborts, waits, reads, bad, ckpts, copied, restarts; };
#define STATS_SLOTS 32

struct intent {
    int wl, wid, big, state;
    int64_t txid, amt;
    int from, to;
};

struct proc {
    int used, wl, role, id;
    pid_t pid;
    int out, stopfd, resumefd; /* report pipe; stop-point notify pipe; shim resume pipe (held) */
    char point[64];            /* armed crash point of this incarnation, "" none */
    char next_point[64];       /* armed crash point of the next incarnation */
    int killed, termed, respawn, expect_fail, then_kill_all;
    double deadline, kill_at, kill_after_close; /* kill_after_close: ms after "C", < 0 none */
    int pending;               /* this incarnation's intent not yet resolved, -1 none */
    int slot;
    char buf[8192];
    size_t blen;
};

/* configuration */
static char self_exe[PATH_MAX], kvlog_bin[PATH_MAX], tshm_bin[PATH_MAX], shim_so[PATH_MAX];
static char out_dir[PATH_MAX] = "build/torture", json_path[PATH_MAX] = "build/reliability/torture.json";
static char *points[64];
static int npoints;
static uint64_t seed;
static int forced_scen = -1; /* --scenario: every round runs this one */
static int selftest;         /* --selftest: the verifier must notice a falsified record */
static uint64_t selftest_caught;

/* totals */
struct counter { char name[96]; uint64_t n; };
static struct counter kills_point[96], kills_scen[NSCEN * NWL], rounds_scen[NSCEN * NWL], unreached[96];
static double phase_ms[6]; /* summed over rounds: start, run, stop, readers, verify kv, sql */
static const char *phase_names[6] = {"start", "run", "stop", "readers", "verify_kv", "verify_sql"};
static uint64_t total_failures, failed_rounds_list[64], nfailed_rounds, total_acked, total_inflight,
    total_rolled, total_spawned, durable_rounds;

/* the round */
static int round_no, phase, wl_dead[NWL], scen[NWL];
static uint64_t rng;
static struct proc procs[MAXPROC];
static struct intent *intents;
static size_t nintents, cap_intents;
static char failures[MAXFAIL][600];
static int nfail, spawn_seq;
static char run_dir[PATH_MAX + 16], kv_db[PATH_MAX + 64], sq_db[PATH_MAX + 64], kv_stats[PATH_MAX + 64];
static FILE *events;
static int durable;
static const char *backend;
static int sigchld_pipe[2];
static volatile pid_t tool_pid;

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec * 1e3 + (double)t.tv_nsec / 1e6;
}
static double round_start;

static uint64_t rnd(void) {
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return rng;
}
static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
static int between(int lo, int hi) { return lo + (int)(rnd() % (uint64_t)(hi - lo + 1)); }

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...) {
    if (events == NULL) return;
    va_list ap;
    va_start(ap, fmt);
    fprintf(events, "%8.1f ms  ", now_ms() - round_start);
    vfprintf(events, fmt, ap);
    fputc('\n', events);
    va_end(ap);
}

static void failf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void failf(const char *fmt, ...) {
    char m[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m, sizeof m, fmt, ap);
    va_end(ap);
    note("FAILURE: %s", m);
    if (nfail < MAXFAIL) snprintf(failures[nfail], sizeof failures[0], "%s", m);
    nfail++;
}

static void bump(struct counter *c, size_t cap, const char *name, uint64_t by) {
    for (size_t i = 0; i < cap; i++) {
        if (c[i].name[0] == 0) snprintf(c[i].name, sizeof c[i].name, "%s", name);
        if (strcmp(c[i].name, name) == 0) {
            c[i].n += by;
            return;
        }
    }
}
#define BUMP(arr, name) bump(arr, sizeof arr / sizeof arr[0], name, 1)

static const char *scen_key(int wl) {
    static char k[NWL][48];
    snprintf(k[wl], sizeof k[wl], "%s:%s", wl_name[wl], scenarios[scen[wl]]);
    return k[wl];
}

static const char *pname(const struct proc *p) {
    static char b[4][160];
    static int n;
    char *s = b[n++ % 4];
    snprintf(s, 160, "%s %s%d (pid %d%s%s)", wl_name[p->wl], role_name[p->role], p->id, (int)p->pid,
             p->point[0] ? ", armed " : "", p->point);
    return s;
}

/* ---------------------------------------------------------------------------------------- */
/* Crash points                                                                             */

static int has_point(const char *pt) {
    for (int i = 0; i < npoints; i++)
        if (strcmp(points[i], pt) == 0) return 1;
    return 0;
}

/* Whether a process of workload wl and role `role` can reach point pt. */
static int point_fits(const char *pt, int wl, int role) {
    if (role == BIG) return 0;
    if (strncmp(pt, "kvlog:", 6) == 0) {
        const char *n = pt + 6;
        if (wl != KV) return 0;
        if (!strcmp(n, "mid-write") || !strcmp(n, "commit-unpublished")) return role == WRITER;
        if (!strcmp(n, "mid-checkpoint") || !strcmp(n, "mid-restart")) return role == CKPT;
        return 1;
    }
    if (strncmp(pt, "kvfail:", 7) == 0) return wl == KV && role == WRITER;
    if (strncmp(pt, "shim:", 5) == 0) return wl == SQ;
    if (strncmp(pt, "tshm:", 5) == 0) {
        /* libtshm's points (testpoint::NAMES): who reaches which; unknown names: anyone */
        static const struct { const char *name; int wl, roles; } where[] = {
#define W (1 << WRITER)
#define R (1 << READER)
#define C (1 << CKPT)
            {"writer_claim", KV, W | C},   {"writer_release", KV, W | C}, {"ckpt_claim", KV, C},
            {"ckpt_release", KV, C},       {"trim_mark", KV, W},          {"truncate_mark", KV, W},
            {"append_entry", KV, W},       {"publish_copy", KV, W | C},   {"publish_seq", KV, W | C},
            {"reader_claim", KV, W | R | C}, {"reader_reclaim", KV, W | R | C}, {"reader_pin", KV, W | R | C},
            {"reader_end", KV, W | R | C}, {"engine_grant", SQ, W | R | C}, {"engine_release", SQ, W | R | C},
            {"region_create", SQ, W | R | C}, {"pool_zeroed", -1, W},
#undef W
#undef R
#undef C
        };
        for (size_t i = 0; i < sizeof where / sizeof where[0]; i++)
            if (!strcmp(pt + 5, where[i].name))
                return (where[i].wl < 0 || where[i].wl == wl) && (where[i].roles >> role & 1);
        return 1;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Processes                                                                                */

static void set_cloexec_nonblock(int fd, int nonblock) {
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    if (nonblock) fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
}

static int open_log(const char *name) {
    char path[PATH_MAX + 128];
    snprintf(path, sizeof path, "%s/%s.log", run_dir, name);
    return open(path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
}

/* fork() with the supervisor's signals blocked until the child has its handlers back at their
 * defaults: a SIGTERM sent to a child that has not reached exec yet ends it, not a copy of the
 * supervisor. */
static pid_t fork_child(void) {
    sigset_t block, old;
    sigemptyset(&block);
    sigaddset(&block, SIGTERM);
    sigaddset(&block, SIGINT);
    sigaddset(&block, SIGALRM);
    sigaddset(&block, SIGCHLD);
    sigprocmask(SIG_BLOCK, &block, &old);
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGTERM, SIG_DFL);
        signal(SIGINT, SIG_DFL);
        signal(SIGALRM, SIG_DFL);
        signal(SIGCHLD, SIG_DFL);
        signal(SIGPIPE, SIG_DFL);
        return 0; /* child_setup unblocks */
    }
    sigprocmask(SIG_SETMASK, &old, NULL);
    return pid;
}

/* The child's side of a spawn: fds 1 (reports), 2 (log), 3 (stop notify), 4 (shim resume). */
static void child_setup(int out_w, int log_fd, int stop_w, int resume_r) {
    dup2(out_w, 1);
    dup2(log_fd, 2);
    if (stop_w >= 0) dup2(stop_w, 3);
    if (resume_r >= 0) dup2(resume_r, 4);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    setenv("TSHM_LOCK_BACKEND", backend, 1);
    setenv("TSHM_SQLITE_EXT", shim_so, 1);
    if (durable) {
        setenv("KVLOG_DURABLE", "1", 1);
        setenv("TORTURE_DURABLE", "1", 1);
    }
}

static void spawn(struct proc *p) {
    int out[2], stop[2] = {-1, -1}, resume[2] = {-1, -1};
    if (pipe2(out, O_CLOEXEC) != 0) { perror("pipe"); exit(2); }
    const char *pt = p->point;
    int kvstop = strncmp(pt, "kvlog:", 6) == 0, shimstop = strncmp(pt, "shim:", 5) == 0;
    if ((kvstop || shimstop) && pipe2(stop, O_CLOEXEC) != 0) { perror("pipe"); exit(2); }
    if (shimstop && pipe2(resume, O_CLOEXEC) != 0) { perror("pipe"); exit(2); }
    char logname[64];
    snprintf(logname, sizeof logname, "%s-%s%d", wl_name[p->wl], role_name[p->role], p->id);
    int log_fd = open_log(logname);
    int skip = strcmp(pt, "kvlog:mid-write") == 0 ? between(0, 2) : 0; /* a transaction spills often */
    p->slot = spawn_seq % STATS_SLOTS;
    int64_t base = (int64_t)(++spawn_seq) << 24;
    pid_t pid = fork_child();
    if (pid < 0) { perror("fork"); exit(2); }
    if (pid == 0) {
        child_setup(out[1], log_fd, stop[1], resume[0]);
        char a[32], b[32], c[96];
        if (strncmp(pt, "tshm:", 5) == 0) setenv("TSHM_TEST_CRASH_AT", pt + 5, 1);
        if (kvstop) {
            setenv("KVLOG_STOP_AT", pt + 6, 1);
            setenv("KVLOG_STOP_FD", "3", 1);
            snprintf(a, sizeof a, "%d", skip);
            setenv("KVLOG_STOP_SKIP", a, 1);
        }
        if (strncmp(pt, "kvfail:", 7) == 0) setenv("KVLOG_FAIL_AT", pt + 7, 1);
        if (shimstop) {
            snprintf(c, sizeof c, "%s:3:4", pt + 5);
            setenv("TSHM_SQLITE_TEST_STOP", c, 1);
        }
        snprintf(a, sizeof a, "%d", p->slot);
        setenv("KVLOG_STATS", kv_stats, 1);
        setenv("KVLOG_SLOT", a, 1);
        snprintf(a, sizeof a, "%d", p->id);
        snprintf(b, sizeof b, "%" PRId64, base);
        if (p->wl == KV) {
            if (p->role == WRITER) execl(kvlog_bin, "kvlog", "bank", "writer", kv_db, a, "/dev/fd/1", (char *)NULL);
            else if (p->role == READER) execl(kvlog_bin, "kvlog", "bank", "reader", kv_db, (char *)NULL);
            else if (p->role == CKPT) execl(kvlog_bin, "kvlog", "bank", "checkpointer", kv_db, (char *)NULL);
            else execl(self_exe, "torture", "kv", "big", kv_db, b, "5000", (char *)NULL);
        } else {
            if (p->role == WRITER) execl(self_exe, "torture", "sql", "writer", sq_db, b, (char *)NULL);
            else if (p->role == READER) execl(self_exe, "torture", "sql", "reader", sq_db, (char *)NULL);
            else if (p->role == CKPT) execl(self_exe, "torture", "sql", "checkpointer", sq_db, (char *)NULL);
            else execl(self_exe, "torture", "sql", "big", sq_db, b, "6000", (char *)NULL);
        }
        perror("exec");
        _exit(127);
    }
    close(out[1]);
    if (log_fd >= 0) close(log_fd);
    if (stop[1] >= 0) close(stop[1]);
    if (resume[0] >= 0) close(resume[0]);
    set_cloexec_nonblock(out[0], 1);
    p->pid = pid;
    p->out = out[0];
    p->stopfd = stop[0];
    p->resumefd = resume[1];
    p->killed = p->termed = 0;
    p->expect_fail = strncmp(pt, "kvfail:", 7) == 0;
    p->deadline = now_ms() + 60000; /* a round lasts well under a second */
    p->kill_at = 0;
    p->pending = -1;
    p->blen = 0;
    total_spawned++;
    note("spawn %s", pname(p));
}

static struct proc *add_proc(int wl, int role, int id) {
    for (int i = 0; i < MAXPROC; i++)
        if (!procs[i].used) {
            struct proc *p = &procs[i];
            memset(p, 0, sizeof *p);
            p->used = 1;
            p->wl = wl;
            p->role = role;
            p->id = id;
            p->out = p->stopfd = p->resumefd = -1;
            p->respawn = role != BIG;
            p->kill_after_close = -1;
            return p;
        }
    fprintf(stderr, "torture: too many processes\n");
    exit(2);
}

static void count_kill(const struct proc *p, const char *label) {
    BUMP(kills_point, label);
    BUMP(kills_scen, scen_key(p->wl));
}

static void kill_proc(struct proc *p, const char *label) {
    if (p->pid <= 0 || p->killed) return;
    kill(p->pid, SIGKILL);
    p->killed = 1;
    if (label) count_kill(p, label);
    note("SIGKILL %s (%s)", pname(p), label ? label : "deadline");
}

static void stop_proc(struct proc *p) {
    if (p->pid <= 0 || p->termed) return;
    kill(p->pid, SIGTERM);
    p->termed = 1;
    p->deadline = now_ms() + 15000; /* bounded waits are 2 s (kvlog) and 10 s (SQLite) */
    note("SIGTERM %s", pname(p));
}

static void kill_all(int wl, const char *label) {
    for (int i = 0; i < MAXPROC; i++)
        if (procs[i].used && procs[i].wl == wl && procs[i].pid > 0) kill_proc(&procs[i], label);
}

static struct intent *new_intent(void) {
    if (nintents == cap_intents) {
        cap_intents = cap_intents ? cap_intents * 2 : 1024;
        intents = realloc(intents, cap_intents * sizeof *intents);
        if (intents == NULL) exit(2);
    }
    memset(&intents[nintents], 0, sizeof intents[0]);
    return &intents[nintents++];
}

static void on_line(struct proc *p, char *line) {
    int64_t txid, amt;
    int wid, from, to;
    switch (line[0]) {
    case 'I': {
        int ok = p->wl == KV && p->role == WRITER
                     ? sscanf(line, "I %d %" SCNd64 " %d %d %" SCNd64, &wid, &txid, &from, &to, &amt) == 5 && wid == p->id
                     : sscanf(line, "I %" SCNd64 " %d %d %" SCNd64, &txid, &from, &to, &amt) == 4;
        if (!ok || from < 0 || from >= ACCOUNTS || to < 0 || to >= ACCOUNTS) {
            failf("%s: bad report '%s'", pname(p), line);
            return;
        }
        if (p->pending >= 0) intents[p->pending].state = ST_ROLLED; /* it moved on: rolled back */
        struct intent *in = new_intent();
        in->wl = p->wl;
        in->wid = p->id;
        in->big = p->role == BIG;
        in->txid = txid;
        in->from = from;
        in->to = to;
        in->amt = amt;
        in->state = ST_PENDING;
        p->pending = (int)(nintents - 1);
        break;
    }
    case 'A':
    case 'R': {
        int ok = p->wl == KV && p->role == WRITER ? sscanf(line + 1, " %d %" SCNd64, &wid, &txid) == 2
                                                  : sscanf(line + 1, " %" SCNd64, &txid) == 1;
        if (!ok || p->pending < 0 || intents[p->pending].txid != txid) {
            failf("%s: '%s' without its intent", pname(p), line);
            return;
        }
        intents[p->pending].state = line[0] == 'A' ? ST_ACKED : ST_ROLLED;
        p->pending = -1;
        break;
    }
    case 'V': failf("%s: a snapshot broke the bank invariant: %s", pname(p), line); break;
    case 'B': failf("%s: a bounded wait ran out: %s", pname(p), line + 2); break;
    case 'E': failf("%s: %s", pname(p), line + 2); break;
    case 'C':
        if (p->kill_after_close >= 0) p->kill_at = now_ms() + p->kill_after_close;
        break;
    default: break;
    }
}

static void drain(struct proc *p) {
    while (p->out >= 0) {
        ssize_t r = read(p->out, p->buf + p->blen, sizeof p->buf - 1 - p->blen);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0 && errno == EAGAIN) return;
        if (r <= 0) {
            close(p->out);
            p->out = -1;
            return;
        }
        p->blen += (size_t)r;
        p->buf[p->blen] = 0;
        char *s = p->buf, *nl;
        while ((nl = strchr(s, '\n')) != NULL) {
            *nl = 0;
            on_line(p, s);
            s = nl + 1;
        }
        p->blen = (size_t)(p->buf + p->blen - s);
        memmove(p->buf, s, p->blen);
        if (p->blen == sizeof p->buf - 1) p->blen = 0; /* an endless line: drop it */
    }
}

static void on_death(struct proc *p, int st) {
    drain(p);
    if (p->out >= 0) { /* set non-blocking: a writer left in a grandchild would block us */
        close(p->out);
        p->out = -1;
    }
    if (p->stopfd >= 0) close(p->stopfd);
    if (p->resumefd >= 0) close(p->resumefd);
    p->stopfd = p->resumefd = -1;
    int sig = WIFSIGNALED(st) ? WTERMSIG(st) : 0, code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    int expected = 0;
    if (sig == SIGKILL && p->killed) expected = 1;
    else if (sig == SIGKILL && strncmp(p->point, "tshm:", 5) == 0) {
        expected = 1;
        count_kill(p, p->point);
        note("%s died at its crash point", pname(p));
    } else if ((code == 0 && (p->termed || p->role == BIG)) || (sig == SIGTERM && p->termed)) {
        /* (SIGTERM itself: it came before the process set up its handler) */
        expected = 1;
        if (p->point[0]) BUMP(unreached, p->point);
    } else if (code == 1 && p->expect_fail) {
        expected = 1;
        count_kill(p, p->point);
        note("%s failed at its fail point", pname(p));
    }
    if (!expected) {
        if (sig) failf("%s died of signal %d", pname(p), sig);
        else failf("%s exited with %d%s", pname(p), code, p->termed ? " after SIGTERM" : "");
    }
    if (p->pending >= 0) intents[p->pending].state = sig ? ST_INFLIGHT : ST_ROLLED;
    p->pending = -1;
    note("exit %s: %s %d", pname(p), sig ? "signal" : "status", sig ? sig : code);
    p->pid = 0;
    if (sig && p->then_kill_all) { /* the unpublished commit: then everyone dies */
        p->then_kill_all = 0;
        wl_dead[p->wl] = 1;
        kill_all(p->wl, "random");
    }
    p->point[0] = 0;
    if (phase == RUN && p->respawn && !wl_dead[p->wl]) {
        memcpy(p->point, p->next_point, sizeof p->point);
        p->next_point[0] = 0;
        spawn(p);
    }
}

static void on_sigchld(int sig) {
    (void)sig;
    int e = errno;
    char c = 'c';
    if (write(sigchld_pipe[1], &c, 1) < 0) {}
    errno = e;
}

static int reaped; /* processes reaped since pump began */

static void reap(void) {
    int st;
    pid_t pid;
    while ((pid = waitpid(-1, &st, WNOHANG)) > 0) {
        reaped++;
        for (int i = 0; i < MAXPROC; i++)
            if (procs[i].used && procs[i].pid == pid) {
                on_death(&procs[i], st);
                break;
            }
    }
}

static int running(int wl, int role) { /* wl/role -1: any */
    int n = 0;
    for (int i = 0; i < MAXPROC; i++)
        if (procs[i].used && procs[i].pid > 0 && (wl < 0 || procs[i].wl == wl) && (role < 0 || procs[i].role == role)) n++;
    return n;
}

/* The event loop: reports, stop points, deaths, deadlines, scheduled kills; until `until`
 * (ms, monotonic) or, with until == -1, until no process of workload `wl` (-1: any) runs, or
 * with until == -2, until any process died. */
static void pump(double until, int wl) {
    reaped = 0;
    for (;;) {
        double t = now_ms();
        reap();
        double next = until >= 0 ? until : t + 1000;
        for (int i = 0; i < MAXPROC; i++) {
            struct proc *p = &procs[i];
            if (!p->used || p->pid <= 0) continue;
            if (!p->killed && t > p->deadline) {
                failf("%s outlived its bound: stuck", pname(p));
                kill_proc(p, NULL);
            }
            if (p->kill_at > 0 && t >= p->kill_at) {
                p->kill_at = 0;
                kill_proc(p, "random");
            }
            if (!p->killed && p->deadline < next) next = p->deadline;
            if (p->kill_at > 0 && p->kill_at < next) next = p->kill_at;
        }
        if (until >= 0 ? t >= until : until == -1 ? running(wl, -1) == 0 : reaped) return;
        struct pollfd pf[2 * MAXPROC + 1];
        struct proc *who[2 * MAXPROC + 1];
        int n = 0;
        pf[n].fd = sigchld_pipe[0];
        pf[n].events = POLLIN;
        who[n++] = NULL;
        for (int i = 0; i < MAXPROC; i++) {
            struct proc *p = &procs[i];
            if (!p->used || p->pid <= 0) continue;
            if (p->out >= 0) { pf[n].fd = p->out; pf[n].events = POLLIN; who[n++] = p; }
            if (p->stopfd >= 0) { pf[n].fd = p->stopfd; pf[n].events = POLLIN; who[n++] = p; }
        }
        int ms = (int)(next - t) + 1;
        if (ms < 0) ms = 0;
        if (ms > 200) ms = 200;
        if (poll(pf, (nfds_t)n, ms) <= 0) continue;
        if (pf[0].revents) {
            char b[64];
            while (read(sigchld_pipe[0], b, sizeof b) > 0) {}
        }
        for (int k = 1; k < n; k++) {
            if (!pf[k].revents) continue;
            struct proc *p = who[k];
            if (pf[k].fd == p->out) {
                drain(p);
            } else if (pf[k].fd == p->stopfd) {
                char c;
                ssize_t r = read(p->stopfd, &c, 1);
                if (r == 1 && p->pid > 0) {
                    note("%s reached its stop point", pname(p));
                    kill_proc(p, p->point);
                }
                close(p->stopfd);
                p->stopfd = -1;
            }
        }
    }
}

/* Runs a tool to completion within bound_ms; its stdout into out. Returns the exit status,
 * -1 when it had to be killed. */
static int run_tool(char *const argv[], const char *logname, char *out, size_t cap, double bound_ms) {
    int pp[2];
    if (pipe2(pp, O_CLOEXEC) != 0) exit(2);
    int log_fd = open_log(logname);
    pid_t pid = fork_child();
    if (pid == 0) {
        child_setup(pp[1], log_fd, -1, -1);
        execv(argv[0], argv);
        perror(argv[0]);
        _exit(127);
    }
    tool_pid = pid;
    close(pp[1]);
    if (log_fd >= 0) close(log_fd);
    size_t len = 0;
    double deadline = now_ms() + bound_ms;
    int killed = 0;
    for (;;) {
        int ms = (int)(deadline - now_ms());
        if (ms <= 0) {
            kill(pid, SIGKILL);
            killed = 1;
            break;
        }
        struct pollfd pf = {.fd = pp[0], .events = POLLIN};
        if (poll(&pf, 1, ms) <= 0) continue;
        char tmp[4096];
        ssize_t r = read(pp[0], tmp, sizeof tmp);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) break;
        if (out && len + (size_t)r < cap) {
            memcpy(out + len, tmp, (size_t)r);
            len += (size_t)r;
        }
    }
    if (out) out[len < cap ? len : cap - 1] = 0;
    close(pp[0]);
    int st;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {}
    tool_pid = 0;
    if (killed) {
        failf("%s %s outlived its bound of %.0f ms: stuck", argv[0], argv[1], bound_ms);
        return -1;
    }
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

/* ---------------------------------------------------------------------------------------- */
/* Scenarios                                                                                */

static struct proc *random_proc(int wl, int (*fits)(const struct proc *, const char *), const char *pt) {
    struct proc *c[MAXPROC];
    int n = 0;
    for (int i = 0; i < MAXPROC; i++) {
        struct proc *p = &procs[i];
        if (p->used && p->wl == wl && p->pid > 0 && p->role != BIG && !p->killed && !p->termed &&
            (fits == NULL || fits(p, pt)))
            c[n++] = p;
    }
    return n ? c[rnd() % (uint64_t)n] : NULL;
}

static int fits_point(const struct proc *p, const char *pt) { return point_fits(pt, p->wl, p->role); }
static int is_writer(const struct proc *p, const char *pt) { (void)pt; return p->role == WRITER; }

/* Every process of wl killed at once; once all are gone, all start again together. */
static void kill_all_and_reopen(int wl) {
    phase = HOLD;
    kill_all(wl, "random");
    pump(-1, wl);
    phase = RUN;
    /* half the time one of the reopening processes is armed at a point only a first opener
     * (or the taker of a dead process's instance slot) reaches */
    const char *first[] = {"tshm:open_initialized", "tshm:instance_reclaim", "tshm:open_holding_init",
                           wl == SQ ? "shim:dms_won" : "kvlog:in-read"};
    const char *pt = first[rnd() % 4];
    if (rnd() % 2 && has_point(pt)) {
        struct proc *c[MAXPROC];
        int n = 0;
        for (int i = 0; i < MAXPROC; i++)
            if (procs[i].used && procs[i].wl == wl && procs[i].respawn && !procs[i].next_point[0] &&
                point_fits(pt, wl, procs[i].role))
                c[n++] = &procs[i];
        if (n) {
            /* it opens alone, so it is the first opener; the others come once it died there
             * (or after 500 ms) and take over what it left */
            struct proc *a = c[rnd() % (uint64_t)n];
            snprintf(a->point, sizeof a->point, "%s", pt);
            a->respawn = 0;
            spawn(a);
            double until = now_ms() + 500;
            while (a->pid > 0 && now_ms() < until) pump(now_ms() + 5, -1);
            a->respawn = 1;
            if (a->pid <= 0) spawn(a); /* unarmed */
        }
    }
    for (int i = 0; i < MAXPROC; i++) {
        struct proc *p = &procs[i];
        if (!p->used || p->wl != wl || !p->respawn || p->pid > 0) continue;
        memcpy(p->point, p->next_point, sizeof p->point);
        p->next_point[0] = 0;
        spawn(p);
    }
}

static void scenario_event(int wl) {
    const char *s = scenarios[scen[wl]];
    if (!strcmp(s, "final-ckpt")) return; /* its kill comes at the end */
    if (!strcmp(s, "kill")) {
        struct proc *v = random_proc(wl, NULL, NULL);
        if (v) kill_proc(v, "random");
    } else if (!strcmp(s, "point")) {
        const char *cand[64];
        int n = 0;
        for (int i = 0; i < npoints; i++)
            if (random_proc(wl, fits_point, points[i]) != NULL) cand[n++] = points[i];
        if (n == 0) {
            struct proc *v = random_proc(wl, NULL, NULL);
            if (v) kill_proc(v, "random");
            return;
        }
        const char *pt = cand[rnd() % (uint64_t)n];
        struct proc *v = random_proc(wl, fits_point, pt);
        snprintf(v->next_point, sizeof v->next_point, "%s", pt);
        /* restarted armed once it exited; killed when the point is about taking over what a
         * dead process left */
        if (strstr(pt, "reclaim") || strstr(pt, "trim_mark")) kill_proc(v, "random");
        else stop_proc(v);
    } else if (!strcmp(s, "kill-all")) {
        kill_all_and_reopen(wl);
    } else if (!strcmp(s, "open-race")) {
        kill_all_and_reopen(wl);
        int victims = between(1, 2);
        for (int k = 0; k < victims; k++) {
            struct proc *v = random_proc(wl, NULL, NULL);
            if (v && v->kill_at == 0) v->kill_at = now_ms() + between(0, 6);
        }
        /* and one more opener that dies holding the init lock, when that point is listed */
        if (has_point("tshm:open_holding_init") && rnd() % 2) {
            struct proc *v = random_proc(wl, NULL, NULL);
            if (v && v->kill_at == 0) { /* killed in its open; its replacement is armed */
                kill_proc(v, "random");
                snprintf(v->next_point, sizeof v->next_point, "tshm:open_holding_init");
            }
        }
    } else if (!strcmp(s, "big")) {
        struct proc *b = add_proc(wl, BIG, 9);
        /* half the time armed where the growth happens (when listed), else killed at a random
         * moment or left to commit */
        const char *grow[] = {wl == KV ? "tshm:pool_zeroed" : "tshm:region_create", wl == KV ? "tshm:append_entry" : "shim:region"};
        const char *g = grow[rnd() % 2];
        if (rnd() % 2 && has_point(g)) snprintf(b->point, sizeof b->point, "%s", g);
        spawn(b);
        if (!b->point[0] && rnd() % 4) b->kill_at = now_ms() + between(5, 250);
    } else if (!strcmp(s, "unpublished")) {
        struct proc *v = random_proc(wl, is_writer, NULL);
        if (v == NULL) return;
        int tp = has_point("tshm:publish_copy") && rnd() % 2;
        snprintf(v->next_point, sizeof v->next_point, "%s", tp ? "tshm:publish_copy" : "kvlog:commit-unpublished");
        v->then_kill_all = 1;
        stop_proc(v);
    }
}

/* The end of a round: writers, checkpointers and big transactions stop first, the readers
 * last (one of them, in final-ckpt rounds, killed in its final checkpoint). */
static void stop_non_readers(void) {
    phase = END;
    /* in final-ckpt rounds the checkpointer goes first: the writers' last commits are left for
     * the last closer to copy */
    for (int i = 0; i < MAXPROC; i++) {
        struct proc *p = &procs[i];
        if (p->used && p->pid > 0 && p->role == CKPT && !strcmp(scenarios[scen[p->wl]], "final-ckpt")) stop_proc(p);
    }
    for (int wl = 0; wl < NWL; wl++)
        while (!strcmp(scenarios[scen[wl]], "final-ckpt") && running(wl, CKPT) > 0) pump(-2, -1);
    for (int i = 0; i < MAXPROC; i++) {
        struct proc *p = &procs[i];
        if (!p->used || p->pid <= 0 || p->role == READER) continue;
        if (p->role == BIG && !p->point[0]) kill_proc(p, "random"); /* still under way */
        else stop_proc(p); /* (an armed big transaction goes on to its point or its commit) */
    }
    while (running(-1, WRITER) + running(-1, CKPT) + running(-1, BIG) > 0) pump(-2, -1);
}

static void stop_readers(void) {
    for (int i = 0; i < MAXPROC; i++) {
        struct proc *p = &procs[i];
        if (!p->used || p->pid <= 0) continue;
        if (!strcmp(scenarios[scen[p->wl]], "final-ckpt") && !p->point[0]) {
            /* kill it once it is closing: SQLite reports "C"; kvlog's reader does not */
            if (p->wl == SQ) p->kill_after_close = between(0, 4);
            else p->kill_at = now_ms() + between(0, 12);
        }
        stop_proc(p);
    }
    pump(-1, -1);
}

/* ---------------------------------------------------------------------------------------- */
/* Verification                                                                             */

static void check_idle(const char *db) {
    char out[4096];
    char *argv[] = {tshm_bin, "check", "--idle", (char *)db, NULL};
    int rc = run_tool(argv, "tshm-check", out, sizeof out, 30000);
    if (rc != 0) failf("tshm check --idle %s: exit %d: %.300s", db, rc, out);
}

/* What kvlog's bank roles say on stderr when a bounded wait ran out or a snapshot was wrong. */
static void scan_kv_logs(void) {
    DIR *d = opendir(run_dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (strncmp(e->d_name, "kv-", 3) != 0) continue;
        char p[PATH_MAX + 300], line[512];
        snprintf(p, sizeof p, "%s/%s", run_dir, e->d_name);
        FILE *f = fopen(p, "r");
        while (f && fgets(line, sizeof line, f))
            if (strstr(line, "still busy after") || strstr(line, "snapshot sums to")) {
                line[strcspn(line, "\n")] = 0;
                failf("%s: %s", e->d_name, line);
            }
        if (f) fclose(f);
    }
    if (d) closedir(d);
}

static void verify_kv(void) {
    static char out[1 << 16];
    char n_s[16];
    snprintf(n_s, sizeof n_s, "%d", ACCOUNTS);
    char *dump[] = {self_exe, "kv", "dump", kv_db, n_s, NULL};
    int rc = run_tool(dump, "kv-dump", out, sizeof out, 60000);
    if (rc != 0) failf("kv dump: exit %d: %.300s", rc, out);
    int64_t have[ACCOUNTS], w[64] = {0}, big = -1;
    int seen[ACCOUNTS] = {0}, check_ok = 0;
    for (char *s = out; s && *s;) {
        char *nl = strchr(s, '\n');
        if (nl) *nl = 0;
        int i;
        int64_t v;
        if (sscanf(s, "acct %d %" SCNd64, &i, &v) == 2 && i >= 0 && i < ACCOUNTS) have[i] = v, seen[i] = 1;
        else if (sscanf(s, "w %d %" SCNd64, &i, &v) == 2 && i > 0 && i < 64) w[i] = v;
        else if (sscanf(s, "big %" SCNd64, &v) == 1) big = v;
        else if (!strcmp(s, "check ok")) check_ok = 1;
        else if (!strncmp(s, "check ", 6)) failf("kv_check: %s", s + 6);
        else if (s[0] == 'E') failf("kv dump: %s", s);
        s = nl ? nl + 1 : NULL;
    }
    if (rc == 0 && !check_ok) failf("kv dump: no integrity verdict");
    int64_t sum = 0;
    for (int i = 0; i < ACCOUNTS; i++) {
        if (!seen[i]) { failf("kv: account %d missing", i); return; }
        sum += have[i];
    }
    if (sum != (int64_t)ACCOUNTS * BANK_TOTAL_EACH) failf("kv: balances sum to %" PRId64, sum);

    /* transfers: the acknowledged ones, plus some subset of those in flight */
    int64_t want[ACCOUNTS];
    for (int i = 0; i < ACCOUNTS; i++) want[i] = BANK_TOTAL_EACH;
    size_t fl[MAX_INFLIGHT];
    int nf = 0;
    int64_t last_big_acked = -1;
    size_t last_big_idx = 0;
    for (size_t k = 0; k < nintents; k++) {
        struct intent *in = &intents[k];
        if (in->wl != KV) continue;
        if (in->big) {
            if (in->state == ST_ACKED) last_big_acked = in->txid, last_big_idx = k;
            continue;
        }
        if (in->state == ST_ACKED) {
            want[in->from] -= in->amt;
            want[in->to] += in->amt;
        } else if (in->state == ST_INFLIGHT) {
            if (nf == MAX_INFLIGHT) { failf("kv: more than %d transfers in flight to check", MAX_INFLIGHT); return; }
            fl[nf++] = k;
        }
    }
    /* the big key: the last acknowledged big transaction's, or a later one in flight */
    int big_ok = big == last_big_acked;
    for (size_t k = last_big_idx; k < nintents && !big_ok; k++)
        if (intents[k].wl == KV && intents[k].big && intents[k].state == ST_INFLIGHT && intents[k].txid == big) big_ok = 1;
    if (!big_ok) failf("kv: the big key holds %" PRId64 ", the last acknowledged big transaction is %" PRId64, big, last_big_acked);
    /* Gray-code walk over the subsets of the in-flight transfers */
    int mism = 0;
    for (int i = 0; i < ACCOUNTS; i++) mism += want[i] != have[i];
    int in_set[MAX_INFLIGHT] = {0}, found = 0;
    for (uint64_t g = 0;; g++) {
        if (mism == 0) {
            /* each writer's record holds the id of its last transfer that is there */
            int ids_ok = 1;
            for (int wid = 1; wid < 64 && ids_ok; wid++) {
                int64_t last = 0;
                for (size_t k = 0; k < nintents; k++) {
                    struct intent *in = &intents[k];
                    if (in->wl != KV || in->big || in->wid != wid) continue;
                    int there = in->state == ST_ACKED;
                    for (int f = 0; f < nf; f++)
                        if (fl[f] == k && in_set[f]) there = 1;
                    if (there) last = in->txid;
                }
                if (w[wid] != last) ids_ok = 0;
            }
            if (ids_ok) { found = 1; break; }
        }
        if (g + 1 >= (1ull << nf)) break;
        int f = __builtin_ctzll(g + 1);
        struct intent *in = &intents[fl[f]];
        int64_t d = in_set[f] ? -in->amt : in->amt;
        in_set[f] ^= 1;
        int acc[2] = {in->from, in->to};
        int64_t dd[2] = {-d, d};
        for (int j = 0; j < 2; j++) {
            mism -= want[acc[j]] != have[acc[j]];
            want[acc[j]] += dd[j];
            mism += want[acc[j]] != have[acc[j]];
        }
    }
    if (!found) {
        uint64_t acked = 0;
        for (size_t k = 0; k < nintents; k++) acked += intents[k].wl == KV && intents[k].state == ST_ACKED;
        failf("kv: the database is no outcome of the %" PRIu64 " acknowledged and %d in-flight transfers "
              "(a commit lost or resurrected); writers' records w01 %" PRId64 " w02 %" PRId64,
              acked, nf, w[1], w[2]);
    }
    char *check[] = {kvlog_bin, "check", kv_db, NULL};
    if ((rc = run_tool(check, "kvlog-check", out, sizeof out, 30000)) != 0) failf("kvlog check: exit %d", rc);
    check_idle(kv_db);
    /* the kvlog readers' violations, counted in the stats file; bounded waits in their logs */
    int fd = open(kv_stats, O_RDONLY | O_CLOEXEC);
    struct bank_slot_view sl[STATS_SLOTS];
    if (fd >= 0 && pread(fd, sl, sizeof sl, 0) == (ssize_t)sizeof sl) {
        uint64_t bad = 0;
        for (int i = 0; i < STATS_SLOTS; i++) bad += sl[i].bad;
        if (bad) failf("kv: readers saw %" PRIu64 " snapshots with a wrong total", bad);
    }
    if (fd >= 0) close(fd);
    scan_kv_logs();
}

static int cmp_i64(const void *a, const void *b) {
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

static void verify_sq(void) {
    static char out[1 << 20];
    char *dump[] = {self_exe, "sql", "dump", sq_db, NULL};
    int rc = run_tool(dump, "sql-dump", out, sizeof out, 60000);
    if (rc != 0) failf("sql dump: exit %d: %.300s", rc, out);
    int64_t have[ACCOUNTS], *ids = malloc(sizeof(int64_t) * 200000);
    int seen[ACCOUNTS] = {0}, integ = 0, nids = 0;
    for (char *s = out; s && *s;) {
        char *nl = strchr(s, '\n');
        if (nl) *nl = 0;
        int64_t a, b;
        if (sscanf(s, "acct %" SCNd64 " %" SCNd64, &a, &b) == 2 && a >= 0 && a < ACCOUNTS) have[a] = b, seen[a] = 1;
        else if (sscanf(s, "tx %" SCNd64, &a) == 1 && nids < 200000) ids[nids++] = a;
        else if (sscanf(s, "bigrows %" SCNd64 " %" SCNd64, &a, &b) == 2 && b != 6000)
            failf("sql: big transaction %" PRId64 " has %" PRId64 " rows", a, b);
        else if (!strcmp(s, "integrity ok")) integ++;
        else if (!strncmp(s, "integrity", 9)) failf("sql: %s", s);
        else if (s[0] == 'E') failf("sql dump: %s", s);
        s = nl ? nl + 1 : NULL;
    }
    if (rc == 0 && integ != 1) failf("sql: PRAGMA integrity_check did not say ok");
    qsort(ids, (size_t)nids, sizeof ids[0], cmp_i64);
    int64_t want[ACCOUNTS], sum = 0;
    for (int i = 0; i < ACCOUNTS; i++) want[i] = BANK_TOTAL_EACH;
    int matched = 0, lost = 0, back = 0;
    int64_t first_lost = 0, first_back = 0;
    for (size_t k = 0; k < nintents; k++) {
        struct intent *in = &intents[k];
        if (in->wl != SQ) continue;
        int there = bsearch(&in->txid, ids, (size_t)nids, sizeof ids[0], cmp_i64) != NULL;
        matched += there;
        if (in->state == ST_ACKED && !there && lost++ == 0) first_lost = in->txid;
        if (in->state == ST_ROLLED && there && back++ == 0) first_back = in->txid;
        if (in->state == ST_PENDING) failf("sql: transaction %" PRId64 " unresolved", in->txid);
        if (there && !in->big) {
            want[in->from] -= in->amt;
            want[in->to] += in->amt;
        }
    }
    if (lost) failf("sql: %d acknowledged transaction(s) lost, the first %" PRId64, lost, first_lost);
    if (back) failf("sql: %d rolled-back transaction(s) there, the first %" PRId64, back, first_back);
    if (matched != nids) failf("sql: %d committed ids were never attempted", nids - matched);
    for (int i = 0; i < ACCOUNTS; i++) {
        if (!seen[i]) { failf("sql: account %d missing", i); break; }
        sum += have[i];
        if (have[i] != want[i]) {
            failf("sql: account %d holds %" PRId64 ", its committed transfers make %" PRId64, i, have[i], want[i]);
            break;
        }
    }
    if (sum != (int64_t)ACCOUNTS * BANK_TOTAL_EACH) failf("sql: balances sum to %" PRId64, sum);
    free(ids);
    check_idle(sq_db);
}

/* ---------------------------------------------------------------------------------------- */
/* Rounds                                                                                   */

static void clear_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d == NULL) return;
    struct dirent *e;
    char p[PATH_MAX + 300];
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

static int copy_file(const char *from, const char *to) {
    int in = open(from, O_RDONLY | O_CLOEXEC), o = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    char buf[65536];
    ssize_t n = 0;
    while (in >= 0 && o >= 0 && (n = read(in, buf, sizeof buf)) > 0)
        if (write(o, buf, (size_t)n) != n) {
            n = -1;
            break;
        }
    if (in >= 0) close(in);
    if (o >= 0) close(o);
    return in >= 0 && o >= 0 && n == 0 ? 0 : -1;
}

static void keep_files(int r) {
    char dst[PATH_MAX + 64], p[PATH_MAX + 400], q[PATH_MAX + 400];
    snprintf(dst, sizeof dst, "%s/failed-%d", out_dir, r);
    mkdir(dst, 0755);
    clear_dir(dst);
    DIR *d = opendir(run_dir);
    struct dirent *e;
    while (d && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue;
        snprintf(p, sizeof p, "%s/%s", run_dir, e->d_name);
        snprintf(q, sizeof q, "%s/%s", dst, e->d_name);
        copy_file(p, q);
    }
    if (d) closedir(d);
    printf("  round %d failed; its files are in %s (replay its plan: make torture SEED=%" PRIu64 " ONLY=%d)\n",
           r, dst, seed, r);
}

/* The freshly created databases every round starts from, made once by kvlog's `bank init` and
 * `torture sql init` (both closed cleanly: the sidecars are left out, each round creates its
 * own). */
static char template_dir[PATH_MAX + 16];
static const char *template_files[] = {"kv.db", "kv.db-wal", "sql.db"};

static int make_template(void) {
    char saved[sizeof run_dir], kdb[PATH_MAX + 64], sdb[PATH_MAX + 64], n_s[16];
    snprintf(template_dir, sizeof template_dir, "%s/template", out_dir);
    mkdir(template_dir, 0755);
    clear_dir(template_dir);
    memcpy(saved, run_dir, sizeof saved);
    snprintf(run_dir, sizeof run_dir, "%s", template_dir);
    snprintf(kdb, sizeof kdb, "%s/kv.db", template_dir);
    snprintf(sdb, sizeof sdb, "%s/sql.db", template_dir);
    snprintf(n_s, sizeof n_s, "%d", ACCOUNTS);
    char *kinit[] = {kvlog_bin, "bank", "init", kdb, n_s, NULL};
    char *sinit[] = {self_exe, "sql", "init", sdb, n_s, NULL};
    backend = "ofd";
    int rc = run_tool(kinit, "kv-init", NULL, 0, 60000), rc2 = run_tool(sinit, "sql-init", NULL, 0, 60000);
    memcpy(run_dir, saved, sizeof saved);
    if (rc != 0 || rc2 != 0) {
        fprintf(stderr, "torture: creating the databases failed (%d, %d): see %s\n", rc, rc2, template_dir);
        return -1;
    }
    return 0;
}

/* --selftest: falsifies one resolved transaction of wl in the supervisor's record (an
 * acknowledged one becomes rolled back, or a rolled-back one acknowledged), so the database no
 * longer matches it. Returns 0 when the round has none. */
static int falsify(int wl) {
    size_t c[64];
    int n = 0;
    for (size_t k = 0; k < nintents && n < 64; k++)
        if (intents[k].wl == wl && !intents[k].big && (intents[k].state == ST_ACKED || intents[k].state == ST_ROLLED))
            c[n++] = k;
    if (n == 0) return 0;
    struct intent *in = &intents[c[rnd() % (uint64_t)n]];
    in->state = in->state == ST_ACKED ? ST_ROLLED : ST_ACKED;
    note("selftest: %s transaction %" PRId64 " recorded as %s", wl_name[wl], in->txid,
         in->state == ST_ACKED ? "acknowledged" : "rolled back");
    return 1;
}

/* Runs one verification; in --selftest mode, of a falsified record, which it must reject. */
static void verify(int wl) {
    int before = nfail;
    int falsified = selftest && falsify(wl);
    if (wl == KV) verify_kv();
    else verify_sq();
    if (!selftest) return;
    int caught = nfail > before;
    nfail = before;
    if (falsified && caught) selftest_caught++;
    else if (falsified) failf("selftest: the %s verifier accepted a falsified record", wl_name[wl]);
}

static void run_round(int r) {
    round_no = r;
    rng = mix(seed ^ mix((uint64_t)r + 1)) | 1;
    nfail = 0;
    nintents = 0;
    spawn_seq = 0;
    memset(procs, 0, sizeof procs);
    memset(wl_dead, 0, sizeof wl_dead);
    for (int wl = 0; wl < NWL; wl++) {
        int total = 0, x;
        for (int i = 0; i < NSCEN; i++) total += scen_weight[i];
        x = (int)(rnd() % (uint64_t)total);
        for (scen[wl] = 0; x >= scen_weight[scen[wl]]; scen[wl]++) x -= scen_weight[scen[wl]];
        if (forced_scen >= 0) scen[wl] = forced_scen;
        if (wl == SQ && !strcmp(scenarios[scen[wl]], "unpublished")) scen[wl] = 2; /* kill-all */
        BUMP(rounds_scen, scen_key(wl));
    }
    durable = rnd() % 3 == 0;
    durable_rounds += durable;
    backend = rnd() % 2 ? "ofd" : "posix";
    clear_dir(run_dir);
    char evp[PATH_MAX + 64];
    snprintf(evp, sizeof evp, "%s/events.txt", run_dir);
    events = fopen(evp, "w");
    round_start = now_ms();
    note("round %d seed %" PRIu64 ": kv %s, sql %s, %s locks%s", r, seed, scenarios[scen[KV]], scenarios[scen[SQ]],
         backend, durable ? ", durable" : "");
    alarm(300); /* the supervisor's own watchdog */

    int fd = open(kv_stats, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || ftruncate(fd, sizeof(struct bank_slot_view) * STATS_SLOTS) != 0) { perror(kv_stats); exit(2); }
    close(fd);
    for (size_t i = 0; i < sizeof template_files / sizeof template_files[0]; i++) {
        char from[PATH_MAX + 200], to[PATH_MAX + 200];
        snprintf(from, sizeof from, "%s/%s", template_dir, template_files[i]);
        snprintf(to, sizeof to, "%s/%s", run_dir, template_files[i]);
        if (copy_file(from, to) != 0) failf("cannot copy %s to %s", from, to);
    }

    if (nfail == 0) {
        phase = RUN;
        for (int wl = 0; wl < NWL; wl++) {
            add_proc(wl, WRITER, 1);
            add_proc(wl, WRITER, 2);
            struct proc *rd = add_proc(wl, READER, 1);
            add_proc(wl, CKPT, 1);
            /* final-ckpt: the reader closes last; it is armed in the middle of that final
             * checkpoint (kvlog), or before or after the last-close hook (libtshm), or else
             * killed at a random moment of its close */
            if (!strcmp(scenarios[scen[wl]], "final-ckpt")) {
                const char *last[] = {wl == KV ? "kvlog:mid-checkpoint" : "", "tshm:close_last_hook",
                                      "tshm:close_last_done", ""};
                const char *pt = last[rnd() % 4];
                if (pt[0] && has_point(pt)) snprintf(rd->point, sizeof rd->point, "%s", pt);
            }
        }
        for (int i = 0; i < MAXPROC; i++)
            if (procs[i].used) spawn(&procs[i]);
        double t0 = now_ms();
        double t1 = t0 + between(15, 60);
        pump(t1, -1);
        for (int wl = 0; wl < NWL; wl++) scenario_event(wl);
        pump(now_ms() + between(30, 80), -1);
        double t2 = now_ms();
        stop_non_readers();
        double t3 = now_ms();
        stop_readers();
        double t4 = now_ms();
        for (int i = 0; i < MAXPROC; i++)
            if (procs[i].used && procs[i].pid > 0) failf("%s still running", pname(&procs[i]));
        for (size_t k = 0; k < nintents; k++) {
            total_acked += intents[k].state == ST_ACKED;
            total_inflight += intents[k].state == ST_INFLIGHT;
            total_rolled += intents[k].state == ST_ROLLED;
        }
        verify(KV);
        double t5 = now_ms();
        verify(SQ);
        double ph[6] = {t0 - round_start, t2 - t0, t3 - t2, t4 - t3, t5 - t4, now_ms() - t5};
        for (int i = 0; i < 6; i++) phase_ms[i] += ph[i];
        note("phases (ms): start %.0f, run %.0f, stop %.0f, readers %.0f, verify kv %.0f, sql %.0f", ph[0], ph[1],
             ph[2], ph[3], ph[4], ph[5]);
    }
    alarm(0);
    note("round %d done: %d failure(s)", r, nfail);
    if (events) fclose(events);
    events = NULL;
    if (nfail) {
        total_failures += (uint64_t)nfail;
        if (nfailed_rounds < 64) failed_rounds_list[nfailed_rounds] = (uint64_t)r;
        nfailed_rounds++;
        printf("round %d (kv %s, sql %s, %s locks%s): %d failure(s)\n", r, scenarios[scen[KV]], scenarios[scen[SQ]],
               backend, durable ? ", durable" : "", nfail);
        for (int i = 0; i < nfail && i < MAXFAIL; i++) printf("  - %s\n", failures[i]);
        keep_files(r);
    }
}

/* The watchdog (SIGALRM), or an interrupt: no process of ours is left behind. */
static pid_t supervisor_pid;

static void on_alarm(int sig) {
    if (getpid() != supervisor_pid) _exit(128 + sig); /* (fork_child makes this unreachable) */
    static const char m[] = "torture: supervisor watchdog: a round ran past 300 s\n";
    static const char i[] = "torture: interrupted\n";
    if (sig == SIGALRM && write(2, m, sizeof m - 1) < 0) {}
    if (sig != SIGALRM && write(2, i, sizeof i - 1) < 0) {}
    for (int i = 0; i < MAXPROC; i++)
        if (procs[i].pid > 0) kill(procs[i].pid, SIGKILL);
    if (tool_pid > 0) kill(tool_pid, SIGKILL);
    _exit(3);
}

static void json_counters(FILE *f, const char *name, const struct counter *c, size_t cap, int last) {
    fprintf(f, "  \"%s\": {", name);
    int first = 1;
    for (size_t i = 0; i < cap && c[i].name[0]; i++) {
        fprintf(f, "%s\"%s\": %" PRIu64, first ? "" : ", ", c[i].name, c[i].n);
        first = 0;
    }
    fprintf(f, "}%s\n", last ? "" : ",");
}
#define JSONC(f, name, arr, last) json_counters(f, name, arr, sizeof arr / sizeof arr[0], last)

static void print_counters(const char *title, const struct counter *c, size_t cap) {
    printf("  %s:", title);
    for (size_t i = 0; i < cap && c[i].name[0]; i++) printf(" %s %" PRIu64 ";", c[i].name, c[i].n);
    printf("\n");
}
#define PRINTC(title, arr) print_counters(title, arr, sizeof arr / sizeof arr[0])

static void abs_path(char *dst, const char *src) {
    if (realpath(src, dst) == NULL) snprintf(dst, PATH_MAX, "%s", src);
}

int main(int argc, char **argv) {
    if (argc > 1 && (!strcmp(argv[1], "sql") || !strcmp(argv[1], "kv"))) return worker_main(argc - 1, argv + 1);
    setvbuf(stdout, NULL, _IOLBF, 0);
    int rounds = 100, only = -1;
    seed = 0;
    char pts[4096] = "";
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--rounds") && i + 1 < argc) rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--seed") && i + 1 < argc) seed = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--only") && i + 1 < argc) only = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--points") && i + 1 < argc) snprintf(pts, sizeof pts, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--selftest")) selftest = 1;
        else if (!strcmp(argv[i], "--scenario") && i + 1 < argc) {
            i++;
            for (int k = 0; k < NSCEN; k++)
                if (!strcmp(argv[i], scenarios[k])) forced_scen = k;
            if (forced_scen < 0) { fprintf(stderr, "torture: no scenario %s\n", argv[i]); return 2; }
        } else if (!strcmp(argv[i], "--dir") && i + 1 < argc) snprintf(out_dir, sizeof out_dir, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--json") && i + 1 < argc) snprintf(json_path, sizeof json_path, "%s", argv[++i]);
        else {
            fprintf(stderr, "usage: torture [--rounds N] [--seed S] [--only R] [--scenario NAME] [--selftest] [--points \"P ...\"] [--dir DIR] [--json FILE]\n");
            return 2;
        }
    }
    const char *kb = getenv("KVLOG_BIN"), *tb = getenv("TSHM_BIN"), *se = getenv("TSHM_SQLITE_EXT");
    if (!kb || !tb || !se) {
        fprintf(stderr, "torture: KVLOG_BIN, TSHM_BIN and TSHM_SQLITE_EXT must be set\n");
        return 2;
    }
    abs_path(kvlog_bin, kb);
    abs_path(tshm_bin, tb);
    abs_path(shim_so, se);
    ssize_t n = readlink("/proc/self/exe", self_exe, sizeof self_exe - 1);
    if (n <= 0) return 2;
    self_exe[n] = 0;
    for (char *tok = strtok(pts, " ,\n\t"); tok && npoints < 64; tok = strtok(NULL, " ,\n\t")) {
        if (strchr(tok, ':') == NULL) {
            fprintf(stderr, "torture: crash point '%s' needs a kind: tshm:, kvlog:, kvfail: or shim:\n", tok);
            return 2;
        }
        points[npoints++] = strdup(tok);
    }
    if (seed == 0) {
        struct timespec t;
        clock_gettime(CLOCK_REALTIME, &t);
        seed = mix((uint64_t)t.tv_nsec ^ ((uint64_t)getpid() << 32)) % 1000000000ull + 1;
    }
    /* fds 3 and 4 stay taken, so no pipe lands where a child's stop-point descriptors go */
    while (open("/dev/null", O_RDONLY | O_CLOEXEC) < 4) {}
    if (pipe2(sigchld_pipe, O_CLOEXEC | O_NONBLOCK) != 0) return 2;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_sigchld;
    sa.sa_flags = SA_RESTART | SA_NOCLDSTOP;
    sigaction(SIGCHLD, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    supervisor_pid = getpid();
    signal(SIGALRM, on_alarm);
    signal(SIGINT, on_alarm);
    signal(SIGTERM, on_alarm);
    mkdir(out_dir, 0755);
    DIR *od = opendir(out_dir); /* failed rounds of an earlier run */
    struct dirent *e;
    while (od && (e = readdir(od)) != NULL) {
        if (strncmp(e->d_name, "failed-", 7) != 0) continue;
        char p[PATH_MAX + 300];
        snprintf(p, sizeof p, "%s/%s", out_dir, e->d_name);
        clear_dir(p);
        rmdir(p);
    }
    if (od) closedir(od);
    /* the round's files: in memory when there is a /dev/shm (rounds are I/O-bound otherwise);
     * a failing round's are copied to out_dir */
    int own_run_dir = 0;
    if (getenv("TORTURE_RUN_DIR")) snprintf(run_dir, sizeof run_dir, "%s", getenv("TORTURE_RUN_DIR"));
    else if (access("/dev/shm", W_OK) == 0) {
        snprintf(run_dir, sizeof run_dir, "/dev/shm/tshm-torture.%d", (int)getpid());
        own_run_dir = 1;
    } else snprintf(run_dir, sizeof run_dir, "%s/run", out_dir);
    mkdir(run_dir, 0755);
    snprintf(kv_db, sizeof kv_db, "%s/kv.db", run_dir);
    snprintf(sq_db, sizeof sq_db, "%s/sql.db", run_dir);
    snprintf(kv_stats, sizeof kv_stats, "%s/kv.stats", run_dir);
    if (make_template() != 0) return 2;
    printf("torture: %d round(s), seed %" PRIu64 " (SEED=%" PRIu64 " replays), %d crash point(s):", only >= 0 ? 1 : rounds,
           seed, seed, npoints);
    for (int i = 0; i < npoints; i++) printf(" %s", points[i]);
    printf("\n");
    double start = now_ms();
    int done = 0;
    for (int r = only >= 0 ? only : 0; r < (only >= 0 ? only + 1 : rounds); r++) {
        run_round(r);
        done++;
        if (done % 100 == 0)
            printf("  %d rounds, %.0f s, %" PRIu64 " failure(s)\n", done, (now_ms() - start) / 1e3, total_failures);
    }
    double secs = (now_ms() - start) / 1e3;
    uint64_t kills = 0;
    for (size_t i = 0; i < sizeof kills_point / sizeof kills_point[0]; i++) kills += kills_point[i].n;
    printf("torture: %d round(s) in %.1f s, %" PRIu64 " kills, %" PRIu64 " failure(s) in %" PRIu64 " round(s); seed %" PRIu64 "\n",
           done, secs, kills, total_failures, nfailed_rounds, seed);
    PRINTC("kills by point", kills_point);
    PRINTC("kills by scenario", kills_scen);
    PRINTC("armed, never reached", unreached);
    printf("  mean phase of a round (ms):");
    for (int i = 0; i < 6; i++) printf(" %s %.0f;", phase_names[i], done ? phase_ms[i] / done : 0);
    printf("\n");
    if (selftest) printf("  selftest: %" PRIu64 " falsified record(s) caught\n", selftest_caught);
    printf("  transactions: %" PRIu64 " acknowledged, %" PRIu64 " in flight at a kill, %" PRIu64 " rolled back\n",
           total_acked, total_inflight, total_rolled);

    char dir[PATH_MAX];
    snprintf(dir, sizeof dir, "%s", json_path);
    char *slash = strrchr(dir, '/');
    if (slash) {
        *slash = 0;
        mkdir(dir, 0755);
    }
    FILE *f = fopen(json_path, "w");
    if (f) {
        fprintf(f, "{\n  \"tool\": \"torture\",\n  \"rounds\": %d,\n  \"seconds\": %.1f,\n  \"seed\": %" PRIu64 ",\n",
                done, secs, seed);
        fprintf(f, "  \"failures\": %" PRIu64 ",\n  \"failed_rounds\": [", total_failures);
        for (uint64_t i = 0; i < nfailed_rounds && i < 64; i++) fprintf(f, "%s%" PRIu64, i ? ", " : "", failed_rounds_list[i]);
        fprintf(f, "],\n  \"kills\": %" PRIu64 ",\n", kills);
        JSONC(f, "kills_by_point", kills_point, 0);
        JSONC(f, "kills_by_scenario", kills_scen, 0);
        JSONC(f, "rounds_by_scenario", rounds_scen, 0);
        JSONC(f, "armed_not_reached", unreached, 0);
        fprintf(f, "  \"points\": [");
        for (int i = 0; i < npoints; i++) fprintf(f, "%s\"%s\"", i ? ", " : "", points[i]);
        fprintf(f, "],\n  \"mean_phase_ms\": {");
        for (int i = 0; i < 6; i++) fprintf(f, "%s\"%s\": %.1f", i ? ", " : "", phase_names[i], done ? phase_ms[i] / done : 0);
        fprintf(f, "},\n  \"durable_rounds\": %" PRIu64 ",\n  \"processes\": %" PRIu64 ",\n", durable_rounds, total_spawned);
        fprintf(f, "  \"transactions_acked\": %" PRIu64 ",\n  \"transactions_in_flight\": %" PRIu64 ",\n"
                   "  \"transactions_rolled_back\": %" PRIu64 "\n}\n", total_acked, total_inflight, total_rolled);
        fclose(f);
        printf("  summary: %s\n", json_path);
    }
    if (own_run_dir) {
        clear_dir(run_dir);
        rmdir(run_dir);
    }
    return total_failures ? 1 : 0;
}
