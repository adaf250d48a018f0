/*
 * test_index.c — the shared frame index across real processes.
 *
 * Every process knows the schedule: committed frame f holds page page_of(f); frames that are
 * rolled back hold bogus_page_of(f) instead, so a reader that ever sees a rolled-back entry
 * gets an answer the schedule contradicts. Readers check each lookup against the schedule at
 * their own snapshot.
 */
#include "harness.h"

#include <poll.h>
#include <sys/resource.h>

#define NPAGES 1500u

static uint64_t mix(uint64_t x) {
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}
/* A hot set of 100 pages takes half the frames. */
static uint32_t page_of(uint64_t f) {
    uint64_t h = mix(f);
    return (uint32_t)((h & 1) ? (h >> 1) % 100 : (h >> 1) % NPAGES);
}
static uint32_t bogus_page_of(uint64_t f) { return (page_of(f) + 1) % NPAGES; }

/* The newest committed frame <= max holding page, or 0: a table advanced as snapshots move
 * forward (rebuilt if one moves back, i.e. a new database). */
static struct { uint64_t upto; uint64_t latest[NPAGES]; } sched;
static uint64_t expected(uint32_t page, uint64_t max) {
    if (max < sched.upto) memset(&sched, 0, sizeof sched);
    for (; sched.upto < max; sched.upto++) sched.latest[page_of(sched.upto + 1)] = sched.upto + 1;
    return page < NPAGES ? sched.latest[page] : 0;
}

static uint64_t committed_of(tshm *h) {
    tshm_snapshot s;
    if (tshm_snapshot_get(h, &s) != TSHM_OK) return 0;
    return s.max_frame;
}

/* Checks `n` random lookups at the snapshot pinned by a reader slot; returns failures. */
static int check_lookups(tshm *h, uint64_t *seed, int n, long *checks) {
    uint32_t slot;
    tshm_snapshot snap;
    if (tshm_reader_begin(h, &slot, &snap) != TSHM_OK) return 1;
    int bad = 0;
    for (int i = 0; i < n; i++) {
        *seed = mix(*seed);
        uint32_t page = (uint32_t)(*seed % (NPAGES + 100)); /* some pages never written */
        uint64_t want = expected(page, snap.max_frame), got = 0;
        int rc = tshm_index_find(h, page, snap.max_frame, &got);
        if (!((rc == TSHM_OK && got == want && want != 0) || (rc == TSHM_NOTFOUND && want == 0))) {
            if (bad++ < 5)
                fprintf(stderr, "page %u at %llu: rc %d got %llu want %llu\n", page,
                        (unsigned long long)snap.max_frame, rc, (unsigned long long)got,
                        (unsigned long long)want);
        }
        (*checks)++;
    }
    tshm_reader_end(h, slot);
    return bad;
}

/* Whether the parent has closed the "done" pipe. */
static int is_done(int fd) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, 0) > 0;
}

struct report { long checks; long failures; long frames; };

/* One writer for `frames` frames in transactions of 1..64, one in eight rolled back. */
static void writer_run(const char *db, uint64_t frames, struct report *rep) {
    tshm *h = open_with(db, 0, 0, 0);
    if (h == NULL) { rep->failures++; return; }
    uint64_t seed = 12345;
    while (committed_of(h) < frames) {
        if (tshm_writer_acquire(h, 5000) != TSHM_OK) { rep->failures++; break; }
        uint64_t base = committed_of(h);
        seed = mix(seed);
        uint64_t k = 1 + seed % 64;
        int rollback = (seed >> 20) % 8 == 0;
        for (uint64_t i = 1; i <= k; i++) {
            uint64_t f = base + i;
            if (tshm_index_append(h, rollback ? bogus_page_of(f) : page_of(f), f) != TSHM_OK) {
                fprintf(stderr, "append %llu: %s\n", (unsigned long long)f, tshm_errmsg());
                rep->failures++;
            }
        }
        if (rollback) {
            if (tshm_index_truncate(h, base) != TSHM_OK) rep->failures++;
        } else {
            tshm_snapshot s;
            memset(&s, 0, sizeof s);
            s.max_frame = base + k;
            if (tshm_publish(h, &s, TSHM_SNAP_MAX_FRAME) != TSHM_OK) rep->failures++;
            rep->frames += (long)k;
        }
        tshm_writer_release(h);
    }
    tshm_close(h, NULL);
}

