//! The snapshot latch of `src/snapshot.rs` as a model (see `tests/loom_snapshot.rs`, which
//! checks it; `tests/loom_reader_pin.rs` uses it as the snapshot its reader pins).
//!
//! It mirrors `Latch::publish` and `Latch::read` of `src/snapshot.rs` step by step, with
//! their orderings:
//!
//! * `publish`: take the token with `compare_exchange(0, tag, AcqRel, Acquire)` (spinning),
//!   `s = seq.load(Acquire)`, `fence(Release)`, read copy `s & 1` word by word (Relaxed), merge
//!   the masked fields and bump the snapshot's own `sequence` word, store the new words into
//!   copy `(s + 1) & 1` one by one (Relaxed), `seq.store(s + 1, Release)`,
//!   `token.store(0, Release)`;
//! * `read`: `s1 = seq.load(Acquire)`, read copy `s1 & 1` word by word (Relaxed),
//!   `fence(Acquire)`, `seq.load(Relaxed) == s1` or retry.
//!
//! A snapshot here is three of the real snapshot's words (`max_frame`, `nbackfills` and the
//! snapshot's `sequence`), enough for a torn copy to show: every word of a copy is stored and
//! loaded separately, exactly as the nine words of the real one are.

use loom::sync::atomic::{fence, AtomicU64};
use loom::thread;
use std::sync::atomic::Ordering::{self, *};

/// Words per copy in the model: `max_frame`, `nbackfills`, `sequence`.
pub const W: usize = 3;
pub const MAX_FRAME: u32 = 1;
pub const NBACKFILLS: u32 = 2;
/// What a publisher killed mid-write leaves in the copy that is not current.
pub const TORN: u64 = u64::MAX;

/// The orderings the model uses; [`SOURCE`] is what `src/snapshot.rs` uses.
#[derive(Clone, Copy)]
pub struct Cfg {
    /// `seq.store(s + 1, _)` at the end of `publish`.
    pub publish_seq_store: Ordering,
    /// `fence(Release)` after the publisher's load of `seq`.
    pub publisher_fence: bool,
    /// `fence(Acquire)` between the reader's copy loads and its reload of `seq`.
    pub reader_fence: bool,
    /// Success and failure orderings of the token claim, and ordering of the token release.
    pub token_claim: Ordering,
    pub token_fail: Ordering,
    pub token_release: Ordering,
}

pub const SOURCE: Cfg = Cfg {
    publish_seq_store: Release,
    publisher_fence: true,
    reader_fence: true,
    token_claim: AcqRel,
    token_fail: Acquire,
    token_release: Release,
};

pub struct Latch {
    pub cfg: Cfg,
    pub token: AtomicU64,
    pub seq: AtomicU64,
    pub copy: [[AtomicU64; W]; 2],
}

pub type Snap = [u64; W];

impl Latch {
    /// Copy 0 holds `first` (sequence 0), copy 1 what a killed publisher left.
    pub fn new(cfg: Cfg, first: Snap) -> Latch {
        Latch {
            cfg,
            token: AtomicU64::new(0),
            seq: AtomicU64::new(0),
            copy: [first.map(AtomicU64::new), [TORN; W].map(AtomicU64::new)],
        }
    }

    pub fn read_copy(&self, i: usize) -> Snap {
        std::array::from_fn(|k| self.copy[i][k].load(Relaxed))
    }

    /// `Latch::read` (src/snapshot.rs).
    pub fn read(&self) -> Snap {
        self.read_at().0
    }

    /// `Latch::moved` (src/snapshot.rs).
    pub fn moved(&self, at: u64) -> bool {
        self.seq.load(Acquire) != at
    }

    /// `Latch::read_at` (src/snapshot.rs).
    pub fn read_at(&self) -> (Snap, u64) {
        loop {
            let s1 = self.seq.load(Acquire);
            let w = self.read_copy((s1 & 1) as usize);
            if self.cfg.reader_fence {
                fence(Acquire);
            }
            if self.seq.load(Relaxed) == s1 {
                return (w, s1);
            }
            thread::yield_now();
        }
    }

    /// `Latch::publish` (src/snapshot.rs) by a publisher that stays alive, where every token
    /// holder is alive too.
    pub fn publish(&self, new: Snap, mask: u32, tag: u64) -> Snap {
        self.publish_until(new, mask, tag, |_| true, None)
            .expect("a publisher that does not die completes")
    }

    /// `Latch::publish` (src/snapshot.rs): a holder for which `alive` says false is taken over
    /// (`compare_exchange(holder, tag, ..)` with the claim's orderings). With `die_after`
    /// `Some(k)` the publisher dies after `k` stores of its copy (`k` beyond the copy: after
    /// the sequence store too), keeping the token: `None`.
    pub fn publish_until(
        &self,
        new: Snap,
        mask: u32,
        tag: u64,
        alive: impl Fn(u64) -> bool,
        die_after: Option<usize>,
    ) -> Option<Snap> {
        let (claim, fail) = (self.cfg.token_claim, self.cfg.token_fail);
        loop {
            match self.token.compare_exchange(0, tag, claim, fail) {
                Ok(_) => break,
                Err(holder) => {
                    if !alive(holder)
                        && self
                            .token
                            .compare_exchange(holder, tag, claim, fail)
                            .is_ok()
                    {
                        break;
                    }
                    thread::yield_now();
                }
            }
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
            if die_after == Some(k) {
                return None;
            }
            self.copy[other][k].store(*w, Relaxed);
        }
        if die_after == Some(W) {
            return None;
        }
        self.seq
            .store(s.wrapping_add(1), self.cfg.publish_seq_store);
        if die_after.is_some() {
            return None;
        }
        self.token.store(0, self.cfg.token_release);
        Some(snap)
    }
}
