/*
 * test_sqlite_scale.c — 2000 SQLite connections through the tshm shim in one process, all open
 * at once on one WAL database, while a second process reads.
 *
 * Every connection has a libtshm handle of its own (one instance record in the sidecar), and
 * SQLite opens descriptors per connection (the database, its WAL) besides the shim's own on
 * <db>-shm: the descriptor limit is raised to what 2000 connections need.
 *
 * The test: the connections are opened one after another, each reads the row count (which must
 * be what has been committed so far) and every tenth inserts a row; every 250 connections the
 * other process reads and must see the same count. Then all 2000 hold a read transaction at
 * once while one more row is committed: each still sees its snapshot, the other process sees
 * the new row. Then all are closed (each close SQLITE_OK), the other process checks the count
 * and the database's integrity, and no descriptor is left behind.
 *
 * TSHM_SQLITE_EXT names the extension (the tests' build of libtshm_sqlite.so).
 */
#include "harness.h"

#include <dirent.h>
#include <sqlite3.h>
#include <sys/resource.h>

#define CONNS 2000
#define WRITE_EVERY 10
#define READ_EVERY 250
#define FDS_PER_CONN 3 /* the database, its WAL, the shim's <db>-shm */

static const char *ext;

/* The first message SQLite's error log received (the shim logs libtshm's reason there). */
static char first_log[300];

static void on_log(void *ctx, int code, const char *msg) {
    (void)ctx;
    if (first_log[0] == 0) snprintf(first_log, sizeof first_log, "(%d) %s", code, msg);
}

static void load_shim(void) {
    sqlite3 *db;
    char *err = NULL;
    sqlite3_open(":memory:", &db);
    sqlite3_enable_load_extension(db, 1);
    if (sqlite3_load_extension(db, ext, NULL, &err) != SQLITE_OK) {
        fprintf(stderr, "load %s: %s\n", ext, err ? err : "?");
        exit(2);
    }
    sqlite3_close(db);
}

static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1;
}

/* Raises the soft descriptor limit to at least `need` (up to the hard limit); returns the
 * limit now in force. */
static rlim_t raise_nofile(rlim_t need) {
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0) return 0;
    if (rl.rlim_cur < need) {
        rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max >= need ? need : rl.rlim_max;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0) perror("setrlimit");
        getrlimit(RLIMIT_NOFILE, &rl);
    }
    return rl.rlim_cur;
}

static void remove_db(const char *db) {
    const char *sfx[] = {"", "-wal", "-shm", "-tshm", "-journal"};
    char p[700];
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s%s", db, sfx[i]);
        unlink(p);
    }
}

/* sqlite3_open_v2 through the shim; *rc gets the result (the handle is closed on failure). */
static sqlite3 *open_conn(const char *path, int *rc) {
    sqlite3 *db = NULL;
    *rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, "tshm");
    if (*rc != SQLITE_OK) {
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 10000);
    return db;
}

