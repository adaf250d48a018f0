//! Memory-model check of the snapshot latch and the publish token (`src/snapshot.rs`).
//!
//! The model of `Latch::publish` and `Latch::read` (`src/snapshot.rs`), step by step with
//! their orderings, is `tests/loom_support/latch.rs` (its doc lists the steps).
//!
//! What is checked, under every interleaving and every store each load may read (C11):
//! * a reader never returns a torn snapshot, nor the garbage a killed publisher left in the
//!   other copy: what it returns is exactly one of the published snapshots;
//! * a reader never returns a snapshot older than one whose publish happens before the read
//!   (the contract: a reader that learned of a publish by synchronizing with its publisher sees
//!   that publish or a newer one), and two reads of one reader never go backwards;
//! * two concurrent masked publishers (the writer's `max_frame`, the checkpointer's
//!   `nbackfills`) never lose either field: the token serializes them and each starts from the
//!   other's result;
//! * a publisher killed mid-copy, or after its sequence store but before it gave the token
//!   back, is taken over once the kernel dropped its liveness byte: no reader ever returns its
//!   torn copy, and the next publish starts from the last complete snapshot.
//!
//! Weakened twins: each must make loom fail; what loom reported, with preemption bound 2
//! (`cargo test`) and 3 (`make loom`), is in each one's doc.

mod loom_support;

use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;
use loom_support::latch::{Cfg, Latch, Snap, MAX_FRAME, NBACKFILLS, SOURCE, W};
use std::sync::atomic::Ordering::*;
use tshm::layout::{make_tag, split_tag};

/// One publisher publishes `max_frame` 2 then 3 over the initial snapshot (1, 0, sequence 0),
/// announcing each publish afterwards on `published` (Release); a reader learns of a publish
/// (Acquire), then reads twice. Returns (publishes known, sequences of the two reads).
fn reader_model(cfg: Cfg, iteration: usize) -> (u64, u64, u64) {
    let latch = Arc::new(Latch::new(cfg, [1, 0, 0]));
    let published = Arc::new(AtomicU64::new(0));
    let (l, p) = (latch.clone(), published.clone());
    let publisher = thread::spawn(move || {
        for (n, max_frame) in [(1, 2), (2, 3)] {
            l.publish([max_frame, 0, 0], MAX_FRAME, 1 << 48);
            p.store(n, Release);
        }
    });
    let (l, p) = (latch.clone(), published.clone());
    let reader = thread::spawn(move || {
        let known = p.load(Acquire);
        (known, l.read(), l.read())
    });
    publisher.join().unwrap();
    let (known, a, b) = reader.join().unwrap();
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
    (known, a[2], b[2])
}

/// The writer publishes `max_frame` 2, the checkpointer `nbackfills` 1, concurrently, over
/// (1, 0, sequence 0), while a reader reads: it must return a published snapshot, and
/// afterwards the snapshot must hold both fields. Returns (the writer's sequence, the
/// checkpointer's, the reader's).
fn publishers_model(cfg: Cfg, iteration: usize) -> (u64, u64, u64) {
    let latch = Arc::new(Latch::new(cfg, [1, 0, 0]));
    let l = latch.clone();
    let ckpt = thread::spawn(move || l.publish([0, 1, 0], NBACKFILLS, 2 << 48));
    let l = latch.clone();
    let writer = thread::spawn(move || l.publish([2, 0, 0], MAX_FRAME, 1 << 48));
    let l = latch.clone();
    let reader = thread::spawn(move || l.read());
    let c = ckpt.join().unwrap();
    let w = writer.join().unwrap();
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
    (w[2], c[2], seen[2])
}

/// The writer (instance 0) publishes `max_frame` 2 and is killed after `die_after` stores
/// (keeping the token; its liveness byte is dropped by the kernel), while the checkpointer
/// (instance 1) publishes `nbackfills` 1, taking the token over once the holder is dead, and
/// a reader reads. The reader must see a published snapshot, never the killed publisher's
/// torn copy; the checkpointer's publish starts from the last complete one. Returns (the
/// reader's snapshot, the final one).
fn killed_publisher_model(die_after: usize, iteration: usize) -> (Snap, Snap) {
    let latch = Arc::new(Latch::new(SOURCE, [1, 0, 0]));
    // liveness bytes of instances 0 and 1 (the kernel's; AcqRel read-modify-writes)
    let liveness = Arc::new([AtomicU64::new(1), AtomicU64::new(1)]);
    let (l, live) = (latch.clone(), liveness.clone());
    let writer = thread::spawn(move || {
        let r = l.publish_until(
            [2, 0, 0],
            MAX_FRAME,
            make_tag(0, 1),
            |_| true,
            Some(die_after),
        );
        assert!(r.is_none());
        live[0].swap(0, AcqRel); // killed: the kernel drops its locks
    });
    let (l, live) = (latch.clone(), liveness.clone());
    let ckpt = thread::spawn(move || {
        let alive = |tag: u64| {
            split_tag(tag).is_some_and(|(i, _)| live[i as usize].fetch_add(0, AcqRel) != 0)
        };
        l.publish_until([0, 1, 0], NBACKFILLS, make_tag(1, 1), alive, None)
            .unwrap()
    });
    let l = latch.clone();
    let reader = thread::spawn(move || l.read());
    writer.join().unwrap();
    let c = ckpt.join().unwrap();
    let seen = reader.join().unwrap();
    // the killed writer made its sequence store: its snapshot is published (before or after
    // the checkpointer's, whichever took the token first)
    let committed = die_after > W;
    let published: &[Snap] = if committed {
        &[[1, 0, 0], [2, 0, 1], [1, 1, 1], [2, 1, 2]]
    } else {
        &[[1, 0, 0], [1, 1, 1]]
    };
    let last = if committed { [2, 1, 2] } else { [1, 1, 1] };
    for s in [seen, c] {
        assert!(
            published.contains(&s),
            "execution {iteration}: beside a killed publisher {s:?} was read or published, \
             which is no snapshot either publish could make"
        );
    }
    let r = latch.read();
    assert_eq!(
        r, last,
        "execution {iteration}: after the takeover the snapshot is {r:?}"
    );
    (seen, r)
}

