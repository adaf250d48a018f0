/*
 * test_api.c — the whole C API of libtshm, in one process, in the order of the manual.
 *
 * Every section below is one chapter of include/tshm.h: what a function promises, checked as
 * directly as the promise is written. No fork and no sleep: roles, reader slots and modes are
 * exercised with several handles of this one process, which the library arbitrates exactly like
 * handles of different processes.
 *
 * Run on both lock backends: TSHM_LOCK_BACKEND=ofd and TSHM_LOCK_BACKEND=posix.
 */
#include "harness.h"

#include <limits.h>

/* ------------------------------------------------------------------------------------------ */
/* Signature pins: each exported function must keep exactly this type, or this file stops      */
/* compiling. The callback typedef is pinned through a function of the documented shape.       */
/* ------------------------------------------------------------------------------------------ */

static int (*const pin_libversion_number)(void) = tshm_libversion_number;
static const char *(*const pin_libversion)(void) = tshm_libversion;
static const char *(*const pin_errstr)(int) = tshm_errstr;
static const char *(*const pin_errmsg)(void) = tshm_errmsg;
static int (*const pin_errno)(void) = tshm_errno;
static int (*const pin_options_init)(tshm_options *) = tshm_options_init;
static int (*const pin_open)(const char *, const tshm_options *, tshm **) = tshm_open;
static int (*const pin_close)(tshm *, int *) = tshm_close;
static int (*const pin_info_get)(const tshm *, tshm_info *) = tshm_info_get;
static int (*const pin_snapshot_get)(const tshm *, tshm_snapshot *) = tshm_snapshot_get;
static int (*const pin_publish)(tshm *, const tshm_snapshot *, uint32_t) = tshm_publish;
static int (*const pin_writer_acquire)(tshm *, uint32_t) = tshm_writer_acquire;
static int (*const pin_writer_release)(tshm *) = tshm_writer_release;
static int (*const pin_checkpointer_acquire)(tshm *, uint32_t) = tshm_checkpointer_acquire;
static int (*const pin_checkpointer_release)(tshm *) = tshm_checkpointer_release;
static int (*const pin_writer_acquire_while)(tshm *, uint32_t, tshm_keep_waiting_fn, void *) =
    tshm_writer_acquire_while;
static int (*const pin_checkpointer_acquire_while)(tshm *, uint32_t, tshm_keep_waiting_fn, void *) =
    tshm_checkpointer_acquire_while;
static int (*const pin_reader_begin)(tshm *, uint32_t *, tshm_snapshot *) = tshm_reader_begin;
static int (*const pin_reader_end)(tshm *, uint32_t) = tshm_reader_end;
static int (*const pin_min_reader_frame)(const tshm *, uint64_t *) = tshm_min_reader_frame;
static int (*const pin_owner)(const tshm *, uint32_t, tshm_owner_info *) = tshm_owner;
static int (*const pin_index_append)(tshm *, uint32_t, uint64_t) = tshm_index_append;
static int (*const pin_index_find)(const tshm *, uint32_t, uint64_t, uint64_t *) = tshm_index_find;
static int (*const pin_index_truncate)(tshm *, uint64_t) = tshm_index_truncate;
static int (*const pin_index_reset)(tshm *) = tshm_index_reset;
static int (*const pin_index_foreach)(const tshm *, uint64_t, tshm_index_fn, void *) = tshm_index_foreach;
static int (*const pin_index_stats_get)(const tshm *, tshm_index_stats *) = tshm_index_stats_get;

/* The last-close hook used in the "last close" chapter; its type pins tshm_last_close_fn. */
static void on_last_close(tshm *h, void *ctx);
static void (*const pin_last_close_shape)(tshm *, void *) = on_last_close;
static const tshm_last_close_fn pin_last_close_fn = on_last_close;

/* ------------------------------------------------------------------------------------------ */
/* Helpers                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* A pointer no tshm_open ever returns: lets a test see that a failed open left *out alone. */
static char sentinel_storage;
#define SENTINEL ((tshm *)(void *)&sentinel_storage)

