//! What every memory-model check (`tests/loom_*.rs`) shares: how a model is run and counted.
//!
//! The real protocols operate on atomics inside the mapped sidecar, which loom cannot
//! instrument, so each check is a model: the protocol's shared-memory steps, in the source's
//! order and with the source's orderings, on loom atomics. Loom then runs the model under
//! every interleaving and every store a load may read under the C11 memory model (within its
//! preemption bound), which is what the sequentially consistent interleaving tests next to the
//! code cannot see.
//!
//! Two things of loom's model matter for reading the checks:
//! * SeqCst *accesses* count as AcqRel in loom (only `fence(SeqCst)` joins the single total
//!   order). Where the source's correctness rests on a SeqCst fence, the model keeps it; a
//!   check never relies on a SeqCst load or store being more than AcqRel.
//! * A kernel byte lock (liveness bytes, reader byte locks) is serialized by the kernel and
//!   every lock, unlock or probe of it is a syscall: a model keeps its state in one atomic
//!   changed and probed only by AcqRel read-modify-writes (a probe therefore reads the latest
//!   state, as the kernel's answer does).
//!
//! **Coverage.** Loom's partial-order reduction tracks only the *last* access of an object,
//! so a race between one thread's load and another thread's later store can go unexplored
//! when that other thread loaded the object in between (loom issues 166 and 392: a thread that
//! loads and then stores a word hides an earlier load of it by another thread). Two defences:
//! every model spawns the threads that store a word before the threads that only load it (the
//! first execution then runs the stores first, and the loads' backtracking explores the other
//! order), and every check asserts with [`covers`] that the outcomes its races must produce
//! (both sides of each race) were all observed, so an exploration hole fails the check
//! instead of passing it silently.
//!
//! Each check runs its model with [`check`], which bounds preemptions (`LOOM_MAX_PREEMPTIONS`
//! overrides the model's default) and reports the iterations explored and the time taken on
//! stderr (`cargo test --test loom_snapshot -- --nocapture` shows them). Every model also
//! has weakened twins (a critical fence or ordering of the source weakened) that must make
//! loom report a failure: `#[should_panic]` tests, so a model that cannot tell the difference
//! fails the suite. Their assertion messages name the execution that failed.

#![allow(dead_code)]

pub mod latch;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Runs `model` under loom with at most `preemptions` preemptions per execution
/// (`LOOM_MAX_PREEMPTIONS` overrides it). `model` gets the number of the execution (1-based),
/// for its assertion messages, and returns what the execution observed; the result is the
/// number of executions and the set of observations, which a check compares with the
/// outcomes its races must produce (see "coverage" above).
pub fn check<O, F>(name: &str, preemptions: usize, model: F) -> (usize, BTreeSet<O>)
where
    O: Ord + Debug + Send + 'static,
    F: Fn(usize) -> O + Sync + Send + 'static,
{
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(preemptions);
    }
    let bound = b.preemption_bound;
    let start = Instant::now();
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let (r, s) = (runs.clone(), seen.clone());
    b.check(move || {
        let o = model(r.fetch_add(1, Ordering::Relaxed) + 1);
        s.lock().unwrap().insert(o);
    });
    let n = runs.load(Ordering::Relaxed);
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    eprintln!(
        "loom model {name}: {n} executions, preemption bound {}, {:.2} s, outcomes {seen:?}",
        bound.map_or("none".to_string(), |p| p.to_string()),
        start.elapsed().as_secs_f64()
    );
    (n, seen)
}

/// Asserts that every outcome of `want` was observed in `seen`.
pub fn covers<O: Ord + Debug>(name: &str, seen: &BTreeSet<O>, want: &[O]) {
    for w in want {
        assert!(
            seen.contains(w),
            "loom model {name} never produced {w:?} (observed {seen:?}): the exploration \
             missed a race the model must contain"
        );
    }
}