static void concurrent_lookups(const char *db, uint64_t frames) {
    int done[2];
    if (pipe(done) != 0) { perror("pipe"); exit(2); }
    channel ch;
    channel_init(&ch);
    enum { READERS = 3, OPENERS = 1 };
    pid_t kids[READERS + OPENERS];
    tshm *keep = open_with(db, 0, 0, 0); /* so that nobody re-initializes midway */
    for (int i = 0; i < READERS + OPENERS; i++) {
        kids[i] = fork();
        if (kids[i] == 0) {
            close(done[1]);
            struct report rep = {0, 0, 0};
            uint64_t seed = (uint64_t)getpid();
            if (i < READERS) {
                tshm *h = open_with(db, 0, 0, 0);
                if (h == NULL) rep.failures++;
                while (h != NULL && !is_done(done[0]))
                    rep.failures += check_lookups(h, &seed, 50, &rep.checks);
                if (h != NULL) rep.failures += check_lookups(h, &seed, 2000, &rep.checks);
                tshm_close(h, NULL);
            } else {
                /* Opens while the index grows must never see "corrupt". */
                while (!is_done(done[0])) {
                    tshm *h = open_with(db, 0, 0, 0);
                    if (h == NULL) rep.failures++;
                    tshm_close(h, NULL);
                    rep.checks++;
                }
                rep.frames = -1; /* marks the opener's report */
            }
            channel_send(&ch, &rep, sizeof rep);
            _exit(0);
        }
    }
    struct report w = {0, 0, 0};
    writer_run(db, frames, &w);
    close(done[1]);
    CHECK(w.failures == 0);
    CHECK(w.frames >= (long)frames);
    long checks = 0, opens = 0, failures = 0;
    for (int i = 0; i < READERS + OPENERS; i++) {
        struct report r;
        if (!channel_recv(&ch, &r, sizeof r)) { failures++; continue; }
        failures += r.failures;
        if (r.frames >= 0) checks += r.checks;
        else opens += r.checks;
    }
    for (int i = 0; i < READERS + OPENERS; i++) CHECK(child_wait(kids[i]) == 0);
    printf("  concurrent lookups: %ld frames committed, %ld lookups checked, %ld opens, "
           "%ld failures\n", w.frames, checks, opens, failures);
    CHECK(failures == 0);
    CHECK(checks >= READERS * 2000);
    tshm_index_stats st;
    CHECK_RC(tshm_index_stats_get(keep, &st), TSHM_OK);
    CHECK(st.entries - st.dead == committed_of(keep));
    CHECK(st.blocks >= committed_of(keep) / 4096);
    close(done[0]);
    close(ch.fd[0]);
    close(ch.fd[1]);
    tshm_close(keep, NULL);
}

/* A writer dies after appending and before publishing; the next writer trims. */
static void killed_between_append_and_publish(const char *db) {
    tshm *keep = open_with(db, 0, 0, 0);
    channel ch;
    channel_init(&ch);
    pid_t kid = fork();
    if (kid == 0) {
        tshm *h = open_with(db, 0, 0, 0);
        if (h == NULL || tshm_writer_acquire(h, 1000) != TSHM_OK) _exit(1);
        for (uint64_t f = 1; f <= 5000; f++) tshm_index_append(h, page_of(f), f);
        publish_max_frame(h, 5000);
        for (uint64_t f = 5001; f <= 5300; f++) tshm_index_append(h, bogus_page_of(f), f);
        char c = 'r';
        channel_send(&ch, &c, 1);
        for (;;) pause(); /* killed here */
    }
    char c;
    CHECK(channel_recv(&ch, &c, 1) && c == 'r');
    child_kill(kid);
    tshm_index_stats st;
    CHECK_RC(tshm_index_stats_get(keep, &st), TSHM_OK);
    CHECK(st.entries == 5300 && st.tail_frame == 5300);
    /* Readers at the committed snapshot are right even before anyone trims. */
    uint64_t seed = 7;
    long checks = 0;
    CHECK(check_lookups(keep, &seed, 3000, &checks) == 0);
    /* The next writer trims the 300 uncommitted entries, then appends its own. */
    CHECK_RC(tshm_writer_acquire(keep, 1000), TSHM_OK);
    CHECK_RC(tshm_index_stats_get(keep, &st), TSHM_OK);
    CHECK(st.dead == 300 && st.tail_frame == 5000);
    for (uint64_t f = 5001; f <= 6000; f++) CHECK_RC(tshm_index_append(keep, page_of(f), f), TSHM_OK);
    publish_max_frame(keep, 6000);
    CHECK_RC(tshm_writer_release(keep), TSHM_OK);
    /* A fresh process agrees. */
    pid_t r = fork();
    if (r == 0) {
        tshm *h = open_with(db, 0, 0, 0);
        uint64_t s = 99;
        long n = 0;
        int bad = h == NULL ? 1 : check_lookups(h, &s, 5000, &n);
        tshm_close(h, NULL);
        _exit(bad != 0);
    }
    CHECK(child_wait(r) == 0);
    close(ch.fd[0]);
    close(ch.fd[1]);
    tshm_close(keep, NULL);
}

