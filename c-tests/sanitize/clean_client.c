/*
 * clean_client.c — the smallest complete client: open, use each role once, close every handle.
 *
 * Run under valgrind (`make valgrind`): a program that has closed all its handles must leave no
 * heap block of libtshm behind, not even a reachable one, so that leak checkers in engines that
 * embed the library report nothing of it. Two sidecars and a second handle on one of them make
 * the process-local registry grow, shrink and empty again; the database files exist, as an
 * engine's do, so the process also keeps its guard of each database file (which outlives the
 * handles by design and must stay reachable).
 */
#include "harness.h"

static void use(struct tshm *h) {
    uint32_t slot = 0;
    struct tshm_snapshot snap;
    uint64_t frame = 0;
    CHECK_RC(tshm_writer_acquire(h, 1000), TSHM_OK);
    CHECK_RC(tshm_index_append(h, 7, 1), TSHM_OK);
    CHECK_RC(tshm_writer_release(h), TSHM_OK);
    CHECK_RC(tshm_reader_begin(h, &slot, &snap), TSHM_OK);
    CHECK_RC(tshm_reader_end(h, slot), TSHM_OK);
    CHECK_RC(tshm_index_find(h, 7, 1, &frame), TSHM_OK);
    CHECK(frame == 1);
}

static void create_file(const char *path) {
    int fd = open(path, O_CREAT | O_WRONLY | O_CLOEXEC, 0644);
    CHECK(fd >= 0);
    if (fd >= 0) close(fd);
}

int main(void) {
    const char *a = test_db("clean-a.db");
    const char *b = test_db("clean-b.db");
    create_file(a);
    create_file(b);
    struct tshm *ha = NULL, *ha2 = NULL, *hb = NULL;
    int last = -1;

    CHECK_RC(tshm_open(a, NULL, &ha), TSHM_OK);
    CHECK_RC(tshm_open(a, NULL, &ha2), TSHM_OK);
    CHECK_RC(tshm_open(b, NULL, &hb), TSHM_OK);
    use(ha);
    use(hb);
    /* a failing call leaves an error message behind on this thread */
    CHECK_RC(tshm_close(ha2, &last), TSHM_OK);
    CHECK(last == 0);
    CHECK_RC(tshm_close(hb, &last), TSHM_OK);
    CHECK(last == 1);
    CHECK_RC(tshm_open(b, NULL, &hb), TSHM_OK);
    CHECK_RC(tshm_writer_release(hb), TSHM_MISUSE);
    CHECK_RC(tshm_close(hb, &last), TSHM_OK);
    CHECK_RC(tshm_close(ha, &last), TSHM_OK);
    CHECK(last == 1);
    return harness_done("clean_client");
}
