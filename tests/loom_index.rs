//! Memory-model check of the frame index's append, truncate, reset and find with the
//! generation (`src/index.rs`).
//!
//! The model mirrors, with the source's orderings, one page's directory word (the radix nodes
//! above it exist already; their pointers are stored Release after the node is zeroed and
//! loaded Acquire, like the word itself) and the entry slots:
//! * `Index::append` (src/index.rs): `tail.load(Relaxed)`, `count.load(Relaxed)`,
//!   `g32 = gen.load(Relaxed)`, `d = dir.load(Relaxed)`, `prev` from `d` when its generation is
//!   `g32`, the entry's `page | prev << 32` and `frame` stored Relaxed, `tail.store(Relaxed)`,
//!   `count.store(count + 1, Release)`, `dir.store(g32 << 32 | count + 1, Release)`;
//! * `Index::truncate` (src/index.rs), from the newest slot down: a live entry above the target
//!   has its page's directory word pointed back (`dir.store(g32 << 32 | prev, Release)` when it
//!   names that slot) and then its frame marked (`store(frame | DEAD, Release)`); the scan stops
//!   at the first live entry at or below the target; then the floor words and
//!   `tail.store(max_frame, Relaxed)` (the floor words are not read by lookups and are left
//!   out);
//! * `Index::reset_steps` (src/index.rs): the floor words, `gen.store(gen + 1, Release)`,
//!   `fence(Release)`, `count.store(0, Release)`, `tail.store(0, Release)`;
//! * `Index::find` (src/index.rs) through `stable` and `walk`: `g = gen.load(Acquire)`,
//!   `d = dir.load(Acquire)`, an entry of another generation is `None`, then the chain (entry
//!   words Relaxed) to the first live frame at or below the snapshot, `fence(Acquire)`, and
//!   `gen.load(Relaxed) == g` or retry.
//!
//! What is checked, under every interleaving and every store each load may read (C11):
//! * reset: a lookup racing with a reset and the first append of the new generation returns
//!   the answer of the generation it validated, never an entry of the other one (neither the
//!   old generation's entry through the new directory word, nor the new generation's entry
//!   through the old word), and never a spurious `Corrupt`;
//! * rollback: a reader whose snapshot comes from the latch (`tests/loom_support/latch.rs`)
//!   never gets a rolled-back frame, whether it reads before or after the writer's trim, the
//!   new transaction's append over the same frame number and its commit.
//!
//! Weakened twins: each must make loom fail (what it reported is in each one's doc). The
//! rollback model has none of the index's own: the truncate's Release stores are not what
//! protects a reader. A reader with the old snapshot never asks for a frame above it (the
//! dropped frames are above it, and their `prev` links are immutable), and a reader with the
//! new snapshot synchronizes with the publish that follows the truncate; with every store of
//! the truncate Relaxed the model still passes (checked while writing it). Its twin weakens the
//! publish instead, which is what it rests on.

mod loom_support;

use loom::sync::atomic::{fence, AtomicU64};
use loom::sync::Arc;
use loom::thread;
use loom_support::latch::{Latch, MAX_FRAME, SOURCE as LATCH};
use std::sync::atomic::Ordering::{self, *};

const DEAD: u64 = 1 << 63;
const P: u64 = 7;
const Q: u64 = 9;

#[derive(Clone, Copy)]
struct Cfg {
    /// `append`'s store of the directory word.
    dir_store: Ordering,
    /// `find`'s load of the directory word.
    dir_load: Ordering,
    /// `reset_steps`'s `fence(Release)` after the generation store.
    reset_fence: bool,
    /// `stable`'s `fence(Acquire)` before the generation recheck.
    find_fence: bool,
    /// `truncate`'s stores of the directory word and the DEAD mark.
    truncate_store: Ordering,
}

const SOURCE: Cfg = Cfg {
    dir_store: Release,
    dir_load: Acquire,
    reset_fence: true,
    find_fence: true,
    truncate_store: Release,
};

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Found {
    None,
    Frame(u64),
    Corrupt,
}

/// One generation word, counters, two pages' directory words and three entry slots.
struct Ix {
    cfg: Cfg,
    gen: AtomicU64,
    count: AtomicU64,
    tail: AtomicU64,
    /// Directory words of pages `P` and `Q`.
    dir: [AtomicU64; 2],
    /// Entry slots: `page | prev << 32`, frame.
    slot: [[AtomicU64; 2]; 3],
}

fn dir_index(page: u64) -> usize {
    (page == Q) as usize
}

impl Ix {
    /// Generation `gen` holding `entries` (page, frame) in slot order.
    fn new(cfg: Cfg, gen: u64, entries: &[(u64, u64)]) -> Ix {
        let ix = Ix {
            cfg,
            gen: AtomicU64::new(gen),
            count: AtomicU64::new(0),
            tail: AtomicU64::new(0),
            dir: [AtomicU64::new(0), AtomicU64::new(0)],
            slot: std::array::from_fn(|_| [AtomicU64::new(0), AtomicU64::new(0)]),
        };
        for &(page, frame) in entries {
            ix.append(page, frame);
        }
        ix
    }