/* Random lookups at random snapshots up to `upto` against the schedule; returns failures. */
static int check_lookups_below(tshm *h, uint64_t upto, uint64_t *seed, int n) {
    int bad = 0;
    for (int i = 0; i < n; i++) {
        *seed = mix(*seed);
        uint32_t page = (uint32_t)(*seed % (NPAGES + 100));
        uint64_t max = 1 + (*seed >> 20) % upto, want = expected(page, max), got = 0;
        int rc = tshm_index_find(h, page, max, &got);
        if (!((rc == TSHM_OK && got == want && want != 0) || (rc == TSHM_NOTFOUND && want == 0))) {
            if (bad++ < 5)
                fprintf(stderr, "page %u at %llu: rc %d got %llu want %llu\n", page,
                        (unsigned long long)max, rc, (unsigned long long)got,
                        (unsigned long long)want);
        }
    }
    return bad;
}

/* A writer handle appends (and so remembers where its appends land), then lets go. Another
 * process restarts the index (a WAL restart) and appends into the old blocks again; a third
 * appends, publishes part, and is killed with entries unpublished; a fourth is killed inside
 * an append (at the test point between the entry and the count). The first handle takes the
 * role back (its trim drops what was never published) and appends across blocks it knew
 * before: a fresh process finds, at any snapshot, what the schedule says. */
static void remembering_writer_after_others_and_kills(const char *db) {
    tshm *keep = open_with(db, 0, 0, 0);
    if (keep == NULL) { CHECK(0); return; }
    CHECK_RC(tshm_writer_acquire(keep, 1000), TSHM_OK);
    for (uint64_t f = 1; f <= 9000; f++) CHECK_RC(tshm_index_append(keep, page_of(f), f), TSHM_OK);
    publish_max_frame(keep, 9000);
    CHECK_RC(tshm_writer_release(keep), TSHM_OK);
    pid_t kid = fork();
    if (kid == 0) {
        tshm *h = open_with(db, 0, 0, 0);
        if (h == NULL || tshm_writer_acquire(h, 1000) != TSHM_OK) _exit(1);
        if (tshm_index_reset(h) != TSHM_OK) _exit(2);
        publish_max_frame(h, 0);
        for (uint64_t f = 1; f <= 5000; f++)
            if (tshm_index_append(h, page_of(f), f) != TSHM_OK) _exit(3);
        publish_max_frame(h, 5000);
        _exit(tshm_writer_release(h) == TSHM_OK && tshm_close(h, NULL) == TSHM_OK ? 0 : 4);
    }
    CHECK(child_wait(kid) == 0);
    channel ch;
    channel_init(&ch);
    kid = fork();
    if (kid == 0) {
        tshm *h = open_with(db, 0, 0, 0);
        if (h == NULL || tshm_writer_acquire(h, 1000) != TSHM_OK) _exit(1);
        for (uint64_t f = 5001; f <= 7000; f++) tshm_index_append(h, page_of(f), f);
        publish_max_frame(h, 7000);
        for (uint64_t f = 7001; f <= 7300; f++) tshm_index_append(h, bogus_page_of(f), f);
        char c = 'r';
        channel_send(&ch, &c, 1);
        for (;;) pause(); /* killed here */
    }
    char c;
    CHECK(channel_recv(&ch, &c, 1) && c == 'r');
    child_kill(kid);
    kid = fork();
    if (kid == 0) {
        setenv("TSHM_TEST_CRASH_AT", "append_entry", 1); /* armed before the first call */
        tshm *h = open_with(db, 0, 0, 0);
        if (h == NULL || tshm_writer_acquire(h, 1000) != TSHM_OK) _exit(1);
        tshm_index_append(h, bogus_page_of(7001), 7001); /* dies inside */
        _exit(2);
    }
    CHECK(child_wait(kid) == 128 + SIGKILL);
    tshm_index_stats st;
    CHECK_RC(tshm_index_stats_get(keep, &st), TSHM_OK);
    CHECK(st.tail_frame == 7001); /* the dead append's entry and tail, not its count */
    CHECK_RC(tshm_writer_acquire(keep, 1000), TSHM_OK);
    CHECK_RC(tshm_index_stats_get(keep, &st), TSHM_OK);
    CHECK(st.tail_frame == 7000 && st.dead == 300);
    for (uint64_t f = 7001; f <= 14000; f++) CHECK_RC(tshm_index_append(keep, page_of(f), f), TSHM_OK);
    publish_max_frame(keep, 14000);
    CHECK_RC(tshm_writer_release(keep), TSHM_OK);
    pid_t r = fork();
    if (r == 0) {
        tshm *h = open_with(db, 0, 0, 0);
        uint64_t s = 5;
        int bad = h == NULL ? 1 : check_lookups_below(h, 14000, &s, 4000);
        tshm_close(h, NULL);
        _exit(bad != 0);
    }
    CHECK(child_wait(r) == 0);
    close(ch.fd[0]);
    close(ch.fd[1]);
    tshm_close(keep, NULL);
}

