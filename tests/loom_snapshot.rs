//! Memory-model check of the snapshot latch and the publish token (`src/snapshot.rs`).
//!
//! The model mirrors [`Latch::publish`] and [`Latch::read`] of `src/snapshot.rs` step by step,
//! with their orderings:
//!
//! * `publish`: take the token with `compare_exchange(0, tag, Acquire, Relaxed)` (spinning),
//!   `s = seq.load(Acquire)`, `fence(Release)`, read copy `s & 1` word by word (Relaxed), merge
//!   the masked fields and bump the snapshot's own `sequence` word, store the new words into copy
//!   `(s + 1) & 1` one by one (Relaxed), `seq.store(s + 1, Release)`, `token.store(0, Release)`;
//! * `read`: `s1 = seq.load(Acquire)`, read copy `s1 & 1` word by word (Relaxed),
//!   `fence(Acquire)`, `seq.load(Relaxed) == s1` or retry.
//!
//! A snapshot here is three of the real snapshot's words (`max_frame`, `nbackfills` and the
//! snapshot's `sequence`), enough for a torn copy to show: every word of a copy is stored and
//! loaded separately, exactly as the nine words of the real one are.
//!
//! What is checked, under every interleaving and every store each load may read (C11):
//! * a reader never returns a torn snapshot, nor the garbage a killed publisher left in the
//!   other copy: what it returns is exactly one of the published snapshots;
//! * a reader never returns a snapshot older than one whose publish happens before the read
//!   (the contract: a reader that learned of a publish by synchronizing with its publisher sees
//!   that publish or a newer one), and two reads of one reader never go backwards;
//! * two concurrent masked publishers (the writer's `max_frame`, the checkpointer's
//!   `nbackfills`) never lose either field: the token serializes them and each starts from the
//!   other's result.
//!
//! [`Latch::publish`]: ../src/snapshot.rs
//! [`Latch::read`]: ../src/snapshot.rs

mod loom_support;

use loom::sync::atomic::{fence, AtomicU64};
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::Ordering::{self, *};

/// Words per copy in the model: `max_frame`, `nbackfills`, `sequence`.
const W: usize = 3;
const MAX_FRAME: u32 = 1;
const NBACKFILLS: u32 = 2;
/// What a publisher killed mid-write leaves in the copy that is not current.
const TORN: u64 = u64::MAX;

/// The orderings the model uses; [`SOURCE`] is what `src/snapshot.rs` uses.
#[derive(Clone, Copy)]
struct Cfg {
    /// `seq.store(s + 1, _)` at the end of `publish`.
    publish_seq_store: Ordering,
    /// `fence(Release)` after the publisher's load of `seq`.
    publisher_fence: bool,
    /// `fence(Acquire)` between the reader's copy loads and its reload of `seq`.
    reader_fence: bool,
    /// Success ordering of the token claim and ordering of the token release.
    token_claim: Ordering,
    token_release: Ordering,
}

const SOURCE: Cfg = Cfg {
    publish_seq_store: Release,
    publisher_fence: true,
    reader_fence: true,
    token_claim: Acquire,
    token_release: Release,
};

struct Latch {
    cfg: Cfg,
    token: AtomicU64,
    seq: AtomicU64,
    copy: [[AtomicU64; W]; 2],
}

type Snap = [u64; W];

impl Latch {
    /// Copy 0 holds `first` (sequence 0), copy 1 what a killed publisher left.
    fn new(cfg: Cfg, first: Snap) -> Latch {
        Latch {
            cfg,
            token: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            copy: [first.map(AtomicU64::new), [TORN; W].map(AtomicU64::new)],
        }
    }

    fn read_copy(&self, i: usize) -> Snap {
        std::array::from_fn(|k| self.copy[i][k].load(Relaxed))
    }

    /// `Latch::read` (src/snapshot.rs).
    fn read(&self) -> Snap {
        loop {
            let s1 = self.seq.load(Acquire);
            let w = self.read_copy((s1 & 1) as usize);
            if self.cfg.reader_fence {
                fence(Acquire);
            }
            if self.seq.load(Relaxed) == s1 {
                return w;
            }
            thread::yield_now();
        }
    }

    /// `Latch::publish` (src/snapshot.rs), with a live token holder only (takeover of a dead
    /// one is checked in `loom_reclaim.rs`).
    fn publish(&self, new: Snap, mask: u32, tag: u64) -> Snap {
        while self
            .token
            .compare_exchange(0, tag, self.cfg.token_claim, Relaxed)
            .is_err()
        {
            thread::yield_now();
        }
        let s = self.seq.load(Acquire);
        if self.cfg.publisher_fence {
            fence(Release);
        }
        let mut snap = self.read_copy((s & 1) as usize);
        if mask & MAX_FRAME != 0 {
            snap[0] = new[0];
        }
        if mask & NBACKFILLS != 0 {
            snap[1] = new[1];
        }
        snap[2] = snap[2].wrapping_add(1);
        let other = ((s + 1) & 1) as usize;
        for (k, w) in snap.iter().enumerate() {
            self.copy[other][k].store(*w, Relaxed);
        }
        self.seq
            .store(s.wrapping_add(1), self.cfg.publish_seq_store);
        self.token.store(0, self.cfg.token_release);
        snap
    }
}

