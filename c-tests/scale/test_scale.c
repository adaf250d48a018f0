/*
 * test_scale.c — read transactions at scale, from outside: many processes, many handles, many
 * concurrent read transactions per handle.
 *
 * The contract under test:
 *   - a handle's concurrent read transactions at one snapshot share one reader slot (a count);
 *     a handle keeps its slot between read transactions;
 *   - tshm_reader_begin never answers TSHM_BUSY while the sidecar's reader table has room for
 *     the distinct (handle, snapshot) pairs pinned at that moment, and the default table holds
 *     256 handles x 4 snapshots;
 *   - a slot's pin lasts until its last transaction ends; ending a slot the handle does not
 *     hold, or once more than it was begun, is TSHM_MISUSE and changes nothing;
 *   - the slot a handle keeps between transactions gives way when other handles need it;
 *   - the pins of a SIGKILLed process stop counting and its slots are reclaimed.
 *
 * Processes are forked and synchronized with gates and channels (pipes), never with sleeps.
 * Handles of one process share one descriptor per sidecar, so no descriptor limit needs
 * raising here (the big test checks that the 15 opens after a process's first cost none).
 */
#include "harness.h"

#include <dirent.h>

#define PROCS 16   /* reader processes */
#define HANDLES 16 /* handles per process */
#define TXNS 16    /* read transactions per handle, all held at once */
#define SNAPS 4    /* snapshots the transactions of one handle are spread over (variant 2) */
#define FIRST_FRAME 100

/* ---------------------------------------------------------------------------------------- */
/* helpers                                                                                    */

/* Open descriptors of this process. */
static int count_fds(void) {
    DIR *d = opendir("/proc/self/fd");
    if (d == NULL) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.') n++;
    closedir(d);
    return n - 1; /* the listing's own descriptor */
}

/* Publishes max_frame with the writer role taken for it. */
static void publish_as_writer(tshm *h, uint64_t f) {
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    publish_max_frame(h, f);
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
}

/* Publishes the current max_frame + 1 (writer role taken for it); returns the new frame, or 0
 * when a step failed. For use in children (no CHECK). */
static uint64_t commit_next(tshm *w) {
    tshm_snapshot s;
    if (tshm_writer_acquire(w, 1000) != TSHM_OK) return 0;
    int ok = tshm_snapshot_get(w, &s) == TSHM_OK;
    uint64_t f = s.max_frame + 1;
    memset(&s, 0, sizeof s);
    s.max_frame = f;
    ok = ok && tshm_publish(w, &s, TSHM_SNAP_MAX_FRAME) == TSHM_OK;
    ok = tshm_writer_release(w) == TSHM_OK && ok;
    return ok ? f : 0;
}

/* What the reader table shows: slots held by a live reader with a pinned frame, how many of
 * them belong to `pid` (0: any), and the smallest and largest pinned frame. */
typedef struct { int pinned, of_pid, alive_unpinned; uint64_t lo, hi; } table_view;

static table_view view_table(const tshm *h, uint32_t pid) {
    table_view v = {0, 0, 0, TSHM_NO_FRAME, 0};
    tshm_info info;
    if (tshm_info_get(h, &info) != TSHM_OK) return v;
    for (uint32_t i = 0; i < info.reader_slots; i++) {
        tshm_owner_info o;
        if (tshm_owner(h, TSHM_ROLE_READER0 + i, &o) != TSHM_OK) continue;
        if (!o.held || !o.alive) continue;
        if (o.frame == TSHM_NO_FRAME) {
            v.alive_unpinned++;
            continue;
        }
        v.pinned++;
        if (pid == 0 || o.pid == pid) v.of_pid++;
        if (o.frame < v.lo) v.lo = o.frame;
        if (o.frame > v.hi) v.hi = o.frame;
    }
    return v;
}

static uint64_t min_frame(const tshm *h) {
    uint64_t m = 0;
    CHECK_RC(tshm_min_reader_frame(h, &m), TSHM_OK);
    return m;
}

