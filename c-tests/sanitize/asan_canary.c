/*
 * asan_canary.c — proves that libtshm itself is instrumented, not only the C programs around
 * it. `make asan` expects this program to be stopped by an ASan report raised inside the
 * library: it uses a handle after the quarantine of closed handles has let it go, so the
 * library's own load of the handle's state word reads freed memory. Only instrumented Rust code
 * checks that load (no interceptor sees it), so an uninstrumented libtshm lets the program
 * reach its end and print "not caught", and the make target fails.
 */
#include "harness.h"

#define QUARANTINE 4096 /* src/ffi/handle.rs */

int main(void) {
    const char *db = test_db("canary.db");
    struct tshm *first = NULL, *h = NULL;
    struct tshm_info info;
    if (tshm_open(db, NULL, &first) != TSHM_OK) return 2;
    tshm_close(first, NULL);
    for (int i = 0; i < QUARANTINE; i++) {
        if (tshm_open(db, NULL, &h) != TSHM_OK) return 2;
        tshm_close(h, NULL);
    }
    /* `first` is freed now: a use-after-free by this caller, caught inside libtshm */
    int rc = tshm_info_get(first, &info);
    printf("asan_canary: not caught (rc %d)\n", rc);
    return 0;
}
