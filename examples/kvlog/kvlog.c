/*
 * kvlog.c — the example engine. See kvlog.h for the files and the model.
 *
 * Who does what through libtshm:
 *   write transaction  tshm_writer_acquire (waits, woken on release) → frames appended to the
 *                      WAL and to the shared frame index → tshm_publish(max_frame) at commit;
 *                      rollback: tshm_index_truncate(committed max_frame)
 *   read transaction   tshm_reader_begin pins the snapshot; each page comes from the WAL frame
 *                      tshm_index_find names, or from the database file
 *   checkpoint         tshm_checkpointer_acquire → copy each page's newest frame up to
 *                      min(max_frame, tshm_min_reader_frame) → publish nbackfills; restart
 *                      the WAL (tshm_index_reset) when all is copied and no reader needs it
 *   first opener       (the snapshot's recovery epoch is stale) rebuilds the index from the WAL
 *   last closer        final checkpoint and WAL restart, from the on_last_close hook
 *
 * Snapshot words: max_frame (newest committed frame), nbackfills (frames copied into the
 * database file), salt (of the current WAL), checksum (the WAL's running checksum at max_frame,
 * low word first), engine[0] (frame number of the WAL's first frame), engine[1] (the libtshm
 * init epoch whose recovery is done), db_size (database pages), checkpoint_seq (bumped when
 * a WAL restart begins and again when it is published: odd while one is under way).
 *
 * The WAL's checksums form a chain: the header's checksum seeds it, and each frame's checksum
 * continues the one of the frame before it (which the frame also records, so a frame read on
 * its own can still be verified). A writer continues the chain from the published checksum at
 * max_frame; recovery accepts a frame only as the continuation of the chain it has verified so
 * far. Frames left past max_frame by a writer that died or failed before publishing were
 * chained after a predecessor that a later writer has since overwritten, so they can never
 * pass for the continuation of the newer frames.
 */
#define _GNU_SOURCE
#include "kvlog.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define DB_MAGIC "KVLOGDB1"
#define WAL_MAGIC 0x32574c4bu   /* 'KLW2': format 2, chained frame checksums */
#define WAL_MAGIC_1 0x57564c4bu /* 'KLVW': format 1, each frame checksummed on its own */
#define WAL_HDR 32
#define FRAME_HDR 32
#define MAX_DIRTY 512
#define MAX_KEY 255

struct dirty {
    uint32_t page;
    int spilled; /* the current content is already in a frame */
    uint8_t *data;
};

struct kvlog {
    tshm *h;
    int dbfd, walfd;
    uint32_t page_size, buckets;
    int durable, spill;
    /* transaction */
    int in_read, in_write;
    uint32_t slot;
    tshm_snapshot snap;
    struct dirty dirty[MAX_DIRTY];
    int ndirty;
    uint64_t next_frame;
    uint64_t chain;     /* running WAL checksum at next_frame - 1 */
    int commit_written; /* this transaction wrote (or started writing) its commit frame */
    uint32_t last_page; /* page modified most recently (spill policy) */
    uint8_t *buf, *fbuf;
    /* test hooks, read from the environment once at open (see kvlog.h) */
    char stop_at[32];    /* "": no stop point is live */
    int stop_fd, arm_fd;
    long stop_skip, stop_passed;
    int fail_publish;    /* KVLOG_FAIL_AT=publish */
    char err[512];
};

/* ---------------------------------------------------------------------------------------- */

static int fail(kvlog *db, int rc, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(db->err, sizeof db->err, fmt, ap);
    va_end(ap);
    return rc;
}

static int fail_tshm(kvlog *db, int rc, const char *what) {
    const char *m = tshm_errmsg();
    int kv = rc == TSHM_BUSY ? KV_BUSY : rc == TSHM_CORRUPT ? KV_CORRUPT
           : rc == TSHM_MISUSE ? KV_MISUSE : rc == TSHM_FULL ? KV_FULL : KV_ERROR;
    return fail(db, kv, "%s: %s (%s)", what, tshm_errstr(rc), m ? m : "");
}

const char *kv_errmsg(kvlog *db) { return db ? db->err : "no database"; }
tshm *kv_tshm(kvlog *db) { return db->h; }

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const uint8_t *b = p;
    for (size_t i = 0; i < n; i++) h = (h ^ b[i]) * 0x100000001b3ull;
    return h;
}
#define FNV0 0xcbf29ce484222325ull

static int pread_full(int fd, void *buf, size_t n, off_t off) {
    size_t got = 0;
    while (got < n) {
        ssize_t r = pread(fd, (char *)buf + got, n - got, off + (off_t)got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return -1;
        if (r == 0) break;
        got += (size_t)r;
    }
    memset((char *)buf + got, 0, n - got);
    return (int)(got == n);
}

static int pwrite_full(int fd, const void *buf, size_t n, off_t off) {
    size_t done = 0;
    while (done < n) {
        ssize_t r = pwrite(fd, (const char *)buf + done, n - done, off + (off_t)done);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) return -1;
        done += (size_t)r;
    }
    return 0;
}

/* Reads the test hooks' environment (see kvlog.h), once, at open. */
static void hooks_init(kvlog *db) {
    const char *at = getenv("KVLOG_STOP_AT"), *fd = getenv("KVLOG_STOP_FD");
    const char *skip = getenv("KVLOG_STOP_SKIP"), *arm = getenv("KVLOG_ARM_FD");
    const char *fail_at = getenv("KVLOG_FAIL_AT");
    if (at != NULL && fd != NULL) snprintf(db->stop_at, sizeof db->stop_at, "%s", at);
    db->stop_fd = fd != NULL ? atoi(fd) : -1;
    db->arm_fd = arm != NULL ? atoi(arm) : -1;
    db->stop_skip = skip != NULL ? atol(skip) : 0;
    db->fail_publish = fail_at != NULL && strcmp(fail_at, "publish") == 0;
}

