/*
 * bench_core.c — libtshm's hot paths through the public C API, each against an anchor measured
 * in the same run (these machines are shared and noisy: only ratios mean anything).
 *
 *   bench_core DIR     prints report rows as JSON lines on stdout (benches/capi.rs merges them
 *                      into target/bench/report.json) and a readable account on stderr.
 *   ONLY=prefix        runs only the sections with ids under that prefix.
 *
 * Single-operation costs: each operation runs in a tight loop for ~20 ms per sample; the
 * samples of all the operations compared alternate (ABAB..., the order rotated every round),
 * so that drift and neighbours' load hit them alike; a figure is the median of its samples.
 * Multi-process figures fork real processes, each opening its own handle; those compared run
 * in alternating rounds too. docs/PERFORMANCE.md describes every row.
 */
#include "bench_util.h"

#include <linux/futex.h>
#include <math.h>
#include <signal.h>
#include <stdatomic.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>

static const char *dir;
static volatile uint64_t sink;

/* ---------------------------------------------------------------------------------------- */
/* rows, the ONLY filter, statistics */

static int wanted(const char *id) {
    const char *only = getenv("ONLY");
    if (only == NULL || *only == 0) return 1;
    size_t a = strlen(only), b = strlen(id);
    return strncmp(id, only, a < b ? a : b) == 0;
}

