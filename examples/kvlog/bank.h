/* bank.h — the bank workload on kvlog, and the demonstration that runs it (demo.c). */
#ifndef KVLOG_BANK_H
#define KVLOG_BANK_H

#include <stdint.h>

#define BANK_START 1000 /* every account's opening balance */

/* Progress counters of one process of the workload, in a file every process maps
 * (KVLOG_STATS names it, KVLOG_SLOT picks the slot). */
struct bank_slot {
    uint64_t pid, role, commits, aborts, waits, reads, bad, ckpts, copied, restarts;
};
#define BANK_SLOTS 32
enum { ROLE_NONE, ROLE_WRITER, ROLE_READER, ROLE_CHECKPOINTER };

struct bank_verdict {
    uint64_t acked, in_flight, lost, accounts, total, expected_total;
    int balances_match, integrity_ok;
    char why[512];
};

int bank_main(int argc, char **argv);
int bank_init(const char *db, uint32_t accounts);
/* Replays the writers' logs against the database; 0 when everything matches. */
int bank_verify(const char *db, int nlogs, char **logs, struct bank_verdict *v);
int demo_main(int argc, char **argv);

#endif
