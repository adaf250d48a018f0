//! What an engine keeps in the sidecar for itself: shared regions and lock slots.
//!
//! Owns: the engine region table (header bytes 1024..3072, the region size at 624), the
//! engine lock bytes (8192 + slot) and the engine-lock word of instance records.
//!
//! **Regions** are raw shared memory an engine asks for by index (the SQLite shim keeps
//! SQLite's wal-index there). Each is one pool unit, zeroed before its table entry is set by
//! CAS; a region never moves, so its pointer stays valid until the process's last handle on the
//! sidecar closes. The first opener forgets the pool (see [`crate::index::Index::init`]), which
//! zeroes every region, like SQLite's dead-man switch. Two processes creating one region at once
//! both allocate a unit; the CAS picks one and the other unit is never used.
//!
//! **Lock slots** follow SQLite's `xShmLock` contract: SHARED or EXCLUSIVE, never blocking,
//! ranges all-or-nothing, conflicts between handles of one process exactly as between
//! processes (the node's lock table). A SHARED request on a slot the handle already holds
//! SHARED is a no-op; converting between SHARED and EXCLUSIVE is refused. The holder's instance
//! record carries a bitmask of what it holds, for the inspector.

use crate::error::{Error, Result};
use crate::layout::*;
use crate::lock::Kind;
use crate::node::{HandleId, Node};
use std::sync::atomic::Ordering::*;

/// `tshm_lock` flag: a shared lock.
pub const TSHM_LOCK_SHARED: u32 = 1;
/// `tshm_lock` flag: an exclusive lock.
pub const TSHM_LOCK_EXCLUSIVE: u32 = 2;
/// `tshm_lock` flag, with `TSHM_LOCK_SHARED` or `TSHM_LOCK_EXCLUSIVE` (as taken): release.
pub const TSHM_LOCK_UNLOCK: u32 = 4;
/// Engine lock slots per sidecar.
pub const TSHM_ENGINE_LOCKS: u32 = 32;
/// Engine regions per sidecar.
pub const TSHM_MAX_REGIONS: u32 = 512;

/// Region `idx` of `size` bytes: its address, or `None` when it does not exist and `extend` is
/// false. Every region of a sidecar has the size the first one was made with.
pub fn region(node: &Node, idx: u32, size: u64, extend: bool) -> Result<Option<*mut u8>> {
    let m = node.mapped()?;
    if idx >= MAX_REGIONS {
        return Err(Error::Misuse(format!(
            "region {idx} out of range (a sidecar holds {MAX_REGIONS})"
        )));
    }
    if size == 0 || size > crate::index::POOL_UNIT || size % 8 != 0 {
        return Err(Error::Misuse(format!(
            "region size {size} must be a multiple of 8 in 8..={}",
            crate::index::POOL_UNIT
        )));
    }
    let fixed = m.shm.u32(H_REGION_SIZE);
    let have = fixed.load(Acquire);
    if have != 0 && have as u64 != size {
        return Err(Error::Misuse(format!(
            "regions of this sidecar are {have} bytes, not {size}"
        )));
    }
    let slot = m.shm.u32(H_REGIONS + idx as usize * 4);
    let mut unit = slot.load(Acquire);
    if unit == 0 {
        if !extend {
            return Ok(None);
        }
        if !m.shm.writable() {
            return Err(Error::ReadOnly(
                "a read-only handle cannot create a region".into(),
            ));
        }
        if have == 0 {
            let _ = fixed.compare_exchange(0, size as u32, AcqRel, Acquire);
            if fixed.load(Acquire) as u64 != size {
                return Err(Error::Misuse(format!(
                    "regions of this sidecar are {} bytes, not {size}",
                    fixed.load(Relaxed)
                )));
            }
        }
        let u = crate::index::alloc_unit(&m.shm, &m.pool)? as u32 + 1;
        unit = match slot.compare_exchange(0, u, AcqRel, Acquire) {
            Ok(_) => u,
            Err(theirs) => theirs,
        };
    }
    let off = (unit as u64 - 1) * crate::index::POOL_UNIT;
    Ok(Some(m.pool.range(off, size, 8)?))
}

