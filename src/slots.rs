//! Who holds what: instances, reader slots, owner records and stale reclaim.
//!
//! Owns: the reader table and the instance table (the role fields of an instance record belong
//! to the `roles` module), header words 632..640 (high-water marks) and 768..800 (reader
//! counters), and the lock bytes 2^20.. and 2^24.. of [`crate::layout`].
//!
//! **Liveness comes from locks, never from pids.** Every open handle is an *instance*: it holds
//! the exclusive lock on its own liveness byte for its whole life and writes
//! `{id, nonce, generation}` into its instance record. The kernel drops the lock when the process
//! dies, so "liveness byte free" proves "instance dead" (within this process the node's lock table
//! answers, so a live sibling handle is never mistaken for a dead one). Generations make a reused
//! instance slot distinguishable from its previous occupant.
//!
//! **Reader slots**, one of two strategies fixed when the sidecar is created:
//! * CAS (default): a reader claims a free slot by CAS of its instance tag into `owner` (a handle
//!   keeps it across transactions, see [`crate::pins`]); a pin stores the frame, issues
//!   `fence(SeqCst)` and re-reads the latch sequence, re-pinning until no snapshot was published
//!   across the pin. No syscall. A slot whose tag names a dead instance is stale and is taken
//!   over by CAS from that exact tag, so two reclaimers cannot both win.
//! * Byte lock (the reference system's): a reader takes the exclusive lock on byte
//!   `2^20 + slot` (two syscalls per transaction). The lock is the truth; a slot whose byte is
//!   free is stale.
//!
//! Release order is always: clear the pinned frame, clear the owner, then drop the lock. A
//! reclaimer therefore never sees a half-released slot that a delayed releaser could later wipe.
//! [`min_reader_frame`] issues `fence(SeqCst)` before scanning: with the reader's fence between
//! its pin and its snapshot re-read, either the checkpointer sees the pin or the reader sees the
//! checkpointer's newer snapshot and re-pins (the Dekker pattern, fenced on both sides).

use crate::error::{Error, Result};
use crate::layout::*;
use crate::node::{HandleId, Mapped, Node};
use crate::snapshot::{tshm_snapshot, Latch};
use std::sync::atomic::{fence, Ordering::*};

/// One open handle's identity in the sidecar.
#[derive(Clone, Copy, Debug)]
pub struct Ident {
    pub hid: HandleId,
    pub pid: u32,
    pub instance: u32,
    pub generation: u64,
    pub nonce: u64,
}

impl Ident {
    pub fn tag(&self) -> u64 {
        make_tag(self.instance, self.generation)
    }

    pub fn owner_id(&self) -> u64 {
        owner_id(self.pid, self.instance)
    }
}

/// A random 64-bit nonce (from the kernel; falls back to time and pid).
pub fn nonce() -> u64 {
    let mut b = [0u8; 8];
    // SAFETY: getrandom writes at most b.len() bytes into b.
    let n = unsafe { libc::getrandom(b.as_mut_ptr().cast(), b.len(), libc::GRND_NONBLOCK) };
    if n == 8 {
        u64::from_ne_bytes(b) | 1
    } else {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        (t.as_nanos() as u64 ^ (std::process::id() as u64) << 40) | 1
    }
}

/// Claims a free instance slot for handle `hid`: the first whose liveness byte this handle can
/// lock. Records with a non-zero id are tried last (their owner is probably alive).
pub fn claim_instance(node: &Node, hid: HandleId) -> Result<Ident> {
    let m = node.mapped()?;
    let g = &m.geom;
    let pid = std::process::id();
    for pass in 0..2 {
        for i in 0..g.instances {
            let rec = g.instance(i);
            if pass == 0 && m.shm.u64(rec).load(Relaxed) != 0 {
                continue;
            }
            if !node.try_claim(hid, LOCK_INSTANCE_BASE + i as u64)? {
                continue;
            }
            // the second pass takes over records that still name an instance: a dead one
            crate::testpoint::hit(if pass == 0 {
                "instance_claim"
            } else {
                "instance_reclaim"
            });
            // A previous holder that died may have left engine-lock bits and wait tickets. The
            // tickets go before the generation moves: a release that claims a ticket read the
            // generation first, so it can never hand the role to this new incarnation.
            for off in [I_ENGINE_LOCKS, I_WRITER_TICKET, I_CKPT_TICKET] {
                m.shm.u64(rec + off).store(0, Release);
            }
            m.shm.u32(H_INSTANCE_HWM).fetch_max(i + 1, AcqRel);
            let generation = m.shm.u64(rec + 16).fetch_add(1, AcqRel).wrapping_add(1);
            let nonce = nonce();
            m.shm.u64(rec + I_NONCE).store(nonce, Relaxed);
            m.shm.u64(rec + I_ID).store(owner_id(pid, i), Release);
            return Ok(Ident {
                hid,
                pid,
                instance: i,
                generation,
                nonce,
            });
        }
    }
    Err(Error::Full(format!(
        "all {} instance slots are held by live handles",
        g.instances
    )))
}

