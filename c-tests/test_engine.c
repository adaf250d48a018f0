/*
 * test_engine.c — engine regions and engine lock slots (what the SQLite shim runs on).
 *
 * The lock table follows SQLite's xShmLock contract: a script of lock and unlock steps over
 * three handles with the expected result of each, run with the three handles in one process
 * and again with each handle in its own process.
 */
#include "harness.h"

/* ------------------------------------------------------------------------------------------ */
/* Regions                                                                                    */

static void regions(const char *db) {
    tshm *a = open_with(db, 0, 0, 0), *b = open_with(db, 0, 0, 0);
    CHECK(a != NULL && b != NULL);
    if (a == NULL || b == NULL) return;
    void *p = (void *)1, *q = NULL;
    CHECK_RC(tshm_region(a, 0, 32768, 0, &p), TSHM_OK);
    CHECK(p == NULL); /* does not exist, not created */
    CHECK_RC(tshm_region(a, 0, 32768, 1, &p), TSHM_OK);
    CHECK(p != NULL);
    int zero = 1;
    for (int i = 0; i < 32768 && p; i++) zero &= ((unsigned char *)p)[i] == 0;
    CHECK(zero);
    memset(p, 0x5a, 32768);
    CHECK_RC(tshm_region(b, 0, 32768, 0, &q), TSHM_OK);
    CHECK(q == p); /* one mapping per process: the same address */
    CHECK_RC(tshm_region(b, 3, 32768, 1, &q), TSHM_OK);
    CHECK(q != NULL && q != p);
    CHECK_RC(tshm_region(a, 1, 4096, 1, &q), TSHM_MISUSE); /* sizes are fixed per sidecar */
    CHECK_RC(tshm_region(a, TSHM_MAX_REGIONS, 32768, 1, &q), TSHM_MISUSE);
    CHECK_RC(tshm_region(a, 0, 32768, 1, NULL), TSHM_MISUSE);
    CHECK_RC(tshm_region(NULL, 0, 32768, 1, &q), TSHM_MISUSE);
    /* another process sees the bytes and its writes come back */
    pid_t kid = fork();
    if (kid == 0) {
        tshm *h = open_with(db, 0, 0, 0);
        void *r = NULL;
        int ok = h != NULL && tshm_region(h, 0, 32768, 0, &r) == TSHM_OK && r != NULL &&
                 ((unsigned char *)r)[32767] == 0x5a;
        if (ok) ((unsigned char *)r)[100] = 0x77;
        tshm_close(h, NULL);
        _exit(ok ? 0 : 1);
    }
    CHECK(child_wait(kid) == 0);
    CHECK(((unsigned char *)p)[100] == 0x77);
    /* regions and index share the pool; both keep working */
    CHECK_RC(tshm_writer_acquire(a, 0), TSHM_OK);
    for (uint64_t f = 1; f <= 10000; f++) CHECK_RC(tshm_index_append(a, (uint32_t)(f % 97), f), TSHM_OK);
    CHECK_RC(tshm_writer_release(a), TSHM_OK);
    CHECK_RC(tshm_region(a, 2, 32768, 1, &q), TSHM_OK);
    CHECK(((unsigned char *)p)[0] == 0x5a);
    uint64_t f;
    CHECK_RC(tshm_index_find(b, 5, 10000, &f), TSHM_OK);
    CHECK(f == 9996);
    tshm_close(b, NULL);
    int last = 0;
    tshm_close(a, &last);
    CHECK(last == 1);
    /* the next first opener finds every region gone */
    a = open_with(db, 0, 0, 0);
    tshm_info info;
    CHECK_RC(tshm_info_get(a, &info), TSHM_OK);
    CHECK(info.initialized == 1);
    p = (void *)1;
    CHECK_RC(tshm_region(a, 0, 32768, 0, &p), TSHM_OK);
    CHECK(p == NULL);
    CHECK_RC(tshm_region(a, 0, 32768, 1, &p), TSHM_OK);
    CHECK(p != NULL && ((unsigned char *)p)[100] == 0);
    tshm_close(a, NULL);
}

