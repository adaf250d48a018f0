/*
 * kvlog — command-line tool for the example engine.
 *
 *   kvlog put DB KEY VALUE [KEY VALUE]...   one transaction setting every pair
 *   kvlog get DB KEY              kvlog del DB KEY
 *   kvlog scan DB [PREFIX]        kvlog checkpoint DB       kvlog stats DB
 *   kvlog check DB
 *   kvlog bank init DB N          N accounts of 1000 each
 *   kvlog bank writer|reader|checkpointer DB ...   one role of the bank workload (see bank.c)
 *   kvlog bank verify DB LOG...   replay the writers' logs against the database
 *   kvlog demo [SECONDS] [DIR]    the multi-process demonstration (see demo.c)
 */
#include "bank.h"
#include "kvlog.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int usage(void) {
    fprintf(stderr,
            "usage: kvlog put DB KEY VALUE [KEY VALUE]...\n"
            "       kvlog get|del|scan|checkpoint|stats|check DB [ARGS]\n"
            "       kvlog bank init|writer|reader|checkpointer|verify DB [ARGS]\n"
            "       kvlog demo [SECONDS] [DIR]\n");
    return 2;
}

static int die(kvlog *db, const char *what) {
    fprintf(stderr, "kvlog %s: %s\n", what, kv_errmsg(db));
    kv_close(db);
    return 1;
}

struct scan_ctx { const char *prefix; size_t n; };

static int print_rec(void *ctx, const char *k, size_t kl, const void *v, size_t vl) {
    struct scan_ctx *s = ctx;
    if (kl >= s->n && memcmp(k, s->prefix, s->n) == 0)
        printf("%.*s\t%.*s\n", (int)kl, k, (int)vl, (const char *)v);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2) return usage();
    const char *cmd = argv[1];
    if (strcmp(cmd, "demo") == 0) return demo_main(argc - 2, argv + 2);
    if (strcmp(cmd, "bank") == 0) return bank_main(argc - 2, argv + 2);
    if (argc < 3) return usage();
    kvlog *db;
    if (kv_open(argv[2], NULL, &db) != KV_OK) return 1;
    int rc = KV_OK;
    if (strcmp(cmd, "put") == 0 && argc >= 5 && argc % 2 == 1) {
        if ((rc = kv_begin_write(db, 10000)) == KV_OK) {
            for (int i = 3; i < argc && rc == KV_OK; i += 2)
                rc = kv_put(db, argv[i], argv[i + 1], strlen(argv[i + 1]));
            if (rc == KV_OK) rc = kv_commit(db); /* rolls back itself when it fails */
            else kv_rollback(db);
        }
    } else if (strcmp(cmd, "del") == 0 && argc == 4) {
        if ((rc = kv_begin_write(db, 10000)) == KV_OK && (rc = kv_del(db, argv[3])) == KV_OK)
            rc = kv_commit(db);
        else if (rc != KV_BUSY)
            kv_rollback(db);
    } else if (strcmp(cmd, "get") == 0 && argc == 4) {
        char val[65536];
        size_t n;
        if ((rc = kv_begin_read(db)) == KV_OK) {
            rc = kv_get(db, argv[3], val, sizeof val, &n);
            if (rc == KV_OK) printf("%.*s\n", (int)n, val);
            kv_end_read(db);
        }
    } else if (strcmp(cmd, "scan") == 0 && argc <= 4) {
        struct scan_ctx s = {argc == 4 ? argv[3] : "", argc == 4 ? strlen(argv[3]) : 0};
        if ((rc = kv_begin_read(db)) == KV_OK) {
            rc = kv_scan(db, print_rec, &s);
            kv_end_read(db);
        }
    } else if (strcmp(cmd, "checkpoint") == 0 && argc == 3) {
        kv_ckpt c;
        if ((rc = kv_checkpoint(db, 10000, 1, &c)) == KV_OK)
            printf("copied %llu pages, backfilled to frame %llu%s\n",
                   (unsigned long long)c.pages_copied, (unsigned long long)c.backfilled_to,
                   c.restarted ? ", WAL restarted" : "");
    } else if (strcmp(cmd, "stats") == 0 && argc == 3) {
        kv_stats s;
        if ((rc = kv_stats_get(db, &s)) == KV_OK)
            printf("keys %llu\npage_size %u\nbuckets %u\ndb_pages %u\nmax_frame %llu\n"
                   "nbackfills %llu\nwal_base %llu\nwal_frames %llu\nindex_entries %llu\n"
                   "index_dead %llu\nreaders_pinned %u\n",
                   (unsigned long long)s.keys, s.page_size, s.buckets, s.db_pages,
                   (unsigned long long)s.max_frame, (unsigned long long)s.nbackfills,
                   (unsigned long long)s.wal_base, (unsigned long long)s.wal_frames,
                   (unsigned long long)s.index_entries, (unsigned long long)s.index_dead,
                   s.readers_pinned);
    } else if (strcmp(cmd, "check") == 0 && argc == 3) {
        char why[512] = "";
        if ((rc = kv_check(db, why, sizeof why)) == KV_OK) printf("ok\n");
        else fprintf(stderr, "kvlog check: %s\n", why);
        kv_close(db);
        return rc == KV_OK ? 0 : 1;
    } else {
        kv_close(db);
        return usage();
    }
    if (rc != KV_OK) return die(db, cmd);
    return kv_close(db) == KV_OK ? 0 : 1;
}