/* A reader child's account, cumulative; sent after opening, after each round and at the end. */
typedef struct {
    int kid;
    int opened, calls, ok, wrong_frame, pairs;
    int fd_first, fd_more; /* descriptors the first open cost, and the 15 others */
    int first_rc, first_at; /* first non-OK tshm_open/tshm_reader_begin; index of that call */
    char msg[200];
    int end_calls, end_ok, close_ok;
    int end_rc; /* first non-OK tshm_reader_end or tshm_close */
    char end_msg[200];
} kid_report;

static void note(int *slot_rc, int *at, char *msg, size_t cap, int rc, int where) {
    if (*slot_rc != TSHM_OK) return;
    const char *m = tshm_errmsg();
    *slot_rc = rc;
    if (at) *at = where;
    snprintf(msg, cap, "%s", m ? m : "(no message)");
}

/* Distinct slots among what handle i holds (its (handle, snapshot) pins, when shared). */
static int distinct(const uint32_t *slots, const int *held, int n) {
    int d = 0;
    for (int j = 0; j < n; j++) {
        if (!held[j]) continue;
        int seen = 0;
        for (int k = 0; k < j; k++) seen |= held[k] && slots[k] == slots[j];
        d += !seen;
    }
    return d;
}

/* ---------------------------------------------------------------------------------------- */
/* The writer process: on each command (a frame; 0 for "current + 1") it takes the writer     */
/* role, publishes that max_frame and releases; it answers the frame published (0: failed).  */

typedef server writer_proc;

static void writer_serve(int in, int out, void *ctx) {
    tshm *h = NULL;
    if (tshm_open(ctx, NULL, &h) != TSHM_OK) _exit(4);
    uint64_t f;
    while (read(in, &f, sizeof f) == sizeof f) {
        uint64_t done = 0;
        if (f == 0) {
            done = commit_next(h);
        } else if (tshm_writer_acquire(h, 1000) == TSHM_OK) {
            tshm_snapshot s;
            memset(&s, 0, sizeof s);
            s.max_frame = f;
            done = tshm_publish(h, &s, TSHM_SNAP_MAX_FRAME) == TSHM_OK ? f : 0;
            if (tshm_writer_release(h) != TSHM_OK) done = 0;
        }
        if (write(out, &done, sizeof done) != sizeof done) _exit(3);
    }
    _exit(tshm_close(h, NULL) == TSHM_OK ? 0 : 5);
}

static writer_proc writer_start(const char *db) {
    return server_start(writer_serve, (void *)db, 60);
}

static uint64_t writer_commit(writer_proc *w, uint64_t frame) {
    uint64_t done = 0;
    if (write(w->cmd, &frame, sizeof frame) != sizeof frame) return 0;
    if (read(w->res, &done, sizeof done) != sizeof done) return 0;
    return done;
}

static void writer_stop(writer_proc *w) {
    CHECK(server_stop(w) == 0);
}

/* ---------------------------------------------------------------------------------------- */
/* 4096 read transactions over 256 handles in 16 processes, all held at once.                */