/* The pattern pre-filled into output structs to prove a failing call did not write them. */
#define PATTERN 0xA5

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* Copies a file byte for byte into a new file (mode 0644). */
static int copy_file(const char *from, const char *to) {
    char buf[65536];
    int ok = 0;
    const int in = open(from, O_RDONLY | O_CLOEXEC);
    const int out = open(to, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (in >= 0 && out >= 0) {
        ok = 1;
        for (;;) {
            const ssize_t n = read(in, buf, sizeof buf);
            if (n < 0 && errno == EINTR) continue;
            if (n < 0) ok = 0;
            if (n <= 0) break;
            if (write(out, buf, (size_t)n) != n) {
                ok = 0;
                break;
            }
        }
    }
    if (in >= 0) close(in);
    if (out >= 0) close(out);
    return ok;
}

/* tshm_errmsg() after a failure: present and not empty. */
static int errmsg_is_set(void) {
    const char *m = tshm_errmsg();
    return m != NULL && m[0] != '\0';
}

static int errmsg_contains(const char *needle) {
    const char *m = tshm_errmsg();
    return m != NULL && strstr(m, needle) != NULL;
}

/* The lock backend the environment asks for (OFD unless TSHM_LOCK_BACKEND=posix). */
static uint32_t expected_backend(void) {
    const char *b = getenv("TSHM_LOCK_BACKEND");
    return (b != NULL && strcmp(b, "posix") == 0) ? TSHM_BACKEND_POSIX : TSHM_BACKEND_OFD;
}

/* The TSHM_SNAP_* bits of the fields that differ between two snapshots. */
static uint32_t changed_fields(const tshm_snapshot *x, const tshm_snapshot *y) {
    uint32_t m = 0;
    if (x->max_frame != y->max_frame) m |= TSHM_SNAP_MAX_FRAME;
    if (x->nbackfills != y->nbackfills) m |= TSHM_SNAP_NBACKFILLS;
    if (x->engine[0] != y->engine[0]) m |= TSHM_SNAP_ENGINE0;
    if (x->engine[1] != y->engine[1]) m |= TSHM_SNAP_ENGINE1;
    if (x->checkpoint_seq != y->checkpoint_seq) m |= TSHM_SNAP_CHECKPOINT_SEQ;
    if (x->page_size != y->page_size) m |= TSHM_SNAP_PAGE_SIZE;
    if (x->db_size != y->db_size) m |= TSHM_SNAP_DB_SIZE;
    if (x->salt[0] != y->salt[0] || x->salt[1] != y->salt[1]) m |= TSHM_SNAP_SALT;
    if (x->checksum[0] != y->checksum[0] || x->checksum[1] != y->checksum[1]) m |= TSHM_SNAP_CHECKSUM;
    return m;
}

static tshm_snapshot current(const tshm *h) {
    tshm_snapshot s;
    memset(&s, 0, sizeof s);
    CHECK_RC(tshm_snapshot_get(h, &s), TSHM_OK);
    return s;
}

static uint64_t min_frame(const tshm *h) {
    uint64_t f = 0;
    CHECK_RC(tshm_min_reader_frame(h, &f), TSHM_OK);
    return f;
}

static void close_handle(tshm *h) {
    if (h != NULL) CHECK_RC(tshm_close(h, NULL), TSHM_OK);
}

/* Two handles on db (CAS readers); on failure, a recorded check failure and nothing open. */
static int open_two(const char *db, tshm **a, tshm **b) {
    *a = open_with(db, 0, 0, TSHM_READERS_CAS);
    *b = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(*a != NULL && *b != NULL);
    if (*a != NULL && *b != NULL) return 1;
    close_handle(*a);
    close_handle(*b);
    return 0;
}

/* ------------------------------------------------------------------------------------------ */
/* 1. Signatures                                                                                */
/* ------------------------------------------------------------------------------------------ */

static void test_signatures(void) {
    /* void (*)(void) is the one function-pointer type every other converts to without warning. */
    typedef void (*any_fn)(void);
    static const struct { const char *name; any_fn fn; } pins[] = {
        {"tshm_libversion_number", (any_fn)pin_libversion_number},
        {"tshm_libversion", (any_fn)pin_libversion},
        {"tshm_errstr", (any_fn)pin_errstr},
        {"tshm_errmsg", (any_fn)pin_errmsg},
        {"tshm_errno", (any_fn)pin_errno},
        {"tshm_options_init", (any_fn)pin_options_init},
        {"tshm_open", (any_fn)pin_open},
        {"tshm_close", (any_fn)pin_close},
        {"tshm_info_get", (any_fn)pin_info_get},
        {"tshm_snapshot_get", (any_fn)pin_snapshot_get},
        {"tshm_publish", (any_fn)pin_publish},
        {"tshm_writer_acquire", (any_fn)pin_writer_acquire},
        {"tshm_writer_release", (any_fn)pin_writer_release},
        {"tshm_checkpointer_acquire", (any_fn)pin_checkpointer_acquire},
        {"tshm_checkpointer_release", (any_fn)pin_checkpointer_release},
        {"tshm_writer_acquire_while", (any_fn)pin_writer_acquire_while},
        {"tshm_checkpointer_acquire_while", (any_fn)pin_checkpointer_acquire_while},
        {"tshm_reader_begin", (any_fn)pin_reader_begin},
        {"tshm_reader_end", (any_fn)pin_reader_end},
        {"tshm_min_reader_frame", (any_fn)pin_min_reader_frame},
        {"tshm_owner", (any_fn)pin_owner},
        {"tshm_index_append", (any_fn)pin_index_append},
        {"tshm_index_find", (any_fn)pin_index_find},
        {"tshm_index_truncate", (any_fn)pin_index_truncate},
        {"tshm_index_reset", (any_fn)pin_index_reset},
        {"tshm_index_foreach", (any_fn)pin_index_foreach},
        {"tshm_index_stats_get", (any_fn)pin_index_stats_get},
        {"tshm_last_close_fn", (any_fn)pin_last_close_fn},
    };
    int resolved = 0;
    for (size_t i = 0; i < sizeof pins / sizeof pins[0]; i++) {
        if (pins[i].fn != NULL) resolved++;
        else fprintf(stderr, "pin %s is NULL\n", pins[i].name);
    }
    CHECK(resolved == (int)(sizeof pins / sizeof pins[0]));
    CHECK(pin_last_close_shape == pin_last_close_fn);
}

/* ------------------------------------------------------------------------------------------ */
/* 2. Version                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static void test_version(void) {
    char built[64];
    snprintf(built, sizeof built, "%d.%d.%d", TSHM_VERSION_MAJOR, TSHM_VERSION_MINOR, TSHM_VERSION_PATCH);
    CHECK(strcmp(TSHM_VERSION, built) == 0);
    CHECK(TSHM_VERSION_NUMBER == TSHM_VERSION_MAJOR * 1000000 + TSHM_VERSION_MINOR * 1000 + TSHM_VERSION_PATCH);
    CHECK(tshm_libversion_number() == TSHM_VERSION_NUMBER);
    CHECK(tshm_libversion() != NULL);
    CHECK(tshm_libversion() != NULL && strcmp(tshm_libversion(), TSHM_VERSION) == 0);
}

/* ------------------------------------------------------------------------------------------ */
/* 3. Result codes and their descriptions                                                       */
/* ------------------------------------------------------------------------------------------ */

static void test_errstr(void) {
    static const struct { int code; const char *name; } codes[] = {
        {TSHM_OK, "TSHM_OK"},             {TSHM_ERROR, "TSHM_ERROR"},
        {TSHM_INTERNAL, "TSHM_INTERNAL"}, {TSHM_PERM, "TSHM_PERM"},
        {TSHM_BUSY, "TSHM_BUSY"},         {TSHM_NOMEM, "TSHM_NOMEM"},
        {TSHM_READONLY, "TSHM_READONLY"}, {TSHM_IOERR, "TSHM_IOERR"},
        {TSHM_CORRUPT, "TSHM_CORRUPT"},   {TSHM_NOTFOUND, "TSHM_NOTFOUND"},
        {TSHM_FULL, "TSHM_FULL"},         {TSHM_CANTOPEN, "TSHM_CANTOPEN"},
        {TSHM_PROTOCOL, "TSHM_PROTOCOL"}, {TSHM_MISUSE, "TSHM_MISUSE"},
        {TSHM_RANGE, "TSHM_RANGE"},       {TSHM_NOTSUPPORTED, "TSHM_NOTSUPPORTED"},
        {TSHM_CONFLICT, "TSHM_CONFLICT"},
    };
    const size_t n = sizeof codes / sizeof codes[0];

    /* Unknown codes have a description too, and it is the same one. */
    const char *unknown = tshm_errstr(-1);
    const char *unknown2 = tshm_errstr(9999);
    CHECK(unknown != NULL && unknown[0] != '\0');
    CHECK(unknown2 != NULL);
    CHECK(unknown != NULL && unknown2 != NULL && strcmp(unknown, unknown2) == 0);
    CHECK(tshm_errstr(INT_MIN) != NULL && unknown != NULL && strcmp(tshm_errstr(INT_MIN), unknown) == 0);
    CHECK(tshm_errstr(4) != NULL && unknown != NULL && strcmp(tshm_errstr(4), unknown) == 0); /* a gap */

    /* Every code in the header has its own description, distinct from every other one. */
    int present = 0, duplicates = 0, like_unknown = 0;
    for (size_t i = 0; i < n; i++) {
        const char *s = tshm_errstr(codes[i].code);
        if (s == NULL || s[0] == '\0') {
            fprintf(stderr, "tshm_errstr(%s) is NULL or empty\n", codes[i].name);
            continue;
        }
        present++;
        if (unknown != NULL && strcmp(s, unknown) == 0) {
            fprintf(stderr, "tshm_errstr(%s) is the unknown-code text\n", codes[i].name);
            like_unknown++;
        }
        for (size_t j = 0; j < i; j++) {
            const char *t = tshm_errstr(codes[j].code);
            if (t != NULL && strcmp(s, t) == 0) {
                fprintf(stderr, "tshm_errstr(%s) == tshm_errstr(%s)\n", codes[i].name, codes[j].name);
                duplicates++;
            }
        }
    }
    CHECK(present == (int)n);
    CHECK(duplicates == 0);
    CHECK(like_unknown == 0);
    /* Static strings: the same pointer every time. */
    CHECK(tshm_errstr(TSHM_BUSY) == tshm_errstr(TSHM_BUSY));
}

/* ------------------------------------------------------------------------------------------ */
/* 4. NULL arguments: TSHM_MISUSE, outputs untouched                                            */
/* ------------------------------------------------------------------------------------------ */

/* tshm_index_foreach callback: counts pages into *(uint64_t *)ctx. */
static int count_pages(void *ctx, uint32_t page, uint64_t frame) {
    (void)page;
    (void)frame;
    (*(uint64_t *)ctx)++;
    return 0;
}

static void test_null_arguments(void) {
    const char *db = test_db("null.db");

    CHECK_RC(tshm_options_init(NULL), TSHM_MISUSE);
    CHECK(errmsg_is_set());
    CHECK(tshm_errno() == 0); /* a misuse has no OS errno behind it */

    /* tshm_open: path NULL, out NULL. */
    tshm_options o;
    CHECK_RC(tshm_options_init(&o), TSHM_OK);
    tshm *out = SENTINEL;
    CHECK_RC(tshm_open(NULL, &o, &out), TSHM_MISUSE);
    CHECK(out == SENTINEL);
    CHECK(errmsg_is_set());
    CHECK_RC(tshm_open(NULL, NULL, &out), TSHM_MISUSE);
    CHECK(out == SENTINEL);
    CHECK_RC(tshm_open(db, &o, NULL), TSHM_MISUSE);
    CHECK_RC(tshm_open(db, NULL, NULL), TSHM_MISUSE);
    CHECK(!file_exists(sidecar_of(db))); /* a refused open creates nothing */

    /* tshm_close(NULL, ...) is a no-op. */
    int was_last = 42;
    CHECK_RC(tshm_close(NULL, &was_last), TSHM_OK);
    CHECK(was_last == 0);
    CHECK_RC(tshm_close(NULL, NULL), TSHM_OK);

    tshm *h = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(h != NULL);
    if (h == NULL) return;

    /* tshm_info_get */
    tshm_info info, info_ref;
    memset(&info, PATTERN, sizeof info);
    info_ref = info;
    CHECK_RC(tshm_info_get(NULL, &info), TSHM_MISUSE);
    CHECK(memcmp(&info, &info_ref, sizeof info) == 0);
    CHECK(errmsg_is_set());
    CHECK_RC(tshm_info_get(h, NULL), TSHM_MISUSE);

    /* tshm_snapshot_get */
    tshm_snapshot snap, snap_ref;
    memset(&snap, PATTERN, sizeof snap);
    snap_ref = snap;
    CHECK_RC(tshm_snapshot_get(NULL, &snap), TSHM_MISUSE);
    CHECK(memcmp(&snap, &snap_ref, sizeof snap) == 0);
    CHECK_RC(tshm_snapshot_get(h, NULL), TSHM_MISUSE);

    /* tshm_publish: with the writer role held, so that only the NULL is wrong. */
    const tshm_snapshot before = current(h);
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    tshm_snapshot pub;
    memset(&pub, 0, sizeof pub);
    pub.max_frame = 1;
    CHECK_RC(tshm_publish(NULL, &pub, TSHM_SNAP_ALL), TSHM_MISUSE);
    CHECK_RC(tshm_publish(h, NULL, TSHM_SNAP_ALL), TSHM_MISUSE);
    CHECK(current(h).sequence == before.sequence); /* nothing was published */
    CHECK_RC(tshm_writer_release(h), TSHM_OK);

    /* Roles */
    CHECK_RC(tshm_writer_acquire(NULL, 0), TSHM_MISUSE);
    CHECK_RC(tshm_writer_acquire(NULL, 10), TSHM_MISUSE);
    CHECK_RC(tshm_writer_release(NULL), TSHM_MISUSE);
    CHECK_RC(tshm_checkpointer_acquire(NULL, 0), TSHM_MISUSE);
    CHECK_RC(tshm_checkpointer_release(NULL), TSHM_MISUSE);

    /* tshm_reader_begin: handle, slot_out and snap_out. */
    uint32_t slot = 0xA5A5A5A5u;
    memset(&snap, PATTERN, sizeof snap);
    CHECK_RC(tshm_reader_begin(NULL, &slot, &snap), TSHM_MISUSE);
    CHECK(slot == 0xA5A5A5A5u && memcmp(&snap, &snap_ref, sizeof snap) == 0);
    CHECK_RC(tshm_reader_begin(h, NULL, &snap), TSHM_MISUSE);
    CHECK(memcmp(&snap, &snap_ref, sizeof snap) == 0);
    CHECK_RC(tshm_reader_begin(h, &slot, NULL), TSHM_MISUSE);
    CHECK(slot == 0xA5A5A5A5u);
    CHECK(min_frame(h) == TSHM_NO_FRAME); /* no slot was claimed by the refused calls */
    CHECK_RC(tshm_reader_end(NULL, 0), TSHM_MISUSE);

    /* tshm_min_reader_frame */
    uint64_t frame = 0xA5A5A5A5A5A5A5A5ull;
    CHECK_RC(tshm_min_reader_frame(NULL, &frame), TSHM_MISUSE);
    CHECK(frame == 0xA5A5A5A5A5A5A5A5ull);
    CHECK_RC(tshm_min_reader_frame(h, NULL), TSHM_MISUSE);

    /* tshm_owner */
    tshm_owner_info ow, ow_ref;
    memset(&ow, PATTERN, sizeof ow);
    ow_ref = ow;
    CHECK_RC(tshm_owner(NULL, TSHM_ROLE_WRITER, &ow), TSHM_MISUSE);
    CHECK(memcmp(&ow, &ow_ref, sizeof ow) == 0);
    CHECK_RC(tshm_owner(h, TSHM_ROLE_WRITER, NULL), TSHM_MISUSE);

    /* The frame index */
    CHECK_RC(tshm_index_append(NULL, 1, 1), TSHM_MISUSE);
    frame = 0xA5A5A5A5A5A5A5A5ull;
    CHECK_RC(tshm_index_find(NULL, 1, 1, &frame), TSHM_MISUSE);
    CHECK(frame == 0xA5A5A5A5A5A5A5A5ull);
    CHECK_RC(tshm_index_find(h, 1, 1, NULL), TSHM_MISUSE);
    CHECK_RC(tshm_index_truncate(NULL, 0), TSHM_MISUSE);
    CHECK_RC(tshm_index_reset(NULL), TSHM_MISUSE);
    CHECK_RC(tshm_index_foreach(NULL, 1, count_pages, &frame), TSHM_MISUSE);
    CHECK_RC(tshm_index_foreach(h, 1, NULL, NULL), TSHM_MISUSE);
    tshm_index_stats st, st_ref;
    memset(&st, PATTERN, sizeof st);
    st_ref = st;
    CHECK_RC(tshm_index_stats_get(NULL, &st), TSHM_MISUSE);
    CHECK(memcmp(&st, &st_ref, sizeof st) == 0);
    CHECK_RC(tshm_index_stats_get(h, NULL), TSHM_MISUSE);

    close_handle(h);
}

/* ------------------------------------------------------------------------------------------ */
/* 5. Options                                                                                   */
/* ------------------------------------------------------------------------------------------ */

static void test_options(void) {
    const char *db = test_db("options.db");
    tshm_options o;
    tshm *out = SENTINEL;

    /* tshm_options_init fills the defaults. */
    memset(&o, PATTERN, sizeof o);
    CHECK_RC(tshm_options_init(&o), TSHM_OK);
    CHECK(o.size == sizeof(tshm_options));
    CHECK(o.flags == 0 && o.reader_slots == 0 && o.reader_strategy == TSHM_READERS_CAS);
    CHECK(o.on_last_close == NULL && o.ctx == NULL);

    /* A struct that did not go through tshm_options_init (size 0). */
    memset(&o, 0, sizeof o);
    CHECK_RC(tshm_open(db, &o, &out), TSHM_MISUSE);
    CHECK(out == SENTINEL);

    /* Unknown flag bits. */
    tshm_options_init(&o);
    o.flags = 0x100;
    CHECK_RC(tshm_open(db, &o, &out), TSHM_MISUSE);
    o.flags = 0x80000000u | TSHM_OPEN_ALLOW_NETFS;
    CHECK_RC(tshm_open(db, &o, &out), TSHM_MISUSE);

    /* Reader slots outside 64..65536, instance slots above 65535 (a tag names 65535 at most). */
    tshm_options_init(&o);
    o.reader_slots = 10;
    CHECK_RC(tshm_open(db, &o, &out), TSHM_MISUSE);
    o.reader_slots = 63;
    CHECK_RC(tshm_open(db, &o, &out), TSHM_MISUSE);
    o.reader_slots = 65537;
    CHECK_RC(tshm_open(db, &o, &out), TSHM_MISUSE);
    o.reader_slots = UINT32_MAX;
    CHECK_RC(tshm_open(db, &o, &out), TSHM_MISUSE);
    tshm_options_init(&o);
    o.instance_slots = 65536;
    CHECK_RC(tshm_open(db, &o, &out), TSHM_MISUSE);
    o.instance_slots = UINT32_MAX;
    CHECK_RC(tshm_open(db, &o, &out), TSHM_MISUSE);

    /* An unknown role strategy. */
    tshm_options_init(&o);
    o.role_strategy = 2;
    CHECK_RC(tshm_open(db, &o, &out), TSHM_MISUSE);

    /* An unknown reader strategy. */
    tshm_options_init(&o);
    o.reader_strategy = 7;
    CHECK_RC(tshm_open(db, &o, &out), TSHM_MISUSE);

    /* EXCLUSIVE and READONLY together. */
    tshm_options_init(&o);
    o.flags = TSHM_OPEN_EXCLUSIVE | TSHM_OPEN_READONLY;
    CHECK_RC(tshm_open(db, &o, &out), TSHM_MISUSE);
    CHECK(errmsg_is_set());

    CHECK(out == SENTINEL);
    CHECK(!file_exists(sidecar_of(db))); /* none of the refused opens created the sidecar */

    /* opts == NULL means the defaults. */
    CHECK_RC(tshm_open(db, NULL, &out), TSHM_OK);
    CHECK(out != SENTINEL && out != NULL);
    if (out != SENTINEL && out != NULL) {
        tshm_info i = info_of(out);
        CHECK(i.mode == TSHM_MODE_SHARED && i.reader_slots == 4096 && i.reader_strategy == TSHM_READERS_CAS);
        CHECK(i.instance_slots == 4096);
        close_handle(out);
    }

    /* The bounds themselves are accepted. */
    const char *db64 = test_db("options64.db");
    tshm *h = open_with(db64, 0, 64, TSHM_READERS_CAS);
    CHECK(h != NULL && info_of(h).reader_slots == 64);
    close_handle(h);
    const char *db1024 = test_db("options65536.db");
    h = open_with(db1024, 0, 65536, TSHM_READERS_CAS);
    CHECK(h != NULL && info_of(h).reader_slots == 65536);
    close_handle(h);
    const char *db65535 = test_db("options65535.db");
    tshm_options_init(&o);
    o.instance_slots = 65535;
    h = NULL;
    CHECK_RC(tshm_open(db65535, &o, &h), TSHM_OK);
    CHECK(h != NULL && info_of(h).instance_slots == 65535);
    if (h != NULL) close_handle(h);
}

/* ------------------------------------------------------------------------------------------ */
/* 6. tshm_info_get                                                                             */
/* ------------------------------------------------------------------------------------------ */

static void test_info(void) {
    const char *db = test_db("info.db");
    tshm *a, *b;
    if (!open_two(db, &a, &b)) return;
    tshm_info ia = info_of(a), ib = info_of(b);

    /* The first handle found the sidecar unattached and initialized it. */
    CHECK(ia.initialized == 1);
    CHECK(ia.mode == TSHM_MODE_SHARED);
    CHECK(ia.reader_slots == 4096);
    CHECK(ia.reader_strategy == TSHM_READERS_CAS);
    CHECK(ia.readonly == 0);
    CHECK(ia.pid == (uint32_t)getpid());
    CHECK(ia.backend == expected_backend());
    CHECK(ia.instance_slots > 0 && ia.instance < ia.instance_slots);
    CHECK(ia.role_strategy == TSHM_ROLES_SHM);
    CHECK(ia.init_epoch >= 1);

    /* The second handle joined: no initialization, an instance of its own. */
    CHECK(ib.initialized == 0);
    CHECK(ib.instance != ia.instance);
    CHECK(ib.instance < ib.instance_slots);
    CHECK(ib.mode == TSHM_MODE_SHARED && ib.pid == ia.pid && ib.backend == ia.backend);
    CHECK(ib.init_epoch == ia.init_epoch);

    int was_last = -1;
    CHECK_RC(tshm_close(b, &was_last), TSHM_OK);
    CHECK(was_last == 0);
    CHECK_RC(tshm_close(a, &was_last), TSHM_OK);
    CHECK(was_last == 1);

    /* Reopening an existing, unattached sidecar initializes it again: a new epoch. */
    tshm *c = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(c != NULL);
    if (c != NULL) {
        tshm_info ic = info_of(c);
        CHECK(ic.initialized == 1 && ic.init_epoch == ia.init_epoch + 1);
        close_handle(c);
    }

    /* TSHM_OPEN_POSIX_LOCKS forces the POSIX backend on a sidecar new to this process. */
    const char *dbp = test_db("info-posix.db");
    tshm *p = open_with(dbp, TSHM_OPEN_POSIX_LOCKS, 0, TSHM_READERS_CAS);
    CHECK(p != NULL && info_of(p).backend == TSHM_BACKEND_POSIX);
    close_handle(p);
}

/* ------------------------------------------------------------------------------------------ */
/* 7. Roles: writer and checkpointer                                                            */
/* ------------------------------------------------------------------------------------------ */

/* One role's whole contract, with two handles of this process. */
static void check_role(tshm *a, tshm *b, const char *name, uint32_t role, int (*acquire)(tshm *, uint32_t),
                       int (*release)(tshm *)) {
    const int failed_before = harness_failed;
    const tshm_info ia = info_of(a);
    tshm_owner_info ow;

    CHECK_RC(acquire(a, 0), TSHM_OK);
    CHECK_RC(acquire(b, 0), TSHM_BUSY);
    CHECK(errmsg_is_set());

    /* A timed wait gives up after the timeout, not before. */
    const double t0 = now_ms();
    CHECK_RC(acquire(b, 30), TSHM_BUSY);
    const double waited = now_ms() - t0;
    CHECK(waited >= 25.0);
    CHECK(waited < 5000.0);

    CHECK_RC(acquire(a, 0), TSHM_MISUSE);  /* a already holds it */
    CHECK_RC(acquire(a, 30), TSHM_MISUSE); /* also when asked to wait */
    CHECK_RC(release(b), TSHM_MISUSE);     /* b does not hold it */

    /* Who holds it: this process, handle a's instance; seen the same from either handle. */
    memset(&ow, 0, sizeof ow);
    CHECK_RC(tshm_owner(a, role, &ow), TSHM_OK);
    CHECK(ow.pid == (uint32_t)getpid());
    CHECK(ow.alive == 1 && ow.held == 1);
    CHECK(ow.instance == ia.instance);
    CHECK(ow.id == (((uint64_t)(uint32_t)getpid() << 32) | ia.instance));
    CHECK(ow.nonce != 0);
    CHECK(ow.frame == 0);
    tshm_owner_info ow_b;
    memset(&ow_b, 0, sizeof ow_b);
    CHECK_RC(tshm_owner(b, role, &ow_b), TSHM_OK);
    CHECK(memcmp(&ow, &ow_b, sizeof ow) == 0);

    /* Released: nobody holds it, and b gets it at once. */
    CHECK_RC(release(a), TSHM_OK);
    memset(&ow, PATTERN, sizeof ow);
    CHECK_RC(tshm_owner(a, role, &ow), TSHM_OK);
    CHECK(ow.alive == 0 && ow.held == 0 && ow.id == 0 && ow.pid == 0);
    CHECK_RC(release(a), TSHM_MISUSE); /* released twice */
    CHECK_RC(acquire(b, 0), TSHM_OK);
    CHECK_RC(release(b), TSHM_OK);

    if (harness_failed != failed_before) fprintf(stderr, "  (the failures above are in the %s role)\n", name);
}

/* What a keep-waiting callback is asked and does: it counts the questions, calls libtshm on the
 * waiting handle itself, may release the role from its holder on question `release_at`, and
 * says stop on question `stop_at` (0: never). */
struct keep_log {
    tshm *waiting;
    int calls, stop_at, snap_rc;
    tshm *holder;
    int (*release)(tshm *);
    int release_at, release_rc;
};

static int keep_waiting(void *ctx) {
    struct keep_log *k = ctx;
    k->calls++;
    tshm_snapshot s;
    k->snap_rc = tshm_snapshot_get(k->waiting, &s);
    if (k->holder != NULL && k->calls == k->release_at) k->release_rc = k->release(k->holder);
    return k->stop_at == 0 || k->calls < k->stop_at;
}

/* The `_while` acquires, for one role: `a` and `b` are two handles of one sidecar. */
static void check_acquire_while(tshm *a, tshm *b, const char *name,
                                int (*acquire_while)(tshm *, uint32_t, tshm_keep_waiting_fn, void *),
                                int (*acquire)(tshm *, uint32_t), int (*release)(tshm *)) {
    const int failed_before = harness_failed;
    struct keep_log k;

    /* Free: taken at once, and the callback is never asked. NULL: the plain acquire. */
    memset(&k, 0, sizeof k);
    k.waiting = a;
    CHECK_RC(acquire_while(a, 1000, keep_waiting, &k), TSHM_OK);
    CHECK(k.calls == 0);
    CHECK_RC(release(a), TSHM_OK);
    CHECK_RC(acquire_while(a, 0, NULL, NULL), TSHM_OK);

    /* Held by a. Trying once never asks; a wait asks before it sleeps and stops when told,
     * long before its ten-minute timeout, with TSHM_BUSY and a message that says why. */
    memset(&k, 0, sizeof k);
    k.waiting = b;
    CHECK_RC(acquire_while(b, 0, keep_waiting, &k), TSHM_BUSY);
    CHECK(k.calls == 0);
    k.stop_at = 3;
    CHECK_RC(acquire_while(b, 600000, keep_waiting, &k), TSHM_BUSY);
    CHECK(k.calls == 3);
    CHECK(k.snap_rc == TSHM_OK); /* the callback may call libtshm on the waiting handle */
    CHECK(tshm_errmsg() != NULL && strstr(tshm_errmsg(), "keep-waiting") != NULL);
    /* It left the queue: a's release frees the role instead of handing it to b. */
    CHECK_RC(release(a), TSHM_OK);
    CHECK_RC(acquire(b, 0), TSHM_OK);

    /* b holds it; a waits, and its second question releases b's hold: a is handed the role. */
    memset(&k, 0, sizeof k);
    k.waiting = a;
    k.holder = b;
    k.release = release;
    k.release_at = 2;
    CHECK_RC(acquire_while(a, 600000, keep_waiting, &k), TSHM_OK);
    CHECK(k.release_rc == TSHM_OK);
    CHECK(k.calls >= 2);
    CHECK_RC(acquire(b, 0), TSHM_BUSY);
    CHECK_RC(release(a), TSHM_OK);

    CHECK_RC(acquire_while(NULL, 10, keep_waiting, &k), TSHM_MISUSE);
    if (harness_failed != failed_before) fprintf(stderr, "  (the failures above are in the %s role)\n", name);
}

static void test_acquire_while(void) {
    static const uint32_t strategies[] = {TSHM_ROLES_SHM, TSHM_ROLES_BYTELOCK};
    for (int i = 0; i < 2; i++) {
        const char *db = test_db(i == 0 ? "while-shm.db" : "while-byte.db");
        tshm_options o;
        tshm_options_init(&o);
        o.role_strategy = strategies[i];
        tshm *a = NULL, *b = NULL;
        CHECK_RC(tshm_open(db, &o, &a), TSHM_OK);
        CHECK_RC(tshm_open(db, &o, &b), TSHM_OK);
        if (a == NULL || b == NULL) return;
        check_acquire_while(a, b, "writer", tshm_writer_acquire_while, tshm_writer_acquire, tshm_writer_release);
        check_acquire_while(a, b, "checkpointer", tshm_checkpointer_acquire_while, tshm_checkpointer_acquire,
                            tshm_checkpointer_release);
        close_handle(a);
        close_handle(b);
    }
}

static void test_roles(void) {
    const char *db = test_db("roles.db");
    tshm *a, *b;
    if (!open_two(db, &a, &b)) return;
    check_role(a, b, "writer", TSHM_ROLE_WRITER, tshm_writer_acquire, tshm_writer_release);
    check_role(a, b, "checkpointer", TSHM_ROLE_CHECKPOINTER, tshm_checkpointer_acquire,
               tshm_checkpointer_release);

    /* The two roles are independent: a writes while b checkpoints. */
    const tshm_info ia = info_of(a), ib = info_of(b);
    CHECK_RC(tshm_writer_acquire(a, 0), TSHM_OK);
    CHECK_RC(tshm_checkpointer_acquire(b, 0), TSHM_OK);
    tshm_owner_info w, c;
    memset(&w, 0, sizeof w);
    memset(&c, 0, sizeof c);
    CHECK_RC(tshm_owner(a, TSHM_ROLE_WRITER, &w), TSHM_OK);
    CHECK_RC(tshm_owner(a, TSHM_ROLE_CHECKPOINTER, &c), TSHM_OK);
    CHECK(w.alive == 1 && w.instance == ia.instance);
    CHECK(c.alive == 1 && c.instance == ib.instance);
    CHECK(w.nonce != c.nonce); /* two instances, two nonces */
    CHECK_RC(tshm_writer_release(a), TSHM_OK);
    CHECK_RC(tshm_checkpointer_release(b), TSHM_OK);

    /* Closing a handle releases the roles it holds. */
    CHECK_RC(tshm_writer_acquire(a, 0), TSHM_OK);
    CHECK_RC(tshm_checkpointer_acquire(a, 0), TSHM_OK);
    close_handle(a);
    CHECK_RC(tshm_writer_acquire(b, 0), TSHM_OK);
    CHECK_RC(tshm_checkpointer_acquire(b, 0), TSHM_OK);
    CHECK_RC(tshm_writer_release(b), TSHM_OK);
    CHECK_RC(tshm_checkpointer_release(b), TSHM_OK);
    close_handle(b);
}

/* ------------------------------------------------------------------------------------------ */
/* 8. Publishing snapshots                                                                      */
/* ------------------------------------------------------------------------------------------ */

static void test_publish(void) {
    const char *db = test_db("publish.db");
    tshm *a, *b;
    if (!open_two(db, &a, &b)) return;

    /* A fresh sidecar: empty WAL. */
    const tshm_snapshot s0 = current(a);
    CHECK(s0.max_frame == 0 && s0.nbackfills == 0 && s0.reserved == 0);

    /* Publishing needs a role. */
    tshm_snapshot s = s0;
    s.max_frame = 10;
    CHECK_RC(tshm_publish(a, &s, TSHM_SNAP_MAX_FRAME), TSHM_MISUSE);
    CHECK(errmsg_is_set());
    CHECK(current(a).sequence == s0.sequence);

    /* The writer publishes max_frame only; every handle sees it. */
    CHECK_RC(tshm_writer_acquire(a, 0), TSHM_OK);
    CHECK_RC(tshm_publish(b, &s, TSHM_SNAP_MAX_FRAME), TSHM_MISUSE); /* b holds no role */
    CHECK_RC(tshm_publish(a, &s, TSHM_SNAP_MAX_FRAME), TSHM_OK);
    const tshm_snapshot s1 = current(b);
    CHECK(s1.max_frame == 10);
    CHECK(s1.sequence == s0.sequence + 1);
    CHECK(changed_fields(&s0, &s1) == TSHM_SNAP_MAX_FRAME);
    CHECK(s1.reserved == 0);

    /* A checkpointer holding a stale max_frame publishes nbackfills only: max_frame stays. */
    CHECK_RC(tshm_checkpointer_acquire(b, 0), TSHM_OK);
    tshm_snapshot ck;
    memset(&ck, 0, sizeof ck);
    ck.max_frame = 5;
    ck.nbackfills = 10;
    CHECK_RC(tshm_publish(b, &ck, TSHM_SNAP_NBACKFILLS), TSHM_OK);
    const tshm_snapshot s2 = current(a);
    CHECK(s2.max_frame == 10 && s2.nbackfills == 10);
    CHECK(s2.sequence == s1.sequence + 1);
    CHECK(changed_fields(&s1, &s2) == TSHM_SNAP_NBACKFILLS);
    CHECK_RC(tshm_checkpointer_release(b), TSHM_OK);

    /* TSHM_SNAP_ALL round-trips every field; the caller's sequence and reserved are ignored. */
    tshm_snapshot full;
    memset(&full, 0, sizeof full);
    full.max_frame = 77;
    full.nbackfills = 33;
    full.sequence = 999999;
    full.engine[0] = 0x1122334455667788ull;
    full.engine[1] = 0x99aabbccddeeff00ull;
    full.checkpoint_seq = 5;
    full.page_size = 4096;
    full.db_size = 123;
    full.reserved = 0;
    full.salt[0] = 0xdeadbeefu;
    full.salt[1] = 0xcafebabeu;
    full.checksum[0] = 0x01234567u;
    full.checksum[1] = 0x89abcdefu;
    CHECK_RC(tshm_publish(a, &full, TSHM_SNAP_ALL), TSHM_OK);
    const tshm_snapshot s3 = current(b);
    CHECK(changed_fields(&full, &s3) == 0);
    CHECK(s3.max_frame == 77 && s3.nbackfills == 33);
    CHECK(s3.engine[0] == 0x1122334455667788ull && s3.engine[1] == 0x99aabbccddeeff00ull);
    CHECK(s3.salt[0] == 0xdeadbeefu && s3.salt[1] == 0xcafebabeu);
    CHECK(s3.checksum[0] == 0x01234567u && s3.checksum[1] == 0x89abcdefu);
    CHECK(s3.page_size == 4096 && s3.db_size == 123 && s3.checkpoint_seq == 5);
    CHECK(s3.sequence == s2.sequence + 1);
    CHECK(s3.reserved == 0);

    /* Each mask bit publishes exactly its own field(s). */
    for (uint32_t bit = 0; bit < 9; bit++) {
        const uint32_t mask = 1u << bit;
        const tshm_snapshot before = current(a);
        tshm_snapshot alt = before;
        alt.max_frame += 100 + bit;
        alt.nbackfills += 100 + bit;
        alt.engine[0] += 100 + bit;
        alt.engine[1] += 100 + bit;
        alt.checkpoint_seq += 100 + bit;
        alt.page_size += 100 + bit;
        alt.db_size += 100 + bit;
        alt.salt[0] += 100 + bit;
        alt.salt[1] += 100 + bit;
        alt.checksum[0] += 100 + bit;
        alt.checksum[1] += 100 + bit;
        CHECK_RC(tshm_publish(a, &alt, mask), TSHM_OK);
        const tshm_snapshot after = current(a);
        if (changed_fields(&before, &after) != mask)
            fprintf(stderr, "mask %#x changed fields %#x\n", mask, changed_fields(&before, &after));
        CHECK(changed_fields(&before, &after) == mask);
        CHECK(after.sequence == before.sequence + 1);
    }

    /* Unknown mask bits are refused and publish nothing. */
    const tshm_snapshot s4 = current(a);
    CHECK_RC(tshm_publish(a, &full, (uint32_t)TSHM_SNAP_ALL + 1u), TSHM_MISUSE);
    CHECK_RC(tshm_publish(a, &full, TSHM_SNAP_MAX_FRAME | 0x80000000u), TSHM_MISUSE);
    const tshm_snapshot s5 = current(a);
    CHECK(s5.sequence == s4.sequence && changed_fields(&s4, &s5) == 0);

    CHECK_RC(tshm_writer_release(a), TSHM_OK);
    CHECK_RC(tshm_publish(a, &full, TSHM_SNAP_ALL), TSHM_MISUSE); /* role given back */
    close_handle(a);
    close_handle(b);
}

/* ------------------------------------------------------------------------------------------ */
/* 9. Readers                                                                                   */
/* ------------------------------------------------------------------------------------------ */

/* Pinning frames with two handles; the same for both reader strategies. */
static void check_readers(tshm *a, tshm *b, const char *label) {
    const uint32_t strategy = info_of(a).reader_strategy;
    const int failed_before = harness_failed;
    const tshm_info ia = info_of(a);
    const uint32_t nslots = ia.reader_slots;
    tshm_owner_info ow;

    CHECK(min_frame(a) == TSHM_NO_FRAME); /* no reader yet */

    CHECK_RC(tshm_writer_acquire(a, 0), TSHM_OK);
    publish_max_frame(a, 10);

    /* A reader gets a slot and the current snapshot, and pins its max_frame. */
    uint32_t slot = UINT32_MAX;
    tshm_snapshot rs;
    memset(&rs, 0, sizeof rs);
    CHECK_RC(tshm_reader_begin(a, &slot, &rs), TSHM_OK);
    CHECK(slot < nslots);
    const tshm_snapshot now = current(a);
    CHECK(rs.max_frame == 10 && rs.sequence == now.sequence && changed_fields(&rs, &now) == 0);
    CHECK(min_frame(a) == 10);
    CHECK(min_frame(b) == 10);

    memset(&ow, 0, sizeof ow);
    CHECK_RC(tshm_owner(b, TSHM_ROLE_READER0 + slot, &ow), TSHM_OK);
    CHECK(ow.held == 1 && ow.alive == 1);
    CHECK(ow.frame == 10);
    CHECK(ow.pid == (uint32_t)getpid() && ow.instance == ia.instance);

    /* A second reader after a new commit pins the newer frame; the minimum is the older one. */
    publish_max_frame(a, 20);
    uint32_t slot2 = UINT32_MAX;
    tshm_snapshot rs2;
    CHECK_RC(tshm_reader_begin(b, &slot2, &rs2), TSHM_OK);
    CHECK(slot2 < nslots && slot2 != slot);
    CHECK(rs2.max_frame == 20);
    CHECK(min_frame(a) == 10);

    /* Ending a slot this handle does not hold is a misuse and ends nothing. */
    uint32_t unused = (slot + 1) % nslots;
    if (unused == slot2) unused = (unused + 1) % nslots;
    CHECK_RC(tshm_reader_end(b, slot), TSHM_MISUSE);   /* a's slot */
    CHECK_RC(tshm_reader_end(a, unused), TSHM_MISUSE); /* nobody's slot */
    CHECK_RC(tshm_reader_end(a, nslots + 5), TSHM_MISUSE); /* no such slot */
    CHECK(min_frame(a) == 10);

    /* Ending a's transaction unpins frame 10; ending it again is a misuse. */
    CHECK_RC(tshm_reader_end(a, slot), TSHM_OK);
    CHECK(min_frame(a) == 20);
    CHECK_RC(tshm_reader_end(a, slot), TSHM_MISUSE);
    memset(&ow, PATTERN, sizeof ow);
    CHECK_RC(tshm_owner(a, TSHM_ROLE_READER0 + slot, &ow), TSHM_OK);
    /* A CAS handle keeps its slot, unpinned, for its next transaction. */
    if (strategy == TSHM_READERS_CAS)
        CHECK(ow.held == 1 && ow.alive == 1 && ow.frame == TSHM_NO_FRAME);
    else
        CHECK(ow.held == 0 && ow.alive == 0 && ow.frame == TSHM_NO_FRAME);

    CHECK_RC(tshm_reader_end(b, slot2), TSHM_OK);
    CHECK(min_frame(a) == TSHM_NO_FRAME);

    /* One handle may run several read transactions. */
    uint32_t x = UINT32_MAX, y = UINT32_MAX;
    tshm_snapshot sx, sy;
    CHECK_RC(tshm_reader_begin(a, &x, &sx), TSHM_OK);
    CHECK_RC(tshm_reader_begin(a, &y, &sy), TSHM_OK);
    /* At one snapshot, a CAS handle's transactions share its slot; byte locks take one each. */
    CHECK((strategy == TSHM_READERS_CAS ? x == y : x != y) && sx.max_frame == 20 &&
          sy.max_frame == 20);
    CHECK_RC(tshm_reader_end(a, y), TSHM_OK);
    CHECK_RC(tshm_reader_end(a, x), TSHM_OK);

    /* Reader roles exist for slots 0..reader_slots-1 only. */
    CHECK_RC(tshm_owner(a, TSHM_ROLE_READER0 + nslots - 1, &ow), TSHM_OK);
    memset(&ow, PATTERN, sizeof ow);
    tshm_owner_info ow_ref = ow;
    CHECK_RC(tshm_owner(a, TSHM_ROLE_READER0 + nslots, &ow), TSHM_MISUSE);
    CHECK(memcmp(&ow, &ow_ref, sizeof ow) == 0);
    CHECK_RC(tshm_owner(a, UINT32_MAX, &ow), TSHM_MISUSE);

    CHECK_RC(tshm_writer_release(a), TSHM_OK);

    /* Closing a handle ends its read transactions. */
    CHECK_RC(tshm_reader_begin(b, &x, &sx), TSHM_OK);
    CHECK(min_frame(a) == 20);
    close_handle(b);
    CHECK(min_frame(a) == TSHM_NO_FRAME);

    if (harness_failed != failed_before) fprintf(stderr, "  (the failures above are in the %s readers)\n", label);
}

/* A table of 64 slots: 64 readers fit, the 65th is told to retry. */
static void check_reader_table_full(const char *db, uint32_t strategy) {
    const int failed_before = harness_failed;
    tshm *h = open_with(db, 0, 64, strategy);
    CHECK(h != NULL);
    if (h == NULL) return;
    const tshm_info info = info_of(h);
    CHECK(info.reader_slots == 64 && info.reader_strategy == strategy);

    uint32_t slots[64];
    unsigned char seen[64];
    memset(seen, 0, sizeof seen);
    int began = 0, distinct = 0;
    /* CAS transactions at one snapshot share a slot: each of these begins at its own */
    int cas = strategy == TSHM_READERS_CAS;
    if (cas) CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    for (int i = 0; i < 64; i++) {
        tshm_snapshot s;
        if (cas) publish_max_frame(h, (uint64_t)i + 1);
        slots[i] = UINT32_MAX;
        if (tshm_reader_begin(h, &slots[i], &s) != TSHM_OK) continue;
        began++;
        if (slots[i] < 64 && !seen[slots[i]]) {
            seen[slots[i]] = 1;
            distinct++;
        }
    }
    CHECK(began == 64);
    CHECK(distinct == 64);

    uint32_t extra = 0xA5A5A5A5u;
    tshm_snapshot es;
    CHECK_RC(tshm_reader_begin(h, &extra, &es), TSHM_BUSY);
    CHECK(extra == 0xA5A5A5A5u);
    CHECK(errmsg_is_set());

    /* Freeing one slot makes room for exactly one more. */
    CHECK_RC(tshm_reader_end(h, slots[17]), TSHM_OK);
    CHECK_RC(tshm_reader_begin(h, &extra, &es), TSHM_OK);
    CHECK(extra == slots[17]);
    slots[17] = extra;

    int ended = 0;
    for (int i = 0; i < 64; i++)
        if (slots[i] != UINT32_MAX && tshm_reader_end(h, slots[i]) == TSHM_OK) ended++;
    CHECK(ended == 64);
    CHECK(min_frame(h) == TSHM_NO_FRAME);
    if (cas) CHECK_RC(tshm_writer_release(h), TSHM_OK);
    CHECK_RC(tshm_close(h, NULL), TSHM_OK);

    if (harness_failed != failed_before)
        fprintf(stderr, "  (the failures above are in the 64-slot %s table)\n",
                strategy == TSHM_READERS_BYTELOCK ? "byte-lock" : "CAS");
}

static void test_readers(void) {
    const char *db = test_db("readers.db");
    tshm *a = open_with(db, 0, 0, TSHM_READERS_CAS);
    tshm *b = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(a != NULL && b != NULL);
    if (a != NULL && b != NULL) {
        CHECK(info_of(a).reader_strategy == TSHM_READERS_CAS);
        check_readers(a, b, "CAS");
    } else {
        close_handle(b);
    }
    close_handle(a);

    check_reader_table_full(test_db("readers64.db"), TSHM_READERS_CAS);
}

/* The byte-lock strategy behaves the same through the API. */
static void test_bytelock(void) {
    const char *db = test_db("bytelock.db");
    tshm *a = open_with(db, 0, 0, TSHM_READERS_BYTELOCK);
    /* The first process to attach chooses the strategy: a later opener with the default joins
     * it, one asking for the other strategy is refused and told both. */
    tshm *b = open_with(db, 0, 0, TSHM_READERS_CAS);
    uint32_t roles = a != NULL ? info_of(a).role_strategy : TSHM_ROLES_BYTELOCK;
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0) {
        tshm *c = SENTINEL;
        tshm_options o;
        tshm_options_init(&o);
        o.role_strategy = TSHM_ROLES_BYTELOCK;
        /* the inherited handles only free their memory here */
        tshm_close(a, NULL);
        tshm_close(b, NULL);
        if (roles == TSHM_ROLES_BYTELOCK) _exit(0); /* nothing differs */
        int rc = tshm_open(db, &o, &c);
        _exit(rc == TSHM_CONFLICT && c == SENTINEL && strstr(tshm_errmsg(), "role_strategy") ? 0 : 1);
    }
    CHECK(child_wait(pid) == 0);
    /* a read-only handle chooses nothing: it takes the shape as it is, whatever it asks */
    {
        tshm_options o;
        tshm_options_init(&o);
        o.flags = TSHM_OPEN_READONLY;
        o.role_strategy = roles == TSHM_ROLES_SHM ? TSHM_ROLES_BYTELOCK : TSHM_ROLES_SHM;
        o.reader_slots = 64;
        tshm *ro = NULL;
        CHECK_RC(tshm_open(db, &o, &ro), TSHM_OK);
        if (ro != NULL) CHECK(info_of(ro).role_strategy == roles && info_of(ro).reader_slots == 4096);
        close_handle(ro);
    }
    CHECK(a != NULL && b != NULL);
    if (a != NULL && b != NULL) {
        CHECK(info_of(a).reader_strategy == TSHM_READERS_BYTELOCK);
        CHECK(info_of(b).reader_strategy == TSHM_READERS_BYTELOCK);
        CHECK(info_of(a).reader_slots == 4096);
        check_readers(a, b, "byte-lock");
    } else {
        close_handle(b);
    }
    close_handle(a);

    check_reader_table_full(test_db("bytelock64.db"), TSHM_READERS_BYTELOCK);
}

