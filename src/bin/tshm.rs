//! `tshm`: look at a database's sidecar without taking part.
//!
//! * `tshm inspect <db> [--json]` — mode, attached processes, role holders, reader slots, the
//!   snapshot, the frame index, the lock kind in use, and SQLite's wal-index and lock slots on a
//!   database used through the SQLite shim;
//! * `tshm check [--idle] [--json] <db>` — validates the sidecar (not the database file): its
//!   header, frame index, role words and engine region table; with `--idle`, also that nobody
//!   is attached and nothing is left uncommitted or un-checkpointed;
//! * `tshm watch <db> [--interval MS] [--count N] [--json]` — `inspect`, refreshed, with the
//!   contention rates per second between two refreshes: redrawn in place on a terminal, one
//!   report after another (each followed by a line `--`) into a pipe or file;
//! * `tshm completions <bash|zsh|fish>` — the shell's completion script, on standard output.
//!
//! The inspector takes no lock and writes nothing (see `tshm::inspect`). Exit status: 0 ok; 1
//! the sidecar is corrupt, or (`check --idle`) not idle; 2 it cannot be read (no database, no
//! sidecar, a directory, no permission) or the output cannot be written; 64 a usage error.
//!
//! Every JSON document carries `"schema": 1`; `docs/man/tshm.1` describes each field. The
//! number changes when a field is removed or changes meaning, not when one is added.
//!
//! `inspect --json` adds to the fields of the table:
//!
//! * `role_strategy`: `"shm"` (roles are words in shared memory, waiters queued by ticket) or
//!   `"bytelock"`;
//! * `contention.writer`, `contention.checkpointer`: counters since the sidecar was initialized
//!   — `acquires`, `waited` (acquisitions that had to wait), `waited_pct` (of `acquires`),
//!   `wait_ns` (total), `mean_wait_ns` (of those that waited), `max_wait_ns`, `busy` (attempts
//!   refused with `TSHM_BUSY`), `reclaims` (dead holders taken over), `handoffs` (releases
//!   that handed the role to a waiter); `holder` (`held`, `alive`, `pid`, `instance`);
//!   `waiters`: the attached handles waiting now, first served first (`pid`, `instance`,
//!   `ticket`); `announced_waiters`: waits announced on a byte-lock role's release counter;
//! * `contention.readers`: `claims`, `reclaims`, `busy`, `extra` (transactions that took a slot
//!   beside their handle's kept ones);
//! * each `attached` handle: `writer` and `checkpointer`, each `acquires`, `wait_ns`,
//!   `waiting` and `ticket` (0 when not waiting);
//! * `sqlite`: `null` unless the database is used through the SQLite shim (engine region 0
//!   exists, holds at least 136 bytes and a wal-index: iVersion 3007000 or isInit set);
//!   otherwise SQLite's view (see `tshm::inspect::sqlite`):
//!   - `region_bytes`: the size of region 0 (the shim's regions are 32768 bytes);
//!   - `wal_index`: the wal-index header copy 0 — `version` (iVersion), `change` (iChange),
//!     `is_init`, `big_endian_checksum`, `page_size` (bytes), `max_frame` (mxFrame, the last
//!     valid frame of the WAL), `pages` (nPage, the database size in pages), `salt` (the two
//!     salts as the WAL header holds them), `frame_checksum`, `checksum`, `checksum_ok`
//!     (SQLite's header checksum matches), `copies_agree` (`false`: the two copies differed at
//!     every look, a writer is changing the header; not an error), and from the checkpoint
//!     information `nbackfill` (frames copied into the database) and `nbackfill_attempted`;
//!   - `wal_file`: `null` when `<db>-wal` does not exist; else `bytes` and `header` (`null`
//!     when shorter than 32 bytes) with `magic`, `magic_ok`, `format`, `page_size`,
//!     `checkpoint_seq` and `salt`; or `error` when the file cannot be read;
//!   - `salts_match`: the wal-index salts are the WAL header's (`null` without a WAL header;
//!     `false` with `max_frame` 0 is a restarted log whose header the next commit rewrites);
//!   - `locks`, by SQLite's names: `WRITE` (slot 0, libtshm's writer role: `holder` as in
//!     `writer`, `waiters` first served first, `announced_waiters`), and `CKPT`, `RECOVER`,
//!     `READ0`..`READ4` (engine lock slots 1..7) and `STEP_ASIDE` (engine slot 8, held
//!     EXCLUSIVE by a write-lock holder whose checkpoint waits for read marks), each with
//!     `slot`, `shared` and `exclusive` (the attached handles holding it: `pid`, `instance`),
//!     `read_only_shared` (held SHARED by a read-only connection, whose pid is not recorded)
//!     and `mark` (READ slots: the read mark, the WAL frame its readers read up to; `null`
//!     when unused and for the other slots).