/* SELECT count(*) FROM t: the count, or -1 with *rc the failing code. */
static int64_t row_count(sqlite3 *db, int *rc) {
    sqlite3_stmt *st = NULL;
    int64_t n = -1;
    *rc = sqlite3_prepare_v2(db, "SELECT count(*) FROM t", -1, &st, NULL);
    if (*rc == SQLITE_OK) {
        *rc = sqlite3_step(st);
        if (*rc == SQLITE_ROW) {
            n = sqlite3_column_int64(st, 0);
            *rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return n;
}

static int exec_rc(sqlite3 *db, const char *sql) {
    return sqlite3_exec(db, sql, NULL, NULL, NULL);
}

/* The first failure: where, the extended code and SQLite's message. */
typedef struct { int at, rc; char what[32], msg[200]; } failure;

static void fail_at(failure *f, int at, const char *what, int rc, sqlite3 *db) {
    if (f->rc != SQLITE_OK) return;
    f->at = at;
    f->rc = rc;
    snprintf(f->what, sizeof f->what, "%s", what);
    snprintf(f->msg, sizeof f->msg, "%s", db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
}

/* ---------------------------------------------------------------------------------------- */
/* The other process: one connection of its own; on 'r' it reads the count, on 'q' it checks   */
/* integrity and closes. Answers {rc, count}.                                                 */

typedef struct { int rc; int ok; int64_t n; } read_reply;
typedef server reader_proc;

static void reader_serve(int in, int out, void *ctx) {
    int rc;
    sqlite3 *db = open_conn(ctx, &rc);
    char cmd;
    while (read(in, &cmd, 1) == 1) {
        read_reply rep = {rc, 0, -1};
        if (db != NULL && cmd == 'r') {
            rep.n = row_count(db, &rep.rc);
            rep.ok = rep.rc == SQLITE_OK;
        } else if (db != NULL && cmd == 'q') {
            sqlite3_stmt *st = NULL;
            rep.n = row_count(db, &rep.rc);
            if (rep.rc == SQLITE_OK && sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
                sqlite3_step(st) == SQLITE_ROW)
                rep.ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
            sqlite3_finalize(st);
            if (sqlite3_close(db) != SQLITE_OK) rep.ok = 0;
            db = NULL;
        }
        if (write(out, &rep, sizeof rep) != sizeof rep) _exit(3);
    }
}

static reader_proc reader_start(const char *path) {
    return server_start(reader_serve, (void *)path, 60);
}

static read_reply reader_ask(reader_proc *p, char cmd) {
    read_reply rep = {-1, 0, -1};
    if (write(p->cmd, &cmd, 1) != 1 || read(p->res, &rep, sizeof rep) != sizeof rep) rep.rc = -1;
    return rep;
}

/* ---------------------------------------------------------------------------------------- */

static sqlite3 *conn[CONNS];

static void two_thousand_connections(const char *path) {
    rlim_t need = (rlim_t)CONNS * FDS_PER_CONN + 256;
    rlim_t have = raise_nofile(need);
    printf("  descriptor limit %llu (need about %llu)\n", (unsigned long long)have, (unsigned long long)need);
    CHECK(have >= need);

    remove_db(path);
    int rc;
    sqlite3 *setup = open_conn(path, &rc);
    CHECK(setup != NULL);
    if (setup == NULL) return;
    CHECK(exec_rc(setup, "PRAGMA journal_mode=WAL") == SQLITE_OK);
    CHECK(exec_rc(setup, "CREATE TABLE t(id INTEGER PRIMARY KEY, conn INTEGER, pad BLOB)") == SQLITE_OK);
    CHECK(sqlite3_close(setup) == SQLITE_OK);

    int fds_before = count_fds();
    reader_proc other = reader_start(path);
    read_reply rep = reader_ask(&other, 'r');
    CHECK(rep.ok && rep.n == 0);

    failure f = {0, SQLITE_OK, "", ""};
    int64_t rows = 0;
    int opened = 0, reads_ok = 0, writes_ok = 0, other_ok = 0, other_asked = 0;
    double t0 = now_ms();
    for (int i = 0; i < CONNS; i++) {
        conn[i] = open_conn(path, &rc);
        if (conn[i] == NULL) {
            fail_at(&f, i, "open", rc, NULL);
            break;
        }
        opened++;
        int64_t n = row_count(conn[i], &rc);
        if (rc != SQLITE_OK) {
            fail_at(&f, i, "read", rc, conn[i]);
            break;
        }
        reads_ok += n == rows;
        if (i % WRITE_EVERY == 0) {
            char sql[128];
            snprintf(sql, sizeof sql, "INSERT INTO t(conn, pad) VALUES(%d, randomblob(100))", i);
            rc = exec_rc(conn[i], sql);
            if (rc != SQLITE_OK) {
                fail_at(&f, i, "write", rc, conn[i]);
                break;
            }
            writes_ok++;
            rows++;
        }
        if ((i + 1) % READ_EVERY == 0) {
            rep = reader_ask(&other, 'r');
            other_asked++;
            other_ok += rep.ok && rep.n == rows;
        }
    }
    double t_open = now_ms() - t0;
    printf("  %d of %d connections opened and read (%.0f ms), %d rows written, %d fds in use\n", opened, CONNS,
           t_open, writes_ok, count_fds());
    if (f.rc != SQLITE_OK)
        printf("  first failure: connection %d, %s: %d (%s): %s\n  SQLite's log: %s\n", f.at, f.what, f.rc,
               sqlite3_errstr(f.rc), f.msg, first_log[0] ? first_log : "(nothing)");
    CHECK(f.rc == SQLITE_OK);
    CHECK(opened == CONNS);
    CHECK(reads_ok == opened); /* each saw exactly what was committed before it */
    CHECK(other_ok == other_asked && other_asked == opened / READ_EVERY); /* so did the other process */

    if (opened == CONNS && f.rc == SQLITE_OK) {
        /* every connection holds a read transaction at once; one more row is committed */
        int began = 0, same = 0, ended = 0;
        for (int i = 1; i < CONNS; i++) {
            if (exec_rc(conn[i], "BEGIN") != SQLITE_OK) continue;
            int64_t n = row_count(conn[i], &rc);
            if (rc == SQLITE_OK && n == rows) began++;
            else fail_at(&f, i, "read in a transaction", rc, conn[i]);
        }
        CHECK(began == CONNS - 1);
        rc = exec_rc(conn[0], "INSERT INTO t(conn, pad) VALUES(-1, randomblob(100))");
        if (rc != SQLITE_OK) fail_at(&f, 0, "write under 1999 readers", rc, conn[0]);
        CHECK(rc == SQLITE_OK);
        rows += rc == SQLITE_OK;
        rep = reader_ask(&other, 'r');
        CHECK(rep.ok && rep.n == rows);
        for (int i = 1; i < CONNS; i++) {
            same += row_count(conn[i], &rc) == rows - 1; /* their snapshot */
            ended += exec_rc(conn[i], "COMMIT") == SQLITE_OK;
        }
        CHECK(same == CONNS - 1);
        CHECK(ended == CONNS - 1);
        CHECK(row_count(conn[CONNS - 1], &rc) == rows); /* a new transaction sees the row */
        printf("  %d read transactions held at once; a commit under them seen by the other process\n", began);
        if (f.rc != SQLITE_OK)
            printf("  first failure: connection %d, %s: %d (%s): %s\n", f.at, f.what, f.rc, sqlite3_errstr(f.rc),
                   f.msg);
    }

    int closed = 0;
    t0 = now_ms();
    for (int i = 0; i < opened; i++) closed += sqlite3_close(conn[i]) == SQLITE_OK;
    printf("  closed %d connections (%.0f ms)\n", closed, now_ms() - t0);
    CHECK(closed == opened);
    rep = reader_ask(&other, 'q');
    CHECK(rep.rc == SQLITE_OK && rep.ok && rep.n == rows); /* integrity_check ok, every row there */
    CHECK(server_stop(&other) == 0);
    int fds_after = count_fds();
    printf("  descriptors: %d before the connections, %d after closing them\n", fds_before, fds_after);
    CHECK(fds_after <= fds_before + 1); /* libtshm may keep the database file open (tshm_open) */
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    alarm(120);
    ext = getenv("TSHM_SQLITE_EXT");
    if (ext == NULL) {
        fprintf(stderr, "TSHM_SQLITE_EXT must name the shim (libtshm_sqlite.so)\n");
        return 2;
    }
    sqlite3_config(SQLITE_CONFIG_LOG, on_log, NULL);
    load_shim();
    two_thousand_connections(test_db("many-connections.db"));
    return harness_done("test_sqlite_scale");
}
