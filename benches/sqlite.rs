//! The SQLite shim against stock SQLite: runs `build/bin/bench_sqlite` (C, linked against the
//! system libsqlite3, built by `make bench`), which measures both in one run, and records its
//! rows:
//!
//! * `sqlite.shim_vs_stock` — 4 processes, 80% point reads / 20% small updates, fixed
//!   transaction count: stock time / shim time (target >= 0.95);
//! * `sqlite.read_txn_vs_stock` — one autocommit read transaction: stock ns / shim ns;
//! * `sqlite.bank_vs_stock_N`, `sqlite.write_p99_vs_stock_N`, `sqlite.write_lock_p99_vs_stock_N`
//!   — the bank workload at 4 and 8 processes on the system SQLite;
//! * the same rows with `_apsw_` on the SQLite that the PyPI package apsw bundles (built with
//!   SETLK_TIMEOUT), from `scripts/bench_apsw.py`, when `python3` can import apsw.

mod common;

fn main() {
    if !common::wanted("sqlite") {
        return;
    }
    let bin =
        std::env::var("TSHM_BENCH_SQLITE").unwrap_or_else(|_| "build/bin/bench_sqlite".into());
    let ext = std::env::var("TSHM_SQLITE_EXT")
        .unwrap_or_else(|_| format!("{}/build/lib/libtshm_sqlite.so", env!("CARGO_MANIFEST_DIR")));
    let dir = std::env::temp_dir().join(format!("tshm-bench-sqlite-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir); // an earlier run's, with this PID
    std::fs::create_dir_all(&dir).unwrap();
    let rows = common::c_rows(&bin, &[ext.as_ref(), dir.as_os_str()]);
    if let Some(rows) = rows {
        common::report(rows);
    }
    let script = format!("{}/scripts/bench_apsw.py", env!("CARGO_MANIFEST_DIR"));
    let apsw = common::c_rows("python3", &[script.as_ref(), ext.as_ref(), dir.as_os_str()]);
    let _ = std::fs::remove_dir_all(&dir);
    if let Some(rows) = apsw {
        common::report(rows);
    }
}