use clap::{CommandFactory, Parser, Subcommand, ValueEnum};
use serde_json::json;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tshm::inspect::sqlite::{Sqlite, SqliteLock, WalFile, READMARK_NOT_USED};
use tshm::inspect::{self, bytes, count, Rates, Report, RoleContention};
use tshm::tshm_owner_info;

/// The version of every JSON document's layout (its `schema` field).
const SCHEMA: u32 = 1;

/// Exit status: the sidecar was read and is sound (and, for `check --idle`, idle).
const EXIT_OK: u8 = 0;
/// Exit status: the sidecar is corrupt, or `check --idle` found it in use or not checkpointed.
const EXIT_PROBLEM: u8 = 1;
/// Exit status: the sidecar cannot be read, or the output cannot be written.
const EXIT_UNREADABLE: u8 = 2;
/// Exit status: the command line is wrong (`EX_USAGE` of sysexits.h).
const EXIT_USAGE: u8 = 64;

/// The line that ends each report of `watch` written into a pipe or a file.
const WATCH_SEPARATOR: &str = "--";

#[derive(Parser)]
#[command(
    name = "tshm",
    version,
    about = "Inspect a libtshm sidecar without taking part",
    after_help = "Exit status:
  0   ok: the sidecar was read and is consistent (check --idle: and idle)
  1   the sidecar is corrupt; check --idle: it is in use or not checkpointed
  2   the sidecar cannot be read (no database, no sidecar, a directory, no
      permission), or the output cannot be written
  64  usage error (unknown command or option, missing or bad argument)

See tshm(1)."
)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Show who is attached, who holds what, who waits for what, the snapshot and the index.
    ///
    /// The contention section shows, per role, the acquisitions since the sidecar was
    /// initialized, how many had to wait (and their mean and longest wait), the attempts
    /// refused busy, dead holders reclaimed, handoffs to a waiter, the holder now and the
    /// handles waiting in arrival order. `--json` prints the same under `contention` (see the
    /// field list in tshm(1)) and each attached handle's own counters.
    ///
    /// On a database used through the SQLite shim, the sqlite section shows the wal-index
    /// header (mxFrame, nPage, page size, salts, nBackfill), whether its two copies agree,
    /// the WAL file's header and whether its salts match, and SQLite's lock slots by name
    /// (WRITE, CKPT, RECOVER, READ0..READ4 with their read marks) with who holds each;
    /// `--json` prints it under `sqlite` (`null` elsewhere).
    Inspect {
        db: PathBuf,
        /// Print JSON (schema 1, see tshm(1)) instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate the sidecar (not the database file): exit 0 when consistent.
    ///
    /// Checks the sidecar's header, its frame index (counters, directory, pool units against
    /// the file's length), the role words and the engine region table. The database file and
    /// the WAL are not read. Exit 1 when the sidecar is corrupt or, with `--idle`, in use or
    /// not checkpointed; 2 when it cannot be read.
    Check {
        db: PathBuf,
        /// Also require that nobody is attached and nothing is pending.
        #[arg(long)]
        idle: bool,
        /// Print the verdict as JSON (schema 1, see tshm(1)).
        #[arg(long)]
        json: bool,
    },
    /// Refresh `inspect` with contention rates per second (acquisitions, waits, busy returns
    /// and the mean wait over the last interval).
    ///
    /// On a terminal each refresh redraws the screen; into a pipe or a file the reports follow
    /// one another, each ended by a line `--`. Runs until interrupted, or `--count` reports.
    Watch {
        db: PathBuf,
        /// Refresh period in milliseconds (at least 50).
        #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u64).range(50..))]
        interval: u64,
        /// Stop after this many reports (default: until interrupted).
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        count: Option<u64>,
        /// One JSON document (schema 1, see tshm(1)) per line and refresh, never redrawn.
        #[arg(long)]
        json: bool,
    },
    /// Print the shell completion script for bash, zsh or fish on standard output.
    ///
    /// bash: `tshm completions bash > /usr/share/bash-completion/completions/tshm`;
    /// zsh: `tshm completions zsh > /usr/share/zsh/vendor-completions/_tshm`;
    /// fish: `tshm completions fish > /usr/share/fish/vendor_completions.d/tshm.fish`.
    Completions { shell: Shell },
}