/* ------------------------------------------------------------------------------------------ */
/* Lock slots                                                                                 */

enum { S = TSHM_LOCK_SHARED, X = TSHM_LOCK_EXCLUSIVE, uS = TSHM_LOCK_UNLOCK | S, uX = TSHM_LOCK_UNLOCK | X };

struct step { int handle, flags; uint32_t slot, n; int rc; };

static const struct step script[] = {
    {0, S, 0, 1, TSHM_OK},    {1, S, 0, 1, TSHM_OK},    {2, X, 0, 1, TSHM_BUSY},
    {0, uS, 0, 1, TSHM_OK},   {2, X, 0, 1, TSHM_BUSY},  {1, uS, 0, 1, TSHM_OK},
    {2, X, 0, 1, TSHM_OK},    {0, S, 0, 1, TSHM_BUSY},  {1, X, 0, 1, TSHM_BUSY},
    {2, uX, 0, 1, TSHM_OK},   {0, X, 0, 8, TSHM_OK},    {1, S, 7, 1, TSHM_BUSY},
    {1, X, 2, 2, TSHM_BUSY},  {0, uX, 0, 8, TSHM_OK},   {1, S, 3, 1, TSHM_OK},
    {2, X, 2, 2, TSHM_BUSY},  {2, S, 2, 1, TSHM_OK},    /* the failed range took nothing */
    {2, uS, 2, 1, TSHM_OK},   {2, X, 0, 3, TSHM_OK},    {0, S, 2, 1, TSHM_BUSY},
    {0, S, 3, 1, TSHM_OK},    {1, S, 3, 1, TSHM_OK},    /* re-taking SHARED is a no-op */
    {1, uS, 3, 1, TSHM_OK},   {2, X, 3, 1, TSHM_BUSY},  {0, uS, 3, 1, TSHM_OK},
    {2, X, 3, 5, TSHM_OK},    {0, S, 7, 1, TSHM_BUSY},  {2, uX, 0, 8, TSHM_OK},
    {0, X, 0, 5, TSHM_OK},    {1, X, 5, 3, TSHM_OK},    {2, S, 4, 1, TSHM_BUSY},
    {2, S, 5, 1, TSHM_BUSY},  {2, X, 4, 2, TSHM_BUSY},  {0, uX, 0, 5, TSHM_OK},
    {2, S, 4, 1, TSHM_OK},    {1, uX, 5, 3, TSHM_OK},   {2, uS, 4, 1, TSHM_OK},
    /* misuse: nothing changes */
    {0, uS, 0, 1, TSHM_MISUSE}, {0, S, 1, 1, TSHM_OK},  {0, X, 1, 1, TSHM_MISUSE},
    {0, uX, 1, 1, TSHM_MISUSE}, {0, uS, 1, 1, TSHM_OK}, {0, S, 31, 2, TSHM_MISUSE},
    {0, S | X, 1, 1, TSHM_MISUSE}, {0, S, 0, 0, TSHM_MISUSE}, {1, X, 0, 32, TSHM_OK},
    {1, uX, 0, 32, TSHM_OK},
};
#define NSTEPS (sizeof script / sizeof script[0])

static int do_step(tshm *h, const struct step *s) { return tshm_lock(h, s->slot, s->n, (uint32_t)s->flags); }

static void report_step(unsigned i, int rc) {
    const struct step *s = &script[i];
    if (rc != s->rc)
        fprintf(stderr, "step %u: handle %d flags %d slots %u+%u returned %d, expected %d\n", i, s->handle,
                s->flags, s->slot, s->n, rc, s->rc);
    CHECK(rc == s->rc);
}

static void script_one_process(const char *db) {
    tshm *h[3];
    for (int i = 0; i < 3; i++) h[i] = open_with(db, 0, 0, 0);
    for (unsigned i = 0; i < NSTEPS; i++) report_step(i, do_step(h[script[i].handle], &script[i]));
    for (int i = 0; i < 3; i++) tshm_close(h[i], NULL);
}

