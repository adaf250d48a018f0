/*
 * test_sqlite.c — the tshm SQLite VFS shim with the system libsqlite3 (and the sqlite3 CLI).
 *
 * TSHM_SQLITE_EXT names the extension (build/lib/libtshm_sqlite.so), SQLITE3 the CLI,
 * TSHM_BIN the inspector. Processes are forked; victims report through a pipe before they are
 * killed.
 */
#include "harness.h"

#include <grp.h>
#include <pwd.h>
#include <sched.h>
#include <sqlite3.h>

static const char *ext, *cli, *tshm_bin;

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

static sqlite3 *open_db(const char *path, const char *vfs) {
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, vfs) != SQLITE_OK) {
        fprintf(stderr, "open %s: %s\n", path, db ? sqlite3_errmsg(db) : "?");
        sqlite3_close(db);
        return NULL;
    }
    sqlite3_busy_timeout(db, 20000);
    return db;
}

static int exec(sqlite3 *db, const char *sql) {
    char *err = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &err);
    if (rc != SQLITE_OK && getenv("TEST_VERBOSE")) fprintf(stderr, "%s: %s\n", sql, err ? err : "");
    sqlite3_free(err);
    return rc;
}

static int64_t scalar(sqlite3 *db, const char *sql) {
    sqlite3_stmt *st;
    int64_t v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

static int integrity_ok(sqlite3 *db) {
    sqlite3_stmt *st;
    int ok = 0;
    if (sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW)
        ok = strcmp((const char *)sqlite3_column_text(st, 0), "ok") == 0;
    sqlite3_finalize(st);
    return ok;
}

static void remove_db(const char *db) {
    const char *sfx[] = {"", "-wal", "-shm", "-tshm", "-journal"};
    char p[700];
    for (int i = 0; i < 5; i++) {
        snprintf(p, sizeof p, "%s%s", db, sfx[i]);
        unlink(p);
    }
}

static sqlite3 *fresh(const char *path) {
    remove_db(path);
    sqlite3 *db = open_db(path, "tshm");
    if (db == NULL) exit(2);
    CHECK_RC(exec(db, "PRAGMA journal_mode=WAL"), SQLITE_OK);
    return db;
}

static sqlite3_file *file_of(sqlite3 *db) {
    sqlite3_file *f = NULL;
    sqlite3_file_control(db, "main", SQLITE_FCNTL_FILE_POINTER, &f);
    return f;
}

/* ------------------------------------------------------------------------------------------ */
/* 1. xShmLock truth table through the shim: three connections in one process, then three     */
/*    processes                                                                                */

enum { LS = SQLITE_SHM_LOCK | SQLITE_SHM_SHARED, LX = SQLITE_SHM_LOCK | SQLITE_SHM_EXCLUSIVE,
       US = SQLITE_SHM_UNLOCK | SQLITE_SHM_SHARED, UX = SQLITE_SHM_UNLOCK | SQLITE_SHM_EXCLUSIVE };
struct step { int conn, flags, ofs, n, rc; };
static const struct step table[] = {
    {0, LS, 3, 1, SQLITE_OK},   {1, LS, 3, 1, SQLITE_OK},   {2, LX, 3, 1, SQLITE_BUSY},
    {0, US, 3, 1, SQLITE_OK},   {1, US, 3, 1, SQLITE_OK},   {2, LX, 3, 1, SQLITE_OK},
    {0, LS, 3, 1, SQLITE_BUSY}, {2, UX, 3, 1, SQLITE_OK},   {0, LX, 0, 8, SQLITE_OK},
    {1, LS, 7, 1, SQLITE_BUSY}, {2, LX, 0, 1, SQLITE_BUSY}, {0, UX, 0, 8, SQLITE_OK},
    {1, LS, 3, 1, SQLITE_OK},   {2, LX, 2, 2, SQLITE_BUSY}, {2, LX, 0, 2, SQLITE_OK},
    {0, LX, 1, 2, SQLITE_BUSY}, {0, LS, 4, 1, SQLITE_OK},   {1, LS, 4, 1, SQLITE_OK},
    {2, LX, 4, 4, SQLITE_BUSY}, {2, LX, 5, 3, SQLITE_OK},   {0, LX, 0, 5, SQLITE_BUSY},
    {2, UX, 0, 2, SQLITE_OK},   {2, UX, 5, 3, SQLITE_OK},   {0, US, 4, 1, SQLITE_OK},
    {1, US, 4, 1, SQLITE_OK},   {1, US, 3, 1, SQLITE_OK},   {0, LX, 0, 8, SQLITE_OK},
    {0, UX, 0, 8, SQLITE_OK},
};
#define NTABLE (sizeof table / sizeof table[0])

static int shm_step(sqlite3_file *f, const struct step *s) {
    return f->pMethods->xShmLock(f, s->ofs, s->n, s->flags);
}

/* A connection with its shm mapped (a query ran) and no lock held. */
static sqlite3 *ready(const char *path) {
    sqlite3 *db = open_db(path, "tshm");
    if (db) exec(db, "SELECT count(*) FROM t");
    return db;
}

static const char *table_db;
static void *table_open(int k) { (void)k; return ready(table_db); }
static int table_who(unsigned i) { return table[i].conn; }
static int table_run(void *db, unsigned i) { return shm_step(file_of(db), &table[i]); }
static void table_close(void *db) { sqlite3_close(db); }
static void table_check(unsigned i, int rc) {
    if (rc != table[i].rc) fprintf(stderr, "3-process step %u: %d, expected %d\n", i, rc, table[i].rc);
    CHECK(rc == table[i].rc);
}

static void shmlock_table(const char *path) {
    sqlite3 *db = fresh(path);
    CHECK_RC(exec(db, "CREATE TABLE t(x)"), SQLITE_OK);
    sqlite3 *c[3] = {ready(path), ready(path), ready(path)};
    for (size_t i = 0; i < NTABLE; i++) {
        int rc = shm_step(file_of(c[table[i].conn]), &table[i]);
        if (rc != table[i].rc) fprintf(stderr, "in-process step %zu: %d, expected %d\n", i, rc, table[i].rc);
        CHECK(rc == table[i].rc);
    }
    for (int i = 0; i < 3; i++) sqlite3_close(c[i]);
    /* the same table with each connection in its own process */
    table_db = path;
    script_in_processes sc = {3, NTABLE, table_open, table_who, table_run, table_close, table_check};
    run_script_in_processes(&sc);
    sqlite3_close(db);
}

/* ------------------------------------------------------------------------------------------ */
/* 2. Many processes x many write transactions, readers checking an invariant                  */

enum { ACCOUNTS = 50, WRITERS = 4, TXNS = 150 };

static void setup_bank(sqlite3 *db) {
    exec(db, "CREATE TABLE acct(id INTEGER PRIMARY KEY, bal INTEGER NOT NULL);"
             "CREATE TABLE log(w INTEGER, n INTEGER, pad BLOB);"
             "CREATE TABLE meta(transfers INTEGER); INSERT INTO meta VALUES(0)");
    exec(db, "BEGIN");
    for (int i = 0; i < ACCOUNTS; i++) {
        char sql[100];
        snprintf(sql, sizeof sql, "INSERT INTO acct VALUES(%d, 1000)", i);
        exec(db, sql);
    }
    exec(db, "COMMIT");
}

/* One write transaction: a transfer and a log row; retried on BUSY. */
static int transfer(sqlite3 *db, int w, int n, uint64_t *seed) {
    *seed = *seed * 6364136223846793005ull + 1442695040888963407ull;
    int a = (int)(*seed >> 33) % ACCOUNTS, b = (a + 1 + (int)(*seed >> 40) % (ACCOUNTS - 1)) % ACCOUNTS;
    char sql[400];
    snprintf(sql, sizeof sql,
             "BEGIN IMMEDIATE; UPDATE acct SET bal = bal - 7 WHERE id = %d; UPDATE acct SET bal = bal + 7 "
             "WHERE id = %d; INSERT INTO log VALUES(%d, %d, randomblob(300)); "
             "UPDATE meta SET transfers = transfers + 1; COMMIT;", a, b, w, n);
    for (int tries = 0; tries < 1000; tries++) {
        int rc = exec(db, sql);
        if (rc == SQLITE_OK) return 0;
        exec(db, "ROLLBACK");
        if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED) return rc;
    }
    return SQLITE_BUSY;
}