/* The file-size limit stops growth with TSHM_FULL whatever SIGXFSZ's disposition (at the
 * default it kills: growth checks the limit first, and never changes the disposition); the
 * index stays consistent, rolls back, and grows again once the limit is lifted. */
static void growth_under_file_size_limit(const char *db, void (*disposition)(int)) {
    pid_t kid = fork();
    if (kid == 0) {
        signal(SIGXFSZ, disposition);
        tshm *h = open_with(db, 0, 0, 0);
        if (h == NULL || tshm_writer_acquire(h, 1000) != TSHM_OK) _exit(10);
        const char *side = sidecar_of(db);
        struct stat st;
        if (stat(side, &st) != 0) _exit(11);
        struct rlimit rl = {.rlim_cur = (rlim_t)st.st_size + 5 * 65536 + 100,
                            .rlim_max = RLIM_INFINITY};
        if (setrlimit(RLIMIT_FSIZE, &rl) != 0) _exit(12);
        uint64_t f = 0;
        int rc = TSHM_OK;
        while (rc == TSHM_OK && f < 10000000) rc = tshm_index_append(h, page_of(f + 1), f + 1), f += rc == TSHM_OK;
        if (rc != TSHM_FULL) {
            fprintf(stderr, "growth past the limit: %s (%s)\n", tshm_errstr(rc), tshm_errmsg());
            _exit(13);
        }
        if (f < 4096) _exit(14);
        /* engine regions grow the same pool */
        void *region = NULL;
        if (tshm_region(h, 0, 32768, 1, &region) != TSHM_FULL) _exit(15);
        struct sigaction sa;
        if (sigaction(SIGXFSZ, NULL, &sa) != 0 || sa.sa_handler != disposition) _exit(16);
        if (stat(side, &st) != 0 || (rlim_t)st.st_size > rl.rlim_cur) _exit(17);
        publish_max_frame(h, f);
        uint64_t seed = 3;
        long n = 0;
        if (check_lookups(h, &seed, 2000, &n) != 0) _exit(18);
        /* Rolling back still works; so does appending once the limit is lifted. */
        if (tshm_index_truncate(h, f) != TSHM_OK) _exit(19);
        rl.rlim_cur = RLIM_INFINITY;
        setrlimit(RLIMIT_FSIZE, &rl);
        if (tshm_index_append(h, page_of(f + 1), f + 1) != TSHM_OK) _exit(20);
        tshm_writer_release(h);
        tshm_close(h, NULL);
        _exit(0);
    }
    int rc = child_wait(kid);
    if (rc != 0) fprintf(stderr, "file-size-limit child exited %d\n", rc);
    CHECK(rc == 0);
}

/* Raw access to the sidecar through one descriptor that stays open while handles are: with
 * POSIX locks, closing any descriptor of the file would drop every lock of this process. */
static int side_fd = -1;
static void poke64_at(off_t off, uint64_t v) {
    if (pwrite(side_fd, &v, 8, off) != 8) perror("pwrite");
}
static uint64_t peek64_at(off_t off) {
    uint64_t v = 0;
    if (pread(side_fd, &v, 8, off) != 8) perror("pread");
    return v;
}

/* Exit status of a child that opens db: 0 when the open fails with CORRUPT. */
static int open_in_child_is_corrupt(const char *db) {
    pid_t kid = fork();
    if (kid == 0) {
        tshm *h = NULL;
        int rc = tshm_open(db, NULL, &h);
        if (rc != TSHM_CORRUPT) fprintf(stderr, "open: %s (%s)\n", tshm_errstr(rc), tshm_errmsg() ? tshm_errmsg() : "");
        _exit(rc == TSHM_CORRUPT ? 0 : 1);
    }
    return child_wait(kid) == 0;
}

