//! Observing a sidecar without taking part (the `tshm` inspector).
//!
//! Owns: [`observe`] and [`check`]. An observer opens and maps the sidecar as a read-only
//! handle does (through the process's one descriptor per sidecar, read-write when the file
//! allows it, so that a later writable handle can share it) and validates it like a joining
//! process, but takes no lock, claims no instance and writes nothing: who is alive comes from
//! lock probes (`F_OFD_GETLK`/`F_GETLK`), which conflict with both lock kinds and change
//! nothing. So inspecting a live system never changes who is last to close, never blocks an
//! opener and never reclaims anything.
//!
//! **Contention.** The report carries the role and reader counters of the header
//! (`ROLE_STAT_*`, `READER_STAT_*` in [`crate::layout`]), each attached instance's own role
//! counters and wait ticket, and who waits for each role in arrival order. Every value is one
//! atomic load; the words of a report are loaded one after another, not as a unit, so while the
//! role changes hands they may disagree a little (`waited` a step ahead of `acquires`). Nothing
//! here trusts them to agree: derived figures saturate instead of overflowing, and
//! [`rates`] turns two reports into per-second rates that read a counter that went down (a
//! re-initialized sidecar) as no activity rather than as a huge or negative rate. The walks over
//! instances and reader slots stop at their high-water marks, clamped to the tables.
//!
//! **SQLite.** On a database used through the SQLite shim the report also carries SQLite's
//! view ([`sqlite`]): its lock slots by name with their holders and read marks, and the
//! wal-index header the shim keeps in engine region 0, checked against the `<db>-wal` header.

use crate::error::{Error, Result};
use crate::index::{tshm_index_stats, Index};
use crate::layout::*;
use crate::lock::{self, Held};
use crate::node::{Mapped, Node};
use crate::region;
use crate::slots::{self, tshm_owner_info};
use crate::snapshot::{tshm_snapshot, Latch};
use crate::Role;
use std::path::Path;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;

pub mod sqlite;

/// One reader slot that has an owner.
#[derive(Clone, Copy, Debug)]
pub struct ReaderSlot {
    pub slot: u32,
    pub owner: tshm_owner_info,
}

/// One attached handle.
#[derive(Clone, Copy, Debug)]
pub struct Attached {
    pub pid: u32,
    pub instance: u32,
    /// Engine lock slots held SHARED (bit i: slot i).
    pub engine_shared: u32,
    /// Engine lock slots held EXCLUSIVE.
    pub engine_exclusive: u32,
    /// This handle's own use of the writer role.
    pub writer: InstanceRole,
    /// This handle's own use of the checkpointer role.
    pub checkpointer: InstanceRole,
}

/// One handle's use of one role, from its instance record.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InstanceRole {
    /// Times this handle took the role.
    pub acquires: u64,
    /// Nanoseconds this handle spent waiting for it, in total.
    pub wait_ns: u64,
    /// Its place in the role's queue while it waits (arrival order); 0 when not waiting.
    pub ticket: u64,
}

impl InstanceRole {
    /// Whether the handle is waiting for the role now.
    pub fn waiting(&self) -> bool {
        self.ticket != 0
    }
}

/// The counters of one exclusive role (header words `ROLE_STAT_*`), since the sidecar was
/// initialized.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RoleStats {
    /// Times the role was taken.
    pub acquires: u64,
    /// Acquisitions that had to wait for a holder.
    pub waited: u64,
    /// Nanoseconds spent waiting by those acquisitions, in total.
    pub wait_ns: u64,
    /// The longest single wait, in nanoseconds.
    pub max_wait_ns: u64,
    /// Attempts refused with `TSHM_BUSY` (no wait asked for, or the timeout ran out).
    pub busy: u64,
    /// Holders found dead whose role was taken over.
    pub reclaims: u64,
    /// Releases that handed the role directly to the longest waiter.
    pub handoffs: u64,
}

impl RoleStats {
    /// Mean wait of the acquisitions that waited (0 when none did).
    pub fn mean_wait_ns(&self) -> u64 {
        self.wait_ns.checked_div(self.waited).unwrap_or(0)
    }

    /// Share of acquisitions that waited, in percent (0 when there were none; at most 100
    /// even when a report caught the holder between its two stores).
    pub fn waited_pct(&self) -> f64 {
        if self.acquires == 0 {
            0.0
        } else {
            (self.waited as f64 * 100.0 / self.acquires as f64).min(100.0)
        }
    }

    fn read(shm: &region::Shm, base: usize) -> RoleStats {
        let w = |off: usize| shm.u64(base + off).load(Relaxed);
        RoleStats {
            acquires: w(ROLE_STAT_ACQUIRES),
            waited: w(ROLE_STAT_WAITED),
            wait_ns: w(ROLE_STAT_WAIT_NS),
            max_wait_ns: w(ROLE_STAT_MAX_WAIT_NS),
            busy: w(ROLE_STAT_BUSY),
            reclaims: w(ROLE_STAT_RECLAIMS),
            handoffs: w(ROLE_STAT_HANDOFFS),
        }
    }
}

/// The reader counters (header words `READER_STAT_*`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ReaderStats {
    /// Reader slots claimed.
    pub claims: u64,
    /// Stale slots (of dead readers) taken over.
    pub reclaims: u64,
    /// `TSHM_BUSY` returns: every slot held by a live reader.
    pub busy: u64,
    /// Transactions that took a slot of their own beside the handle's kept ones.
    pub extra: u64,
}

/// A handle waiting for a role.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiter {
    pub pid: u32,
    pub instance: u32,
    /// Arrival order: the smallest ticket is served first.
    pub ticket: u64,
}

/// Contention on one role: its counters and its queue.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct RoleContention {
    pub stats: RoleStats,
    /// Attached handles waiting for the role now, in arrival order (shared-memory roles).
    pub waiters: Vec<Waiter>,
    /// Handles that announced a wait on the byte-lock role's release counter (byte-lock
    /// roles keep no queue; a waiter killed while waiting stays counted until the sidecar is
    /// reset).
    pub announced_waiters: u32,
}

/// Everything about who waits for what.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Contention {
    pub writer: RoleContention,
    pub checkpointer: RoleContention,
    pub readers: ReaderStats,
}

/// Per-second rates of one role between two reports (see [`rates`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RoleRates {
    pub acquires: f64,
    pub waits: f64,
    pub busy: f64,
    pub reclaims: f64,
    pub handoffs: f64,
    /// Mean wait of the acquisitions that waited during the interval (0 when none did).
    pub mean_wait_ns: u64,
}