static int reader_loop(const char *path, int done_fd) {
    sqlite3 *db = open_db(path, "tshm");
    int bad = 0, reads = 0;
    for (;;) {
        if (exec(db, "BEGIN") != SQLITE_OK) { bad++; break; }
        int64_t sum = scalar(db, "SELECT sum(bal) FROM acct");
        int64_t logs = scalar(db, "SELECT count(*) FROM log");
        int64_t again = scalar(db, "SELECT sum(bal) FROM acct");
        int64_t transfers = scalar(db, "SELECT transfers FROM meta");
        exec(db, "COMMIT");
        /* across tables: every log row was committed with its counter increment */
        if (sum != ACCOUNTS * 1000 || again != sum || logs != transfers) bad++;
        reads++;
        char c;
        if (read(done_fd, &c, 1) == 0) break; /* non-blocking: EOF once the writers are done */
    }
    sqlite3_close(db);
    return bad == 0 && reads > 0 ? 0 : 1;
}

static void many_processes(const char *path) {
    sqlite3 *db = fresh(path);
    setup_bank(db);
    int done[2];
    if (pipe2(done, O_NONBLOCK) != 0) exit(2);
    pid_t readers[2], writers[WRITERS];
    for (int r = 0; r < 2; r++)
        if ((readers[r] = fork()) == 0) {
            close(done[1]);
            _exit(reader_loop(path, done[0]));
        }
    for (int w = 0; w < WRITERS; w++)
        if ((writers[w] = fork()) == 0) {
            close(done[0]);
            close(done[1]);
            sqlite3 *me = open_db(path, "tshm");
            exec(me, "PRAGMA cache_size=20");
            uint64_t seed = (uint64_t)w * 7919 + 1;
            int rc = 0;
            for (int n = 0; n < TXNS && rc == 0; n++) rc = transfer(me, w, n, &seed);
            if (rc) fprintf(stderr, "writer %d: %s\n", w, sqlite3_errmsg(me));
            sqlite3_close(me);
            _exit(rc != 0);
        }
    /* checkpoints of every mode while the writers and readers run */
    const char *modes[] = {"PASSIVE", "FULL", "RESTART", "TRUNCATE"};
    int ck_err = 0;
    for (int i = 0; i < 8; i++) {
        char sql[64];
        snprintf(sql, sizeof sql, "PRAGMA wal_checkpoint(%s)", modes[i % 4]);
        int64_t busy = scalar(db, sql);
        if (busy < 0) ck_err++;
    }
    CHECK(ck_err == 0);
    for (int w = 0; w < WRITERS; w++) CHECK(child_wait(writers[w]) == 0);
    close(done[1]);
    for (int r = 0; r < 2; r++) CHECK(child_wait(readers[r]) == 0);
    close(done[0]);
    CHECK(scalar(db, "SELECT count(*) FROM log") == WRITERS * TXNS);
    CHECK(scalar(db, "SELECT transfers FROM meta") == WRITERS * TXNS);
    CHECK(scalar(db, "SELECT count(DISTINCT w || '-' || n) FROM log") == WRITERS * TXNS);
    CHECK(scalar(db, "SELECT sum(bal) FROM acct") == ACCOUNTS * 1000);
    CHECK(integrity_ok(db));
    sqlite3_close(db);
}

/* ------------------------------------------------------------------------------------------ */
/* 3. kill -9 of a writer mid-transaction, pages already spilled into the WAL                 */

static void killed_writer(const char *path) {
    sqlite3 *db = fresh(path);
    setup_bank(db);
    int ready_pipe[2];
    if (pipe(ready_pipe) != 0) exit(2);
    pid_t kid = fork();
    if (kid == 0) {
        sqlite3 *me = open_db(path, "tshm");
        exec(me, "PRAGMA cache_size=10");
        exec(me, "BEGIN IMMEDIATE");
        for (int i = 0; i < 3000; i++) exec(me, "INSERT INTO log VALUES(99, 0, randomblob(500))");
        exec(me, "UPDATE acct SET bal = 0 WHERE id = 1");
        char c = 'r';
        if (write(ready_pipe[1], &c, 1) != 1) _exit(3);
        for (;;) pause();
    }
    close(ready_pipe[1]);
    char c;
    CHECK(read(ready_pipe[0], &c, 1) == 1);
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", path);
    struct stat st;
    CHECK(stat(wal, &st) == 0 && st.st_size > 100 * 4096); /* uncommitted pages spilled */
    child_kill(kid);
    close(ready_pipe[0]);
    /* the others carry on: writes succeed, the killed transaction left nothing */
    uint64_t seed = 5;
    CHECK(transfer(db, 1, 1, &seed) == 0);
    CHECK(scalar(db, "SELECT count(*) FROM log WHERE w = 99") == 0);
    CHECK(scalar(db, "SELECT sum(bal) FROM acct") == ACCOUNTS * 1000);
    CHECK(integrity_ok(db));
    sqlite3_close(db);
    /* and after everyone closed: reopen, recover, still consistent */
    db = open_db(path, "tshm");
    CHECK(scalar(db, "SELECT count(*) FROM log") == 1);
    CHECK(integrity_ok(db));
    sqlite3_close(db);
}

/* ------------------------------------------------------------------------------------------ */
/* 4. Stock SQLite is kept out, in both orders of arrival                                      */

static uint64_t file_sum(const char *path) {
    FILE *f = fopen(path, "rb");
    uint64_t h = 0xcbf29ce484222325ull;
    int ch;
    while (f && (ch = fgetc(f)) != EOF) h = (h ^ (uint64_t)ch) * 0x100000001b3ull;
    if (f) fclose(f);
    return h;
}

/* Starts the stock sqlite3 CLI on path with sql, its output going to `out`. */
static pid_t stock_cli(const char *path, const char *sql, const char *out) {
    pid_t pid = fork();
    if (pid == 0) {
        int fd = open(out, O_WRONLY | O_CREAT | O_TRUNC, 0644);
        dup2(fd, 1);
        dup2(fd, 2);
        execlp(cli, cli, "-bail", path, sql, (char *)NULL);
        _exit(127);
    }
    return pid;
}

/* Whether a finished CLI run failed with a lock error (and printed no result). */
static int refused(pid_t pid, const char *out) {
    int code = child_wait(pid);
    char buf[1024] = "";
    FILE *f = fopen(out, "r");
    size_t n = f ? fread(buf, 1, sizeof buf - 1, f) : 0;
    buf[n] = 0;
    if (f) fclose(f);
    int ok = code != 0 && (strstr(buf, "locked") || strstr(buf, "locking protocol"));
    if (!ok) fprintf(stderr, "stock sqlite3 exited %d: %s\n", code, buf);
    return ok;
}

/* A child holding a connection open (vfs = "tshm" or NULL for stock) until told to close. It
 * keeps no other descriptor of its parent: the write end of a pipe on which another child
 * waits for EOF would otherwise stay open for as long as the holder lives. */
