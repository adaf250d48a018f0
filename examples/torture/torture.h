/* torture.h — the crash-torture supervisor (torture.c) and the worker processes it runs
 * besides kvlog's own (workers.c). */
#ifndef TORTURE_H
#define TORTURE_H

#define BANK_TOTAL_EACH 1000 /* every account's opening balance, in both workloads */

/* `torture sql|kv ...`: one worker process (see workers.c); returns the exit status. */
int worker_main(int argc, char **argv);

#endif
