//! What an engine keeps in the sidecar for itself: shared regions and lock slots.
//!
//! Owns: the engine region table (header bytes 1024..3072, the region size at 624), the
//! engine lock owner words (3072..3328), the instance high-water mark (632) and the
//! engine-lock word of instance records.
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
//! processes (every handle is its own instance). A SHARED request on a slot the handle already
//! holds SHARED is a no-op; converting between SHARED and EXCLUSIVE is refused. They are kept
//! in shared memory (see [`lock`]): a handle's instance record carries the bitmask of what it
//! holds (which the inspector shows too), and each slot has an exclusive-owner word; liveness
//! of a conflicting holder comes from its instance's liveness lock, as everywhere else.
//!
//! **Read-only handles** (a sidecar this user cannot write, or `TSHM_OPEN_READONLY`) have no
//! instance record and cannot store into the mapping, so their SHARED locks are kernel read
//! locks on one byte per slot (`LOCK_ENGINE_RO_BASE + slot`, through the node's lock
//! table, so handles of one process see each other too). A read-only handle may open the
//! sidecar `O_RDONLY`: a read lock needs only read access. An EXCLUSIVE request checks those
//! bytes last, with one probe per slot, and only once nothing in shared memory conflicts, so
//! SHARED requests of writable handles still make no syscall and a refused EXCLUSIVE request
//! makes none either. Read-only handles cannot take EXCLUSIVE locks.