static pid_t holder(const char *path, const char *vfs, int *release_fd) {
    int p[2], r[2];
    if (pipe(p) || pipe(r)) exit(2);
    pid_t pid = fork();
    if (pid == 0) {
        close(p[1]);
        close(r[0]);
        if (keep_only_fds(p[0], r[1]) != 0) _exit(3);
        sqlite3 *db = open_db(path, vfs);
        int ok = db && scalar(db, "SELECT count(*) FROM acct") == ACCOUNTS;
        if (write(r[1], &ok, sizeof ok) != sizeof ok) _exit(3);
        char c;
        while (read(p[0], &c, 1) > 0) {}
        sqlite3_close(db);
        _exit(0);
    }
    close(p[0]);
    close(r[1]);
    int ok = 0;
    CHECK(read(r[0], &ok, sizeof ok) == sizeof ok && ok);
    close(r[0]);
    *release_fd = p[1];
    return pid;
}

static void stock_is_kept_out(const char *path) {
    sqlite3 *db = fresh(path);
    setup_bank(db);
    sqlite3_close(db);
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", path);
    /* (a) shim first: a stock CLI can neither read nor write, and changes nothing */
    int rel;
    pid_t h = holder(path, "tshm", &rel);
    uint64_t before = file_sum(path), wal_before = file_sum(wal);
    char out1[700], out2[700];
    snprintf(out1, sizeof out1, "%s.read.out", path);
    snprintf(out2, sizeof out2, "%s.write.out", path);
    /* both at once: stock SQLite retries for about 10 s before it gives up */
    pid_t r = stock_cli(path, "SELECT count(*) FROM acct;", out1);
    pid_t w = stock_cli(path, "INSERT INTO acct VALUES(1000, 5);", out2);
    CHECK(refused(r, out1));
    CHECK(refused(w, out2));
    CHECK(file_sum(path) == before && file_sum(wal) == wal_before);
    close(rel);
    CHECK(child_wait(h) == 0);
    /* (b) stock first: a shim connection refuses instead of joining */
    h = holder(path, NULL, &rel);
    sqlite3 *s = open_db(path, "tshm");
    sqlite3_busy_timeout(s, 0);
    int rc = exec(s, "SELECT count(*) FROM acct");
    CHECK(rc == SQLITE_PROTOCOL || rc == SQLITE_BUSY);
    rc = exec(s, "INSERT INTO acct VALUES(1001, 5)");
    CHECK(rc == SQLITE_PROTOCOL || rc == SQLITE_BUSY);
    sqlite3_close(s);
    close(rel);
    CHECK(child_wait(h) == 0);
    /* everyone gone: the shim works again and nothing was written meanwhile */
    db = open_db(path, "tshm");
    CHECK(scalar(db, "SELECT count(*) FROM acct") == ACCOUNTS);
    CHECK(integrity_ok(db));
    sqlite3_close(db);
}

/* ------------------------------------------------------------------------------------------ */
/* 5. Last close checkpoints; the sidecar is left idle; the CLI loads the extension            */

static void last_close_and_cli(const char *path) {
    sqlite3 *db = fresh(path);
    setup_bank(db);
    char wal[600], cmd[2000];
    snprintf(wal, sizeof wal, "%s-wal", path);
    struct stat st;
    CHECK(stat(wal, &st) == 0 && st.st_size > 0);
    /* a read transaction holds an engine lock slot; the inspector shows it */
    CHECK_RC(exec(db, "BEGIN; SELECT count(*) FROM acct;"), SQLITE_OK);
    snprintf(cmd, sizeof cmd, "%s inspect --json %s | grep -A1 engine_locks_shared", tshm_bin, path);
    FILE *ins = popen(cmd, "r");
    char buf[2048] = "";
    size_t got = ins ? fread(buf, 1, sizeof buf - 1, ins) : 0;
    buf[got] = 0;
    if (ins) pclose(ins);
    CHECK(strstr(buf, "\"engine_locks_shared\": [\n") != NULL); /* a non-empty list */
    if (strstr(buf, "\"engine_locks_shared\": [\n") == NULL) fprintf(stderr, "inspect said: %s\n", buf);
    exec(db, "COMMIT");
    sqlite3_close(db);
    CHECK(stat(wal, &st) != 0 || st.st_size == 0); /* the last close checkpointed and removed it */
    snprintf(cmd, sizeof cmd, "%s check --idle %s > /dev/null", tshm_bin, path);
    CHECK(system(cmd) == 0);
    /* the sqlite3 shell: .load, then .open with vfs=tshm */
    char ext_noext[600];
    snprintf(ext_noext, sizeof ext_noext, "%s", ext);
    char *dot = strstr(ext_noext, ".so");
    if (dot) *dot = 0;
    snprintf(cmd, sizeof cmd,
             "printf '.load %s\\n.open file:%s?vfs=tshm\\n.vfsname\\nSELECT count(*) FROM acct;\\n"
             "INSERT INTO acct VALUES(5000, 0);\\nSELECT count(*) FROM acct;\\n' | %s -bail 2>&1",
             ext_noext, path, cli);
    FILE *p = popen(cmd, "r");
    char out[4096] = "";
    size_t n = p ? fread(out, 1, sizeof out - 1, p) : 0;
    out[n] = 0;
    int status = p ? pclose(p) : -1;
    CHECK(status == 0);
    CHECK(strstr(out, "tshm/unix") != NULL);
    CHECK(strstr(out, "50\n51\n") != NULL);
    if (status != 0 || strstr(out, "51") == NULL) fprintf(stderr, "sqlite3 shell said: %s\n", out);
    db = open_db(path, "tshm");
    CHECK(scalar(db, "SELECT count(*) FROM acct") == ACCOUNTS + 1);
    sqlite3_close(db);
}

/* ------------------------------------------------------------------------------------------ */
/* 6. A stock connection arriving while a shim connection is between the steps of its guard    */

/* Stock SQLite's unix VFS with an immediate xSleep: the same locking and -shm code, but its
 * retry loops give up in milliseconds instead of about 10 s. */
static sqlite3_vfs stock_fast;
static int no_sleep(sqlite3_vfs *v, int us) {
    (void)v;
    return us;
}
static void register_stock_fast(void) {
    stock_fast = *sqlite3_vfs_find("unix");
    stock_fast.zName = "unix-nosleep";
    stock_fast.xSleep = no_sleep;
    stock_fast.pNext = NULL;
    sqlite3_vfs_register(&stock_fast, 0);
}

static int primary(int rc) { return rc & 0xff; }
static int lock_error(int rc) {
    return primary(rc) == SQLITE_BUSY || primary(rc) == SQLITE_LOCKED || primary(rc) == SQLITE_PROTOCOL;
}

/* The shim connection stops at `point` of its guard (first arrival, or joining a shim holder
 * when `join`); a stock connection tries to read, write and checkpoint meanwhile. */