/* ------------------------------------------------------------------------------------------ */
/* 10. Modes: EXCLUSIVE against SHARED                                                          */
/* ------------------------------------------------------------------------------------------ */

static void test_modes(void) {
    const char *db = test_db("modes.db");
    tshm_options shared;
    tshm_options_init(&shared);
    tshm_options exclusive;
    tshm_options_init(&exclusive);
    exclusive.flags = TSHM_OPEN_EXCLUSIVE;

    tshm *ex = NULL;
    CHECK_RC(tshm_open(db, &exclusive, &ex), TSHM_OK);
    if (ex == NULL) return;
    const tshm_info ie = info_of(ex);
    CHECK(ie.mode == TSHM_MODE_EXCLUSIVE && ie.initialized == 1);

    /* The lifetime role names the exclusive holder. */
    tshm_owner_info ow;
    memset(&ow, 0, sizeof ow);
    CHECK_RC(tshm_owner(ex, TSHM_ROLE_LIFETIME, &ow), TSHM_OK);
    CHECK(ow.held == 1 && ow.alive == 1);
    CHECK(ow.pid == (uint32_t)getpid() && ow.instance == ie.instance);

    /* A SHARED open of the same database, even in this process, conflicts. */
    tshm *out = SENTINEL;
    CHECK_RC(tshm_open(db, &shared, &out), TSHM_CONFLICT);
    CHECK(out == SENTINEL);
    CHECK(errmsg_is_set());

    /* The exclusive handle is unaffected by the refused open. */
    CHECK_RC(tshm_writer_acquire(ex, 0), TSHM_OK);
    publish_max_frame(ex, 3);
    CHECK_RC(tshm_writer_release(ex), TSHM_OK);

    int was_last = -1;
    CHECK_RC(tshm_close(ex, &was_last), TSHM_OK);
    CHECK(was_last == 1);

    /* Once it is closed, SHARED works; now EXCLUSIVE conflicts. */
    tshm *sh = NULL;
    CHECK_RC(tshm_open(db, &shared, &sh), TSHM_OK);
    if (sh == NULL) return;
    CHECK(info_of(sh).mode == TSHM_MODE_SHARED);
    memset(&ow, PATTERN, sizeof ow);
    CHECK_RC(tshm_owner(sh, TSHM_ROLE_LIFETIME, &ow), TSHM_OK);
    CHECK(ow.id == 0); /* no exclusive holder */
    out = SENTINEL;
    CHECK_RC(tshm_open(db, &exclusive, &out), TSHM_CONFLICT);
    CHECK(out == SENTINEL);
    close_handle(sh);
}