/// Clears the instance record, then drops the liveness lock.
pub fn release_instance(node: &Node, id: &Ident) -> Result<()> {
    let m = node.mapped()?;
    let rec = m.geom.instance(id.instance);
    m.shm.u64(rec + 24).store(0, Relaxed); // engine locks go with the handle's locks
    let _ = m
        .shm
        .u64(rec)
        .compare_exchange(id.owner_id(), 0, Release, Relaxed);
    node.unlock(id.hid, LOCK_INSTANCE_BASE + id.instance as u64)?;
    Ok(())
}

/// Whether instance `i` is attached now (its liveness byte is held by someone).
pub fn instance_alive(node: &Node, i: u32) -> Result<bool> {
    node.held_anywhere(LOCK_INSTANCE_BASE + i as u64)
}

/// Whether the instance incarnation named by `tag` is still alive.
pub fn tag_alive(node: &Node, tag: u64) -> Result<bool> {
    let m = node.mapped()?;
    let Some((i, generation)) = split_tag(tag) else {
        return Ok(false);
    };
    if i >= m.geom.instances {
        return Ok(false); // not a tag any instance could have written
    }
    let cur = m.shm.u64(m.geom.instance(i) + 16).load(Acquire) & TAG_GEN_MASK;
    if cur != generation {
        return Ok(false);
    }
    instance_alive(node, i)
}

/// Whether reader slot `i` is held by a live reader.
fn reader_alive(node: &Node, i: u32, owner: u64) -> Result<bool> {
    let m = node.mapped()?;
    if m.geom.reader_strategy == READERS_BYTELOCK {
        node.held_anywhere(LOCK_READER_BASE + i as u64)
    } else {
        tag_alive(node, owner)
    }
}

/// Claims a free (or stale) reader slot for `id`, pinning nothing yet. `TSHM_BUSY` when every
/// slot is held by a live reader.
pub fn claim_slot(node: &Node, id: &Ident) -> Result<u32> {
    let m = node.mapped()?;
    let g = &m.geom;
    let tag = id.tag();
    let bytelock = g.reader_strategy == READERS_BYTELOCK;
    let start = (id.instance.wrapping_mul(7)) % g.readers;
    let mut claimed = None;
    'scan: for pass in 0..2 {
        for k in 0..g.readers {
            let i = (start + k) % g.readers;
            let owner_w = m.shm.u64(g.reader_slot(i));
            // Acquire: a tag read here must carry its instance's generation bump (made before
            // the owner's Release CAS), or `reader_alive` may compare it with the generation
            // from before that instance's claim and take a live reader's slot for stale.
            let owner = owner_w.load(Acquire);
            if bytelock {
                if (pass == 0 && owner != 0)
                    || !node.try_claim(id.hid, LOCK_READER_BASE + i as u64)?
                {
                    continue;
                }
                owner_w.store(tag, Relaxed);
                crate::testpoint::hit(if owner == 0 {
                    "reader_claim"
                } else {
                    "reader_reclaim"
                });
                claimed = Some(i);
                break 'scan;
            }
            let free = owner == 0 || (pass == 1 && !reader_alive(node, i, owner)?);
            if free
                && owner_w
                    .compare_exchange(owner, tag, AcqRel, Relaxed)
                    .is_ok()
            {
                crate::testpoint::hit(if owner == 0 {
                    "reader_claim"
                } else {
                    "reader_reclaim"
                });
                if owner != 0 {
                    m.shm
                        .u64(H_READER_STATS + READER_STAT_RECLAIMS)
                        .fetch_add(1, Relaxed);
                }
                claimed = Some(i);
                break 'scan;
            }
        }
    }
    let stats = |off: usize| m.shm.u64(H_READER_STATS + off).fetch_add(1, Relaxed);
    let Some(i) = claimed else {
        stats(READER_STAT_BUSY);
        return Err(Error::Busy(format!(
            "all {} reader slots are held by live readers",
            g.readers
        )));
    };
    stats(READER_STAT_CLAIMS);
    m.shm.u32(H_READER_HWM).fetch_max(i + 1, AcqRel);
    Ok(i)
}

