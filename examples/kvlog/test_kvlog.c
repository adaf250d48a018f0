/*
 * test_kvlog.c — the example engine: single-process correctness against a model, the bank
 * workload across processes, SIGKILL of a writer, a reader and a checkpointer at named points,
 * reopening after every process died (the index rebuilt from the WAL), recovery that must
 * not bring back a transaction whose writer died or failed before publishing its commit, and
 * commits that follow a checkpointer's death in the middle of a WAL restart.
 *
 * Processes are the kvlog binary (KVLOG_BIN) exec'd with `bank` roles; victims stop at their
 * named point (KVLOG_STOP_AT), report through a pipe, and are killed there.
 */
#include "harness.h"

#include "bank.h"
#include "kvlog.h"

static const char *kvlog_bin;

static void remove_db(const char *db) {
    char p[700];
    unlink(db);
    snprintf(p, sizeof p, "%s-wal", db);
    unlink(p);
    snprintf(p, sizeof p, "%s-tshm", db);
    unlink(p);
}

/* ------------------------------------------------------------------------------------------ */
/* 1. One process against a model                                                              */

#define KEYS 300
static char model[KEYS][64];
static int present[KEYS];

static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int model_matches(kvlog *db) {
    int bad = 0;
    CHECK_RC(kv_begin_read(db), KV_OK);
    for (int k = 0; k < KEYS; k++) {
        char key[16], val[64];
        size_t n = 0;
        snprintf(key, sizeof key, "k%d", k);
        int rc = kv_get(db, key, val, sizeof val, &n);
        if (present[k] ? rc != KV_OK || n != strlen(model[k]) || memcmp(val, model[k], n) != 0
                       : rc != KV_NOTFOUND)
            bad++;
    }
    kv_end_read(db);
    return bad == 0;
}

static void single_process_model(const char *db) {
    remove_db(db);
    memset(present, 0, sizeof present);
    kv_config cfg = {.page_size = 1024, .buckets = 16, .spill = 1};
    kvlog *h;
    CHECK_RC(kv_open(db, &cfg, &h), KV_OK);
    uint64_t seed = 42;
    int commits = 0, rollbacks = 0;
    for (int t = 0; t < 400; t++) {
        char saved[KEYS][64];
        int saved_p[KEYS];
        memcpy(saved, model, sizeof model);
        memcpy(saved_p, present, sizeof present);
        CHECK_RC(kv_begin_write(h, 1000), KV_OK);
        int ops = 1 + (int)(rnd(&seed) % 8);
        for (int i = 0; i < ops; i++) {
            int k = (int)(rnd(&seed) % KEYS);
            char key[16];
            snprintf(key, sizeof key, "k%d", k);
            if (rnd(&seed) % 4 == 0) {
                int rc = kv_del(h, key);
                CHECK(rc == (present[k] ? KV_OK : KV_NOTFOUND));
                present[k] = 0;
            } else {
                snprintf(model[k], sizeof model[k], "v%d-%d-%llu", t, i, (unsigned long long)(rnd(&seed) % 1000));
                CHECK_RC(kv_put(h, key, model[k], strlen(model[k])), KV_OK);
                present[k] = 1;
            }
        }
        if (rnd(&seed) % 5 == 0) {
            CHECK_RC(kv_rollback(h), KV_OK);
            memcpy(model, saved, sizeof model);
            memcpy(present, saved_p, sizeof present);
            rollbacks++;
        } else {
            CHECK_RC(kv_commit(h), KV_OK);
            commits++;
        }
        if (t % 50 == 49) {
            CHECK(model_matches(h));
            kv_ckpt c;
            CHECK_RC(kv_checkpoint(h, 1000, t % 100 == 99, &c), KV_OK);
        }
        if (t % 130 == 129) { /* close and reopen: the last close checkpoints, reopen recovers */
            CHECK_RC(kv_close(h), KV_OK);
            CHECK_RC(kv_open(db, NULL, &h), KV_OK);
        }
    }
    CHECK(model_matches(h));
    char why[256];
    CHECK_RC(kv_check(h, why, sizeof why), KV_OK);
    /* misuse is reported, not acted on */
    CHECK_RC(kv_put(h, "x", "y", 1), KV_MISUSE);
    CHECK_RC(kv_commit(h), KV_MISUSE);
    CHECK_RC(kv_begin_read(h), KV_OK);
    CHECK_RC(kv_begin_write(h, 0), KV_MISUSE);
    CHECK_RC(kv_end_read(h), KV_OK);
    CHECK_RC(kv_close(h), KV_OK);
    printf("  model: %d commits, %d rollbacks\n", commits, rollbacks);
}

