//! Memory-model check of the engine lock's announce-then-look (`src/engine.rs`).
//!
//! The model mirrors, with the source's orderings, for one slot:
//! * `claim_instance` (src/slots.rs): `H_INSTANCE_HWM.fetch_max(i + 1, AcqRel)`;
//! * `lock` SHARED (src/engine.rs): `mine.store(mask, SeqCst)`, `fence(SeqCst)`, then
//!   `shared_look`: `owner.load(SeqCst)`; a live owner means back off (give back:
//!   `mine.store(mask, Release)`); a dead owner's claim is cleared with
//!   `compare_exchange(x, 0, AcqRel, Relaxed)` and the word reloaded (SeqCst);
//! * `lock` EXCLUSIVE (`exclusive_claim_and_look`, src/engine.rs): claim the owner word with
//!   `compare_exchange(0, tag, SeqCst, SeqCst)` (a dead owner's claim cleared with
//!   `compare_exchange(x, 0, AcqRel, Relaxed)` first), `mask_of(me).store(mask, SeqCst)`,
//!   `fence(SeqCst)`, `H_INSTANCE_HWM.load(Acquire)`, then every other instance's word below it
//!   (`load(SeqCst)`), a live holder meaning back off (give back: owner
//!   `compare_exchange(tag, 0, Release, Relaxed)`, `mine.store(mask, Release)`);
//! * unlock (src/engine.rs): EXCLUSIVE `owner.store(0, Release)`, then `mine.store(mask,
//!   Release)`.
//!
//! Liveness is the kernel's answer (an AcqRel read-modify-write of the instance's liveness
//! byte, see `tests/loom_support`); the owner word may start out naming a dead instance. The
//! read-only holder bytes (kernel locks, serialized by the kernel) are not modeled.
//!
//! What is checked, under every interleaving and every store each load may read (C11): two
//! EXCLUSIVE requests are never both granted, and a SHARED and an EXCLUSIVE grant never
//! coexist — each holder touches a loom `UnsafeCell` (a write under EXCLUSIVE, a read under
//! SHARED), so loom also checks that a grant after a release is ordered after the previous
//! holder's accesses, like a mutex's.
//!
//! Weakened twins: the SeqCst fence removed and the announce/look weakened to Release/Acquire,
//! on either side (with SeqCst announce and look C11 alone would still forbid the race; loom
//! treats SeqCst accesses as AcqRel, so the fence is what carries the proof in the model, and
//! the twins weaken both to keep the claim true in C11 too).

mod loom_support;

use loom::cell::UnsafeCell;
use loom::sync::atomic::{fence, AtomicU32, AtomicU64};
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::Ordering::{self, *};
use tshm::layout::{make_tag, split_tag};

#[derive(Clone, Copy)]
struct Side {
    /// The announcing store (SHARED: its bit; EXCLUSIVE: its mask word).
    announce: Ordering,
    /// `fence(SeqCst)` between the announcement and the look.
    fence: bool,
    /// The look's loads (SHARED: the owner word; EXCLUSIVE: the other instances' words).
    look: Ordering,
}

#[derive(Clone, Copy)]
struct Cfg {
    shared: Side,
    exclusive: Side,
}

const SIDE: Side = Side {
    announce: SeqCst,
    fence: true,
    look: SeqCst,
};
const SOURCE: Cfg = Cfg {
    shared: SIDE,
    exclusive: SIDE,
};
const WEAK: Side = Side {
    announce: Release,
    fence: false,
    look: Acquire,
};

/// The dead instance whose claim the owner word may hold at the start.
const DEAD: u32 = 2;

struct Shm {
    owner: AtomicU64,
    mask: [AtomicU64; 3],
    hwm: AtomicU32,
    liveness: [AtomicU64; 3],
    /// What the lock guards.
    data: UnsafeCell<u64>,
}

impl Shm {
    fn new(dead_owner: bool) -> Shm {
        Shm {
            owner: AtomicU64::new(if dead_owner { make_tag(DEAD, 1) } else { 0 }),
            mask: [AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)],
            // the dead instance had claimed slot 2
            hwm: AtomicU32::new(if dead_owner { 3 } else { 0 }),
            liveness: [AtomicU64::new(1), AtomicU64::new(1), AtomicU64::new(0)],
            data: UnsafeCell::new(0),
        }
    }

    fn alive(&self, i: u32) -> bool {
        self.liveness[i as usize].fetch_add(0, AcqRel) != 0
    }

    /// `tag_alive` (every live instance here has generation 1).
    fn tag_alive(&self, tag: u64) -> bool {
        split_tag(tag).is_some_and(|(i, _)| self.alive(i))
    }

    /// `claim_instance`'s high-water mark.
    fn claim(&self, i: u32) {
        self.hwm.fetch_max(i + 1, AcqRel);
    }

    /// SHARED by instance `i`; on a grant, reads the data and unlocks.
    fn shared(&self, i: u32, s: Side) -> bool {
        let mine = &self.mask[i as usize];
        mine.store(1, s.announce);
        if s.fence {
            fence(SeqCst);
        }
        let ok = 'look: {
            let x = self.owner.load(s.look);
            if x == 0 {
                break 'look true;
            }
            if self.tag_alive(x) {
                break 'look false;
            }
            let _ = self.owner.compare_exchange(x, 0, AcqRel, Relaxed);
            self.owner.load(s.look) == 0
        };
        if !ok {
            mine.store(0, Release); // give back
            return false;
        }
        self.data.with(|d| unsafe { *d });
        mine.store(0, Release); // unlock
        true
    }

    /// EXCLUSIVE by instance `i`; on a grant, writes the data and unlocks.
    fn exclusive(&self, i: u32, s: Side) -> bool {
        let tag = make_tag(i, 1);
        let mine = &self.mask[i as usize];
        loop {
            match self.owner.compare_exchange(0, tag, SeqCst, SeqCst) {
                Ok(_) => break,
                Err(x) if x == tag => break,
                Err(x) if !self.tag_alive(x) => {
                    let _ = self.owner.compare_exchange(x, 0, AcqRel, Relaxed);
                }
                Err(_) => return false,
            }
        }
        mine.store(1 << 32, s.announce);
        if s.fence {
            fence(SeqCst);
        }
        let hwm = self.hwm.load(Acquire).min(3);
        let busy = (0..hwm)
            .filter(|j| *j != i)
            .any(|j| self.mask[j as usize].load(s.look) & (1 | 1 << 32) != 0 && self.alive(j));
        if busy {
            let _ = self.owner.compare_exchange(tag, 0, Release, Relaxed);
            mine.store(0, Release);
            return false;
        }
        self.data.with_mut(|d| unsafe { *d += 1 });
        self.owner.store(0, Release);
        mine.store(0, Release);
        true
    }
}