/* ------------------------------------------------------------------------------------------ */
/* 11. Read-only handles                                                                        */
/* ------------------------------------------------------------------------------------------ */

static void test_readonly(void) {
    const char *db = test_db("readonly.db");
    tshm_options ro;
    tshm_options_init(&ro);
    ro.flags = TSHM_OPEN_READONLY;

    /* No sidecar: NOTFOUND (the engine takes its legacy path), and none is created. */
    tshm *out = SENTINEL;
    CHECK_RC(tshm_open(db, &ro, &out), TSHM_NOTFOUND);
    CHECK(out == SENTINEL);
    CHECK(errmsg_is_set());
    CHECK(!file_exists(sidecar_of(db)));

    /* A writer creates the sidecar and commits frame 7. */
    tshm *w = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(w != NULL);
    if (w == NULL) return;
    CHECK_RC(tshm_writer_acquire(w, 0), TSHM_OK);
    publish_max_frame(w, 7);

    tshm *r = NULL;
    CHECK_RC(tshm_open(db, &ro, &r), TSHM_OK);
    if (r != NULL) {
        const tshm_info ir = info_of(r);
        CHECK(ir.readonly == 1);
        CHECK(ir.instance == UINT32_MAX);
        CHECK(ir.initialized == 0);

        /* It reads the shared state... */
        tshm_snapshot s;
        memset(&s, 0, sizeof s);
        CHECK_RC(tshm_snapshot_get(r, &s), TSHM_OK);
        CHECK(s.max_frame == 7);
        CHECK(min_frame(r) == TSHM_NO_FRAME);
        tshm_owner_info ow;
        memset(&ow, 0, sizeof ow);
        CHECK_RC(tshm_owner(r, TSHM_ROLE_WRITER, &ow), TSHM_OK);
        CHECK(ow.alive == 1 && ow.instance == info_of(w).instance);

        /* ...but writes nothing: no reader slot, no role, no publish. */
        uint32_t slot = 0xA5A5A5A5u;
        tshm_snapshot rs, rs_ref;
        memset(&rs, PATTERN, sizeof rs);
        rs_ref = rs;
        CHECK_RC(tshm_reader_begin(r, &slot, &rs), TSHM_READONLY);
        CHECK(slot == 0xA5A5A5A5u && memcmp(&rs, &rs_ref, sizeof rs) == 0);
        CHECK_RC(tshm_writer_release(w), TSHM_OK); /* so that only read-only-ness stands in the way */
        CHECK_RC(tshm_writer_acquire(r, 0), TSHM_READONLY);
        CHECK_RC(tshm_checkpointer_acquire(r, 0), TSHM_READONLY);
        CHECK_RC(tshm_publish(r, &s, TSHM_SNAP_MAX_FRAME), TSHM_READONLY);
        CHECK(current(w).sequence == s.sequence);

        int was_last = -1;
        CHECK_RC(tshm_close(r, &was_last), TSHM_OK);
        CHECK(was_last == 0);
    } else {
        CHECK_RC(tshm_writer_release(w), TSHM_OK);
    }
    int was_last = -1;
    CHECK_RC(tshm_close(w, &was_last), TSHM_OK);
    CHECK(was_last == 1);

    /* The sidecar outlives its last writer; a read-only opener still attaches to it. */
    r = NULL;
    CHECK_RC(tshm_open(db, &ro, &r), TSHM_OK);
    if (r != NULL) {
        CHECK(info_of(r).readonly == 1);
        close_handle(r);
    }

    /* A process whose first contact with a sidecar (made by another process: here, a byte copy
     * of an unattached one) is read-only can open it read-write once that handle is closed. */
    const char *src = test_db("readonly-src.db");
    const char *dst = test_db("readonly-copy.db");
    tshm *maker = open_with(src, 0, 0, TSHM_READERS_CAS);
    CHECK(maker != NULL);
    close_handle(maker);
    CHECK(copy_file(sidecar_of(src), sidecar_of(dst)));
    r = NULL;
    CHECK_RC(tshm_open(dst, &ro, &r), TSHM_OK);
    if (r != NULL) {
        CHECK(info_of(r).readonly == 1);
        close_handle(r);
    }
    tshm *rw = NULL;
    CHECK_RC(tshm_open(dst, NULL, &rw), TSHM_OK);
    if (rw != NULL) {
        CHECK(info_of(rw).readonly == 0);
        close_handle(rw);
    }
}