/* Each handle in its own process, driven step by step through pipes. */
static const char *script_db;
static void *script_open(int k) { (void)k; return open_with(script_db, 0, 0, 0); }
static int script_who(unsigned i) { return script[i].handle; }
static int script_run(void *h, unsigned i) { return do_step(h, &script[i]); }
static void script_close(void *h) { tshm_close(h, NULL); }

static void script_three_processes(const char *db) {
    script_db = db;
    script_in_processes sc = {3, NSTEPS, script_open, script_who, script_run, script_close, report_step};
    run_script_in_processes(&sc);
}

/* 255 shared holders of one slot in one process; an exclusive request waits for the last. */
static void many_shared_holders(const char *db) {
    enum { N = 255 };
    static tshm *h[N + 1];
    int ok = 1;
    for (int i = 0; i <= N; i++) ok &= (h[i] = open_with(db, 0, 0, 0)) != NULL;
    CHECK(ok);
    if (!ok) return;
    for (int i = 0; i < N; i++) ok &= tshm_lock(h[i], 7, 1, S) == TSHM_OK;
    CHECK(ok);
    CHECK_RC(tshm_lock(h[N], 7, 1, X), TSHM_BUSY);
    for (int i = 0; i < N - 1; i++) ok &= tshm_lock(h[i], 7, 1, uS) == TSHM_OK;
    CHECK(ok);
    CHECK_RC(tshm_lock(h[N], 7, 1, X), TSHM_BUSY);
    CHECK_RC(tshm_lock(h[N - 1], 7, 1, uS), TSHM_OK);
    CHECK_RC(tshm_lock(h[N], 7, 1, X), TSHM_OK);
    /* a handle that closes releases its engine locks */
    tshm_close(h[N], NULL);
    CHECK_RC(tshm_lock(h[0], 7, 1, X), TSHM_OK);
    for (int i = 0; i < N; i++) tshm_close(h[i], NULL);
}

/* Mutual exclusion under contention: processes increment a plain counter in a region under
 * an EXCLUSIVE lock, and check a two-word invariant under SHARED while others break and
 * restore it under EXCLUSIVE. Lost increments or a torn invariant mean the lock failed. */
static void hammer(const char *db) {
    enum { PROCS = 4, ITERS = 20000 };
    tshm *keep = open_with(db, 0, 0, 0);
    volatile uint64_t *r = NULL;
    CHECK_RC(tshm_region(keep, 0, 4096, 1, (void **)&r), TSHM_OK);
    if (r == NULL) return;
    channel ch;
    channel_init(&ch);
    gate g;
    gate_init(&g);
    pid_t kid[PROCS];
    for (int k = 0; k < PROCS; k++)
        if ((kid[k] = fork()) == 0) {
            tshm *h = open_with(db, 0, 0, 0);
            volatile uint64_t *q = NULL;
            tshm_region(h, 0, 4096, 0, (void **)&q);
            gate_wait(&g);
            long done = 0, torn = 0;
            for (int i = 0; i < ITERS && q; i++) {
                if (tshm_lock(h, 0, 1, X) == TSHM_OK) {
                    q[0] = q[0] + 1;
                    done++;
                    tshm_lock(h, 0, 1, uX);
                }
                if (i % 2 == 0 && tshm_lock(h, 1, 1, S) == TSHM_OK) {
                    torn += q[1] != q[2];
                    tshm_lock(h, 1, 1, uS);
                } else if (tshm_lock(h, 1, 1, X) == TSHM_OK) {
                    q[1] = q[1] + 1;
                    for (volatile int spin = 0; spin < 20; spin++) {}
                    q[2] = q[2] + 1;
                    tshm_lock(h, 1, 1, uX);
                }
            }
            long rep[2] = {done, torn};
            channel_send(&ch, rep, sizeof rep);
            tshm_close(h, NULL);
            _exit(0);
        }
    gate_open(&g);
    long done = 0, torn = 0;
    for (int k = 0; k < PROCS; k++) {
        long rep[2] = {0, 1};
        CHECK(channel_recv(&ch, rep, sizeof rep));
        done += rep[0];
        torn += rep[1];
    }
    for (int k = 0; k < PROCS; k++) CHECK(child_wait(kid[k]) == 0);
    printf("  hammer: %ld exclusive sections, counter %llu, %ld torn reads\n", done,
           (unsigned long long)r[0], torn);
    CHECK(done > PROCS * ITERS / 10);
    CHECK(r[0] == (uint64_t)done);
    CHECK(torn == 0);
    CHECK(r[1] == r[2]);
    close(ch.fd[0]);
    close(ch.fd[1]);
    tshm_close(keep, NULL);
}