/// Pins `snap` (just read at latch sequence `at`) in slot `i`, which `id` holds, re-reading and
/// re-pinning until no snapshot was published across the pin; `snap` ends as the one pinned.
pub fn pin(m: &Mapped, id: &Ident, i: u32, snap: &mut tshm_snapshot, at: u64) -> Result<()> {
    let [owner, frame] = m.shm.u64s::<2>(m.geom.reader_slot(i));
    let latch = Latch { shm: &m.shm };
    let mut at = at;
    loop {
        frame.store(snap.max_frame, Relaxed);
        // the store before the re-read, against the checkpointer's fence before its scan
        fence(SeqCst);
        crate::testpoint::hit("reader_pin");
        if !latch.moved(at) {
            break;
        }
        at = latch.read_into(snap);
    }
    // Only a dead instance's slot is ever taken over; another tag here while this reader is
    // alive means its owner word was overwritten from outside.
    let owner = owner.load(Relaxed);
    if owner != id.tag() {
        frame.store(NO_FRAME, Release);
        return Err(overwritten(i, owner, id));
    }
    Ok(())
}

#[cold]
fn overwritten(i: u32, owner: u64, id: &Ident) -> Error {
    Error::Corrupt(format!(
        "reader slot {i} holds tag {owner:#x} instead of its live reader's {:#x}",
        id.tag()
    ))
}

/// Claims a reader slot and pins the current snapshot in it, for one transaction. Returns the
/// slot and the pinned snapshot. `TSHM_BUSY` when every slot is held by a live reader.
pub fn reader_begin(node: &Node, id: &Ident) -> Result<(u32, tshm_snapshot)> {
    let i = claim_slot(node, id)?;
    let m = node.mapped()?;
    let (mut snap, at) = Latch { shm: &m.shm }.read_at();
    match pin(m, id, i, &mut snap, at) {
        Ok(()) => Ok((i, snap)),
        Err(e) => {
            let _ = release_slot(node, id, i);
            Err(e)
        }
    }
}

/// Clears the pin of slot `i` (kept by `id`): the slot stays claimed.
pub fn unpin(m: &Mapped, id: &Ident, i: u32) -> Result<()> {
    let [owner, frame] = m.shm.u64s::<2>(m.geom.reader_slot(i));
    frame.store(NO_FRAME, Release);
    crate::testpoint::hit("reader_end");
    let owner = owner.load(Relaxed);
    if owner != id.tag() {
        return Err(overwritten(i, owner, id));
    }
    Ok(())
}

/// Gives up slot `i`: owner, then (byte-lock) the lock.
pub fn release_slot(node: &Node, id: &Ident, i: u32) -> Result<()> {
    let m = node.mapped()?;
    let slot = m.geom.reader_slot(i);
    m.shm.u64(slot + 8).store(NO_FRAME, Release);
    let taken = m
        .shm
        .u64(slot)
        .compare_exchange(id.tag(), 0, Release, Relaxed);
    if m.geom.reader_strategy == READERS_BYTELOCK {
        node.unlock(id.hid, LOCK_READER_BASE + i as u64)?;
    }
    taken.map(|_| ()).map_err(|cur| {
        Error::Corrupt(format!(
            "reader slot {i} holds tag {cur:#x} instead of its live reader's {:#x}",
            id.tag()
        ))
    })
}

/// Ends a one-transaction slot `i` held by `id`: frame, then owner, then (byte-lock) the lock.
pub fn reader_end(node: &Node, id: &Ident, i: u32) -> Result<()> {
    let pinned = unpin(node.mapped()?, id, i);
    release_slot(node, id, i).and(pinned)
}

/// The oldest frame pinned by a live reader, or `NO_FRAME` when none is pinned. A
/// checkpointer reads the snapshot first, then calls this, and backfills no frame above
/// `min(snapshot.max_frame, result)`.
pub fn min_reader_frame(node: &Node) -> Result<u64> {
    let m = node.mapped()?;
    fence(SeqCst);
    let mut min = NO_FRAME;
    // slots above the high-water mark were never claimed in this session
    let hwm = m.shm.u32(H_READER_HWM).load(Acquire).min(m.geom.readers);
    for i in 0..hwm {
        let slot = m.geom.reader_slot(i);
        let owner = m.shm.u64(slot).load(SeqCst);
        let frame = m.shm.u64(slot + 8).load(SeqCst);
        if owner == 0 || frame == NO_FRAME || frame >= min {
            continue;
        }
        if reader_alive(node, i, owner)? {
            min = frame;
        }
    }
    Ok(min)
}

