/*
 * bench_sqlite.c — the shim against stock SQLite (unix VFS), measured in one run.
 *
 *   bench_sqlite EXT DIR [bank]   prints report rows as JSON lines (with "bank", only the bank
 *                          workload's):
 *   sqlite.shim_vs_stock      4 processes, each 2000 transactions, 80% point reads and 20% small
 *                             updates, WAL, synchronous=NORMAL; value = shim ms, baseline =
 *                             stock ms, ratio = stock / shim (higher is better for the shim)
 *   sqlite.read_txn_vs_stock  one process, autocommit point reads; value = shim ns per read
 *                             transaction, baseline = stock ns, ratio = stock / shim
 *   sqlite.shm_exclusive_vs_stock  one connection, xShmLock EXCLUSIVE then UNLOCK of one read-lock
 *                             slot (what a reader does to move a read mark); value = shim ns per
 *                             pair, baseline = stock ns (two fcntl calls), ratio = stock / shim
 *   sqlite.bank_vs_stock_N, sqlite.write_p99_vs_stock_N (N = 4, 8)  the bank workload: N
 *                             processes, each looping on 80% read transactions summing all 1,000
 *                             balances and 20% transfers (BEGIN IMMEDIATE, two updates, COMMIT),
 *                             busy timeout 30 s; the shim's connections wait for the write lock
 *                             (tshm_wait_ms=30000). bank: transactions/s, ratio shim / stock;
 *                             write_p99: p99 of a transfer from BEGIN to COMMIT done, ratio stock /
 *                             shim. Every read checks the total, the end checks every transfer and
 *                             the integrity of the file: a wrong answer fails the benchmark.
 *   sqlite.bank_ceiling_vs_stock_N, sqlite.write_p99_floor_vs_stock_N  the same runs: what no
 *                             coordination could beat (the cores kept busy at the CPU time of a
 *                             transaction; a transfer's own work after BEGIN IMMEDIATE), as
 *                             ratios to stock comparable with the two targets
 *
 * Each is the median of several alternating rounds (the machines are shared and noisy).
 */
#define _GNU_SOURCE
#include <fcntl.h>
#include <sqlite3.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

enum { PROCS = 4, TXNS = 2000, ROWS = 1000, ROUNDS = 9, READS = 20000 };

static double now_ms(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec * 1e3 + t.tv_nsec / 1e6;
}

static void die(sqlite3 *db, const char *what) {
    fprintf(stderr, "bench_sqlite: %s: %s\n", what, db ? sqlite3_errmsg(db) : "?");
    exit(1);
}

static sqlite3 *open_db(const char *path, const char *vfs) {
    sqlite3 *db;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) != SQLITE_OK) die(db, "open");
    sqlite3_busy_timeout(db, 30000);
    sqlite3_exec(db, "PRAGMA synchronous=NORMAL", 0, 0, 0);
    return db;
}

static void create(const char *path, const char *vfs) {
    const char *sfx[] = {"", "-wal", "-shm", "-tshm"};
    char p[1100];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
    sqlite3 *db = open_db(path, vfs);
    if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE kv(k INTEGER PRIMARY KEY, v INTEGER);"
                         "BEGIN; WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<1000)"
                         " INSERT INTO kv SELECT i, 0 FROM c; COMMIT;", 0, 0, 0) != SQLITE_OK)
        die(db, "create");
    sqlite3_close(db);
}

static void worker(const char *path, const char *vfs, int id) {
    sqlite3 *db = open_db(path, vfs);
    sqlite3_stmt *rd, *wr;
    if (sqlite3_prepare_v2(db, "SELECT v FROM kv WHERE k = ?", -1, &rd, 0) ||
        sqlite3_prepare_v2(db, "UPDATE kv SET v = v + 1 WHERE k = ?", -1, &wr, 0))
        die(db, "prepare");
    uint64_t s = (uint64_t)id * 2654435761u + 1;
    for (int i = 0; i < TXNS; i++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        sqlite3_stmt *st = (s >> 60) < 13 ? rd : wr; /* 13/16 reads */
        sqlite3_bind_int(st, 1, 1 + (int)((s >> 20) % ROWS));
        int rc;
        while ((rc = sqlite3_step(st)) == SQLITE_ROW) {}
        if (rc != SQLITE_DONE) die(db, "step");
        sqlite3_reset(st);
    }
    sqlite3_finalize(rd);
    sqlite3_finalize(wr);
    sqlite3_close(db);
}

