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
//! Each check runs its model with [`check`], which bounds preemptions (`LOOM_MAX_PREEMPTIONS`
//! overrides the model's default) and reports the iterations explored and the time taken on
//! stderr (`cargo test --test loom_snapshot -- --nocapture` shows them). Every model also
//! has weakened twins (a critical fence or ordering of the source weakened) that must make
//! loom report a failure: `#[should_panic]` tests, so a model that cannot tell the difference
//! fails the suite. Their assertion messages name the execution that failed.

#![allow(dead_code)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

/// Runs `model` under loom with at most `preemptions` preemptions per execution
/// (`LOOM_MAX_PREEMPTIONS` overrides it) and returns the number of executions explored.
/// `model` gets the number of the execution (1-based), for its assertion messages.
pub fn check<F>(name: &str, preemptions: usize, model: F) -> usize
where
    F: Fn(usize) + Sync + Send + 'static,
{
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(preemptions);
    }
    let bound = b.preemption_bound;
    let start = Instant::now();
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let r = runs.clone();
    b.check(move || model(r.fetch_add(1, Ordering::Relaxed) + 1));
    let n = runs.load(Ordering::Relaxed);
    eprintln!(
        "loom model {name}: {n} executions, preemption bound {}, {:.2} s",
        bound.map_or("none".to_string(), |p| p.to_string()),
        start.elapsed().as_secs_f64()
    );
    n
}