/// Per-second rates between two reports.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Rates {
    /// Seconds between the two reports.
    pub seconds: f64,
    /// The sidecar was re-initialized, or a counter went down, between the two reports: the
    /// interval's activity is unknown and every rate reads 0.
    pub reset: bool,
    pub writer: RoleRates,
    pub checkpointer: RoleRates,
    pub reader_claims: f64,
    pub reader_busy: f64,
}

/// Rates from `prev` to `cur`, taken `seconds` apart: the pure part of `tshm watch`. A
/// counter below its previous value (or a changed init epoch) means the sidecar was
/// re-initialized in between: the interval shows 0 rather than a wrapped difference. An
/// interval that is not positive shows 0 too.
pub fn rates(prev: &Report, cur: &Report, seconds: f64) -> Rates {
    let (p, c) = (&prev.contention, &cur.contention);
    let pairs = |a: &RoleStats, b: &RoleStats| {
        [
            (a.acquires, b.acquires),
            (a.waited, b.waited),
            (a.wait_ns, b.wait_ns),
            (a.busy, b.busy),
            (a.reclaims, b.reclaims),
            (a.handoffs, b.handoffs),
        ]
    };
    let went_down = pairs(&p.writer.stats, &c.writer.stats)
        .into_iter()
        .chain(pairs(&p.checkpointer.stats, &c.checkpointer.stats))
        .chain([
            (p.readers.claims, c.readers.claims),
            (p.readers.busy, c.readers.busy),
        ])
        .any(|(a, b)| b < a);
    let reset = went_down || prev.init_epoch != cur.init_epoch;
    let mut out = Rates {
        seconds,
        reset,
        ..Default::default()
    };
    if reset || !seconds.is_finite() || seconds <= 0.0 {
        return out;
    }
    let per_s = |a: u64, b: u64| (b - a) as f64 / seconds;
    let role = |a: &RoleStats, b: &RoleStats| RoleRates {
        acquires: per_s(a.acquires, b.acquires),
        waits: per_s(a.waited, b.waited),
        busy: per_s(a.busy, b.busy),
        reclaims: per_s(a.reclaims, b.reclaims),
        handoffs: per_s(a.handoffs, b.handoffs),
        mean_wait_ns: (b.wait_ns - a.wait_ns)
            .checked_div(b.waited - a.waited)
            .unwrap_or(0),
    };
    out.writer = role(&p.writer.stats, &c.writer.stats);
    out.checkpointer = role(&p.checkpointer.stats, &c.checkpointer.stats);
    out.reader_claims = per_s(p.readers.claims, c.readers.claims);
    out.reader_busy = per_s(p.readers.busy, c.readers.busy);
    out
}

/// Everything the inspector shows.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub sidecar_bytes: u64,
    /// 1 SHARED, 2 EXCLUSIVE, 0 when nobody is attached.
    pub mode: u32,
    /// Lock kind the attached processes use: "ofd", "posix" or "none" (nobody attached).
    pub backend: &'static str,
    pub reader_strategy: u32,
    /// How the writer and checkpointer roles are held: `ROLES_SHM` (0) or `ROLES_BYTELOCK` (1).
    pub role_strategy: u32,
    pub reader_slots: u32,
    pub instance_slots: u32,
    pub init_epoch: u64,
    pub attached: Vec<Attached>,
    pub writer: tshm_owner_info,
    pub checkpointer: tshm_owner_info,
    pub readers: Vec<ReaderSlot>,
    pub snapshot: tshm_snapshot,
    pub index: tshm_index_stats,
    pub contention: Contention,
    /// SQLite's view, on a database used through the SQLite shim (see [`sqlite`]).
    pub sqlite: Option<sqlite::Sqlite>,
}

impl Report {
    /// No handle attached, no role or slot held by a live holder, no uncommitted or
    /// un-checkpointed state: what a cleanly shut down sidecar looks like.
    pub fn idle_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.attached.is_empty() {
            p.push(count(self.attached.len() as u64, "handle", "handles") + " attached");
        }
        for (name, o) in [
            ("writer", &self.writer),
            ("checkpointer", &self.checkpointer),
        ] {
            if o.held != 0 {
                p.push(format!("{name} role held by pid {}", o.pid));
            }
        }
        if !self.readers.is_empty() {
            p.push(match self.readers.len() {
                1 => "1 reader slot has an owner".into(),
                n => format!("{n} reader slots have an owner"),
            });
        }
        if self.index.entries != self.index.dead {
            p.push(format!(
                "frame index holds {} live entries",
                self.index.entries.saturating_sub(self.index.dead)
            ));
        }
        // Both words are as published (or as the file holds): neither bounds the other.
        let (nbackfills, max_frame) = (self.snapshot.nbackfills, self.snapshot.max_frame);
        if nbackfills < max_frame {
            p.push(format!(
                "frames {}..{max_frame} are not checkpointed",
                nbackfills + 1
            ));
        } else if nbackfills > max_frame {
            p.push(format!(
                "nbackfills {nbackfills} is above max_frame {max_frame}: the published snapshot \
                 is inconsistent"
            ));
        }
        p
    }
}

/// `n` and the singular or the plural noun: `1 handle`, `2 handles`, `0 handles`.
pub fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// A size in bytes: `1 byte`, `4096 bytes`.
pub fn bytes(n: u64) -> String {
    count(n, "byte", "bytes")
}

/// The observer's node: opened read-only, mapped and validated, no lock taken.
/// A directory, a missing database and a missing sidecar are refused with messages that name
/// the path (the inspector prints them as they are); so is a sidecar shorter than its header,
/// with its real length: an empty one was created by an opener that has not initialized it.
fn attach(db: &Path) -> Result<Arc<Node>> {
    crate::coordinator::check_db_path(db)?;
    if !db.exists() {
        return Err(Error::NotFound(format!("no database at {}", db.display())));
    }
    let side = region::sidecar_path(db);
    if std::fs::symlink_metadata(&side).is_err() {
        return Err(Error::NotFound(format!("no sidecar at {}", side.display())));
    }
    let node = Node::get(db, true, false, None)?;
    if node.mapped.get().is_none() {
        let len = region::file_len(node.fd())?;
        if len == 0 {
            return Err(Error::Corrupt(
                "the file is empty (0 bytes): uninitialized; the next opener that finds nobody attached \
                 initializes it"
                    .into(),
            ));
        }
        if len < PAGE {
            return Err(Error::Corrupt(format!(
                "the file is {}, shorter than the {PAGE}-byte header",
                bytes(len)
            )));
        }
        // the fixed part only (the pool is mapped in windows): a huge file maps no more; the
        // node's protection, not the observer's: a handle of this process may share it
        let most = Geometry::new(MAX_READERS, READERS_CAS, MAX_INSTANCES, ROLES_SHM).base_len;
        let shm = node.map(len.min(most))?;
        let geom = region::read_header(&shm).map_err(Error::Corrupt)?;
        crate::index::validate(&shm, &geom, node.fd())?;
        node.set_mapped(shm, geom);
        crate::testpoint::hit("observe_mapped");
    }
    Ok(node)
}