/* Corrupt index words and pool pointers: TSHM_CORRUPT, never a crash or a hang. */
static void corrupt_index(const char *db) {
    tshm *h = open_with(db, 0, 0, 0);
    if (h == NULL) { CHECK(0); return; }
    char side[600];
    snprintf(side, sizeof side, "%s-tshm", db);
    side_fd = open(side, O_RDWR);
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    CHECK_RC(tshm_index_append(h, 1, 1), TSHM_OK);
    CHECK_RC(tshm_index_append(h, 1, 2), TSHM_OK);
    publish_max_frame(h, 2);
    uint64_t base = peek64_at(48);
    const off_t units = 520, dir_top = (off_t)base - 36864;
    /* units beyond the file: a joining process refuses the sidecar */
    uint64_t u = peek64_at(units);
    poke64_at(units, 1u << 30);
    CHECK(open_in_child_is_corrupt(db));
    poke64_at(units, u);
    /* a directory pointer beyond the pool */
    uint64_t d = peek64_at(dir_top);
    poke64_at(dir_top, 0x7fffffff);
    uint64_t f = 0;
    CHECK_RC(tshm_index_find(h, 1, 2, &f), TSHM_CORRUPT);
    CHECK_RC(tshm_index_append(h, 1, 3), TSHM_CORRUPT);
    poke64_at(dir_top, d);
    /* an entry linking forward (block 0 is the pool's second unit) */
    off_t e1 = (off_t)base + 65536 + 16;
    uint64_t w = peek64_at(e1);
    poke64_at(e1, 1 | (7ull << 32));
    CHECK_RC(tshm_index_find(h, 1, 1, &f), TSHM_CORRUPT);
    /* an entry on the wrong chain */
    poke64_at(e1, 2 | (1ull << 32));
    CHECK_RC(tshm_index_find(h, 1, 1, &f), TSHM_CORRUPT);
    poke64_at(e1, w);
    CHECK_RC(tshm_index_find(h, 1, 1, &f), TSHM_OK);
    CHECK(f == 1);
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
    tshm_close(h, NULL);
    close(side_fd);
}

static void poke32_at(off_t off, uint32_t v) {
    if (pwrite(side_fd, &v, 4, off) != 4) perror("pwrite");
}
static uint32_t peek32_at(off_t off) {
    uint32_t v = 0;
    if (pread(side_fd, &v, 4, off) != 4) perror("pread");
    return v;
}
static void open_side(const char *db) {
    char side[600];
    snprintf(side, sizeof side, "%s-tshm", db);
    side_fd = open(side, O_RDWR);
}
static off_t sidecar_bytes(void) {
    struct stat st;
    return fstat(side_fd, &st) == 0 ? st.st_size : -1;
}

/* File offset of the frame word of index slot `slot` (through the block table). */
static off_t frame_word_of(uint64_t slot) {
    uint64_t base = peek64_at(48);
    off_t blk_top = (off_t)base - 4096;
    uint64_t b = slot / 4096;
    uint32_t node = peek32_at(blk_top + (off_t)(b >> 10) * 4);
    if (node == 0) return -1;
    uint32_t unit = peek32_at((off_t)base + (off_t)(node - 1) * 4096 + (off_t)(b & 1023) * 4);
    if (unit == 0) return -1;
    return (off_t)base + (off_t)(unit - 1) * 65536 + (off_t)(slot % 4096) * 16 + 8;
}

static int foreach_count_cb(void *ctx, uint32_t page, uint64_t frame) {
    (void)page;
    (void)frame;
    ++*(long *)ctx;
    return 0;
}

/* A writer killed (SIGKILL) inside tshm_index_truncate, with entries already marked dead: the
 * next writer's trim leaves the counters exact (every entry dead, nothing live). */
