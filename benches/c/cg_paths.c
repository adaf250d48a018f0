/*
 * cg_paths.c — one hot path, N times, for instruction counting (scripts/callgrind.py runs it
 * under valgrind --tool=callgrind at two N and divides the difference, so that the setup and
 * teardown cancel out).
 *
 *   cg_paths DIR PATH N     PATH: one of the names in `paths` below
 */
#include "bench_util.h"

static volatile uint64_t sink;

static tshm *h;
static MDB_env *env;
static MDB_txn *txn;
static pthread_mutex_t *mx;

static void reader(void) {
    uint32_t slot;
    tshm_snapshot s;
    TRY(tshm_reader_begin(h, &slot, &s));
    sink += s.max_frame;
    TRY(tshm_reader_end(h, slot));
}
static void snapshot(void) {
    tshm_snapshot s;
    TRY(tshm_snapshot_get(h, &s));
    sink += s.max_frame;
}
static void writer(void) {
    TRY(tshm_writer_acquire(h, 0));
    TRY(tshm_writer_release(h));
}
static void ckpt(void) {
    TRY(tshm_checkpointer_acquire(h, 0));
    TRY(tshm_checkpointer_release(h));
}
static void publish(void) {
    tshm_snapshot s = {0};
    s.max_frame = ++sink;
    TRY(tshm_publish(h, &s, TSHM_SNAP_MAX_FRAME));
}
static void commit(void) {
    TRY(tshm_writer_acquire(h, 0));
    tshm_snapshot s;
    TRY(tshm_snapshot_get(h, &s));
    s.max_frame++;
    TRY(tshm_publish(h, &s, TSHM_SNAP_MAX_FRAME));
    TRY(tshm_writer_release(h));
}
static void lmdb_read(void) {
    MDB_txn *t;
    TRY_MDB(mdb_txn_begin(env, NULL, MDB_RDONLY, &t));
    sink += mdb_txn_id(t);
    mdb_txn_abort(t);
}
static void lmdb_renew(void) {
    TRY_MDB(mdb_txn_renew(txn));
    sink += mdb_txn_id(txn);
    mdb_txn_reset(txn);
}
static void lmdb_write(void) {
    MDB_txn *t;
    TRY_MDB(mdb_txn_begin(env, NULL, 0, &t));
    mdb_txn_abort(t);
}
static void mutex_pair(void) {
    if (pthread_mutex_lock(mx) != 0) die_sys("pthread_mutex_lock");
    pthread_mutex_unlock(mx);
}

/* what each path needs: 1 a CAS handle, 2 a byte-lock reader handle, 3 a byte-lock role
 * handle, 4 the writer role held, 5 LMDB, 6 LMDB with a reset read txn, 7 the mutex */
static const struct {
    const char *name;
    void (*op)(void);
    int setup;
} paths[] = {
    {"reader_cas", reader, 1},         {"reader_bytelock", reader, 2}, {"snapshot_get", snapshot, 1},
    {"writer_pair", writer, 1},        {"writer_pair_bytelock", writer, 3},
    {"ckpt_pair", ckpt, 1},            {"ckpt_pair_bytelock", ckpt, 3},
    {"publish", publish, 4},           {"commit", commit, 1},
    {"lmdb_read", lmdb_read, 5},       {"lmdb_renew", lmdb_renew, 6}, {"lmdb_write", lmdb_write, 5},
    {"mutex_pair", mutex_pair, 7},
};

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: cg_paths DIR PATH N\n");
        return 2;
    }
    const char *dir = argv[1];
    mkdir(dir, 0755);
    long n = atol(argv[3]);
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        if (strcmp(paths[i].name, argv[2]) != 0) continue;
        MDB_dbi dbi;
        switch (paths[i].setup) {
        case 1:
        case 4: h = open_handle(dir, "cg-cas.db", TSHM_READERS_CAS, TSHM_ROLES_SHM, 1); break;
        case 2: h = open_handle(dir, "cg-byte.db", TSHM_READERS_BYTELOCK, TSHM_ROLES_SHM, 1); break;
        case 3:
            if (!HAVE_ROLE_STRATEGY) {
                fprintf(stderr, "cg_paths: this library has no role strategies\n");
                return 3;
            }
            h = open_handle(dir, "cg-roles.db", TSHM_READERS_CAS, TSHM_ROLES_BYTELOCK, 1);
            break;
        case 5:
        case 6: env = open_lmdb(dir, "cg-lmdb", MDB_NOSYNC, &dbi); break;
        case 7: mx = shared_mutex(); break;
        }
        if (paths[i].setup == 4) TRY(tshm_writer_acquire(h, 0));
        if (paths[i].setup == 6) {
            TRY_MDB(mdb_txn_begin(env, NULL, MDB_RDONLY, &txn));
            mdb_txn_reset(txn);
        }
        for (long k = 0; k < n; k++) paths[i].op();
        if (paths[i].setup == 4) TRY(tshm_writer_release(h));
        if (txn != NULL) mdb_txn_abort(txn);
        if (env != NULL) mdb_env_close(env);
        if (h != NULL) TRY(tshm_close(h, NULL));
        return 0;
    }
    fprintf(stderr, "cg_paths: no path %s\n", argv[2]);
    return 2;
}