/// The shells `completions` writes scripts for.
#[derive(Clone, Copy, ValueEnum)]
enum Shell {
    Bash,
    Zsh,
    Fish,
}

fn mode_name(m: u32) -> &'static str {
    match m {
        1 => "SHARED",
        2 => "EXCLUSIVE",
        _ => "none (nobody attached)",
    }
}

/// The slot numbers set in an engine-lock mask.
fn slots_of(mask: u32) -> Vec<u32> {
    (0..32).filter(|i| mask >> i & 1 != 0).collect()
}

fn owner_json(o: &tshm_owner_info) -> serde_json::Value {
    json!({"held": o.held != 0, "alive": o.alive != 0, "pid": o.pid, "instance": o.instance})
}

fn to_json(db: &Path, r: &Report) -> serde_json::Value {
    let s = &r.snapshot;
    json!({
        "schema": SCHEMA,
        "database": db.display().to_string(),
        "sidecar_bytes": r.sidecar_bytes,
        "mode": match r.mode { 1 => "shared", 2 => "exclusive", _ => "none" },
        "lock_backend": r.backend,
        "reader_strategy": if r.reader_strategy == 0 { "cas" } else { "bytelock" },
        "role_strategy": if r.role_strategy == 0 { "shm" } else { "bytelock" },
        "reader_slots": r.reader_slots,
        "instance_slots": r.instance_slots,
        "init_epoch": r.init_epoch,
        "attached": r.attached.iter().map(|a| json!({
            "pid": a.pid, "instance": a.instance, "alive": true,
            "engine_locks_shared": slots_of(a.engine_shared),
            "engine_locks_exclusive": slots_of(a.engine_exclusive),
            "writer": instance_role_json(&a.writer),
            "checkpointer": instance_role_json(&a.checkpointer),
        })).collect::<Vec<_>>(),
        "writer": owner_json(&r.writer),
        "checkpointer": owner_json(&r.checkpointer),
        "readers": r.readers.iter().map(|rs| json!({
            "slot": rs.slot, "pid": rs.owner.pid, "instance": rs.owner.instance,
            "frame": rs.owner.frame, "alive": rs.owner.alive != 0,
        })).collect::<Vec<_>>(),
        "snapshot": {
            "max_frame": s.max_frame, "nbackfills": s.nbackfills, "sequence": s.sequence,
            "engine": s.engine, "checkpoint_seq": s.checkpoint_seq, "page_size": s.page_size,
            "db_size": s.db_size, "salt": s.salt, "checksum": s.checksum,
        },
        "index": {
            "generation": r.index.generation, "entries": r.index.entries, "dead": r.index.dead,
            "tail_frame": r.index.tail_frame, "blocks": r.index.blocks, "nodes": r.index.nodes,
            "bytes": r.index.pool_bytes,
        },
        "contention": {
            "writer": role_json(&r.contention.writer, &r.writer),
            "checkpointer": role_json(&r.contention.checkpointer, &r.checkpointer),
            "readers": {
                "claims": r.contention.readers.claims,
                "reclaims": r.contention.readers.reclaims,
                "busy": r.contention.readers.busy,
                "extra": r.contention.readers.extra,
            },
        },
        "sqlite": r.sqlite.as_ref().map(|q| sqlite_json(q, r)),
    })
}

fn sqlite_lock_json(l: &SqliteLock) -> serde_json::Value {
    let who = |v: &[inspect::sqlite::Holder]| {
        v.iter()
            .map(|h| json!({"pid": h.pid, "instance": h.instance}))
            .collect::<Vec<_>>()
    };
    json!({
        "slot": l.slot, "shared": who(&l.shared), "exclusive": who(&l.exclusive),
        "read_only_shared": l.read_only_shared,
        "mark": l.mark.filter(|m| *m != READMARK_NOT_USED),
    })
}

