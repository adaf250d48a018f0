//! libtshm's hot paths through the public C API, against the best anchors, all measured in one
//! run: runs `build/bin/bench_core` (benches/c/bench_core.c, linked against the release
//! library, LMDB and pthreads, built by `make bench`) and records its rows:
//!
//! * `reader.*` — a read transaction against LMDB's;
//! * `writer.pair*`, `ckpt.pair*` — an uncontended role pair against a robust process-shared
//!   mutex (and LMDB's write transaction);
//! * `writer.handoff_vs_futex` — the role passed between two processes against a bare futex;
//! * `writer.wait_p99_vs_sleep`, `writer.throughput_vs_sleep`, `writer.fairness` — four
//!   processes contending, against SQLite's sleep-and-retry busy handler;
//! * `writer.dead_holder_detect_ms` — a SIGKILLed holder's role reaching a waiter;
//! * `scale.readers_N` — N reader processes and a writer, against LMDB.
//!
//! docs/PERFORMANCE.md says what each row means. `make bench ONLY=writer.handoff` runs the
//! sections under that prefix.

mod common;

fn main() {
    let only = common::only();
    if !["reader", "writer", "ckpt", "scale"]
        .iter()
        .any(|p| p.starts_with(only.as_str()) || only.starts_with(p))
    {
        return;
    }
    let bin = std::env::var("TSHM_BENCH_CORE").unwrap_or_else(|_| "build/bin/bench_core".into());
    let dir = std::env::temp_dir().join(format!("tshm-bench-core-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir); // an earlier run's, with this PID
    std::fs::create_dir_all(&dir).unwrap();
    let rows = common::c_rows(&bin, &[dir.as_os_str()]);
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(rows) = rows {
        common::report(rows);
    }
}