static void stock_in_guard_window(const char *path, const char *point, int join) {
    sqlite3 *db = fresh(path);
    setup_bank(db);
    sqlite3_close(db);
    int rel = -1;
    pid_t h = join ? holder(path, "tshm", &rel) : -1;
    char wal[600];
    snprintf(wal, sizeof wal, "%s-wal", path);
    uint64_t before = file_sum(path), wal_before = file_sum(wal);
    int note[2], resume[2], res[2];
    if (pipe(note) || pipe(resume) || pipe(res)) exit(2);
    pid_t sh = fork();
    if (sh == 0) {
        char env[64];
        snprintf(env, sizeof env, "%s:%d:%d", point, note[1], resume[0]);
        setenv("TSHM_SQLITE_TEST_STOP", env, 1);
        sqlite3 *me = open_db(path, "tshm");
        int ok = me && scalar(me, "SELECT count(*) FROM acct") == ACCOUNTS &&
                 exec(me, "INSERT INTO acct VALUES(3000, 0)") == SQLITE_OK &&
                 scalar(me, "SELECT count(*) FROM acct") == ACCOUNTS + 1;
        sqlite3_close(me);
        _exit(ok ? 0 : 1);
    }
    close(note[1]); /* a shim connection that dies before its stop point ends the read */
    close(resume[0]);
    char c;
    if (read(note[0], &c, 1) != 1) { /* the shim connection is inside its guard */
        fprintf(stderr, "the shim connection never reached its stop point '%s'\n", point);
        CHECK(0);
        close(resume[1]);
        child_wait(sh);
        if (join) close(rel), child_wait(h);
        close(note[0]), close(res[0]), close(res[1]);
        return;
    }
    pid_t st = fork();
    if (st == 0) {
        sqlite3 *s = NULL;
        int rc[4] = {-1, -1, -1, -1};
        if (sqlite3_open_v2(path, &s, SQLITE_OPEN_READWRITE, "unix-nosleep") == SQLITE_OK) {
            sqlite3_busy_timeout(s, 0);
            rc[0] = exec(s, "SELECT count(*) FROM acct");
            rc[1] = exec(s, "INSERT INTO acct VALUES(4000, 5)");
            rc[2] = sqlite3_wal_checkpoint_v2(s, NULL, SQLITE_CHECKPOINT_PASSIVE, NULL, NULL);
            rc[3] = scalar(s, "SELECT count(*) FROM acct") == ACCOUNTS ? SQLITE_OK : SQLITE_BUSY;
        }
        if (write(res[1], rc, sizeof rc) != sizeof rc) _exit(3);
        sqlite3_close(s);
        _exit(0);
    }
    int rc[4] = {0, 0, 0, 0};
    CHECK(read(res[0], rc, sizeof rc) == sizeof rc);
    CHECK(child_wait(st) == 0);
    int kept_out = lock_error(rc[0]) && lock_error(rc[1]) && lock_error(rc[2]) && lock_error(rc[3]);
    if (!kept_out)
        fprintf(stderr, "stock connection at '%s' (%s): read %d, write %d, checkpoint %d, read again %d\n", point,
                join ? "joining" : "first", rc[0], rc[1], rc[2], rc[3]);
    CHECK(kept_out);
    CHECK(file_sum(path) == before && file_sum(wal) == wal_before); /* it wrote nothing */
    CHECK(write(resume[1], "r", 1) == 1);
    CHECK(child_wait(sh) == 0); /* the shim connection carries on */
    if (join) {
        close(rel);
        CHECK(child_wait(h) == 0);
    }
    close(note[0]), close(resume[1]), close(res[0]), close(res[1]);
    db = open_db(path, "tshm");
    CHECK(scalar(db, "SELECT count(*) FROM acct") == ACCOUNTS + 1);
    CHECK(scalar(db, "SELECT sum(bal) FROM acct") == ACCOUNTS * 1000);
    CHECK(integrity_ok(db));
    sqlite3_close(db);
    /* everyone gone: stock SQLite reads the same, intact database */
    sqlite3 *s = open_db(path, "unix");
    CHECK(scalar(s, "SELECT count(*) FROM acct") == ACCOUNTS + 1);
    CHECK(integrity_ok(s));
    sqlite3_close(s);
}

static void stock_in_guard_windows(void) {
    const char *points[] = {"dms", "checked"};
    for (int i = 0; i < 2; i++)
        for (int join = 0; join < 2; join++) {
            char name[64];
            snprintf(name, sizeof name, "window-%s-%d.db", points[i], join);
            stock_in_guard_window(test_db(name), points[i], join);
        }
}

/* ------------------------------------------------------------------------------------------ */
/* 7. Read-only connections read a WAL database through the shim while writers commit         */

/* Reads the bank in read transactions until done_fd reports EOF, then once more: every
 * snapshot consistent, later transactions see later commits, the last sees all `total`. */
static int ro_reader(const char *uri, int flags, int done_fd, int64_t total) {
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(uri, &db, flags | SQLITE_OPEN_URI, "tshm") != SQLITE_OK) {
        fprintf(stderr, "read-only open %s: %s\n", uri, db ? sqlite3_errmsg(db) : "?");
        return 1;
    }
    sqlite3_busy_timeout(db, 20000);
    int bad = 0, reads = 0, retries = 0, last = 0;
    int64_t seen = -1, distinct = 0;
    for (;;) {
        char c;
        if (!last && read(done_fd, &c, 1) == 0) last = 1; /* non-blocking: EOF once the writer is done */
        int e = 0; /* the first error of this transaction */
        int rc = exec(db, "BEGIN");
        if (rc != SQLITE_OK) e = sqlite3_extended_errcode(db);
        int64_t v[4];
        const char *q[4] = {"SELECT sum(bal) FROM acct", "SELECT count(*) FROM log", "SELECT transfers FROM meta",
                            "SELECT sum(bal) FROM acct"};
        for (int i = 0; i < 4; i++)
            if ((v[i] = scalar(db, q[i])) < 0 && e == 0) e = sqlite3_extended_errcode(db);
        int end = exec(db, "COMMIT");
        if (end != SQLITE_OK && e == 0) e = sqlite3_extended_errcode(db);
        int64_t sum = v[0], logs = v[1], transfers = v[2], again = v[3];
        if (rc != SQLITE_OK || end != SQLITE_OK || sum < 0 || logs < 0 || transfers < 0 || again < 0) {
            /* what stock SQLite's read-only connections also meet while a writer updates the
             * header or attaches: BUSY, READONLY_RECOVERY; retried as an application would.
             * And READONLY_CANTINIT: a connection that cannot write the wal-index can only use
             * a read mark a writable connection left at or below its snapshot; when a writer
             * commits and moves the only usable mark past the header this connection has just
             * read, SQLite finds none and returns it from the read transaction (the same with
             * stock SQLite and readonly_shm); the next attempt reads the newer header */
            if (primary(e) != SQLITE_BUSY && e != SQLITE_READONLY_RECOVERY && e != SQLITE_READONLY_CANTINIT) {
                fprintf(stderr, "read-only reader: %s (%d)\n", sqlite3_errstr(e), e);
                bad++;
                break;
            }
            exec(db, "ROLLBACK");
            if (++retries > 100000) { bad++; break; }
            continue;
        }
        if (sum != ACCOUNTS * 1000 || again != sum || logs != transfers || transfers < seen) {
            fprintf(stderr, "read-only reader: sum %lld/%lld, log %lld, transfers %lld after %lld\n", (long long)sum,
                    (long long)again, (long long)logs, (long long)transfers, (long long)seen);
            bad++;
        }
        if (transfers != seen) distinct++;
        seen = transfers;
        reads++;
        if (last) break;
    }
    if (seen != total) fprintf(stderr, "read-only reader saw %lld transfers, expected %lld\n", (long long)seen, (long long)total);
    if (distinct < 2) fprintf(stderr, "read-only reader never saw a new commit (%d reads)\n", reads);
    sqlite3_close(db);
    return bad == 0 && seen == total && distinct >= 2 ? 0 : 1;
}

/* A writer process: `n` transfers, reporting after the first `first` are committed. */
static pid_t bank_writer(const char *path, int w, int first, int n, int started_fd) {
    pid_t pid = fork();
    if (pid == 0) {
        sqlite3 *me = open_db(path, "tshm");
        uint64_t seed = (uint64_t)w * 31 + 7;
        int rc = 0;
        for (int i = 0; i < n && rc == 0; i++) {
            rc = transfer(me, w, i, &seed);
            if (i + 1 == first && started_fd >= 0 && write(started_fd, "w", 1) != 1) _exit(3);
        }
        if (rc) fprintf(stderr, "writer %d: %s\n", w, sqlite3_errmsg(me));
        sqlite3_close(me);
        _exit(rc != 0);
    }
    return pid;
}

/* Readers opened as `uri` with `flags` (as user `uid`/`gid` when uid != 0) while a writer
 * commits; `base` transfers were committed before. */
