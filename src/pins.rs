//! The reader slots one handle holds and the read transactions pinned in them.
//!
//! Owns: process memory only (a handle's pin entries); the slots themselves belong to
//! [`crate::slots`].
//!
//! Transactions of one handle at one snapshot share one slot: an entry pairs a slot with the
//! sequence of the snapshot it pins and a count of the transactions on it. A begin that reads a
//! snapshot some entry pins joins it (one CAS on the count, in process memory: no lock, no
//! system call); otherwise it takes an idle entry, pins the snapshot in its slot and becomes its
//! first transaction. The last end unpins the slot. Entry 0 keeps its slot from the handle's
//! first read transaction until the handle closes, so a handle that reads one snapshot at a
//! time never claims a slot again; the others give their slot back when their count drops to 0.
//! When every entry is in use, a transaction takes a slot for itself alone (as every byte-lock
//! transaction does).
//!
//! An entry's state word is `count | version << 32 | BUSY`. `BUSY` is held by the one thread
//! that pins, unpins, claims or gives back the entry's slot; the version changes with every pin,
//! so a joiner (or an ender) that read the entry's slot and sequence under an older pin fails its
//! CAS. The slot and sequence are written only while `BUSY` is held.

use crate::error::{Error, Result};
use crate::layout::*;
use crate::node::{Mapped, Node};
use crate::slots::{self, Ident};
use crate::snapshot::{tshm_snapshot, Latch};
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::*};
use std::sync::Mutex;

/// Pin entries per handle: the distinct snapshots one handle can read at once in shared slots.
pub(crate) const ENTRIES: usize = 8;

const NONE: u32 = u32::MAX;
const COUNT: u64 = 0xffff_ffff;
const VERSION: u64 = 1 << 32;
const BUSY: u64 = 1 << 63;

struct Entry {
    slot: AtomicU32,
    state: AtomicU64,
    seq: AtomicU64,
}

impl Entry {
    /// Joins the pin if it is of snapshot `seq`.
    fn join(&self, seq: u64) -> Option<u32> {
        let s = self.state.load(Acquire);
        let count = s & COUNT;
        if s & BUSY != 0 || count == 0 || count == COUNT || self.seq.load(Relaxed) != seq {
            return None;
        }
        let slot = self.slot.load(Relaxed);
        self.state
            .compare_exchange(s, s + 1, Acquire, Relaxed)
            .ok()
            .map(|_| slot)
    }

    /// Takes the idle entry (count 0) for a new pin; returns the new version.
    fn start(&self) -> Option<u64> {
        let s = self.state.load(Relaxed);
        if s & (BUSY | COUNT) != 0 {
            return None;
        }
        let v = (s + VERSION) & !BUSY;
        self.state
            .compare_exchange(s, v | BUSY | 1, Acquire, Relaxed)
            .ok()
            .map(|_| v)
    }
}

/// A handle's pins (see the module doc).
pub struct Pins {
    entries: [Entry; ENTRIES],
    /// Slots held for one transaction each.
    alone: Mutex<Vec<u32>>,
}

impl Default for Pins {
    fn default() -> Self {
        Pins {
            entries: std::array::from_fn(|_| Entry {
                slot: AtomicU32::new(NONE),
                state: AtomicU64::new(0),
                seq: AtomicU64::new(0),
            }),
            alone: Mutex::new(Vec::new()),
        }
    }
}

impl Pins {
    fn alone(&self) -> std::sync::MutexGuard<'_, Vec<u32>> {
        self.alone.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Begins a read transaction pinning the current snapshot into `out`; returns its slot.
    pub fn begin(&self, node: &Node, id: &Ident, out: &mut tshm_snapshot) -> Result<u32> {
        let m = node.mapped()?;
        if m.geom.reader_strategy == READERS_BYTELOCK {
            return self.begin_alone(node, id, out);
        }
        let at = Latch { shm: &m.shm }.read_into(out);
        let first = &self.entries[0];
        if let Some(slot) = first.join(out.sequence) {
            return Ok(slot);
        }
        if let Some(v) = first.start() {
            return self.pin(node, m, id, 0, v, out, at);
        }
        self.begin_slow(node, m, id, out, at)
    }