use crate::error::{Error, Result};
use crate::layout::*;
use crate::lock::Kind;
use crate::node::{HandleId, Mapped, Node};
use crate::slots::{self, Ident};
use std::sync::atomic::{fence, AtomicU64, Ordering::*};

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
    if !region_size_ok(size) {
        return Err(Error::Misuse(format!(
            "region size {size} must be a multiple of 8 in 8..={}",
            POOL_UNIT
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
        crate::testpoint::hit("region_create");
        unit = match slot.compare_exchange(0, u, AcqRel, Acquire) {
            Ok(_) => u,
            Err(theirs) => theirs,
        };
    }
    let off = region_offset(m, idx, unit)?;
    Ok(Some(m.pool.range(off, size, 8)?))
}

/// Whether `size` is one engine regions can have (a multiple of 8 in 8..=POOL_UNIT).
pub(crate) fn region_size_ok(size: u64) -> bool {
    size != 0 && size <= POOL_UNIT && size.is_multiple_of(8)
}

/// The pool offset of region `idx` from its table entry (pool unit + 1; nonzero): corrupt when
/// the entry names a unit the pool has not published (a unit is zeroed and published before an
/// entry names it), whatever the file's length. An entry mutated to name a published unit of
/// the index is not caught here; `tshm check` finds units used twice.
pub(crate) fn region_offset(m: &Mapped, idx: u32, entry: u32) -> Result<u64> {
    let unit = entry as u64 - 1;
    let units = m.shm.u64(H_IX_UNITS).load(Acquire);
    if unit >= units {
        return Err(Error::Corrupt(format!(
            "the engine region table names pool unit {unit} for region {idx}, beyond the \
             {units} units published"
        )));
    }
    Ok(unit * POOL_UNIT)
}

/// Test point `engine_probe` (`TSHM_TEST_FAIL_AT=engine_probe`): every liveness probe of an
/// engine lock request fails, so tests can check that a failed request leaves nothing taken.
/// Only on the conflict path, which already costs a syscall.
fn probe_fault() -> Result<()> {
    if crate::testpoint::fail("engine_probe") {
        return Err(crate::testpoint::injected("engine_probe"));
    }
    Ok(())
}

fn tag_alive(node: &Node, tag: u64) -> Result<bool> {
    probe_fault()?;
    slots::tag_alive(node, tag)
}

fn instance_alive(node: &Node, i: u32) -> Result<bool> {
    probe_fault()?;
    slots::instance_alive(node, i)
}

fn check_range(slot: u32, n: u32) -> Result<()> {
    if n == 0 || slot.checked_add(n).is_none_or(|end| end > ENGINE_LOCKS) {
        return Err(Error::Misuse(format!(
            "engine lock slots {slot}..{} out of range 0..{ENGINE_LOCKS}",
            slot as u64 + n as u64
        )));
    }
    Ok(())
}

/// The engine-lock word of instance `i`: bit s SHARED, bit 32 + s EXCLUSIVE.
fn mask_of(m: &crate::node::Mapped, i: u32) -> &AtomicU64 {
    m.shm.u64(m.geom.instance(i) + 24)
}

/// The exclusive-owner word of slot `s` (an instance tag, 0 when free).
fn owner_of(m: &crate::node::Mapped, s: usize) -> &AtomicU64 {
    m.shm.u64(H_ENGINE_OWNERS + s * 8)
}

fn mask(held: &[u8; ENGINE_LOCKS as usize]) -> u64 {
    held.iter()
        .enumerate()
        .fold(0u64, |acc, (s, mode)| match mode {
            1 => acc | 1 << s,
            2 => acc | 1 << (s + 32),
            _ => acc,
        })
}

/// Takes or releases slots `slot..slot+n` for the handle `hid` (instance `id`, `None` for a
/// read-only handle; its held modes are `held`). Taking returns `Ok(false)` when another handle
/// holds a conflicting lock; nothing is taken then, and nothing is taken when it fails either.
///
/// The locks of writable handles live in shared memory, so neither taking nor releasing makes a
/// syscall unless a conflict has to be checked against a possibly dead holder, or an EXCLUSIVE
/// request is about to be granted:
/// * SHARED: announce the bits in the handle's own engine-lock word, `fence(SeqCst)`, then
///   look at the slots' exclusive-owner words; a live owner means back off.
/// * EXCLUSIVE: claim the owner words by CAS (taking over a dead owner's), publish the bits,
///   `fence(SeqCst)`, then look at every other instance's word (up to the high-water mark of
///   instances in use) for bits in the range, and finally at the slots' read-only holder bytes
///   (one kernel probe per slot, only when nothing else conflicts); a live holder means back off.
/// * SHARED by a read-only handle (which has no instance record and may not write the mapping):
///   announce by taking the kernel read lock on the slot's read-only holder byte
///   (`LOCK_ENGINE_RO_BASE + slot`), `fence(SeqCst)`, then look at the owner word. A dead
///   owner is ignored without clearing it: whoever takes the slot over claims the word first
///   and then probes the byte. The kernel drops the lock when the holder dies, so a read-only
///   holder never needs reclaiming. EXCLUSIVE is refused to read-only handles.
///
/// Either side announces before it looks, with a full fence between, so of a SHARED and an
/// EXCLUSIVE request racing for one slot at least one sees the other (both may, and both back
/// off: BUSY is always allowed). The kernel serializes the read-only byte's lock and probe, so
/// the same holds there. A holder that died leaves bits or an owner tag whose liveness probe
/// fails; they are ignored or taken over. Acquisitions are SeqCst/AcqRel and releases Release,
/// so the data an engine guards with these locks is ordered like a mutex's.
///
/// Every failure after the announcement (a probe error) gives back what this call announced or
/// claimed before it returns.
pub fn lock(
    node: &Node,
    hid: HandleId,
    id: Option<&Ident>,
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
    let m = node.mapped()?;
    let want = if kind == Kind::Shared { 1 } else { 2 };
    let range = slot as usize..(slot + n) as usize;
    let unlock = flags & TSHM_LOCK_UNLOCK != 0;
    if unlock {
        if let Some(i) = range.clone().find(|i| held[*i] != want) {
            return Err(Error::Misuse(format!(
                "engine lock slot {i} is not held {} by this handle",
                if want == 1 { "SHARED" } else { "EXCLUSIVE" }
            )));
        }
    } else if let Some(i) = range.clone().find(|i| held[*i] != 0 && held[*i] != want) {
        return Err(Error::Misuse(format!(
            "engine lock slot {i} is held in the other mode; release it first"
        )));
    }
    let Some(id) = id else {
        return lock_readonly(node, m, hid, held, range, kind, unlock);
    };
    let mine = mask_of(m, id.instance);
    if unlock {
        for s in range {
            held[s] = 0;
            if kind == Kind::Exclusive {
                owner_of(m, s).store(0, Release);
            }
        }
        if kind == Kind::Exclusive {
            crate::testpoint::hit("engine_release");
        }
        mine.store(mask(held), Release);
        return Ok(true);
    }
    let before = *held;
    let give_back = |held: &mut [u8; ENGINE_LOCKS as usize], owners: bool| {
        for s in range.clone() {
            if before[s] == 0 && owners {
                let _ = owner_of(m, s).compare_exchange(id.tag(), 0, Release, Relaxed);
            }
            held[s] = before[s];
        }
        mine.store(mask(held), Release);
    };
    if kind == Kind::Shared {
        for s in range.clone() {
            held[s] = 1;
        }
        mine.store(mask(held), SeqCst);
        fence(SeqCst);
        let r = shared_look(node, m, range.clone().filter(|s| before[*s] == 0));
        if !matches!(r, Ok(true)) {
            give_back(held, false);
        }
        return r;
    }
    let r = exclusive_claim_and_look(node, m, id, held, &before, range.clone());
    if !matches!(r, Ok(true)) {
        give_back(held, true);
    }
    r
}

/// The look of a SHARED request (its bits are announced): `Ok(false)` when a live exclusive
/// owner holds one of `slots`. Dead owners' claims are cleared on the way.
fn shared_look(node: &Node, m: &Mapped, slots: impl Iterator<Item = usize>) -> Result<bool> {
    for s in slots {
        let owner = owner_of(m, s);
        let x = owner.load(SeqCst);
        if x == 0 {
            continue;
        }
        if tag_alive(node, x)? {
            return Ok(false);
        }
        // a dead exclusive owner: clear its claim (only if it is still that one)
        let _ = owner.compare_exchange(x, 0, AcqRel, Relaxed);
        if owner.load(SeqCst) != 0 {
            return Ok(false);
        }
    }
    Ok(true)
}

/// An EXCLUSIVE request: claim the owner words (recording each in `held`), publish, then look
/// at the other instances and at the read-only holder bytes. The caller gives back on anything
/// but `Ok(true)`.
fn exclusive_claim_and_look(
    node: &Node,
    m: &Mapped,
    id: &Ident,
    held: &mut [u8; ENGINE_LOCKS as usize],
    before: &[u8; ENGINE_LOCKS as usize],
    range: std::ops::Range<usize>,
) -> Result<bool> {
    let tag = id.tag();
    for s in range.clone().filter(|s| before[*s] == 0) {
        let owner = owner_of(m, s);
        loop {
            match owner.compare_exchange(0, tag, SeqCst, SeqCst) {
                // our own tag: a claim this handle made and lost track of
                Ok(_) => break,
                Err(x) if x == tag => break,
                Err(x) if !tag_alive(node, x)? => {
                    let _ = owner.compare_exchange(x, 0, AcqRel, Relaxed);
                }
                Err(_) => return Ok(false),
            }
        }
        held[s] = 2;
    }
    crate::testpoint::hit("engine_grant");
    mask_of(m, id.instance).store(mask(held), SeqCst);
    fence(SeqCst);
    let bits = range
        .clone()
        .fold(0u64, |acc, s| acc | 1 << s | 1 << (s + 32));
    let hwm = m
        .shm
        .u32(H_INSTANCE_HWM)
        .load(Acquire)
        .min(m.geom.instances);
    for i in (0..hwm).filter(|i| *i != id.instance) {
        if mask_of(m, i).load(SeqCst) & bits != 0 && instance_alive(node, i)? {
            return Ok(false);
        }
    }
    for s in range.filter(|s| before[*s] == 0) {
        if readonly_holder(node, s)? {
            return Ok(false);
        }
    }
    Ok(true)
}

/// Whether a read-only handle (here or in another process) holds slot `s` SHARED.
fn readonly_holder(node: &Node, s: usize) -> Result<bool> {
    probe_fault()?;
    node.held_anywhere(LOCK_ENGINE_RO_BASE + s as u64)
}

/// [`lock`] for a read-only handle: SHARED through the slots' read-only holder bytes.
fn lock_readonly(
    node: &Node,
    m: &Mapped,
    hid: HandleId,
    held: &mut [u8; ENGINE_LOCKS as usize],
    range: std::ops::Range<usize>,
    kind: Kind,
    unlock: bool,
) -> Result<bool> {
    let byte = |s: usize| LOCK_ENGINE_RO_BASE + s as u64;
    if kind == Kind::Exclusive {
        return Err(Error::ReadOnly(
            "a read-only handle can take engine locks only SHARED".into(),
        ));
    }
    if unlock {
        let mut r = Ok(true);
        for s in range {
            held[s] = 0;
            r = r.and(node.unlock(hid, byte(s)).map(|_| true));
        }
        return r;
    }
    // the slots this call takes (no allocation: the range is at most ENGINE_LOCKS long)
    let fresh = || range.clone().filter(|s| held[*s] == 0);
    let mut taken = 0;
    let mut r = Ok(true);
    for s in fresh() {
        match node.try_lock(hid, byte(s), Kind::Shared) {
            Ok(true) => taken += 1,
            other => {
                r = other;
                break;
            }
        }
    }
    if matches!(r, Ok(true)) {
        fence(SeqCst);
        r = (|| {
            for s in fresh() {
                let x = owner_of(m, s).load(SeqCst);
                if x != 0 && tag_alive(node, x)? {
                    return Ok(false);
                }
            }
            Ok(true)
        })();
    }
    if !matches!(r, Ok(true)) {
        for s in fresh().take(taken) {
            r = r.and_then(|ok| node.unlock(hid, byte(s)).map(|_| ok));
        }
        return r;
    }
    for s in range {
        held[s] = 1;
    }
    r
}

/// Releases every engine lock slot the handle holds (at close).
pub fn release_all(node: &Node, id: &Ident, held: &mut [u8; ENGINE_LOCKS as usize]) -> Result<()> {
    let m = node.mapped()?;
    for (s, mode) in held.iter_mut().enumerate() {
        if *mode == 2 {
            let _ = owner_of(m, s).compare_exchange(id.tag(), 0, Release, Relaxed);
        }
        *mode = 0;
    }
    mask_of(m, id.instance).store(0, Release);
    Ok(())
}

const _: () = assert!(TSHM_ENGINE_LOCKS == ENGINE_LOCKS && TSHM_MAX_REGIONS == MAX_REGIONS);

/// Exhaustive interleavings of the engine-lock protocol for one slot: three requesters, each
/// SHARED, read-only SHARED or EXCLUSIVE, performing the steps of [`lock`] in order (announce,
/// then look; sequentially consistent memory, which the SeqCst fences and the kernel's lock
/// serialization give), in every interleaving, with the owner word free or naming a dead
/// instance at the start. At the end, an EXCLUSIVE grant never coexists with a SHARED one or
/// another EXCLUSIVE one.
#[cfg(test)]
mod interleavings {
    #[derive(Clone, Copy, PartialEq)]
    enum K {
        Shared,
        ReadOnly,
        Exclusive,
    }

    const DEAD: u8 = 9; // the owner word names an instance that died

    #[derive(Clone, Default)]
    struct S {
        owner: u8,       // exclusive owner: 0 none, DEAD, else actor + 1
        bits: [bool; 3], // each writable actor's announced bit
        ro: [bool; 3],   // each read-only actor's kernel read lock on the slot's byte
        granted: [Option<bool>; 3],
    }

    /// Actor `a`'s step `pc`; returns the next pc, or None when it has decided.
    fn step(s: &mut S, a: usize, pc: u8, kind: K) -> Option<u8> {
        let free = |o: u8| o == 0 || o == DEAD;
        match (kind, pc) {
            (K::Shared, 0) => {
                s.bits[a] = true; // announce (store + fence)
                Some(1)
            }
            (K::Shared, _) => {
                let ok = free(s.owner); // look at the owner word
                if s.owner == DEAD {
                    s.owner = 0; // clear a dead owner's claim
                }
                if !ok {
                    s.bits[a] = false; // give back
                }
                s.granted[a] = Some(ok);
                None
            }
            (K::ReadOnly, 0) => {
                s.ro[a] = true; // take the read lock (syscall + fence)
                Some(1)
            }
            (K::ReadOnly, _) => {
                let ok = free(s.owner); // a dead owner is ignored, not cleared
                if !ok {
                    s.ro[a] = false;
                }
                s.granted[a] = Some(ok);
                None
            }
            (K::Exclusive, 0) => {
                if free(s.owner) {
                    s.owner = a as u8 + 1; // CAS the owner word (taking over a dead one)
                    Some(1)
                } else {
                    s.granted[a] = Some(false);
                    None
                }
            }
            (K::Exclusive, 1) => {
                s.bits[a] = true; // publish the mask (store + fence)
                Some(2)
            }
            (K::Exclusive, 2) | (K::Exclusive, _) => {
                // pc 2: scan the instances; pc 3: probe the read-only bytes
                let others = if pc == 2 {
                    (0..3).any(|b| b != a && s.bits[b])
                } else {
                    (0..3).any(|b| b != a && s.ro[b])
                };
                if others {
                    s.owner = 0;
                    s.bits[a] = false;
                    s.granted[a] = Some(false);
                    return None;
                }
                if pc == 2 {
                    return Some(3);
                }
                s.granted[a] = Some(true);
                None
            }
        }
    }

    fn explore(s: &S, pcs: [Option<u8>; 3], kinds: [K; 3], outcomes: &mut u64) {
        if pcs.iter().all(Option::is_none) {
            let excl = (0..3).any(|a| kinds[a] == K::Exclusive && s.granted[a] == Some(true));
            let shared = (0..3).any(|a| kinds[a] != K::Exclusive && s.granted[a] == Some(true));
            let two = (0..3)
                .filter(|a| kinds[*a] == K::Exclusive && s.granted[*a] == Some(true))
                .count();
            assert!(!(excl && shared), "EXCLUSIVE granted beside SHARED");
            assert!(two <= 1, "two EXCLUSIVE grants");
            *outcomes += 1;
            return;
        }
        for a in 0..3 {
            if let Some(pc) = pcs[a] {
                let mut s2 = s.clone();
                let mut p2 = pcs;
                p2[a] = step(&mut s2, a, pc, kinds[a]);
                explore(&s2, p2, kinds, outcomes);
            }
        }
    }

    #[test]
    fn exclusive_never_coexists_with_shared() {
        use K::*;
        let mut outcomes = 0;
        for owner in [0, DEAD] {
            for kinds in [
                [Shared, Shared, Exclusive],
                [Shared, Exclusive, Exclusive],
                [Exclusive, Exclusive, Exclusive],
                [ReadOnly, Shared, Exclusive],
                [ReadOnly, ReadOnly, Exclusive],
                [ReadOnly, Exclusive, Exclusive],
            ] {
                let s = S {
                    owner,
                    ..S::default()
                };
                explore(&s, [Some(0); 3], kinds, &mut outcomes);
            }
        }
        assert!(outcomes > 2500, "{outcomes} interleavings");
    }
}