static void row(const char *id, double value, double baseline, double ratio, const char *unit,
                const char *note) {
    printf("{\"id\": \"%s\", \"value\": %.3f, \"baseline\": %.3f, \"ratio\": %.4f, \"unit\": \"%s\", "
           "\"note\": \"%s\"}\n",
           id, value, baseline, ratio, unit, note);
    fflush(stdout);
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* The q-quantile (0..1) of v[0..n), sorting v. */
static double quantile(double *v, size_t n, double q) {
    if (n == 0) return NAN;
    qsort(v, n, sizeof *v, cmp_d);
    size_t i = (size_t)(q * (double)(n - 1) + 0.5);
    return v[i < n ? i : n - 1];
}

/* ---------------------------------------------------------------------------------------- */
/* single-operation timing */

enum { SAMPLES = 15 };
#define SAMPLE_NS 20000000.0

typedef struct {
    const char *name;
    void (*run)(void *ctx, uint64_t n); /* the operation, n times */
    void *ctx;
    uint64_t iters;                     /* per sample, from calibration */
    double s[SAMPLES];                  /* ns per operation, per sample */
    double med, iqr;                    /* median; (p75 - p25) / median */
} op_t;

static void calibrate(op_t *o) {
    uint64_t n = 16;
    for (;;) {
        uint64_t t = now_ns();
        o->run(o->ctx, n);
        double e = (double)(now_ns() - t);
        if (e > 2e6 || n > (1u << 28)) {
            o->iters = (uint64_t)((double)n * SAMPLE_NS / (e > 1 ? e : 1)) + 1;
            return;
        }
        n *= 4;
    }
}

/* Samples the k operations in alternation; fills each one's median and spread. */
static void measure(op_t *ops, int k) {
    for (int i = 0; i < k; i++) {
        ops[i].run(ops[i].ctx, 1000); /* warm */
        calibrate(&ops[i]);
    }
    for (int r = 0; r < SAMPLES; r++)
        for (int j = 0; j < k; j++) {
            op_t *o = &ops[(j + r) % k];
            uint64_t t = now_ns();
            o->run(o->ctx, o->iters);
            o->s[r] = (double)(now_ns() - t) / (double)o->iters;
        }
    for (int i = 0; i < k; i++) {
        double v[SAMPLES];
        memcpy(v, ops[i].s, sizeof v);
        ops[i].med = quantile(v, SAMPLES, 0.5);
        ops[i].iqr = (quantile(v, SAMPLES, 0.75) - quantile(v, SAMPLES, 0.25)) / ops[i].med;
        fprintf(stderr, "    %-34s %9.1f ns/op  (spread p25..p75 %4.1f%%, min %.1f, max %.1f)\n", ops[i].name,
                ops[i].med, 100 * ops[i].iqr, v[0], v[SAMPLES - 1]);
    }
}

static void ratio_row(const char *id, const op_t *a, const op_t *b, const char *what) {
    char note[1024];
    snprintf(note, sizeof note, "%s; median of %d alternating samples of ~20 ms, spread %.0f%% / %.0f%%", what,
             SAMPLES, 100 * a->iqr, 100 * b->iqr);
    row(id, a->med, b->med, a->med / b->med, "ns", note);
}

static void op_reader(void *c, uint64_t n) {
    tshm *h = c;
    uint32_t slot;
    tshm_snapshot s;
    for (uint64_t i = 0; i < n; i++) {
        int rc = tshm_reader_begin(h, &slot, &s);
        if (rc != TSHM_OK) die("tshm_reader_begin", rc);
        sink += s.max_frame;
        rc = tshm_reader_end(h, slot);
        if (rc != TSHM_OK) die("tshm_reader_end", rc);
    }
}

static void op_writer(void *c, uint64_t n) {
    tshm *h = c;
    for (uint64_t i = 0; i < n; i++) {
        int rc = tshm_writer_acquire(h, 0);
        if (rc != TSHM_OK) die("tshm_writer_acquire", rc);
        rc = tshm_writer_release(h);
        if (rc != TSHM_OK) die("tshm_writer_release", rc);
    }
}

static void op_ckpt(void *c, uint64_t n) {
    tshm *h = c;
    for (uint64_t i = 0; i < n; i++) {
        int rc = tshm_checkpointer_acquire(h, 0);
        if (rc != TSHM_OK) die("tshm_checkpointer_acquire", rc);
        rc = tshm_checkpointer_release(h);
        if (rc != TSHM_OK) die("tshm_checkpointer_release", rc);
    }
}

static void op_mutex(void *c, uint64_t n) {
    pthread_mutex_t *m = c;
    for (uint64_t i = 0; i < n; i++) {
        if (pthread_mutex_lock(m) != 0) die_sys("pthread_mutex_lock");
        pthread_mutex_unlock(m);
    }
}

static void op_lmdb_read(void *c, uint64_t n) {
    MDB_env *env = c;
    for (uint64_t i = 0; i < n; i++) {
        MDB_txn *t;
        int rc = mdb_txn_begin(env, NULL, MDB_RDONLY, &t);
        if (rc != MDB_SUCCESS) die_mdb("mdb_txn_begin", rc);
        sink += mdb_txn_id(t);
        mdb_txn_abort(t);
    }
}

/* The transaction is kept reset between calls (so the thread's one reader slot is free for
 * op_lmdb_read in between). */
static void op_lmdb_renew(void *c, uint64_t n) {
    MDB_txn *t = c;
    for (uint64_t i = 0; i < n; i++) {
        int rc = mdb_txn_renew(t);
        if (rc != MDB_SUCCESS) die_mdb("mdb_txn_renew", rc);
        sink += mdb_txn_id(t);
        mdb_txn_reset(t);
    }
}

static void op_lmdb_write(void *c, uint64_t n) {
    MDB_env *env = c;
    for (uint64_t i = 0; i < n; i++) {
        MDB_txn *t;
        int rc = mdb_txn_begin(env, NULL, 0, &t);
        if (rc != MDB_SUCCESS) die_mdb("mdb_txn_begin", rc);
        mdb_txn_abort(t);
    }
}

static void bench_readers(void) {
    if (!wanted("reader.")) return;
    fprintf(stderr, "== read transactions, one process\n");
    tshm *cas = open_handle(dir, "reader-cas.db", TSHM_READERS_CAS, TSHM_ROLES_SHM, 1);
    tshm *byte = open_handle(dir, "reader-byte.db", TSHM_READERS_BYTELOCK, TSHM_ROLES_SHM, 1);
    MDB_dbi dbi;
    MDB_env *env = open_lmdb(dir, "lmdb-read", MDB_NOSYNC, &dbi);
    MDB_txn *renew;
    TRY_MDB(mdb_txn_begin(env, NULL, MDB_RDONLY, &renew));
    mdb_txn_reset(renew);
    op_t ops[] = {
        {.name = "tshm reader begin+end (CAS)", .run = op_reader, .ctx = cas},
        {.name = "mdb_txn_begin(RDONLY)+abort", .run = op_lmdb_read, .ctx = env},
        {.name = "tshm reader begin+end (byte-lock)", .run = op_reader, .ctx = byte},
        {.name = "mdb_txn_renew+reset", .run = op_lmdb_renew, .ctx = renew},
    };
    measure(ops, 4);
    ratio_row("reader.txn_vs_lmdb", &ops[0], &ops[1],
              "tshm_reader_begin+end (CAS slots) / LMDB mdb_txn_begin(RDONLY)+mdb_txn_abort (target <= 1.0)");
    ratio_row("reader.txn_vs_lmdb_renew", &ops[0], &ops[3],
              "tshm_reader_begin+end (CAS slots) / LMDB mdb_txn_renew+mdb_txn_reset of a kept txn (informational)");
    ratio_row("reader.bytelock_vs_lmdb", &ops[2], &ops[1],
              "tshm_reader_begin+end (byte-lock slots) / LMDB mdb_txn_begin(RDONLY)+abort (informational)");
    mdb_txn_abort(renew);
    mdb_env_close(env);
    TRY(tshm_close(cas, NULL));
    TRY(tshm_close(byte, NULL));
}

static void bench_pairs(void) {
    if (!wanted("writer.pair") && !wanted("ckpt.")) return;
    fprintf(stderr, "== uncontended role pairs, one process\n");
    tshm *shm = open_handle(dir, "roles-shm.db", TSHM_READERS_CAS, TSHM_ROLES_SHM, 1);
    pthread_mutex_t *m = shared_mutex();
    MDB_dbi dbi;
    MDB_env *env = open_lmdb(dir, "lmdb-write", MDB_NOSYNC, &dbi);
    op_t ops[6] = {
        {.name = "tshm writer acquire+release (shm)", .run = op_writer, .ctx = shm},
        {.name = "robust pshared mutex lock+unlock", .run = op_mutex, .ctx = m},
        {.name = "tshm ckpt acquire+release (shm)", .run = op_ckpt, .ctx = shm},
        {.name = "mdb_txn_begin(write)+abort", .run = op_lmdb_write, .ctx = env},
    };
    int k = 4;
    tshm *byte = NULL;
    if (HAVE_ROLE_STRATEGY) {
        byte = open_handle(dir, "roles-byte.db", TSHM_READERS_CAS, TSHM_ROLES_BYTELOCK, 1);
        ops[k++] = (op_t){.name = "tshm writer acquire+release (byte)", .run = op_writer, .ctx = byte};
        ops[k++] = (op_t){.name = "tshm ckpt acquire+release (byte)", .run = op_ckpt, .ctx = byte};
    }
    measure(ops, k);
    ratio_row("writer.pair_vs_mutex", &ops[0], &ops[1],
              "tshm_writer_acquire(h, 0)+release, default role strategy (shm) / robust process-shared "
              "pthread mutex lock+unlock (target <= 2.0)");
    ratio_row("ckpt.pair_vs_mutex", &ops[2], &ops[1],
              "tshm_checkpointer_acquire(h, 0)+release, default role strategy (shm) / robust process-shared "
              "pthread mutex lock+unlock (target <= 2.0)");
    ratio_row("writer.pair_vs_lmdb", &ops[0], &ops[3],
              "tshm_writer_acquire(h, 0)+release (shm) / LMDB write mdb_txn_begin+mdb_txn_abort (informational)");
    if (byte != NULL) {
        ratio_row("writer.pair_bytelock_vs_mutex", &ops[4], &ops[1],
                  "tshm_writer_acquire(h, 0)+release, TSHM_ROLES_BYTELOCK / robust process-shared pthread "
                  "mutex lock+unlock (informational: two fcntl calls a pair)");
        ratio_row("ckpt.pair_bytelock_vs_mutex", &ops[5], &ops[1],
                  "tshm_checkpointer_acquire(h, 0)+release, TSHM_ROLES_BYTELOCK / robust process-shared "
                  "pthread mutex lock+unlock (informational)");
        TRY(tshm_close(byte, NULL));
    } else {
        fprintf(stderr, "  (this library has no role strategies: no byte-lock role rows)\n");
    }
    mdb_env_close(env);
    TRY(tshm_close(shm, NULL));
}

/* ---------------------------------------------------------------------------------------- */
/* processes */

static void *shared_pages(size_t bytes) {
    void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (p == MAP_FAILED) die_sys("mmap");
    return p;
}

static void reap(pid_t pid) {
    int st;
    if (waitpid(pid, &st, 0) != pid) die_sys("waitpid");
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        fprintf(stderr, "bench: child %d failed (status %#x)\n", (int)pid, st);
        exit(1);
    }
}

