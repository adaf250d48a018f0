/*
 * test_multiprocess.c — libtshm across real processes: concurrent first opens, writer exclusion,
 * SIGKILLed holders, a publisher killed mid-publish, reader pins and stale reader slots, mode
 * conflicts, simultaneous closers, corrupt sidecars and fork().
 *
 * Processes are synchronized with gates and channels (pipes), never with sleeps. The Makefile
 * runs this binary once per lock backend (TSHM_LOCK_BACKEND=ofd / posix).
 */
#include "harness.h"

#define KIDS 16

/* ---------------------------------------------------------------------------------------- */
/* Sixteen processes released from one gate open a fresh sidecar: exactly one initializes.    */

typedef struct { int rc; int initialized; uint64_t epoch; } open_report;

static void concurrent_first_open(const char *db) {
    gate go, done;
    channel ch;
    pid_t kids[KIDS];
    gate_init(&go);
    gate_init(&done);
    channel_init(&ch);
    for (int i = 0; i < KIDS; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            open_report r = {0, 0, 0};
            tshm *h = NULL;
            gate_wait(&go);
            r.rc = tshm_open(db, NULL, &h);
            if (r.rc == TSHM_OK) {
                tshm_info info;
                tshm_info_get(h, &info);
                r.initialized = info.initialized;
                r.epoch = info.init_epoch;
            }
            channel_send(&ch, &r, sizeof r);
            gate_wait(&done); /* stay attached until everyone has opened */
            tshm_close(h, NULL);
            _exit(0);
        }
    }
    gate_open(&go);
    int ok = 0, inits = 0;
    uint64_t max_epoch = 0;
    for (int i = 0; i < KIDS; i++) {
        open_report r;
        CHECK(channel_recv(&ch, &r, sizeof r));
        ok += r.rc == TSHM_OK;
        inits += r.initialized;
        if (r.epoch > max_epoch) max_epoch = r.epoch;
    }
    gate_open(&done);
    for (int i = 0; i < KIDS; i++) CHECK(child_wait(kids[i]) == 0);
    CHECK(ok == KIDS);
    CHECK(inits == 1);
    CHECK(max_epoch >= 1);
}

/* ---------------------------------------------------------------------------------------- */
/* The writer role excludes other processes; a waiter is woken by the release.               */

