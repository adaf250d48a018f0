/*
 * workers.c — the worker processes of the torture supervisor that kvlog's own command line does
 * not provide: the SQLite bank workload through the tshm VFS shim, kvlog's large transaction,
 * and the readers that dump a database's state for verification.
 *
 *   torture sql init DB N          a fresh WAL database (1 KiB pages) with N accounts of 1000
 *   torture sql writer DB BASE     transfers; transaction ids BASE+1, BASE+2, ...
 *   torture sql reader DB          sums every balance in one read transaction, in a loop
 *   torture sql checkpointer DB    checkpoints of every mode, in a loop
 *   torture sql big DB ID ROWS     one transaction of ROWS rows of 700 bytes (wal-index growth)
 *   torture sql dump DB            integrity check, balances and committed ids
 *   torture kv big DB ID FRAMES    one kvlog transaction of about FRAMES frames (index growth)
 *   torture kv dump DB N           balances, writers' last ids, the big key, kv_check
 *
 * Reports go to stdout, one line per write (atomic on a pipe), so the supervisor learns of a
 * commit only after it returned:
 *   I id from to amt   about to commit transfer `id`      A id   it committed
 *   R id               it was rolled back                  V sum count   a reader saw a bad total
 *   B what             a bounded wait ran out              E msg   an unexpected error
 *   C                  about to close the database
 * SIGTERM stops a loop between two transactions; the process then closes and exits 0.
 */
#define _GNU_SOURCE
#include "torture.h"
#include "kvlog.h"

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

static void report(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void report(const char *fmt, ...) {
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line - 1, fmt, ap);
    va_end(ap);
    if (n < 0) return;
    if (n > (int)sizeof line - 2) n = (int)sizeof line - 2;
    line[n++] = '\n';
    if (write(1, line, (size_t)n) != n) _exit(7);
}

static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static uint64_t seed_of(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return ((uint64_t)getpid() << 32) ^ (uint64_t)t.tv_nsec ^ 0x9e3779b97f4a7c15ull;
}

static int env_on(const char *name) {
    const char *v = getenv(name);
    return v != NULL && strcmp(v, "1") == 0;
}

/* ---------------------------------------------------------------------------------------- */
/* SQLite through the shim                                                                  */

static sqlite3 *sq_open(const char *path) {
    const char *ext = getenv("TSHM_SQLITE_EXT");
    sqlite3 *mem, *db = NULL;
    char *err = NULL;
    if (ext == NULL) { report("E TSHM_SQLITE_EXT is not set"); exit(2); }
    sqlite3_open(":memory:", &mem);
    sqlite3_enable_load_extension(mem, 1);
    if (sqlite3_load_extension(mem, ext, NULL, &err) != SQLITE_OK) {
        report("E load %s: %s", ext, err ? err : "?");
        exit(2);
    }
    sqlite3_close(mem);
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "tshm") != SQLITE_OK) {
        report("E open %s: %s", path, db ? sqlite3_errmsg(db) : "?");
        exit(1);
    }
    const char *ms = getenv("TORTURE_BUSY_MS");
    sqlite3_busy_timeout(db, ms ? atoi(ms) : 10000);
    return db;
}

/* Runs sql; on an error other than those in `ok` (a bitmask of primary codes < 32), reports and
 * exits. Returns the result code. */
static int sq_exec(sqlite3 *db, const char *sql, unsigned ok) {
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK && !((rc & 0xff) < 32 && (ok >> (rc & 0xff) & 1))) {
        if ((rc & 0xff) == SQLITE_BUSY) report("B %s: %s (%d)", sql, err ? err : "", rc);
        else report("E %s: %s (%d)", sql, err ? err : "", rc);
        exit(1);
    }
    sqlite3_free(err);
    return rc;
}