/* A named stop point (see kvlog.h): tell the controller, then wait to be killed. */
static void stop_point(kvlog *db, const char *name) {
    if (db->stop_at[0] == 0 || strcmp(db->stop_at, name) != 0) return;
    /* KVLOG_STOP_SKIP=n: pass the point n times first */
    if (db->stop_passed++ < db->stop_skip) return;
    /* the controller arms the point by writing a byte to KVLOG_ARM_FD (if given) */
    if (db->arm_fd >= 0) {
        struct pollfd p = {.fd = db->arm_fd, .events = POLLIN};
        if (poll(&p, 1, 0) <= 0) return;
    }
    char c = 's';
    if (write(db->stop_fd, &c, 1) != 1) _exit(9);
    for (;;) pause();
}

static off_t frame_off(const kvlog *db, uint64_t frame, uint64_t base) {
    return WAL_HDR + (off_t)(frame - base) * (off_t)(FRAME_HDR + db->page_size);
}

/* A frame: this header, then the page. `prev` is the running checksum of the frame before it
 * (of the WAL header for the first frame), `cksum` the running checksum through this frame. */
struct frame_hdr {
    uint32_t page, commit, salt[2];
    uint64_t prev, cksum;
};
_Static_assert(sizeof(struct frame_hdr) == FRAME_HDR, "frame header layout");

/* The running checksum through a frame: the previous one continued over the frame's page
 * number, commit flag, salts and page. */
static uint64_t frame_sum(uint64_t prev, const struct frame_hdr *h, const uint8_t *data,
                          uint32_t page_size) {
    return fnv(fnv(prev, h, 16), data, page_size);
}

static uint64_t snap_sum(const tshm_snapshot *s) {
    return (uint64_t)s->checksum[0] | (uint64_t)s->checksum[1] << 32;
}

static void set_snap_sum(tshm_snapshot *s, uint64_t sum) {
    s->checksum[0] = (uint32_t)sum;
    s->checksum[1] = (uint32_t)(sum >> 32);
}

/* Reads frame `frame` of the WAL whose base and salts are in `s`; 1 valid on its own (its
 * salts, and its checksum as the continuation of the `prev` it records; whether `prev` is
 * really its predecessor's is for the caller to check), 0 not (restarted, never written, torn),
 * -1 I/O error. */
static int read_frame(kvlog *db, const tshm_snapshot *s, uint64_t frame, struct frame_hdr *fh,
                      uint8_t *data) {
    off_t off = frame_off(db, frame, s->engine[0]);
    int r = pread_full(db->walfd, db->fbuf, FRAME_HDR + db->page_size, off);
    if (r < 0) return -1;
    memcpy(fh, db->fbuf, sizeof *fh);
    memcpy(data, db->fbuf + FRAME_HDR, db->page_size);
    if (r == 0 || fh->salt[0] != s->salt[0] || fh->salt[1] != s->salt[1]) return 0;
    return frame_sum(fh->prev, fh, data, db->page_size) == fh->cksum;
}

