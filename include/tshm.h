/*
 * tshm.h — libtshm: multi-process coordination for write-ahead-logged databases.
 *
 * RESULT CODES
 * Every fallible function returns an int result code: TSHM_OK (0) or an error code (the
 * numbers follow SQLite's where the meaning matches). Each function's comment lists every code
 * it returns and when. Outputs are written only on success. A NULL pointer argument is
 * TSHM_MISUSE and changes nothing. On every function that takes a handle, TSHM_MISUSE also
 * means a bad handle: NULL, closed, not from tshm_open, or inherited across fork(). TSHM_INTERNAL is a bug in libtshm (a panic caught at this boundary;
 * close the handle). A failed system call is TSHM_IOERR, or by its errno TSHM_PERM (EACCES,
 * EPERM), TSHM_NOMEM (ENOMEM) or TSHM_READONLY (EROFS); tshm_errno() gives the errno. No
 * function returns TSHM_ERROR, TSHM_PROTOCOL or TSHM_RANGE. Codes are never renumbered.
 * tshm_errstr(rc) names a code; tshm_errmsg() explains the last failure on the calling thread.
 * No panic or exception crosses this API.
 *
 * THREADS
 * A handle may be used from any number of threads at once, with these exceptions:
 * - tshm_close must not run concurrently with any other call on the same handle (it frees
 *   what those calls use). Once it has returned, a call on the handle is TSHM_MISUSE while the
 *   handle is among the 4096 most recently closed; after that it is a use after free.
 * - Roles belong to the handle, not to a thread. The thread that took the writer or
 *   checkpointer role may hand its use to other threads of the handle, and any of them may
 *   release it. Taking a role the handle holds, or one another thread of the handle is taking
 *   or releasing, is TSHM_MISUSE, not TSHM_BUSY and never a wait: threads that must exclude
 *   each other as writers need a handle each.
 * - The writer's index calls (tshm_index_append, _truncate, _reset) run one at a time per
 *   handle: a call while another thread of the handle is inside one is TSHM_MISUSE, and so is
 *   releasing the writer role meanwhile.
 * - Engine locks (tshm_lock) belong to the handle too: its threads share what it holds, and
 *   two handles exclude each other whether they are in one process or in two.
 * - Read transactions: any thread may begin one; transactions of one handle at one snapshot
 *   may share a slot number, and tshm_reader_end(slot) ends one of them, from any thread.
 * - tshm_snapshot_get, tshm_index_find, tshm_index_foreach, tshm_min_reader_frame, tshm_owner
 *   and the other getters need no role and may run beside any call but tshm_close (the first
 *   three are lock-free; the probes of the others may make system calls).
 * The detail behind tshm_errmsg() and tshm_errno() is kept per thread. Callbacks run on the
 * thread that made the call: on_last_close inside tshm_close, keep_waiting inside the
 * *_acquire_while call, the tshm_index_foreach callback inside tshm_index_foreach.
 *
 * FORK
 * At fork() the library (through pthread_atfork) closes, in the child, the sidecar and database
 * descriptors the child inherited: the child holds no lock of its parent's and never keeps one
 * alive. In the child every call on an inherited handle is TSHM_MISUSE, except tshm_close,
 * which returns TSHM_OK (was_last 0) and only frees memory in the child: the parent's roles,
 * reader slots, engine locks and records stay the parent's.
 * Pointers from tshm_region through inherited handles must not be used in the child. The child
 * may open handles of its own, also on the same database, as any other process. The
 * descriptors are O_CLOEXEC, so an exec drops everything too.
 *
 * OWNERSHIP
 * - A handle from tshm_open belongs to the caller until tshm_close, which frees it whatever
 *   it returns (a failed step is reported, the rest still done) except TSHM_MISUSE, when the
 *   handle stays open, and TSHM_INTERNAL, after which its state is unknown.
 *   tshm_close(NULL, ...) does nothing.
 * - tshm_open only reads db_path and opts during the call; both may be freed afterwards.
 * - tshm_errmsg(): owned by the library, per thread; NULL until a call on this thread failed;
 *   valid until the next failing call on the same thread replaces it, or the thread exits. A
 *   successful call leaves it as it was, and so do the routine TSHM_BUSY of tshm_lock and
 *   TSHM_NOTFOUND of tshm_index_find: read it right after the failure it explains. Copy it to
 *   keep it. tshm_errstr() and tshm_libversion() return static strings.
 * - Snapshots, info, stats and owner records are copied into memory the caller owns.
 * - A pointer from tshm_region points into the sidecar's mapping, shared by every process
 *   attached; it stays valid until this process's last handle on that sidecar closes (not only
 *   the handle it came from). Never free it; through a read-only handle, only read it.
 * - Context pointers are never read, written or freed by the library, only passed back: the
 *   on_last_close ctx (tshm_options.ctx) is kept by the handle and must stay valid until the
 *   handle is closed; the ctx of keep_waiting and of tshm_index_foreach only during that call.
 *   A callback must not unwind (throw, longjmp) through the library.
 */

#ifndef TSHM_H
#define TSHM_H

/* Generated by cbindgen 0.29.4 from src/. Do not edit; run `make header`. */

#include <stddef.h>
#include <stdint.h>
#define TSHM_VERSION "0.1.0"


/**
 * `tshm_info.mode`: several processes may attach.
 */
#define TSHM_MODE_SHARED 1

/**
 * `tshm_info.mode`: one process holds the sidecar exclusively.
 */
#define TSHM_MODE_EXCLUSIVE 2

/**
 * `tshm_info.backend`: Linux open-file-description locks.
 */
#define TSHM_BACKEND_OFD 1