fn check_range(slot: u32, n: u32) -> Result<()> {
    if n == 0 || slot.checked_add(n).map_or(true, |end| end > ENGINE_LOCKS) {
        return Err(Error::Misuse(format!(
            "engine lock slots {slot}..{} out of range 0..{ENGINE_LOCKS}",
            slot as u64 + n as u64
        )));
    }
    Ok(())
}

/// The handle's engine-lock word in its instance record (`None` for a read-only handle).
fn mask_word(node: &Node, instance: Option<u32>) -> Option<&std::sync::atomic::AtomicU64> {
    let m = node.mapped().ok()?;
    Some(m.shm.u64(m.geom.instance(instance?) + 24))
}

/// Takes (`unlock == false`) or releases slots `slot..slot+n` for handle `h`. Taking returns
/// `Ok(false)` when another handle holds a conflicting lock (nothing is taken then).
pub fn lock(
    node: &Node,
    h: HandleId,
    instance: Option<u32>,
    held: &mut [u8; ENGINE_LOCKS as usize],
    slot: u32,
    n: u32,
    flags: u32,
) -> Result<bool> {
    check_range(slot, n)?;
    let kind = match flags & !TSHM_LOCK_UNLOCK {
        TSHM_LOCK_SHARED => Kind::Shared,
        TSHM_LOCK_EXCLUSIVE => Kind::Exclusive,
        _ => {
            return Err(Error::Misuse(format!(
                "lock flags {flags:#x}: give exactly one of TSHM_LOCK_SHARED and \
                 TSHM_LOCK_EXCLUSIVE, optionally with TSHM_LOCK_UNLOCK"
            )))
        }
    };
    let want = if kind == Kind::Shared { 1 } else { 2 };
    let range = slot as usize..(slot + n) as usize;
    let bits = |k: Kind| -> u64 {
        let m = (((1u64 << n) - 1) << slot) & 0xffff_ffff;
        if k == Kind::Shared {
            m
        } else {
            m << 32
        }
    };
    if flags & TSHM_LOCK_UNLOCK != 0 {
        if let Some(i) = range.clone().find(|i| held[*i] != want) {
            return Err(Error::Misuse(format!(
                "engine lock slot {i} is not held {} by this handle",
                if want == 1 { "SHARED" } else { "EXCLUSIVE" }
            )));
        }
        for i in range.clone() {
            node.unlock(h, LOCK_ENGINE_BASE + i as u64)?;
            held[i] = 0;
        }
        if let Some(w) = mask_word(node, instance) {
            w.fetch_and(!bits(kind), Release);
        }
        return Ok(true);
    }
    if let Some(i) = range.clone().find(|i| held[*i] != 0 && held[*i] != want) {
        return Err(Error::Misuse(format!(
            "engine lock slot {i} is held in the other mode; release it first"
        )));
    }
    for i in range.clone() {
        if held[i] == want {
            continue;
        }
        if !node.try_lock(h, LOCK_ENGINE_BASE + i as u64, kind)? {
            // all-or-nothing: give back what this call took
            for (t, mode) in held.iter().enumerate().take(i).skip(slot as usize) {
                if *mode != want {
                    node.unlock(h, LOCK_ENGINE_BASE + t as u64)?;
                }
            }
            return Ok(false);
        }
    }
    for i in range {
        held[i] = want;
    }
    if let Some(w) = mask_word(node, instance) {
        w.fetch_or(bits(kind), Release);
    }
    Ok(true)
}

const _: () = assert!(TSHM_ENGINE_LOCKS == ENGINE_LOCKS && TSHM_MAX_REGIONS == MAX_REGIONS);
const _: () = assert!(LOCK_ENGINE_BASE + ENGINE_LOCKS as u64 <= u32::MAX as u64);