fn sqlite_json(q: &Sqlite, r: &Report) -> serde_json::Value {
    let h = &q.header;
    let mut locks = serde_json::Map::new();
    locks.insert(
        "WRITE".into(),
        json!({
            "slot": 0,
            "holder": owner_json(&r.writer),
            "waiters": r.contention.writer.waiters.iter().map(|w| json!({
                "pid": w.pid, "instance": w.instance, "ticket": w.ticket,
            })).collect::<Vec<_>>(),
            "announced_waiters": r.contention.writer.announced_waiters,
        }),
    );
    for l in &q.locks {
        locks.insert(l.name.into(), sqlite_lock_json(l));
    }
    let wal = match &q.wal {
        WalFile::Missing => serde_json::Value::Null,
        WalFile::Unreadable(why) => json!({"error": why}),
        WalFile::Present { bytes, header } => json!({
            "bytes": bytes,
            "header": header.map(|w| json!({
                "magic": w.magic, "magic_ok": w.magic_ok(), "format": w.format,
                "page_size": w.page_size, "checkpoint_seq": w.checkpoint_seq, "salt": w.salt,
            })),
        }),
    };
    json!({
        "region_bytes": q.region_bytes,
        "wal_index": {
            "version": h.version, "change": h.change, "is_init": h.is_init,
            "big_endian_checksum": h.big_end_cksum, "page_size": h.page_size,
            "max_frame": h.max_frame, "pages": h.n_page, "salt": h.salt,
            "frame_checksum": h.frame_cksum, "checksum": h.cksum, "checksum_ok": h.cksum_ok,
            "copies_agree": q.copies_agree,
            "nbackfill": q.nbackfill, "nbackfill_attempted": q.nbackfill_attempted,
        },
        "wal_file": wal,
        "salts_match": q.salts_match(),
        "locks": locks,
    })
}

fn instance_role_json(u: &inspect::InstanceRole) -> serde_json::Value {
    json!({
        "acquires": u.acquires, "wait_ns": u.wait_ns, "waiting": u.waiting(), "ticket": u.ticket,
    })
}

fn role_json(c: &RoleContention, holder: &tshm_owner_info) -> serde_json::Value {
    let s = &c.stats;
    json!({
        "acquires": s.acquires, "waited": s.waited, "waited_pct": s.waited_pct(),
        "wait_ns": s.wait_ns, "mean_wait_ns": s.mean_wait_ns(), "max_wait_ns": s.max_wait_ns,
        "busy": s.busy, "reclaims": s.reclaims, "handoffs": s.handoffs,
        "holder": owner_json(holder),
        "waiters": c.waiters.iter().map(|w| json!({
            "pid": w.pid, "instance": w.instance, "ticket": w.ticket,
        })).collect::<Vec<_>>(),
        "announced_waiters": c.announced_waiters,
    })
}

/// A duration in nanoseconds for people: `850 ns`, `12.5 us`, `3.20 ms`, `1.50 s`.
fn nanos(ns: u64) -> String {
    let f = ns as f64;
    if ns < 1_000 {
        format!("{ns} ns")
    } else if ns < 1_000_000 {
        format!("{:.1} us", f / 1e3)
    } else if ns < 1_000_000_000 {
        format!("{:.2} ms", f / 1e6)
    } else {
        format!("{:.2} s", f / 1e9)
    }
}