/**
 * `tshm_info.backend`: POSIX process-associated record locks.
 */
#define TSHM_BACKEND_POSIX 2

/**
 * `tshm_lock` flag: a shared lock.
 */
#define TSHM_LOCK_SHARED 1

/**
 * `tshm_lock` flag: an exclusive lock.
 */
#define TSHM_LOCK_EXCLUSIVE 2

/**
 * `tshm_lock` flag, with `TSHM_LOCK_SHARED` or `TSHM_LOCK_EXCLUSIVE` (as taken): release.
 */
#define TSHM_LOCK_UNLOCK 4

/**
 * Engine lock slots per sidecar.
 */
#define TSHM_ENGINE_LOCKS 32

/**
 * Engine regions per sidecar.
 */
#define TSHM_MAX_REGIONS 512

/**
 * Success.
 */
#define TSHM_OK 0

/**
 * Reserved: no function of this version returns it.
 */
#define TSHM_ERROR 1

/**
 * A bug in libtshm, e.g. a panic caught at the C boundary. The handle should be closed.
 */
#define TSHM_INTERNAL 2

/**
 * Permission denied by the operating system.
 */
#define TSHM_PERM 3

/**
 * Contended: another handle or process holds the lock or role; retry later.
 */
#define TSHM_BUSY 5

/**
 * Out of memory.
 */
#define TSHM_NOMEM 7

/**
 * The handle is read-only and the call would write shared state.
 */
#define TSHM_READONLY 8

/**
 * An operating-system call failed; `tshm_errno()` has the errno.
 */
#define TSHM_IOERR 10

/**
 * The sidecar is corrupt or of an unknown layout.
 */
#define TSHM_CORRUPT 11

/**
 * Not found. From `tshm_open` with `TSHM_OPEN_READONLY`: there is no sidecar; use the
 * engine's legacy read-only path.
 */
#define TSHM_NOTFOUND 12

/**
 * A fixed-size table in the sidecar is full.
 */
#define TSHM_FULL 13

/**
 * The sidecar could not be opened or created (e.g. its directory is not writable, or the
 * database path names a directory); `tshm_errno()` has the reason.
 */
#define TSHM_CANTOPEN 14

/**
 * Reserved: no function of this version returns it.
 */
#define TSHM_PROTOCOL 15

/**
 * API misuse: NULL argument, closed handle, releasing what is not held, wrong role.
 */
#define TSHM_MISUSE 21

/**
 * Reserved: no function of this version returns it (an argument out of range is
 * `TSHM_MISUSE`).
 */
#define TSHM_RANGE 25

/**
 * Not supported here (e.g. the sidecar is on a network filesystem).
 */
#define TSHM_NOTSUPPORTED 40

/**
 * The sidecar is in use in an incompatible mode (EXCLUSIVE vs SHARED).
 */
#define TSHM_CONFLICT 41

/**
 * Major version of this header.
 */
#define TSHM_VERSION_MAJOR 0

/**
 * Minor version of this header.
 */
#define TSHM_VERSION_MINOR 1

/**
 * Patch version of this header.
 */
#define TSHM_VERSION_PATCH 0

/**
 * `MAJOR * 1000000 + MINOR * 1000 + PATCH`; compare with `tshm_libversion_number()`.
 */
#define TSHM_VERSION_NUMBER (((TSHM_VERSION_MAJOR * 1000000) + (TSHM_VERSION_MINOR * 1000)) + TSHM_VERSION_PATCH)

/**
 * Open flag: single-process mode; other processes' opens fail with `TSHM_CONFLICT`.
 */
#define TSHM_OPEN_EXCLUSIVE 1

/**
 * Open flag: never write or create the sidecar (no role, reader slot, EXCLUSIVE engine lock or
 * new region; regions that exist may be read, SHARED engine locks taken). A missing sidecar
 * gives `TSHM_NOTFOUND`: the engine should use its legacy read-only path.
 */
#define TSHM_OPEN_READONLY 2

/**
 * Open flag: allow a sidecar on a network filesystem (refused with `TSHM_NOTSUPPORTED`
 * otherwise).
 */
#define TSHM_OPEN_ALLOW_NETFS 4

/**
 * Open flag: use POSIX record locks even where OFD locks exist (the environment variable
 * `TSHM_LOCK_BACKEND=posix` does the same for every open).
 */
#define TSHM_OPEN_POSIX_LOCKS 8

/**
 * Reader strategy: claim a slot by CAS in shared memory (no syscall per read transaction).
 */
#define TSHM_READERS_CAS 0

/**
 * Reader strategy: one byte-range lock per read transaction.
 */
#define TSHM_READERS_BYTELOCK 1

/**
 * Role strategy: the writer and checkpointer roles live in shared memory (no syscall when
 * uncontended; waiters are served in arrival order, each handed the role and woken directly).
 */
#define TSHM_ROLES_SHM 0

/**
 * Role strategy: one byte-range lock per role (two system calls per acquire and release).
 */
#define TSHM_ROLES_BYTELOCK 1

/**
 * `tshm_owner` role: the lifetime lock (EXCLUSIVE-mode holder).
 */
#define TSHM_ROLE_LIFETIME 0

/**
 * `tshm_owner` role: the writer.
 */
#define TSHM_ROLE_WRITER 1

/**
 * `tshm_owner` role: the checkpointer.
 */
#define TSHM_ROLE_CHECKPOINTER 2

/**
 * `tshm_owner` role of reader slot `i` is `TSHM_ROLE_READER0 + i`.
 */
#define TSHM_ROLE_READER0 3

/**
 * "No frame": `tshm_min_reader_frame` when no reader pins one.
 */