/* ------------------------------------------------------------------------------------------ */
/* 12. Network filesystems                                                                      */
/* ------------------------------------------------------------------------------------------ */

static void test_netfs(void) {
    const char *db = test_db("netfs.db");
    tshm_options o;
    tshm_options_init(&o);

    /* Test hook: the library believes the directory is on NFS. */
    setenv("TSHM_TEST_FS_MAGIC", "0x6969", 1);

    tshm *out = SENTINEL;
    CHECK_RC(tshm_open(db, &o, &out), TSHM_NOTSUPPORTED);
    CHECK(out == SENTINEL);
    CHECK(errmsg_contains("NFS"));
    CHECK(!file_exists(sidecar_of(db)));

    /* The caller may insist. */
    o.flags = TSHM_OPEN_ALLOW_NETFS;
    tshm *h = NULL;
    CHECK_RC(tshm_open(db, &o, &h), TSHM_OK);
    close_handle(h);

    unsetenv("TSHM_TEST_FS_MAGIC");

    /* Without the hook the real (local) filesystem is accepted. */
    o.flags = 0;
    h = NULL;
    CHECK_RC(tshm_open(db, &o, &h), TSHM_OK);
    close_handle(h);
}

/* ------------------------------------------------------------------------------------------ */
/* 13. The last close                                                                           */
/* ------------------------------------------------------------------------------------------ */