static int64_t sq_int(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st;
    int64_t v = -1;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) v = sqlite3_column_int64(st, 0);
    else {
        report("%c %s: %s (%d)", (rc & 0xff) == SQLITE_BUSY ? 'B' : 'E', sql, sqlite3_errmsg(db), rc);
        exit(1);
    }
    sqlite3_finalize(st);
    return v;
}

static void sq_close(sqlite3 *db) {
    report("C");
    int rc = sqlite3_close(db);
    if (rc != SQLITE_OK) { report("E close: %d", rc); exit(1); }
}

static int sq_init(const char *path, int n) {
    sqlite3 *db = sq_open(path);
    sq_exec(db, "PRAGMA page_size=1024; PRAGMA journal_mode=WAL;"
                "CREATE TABLE meta(n INTEGER);"
                "CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL);"
                "CREATE TABLE tx(id INTEGER PRIMARY KEY);"
                "CREATE TABLE big(id INTEGER, b BLOB); BEGIN", 0);
    char sql[128];
    snprintf(sql, sizeof sql, "INSERT INTO meta VALUES(%d)", n);
    sq_exec(db, sql, 0);
    for (int i = 0; i < n; i++) {
        snprintf(sql, sizeof sql, "INSERT INTO acct VALUES(%d, %d)", i, BANK_TOTAL_EACH);
        sq_exec(db, sql, 0);
    }
    sq_exec(db, "COMMIT", 0);
    sq_close(db);
    return 0;
}

static void sq_pragmas(sqlite3 *db) {
    sq_exec(db, env_on("TORTURE_DURABLE") ? "PRAGMA synchronous=FULL" : "PRAGMA synchronous=NORMAL", 0);
    sq_exec(db, "PRAGMA cache_size=50", 0);
}

static int sq_writer(const char *path, int64_t base) {
    sqlite3 *db = sq_open(path);
    sq_pragmas(db);
    int n = (int)sq_int(db, "SELECT n FROM meta");
    uint64_t seed = seed_of();
    int64_t id = base;
    while (!stopping) {
        sq_exec(db, "BEGIN IMMEDIATE", 0);
        int from = (int)(rnd(&seed) % (uint64_t)n), to = (int)(rnd(&seed) % (uint64_t)(n - 1));
        if (to >= from) to++;
        int amt = 1 + (int)(rnd(&seed) % 100);
        char sql[256];
        snprintf(sql, sizeof sql, "SELECT bal FROM acct WHERE id = %d", from);
        if (sq_int(db, sql) < amt) {
            sq_exec(db, "ROLLBACK", 0);
            continue;
        }
        id++;
        report("I %" PRId64 " %d %d %d", id, from, to, amt);
        snprintf(sql, sizeof sql,
                 "UPDATE acct SET bal = bal - %d WHERE id = %d; UPDATE acct SET bal = bal + %d WHERE id = %d;"
                 "INSERT INTO tx VALUES(%" PRId64 ")", amt, from, amt, to, id);
        sq_exec(db, sql, 0);
        if (rnd(&seed) % 20 == 0) {
            sq_exec(db, "ROLLBACK", 0);
            report("R %" PRId64, id);
            continue;
        }
        sq_exec(db, "COMMIT", 0);
        report("A %" PRId64, id);
    }
    sq_close(db);
    return 0;
}

static int sq_reader(const char *path) {
    sqlite3 *db = sq_open(path);
    int64_t n = sq_int(db, "SELECT n FROM meta");
    while (!stopping) {
        sq_exec(db, "BEGIN", 0);
        int64_t sum = sq_int(db, "SELECT sum(bal) FROM acct");
        int64_t cnt = sq_int(db, "SELECT count(*) FROM acct");
        int64_t again = sq_int(db, "SELECT sum(bal) FROM acct");
        sq_exec(db, "COMMIT", 0);
        if (sum != n * BANK_TOTAL_EACH || cnt != n || again != sum)
            report("V %" PRId64 " %" PRId64, sum, cnt);
    }
    sq_close(db);
    return 0;
}

