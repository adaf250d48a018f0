//! `tshm`: look at a database's sidecar without taking part.
//!
//! * `tshm inspect <db> [--json]` — mode, attached processes, role holders, reader slots, the
//!   snapshot, the frame index, the lock kind in use;
//! * `tshm check [--idle] <db>` — exit 0 when the sidecar is sound (and, with `--idle`, nobody
//!   is attached and nothing is left uncommitted or un-checkpointed); 1 when it is not; 2 when it
//!   cannot be read;
//! * `tshm watch <db> [--interval MS]` — `inspect`, refreshed until interrupted.
//!
//! The inspector takes no lock and writes nothing (see `tshm::inspect`).

use clap::{Parser, Subcommand};
use serde_json::json;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tshm::inspect::{self, Report};
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
    /// Show who is attached, who holds what, the snapshot and the frame index.
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
    /// Refresh `inspect` until interrupted.
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
        "reader_slots": r.reader_slots,
        "instance_slots": r.instance_slots,
        "init_epoch": r.init_epoch,
        "attached": r.attached.iter().map(|a| json!({
            "pid": a.pid, "instance": a.instance, "alive": true,
            "engine_locks_shared": slots_of(a.engine_shared),
            "engine_locks_exclusive": slots_of(a.engine_exclusive),
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
    })
}

fn holder(o: &tshm_owner_info) -> String {
    match (o.held != 0, o.alive != 0) {
        (false, _) => "free".into(),
        (true, true) => format!("pid {} (instance {})", o.pid, o.instance),
        (true, false) => format!("stale record of pid {} (dead, reclaimable)", o.pid),
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
        Cmd::Watch { db, interval } => loop {
            match inspect::observe(&db) {
                Ok(r) => print!("\x1b[H\x1b[2J{}", table(&db, &r)),
                Err(e) => return cannot(&db, &e),
            }
            std::thread::sleep(std::time::Duration::from_millis(interval.max(50)));
        },
    }
}