struct last_close_log {
    int calls;
    tshm *handle;
    int acquire_rc, publish_rc, snapshot_rc, release_rc;
    tshm_snapshot seen;
};

static void on_last_close(tshm *h, void *ctx) {
    struct last_close_log *log = ctx;
    log->calls++;
    log->handle = h;
    /* The final checkpoint: the handle is fully usable here. */
    log->acquire_rc = tshm_checkpointer_acquire(h, 0);
    tshm_snapshot s;
    memset(&s, 0, sizeof s);
    s.nbackfills = 99;
    log->publish_rc = tshm_publish(h, &s, TSHM_SNAP_NBACKFILLS);
    log->snapshot_rc = tshm_snapshot_get(h, &log->seen);
    log->release_rc = tshm_checkpointer_release(h);
}

static void test_last_close(void) {
    const char *db = test_db("lastclose.db");
    struct last_close_log log;
    memset(&log, 0, sizeof log);
    log.acquire_rc = log.publish_rc = log.snapshot_rc = log.release_rc = -1;

    tshm_options o;
    tshm_options_init(&o);
    o.on_last_close = on_last_close;
    o.ctx = &log;
    tshm *a = NULL, *b = NULL;
    CHECK_RC(tshm_open(db, &o, &a), TSHM_OK);
    CHECK_RC(tshm_open(db, &o, &b), TSHM_OK);
    if (a == NULL || b == NULL) {
        close_handle(a);
        close_handle(b);
        return;
    }

    /* b commits something and keeps the writer role until it closes. */
    CHECK_RC(tshm_writer_acquire(b, 0), TSHM_OK);
    publish_max_frame(b, 42);

    /* Not the last handle: no hook. */
    int was_last = -1;
    CHECK_RC(tshm_close(a, &was_last), TSHM_OK);
    CHECK(was_last == 0);
    CHECK(log.calls == 0);

    /* The last handle: the hook runs once, on that handle, before close returns. */
    was_last = -1;
    CHECK_RC(tshm_close(b, &was_last), TSHM_OK);
    CHECK(was_last == 1);
    CHECK(log.calls == 1);
    CHECK(log.handle == b);
    CHECK(log.acquire_rc == TSHM_OK);
    CHECK(log.publish_rc == TSHM_OK);
    CHECK(log.snapshot_rc == TSHM_OK);
    CHECK(log.release_rc == TSHM_OK);
    CHECK(log.seen.nbackfills == 99 && log.seen.max_frame == 42);

    /* A last handle without a hook reports was_last all the same. */
    tshm *c = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(c != NULL);
    if (c != NULL) {
        was_last = -1;
        CHECK_RC(tshm_close(c, &was_last), TSHM_OK);
        CHECK(was_last == 1);
    }
    CHECK(log.calls == 1);
}