/* Forks `procs` children, each blocked at a gate until the returned descriptor is closed, then
 * running fn(i, ctx) and exiting 0. */
static int fork_gated(int procs, pid_t *kids, void (*fn)(int i, void *ctx), void *ctx) {
    int gate[2];
    if (pipe(gate) != 0) exit(1);
    for (int i = 0; i < procs; i++)
        if ((kids[i] = fork()) == 0) {
            close(gate[1]);
            char c;
            if (read(gate[0], &c, 1) < 0) _exit(1);
            fn(i, ctx);
            _exit(0);
        }
    close(gate[0]);
    return gate[1];
}

static void reap_all(int procs, const pid_t *kids) {
    for (int i = 0; i < procs; i++) {
        int st;
        waitpid(kids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) exit(1);
    }
}

struct mix_ctx {
    const char *path, *vfs;
};

static void mix_child(int i, void *ctx) {
    const struct mix_ctx *m = ctx;
    worker(m->path, m->vfs, i);
}

/* Wall time of PROCS processes running the mix, started together. */
static double mixed(const char *path, const char *vfs) {
    create(path, vfs);
    pid_t kids[PROCS];
    struct mix_ctx m = {path, vfs};
    int gate = fork_gated(PROCS, kids, mix_child, &m);
    double t = now_ms();
    close(gate);
    reap_all(PROCS, kids);
    return now_ms() - t;
}

/* ns per autocommit point read in one process. */
static double reads(const char *path, const char *vfs) {
    create(path, vfs);
    sqlite3 *db = open_db(path, vfs);
    sqlite3_stmt *st;
    if (sqlite3_prepare_v2(db, "SELECT v FROM kv WHERE k = ?", -1, &st, 0)) die(db, "prepare");
    double t = now_ms();
    for (int i = 0; i < READS; i++) {
        sqlite3_bind_int(st, 1, 1 + i % ROWS);
        while (sqlite3_step(st) == SQLITE_ROW) {}
        sqlite3_reset(st);
    }
    double ns = (now_ms() - t) * 1e6 / READS;
    sqlite3_finalize(st);
    sqlite3_close(db);
    return ns;
}

/* ns per xShmLock EXCLUSIVE + UNLOCK pair on read-lock slot 4 (no other holder). */
static double exclusive_pairs(const char *path, const char *vfs) {
    create(path, vfs);
    sqlite3 *db = open_db(path, vfs);
    if (sqlite3_exec(db, "SELECT count(*) FROM kv", 0, 0, 0) != SQLITE_OK) die(db, "map");
    sqlite3_file *f = NULL;
    sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &f);
    if (f == NULL || f->pMethods->iVersion < 2) die(db, "file");
    double t = now_ms();
    for (int i = 0; i < READS; i++) {
        if (f->pMethods->xShmLock(f, 4, 1, SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE) != SQLITE_OK) die(db, "lock");
        f->pMethods->xShmLock(f, 4, 1, SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE);
    }
    double ns = (now_ms() - t) * 1e6 / READS;
    sqlite3_close(db);
    return ns;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* ------------------------------------------------------------------------------------------ */
/* the bank workload */

enum { ACCOUNTS = 1000, BANK_MAX_PROCS = 8, BANK_CAP = 200000, BANK_ROUNDS = 3 };
#define BANK_MS 1000.0

typedef struct {
    int stop;
    int wrong[BANK_MAX_PROCS];
    uint32_t txns[BANK_MAX_PROCS], writes[BANK_MAX_PROCS];
    double cpu_s[BANK_MAX_PROCS]; /* CPU seconds of the timed loop */
    float write_us[BANK_MAX_PROCS][BANK_CAP / BANK_MAX_PROCS];
    float lock_us[BANK_MAX_PROCS][BANK_CAP / BANK_MAX_PROCS]; /* BEGIN IMMEDIATE alone */
} bank_t;

