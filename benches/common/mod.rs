//! Shared by the benchmark targets: criterion settings, the `ONLY` filter and the report file.
//!
//! `target/bench/report.json` is an array of `{"id","value","baseline","ratio","unit","note"}`;
//! each target replaces its own rows and keeps the others'.
// Each benchmark target compiles this module and uses part of it.
#![allow(dead_code)]

use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

pub fn criterion() -> criterion::Criterion {
    criterion::Criterion::default()
        .warm_up_time(Duration::from_millis(300))
        .measurement_time(Duration::from_secs(1))
        .sample_size(30)
        .configure_from_args()
}

/// The `ONLY` prefix (empty: everything).
pub fn only() -> String {
    std::env::var("ONLY").unwrap_or_default()
}

/// Whether benchmark `id` runs under the `ONLY` prefix (a prefix of `id`, or `id` a prefix of
/// it; baselines always run).
pub fn wanted(id: &str) -> bool {
    let only = only();
    id.starts_with("baseline") || id.starts_with(only.as_str()) || only.starts_with(id)
}

/// A fresh database path in a per-run directory.
pub fn db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tshm-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    let _ = std::fs::remove_file(format!("{}-tshm", p.display()));
    p
}

/// Criterion's mean estimate for `id`, in ns.
pub fn mean_ns(id: &str) -> Option<f64> {
    let path = format!("target/criterion/{id}/new/estimates.json");
    let v: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(path).ok()?).ok()?;
    v["mean"]["point_estimate"].as_f64()
}

/// One report row.
pub struct Row {
    pub id: String,
    pub value: f64,
    pub baseline: f64,
    pub ratio: f64,
    pub unit: String,
    pub note: String,
}

/// `value / baseline` from two criterion ids (skipped when either did not run).
pub fn ratio_row(id: &str, base: &str, note: &str) -> Option<Row> {
    let (value, baseline) = (mean_ns(id)?, mean_ns(base)?);
    Some(Row {
        id: id.into(),
        value,
        baseline,
        ratio: value / baseline,
        unit: "ns".into(),
        note: note.into(),
    })
}

/// Prints the rows and merges them into the report (rows of ids outside `ONLY` are dropped).
pub fn report(rows: impl IntoIterator<Item = Option<Row>>) {
    let only = only();
    let mut all: Vec<serde_json::Value> = std::fs::read_to_string("target/bench/report.json")
        .ok()
        .and_then(|s| serde_json::from_str(&s).ok())
        .unwrap_or_default();
    for r in rows.into_iter().flatten() {
        if !r.id.starts_with(only.as_str()) {
            continue;
        }
        all.retain(|x| x["id"] != r.id);
        all.push(serde_json::json!({
            "id": r.id, "value": r.value, "baseline": r.baseline, "ratio": r.ratio,
            "unit": r.unit, "note": r.note,
        }));
        println!(
            "{:28} {:10.1} {}   baseline {:10.1}   ratio {:7.3}   ({})",
            r.id, r.value, r.unit, r.baseline, r.ratio, r.note
        );
    }
    std::fs::create_dir_all("target/bench").unwrap();
    std::fs::write(
        "target/bench/report.json",
        serde_json::to_string_pretty(&all).unwrap(),
    )
    .unwrap();
}

/// Runs a C benchmark program (`make bench` builds them into `build/bin`) with `args`, its
/// stderr (its readable account) passed through, and returns the report rows it printed on
/// stdout as JSON lines. `None` (with a message) when the program is missing.
pub fn c_rows(bin: &str, args: &[&std::ffi::OsStr]) -> Option<Vec<Option<Row>>> {
    let out = match Command::new(bin)
        .args(args)
        .stderr(Stdio::inherit())
        .output()
    {
        Ok(o) if o.status.success() => o,
        Ok(o) => panic!("{bin} failed ({})", o.status),
        Err(e) => {
            eprintln!("skipping {bin}: {e} (run `make bench`)");
            return None;
        }
    };
    Some(
        String::from_utf8_lossy(&out.stdout)
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
            .collect(),
    )
}