/// Reads the state of the sidecar of `db` without taking part.
pub fn observe(db: &Path) -> Result<Report> {
    let node = attach(db)?;
    let m = node.mapped()?;
    let backend = match lock::probe(node.fd(), node.backend, LOCK_LIFETIME)?.0 {
        Held::Free => "none",
        _ => match lock::probe(node.fd(), lock::Backend::Ofd, LOCK_LIFETIME) {
            Ok((_, pid)) if pid > 0 => "posix",
            Ok(_) => "ofd",
            Err(_) => "posix",
        },
    };
    let attached = attached_instances(&node, m)?;
    let mut readers = Vec::new();
    // slots above the reader high-water mark were never claimed in this session
    let reader_hwm = m.shm.u32(H_READER_HWM).load(Acquire).min(m.geom.readers);
    for i in 0..reader_hwm {
        let o = slots::owner(&node, 3 + i)?;
        if o.held != 0 {
            readers.push(ReaderSlot { slot: i, owner: o });
        }
    }
    let sqlite = sqlite::observe(&node, m, db, &attached)?;
    Ok(Report {
        sidecar_bytes: region::file_len(node.fd())?,
        mode: if attached.is_empty() {
            0
        } else {
            m.shm.u32(H_MODE).load(Acquire)
        },
        backend,
        reader_strategy: m.geom.reader_strategy,
        role_strategy: m.geom.role_strategy,
        reader_slots: m.geom.readers,
        instance_slots: m.geom.instances,
        init_epoch: m.shm.u64(H_INIT_EPOCH).load(Relaxed),
        writer: role_holder(&node, m, Role::Writer)?,
        checkpointer: role_holder(&node, m, Role::Checkpointer)?,
        readers,
        snapshot: Latch { shm: &m.shm }.read(),
        index: Index::new(m).stats(),
        contention: Contention {
            writer: RoleContention {
                stats: RoleStats::read(&m.shm, H_WRITER_STATS),
                waiters: queue(&attached, |a| a.writer),
                announced_waiters: m.shm.u32(H_WRITER_WAITERS).load(Relaxed),
            },
            checkpointer: RoleContention {
                stats: RoleStats::read(&m.shm, H_CKPT_STATS),
                waiters: queue(&attached, |a| a.checkpointer),
                announced_waiters: m.shm.u32(H_CKPT_WAITERS).load(Relaxed),
            },
            readers: ReaderStats {
                claims: m.shm.u64(H_READER_STATS + READER_STAT_CLAIMS).load(Relaxed),
                reclaims: m
                    .shm
                    .u64(H_READER_STATS + READER_STAT_RECLAIMS)
                    .load(Relaxed),
                busy: m.shm.u64(H_READER_STATS + READER_STAT_BUSY).load(Relaxed),
                extra: m.shm.u64(H_READER_STATS + READER_STAT_EXTRA).load(Relaxed),
            },
        },
        attached,
        sqlite,
    })
}

/// The attached handles with their engine locks and role counters. The walk covers the
/// instances that may be in use: those below the high-water mark, clamped to the table (a
/// corrupt mark cannot steer it beyond).
fn attached_instances(node: &Node, m: &Mapped) -> Result<Vec<Attached>> {
    let hwm = m
        .shm
        .u32(H_INSTANCE_HWM)
        .load(Acquire)
        .min(m.geom.instances);
    let mut out = Vec::new();
    for i in 0..hwm {
        let rec = m.geom.instance(i);
        let id = m.shm.u64(rec + I_ID).load(Acquire);
        if id == 0 || !slots::instance_alive(node, i)? {
            continue;
        }
        let mask = m.shm.u64(rec + I_ENGINE_LOCKS).load(Acquire);
        let role = |acquires: usize, wait_ns: usize, ticket: usize| InstanceRole {
            acquires: m.shm.u64(rec + acquires).load(Relaxed),
            wait_ns: m.shm.u64(rec + wait_ns).load(Relaxed),
            ticket: m.shm.u64(rec + ticket).load(Acquire),
        };
        out.push(Attached {
            pid: (id >> 32) as u32,
            instance: i,
            engine_shared: mask as u32,
            engine_exclusive: (mask >> 32) as u32,
            writer: role(I_WRITER_ACQUIRES, I_WRITER_WAIT_NS, I_WRITER_TICKET),
            checkpointer: role(I_CKPT_ACQUIRES, I_CKPT_WAIT_NS, I_CKPT_TICKET),
        });
    }
    Ok(out)
}

/// The attached handles waiting for a role, in arrival order (ticket, then instance).
fn queue(attached: &[Attached], role: fn(&Attached) -> InstanceRole) -> Vec<Waiter> {
    let mut q: Vec<Waiter> = attached
        .iter()
        .filter(|a| role(a).waiting())
        .map(|a| Waiter {
            pid: a.pid,
            instance: a.instance,
            ticket: role(a).ticket,
        })
        .collect();
    q.sort_by_key(|w| (w.ticket, w.instance));
    q
}

/// Who holds `role`. Shared-memory roles name their holder's tag in the role word; a tag whose
/// generation no longer matches its instance record belongs to a holder that died and whose
/// slot was reused (its pid is unknown). A free role word — and the byte-lock strategy — fall
/// back to the byte lock and its owner record, so a holder that takes the byte lock is shown
/// under either strategy.
fn role_holder(node: &Node, m: &Mapped, role: Role) -> Result<tshm_owner_info> {
    let (word, byte) = match role {
        Role::Writer => (H_WRITER_WORD, 1),
        Role::Checkpointer => (H_CKPT_WORD, 2),
    };
    if m.geom.role_strategy == ROLES_SHM {
        let tag = m.shm.u64(word).load(Acquire) & !ROLE_WAITERS;
        if let Some((i, generation)) = split_tag(tag) {
            if i >= m.geom.instances {
                return Err(Error::Corrupt(format!(
                    "the {} role word {tag:#x} names instance {i}, beyond the {} instance slots",
                    role.name(),
                    m.geom.instances
                )));
            }
            let rec = m.geom.instance(i);
            let current = m.shm.u64(rec + I_GENERATION).load(Acquire) & TAG_GEN_MASK == generation;
            let id = if current {
                m.shm.u64(rec + I_ID).load(Acquire)
            } else {
                0
            };
            return Ok(tshm_owner_info {
                id,
                nonce: if current {
                    m.shm.u64(rec + I_NONCE).load(Relaxed)
                } else {
                    0
                },
                frame: 0,
                pid: (id >> 32) as u32,
                instance: i,
                held: 1,
                alive: (current && slots::instance_alive(node, i)?) as i32,
            });
        }
    }
    crate::roles::owner(node, byte)
}