static void bank_create(const char *path) {
    const char *sfx[] = {"", "-wal", "-shm", "-tshm"};
    char p[1100];
    for (int i = 0; i < 4; i++) {
        snprintf(p, sizeof p, "%s%s", path, sfx[i]);
        unlink(p);
    }
    sqlite3 *db = open_db(path, "unix");
    if (sqlite3_exec(db, "PRAGMA journal_mode=WAL; CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER);"
                         "CREATE TABLE meta(transfers INTEGER); INSERT INTO meta VALUES(0);"
                         "BEGIN; WITH RECURSIVE c(i) AS (SELECT 1 UNION ALL SELECT i+1 FROM c WHERE i<1000)"
                         " INSERT INTO acct SELECT i, 1000 FROM c; COMMIT;", 0, 0, 0) != SQLITE_OK)
        die(db, "bank create");
    sqlite3_close(db);
}

static int64_t one(sqlite3_stmt *st, sqlite3 *db) {
    int64_t v = -1;
    int rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) v = sqlite3_column_int64(st, 0), rc = sqlite3_step(st);
    if (rc != SQLITE_DONE) die(db, "bank step");
    sqlite3_reset(st);
    return v;
}

static void run_or_die(sqlite3 *db, sqlite3_stmt *st) {
    if (sqlite3_step(st) != SQLITE_DONE) die(db, "bank write");
    sqlite3_reset(st);
}

static double cpu_seconds(int who) {
    struct rusage u;
    getrusage(who, &u);
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec) / 1e6;
}

static void bank_worker(bank_t *sh, const char *uri, const char *vfs, int me) {
    sqlite3 *db;
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_URI, vfs) != SQLITE_OK) die(db, "bank open");
    sqlite3_busy_timeout(db, 30000);
    sqlite3_exec(db, "PRAGMA synchronous=NORMAL", 0, 0, 0);
    sqlite3_stmt *sum, *begin, *debit, *credit, *count, *commit;
    if (sqlite3_prepare_v2(db, "SELECT sum(bal) FROM acct", -1, &sum, 0) ||
        sqlite3_prepare_v2(db, "BEGIN IMMEDIATE", -1, &begin, 0) ||
        sqlite3_prepare_v2(db, "UPDATE acct SET bal = bal - 1 WHERE id = ?", -1, &debit, 0) ||
        sqlite3_prepare_v2(db, "UPDATE acct SET bal = bal + 1 WHERE id = ?", -1, &credit, 0) ||
        sqlite3_prepare_v2(db, "UPDATE meta SET transfers = transfers + 1", -1, &count, 0) ||
        sqlite3_prepare_v2(db, "COMMIT", -1, &commit, 0))
        die(db, "bank prepare");
    uint64_t s = (uint64_t)me * 0x9e3779b97f4a7c15ull + 12345;
    uint32_t n = 0, w = 0;
    double cpu0 = cpu_seconds(RUSAGE_SELF);
    while (!__atomic_load_n(&sh->stop, __ATOMIC_RELAXED)) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        if ((s >> 60) < 13) {
            if (one(sum, db) != ACCOUNTS * 1000) sh->wrong[me]++;
        } else {
            int a = 1 + (int)((s >> 20) % ACCOUNTS), b = 1 + (int)((s >> 36) % ACCOUNTS);
            double t0 = now_ms();
            run_or_die(db, begin);
            if (w < BANK_CAP / BANK_MAX_PROCS) sh->lock_us[me][w] = (float)((now_ms() - t0) * 1e3);
            sqlite3_bind_int(debit, 1, a);
            run_or_die(db, debit);
            sqlite3_bind_int(credit, 1, b);
            run_or_die(db, credit);
            run_or_die(db, count);
            run_or_die(db, commit);
            if (w < BANK_CAP / BANK_MAX_PROCS) sh->write_us[me][w++] = (float)((now_ms() - t0) * 1e3);
        }
        n++;
    }
    sh->cpu_s[me] = cpu_seconds(RUSAGE_SELF) - cpu0;
    sh->txns[me] = n;
    sh->writes[me] = w;
    sqlite3_close(db);
}