static int sq_checkpointer(const char *path) {
    sqlite3 *db = sq_open(path);
    sq_pragmas(db);
    /* RESTART and TRUNCATE wait for the readers, which never pause: a short bound (BUSY is an
     * answer a checkpointer may get) keeps the loop turning and SIGTERM answered */
    sqlite3_busy_timeout(db, 100);
    uint64_t seed = seed_of();
    const int modes[] = {SQLITE_CHECKPOINT_PASSIVE, SQLITE_CHECKPOINT_PASSIVE, SQLITE_CHECKPOINT_FULL,
                         SQLITE_CHECKPOINT_RESTART, SQLITE_CHECKPOINT_TRUNCATE};
    while (!stopping) {
        int mode = modes[rnd(&seed) % 5], log = 0, done = 0;
        int rc = sqlite3_wal_checkpoint_v2(db, NULL, mode, &log, &done);
        if (rc != SQLITE_OK && (rc & 0xff) != SQLITE_BUSY) {
            report("E checkpoint mode %d: %s (%d)", mode, sqlite3_errmsg(db), rc);
            return 1;
        }
        struct timespec pace = {0, 5 * 1000 * 1000}; /* pacing, not synchronization */
        nanosleep(&pace, NULL);
    }
    sq_close(db);
    return 0;
}

static int sq_big(const char *path, int64_t id, int rows) {
    sqlite3 *db = sq_open(path);
    sq_pragmas(db);
    sq_exec(db, "BEGIN IMMEDIATE", 0);
    report("I %" PRId64 " 0 0 0", id);
    char sql[300];
    snprintf(sql, sizeof sql,
             "WITH RECURSIVE c(x) AS (VALUES(1) UNION ALL SELECT x + 1 FROM c WHERE x < %d) "
             "INSERT INTO big SELECT %" PRId64 ", randomblob(700) FROM c; INSERT INTO tx VALUES(%" PRId64 ")",
             rows, id, id);
    sq_exec(db, sql, 0);
    sq_exec(db, "COMMIT", 0);
    report("A %" PRId64, id);
    sq_close(db);
    return 0;
}

static int sq_dump(const char *path) {
    sqlite3 *db = sq_open(path);
    sqlite3_stmt *st;
    int rc = sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL);
    if (rc == SQLITE_OK)
        while ((rc = sqlite3_step(st)) == SQLITE_ROW)
            report("integrity %s", (const char *)sqlite3_column_text(st, 0));
    if (rc != SQLITE_DONE) report("integrity failed to run: %s (%d)", sqlite3_errmsg(db), rc);
    sqlite3_finalize(st);
    report("n %" PRId64, sq_int(db, "SELECT n FROM meta"));
    const char *q[] = {"SELECT 'acct', id, bal FROM acct", "SELECT 'tx', id, 0 FROM tx",
                       "SELECT 'bigrows', id, count(*) FROM big GROUP BY id"};
    for (int i = 0; i < 3; i++) {
        rc = sqlite3_prepare_v2(db, q[i], -1, &st, NULL);
        if (rc == SQLITE_OK)
            while ((rc = sqlite3_step(st)) == SQLITE_ROW)
                report("%s %" PRId64 " %" PRId64, (const char *)sqlite3_column_text(st, 0),
                       (int64_t)sqlite3_column_int64(st, 1), (int64_t)sqlite3_column_int64(st, 2));
        if (rc != SQLITE_DONE) report("E %s: %s (%d)", q[i], sqlite3_errmsg(db), rc);
        sqlite3_finalize(st);
    }
    sq_close(db);
    report("closed");
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* kvlog                                                                                    */