/* Bad handles and read-only handles. */
static void bad_handles(const char *db) {
    CHECK_RC(tshm_lock(NULL, 0, 1, S), TSHM_MISUSE);
    tshm *h = open_with(db, 0, 0, 0);
    CHECK_RC(tshm_lock(h, 2, 1, X), TSHM_OK);
    CHECK_RC(tshm_close(h, NULL), TSHM_OK);
    CHECK_RC(tshm_lock(h, 2, 1, uX), TSHM_MISUSE); /* closed */
    void *p = NULL;
    CHECK_RC(tshm_region(h, 0, 32768, 1, &p), TSHM_MISUSE);
    tshm *a = open_with(db, 0, 0, 0), *ro = open_with(db, TSHM_OPEN_READONLY, 0, 0);
    CHECK_RC(tshm_lock(a, 2, 1, X), TSHM_OK); /* the closed handle's lock went with it */
    CHECK_RC(tshm_lock(ro, 2, 1, S), TSHM_BUSY);
    CHECK_RC(tshm_lock(ro, 3, 1, S), TSHM_OK); /* read-only handles hold SHARED too ... */
    CHECK_RC(tshm_lock(ro, 3, 1, S), TSHM_OK);
    CHECK_RC(tshm_lock(a, 3, 1, X), TSHM_BUSY); /* ... which writable handles here see */
    CHECK_RC(tshm_lock(a, 2, 2, X), TSHM_BUSY);
    CHECK_RC(tshm_lock(a, 2, 1, S), TSHM_MISUSE); /* the failed range left slot 2 as it was */
    CHECK_RC(tshm_lock(ro, 4, 1, X), TSHM_READONLY); /* but never EXCLUSIVE */
    CHECK_RC(tshm_lock(ro, 4, 1, uS), TSHM_MISUSE);
    CHECK_RC(tshm_lock(ro, 3, 1, uS), TSHM_OK);
    CHECK_RC(tshm_lock(a, 3, 1, X), TSHM_OK);
    CHECK_RC(tshm_lock(ro, 3, 1, S), TSHM_BUSY);
    CHECK_RC(tshm_lock(a, 2, 2, uX), TSHM_OK);
    CHECK_RC(tshm_lock(ro, 3, 1, S), TSHM_OK);
    tshm_close(ro, NULL); /* closing releases the read-only holder's lock */
    CHECK_RC(tshm_lock(a, 3, 1, X), TSHM_OK);
    tshm_close(a, NULL);
}

/* Read-only handles in other processes, on a sidecar opened O_RDONLY (a process whose first
 * handle is read-only): their SHARED locks exclude EXCLUSIVE ones and go when they die. */
