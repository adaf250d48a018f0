//! Observing a sidecar without taking part (the `tshm` inspector).
//!
//! Owns: [`observe`] and [`check`]. An observer opens the sidecar read-only, maps it read-only
//! and validates it like a joining process, but takes no lock, claims no instance and writes
//! nothing: who is alive comes from lock probes (`F_OFD_GETLK`/`F_GETLK`), which conflict with
//! both lock kinds and change nothing. So inspecting a live system never changes who is last to
//! close, never blocks an opener and never reclaims anything.

use crate::error::{Error, Result};
use crate::index::{tshm_index_stats, Index};
use crate::layout::*;
use crate::lock::{self, Held};
use crate::node::Node;
use crate::region;
use crate::slots::{self, tshm_owner_info};
use crate::snapshot::{tshm_snapshot, Latch};
use std::path::Path;
use std::sync::atomic::Ordering::*;
use std::sync::Arc;

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
}

/// Everything the inspector shows.
#[derive(Clone, Debug)]
pub struct Report {
    pub sidecar_bytes: u64,
    /// 1 SHARED, 2 EXCLUSIVE, 0 when nobody is attached.
    pub mode: u32,
    /// Lock kind the attached processes use: "ofd", "posix" or "none" (nobody attached).
    pub backend: &'static str,
    pub reader_strategy: u32,
    pub reader_slots: u32,
    pub instance_slots: u32,
    pub init_epoch: u64,
    pub attached: Vec<Attached>,
    pub writer: tshm_owner_info,
    pub checkpointer: tshm_owner_info,
    pub readers: Vec<ReaderSlot>,
    pub snapshot: tshm_snapshot,
    pub index: tshm_index_stats,
}

impl Report {
    /// No handle attached, no role or slot held by a live holder, no uncommitted or
    /// un-checkpointed state: what a cleanly shut down sidecar looks like.
    pub fn idle_problems(&self) -> Vec<String> {
        let mut p = Vec::new();
        if !self.attached.is_empty() {
            p.push(format!("{} handle(s) attached", self.attached.len()));
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
            p.push(format!(
                "{} reader slot(s) have an owner",
                self.readers.len()
            ));
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

/// The observer's node: opened read-only, mapped and validated, no lock taken.
fn attach(db: &Path) -> Result<Arc<Node>> {
    if !db.exists() {
        return Err(Error::NotFound(format!("no database at {}", db.display())));
    }
    let node = Node::get(db, true, false, None)?;
    if node.mapped.get().is_none() {
        // the fixed part only (the pool is mapped in windows): a huge file maps no more; the
        // node's protection, not the observer's: a handle of this process may share it
        let most = Geometry::new(MAX_READERS, READERS_CAS, MAX_INSTANCES, ROLES_SHM).base_len;
        let len = region::file_len(node.fd())?.min(most);
        let shm = node.map(len.max(1))?;
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
    let attached: Vec<Attached> = slots::live_instances(&node)?
        .into_iter()
        .map(|(pid, instance)| {
            let mask = m.shm.u64(m.geom.instance(instance) + 24).load(Acquire);
            Attached {
                pid,
                instance,
                engine_shared: mask as u32,
                engine_exclusive: (mask >> 32) as u32,
            }
        })
        .collect();
    let mut readers = Vec::new();
    for i in 0..m.geom.readers {
        let o = slots::owner(&node, 3 + i)?;
        if o.held != 0 {
            readers.push(ReaderSlot { slot: i, owner: o });
        }
    }
    Ok(Report {
        sidecar_bytes: region::file_len(node.fd())?,
        mode: if attached.is_empty() {
            0
        } else {
            m.shm.u32(H_MODE).load(Acquire)
        },
        backend,
        reader_strategy: m.geom.reader_strategy,
        reader_slots: m.geom.readers,
        instance_slots: m.geom.instances,
        init_epoch: m.shm.u64(H_INIT_EPOCH).load(Relaxed),
        attached,
        writer: slots::owner(&node, 1)?,
        checkpointer: slots::owner(&node, 2)?,
        readers,
        snapshot: Latch { shm: &m.shm }.read(),
        index: Index::new(m).stats(),
    })
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
    use crate::snapshot::{tshm_snapshot, TSHM_SNAP_MAX_FRAME, TSHM_SNAP_NBACKFILLS};
    use crate::{Coordinator, Options, Role};

    /// The snapshot words are whatever the engine published (or the file holds): the idle check
    /// must describe a backfill count above `max_frame` instead of doing arithmetic that
    /// assumes it is below.
    #[test]
    fn idle_check_reports_nbackfills_above_max_frame() {
        let dir = std::env::temp_dir().join(format!("tshm-idle-nb-{}", std::process::id()));
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