static void readers_during_writes(const char *path, const char *uri[], const int flags[], int nreaders, uid_t uid,
                                  gid_t gid, int64_t base) {
    enum { N = 120 };
    int done[2], started[2];
    if (pipe2(done, O_NONBLOCK) != 0 || pipe(started) != 0) exit(2);
    pid_t w = bank_writer(path, 7, 5, N, started[1]);
    char c;
    CHECK(read(started[0], &c, 1) == 1); /* some commits are in before the readers start */
    pid_t r[4];
    for (int i = 0; i < nreaders; i++)
        if ((r[i] = fork()) == 0) {
            close(done[1]);
            if (uid != 0 && (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0)) _exit(4);
            if (uid != 0 && (access(path, W_OK) == 0 || geteuid() != uid)) _exit(5);
            _exit(ro_reader(uri[i], flags[i], done[0], base + N));
        }
    CHECK(child_wait(w) == 0);
    close(done[1]);
    for (int i = 0; i < nreaders; i++) {
        int code = child_wait(r[i]);
        if (code != 0) fprintf(stderr, "read-only reader %s exited %d\n", uri[i], code);
        CHECK(code == 0);
    }
    close(done[0]), close(started[0]), close(started[1]);
}

static void readonly_writable_db(const char *path) {
    sqlite3 *db = fresh(path);
    setup_bank(db);
    sqlite3_close(db);
    char ro[700];
    snprintf(ro, sizeof ro, "file:%s?mode=ro", path);
    const char *uri[] = {ro, path};
    const int flags[] = {SQLITE_OPEN_READONLY, SQLITE_OPEN_READONLY};
    readers_during_writes(path, uri, flags, 2, 0, 0, 0);
    db = open_db(path, "tshm");
    CHECK(scalar(db, "SELECT transfers FROM meta") == 120);
    CHECK(integrity_ok(db));
    sqlite3_close(db);
}

/* The uid/gid of an unprivileged user for the read-only tests (created if needed), or -1. */
static int test_user(uid_t *uid, gid_t *gid) {
    const char *name = "tshm-ro";
    struct passwd *pw = getpwnam(name);
    if (pw == NULL && geteuid() == 0 && access("/usr/sbin/useradd", X_OK) == 0) {
        char cmd[200];
        snprintf(cmd, sizeof cmd, "/usr/sbin/useradd --system --no-create-home --shell /usr/sbin/nologin %s", name);
        if (system(cmd) != 0) return -1;
        pw = getpwnam(name);
    }
    if (pw == NULL || pw->pw_uid == 0) return -1;
    *uid = pw->pw_uid;
    *gid = pw->pw_gid;
    return 0;
}

/* As a user who can write neither the directory nor the files (-shm and -tshm included).
 * With `hold`, a writable shim connection stays attached from the end of (a)'s lone read to
 * the end of (b): the reader of (a) moves from its own index to the shared one while that
 * connection is there, and every reader uses the shared regions throughout. */
static void readonly_other_user(const char *base, int hold) {
    uid_t uid;
    gid_t gid;
    if (geteuid() != 0 || test_user(&uid, &gid) != 0) {
        printf("  SKIPPED read-only reader as another user: needs root and useradd\n");
        return;
    }
    char dir[600], path[700];
    snprintf(dir, sizeof dir, "%s-dir", base);
    mkdir(dir, 0755);
    chmod(dir, 0755);
    snprintf(path, sizeof path, "%s/ro.db", dir);
    sqlite3 *db = fresh(path);
    setup_bank(db);
    exec(db, "PRAGMA wal_autocheckpoint=0");
    uint64_t seed = 3;
    for (int i = 0; i < 10; i++) CHECK(transfer(db, 9, i, &seed) == 0);
    sqlite3_close(db);
    /* (a) nobody attached, the WAL holds committed frames a checkpoint has not copied (the
     *     last process was killed): the reader builds its own index from the WAL, as stock
     *     SQLite does, and switches to the shared one once a writer attaches */
    int rel;
    pid_t keep = holder(path, "tshm", &rel); /* keeps the last close from checkpointing */
    pid_t w = bank_writer(path, 8, 0, 10, -1);
    CHECK(child_wait(w) == 0);
    child_kill(keep);
    close(rel);
    char wal[800];
    snprintf(wal, sizeof wal, "%s-wal", path);
    struct stat st;
    CHECK(stat(wal, &st) == 0 && st.st_size > 0);
    const char *uri[] = {path, path};
    const int flags[] = {SQLITE_OPEN_READWRITE, SQLITE_OPEN_READONLY}; /* READWRITE falls back */
    int done[2];
    if (pipe2(done, O_NONBLOCK) != 0) exit(2);
    int gate[2];
    if (pipe(gate) != 0) exit(2);
    pid_t r = fork();
    if (r == 0) {
        close(done[1]);
        close(gate[0]);
        if (setgroups(0, NULL) != 0 || setgid(gid) != 0 || setuid(uid) != 0) _exit(4);
        if (access(path, W_OK) == 0 || access(dir, W_OK) == 0) _exit(5);
        sqlite3 *me = NULL;
        if (sqlite3_open_v2(path, &me, SQLITE_OPEN_READONLY, "tshm") != SQLITE_OK) _exit(6);
        int ok = scalar(me, "SELECT transfers FROM meta") == 20 && scalar(me, "SELECT count(*) FROM log") == 20 &&
                 scalar(me, "SELECT sum(bal) FROM acct") == ACCOUNTS * 1000;
        if (!ok) fprintf(stderr, "read-only reader alone: %s\n", sqlite3_errmsg(me));
        if (write(gate[1], &ok, sizeof ok) != sizeof ok) _exit(3);
        sqlite3_close(me);
        _exit(ro_reader(path, SQLITE_OPEN_READONLY, done[0], 20 + 120) || !ok);
    }
    close(gate[1]);
    int ok = 0;
    CHECK(read(gate[0], &ok, sizeof ok) == sizeof ok && ok);
    close(gate[0]);
    keep = hold ? holder(path, "tshm", &rel) : -1;
    w = bank_writer(path, 6, 0, 120, -1);
    CHECK(child_wait(w) == 0);
    close(done[1]);
    CHECK(child_wait(r) == 0);
    close(done[0]);
    /* (b) readers as that user while a root writer commits */
    readers_during_writes(path, uri, flags, 2, uid, gid, 140);
    if (hold) {
        close(rel);
        CHECK(child_wait(keep) == 0);
    }
    db = open_db(path, "tshm");
    CHECK(scalar(db, "SELECT transfers FROM meta") == 260);
    CHECK(integrity_ok(db));
    sqlite3_close(db);
}

/* ------------------------------------------------------------------------------------------ */
/* 8. A connection killed at each of the shim's stop points                                    */

/* The shim connection dies (TSHM_SQLITE_TEST_STOP=<point>:kill) inside its guard or where it
 * creates a wal-index region, as the first connection or joining a shim holder; the database
 * stays intact and usable, by the shim and afterwards by stock SQLite. */
static void killed_in_shim(const char *path, const char *point, int join) {
    sqlite3 *db = fresh(path);
    setup_bank(db);
    sqlite3_close(db);
    int rel = -1;
    pid_t h = join ? holder(path, "tshm", &rel) : -1;
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        char env[64];
        snprintf(env, sizeof env, "%s:kill", point);
        setenv("TSHM_SQLITE_TEST_STOP", env, 1);
        sqlite3 *me = open_db(path, "tshm");
        exec(me, "INSERT INTO acct VALUES(5000, 0)");
        _exit(0);
    }
    int st = child_wait(kid);
    if (st != 128 + SIGKILL)
        fprintf(stderr, "shim point '%s' (%s): the connection ended with %d, not killed there\n", point,
                join ? "joining" : "first", st);
    CHECK(st == 128 + SIGKILL);
    db = open_db(path, "tshm");
    CHECK(db != NULL);
    if (db == NULL) return;
    CHECK(scalar(db, "SELECT count(*) FROM acct") == ACCOUNTS); /* killed before its commit */
    CHECK_RC(exec(db, "INSERT INTO acct VALUES(6000, 0)"), SQLITE_OK);
    CHECK(scalar(db, "SELECT sum(bal) FROM acct") == ACCOUNTS * 1000);
    CHECK(integrity_ok(db));
    sqlite3_close(db);
    if (join) {
        close(rel);
        CHECK(child_wait(h) == 0);
    }
    sqlite3 *s = open_db(path, "unix"); /* everyone gone: stock SQLite reads the same */
    CHECK(s != NULL && scalar(s, "SELECT count(*) FROM acct") == ACCOUNTS + 1);
    CHECK(s != NULL && integrity_ok(s));
    sqlite3_close(s);
}

