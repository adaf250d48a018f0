/*
 * bench_sqlite.c — the shim against stock SQLite (unix VFS), measured in one run.
 *
 *   bench_sqlite EXT DIR   prints two report rows as JSON lines:
 *   sqlite.shim_vs_stock      4 processes, each 2000 transactions, 80% point reads and 20% small
 *                             updates, WAL, synchronous=NORMAL; value = shim ms, baseline =
 *                             stock ms, ratio = stock / shim (higher is better for the shim)
 *   sqlite.read_txn_vs_stock  one process, autocommit point reads; value = shim ns per read
 *                             transaction, baseline = stock ns, ratio = stock / shim
 *   sqlite.shm_exclusive_vs_stock  one connection, xShmLock EXCLUSIVE then UNLOCK of one read-lock
 *                             slot (what a reader does to move a read mark); value = shim ns per
 *                             pair, baseline = stock ns (two fcntl calls), ratio = stock / shim
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

/* Wall time of PROCS processes running the mix, started together. */
static double mixed(const char *path, const char *vfs) {
    create(path, vfs);
    int gate[2];
    if (pipe(gate) != 0) exit(1);
    pid_t kids[PROCS];
    for (int i = 0; i < PROCS; i++)
        if ((kids[i] = fork()) == 0) {
            close(gate[1]);
            char c;
            if (read(gate[0], &c, 1) < 0) _exit(1);
            worker(path, vfs, i);
            _exit(0);
        }
    close(gate[0]);
    double t = now_ms();
    close(gate[1]);
    for (int i = 0; i < PROCS; i++) {
        int st;
        waitpid(kids[i], &st, 0);
        if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) exit(1);
    }
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

int main(int argc, char **argv) {
    if (argc != 3) {
        fprintf(stderr, "usage: bench_sqlite EXT DIR\n");
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
    return 0;
}