/// The contention section of the table.
fn contention(r: &Report) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let _ = writeln!(
        t,
        "contention   roles {}",
        if r.role_strategy == 0 {
            "in shared memory (waiters queued by ticket)"
        } else {
            "by byte lock"
        }
    );
    for (name, c, h) in [
        ("writer", &r.contention.writer, &r.writer),
        ("checkpointer", &r.contention.checkpointer, &r.checkpointer),
    ] {
        let s = &c.stats;
        let _ = writeln!(
            t,
            "  {name:<13}acquires {}  waited {} ({:.1}%)  wait mean {} max {}  busy {}  reclaims {}  handoffs {}",
            s.acquires,
            s.waited,
            s.waited_pct(),
            nanos(s.mean_wait_ns()),
            nanos(s.max_wait_ns),
            s.busy,
            s.reclaims,
            s.handoffs
        );
        let queue = if !c.waiters.is_empty() {
            format!("{} waiting", c.waiters.len())
        } else if c.announced_waiters != 0 {
            format!("{} waiting (byte lock: no queue)", c.announced_waiters)
        } else {
            "nobody waiting".into()
        };
        let who = if h.held != 0 {
            format!("held by {}", holder(h))
        } else {
            "free".into()
        };
        let _ = writeln!(t, "               {who}, {queue}");
        for (k, w) in c.waiters.iter().enumerate() {
            let _ = writeln!(
                t,
                "               {:>3}. pid {} (instance {})  ticket {}",
                k + 1,
                w.pid,
                w.instance,
                w.ticket
            );
        }
    }
    let rd = &r.contention.readers;
    let _ = writeln!(
        t,
        "  readers      claims {}  reclaims {}  busy {}  extra {}",
        rd.claims, rd.reclaims, rd.busy, rd.extra
    );
    for a in &r.attached {
        let mut line = format!("  pid {} (instance {})", a.pid, a.instance);
        for (name, u) in [("writer", &a.writer), ("checkpointer", &a.checkpointer)] {
            let _ = write!(
                line,
                "  {name} {} acquires, {} waited",
                u.acquires,
                nanos(u.wait_ns)
            );
            if u.waiting() {
                let _ = write!(line, " (waiting, ticket {})", u.ticket);
            }
        }
        let _ = writeln!(t, "{line}");
    }
    t
}

/// Who holds an engine lock slot, for the table.
fn lock_holders(l: &SqliteLock) -> String {
    let mut parts = Vec::new();
    for (how, v) in [("exclusive", &l.exclusive), ("shared", &l.shared)] {
        if !v.is_empty() {
            let who: Vec<String> = v
                .iter()
                .map(|h| format!("pid {} (instance {})", h.pid, h.instance))
                .collect();
            parts.push(format!("{how} by {}", who.join(", ")));
        }
    }
    if l.read_only_shared {
        parts.push("shared by a read-only connection".into());
    }
    if parts.is_empty() {
        "free".into()
    } else {
        parts.join("; ")
    }
}

/// The SQLite section of the table.
fn sqlite_table(q: &Sqlite, r: &Report) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let h = &q.header;
    let _ = writeln!(
        t,
        "sqlite       wal-index version {}  change {}  page size {}  mxFrame {}  nPage {}  checksum {}",
        h.version,
        h.change,
        h.page_size,
        h.max_frame,
        h.n_page,
        if h.cksum_ok { "ok" } else { "bad" }
    );
    let _ = writeln!(
        t,
        "             salt {:#010x} {:#010x}  nBackfill {}  nBackfillAttempted {}  {}",
        h.salt[0],
        h.salt[1],
        q.nbackfill,
        q.nbackfill_attempted,
        if q.copies_agree {
            "header copies agree"
        } else {
            "header changing (the copies differ: a writer is at work)"
        }
    );
    let wal = match &q.wal {
        WalFile::Missing => "no WAL file".to_string(),
        WalFile::Unreadable(why) => format!("WAL file unreadable: {why}"),
        WalFile::Present {
            bytes,
            header: None,
        } => {
            format!("WAL file {}, no header", self::bytes(*bytes))
        }
        WalFile::Present {
            bytes,
            header: Some(w),
        } if !w.magic_ok() => format!(
            "WAL file {}, bad magic {:#010x}",
            self::bytes(*bytes),
            w.magic
        ),
        WalFile::Present {
            bytes,
            header: Some(w),
        } => {
            let verdict = match q.salts_match() {
                Some(true) => "salts match".to_string(),
                _ if h.max_frame == 0 => {
                    "salts differ (restarted: the next commit rewrites the WAL header)".into()
                }
                _ => "salts differ from the wal-index".into(),
            };
            format!(
                "WAL file {}  checkpoint seq {}  salt {:#010x} {:#010x}: {verdict}",
                self::bytes(*bytes),
                w.checkpoint_seq,
                w.salt[0],
                w.salt[1]
            )
        }
    };
    let _ = writeln!(t, "             {wal}");
    let w = &r.contention.writer;
    let mut write = holder(&r.writer);
    if !w.waiters.is_empty() {
        let who: Vec<String> = w
            .waiters
            .iter()
            .map(|x| format!("pid {} (instance {})", x.pid, x.instance))
            .collect();
        let _ = write!(write, ", {} waiting: {}", w.waiters.len(), who.join(", "));
    } else if w.announced_waiters != 0 {
        let _ = write!(write, ", {} waiting", w.announced_waiters);
    }
    let _ = writeln!(t, "  WRITE      {write}");
    for l in &q.locks {
        if l.slot == inspect::sqlite::STEP_ASIDE_SLOT {
            if l.held() {
                let _ = writeln!(t, "  STEP_ASIDE {} (slot 8)", lock_holders(l));
            }
            continue;
        }
        let mark = match l.mark {
            None => String::new(),
            Some(READMARK_NOT_USED) => "mark unused  ".into(),
            Some(m) => format!("mark {m:<8}"),
        };
        let _ = writeln!(t, "  {:<9}  {mark}{}", l.name, lock_holders(l));
    }
    t
}

