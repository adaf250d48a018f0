/*
 * kvlog — a small page-based key-value store with its own write-ahead log, built on libtshm
 * for every cross-process concern. It is the example engine: read it to see how an engine uses
 * the writer role, reader slots, the snapshot, the shared frame index and the checkpointer.
 *
 * Files: <db> (page 1: header; pages 2..: hash buckets), <db>-wal (the log), <db>-tshm
 * (libtshm's sidecar).
 *
 * Frame numbers are global: a WAL restart does not start them again at 1 but at max_frame + 1
 * (the WAL header records that base), so a frame number pinned by a reader keeps its meaning
 * across restarts.
 */
#ifndef KVLOG_H
#define KVLOG_H

#include <stddef.h>
#include <stdint.h>

#include "tshm.h"

enum {
    KV_OK = 0,
    KV_ERROR = 1,
    KV_BUSY = 5,    /* the writer or checkpointer role stayed busy past the timeout */
    KV_CORRUPT = 11,
    KV_NOTFOUND = 12,
    KV_FULL = 13,   /* a bucket page has no room for the record */
    KV_MISUSE = 21,
};

typedef struct kvlog kvlog;

typedef struct kv_config {
    uint32_t page_size;   /* for a new database: 1024..65536, power of two (default 4096) */
    uint32_t buckets;     /* for a new database: bucket pages (default 128) */
    int durable;          /* fdatasync the WAL at commit and the database at checkpoint */
    int spill;            /* write a page's frame as soon as the transaction moves to another
                             page (leaves uncommitted frames in the WAL mid-transaction) */
} kv_config;

typedef struct kv_stats {
    uint64_t max_frame, nbackfills, wal_base, wal_frames;
    uint64_t index_entries, index_dead;
    uint32_t page_size, buckets, db_pages, readers_pinned;
    uint64_t keys;
} kv_stats;

typedef struct kv_ckpt {
    uint64_t pages_copied;  /* pages written back to the database file */
    uint64_t backfilled_to; /* nbackfills after the checkpoint */
    int restarted;          /* the WAL was restarted */
} kv_ckpt;

/* Test hooks, read from the environment once by kv_open (a handle never looks again).
 *
 * Named points where a process stops when KVLOG_STOP_AT names the point and KVLOG_STOP_FD is a
 * descriptor: it writes one byte there and waits to be killed. KVLOG_STOP_SKIP=n passes the
 * point n times first; with KVLOG_ARM_FD set, the point is live only once a byte is readable
 * there. */
#define KV_STOP_MID_WRITE "mid-write"   /* a frame spilled, the transaction not committed */
#define KV_STOP_IN_READ "in-read"       /* a reader slot held */
#define KV_STOP_MID_CKPT "mid-checkpoint" /* pages copied, nbackfills not published */
#define KV_STOP_UNPUBLISHED "commit-unpublished" /* every frame of the transaction, its commit
                                                    frame included, written (and synced when
                                                    durable); the commit not published */
#define KV_STOP_MID_RESTART "mid-restart" /* WAL restart: the new header written, the new salts
                                             and base not published */
/* KVLOG_FAIL_AT=publish: every commit fails as if tshm_publish had returned TSHM_BUSY (after
 * its frames were written), and rolls back. */

int kv_open(const char *path, const kv_config *cfg, kvlog **out);
/* Closes; the last process attached runs a final checkpoint and restarts the WAL. */
int kv_close(kvlog *db);
const char *kv_errmsg(kvlog *db);

int kv_begin_read(kvlog *db);
int kv_end_read(kvlog *db);
int kv_begin_write(kvlog *db, uint32_t timeout_ms);
int kv_commit(kvlog *db);
int kv_rollback(kvlog *db);

/* Inside a transaction. kv_get: KV_NOTFOUND when absent; *len gets the full length. */
int kv_get(kvlog *db, const char *key, void *val, size_t cap, size_t *len);
int kv_put(kvlog *db, const char *key, const void *val, size_t len);
int kv_del(kvlog *db, const char *key);
/* Calls cb for every record in the transaction's snapshot (bucket order, not sorted); a
 * non-zero return stops the scan. */
typedef int (*kv_scan_fn)(void *ctx, const char *key, size_t klen, const void *val, size_t vlen);
int kv_scan(kvlog *db, kv_scan_fn cb, void *ctx);

int kv_checkpoint(kvlog *db, uint32_t timeout_ms, int restart, kv_ckpt *out);
/* Integrity: every bucket page parses, every key lives in its bucket. why gets the reason. */
int kv_check(kvlog *db, char *why, size_t n);
int kv_stats_get(kvlog *db, kv_stats *out);
/* Reader slots held by live readers (any process). */
uint32_t kv_readers_pinned(kvlog *db);
tshm *kv_tshm(kvlog *db);

#endif