/// Validates the sidecar of `db`: the header, the index counters against each other and the
/// file's length, the directory (a tree, every chain ending, work bounded by the node count)
/// and the pool's units against those in use. `Ok` when sound.
pub fn check(db: &Path) -> Result<Report> {
    let node = attach(db)?;
    let m = node.mapped()?;
    Index::new(m).check()?;
    observe(db)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::snapshot::{tshm_snapshot, TSHM_SNAP_MAX_FRAME, TSHM_SNAP_NBACKFILLS};
    use crate::{Coordinator, Options, Role};
    use std::os::fd::AsRawFd;

    fn temp_db(name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
        let dir = std::env::temp_dir().join(format!("tshm-insp-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir); // an earlier run's, with this PID
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("c.db");
        std::fs::write(&db, b"").unwrap();
        (dir, db)
    }

    /// A writable mapping of the sidecar of `db`, apart from the library's own: what another
    /// process's stores look like to the observer.
    fn writable(db: &Path) -> (std::fs::File, region::Shm) {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(region::sidecar_path(db))
            .unwrap();
        let len = f.metadata().unwrap().len();
        let shm = region::Shm::map(f.as_raw_fd(), len, true).unwrap();
        (f, shm)
    }

    fn put_role(shm: &region::Shm, base: usize, v: [u64; 7]) {
        let offs = [
            ROLE_STAT_ACQUIRES,
            ROLE_STAT_WAITED,
            ROLE_STAT_WAIT_NS,
            ROLE_STAT_MAX_WAIT_NS,
            ROLE_STAT_BUSY,
            ROLE_STAT_RECLAIMS,
            ROLE_STAT_HANDOFFS,
        ];
        for (off, v) in offs.into_iter().zip(v) {
            shm.u64(base + off).store(v, Relaxed);
        }
    }

    /// Counter words written into a sidecar the library made come back in the report: the role
    /// and reader counters, the derived mean and share, each handle's own counters, the holder
    /// named by the role word and the waiters in ticket order (not instance order). A stale or
    /// impossible role word and an absurd high-water mark are reported, not trusted.
    #[test]
    fn report_carries_the_counters_the_holder_and_the_queue() {
        let (dir, db) = temp_db("counters");
        let a = Coordinator::open(&db, &Options::default()).unwrap();
        let b = Coordinator::open(&db, &Options::default()).unwrap();
        let c = Coordinator::open(&db, &Options::default()).unwrap();
        a.acquire(Role::Writer, 0).unwrap();
        let before = observe(&db).unwrap();
        assert_eq!(before.role_strategy, ROLES_SHM);
        assert_eq!(before.contention.writer.waiters, vec![]);
        let me = std::process::id();
        let ia = before.writer.instance;
        assert_eq!((before.writer.alive, before.writer.pid), (1, me));
        let others: Vec<u32> = before
            .attached
            .iter()
            .map(|x| x.instance)
            .filter(|i| *i != ia)
            .collect();
        assert_eq!(others.len(), 2);

        let (_f, shm) = writable(&db);
        let g = region::read_header(&shm).unwrap();
        let rec = |i: u32| g.instance(i);
        let generation = shm.u64(rec(ia) + I_GENERATION).load(Relaxed);
        let saved_word = shm.u64(H_WRITER_WORD).load(Relaxed);
        shm.u64(H_WRITER_WORD)
            .store(make_tag(ia, generation) | ROLE_WAITERS, Relaxed);
        put_role(
            &shm,
            H_WRITER_STATS,
            [40, 10, 5_000_000, 2_000_000, 3, 1, 9],
        );
        put_role(&shm, H_CKPT_STATS, [7, 0, 0, 0, 2, 0, 0]);
        for (k, v) in [11u64, 12, 13, 14].into_iter().enumerate() {
            shm.u64(H_READER_STATS + k * 8).store(v, Relaxed);
        }
        // the second other handle arrived first
        shm.u64(rec(others[0]) + I_WRITER_TICKET).store(8, Relaxed);
        shm.u64(rec(others[1]) + I_WRITER_TICKET).store(7, Relaxed);
        shm.u64(rec(others[1]) + I_CKPT_TICKET).store(3, Relaxed);
        shm.u64(rec(ia) + I_WRITER_ACQUIRES).store(25, Relaxed);
        shm.u64(rec(ia) + I_WRITER_WAIT_NS).store(1_500, Relaxed);
        shm.u64(rec(ia) + I_CKPT_ACQUIRES).store(4, Relaxed);
        shm.u64(rec(ia) + I_CKPT_WAIT_NS).store(60, Relaxed);

        let r = observe(&db).unwrap();
        let w = &r.contention.writer;
        assert_eq!(
            w.stats,
            RoleStats {
                acquires: 40,
                waited: 10,
                wait_ns: 5_000_000,
                max_wait_ns: 2_000_000,
                busy: 3,
                reclaims: 1,
                handoffs: 9
            }
        );
        assert_eq!(w.stats.mean_wait_ns(), 500_000);
        assert_eq!(w.stats.waited_pct(), 25.0);
        assert_eq!(r.contention.checkpointer.stats.acquires, 7);
        assert_eq!(r.contention.checkpointer.stats.busy, 2);
        assert_eq!(r.contention.checkpointer.stats.mean_wait_ns(), 0);
        assert_eq!(
            r.contention.readers,
            ReaderStats {
                claims: 11,
                reclaims: 12,
                busy: 13,
                extra: 14
            }
        );
        assert_eq!(
            (
                r.writer.held,
                r.writer.alive,
                r.writer.pid,
                r.writer.instance
            ),
            (1, 1, me, ia)
        );
        let waiter = |instance, ticket| Waiter {
            pid: me,
            instance,
            ticket,
        };
        assert_eq!(w.waiters, vec![waiter(others[1], 7), waiter(others[0], 8)]);
        assert_eq!(
            r.contention.checkpointer.waiters,
            vec![waiter(others[1], 3)]
        );
        let mine = r.attached.iter().find(|x| x.instance == ia).unwrap();
        assert_eq!(
            (mine.writer, mine.checkpointer),
            (
                InstanceRole {
                    acquires: 25,
                    wait_ns: 1_500,
                    ticket: 0
                },
                InstanceRole {
                    acquires: 4,
                    wait_ns: 60,
                    ticket: 0
                }
            )
        );
        let second = r.attached.iter().find(|x| x.instance == others[1]).unwrap();
        assert!(second.writer.waiting() && second.checkpointer.waiting());

        // a role word whose generation is not the instance's: a dead holder, pid unknown
        shm.u64(H_WRITER_WORD)
            .store(make_tag(ia, generation + 1), Relaxed);
        let r = observe(&db).unwrap();
        assert_eq!((r.writer.held, r.writer.alive, r.writer.pid), (1, 0, 0));
        // a role word naming an instance beyond the table is corruption, not an index
        shm.u64(H_WRITER_WORD)
            .store(make_tag(g.instances, 1), Relaxed);
        assert!(matches!(observe(&db), Err(Error::Corrupt(m)) if m.contains("role word")));
        shm.u64(H_WRITER_WORD).store(saved_word, Relaxed);
        // the instance walk stops at the high-water mark, which is clamped to the table
        let hwm = shm.u32(H_INSTANCE_HWM).load(Relaxed);
        assert_eq!(hwm, 3);
        shm.u32(H_INSTANCE_HWM).store(u32::MAX, Relaxed);
        assert_eq!(observe(&db).unwrap().attached.len(), 3);
        shm.u32(H_INSTANCE_HWM).store(1, Relaxed);
        assert_eq!(observe(&db).unwrap().attached.len(), 1);
        shm.u32(H_INSTANCE_HWM).store(hwm, Relaxed);

        for i in others {
            shm.u64(rec(i) + I_WRITER_TICKET).store(0, Relaxed);
            shm.u64(rec(i) + I_CKPT_TICKET).store(0, Relaxed);
        }
        a.release(Role::Writer).unwrap();
        for h in [c, b, a] {
            h.close(|_| {}).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// The reader slot walk stops at the reader high-water mark, clamped to the table.
    #[test]
    fn reader_walk_is_bounded_by_the_high_water_mark() {
        let (dir, db) = temp_db("reader-hwm");
        let a = Coordinator::open(&db, &Options::default()).unwrap();
        let (slot, _) = a.reader_begin().unwrap();
        let shown = |r: &Report| r.readers.iter().map(|x| x.slot).collect::<Vec<_>>();
        assert_eq!(shown(&observe(&db).unwrap()), vec![slot]);
        let (_f, shm) = writable(&db);
        let hwm = shm.u32(H_READER_HWM).load(Relaxed);
        assert!(hwm > slot, "{hwm} {slot}");
        shm.u32(H_READER_HWM).store(u32::MAX, Relaxed);
        assert_eq!(shown(&observe(&db).unwrap()), vec![slot]);
        shm.u32(H_READER_HWM).store(slot, Relaxed);
        assert_eq!(shown(&observe(&db).unwrap()), Vec::<u32>::new());
        shm.u32(H_READER_HWM).store(hwm, Relaxed);
        a.reader_end(slot).unwrap();
        a.close(|_| {}).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Byte-lock roles have no role word: a word found there is not taken for the holder.
    #[test]
    fn bytelock_roles_name_the_lock_holder_not_the_word() {
        let (dir, db) = temp_db("bytelock");
        let opts = Options {
            role_strategy: ROLES_BYTELOCK,
            ..Options::default()
        };
        let a = Coordinator::open(&db, &opts).unwrap();
        let (_f, shm) = writable(&db);
        shm.u64(H_CKPT_WORD).store(make_tag(0, 1), Relaxed);
        let r = observe(&db).unwrap();
        assert_eq!(r.role_strategy, ROLES_BYTELOCK);
        assert_eq!(r.checkpointer.held, 0, "{:?}", r.checkpointer);
        a.acquire(Role::Checkpointer, 0).unwrap();
        let r = observe(&db).unwrap();
        assert_eq!(
            (r.checkpointer.alive, r.checkpointer.pid),
            (1, std::process::id())
        );
        shm.u64(H_CKPT_WORD).store(0, Relaxed);
        a.release(Role::Checkpointer).unwrap();
        a.close(|_| {}).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// Real contention, counted by the roles and read back by the observer: a refused attempt,
    /// a waiter seen while it waits (in the queue with its ticket, or on a byte-lock role's
    /// release counter), then the acquisition it waited for with its wait time, per role and
    /// per handle.
    #[test]
    fn live_contention_is_counted_and_shown() {
        for strategy in [ROLES_SHM, ROLES_BYTELOCK] {
            let (dir, db) = temp_db(&format!("live{strategy}"));
            let opts = Options {
                role_strategy: strategy,
                ..Options::default()
            };
            let a = Coordinator::open(&db, &opts).unwrap();
            let b = Coordinator::open(&db, &opts).unwrap();
            let c = Coordinator::open(&db, &opts).unwrap();
            let (ia, ib) = (a.info().unwrap().instance, b.info().unwrap().instance);
            let me = std::process::id();
            let base = observe(&db).unwrap().contention.writer.stats;
            a.acquire(Role::Writer, 0).unwrap();
            assert!(matches!(c.acquire(Role::Writer, 0), Err(Error::Busy(_))));
            std::thread::scope(|s| {
                let t = s.spawn(|| b.acquire(Role::Writer, 60_000));
                // the lock state tells when b waits: its ticket or its announced wait
                let r = (0..1_000_000)
                    .map(|_| observe(&db).unwrap())
                    .find(|r| {
                        let w = &r.contention.writer;
                        !w.waiters.is_empty() || w.announced_waiters != 0
                    })
                    .expect("the waiter never showed");
                let w = &r.contention.writer;
                if strategy == ROLES_SHM {
                    assert_eq!(w.waiters.len(), 1, "{w:?}");
                    assert_eq!((w.waiters[0].pid, w.waiters[0].instance), (me, ib));
                    assert_ne!(w.waiters[0].ticket, 0);
                    let bw = r.attached.iter().find(|x| x.instance == ib).unwrap();
                    assert_eq!(bw.writer.ticket, w.waiters[0].ticket);
                } else {
                    assert_eq!((w.waiters.len(), w.announced_waiters), (0, 1), "{w:?}");
                }
                assert_eq!((r.writer.alive, r.writer.instance), (1, ia));
                a.release(Role::Writer).unwrap();
                t.join().unwrap().unwrap();
            });
            let r = observe(&db).unwrap();
            let w = r.contention.writer.stats;
            assert_eq!(
                (w.acquires, w.waited, w.busy, w.reclaims),
                (
                    base.acquires + 2,
                    base.waited + 1,
                    base.busy + 1,
                    base.reclaims
                ),
                "strategy {strategy}: {w:?}"
            );
            assert!(w.wait_ns > base.wait_ns && w.max_wait_ns > 0, "{w:?}");
            if strategy == ROLES_SHM {
                assert_eq!(w.handoffs, base.handoffs + 1, "{w:?}");
            }
            assert_eq!((r.writer.alive, r.writer.instance), (1, ib));
            assert!(r.contention.writer.waiters.is_empty());
            let of = |i: u32| r.attached.iter().find(|x| x.instance == i).unwrap().writer;
            assert_eq!((of(ia).acquires, of(ia).wait_ns, of(ia).ticket), (1, 0, 0));
            assert_eq!((of(ib).acquires, of(ib).ticket), (1, 0));
            assert_eq!(of(ib).wait_ns, w.wait_ns - base.wait_ns);
            b.release(Role::Writer).unwrap();
            for h in [c, b, a] {
                h.close(|_| {}).unwrap();
            }
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }

    /// Stores native-endian words into an engine region, as SQLite's plain stores land there.
    fn put_words(region: *mut u8, off: usize, words: &[u32]) {
        for (k, w) in words.iter().enumerate() {
            // SAFETY: inside the region (32 KiB, 8-aligned); shared memory is only ever
            // accessed atomically.
            let a = unsafe { &*(region.add(off + 4 * k) as *const std::sync::atomic::AtomicU32) };
            a.store(*w, Relaxed);
        }
    }

    /// The first 136 bytes of a `-shm` file stock SQLite 3.40 wrote (x86-64) for a WAL of 5
    /// frames, 4096-byte pages, with a read transaction open on read mark 1; and the first 32
    /// bytes of its `-wal`.
    const SHM_VECTOR: &str = "18e22d00000000000400000001000010050000000200000011cdf7f5c4802c0e\
        94a385e950bbf54e05c6b9695a5b971018e22d00000000000400000001000010050000000200000011cdf7f5\
        c4802c0e94a385e950bbf54e05c6b9695a5b9710000000000000000005000000ffffffffffffffffffffffff\
        00000000000000000000000000000000";
    const WAL_VECTOR: &str = "377f0682002de218000010000000000094a385e950bbf54ebe6ca6a7c54a399c";

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.split_whitespace().collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn wal_path(db: &Path) -> std::path::PathBuf {
        let mut p = db.as_os_str().to_owned();
        p.push("-wal");
        p.into()
    }

    /// A wal-index as SQLite writes it, put into engine region 0, comes back decoded: the
    /// header fields, the checksum (SQLite's own), the checkpoint information and each read
    /// mark beside the handles holding SQLite's lock slots by name; the WAL file's header and
    /// whether its salts are the wal-index's.
    #[cfg(target_endian = "little")]
    #[test]
    fn sqlite_view_decodes_the_wal_index_in_region_0_and_names_the_lock_slots() {
        use crate::engine::{TSHM_LOCK_EXCLUSIVE, TSHM_LOCK_SHARED, TSHM_LOCK_UNLOCK};
        use sqlite::{Holder, WalFile, READMARK_NOT_USED};
        let (dir, db) = temp_db("sqlite-view");
        let a = Coordinator::open(&db, &Options::default()).unwrap();
        let b = Coordinator::open(&db, &Options::default()).unwrap();
        assert!(
            observe(&db).unwrap().sqlite.is_none(),
            "no region: not SQLite"
        );
        let region = a.region(0, 32768, true).unwrap().unwrap();
        assert!(
            observe(&db).unwrap().sqlite.is_none(),
            "a zeroed region: not SQLite"
        );
        let bytes = unhex(SHM_VECTOR);
        assert_eq!(bytes.len(), 136);
        let words: Vec<u32> = bytes
            .chunks(4)
            .map(|c| u32::from_ne_bytes(c.try_into().unwrap()))
            .collect();
        put_words(region, 0, &words);

        let (ia, ib) = (a.info().unwrap().instance, b.info().unwrap().instance);
        let me = std::process::id();
        a.acquire(Role::Writer, 0).unwrap();
        assert!(a.engine_lock(1, 1, TSHM_LOCK_EXCLUSIVE).unwrap()); // CKPT
        assert!(a.engine_lock(8, 1, TSHM_LOCK_EXCLUSIVE).unwrap()); // step aside
        assert!(b.engine_lock(4, 1, TSHM_LOCK_SHARED).unwrap()); // READ1
        assert!(a.engine_lock(3, 1, TSHM_LOCK_SHARED).unwrap()); // READ0, two holders
        assert!(b.engine_lock(3, 1, TSHM_LOCK_SHARED).unwrap());

        let r = observe(&db).unwrap();
        let q = r.sqlite.as_ref().expect("a shim database");
        let h = q.header;
        assert_eq!(
            (h.version, h.change, h.is_init, h.big_end_cksum),
            (3_007_000, 4, true, false)
        );
        assert_eq!((h.page_size, h.max_frame, h.n_page), (4096, 5, 2));
        assert_eq!(h.salt, [0x94a3_85e9, 0x50bb_f54e]);
        assert!(h.cksum_ok, "{h:?}");
        assert!(q.copies_agree);
        assert_eq!((q.nbackfill, q.nbackfill_attempted), (0, 0));
        assert_eq!(q.region_bytes, 32768);
        let names: Vec<_> = q.locks.iter().map(|l| (l.name, l.slot)).collect();
        assert_eq!(
            names,
            [
                ("CKPT", 1),
                ("RECOVER", 2),
                ("READ0", 3),
                ("READ1", 4),
                ("READ2", 5),
                ("READ3", 6),
                ("READ4", 7),
                ("STEP_ASIDE", 8)
            ]
        );
        let holder = |i| Holder {
            pid: me,
            instance: i,
        };
        let lock = |n| q.lock(n).unwrap();
        assert_eq!(lock("CKPT").exclusive, [holder(ia)]);
        assert!(lock("CKPT").shared.is_empty() && lock("CKPT").mark.is_none());
        assert!(!lock("RECOVER").held());
        assert_eq!(lock("READ0").mark, Some(0));
        let mut read0: Vec<_> = lock("READ0").shared.iter().map(|x| x.instance).collect();
        read0.sort();
        let mut both = vec![ia, ib];
        both.sort();
        assert_eq!(read0, both);
        assert_eq!(
            (lock("READ1").mark, &lock("READ1").shared[..]),
            (Some(5), &[holder(ib)][..])
        );
        assert_eq!(lock("READ2").mark, Some(READMARK_NOT_USED));
        assert!(!lock("READ2").held());
        assert_eq!(lock("STEP_ASIDE").exclusive, [holder(ia)]);
        assert!(!q.locks.iter().any(|l| l.read_only_shared));
        // WRITE is the writer role
        assert_eq!(
            (r.writer.alive, r.writer.pid, r.writer.instance),
            (1, me, ia)
        );
        assert_eq!(q.wal, WalFile::Missing);
        assert_eq!(q.salts_match(), None);

        // the WAL file's header, its salts compared with the wal-index's
        let wal = unhex(WAL_VECTOR);
        std::fs::write(wal_path(&db), &wal).unwrap();
        let q = observe(&db).unwrap().sqlite.unwrap();
        let WalFile::Present {
            bytes: 32,
            header: Some(w),
        } = q.wal
        else {
            panic!("{:?}", q.wal)
        };
        assert!(w.magic_ok());
        assert_eq!(
            (w.magic, w.format, w.page_size, w.checkpoint_seq),
            (0x377f_0682, 3_007_000, 4096, 0)
        );
        assert_eq!(w.salt, [0x94a3_85e9, 0x50bb_f54e]);
        assert_eq!(q.salts_match(), Some(true));
        let mut other = wal.clone();
        other[16] ^= 1;
        std::fs::write(wal_path(&db), &other).unwrap();
        assert_eq!(
            observe(&db).unwrap().sqlite.unwrap().salts_match(),
            Some(false)
        );
        std::fs::write(wal_path(&db), b"").unwrap();
        let q = observe(&db).unwrap().sqlite.unwrap();
        assert_eq!(
            q.wal,
            WalFile::Present {
                bytes: 0,
                header: None
            }
        );
        assert_eq!(q.salts_match(), None);
        std::fs::remove_file(wal_path(&db)).unwrap();

        // a read-only handle's SHARED lock is a kernel read lock: shown without a pid
        let ro = Coordinator::open(
            &db,
            &Options {
                readonly: true,
                ..Options::default()
            },
        )
        .unwrap();
        assert!(ro.engine_lock(6, 1, TSHM_LOCK_SHARED).unwrap()); // READ3
        let q = observe(&db).unwrap().sqlite.unwrap();
        assert!(q.lock("READ3").unwrap().read_only_shared);
        assert!(q.lock("READ3").unwrap().shared.is_empty());
        ro.engine_lock(6, 1, TSHM_LOCK_SHARED | TSHM_LOCK_UNLOCK)
            .unwrap();
        ro.close(|_| {}).unwrap();

        // page size 65536 is stored as 1; isInit alone identifies a wal-index
        put_words(region, 12, &[u32::from_ne_bytes([1, 0, 1, 0])]);
        put_words(region, 0, &[0]);
        let q = observe(&db).unwrap().sqlite.unwrap();
        assert_eq!((q.header.version, q.header.page_size), (0, 65536));
        put_words(region, 12, &[u32::from_ne_bytes([0, 0, 1, 0])]);
        assert!(
            observe(&db).unwrap().sqlite.is_none(),
            "neither version nor isInit"
        );

        a.release(Role::Writer).unwrap();
        for h in [b, a] {
            h.close(|_| {}).unwrap();
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A header caught while SQLite rewrites it (copy 1 written, copy 0 not yet): reported as
    /// changing, with copy 0's fields, never as an error. A copy 0 that does not match its
    /// checksum says so.
    #[test]
    fn sqlite_header_copies_that_differ_are_changing_not_corrupt() {
        let (dir, db) = temp_db("sqlite-torn");
        let a = Coordinator::open(&db, &Options::default()).unwrap();
        let region = a.region(0, 32768, true).unwrap().unwrap();
        let hdr = |max_frame: u32| {
            let mut w = [0u32; 12];
            w[0] = sqlite::WAL_INDEX_VERSION;
            w[2] = 9;
            let [lo, hi] = 4096u16.to_ne_bytes();
            w[3] = u32::from_ne_bytes([1, 0, lo, hi]); // isInit, bigEndCksum, szPage
            w[4] = max_frame;
            let (mut s1, mut s2) = (0u32, 0u32);
            for p in w[..10].chunks(2) {
                s1 = s1.wrapping_add(p[0]).wrapping_add(s2);
                s2 = s2.wrapping_add(p[1]).wrapping_add(s1);
            }
            w[10] = s1;
            w[11] = s2;
            w
        };
        put_words(region, 0, &hdr(7));
        put_words(region, 48, &hdr(7));
        let q = observe(&db).unwrap().sqlite.unwrap();
        assert!(q.copies_agree && q.header.cksum_ok, "{q:?}");
        assert_eq!((q.header.max_frame, q.header.change), (7, 9));
        put_words(region, 48, &hdr(8));
        let q = check(&db).unwrap().sqlite.unwrap();
        assert!(!q.copies_agree, "{q:?}");
        assert_eq!(
            q.header.max_frame, 7,
            "copy 0, as SQLite's readers load it first"
        );
        assert!(q.header.cksum_ok);
        // both copies agree on a frame count their checksum does not cover
        put_words(region, 48, &hdr(7));
        put_words(region, 16, &[8]);
        put_words(region, 48 + 16, &[8]);
        let q = observe(&db).unwrap().sqlite.unwrap();
        assert!(q.copies_agree && !q.header.cksum_ok, "{q:?}");
        a.close(|_| {}).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    /// A region table entry naming a unit the pool never published (or far beyond the file),
    /// or a region size no region can have, is corruption for `inspect` and `check` alike,
    /// never an access out of bounds. A region too small for a wal-index is just not SQLite.
    #[test]
    fn sqlite_region_entry_out_of_range_is_corrupt_not_a_panic() {
        let (dir, db) = temp_db("sqlite-range");
        let a = Coordinator::open(&db, &Options::default()).unwrap();
        let region = a.region(0, 32768, true).unwrap().unwrap();
        put_words(region, 0, &[sqlite::WAL_INDEX_VERSION]);
        assert!(observe(&db).unwrap().sqlite.is_some());
        let (_f, shm) = writable(&db);
        let entry = shm.u32(H_REGIONS).load(Relaxed);
        let units = shm.u64(H_IX_UNITS).load(Relaxed) as u32;
        for bad in [units + 1, units + 1000, u32::MAX] {
            shm.u32(H_REGIONS).store(bad, Relaxed);
            for r in [observe(&db), check(&db)] {
                assert!(
                    matches!(&r, Err(Error::Corrupt(m)) if m.contains("region 0")),
                    "entry {bad}: {:?}",
                    r.map(|r| r.sqlite)
                );
            }
        }
        // inside the file but past the published units (a reservation's zeroed unit, or an
        // index unit after a mutation): the handle's own lookup refuses it too
        let (f, _) = writable(&db);
        let len = f.metadata().unwrap().len();
        f.set_len(len + 4 * POOL_UNIT).unwrap();
        shm.u32(H_REGIONS).store(units + 1, Relaxed);
        assert!(
            matches!(a.region(0, 32768, false), Err(Error::Corrupt(m)) if m.contains("region 0")),
            "tshm_region through an unpublished unit"
        );
        assert!(matches!(observe(&db), Err(Error::Corrupt(m)) if m.contains("region 0")));
        shm.u32(H_REGIONS).store(entry, Relaxed);
        assert!(a.region(0, 32768, false).unwrap().is_some());
        for size in [0u32, 12, 65544] {
            shm.u32(H_REGION_SIZE).store(size, Relaxed);
            assert!(
                matches!(observe(&db), Err(Error::Corrupt(m)) if m.contains("region size")),
                "size {size}"
            );
        }
        shm.u32(H_REGION_SIZE).store(128, Relaxed);
        assert!(
            observe(&db).unwrap().sqlite.is_none(),
            "128 bytes: no wal-index"
        );
        shm.u32(H_REGION_SIZE).store(32768, Relaxed);
        assert!(observe(&db).unwrap().sqlite.is_some());
        a.close(|_| {}).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    fn sample(epoch: u64, writer: [u64; 7], claims: u64, busy: u64) -> Report {
        let [acquires, waited, wait_ns, max_wait_ns, b, reclaims, handoffs] = writer;
        let stats = RoleStats {
            acquires,
            waited,
            wait_ns,
            max_wait_ns,
            busy: b,
            reclaims,
            handoffs,
        };
        Report {
            init_epoch: epoch,
            contention: Contention {
                writer: RoleContention {
                    stats,
                    ..Default::default()
                },
                checkpointer: RoleContention {
                    stats: RoleStats {
                        acquires: acquires / 2,
                        ..Default::default()
                    },
                    ..Default::default()
                },
                readers: ReaderStats {
                    claims,
                    busy,
                    ..Default::default()
                },
            },
            ..Default::default()
        }
    }

    #[test]
    fn rates_are_deltas_per_second_and_mean_wait_over_the_interval() {
        let a = sample(1, [100, 10, 1_000_000, 500_000, 2, 0, 5], 50, 0);
        let b = sample(1, [300, 30, 5_000_000, 900_000, 6, 1, 25], 250, 4);
        let r = rates(&a, &b, 2.0);
        assert!(!r.reset);
        assert_eq!(r.writer.acquires, 100.0);
        assert_eq!(r.writer.waits, 10.0);
        assert_eq!(r.writer.busy, 2.0);
        assert_eq!(r.writer.reclaims, 0.5);
        assert_eq!(r.writer.handoffs, 10.0);
        // 4 ms over 20 waits in the interval, not the 5 ms / 30 since the start
        assert_eq!(r.writer.mean_wait_ns, 200_000);
        assert_eq!(r.checkpointer.acquires, 50.0);
        assert_eq!(r.checkpointer.mean_wait_ns, 0);
        assert_eq!((r.reader_claims, r.reader_busy), (100.0, 2.0));
        // nothing happened: zero, not NaN
        let r = rates(&b, &b, 1.0);
        assert_eq!((r.writer.acquires, r.writer.mean_wait_ns), (0.0, 0));
        // no time passed (or a clock oddity): zero, not infinite
        for secs in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            let r = rates(&a, &b, secs);
            assert_eq!(r.writer.acquires, 0.0, "{secs}");
        }
    }

    /// A sidecar re-initialized between two refreshes: its counters start again from 0. The
    /// difference must read as "unknown, 0/s", not as a wrapped 2^64-ish rate.
    #[test]
    fn rates_across_a_reset_are_zero_not_huge() {
        let a = sample(1, [1_000, 100, 9_000_000, 500_000, 20, 1, 50], 500, 3);
        // every counter went down
        let b = sample(2, [3, 1, 1_000, 1_000, 0, 0, 0], 2, 0);
        // one counter went down, the epoch did not move (a reset that reused the epoch)
        let c = sample(1, [1_005, 101, 9_100_000, 500_000, 20, 1, 51], 499, 3);
        // nothing went down, but the sidecar was re-initialized in between
        let d = sample(2, [2_000, 200, 9_900_000, 500_000, 40, 1, 90], 900, 3);
        for cur in [&b, &c, &d] {
            let r = rates(&a, cur, 1.0);
            assert!(r.reset, "{cur:?}");
            assert_eq!(r.writer, RoleRates::default());
            assert_eq!(r.checkpointer, RoleRates::default());
            assert_eq!((r.reader_claims, r.reader_busy), (0.0, 0.0));
        }
        // and the next interval counts again
        let r = rates(&b, &d, 1.0);
        assert!(!r.reset);
        assert_eq!(r.writer.acquires, 1_997.0);
    }

    #[test]
    fn derived_figures_survive_any_counter_values() {
        let s = RoleStats {
            acquires: 1,
            waited: u64::MAX,
            wait_ns: u64::MAX,
            ..Default::default()
        };
        assert_eq!(s.mean_wait_ns(), 1);
        assert_eq!(s.waited_pct(), 100.0);
        assert_eq!(RoleStats::default().waited_pct(), 0.0);
        assert_eq!(RoleStats::default().mean_wait_ns(), 0);
    }

    /// The snapshot words are whatever the engine published (or the file holds): the idle check
    /// must describe a backfill count above `max_frame` instead of doing arithmetic that
    /// assumes it is below.
    #[test]
    fn idle_check_reports_nbackfills_above_max_frame() {
        let dir = std::env::temp_dir().join(format!("tshm-idle-nb-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir); // an earlier run's, with this PID
        std::fs::create_dir_all(&dir).unwrap();
        let db = dir.join("idle.db");
        std::fs::write(&db, b"").unwrap();
        for nbackfills in [u64::MAX, 9] {
            let c = Coordinator::open(&db, &Options::default()).unwrap();
            c.acquire(Role::Checkpointer, 0).unwrap();
            let s = tshm_snapshot {
                max_frame: 5,
                nbackfills,
                ..Default::default()
            };
            c.publish(&s, TSHM_SNAP_MAX_FRAME | TSHM_SNAP_NBACKFILLS)
                .unwrap();
            c.release(Role::Checkpointer).unwrap();
            c.close(|_| {}).unwrap();
            let problems = super::observe(&db).unwrap().idle_problems();
            assert_eq!(
                problems,
                vec![format!(
                    "nbackfills {nbackfills} is above max_frame 5: the published snapshot is \
                     inconsistent"
                )],
                "nbackfills {nbackfills}"
            );
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