static void reader_child(int kid, const char *db, int rounds, gate *round_gate, gate *end_gate,
                         channel *ch) {
    static uint32_t slot[HANDLES][TXNS];
    static int held[HANDLES][TXNS];
    tshm *h[HANDLES];
    kid_report r;
    memset(&r, 0, sizeof r);
    memset(held, 0, sizeof held);
    r.kid = kid;
    alarm(60);
    int before = count_fds(), after_first = before;
    for (int i = 0; i < HANDLES; i++) {
        h[i] = NULL;
        int rc = tshm_open(db, NULL, &h[i]);
        if (rc == TSHM_OK) r.opened++;
        else note(&r.first_rc, &r.first_at, r.msg, sizeof r.msg, rc, -1 - i), h[i] = NULL;
        if (i == 0) after_first = count_fds();
    }
    r.fd_first = after_first - before;
    r.fd_more = count_fds() - after_first;
    channel_send(ch, &r, sizeof r);

    int per = TXNS / rounds;
    for (int k = 0; k < rounds; k++) {
        gate_wait(&round_gate[k]);
        for (int i = 0; i < HANDLES; i++) {
            if (h[i] == NULL) continue;
            for (int j = k * per; j < (k + 1) * per; j++) {
                tshm_snapshot s;
                r.calls++;
                int rc = tshm_reader_begin(h[i], &slot[i][j], &s);
                if (rc != TSHM_OK) {
                    note(&r.first_rc, &r.first_at, r.msg, sizeof r.msg, rc, i * TXNS + j);
                    continue;
                }
                r.ok++;
                held[i][j] = 1;
                if (s.max_frame != FIRST_FRAME + (uint64_t)k) r.wrong_frame++;
            }
        }
        r.pairs = 0;
        for (int i = 0; i < HANDLES; i++) r.pairs += distinct(slot[i], held[i], TXNS);
        channel_send(ch, &r, sizeof r);
    }

    gate_wait(end_gate);
    /* ended in another order than begun: newest snapshot first, each handle interleaved */
    for (int j = TXNS - 1; j >= 0; j--) {
        for (int i = 0; i < HANDLES; i++) {
            if (!held[i][j]) continue;
            r.end_calls++;
            int rc = tshm_reader_end(h[i], slot[i][j]);
            if (rc == TSHM_OK) r.end_ok++;
            else note(&r.end_rc, NULL, r.end_msg, sizeof r.end_msg, rc, 0);
        }
    }
    for (int i = 0; i < HANDLES; i++) {
        if (h[i] == NULL) continue;
        int rc = tshm_close(h[i], NULL);
        if (rc == TSHM_OK) r.close_ok++;
        else note(&r.end_rc, NULL, r.end_msg, sizeof r.end_msg, rc, 0);
    }
    channel_send(ch, &r, sizeof r);
    _exit(0);
}

/* Collects one report from each child; returns the sum, the first failure by kid order. */
static kid_report collect(channel *ch, kid_report *each) {
    kid_report sum;
    memset(&sum, 0, sizeof sum);
    sum.first_rc = sum.end_rc = TSHM_OK;
    int first_kid = PROCS, first_end_kid = PROCS;
    for (int n = 0; n < PROCS; n++) {
        kid_report r;
        if (!channel_recv(ch, &r, sizeof r)) {
            CHECK(!"a reader child's report is missing");
            sum.first_rc = -1;
            break;
        }
        if (r.kid >= 0 && r.kid < PROCS) each[r.kid] = r;
        sum.opened += r.opened;
        sum.calls += r.calls;
        sum.ok += r.ok;
        sum.wrong_frame += r.wrong_frame;
        sum.pairs += r.pairs;
        sum.end_calls += r.end_calls;
        sum.end_ok += r.end_ok;
        sum.close_ok += r.close_ok;
        if (r.fd_first > sum.fd_first) sum.fd_first = r.fd_first;
        if (r.fd_more > sum.fd_more) sum.fd_more = r.fd_more;
        if (r.first_rc != TSHM_OK && r.kid < first_kid) {
            first_kid = r.kid;
            sum.first_rc = r.first_rc;
            sum.first_at = r.first_at;
            memcpy(sum.msg, r.msg, sizeof sum.msg);
        }
        if (r.end_rc != TSHM_OK && r.kid < first_end_kid) {
            first_end_kid = r.kid;
            sum.end_rc = r.end_rc;
            memcpy(sum.end_msg, r.end_msg, sizeof sum.end_msg);
        }
    }
    return sum;
}

/* rounds == 1: every transaction at one snapshot. rounds == SNAPS: the writer process commits
 * between the rounds of begins, so each handle holds transactions at SNAPS snapshots. */
