/*
 * quickstart.c — the README's walk through the C API as a complete program: one write
 * transaction, one read transaction, one checkpoint, in a fresh directory.
 *
 *   quickstart [DIR]    works in a new directory under DIR (default $TMPDIR or /tmp), removed at
 *                       the end; exits 0 when every step did what the API promises
 *
 * `make install-check` builds it against an installed tree with pkg-config, in every link mode.
 */
#define _GNU_SOURCE
#include <tshm.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int failed;

static void expect(int ok, const char *what) {
    printf("%s %s\n", ok ? "ok  " : "FAIL", what);
    if (!ok) failed = 1;
}

int main(int argc, char **argv) {
    const char *base = argc > 1 ? argv[1] : getenv("TMPDIR");
    char dir[4096], db[4200], side[4300];
    snprintf(dir, sizeof dir, "%s/tshm-quickstart-XXXXXX", base != NULL && *base != '\0' ? base : "/tmp");
    if (mkdtemp(dir) == NULL) {
        perror("mkdtemp");
        return 1;
    }
    snprintf(db, sizeof db, "%s/app.db", dir);
    snprintf(side, sizeof side, "%s-tshm", db);
    printf("libtshm %s\n", tshm_libversion());

    tshm_options o;
    tshm *h;
    tshm_options_init(&o); /* SHARED mode, CAS readers, shared-memory roles */
    if (tshm_open(db, &o, &h) != TSHM_OK) {
        fprintf(stderr, "tshm_open: %s\n", tshm_errmsg());
        return 1;
    }
    const uint64_t page = 7;

    /* write transaction: page 7 went to WAL frame 42, then commit */
    expect(tshm_writer_acquire(h, 5000) == TSHM_OK, "writer role taken");
    tshm_snapshot s;
    memset(&s, 0, sizeof s);
    expect(tshm_index_append(h, page, 42) == TSHM_OK, "page 7 recorded at frame 42");
    s.max_frame = 42;
    expect(tshm_publish(h, &s, TSHM_SNAP_MAX_FRAME) == TSHM_OK, "frames up to 42 published");
    expect(tshm_writer_release(h) == TSHM_OK, "writer role released");
    expect(tshm_writer_release(h) == TSHM_MISUSE, "a second release is refused (TSHM_MISUSE)");

    /* read transaction: the snapshot pins frame 42, where page 7 is */
    uint32_t slot;
    tshm_snapshot snap;
    expect(tshm_reader_begin(h, &slot, &snap) == TSHM_OK && snap.max_frame == 42, "reader sees frame 42");
    uint64_t frame = 0, oldest = 0;
    expect(tshm_index_find(h, page, snap.max_frame, &frame) == TSHM_OK && frame == 42, "page 7 is in frame 42");
    expect(tshm_index_find(h, page + 1, snap.max_frame, &frame) == TSHM_NOTFOUND, "page 8 is in the database file");
    expect(tshm_min_reader_frame(h, &oldest) == TSHM_OK && oldest == 42, "the reader pins frame 42");
    expect(tshm_reader_end(h, slot) == TSHM_OK, "read transaction ended");

    /* checkpoint: nobody reads, so every frame may be copied back */
    tshm_snapshot now;
    expect(tshm_checkpointer_acquire(h, 0) == TSHM_OK, "checkpointer role taken");
    expect(tshm_snapshot_get(h, &now) == TSHM_OK && now.max_frame == 42, "snapshot read");
    expect(tshm_min_reader_frame(h, &oldest) == TSHM_OK && oldest == TSHM_NO_FRAME, "no reader left");
    expect(tshm_checkpointer_release(h) == TSHM_OK, "checkpointer role released");

    int last = 0;
    expect(tshm_close(h, &last) == TSHM_OK && last == 1, "closed, the last handle");
    expect(tshm_open("", NULL, &h) != TSHM_OK && tshm_errmsg() != NULL, "an empty path is refused, with a message");

    unlink(side);
    unlink(db);
    rmdir(dir);
    printf("quickstart: %s\n", failed ? "FAILED" : "all steps as documented");
    return failed;
}