    fn append(&self, page: u64, frame: u64) {
        let tail = self.tail.load(Relaxed);
        assert!(frame > tail);
        let count = self.count.load(Relaxed);
        let g32 = self.gen.load(Relaxed) & 0xffff_ffff;
        let dir = &self.dir[dir_index(page)];
        let d = dir.load(Relaxed);
        let prev = if d >> 32 == g32 { d & 0xffff_ffff } else { 0 };
        let e = &self.slot[count as usize];
        e[0].store(page | prev << 32, Relaxed);
        e[1].store(frame, Relaxed);
        self.tail.store(frame, Relaxed);
        self.count.store(count + 1, Release);
        dir.store(g32 << 32 | (count + 1), self.cfg.dir_store);
    }

    fn truncate(&self, max_frame: u64) {
        if self.tail.load(Relaxed) <= max_frame {
            return;
        }
        let count = self.count.load(Relaxed);
        let g32 = self.gen.load(Relaxed) & 0xffff_ffff;
        let mut slot = count;
        while slot > 0 {
            slot -= 1;
            let e = &self.slot[slot as usize];
            let (w0, frame) = (e[0].load(Relaxed), e[1].load(Relaxed));
            if frame & DEAD != 0 {
                continue;
            }
            if frame <= max_frame {
                break;
            }
            let dir = &self.dir[dir_index(w0 & 0xffff_ffff)];
            if dir.load(Relaxed) == g32 << 32 | (slot + 1) {
                dir.store(g32 << 32 | (w0 >> 32), self.cfg.truncate_store);
            }
            e[1].store(frame | DEAD, self.cfg.truncate_store);
        }
        self.tail.store(max_frame, Relaxed);
    }

    fn reset(&self) {
        self.gen
            .store(self.gen.load(Relaxed).wrapping_add(1), Release);
        if self.cfg.reset_fence {
            fence(Release);
        }
        self.count.store(0, Release);
        self.tail.store(0, Release);
    }

    /// `walk`.
    fn walk(&self, page: u64, d: u64, g: u64, max_frame: u64) -> Found {
        if d >> 32 != g & 0xffff_ffff {
            return Found::None;
        }
        let mut cur = d & 0xffff_ffff;
        while cur != 0 {
            let e = &self.slot[(cur - 1) as usize];
            let (w0, frame) = (e[0].load(Relaxed), e[1].load(Relaxed));
            if w0 & 0xffff_ffff != page {
                return Found::Corrupt;
            }
            if frame <= max_frame && frame & DEAD == 0 {
                return Found::Frame(frame);
            }
            if w0 >> 32 >= cur {
                return Found::Corrupt;
            }
            cur = w0 >> 32;
        }
        Found::None
    }

    /// `find` through `stable`: the generation it validated and the answer.
    fn find(&self, page: u64, max_frame: u64) -> (u64, Found) {
        loop {
            let g = self.gen.load(Acquire);
            let d = self.dir[dir_index(page)].load(self.cfg.dir_load);
            let r = self.walk(page, d, g, max_frame);
            if self.cfg.find_fence {
                fence(Acquire);
            }
            if self.gen.load(Relaxed) == g {
                return (g, r);
            }
            thread::yield_now();
        }
    }
}

/// Generation 1 holds page P at frame 5. The writer resets the index (the WAL restarted) and
/// appends page P at frame 1 in generation 2, while a reader looks P up with a snapshot of 5.
fn reset_model(cfg: Cfg, iteration: usize) -> (u64, Found) {
    let ix = Arc::new(Ix::new(cfg, 1, &[(P, 5)]));
    let w = ix.clone();
    let writer = thread::spawn(move || {
        w.reset();
        w.append(P, 1);
    });
    let r = ix.clone();
    let reader = thread::spawn(move || r.find(P, 5));
    writer.join().unwrap();
    let (g, found) = reader.join().unwrap();
    let fine = match g {
        1 => found == Found::Frame(5),
        2 => found == Found::None || found == Found::Frame(1),
        _ => false,
    };
    assert!(
        fine,
        "execution {iteration}: a lookup validated in generation {g} returned {found:?}, which \
         is not that generation's answer"
    );
    (g, found)
}

/// Committed: page P at frame 1. A dead writer left page P at frame 2, uncommitted. The next
/// writer trims to the committed frame, appends page Q at frame 2 and commits it, while a
/// reader takes a snapshot and looks P and Q up: P must always be at frame 1 (frame 2 of P was
/// rolled back), Q at frame 2 exactly when the snapshot includes it.
fn rollback_model(
    cfg: Cfg,
    latch_cfg: loom_support::latch::Cfg,
    iteration: usize,
) -> (u64, Found, Found) {
    let sh = Arc::new((
        Ix::new(cfg, 1, &[(P, 1), (P, 2)]),
        Latch::new(latch_cfg, [1, 0, 0]),
    ));
    let w = sh.clone();
    let writer = thread::spawn(move || {
        let (ix, latch) = (&w.0, &w.1);
        ix.truncate(latch.read()[0]);
        ix.append(Q, 2);
        latch.publish([2, 0, 0], MAX_FRAME, 1 << 48);
    });
    let r = sh.clone();
    let reader = thread::spawn(move || {
        let max_frame = r.1.read()[0];
        (
            max_frame,
            r.0.find(P, max_frame).1,
            r.0.find(Q, max_frame).1,
        )
    });
    writer.join().unwrap();
    let (max_frame, p, q) = reader.join().unwrap();
    assert_eq!(
        p,
        Found::Frame(1),
        "execution {iteration}: with snapshot {max_frame} page P was found at {p:?}, a \
         rolled-back frame"
    );
    let want_q = if max_frame >= 2 {
        Found::Frame(2)
    } else {
        Found::None
    };
    assert_eq!(
        q, want_q,
        "execution {iteration}: with snapshot {max_frame} page Q was found at {q:?}"
    );
    (max_frame, p, q)
}

