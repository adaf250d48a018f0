//! The `tshm` inspector on live, idle, corrupt and missing sidecars. The binary runs as its own
//! process; the sidecar's users are handles of this test process.

use std::path::{Path, PathBuf};
use std::process::Command;
use tshm::{tshm_snapshot, Coordinator, Options, Role};

fn db(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tshm-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, b"").unwrap();
    let _ = std::fs::remove_file(format!("{}-tshm", p.display()));
    p
}

/// Runs `tshm ARGS DB`: (exit code, stdout, stderr).
fn tshm(args: &[&str], db: &Path) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tshm"))
        .args(args)
        .arg(db)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

fn inspect_json(db: &Path) -> serde_json::Value {
    let (code, out, err) = tshm(&["inspect", "--json"], db);
    assert_eq!(code, 0, "{err}");
    serde_json::from_str(&out).unwrap()
}

#[test]
fn live_sidecar_shows_holders_and_inspecting_changes_nothing() {
    let p = db("live.db");
    let a = Coordinator::open(&p, &Options::default()).unwrap();
    let b = Coordinator::open(&p, &Options::default()).unwrap();
    a.acquire(Role::Writer, 0).unwrap();
    a.index_append(7, 1).unwrap();
    a.index_append(8, 2).unwrap();
    let s = tshm_snapshot {
        max_frame: 2,
        ..Default::default()
    };
    a.publish(&s, 1).unwrap();
    let (slot, _) = b.reader_begin().unwrap();
    let seq_before = a.snapshot().unwrap().sequence;

    let j = inspect_json(&p);
    let me = std::process::id() as u64;
    assert_eq!(j["mode"], "shared");
    let backend = match std::env::var("TSHM_LOCK_BACKEND").as_deref() {
        Ok("posix") => "posix",
        _ => "ofd",
    };
    assert_eq!(j["lock_backend"], backend);
    assert_eq!(j["attached"].as_array().unwrap().len(), 2);
    assert!(j["attached"]
        .as_array()
        .unwrap()
        .iter()
        .all(|x| x["pid"] == me));
    assert_eq!(j["writer"]["pid"], me);
    assert_eq!(j["writer"]["alive"], true);
    assert_eq!(j["checkpointer"]["held"], false);
    let readers = j["readers"].as_array().unwrap();
    assert_eq!(readers.len(), 1);
    assert_eq!(readers[0]["slot"], slot);
    assert_eq!(readers[0]["frame"], 2);
    assert_eq!(j["snapshot"]["max_frame"], 2);
    assert_eq!(j["index"]["entries"], 2);
    assert_eq!(j["index"]["blocks"], 1);

    let (code, out, _) = tshm(&["inspect"], &p);
    assert_eq!(code, 0);
    assert!(out.contains("writer       pid"), "{out}");
    assert!(out.contains("pinned frame 2"), "{out}");
    let (code, out, _) = tshm(&["check"], &p);
    assert_eq!(code, 0, "{out}");
    let (code, out, _) = tshm(&["check", "--idle"], &p);
    assert_eq!(code, 1);
    assert!(out.contains("attached"), "{out}");

    // The inspector took no lock and wrote nothing: the roles are still ours, the snapshot did
    // not move, and closing both handles still finds the last one.
    assert_eq!(a.snapshot().unwrap().sequence, seq_before);
    a.release(Role::Writer).unwrap();
    b.reader_end(slot).unwrap();
    assert!(!b.close(|_| {}).unwrap());
    let mut last = false;
    assert!(a.close(|_| last = true).unwrap());
    assert!(last);
}

#[test]
fn idle_sidecar_checks_clean() {
    let p = db("idle.db");
    Coordinator::open(&p, &Options::default())
        .unwrap()
        .close(|_| {})
        .unwrap();
    let (code, out, err) = tshm(&["check", "--idle"], &p);
    assert_eq!(code, 0, "{out}{err}");
    let j = inspect_json(&p);
    assert_eq!(j["mode"], "none");
    assert_eq!(j["attached"].as_array().unwrap().len(), 0);
    assert_eq!(j["writer"]["held"], false);
}

#[test]
fn corrupt_missing_and_absent_sidecars_are_clear_errors() {
    let p = db("corrupt.db");
    Coordinator::open(&p, &Options::default())
        .unwrap()
        .close(|_| {})
        .unwrap();
    let side = format!("{}-tshm", p.display());
    let mut bytes = std::fs::read(&side).unwrap();
    bytes[0..4].copy_from_slice(b"XXXX");
    std::fs::write(&side, &bytes).unwrap();
    for args in [&["check"][..], &["inspect"][..]] {
        let (code, _, err) = tshm(args, &p);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains("corrupt") && err.contains("magic"), "{err}");
    }
    // an index counter beyond the file
    bytes[0..4].copy_from_slice(b"TSHM");
    bytes[520..528].copy_from_slice(&(1u64 << 40).to_ne_bytes());
    std::fs::write(&side, &bytes).unwrap();
    let (code, _, err) = tshm(&["check"], &p);
    assert_eq!(code, 1);
    assert!(err.contains("units"), "{err}");

    let (code, _, err) = tshm(&["check"], Path::new("/nonexistent/x.db"));
    assert_eq!(code, 2);
    assert!(err.contains("no database"), "{err}");
    let bare = db("bare.db");
    let (code, _, err) = tshm(&["inspect"], &bare);
    assert_eq!(code, 2);
    assert!(err.contains("no sidecar"), "{err}");
}

#[test]
fn watch_refreshes_until_killed() {
    use std::io::Read;
    let p = db("watch.db");
    let h = Coordinator::open(&p, &Options::default()).unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_tshm"))
        .args(["watch", "--interval", "50"])
        .arg(&p)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut seen = String::new();
    let mut buf = [0u8; 4096];
    // two screens, each starting with the clear-screen sequence, then stop it
    while seen.matches("\x1b[H\x1b[2J").count() < 2 {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "watch ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.contains("1 handle(s) attached"), "{seen}");
    h.close(|_| {}).unwrap();
}