/// One publisher publishes `max_frame` 2 then 3 over the initial snapshot (1, 0, sequence 0),
/// announcing each publish afterwards on `published` (Release); a reader learns of a publish
/// (Acquire), then reads twice.
fn reader_model(cfg: Cfg, iteration: usize) {
    let latch = Arc::new(Latch::new(cfg, [1, 0, 0]));
    let published = Arc::new(AtomicU64::new(0));
    let (l, p) = (latch.clone(), published.clone());
    let publisher = thread::spawn(move || {
        for (n, max_frame) in [(1, 2), (2, 3)] {
            l.publish([max_frame, 0, 0], MAX_FRAME, 1 << 48);
            p.store(n, Release);
        }
    });
    let known = published.load(Acquire);
    let a = latch.read();
    let b = latch.read();
    let snapshots = [[1, 0, 0], [2, 0, 1], [3, 0, 2]];
    for r in [a, b] {
        assert!(
            snapshots.contains(&r),
            "execution {iteration}: the reader returned {r:?}, which was never published \
             (a torn copy)"
        );
    }
    assert!(
        a[2] >= known,
        "execution {iteration}: the reader returned sequence {} after learning of publish {known}",
        a[2]
    );
    assert!(
        b[2] >= a[2],
        "execution {iteration}: the second read ({b:?}) is older than the first ({a:?})"
    );
    publisher.join().unwrap();
}

/// The writer publishes `max_frame` 2, the checkpointer `nbackfills` 1, concurrently, over
/// (1, 0, sequence 0), while a reader reads: it must return a published snapshot, and
/// afterwards the snapshot must hold both fields.
fn publishers_model(cfg: Cfg, iteration: usize) {
    let latch = Arc::new(Latch::new(cfg, [1, 0, 0]));
    let l = latch.clone();
    let ckpt = thread::spawn(move || l.publish([0, 1, 0], NBACKFILLS, 2 << 48));
    let l = latch.clone();
    let reader = thread::spawn(move || l.read());
    let w = latch.publish([2, 0, 0], MAX_FRAME, 1 << 48);
    let c = ckpt.join().unwrap();
    let seen = reader.join().unwrap();
    assert!(
        [[1, 0, 0], [2, 0, 1], [1, 1, 1], [2, 1, 2]].contains(&seen),
        "execution {iteration}: a reader beside two publishers returned {seen:?}, which was \
         never published"
    );
    let r = latch.read();
    assert_eq!(
        r,
        [2, 1, 2],
        "execution {iteration}: after both publishes the snapshot is {r:?} (writer published \
         {w:?}, checkpointer {c:?}): a publish started from a stale copy"
    );
}

#[test]
fn reader_never_sees_a_torn_or_stale_snapshot() {
    let n = loom_support::check("snapshot.reader", 3, |i| reader_model(SOURCE, i));
    assert!(n > 100, "{n} executions");
}

#[test]
fn concurrent_masked_publishers_keep_both_fields() {
    let n = loom_support::check("snapshot.publishers", 3, |i| publishers_model(SOURCE, i));
    assert!(n > 100, "{n} executions");
}

/// Weakened: the publish's `seq` store Relaxed instead of Release.
#[test]
#[should_panic(expected = "never published")]
fn weakened_relaxed_sequence_store_is_caught() {
    let cfg = Cfg {
        publish_seq_store: Relaxed,
        ..SOURCE
    };
    loom_support::check("snapshot.reader/seq-store-relaxed", 3, move |i| {
        reader_model(cfg, i)
    });
}

/// Weakened: no `fence(Acquire)` before the reader's recheck of `seq`.
#[test]
#[should_panic(expected = "never published")]
fn weakened_missing_reader_fence_is_caught() {
    let cfg = Cfg {
        reader_fence: false,
        ..SOURCE
    };
    loom_support::check("snapshot.reader/no-reader-fence", 3, move |i| {
        reader_model(cfg, i)
    });
}

/// Weakened: no `fence(Release)` before the publisher's stores into the other copy.
#[test]
#[should_panic(expected = "never published")]
fn weakened_missing_publisher_fence_is_caught() {
    let cfg = Cfg {
        publisher_fence: false,
        ..SOURCE
    };
    loom_support::check("snapshot.reader/no-publisher-fence", 3, move |i| {
        reader_model(cfg, i)
    });
}

/// Weakened: the token claimed and released Relaxed.
#[test]
#[should_panic(expected = "a publish started from a stale copy")]
fn weakened_relaxed_token_is_caught() {
    let cfg = Cfg {
        token_claim: Relaxed,
        token_release: Relaxed,
        ..SOURCE
    };
    loom_support::check("snapshot.publishers/token-relaxed", 3, move |i| {
        publishers_model(cfg, i)
    });
}