static void killed_in_shim_points(void) {
    const char *points[] = {"locked", "dms_won", "dms", "checked", "region"};
    for (int i = 0; i < 5; i++)
        for (int join = 0; join < 2; join++) {
            /* only the first connection wins the switch and creates the region */
            if (join && (strcmp(points[i], "dms_won") == 0 || strcmp(points[i], "region") == 0)) continue;
            char name[64];
            snprintf(name, sizeof name, "killed-%s-%d.db", points[i], join);
            killed_in_shim(test_db(name), points[i], join);
        }
}

/* ------------------------------------------------------------------------------------------ */
/* 8. Waiting for the write lock: handed over on release, bounded, ended by a dead holder, and  */
/*    stepping aside for a checkpoint that waits for read marks                                 */

/* A connection in a child process: runs each statement it is sent (one a line) and answers
 * with the result code and the first column of the first row (-1 when none). Busy timeout 0:
 * any wait is the shim's. */
typedef server actor;

typedef struct {
    int rc;
    int64_t value;
} actor_reply;

static void actor_serve(int in, int out, void *ctx) {
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(ctx, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_URI, "tshm") != SQLITE_OK)
        _exit(2);
    char line[512];
    while (read_line(in, line, sizeof line)) {
        actor_reply rep = {SQLITE_OK, -1};
        sqlite3_stmt *st = NULL;
        rep.rc = sqlite3_prepare_v2(db, line, -1, &st, NULL);
        int first = 1;
        while (rep.rc == SQLITE_OK || rep.rc == SQLITE_ROW) {
            rep.rc = sqlite3_step(st);
            if (rep.rc == SQLITE_ROW && first) rep.value = sqlite3_column_int64(st, 0), first = 0;
            if (rep.rc == SQLITE_DONE) rep.rc = SQLITE_OK;
            if (rep.rc != SQLITE_ROW) break;
        }
        if (rep.rc != SQLITE_OK && getenv("TEST_VERBOSE"))
            fprintf(stderr, "  [%d] %s: %d (%d) %s\n", (int)getpid(), line, rep.rc, sqlite3_extended_errcode(db),
                    sqlite3_errmsg(db));
        sqlite3_finalize(st);
        if (write(out, &rep, sizeof rep) != sizeof rep) _exit(3);
    }
    sqlite3_close(db);
}

static actor actor_start(const char *uri) {
    return server_start(actor_serve, (void *)uri, 120);
}

static void actor_send(actor *a, const char *sql) {
    if (write(a->cmd, sql, strlen(sql)) < 0 || write(a->cmd, "\n", 1) != 1) exit(2);
}

static actor_reply actor_result(actor *a) {
    actor_reply rep = {-1, -1};
    if (read(a->res, &rep, sizeof rep) != sizeof rep) rep.rc = -1;
    return rep;
}

static int actor_run(actor *a, const char *sql) {
    actor_send(a, sql);
    return actor_result(a).rc;
}

static void actor_stop(actor *a) {
    CHECK(server_stop(a) == 0);
}

/* Whether a connection is queued for the write lock now: an instance record with a writer
 * ticket (shared-memory roles; header: instances offset at byte 40, high-water mark at 632;
 * record: 128 bytes, ticket at +32), or the writer waiter count (u32 at byte 200; byte-lock
 * roles). Not the role word's waiters bit: it outlives a waiter that gave up. */
static int write_lock_waited_for(const char *path) {
    uint64_t inst = 0, t = 0;
    uint32_t hwm = 0, n = 0;
    int fd = open(sidecar_of(path), O_RDONLY | O_CLOEXEC);
    int queued = 0;
    if (fd >= 0 && pread(fd, &inst, sizeof inst, 40) == sizeof inst && pread(fd, &hwm, sizeof hwm, 632) == sizeof hwm &&
        pread(fd, &n, sizeof n, 200) == sizeof n) {
        queued = n != 0;
        for (uint32_t i = 0; i < hwm && i < 64 && !queued; i++)
            queued = pread(fd, &t, sizeof t, (off_t)(inst + 128u * i + 32u)) == sizeof t && t != 0;
    }
    if (fd >= 0) close(fd);
    return queued;
}

/* Waits (30 s at most: a failure, not a hang) until process `pid` holds the write lock
 * (libtshm's writer role). */
static void until_write_lock_held_by(tshm *h, pid_t pid) {
    for (double end = now_ms() + 30000; now_ms() < end; sched_yield()) {
        tshm_owner_info o;
        if (tshm_owner(h, TSHM_ROLE_WRITER, &o) == TSHM_OK && o.alive && o.pid == (uint32_t)pid) return;
    }
    CHECK(!"the write lock was taken by the expected process");
}

static void until_write_lock_waited_for(const char *path) {
    for (double end = now_ms() + 30000; now_ms() < end; sched_yield())
        if (write_lock_waited_for(path)) return;
    CHECK(!"a connection queued for the write lock");
}

static void write_lock_waits(const char *path) {
    sqlite3 *db = fresh(path);
    CHECK_RC(exec(db, "CREATE TABLE t(x)"), SQLITE_OK);
    sqlite3_close(db);
    char waiting[700], brief[700];
    snprintf(waiting, sizeof waiting, "file:%s?tshm_wait_ms=60000", path);
    snprintf(brief, sizeof brief, "file:%s?tshm_wait_ms=50", path);

    /* Handed over: B waits in BEGIN IMMEDIATE while C holds the lock and gets it at C's commit.
     * SQLite before 3.42 without SETLK_TIMEOUT began its read transaction before it asked for
     * the lock, so it finds its snapshot stale (SQLITE_BUSY_SNAPSHOT), lets go and retries
     * through its busy handler: B has one (1 s). */
    actor c = actor_start(path), b = actor_start(waiting), q = actor_start(brief);
    CHECK_RC(actor_run(&b, "PRAGMA busy_timeout=1000"), SQLITE_OK);
    CHECK_RC(actor_run(&c, "BEGIN IMMEDIATE"), SQLITE_OK);
    CHECK_RC(actor_run(&c, "INSERT INTO t VALUES(1)"), SQLITE_OK);
    CHECK_RC(actor_run(&q, "BEGIN IMMEDIATE"), SQLITE_BUSY); /* bounded: 50 ms, then BUSY */
    actor_send(&b, "BEGIN IMMEDIATE");
    until_write_lock_waited_for(path);
    CHECK_RC(actor_run(&c, "COMMIT"), SQLITE_OK);
    CHECK_RC(actor_result(&b).rc, SQLITE_OK);
    CHECK_RC(actor_run(&b, "INSERT INTO t VALUES(2)"), SQLITE_OK);
    CHECK_RC(actor_run(&b, "COMMIT"), SQLITE_OK);

    /* A holder killed in its transaction: the waiter gets the lock (within a wait slice), and
     * the killed transaction left nothing. */
    CHECK_RC(actor_run(&c, "BEGIN IMMEDIATE"), SQLITE_OK);
    CHECK_RC(actor_run(&c, "INSERT INTO t VALUES(99)"), SQLITE_OK);
    actor_send(&b, "BEGIN IMMEDIATE");
    until_write_lock_waited_for(path);
    child_kill(c.pid);
    close(c.cmd);
    close(c.res);
    CHECK_RC(actor_result(&b).rc, SQLITE_OK);
    CHECK_RC(actor_run(&b, "INSERT INTO t VALUES(3)"), SQLITE_OK);
    CHECK_RC(actor_run(&b, "COMMIT"), SQLITE_OK);
    actor_stop(&b);
    actor_stop(&q);
    db = open_db(path, "tshm");
    CHECK(scalar(db, "SELECT count(*) FROM t") == 3);
    CHECK(scalar(db, "SELECT count(*) FROM t WHERE x = 99") == 0);
    CHECK(integrity_ok(db));
    sqlite3_close(db);
}