static void truncate_killed_inside_the_loop(const char *db) {
    enum { N = 240000 };
    tshm *keep = open_with(db, 0, 0, 0);
    if (keep == NULL) { CHECK(0); return; }
    open_side(db);
    int killed_inside = 0;
    for (int attempt = 0; attempt < 8 && !killed_inside; attempt++) {
        CHECK_RC(tshm_writer_acquire(keep, 1000), TSHM_OK);
        CHECK_RC(tshm_index_reset(keep), TSHM_OK);
        publish_max_frame(keep, 0);
        CHECK_RC(tshm_writer_release(keep), TSHM_OK);
        channel up, go;
        channel_init(&up);
        channel_init(&go);
        pid_t kid = fork();
        if (kid == 0) {
            tshm *h = open_with(db, 0, 0, 0);
            if (h == NULL || tshm_writer_acquire(h, 1000) != TSHM_OK) _exit(1);
            for (uint64_t f = 1; f <= N; f++)
                if (tshm_index_append(h, bogus_page_of(f), f) != TSHM_OK) _exit(2);
            char c = 'a';
            channel_send(&up, &c, 1);
            if (!channel_recv(&go, &c, 1)) _exit(3);
            tshm_index_truncate(h, 0); /* killed in here */
            for (;;) pause();
        }
        char c;
        CHECK(channel_recv(&up, &c, 1) && c == 'a');
        /* the loop runs from the newest slot down: kill once the middle one is marked dead */
        off_t mid = frame_word_of(N / 2);
        CHECK(mid > 0);
        c = 'g';
        if (write(go.fd[1], &c, 1) != 1) CHECK(0);
        while (mid > 0 && !(peek64_at(mid) >> 63)) {}
        kill(kid, SIGKILL);
        child_wait(kid);
        tshm_index_stats st;
        CHECK_RC(tshm_index_stats_get(keep, &st), TSHM_OK);
        /* the tail is stored after the loop: still N means the kill landed inside it */
        killed_inside = st.tail_frame == N && !(peek64_at(frame_word_of(0)) >> 63);
        /* the next writer trims: every entry is dead, and the counters say so exactly */
        CHECK_RC(tshm_writer_acquire(keep, 1000), TSHM_OK);
        CHECK_RC(tshm_index_stats_get(keep, &st), TSHM_OK);
        CHECK(st.entries == N);
        if (st.dead != N) fprintf(stderr, "after the trim: %llu entries, %llu dead\n",
                                  (unsigned long long)st.entries, (unsigned long long)st.dead);
        CHECK(st.dead == N);
        CHECK(st.tail_frame == 0);
        /* and a truncate after the trim changes nothing */
        CHECK_RC(tshm_index_truncate(keep, 0), TSHM_OK);
        CHECK_RC(tshm_index_stats_get(keep, &st), TSHM_OK);
        CHECK(st.dead == N);
        CHECK_RC(tshm_writer_release(keep), TSHM_OK);
        long n = 0;
        CHECK_RC(tshm_index_foreach(keep, 1ull << 62, foreach_count_cb, &n), TSHM_OK);
        CHECK(n == 0);
        for (int i = 0; i < 2; i++) {
            close(up.fd[i]);
            close(go.fd[i]);
        }
    }
    CHECK(killed_inside);
    printf("  truncate killed inside its loop: %s\n", killed_inside ? "yes" : "never caught");
    tshm_close(keep, NULL);
    close(side_fd);
}

/* In a joining child: foreach and find on a corrupt directory return TSHM_CORRUPT. */
static int child_walks_are_corrupt(const char *db, uint32_t page, uint64_t max, int find_too) {
    pid_t kid = fork();
    if (kid == 0) {
        tshm *h = open_with(db, 0, 0, 0);
        if (h == NULL) _exit(1);
        long n = 0;
        uint64_t f = 0;
        int a = tshm_index_foreach(h, max, foreach_count_cb, &n);
        int b = find_too ? tshm_index_find(h, page, max, &f) : TSHM_CORRUPT;
        if (a != TSHM_CORRUPT || b != TSHM_CORRUPT)
            fprintf(stderr, "joiner: foreach %s (%ld pages), find %s\n", tshm_errstr(a), n, tshm_errstr(b));
        tshm_close(h, NULL);
        _exit(a == TSHM_CORRUPT && b == TSHM_CORRUPT ? 0 : 1);
    }
    return child_wait(kid) == 0;
}

/* A directory that is not a tree is corrupt: every walk over it ends with TSHM_CORRUPT after
 * work bounded by the node count, in this process and in a joining one. */
