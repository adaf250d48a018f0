//! Memory-model check of the reader pin against `min_reader_frame` (`src/slots.rs`).
//!
//! The model mirrors, with the source's orderings:
//! * `reader_begin` (src/slots.rs, CAS strategy): claim the slot — pass 0 when it is free,
//!   pass 1 also when its owner is not alive — with `owner.load(Acquire)` and
//!   `owner.compare_exchange(owner, tag, AcqRel, Relaxed)`, `snap = Latch::read()`, then loop:
//!   `frame.store(snap.max_frame, Relaxed)`, `fence(SeqCst)`, done unless `Latch::moved` (a
//!   publish since the snapshot was read), else pin a snapshot read again;
//! * `min_reader_frame` (src/slots.rs): `fence(SeqCst)`, then per slot `owner.load(SeqCst)`,
//!   `frame.load(SeqCst)`, skip a free owner or `NO_FRAME`, otherwise the frame counts if the
//!   owner is alive (the kernel's probe of its liveness byte; generations under C11 are
//!   `tests/loom_reclaim.rs`);
//! * the checkpointer's use of it (the contract in `min_reader_frame`'s doc): read the snapshot
//!   first, then `min_reader_frame`, and backfill no frame above `min(max_frame, result)`;
//! * the writer's commit: `Latch::publish` of a newer `max_frame` (the latch model of
//!   `tests/loom_support/latch.rs`, itself checked by `tests/loom_snapshot.rs`).
//!
//! What is checked, under every interleaving and every store each load may read (C11): the
//! checkpointer's backfill limit never exceeds the frame the reader ended up pinned at, whatever
//! the interleaving of pin and scan, on a free slot and on a dead reader's slot that the reader
//! takes over (where the scan may pair the dead owner's tag with the new reader's frame): either the scan sees the pin, or the reader's re-read sees
//! the snapshot the checkpointer read and pins that one (the Dekker pattern; both fences are
//! needed, since the snapshot loads on either side are only Acquire).
//!
//! Weakened twins: each must make loom fail; what loom reported, with preemption bound 2
//! (`cargo test`) and 3 (`make loom`), is in each one's doc.

mod loom_support;

use loom::sync::atomic::{fence, AtomicU64};
use loom::sync::Arc;
use loom::thread;
use loom_support::latch::{Latch, MAX_FRAME, SOURCE as LATCH};
use std::sync::atomic::Ordering::*;
use tshm::ffi::TSHM_NO_FRAME as NO_FRAME;
use tshm::layout::{make_tag, split_tag};

/// Which of the two fences the model keeps (the source has both).
#[derive(Clone, Copy)]
struct Cfg {
    /// `fence(SeqCst)` between the reader's pin and its snapshot re-read.
    reader_fence: bool,
    /// `fence(SeqCst)` at the start of `min_reader_frame`.
    scan_fence: bool,
}

const SOURCE: Cfg = Cfg {
    reader_fence: true,
    scan_fence: true,
};

struct Shared {
    latch: Latch,
    owner: AtomicU64,
    frame: AtomicU64,
    /// Liveness bytes of instances 0 (the writer), 1 (the reader) and 2 (dead).
    liveness: [AtomicU64; 3],
}

impl Shared {
    /// `reader_alive` for the CAS strategy: `tag_alive`'s probe (every generation here is
    /// current; a stale generation under C11 is `tests/loom_reclaim.rs`).
    fn alive(&self, tag: u64) -> bool {
        split_tag(tag).is_some_and(|(i, _)| self.liveness[i as usize].fetch_add(0, AcqRel) != 0)
    }
}

/// `reader_begin`: returns the pinned `max_frame`.
fn reader_begin(sh: &Shared, cfg: Cfg, tag: u64) -> u64 {
    let claimed = (0..2).any(|pass| {
        let owner = sh.owner.load(Acquire);
        let free = owner == 0 || (pass == 1 && !sh.alive(owner));
        free && sh
            .owner
            .compare_exchange(owner, tag, AcqRel, Relaxed)
            .is_ok()
    });
    assert!(claimed, "the only live reader finds the slot free or stale");
    let (mut snap, mut at) = sh.latch.read_at();
    loop {
        sh.frame.store(snap[0], Relaxed);
        if cfg.reader_fence {
            fence(SeqCst);
        }
        if !sh.latch.moved(at) {
            return snap[0];
        }
        (snap, at) = sh.latch.read_at();
    }
}

/// `min_reader_frame` over the one slot.
fn min_reader_frame(sh: &Shared, cfg: Cfg) -> u64 {
    if cfg.scan_fence {
        fence(SeqCst);
    }
    let owner = sh.owner.load(SeqCst);
    let frame = sh.frame.load(SeqCst);
    if owner == 0 || frame == NO_FRAME || !sh.alive(owner) {
        NO_FRAME
    } else {
        frame
    }
}

