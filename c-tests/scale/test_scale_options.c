/*
 * test_scale_options.c — the table-size options against a sidecar others are attached to.
 *
 * The contract under test: `reader_slots`, `instance_slots` and `reader_strategy` shape a
 * sidecar when it is created; an open whose explicit value disagrees with a sidecar that other
 * handles (in other processes or in this one) are attached to is refused with TSHM_CONFLICT
 * and a message naming both values, and leaves nothing open; 0 (the default) always joins and
 * the handle reports the sidecar's own values; a value above the documented maximum is
 * TSHM_MISUSE. A sidecar that nobody is attached to can be opened with any valid values.
 *
 * Written against the field `instance_slots` of tshm_options: it does not build against a
 * header without it.
 */
#include "harness.h"

#define READERS 256
#define INSTANCES 2048

typedef struct { int rc; int opened_readers, opened_instances, opened_strategy; char msg[256]; } open_result;

/* Opens db with the given settings (the handle is closed again at once) and reports. */
static open_result try_open(const char *db, uint32_t readers, uint32_t instances, uint32_t strategy) {
    tshm_options o;
    open_result r;
    memset(&r, 0, sizeof r);
    tshm_options_init(&o);
    o.reader_slots = readers;
    o.instance_slots = instances;
    o.reader_strategy = strategy;
    tshm *h = (tshm *)&r; /* must stay unchanged on failure */
    r.rc = tshm_open(db, &o, &h);
    if (r.rc == TSHM_OK) {
        tshm_info i;
        if (tshm_info_get(h, &i) == TSHM_OK) {
            r.opened_readers = (int)i.reader_slots;
            r.opened_instances = (int)i.instance_slots;
            r.opened_strategy = (int)i.reader_strategy;
        }
        tshm_close(h, NULL);
    } else {
        const char *m = tshm_errmsg();
        snprintf(r.msg, sizeof r.msg, "%s", m ? m : "");
        if (h != (tshm *)&r) r.rc = -1000 - r.rc; /* *out was written on failure */
    }
    return r;
}

/* tshm_open with opts NULL (the defaults), in a fresh child process: it must join. */
static open_result null_opts_in_child(const char *db) {
    channel ch;
    channel_init(&ch);
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        alarm(30);
        open_result r;
        memset(&r, 0, sizeof r);
        tshm *h = NULL;
        r.rc = tshm_open(db, NULL, &h);
        tshm_info i;
        if (r.rc == TSHM_OK && tshm_info_get(h, &i) == TSHM_OK) {
            r.opened_readers = (int)i.reader_slots;
            r.opened_instances = (int)i.instance_slots;
            r.opened_strategy = (int)i.reader_strategy;
        }
        if (r.rc != TSHM_OK) snprintf(r.msg, sizeof r.msg, "%s", tshm_errmsg() ? tshm_errmsg() : "");
        tshm_close(h, NULL);
        channel_send(&ch, &r, sizeof r);
        _exit(0);
    }
    open_result r;
    memset(&r, 0, sizeof r);
    r.rc = -1;
    close(ch.fd[1]);
    CHECK(channel_recv(&ch, &r, sizeof r));
    close(ch.fd[0]);
    CHECK(child_wait(kid) == 0);
    return r;
}

/* The same, in a fresh child process (so that the only other attached handles are the
 * parent's). */
static open_result try_open_in_child(const char *db, uint32_t readers, uint32_t instances, uint32_t strategy) {
    channel ch;
    channel_init(&ch);
    fflush(NULL);
    pid_t kid = fork();
    if (kid == 0) {
        alarm(30);
        open_result r = try_open(db, readers, instances, strategy);
        channel_send(&ch, &r, sizeof r);
        _exit(0);
    }
    open_result r;
    memset(&r, 0, sizeof r);
    r.rc = -1;
    close(ch.fd[1]);
    CHECK(channel_recv(&ch, &r, sizeof r));
    close(ch.fd[0]);
    CHECK(child_wait(kid) == 0);
    return r;
}

static int names(const char *msg, unsigned v) {
    char t[32];
    snprintf(t, sizeof t, "%u", v);
    return strstr(msg, t) != NULL;
}

/* A conflicting open: TSHM_CONFLICT naming both values. */
static void expect_conflict(const char *what, open_result r, unsigned have, unsigned asked) {
    printf("    %s: %d (%s) \"%s\"\n", what, r.rc, r.rc >= 0 ? tshm_errstr(r.rc) : "out written", r.msg);
    CHECK(r.rc == TSHM_CONFLICT);
    CHECK(names(r.msg, have) && names(r.msg, asked));
}

static void expect_join(const char *what, open_result r) {
    if (r.rc != TSHM_OK) printf("    %s: %d (%s) \"%s\"\n", what, r.rc, tshm_errstr(r.rc), r.msg);
    CHECK(r.rc == TSHM_OK);
    CHECK(r.opened_readers == READERS && r.opened_instances == INSTANCES);
}