static void many_read_txns(const char *name, const char *db, int rounds) {
    alarm(120);
    printf("  %s\n", name);
    tshm *hp = open_with(db, 0, 0, 0);
    CHECK(hp != NULL);
    if (hp == NULL) return;
    tshm_info info = info_of(hp);
    int need = PROCS * HANDLES * rounds; /* distinct (handle, snapshot) pairs */
    printf("    default reader table: %u slots; %d transactions need %d distinct (handle, snapshot) pins\n",
           info.reader_slots, PROCS * HANDLES * TXNS, need);
    CHECK(info.reader_slots >= (uint32_t)need); /* the default table holds this test */

    writer_proc w = writer_start(db); /* forked before the gates: it holds none of them */
    CHECK(writer_commit(&w, FIRST_FRAME) == FIRST_FRAME);

    gate round_gate[SNAPS], end_gate;
    channel ch;
    for (int k = 0; k < rounds; k++) gate_init(&round_gate[k]);
    gate_init(&end_gate);
    channel_init(&ch);
    pid_t kids[PROCS];
    fflush(NULL);
    for (int k = 0; k < PROCS; k++) {
        kids[k] = fork();
        if (kids[k] == 0) reader_child(k, db, rounds, round_gate, &end_gate, &ch);
    }
    close(ch.fd[1]); /* once every child is gone, a missing report is end of file (else the alarm) */

    static kid_report each[PROCS];
    kid_report sum = collect(&ch, each);
    CHECK(sum.opened == PROCS * HANDLES);
    CHECK(sum.fd_first <= 2); /* the sidecar (and the database file, had it one) */
    CHECK(sum.fd_more == 0);  /* the other 15 handles of a process share them */
    printf("    opened %d handles; in a process the first open took %d descriptor(s), the other 15 took %d\n",
           sum.opened, sum.fd_first, sum.fd_more);

    for (int k = 0; k < rounds; k++) {
        if (k > 0) CHECK(writer_commit(&w, 0) == FIRST_FRAME + (uint64_t)k);
        gate_open(&round_gate[k]);
        sum = collect(&ch, each);
    }
    /* every transaction of every process is held now */
    CHECK(sum.calls == PROCS * HANDLES * TXNS);
    CHECK(sum.ok == PROCS * HANDLES * TXNS);
    if (sum.first_rc != TSHM_OK)
        printf("    %d of %d tshm_reader_begin calls returned TSHM_OK; first failure (kid order): "
               "call %d of a process: %d (%s): %s\n",
               sum.ok, sum.calls, sum.first_at, sum.first_rc, tshm_errstr(sum.first_rc), sum.msg);
    CHECK(sum.wrong_frame == 0); /* each round pinned the snapshot published before it */
    CHECK(sum.pairs == need);    /* one slot per (handle, snapshot) */
    printf("    %d transactions held in %d distinct (handle, slot) pairs\n", sum.ok, sum.pairs);

    uint64_t min = min_frame(hp);
    CHECK(min == FIRST_FRAME); /* the oldest snapshot anyone holds */
    uint64_t wmin = TSHM_NO_FRAME;
    table_view v = view_table(hp, 0);
    CHECK(v.pinned == need);
    CHECK(v.lo == FIRST_FRAME && v.hi == FIRST_FRAME + (uint64_t)rounds - 1);
    printf("    while held: tshm_min_reader_frame %llu; %d slots pinned, frames %llu..%llu\n",
           (unsigned long long)min, v.pinned, (unsigned long long)v.lo, (unsigned long long)v.hi);
    /* a commit while they are held moves nothing back */
    CHECK(writer_commit(&w, 0) == FIRST_FRAME + (uint64_t)rounds);
    CHECK_RC(tshm_min_reader_frame(hp, &wmin), TSHM_OK);
    CHECK(wmin == FIRST_FRAME);

    gate_open(&end_gate);
    sum = collect(&ch, each);
    CHECK(sum.end_calls == sum.ok);
    CHECK(sum.end_ok == sum.end_calls);
    CHECK(sum.close_ok == PROCS * HANDLES);
    if (sum.end_rc != TSHM_OK)
        printf("    first failed end/close: %d (%s): %s\n", sum.end_rc, tshm_errstr(sum.end_rc), sum.end_msg);
    for (int k = 0; k < PROCS; k++) CHECK(child_wait(kids[k]) == 0);
    close(ch.fd[0]);
    CHECK(min_frame(hp) == TSHM_NO_FRAME); /* every pin ended */
    writer_stop(&w);
    close_ok(hp);
    alarm(0);
}

