//! The SQLite shim against stock SQLite: runs `build/bin/bench_sqlite` (C, linked against the
//! system libsqlite3, built by `make bench`), which measures both in one run, and records its
//! rows:
//!
//! * `sqlite.shim_vs_stock` — 4 processes, 80% point reads / 20% small updates, fixed
//!   transaction count: stock time / shim time (target >= 0.95);
//! * `sqlite.read_txn_vs_stock` — one autocommit read transaction: stock ns / shim ns.

mod common;

use common::Row;

fn main() {
    if !common::wanted("sqlite") {
        return;
    }
    let bin =
        std::env::var("TSHM_BENCH_SQLITE").unwrap_or_else(|_| "build/bin/bench_sqlite".into());
    let ext = std::env::var("TSHM_SQLITE_EXT")
        .unwrap_or_else(|_| format!("{}/build/lib/libtshm_sqlite.so", env!("CARGO_MANIFEST_DIR")));
    let dir = std::env::temp_dir().join(format!("tshm-bench-sqlite-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = match std::process::Command::new(&bin)
        .arg(&ext)
        .arg(&dir)
        .output()
    {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!("{bin} failed: {}", String::from_utf8_lossy(&o.stderr)),
        Err(e) => {
            eprintln!("skipping the SQLite benchmarks: {bin}: {e} (run `make bench`)");
            return;
        }
    };
    let _ = std::fs::remove_dir_all(&dir);
    let rows = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            Some(Row {
                id: v["id"].as_str()?.into(),
                value: v["value"].as_f64()?,
                baseline: v["baseline"].as_f64()?,
                ratio: v["ratio"].as_f64()?,
                unit: v["unit"].as_str()?.into(),
                note: v["note"].as_str()?.into(),
            })
        })
        .collect::<Vec<_>>();
    common::report(rows);
}
