/*
 * bank.c — the bank workload: N accounts with a constant total.
 *
 *   writer        moves a random amount between two random accounts per transaction (three
 *                 pages: both accounts and the writer's own "w<id>" record of its last
 *                 transaction id). Before committing it logs "I id txid from to amount", after
 *                 committing "A id txid": every acknowledged transfer is in its log.
 *   reader        sums every balance at one snapshot; the sum must be N * 1000.
 *   checkpointer  checkpoints (and restarts the WAL when it can) in a loop.
 *
 * Each role runs until SIGTERM, or for a given number of transactions. With KVLOG_DURABLE=1
 * every role opens the database durable (fdatasync at commit and checkpoint).
 */
#define _GNU_SOURCE
#include "bank.h"
#include "kvlog.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static volatile sig_atomic_t stopping;
static void on_term(int sig) { (void)sig; stopping = 1; }

static struct bank_slot local_slot;

/* This process's counters: the shared slot when KVLOG_STATS is set. */
static struct bank_slot *my_slot(uint64_t role) {
    struct bank_slot *s = &local_slot;
    const char *path = getenv("KVLOG_STATS"), *slot = getenv("KVLOG_SLOT");
    if (path && slot) {
        int fd = open(path, O_RDWR | O_CLOEXEC);
        void *m = fd < 0 ? MAP_FAILED
                         : mmap(NULL, sizeof(struct bank_slot) * BANK_SLOTS, PROT_READ | PROT_WRITE,
                                MAP_SHARED, fd, 0);
        if (fd >= 0) close(fd);
        if (m != MAP_FAILED) s = (struct bank_slot *)m + atoi(slot) % BANK_SLOTS;
    }
    __atomic_store_n(&s->pid, (uint64_t)getpid(), __ATOMIC_RELAXED);
    __atomic_store_n(&s->role, role, __ATOMIC_RELAXED);
    return s;
}
#define BUMP(field, n) __atomic_add_fetch(&(field), (uint64_t)(n), __ATOMIC_RELAXED)

/* The configuration every role opens with: KVLOG_DURABLE=1 makes commits and checkpoints sync. */
static kv_config role_config(int spill) {
    const char *d = getenv("KVLOG_DURABLE");
    kv_config c = {.spill = spill, .durable = d != NULL && strcmp(d, "1") == 0};
    return c;
}

