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
//! when that other thread loaded the object in between (a known limitation of loom 0.7: a thread
//! that loads and then stores a word hides an earlier load of it by another thread). Two
//! defences:
//! every model spawns the threads that store a word before the threads that only load it (the
//! first execution then runs the stores first, and the loads' backtracking explores the other
//! order), and every check asserts with [`covers`] that the outcomes its races must produce
//! (both sides of each race) were all observed, so an exploration hole fails the check
//! instead of passing it silently.
//!
//! **Tied to the source.** Each check also has a `the_model_mirrors_the_source` test
//! ([`source_has`]): the source lines its model mirrors, orderings included, must still be in
//! the source, so weakening (or otherwise changing) one of them in `src/` fails the suite
//! until the model is brought along and checked again.
//!
//! **Running.** [`check`] runs a model with at most [`PREEMPTIONS`] preemptions per execution
//! (`LOOM_MAX_PREEMPTIONS` overrides it: `make loom` runs the checks with 3) and reports the
//! executions explored, the time and the outcomes on stderr (`-- --nocapture` shows them).
//! Every model also has weakened twins (a critical fence or ordering of the source weakened)
//! run by [`check_fails`], which requires loom to report a failure containing an expected
//! message, so a model that cannot tell the difference fails the suite.
//!
//! With `TSHM_LOOM_REPORT=<dir>` each run also writes `<dir>/<model>.json`:
//! `{"model", "weakened", "executions", "preemption_bound", "seconds", "outcomes", "failure"}`
//! (`weakened`: a twin that must fail; `executions`: explored, or up to and including the
//! failing one; `outcomes`: distinct outcomes observed; `failure`: loom's message or null).
//! `make loom` gathers them into `build/reliability/loom.json`.

#![allow(dead_code)]

pub mod latch;

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// Preemptions per execution unless `LOOM_MAX_PREEMPTIONS` says otherwise: every model's
/// coverage and every weakened twin's failure already show at 2, which keeps `cargo test`
/// within seconds; `make loom` explores with 3.
pub const PREEMPTIONS: usize = 2;

struct Run<O> {
    executions: usize,
    bound: Option<usize>,
    seconds: f64,
    seen: BTreeSet<O>,
    failure: Option<String>,
}

fn run<O, F>(model: F, cap: Option<usize>) -> Run<O>
where
    O: Ord + Debug + Send + 'static,
    F: Fn(usize) -> O + Sync + Send + 'static,
{
    let mut b = loom::model::Builder::new();
    if b.preemption_bound.is_none() {
        b.preemption_bound = Some(PREEMPTIONS);
    }
    if let Some(cap) = cap {
        b.preemption_bound = b.preemption_bound.map(|p| p.min(cap));
    }
    let bound = b.preemption_bound;
    let start = Instant::now();
    let runs = Arc::new(AtomicUsize::new(0));
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let (r, s) = (runs.clone(), seen.clone());
    let result = catch_unwind(AssertUnwindSafe(|| {
        b.check(move || {
            let o = model(r.fetch_add(1, Ordering::Relaxed) + 1);
            s.lock().unwrap_or_else(|e| e.into_inner()).insert(o);
        })
    }));
    let failure = result.err().map(|p| {
        p.downcast_ref::<String>()
            .cloned()
            .or_else(|| p.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    });
    let seen = std::mem::take(&mut *seen.lock().unwrap_or_else(|e| e.into_inner()));
    Run {
        executions: runs.load(Ordering::Relaxed),
        bound,
        seconds: start.elapsed().as_secs_f64(),
        seen,
        failure,
    }
}

fn report<O: Debug>(name: &str, weakened: bool, r: &Run<O>) {
    let bound = r.bound.map_or("none".to_string(), |p| p.to_string());
    eprintln!(
        "loom model {name}: {} executions, preemption bound {bound}, {:.2} s, outcomes {:?}{}",
        r.executions,
        r.seconds,
        r.seen,
        r.failure
            .as_ref()
            .map_or(String::new(), |f| format!(", failed: {f}"))
    );
    let Ok(dir) = std::env::var("TSHM_LOOM_REPORT") else {
        return;
    };
    let json = format!(
        "{{\"model\": {}, \"weakened\": {weakened}, \"executions\": {}, \
         \"preemption_bound\": {}, \"seconds\": {:.3}, \"outcomes\": {}, \"failure\": {}}}\n",
        quote(name),
        r.executions,
        r.bound.map_or("null".to_string(), |p| p.to_string()),
        r.seconds,
        r.seen.len(),
        r.failure.as_deref().map_or("null".to_string(), quote)
    );
    let file = std::path::Path::new(&dir).join(format!("{}.json", name.replace('/', "--")));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(file, json).unwrap();
}

/// A JSON string.
fn quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Runs `model` under loom; it gets the number of the execution (1-based), for its assertion
/// messages, and returns what the execution observed. Returns the number of executions and
/// the set of observations, which a check compares with the outcomes its races must produce
/// (see "coverage" above). A failure of the model fails the test with loom's message.
pub fn check<O, F>(name: &str, model: F) -> (usize, BTreeSet<O>)
where
    O: Ord + Debug + Send + 'static,
    F: Fn(usize) -> O + Sync + Send + 'static,
{
    check_capped(name, None, model)
}

/// [`check`] with the preemption bound at most `cap` (`LOOM_MAX_PREEMPTIONS` may lower it): for
/// a model whose next bound would take minutes.
pub fn check_capped<O, F>(name: &str, cap: Option<usize>, model: F) -> (usize, BTreeSet<O>)
where
    O: Ord + Debug + Send + 'static,
    F: Fn(usize) -> O + Sync + Send + 'static,
{
    let r = run(model, cap);
    report(name, false, &r);
    if let Some(f) = &r.failure {
        panic!("loom model {name} failed: {f}");
    }
    (r.executions, r.seen)
}

/// Runs a weakened `model`, which must fail with a message containing `expected`; returns the
/// number of the failing execution.
pub fn check_fails<O, F>(name: &str, expected: &str, model: F) -> usize
where
    O: Ord + Debug + Send + 'static,
    F: Fn(usize) -> O + Sync + Send + 'static,
{
    let r = run(model, None);
    report(name, true, &r);
    match &r.failure {
        Some(f) if f.contains(expected) => r.executions,
        Some(f) => panic!("weakened model {name} failed, but not with {expected:?}: {f}"),
        None => panic!(
            "weakened model {name} passed {} executions: the model cannot tell the weakening \
             from the source",
            r.executions
        ),
    }
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

/// Asserts that `file` (relative to the crate) still contains every one of `steps`, compared
/// with all whitespace and every test point call removed (a test point is no memory access):
/// the lines of the source a model mirrors, with their orderings. A change there fails this
/// check until the model is brought along (and re-checked).
pub fn source_has(file: &str, model: &str, steps: &[&str]) {
    let strip = |s: &str| {
        let mut s: String = s.split_whitespace().collect();
        while let Some(at) = s.find("crate::testpoint::") {
            let end = s[at..].find(';').map_or(s.len(), |e| at + e + 1);
            s.replace_range(at..end, "");
        }
        s
    };
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join(file);
    let src = strip(&std::fs::read_to_string(&path).unwrap());
    for step in steps {
        assert!(
            src.contains(&strip(step)),
            "{file} no longer contains `{step}`: {model} mirrors it, so bring the model along \
             and check it again"
        );
    }
}