/* ---------------------------------------------------------------------------------------- */
/* Slot sharing, one process: the count behind a shared slot, MISUSE for what is not held.    */

/* A slot this handle does not hold (free or another handle's). */
static uint32_t slot_not_held_by(const tshm *h, uint32_t slots, uint32_t a, uint32_t b) {
    for (uint32_t i = 0; i < slots; i++)
        if (i != a && i != b) return i;
    (void)h;
    return slots - 1;
}

static tshm_owner_info owner_of(const tshm *h, uint32_t slot) {
    tshm_owner_info o;
    memset(&o, 0, sizeof o);
    CHECK_RC(tshm_owner(h, TSHM_ROLE_READER0 + slot, &o), TSHM_OK);
    return o;
}

static void slot_sharing(const char *db, uint32_t strategy) {
    printf("  slot sharing (%s)\n", strategy == TSHM_READERS_CAS ? "CAS" : "byte locks");
    tshm *h = open_with(db, 0, 0, strategy);
    tshm *h2 = open_with(db, 0, 0, 0);
    CHECK(h != NULL && h2 != NULL);
    if (h == NULL || h2 == NULL) return;
    tshm_info info = info_of(h);
    CHECK(info.reader_strategy == strategy);
    uint32_t me = (uint32_t)getpid();
    publish_as_writer(h, 10);

    uint32_t a = UINT32_MAX, b = UINT32_MAX, c = UINT32_MAX;
    tshm_snapshot s;
    CHECK_RC(tshm_reader_begin(h, &a, &s), TSHM_OK);
    CHECK(s.max_frame == 10);
    CHECK_RC(tshm_reader_begin(h, &b, &s), TSHM_OK);
    CHECK(s.max_frame == 10);
    CHECK(a == b); /* one handle, one snapshot: one slot */
    printf("    two transactions at frame 10: slots %u and %u\n", a, b);
    tshm_owner_info o = owner_of(h, a);
    CHECK(o.held == 1 && o.alive == 1 && o.frame == 10 && o.pid == me && o.instance == info.instance);
    table_view v = view_table(h, me);
    CHECK(v.pinned == 1); /* one held slot, with that frame */

    /* another handle at the same snapshot has a slot of its own; it cannot end h's */
    CHECK_RC(tshm_reader_begin(h2, &c, &s), TSHM_OK);
    CHECK(c != a);
    CHECK_RC(tshm_reader_end(h2, a), TSHM_MISUSE);
    CHECK(owner_of(h, a).frame == 10);
    CHECK_RC(tshm_reader_end(h2, c), TSHM_OK);

    /* ending a slot this handle does not hold: MISUSE, nothing changes */
    uint32_t other = slot_not_held_by(h, info.reader_slots, a, b);
    CHECK_RC(tshm_reader_end(h, other), TSHM_MISUSE);
    CHECK_RC(tshm_reader_end(h, info.reader_slots), TSHM_MISUSE);
    CHECK_RC(tshm_reader_end(h, UINT32_MAX), TSHM_MISUSE);
    CHECK(min_frame(h) == 10);
    o = owner_of(h, a);
    CHECK(o.held == 1 && o.alive == 1 && o.frame == 10);

    /* ending one of the two keeps the slot pinned; ending the second unpins it */
    CHECK_RC(tshm_reader_end(h, a), TSHM_OK);
    CHECK(min_frame(h) == 10);
    CHECK(owner_of(h, a).frame == 10);
    CHECK_RC(tshm_reader_end(h, a), TSHM_OK);
    CHECK(min_frame(h) == TSHM_NO_FRAME);
    CHECK(owner_of(h, a).frame == TSHM_NO_FRAME);
    /* once too many */
    CHECK_RC(tshm_reader_end(h, a), TSHM_MISUSE);
    CHECK(min_frame(h) == TSHM_NO_FRAME);

    /* a begin after a publish pins the new frame, in the slot the handle kept */
    publish_as_writer(h, 20);
    uint32_t d = UINT32_MAX, e = UINT32_MAX, f = UINT32_MAX;
    CHECK_RC(tshm_reader_begin(h, &d, &s), TSHM_OK);
    CHECK(s.max_frame == 20);
    CHECK(d == a);
    CHECK(owner_of(h, d).frame == 20);
    CHECK(min_frame(h) == 20);

    /* a transaction at a newer snapshot while the old one is held: a second slot; a third at
     * that newer snapshot shares it */
    publish_as_writer(h, 30);
    CHECK_RC(tshm_reader_begin(h, &e, &s), TSHM_OK);
    CHECK(s.max_frame == 30);
    CHECK(e != d);
    CHECK_RC(tshm_reader_begin(h, &f, &s), TSHM_OK);
    CHECK(s.max_frame == 30);
    CHECK(f == e);
    CHECK(owner_of(h, e).frame == 30);
    CHECK(owner_of(h, d).frame == 20);
    v = view_table(h, me);
    CHECK(v.of_pid == 2 && v.lo == 20 && v.hi == 30);
    CHECK(min_frame(h) == 20);
    CHECK_RC(tshm_reader_end(h, d), TSHM_OK);
    CHECK(min_frame(h) == 30);
    CHECK_RC(tshm_reader_end(h, d), TSHM_MISUSE);
    CHECK_RC(tshm_reader_end(h, e), TSHM_OK);
    CHECK(min_frame(h) == 30);
    CHECK_RC(tshm_reader_end(h, f), TSHM_OK);
    CHECK(min_frame(h) == TSHM_NO_FRAME);
    CHECK_RC(tshm_reader_end(h, e), TSHM_MISUSE);
    CHECK(min_frame(h) == TSHM_NO_FRAME);

    /* a shared slot still pinned at close is released with the handle */
    CHECK_RC(tshm_reader_begin(h, &a, &s), TSHM_OK);
    CHECK_RC(tshm_reader_begin(h, &b, &s), TSHM_OK);
    CHECK(min_frame(h2) == 30);
    close_ok(h);
    CHECK(min_frame(h2) == TSHM_NO_FRAME);
    close_ok(h2);
}