/// The steps the latch model mirrors are still the source's.
#[test]
fn the_model_mirrors_the_source() {
    loom_support::source_has(
        "src/snapshot.rs",
        "tests/loom_support/latch.rs",
        &[
            "std::array::from_fn(|k| words[k].load(Relaxed))",
            "let s1 = seq.load(Acquire); let w = self.read_copy((s1 & 1) as usize); \
             fence(Acquire); if seq.load(Relaxed) == s1 {",
            "match token.compare_exchange(0, tag, AcqRel, Acquire) {",
            "&& token .compare_exchange(holder, tag, AcqRel, Acquire) .is_ok()",
            "let s = seq.load(Acquire); fence(Release);",
            "self.shm.u64(base + 8 * k).store(*w, Relaxed);",
            "seq.store(s.wrapping_add(1), Release); token.store(0, Release);",
        ],
    );
}

#[test]
fn reader_never_sees_a_torn_or_stale_snapshot() {
    let (n, seen) = loom_support::check("snapshot.reader", |i| reader_model(SOURCE, i));
    assert!(n > 100, "{n} executions");
    // the reader ran before, between and after the publishes, and learned of each
    let reads: Vec<u64> = seen.iter().map(|o| o.1).collect();
    let known: Vec<u64> = seen.iter().map(|o| o.0).collect();
    for k in 0..3 {
        assert!(reads.contains(&k) && known.contains(&k), "{seen:?}");
    }
}

#[test]
fn concurrent_masked_publishers_keep_both_fields() {
    let (n, seen) = loom_support::check("snapshot.publishers", |i| publishers_model(SOURCE, i));
    assert!(n > 100, "{n} executions");
    // either publisher first, and the reader before, between and after them
    let reads: Vec<u64> = seen.iter().map(|o| o.2).collect();
    assert!(
        seen.iter().any(|o| o.0 == 1) && seen.iter().any(|o| o.1 == 1),
        "{seen:?}"
    );
    for k in 0..3 {
        assert!(reads.contains(&k), "{seen:?}");
    }
}

#[test]
fn a_killed_publisher_is_taken_over_and_its_torn_copy_never_read() {
    // killed in the middle of its copy, and after its sequence store but before the token
    for (die_after, name) in [
        (1, "snapshot.killed/mid-copy"),
        (W + 1, "snapshot.killed/after-seq"),
    ] {
        let (n, seen) = loom_support::check(name, move |i| killed_publisher_model(die_after, i));
        assert!(n > 50, "{n} executions");
        // the reader ran before and after the takeover
        assert!(seen.iter().any(|o| o.0 == [1, 0, 0]), "{seen:?}");
        assert!(seen.iter().any(|o| o.0 == o.1), "{seen:?}");
    }
}

/// Weakened: the publish's `seq` store Relaxed instead of Release.
///
/// Loom (bounds 2 and 3), execution 18: "the reader returned [18446744073709551615, ...],
/// which was never published (a torn copy)": the new sequence, the killed publisher's garbage.
#[test]
fn weakened_relaxed_sequence_store_is_caught() {
    let cfg = Cfg {
        publish_seq_store: Relaxed,
        ..SOURCE
    };
    loom_support::check_fails(
        "snapshot.reader/seq-store-relaxed",
        "never published",
        move |i| reader_model(cfg, i),
    );
}

/// Weakened: no `fence(Acquire)` before the reader's recheck of `seq`.
///
/// Loom (bounds 2 and 3), execution 4: "the reader returned [1, 0, 2], which was never
/// published (a torn copy)": copy 0 half from the first snapshot, half from the third.
#[test]
fn weakened_missing_reader_fence_is_caught() {
    let cfg = Cfg {
        reader_fence: false,
        ..SOURCE
    };
    loom_support::check_fails(
        "snapshot.reader/no-reader-fence",
        "never published",
        move |i| reader_model(cfg, i),
    );
}

/// Weakened: no `fence(Release)` before the publisher's stores into the other copy.
///
/// Loom (bounds 2 and 3), execution 4: "the reader returned [1, 0, 2], which was never
/// published (a torn copy)".
#[test]
fn weakened_missing_publisher_fence_is_caught() {
    let cfg = Cfg {
        publisher_fence: false,
        ..SOURCE
    };
    loom_support::check_fails(
        "snapshot.reader/no-publisher-fence",
        "never published",
        move |i| reader_model(cfg, i),
    );
}

/// Weakened: the token claimed and released Relaxed.
///
/// Loom (bounds 2 and 3), execution 1: "after both publishes the snapshot is [1, 1, 1]
/// (writer published [2, 0, 1], checkpointer [1, 1, 1]): a publish started from a stale
/// copy" (the writer's `max_frame` was lost).
#[test]
fn weakened_relaxed_token_is_caught() {
    let cfg = Cfg {
        token_claim: Relaxed,
        token_fail: Relaxed,
        token_release: Relaxed,
        ..SOURCE
    };
    loom_support::check_fails(
        "snapshot.publishers/token-relaxed",
        "a publish started from a stale copy",
        move |i| publishers_model(cfg, i),
    );
}