/// The steps the model mirrors are still the source's.
#[test]
fn the_model_mirrors_the_source() {
    loom_support::source_has(
        "src/index.rs",
        "tests/loom_index.rs",
        &[
            "let w0 = self.pool.u64(off)?.load(Relaxed); let frame = self.pool.u64(off + 8)?.load(Relaxed);",
            "w0.store(page as u64 | prev << 32, Relaxed); \
             w1.store(frame, Relaxed); \
             tail_word.store(frame, Relaxed); \
             count_word.store(count + 1, Release); \
             dir.store(g32 << 32 | (count + 1), Release);",
            "let g = gen.load(Acquire); let r = f(g); fence(Acquire); if gen.load(Relaxed) == g {",
            "Some(w) => self.walk(page, w.load(Acquire), g, max_frame),",
            "dir.store(g32 << 32 | e.prev, Release);",
            ".store(e.frame | DEAD, Release);",
            "gen.store(gen.load(Relaxed).wrapping_add(1), Release); fence(Release);",
            "word(self.shm, H_IX_COUNT).store(0, Release);",
        ],
    );
}

#[test]
fn a_lookup_never_mixes_generations() {
    let (n, seen) = loom_support::check("index.reset", |i| reset_model(SOURCE, i));
    assert!(n > 50, "{n} executions");
    loom_support::covers(
        "index.reset",
        &seen,
        &[(1, Found::Frame(5)), (2, Found::None), (2, Found::Frame(1))],
    );
}

#[test]
fn a_lookup_never_returns_a_rolled_back_frame() {
    let (n, seen) = loom_support::check("index.rollback", |i| rollback_model(SOURCE, LATCH, i));
    assert!(n > 50, "{n} executions");
    loom_support::covers(
        "index.rollback",
        &seen,
        &[
            (1, Found::Frame(1), Found::None),
            (2, Found::Frame(1), Found::Frame(2)),
        ],
    );
}

/// Weakened: `append` stores the directory word Relaxed.
///
/// Loom (bounds 2 and 3), execution 6: "a lookup validated in generation 2 returned
/// Frame(5), which is not that generation's answer" (the new word, the old entry).
#[test]
fn weakened_relaxed_directory_store_is_caught() {
    let cfg = Cfg {
        dir_store: Relaxed,
        ..SOURCE
    };
    loom_support::check_fails(
        "index.reset/dir-store-relaxed",
        "not that generation's answer",
        move |i| reset_model(cfg, i),
    );
}

/// Weakened: no `fence(Acquire)` before `stable`'s generation recheck.
///
/// Loom (bounds 2 and 3), execution 3: "a lookup validated in generation 1 returned
/// Frame(1), which is not that generation's answer" (the old word, the new entry, and a
/// recheck that still read generation 1).
#[test]
fn weakened_missing_find_fence_is_caught() {
    let cfg = Cfg {
        find_fence: false,
        ..SOURCE
    };
    loom_support::check_fails(
        "index.reset/no-find-fence",
        "not that generation's answer",
        move |i| reset_model(cfg, i),
    );
}

/// Weakened: no `fence(Release)` after the reset's generation store.
///
/// Loom (bounds 2 and 3), execution 3: "a lookup validated in generation 1 returned
/// Frame(1), which is not that generation's answer".
#[test]
fn weakened_missing_reset_fence_is_caught() {
    let cfg = Cfg {
        reset_fence: false,
        ..SOURCE
    };
    loom_support::check_fails(
        "index.reset/no-reset-fence",
        "not that generation's answer",
        move |i| reset_model(cfg, i),
    );
}

/// Weakened: the publish after the rollback stores the sequence Relaxed, without its fence.
///
/// Loom (bounds 2 and 3), execution 7: "with snapshot 18446744073709551615 page P was found
/// at Frame(2), a rolled-back frame" (the reader took the other copy's garbage for the
/// snapshot, and saw the directory from before the trim).
#[test]
fn weakened_publish_after_rollback_is_caught() {
    let latch = loom_support::latch::Cfg {
        publish_seq_store: Relaxed,
        publisher_fence: false,
        ..LATCH
    };
    loom_support::check_fails(
        "index.rollback/publish-relaxed",
        "a rolled-back frame",
        move |i| rollback_model(SOURCE, latch, i),
    );
}