/* ------------------------------------------------------------------------------------------ */
/* Processes                                                                                  */

struct kid { pid_t pid; int status_fd; };

/* Starts `kvlog ARGV...` (NULL-terminated); stop_at / fail_at set the test hooks. */
static struct kid start_kvlog(const char *stop_at, const char *fail_at, char *const argv[]) {
    int p[2];
    if (pipe(p) != 0) { perror("pipe"); exit(2); }
    struct kid k = {fork(), p[0]};
    if (k.pid == 0) {
        close(p[0]);
        char fd[16];
        snprintf(fd, sizeof fd, "%d", p[1]);
        if (stop_at) {
            setenv("KVLOG_STOP_AT", stop_at, 1);
            setenv("KVLOG_STOP_FD", fd, 1);
        }
        if (fail_at) setenv("KVLOG_FAIL_AT", fail_at, 1);
        execv(kvlog_bin, argv);
        _exit(127);
    }
    close(p[1]);
    return k;
}

/* Starts `kvlog bank ROLE DB ARGS...`; with stop_at, the process reports there and waits. */
static struct kid start(const char *stop_at, const char *role, const char *db, const char *a1, const char *a2,
                        const char *a3) {
    char *const argv[] = {"kvlog", "bank", (char *)role, (char *)db, (char *)a1, (char *)a2, (char *)a3, NULL};
    return start_kvlog(stop_at, NULL, argv);
}

/* Waits for the kid to report from its stop point, then SIGKILLs it. 1 when it was there. */
static int kill_at_stop(struct kid k) {
    char c;
    int there = read(k.status_fd, &c, 1) == 1;
    child_kill(k.pid);
    close(k.status_fd);
    return there;
}

static int finish(struct kid k) {
    close(k.status_fd);
    return child_wait(k.pid);
}

static int verify(const char *db, int nlogs, char **logs, struct bank_verdict *v) {
    int bad = bank_verify(db, nlogs, logs, v);
    if (bad) fprintf(stderr, "verify: %s\n", v->why);
    return bad == 0;
}

/* 2. Writers, readers and a checkpointer at once; the invariant holds at every snapshot. */
static void bank_workload(const char *db, char *log1, char *log2) {
    remove_db(db);
    unlink(log1);
    unlink(log2);
    CHECK(bank_init(db, 500) == 0);
    struct kid w1 = start(NULL, "writer", db, "1", log1, "1500");
    struct kid w2 = start(NULL, "writer", db, "2", log2, "1500");
    struct kid r1 = start(NULL, "reader", db, "300", NULL, NULL);
    struct kid r2 = start(NULL, "reader", db, "300", NULL, NULL);
    struct kid c = start(NULL, "checkpointer", db, "40", NULL, NULL);
    CHECK(finish(w1) == 0);
    CHECK(finish(w2) == 0);
    CHECK(finish(r1) == 0); /* a reader exits non-zero if any snapshot's total was wrong */
    CHECK(finish(r2) == 0);
    CHECK(finish(c) == 0);
    char *logs[2] = {log1, log2};
    struct bank_verdict v;
    CHECK(verify(db, 2, logs, &v));
    CHECK(v.acked > 2400 && v.lost == 0 && v.in_flight == 0);
    printf("  bank: %llu transfers acknowledged and present\n", (unsigned long long)v.acked);
}