/* ---------------------------------------------------------------------------------------- */
/* The slot a handle keeps between transactions is no capacity lost: in the smallest table, a */
/* handle whose transactions have ended leaves room for as many other handles' pins.          */

#define IDLE_TABLE 64

/* A handle keeps one slot from its first read transaction until it closes (so that reading
 * one snapshot at a time never claims a slot again): in a 64-slot table, a handle that has
 * read leaves 63 slots for other handles, and its own next transaction still fits. */
static void idle_kept_slot_is_not_hoarded(const char *db) {
    printf("  a handle keeps one slot, idle, and no more\n");
    tshm *a = open_with(db, 0, IDLE_TABLE, 0);
    CHECK(a != NULL);
    if (a == NULL) return;
    CHECK(info_of(a).reader_slots == IDLE_TABLE);
    publish_as_writer(a, 10);
    uint32_t sa = UINT32_MAX, sb[IDLE_TABLE], x = UINT32_MAX;
    tshm_snapshot s;
    /* several snapshots at once: only the first slot stays with the handle */
    uint32_t s2 = UINT32_MAX;
    CHECK_RC(tshm_reader_begin(a, &sa, &s), TSHM_OK);
    publish_as_writer(a, 11);
    CHECK_RC(tshm_reader_begin(a, &s2, &s), TSHM_OK);
    CHECK(s2 != sa);
    CHECK_RC(tshm_reader_end(a, s2), TSHM_OK);
    CHECK_RC(tshm_reader_end(a, sa), TSHM_OK);
    CHECK(owner_of(a, sa).held == 1 && owner_of(a, sa).frame == TSHM_NO_FRAME);
    CHECK(owner_of(a, s2).held == 0);

    tshm *b[IDLE_TABLE];
    int ok = 0;
    for (int i = 0; i < IDLE_TABLE; i++) {
        b[i] = open_with(db, 0, 0, 0);
        int rc = b[i] ? tshm_reader_begin(b[i], &sb[i], &s) : TSHM_MISUSE;
        if (rc == TSHM_OK) ok++;
        else if (rc != TSHM_BUSY || i != IDLE_TABLE - 1) {
            const char *m = tshm_errmsg();
            printf("    begin of handle %d of %d failed: %d (%s): %s\n", i + 1, IDLE_TABLE, rc, tshm_errstr(rc),
                   m ? m : "");
        }
    }
    CHECK(ok == IDLE_TABLE - 1); /* a's kept slot and 63 others fill the table */
    /* a's next transaction fits in its kept slot */
    CHECK_RC(tshm_reader_begin(a, &x, &s), TSHM_OK);
    CHECK(x == sa);
    CHECK(min_frame(a) == 11);
    CHECK(view_table(a, 0).pinned == ok + 1);
    CHECK_RC(tshm_reader_end(a, x), TSHM_OK);
    CHECK_RC(tshm_reader_end(a, x), TSHM_MISUSE);
    for (int i = 0; i < IDLE_TABLE; i++) close_ok(b[i]);
    CHECK(min_frame(a) == TSHM_NO_FRAME);
    close_ok(a);
}