struct bank_ctx {
    bank_t *sh;
    const char *uri, *vfs;
};

static void bank_child(int i, void *ctx) {
    const struct bank_ctx *b = ctx;
    bank_worker(b->sh, b->uri, b->vfs, i);
}

static int cmpf(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x > y) - (x < y);
}

/* What one timed run measured besides its transactions/s: the p99 of a transfer in us, of its
 * BEGIN IMMEDIATE alone (the wait for the write lock), and of the rest of it (its own work once
 * it holds the lock: the updates, the commit and the automatic checkpoint it runs); and the CPU
 * seconds its processes' timed loops used per transaction. */
typedef struct {
    double p99, lock99, body99, cpu_per_txn;
} bank_stats;

static double bank_run(bank_t *sh, const char *path, int shim, int procs, bank_stats *out) {
    bank_create(path);
    char uri[1200];
    snprintf(uri, sizeof uri, shim ? "file:%s?tshm_wait_ms=30000" : "file:%s", path);
    memset(sh, 0, sizeof *sh);
    pid_t kids[BANK_MAX_PROCS];
    struct bank_ctx b = {sh, uri, shim ? "tshm" : "unix"};
    int gate = fork_gated(procs, kids, bank_child, &b);
    double t = now_ms();
    close(gate);
    struct timespec d = {(time_t)(BANK_MS / 1000), (long)((BANK_MS - 1000 * (int)(BANK_MS / 1000)) * 1e6)};
    nanosleep(&d, NULL);
    __atomic_store_n(&sh->stop, 1, __ATOMIC_RELAXED);
    reap_all(procs, kids);
    double secs = (now_ms() - t) / 1e3;
    double cpu = 0;
    uint64_t txns = 0, writes = 0;
    static float all[BANK_CAP], locks[BANK_CAP], bodies[BANK_CAP];
    size_t k = 0;
    for (int i = 0; i < procs; i++) {
        txns += sh->txns[i];
        writes += sh->writes[i];
        cpu += sh->cpu_s[i];
        if (sh->wrong[i]) {
            fprintf(stderr, "bench_sqlite: %s: %d reads saw a wrong total\n", shim ? "shim" : "stock", sh->wrong[i]);
            exit(1);
        }
        for (uint32_t j = 0; j < sh->writes[i]; j++, k++) {
            all[k] = sh->write_us[i][j];
            locks[k] = sh->lock_us[i][j];
            bodies[k] = all[k] - locks[k];
        }
    }
    qsort(all, k, sizeof(float), cmpf);
    qsort(locks, k, sizeof(float), cmpf);
    qsort(bodies, k, sizeof(float), cmpf);
    size_t at = k ? (size_t)(0.99 * (double)(k - 1)) : 0;
    out->p99 = k ? all[at] : 0;
    out->lock99 = k ? locks[at] : 0;
    out->body99 = k ? bodies[at] : 0;
    out->cpu_per_txn = txns ? cpu / (double)txns : 0;
    /* every acknowledged transfer is there, the money adds up, the file is sound */
    sqlite3 *db = open_db(path, shim ? "tshm" : "unix");
    sqlite3_stmt *st;
    int ok = sqlite3_prepare_v2(db, "SELECT (SELECT transfers FROM meta), (SELECT sum(bal) FROM acct)", -1, &st, 0) ==
                 SQLITE_OK &&
             sqlite3_step(st) == SQLITE_ROW && (uint64_t)sqlite3_column_int64(st, 0) >= writes &&
             sqlite3_column_int64(st, 1) == ACCOUNTS * 1000;
    sqlite3_finalize(st);
    ok = ok && sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, 0) == SQLITE_OK &&
         sqlite3_step(st) == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    sqlite3_finalize(st);
    sqlite3_close(db);
    if (!ok) {
        fprintf(stderr, "bench_sqlite: %s: lost transfer, wrong total or integrity error\n", shim ? "shim" : "stock");
        exit(1);
    }
    return (double)txns / secs;
}