/// The rates section of `watch`.
fn rates_table(r: &Rates) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    if r.reset {
        let _ = writeln!(
            t,
            "rates        sidecar re-initialized since the last refresh: counting from now"
        );
        return t;
    }
    let _ = writeln!(
        t,
        "rates        per second over the last {:.2} s",
        r.seconds
    );
    for (name, x) in [("writer", &r.writer), ("checkpointer", &r.checkpointer)] {
        let _ = writeln!(
            t,
            "  {name:<13}{:.1} acquires/s  {:.1} waits/s  {:.1} busy/s  wait mean {}",
            x.acquires,
            x.waits,
            x.busy,
            nanos(x.mean_wait_ns)
        );
    }
    let _ = writeln!(
        t,
        "  readers      {:.1} claims/s  {:.1} busy/s",
        r.reader_claims, r.reader_busy
    );
    t
}

fn holder(o: &tshm_owner_info) -> String {
    match (o.held != 0, o.alive != 0) {
        (false, _) => "free".into(),
        (true, true) => format!("pid {} (instance {})", o.pid, o.instance),
        (true, false) if o.pid != 0 => {
            format!("stale record of pid {} (dead, reclaimable)", o.pid)
        }
        (true, false) => format!(
            "a dead holder in instance slot {} (reclaimable)",
            o.instance
        ),
    }
}

fn table(db: &Path, r: &Report) -> String {
    use std::fmt::Write;
    let mut t = String::new();
    let s = &r.snapshot;
    let _ = writeln!(
        t,
        "sidecar      {}-tshm ({})",
        db.display(),
        bytes(r.sidecar_bytes)
    );
    if r.attached.is_empty() {
        let _ = writeln!(t, "mode         {}", mode_name(r.mode));
    } else {
        let _ = writeln!(
            t,
            "mode         {}, {} locks, {} attached",
            mode_name(r.mode),
            r.backend,
            count(r.attached.len() as u64, "handle", "handles")
        );
    }
    let _ = writeln!(
        t,
        "layout       {} reader slots ({}), {} instance slots, init epoch {}",
        r.reader_slots,
        if r.reader_strategy == 0 {
            "CAS"
        } else {
            "byte-lock"
        },
        r.instance_slots,
        r.init_epoch
    );
    for a in &r.attached {
        let mut locks = String::new();
        for (name, mask) in [
            ("shared", a.engine_shared),
            ("exclusive", a.engine_exclusive),
        ] {
            if mask != 0 {
                let _ = write!(locks, "  engine locks {name} {:?}", slots_of(mask));
            }
        }
        let _ = writeln!(
            t,
            "attached     pid {} (instance {}){locks}",
            a.pid, a.instance
        );
    }
    let _ = writeln!(t, "writer       {}", holder(&r.writer));
    let _ = writeln!(t, "checkpointer {}", holder(&r.checkpointer));
    if r.readers.is_empty() {
        let _ = writeln!(t, "readers      none");
    }
    for rs in &r.readers {
        // a slot its handle keeps between transactions pins nothing (TSHM_NO_FRAME)
        let pin = match rs.owner.frame {
            u64::MAX => "kept, no frame pinned".to_string(),
            f => format!("pinned frame {f}"),
        };
        let _ = writeln!(
            t,
            "reader       slot {:<4} {}  {pin}",
            rs.slot,
            holder(&rs.owner)
        );
    }
    let _ = writeln!(
        t,
        "snapshot     max_frame {}  nbackfills {}  sequence {}  page_size {}  db_size {}",
        s.max_frame, s.nbackfills, s.sequence, s.page_size, s.db_size
    );
    let _ = writeln!(
        t,
        "             checkpoint_seq {}  salt {:#010x} {:#010x}  engine {} {}",
        s.checkpoint_seq, s.salt[0], s.salt[1], s.engine[0], s.engine[1]
    );
    let _ = writeln!(
        t,
        "index        {} entries ({} dead)  tail frame {}  {} blocks  {} nodes  {} bytes  generation {}",
        r.index.entries,
        r.index.dead,
        r.index.tail_frame,
        r.index.blocks,
        r.index.nodes,
        r.index.pool_bytes,
        r.index.generation
    );
    if let Some(q) = &r.sqlite {
        t.push_str(&sqlite_table(q, r));
    }
    t.push_str(&contention(r));
    t
}