/* A pipe every child blocks on until the parent closes its write end: all start at once. */
typedef struct {
    int fd[2];
} gate_t;
static void gate_make(gate_t *g) {
    if (pipe(g->fd) != 0) die_sys("pipe");
}
static void gate_wait(gate_t *g) {
    close(g->fd[1]);
    char c;
    if (read(g->fd[0], &c, 1) < 0) die_sys("read");
    close(g->fd[0]);
}
static void gate_open(gate_t *g) {
    close(g->fd[0]);
    close(g->fd[1]);
}

/* /proc/<pid>/stat of another process, opened once: is it asleep in the kernel? */
static int open_stat(pid_t pid) {
    char p[64];
    snprintf(p, sizeof p, "/proc/%d/stat", (int)pid);
    int fd = open(p, O_RDONLY | O_CLOEXEC);
    if (fd < 0) die_sys("open /proc/pid/stat");
    return fd;
}
static int sleeping(int statfd) {
    char b[512];
    ssize_t n = pread(statfd, b, sizeof b - 1, 0);
    if (n <= 0) return 0;
    b[n] = 0;
    char *p = strrchr(b, ')');
    return p != NULL && p[1] == ' ' && p[2] == 'S';
}

static void spin_ns(uint64_t ns) {
    uint64_t end = now_ns() + ns;
    while (now_ns() < end) {}
}

/* Waits (yielding) until the other process, having announced its wait, sleeps in the kernel,
 * then a little more; returns 0 if it was not seen asleep within 50 ms. */
static int wait_blocked(int statfd) {
    uint64_t end = now_ns() + 50000000;
    while (!sleeping(statfd)) {
        if (now_ns() > end) return 0;
        sched_yield();
    }
    spin_ns(20000);
    return 1;
}

static long futex(_Atomic uint32_t *w, int op, uint32_t v) {
    return syscall(SYS_futex, (uint32_t *)w, op, v, NULL, NULL, 0);
}

/* ---------------------------------------------------------------------------------------- */
/* writer handoff between two processes */

enum { HO_ROUNDS = 200, HO_BATCHES = 30, HO_KINDS = 3 };

typedef struct {
    _Atomic uint64_t t_release;
    _Atomic uint32_t announced[2]; /* round + 1 the process is about to wait in */
    _Atomic uint32_t got[2];       /* round + 1 the process became the holder in */
    _Atomic uint32_t word;         /* the futex baseline: round + 1 released */
    _Atomic uint32_t unblocked;    /* releases made without seeing the waiter asleep */
    double lat[HO_ROUNDS];
} handoff_t;

/* A futex sleep the way libtshm's role waiters sleep: with a time-out (their liveness slice,
 * 1.5 ms rounded up to a whole millisecond of CLOCK_MONOTONIC), absolute, FUTEX_WAIT_BITSET. */
static void futex_wait_slice(_Atomic uint32_t *w, uint32_t v) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    uint64_t end = (uint64_t)t.tv_sec * 1000000000ull + (uint64_t)t.tv_nsec + 1500000ull;
    end = (end + 999999ull) / 1000000ull * 1000000ull;
    struct timespec ts = {(time_t)(end / 1000000000ull), (long)(end % 1000000000ull)};
    syscall(SYS_futex, (uint32_t *)w, FUTEX_WAIT_BITSET, v, &ts, NULL, FUTEX_BITSET_MATCH_ANY);
}