/* 3. SIGKILL at named points: writer mid-transaction, reader holding a slot, checkpointer
 * between copying pages and publishing; then more work; nothing acknowledged is lost. */
static void kills_at_points(const char *db, char *log1, char *log2) {
    remove_db(db);
    unlink(log1);
    unlink(log2);
    CHECK(bank_init(db, 300) == 0);
    struct kid w = start(KV_STOP_MID_WRITE, "writer", db, "1", log1, "0");
    CHECK(kill_at_stop(w));
    struct kid r = start(KV_STOP_IN_READ, "reader", db, "0", NULL, NULL);
    CHECK(kill_at_stop(r));
    /* the next writer takes over the dead one's role; while it commits, a checkpointer dies
     * between copying pages and publishing how far it got (the dead checkpointer is still
     * attached when the writer exits, so the writer's close is not the last one) */
    struct kid w2 = start(NULL, "writer", db, "2", log2, "600");
    struct kid c = start(KV_STOP_MID_CKPT, "checkpointer", db, "0", NULL, NULL);
    CHECK(kill_at_stop(c));
    struct kid c2 = start(NULL, "checkpointer", db, "5", NULL, NULL);
    struct kid r2 = start(NULL, "reader", db, "50", NULL, NULL);
    CHECK(finish(w2) == 0);
    CHECK(finish(c2) == 0);
    CHECK(finish(r2) == 0);
    char *logs[2] = {log1, log2};
    struct bank_verdict v;
    CHECK(verify(db, 2, logs, &v));
    CHECK(v.lost == 0 && v.acked >= 450);
}

/* 4. Every process dies with committed frames only in the WAL: the next opener rebuilds the
 * index from the WAL, and nothing acknowledged is missing. */
static void reopen_after_all_died(const char *db, char *log1) {
    remove_db(db);
    unlink(log1);
    CHECK(bank_init(db, 300) == 0);
    /* no checkpointer runs and nobody closes last: the writer commits about 200 transfers,
     * which stay in the WAL, and dies in the middle of the next one */
    setenv("KVLOG_STOP_SKIP", "400", 1);
    struct kid w = start(KV_STOP_MID_WRITE, "writer", db, "1", log1, "0");
    unsetenv("KVLOG_STOP_SKIP");
    CHECK(kill_at_stop(w));
    char side[700];
    snprintf(side, sizeof side, "%s-wal", db);
    struct stat st;
    CHECK(stat(side, &st) == 0 && st.st_size > 32);
    kvlog *h;
    CHECK_RC(kv_open(db, NULL, &h), KV_OK);
    tshm_info info;
    CHECK_RC(tshm_info_get(kv_tshm(h), &info), TSHM_OK);
    CHECK(info.initialized == 1);
    kv_stats s;
    CHECK_RC(kv_stats_get(h, &s), KV_OK);
    CHECK(s.wal_frames > 0 && s.index_entries >= s.wal_frames); /* rebuilt from the WAL */
    CHECK(s.max_frame > s.nbackfills);
    kv_close(h);
    char *logs[1] = {log1};
    struct bank_verdict v;
    CHECK(verify(db, 1, logs, &v));
    CHECK(v.lost == 0 && v.acked >= 100);
}

/* ------------------------------------------------------------------------------------------ */
/* 5. An unpublished transaction's frames never come back                                      */

/* 1 when the kid reported from its stop point (it then waits there). */
static int at_stop(struct kid k) {
    char c;
    return read(k.status_fd, &c, 1) == 1;
}

enum tail_case {
    WRITER_KILLED,         /* B SIGKILLed with its commit frame written, before publishing */
    PUBLISH_FAILED,        /* B's publish fails; B rolls back */
    PUBLISH_FAILED_ALONE,  /* the same, and no writer comes after B */
};