/* A FULL, RESTART or TRUNCATE checkpoint holds the write lock and waits (its busy handler,
 * 5 s) for the read marks below the end of the WAL (RESTART and TRUNCATE: for every one). R
 * holds such a read mark (another connection committed after R's read began) and then asks
 * for the write lock, willing to wait 60 s (SQLite takes the write lock before it finds its
 * snapshot stale): it must step aside (SQLITE_BUSY) so that R's application rolls back and the
 * checkpoint completes, instead of the two waiting on each other until the checkpoint gives
 * up. */
static void checkpoint_waits_for_readers(const char *path, const char *mode) {
    sqlite3 *db = fresh(path);
    CHECK_RC(exec(db, "PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x)"), SQLITE_OK);
    for (int i = 0; i < 20; i++) exec(db, "INSERT INTO t VALUES(randomblob(3000))");
    sqlite3_close(db);
    char waiting[700], sql[100];
    snprintf(waiting, sizeof waiting, "file:%s?tshm_wait_ms=60000", path);
    snprintf(sql, sizeof sql, "PRAGMA wal_checkpoint(%s)", mode);
    actor r = actor_start(waiting), a = actor_start(path);
    CHECK_RC(actor_run(&r, "PRAGMA wal_autocheckpoint=0"), SQLITE_OK);
    CHECK_RC(actor_run(&r, "BEGIN"), SQLITE_OK);
    CHECK_RC(actor_run(&r, "SELECT count(*) FROM t"), SQLITE_OK); /* a read mark, held */
    tshm *h = NULL; /* to see who holds the write lock */
    CHECK_RC(tshm_open(path, NULL, &h), TSHM_OK);
    if (h == NULL) return;
    db = open_db(path, "tshm");
    CHECK_RC(exec(db, "INSERT INTO t VALUES(0)"), SQLITE_OK); /* R's mark is now below the end */
    sqlite3_close(db);
    CHECK_RC(actor_run(&a, "PRAGMA busy_timeout=5000"), SQLITE_OK);
    actor_send(&a, sql);
    until_write_lock_held_by(h, a.pid);
    int rc = actor_run(&r, "INSERT INTO t VALUES(1)");
    CHECK(primary(rc) == SQLITE_BUSY); /* stepped aside */
    CHECK_RC(actor_run(&r, "ROLLBACK"), SQLITE_OK);
    actor_reply done = actor_result(&a);
    CHECK_RC(done.rc, SQLITE_OK);
    if (done.value != 0) fprintf(stderr, "  wal_checkpoint(%s) reported busy %lld\n", mode, (long long)done.value);
    CHECK(done.value == 0); /* completed, not given up */
    CHECK_RC(actor_run(&r, "INSERT INTO t VALUES(2)"), SQLITE_OK); /* and the writer goes on */
    actor_stop(&r);
    actor_stop(&a);
    tshm_close(h, NULL);
    db = open_db(path, "tshm");
    CHECK(scalar(db, "SELECT count(*) FROM t") == 22);
    CHECK(integrity_ok(db));
    sqlite3_close(db);
}

/* ------------------------------------------------------------------------------------------ */
/* 9. The inspector's SQLite section on a live database: the wal-index header, read marks and */
/*    SQLite's lock slots by name, as SQLite and the processes holding them see them           */

/* The value of `"key": ` in the JSON text at or after `from` (an object or array whole, with
 * its brackets): a copy the caller frees, or NULL when the key is not there. */
static char *json_member(const char *from, const char *key) {
    char pat[80];
    snprintf(pat, sizeof pat, "\"%s\": ", key);
    const char *p = from ? strstr(from, pat) : NULL;
    if (p == NULL) return NULL;
    p += strlen(pat);
    const char *e = p;
    if (*p == '{' || *p == '[') {
        for (int depth = 0; *e; e++) {
            if (*e == '{' || *e == '[') depth++;
            else if ((*e == '}' || *e == ']') && --depth == 0) { e++; break; }
        }
    } else {
        while (*e && *e != ',' && *e != '\n') e++;
    }
    return strndup(p, (size_t)(e - p));
}

/* The number at `"key": ` in `obj` (-1 when absent or not a number). */
static int64_t json_int(const char *obj, const char *key) {
    char *v = json_member(obj, key), *end = NULL;
    int64_t n = v ? strtoll(v, &end, 10) : -1;
    if (v && end == v) n = -1;
    free(v);
    return n;
}

/* Whether `"key": ` in `obj` is `true`. */
static int json_true(const char *obj, const char *key) {
    char *v = json_member(obj, key);
    int t = v && strcmp(v, "true") == 0;
    free(v);
    return t;
}

/* Whether the JSON list `list` names process `pid`. */
static int json_lists_pid(const char *list, pid_t pid) {
    char pat[40];
    snprintf(pat, sizeof pat, "\"pid\": %d", (int)pid);
    for (const char *p = list; p && (p = strstr(p, pat)) != NULL; p++)
        if (p[strlen(pat)] < '0' || p[strlen(pat)] > '9') return 1;
    return 0;
}

/* The output of `$TSHM_BIN inspect [--json] path` (the caller frees), or NULL. */
static char *inspect_output(const char *path, int json) {
    char cmd[1200];
    snprintf(cmd, sizeof cmd, "%s inspect %s%s", tshm_bin, json ? "--json " : "", path);
    FILE *p = popen(cmd, "r");
    if (p == NULL) return NULL;
    size_t cap = 1 << 16, n = 0;
    char *out = malloc(cap);
    size_t got;
    while (out && (got = fread(out + n, 1, cap - 1 - n, p)) > 0) {
        n += got;
        if (n + 1 == cap) {
            char *bigger = realloc(out, cap *= 2);
            if (bigger == NULL) { free(out); out = NULL; }
            else out = bigger;
        }
    }
    if (out) out[n] = 0;
    int status = pclose(p);
    CHECK(status == 0);
    return out;
}

/* Frames in the WAL file of `path`, from its length (4096-byte pages). */
static int64_t wal_frames(const char *path) {
    char wal[600];
    struct stat st;
    snprintf(wal, sizeof wal, "%s-wal", path);
    if (stat(wal, &st) != 0 || st.st_size < 32) return 0;
    return (st.st_size - 32) / (24 + 4096);
}

/* R reads at the WAL's end after four commits and keeps its read transaction while a fifth
 * commit lands; a PASSIVE checkpoint then backfills up to R's read mark. W holds the write
 * lock (BEGIN IMMEDIATE) and Q waits for it. The inspector, a process of its own, must show
 * what SQLite reports: mxFrame the WAL's frames (the checkpoint's log size), nBackfill the
 * frames it checkpointed, R holding a READ slot SHARED whose mark is the frame R reads up to,
 * WRITE held by W with Q waiting, and the wal-index salts those of the WAL file. */