/* Process `me` (0: the parent, holding at the start; 1: the child) of a batch of handoffs of
 * the writer role (`kind` 0) or of a bare futex word (`kind` 1: in an anonymous shared page,
 * no time-out; 2: `fword`, in a shared mapping of a file, as libtshm's waiters' words are,
 * sleeping in time-out slices as they do). Round i: process i % 2 holds and releases, the
 * other waits. */
static void handoff_side(handoff_t *sh, int me, int kind, tshm *h, int statfd, _Atomic uint32_t *fword) {
    _Atomic uint32_t *word = kind == 2 ? fword : &sh->word;
    for (uint32_t i = 0; i < HO_ROUNDS; i++) {
        int holder = (int)(i % 2);
        if (me != holder) {
            /* the previous round's waiter (the other) must hold before this one queues */
            while (i > 0 && atomic_load(&sh->got[1 - me]) < i) sched_yield();
            atomic_store(&sh->announced[me], i + 1);
            if (kind == 0) {
                int rc = tshm_writer_acquire(h, 60000);
                if (rc != TSHM_OK) die("tshm_writer_acquire", rc);
            } else {
                uint32_t v;
                while ((v = atomic_load(word)) != i + 1) {
                    if (kind == 2)
                        futex_wait_slice(word, v);
                    else
                        futex(word, FUTEX_WAIT, v);
                }
            }
            uint64_t t1 = now_ns();
            sh->lat[i] = (double)(t1 - atomic_load(&sh->t_release));
            atomic_store(&sh->got[me], i + 1);
        } else {
            while (atomic_load(&sh->announced[1 - me]) < i + 1) sched_yield();
            if (!wait_blocked(statfd)) atomic_fetch_add(&sh->unblocked, 1);
            atomic_store(&sh->t_release, now_ns());
            if (kind == 0) {
                int rc = tshm_writer_release(h);
                if (rc != TSHM_OK) die("tshm_writer_release", rc);
            } else {
                atomic_store(word, i + 1);
                futex(word, FUTEX_WAKE, 1);
            }
        }
    }
}

static void bench_handoff(void) {
    if (!wanted("writer.handoff")) return;
    fprintf(stderr, "== writer handoff between two processes (%d x %d handoffs each)\n", HO_BATCHES / 2, HO_ROUNDS);
    char db[4096];
    snprintf(db, sizeof db, "%s/handoff.db", dir);
    fresh_sidecar(db);
    tshm *h = open_handle(dir, "handoff.db", TSHM_READERS_CAS, TSHM_ROLES_SHM, 0);
    handoff_t *sh = shared_pages(sizeof *sh);
    char fpath[4200];
    snprintf(fpath, sizeof fpath, "%s/futex-word", dir);
    int wfd = open(fpath, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (wfd < 0 || ftruncate(wfd, 4096) != 0) die_sys("futex word file");
    _Atomic uint32_t *fword = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED, wfd, 0);
    if (fword == MAP_FAILED) die_sys("mmap futex word file");
    close(wfd);
    size_t cap = (size_t)HO_BATCHES / HO_KINDS * HO_ROUNDS;
    double *lat[HO_KINDS];
    for (int k = 0; k < HO_KINDS; k++) lat[k] = malloc(cap * sizeof(double));
    size_t n[HO_KINDS] = {0, 0, 0};
    uint32_t unblocked[HO_KINDS] = {0, 0, 0};
    for (int b = 0; b < HO_BATCHES; b++) {
        int kind = b % HO_KINDS;
        memset(sh, 0, sizeof *sh);
        atomic_store(fword, 0);
        if (kind == 0) TRY(tshm_writer_acquire(h, 0));
        pid_t parent = getpid();
        pid_t c = fork();
        if (c < 0) die_sys("fork");
        if (c == 0) {
            tshm *ch = kind == 0 ? open_handle(dir, "handoff.db", TSHM_READERS_CAS, TSHM_ROLES_SHM, 0) : NULL;
            handoff_side(sh, 1, kind, ch, open_stat(parent), fword);
            if (ch != NULL) TRY(tshm_close(ch, NULL));
            _exit(0);
        }
        int fd = open_stat(c);
        handoff_side(sh, 0, kind, h, fd, fword);
        close(fd);
        reap(c);
        if (kind == 0) TRY(tshm_writer_release(h));
        /* the holder's latencies are the other side's rounds: every round counts */
        for (int i = 0; i < HO_ROUNDS; i++) lat[kind][n[kind]++] = sh->lat[i];
        unblocked[kind] += atomic_load(&sh->unblocked);
    }
    TRY(tshm_close(h, NULL));
    munmap((void *)fword, 4096);
    double med[HO_KINDS], p99[HO_KINDS];
    for (int k = 0; k < HO_KINDS; k++) {
        med[k] = quantile(lat[k], n[k], 0.5);
        p99[k] = quantile(lat[k], n[k], 0.99);
    }
    fprintf(stderr, "    tshm  handoff: median %.0f ns, p99 %.0f ns (%u releases without the waiter seen asleep)\n",
            med[0], p99[0], unblocked[0]);
    fprintf(stderr, "    futex wake:    median %.0f ns, p99 %.0f ns (%u)\n", med[1], p99[1], unblocked[1]);
    fprintf(stderr, "    futex wake, file-mapped word, sleep in slices: median %.0f ns, p99 %.0f ns (%u)\n", med[2],
            p99[2], unblocked[2]);
    char note[1024];
    snprintf(note, sizeof note,
             "two processes pass the writer role back and forth: release call to the waiter returning from "
             "tshm_writer_acquire(h, 60000) holding it, waiter asleep in the kernel first / bare FUTEX_WAKE to "
             "FUTEX_WAIT return, same processes and method; medians of %zu each; p99 %.0f / %.0f ns (target <= 1.2)",
             n[0], p99[0], p99[1]);
    row("writer.handoff_vs_futex", med[0], med[1], med[0] / med[1], "ns", note);
    snprintf(note, sizeof note,
             "the bare futex handoff as libtshm's waiters sleep: the word in a MAP_SHARED file mapping (the sidecar), "
             "the waiter in slices of 1.5 ms ending on a whole millisecond (its bound on noticing a dead holder) / "
             "the untimed futex on an anonymous page (informational: the price of a bounded wait); p99 %.0f / %.0f ns",
             p99[2], p99[1]);
    row("writer.handoff_sliced_futex_vs_futex", med[2], med[1], med[2] / med[1], "ns", note);
    snprintf(note, sizeof note,
             "the writer handoff / that sliced, file-backed futex handoff (informational: libtshm's own share); "
             "p99 %.0f / %.0f ns",
             p99[0], p99[2]);
    row("writer.handoff_vs_sliced_futex", med[0], med[2], med[0] / med[2], "ns", note);
    for (int k = 0; k < HO_KINDS; k++) free(lat[k]);
}