/* k0..k2 = "zero"; a process holds a reader slot so nobody closes last; writer B writes T1
 * (k0..k2 = "ONE", three frames on three pages, the last one its commit frame) and dies before
 * publishing, or fails to publish and rolls back; writer A commits the shorter T2 (k0 = "two",
 * one frame) from max_frame + 1, over T1's first frame; every process dies. The next opener's
 * recovery must find k0 = "two" (or "zero" without A) and k1 = k2 = "zero": T1's frames past
 * T2, its commit frame among them, were written after a different predecessor. */
static void unpublished_tail(const char *db, enum tail_case tc) {
    static const char *names[] = {"writer killed before publish", "publish failed",
                                  "publish failed, no later writer"};
    remove_db(db);
    char *init[] = {"kvlog", "put", (char *)db, "k0", "zero", "k1", "zero", "k2", "zero", NULL};
    CHECK(finish(start_kvlog(NULL, NULL, init)) == 0); /* closes last: the WAL restarts */
    char *get[] = {"kvlog", "get", (char *)db, "k0", NULL};
    struct kid holder = start_kvlog(KV_STOP_IN_READ, NULL, get);
    CHECK(at_stop(holder));
    char *t1[] = {"kvlog", "put", (char *)db, "k0", "ONE", "k1", "ONE", "k2", "ONE", NULL};
    if (tc == WRITER_KILLED) {
        CHECK(kill_at_stop(start_kvlog(KV_STOP_UNPUBLISHED, NULL, t1)));
    } else {
        CHECK(finish(start_kvlog(NULL, "publish", t1)) == 1); /* reports the failure */
    }
    if (tc != PUBLISH_FAILED_ALONE) {
        char *t2[] = {"kvlog", "put", (char *)db, "k0", "two", NULL};
        CHECK(finish(start_kvlog(NULL, NULL, t2)) == 0);
    }
    child_kill(holder.pid); /* the last process attached dies: no final checkpoint */
    close(holder.status_fd);

    kvlog *h;
    CHECK_RC(kv_open(db, NULL, &h), KV_OK);
    tshm_info info;
    CHECK_RC(tshm_info_get(kv_tshm(h), &info), TSHM_OK);
    CHECK(info.initialized == 1); /* this open recovered from the WAL */
    char val[3][16];
    const char *key[3] = {"k0", "k1", "k2"};
    CHECK_RC(kv_begin_read(h), KV_OK);
    for (int i = 0; i < 3; i++) {
        size_t n = 0;
        int rc = kv_get(h, key[i], val[i], sizeof val[i] - 1, &n);
        val[i][rc == KV_OK && n < sizeof val[i] ? n : 0] = 0;
    }
    kv_end_read(h);
    const char *k0 = tc == PUBLISH_FAILED_ALONE ? "zero" : "two";
    int ok = strcmp(val[0], k0) == 0 && strcmp(val[1], "zero") == 0 && strcmp(val[2], "zero") == 0;
    CHECK(ok);
    printf("  unpublished tail (%s): recovered k0=%s k1=%s k2=%s%s\n", names[tc], val[0], val[1],
           val[2], ok ? "" : " (WRONG)");
    /* the recovered WAL goes on: one more commit, a clean close, a reopen */
    CHECK_RC(kv_begin_write(h, 1000), KV_OK);
    CHECK_RC(kv_put(h, "k1", "three", 5), KV_OK);
    CHECK_RC(kv_commit(h), KV_OK);
    char why[256];
    CHECK_RC(kv_check(h, why, sizeof why), KV_OK);
    CHECK_RC(kv_close(h), KV_OK);
    CHECK_RC(kv_open(db, NULL, &h), KV_OK);
    CHECK_RC(kv_begin_read(h), KV_OK);
    size_t n = 0;
    CHECK(kv_get(h, "k1", val[1], sizeof val[1], &n) == KV_OK && n == 5 && memcmp(val[1], "three", 5) == 0);
    kv_end_read(h);
    CHECK_RC(kv_close(h), KV_OK);
}