/* ---------------------------------------------------------------------------------------- */
/* A process SIGKILLed while it holds many read transactions over many handles: its pins stop */
/* counting and a new process can begin as many, reusing its slots.                          */

#define KILL_TABLE 64 /* the smallest table: the second process needs the dead one's slots */
#define KILL_SNAPS 3  /* 16 handles x 3 snapshots = 48 slots each; 96 > 64 */
#define KILL_TXNS 18  /* per handle, 6 per snapshot */

typedef struct { int calls, ok, first_rc, first_at, end_ok, close_ok; uint64_t first_frame; char msg[200]; } hold_report;

/* Opens HANDLES handles and a writer handle, begins KILL_TXNS transactions on each handle over
 * KILL_SNAPS snapshots (publishing between), reports, waits at `go`, ends all, reports. */
static void hold_many(const char *db, channel *ch, gate *go) {
    hold_report r;
    static uint32_t slot[HANDLES][KILL_TXNS];
    static int held[HANDLES][KILL_TXNS];
    tshm *h[HANDLES], *w = NULL;
    memset(&r, 0, sizeof r);
    memset(held, 0, sizeof held);
    alarm(60);
    int rc = tshm_open(db, NULL, &w);
    if (rc != TSHM_OK) note(&r.first_rc, &r.first_at, r.msg, sizeof r.msg, rc, -100);
    for (int i = 0; i < HANDLES; i++) {
        h[i] = NULL;
        rc = tshm_open(db, NULL, &h[i]);
        if (rc != TSHM_OK) note(&r.first_rc, &r.first_at, r.msg, sizeof r.msg, rc, -1 - i), h[i] = NULL;
    }
    int per = KILL_TXNS / KILL_SNAPS;
    for (int k = 0; k < KILL_SNAPS; k++) {
        uint64_t f = w ? commit_next(w) : 0;
        if (k == 0) r.first_frame = f;
        for (int i = 0; i < HANDLES; i++) {
            for (int j = k * per; j < (k + 1) * per && h[i]; j++) {
                tshm_snapshot s;
                r.calls++;
                rc = tshm_reader_begin(h[i], &slot[i][j], &s);
                if (rc == TSHM_OK) r.ok++, held[i][j] = 1;
                else note(&r.first_rc, &r.first_at, r.msg, sizeof r.msg, rc, i * KILL_TXNS + j);
            }
        }
    }
    channel_send(ch, &r, sizeof r);
    gate_wait(go);
    for (int i = 0; i < HANDLES; i++) {
        for (int j = 0; j < KILL_TXNS; j++)
            if (held[i][j] && tshm_reader_end(h[i], slot[i][j]) == TSHM_OK) r.end_ok++;
        if (h[i] && tshm_close(h[i], NULL) == TSHM_OK) r.close_ok++;
    }
    tshm_close(w, NULL);
    channel_send(ch, &r, sizeof r);
    _exit(0);
}