/* ------------------------------------------------------------------------------------------ */
/* 14. The sidecar file                                                                         */
/* ------------------------------------------------------------------------------------------ */

static void test_sidecar_file(void) {
    /* A database file made with mode 0640: the sidecar gets the same permissions. */
    const char *db = test_db("file.db");
    const mode_t old_mask = umask(0);
    const int fd = open(db, O_CREAT | O_WRONLY | O_TRUNC | O_CLOEXEC, 0640);
    umask(old_mask);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);

    CHECK(!file_exists(sidecar_of(db)));
    tshm *h = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(h != NULL);
    struct stat st;
    memset(&st, 0, sizeof st);
    CHECK(stat(sidecar_of(db), &st) == 0);
    CHECK(S_ISREG(st.st_mode) && st.st_size > 0);
    if ((st.st_mode & 0777) != 0640) fprintf(stderr, "sidecar mode %o\n", (unsigned)(st.st_mode & 0777));
    CHECK((st.st_mode & 0777) == 0640);

    /* Close never deletes it. */
    int was_last = -1;
    if (h != NULL) CHECK_RC(tshm_close(h, &was_last), TSHM_OK);
    CHECK(was_last == 1);
    CHECK(file_exists(sidecar_of(db)));

    /* No database file yet: the sidecar is still created next to where it will be. */
    const char *db2 = test_db("file-nodb.db");
    h = open_with(db2, 0, 0, TSHM_READERS_CAS);
    CHECK(h != NULL && file_exists(sidecar_of(db2)));
    close_handle(h);
    CHECK(file_exists(sidecar_of(db2)));
}