/// The sidecar of `db`, as the library names it.
fn sidecar(db: &Path) -> String {
    tshm::region::sidecar_path(db).display().to_string()
}

/// The exit status and the message for a failure to observe `db`. The library's messages
/// begin with their kind ("corrupt sidecar: ..."), and those about a missing or unsuitable
/// path name it: each reads once, with the path in front when the message does not name it.
fn failure(db: &Path, e: &tshm::Error) -> (u8, String) {
    use tshm::Error as E;
    let named = |m: &str| {
        if m.contains(&db.display().to_string()) {
            m.to_string()
        } else {
            format!("{}: {m}", db.display())
        }
    };
    match e {
        E::Corrupt(_) => (EXIT_PROBLEM, format!("{}: {e}", sidecar(db))),
        E::NotFound(m) | E::Misuse(m) => (EXIT_UNREADABLE, named(m)),
        E::CantOpen { what, source } if source.kind() == std::io::ErrorKind::IsADirectory => {
            (EXIT_UNREADABLE, named(what))
        }
        E::CantOpen { what, source } | E::Io { what, source } => (
            EXIT_UNREADABLE,
            format!(
                "{}: cannot read the sidecar: {what}: {source}",
                db.display()
            ),
        ),
        _ => (EXIT_UNREADABLE, named(&e.to_string())),
    }
}

/// Prints the failure on standard error; returns its exit status.
fn fail(db: &Path, e: &tshm::Error) -> u8 {
    let (code, message) = failure(db, e);
    eprintln!("tshm: {message}");
    code
}

/// Writes `text` to standard output. `Err` carries the exit status to stop with: 0 when the
/// reader went away (`tshm watch db | head`), 2 when writing failed otherwise.
fn emit(text: &str) -> Result<(), u8> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Err(EXIT_OK),
        Err(e) => {
            eprintln!("tshm: cannot write the report: {e}");
            Err(EXIT_UNREADABLE)
        }
    }
}

fn inspect_cmd(db: &Path, json: bool) -> u8 {
    let r = match inspect::observe(db) {
        Ok(r) => r,
        Err(e) => return fail(db, &e),
    };
    let text = if json {
        format!("{:#}\n", to_json(db, &r))
    } else {
        table(db, &r)
    };
    emit(&text).map_or_else(|code| code, |()| EXIT_OK)
}

/// What `check` validates: (JSON name, as the report says it).
const CHECKS: [(&str, &str); 4] = [
    ("header", "header"),
    ("frame_index", "frame index"),
    ("roles", "role words"),
    ("engine_regions", "engine region table"),
];