/// Committed `max_frame` 1; the writer commits frame 2 while a reader begins and a
/// checkpointer computes its backfill limit. With `stale`, the slot still holds a dead
/// reader's tag and pin (frame 1), which the reader takes over. Returns (the checkpointer's
/// snapshot, what its scan found, the reader's pin).
fn model(cfg: Cfg, stale: bool, iteration: usize) -> (u64, u64, u64) {
    let sh = Arc::new(Shared {
        latch: Latch::new(LATCH, [1, 0, 0]),
        owner: AtomicU64::new(if stale { make_tag(2, 1) } else { 0 }),
        frame: AtomicU64::new(if stale { 1 } else { NO_FRAME }),
        liveness: [AtomicU64::new(1), AtomicU64::new(1), AtomicU64::new(0)],
    });
    let s = sh.clone();
    let writer = thread::spawn(move || {
        s.latch.publish([2, 0, 0], MAX_FRAME, make_tag(0, 1));
    });
    let s = sh.clone();
    let reader = thread::spawn(move || reader_begin(&s, cfg, make_tag(1, 1)));
    // the checkpointer: the snapshot first, then the pins
    let s = sh.clone();
    let ckpt = thread::spawn(move || {
        let max_frame = s.latch.read()[0];
        (max_frame, min_reader_frame(&s, cfg))
    });
    writer.join().unwrap();
    let pinned = reader.join().unwrap();
    let (max_frame, min) = ckpt.join().unwrap();
    let limit = max_frame.min(min);
    assert!(
        limit <= pinned,
        "execution {iteration}: the checkpointer may backfill up to frame {limit} (snapshot \
         {max_frame}) while a live reader is pinned at frame {pinned}"
    );
    (max_frame, min, pinned)
}

fn coverage(seen: &std::collections::BTreeSet<(u64, u64, u64)>) {
    // both snapshots on both sides, and a scan that saw the pin as well as one that came first
    let ck: Vec<u64> = seen.iter().map(|o| o.0).collect();
    let pins: Vec<u64> = seen.iter().map(|o| o.2).collect();
    assert!(ck.contains(&1) && ck.contains(&2), "{seen:?}");
    assert!(pins.contains(&1) && pins.contains(&2), "{seen:?}");
    assert!(seen.iter().any(|o| o.1 == NO_FRAME) && seen.iter().any(|o| o.1 != NO_FRAME));
}

/// The steps the model mirrors are still the source's.
#[test]
fn the_model_mirrors_the_source() {
    loom_support::source_has(
        "src/slots.rs",
        "tests/loom_reader_pin.rs",
        &[
            "let owner = owner_w.load(Acquire);",
            "let free = owner == 0 || (pass == 1 && !reader_alive(node, i, owner)?);",
            "owner_w .compare_exchange(owner, tag, AcqRel, Relaxed) .is_ok()",
            "frame.store(snap.max_frame, Relaxed);",
            "fence(SeqCst); if !latch.moved(at) { break; } at = latch.read_into(snap);",
            "let m = node.mapped()?; fence(SeqCst); let mut min = NO_FRAME;",
            "let owner = m.shm.u64(slot).load(SeqCst); let frame = m.shm.u64(slot + 8).load(SeqCst);",
        ],
    );
    loom_support::source_has(
        "src/snapshot.rs",
        "tests/loom_reader_pin.rs",
        &["self.shm.u64(H_SNAP_SEQ).load(Acquire) != at"],
    );
}

#[test]
fn checkpointer_never_passes_a_pinned_frame() {
    let (n, seen) = loom_support::check("reader_pin", |i| model(SOURCE, false, i));
    assert!(n > 100, "{n} executions");
    coverage(&seen);
}

#[test]
fn checkpointer_never_passes_the_pin_of_a_reader_reclaiming_a_stale_slot() {
    let (n, seen) = loom_support::check("reader_pin/stale-slot", |i| model(SOURCE, true, i));
    assert!(n > 100, "{n} executions");
    coverage(&seen);
}

/// Weakened: no `fence(SeqCst)` at the start of `min_reader_frame`.
///
/// Loom (bounds 2 and 3), execution 5: "the checkpointer may backfill up to frame 2
/// (snapshot 2) while a live reader is pinned at frame 1" (the scan missed the pin, the
/// reader's re-read missed the commit).
#[test]
fn weakened_missing_scan_fence_is_caught() {
    let cfg = Cfg {
        scan_fence: false,
        ..SOURCE
    };
    loom_support::check_fails(
        "reader_pin/no-scan-fence",
        "while a live reader is pinned",
        move |i| model(cfg, false, i),
    );
}

/// Weakened: no `fence(SeqCst)` between the reader's pin and its re-read.
///
/// Loom (bounds 2 and 3), execution 5: the same report as without the scan's fence.
#[test]
fn weakened_missing_reader_fence_is_caught() {
    let cfg = Cfg {
        reader_fence: false,
        ..SOURCE
    };
    loom_support::check_fails(
        "reader_pin/no-reader-fence",
        "while a live reader is pinned",
        move |i| model(cfg, false, i),
    );
}
