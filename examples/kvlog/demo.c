/*
 * demo.c — `kvlog demo [SECONDS] [DIR]`: the bank workload on one database with several writer
 * processes, several readers and a checkpointer at once, a live progress line, a SIGKILL of
 * one writer in the middle of a transaction and of one reader holding a slot halfway through.
 * At the end a writer is SIGKILLed with its commit frame written but not published, a one-page
 * transaction (`kvlog put`) commits over the first of its frames, and the last process
 * attached is SIGKILLed too, so a fresh opener has to recover from the WAL: it must end at that
 * last published commit, not at the dead writer's commit frame further on. Then
 * verification: every snapshot summed to the constant total, the database holds exactly the
 * acknowledged transfers, it passes its integrity check after the final checkpoint, and the
 * sidecar was left clean (`tshm check --idle`). Exits non-zero with the reason when anything
 * fails.
 *
 * The processes are this program exec'd again (`kvlog bank writer ...`). A victim is stopped at
 * its named point (KVLOG_STOP_AT, armed through a pipe) and reports there before it is killed,
 * so the kill lands exactly mid-transaction; no sleep is used to synchronize.
 */
#define _GNU_SOURCE
#include "bank.h"
#include "kvlog.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { WRITERS = 3, READERS = 3, ACCOUNTS = 2000 };

struct proc {
    pid_t pid;
    int role, id;
    int arm, status; /* pipe ends: arm the stop point / its report */
    int killed, exit_code;
    char log[1024];
};

static char exe[1024], tshm_bin[1024];

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

static pid_t spawn(struct proc *p, const char *db, const char *stats, int slot, const char *stop_at) {
    int arm[2], status[2];
    if (pipe(arm) != 0 || pipe(status) != 0) { perror("pipe"); exit(2); }
    pid_t pid = fork();
    if (pid == 0) {
        close(arm[1]);
        close(status[0]);
        char a[16], s[16], sl[16], id[16];
        snprintf(a, sizeof a, "%d", arm[0]);
        snprintf(s, sizeof s, "%d", status[1]);
        snprintf(sl, sizeof sl, "%d", slot);
        snprintf(id, sizeof id, "%d", p->id);
        setenv("KVLOG_STATS", stats, 1);
        setenv("KVLOG_SLOT", sl, 1);
        setenv("KVLOG_STOP_AT", stop_at, 1);
        setenv("KVLOG_STOP_FD", s, 1);
        setenv("KVLOG_ARM_FD", a, 1);
        if (p->role == ROLE_WRITER) execl(exe, "kvlog", "bank", "writer", db, id, p->log, (char *)NULL);
        else if (p->role == ROLE_READER) execl(exe, "kvlog", "bank", "reader", db, (char *)NULL);
        else execl(exe, "kvlog", "bank", "checkpointer", db, (char *)NULL);
        perror("exec");
        _exit(127);
    }
    close(arm[0]);
    close(status[1]);
    p->pid = pid;
    p->arm = arm[1];
    p->status = status[0];
    return pid;
}

/* Arms the victim's stop point, waits (up to 10 s) for it to report from there, kills it. */
static int kill_at_stop_point(struct proc *p) {
    char c = 'a';
    if (write(p->arm, &c, 1) != 1) return 0;
    struct pollfd pf = {.fd = p->status, .events = POLLIN};
    int ok = poll(&pf, 1, 10000) == 1 && read(p->status, &c, 1) == 1;
    kill(p->pid, SIGKILL);
    int st;
    waitpid(p->pid, &st, 0);
    p->killed = 1;
    return ok;
}

/* SIGTERMs the process and waits for it to exit; 1 when it exited with 0. */
static int stop(struct proc *p) {
    int st;
    kill(p->pid, SIGTERM);
    waitpid(p->pid, &st, 0);
    p->exit_code = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
    p->killed = 1; /* gone */
    if (p->exit_code != 0) printf("  process %d (role %d) exited with %d\n", p->pid, p->role, p->exit_code);
    return p->exit_code == 0;
}