static void table_sizes_against_attached(const char *db) {
    printf("  explicit table sizes against an attached sidecar of %u reader and %u instance slots\n",
           READERS, INSTANCES);
    tshm_options o;
    tshm *h = NULL;
    tshm_options_init(&o);
    o.reader_slots = READERS;
    o.instance_slots = INSTANCES;
    CHECK_RC(tshm_open(db, &o, &h), TSHM_OK);
    if (h == NULL) return;
    tshm_info info = info_of(h);
    CHECK(info.reader_slots == READERS); /* a new sidecar takes the values asked for */
    CHECK(info.instance_slots == INSTANCES);

    /* disagreeing explicit values, from another process and from this one */
    expect_conflict("reader_slots 512 from another process",
                    try_open_in_child(db, 512, 0, 0), READERS, 512);
    expect_conflict("reader_slots 128 from this process", try_open(db, 128, 0, 0), READERS, 128);
    expect_conflict("instance_slots 1024 from another process",
                    try_open_in_child(db, 0, 1024, 0), INSTANCES, 1024);
    expect_conflict("instance_slots 1536 from this process", try_open(db, 0, 1536, 0), INSTANCES, 1536);
    open_result both = try_open_in_child(db, 512, 1024, 0);
    CHECK(both.rc == TSHM_CONFLICT);
    CHECK(both.msg[0] != 0);

    /* 0 always joins, agreeing values join; the handle shows the sidecar's values */
    expect_join("defaults from another process", try_open_in_child(db, 0, 0, 0));
    expect_join("defaults from this process", try_open(db, 0, 0, 0));
    expect_join("opts NULL from another process", null_opts_in_child(db));
    expect_join("the same values from another process", try_open_in_child(db, READERS, INSTANCES, 0));
    expect_join("reader_slots only", try_open_in_child(db, READERS, 0, 0));
    expect_join("instance_slots only", try_open(db, 0, INSTANCES, 0));

    /* the refusals left nothing behind: the attached handle works on */
    uint32_t slot;
    tshm_snapshot s;
    CHECK_RC(tshm_reader_begin(h, &slot, &s), TSHM_OK);
    CHECK_RC(tshm_reader_end(h, slot), TSHM_OK);
    CHECK(info_of(h).reader_slots == READERS);

    /* out of range: TSHM_MISUSE whatever is attached */
    open_result r = try_open(db, UINT32_MAX, 0, 0);
    CHECK(r.rc == TSHM_MISUSE);
    r = try_open(db, 0, UINT32_MAX, 0);
    printf("    instance_slots UINT32_MAX: %d (%s) \"%s\"\n", r.rc, tshm_errstr(r.rc), r.msg);
    CHECK(r.rc == TSHM_MISUSE);
    r = try_open(db, 0, 0x80000000u, 0);
    CHECK(r.rc == TSHM_MISUSE);
    r = try_open(db, 0, 0, 2);
    CHECK(r.rc == TSHM_MISUSE); /* an unknown strategy */

    int last = -1;
    CHECK_RC(tshm_close(h, &last), TSHM_OK);
    CHECK(last == 1);

    /* nobody attached: other valid values are not a conflict */
    r = try_open(db, 512, 1024, 0);
    printf("    reader_slots 512, instance_slots 1024 with nobody attached: %d (%s); the handle has %d and %d\n",
           r.rc, tshm_errstr(r.rc), r.opened_readers, r.opened_instances);
    CHECK(r.rc == TSHM_OK);
}

static void absurd_values_on_a_new_sidecar(const char *db) {
    printf("  absurd values on a new sidecar\n");
    open_result r = try_open(db, 0, UINT32_MAX, 0);
    CHECK(r.rc == TSHM_MISUSE);
    r = try_open(db, UINT32_MAX, 0, 0);
    CHECK(r.rc == TSHM_MISUSE);
    r = try_open(db, UINT32_MAX, UINT32_MAX, 0);
    CHECK(r.rc == TSHM_MISUSE);
    struct stat st;
    CHECK(stat(sidecar_of(db), &st) != 0); /* refused before anything was created */
}

static void strategy_against_attached(const char *db, uint32_t created, uint32_t asked) {
    printf("  reader strategy %u asked of an attached sidecar made with %u\n", asked, created);
    tshm *h = open_with(db, 0, 0, created);
    CHECK(h != NULL);
    if (h == NULL) return;
    open_result r = try_open_in_child(db, 0, 0, asked);
    printf("    %d (%s) \"%s\"; the handle has strategy %d\n", r.rc, r.rc >= 0 ? tshm_errstr(r.rc) : "out written",
           r.msg, r.opened_strategy);
    if (asked == TSHM_READERS_CAS) {
        /* 0 is the default: it joins whatever the sidecar uses */
        CHECK(r.rc == TSHM_OK);
        CHECK(r.opened_strategy == (int)created);
    } else if (asked != created) {
        CHECK(r.rc == TSHM_CONFLICT);
        CHECK(r.msg[0] != 0);
    } else {
        CHECK(r.rc == TSHM_OK);
    }
    close_ok(h);
}

int main(void) {
    setvbuf(stdout, NULL, _IONBF, 0);
    table_sizes_against_attached(test_db("sizes.db"));
    absurd_values_on_a_new_sidecar(test_db("absurd.db"));
    strategy_against_attached(test_db("strategy-1.db"), TSHM_READERS_CAS, TSHM_READERS_BYTELOCK);
    strategy_against_attached(test_db("strategy-2.db"), TSHM_READERS_BYTELOCK, TSHM_READERS_CAS);
    strategy_against_attached(test_db("strategy-3.db"), TSHM_READERS_BYTELOCK, TSHM_READERS_BYTELOCK);
    return harness_done("test_scale_options");
}