/* ---------------------------------------------------------------------------------------- */
/* four processes contending for the writer role */

enum { CT_PROCS = 4, CT_ROUNDS = 2, CT_CAP = 200000 };
#define CT_ROUND_NS 1250000000ull
#define CT_HOLD_NS 20000ull
#define CT_THINK_NS 200000ull

typedef struct {
    _Atomic int stop;
    uint32_t count[CT_PROCS];
    uint32_t waits_ms100[CT_PROCS]; /* waits of 100 ms or more, a sleep schedule's signature */
    double wait[CT_PROCS][CT_CAP];  /* ns, want to holding */
} contend_t;

static const int sleep_ms[] = {1, 2, 5, 10, 15, 20, 25, 25, 25, 50, 50, 100};

static void sleep_ns(uint64_t ns) {
    struct timespec t = {(time_t)(ns / 1000000000u), (long)(ns % 1000000000u)};
    while (clock_nanosleep(CLOCK_MONOTONIC, 0, &t, &t) == EINTR) {}
}

/* How a contender waits: in tshm_writer_acquire, by SQLite's sleep-and-retry, or blocked on a
 * robust process-shared mutex (the best-known primitive; it does not queue: a releaser's next
 * lock may win over a woken waiter). */
enum { CT_TSHM, CT_SLEEPY, CT_MUTEX, CT_MODES };
static const char *const ct_name[CT_MODES] = {"tshm wait  ", "sleep-retry", "mutex      "};

static void contend_child(contend_t *sh, int me, int mode, gate_t *g, pthread_mutex_t *mx) {
    prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0); /* think times of a few us, not 50 us more */
    tshm *h = open_handle(dir, "contend.db", TSHM_READERS_CAS, TSHM_ROLES_SHM, 0);
    uint64_t s = 0x9e3779b97f4a7c15ull * (uint64_t)(me + 1) + (uint64_t)getpid();
    gate_wait(g);
    uint32_t n = 0;
    while (!atomic_load_explicit(&sh->stop, memory_order_relaxed) && n < CT_CAP) {
        s ^= s << 13, s ^= s >> 7, s ^= s << 17;
        sleep_ns(s % CT_THINK_NS);
        uint64_t want = now_ns();
        if (mode == CT_TSHM) {
            int rc = tshm_writer_acquire(h, 60000);
            if (rc != TSHM_OK) die("tshm_writer_acquire", rc);
        } else if (mode == CT_SLEEPY) {
            int rc;
            for (unsigned a = 0; (rc = tshm_writer_acquire(h, 0)) == TSHM_BUSY; a++)
                sleep_ns((uint64_t)sleep_ms[a < 12 ? a : 11] * 1000000u);
            if (rc != TSHM_OK) die("tshm_writer_acquire", rc);
        } else if (pthread_mutex_lock(mx) != 0) {
            die_sys("pthread_mutex_lock");
        }
        uint64_t got = now_ns();
        spin_ns(CT_HOLD_NS);
        if (mode == CT_MUTEX)
            pthread_mutex_unlock(mx);
        else
            TRY(tshm_writer_release(h));
        if (atomic_load(&sh->stop)) break; /* straddles the end: not counted */
        sh->wait[me][n++] = (double)(got - want);
    }
    sh->count[me] = n;
    TRY(tshm_close(h, NULL));
}

typedef struct {
    uint64_t acq;
    double secs;
    double *all;
    size_t nall;
    double *per[CT_PROCS];
    size_t nper[CT_PROCS];
} contend_res_t;

