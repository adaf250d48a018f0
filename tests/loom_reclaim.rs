//! Memory-model check of instance claim and stale reclaim (`src/slots.rs`,
//! `src/snapshot.rs`): a live instance is never taken for dead, so a slot or token it holds is
//! never owned twice.
//!
//! The model mirrors, with the source's orderings:
//! * `claim_instance` (src/slots.rs): lock the instance's liveness byte, then
//!   `generation.fetch_add(1, AcqRel)` (the new incarnation's tag is `make_tag(i, generation)`);
//! * `tag_alive` (src/slots.rs): `generation.load(Acquire)` of the tag's instance; a different
//!   generation means dead, otherwise the liveness byte is probed (`instance_alive`);
//! * `reader_begin` (src/slots.rs, CAS strategy): pass 0 takes only a free slot, pass 1 also a
//!   slot whose owner tag is not alive; the owner word is loaded with [`Cfg::owner_load`] and
//!   claimed with `compare_exchange(owner, tag, AcqRel, Relaxed)`;
//! * `Latch::publish`'s token (src/snapshot.rs): `compare_exchange(0, tag, AcqRel, Acquire)`,
//!   and on failure, when the holder's tag is not alive,
//!   `compare_exchange(holder, tag, AcqRel, Acquire)` (the source checks liveness every 64th
//!   spin; spinning changes nothing in memory, so checking on every spin
//!   covers those schedules); released with `store(0, Release)`.
//!
//! Kernel byte locks are one atomic each, locked, released and probed only by AcqRel
//! read-modify-writes (see `tests/loom_support`).
//!
//! **What this found.** With the orderings the source had (`reader_begin` loaded the owner
//! word Relaxed; the token was claimed `Acquire` with a `Relaxed` failure load), a reclaimer
//! that read a live instance's fresh tag could still read that instance's generation from
//! before its claim (nothing ordered the generation bump before the tag it read), conclude
//! "dead", and take the live reader's slot or the live publisher's token. The owner word and
//! the token must be written with Release and read with Acquire, so that a tag carries its
//! instance's generation to whoever reads it; `min_reader_frame` and the engine locks already
//! read tags SeqCst. The `*_before_the_fix_*` twins keep the old orderings and must fail.

mod loom_support;

use loom::cell::UnsafeCell;
use loom::sync::atomic::AtomicU64;
use loom::sync::Arc;
use loom::thread;
use std::sync::atomic::Ordering::{self, *};
use tshm::layout::{make_tag, split_tag};

#[derive(Clone, Copy)]
struct Cfg {
    /// `reader_begin`'s load of a slot's owner word.
    owner_load: Ordering,
    /// The token claims' success and failure orderings.
    token_claim: Ordering,
    token_fail: Ordering,
}

/// The orderings of the source (after the fix).
const SOURCE: Cfg = Cfg {
    owner_load: Acquire,
    token_claim: AcqRel,
    token_fail: Acquire,
};

/// The orderings before the fix.
const BEFORE: Cfg = Cfg {
    owner_load: Relaxed,
    token_claim: Acquire,
    token_fail: Relaxed,
};

/// Two instance records: generation and liveness byte.
struct Instances {
    generation: [AtomicU64; 2],
    liveness: [AtomicU64; 2],
}

impl Instances {
    /// Instance 0's previous incarnation (generation 1) died; instance 1 (generation 1) is
    /// alive for the whole model.
    fn new() -> Instances {
        Instances {
            generation: [AtomicU64::new(1), AtomicU64::new(1)],
            liveness: [AtomicU64::new(0), AtomicU64::new(1)],
        }
    }

    /// `claim_instance` for instance `i`: its tag.
    fn claim(&self, i: usize) -> u64 {
        assert!(
            self.liveness[i]
                .compare_exchange(0, 1, AcqRel, Acquire)
                .is_ok(),
            "the liveness byte of a dead instance is free"
        );
        let generation = self.generation[i].fetch_add(1, AcqRel).wrapping_add(1);
        make_tag(i as u32, generation)
    }

    /// `tag_alive`.
    fn tag_alive(&self, tag: u64) -> bool {
        let Some((i, generation)) = split_tag(tag) else {
            return false;
        };
        let i = i as usize;
        if self.generation[i].load(Acquire) & 0xffff_ffff_ffff != generation {
            return false;
        }
        self.liveness[i].fetch_add(0, AcqRel) != 0 // the kernel's probe
    }
}

/// `reader_begin`'s scan over one slot: whether `tag` claimed it.
fn reader_claim(ins: &Instances, owner_w: &AtomicU64, cfg: Cfg, tag: u64) -> bool {
    for pass in 0..2 {
        let owner = owner_w.load(cfg.owner_load);
        let free = owner == 0 || (pass == 1 && !ins.tag_alive(owner));
        if free
            && owner_w
                .compare_exchange(owner, tag, AcqRel, Relaxed)
                .is_ok()
        {
            return true;
        }
    }
    false
}