/// Instance 0 requests EXCLUSIVE while instance 1 requests `second` (SHARED when false).
/// Returns the two grants.
fn model(cfg: Cfg, dead_owner: bool, second_exclusive: bool) -> (bool, bool) {
    let shm = Arc::new(Shm::new(dead_owner));
    let s = shm.clone();
    let x = thread::spawn(move || {
        s.claim(0);
        s.exclusive(0, cfg.exclusive)
    });
    let s = shm.clone();
    let y = thread::spawn(move || {
        s.claim(1);
        if second_exclusive {
            s.exclusive(1, cfg.exclusive)
        } else {
            s.shared(1, cfg.shared)
        }
    });
    let gx = x.join().unwrap();
    let gy = y.join().unwrap();
    // a coexisting grant is reported by loom itself (the data cell)
    (gx, gy)
}

fn run(name: &str, cfg: Cfg, dead_owner: bool, second_exclusive: bool) -> usize {
    let (n, seen) = loom_support::check(name, move |_| model(cfg, dead_owner, second_exclusive));
    // each request wins against the other in some execution
    loom_support::covers(name, &seen, &[(true, false), (false, true)]);
    n
}

/// The steps the model mirrors are still the source's.
#[test]
fn the_model_mirrors_the_source() {
    loom_support::source_has(
        "src/engine.rs",
        "tests/loom_engine_lock.rs",
        &[
            "mine.store(mask(held), SeqCst); fence(SeqCst); let r = shared_look(",
            "let x = owner.load(SeqCst);",
            "let _ = owner.compare_exchange(x, 0, AcqRel, Relaxed); if owner.load(SeqCst) != 0 {",
            "match owner.compare_exchange(0, tag, SeqCst, SeqCst) {",
            "mask_of(m, id.instance).store(mask(held), SeqCst); fence(SeqCst);",
            ".u32(H_INSTANCE_HWM) .load(Acquire)",
            "if mask_of(m, i).load(SeqCst) & bits != 0 && instance_alive(node, i)? {",
            "owner_of(m, s).store(0, Release); } } if kind == Kind::Exclusive { crate::testpoint::hit(\"engine_release\"); } mine.store(mask(held), Release);",
            "let _ = owner_of(m, s).compare_exchange(id.tag(), 0, Release, Relaxed);",
        ],
    );
    loom_support::source_has(
        "src/slots.rs",
        "tests/loom_engine_lock.rs",
        &["m.shm.u32(H_INSTANCE_HWM).fetch_max(i + 1, AcqRel);"],
    );
}

#[test]
fn shared_and_exclusive_never_coexist() {
    let n = run("engine_lock.shared_exclusive", SOURCE, false, false);
    assert!(n > 100, "{n} executions");
    let n = run(
        "engine_lock.shared_exclusive/dead-owner",
        SOURCE,
        true,
        false,
    );
    assert!(n > 100, "{n} executions");
}

#[test]
fn two_exclusive_requests_never_both_win() {
    let n = run("engine_lock.exclusive_exclusive", SOURCE, false, true);
    assert!(n > 10, "{n} executions");
    let n = run(
        "engine_lock.exclusive_exclusive/dead-owner",
        SOURCE,
        true,
        true,
    );
    assert!(n > 10, "{n} executions");
}

/// Weakened: SHARED announces Release, looks Acquire, no fence.
///
/// Loom (bounds 2 and 3): "Causality violation: Concurrent read and write accesses." in
/// execution 1: the SHARED look read the owner word's initial 0 after the EXCLUSIVE holder's
/// grant, so the two holders' data accesses are unordered.
#[test]
fn weakened_shared_side_is_caught() {
    let cfg = Cfg {
        shared: WEAK,
        ..SOURCE
    };
    loom_support::check_fails(
        "engine_lock.shared_exclusive/weak-shared",
        "Causality violation",
        move |_| model(cfg, false, false),
    );
}

/// Weakened: EXCLUSIVE publishes its mask Release, looks Acquire, no fence.
///
/// Loom (bounds 2 and 3): "Causality violation: Concurrent read and write accesses." in
/// execution 1 (loom counts the owner CAS, SeqCst in the source, as AcqRel; in C11 the
/// unfenced EXCLUSIVE look may still miss the SHARED bit, so both are granted).
#[test]
fn weakened_exclusive_side_is_caught() {
    let cfg = Cfg {
        exclusive: WEAK,
        ..SOURCE
    };
    loom_support::check_fails(
        "engine_lock.shared_exclusive/weak-exclusive",
        "Causality violation",
        move |_| model(cfg, false, false),
    );
}
