//! `tshm`: look at a database's sidecar without taking part.
//!
//! * `tshm inspect <db> [--json]` — mode, attached processes, role holders, reader slots, the
//!   snapshot, the frame index, the lock kind in use, and SQLite's wal-index and lock slots on a
//!   database used through the SQLite shim;
//! * `tshm check [--idle] <db>` — exit 0 when the sidecar is sound (and, with `--idle`, nobody
//!   is attached and nothing is left uncommitted or un-checkpointed); 1 when it is not; 2 when it
//!   cannot be read;
//! * `tshm watch <db> [--interval MS]` — `inspect`, refreshed until interrupted, with the
//!   contention rates per second between two refreshes.
//!
//! The inspector takes no lock and writes nothing (see `tshm::inspect`).
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

use clap::{Parser, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tshm::inspect::sqlite::{Sqlite, SqliteLock, WalFile, READMARK_NOT_USED};
use tshm::inspect::{self, Rates, Report, RoleContention};
use tshm::tshm_owner_info;

#[derive(Parser)]
#[command(
    name = "tshm",
    version,
    about = "Inspect a libtshm sidecar without taking part"
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
    /// field list in the binary's documentation) and each attached handle's own counters.
    ///
    /// On a database used through the SQLite shim, the sqlite section shows the wal-index
    /// header (mxFrame, nPage, page size, salts, nBackfill), whether its two copies agree,
    /// the WAL file's header and whether its salts match, and SQLite's lock slots by name
    /// (WRITE, CKPT, RECOVER, READ0..READ4 with their read marks) with who holds each;
    /// `--json` prints it under `sqlite` (`null` elsewhere).
    Inspect {
        db: PathBuf,
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Validate the sidecar: exit 0 when sound.
    Check {
        db: PathBuf,
        /// Also require that nobody is attached and nothing is pending.
        #[arg(long)]
        idle: bool,
    },
    /// Refresh `inspect` until interrupted, with contention rates per second (acquisitions,
    /// waits, busy returns and the mean wait over the last interval).
    Watch {
        db: PathBuf,
        /// Refresh period in milliseconds.
        #[arg(long, default_value_t = 1000)]
        interval: u64,
    },
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
            format!("WAL file {bytes} bytes, no header")
        }
        WalFile::Present {
            bytes,
            header: Some(w),
        } if !w.magic_ok() => format!("WAL file {bytes} bytes, bad magic {:#010x}", w.magic),
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
                "WAL file {bytes} bytes  checkpoint seq {}  salt {:#010x} {:#010x}: {verdict}",
                w.checkpoint_seq, w.salt[0], w.salt[1]
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
        "sidecar      {}-tshm ({} bytes)",
        db.display(),
        r.sidecar_bytes
    );
    if r.attached.is_empty() {
        let _ = writeln!(t, "mode         {}", mode_name(r.mode));
    } else {
        let _ = writeln!(
            t,
            "mode         {}, {} locks, {} handle(s) attached",
            mode_name(r.mode),
            r.backend,
            r.attached.len()
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
        let _ = writeln!(
            t,
            "reader       slot {:<4} {}  pinned frame {}",
            rs.slot,
            holder(&rs.owner),
            rs.owner.frame
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

/// Exit status 2 and a message naming what went wrong.
fn cannot(db: &Path, e: &tshm::Error) -> ExitCode {
    let what = match e {
        tshm::Error::Corrupt(_) => {
            eprintln!("tshm: {}: {e}", db.display());
            return ExitCode::from(1);
        }
        tshm::Error::Io { source, .. } if source.kind() == std::io::ErrorKind::PermissionDenied => {
            "permission denied"
        }
        tshm::Error::NotFound(_) => "not found",
        _ => "cannot read the sidecar",
    };
    eprintln!("tshm: {}: {what}: {e}", db.display());
    ExitCode::from(2)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.cmd {
        Cmd::Inspect { db, json } => match inspect::observe(&db) {
            Ok(r) if json => {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&to_json(&db, &r)).unwrap()
                );
                ExitCode::SUCCESS
            }
            Ok(r) => {
                print!("{}", table(&db, &r));
                ExitCode::SUCCESS
            }
            Err(e) => cannot(&db, &e),
        },
        Cmd::Check { db, idle } => match inspect::check(&db) {
            Ok(r) => {
                let problems = if idle { r.idle_problems() } else { vec![] };
                if problems.is_empty() {
                    println!(
                        "ok: {} sound{}",
                        db.display(),
                        if idle { " and idle" } else { "" }
                    );
                    ExitCode::SUCCESS
                } else {
                    println!("not idle: {}", problems.join("; "));
                    ExitCode::from(1)
                }
            }
            Err(e) => cannot(&db, &e),
        },
        Cmd::Watch { db, interval } => {
            let mut prev: Option<(Report, std::time::Instant)> = None;
            loop {
                let r = match inspect::observe(&db) {
                    Ok(r) => r,
                    Err(e) => return cannot(&db, &e),
                };
                let now = std::time::Instant::now();
                let rates = match &prev {
                    Some((p, at)) => rates_table(&inspect::rates(p, &r, (now - *at).as_secs_f64())),
                    None => "rates        from the next refresh on\n".into(),
                };
                print!("\x1b[H\x1b[2J{}{rates}", table(&db, &r));
                prev = Some((r, now));
                std::thread::sleep(std::time::Duration::from_millis(interval.max(50)));
            }
        }
    }
}