static void corrupt_directory_walks_are_bounded(const char *db) {
    tshm *h = open_with(db, 0, 0, 0);
    if (h == NULL) { CHECK(0); return; }
    open_side(db);
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    for (uint64_t f = 1; f <= 3000; f++) CHECK_RC(tshm_index_append(h, page_of(f), f), TSHM_OK);
    publish_max_frame(h, 3000);
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
    uint64_t base = peek64_at(48);
    const off_t dir_top = (off_t)base - 36864;
    const uint32_t page = page_of(3000);
    uint64_t f = 0;
    long n = 0, pages = 0;
    CHECK_RC(tshm_index_foreach(h, 3000, foreach_count_cb, &pages), TSHM_OK);
    uint32_t P = peek32_at(dir_top); /* the middle node of pages 0..2^19 */
    CHECK(P != 0);
    const off_t node_p = (off_t)base + (off_t)(P - 1) * 4096;
    static uint32_t saved[1024], tops[8192];
    CHECK(pread(side_fd, saved, sizeof saved, node_p) == (ssize_t)sizeof saved);
    CHECK(pread(side_fd, tops, sizeof tops, dir_top) == (ssize_t)sizeof tops);

    /* every top word names node P, and P is filled with the value P */
    static uint32_t fill[1024];
    for (int i = 0; i < 1024; i++) fill[i] = P;
    for (int t = 0; t < 8192; t++) poke32_at(dir_top + t * 4, P);
    CHECK(pwrite(side_fd, fill, sizeof fill, node_p) == (ssize_t)sizeof fill);
    CHECK_RC(tshm_index_foreach(h, 3000, foreach_count_cb, &n), TSHM_CORRUPT);
    CHECK_RC(tshm_index_find(h, page, 3000, &f), TSHM_CORRUPT);
    CHECK(child_walks_are_corrupt(db, page, 3000, 1));
    /* the same with P's words naming an empty node page above P (the last of the node unit)
     * and the node count lifted too: the bound comes from the node allocator's end and the
     * file, not from the count alone */
    const off_t nodes = 552;
    uint64_t nodes_was = peek64_at(nodes);
    uint32_t empty = (uint32_t)peek64_at(544) - 1;
    CHECK(empty > P);
    poke64_at(nodes, 1ull << 40);
    for (int i = 0; i < 1024; i++) fill[i] = empty;
    CHECK(pwrite(side_fd, fill, sizeof fill, node_p) == (ssize_t)sizeof fill);
    CHECK_RC(tshm_index_foreach(h, 3000, foreach_count_cb, &n), TSHM_CORRUPT);
    CHECK(child_walks_are_corrupt(db, 0, 3000, 0));
    poke64_at(nodes, nodes_was);
    CHECK(pwrite(side_fd, saved, sizeof saved, node_p) == (ssize_t)sizeof saved);
    CHECK(pwrite(side_fd, tops, sizeof tops, dir_top) == (ssize_t)sizeof tops);

    /* two top words name the same (sound) middle node: a node referenced twice */
    poke32_at(dir_top, P);
    for (int t = 1; t < 8192; t++) poke32_at(dir_top + t * 4, 0);
    poke32_at(dir_top + 4, P);
    CHECK_RC(tshm_index_foreach(h, 3000, foreach_count_cb, &n), TSHM_CORRUPT);
    CHECK_RC(tshm_index_find(h, (1u << 19) | page, 3000, &f), TSHM_CORRUPT);
    CHECK(child_walks_are_corrupt(db, (1u << 19) | page, 3000, 1));
    poke32_at(dir_top + 4, 0);

    /* a middle node whose first word names itself */
    uint32_t leaf0 = saved[0];
    poke32_at(node_p, P);
    CHECK_RC(tshm_index_foreach(h, 3000, foreach_count_cb, &n), TSHM_CORRUPT);
    CHECK_RC(tshm_index_find(h, 1, 3000, &f), TSHM_CORRUPT);
    CHECK(child_walks_are_corrupt(db, 1, 3000, 1));
    poke32_at(node_p, leaf0);

    /* a back link that cycles: the newest entry of a page names itself */
    off_t leaf_p = (off_t)base + (off_t)(saved[page >> 9] - 1) * 4096;
    uint64_t d = peek64_at(leaf_p + (off_t)(page & 511) * 8);
    uint64_t slot = (d & 0xffffffff) - 1;
    off_t e = frame_word_of(slot) - 8;
    uint64_t w = peek64_at(e);
    poke64_at(e, (w & 0xffffffff) | ((slot + 1) << 32));
    CHECK_RC(tshm_index_find(h, page, 2, &f), TSHM_CORRUPT);
    CHECK_RC(tshm_index_foreach(h, 2, foreach_count_cb, &n), TSHM_CORRUPT);
    poke64_at(e, w);

    /* an entry block that lies in a node unit */
    const off_t blk_top = (off_t)base - 4096;
    uint32_t bnode = peek32_at(blk_top);
    off_t bword = (off_t)base + (off_t)(bnode - 1) * 4096;
    uint32_t unit0 = peek32_at(bword);
    poke32_at(bword, (P - 1) / 16 + 1);
    CHECK_RC(tshm_index_foreach(h, 3000, foreach_count_cb, &n), TSHM_CORRUPT);
    CHECK(child_walks_are_corrupt(db, page, 3000, 1));
    poke32_at(bword, unit0);

    /* all repaired: sound again */
    n = 0;
    CHECK_RC(tshm_index_foreach(h, 3000, foreach_count_cb, &n), TSHM_OK);
    CHECK(n == pages && pages > 500);
    CHECK_RC(tshm_index_find(h, page, 3000, &f), TSHM_OK);
    CHECK(f == 3000);
    tshm_close(h, NULL);
    close(side_fd);
}

/* A reservation counter far beyond what the index and the regions can use is corrupt: a
 * joiner refuses it, and a writer already attached gets TSHM_CORRUPT instead of growing the
 * file to match. */