/// Reader slot 0 still names instance 0's dead incarnation. Instance 0 is opened again and
/// begins a read; live instance 1 begins a read at the same time. Returns who claimed it.
fn reader_model(cfg: Cfg, iteration: usize) -> (bool, bool) {
    let ins = Arc::new(Instances::new());
    let owner = Arc::new(AtomicU64::new(make_tag(0, 1)));
    let (i, o) = (ins.clone(), owner.clone());
    let a = thread::spawn(move || {
        let tag = i.claim(0);
        reader_claim(&i, &o, cfg, tag)
    });
    let (i, o) = (ins.clone(), owner.clone());
    let c = thread::spawn(move || reader_claim(&i, &o, cfg, make_tag(1, 1)));
    let a = a.join().unwrap();
    let c = c.join().unwrap();
    assert!(
        !(a && c),
        "execution {iteration}: reader slot 0 is owned twice: a reader took it over from the \
         live reader of instance 0"
    );
    (a, c)
}

/// Instance 0 is opened again (its previous incarnation died holding the publish token) and
/// publishes; live instance 1 publishes at the same time. Inside the token each writes the
/// latch's other copy (a cell loom checks for unordered access). Returns whether instance 0
/// took the token over from its dead incarnation.
fn token_model(cfg: Cfg) -> bool {
    let ins = Arc::new(Instances::new());
    let token = Arc::new(AtomicU64::new(make_tag(0, 1)));
    let copy = Arc::new(UnsafeCell::new(0u64));
    let publish = move |ins: &Instances, token: &AtomicU64, tag: u64| -> bool {
        let mut took_over = false;
        loop {
            match token.compare_exchange(0, tag, cfg.token_claim, cfg.token_fail) {
                Ok(_) => break,
                Err(holder) => {
                    if !ins.tag_alive(holder)
                        && token
                            .compare_exchange(holder, tag, cfg.token_claim, cfg.token_fail)
                            .is_ok()
                    {
                        took_over = true;
                        break;
                    }
                    thread::yield_now();
                }
            }
        }
        took_over
    };
    let run = {
        let copy = copy.clone();
        move |ins: &Instances, token: &AtomicU64, tag: u64| -> bool {
            let took_over = publish(ins, token, tag);
            // loom reports two holders (or a holder not ordered after the last one) here
            copy.with_mut(|c| unsafe { *c += 1 });
            token.store(0, Release);
            took_over
        }
    };
    let (i, t, r) = (ins.clone(), token.clone(), run.clone());
    let a = thread::spawn(move || {
        let tag = i.claim(0);
        r(&i, &t, tag)
    });
    let (i, t) = (ins.clone(), token.clone());
    let c = thread::spawn(move || run(&i, &t, make_tag(1, 1)));
    let took_over = a.join().unwrap();
    c.join().unwrap();
    assert_eq!(copy.with(|c| unsafe { *c }), 2);
    took_over
}

/// The steps the model mirrors are still the source's.
#[test]
fn the_model_mirrors_the_source() {
    loom_support::source_has(
        "src/slots.rs",
        "tests/loom_reclaim.rs",
        &[
            "let generation = m.shm.u64(rec + 16).fetch_add(1, AcqRel).wrapping_add(1);",
            "let cur = m.shm.u64(m.geom.instance(i) + 16).load(Acquire) & TAG_GEN_MASK;",
            "let owner = owner_w.load(Acquire);",
            "owner_w .compare_exchange(owner, tag, AcqRel, Relaxed) .is_ok()",
        ],
    );
    loom_support::source_has(
        "src/snapshot.rs",
        "tests/loom_reclaim.rs",
        &[
            "match token.compare_exchange(0, tag, AcqRel, Acquire) {",
            "&& token .compare_exchange(holder, tag, AcqRel, Acquire) .is_ok()",
            "token.store(0, Release);",
        ],
    );
}

#[test]
fn a_live_reader_slot_is_never_reclaimed() {
    let (n, seen) = loom_support::check("reclaim.reader", |i| reader_model(SOURCE, i));
    assert!(n > 20, "{n} executions");
    // the stale slot goes to either claimant
    loom_support::covers("reclaim.reader", &seen, &[(true, false), (false, true)]);
}

#[test]
fn a_live_publisher_keeps_its_token() {
    let (n, seen) = loom_support::check("reclaim.token", |_| token_model(SOURCE));
    assert!(n > 20, "{n} executions");
    // the dead incarnation's token taken over by instance 0 itself, or by instance 1 first
    loom_support::covers("reclaim.token", &seen, &[true, false]);
}

/// Before the fix: `reader_begin` loaded the owner word Relaxed.
///
/// Loom (bounds 2 and 3), execution 3: "reader slot 0 is owned twice: a reader took it over
/// from the live reader of instance 0" (it read instance 0's new tag and its generation from
/// before the claim).
#[test]
fn reader_slot_before_the_fix_is_taken_from_a_live_reader() {
    loom_support::check_fails("reclaim.reader/before-fix", "owned twice", |i| {
        reader_model(BEFORE, i)
    });
}

/// Before the fix: the token claimed `Acquire` (no Release) with a `Relaxed` failure load.
///
/// Loom: "Causality violation: Concurrent write accesses to `UnsafeCell`." in execution 16
/// (bound 2) / 31 (bound 3): instance 1 took the token over from the live instance 0, and
/// both wrote the latch's other copy.
#[test]
fn token_before_the_fix_is_taken_from_a_live_publisher() {
    loom_support::check_fails(
        "reclaim.token/before-fix",
        "Concurrent write accesses to `UnsafeCell`",
        |_| token_model(BEFORE),
    );
}