#define TSHM_NO_FRAME UINT64_MAX

/**
 * `tshm_publish` field mask: `max_frame`.
 */
#define TSHM_SNAP_MAX_FRAME (1 << 0)

/**
 * `tshm_publish` field mask: `nbackfills`.
 */
#define TSHM_SNAP_NBACKFILLS (1 << 1)

/**
 * `tshm_publish` field mask: `engine[0]`.
 */
#define TSHM_SNAP_ENGINE0 (1 << 2)

/**
 * `tshm_publish` field mask: `engine[1]`.
 */
#define TSHM_SNAP_ENGINE1 (1 << 3)

/**
 * `tshm_publish` field mask: `checkpoint_seq`.
 */
#define TSHM_SNAP_CHECKPOINT_SEQ (1 << 4)

/**
 * `tshm_publish` field mask: `page_size`.
 */
#define TSHM_SNAP_PAGE_SIZE (1 << 5)

/**
 * `tshm_publish` field mask: `db_size`.
 */
#define TSHM_SNAP_DB_SIZE (1 << 6)

/**
 * `tshm_publish` field mask: both `salt` words.
 */
#define TSHM_SNAP_SALT (1 << 7)

/**
 * `tshm_publish` field mask: both `checksum` words.
 */
#define TSHM_SNAP_CHECKSUM (1 << 8)

/**
 * `tshm_publish` field mask: every field.
 */
#define TSHM_SNAP_ALL ((1 << 9) - 1)

/**
 * An open sidecar handle. Opaque to C.
 */
typedef struct tshm tshm;

/**
 * Called by `tshm_close` in the last process to detach, while it still holds everything.
 */
typedef void (*tshm_last_close_fn)(struct tshm *h, void *ctx);

/**
 * Options for `tshm_open`. Initialize with `tshm_options_init()`, then change fields.
 */
typedef struct tshm_options {
  /**
   * `sizeof(tshm_options)`, set by `tshm_options_init`; lets later versions add fields. A
   * library older than the caller's header refuses a larger struct with `TSHM_NOTSUPPORTED`.
   */
  uint32_t size;
  /**
   * `TSHM_OPEN_*` flags.
   */
  uint32_t flags;
  /**
   * Reader slots of the sidecar (64..65536; 0 for the default, 4096). A slot pins one
   * snapshot for any number of read transactions of one handle; a handle keeps its slots
   * until it closes. Like every shape field below, it is chosen by the first process to
   * attach (the sidecar is re-initialized to it then); a later opener that asks for another
   * value gets `TSHM_CONFLICT`.
   */
  uint32_t reader_slots;
  /**
   * `TSHM_READERS_CAS` (default) or `TSHM_READERS_BYTELOCK`.
   */
  uint32_t reader_strategy;
  /**
   * Called by `tshm_close` when this handle is the last one attached in any process, while it
   * still holds the sidecar exclusively: the place for a final checkpoint. The handle is fully
   * usable inside the callback (but must not be closed there). May be NULL.
   */
  tshm_last_close_fn on_last_close;
  /**
   * Passed to `on_last_close`.
   */
  void *ctx;
  /**
   * Most entries this handle lets the frame index hold (one generation) before
   * `tshm_index_append` fails with `TSHM_FULL`; 0 (default) for no limit but the format's
   * (2^32 - 2, also the largest value accepted) and the disk.
   */
  uint64_t index_limit;
  /**
   * Instance slots of the sidecar: how many handles (every writable handle is one) may be
   * open at once across all processes (1..65535; 0 for the default, 4096). Chosen like
   * `reader_slots`.
   */
  uint32_t instance_slots;
  /**
   * `TSHM_ROLES_SHM` (default) or `TSHM_ROLES_BYTELOCK`. Chosen like `reader_slots`.
   */
  uint32_t role_strategy;
} tshm_options;

/**
 * A handle's facts, filled by `tshm_info_get()`.
 */
typedef struct tshm_info {
  /**
   * `TSHM_MODE_SHARED` or `TSHM_MODE_EXCLUSIVE`.
   */
  uint32_t mode;
  /**
   * `TSHM_BACKEND_OFD` or `TSHM_BACKEND_POSIX`.
   */
  uint32_t backend;
  /**
   * `TSHM_READERS_CAS` or `TSHM_READERS_BYTELOCK`.
   */
  uint32_t reader_strategy;
  /**
   * Number of reader slots.
   */
  uint32_t reader_slots;
  /**
   * Number of instance slots.
   */
  uint32_t instance_slots;
  /**
   * This handle's instance index (`UINT32_MAX` for a read-only handle, which has none).
   */
  uint32_t instance;
  /**
   * Process id that opened the handle.
   */
  uint32_t pid;
  /**
   * 1 when the handle is read-only.
   */
  int32_t readonly;
  /**
   * 1 when this open found no other process attached and (re)initialized the sidecar's shared
   * state: the engine should rebuild what it keeps there (e.g. its frame index) from its WAL.
   */
  int32_t initialized;
  /**
   * `TSHM_ROLES_SHM` or `TSHM_ROLES_BYTELOCK`.
   */
  uint32_t role_strategy;
  /**
   * How many times a first opener has (re)initialized this sidecar.
   */
  uint64_t init_epoch;
} tshm_info;

/**
 * The committed WAL state every process agrees on. Filled by `tshm_snapshot_get()` and
 * `tshm_reader_begin()`; written through `tshm_publish()`.
 */