/// Who holds a role or slot (`tshm_owner`). Role numbers follow the lock-byte map: 0 lifetime,
/// 1 writer, 2 checkpointer, 3 + i reader slot i.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct tshm_owner_info {
    /// `pid << 32 | instance` of the holder, 0 when unknown or free.
    pub id: u64,
    /// The holder instance's random nonce (distinguishes a reused pid).
    pub nonce: u64,
    /// For a reader slot: the pinned frame (`TSHM_NO_FRAME` when none); otherwise 0.
    pub frame: u64,
    /// Holder's process id (0 when unknown).
    pub pid: u32,
    /// Holder's instance index.
    pub instance: u32,
    /// 1 when the role or slot is held (by anyone, live or not yet reclaimed).
    pub held: i32,
    /// 1 when the holder is alive (its lock is held), 0 when it is free or stale.
    pub alive: i32,
}

fn info_for_instance(node: &Node, i: u32) -> Result<tshm_owner_info> {
    let m = node.mapped()?;
    let rec = m.geom.instance(i);
    let id = m.shm.u64(rec).load(Acquire);
    Ok(tshm_owner_info {
        id,
        nonce: m.shm.u64(rec + 8).load(Relaxed),
        pid: (id >> 32) as u32,
        instance: i,
        ..Default::default()
    })
}

/// Reads the owner record of the lifetime (0) or of reader slot `role - 3` (see
/// [`tshm_owner_info`]); the writer and checkpointer (1, 2) are `roles::owner`'s (the layer
/// above), which calls this for every other number.
pub fn owner(node: &Node, role: u32) -> Result<tshm_owner_info> {
    let m = node.mapped()?;
    let g = &m.geom;
    match role {
        0 => {
            let id = m.shm.u64(H_EXCL_ID).load(Acquire);
            let exclusive = m.shm.u32(H_MODE).load(Relaxed) == MODE_EXCLUSIVE;
            Ok(tshm_owner_info {
                id: if exclusive { id } else { 0 },
                nonce: if exclusive {
                    m.shm.u64(H_EXCL_NONCE).load(Relaxed)
                } else {
                    0
                },
                pid: if exclusive { (id >> 32) as u32 } else { 0 },
                instance: if exclusive { id as u32 } else { 0 },
                held: 1,
                alive: 1,
                frame: 0,
            })
        }
        r if r >= 3 && r - 3 < g.readers => {
            let i = r - 3;
            let owner = m.shm.u64(g.reader_slot(i)).load(Acquire);
            let frame = m.shm.u64(g.reader_slot(i) + 8).load(Acquire);
            if owner == 0 {
                return Ok(tshm_owner_info {
                    frame: NO_FRAME,
                    ..Default::default()
                });
            }
            let alive = reader_alive(node, i, owner)?;
            let mut info = match split_tag(owner) {
                Some((inst, _)) if inst < g.instances => info_for_instance(node, inst)?,
                _ => tshm_owner_info::default(),
            };
            info.frame = frame;
            info.held = 1;
            info.alive = alive as i32;
            Ok(info)
        }
        _ => Err(Error::Misuse(format!(
            "role {role} does not exist (0 lifetime, 1 writer, 2 checkpointer, 3..{} readers)",
            3 + g.readers
        ))),
    }
}

/// Live instances other than `except`, as (pid, instance) — for conflict messages and the
/// inspector.
pub fn live_instances(node: &Node) -> Result<Vec<(u32, u32)>> {
    let m = node.mapped()?;
    let mut out = Vec::new();
    for i in 0..m.geom.instances {
        let id = m.shm.u64(m.geom.instance(i)).load(Acquire);
        if id != 0 && instance_alive(node, i)? {
            out.push(((id >> 32) as u32, i));
        }
    }
    Ok(out)
}

/// Clears every owner record and slot: run only by a process that holds the lifetime byte
/// exclusively, i.e. provably alone — the first opener before it claims anything, or the last
/// closer after it released everything but its own instance.
pub fn reset_all(node: &Node) -> Result<()> {
    let m = node.mapped()?;
    let g = &m.geom;
    for off in [H_PUBLISH_TOKEN, H_EXCL_ID, H_EXCL_NONCE] {
        m.shm.u64(off).store(0, Relaxed);
    }
    for i in 0..g.readers {
        m.shm.u64(g.reader_slot(i)).store(0, Relaxed);
        m.shm.u64(g.reader_slot(i) + 8).store(NO_FRAME, Relaxed);
    }
    for i in 0..g.instances {
        m.shm.u64(g.instance(i)).store(0, Relaxed);
        m.shm.u64(g.instance(i) + 8).store(0, Relaxed);
        m.shm.u64(g.instance(i) + 24).store(0, Relaxed);
    }
    m.shm.u32(H_INSTANCE_HWM).store(0, Relaxed);
    m.shm.u32(H_READER_HWM).store(0, Relaxed);
    for s in 0..ENGINE_LOCKS as usize {
        m.shm.u64(H_ENGINE_OWNERS + s * 8).store(0, Relaxed);
    }
    fence(SeqCst);
    Ok(())
}