static void writer_exclusion_and_wakeup(const char *db) {
    tshm *h = open_with(db, 0, 0, 0);
    CHECK(h != NULL);
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);

    channel ch;
    gate go;
    channel_init(&ch);
    gate_init(&go);
    pid_t kid = fork();
    if (kid == 0) {
        /* A slice far longer than the wait: only a wake by the release can end it early. */
        setenv("TSHM_TEST_WAIT_SLICE_MS", "60000", 1);
        tshm *c = open_with(db, 0, 0, 0);
        double r[4];
        r[0] = tshm_writer_acquire(c, 0);
        double t0 = now_ms();
        r[1] = tshm_writer_acquire(c, 40);
        r[2] = now_ms() - t0;
        channel_send(&ch, r, 3 * sizeof(double));
        gate_wait(&go);
        /* the parent releases right after opening the gate; a 20 s budget must end early */
        double before = now_ms();
        r[0] = tshm_writer_acquire(c, 20000);
        r[2] = now_ms(); /* CLOCK_MONOTONIC is system-wide: comparable with the parent's */
        r[1] = r[2] - before;
        channel_send(&ch, r, 3 * sizeof(double));
        tshm_writer_release(c);
        tshm_close(c, NULL);
        _exit(0);
    }
    double r[3];
    CHECK(channel_recv(&ch, r, 3 * sizeof(double)));
    CHECK((int)r[0] == TSHM_BUSY);
    CHECK((int)r[1] == TSHM_BUSY);
    CHECK(r[2] >= 39.0);  /* the timeout was honoured, not cut short */
    CHECK(r[2] < 20000.0); /* and not overrun by a slice */

    tshm_owner_info who;
    CHECK_RC(tshm_owner(h, TSHM_ROLE_WRITER, &who), TSHM_OK);
    CHECK(who.pid == (uint32_t)getpid() && who.alive == 1);

    gate_open(&go);
    /* Release only once the child sleeps in the futex (its wait channel says so). */
    char wchan_path[64], wchan[64] = {0};
    snprintf(wchan_path, sizeof wchan_path, "/proc/%d/wchan", (int)kid);
    double spin_start = now_ms();
    while (!strstr(wchan, "futex") && now_ms() - spin_start < 10000) {
        FILE *f = fopen(wchan_path, "r");
        if (f) {
            if (!fgets(wchan, sizeof wchan, f)) wchan[0] = 0;
            fclose(f);
        }
    }
    CHECK(strstr(wchan, "futex") != NULL);
    double t_release = now_ms();
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
    double w[3];
    CHECK(channel_recv(&ch, w, sizeof w));
    CHECK((int)w[0] == TSHM_OK);
    CHECK(w[1] < 10000.0); /* woken by the release, not by the 60 s slice */
    printf("  writer handoff across processes: waiter held the role %.3f ms after release began\n",
           w[2] - t_release);
    CHECK(child_wait(kid) == 0);
    tshm_close(h, NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* A writer SIGKILLed while holding the role: the next acquirer succeeds.                    */

static void killed_writer_is_replaced(const char *db) {
    tshm *h = open_with(db, 0, 0, 0);
    channel ch;
    channel_init(&ch);
    pid_t kid = fork();
    if (kid == 0) {
        tshm *c = open_with(db, 0, 0, 0);
        int rc = tshm_writer_acquire(c, 0);
        channel_send(&ch, &rc, sizeof rc);
        for (;;) pause();
    }
    int rc = -1;
    CHECK(channel_recv(&ch, &rc, sizeof rc));
    CHECK(rc == TSHM_OK);
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_BUSY);
    const char *msg = tshm_errmsg();
    char pidtxt[32];
    snprintf(pidtxt, sizeof pidtxt, "pid %d", (int)kid);
    CHECK(msg != NULL && strstr(msg, pidtxt) != NULL); /* BUSY names the holder */
    child_kill(kid);
    tshm_owner_info who;
    CHECK_RC(tshm_owner(h, TSHM_ROLE_WRITER, &who), TSHM_OK);
    CHECK(who.pid == (uint32_t)kid && who.alive == 0); /* stale record, lock free */
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    CHECK_RC(tshm_owner(h, TSHM_ROLE_WRITER, &who), TSHM_OK);
    CHECK(who.pid == (uint32_t)getpid() && who.alive == 1);
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
    tshm_close(h, NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* A publisher SIGKILLed in the middle of a publish (test hook): readers keep reading the last */
/* complete snapshot without waiting, and the next writer publishes normally.                */

static void killed_mid_publish(const char *db) {
    tshm *h = open_with(db, 0, 0, 0);
    tshm_snapshot s;
    memset(&s, 0, sizeof s);
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    s.max_frame = 100;
    s.nbackfills = 40;
    s.salt[0] = 7;
    CHECK_RC(tshm_publish(h, &s, TSHM_SNAP_ALL), TSHM_OK);
    CHECK_RC(tshm_writer_release(h), TSHM_OK);

    pid_t kid = fork();
    if (kid == 0) {
        setenv("TSHM_TEST_CRASH_AT", "publish_copy", 1); /* test points are armed before the first call */
        tshm *c = open_with(db, 0, 0, 0);
        tshm_snapshot t;
        memset(&t, 0xff, sizeof t);
        if (tshm_writer_acquire(c, 0) != TSHM_OK) _exit(10);
        tshm_publish(c, &t, TSHM_SNAP_ALL); /* dies halfway through the new copy */
        _exit(11);
    }
    CHECK(child_wait(kid) == 128 + SIGKILL);

    tshm_snapshot r;
    CHECK_RC(tshm_snapshot_get(h, &r), TSHM_OK); /* returns at once: no odd-sequence spin */
    CHECK(r.max_frame == 100 && r.nbackfills == 40 && r.salt[0] == 7);

    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK); /* the dead publisher's role is free */
    s.max_frame = 101;
    CHECK_RC(tshm_publish(h, &s, TSHM_SNAP_MAX_FRAME), TSHM_OK); /* takes over its token */
    CHECK_RC(tshm_snapshot_get(h, &r), TSHM_OK);
    CHECK(r.max_frame == 101 && r.nbackfills == 40 && r.salt[0] == 7);
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
    tshm_close(h, NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* Reader pins in another process bound tshm_min_reader_frame; dead readers stop pinning and  */
/* their slots are reclaimed; a live sibling's slots never are.                              */

/* Publishes max_frame with the writer role taken for it. */
static void publish_as_writer(tshm *h, uint64_t f) {
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    publish_max_frame(h, f);
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
}

static void reader_pins_and_stale_slots(const char *db, uint32_t strategy) {
    tshm *h = open_with(db, 0, 64, strategy);
    tshm_info info;
    CHECK_RC(tshm_info_get(h, &info), TSHM_OK);
    CHECK(info.reader_strategy == (seed_strategies() ? TSHM_READERS_BYTELOCK : strategy) &&
          info.reader_slots == 64);
    publish_as_writer(h, 10);

    channel ch;
    gate go;
    channel_init(&ch);
    gate_init(&go);
    pid_t kid = fork();
    if (kid == 0) {
        tshm *c = open_with(db, 0, 0, 0);
        uint32_t slot;
        tshm_snapshot s;
        int rc = tshm_reader_begin(c, &slot, &s); /* pins 10 */
        uint64_t pinned = s.max_frame;
        channel_send(&ch, &rc, sizeof rc);
        channel_send(&ch, &pinned, sizeof pinned);
        gate_wait(&go);
        /* then take every other slot and report how many */
        int n = 1;
        while (tshm_reader_begin(c, &slot, &s) == TSHM_OK) n++;
        channel_send(&ch, &n, sizeof n);
        for (;;) pause();
    }
    int rc;
    uint64_t pinned;
    CHECK(channel_recv(&ch, &rc, sizeof rc) && rc == TSHM_OK);
    CHECK(channel_recv(&ch, &pinned, sizeof pinned) && pinned == 10);
    publish_as_writer(h, 20);
    uint64_t min = 0;
    CHECK_RC(tshm_min_reader_frame(h, &min), TSHM_OK);
    CHECK(min == 10); /* the other process's pin holds back checkpoints */

    gate_open(&go);
    int n = 0;
    CHECK(channel_recv(&ch, &n, sizeof n));
    CHECK(n == 64);
    uint32_t slot;
    tshm_snapshot s;
    CHECK_RC(tshm_reader_begin(h, &slot, &s), TSHM_BUSY); /* all held by a live process */

    child_kill(kid);
    CHECK_RC(tshm_min_reader_frame(h, &min), TSHM_OK);
    CHECK(min == TSHM_NO_FRAME); /* dead readers pin nothing */
    CHECK_RC(tshm_reader_begin(h, &slot, &s), TSHM_OK); /* a stale slot is reclaimed */
    CHECK(s.max_frame == 20);
    tshm_owner_info who;
    CHECK_RC(tshm_owner(h, TSHM_ROLE_READER0 + slot, &who), TSHM_OK);
    CHECK(who.pid == (uint32_t)getpid() && who.alive == 1 && who.frame == 20);
    CHECK_RC(tshm_reader_end(h, slot), TSHM_OK);

    /* A sibling handle in this process fills every slot: nobody may reclaim them, neither */
    /* the other handle here nor another process.                                          */
    tshm *sib = open_with(db, 0, 0, 0);
    int held = 0;
    while (tshm_reader_begin(sib, &slot, &s) == TSHM_OK) held++;
    CHECK(held == 64);
    CHECK_RC(tshm_reader_begin(h, &slot, &s), TSHM_BUSY);
    kid = fork();
    if (kid == 0) {
        tshm *c = open_with(db, 0, 0, 0);
        int r = tshm_reader_begin(c, &slot, &s);
        tshm_close(c, NULL);
        _exit(r == TSHM_BUSY ? 0 : 1);
    }
    CHECK(child_wait(kid) == 0);
    CHECK_RC(tshm_min_reader_frame(h, &min), TSHM_OK);
    CHECK(min == 20);
    tshm_close(sib, NULL); /* releases its 64 slots */
    CHECK_RC(tshm_min_reader_frame(h, &min), TSHM_OK);
    CHECK(min == TSHM_NO_FRAME);
    tshm_close(h, NULL);
}

/* ---------------------------------------------------------------------------------------- */
/* EXCLUSIVE against SHARED, both orders; the error names the holder's pid.                  */

static void mode_conflicts(const char *db) {
    for (int order = 0; order < 2; order++) {
        uint32_t mine = order == 0 ? TSHM_OPEN_EXCLUSIVE : 0;
        uint32_t theirs = order == 0 ? 0 : TSHM_OPEN_EXCLUSIVE;
        tshm *h = open_with(db, mine, 0, 0);
        CHECK(h != NULL);
        channel ch;
        channel_init(&ch);
        pid_t kid = fork();
        if (kid == 0) {
            tshm_options o;
            tshm *c = NULL;
            tshm_options_init(&o);
            o.flags = theirs;
            int rc = tshm_open(db, &o, &c);
            char msg[256] = {0};
            if (tshm_errmsg()) snprintf(msg, sizeof msg, "%s", tshm_errmsg());
            channel_send(&ch, &rc, sizeof rc);
            channel_send(&ch, msg, sizeof msg);
            _exit(0);
        }
        int rc;
        char msg[256];
        CHECK(channel_recv(&ch, &rc, sizeof rc));
        CHECK(channel_recv(&ch, msg, sizeof msg));
        CHECK(rc == TSHM_CONFLICT);
        char pidtxt[32];
        snprintf(pidtxt, sizeof pidtxt, "pid %d", (int)getpid());
        CHECK(strstr(msg, pidtxt) != NULL);
        CHECK(child_wait(kid) == 0);
        int last = -1;
        CHECK_RC(tshm_close(h, &last), TSHM_OK);
        CHECK(last == 1);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* Two processes close at the same instant: exactly one of them is last.                     */

static void simultaneous_closers(const char *db, int rounds) {
    int exactly_one = 0;
    for (int round = 0; round < rounds; round++) {
        gate go;
        channel ready, ch;
        gate_init(&go);
        channel_init(&ready);
        channel_init(&ch);
        pid_t kids[2];
        for (int i = 0; i < 2; i++) {
            kids[i] = fork();
            if (kids[i] == 0) {
                tshm *c = open_with(db, 0, 0, 0);
                int ok = c != NULL;
                channel_send(&ready, &ok, sizeof ok);
                gate_wait(&go);
                int last = -1;
                int rc = tshm_close(c, &last);
                int rep[2] = {rc, last};
                channel_send(&ch, rep, sizeof rep);
                _exit(0);
            }
        }
        for (int i = 0; i < 2; i++) {
            int ok = 0;
            channel_recv(&ready, &ok, sizeof ok);
        }
        gate_open(&go);
        int lasts = 0, oks = 0;
        for (int i = 0; i < 2; i++) {
            int rep[2];
            if (channel_recv(&ch, rep, sizeof rep)) {
                oks += rep[0] == TSHM_OK;
                lasts += rep[1] == 1;
            }
        }
        for (int i = 0; i < 2; i++) child_wait(kids[i]);
        exactly_one += (oks == 2 && lasts == 1);
    }
    CHECK(exactly_one == rounds);
}

/* ---------------------------------------------------------------------------------------- */
/* Corrupt sidecars: a process that is alone re-initializes; a joiner gets TSHM_CORRUPT; no  */
/* crash or hang either way.                                                                 */

static uint64_t fnv1a(const unsigned char *p, size_t n) {
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

static void poke32(const char *db, off_t off, uint32_t v, int fix_sum) {
    const char *side = sidecar_of(db);
    int fd = open(side, O_RDWR);
    if (pwrite(fd, &v, 4, off) != 4) perror("pwrite");
    if (fix_sum) {
        unsigned char g[56];
        if (pread(fd, g, 56, 0) != 56) perror("pread");
        uint64_t s = fnv1a(g, 56);
        if (pwrite(fd, &s, 8, 56) != 8) perror("pwrite");
    }
    close(fd);
}

static void poke64(const char *db, off_t off, uint64_t v) {
    const char *side = sidecar_of(db);
    int fd = open(side, O_RDWR);
    if (pwrite(fd, &v, 8, off) != 8) perror("pwrite");
    close(fd);
}

static void truncate_sidecar(const char *db, off_t len) {
    const char *side = sidecar_of(db);
    if (truncate(side, len) != 0) perror("truncate");
}

enum corruption { C_TRUNCATED, C_EMPTY, C_MAGIC, C_VERSION, C_ABSURD_READERS, C_MOVED_TABLE, C_ODD_SEQ, C_COUNT };
static const char *corruption_name[] = {"truncated", "empty", "bad magic", "bad version",
                                        "absurd reader count", "moved table", "odd sequence"};

static void corrupt(const char *db, enum corruption c) {
    switch (c) {
    case C_TRUNCATED: truncate_sidecar(db, 100); break;
    case C_EMPTY: truncate_sidecar(db, 0); break;
    case C_MAGIC: poke32(db, 0, 0x12345678, 0); break;
    case C_VERSION: poke32(db, 4, 99, 1); break;
    case C_ABSURD_READERS: poke32(db, 16, 0x7fffffff, 1); break;
    case C_MOVED_TABLE: poke32(db, 40, 4096 * 3 + 8, 1); break;
    case C_ODD_SEQ: poke64(db, 256, 12345); break; /* any parity is valid for the latch */
    default: break;
    }
}

static void corrupt_sidecars(const char *db) {
    for (int c = 0; c < C_COUNT; c++) {
        /* alone: re-initialized (odd sequence: simply valid) */
        tshm *h = open_with(db, 0, 0, 0);
        tshm_close(h, NULL);
        corrupt(db, (enum corruption)c);
        h = open_with(db, 0, 0, 0);
        CHECK(h != NULL);
        if (h) {
            tshm_info info;
            tshm_snapshot s;
            CHECK_RC(tshm_info_get(h, &info), TSHM_OK);
            CHECK(info.initialized == 1);
            CHECK_RC(tshm_snapshot_get(h, &s), TSHM_OK);
            tshm_close(h, NULL);
        }
        if (c == C_ODD_SEQ) continue;

        /* joined: another process is attached when the file is damaged */
        gate go;
        channel ch;
        gate_init(&go);
        channel_init(&ch);
        pid_t holder = fork();
        if (holder == 0) {
            tshm *k = open_with(db, 0, 0, 0);
            int ok = k != NULL;
            channel_send(&ch, &ok, sizeof ok);
            gate_wait(&go);
            _exit(0);
        }
        int ok = 0;
        CHECK(channel_recv(&ch, &ok, sizeof ok) && ok);
        corrupt(db, (enum corruption)c);
        tshm *j = NULL;
        int rc = tshm_open(db, NULL, &j);
        if (rc != TSHM_CORRUPT)
            fprintf(stderr, "  corruption '%s' while attached gave %d\n", corruption_name[c], rc);
        CHECK(rc == TSHM_CORRUPT);
        CHECK(j == NULL);
        CHECK(tshm_errmsg() != NULL);
        gate_open(&go);
        CHECK(child_wait(holder) == 0);
    }
}

/* ---------------------------------------------------------------------------------------- */
/* fork() after open: the child may not use the parent's handle (TSHM_MISUSE), may close it  */
/* without disturbing the parent's locks, and may open a handle of its own.                  */

static void fork_after_open(const char *db) {
    tshm *h = open_with(db, 0, 0, 0);
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    pid_t kid = fork();
    if (kid == 0) {
        int fails = 0;
        tshm_snapshot s;
        uint32_t slot;
        fails += tshm_snapshot_get(h, &s) != TSHM_MISUSE;
        fails += tshm_writer_release(h) != TSHM_MISUSE;
        fails += tshm_reader_begin(h, &slot, &s) != TSHM_MISUSE;
        fails += tshm_close(h, NULL) != TSHM_OK;
        tshm *mine = open_with(db, 0, 0, 0);
        fails += mine == NULL;
        fails += tshm_writer_acquire(mine, 0) != TSHM_BUSY; /* the parent still holds it */
        fails += tshm_reader_begin(mine, &slot, &s) != TSHM_OK;
        fails += tshm_reader_end(mine, slot) != TSHM_OK;
        int last = -1;
        fails += tshm_close(mine, &last) != TSHM_OK;
        fails += last != 0;
        _exit(fails);
    }
    CHECK(child_wait(kid) == 0);
    /* the parent's role survived the child's close and exit */
    kid = fork();
    if (kid == 0) {
        tshm *c = open_with(db, 0, 0, 0);
        int rc = tshm_writer_acquire(c, 0);
        _exit(rc == TSHM_BUSY ? 0 : 1);
    }
    CHECK(child_wait(kid) == 0);
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
    int last = -1;
    CHECK_RC(tshm_close(h, &last), TSHM_OK);
    CHECK(last == 1);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    concurrent_first_open(test_db("first-open.db"));
    concurrent_first_open(test_db("first-open.db")); /* existing sidecar, nobody attached */
    writer_exclusion_and_wakeup(test_db("writer.db"));
    killed_writer_is_replaced(test_db("killed-writer.db"));
    killed_mid_publish(test_db("mid-publish.db"));
    reader_pins_and_stale_slots(test_db("readers-cas.db"), TSHM_READERS_CAS);
    reader_pins_and_stale_slots(test_db("readers-bytelock.db"), TSHM_READERS_BYTELOCK);
    mode_conflicts(test_db("modes.db"));
    simultaneous_closers(test_db("closers.db"), 25);
    corrupt_sidecars(test_db("corrupt.db"));
    fork_after_open(test_db("fork.db"));
    return harness_done("test_multiprocess");
}