    #[cold]
    fn begin_slow(
        &self,
        node: &Node,
        m: &Mapped,
        id: &Ident,
        out: &mut tshm_snapshot,
        at: u64,
    ) -> Result<u32> {
        let rest = &self.entries[1..];
        if let Some(slot) = rest.iter().find_map(|e| e.join(out.sequence)) {
            return Ok(slot);
        }
        for (k, e) in rest.iter().enumerate() {
            if let Some(v) = e.start() {
                return self.pin(node, m, id, k + 1, v, out, at);
            }
        }
        m.shm
            .u64(H_READER_STATS + READER_STAT_EXTRA)
            .fetch_add(1, Relaxed);
        self.begin_alone(node, id, out)
    }

    fn begin_alone(&self, node: &Node, id: &Ident, out: &mut tshm_snapshot) -> Result<u32> {
        let (slot, snap) = slots::reader_begin(node, id)?;
        self.alone().push(slot);
        *out = snap;
        Ok(slot)
    }

    /// Entry `k`, taken for version `v`: claims a slot if it has none, pins `out` (read at `at`)
    /// in it.
    #[allow(clippy::too_many_arguments)]
    fn pin(
        &self,
        node: &Node,
        m: &Mapped,
        id: &Ident,
        k: usize,
        v: u64,
        out: &mut tshm_snapshot,
        at: u64,
    ) -> Result<u32> {
        let e = &self.entries[k];
        let mut slot = e.slot.load(Relaxed);
        if slot == NONE {
            match slots::claim_slot(node, id) {
                Ok(s) => {
                    slot = s;
                    e.slot.store(s, Relaxed);
                }
                Err(err) => {
                    e.state.store(v, Release);
                    return Err(err);
                }
            }
        }
        match slots::pin(m, id, slot, out, at) {
            Ok(()) => {
                e.seq.store(out.sequence, Relaxed);
                e.state.store(v | 1, Release);
                Ok(slot)
            }
            Err(err) => {
                // overwritten from outside: no longer this handle's to keep or give back
                e.slot.store(NONE, Relaxed);
                e.state.store(v, Release);
                Err(err)
            }
        }
    }

    /// Ends a read transaction on `slot`.
    pub fn end(&self, node: &Node, id: &Ident, slot: u32) -> Result<()> {
        if slot != NONE {
            let m = node.mapped()?;
            for (k, e) in self.entries.iter().enumerate() {
                if let Some(r) = Self::end_in(node, m, id, k, e, slot) {
                    return r;
                }
            }
        }
        {
            let mut alone = self.alone();
            let Some(pos) = alone.iter().position(|s| *s == slot) else {
                return Err(Error::Misuse(format!(
                    "this handle does not hold reader slot {slot}"
                )));
            };
            alone.swap_remove(pos);
        }
        slots::reader_end(node, id, slot)
    }

    /// Ends one transaction of entry `k` if it pins `slot` (`None`: it does not).
    fn end_in(
        node: &Node,
        m: &Mapped,
        id: &Ident,
        k: usize,
        e: &Entry,
        slot: u32,
    ) -> Option<Result<()>> {
        let mut spins = 0u32;
        loop {
            let s = e.state.load(Acquire);
            if e.slot.load(Relaxed) != slot {
                return None;
            }
            if s & BUSY != 0 {
                // another thread of the handle is between its CAS and its store
                spins += 1;
                if spins.is_multiple_of(64) {
                    std::thread::yield_now();
                }
                std::hint::spin_loop();
                continue;
            }
            let count = s & COUNT;
            if count == 0 {
                return None;
            }
            if count > 1 {
                if e.state.compare_exchange(s, s - 1, Release, Relaxed).is_ok() {
                    return Some(Ok(()));
                }
                continue;
            }
            let v = s & !COUNT;
            if e.state
                .compare_exchange(s, v | BUSY, Acquire, Relaxed)
                .is_err()
            {
                continue;
            }
            let mut r = slots::unpin(m, id, slot);
            if r.is_err() {
                e.slot.store(NONE, Relaxed);
            } else if k > 0 {
                r = slots::release_slot(node, id, slot);
                e.slot.store(NONE, Relaxed);
            }
            e.state.store(v, Release);
            return Some(r);
        }
    }

    /// Gives back every slot (the handle is closing: no other call runs on it).
    pub fn release_all(&self, node: &Node, id: &Ident) -> Result<()> {
        let mut result = Ok(());
        for e in &self.entries {
            let slot = e.slot.swap(NONE, AcqRel);
            e.state.store(0, Release);
            if slot != NONE {
                result = result.and(slots::release_slot(node, id, slot));
            }
        }
        for slot in std::mem::take(&mut *self.alone()) {
            result = result.and(slots::reader_end(node, id, slot));
        }
        result
    }
}