static void inspector_shows_sqlite(const char *path) {
    sqlite3 *db = fresh(path);
    CHECK_RC(exec(db, "PRAGMA wal_autocheckpoint=0; CREATE TABLE t(x)"), SQLITE_OK);
    for (int i = 0; i < 4; i++) CHECK_RC(exec(db, "INSERT INTO t VALUES(randomblob(100))"), SQLITE_OK);
    char waiting[700];
    snprintf(waiting, sizeof waiting, "file:%s?tshm_wait_ms=60000", path);
    actor r = actor_start(path), w = actor_start(path), q = actor_start(waiting);
    CHECK_RC(actor_run(&r, "BEGIN"), SQLITE_OK);
    CHECK_RC(actor_run(&r, "SELECT count(*) FROM t"), SQLITE_OK); /* a read mark, held */
    int64_t mark = wal_frames(path);
    CHECK_RC(exec(db, "INSERT INTO t VALUES(randomblob(100))"), SQLITE_OK);
    int64_t frames = wal_frames(path);
    CHECK(frames > mark && mark > 0);
    sqlite3_stmt *st = NULL;
    int64_t busy = -1, log = -1, ckpt = -1;
    if (sqlite3_prepare_v2(db, "PRAGMA wal_checkpoint(PASSIVE)", -1, &st, NULL) == SQLITE_OK &&
        sqlite3_step(st) == SQLITE_ROW) {
        busy = sqlite3_column_int64(st, 0);
        log = sqlite3_column_int64(st, 1);
        ckpt = sqlite3_column_int64(st, 2);
    }
    sqlite3_finalize(st);
    CHECK(busy == 0 && log == frames && ckpt == mark); /* R's mark holds the checkpoint back */
    CHECK_RC(actor_run(&w, "BEGIN IMMEDIATE"), SQLITE_OK);
    actor_send(&q, "BEGIN IMMEDIATE");
    until_write_lock_waited_for(path);

    char *out = inspect_output(path, 1);
    char *sq = json_member(out, "sqlite");
    CHECK(sq != NULL && strcmp(sq, "null") != 0);
    char *wi = json_member(sq, "wal_index"), *locks = json_member(sq, "locks");
    CHECK(json_int(wi, "version") == 3007000);
    CHECK(json_int(wi, "max_frame") == log);
    CHECK(json_int(wi, "nbackfill") == ckpt);
    CHECK(json_int(wi, "page_size") == 4096);
    CHECK(json_true(wi, "copies_agree") && json_true(wi, "checksum_ok"));
    CHECK(json_true(sq, "salts_match"));
    char *write = json_member(locks, "WRITE");
    char *holder = json_member(write, "holder");
    CHECK(json_int(holder, "pid") == w.pid && json_true(holder, "alive"));
    char *waiters = json_member(write, "waiters");
    CHECK(seed_strategies() ? json_int(write, "announced_waiters") == 1 : json_lists_pid(waiters, q.pid));
    int found = 0;
    for (int i = 0; i < 5; i++) {
        char name[16];
        snprintf(name, sizeof name, "READ%d", i);
        char *slot = json_member(locks, name), *shared = json_member(slot, "shared");
        if (json_lists_pid(shared, r.pid) && json_int(slot, "mark") == mark) found = 1;
        free(shared);
        free(slot);
    }
    CHECK(found); /* R's READ slot, SHARED, with R's mark */
    int ok = sq && json_int(wi, "max_frame") == log && found;
    if (!ok || getenv("TEST_VERBOSE")) {
        char *text = inspect_output(path, 0);
        fprintf(stderr, "mark %lld, frames %lld, checkpointed %lld; R %d, W %d, Q %d\n%s%s\n", (long long)mark,
                (long long)log, (long long)ckpt, (int)r.pid, (int)w.pid, (int)q.pid, text ? text : "",
                ok ? "" : (sq ? sq : out ? out : ""));
        free(text);
    }
    free(waiters);
    free(holder);
    free(write);
    free(locks);
    free(wi);
    free(sq);
    free(out);

    CHECK_RC(actor_run(&w, "ROLLBACK"), SQLITE_OK);
    CHECK_RC(actor_result(&q).rc, SQLITE_OK); /* handed the write lock */
    CHECK_RC(actor_run(&q, "ROLLBACK"), SQLITE_OK);
    CHECK_RC(actor_run(&r, "COMMIT"), SQLITE_OK);
    actor_stop(&q);
    actor_stop(&w);
    actor_stop(&r);
    CHECK(scalar(db, "SELECT count(*) FROM t") == 5);
    sqlite3_close(db);
}

static void watchdog_fired(int sig) {
    (void)sig;
    static const char msg[] = "FAIL watchdog: test_sqlite hung\n";
    if (write(2, msg, sizeof msg - 1) < 0) {}
    _exit(99);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    signal(SIGALRM, watchdog_fired);
    alarm(900);
    ext = getenv("TSHM_SQLITE_EXT");
    cli = getenv("SQLITE3") ? getenv("SQLITE3") : "sqlite3";
    tshm_bin = getenv("TSHM_BIN") ? getenv("TSHM_BIN") : "build/bin/tshm";
    if (ext == NULL) {
        fprintf(stderr, "set TSHM_SQLITE_EXT to libtshm_sqlite.so\n");
        return 2;
    }
    load_shim();
    CHECK(sqlite3_vfs_find("tshm") != NULL);
    register_stock_fast();
    double t = now_ms();
    shmlock_table(test_db("shmlock.db"));
    printf("  xShmLock table, one process and three: %.0f ms\n", now_ms() - t);
    t = now_ms();
    many_processes(test_db("many.db"));
    printf("  %d writer processes x %d transactions, 2 readers, 8 checkpoints: %.0f ms\n", WRITERS, TXNS, now_ms() - t);
    t = now_ms();
    killed_writer(test_db("killed.db"));
    printf("  writer killed mid-transaction: %.0f ms\n", now_ms() - t);
    t = now_ms();
    stock_is_kept_out(test_db("stock.db"));
    printf("  stock SQLite kept out, both orders: %.0f ms\n", now_ms() - t);
    t = now_ms();
    last_close_and_cli(test_db("cli.db"));
    printf("  last close, inspector, sqlite3 shell: %.0f ms\n", now_ms() - t);
    t = now_ms();
    stock_in_guard_windows();
    printf("  stock SQLite inside the guard's steps, first and joining: %.0f ms\n", now_ms() - t);
    t = now_ms();
    readonly_writable_db(test_db("rw-ro.db"));
    printf("  mode=ro and SQLITE_OPEN_READONLY readers during writes: %.0f ms\n", now_ms() - t);
    t = now_ms();
    readonly_other_user(test_db("other"), 0);
    printf("  read-only reader as another user, alone and during writes: %.0f ms\n", now_ms() - t);
    t = now_ms();
    readonly_other_user(test_db("other-held"), 1);
    printf("  the same with a writable connection attached throughout: %.0f ms\n", now_ms() - t);
    t = now_ms();
    killed_in_shim_points();
    printf("  a connection killed at each shim stop point, first and joining: %.0f ms\n", now_ms() - t);
    t = now_ms();
    write_lock_waits(test_db("wait.db"));
    printf("  the write lock handed to a waiter, bounded, and past a killed holder: %.0f ms\n", now_ms() - t);
    t = now_ms();
    checkpoint_waits_for_readers(test_db("ckpt-full.db"), "FULL");
    checkpoint_waits_for_readers(test_db("ckpt-restart.db"), "RESTART");
    checkpoint_waits_for_readers(test_db("ckpt-truncate.db"), "TRUNCATE");
    printf("  FULL, RESTART, TRUNCATE checkpoints and a waiting writer with a read mark: %.0f ms\n", now_ms() - t);
    t = now_ms();
    inspector_shows_sqlite(test_db("inspect.db"));
    printf("  the inspector's SQLite section: header, read marks, lock holders: %.0f ms\n", now_ms() - t);
    return harness_done("test_sqlite");
}