static void contend_round(contend_t *sh, int mode, contend_res_t *res, pthread_mutex_t *mx) {
    memset(sh, 0, sizeof *sh);
    gate_t g;
    gate_make(&g);
    pid_t kids[CT_PROCS];
    for (int i = 0; i < CT_PROCS; i++) {
        if ((kids[i] = fork()) < 0) die_sys("fork");
        if (kids[i] == 0) {
            contend_child(sh, i, mode, &g, mx);
            _exit(0);
        }
    }
    /* the children have opened their handles once they block on the gate: a fixed delay is
     * not needed for correctness, the round's clock starts at the gate */
    uint64_t t0 = now_ns();
    gate_open(&g);
    sleep_ns(CT_ROUND_NS);
    atomic_store(&sh->stop, 1);
    uint64_t t1 = now_ns();
    for (int i = 0; i < CT_PROCS; i++) reap(kids[i]);
    res->secs += (double)(t1 - t0) / 1e9;
    for (int i = 0; i < CT_PROCS; i++) {
        uint32_t c = sh->count[i];
        res->acq += c;
        res->all = realloc(res->all, (res->nall + c) * sizeof(double));
        res->per[i] = realloc(res->per[i], (res->nper[i] + c) * sizeof(double));
        memcpy(res->all + res->nall, sh->wait[i], c * sizeof(double));
        memcpy(res->per[i] + res->nper[i], sh->wait[i], c * sizeof(double));
        res->nall += c;
        res->nper[i] += c;
    }
}