fn check_cmd(db: &Path, idle: bool, json: bool) -> u8 {
    let side = sidecar(db);
    let checked: Vec<&str> = CHECKS.iter().map(|c| c.1).collect();
    let scope = format!(
        "checked: {}; the database file is not checked",
        checked.join(", ")
    );
    // (exit status, result, problems that make it not idle, error message)
    let (code, result, problems, error) = match inspect::check(db) {
        Ok(r) => {
            let problems = if idle { r.idle_problems() } else { vec![] };
            if problems.is_empty() {
                if !json {
                    let and_idle = if idle { " and idle" } else { "" };
                    println!("sidecar {side}: consistent{and_idle} ({scope})");
                }
                (EXIT_OK, "consistent", problems, None)
            } else {
                if !json {
                    println!(
                        "sidecar {side}: consistent but not idle: {} ({scope})",
                        problems.join("; ")
                    );
                }
                (EXIT_PROBLEM, "not_idle", problems, None)
            }
        }
        Err(e) => {
            let (code, message) = failure(db, &e);
            eprintln!("tshm: {message}");
            let result = if matches!(e, tshm::Error::Corrupt(_)) {
                "corrupt"
            } else {
                "unreadable"
            };
            (code, result, vec![], Some(message))
        }
    };
    if json {
        let readable = result != "unreadable";
        let consistent = matches!(result, "consistent" | "not_idle");
        let j = json!({
            "schema": SCHEMA,
            "database": db.display().to_string(),
            "sidecar": side,
            "checked": "sidecar",
            "checks": CHECKS.iter().map(|c| c.0).collect::<Vec<_>>(),
            "database_file_checked": false,
            "result": result,
            "consistent": if readable { json!(consistent) } else { json!(null) },
            "idle": if idle && consistent { json!(problems.is_empty()) } else { json!(null) },
            "problems": problems,
            "error": error,
        });
        let _ = emit(&format!("{j:#}\n"));
    }
    code
}

fn role_rates_json(x: &inspect::RoleRates) -> serde_json::Value {
    json!({
        "acquires": x.acquires, "waits": x.waits, "busy": x.busy, "reclaims": x.reclaims,
        "handoffs": x.handoffs, "mean_wait_ns": x.mean_wait_ns,
    })
}

fn rates_json(r: &Rates) -> serde_json::Value {
    json!({
        "seconds": r.seconds,
        "reset": r.reset,
        "writer": role_rates_json(&r.writer),
        "checkpointer": role_rates_json(&r.checkpointer),
        "readers": {"claims": r.reader_claims, "busy": r.reader_busy},
    })
}

fn watch_cmd(db: &Path, interval: u64, count: Option<u64>, json: bool) -> u8 {
    // Clear-screen codes only for a terminal: a pipe or a file gets plain reports.
    let redraw = !json && std::io::stdout().is_terminal();
    let mut prev: Option<(Report, std::time::Instant)> = None;
    let mut shown = 0u64;
    loop {
        let r = match inspect::observe(db) {
            Ok(r) => r,
            Err(e) => return fail(db, &e),
        };
        let now = std::time::Instant::now();
        let rates = prev
            .as_ref()
            .map(|(p, at)| inspect::rates(p, &r, (now - *at).as_secs_f64()));
        let text = if json {
            let mut j = to_json(db, &r);
            j["rates"] = rates.as_ref().map_or(serde_json::Value::Null, rates_json);
            format!("{j}\n")
        } else {
            let rates = rates.as_ref().map_or_else(
                || "rates        from the next refresh on\n".to_string(),
                rates_table,
            );
            if redraw {
                format!("\x1b[H\x1b[2J{}{rates}", table(db, &r))
            } else {
                format!("{}{rates}{WATCH_SEPARATOR}\n", table(db, &r))
            }
        };
        if let Err(code) = emit(&text) {
            return code;
        }
        prev = Some((r, now));
        shown += 1;
        if count.is_some_and(|c| shown >= c) {
            return EXIT_OK;
        }
        std::thread::sleep(std::time::Duration::from_millis(interval));
    }
}

fn completions(shell: Shell) -> u8 {
    let shell = match shell {
        Shell::Bash => clap_complete::Shell::Bash,
        Shell::Zsh => clap_complete::Shell::Zsh,
        Shell::Fish => clap_complete::Shell::Fish,
    };
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut Cli::command(), "tshm", &mut script);
    emit(&String::from_utf8_lossy(&script)).map_or_else(|code| code, |()| EXIT_OK)
}

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // `--help` and `--version` print on standard output and succeed; every other
            // error of the command line is a usage error (clap's own status would be 2, the
            // one of "cannot read").
            let code = if e.use_stderr() { EXIT_USAGE } else { EXIT_OK };
            let _ = e.print();
            return ExitCode::from(code);
        }
    };
    ExitCode::from(match cli.cmd {
        Cmd::Inspect { db, json } => inspect_cmd(&db, json),
        Cmd::Check { db, idle, json } => check_cmd(&db, idle, json),
        Cmd::Watch {
            db,
            interval,
            count,
            json,
        } => watch_cmd(&db, interval, count, json),
        Cmd::Completions { shell } => completions(shell),
    })
}
