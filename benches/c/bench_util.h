/*
 * bench_util.h — what bench_core.c and cg_paths.c share: failing loudly, clocks, opening
 * libtshm handles with a given reader and role strategy, and the LMDB and mutex anchors.
 */
#ifndef TSHM_BENCH_UTIL_H
#define TSHM_BENCH_UTIL_H

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "tshm.h"

/* The role-strategy option exists from the library version that has shared-memory roles on;
 * against an older header the byte-lock role rows are skipped. */
#ifdef TSHM_ROLES_BYTELOCK
#define HAVE_ROLE_STRATEGY 1
#else
#define HAVE_ROLE_STRATEGY 0
#define TSHM_ROLES_SHM 0
#define TSHM_ROLES_BYTELOCK 1
#endif

static inline void die(const char *what, int rc) {
    const char *m = tshm_errmsg();
    fprintf(stderr, "bench: %s failed: %d (%s) %s\n", what, rc, tshm_errstr(rc), m ? m : "");
    exit(1);
}

static inline void die_mdb(const char *what, int rc) {
    fprintf(stderr, "bench: %s failed: %s\n", what, mdb_strerror(rc));
    exit(1);
}

static inline void die_sys(const char *what) {
    fprintf(stderr, "bench: %s failed: %s\n", what, strerror(errno));
    exit(1);
}

#define TRY(call)                                   \
    do {                                            \
        int rc_ = (call);                           \
        if (rc_ != TSHM_OK) die(#call, rc_);        \
    } while (0)
#define TRY_MDB(call)                               \
    do {                                            \
        int rc_ = (call);                           \
        if (rc_ != MDB_SUCCESS) die_mdb(#call, rc_); \
    } while (0)

static inline uint64_t now_ns(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (uint64_t)t.tv_sec * 1000000000u + (uint64_t)t.tv_nsec;
}

/* Removes the sidecar of `db` (a fresh one gets the strategies asked for). */
static inline void fresh_sidecar(const char *db) {
    char p[4200];
    snprintf(p, sizeof p, "%s-tshm", db);
    unlink(p);
}

/* A handle on `dir/name` (sidecar created fresh when `fresh`) with the given strategies;
 * checks that the handle reports them. */
static inline tshm *open_handle(const char *dir, const char *name, uint32_t readers, uint32_t roles,
                                int fresh) {
    char db[4096];
    snprintf(db, sizeof db, "%s/%s", dir, name);
    if (fresh) fresh_sidecar(db);
    tshm_options o;
    TRY(tshm_options_init(&o));
    o.reader_strategy = readers;
#if HAVE_ROLE_STRATEGY
    o.role_strategy = roles;
#else
    if (roles != TSHM_ROLES_SHM) {
        fprintf(stderr, "bench: this library has no role strategies\n");
        exit(1);
    }
#endif
    tshm *h;
    TRY(tshm_open(db, &o, &h));
    tshm_info info;
    TRY(tshm_info_get(h, &info));
    if (info.reader_strategy != readers) {
        fprintf(stderr, "bench: %s has reader strategy %u, not %u\n", db, info.reader_strategy, readers);
        exit(1);
    }
#if HAVE_ROLE_STRATEGY
    if (info.role_strategy != roles) {
        fprintf(stderr, "bench: %s has role strategy %u, not %u\n", db, info.role_strategy, roles);
        exit(1);
    }
#endif
    return h;
}

/* An LMDB environment in `dir/name` (a directory, created), one key written. */
static inline MDB_env *open_lmdb(const char *dir, const char *name, unsigned flags, MDB_dbi *dbi) {
    char p[4096];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    mkdir(p, 0755);
    MDB_env *env;
    TRY_MDB(mdb_env_create(&env));
    TRY_MDB(mdb_env_set_mapsize(env, 64u << 20));
    TRY_MDB(mdb_env_set_maxreaders(env, 126));
    TRY_MDB(mdb_env_open(env, p, flags, 0644));
    MDB_txn *t;
    TRY_MDB(mdb_txn_begin(env, NULL, 0, &t));
    TRY_MDB(mdb_dbi_open(t, NULL, 0, dbi));
    uint64_t v = 0;
    MDB_val k = {1, "k"}, d = {sizeof v, &v};
    TRY_MDB(mdb_put(t, *dbi, &k, &d, 0));
    TRY_MDB(mdb_txn_commit(t));
    return env;
}

/* A robust, process-shared mutex in a MAP_SHARED mapping (as a multi-process engine keeps
 * its lock in shared memory). */
static inline pthread_mutex_t *shared_mutex(void) {
    pthread_mutex_t *m = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
    if (m == MAP_FAILED) die_sys("mmap");
    pthread_mutexattr_t a;
    pthread_mutexattr_init(&a);
    pthread_mutexattr_setpshared(&a, PTHREAD_PROCESS_SHARED);
    pthread_mutexattr_setrobust(&a, PTHREAD_MUTEX_ROBUST);
    if (pthread_mutex_init(m, &a) != 0) die_sys("pthread_mutex_init");
    pthread_mutexattr_destroy(&a);
    return m;
}

#endif