/* ------------------------------------------------------------------------------------------ */
/* 15. Closed handles                                                                           */
/* ------------------------------------------------------------------------------------------ */

/* Stops the walk after the first page; records it. */
static int first_page(void *ctx, uint32_t page, uint64_t frame) {
    uint64_t *out = ctx;
    out[0] = page;
    out[1] = frame;
    return 1;
}

static void test_index(void) {
    const char *db = test_db("index.db");
    tshm *h = open_with(db, 0, 0, TSHM_READERS_CAS);
    tshm *r = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(h != NULL && r != NULL);
    if (h == NULL || r == NULL) {
        close_handle(h);
        close_handle(r);
        return;
    }
    uint64_t f = 0;
    /* Writer only. */
    CHECK_RC(tshm_index_append(h, 7, 1), TSHM_MISUSE);
    CHECK(errmsg_is_set());
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_OK);
    CHECK_RC(tshm_index_append(h, 7, 1), TSHM_OK);
    CHECK_RC(tshm_index_append(h, 9, 2), TSHM_OK);
    CHECK_RC(tshm_index_append(h, 7, 3), TSHM_OK);
    CHECK_RC(tshm_index_append(h, 8, 3), TSHM_MISUSE); /* frames strictly increase */
    CHECK_RC(tshm_index_append(h, 8, 0), TSHM_MISUSE);
    CHECK_RC(tshm_index_append(r, 8, 4), TSHM_MISUSE); /* r is not the writer */
    CHECK_RC(tshm_index_find(r, 7, 3, &f), TSHM_OK);
    CHECK(f == 3);
    CHECK_RC(tshm_index_find(r, 7, 2, &f), TSHM_OK);
    CHECK(f == 1);
    f = 42;
    CHECK_RC(tshm_index_find(r, 9, 1, &f), TSHM_NOTFOUND);
    CHECK(f == 42);
    CHECK_RC(tshm_index_find(r, 10, 3, &f), TSHM_NOTFOUND);
    /* Commit frames 1..2, roll back frame 3. */
    publish_max_frame(h, 2);
    CHECK_RC(tshm_index_truncate(h, 1), TSHM_MISUSE); /* below the committed frame */
    CHECK_RC(tshm_index_truncate(h, 2), TSHM_OK);
    CHECK_RC(tshm_index_find(r, 7, 100, &f), TSHM_OK);
    CHECK(f == 1);
    CHECK_RC(tshm_index_append(h, 11, 3), TSHM_OK); /* frame 3 is free again */
    tshm_index_stats st;
    CHECK_RC(tshm_index_stats_get(r, &st), TSHM_OK);
    CHECK(st.entries == 4 && st.dead == 1 && st.tail_frame == 3 && st.blocks == 1);
    uint64_t n = 0;
    CHECK_RC(tshm_index_foreach(r, 3, count_pages, &n), TSHM_OK);
    CHECK(n == 3); /* pages 7, 9, 11 */
    uint64_t firstp[2] = {0, 0};
    CHECK_RC(tshm_index_foreach(r, 3, first_page, firstp), TSHM_OK);
    CHECK(firstp[0] == 7 && firstp[1] == 1);
    /* Reset: empty, new generation. */
    uint64_t gen = st.generation;
    CHECK_RC(tshm_index_reset(h), TSHM_OK);
    CHECK_RC(tshm_index_stats_get(r, &st), TSHM_OK);
    CHECK(st.entries == 0 && st.generation == gen + 1);
    CHECK_RC(tshm_index_find(r, 7, 100, &f), TSHM_NOTFOUND);
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
    close_handle(r);
    close_handle(h);
}

static void test_closed_handles(void) {
    const char *db = test_db("closed.db");
    tshm *keep = open_with(db, 0, 0, TSHM_READERS_CAS); /* keeps the sidecar attached */
    tshm *h = open_with(db, 0, 0, TSHM_READERS_CAS);
    CHECK(keep != NULL && h != NULL);
    if (keep == NULL || h == NULL) {
        close_handle(keep);
        close_handle(h);
        return;
    }
    CHECK_RC(tshm_close(h, NULL), TSHM_OK);

    /* Every call on the closed handle is a reported misuse that writes nothing. */
    tshm_info info, info_ref;
    memset(&info, PATTERN, sizeof info);
    info_ref = info;
    CHECK_RC(tshm_info_get(h, &info), TSHM_MISUSE);
    CHECK(memcmp(&info, &info_ref, sizeof info) == 0);
    CHECK(errmsg_is_set());

    tshm_snapshot snap, snap_ref;
    memset(&snap, PATTERN, sizeof snap);
    snap_ref = snap;
    CHECK_RC(tshm_snapshot_get(h, &snap), TSHM_MISUSE);
    CHECK(memcmp(&snap, &snap_ref, sizeof snap) == 0);

    tshm_snapshot pub;
    memset(&pub, 0, sizeof pub);
    CHECK_RC(tshm_publish(h, &pub, TSHM_SNAP_ALL), TSHM_MISUSE);
    CHECK_RC(tshm_writer_acquire(h, 0), TSHM_MISUSE);
    CHECK_RC(tshm_writer_release(h), TSHM_MISUSE);
    CHECK_RC(tshm_checkpointer_acquire(h, 0), TSHM_MISUSE);
    CHECK_RC(tshm_checkpointer_release(h), TSHM_MISUSE);

    uint32_t slot = 0xA5A5A5A5u;
    CHECK_RC(tshm_reader_begin(h, &slot, &snap), TSHM_MISUSE);
    CHECK(slot == 0xA5A5A5A5u && memcmp(&snap, &snap_ref, sizeof snap) == 0);
    CHECK_RC(tshm_reader_end(h, 0), TSHM_MISUSE);

    uint64_t frame = 0xA5A5A5A5A5A5A5A5ull;
    CHECK_RC(tshm_min_reader_frame(h, &frame), TSHM_MISUSE);
    CHECK(frame == 0xA5A5A5A5A5A5A5A5ull);

    tshm_owner_info ow, ow_ref;
    memset(&ow, PATTERN, sizeof ow);
    ow_ref = ow;
    CHECK_RC(tshm_owner(h, TSHM_ROLE_WRITER, &ow), TSHM_MISUSE);
    CHECK(memcmp(&ow, &ow_ref, sizeof ow) == 0);

    CHECK_RC(tshm_index_append(h, 1, 1), TSHM_MISUSE);
    CHECK_RC(tshm_index_find(h, 1, 1, &frame), TSHM_MISUSE);
    CHECK(frame == 0xA5A5A5A5A5A5A5A5ull);
    CHECK_RC(tshm_index_truncate(h, 0), TSHM_MISUSE);
    CHECK_RC(tshm_index_reset(h), TSHM_MISUSE);
    CHECK_RC(tshm_index_foreach(h, 1, count_pages, &frame), TSHM_MISUSE);
    tshm_index_stats st;
    CHECK_RC(tshm_index_stats_get(h, &st), TSHM_MISUSE);

    /* Closing twice is a misuse too (and does not touch was_last). */
    int was_last = 42;
    CHECK_RC(tshm_close(h, &was_last), TSHM_MISUSE);
    CHECK(was_last == 42);
    CHECK_RC(tshm_close(h, NULL), TSHM_MISUSE);

    /* The other handle was not disturbed. */
    CHECK(info_of(keep).initialized == 1);
    CHECK_RC(tshm_writer_acquire(keep, 0), TSHM_OK);
    CHECK_RC(tshm_writer_release(keep), TSHM_OK);
    was_last = -1;
    CHECK_RC(tshm_close(keep, &was_last), TSHM_OK);
    CHECK(was_last == 1);
}

/* ------------------------------------------------------------------------------------------ */

int main(void) {
    /* Before any failure, there is no message and no errno. */
    CHECK(tshm_errmsg() == NULL);
    CHECK(tshm_errno() == 0);

    test_signatures();
    test_version();
    test_errstr();
    test_null_arguments();
    test_options();
    test_info();
    test_roles();
    test_acquire_while();
    test_publish();
    test_readers();
    test_bytelock();
    test_modes();
    test_readonly();
    test_netfs();
    test_last_close();
    test_sidecar_file();
    test_index();
    test_closed_handles();

    return harness_done("test_api");
}