static void absurd_reservation_is_corrupt_not_growth(const char *db) {
    tshm *h = open_with(db, 0, 0, 0);
    if (h == NULL) { CHECK(0); return; }
    open_side(db);
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    uint64_t f = 0;
    for (; f < 4096; f++) CHECK_RC(tshm_index_append(h, page_of(f + 1), f + 1), TSHM_OK);
    off_t len = sidecar_bytes();
    const off_t reserved = 616;
    uint64_t r = peek64_at(reserved);
    poke64_at(reserved, 1ull << 26); /* 4 TiB of units */
    CHECK(open_in_child_is_corrupt(db));
    /* the next append needs a new block */
    CHECK_RC(tshm_index_append(h, page_of(f + 1), f + 1), TSHM_CORRUPT);
    CHECK(sidecar_bytes() == len);
    poke64_at(reserved, r);
    CHECK_RC(tshm_index_append(h, page_of(f + 1), f + 1), TSHM_OK);
    CHECK(sidecar_bytes() > len && sidecar_bytes() < len + 4 * 65536);
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
    tshm_close(h, NULL);
    close(side_fd);
}

/* Joiners validate the index counters while a writer appends and rolls back as fast as it can:
 * none may see a consistent-but-moving index as corrupt. */
static void joiners_during_fast_rollbacks_never_see_corrupt(const char *db, int opens) {
    tshm *keep = open_with(db, 0, 0, 0);
    if (keep == NULL) { CHECK(0); return; }
    int done[2];
    if (pipe(done) != 0) { perror("pipe"); exit(2); }
    gate g;
    gate_init(&g);
    pid_t w = fork();
    if (w == 0) {
        close(done[1]);
        tshm *h = open_with(db, 0, 0, 0);
        if (h == NULL || tshm_writer_acquire(h, 1000) != TSHM_OK) _exit(1);
        gate_wait(&g);
        uint64_t f = 0, rounds = 0;
        int bad = 0;
        while (!is_done(done[0]) && !bad) {
            /* a one-frame savepoint rolled back, then one frame kept */
            bad |= tshm_index_append(h, bogus_page_of(f + 1), f + 1) != TSHM_OK;
            bad |= tshm_index_truncate(h, f) != TSHM_OK;
            bad |= tshm_index_append(h, page_of(f + 1), f + 1) != TSHM_OK;
            f++;
            if (++rounds % 200000 == 0) {
                bad |= tshm_index_reset(h) != TSHM_OK;
                f = 0;
            }
        }
        tshm_writer_release(h);
        tshm_close(h, NULL);
        _exit(bad);
    }
    enum { JOINERS = 2 };
    channel ch;
    channel_init(&ch);
    pid_t j[JOINERS];
    for (int k = 0; k < JOINERS; k++) {
        j[k] = fork();
        if (j[k] == 0) {
            gate_wait(&g);
            long corrupt = 0, other = 0;
            for (int i = 0; i < opens; i++) {
                tshm *h = NULL;
                int rc = tshm_open(db, NULL, &h);
                if (rc == TSHM_CORRUPT) {
                    if (corrupt++ < 3) fprintf(stderr, "joiner: %s\n", tshm_errmsg());
                } else if (rc != TSHM_OK) {
                    other++;
                }
                if (rc == TSHM_OK) tshm_close(h, NULL);
            }
            long rep[2] = {corrupt, other};
            channel_send(&ch, rep, sizeof rep);
            _exit(0);
        }
    }
    gate_open(&g);
    long corrupt = 0, other = 0;
    for (int k = 0; k < JOINERS; k++) {
        long rep[2];
        if (channel_recv(&ch, rep, sizeof rep)) corrupt += rep[0], other += rep[1];
        else other++;
        CHECK(child_wait(j[k]) == 0);
    }
    close(done[1]);
    CHECK(child_wait(w) == 0);
    close(done[0]);
    printf("  joiners during fast rollbacks: %d opens, %ld saw corrupt, %ld other failures\n",
           JOINERS * opens, corrupt, other);
    CHECK(corrupt == 0);
    CHECK(other == 0);
    close(ch.fd[0]);
    close(ch.fd[1]);
    tshm_close(keep, NULL);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    concurrent_lookups(test_db("concurrent.db"), 400000);
    killed_between_append_and_publish(test_db("killed.db"));
    remembering_writer_after_others_and_kills(test_db("remembering.db"));
    growth_under_file_size_limit(test_db("fsize.db"), SIG_IGN);
    corrupt_index(test_db("corrupt.db"));
    truncate_killed_inside_the_loop(test_db("trunc-killed.db"));
    growth_under_file_size_limit(test_db("fsize-default.db"), SIG_DFL);
    absurd_reservation_is_corrupt_not_growth(test_db("reserved.db"));
    joiners_during_fast_rollbacks_never_see_corrupt(test_db("joiners.db"), 3000);
    corrupt_directory_walks_are_bounded(test_db("corrupt-dir.db"));
    return harness_done("test_index");
}