static void killed_reader_process(const char *db) {
    alarm(60);
    printf("  a SIGKILLed process holding %d read transactions over %d handles\n", HANDLES * KILL_TXNS,
           HANDLES);
    tshm *hp = open_with(db, 0, KILL_TABLE, 0);
    CHECK(hp != NULL);
    if (hp == NULL) return;
    CHECK(info_of(hp).reader_slots == KILL_TABLE);
    int total = HANDLES * KILL_TXNS;

    for (int round = 0; round < 2; round++) {
        channel ch;
        gate go;
        channel_init(&ch);
        gate_init(&go);
        fflush(NULL);
        pid_t kid = fork();
        if (kid == 0) hold_many(db, &ch, &go);
        close(ch.fd[1]);
        hold_report r;
        memset(&r, 0, sizeof r);
        CHECK(channel_recv(&ch, &r, sizeof r));
        CHECK(r.calls == total && r.ok == total);
        if (r.first_rc != TSHM_OK)
            printf("    process %d: %d of %d begins OK; first failure at call %d: %d (%s): %s\n", round + 1,
                   r.ok, r.calls, r.first_at, r.first_rc, tshm_errstr(r.first_rc), r.msg);
        CHECK(r.first_frame != 0);
        CHECK(min_frame(hp) == r.first_frame);
        table_view v = view_table(hp, (uint32_t)kid);
        CHECK(v.of_pid == HANDLES * KILL_SNAPS); /* one slot per (handle, snapshot) */
        printf("    process %d holds %d transactions in %d pinned slots (frames %llu..%llu)\n", round + 1, r.ok,
               v.of_pid, (unsigned long long)v.lo, (unsigned long long)v.hi);
        if (round == 0) {
            child_kill(kid);
            CHECK(min_frame(hp) == TSHM_NO_FRAME); /* a dead process pins nothing */
            v = view_table(hp, 0);
            CHECK(v.pinned == 0 && v.alive_unpinned == 0);
            gate_open(&go);
        } else {
            gate_open(&go);
            CHECK(channel_recv(&ch, &r, sizeof r));
            CHECK(r.end_ok == r.ok && r.close_ok == HANDLES);
            CHECK(child_wait(kid) == 0);
            CHECK(min_frame(hp) == TSHM_NO_FRAME);
        }
        close(ch.fd[0]);
    }
    close_ok(hp);
    alarm(0);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    slot_sharing(test_db("share-cas.db"), TSHM_READERS_CAS);
    /* byte-lock slots are the reference system's: one slot (and lock) per transaction */
    idle_kept_slot_is_not_hoarded(test_db("idle.db"));
    many_read_txns("test_4096_read_txns_over_256_handles_in_16_processes", test_db("many.db"), 1);
    many_read_txns("test_4096_read_txns_over_256_handles_in_16_processes (at 4 snapshots per handle)",
                   test_db("many-snaps.db"), SNAPS);
    killed_reader_process(test_db("killed.db"));
    return harness_done("test_scale");
}