static void bench_contention(void) {
    if (!wanted("writer.wait_p99_vs_sleep") && !wanted("writer.throughput_vs_sleep") && !wanted("writer.fairness"))
        return;
    fprintf(stderr, "== 4 processes contending for the writer role (%d rounds of %.2f s each way)\n", CT_ROUNDS,
            CT_ROUND_NS / 1e9);
    char db[4096];
    snprintf(db, sizeof db, "%s/contend.db", dir);
    fresh_sidecar(db);
    tshm *keep = open_handle(dir, "contend.db", TSHM_READERS_CAS, TSHM_ROLES_SHM, 0); /* one sidecar for all */
    contend_t *sh = shared_pages(sizeof *sh);
    pthread_mutex_t *mx = shared_mutex();
    contend_res_t r[CT_MODES];
    memset(r, 0, sizeof r);
    for (int round = 0; round < CT_ROUNDS; round++)
        for (int k = 0; k < CT_MODES; k++) contend_round(sh, k, &r[k], mx);
    TRY(tshm_close(keep, NULL));
    munmap(sh, sizeof *sh);
    munmap(mx, 4096);
    double p99[CT_MODES], med[CT_MODES], tput[CT_MODES];
    for (int k = 0; k < CT_MODES; k++) {
        med[k] = quantile(r[k].all, r[k].nall, 0.5);
        p99[k] = quantile(r[k].all, r[k].nall, 0.99);
        tput[k] = (double)r[k].acq / r[k].secs;
    }
    char counts[CT_MODES][256];
    double fair[CT_MODES] = {0, 0, 0}, fair99 = 0;
    for (int k = 0; k < CT_MODES; k++) {
        int off = 0;
        for (int i = 0; i < CT_PROCS; i++) {
            double m = quantile(r[k].per[i], r[k].nper[i], 0.5), w = r[k].per[i][r[k].nper[i] - 1];
            double q = quantile(r[k].per[i], r[k].nper[i], 0.99);
            if (w / m > fair[k]) fair[k] = w / m;
            if (k == 0 && q / m > fair99) fair99 = q / m;
            off += snprintf(counts[k] + off, sizeof counts[k] - (size_t)off, "%s%zu", i ? "/" : "", r[k].nper[i]);
            fprintf(stderr, "    %s process %d: %6zu acquisitions, wait median %8.0f ns, p99 %9.0f ns, worst %10.0f ns\n",
                    ct_name[k], i, r[k].nper[i], m, q, w);
        }
    }
    for (int k = 0; k < CT_MODES; k++)
        fprintf(stderr, "    %s: %.0f acquisitions/s, wait median %.0f ns, p99 %.0f ns\n", ct_name[k], tput[k], med[k],
                p99[k]);
    const char *how = "4 processes: think uniform 0-200 us (clock_nanosleep, timer slack 1 ns), want the writer role, "
                      "hold 20 us (busy-wait), release; ours waits in tshm_writer_acquire(h, 60000), the baseline "
                      "retries tshm_writer_acquire(h, 0) with SQLite's busy-handler sleeps 1,2,5,10,15,20,25,25,25,"
                      "50,50,100 ms";
    char note[2048];
    snprintf(note, sizeof note,
             "wait p99 sleep-retry / tshm (ratio = baseline / value, higher is better; target >= 10); medians %.0f / "
             "%.0f ns; %s",
             med[0], med[1], how);
    row("writer.wait_p99_vs_sleep", p99[0], p99[1], p99[1] / p99[0], "ns", note);
    snprintf(note, sizeof note,
             "acquisitions/s tshm / sleep-retry (target >= 2); per-process counts tshm %s, sleep-retry %s; %.1f s each",
             counts[0], counts[1], r[0].secs);
    row("writer.throughput_vs_sleep", tput[0], tput[1], tput[0] / tput[1], "acq/s", note);
    snprintf(note, sizeof note,
             "tshm waiting: max over the 4 processes of worst wait / median wait (target: value <= 10; the median is mostly "
             "an acquire that found the role free); baseline = the same for sleep-retry, ratio = value / baseline; "
             "max p99 / median for tshm %.1f; per-process counts %s",
             fair99, counts[0]);
    row("writer.fairness", fair[0], fair[1], fair[0] / fair[1], "x", note);
    snprintf(note, sizeof note,
             "acquisitions/s tshm / robust process-shared mutex, same workload (informational: what the best-known "
             "blocking primitive gets here); per-process counts mutex %s; wait median %.0f ns, p99 %.0f ns",
             counts[2], med[2], p99[2]);
    row("writer.throughput_vs_mutex", tput[0], tput[2], tput[0] / tput[2], "acq/s", note);
    snprintf(note, sizeof note,
             "worst / median wait, max over the 4 processes: tshm / the robust mutex in the same workload "
             "(informational: the floor of the fairness figure on this machine)");
    row("writer.fairness_vs_mutex", fair[0], fair[2], fair[0] / fair[2], "x", note);
    for (int k = 0; k < CT_MODES; k++) {
        free(r[k].all);
        for (int i = 0; i < CT_PROCS; i++) free(r[k].per[i]);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* a killed holder */

enum { DEAD_TRIALS = 20 };

typedef struct {
    _Atomic uint32_t waiting;
    _Atomic uint64_t t_got;
} dead_t;

static void bench_dead_holder(void) {
    if (!wanted("writer.dead_holder_detect_ms")) return;
    fprintf(stderr, "== a writer SIGKILLed while another process waits (%d trials)\n", DEAD_TRIALS);
    char db[4096];
    snprintf(db, sizeof db, "%s/dead.db", dir);
    fresh_sidecar(db);
    tshm *keep = open_handle(dir, "dead.db", TSHM_READERS_CAS, TSHM_ROLES_SHM, 0);
    dead_t *sh = shared_pages(sizeof *sh);
    double ms[DEAD_TRIALS];
    int unseen = 0;
    for (int t = 0; t < DEAD_TRIALS; t++) {
        memset(sh, 0, sizeof *sh);
        int ready[2];
        if (pipe(ready) != 0) die_sys("pipe");
        pid_t holder = fork();
        if (holder < 0) die_sys("fork");
        if (holder == 0) {
            close(ready[0]);
            tshm *h = open_handle(dir, "dead.db", TSHM_READERS_CAS, TSHM_ROLES_SHM, 0);
            TRY(tshm_writer_acquire(h, 10000));
            if (write(ready[1], "x", 1) != 1) _exit(1);
            for (;;) pause();
        }
        close(ready[1]);
        char c;
        if (read(ready[0], &c, 1) != 1) die_sys("holder ready");
        close(ready[0]);
        pid_t waiter = fork();
        if (waiter < 0) die_sys("fork");
        if (waiter == 0) {
            tshm *h = open_handle(dir, "dead.db", TSHM_READERS_CAS, TSHM_ROLES_SHM, 0);
            atomic_store(&sh->waiting, 1);
            TRY(tshm_writer_acquire(h, 30000));
            atomic_store(&sh->t_got, now_ns());
            TRY(tshm_writer_release(h));
            TRY(tshm_close(h, NULL));
            _exit(0);
        }
        while (!atomic_load(&sh->waiting)) sched_yield();
        int fd = open_stat(waiter);
        if (!wait_blocked(fd)) unseen++;
        close(fd);
        uint64_t t0 = now_ns();
        kill(holder, SIGKILL);
        reap(waiter);
        waitpid(holder, NULL, 0);
        ms[t] = (double)(atomic_load(&sh->t_got) - t0) / 1e6;
    }
    TRY(tshm_close(keep, NULL));
    munmap(sh, sizeof *sh);
    double med = quantile(ms, DEAD_TRIALS, 0.5);
    fprintf(stderr, "    kill to holding: median %.2f ms, min %.2f, max %.2f\n", med, ms[0], ms[DEAD_TRIALS - 1]);
    char note[512];
    snprintf(note, sizeof note,
             "a process holding the writer role is SIGKILLed while another waits in tshm_writer_acquire(h, 30000): "
             "median ms from kill() to the waiter holding, %d trials; min %.2f, max %.2f (informational; "
             "baseline = max, ratio = median / max)%s",
             DEAD_TRIALS, ms[0], ms[DEAD_TRIALS - 1], unseen ? "; waiter not always seen asleep" : "");
    row("writer.dead_holder_detect_ms", med, ms[DEAD_TRIALS - 1], med / ms[DEAD_TRIALS - 1], "ms", note);
}

/* ---------------------------------------------------------------------------------------- */
/* readers and one writer, scaling the number of reader processes */

enum { SC_MAX = 16, SC_ROUNDS = 2 };
#define SC_ROUND_NS 500000000ull
#define LMDB_SCALE_FLAGS (MDB_NOSYNC | MDB_NOMETASYNC | MDB_WRITEMAP)

typedef struct {
    _Atomic int stop;
    uint64_t reads[SC_MAX];
    uint64_t cpu_ns[SC_MAX]; /* CPU time each reader spent from the gate on */
    uint64_t commits;
} scale_t;

static uint64_t cpu_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

static void scale_reader(scale_t *sh, int me, int lmdb, gate_t *g) {
    uint64_t n = 0, c0 = 0;
    if (!lmdb) {
        tshm *h = open_handle(dir, "scale.db", TSHM_READERS_CAS, TSHM_ROLES_SHM, 0);
        gate_wait(g);
        c0 = cpu_ns();
        while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
            op_reader(h, 1);
            n++;
        }
        TRY(tshm_close(h, NULL));
    } else {
        MDB_dbi dbi;
        MDB_env *env = open_lmdb(dir, "lmdb-scale", LMDB_SCALE_FLAGS, &dbi);
        gate_wait(g);
        c0 = cpu_ns();
        while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
            op_lmdb_read(env, 1);
            n++;
        }
        mdb_env_close(env);
    }
    sh->cpu_ns[me] = cpu_ns() - c0;
    sh->reads[me] = n;
}