typedef struct tshm_snapshot {
  /**
   * Last committed WAL frame (0: the WAL is empty).
   */
  uint64_t max_frame;
  /**
   * Frames copied back into the database file by checkpoints.
   */
  uint64_t nbackfills;
  /**
   * Number of publishes so far; changes on every publish (set by the library, not the caller).
   */
  uint64_t sequence;
  /**
   * Engine-defined words, published and read like the other fields.
   */
  uint64_t engine[2];
  /**
   * Checkpoint sequence (bumped by the engine when the WAL restarts).
   */
  uint32_t checkpoint_seq;
  /**
   * Database page size in bytes.
   */
  uint32_t page_size;
  /**
   * Database size in pages.
   */
  uint32_t db_size;
  /**
   * Reserved; always 0.
   */
  uint32_t reserved;
  /**
   * WAL salts.
   */
  uint32_t salt[2];
  /**
   * Running WAL checksum at `max_frame`.
   */
  uint32_t checksum[2];
} tshm_snapshot;

/**
 * Asked by `tshm_writer_acquire_while` and `tshm_checkpointer_acquire_while` whether to go on
 * waiting: nonzero to wait on, 0 to stop.
 */
typedef int (*tshm_keep_waiting_fn)(void *ctx);

/**
 * Who holds a role or slot (`tshm_owner`). Role numbers follow the lock-byte map: 0 lifetime,
 * 1 writer, 2 checkpointer, 3 + i reader slot i.
 */
typedef struct tshm_owner_info {
  /**
   * `pid << 32 | instance` of the holder, 0 when unknown or free.
   */
  uint64_t id;
  /**
   * The holder instance's random nonce (distinguishes a reused pid).
   */
  uint64_t nonce;
  /**
   * For a reader slot: the pinned frame (`TSHM_NO_FRAME` when none); otherwise 0.
   */
  uint64_t frame;
  /**
   * Holder's process id (0 when unknown).
   */
  uint32_t pid;
  /**
   * Holder's instance index.
   */
  uint32_t instance;
  /**
   * 1 when the role or slot is held (by anyone, live or not yet reclaimed).
   */
  int32_t held;
  /**
   * 1 when the holder is alive (its lock is held), 0 when it is free or stale.
   */
  int32_t alive;
} tshm_owner_info;

/**
 * Called by `tshm_index_foreach` with each page and its newest frame; return 0 to go on,
 * anything else to stop.
 */
typedef int (*tshm_index_fn)(void *ctx, uint32_t page, uint64_t frame);

/**
 * Statistics of the shared frame index (`tshm_index_stats`).
 */
typedef struct tshm_index_stats {
  /**
   * Bumped by every reset (and by the first opener).
   */
  uint64_t generation;
  /**
   * Entries appended since the last reset, dropped ones included.
   */
  uint64_t entries;
  /**
   * Entries dropped by rollbacks since the last reset.
   */
  uint64_t dead;
  /**
   * Newest frame appended (or the rollback point, after a rollback).
   */
  uint64_t tail_frame;
  /**
   * Entry blocks (4096 entries each) with pool space.
   */
  uint64_t blocks;
  /**
   * Directory and block-table node pages in use.
   */
  uint64_t nodes;
  /**
   * Bytes of the sidecar that belong to the index pool.
   */
  uint64_t pool_bytes;
} tshm_index_stats;