static int kv_big(const char *path, int64_t id, int frames) {
    kv_config cfg = {.spill = 1, .durable = env_on("KVLOG_DURABLE")};
    kvlog *db;
    if (kv_open(path, &cfg, &db) != KV_OK) return report("E open"), 1;
    int rc = kv_begin_write(db, 5000);
    if (rc == KV_BUSY) return report("B writer role: %s", kv_errmsg(db)), 1;
    if (rc != KV_OK) return report("E begin: %s", kv_errmsg(db)), 1;
    report("I %" PRId64 " 0 0 0", id);
    /* with spill, moving to another page writes the previous one as a frame: alternating between
     * the big key and eight others writes about one frame per put */
    for (int i = 0; i < frames && rc == KV_OK; i++) {
        char key[16];
        int64_t v = i % 2 ? (int64_t)i : id;
        snprintf(key, sizeof key, i % 2 ? "xb%d" : "xbig", (i / 2) % 8);
        rc = kv_put(db, key, &v, sizeof v);
    }
    if (rc == KV_OK) rc = kv_commit(db);
    else kv_rollback(db);
    if (rc != KV_OK) return report("E big transaction: %s", kv_errmsg(db)), 1;
    report("A %" PRId64, id);
    report("C");
    return kv_close(db) == KV_OK ? 0 : 1;
}

static int get_i64(kvlog *db, const char *key, int64_t *v) {
    size_t n;
    int rc = kv_get(db, key, v, sizeof *v, &n);
    return rc == KV_OK && n != sizeof *v ? KV_CORRUPT : rc;
}

static int kv_dump(const char *path, int n) {
    kvlog *db;
    if (kv_open(path, NULL, &db) != KV_OK) return report("E open"), 1;
    if (kv_begin_read(db) != KV_OK) return report("E read: %s", kv_errmsg(db)), 1;
    int64_t v;
    for (int i = 0; i < n; i++) {
        char key[16];
        snprintf(key, sizeof key, "a%06d", i);
        int rc = get_i64(db, key, &v);
        if (rc == KV_OK) report("acct %d %" PRId64, i, v);
        else report("E %s: %s", key, kv_errmsg(db));
    }
    for (int w = 1; w < 64; w++) {
        char key[16];
        snprintf(key, sizeof key, "w%02d", w);
        if (get_i64(db, key, &v) == KV_OK) report("w %d %" PRId64, w, v);
    }
    if (get_i64(db, "xbig", &v) == KV_OK) report("big %" PRId64, v);
    kv_end_read(db);
    char why[512] = "";
    if (kv_check(db, why, sizeof why) == KV_OK) report("check ok");
    else report("check %s", why);
    report("C");
    int rc = kv_close(db);
    report(rc == KV_OK ? "closed" : "E close");
    return rc != KV_OK;
}

int worker_main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    if (argc < 3) return 2;
    const char *eng = argv[0], *cmd = argv[1], *db = argv[2];
    if (strcmp(eng, "sql") == 0) {
        if (strcmp(cmd, "init") == 0 && argc == 4) return sq_init(db, atoi(argv[3]));
        if (strcmp(cmd, "writer") == 0 && argc == 4) return sq_writer(db, strtoll(argv[3], NULL, 10));
        if (strcmp(cmd, "reader") == 0) return sq_reader(db);
        if (strcmp(cmd, "checkpointer") == 0) return sq_checkpointer(db);
        if (strcmp(cmd, "big") == 0 && argc == 5) return sq_big(db, strtoll(argv[3], NULL, 10), atoi(argv[4]));
        if (strcmp(cmd, "dump") == 0) return sq_dump(db);
    } else if (strcmp(eng, "kv") == 0) {
        if (strcmp(cmd, "big") == 0 && argc == 5) return kv_big(db, strtoll(argv[3], NULL, 10), atoi(argv[4]));
        if (strcmp(cmd, "dump") == 0 && argc == 4) return kv_dump(db, atoi(argv[3]));
    }
    fprintf(stderr, "usage: torture sql init|writer|reader|checkpointer|big|dump DB ... | kv big|dump DB ...\n");
    return 2;
}