static void scale_writer(scale_t *sh, int lmdb, gate_t *g) {
    uint64_t n = 0;
    if (!lmdb) {
        tshm *h = open_handle(dir, "scale.db", TSHM_READERS_CAS, TSHM_ROLES_SHM, 0);
        gate_wait(g);
        while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
            TRY(tshm_writer_acquire(h, 60000));
            tshm_snapshot s;
            TRY(tshm_snapshot_get(h, &s));
            s.max_frame++;
            TRY(tshm_publish(h, &s, TSHM_SNAP_MAX_FRAME));
            TRY(tshm_writer_release(h));
            n++;
        }
        TRY(tshm_close(h, NULL));
    } else {
        MDB_dbi dbi;
        MDB_env *env = open_lmdb(dir, "lmdb-scale", LMDB_SCALE_FLAGS, &dbi);
        gate_wait(g);
        while (!atomic_load_explicit(&sh->stop, memory_order_relaxed)) {
            MDB_txn *t;
            TRY_MDB(mdb_txn_begin(env, NULL, 0, &t));
            MDB_val k = {1, "k"}, d = {sizeof n, &n};
            TRY_MDB(mdb_put(t, dbi, &k, &d, 0));
            TRY_MDB(mdb_txn_commit(t));
            n++;
        }
        mdb_env_close(env);
    }
    sh->commits = n;
}

/* reads/s and commits/s of one round with `readers` reader processes and one writer. */
static void scale_round(scale_t *sh, int readers, int lmdb, double *reads, double *commits, double *secs,
                        double *cpu) {
    memset(sh, 0, sizeof *sh);
    gate_t g;
    gate_make(&g);
    pid_t kids[SC_MAX + 1];
    for (int i = 0; i <= readers; i++) {
        if ((kids[i] = fork()) < 0) die_sys("fork");
        if (kids[i] == 0) {
            if (i < readers)
                scale_reader(sh, i, lmdb, &g);
            else
                scale_writer(sh, lmdb, &g);
            _exit(0);
        }
    }
    uint64_t t0 = now_ns();
    gate_open(&g);
    sleep_ns(SC_ROUND_NS);
    atomic_store(&sh->stop, 1);
    uint64_t t1 = now_ns();
    for (int i = 0; i <= readers; i++) reap(kids[i]);
    for (int i = 0; i < readers; i++) *reads += (double)sh->reads[i], *cpu += (double)sh->cpu_ns[i];
    *commits += (double)sh->commits;
    *secs += (double)(t1 - t0) / 1e9;
}

static void bench_scale(void) {
    if (!wanted("scale.")) return;
    fprintf(stderr, "== N reader processes + 1 writer process (%d rounds of %.1f s each way; 2 cores: beyond 2 "
                    "processes they time-share)\n",
            SC_ROUNDS, SC_ROUND_NS / 1e9);
    char db[4096];
    snprintf(db, sizeof db, "%s/scale.db", dir);
    fresh_sidecar(db);
    tshm *keep = open_handle(dir, "scale.db", TSHM_READERS_CAS, TSHM_ROLES_SHM, 0);
    MDB_dbi dbi;
    mdb_env_close(open_lmdb(dir, "lmdb-scale", LMDB_SCALE_FLAGS, &dbi)); /* creates it */
    scale_t *sh = shared_pages(sizeof *sh);
    fprintf(stderr, "    %7s %14s %14s %12s %12s %10s %10s\n", "readers", "tshm reads/s", "lmdb reads/s",
            "tshm commit/s", "lmdb commit/s", "tshm cpu", "lmdb cpu");
    static const int ns[] = {1, 2, 4, 8, 16};
    for (int j = 0; j < 5; j++) {
        int n = ns[j];
        char id[32];
        snprintf(id, sizeof id, "scale.readers_%d", n);
        if (!wanted(id)) continue;
        double rd[2] = {0, 0}, cm[2] = {0, 0}, secs[2] = {0, 0}, cpu[2] = {0, 0};
        for (int r = 0; r < SC_ROUNDS; r++)
            for (int k = 0; k < 2; k++) scale_round(sh, n, k, &rd[k], &cm[k], &secs[k], &cpu[k]);
        for (int k = 0; k < 2; k++) cpu[k] /= rd[k], rd[k] /= secs[k], cm[k] /= secs[k];
        fprintf(stderr, "    %7d %14.0f %14.0f %12.0f %12.0f %10.0f %10.0f\n", n, rd[0], rd[1], cm[0], cm[1], cpu[0],
                cpu[1]);
        char note[512];
        snprintf(note, sizeof note,
                 "%d reader processes (begin+end loop) + 1 writer process committing in a loop: read txns/s "
                 "tshm / LMDB; commits/s tshm %.0f, LMDB %.0f (LMDB: MDB_NOSYNC|MDB_NOMETASYNC|MDB_WRITEMAP, "
                 "one 8-byte put per commit); reader CPU ns per read txn %.0f / %.0f; 2 cores%s",
                 n, cm[0], cm[1], cpu[0], cpu[1], n + 1 > 2 ? ", time-shared" : "");
        row(id, rd[0], rd[1], rd[0] / rd[1], "reads/s", note);
    }
    munmap(sh, sizeof *sh);
    TRY(tshm_close(keep, NULL));
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: bench_core DIR\n");
        return 2;
    }
    dir = argv[1];
    mkdir(dir, 0755);
    fprintf(stderr, "bench_core: libtshm %s%s\n", tshm_libversion(),
            HAVE_ROLE_STRATEGY ? "" : " (header without role strategies)");
    bench_readers();
    bench_pairs();
    bench_handoff();
    bench_contention();
    bench_dead_holder();
    bench_scale();
    return 0;
}