#ifdef __cplusplus
extern "C" {
#endif // __cplusplus

/**
 * The library's version number, `TSHM_VERSION_NUMBER` of the headers it was built with.
 *
 * Returns the number, not a result code; never fails.
 */
int tshm_libversion_number(void);

/**
 * The library's version string, e.g. "0.1.0". Static; never NULL.
 *
 * Returns the string, not a result code; never fails.
 */
const char *tshm_libversion(void);

/**
 * A static English description of result code `rc`; never NULL, also for unknown codes.
 *
 * Returns the string, not a result code; never fails.
 */
const char *tshm_errstr(int rc);

/**
 * The detailed message of the most recent failed call on this thread, or NULL if none failed
 * yet. Owned by the library; valid until the next failing call on this thread (or the
 * thread's exit). Successful calls leave it unchanged, and so do `TSHM_BUSY` from `tshm_lock`
 * and `TSHM_NOTFOUND` from `tshm_index_find`.
 *
 * Returns the message, not a result code; never fails.
 */
const char *tshm_errmsg(void);

/**
 * The OS errno behind the most recent failed call on this thread (0 when it had none); left
 * unchanged like `tshm_errmsg()`.
 *
 * Returns the errno, not a result code; never fails.
 */
int tshm_errno(void);

/**
 * Fills `*opts` with the defaults: SHARED mode, OFD locks, CAS reader slots, shared-memory
 * roles, the default table sizes (4096 reader and 4096 instance slots), no hook.
 *
 * Returns:
 * * `TSHM_OK`: `*opts` holds the defaults;
 * * `TSHM_MISUSE`: `opts` is NULL;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `opts` is NULL or points to writable memory for a `tshm_options`.
 */
int tshm_options_init(struct tshm_options *opts);

/**
 * Opens the sidecar `<db_path>-tshm` (creating it unless `TSHM_OPEN_READONLY`) and attaches a
 * new handle to it. `opts` may be NULL for the defaults. On success `*out` is the handle; on
 * failure `*out` is left unchanged and nothing needs closing.
 *
 * A process keeps one descriptor per sidecar, opened read-write whenever the file allows it
 * (also for a `TSHM_OPEN_READONLY` handle, which still writes nothing). A read-write open of a
 * sidecar this process may only read gives a read-only handle (`tshm_info.readonly`).
 *
 * When the database file exists and is readable, the process also opens it once (read-only,
 * `O_CLOEXEC`) and keeps that descriptor until it exits: while attached it holds a shared
 * lock on byte `0x7473686d00000000` of the database file (far from any byte SQLite locks),
 * which lets an opener tell a sidecar replaced under live users (see `TSHM_BUSY`). The
 * descriptor is never closed, since a close would drop the process's POSIX locks on the
 * database (e.g. SQLite's). Without a database file there is no such check.
 *
 * Returns:
 * * `TSHM_OK`: `*out` is the new handle;
 * * `TSHM_MISUSE`: `db_path` or `out` NULL; `db_path` empty or ending in `/`, `.` or `..`;
 *   `opts` not initialized by `tshm_options_init` (`opts->size` smaller than this version's
 *   struct, or above 4096); unknown flag bits; `TSHM_OPEN_EXCLUSIVE` with
 *   `TSHM_OPEN_READONLY`; `reader_slots` outside 64..65536 or `instance_slots` outside
 *   1..65535 (0 is the default for both); an unknown reader or role strategy;
 *   `index_limit` above 2^32 - 2; or an open of the database from inside its own
 *   `on_last_close` hook;
 * * `TSHM_CANTOPEN`: the sidecar cannot be opened or created (e.g. its directory is not
 *   writable, or the sidecar is not readable: `tshm_errno()` is `EACCES`), `db_path` names a
 *   directory (`EISDIR`), or the process has no descriptor left for the sidecar or the
 *   database file (`EMFILE`, `ENFILE`); nothing is created and nothing is left open;
 * * `TSHM_BUSY`: the sidecar at the path was replaced (renamed over or removed, then made
 *   anew) while other processes, or this one, are attached to the file that was there before
 *   (`tshm_errmsg()` says "was replaced while in use"). Opening it would start a second
 *   session beside theirs, with two writers at once; open again once they have closed;
 * * `TSHM_NOTFOUND`: `TSHM_OPEN_READONLY` and there is no sidecar: use the engine's legacy
 *   read-only path;
 * * `TSHM_READONLY`: `TSHM_OPEN_EXCLUSIVE` on a sidecar this process cannot write; a read-write
 *   open while this process holds the sidecar through a read-only descriptor (it was not
 *   writable when first opened here: close every handle on it first). (An existing sidecar
 *   this process may not write, e.g. on a read-only filesystem, gives a read-only handle; one
 *   that cannot be created there is `TSHM_CANTOPEN`.)
 * * `TSHM_CONFLICT`: other processes use the other mode (`tshm_errmsg()` names a pid), or the
 *   sidecar they use has another shape than `opts` asks for: a `reader_slots`,
 *   `instance_slots`, `reader_strategy` or `role_strategy` other than 0 and other than the
 *   sidecar's (`tshm_errmsg()` gives both values; 0 joins any; a read-only handle takes the
 *   shape as it is; `tshm_info_get` tells a handle the shape);
 * * `TSHM_CORRUPT`: others are attached and the sidecar is invalid (a process that is alone
 *   re-initializes instead);
 * * `TSHM_NOTSUPPORTED`: a network filesystem without `TSHM_OPEN_ALLOW_NETFS`, or `opts` is a
 *   later version of the struct (the caller was built against a later `tshm.h`);
 * * `TSHM_FULL`: every instance slot is in use, or the disk (`ENOSPC`, quota) or the file-size
 *   limit stops the sidecar from being created (`tshm_errmsg()` says which; the next open once
 *   there is room initializes it), or there is no room to give storage to the pages of a
 *   sidecar made sparse from outside (which a store through the mapping would need);
 * * `TSHM_IOERR`, `TSHM_PERM`, `TSHM_NOMEM`: a system call failed (`tshm_errno()`);
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `db_path` is NULL or a NUL-terminated string; `opts` is NULL or a `tshm_options` initialized
 * by `tshm_options_init`; `out` is NULL or writable.
 */
int tshm_open(const char *db_path, const struct tshm_options *opts, struct tshm **out);

/**
 * Releases everything the handle holds and frees it. `*was_last` (if not NULL) is set to 1 when
 * this was the last handle attached in any process (the `on_last_close` hook then ran), else 0.
 * `tshm_close(NULL, ...)` is a no-op returning `TSHM_OK`. Must not run concurrently with other
 * calls on the same handle. In a child process after `fork()`, closing an inherited handle only
 * frees its memory. The sidecar file is never deleted.
 *
 * Returns:
 * * `TSHM_OK`: closed and freed (also for `h` NULL, and for a handle inherited across `fork()`,
 *   whose `*was_last` is then 0);
 * * `TSHM_MISUSE`: a closed or bad handle (but not NULL), or a close from inside the handle's
 *   own `on_last_close` hook (the handle stays open then);
 * * `TSHM_IOERR` (or `TSHM_PERM`, `TSHM_NOMEM` by errno): a lock or unlock call of the close
 *   failed; `TSHM_CORRUPT`: a role word or reader slot of the handle was overwritten from
 *   outside. In both cases the handle is freed all the same, having released all it could,
 *   and `*was_last` is not written;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle from `tshm_open`; `was_last` is NULL or writable.
 */
int tshm_close(struct tshm *h, int *was_last);

/**
 * Writes the handle's facts (mode, lock backend, reader strategy, slot counts, instance, whether
 * this open initialized the sidecar) to `*out`.
 *
 * Returns:
 * * `TSHM_OK`: `*out` is filled;
 * * `TSHM_MISUSE`: `out` NULL, a bad handle;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle; `out` is NULL or writable.
 */
int tshm_info_get(const struct tshm *h, struct tshm_info *out);

/**
 * Reads the current published snapshot into `*out`. Lock-free; never waits for a publisher,
 * not even one that died mid-publish. Safe to call from many threads on one handle.
 *
 * Returns:
 * * `TSHM_OK`: `*out` is the snapshot;
 * * `TSHM_MISUSE`: `out` NULL, a bad handle;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle; `out` is NULL or writable.
 */
int tshm_snapshot_get(const struct tshm *h, struct tshm_snapshot *out);

/**
 * Publishes the fields of `*snap` selected by `mask` (`TSHM_SNAP_*` bits) as the new snapshot;
 * the other fields keep their published values and `sequence` is advanced. The handle must hold
 * the writer or checkpointer role.
 *
 * Returns:
 * * `TSHM_OK`: published;
 * * `TSHM_MISUSE`: `snap` NULL, neither role held by this handle, unknown `mask` bits, a bad
 *   handle;
 * * `TSHM_READONLY`: a read-only handle;
 * * `TSHM_BUSY`: another live publisher (the other role's holder, or another thread of this
 *   handle) kept the publish token for over two seconds; nothing was published;
 * * `TSHM_IOERR`: the liveness probe of the token's holder failed;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle; `snap` is NULL or readable.
 */
int tshm_publish(struct tshm *h, const struct tshm_snapshot *snap, uint32_t mask);

/**
 * Takes the writer role. `timeout_ms == 0`: try once, `TSHM_BUSY` if it is held. Otherwise wait
 * up to `timeout_ms` milliseconds, woken as soon as the holder releases it (or, if the holder
 * died, within 2.5 ms; 10 ms with `TSHM_ROLES_BYTELOCK`). Waiters get the role in arrival
 * order (shared-memory roles). On success the frame index is trimmed to the published `max_frame` (a previous
 * writer may have died with uncommitted entries).
 *
 * Returns:
 * * `TSHM_OK`: this handle holds the role;
 * * `TSHM_BUSY`: another handle (of this process or another) holds it past the timeout (at
 *   once for `timeout_ms == 0`);
 * * `TSHM_MISUSE`: this handle holds the role, or another of its threads is taking or
 *   releasing it; a bad handle;
 * * `TSHM_READONLY`: a read-only handle;
 * * `TSHM_CORRUPT`: the trim found the index corrupt (the role is not taken);
 * * `TSHM_IOERR`: a lock call or liveness probe failed, or mapping a grown part of the index
 *   for the trim failed (the role is not taken);
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle.
 */
int tshm_writer_acquire(struct tshm *h,
                        uint32_t timeout_ms);

/**
 * Takes the writer role like `tshm_writer_acquire`, and while it waits asks
 * `keep_waiting(ctx)` whether to go on: before the first sleep, after every wake-up, and at
 * least once a wait slice (2.5 ms; 10 ms with `TSHM_ROLES_BYTELOCK`). When it returns 0 the
 * call leaves the queue and returns `TSHM_BUSY` (unless a release has already handed it the
 * role, which it then takes: `TSHM_OK`). An engine uses it to stop waiting when waiting could
 * only delay another holder (for example one that waits for something this caller holds).
 * `keep_waiting` NULL: exactly `tshm_writer_acquire`. It is never called when the role is taken
 * at once; it may call libtshm, on `h` too (but not to take this role), and must not unwind.
 *
 * Returns what `tshm_writer_acquire` returns, and also:
 * * `TSHM_BUSY`: `keep_waiting` returned 0 (this call left the queue without the role).
 *
 * # Safety
 * `h` is NULL or a handle; `keep_waiting` is NULL or a function that can be called with `ctx`.
 */
int tshm_writer_acquire_while(struct tshm *h,
                              uint32_t timeout_ms,
                              tshm_keep_waiting_fn keep_waiting,
                              void *ctx);

/**
 * Releases the writer role.
 *
 * Returns:
 * * `TSHM_OK`: released (handed to the longest waiter, if any);
 * * `TSHM_MISUSE`: this handle does not hold the role, another of its threads is releasing it
 *   or (writer) is inside an index call under it; a bad handle;
 * * `TSHM_READONLY`: a read-only handle;
 * * `TSHM_CORRUPT`: the role word was overwritten from outside (the handle no longer holds
 *   the role);
 * * `TSHM_IOERR`: the unlock call failed (`TSHM_ROLES_BYTELOCK`; the handle no longer holds
 *   the role);
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle.
 */
int tshm_writer_release(struct tshm *h);

/**
 * Takes the checkpointer role; the same rules as `tshm_writer_acquire`, without the index
 * trim.
 *
 * Returns what `tshm_writer_acquire` returns for the checkpointer role, but never
 * `TSHM_CORRUPT` and never the trim's `TSHM_IOERR`.
 *
 * # Safety
 * `h` is NULL or a handle.
 */
int tshm_checkpointer_acquire(struct tshm *h, uint32_t timeout_ms);

/**
 * Takes the checkpointer role like `tshm_checkpointer_acquire`, asking `keep_waiting` as
 * `tshm_writer_acquire_while` does.
 *
 * Returns what `tshm_checkpointer_acquire` returns, and also `TSHM_BUSY` when `keep_waiting`
 * returned 0.
 *
 * # Safety
 * `h` is NULL or a handle; `keep_waiting` is NULL or a function that can be called with `ctx`.
 */
int tshm_checkpointer_acquire_while(struct tshm *h,
                                    uint32_t timeout_ms,
                                    tshm_keep_waiting_fn keep_waiting,
                                    void *ctx);

/**
 * Releases the checkpointer role.
 *
 * Returns what `tshm_writer_release` returns for the checkpointer role (no index call holds
 * it).
 *
 * # Safety
 * `h` is NULL or a handle.
 */
int tshm_checkpointer_release(struct tshm *h);

/**
 * Begins a read transaction: claims a reader slot, pins the current snapshot's `max_frame` in
 * it (so no checkpoint backfills past it) and returns the slot in `*slot_out` and the pinned
 * snapshot in `*snap_out`. Stale slots of dead processes are reclaimed.
 *
 * Returns:
 * * `TSHM_OK`: `*slot_out` and `*snap_out` are set; end the transaction with
 *   `tshm_reader_end(h, *slot_out)`;
 * * `TSHM_BUSY`: every reader slot is held by a live reader;
 * * `TSHM_MISUSE`: `slot_out` or `snap_out` NULL, a bad handle;
 * * `TSHM_READONLY`: a read-only handle;
 * * `TSHM_CORRUPT`: the slot claimed was overwritten from outside while pinning (nothing is
 *   held);
 * * `TSHM_IOERR`: a lock call or liveness probe failed;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle; `slot_out` and `snap_out` are NULL or writable.
 */
int tshm_reader_begin(struct tshm *h, uint32_t *slot_out, struct tshm_snapshot *snap_out);

/**
 * Ends the read transaction holding `slot`.
 *
 * Returns:
 * * `TSHM_OK`: the transaction ended;
 * * `TSHM_MISUSE`: this handle has no read transaction on `slot`; a bad handle;
 * * `TSHM_READONLY`: a read-only handle;
 * * `TSHM_CORRUPT`: the slot was overwritten from outside while held (the transaction is
 *   ended all the same);
 * * `TSHM_IOERR`: the unlock call failed (`TSHM_READERS_BYTELOCK`; the transaction is ended);
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle.
 */
int tshm_reader_end(struct tshm *h, uint32_t slot);

/**
 * The oldest frame pinned by a live reader, or `TSHM_NO_FRAME` when none is. A checkpointer
 * reads the snapshot first, then calls this, and backfills no frame above the smaller of the
 * two.
 *
 * Returns:
 * * `TSHM_OK`: `*frame_out` is set;
 * * `TSHM_MISUSE`: `frame_out` NULL, a bad handle;
 * * `TSHM_IOERR`: a liveness probe failed;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle; `frame_out` is NULL or writable.
 */
int tshm_min_reader_frame(const struct tshm *h, uint64_t *frame_out);

/**
 * Who holds `role`: `TSHM_ROLE_LIFETIME`, `TSHM_ROLE_WRITER`, `TSHM_ROLE_CHECKPOINTER`, or
 * `TSHM_ROLE_READER0 + i` for reader slot `i`.
 *
 * Returns:
 * * `TSHM_OK`: `*out` is filled (also for a role nobody holds: `held == 0`);
 * * `TSHM_MISUSE`: `out` NULL, a role that does not exist, a bad handle;
 * * `TSHM_IOERR`: a liveness probe failed;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle; `out` is NULL or writable.
 */
int tshm_owner(const struct tshm *h, uint32_t role, struct tshm_owner_info *out);

/**
 * Adds `(page, frame)` to the shared frame index: `frame` (1 .. 2^63) now holds the newest
 * copy of `page`. Writer only (`TSHM_MISUSE` otherwise); frames must strictly increase
 * (`TSHM_MISUSE` otherwise). Entries above the published snapshot's `max_frame` are
 * uncommitted: a rollback drops them (`tshm_index_truncate`), and so does the next writer if
 * this one dies first.
 *
 * Returns:
 * * `TSHM_OK`: added;
 * * `TSHM_MISUSE`: writer role not held by this handle, another of its threads inside an index
 *   call, `frame` not above the last one or out of range, a bad handle;
 * * `TSHM_READONLY`: a read-only handle;
 * * `TSHM_FULL`: the `index_limit` option, the format's limit, the disk or the file-size limit
 *   stops the index from growing (the index stays consistent and usable);
 * * `TSHM_CORRUPT`: the index's shared words are inconsistent (changed from outside);
 * * `TSHM_IOERR`: growing the sidecar or mapping a grown part failed;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle.
 */
int tshm_index_append(struct tshm *h, uint32_t page, uint64_t frame);

/**
 * Looks up the newest frame at or below `max_frame` that holds `page` (pass the `max_frame`
 * of your read snapshot). `TSHM_OK` with `*frame_out` set, or `TSHM_NOTFOUND` (the page is
 * not in the WAL at that snapshot: read it from the database file; `tshm_errmsg()` is not
 * changed). Lock-free; safe while the writer appends, rolls back or grows the index. Its cost
 * does not grow with the number of frames indexed.
 *
 * Returns:
 * * `TSHM_OK`: `*frame_out` is the frame;
 * * `TSHM_NOTFOUND`: no frame at or below `max_frame` holds `page` (`tshm_errmsg()` is not
 *   changed);
 * * `TSHM_BUSY`: the index was reset again and again during the lookup;
 * * `TSHM_CORRUPT`: the index's shared words are inconsistent (changed from outside);
 * * `TSHM_MISUSE`: `frame_out` NULL, a bad handle;
 * * `TSHM_IOERR`: mapping a grown part of the index failed;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle; `frame_out` is NULL or writable.
 */
int tshm_index_find(const struct tshm *h, uint32_t page, uint64_t max_frame, uint64_t *frame_out);

/**
 * Rollback: drops every index entry above `max_frame`. Writer only. `max_frame` may not be
 * below the published snapshot's `max_frame` (`TSHM_MISUSE`): committed frames are dropped
 * only by `tshm_index_reset` after the WAL restarts. Concurrent lookups never miss a
 * committed entry.
 *
 * Returns:
 * * `TSHM_OK`: nothing above `max_frame` is left (also when there was nothing to drop);
 * * `TSHM_MISUSE`: `max_frame` below the published one, writer role not held by this handle,
 *   another of its threads inside an index call, a bad handle;
 * * `TSHM_READONLY`: a read-only handle;
 * * `TSHM_CORRUPT`: the index's shared words are inconsistent (changed from outside);
 * * `TSHM_IOERR`: mapping a grown part of the index failed;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle.
 */
int tshm_index_truncate(struct tshm *h, uint64_t max_frame);

/**
 * Empties the index and bumps its generation, after the WAL restarted (every frame
 * backfilled, no reader pinning one). Writer only. Also the first step of a rebuild: a handle
 * whose `tshm_info.initialized` is 1 found no live sidecar and re-appends its WAL's frames.
 *
 * Returns:
 * * `TSHM_OK`: the index is empty;
 * * `TSHM_MISUSE`: writer role not held by this handle, another of its threads inside an index
 *   call, a bad handle;
 * * `TSHM_READONLY`: a read-only handle;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle.
 */
int tshm_index_reset(struct tshm *h);

/**
 * Calls `cb(ctx, page, frame)` for every page with a frame at or below `max_frame`, in
 * ascending page order, with that page's newest such frame (what a checkpointer copies back).
 * Allocates nothing. Stops early, still returning `TSHM_OK`, when `cb` returns non-zero.
 *
 * Returns:
 * * `TSHM_OK`: every page was passed to `cb`, or `cb` stopped the walk;
 * * `TSHM_BUSY`: the index was reset during the walk (pages already passed to `cb` may be
 *   stale);
 * * `TSHM_CORRUPT`: the index's shared words are inconsistent (changed from outside);
 * * `TSHM_MISUSE`: `cb` NULL, a bad handle;
 * * `TSHM_IOERR`: mapping a grown part of the index failed;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle; `cb` is NULL or a function safe to call with `ctx`.
 */
int tshm_index_foreach(const struct tshm *h, uint64_t max_frame, tshm_index_fn cb, void *ctx);

/**
 * Writes the index's counters (generation, entries, dead entries, tail frame, blocks, node
 * pages, pool bytes) to `*out`.
 *
 * Returns:
 * * `TSHM_OK`: `*out` is filled;
 * * `TSHM_MISUSE`: `out` NULL, a bad handle;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle; `out` is NULL or writable.
 */
int tshm_index_stats_get(const struct tshm *h, struct tshm_index_stats *out);

/**
 * Engine region `idx` (0 .. `TSHM_MAX_REGIONS`) of `size` bytes (a multiple of 8, at most
 * 65536; every region of a sidecar has the size of the first one made): `*ptr` gets its
 * address, shared with every process attached. With `extend == 0` a region that does not exist
 * yet gives `TSHM_OK` and `*ptr = NULL`; otherwise it is created, zeroed. Pointers stay valid
 * until this process's last handle on the sidecar closes. The first process to open a sidecar
 * that nobody has open finds every region gone (zeroed), like SQLite's dead-man switch. A
 * read-only handle finds existing regions (and must only read them) but never creates one.
 *
 * Returns:
 * * `TSHM_OK`: `*ptr` is the region's address (NULL when it does not exist and `extend == 0`);
 * * `TSHM_MISUSE`: `ptr` NULL, `idx` or `size` out of range, `size` unlike the sidecar's
 *   regions, a bad handle;
 * * `TSHM_READONLY`: a read-only handle would have to create the region;
 * * `TSHM_FULL`: the disk or the file-size limit stops the sidecar from growing, or the pool
 *   reached its addressable size;
 * * `TSHM_CORRUPT`: the region table or the pool's counters point outside the file;
 * * `TSHM_IOERR`: growing the sidecar or mapping the region failed;
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle; `ptr` is NULL or writable.
 */
int tshm_region(struct tshm *h, uint32_t idx, size_t size, int extend, void **ptr);

/**
 * Takes or releases engine lock slots `slot .. slot + n` (0 .. `TSHM_ENGINE_LOCKS`).
 * `flags`: `TSHM_LOCK_SHARED` or `TSHM_LOCK_EXCLUSIVE`, plus `TSHM_LOCK_UNLOCK` to release
 * (with the mode it was taken in). Never waits: `TSHM_BUSY` when another handle, of this
 * process or another, holds a conflicting lock, and then nothing was taken (ranges are
 * all-or-nothing). Re-taking a SHARED slot is a no-op; converting between SHARED and EXCLUSIVE
 * and releasing what the handle does not hold are `TSHM_MISUSE`. Released at close, or when
 * the holding process dies. The locks live in shared memory: SHARED makes no system call
 * unless a conflict has to be checked against a holder that may have died; a granted
 * EXCLUSIVE makes one probe per slot (for read-only holders). A read-only handle takes SHARED
 * locks (kernel read locks, which work on a sidecar it cannot write).
 *
 * Returns:
 * * `TSHM_OK`: every slot of the range is taken (or released);
 * * `TSHM_BUSY`: a conflicting lock is held; nothing was taken (`tshm_errmsg()` is not
 *   changed);
 * * `TSHM_MISUSE`: slots out of range, bad flags, a mode conversion, releasing what is not
 *   held, a bad handle;
 * * `TSHM_READONLY`: EXCLUSIVE on a read-only handle;
 * * `TSHM_IOERR`: a lock call or liveness probe failed (a request that fails takes nothing);
 * * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
 *
 * # Safety
 * `h` is NULL or a handle.
 */
int tshm_lock(struct tshm *h, uint32_t slot, uint32_t n, uint32_t flags);

#ifdef __cplusplus
}  // extern "C"
#endif  // __cplusplus

#endif  /* TSHM_H */