/* Runs argv[0] with argv; returns its exit status. */
static int run(char *const argv[]) {
    pid_t pid = fork();
    if (pid == 0) {
        execv(argv[0], argv);
        perror(argv[0]);
        _exit(127);
    }
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static struct bank_slot totals(struct bank_slot *slots) {
    struct bank_slot t;
    memset(&t, 0, sizeof t);
    for (int i = 0; i < BANK_SLOTS; i++) {
        t.commits += __atomic_load_n(&slots[i].commits, __ATOMIC_RELAXED);
        t.aborts += __atomic_load_n(&slots[i].aborts, __ATOMIC_RELAXED);
        t.waits += __atomic_load_n(&slots[i].waits, __ATOMIC_RELAXED);
        t.reads += __atomic_load_n(&slots[i].reads, __ATOMIC_RELAXED);
        t.bad += __atomic_load_n(&slots[i].bad, __ATOMIC_RELAXED);
        t.ckpts += __atomic_load_n(&slots[i].ckpts, __ATOMIC_RELAXED);
        t.copied += __atomic_load_n(&slots[i].copied, __ATOMIC_RELAXED);
        t.restarts += __atomic_load_n(&slots[i].restarts, __ATOMIC_RELAXED);
    }
    return t;
}

int demo_main(int argc, char **argv) {
    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGPIPE, SIG_IGN); /* a victim that already died must not take the demo with it */
    double seconds = argc > 0 ? atof(argv[0]) : 0;
    if (seconds <= 0) seconds = getenv("DEMO_SECONDS") ? atof(getenv("DEMO_SECONDS")) : 20;
    if (seconds < 2) seconds = 2;
    const char *dir = argc > 1 ? argv[1] : "build/demo";
    ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
    if (n <= 0) { perror("readlink"); return 2; }
    exe[n] = 0;
    if (getenv("TSHM_BIN")) snprintf(tshm_bin, sizeof tshm_bin, "%s", getenv("TSHM_BIN"));
    else {
        char tmp[1024];
        snprintf(tmp, sizeof tmp, "%s", exe);
        snprintf(tshm_bin, sizeof tshm_bin, "%s/tshm", dirname(tmp));
    }
    mkdir(dir, 0755);
    char db[1200], stats[1200], path[1300];
    snprintf(db, sizeof db, "%s/bank.db", dir);
    snprintf(stats, sizeof stats, "%s/bank.stats", dir);
    const char *suffix[] = {"", "-wal", "-tshm"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s%s", db, suffix[i]);
        unlink(path);
    }
    printf("kvlog demo: %d writers, %d readers, 1 checkpointer on %s for %.0f s\n", WRITERS, READERS, db, seconds);
    printf("  %d accounts of %d: every reader snapshot must sum to %d\n", ACCOUNTS, BANK_START, ACCOUNTS * BANK_START);
    if (bank_init(db, ACCOUNTS) != 0) { printf("FAIL: could not create the database\n"); return 1; }

    int sfd = open(stats, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (sfd < 0 || ftruncate(sfd, sizeof(struct bank_slot) * BANK_SLOTS) != 0) { perror(stats); return 2; }
    struct bank_slot *slots = mmap(NULL, sizeof(struct bank_slot) * BANK_SLOTS, PROT_READ | PROT_WRITE, MAP_SHARED, sfd, 0);
    close(sfd);
    if (slots == MAP_FAILED) { perror("mmap"); return 2; }

    kvlog *mine; /* this process watches the snapshot, and as the last to close checkpoints */
    if (kv_open(db, NULL, &mine) != KV_OK) { printf("FAIL: open\n"); return 1; }
    tshm *h = kv_tshm(mine);

    struct proc procs[WRITERS + READERS + 1];
    memset(procs, 0, sizeof procs);
    int np = 0;
    for (int i = 0; i < WRITERS; i++, np++) {
        procs[np].role = ROLE_WRITER;
        procs[np].id = i + 1;
        snprintf(procs[np].log, sizeof procs[np].log, "%s/writer-%d.log", dir, i + 1);
        unlink(procs[np].log);
        /* writer 1 is killed mid-transaction halfway through, writer 2 before publishing a
         * commit at the end */
        spawn(&procs[np], db, stats, np, i == 1 ? KV_STOP_UNPUBLISHED : KV_STOP_MID_WRITE);
    }
    for (int i = 0; i < READERS; i++, np++) {
        procs[np].role = ROLE_READER;
        spawn(&procs[np], db, stats, np, KV_STOP_IN_READ);
    }
    int ckpt = np;
    procs[np].role = ROLE_CHECKPOINTER;
    spawn(&procs[np], db, stats, np, "none");
    np++;

    int tty = isatty(1);
    double start = now_s(), last = start, last_print = 0;
    struct bank_slot prev = totals(slots);
    int killed = 0, kill_ok = 1;
    while (now_s() - start < seconds) {
        struct timespec tick = {0, 250 * 1000 * 1000};
        nanosleep(&tick, NULL); /* display pacing */
        double t = now_s();
        if (!killed && t - start >= seconds / 2) {
            killed = 1;
            int w = kill_at_stop_point(&procs[0]);
            int r = kill_at_stop_point(&procs[WRITERS]);
            kill_ok = w && r;
            printf("%s  SIGKILL writer %d (pid %d) %s; SIGKILL reader (pid %d) %s\n", tty ? "\n" : "",
                   procs[0].id, procs[0].pid, w ? "between two frames of a transaction" : "(stop point not reached!)",
                   procs[WRITERS].pid, r ? "while it held a reader slot" : "(stop point not reached!)");
        }
        struct bank_slot cur = totals(slots);
        double dt = t - last;
        tshm_snapshot s;
        tshm_snapshot_get(h, &s);
        if (tty || t - last_print >= 2.0) {
            printf("%s  %5.1fs  commits/s %6.0f  reads/s %6.0f  waits %6" PRIu64 "  checkpoints %5" PRIu64
                   "  restarts %4" PRIu64 "  WAL frames %6" PRIu64 "  readers pinned %u%s",
                   tty ? "\r" : "", t - start, (cur.commits - prev.commits) / dt, (cur.reads - prev.reads) / dt,
                   cur.waits, cur.ckpts, cur.restarts, s.max_frame + 1 - s.engine[0], kv_readers_pinned(mine),
                   tty ? "  " : "\n");
            last_print = t;
        }
        prev = cur;
        last = t;
    }
    if (tty) printf("\n");

    /* Final phase. The checkpointer and writer 3 stop (so the WAL is not restarted under what
     * follows); writer 2 is killed with its commit frame written but not published (a transfer
     * writes two or three frames); `kvlog put` commits one frame over the first of them; one
     * reader stops, the demo lets go, the last reader is killed holding its slot: nobody closed
     * last, so the next opener recovers from the WAL, past which lie writer 2's other frames. */
    int children_ok = stop(&procs[ckpt]);
    children_ok &= stop(&procs[2]);
    int unpub = kill_at_stop_point(&procs[1]);
    printf("  stop the checkpointer and writer %d; SIGKILL writer %d (pid %d) %s\n", procs[2].id, procs[1].id,
           procs[1].pid, unpub ? "with its commit frame written, not published" : "(stop point not reached!)");
    char *put[] = {exe, "put", db, "epilogue", "one frame", NULL};
    int put_ok = run(put) == 0;
    children_ok &= put_ok;
    tshm_snapshot published;
    tshm_snapshot_get(h, &published);
    children_ok &= stop(&procs[WRITERS + 1]);
    kv_close(mine); /* not the last: the last reader is still attached */
    int last_reader = kill_at_stop_point(&procs[WRITERS + 2]);
    printf("  kvlog put %s one frame over its first (max_frame %" PRIu64 "); SIGKILL the last reader (pid %d) %s\n",
           put_ok ? "commits" : "FAILED to commit", published.max_frame, procs[WRITERS + 2].pid,
           last_reader ? "in a read: no process left" : "(stop point not reached!)");

    /* the first opener now: recovery must end at the last published commit, not at writer 2's */
    kvlog *rec;
    kv_stats rs;
    tshm_info ri;
    memset(&rs, 0, sizeof rs);
    memset(&ri, 0, sizeof ri);
    int recovered = kv_open(db, NULL, &rec) == KV_OK;
    if (recovered) {
        recovered = tshm_info_get(kv_tshm(rec), &ri) == TSHM_OK && ri.initialized == 1 &&
                    kv_stats_get(rec, &rs) == KV_OK && rs.max_frame == published.max_frame;
        kv_close(rec); /* the last one attached: final checkpoint, WAL restart */
    }
    printf("  reopen: recovery rebuilt the index from %" PRIu64 " WAL frames, max_frame %" PRIu64 "%s\n",
           rs.wal_frames, rs.max_frame, recovered ? "" : " (WRONG)");
    struct bank_slot tot = totals(slots);

    printf("verifying...\n");
    char *logs[WRITERS];
    for (int i = 0; i < WRITERS; i++) logs[i] = procs[i].log;
    struct bank_verdict v;
    int bad = bank_verify(db, WRITERS, logs, &v);
    /* `tshm check --idle`: sound, no process attached, no role or slot held, nothing pending */
    char *check[] = {tshm_bin, "check", "--idle", db, NULL};
    int clean = run(check) == 0;

    printf("\n  %-34s %s\n", "check", "result");
    printf("  %-34s %" PRIu64 " snapshots, %" PRIu64 " wrong\n", "readers saw the constant total", tot.reads, tot.bad);
    printf("  %-34s %" PRIu64 " acknowledged, %" PRIu64 " in flight at the kill, %" PRIu64 " lost\n",
           "committed transfers", v.acked, v.in_flight, v.lost);
    printf("  %-34s %s (max_frame %" PRIu64 " of %" PRIu64 " published)\n", "recovery after every process died",
           recovered ? "the last published commit" : "WRONG", rs.max_frame, published.max_frame);
    printf("  %-34s %s (total %" PRIu64 " of %" PRIu64 ")\n", "balances match the writers' logs",
           v.balances_match ? "yes" : "NO", v.total, v.expected_total);
    printf("  %-34s %s\n", "integrity after final checkpoint", v.integrity_ok ? "ok" : "FAILED");
    printf("  %-34s %s\n", "sidecar left clean", clean ? "yes" : "NO");
    printf("  %-34s %" PRIu64 " commits, %" PRIu64 " rollbacks, %" PRIu64 " waited for the writer role\n", "writers", tot.commits,
           tot.aborts, tot.waits);
    printf("  %-34s %" PRIu64 " checkpoints, %" PRIu64 " pages copied, %" PRIu64 " WAL restarts\n",
           "checkpointer", tot.ckpts, tot.copied, tot.restarts);
    printf("  %-34s %s\n", "kills mid-transaction / in a read", kill_ok ? "both at their stop points" : "MISSED");
    printf("  %-34s %s\n", "kills before publish / last reader", unpub && last_reader ? "both at their stop points" : "MISSED");

    /* every writer still running at the end stopped cleanly or died before publishing: none
     * has a transfer committed but not acknowledged */
    const char *why = bad ? v.why : tot.bad ? "a reader saw a wrong total" : !clean ? "the sidecar was not left clean"
                    : !recovered ? "recovery did not end at the last published commit"
                    : v.in_flight != 0 ? "a transfer that was never acknowledged is in the database"
                    : !children_ok ? "a process failed" : !kill_ok || !unpub || !last_reader ? "a victim never reached its stop point"
                    : tot.reads == 0 || tot.commits == 0 ? "no progress" : NULL;
    printf("\n");
    char *inspect[] = {tshm_bin, "inspect", db, NULL};
    run(inspect);
    if (why != NULL) {
        printf("\nFAIL: %s\n", why);
        return 1;
    }
    printf("\nPASS\n");
    return 0;
}