/* Writes frame `frame` (the transaction's next one) as the continuation of the chain. */
static int write_frame(kvlog *db, uint64_t frame, uint32_t page, const uint8_t *data,
                       int commit) {
    struct frame_hdr fh = {.page = page, .commit = (uint32_t)commit,
                           .salt = {db->snap.salt[0], db->snap.salt[1]}, .prev = db->chain};
    fh.cksum = frame_sum(fh.prev, &fh, data, db->page_size);
    memcpy(db->fbuf, &fh, FRAME_HDR);
    memcpy(db->fbuf + FRAME_HDR, data, db->page_size);
    if (commit) db->commit_written = 1; /* even a partial write may leave it whole on disk */
    if (pwrite_full(db->walfd, db->fbuf, FRAME_HDR + db->page_size,
                    frame_off(db, frame, db->snap.engine[0])) != 0)
        return fail(db, KV_ERROR, "write WAL frame %llu: %s", (unsigned long long)frame,
                    strerror(errno));
    db->chain = fh.cksum;
    int rc = tshm_index_append(db->h, page, frame);
    if (rc != TSHM_OK) return fail_tshm(db, rc, "index append");
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Pages                                                                                      */

static int read_db_page(kvlog *db, uint32_t page, uint8_t *out) {
    if (pread_full(db->dbfd, out, db->page_size, (off_t)(page - 1) * db->page_size) < 0)
        return fail(db, KV_ERROR, "read page %u: %s", page, strerror(errno));
    return KV_OK;
}

/* Page `page` as of the transaction's snapshot. */
static int read_page(kvlog *db, uint32_t page, uint8_t *out) {
    for (int i = 0; i < db->ndirty; i++)
        if (db->dirty[i].page == page) {
            memcpy(out, db->dirty[i].data, db->page_size);
            return KV_OK;
        }
    uint64_t frame;
    int rc = tshm_index_find(db->h, page, db->snap.max_frame, &frame);
    if (rc == TSHM_NOTFOUND || (rc == TSHM_OK && frame <= db->snap.nbackfills))
        return read_db_page(db, page, out);
    if (rc != TSHM_OK) return fail_tshm(db, rc, "index lookup");
    struct frame_hdr fh;
    int v = read_frame(db, &db->snap, frame, &fh, out);
    if (v < 0) return fail(db, KV_ERROR, "read WAL: %s", strerror(errno));
    if (v == 1 && fh.page == page) return KV_OK;
    /* Not the frame we indexed: valid only if a WAL restart began since our snapshot (it
     * bumps checkpoint_seq first), which needs every frame up to it copied into the database
     * file already. */
    tshm_snapshot now;
    tshm_snapshot_get(db->h, &now);
    if (now.checkpoint_seq != db->snap.checkpoint_seq) return read_db_page(db, page, out);
    return fail(db, KV_CORRUPT, "WAL frame %llu does not hold page %u (valid %d, holds page %u, "
                "salt %08x, base %llu, max %llu, backfilled %llu)",
                (unsigned long long)frame, page, v, fh.page, fh.salt[0],
                (unsigned long long)db->snap.engine[0], (unsigned long long)db->snap.max_frame,
                (unsigned long long)db->snap.nbackfills);
}

static uint32_t bucket_of(const kvlog *db, const char *key, size_t klen) {
    return 2 + (uint32_t)(fnv(FNV0, key, klen) % db->buckets);
}

/* Record iteration over a bucket page: [u16 n][u16 used] then [u16 klen][u16 vlen][key][val]. */
static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static void wr16(uint8_t *p, uint16_t v) { memcpy(p, &v, 2); }

/* Validates a bucket page; returns 0 when sound. */
static int page_sound(const kvlog *db, uint32_t page, const uint8_t *p, char *why, size_t n) {
    uint16_t cnt = rd16(p), used = rd16(p + 2);
    if (cnt == 0 && used == 0) return 0;
    if (used < 4 || used > db->page_size) {
        snprintf(why, n, "page %u: used %u out of range", page, used);
        return 1;
    }
    size_t off = 4;
    for (uint16_t i = 0; i < cnt; i++) {
        if (off + 4 > used) { snprintf(why, n, "page %u: record %u truncated", page, i); return 1; }
        size_t kl = rd16(p + off), vl = rd16(p + off + 2);
        if (kl == 0 || kl > MAX_KEY || off + 4 + kl + vl > used) {
            snprintf(why, n, "page %u: record %u out of bounds", page, i);
            return 1;
        }
        if (bucket_of(db, (const char *)p + off + 4, kl) != page) {
            snprintf(why, n, "page %u: record %u in the wrong bucket", page, i);
            return 1;
        }
        off += 4 + kl + vl;
    }
    if (off != used) { snprintf(why, n, "page %u: used %u but records end at %zu", page, used, off); return 1; }
    return 0;
}

/* Offset of key's record in bucket page p, or 0. */
static size_t find_rec(const uint8_t *p, const char *key, size_t klen) {
    uint16_t cnt = rd16(p);
    size_t off = 4;
    for (uint16_t i = 0; i < cnt; i++) {
        size_t kl = rd16(p + off), vl = rd16(p + off + 2);
        if (kl == klen && memcmp(p + off + 4, key, klen) == 0) return off;
        off += 4 + kl + vl;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Transactions                                                                               */

int kv_begin_read(kvlog *db) {
    if (db->in_read || db->in_write) return fail(db, KV_MISUSE, "a transaction is open");
    int rc = tshm_reader_begin(db->h, &db->slot, &db->snap);
    if (rc != TSHM_OK) return fail_tshm(db, rc, "reader begin");
    db->in_read = 1;
    stop_point(db, KV_STOP_IN_READ);
    return KV_OK;
}

int kv_end_read(kvlog *db) {
    if (!db->in_read) return fail(db, KV_MISUSE, "no read transaction");
    db->in_read = 0;
    int rc = tshm_reader_end(db->h, db->slot);
    return rc == TSHM_OK ? KV_OK : fail_tshm(db, rc, "reader end");
}

static int restart_wal(kvlog *db, tshm_snapshot *s);

int kv_begin_write(kvlog *db, uint32_t timeout_ms) {
    if (db->in_read || db->in_write) return fail(db, KV_MISUSE, "a transaction is open");
    int rc = tshm_writer_acquire(db->h, timeout_ms);
    if (rc != TSHM_OK) return fail_tshm(db, rc, "writer acquire");
    /* the writer role keeps max_frame, its checksum, the salts and the base still until we
     * release it: every commit and WAL restart publishes them together, with the role held */
    tshm_snapshot_get(db->h, &db->snap);
    if (db->snap.checkpoint_seq & 1) { /* a WAL restart whose holder died midway */
        if ((rc = restart_wal(db, &db->snap)) != KV_OK) {
            tshm_writer_release(db->h);
            return rc;
        }
        tshm_snapshot_get(db->h, &db->snap);
    }
    db->next_frame = db->snap.max_frame + 1;
    db->chain = snap_sum(&db->snap);
    db->commit_written = 0;
    db->ndirty = 0;
    db->last_page = 0;
    db->in_write = 1;
    return KV_OK;
}

static void drop_dirty(kvlog *db) {
    for (int i = 0; i < db->ndirty; i++) free(db->dirty[i].data);
    db->ndirty = 0;
}

static int end_write(kvlog *db, int rc) {
    drop_dirty(db);
    db->in_write = 0;
    int r = tshm_writer_release(db->h);
    if (r != TSHM_OK && rc == KV_OK) rc = fail_tshm(db, r, "writer release");
    return rc;
}

/* Frames past max_frame without a commit frame after them are never recovered, and the next
 * writer's frames break their chain. A commit frame already written is different: nobody may
 * overwrite it before every process dies, and recovery would then find a whole, validly
 * chained transaction whose commit its writer reported as failed. So a rollback after the
 * commit frame was written cuts the WAL back to max_frame. */
int kv_rollback(kvlog *db) {
    if (!db->in_write) return fail(db, KV_MISUSE, "no write transaction");
    int rc = KV_OK;
    if (db->next_frame > db->snap.max_frame + 1) {
        int r = tshm_index_truncate(db->h, db->snap.max_frame);
        if (r != TSHM_OK) rc = fail_tshm(db, r, "index truncate");
    }
    if (db->commit_written) {
        off_t end = frame_off(db, db->snap.max_frame + 1, db->snap.engine[0]);
        if (ftruncate(db->walfd, end) != 0 || (db->durable && fdatasync(db->walfd) != 0))
            rc = fail(db, KV_ERROR, "cut the rolled-back commit from the WAL: %s", strerror(errno));
        db->commit_written = 0;
    }
    return end_write(db, rc);
}

/* Writes the frames of dirty pages other than `keep` that are not yet in the WAL. */
static int spill_except(kvlog *db, uint32_t keep) {
    for (int i = 0; i < db->ndirty; i++) {
        struct dirty *d = &db->dirty[i];
        if (d->page == keep || d->spilled) continue;
        int rc = write_frame(db, db->next_frame, d->page, d->data, 0);
        if (rc != KV_OK) return rc;
        db->next_frame++;
        d->spilled = 1;
        stop_point(db, KV_STOP_MID_WRITE);
    }
    return KV_OK;
}

int kv_commit(kvlog *db) {
    if (!db->in_write) return fail(db, KV_MISUSE, "no write transaction");
    /* every page whose latest content is not in a frame yet; the last one commits */
    int pending[MAX_DIRTY], n = 0;
    for (int i = 0; i < db->ndirty; i++)
        if (!db->dirty[i].spilled) pending[n++] = i;
    if (n == 0 && db->next_frame == db->snap.max_frame + 1) return end_write(db, KV_OK);
    if (n == 0) pending[n++] = db->ndirty - 1; /* re-log one page as the commit frame */
    for (int j = 0; j < n; j++) {
        struct dirty *d = &db->dirty[pending[j]];
        int rc = write_frame(db, db->next_frame, d->page, d->data, j == n - 1);
        if (rc != KV_OK) {
            kv_rollback(db);
            return rc;
        }
        db->next_frame++;
    }
    if (db->durable && fdatasync(db->walfd) != 0) {
        int rc = fail(db, KV_ERROR, "fdatasync WAL: %s", strerror(errno));
        kv_rollback(db);
        return rc;
    }
    stop_point(db, KV_STOP_UNPUBLISHED);
    uint32_t pages = db->snap.db_size;
    for (int i = 0; i < db->ndirty; i++)
        if (db->dirty[i].page > pages) pages = db->dirty[i].page;
    tshm_snapshot s = db->snap;
    s.max_frame = db->next_frame - 1;
    s.db_size = pages;
    set_snap_sum(&s, db->chain); /* with max_frame, in one publish */
    int rc = db->fail_publish ? fail(db, KV_BUSY, "publish: failed by KVLOG_FAIL_AT=publish")
                              : tshm_publish(db->h, &s, TSHM_SNAP_MAX_FRAME | TSHM_SNAP_DB_SIZE |
                                                            TSHM_SNAP_CHECKSUM);
    if (rc != TSHM_OK) {
        if (!db->fail_publish) rc = fail_tshm(db, rc, "publish");
        kv_rollback(db);
        return rc;
    }
    return end_write(db, KV_OK);
}

/* The writable copy of `page` in this transaction. */
static int dirty_page(kvlog *db, uint32_t page, uint8_t **out) {
    if (db->spill && db->last_page != 0 && db->last_page != page) {
        int rc = spill_except(db, page);
        if (rc != KV_OK) return rc;
    }
    db->last_page = page;
    for (int i = 0; i < db->ndirty; i++)
        if (db->dirty[i].page == page) {
            db->dirty[i].spilled = 0;
            *out = db->dirty[i].data;
            return KV_OK;
        }
    if (db->ndirty == MAX_DIRTY) return fail(db, KV_FULL, "transaction touches too many pages");
    uint8_t *data = malloc(db->page_size);
    if (data == NULL) return fail(db, KV_ERROR, "out of memory");
    int rc = read_page(db, page, data);
    if (rc != KV_OK) { free(data); return rc; }
    db->dirty[db->ndirty++] = (struct dirty){.page = page, .spilled = 0, .data = data};
    *out = data;
    return KV_OK;
}

static int check_key(kvlog *db, const char *key, size_t *klen) {
    if (key == NULL) return fail(db, KV_MISUSE, "key is NULL");
    *klen = strlen(key);
    if (*klen == 0 || *klen > MAX_KEY) return fail(db, KV_MISUSE, "key length must be 1..%d", MAX_KEY);
    return KV_OK;
}

int kv_get(kvlog *db, const char *key, void *val, size_t cap, size_t *len) {
    size_t klen;
    if (!db->in_read && !db->in_write) return fail(db, KV_MISUSE, "no transaction");
    int rc = check_key(db, key, &klen);
    if (rc != KV_OK) return rc;
    uint32_t page = bucket_of(db, key, klen);
    if ((rc = read_page(db, page, db->buf)) != KV_OK) return rc;
    if (page_sound(db, page, db->buf, db->err, sizeof db->err)) return KV_CORRUPT;
    size_t off = find_rec(db->buf, key, klen);
    if (off == 0) return fail(db, KV_NOTFOUND, "no key %s", key);
    size_t vl = rd16(db->buf + off + 2);
    memcpy(val, db->buf + off + 4 + klen, vl < cap ? vl : cap);
    if (len) *len = vl;
    return KV_OK;
}

/* Removes key's record from p (if present). */
static void remove_rec(uint8_t *p, const char *key, size_t klen) {
    size_t off = find_rec(p, key, klen);
    if (off == 0) return;
    uint16_t used = rd16(p + 2);
    size_t sz = 4 + klen + rd16(p + off + 2);
    memmove(p + off, p + off + sz, used - off - sz);
    memset(p + used - sz, 0, sz);
    wr16(p, (uint16_t)(rd16(p) - 1));
    wr16(p + 2, (uint16_t)(used - sz));
}

int kv_put(kvlog *db, const char *key, const void *val, size_t len) {
    size_t klen;
    if (!db->in_write) return fail(db, KV_MISUSE, "no write transaction");
    int rc = check_key(db, key, &klen);
    if (rc != KV_OK) return rc;
    if (len > db->page_size / 4) return fail(db, KV_MISUSE, "value too long");
    uint32_t page = bucket_of(db, key, klen);
    uint8_t *p;
    if ((rc = dirty_page(db, page, &p)) != KV_OK) return rc;
    if (page_sound(db, page, p, db->err, sizeof db->err)) return KV_CORRUPT;
    if (rd16(p + 2) == 0) wr16(p + 2, 4);
    size_t off = find_rec(p, key, klen);
    uint16_t used = rd16(p + 2);
    size_t old = off ? 4 + klen + rd16(p + off + 2) : 0;
    if (used - old + 4 + klen + len > db->page_size)
        return fail(db, KV_FULL, "bucket page %u is full", page);
    remove_rec(p, key, klen);
    used = rd16(p + 2);
    wr16(p + used, (uint16_t)klen);
    wr16(p + used + 2, (uint16_t)len);
    memcpy(p + used + 4, key, klen);
    memcpy(p + used + 4 + klen, val, len);
    wr16(p, (uint16_t)(rd16(p) + 1));
    wr16(p + 2, (uint16_t)(used + 4 + klen + len));
    return KV_OK;
}

int kv_del(kvlog *db, const char *key) {
    size_t klen;
    if (!db->in_write) return fail(db, KV_MISUSE, "no write transaction");
    int rc = check_key(db, key, &klen);
    if (rc != KV_OK) return rc;
    uint32_t page = bucket_of(db, key, klen);
    if ((rc = read_page(db, page, db->buf)) != KV_OK) return rc;
    if (find_rec(db->buf, key, klen) == 0) return fail(db, KV_NOTFOUND, "no key %s", key);
    uint8_t *p;
    if ((rc = dirty_page(db, page, &p)) != KV_OK) return rc;
    remove_rec(p, key, klen);
    return KV_OK;
}

int kv_scan(kvlog *db, kv_scan_fn cb, void *ctx) {
    if (!db->in_read && !db->in_write) return fail(db, KV_MISUSE, "no transaction");
    for (uint32_t page = 2; page < 2 + db->buckets; page++) {
        int rc = read_page(db, page, db->buf);
        if (rc != KV_OK) return rc;
        if (page_sound(db, page, db->buf, db->err, sizeof db->err)) return KV_CORRUPT;
        uint16_t cnt = rd16(db->buf);
        size_t off = 4;
        for (uint16_t i = 0; i < cnt; i++) {
            size_t kl = rd16(db->buf + off), vl = rd16(db->buf + off + 2);
            if (cb(ctx, (const char *)db->buf + off + 4, kl, db->buf + off + 4 + kl, vl)) return KV_OK;
            off += 4 + kl + vl;
        }
    }
    return KV_OK;
}

/* ---------------------------------------------------------------------------------------- */
/* Checkpoint and recovery                                                                    */

struct backfill {
    kvlog *db;
    const tshm_snapshot *s;
    uint64_t from; /* copy frames above this */
    uint64_t copied;
    int rc;
    uint8_t *page;
};

static int backfill_one(void *ctx, uint32_t page, uint64_t frame) {
    struct backfill *b = ctx;
    if (frame <= b->from) return 0;
    struct frame_hdr fh;
    int v = read_frame(b->db, b->s, frame, &fh, b->page);
    if (v != 1 || fh.page != page) {
        b->rc = fail(b->db, KV_CORRUPT, "checkpoint: WAL frame %llu (page %u) is not valid",
                     (unsigned long long)frame, page);
        return 1;
    }
    if (pwrite_full(b->db->dbfd, b->page, b->db->page_size,
                    (off_t)(page - 1) * b->db->page_size) != 0) {
        b->rc = fail(b->db, KV_ERROR, "checkpoint: write page %u: %s", page, strerror(errno));
        return 1;
    }
    b->copied++;
    return 0;
}

static void new_salts(uint32_t salt[2]) {
    if (getrandom(salt, 8, 0) != 8) {
        salt[0] = (uint32_t)getpid();
        salt[1] = (uint32_t)time(NULL);
    }
}

/* Writes the WAL header; *seed gets its checksum, which starts the frames' chain. */
static int write_wal_header(kvlog *db, const uint32_t salt[2], uint64_t base, uint64_t *seed) {
    uint8_t h[WAL_HDR] = {0};
    uint32_t magic = WAL_MAGIC;
    memcpy(h, &magic, 4);
    memcpy(h + 4, &db->page_size, 4);
    memcpy(h + 8, salt, 8);
    memcpy(h + 16, &base, 8);
    uint64_t sum = fnv(FNV0, h, 24);
    memcpy(h + 24, &sum, 8);
    if (pwrite_full(db->walfd, h, WAL_HDR, 0) != 0)
        return fail(db, KV_ERROR, "write WAL header: %s", strerror(errno));
    *seed = sum;
    return KV_OK;
}

/* One backfill pass, with the checkpointer role: copies each page's newest frame up to
 * min(max_frame, oldest pinned frame) and publishes nbackfills. */
static int backfill(kvlog *db, kv_ckpt *out) {
    tshm_snapshot s;
    uint64_t pinned;
    tshm_snapshot_get(db->h, &s);
    int rc = tshm_min_reader_frame(db->h, &pinned);
    if (rc != TSHM_OK) return fail_tshm(db, rc, "min reader frame");
    uint64_t mx = s.max_frame < pinned ? s.max_frame : pinned;
    if (mx > s.nbackfills) {
        struct backfill b = {.db = db, .s = &s, .from = s.nbackfills, .page = db->buf};
        rc = tshm_index_foreach(db->h, mx, backfill_one, &b);
        if (rc != TSHM_OK) return fail_tshm(db, rc, "index walk");
        if (b.rc != KV_OK) return b.rc;
        if (db->durable && fdatasync(db->dbfd) != 0)
            return fail(db, KV_ERROR, "fdatasync database: %s", strerror(errno));
        stop_point(db, KV_STOP_MID_CKPT);
        tshm_snapshot p = s;
        p.nbackfills = mx;
        if ((rc = tshm_publish(db->h, &p, TSHM_SNAP_NBACKFILLS)) != TSHM_OK)
            return fail_tshm(db, rc, "publish nbackfills");
        if (out) out->pages_copied += b.copied;
        s.nbackfills = mx;
    }
    if (out) out->backfilled_to = s.nbackfills;
    return KV_OK;
}

/* Starts a new WAL after max_frame, with the writer role, once every frame is copied into the
 * database file and no reader reads from the WAL (a reader pinned at max_frame reads only
 * copied frames). checkpoint_seq is odd from the announcement until the new salts and base are
 * published: a writer that finds it odd knows the restarter died midway (the restart holds the
 * writer role) and finishes the restart before it writes a frame, for the WAL header on disk
 * may already be the new one. Updates *s. */
static int restart_wal(kvlog *db, tshm_snapshot *s) {
    int rc;
    /* First announce the restart: a reader whose snapshot predates it and whose frame is gone
     * from now on reads the database file, which holds every frame. */
    if ((s->checkpoint_seq & 1) == 0) {
        s->checkpoint_seq++;
        if ((rc = tshm_publish(db->h, s, TSHM_SNAP_CHECKPOINT_SEQ)) != TSHM_OK)
            return fail_tshm(db, rc, "publish restart");
    }
    uint32_t salt[2];
    uint64_t seed;
    new_salts(salt);
    if ((rc = write_wal_header(db, salt, s->max_frame + 1, &seed)) != KV_OK) return rc;
    stop_point(db, KV_STOP_MID_RESTART);
    if (ftruncate(db->walfd, WAL_HDR) != 0) return fail(db, KV_ERROR, "truncate WAL: %s", strerror(errno));
    if ((rc = tshm_index_reset(db->h)) != TSHM_OK) return fail_tshm(db, rc, "index reset");
    s->salt[0] = salt[0];
    s->salt[1] = salt[1];
    s->engine[0] = s->max_frame + 1;
    set_snap_sum(s, seed); /* the next writer's first frame continues the new header */
    s->checkpoint_seq++;
    if ((rc = tshm_publish(db->h, s, TSHM_SNAP_SALT | TSHM_SNAP_ENGINE0 | TSHM_SNAP_CHECKSUM |
                                         TSHM_SNAP_CHECKPOINT_SEQ)) != TSHM_OK)
        return fail_tshm(db, rc, "publish restart");
    return KV_OK;
}

/* With the checkpointer and writer roles: restarts the WAL if every frame is copied and no
 * reader still reads from it, or if a restart was cut short. Sets *done when the WAL is empty
 * afterwards. */
static int try_restart(kvlog *db, kv_ckpt *out, int *done) {
    tshm_snapshot s;
    uint64_t pinned;
    tshm_snapshot_get(db->h, &s);
    int rc = tshm_min_reader_frame(db->h, &pinned);
    if (rc != TSHM_OK) return fail_tshm(db, rc, "min reader frame");
    int unfinished = s.checkpoint_seq & 1;
    *done = s.max_frame < s.engine[0] && !unfinished;
    if (!unfinished && (*done || s.nbackfills != s.max_frame || pinned < s.max_frame)) return KV_OK;
    if ((rc = restart_wal(db, &s)) != KV_OK) return rc;
    if (out) out->restarted = 1;
    *done = 1;
    return KV_OK;
}

/* With the checkpointer role. A restart needs the writer role too: taken only if free, unless
 * the WAL holds KV_RESTART_FRAMES or more; then writers are held off (up to ~100 ms) while
 * readers move on to the newest snapshot, as SQLite's RESTART checkpoint does. */
#define KV_RESTART_FRAMES 4096
static int checkpoint_locked(kvlog *db, int restart, kv_ckpt *out) {
    int rc = backfill(db, out), done = 0;
    if (rc != KV_OK || !restart) return rc;
    tshm_snapshot s;
    tshm_snapshot_get(db->h, &s);
    if (s.max_frame < s.engine[0]) return KV_OK;
    int insist = s.max_frame + 1 - s.engine[0] >= KV_RESTART_FRAMES;
    if (tshm_writer_acquire(db->h, insist ? 100 : 0) != TSHM_OK) return KV_OK;
    for (int i = 0; rc == KV_OK && !done && i < (insist ? 200 : 1); i++) {
        if (i > 0) {
            struct timespec pause_ = {0, 500 * 1000}; /* readers finish their transactions */
            nanosleep(&pause_, NULL);
        }
        if ((rc = backfill(db, out)) == KV_OK) rc = try_restart(db, out, &done);
    }
    tshm_writer_release(db->h);
    return rc;
}

int kv_checkpoint(kvlog *db, uint32_t timeout_ms, int restart, kv_ckpt *out) {
    if (db->in_read || db->in_write) return fail(db, KV_MISUSE, "a transaction is open");
    if (out) memset(out, 0, sizeof *out);
    int rc = tshm_checkpointer_acquire(db->h, timeout_ms);
    if (rc != TSHM_OK) return fail_tshm(db, rc, "checkpointer acquire");
    rc = checkpoint_locked(db, restart, out);
    tshm_checkpointer_release(db->h);
    return rc;
}

/* Rebuilds the index from the WAL: with the writer and checkpointer roles, when the snapshot's
 * recovery epoch is not the sidecar's current one (nobody recovered since it was initialized).
 * Frames count from the header's base for as long as each one is valid and continues the chain
 * from the header's checksum; the committed state ends at the last commit frame among them. */
static int recover(kvlog *db, uint64_t epoch) {
    uint8_t h[WAL_HDR];
    int r = pread_full(db->walfd, h, WAL_HDR, 0);
    if (r < 0) return fail(db, KV_ERROR, "read WAL header: %s", strerror(errno));
    uint32_t magic, psz;
    uint64_t base, sum;
    tshm_snapshot s;
    memset(&s, 0, sizeof s);
    memcpy(&magic, h, 4);
    memcpy(&psz, h + 4, 4);
    memcpy(s.salt, h + 8, 8);
    memcpy(&base, h + 16, 8);
    memcpy(&sum, h + 24, 8);
    int rc = tshm_index_reset(db->h);
    if (rc != TSHM_OK) return fail_tshm(db, rc, "index reset");
    struct stat st;
    if (r == 1 && magic == WAL_MAGIC_1 && fstat(db->walfd, &st) == 0 && st.st_size > WAL_HDR)
        return fail(db, KV_CORRUPT, "the WAL holds frames of kvlog format 1: checkpoint it with the "
                    "kvlog that wrote it");
    uint64_t last = 0;
    if (r == 1 && magic == WAL_MAGIC && psz == db->page_size && sum == fnv(FNV0, h, 24) && base >= 1) {
        s.engine[0] = base;
        uint64_t committed = base - 1, chain = sum, committed_sum = sum;
        /* index every frame of the chain, then drop what follows the last commit */
        struct frame_hdr fh;
        for (uint64_t f = base;; f++) {
            int v = read_frame(db, &s, f, &fh, db->buf);
            if (v < 0) return fail(db, KV_ERROR, "read WAL: %s", strerror(errno));
            if (v == 0 || fh.prev != chain || fh.page < 1) break;
            if ((rc = tshm_index_append(db->h, fh.page, f)) != TSHM_OK)
                return fail_tshm(db, rc, "index rebuild");
            chain = fh.cksum;
            if (fh.commit) {
                committed = f;
                committed_sum = chain;
            }
            last = f;
        }
        if (last > committed) {
            tshm_snapshot c = s;
            c.max_frame = committed;
            tshm_publish(db->h, &c, TSHM_SNAP_MAX_FRAME);
            if ((rc = tshm_index_truncate(db->h, committed)) != TSHM_OK)
                return fail_tshm(db, rc, "index trim");
        }
        s.max_frame = committed;
        set_snap_sum(&s, committed_sum);
        s.nbackfills = base - 1; /* unknown after a crash: copying again is harmless */
    } else {
        uint64_t seed;
        new_salts(s.salt);
        s.engine[0] = 1;
        if ((rc = write_wal_header(db, s.salt, 1, &seed)) != KV_OK) return rc;
        if (ftruncate(db->walfd, WAL_HDR) != 0) return fail(db, KV_ERROR, "truncate WAL: %s", strerror(errno));
        set_snap_sum(&s, seed);
    }
    fstat(db->dbfd, &st);
    s.db_size = (uint32_t)(st.st_size / db->page_size);
    s.page_size = db->page_size;
    s.engine[1] = epoch;
    rc = tshm_publish(db->h, &s, TSHM_SNAP_ALL);
    return rc == TSHM_OK ? KV_OK : fail_tshm(db, rc, "publish recovered state");
}

static int ensure_recovered(kvlog *db) {
    tshm_info info;
    tshm_snapshot s;
    tshm_info_get(db->h, &info);
    tshm_snapshot_get(db->h, &s);
    if (s.engine[1] == info.init_epoch) return KV_OK;
    int rc = tshm_writer_acquire(db->h, 60000);
    if (rc != TSHM_OK) return fail_tshm(db, rc, "writer acquire for recovery");
    if ((rc = tshm_checkpointer_acquire(db->h, 60000)) != TSHM_OK) {
        tshm_writer_release(db->h);
        return fail_tshm(db, rc, "checkpointer acquire for recovery");
    }
    tshm_snapshot_get(db->h, &s);
    rc = s.engine[1] == info.init_epoch ? KV_OK : recover(db, info.init_epoch);
    tshm_checkpointer_release(db->h);
    tshm_writer_release(db->h);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */
/* Open and close                                                                             */

static void last_close(tshm *h, void *ctx) {
    (void)h;
    kvlog *db = ctx;
    kv_ckpt c;
    /* alone: nothing can be busy, so every frame is copied and the WAL restarts */
    if (kv_checkpoint(db, 0, 1, &c) != KV_OK)
        fprintf(stderr, "kvlog: final checkpoint failed: %s\n", db->err);
}

/* Creates the database file's header page (with the writer role, so only one creator). */
static int create_db(kvlog *db, const kv_config *cfg) {
    int rc = tshm_writer_acquire(db->h, 60000);
    if (rc != TSHM_OK) return fail_tshm(db, rc, "writer acquire to create");
    struct stat st;
    rc = KV_OK;
    if (fstat(db->dbfd, &st) == 0 && st.st_size == 0) {
        uint32_t ps = cfg && cfg->page_size ? cfg->page_size : 4096;
        uint32_t nb = cfg && cfg->buckets ? cfg->buckets : 128;
        if (ps < 1024 || ps > 65536 || (ps & (ps - 1)) || nb < 1 || nb > 1000000)
            rc = fail(db, KV_MISUSE, "page size must be a power of two in 1024..65536");
        uint8_t *p = calloc(1, ps);
        if (rc == KV_OK && p != NULL) {
            memcpy(p, DB_MAGIC, 8);
            memcpy(p + 8, &ps, 4);
            memcpy(p + 12, &nb, 4);
            if (pwrite_full(db->dbfd, p, ps, 0) != 0 || ftruncate(db->dbfd, (off_t)ps * (1 + nb)) != 0 ||
                fsync(db->dbfd) != 0)
                rc = fail(db, KV_ERROR, "create database: %s", strerror(errno));
        }
        free(p);
    }
    tshm_writer_release(db->h);
    return rc;
}

int kv_open(const char *path, const kv_config *cfg, kvlog **out) {
    kvlog *db = calloc(1, sizeof *db);
    if (db == NULL) return KV_ERROR;
    db->dbfd = db->walfd = -1;
    hooks_init(db);
    int rc = KV_OK;
    char wal[4096];
    snprintf(wal, sizeof wal, "%s-wal", path);
    db->dbfd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    db->walfd = open(wal, O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    if (db->dbfd < 0 || db->walfd < 0) {
        rc = fail(db, KV_ERROR, "open %s: %s", path, strerror(errno));
        goto out;
    }
    tshm_options o;
    tshm_options_init(&o);
    o.on_last_close = last_close;
    o.ctx = db;
    int t = tshm_open(path, &o, &db->h);
    if (t != TSHM_OK) { rc = fail_tshm(db, t, "tshm_open"); goto out; }
    struct stat st;
    if (fstat(db->dbfd, &st) == 0 && st.st_size == 0 && (rc = create_db(db, cfg)) != KV_OK) goto out;
    uint8_t hdr[16];
    if (pread_full(db->dbfd, hdr, 16, 0) != 1 || memcmp(hdr, DB_MAGIC, 8) != 0) {
        rc = fail(db, KV_CORRUPT, "%s is not a kvlog database", path);
        goto out;
    }
    memcpy(&db->page_size, hdr + 8, 4);
    memcpy(&db->buckets, hdr + 12, 4);
    db->durable = cfg ? cfg->durable : 0;
    db->spill = cfg ? cfg->spill : 0;
    db->buf = malloc(db->page_size);
    db->fbuf = malloc(FRAME_HDR + db->page_size);
    if (db->buf == NULL || db->fbuf == NULL) { rc = fail(db, KV_ERROR, "out of memory"); goto out; }
    if ((rc = ensure_recovered(db)) != KV_OK) goto out;
    *out = db;
    return KV_OK;
out:
    fprintf(stderr, "kvlog: %s\n", db->err);
    kv_close(db);
    return rc;
}

int kv_close(kvlog *db) {
    if (db == NULL) return KV_OK;
    if (db->in_write) kv_rollback(db);
    if (db->in_read) kv_end_read(db);
    int rc = KV_OK;
    if (db->h != NULL && tshm_close(db->h, NULL) != TSHM_OK) rc = KV_ERROR;
    if (db->dbfd >= 0) close(db->dbfd);
    if (db->walfd >= 0) close(db->walfd);
    free(db->buf);
    free(db->fbuf);
    free(db);
    return rc;
}

/* ---------------------------------------------------------------------------------------- */

int kv_check(kvlog *db, char *why, size_t n) {
    int own = !db->in_read && !db->in_write;
    if (own && kv_begin_read(db) != KV_OK) { snprintf(why, n, "%s", db->err); return KV_ERROR; }
    int rc = KV_OK;
    for (uint32_t page = 2; page < 2 + db->buckets && rc == KV_OK; page++) {
        if ((rc = read_page(db, page, db->buf)) != KV_OK) snprintf(why, n, "%s", db->err);
        else if (page_sound(db, page, db->buf, why, n)) rc = KV_CORRUPT;
    }
    if (own) kv_end_read(db);
    return rc;
}

static int count_key(void *ctx, const char *k, size_t kl, const void *v, size_t vl) {
    (void)k; (void)kl; (void)v; (void)vl;
    (*(uint64_t *)ctx)++;
    return 0;
}

int kv_stats_get(kvlog *db, kv_stats *out) {
    memset(out, 0, sizeof *out);
    int own = !db->in_read && !db->in_write;
    if (own && kv_begin_read(db) != KV_OK) return KV_ERROR;
    int rc = kv_scan(db, count_key, &out->keys);
    tshm_index_stats ix;
    tshm_index_stats_get(db->h, &ix);
    out->max_frame = db->snap.max_frame;
    out->nbackfills = db->snap.nbackfills;
    out->wal_base = db->snap.engine[0];
    out->wal_frames = db->snap.max_frame + 1 - db->snap.engine[0];
    out->index_entries = ix.entries;
    out->index_dead = ix.dead;
    out->page_size = db->page_size;
    out->buckets = db->buckets;
    out->db_pages = db->snap.db_size;
    out->readers_pinned = kv_readers_pinned(db);
    if (own) kv_end_read(db);
    return rc;
}

uint32_t kv_readers_pinned(kvlog *db) {
    tshm_info info;
    uint32_t n = 0;
    if (tshm_info_get(db->h, &info) != TSHM_OK) return 0;
    for (uint32_t i = 0; i < info.reader_slots; i++) {
        tshm_owner_info ow;
        if (tshm_owner(db->h, TSHM_ROLE_READER0 + i, &ow) == TSHM_OK && ow.alive) n++;
    }
    return n;
}