static void readonly_holders(const char *db) {
    tshm *a = open_with(db, 0, 0, 0);
    CHECK(a != NULL);
    if (a == NULL) return;
    channel cmd, res;
    channel_init(&cmd);
    channel_init(&res);
    pid_t kid = fork();
    if (kid == 0) {
        close(cmd.fd[1]);
        tshm *r = open_with(db, TSHM_OPEN_READONLY, 0, 0);
        tshm_info info;
        int ok = r != NULL && tshm_info_get(r, &info) == TSHM_OK && info.readonly;
        channel_send(&res, &ok, sizeof ok);
        int op[3];
        while (channel_recv(&cmd, op, sizeof op)) {
            int rc = tshm_lock(r, (uint32_t)op[0], (uint32_t)op[1], (uint32_t)op[2]);
            channel_send(&res, &rc, sizeof rc);
        }
        for (;;) pause();
    }
    int ok = 0, rc = -1;
    CHECK(channel_recv(&res, &ok, sizeof ok) && ok);
#define RO(slot, n, fl, want)                                              \
    do {                                                                   \
        int op_[3] = {slot, n, fl};                                        \
        channel_send(&cmd, op_, sizeof op_);                               \
        CHECK(channel_recv(&res, &rc, sizeof rc) && rc == (want));        \
    } while (0)
    RO(5, 1, S, TSHM_OK);
    RO(6, 1, S, TSHM_OK);
    CHECK_RC(tshm_lock(a, 5, 1, X), TSHM_BUSY);
    CHECK_RC(tshm_lock(a, 4, 3, X), TSHM_BUSY);
    CHECK_RC(tshm_lock(a, 4, 1, X), TSHM_OK); /* the failed range gave back slot 4 */
    RO(4, 1, S, TSHM_BUSY);
    CHECK_RC(tshm_lock(a, 4, 1, uX), TSHM_OK);
    RO(4, 1, S, TSHM_OK);
    RO(4, 1, uS, TSHM_OK);
    RO(5, 1, uS, TSHM_OK);
    CHECK_RC(tshm_lock(a, 5, 1, X), TSHM_OK);
    RO(5, 1, S, TSHM_BUSY);
    RO(5, 1, X, TSHM_READONLY);
    CHECK_RC(tshm_lock(a, 5, 1, uX), TSHM_OK);
    CHECK_RC(tshm_lock(a, 6, 1, S), TSHM_OK); /* SHARED beside read-only SHARED */
    CHECK_RC(tshm_lock(a, 6, 1, uS), TSHM_OK);
#undef RO
    child_kill(kid); /* the kernel drops a dead read-only holder's lock */
    CHECK_RC(tshm_lock(a, 6, 1, X), TSHM_OK);
    close(cmd.fd[0]);
    close(cmd.fd[1]);
    close(res.fd[0]);
    close(res.fd[1]);
    tshm_close(a, NULL);
}

/* A process killed while holding engine locks frees them. */
static void killed_holder(const char *db) {
    tshm *h = open_with(db, 0, 0, 0);
    channel ch;
    channel_init(&ch);
    pid_t kid = fork();
    if (kid == 0) {
        tshm *k = open_with(db, 0, 0, 0);
        int ok = k && tshm_lock(k, 0, 3, X) == TSHM_OK && tshm_lock(k, 4, 1, S) == TSHM_OK;
        channel_send(&ch, &ok, sizeof ok);
        for (;;) pause();
    }
    int ok = 0;
    CHECK(channel_recv(&ch, &ok, sizeof ok) && ok);
    CHECK_RC(tshm_lock(h, 1, 1, S), TSHM_BUSY);
    CHECK_RC(tshm_lock(h, 4, 1, X), TSHM_BUSY);
    child_kill(kid);
    CHECK_RC(tshm_lock(h, 0, 8, X), TSHM_OK);
    tshm_close(h, NULL);
    close(ch.fd[0]);
    close(ch.fd[1]);
}

/* A liveness probe that fails midway through a lock request leaves nothing taken. The child's
 * probes fail (TSHM_TEST_FAIL_AT=engine_probe, read once per process); its handle stays open, so
 * anything it left behind would be held by a live instance and block the others. */