static uint64_t rnd(uint64_t *s) {
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

static int get_i64(kvlog *db, const char *key, int64_t *v) {
    size_t n;
    int rc = kv_get(db, key, v, sizeof *v, &n);
    if (rc == KV_OK && n != sizeof *v) return KV_CORRUPT;
    return rc;
}

static int put_i64(kvlog *db, const char *key, int64_t v) { return kv_put(db, key, &v, sizeof v); }

static int accounts_of(kvlog *db, uint32_t *n) {
    int64_t v = 0;
    int rc = kv_begin_read(db);
    if (rc != KV_OK) return rc;
    rc = get_i64(db, "n", &v);
    kv_end_read(db);
    *n = (uint32_t)v;
    return rc;
}

int bank_init(const char *path, uint32_t accounts) {
    kvlog *db;
    if (kv_open(path, NULL, &db) != KV_OK) return 1;
    int rc = KV_OK;
    for (uint32_t i = 0; i < accounts && rc == KV_OK; i += 200) {
        if ((rc = kv_begin_write(db, 10000)) != KV_OK) break;
        for (uint32_t j = i; j < i + 200 && j < accounts && rc == KV_OK; j++) {
            char key[32];
            snprintf(key, sizeof key, "a%06u", j);
            rc = put_i64(db, key, BANK_START);
        }
        if (rc == KV_OK && i + 200 >= accounts) rc = put_i64(db, "n", accounts);
        rc = rc == KV_OK ? kv_commit(db) : (kv_rollback(db), rc);
    }
    if (rc != KV_OK) fprintf(stderr, "bank init: %s\n", kv_errmsg(db));
    kv_close(db);
    return rc != KV_OK;
}

static void logf_line(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void logf_line(int fd, const char *fmt, ...) {
    char line[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof line, fmt, ap);
    va_end(ap);
    if (write(fd, line, (size_t)n) != n) _exit(7);
}

/* One writer: `txns` transfers (0: until SIGTERM). */
static int writer(const char *path, int id, const char *log, uint64_t txns) {
    struct bank_slot *st = my_slot(ROLE_WRITER);
    kv_config cfg = role_config(1);
    kvlog *db;
    if (kv_open(path, &cfg, &db) != KV_OK) return 1;
    uint32_t n;
    if (accounts_of(db, &n) != KV_OK || n < 2) return fprintf(stderr, "writer: no accounts\n"), 1;
    int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd < 0) return perror(log), 1;
    char wkey[16];
    snprintf(wkey, sizeof wkey, "w%02d", id);
    uint64_t seed = ((uint64_t)getpid() << 16) ^ (uint64_t)id ^ (uint64_t)time(NULL), done = 0;
    int64_t txid = 0;
    /* resume after the last committed transaction id */
    if (kv_begin_read(db) == KV_OK) {
        if (get_i64(db, wkey, &txid) != KV_OK) txid = 0;
        kv_end_read(db);
    }
    int rc = KV_OK;
    while (!stopping && (txns == 0 || done < txns)) {
        rc = kv_begin_write(db, 0);
        if (rc == KV_BUSY) { /* queue: woken when the holder releases */
            BUMP(st->waits, 1);
            rc = kv_begin_write(db, 2000);
        }
        if (rc == KV_BUSY) { /* nobody holds the role that long: worth a word to whoever watches */
            fprintf(stderr, "writer %d: writer role still busy after 2000 ms\n", id);
            continue;
        }
        if (rc != KV_OK) break;
        uint32_t from = (uint32_t)(rnd(&seed) % n), to = (uint32_t)(rnd(&seed) % (n - 1));
        if (to >= from) to++;
        int64_t amt = 1 + (int64_t)(rnd(&seed) % 100), a, b;
        char ka[16], kb[16];
        snprintf(ka, sizeof ka, "a%06u", from);
        snprintf(kb, sizeof kb, "a%06u", to);
        if ((rc = get_i64(db, ka, &a)) != KV_OK || (rc = get_i64(db, kb, &b)) != KV_OK) break;
        if (a < amt) { kv_rollback(db); BUMP(st->aborts, 1); done++; continue; }
        txid++;
        logf_line(fd, "I %d %" PRId64 " %u %u %" PRId64 "\n", id, txid, from, to, amt);
        if ((rc = put_i64(db, ka, a - amt)) != KV_OK || (rc = put_i64(db, kb, b + amt)) != KV_OK ||
            (rc = put_i64(db, wkey, txid)) != KV_OK)
            break;
        if (rnd(&seed) % 20 == 0) { /* change of mind after frames were written: rollback */
            if ((rc = kv_rollback(db)) != KV_OK) break;
            BUMP(st->aborts, 1);
            done++;
            continue;
        }
        if ((rc = kv_commit(db)) != KV_OK) break;
        logf_line(fd, "A %d %" PRId64 "\n", id, txid);
        BUMP(st->commits, 1);
        done++;
    }
    if (rc != KV_OK) fprintf(stderr, "writer %d: %s\n", id, kv_errmsg(db));
    close(fd);
    kv_close(db);
    return rc != KV_OK;
}

struct sum { int64_t total; uint32_t accounts; };

static int add_balance(void *ctx, const char *k, size_t kl, const void *v, size_t vl) {
    struct sum *s = ctx;
    if (kl == 7 && k[0] == 'a' && vl == 8) {
        int64_t b;
        memcpy(&b, v, 8);
        s->total += b;
        s->accounts++;
    }
    return 0;
}

static int reader(const char *path, uint64_t reads) {
    struct bank_slot *st = my_slot(ROLE_READER);
    kv_config cfg = role_config(0);
    kvlog *db;
    if (kv_open(path, &cfg, &db) != KV_OK) return 1;
    uint32_t n;
    if (accounts_of(db, &n) != KV_OK) return 1;
    uint64_t done = 0;
    int rc = KV_OK;
    while (!stopping && (reads == 0 || done < reads)) {
        rc = kv_begin_read(db);
        if (rc == KV_BUSY) { BUMP(st->waits, 1); continue; }
        if (rc != KV_OK) break;
        struct sum s = {0, 0};
        rc = kv_scan(db, add_balance, &s);
        kv_end_read(db);
        if (rc != KV_OK) break;
        if (s.total != (int64_t)n * BANK_START || s.accounts != n) {
            BUMP(st->bad, 1);
            fprintf(stderr, "reader: snapshot sums to %" PRId64 " over %u accounts\n", s.total, s.accounts);
        }
        BUMP(st->reads, 1);
        done++;
    }
    if (rc != KV_OK) fprintf(stderr, "reader: %s\n", kv_errmsg(db));
    kv_close(db);
    return rc != KV_OK || st->bad != 0;
}

static int checkpointer(const char *path, uint64_t rounds) {
    struct bank_slot *st = my_slot(ROLE_CHECKPOINTER);
    kv_config cfg = role_config(0);
    kvlog *db;
    if (kv_open(path, &cfg, &db) != KV_OK) return 1;
    uint64_t done = 0;
    int rc = KV_OK;
    while (!stopping && (rounds == 0 || done < rounds)) {
        kv_ckpt c;
        rc = kv_checkpoint(db, 500, 1, &c);
        if (rc == KV_BUSY) { BUMP(st->waits, 1); rc = KV_OK; continue; }
        if (rc != KV_OK) break;
        BUMP(st->ckpts, 1);
        BUMP(st->copied, c.pages_copied);
        BUMP(st->restarts, c.restarted);
        done++;
        struct timespec pace = {0, 20 * 1000 * 1000}; /* pacing, not synchronization */
        nanosleep(&pace, NULL);
    }
    if (rc != KV_OK) fprintf(stderr, "checkpointer: %s\n", kv_errmsg(db));
    kv_close(db);
    return rc != KV_OK;
}

/* ---------------------------------------------------------------------------------------- */

struct intent { int64_t txid; uint32_t from, to; int64_t amt; };

int bank_verify(const char *path, int nlogs, char **logs, struct bank_verdict *v) {
    memset(v, 0, sizeof *v);
    kvlog *db;
    if (kv_open(path, NULL, &db) != KV_OK) return snprintf(v->why, sizeof v->why, "cannot open"), 1;
    uint32_t n;
    if (accounts_of(db, &n) != KV_OK) return kv_close(db), snprintf(v->why, sizeof v->why, "no accounts"), 1;
    int64_t *want = malloc(sizeof *want * n), *have = malloc(sizeof *have * n);
    for (uint32_t i = 0; i < n; i++) want[i] = BANK_START;
    int bad = 0;
    kv_begin_read(db);
    for (uint32_t i = 0; i < n; i++) {
        char k[16];
        snprintf(k, sizeof k, "a%06u", i);
        if (get_i64(db, k, &have[i]) != KV_OK) have[i] = INT64_MIN;
        v->total += (uint64_t)have[i];
    }
    v->accounts = n;
    v->expected_total = (uint64_t)n * BANK_START;
    for (int l = 0; l < nlogs && !bad; l++) {
        FILE *f = fopen(logs[l], "r");
        if (f == NULL) { snprintf(v->why, sizeof v->why, "cannot read %s", logs[l]); bad = 1; break; }
        size_t cap = 1024, cnt = 0;
        struct intent *in = malloc(cap * sizeof *in);
        int id = -1;
        int64_t last_acked = 0;
        char line[128];
        while (fgets(line, sizeof line, f)) {
            struct intent t;
            int wid;
            if (sscanf(line, "I %d %" SCNd64 " %u %u %" SCNd64, &wid, &t.txid, &t.from, &t.to, &t.amt) == 5) {
                if (cnt == cap) in = realloc(in, (cap *= 2) * sizeof *in);
                in[cnt++] = t;
                id = wid;
            } else if (sscanf(line, "A %d %" SCNd64, &wid, &t.txid) == 2) {
                /* the acknowledged intent is the newest one with this id */
                size_t k = cnt;
                while (k > 0 && in[k - 1].txid != t.txid) k--;
                if (k == 0) { snprintf(v->why, sizeof v->why, "ack without intent in %s", logs[l]); bad = 1; break; }
                want[in[k - 1].from] -= in[k - 1].amt;
                want[in[k - 1].to] += in[k - 1].amt;
                last_acked = t.txid;
                v->acked++;
            }
        }
        fclose(f);
        if (!bad && id >= 0) {
            char wkey[16];
            int64_t committed = 0;
            snprintf(wkey, sizeof wkey, "w%02d", id);
            if (get_i64(db, wkey, &committed) != KV_OK) committed = 0;
            if (committed < last_acked) {
                v->lost += (uint64_t)(last_acked - committed);
                snprintf(v->why, sizeof v->why, "writer %d: acknowledged %" PRId64 " but the database has %" PRId64,
                         id, last_acked, committed);
                bad = 1;
            } else if (committed > last_acked) {
                /* committed, killed before its acknowledgement: the one in flight */
                size_t k = cnt;
                while (k > 0 && in[k - 1].txid != committed) k--;
                if (k == 0) { snprintf(v->why, sizeof v->why, "writer %d: unknown transaction %" PRId64, id, committed); bad = 1; }
                else {
                    want[in[k - 1].from] -= in[k - 1].amt;
                    want[in[k - 1].to] += in[k - 1].amt;
                    v->in_flight++;
                }
            }
        }
        free(in);
    }
    kv_end_read(db);
    v->balances_match = !bad;
    for (uint32_t i = 0; i < n && !bad; i++)
        if (want[i] != have[i]) {
            snprintf(v->why, sizeof v->why, "account %u holds %" PRId64 ", the logs say %" PRId64, i, have[i], want[i]);
            v->balances_match = 0;
            bad = 1;
        }
    char why[512] = "";
    v->integrity_ok = kv_check(db, why, sizeof why) == KV_OK;
    if (!v->integrity_ok && !bad) snprintf(v->why, sizeof v->why, "integrity: %s", why);
    free(want);
    free(have);
    kv_close(db);
    bad |= !v->integrity_ok || v->total != v->expected_total || v->in_flight > 1;
    return bad;
}

int bank_main(int argc, char **argv) {
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_term;
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGINT, &sa, NULL);
    if (argc >= 3 && strcmp(argv[0], "init") == 0) return bank_init(argv[1], (uint32_t)atoi(argv[2]));
    if (argc >= 4 && strcmp(argv[0], "writer") == 0)
        return writer(argv[1], atoi(argv[2]), argv[3], argc > 4 ? strtoull(argv[4], NULL, 10) : 0);
    if (argc >= 2 && strcmp(argv[0], "reader") == 0)
        return reader(argv[1], argc > 2 ? strtoull(argv[2], NULL, 10) : 0);
    if (argc >= 2 && strcmp(argv[0], "checkpointer") == 0)
        return checkpointer(argv[1], argc > 2 ? strtoull(argv[2], NULL, 10) : 0);
    if (argc >= 2 && strcmp(argv[0], "verify") == 0) {
        struct bank_verdict v;
        int bad = bank_verify(argv[1], argc - 2, argv + 2, &v);
        printf("acknowledged %" PRIu64 ", in flight %" PRIu64 ", lost %" PRIu64 ", total %" PRIu64
               " of %" PRIu64 ", balances %s, integrity %s%s%s\n",
               v.acked, v.in_flight, v.lost, v.total, v.expected_total, v.balances_match ? "match" : "DIFFER",
               v.integrity_ok ? "ok" : "BAD", bad ? ": " : "", bad ? v.why : "");
        return bad;
    }
    fprintf(stderr, "usage: kvlog bank init DB N | writer DB ID LOG [TXNS] | reader DB [READS] |"
                    " checkpointer DB [ROUNDS] | verify DB LOG...\n");
    return 2;
}