/* 6. A checkpointer dies in the middle of a WAL restart (new header written, not published):
 * the commits that follow must survive every process dying. */
static void restart_interrupted(const char *db) {
    remove_db(db);
    char *init[] = {"kvlog", "put", (char *)db, "k0", "zero", "k1", "zero", "k2", "zero", NULL};
    CHECK(finish(start_kvlog(NULL, NULL, init)) == 0);
    char *get[] = {"kvlog", "get", (char *)db, "k0", NULL};
    struct kid h1 = start_kvlog(KV_STOP_IN_READ, NULL, get); /* keeps the next close from being last */
    CHECK(at_stop(h1));
    char *t1[] = {"kvlog", "put", (char *)db, "k0", "one", NULL};
    CHECK(finish(start_kvlog(NULL, NULL, t1)) == 0);
    struct kid h2 = start_kvlog(KV_STOP_IN_READ, NULL, get); /* pins the newest frame */
    CHECK(at_stop(h2));
    child_kill(h1.pid);
    close(h1.status_fd);
    char *ckpt[] = {"kvlog", "checkpoint", (char *)db, NULL};
    CHECK(kill_at_stop(start_kvlog(KV_STOP_MID_RESTART, NULL, ckpt)));
    char *t2[] = {"kvlog", "put", (char *)db, "k1", "two", NULL};
    CHECK(finish(start_kvlog(NULL, NULL, t2)) == 0); /* acknowledged */
    char *t3[] = {"kvlog", "put", (char *)db, "k2", "three", NULL};
    CHECK(finish(start_kvlog(NULL, NULL, t3)) == 0);
    child_kill(h2.pid); /* the last process attached dies */
    close(h2.status_fd);

    kvlog *h;
    CHECK_RC(kv_open(db, NULL, &h), KV_OK);
    char val[3][16];
    const char *key[3] = {"k0", "k1", "k2"};
    CHECK_RC(kv_begin_read(h), KV_OK);
    for (int i = 0; i < 3; i++) {
        size_t n = 0;
        int rc = kv_get(h, key[i], val[i], sizeof val[i] - 1, &n);
        val[i][rc == KV_OK && n < sizeof val[i] ? n : 0] = 0;
    }
    kv_end_read(h);
    int ok = strcmp(val[0], "one") == 0 && strcmp(val[1], "two") == 0 && strcmp(val[2], "three") == 0;
    CHECK(ok);
    printf("  restart interrupted: recovered k0=%s k1=%s k2=%s%s\n", val[0], val[1], val[2], ok ? "" : " (WRONG)");
    char why[256];
    CHECK_RC(kv_check(h, why, sizeof why), KV_OK);
    CHECK_RC(kv_close(h), KV_OK);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    kvlog_bin = getenv("KVLOG_BIN");
    if (kvlog_bin == NULL) {
        fprintf(stderr, "set KVLOG_BIN to the kvlog binary\n");
        return 2;
    }
    char log1[600], log2[600];
    snprintf(log1, sizeof log1, "%s.w1.log", test_db("bank-logs"));
    snprintf(log2, sizeof log2, "%s.w2.log", test_db("bank-logs"));
    single_process_model(test_db("model.db"));
    bank_workload(test_db("bank.db"), log1, log2);
    kills_at_points(test_db("kills.db"), log1, log2);
    reopen_after_all_died(test_db("reopen.db"), log1);
    unpublished_tail(test_db("tail-killed.db"), WRITER_KILLED);
    unpublished_tail(test_db("tail-failed.db"), PUBLISH_FAILED);
    unpublished_tail(test_db("tail-alone.db"), PUBLISH_FAILED_ALONE);
    restart_interrupted(test_db("restart.db"));
    return harness_done("test_kvlog");
}