static void probe_error_leaves_nothing(const char *db) {
    tshm *p = open_with(db, 0, 0, 0), *q = open_with(db, 0, 0, 0);
    CHECK(p != NULL && q != NULL);
    if (p == NULL || q == NULL) return;
    /* a dead exclusive owner of slot 10, whose tag needs a probe to be found dead */
    pid_t g = fork();
    if (g == 0) {
        tshm *k = open_with(db, 0, 0, 0);
        _exit(k && tshm_lock(k, 10, 1, X) == TSHM_OK ? 0 : 1);
    }
    CHECK(child_wait(g) == 0);
    channel cmd, res;
    channel_init(&cmd);
    channel_init(&res);
    pid_t kid = fork();
    if (kid == 0) {
        close(cmd.fd[1]);
        setenv("TSHM_TEST_FAIL_AT", "engine_probe", 1);
        tshm *k = open_with(db, 0, 0, 0);
        int step;
        while (channel_recv(&cmd, &step, sizeof step)) {
            int rc = -1;
            if (step == 0) rc = tshm_lock(k, 5, 1, S);  /* SHARED: announced, then the owner probe fails */
            if (step == 1) rc = tshm_lock(k, 0, 4, X);  /* EXCLUSIVE: owners claimed, the scan's probe fails */
            if (step == 2) rc = tshm_lock(k, 9, 3, X);  /* EXCLUSIVE: slot 9 claimed, slot 10's probe fails */
            channel_send(&res, &rc, sizeof rc);
        }
        _exit(0);
    }
    int step, rc = 0;
    /* 1. p holds slot 5 EXCLUSIVE; the child's SHARED request fails in the probe */
    CHECK_RC(tshm_lock(p, 5, 1, X), TSHM_OK);
    step = 0;
    channel_send(&cmd, &step, sizeof step);
    CHECK(channel_recv(&res, &rc, sizeof rc));
    CHECK(rc != TSHM_OK && rc != TSHM_BUSY);
    CHECK_RC(tshm_lock(p, 5, 1, uX), TSHM_OK);
    CHECK_RC(tshm_lock(q, 5, 1, X), TSHM_OK); /* no SHARED bit of the child's left on slot 5 */
    CHECK_RC(tshm_lock(q, 5, 1, uX), TSHM_OK);
    /* 2. p holds slot 2 SHARED; the child's EXCLUSIVE 0..4 fails in the instance scan */
    CHECK_RC(tshm_lock(p, 2, 1, S), TSHM_OK);
    step = 1;
    channel_send(&cmd, &step, sizeof step);
    CHECK(channel_recv(&res, &rc, sizeof rc));
    CHECK(rc != TSHM_OK && rc != TSHM_BUSY);
    CHECK_RC(tshm_lock(p, 2, 1, uS), TSHM_OK);
    CHECK_RC(tshm_lock(q, 0, 1, S), TSHM_OK); /* no owner claim of the child's left on 0..3 */
    CHECK_RC(tshm_lock(q, 3, 1, S), TSHM_OK);
    CHECK_RC(tshm_lock(q, 0, 1, uS), TSHM_OK);
    CHECK_RC(tshm_lock(q, 3, 1, uS), TSHM_OK);
    CHECK_RC(tshm_lock(q, 0, 4, X), TSHM_OK); /* nor an EXCLUSIVE bit */
    CHECK_RC(tshm_lock(q, 0, 4, uX), TSHM_OK);
    /* 3. the child's EXCLUSIVE 9..11 claims 9, then fails probing slot 10's dead owner */
    step = 2;
    channel_send(&cmd, &step, sizeof step);
    CHECK(channel_recv(&res, &rc, sizeof rc));
    CHECK(rc != TSHM_OK && rc != TSHM_BUSY);
    CHECK_RC(tshm_lock(q, 9, 1, S), TSHM_OK); /* slot 9 is not left claimed */
    CHECK_RC(tshm_lock(q, 9, 1, uS), TSHM_OK);
    CHECK_RC(tshm_lock(q, 9, 3, X), TSHM_OK); /* and the dead owner of 10 is taken over */
    CHECK_RC(tshm_lock(q, 9, 3, uX), TSHM_OK);
    close(cmd.fd[1]);
    CHECK(child_wait(kid) == 0);
    close(cmd.fd[0]);
    close(res.fd[0]);
    close(res.fd[1]);
    tshm_close(q, NULL);
    tshm_close(p, NULL);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    regions(test_db("regions.db"));
    script_one_process(test_db("locks1.db"));
    script_three_processes(test_db("locks3.db"));
    many_shared_holders(test_db("many.db"));
    killed_holder(test_db("killed.db"));
    bad_handles(test_db("bad.db"));
    readonly_holders(test_db("rohold.db"));
    probe_error_leaves_nothing(test_db("probe.db"));
    hammer(test_db("hammer.db"));
    return harness_done("test_engine");
}