static double median_of(double *v, int n) {
    qsort(v, (size_t)n, sizeof(double), cmp);
    return v[n / 2];
}

/* The bank workload at `procs` processes, stock and shim alternating. Two rows bound what any
 * coordination could reach: the ceiling, the cores kept busy all the time at the lower of the
 * two CPU times a transaction took with `procs` processes (SQLite's own work, the wal-index
 * lookups and the page cache it drops after each commit of another process); and the floor of
 * the write p99, from the shim's runs, a transfer's work once it holds the lock, which no wait
 * for the lock can shorten. */
static void bank(const char *dir, int procs) {
    bank_t *sh = mmap(NULL, sizeof(bank_t), PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (sh == MAP_FAILED) exit(1);
    char stock[1024], shim[1024];
    snprintf(stock, sizeof stock, "%s/bank-stock.db", dir);
    snprintf(shim, sizeof shim, "%s/bank-shim.db", dir);
    double tput[2][BANK_ROUNDS], p99[2][BANK_ROUNDS], l99[2][BANK_ROUNDS], b99[BANK_ROUNDS], cpu[2][BANK_ROUNDS];
    for (int r = 0; r < BANK_ROUNDS; r++) {
        bank_stats st;
        for (int k = 0; k < 2; k++) {
            tput[k][r] = bank_run(sh, k ? shim : stock, k, procs, &st);
            p99[k][r] = st.p99;
            l99[k][r] = st.lock99;
            cpu[k][r] = st.cpu_per_txn;
            if (k) b99[r] = st.body99;
        }
    }
    double ts = median_of(tput[0], BANK_ROUNDS), tt = median_of(tput[1], BANK_ROUNDS);
    double ps = median_of(p99[0], BANK_ROUNDS), pt = median_of(p99[1], BANK_ROUNDS);
    double ls = median_of(l99[0], BANK_ROUNDS), lt = median_of(l99[1], BANK_ROUNDS);
    double body = median_of(b99, BANK_ROUNDS);
    double cpu_stock = median_of(cpu[0], BANK_ROUNDS), cpu_shim = median_of(cpu[1], BANK_ROUNDS);
    double per_txn = cpu_stock < cpu_shim ? cpu_stock : cpu_shim;
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    double ceiling = per_txn > 0 ? (double)(cores < procs ? cores : procs) / per_txn : 0;
    printf("{\"id\": \"sqlite.bank_vs_stock_%d\", \"value\": %.0f, \"baseline\": %.0f, \"ratio\": %.3f, \"unit\": "
           "\"txn/s\", \"note\": \"SQLite %s, bank workload, %d processes, 80%% sums of 1000 balances / 20%% "
           "transfers, busy timeout 30 s, shim with tshm_wait_ms=30000: shim / stock transactions/s, medians of %d "
           "rounds of %.1f s (target >= 1.5)\"}\n",
           procs, tt, ts, tt / ts, sqlite3_libversion(), procs, BANK_ROUNDS, BANK_MS / 1e3);
    printf("{\"id\": \"sqlite.bank_ceiling_vs_stock_%d\", \"value\": %.0f, \"baseline\": %.0f, \"ratio\": %.3f, "
           "\"unit\": \"txn/s\", \"note\": \"the same runs: %ld cores never idle at the lower CPU time of a "
           "transaction of the two (stock %.1f us, shim %.1f us: SQLite's own work with %d processes); ratio to stock "
           "= the highest bank_vs_stock_%d any coordination could reach\"}\n",
           procs, ceiling, ts, ceiling / ts, cores, cpu_stock * 1e6, cpu_shim * 1e6, procs, procs);
    printf("{\"id\": \"sqlite.write_p99_vs_stock_%d\", \"value\": %.0f, \"baseline\": %.0f, \"ratio\": %.3f, \"unit\": "
           "\"us\", \"note\": \"the same runs: p99 of a transfer, BEGIN IMMEDIATE to COMMIT done; ratio = stock / shim "
           "(target >= 10)\"}\n",
           procs, pt, ps, ps / pt);
    printf("{\"id\": \"sqlite.write_p99_floor_vs_stock_%d\", \"value\": %.0f, \"baseline\": %.0f, \"ratio\": %.3f, "
           "\"unit\": \"us\", \"note\": \"the shim's runs: p99 of a transfer after its BEGIN IMMEDIATE (updates, commit, "
           "the automatic checkpoint, time preempted), which no wait for the lock can shorten; ratio = stock's "
           "transfer p99 / it = the highest write_p99_vs_stock_%d reachable\"}\n",
           procs, body, ps, body > 0 ? ps / body : 0, procs);
    printf("{\"id\": \"sqlite.write_lock_p99_vs_stock_%d\", \"value\": %.0f, \"baseline\": %.0f, \"ratio\": %.3f, "
           "\"unit\": \"us\", \"note\": \"the same runs: p99 of BEGIN IMMEDIATE alone (the wait for the write lock); "
           "ratio = stock / shim (informational)\"}\n",
           procs, lt, ls, ls / lt);
    munmap(sh, sizeof(bank_t));
}

int main(int argc, char **argv) {
    if (argc != 3 && !(argc == 4 && strcmp(argv[3], "bank") == 0)) {
        fprintf(stderr, "usage: bench_sqlite EXT DIR [bank]\n");
        return 2;
    }
    sqlite3 *m;
    char *err = NULL;
    sqlite3_open(":memory:", &m);
    sqlite3_enable_load_extension(m, 1);
    if (sqlite3_load_extension(m, argv[1], 0, &err) != SQLITE_OK) {
        fprintf(stderr, "load: %s\n", err);
        return 1;
    }
    if (argc == 4) { /* the bank workload alone */
        bank(argv[2], 4);
        bank(argv[2], 8);
        return 0;
    }
    char stock[1024], shim[1024];
    snprintf(stock, sizeof stock, "%s/stock.db", argv[2]);
    snprintf(shim, sizeof shim, "%s/shim.db", argv[2]);
    double ms[2][ROUNDS], rd[2][ROUNDS], ex[2][ROUNDS];
    for (int r = 0; r < ROUNDS; r++) { /* alternate, so drift hits both alike */
        ms[0][r] = mixed(stock, "unix");
        ms[1][r] = mixed(shim, "tshm");
        rd[0][r] = reads(stock, "unix");
        rd[1][r] = reads(shim, "tshm");
        ex[0][r] = exclusive_pairs(stock, "unix");
        ex[1][r] = exclusive_pairs(shim, "tshm");
    }
    for (int i = 0; i < 2; i++) {
        qsort(ms[i], ROUNDS, sizeof(double), cmp);
        qsort(rd[i], ROUNDS, sizeof(double), cmp);
        qsort(ex[i], ROUNDS, sizeof(double), cmp);
    }
    double s = ms[0][ROUNDS / 2], t = ms[1][ROUNDS / 2], sr = rd[0][ROUNDS / 2], tr = rd[1][ROUNDS / 2];
    printf("{\"id\": \"sqlite.shim_vs_stock\", \"value\": %.1f, \"baseline\": %.1f, \"ratio\": %.3f, \"unit\": \"ms\", "
           "\"note\": \"%d processes x %d transactions, 80%% reads / 20%% updates: stock time / shim time (target >= 0.95)\"}\n",
           t, s, s / t, PROCS, TXNS);
    printf("{\"id\": \"sqlite.read_txn_vs_stock\", \"value\": %.1f, \"baseline\": %.1f, \"ratio\": %.3f, \"unit\": \"ns\", "
           "\"note\": \"autocommit point read, one process: stock ns / shim ns\"}\n",
           tr, sr, sr / tr);
    double se = ex[0][ROUNDS / 2], te = ex[1][ROUNDS / 2];
    printf("{\"id\": \"sqlite.shm_exclusive_vs_stock\", \"value\": %.1f, \"baseline\": %.1f, \"ratio\": %.3f, "
           "\"unit\": \"ns\", \"note\": \"xShmLock EXCLUSIVE + UNLOCK of one slot: stock ns / shim ns\"}\n",
           te, se, se / te);
    bank(argv[2], 4);
    bank(argv[2], 8);
    return 0;
}
