//! The `tshm` inspector on live, idle, corrupt and missing sidecars. The binary runs as its own
//! process; the sidecar's users are handles of this test process.

mod scratch;

use std::path::{Path, PathBuf};
use std::process::Command;
use tshm::{tshm_snapshot, Coordinator, Options, Role};

fn db(name: &str) -> PathBuf {
    let dir = scratch::dir("tshm-cli");
    let p = dir.join(name);
    std::fs::write(&p, b"").unwrap();
    let _ = std::fs::remove_file(format!("{}-tshm", p.display()));
    p
}

/// Runs `tshm ARGS DB`: (exit code, stdout, stderr).
fn tshm(args: &[&str], db: &Path) -> (i32, String, String) {
    let mut all: Vec<&std::ffi::OsStr> = args.iter().map(|a| a.as_ref()).collect();
    all.push(db.as_os_str());
    tshm_args(&all)
}

/// Runs `tshm ARGS`: (exit code, stdout, stderr).
fn tshm_args<S: AsRef<std::ffi::OsStr>>(args: &[S]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_tshm"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into(),
        String::from_utf8_lossy(&out.stderr).into(),
    )
}

/// The reports `watch` wrote into a pipe: each ends with a line `--`.
fn reports(out: &str) -> Vec<&str> {
    let mut v: Vec<&str> = out.split("\n--\n").collect();
    assert_eq!(
        v.pop(),
        Some(""),
        "output does not end with a separator:\n{out}"
    );
    v
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
    // two reports, each ended by the separator line, then stop it
    while seen.matches("\n--\n").count() < 2 {
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "watch ended early: {seen}");
        seen.push_str(&String::from_utf8_lossy(&buf[..n]));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(seen.contains("1 handle attached"), "{seen}");
    assert!(
        !seen.contains('\x1b'),
        "no terminal codes into a pipe: {seen:?}"
    );
    h.close(|_| {}).unwrap();
}

/// Raw words of a sidecar, for crafting the states that a crash or a stray write leaves.
struct Raw(std::fs::File);

impl Raw {
    fn open(db: &Path) -> Raw {
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(format!("{}-tshm", db.display()))
            .unwrap();
        Raw(f)
    }
    fn u32(&self, off: u64) -> u32 {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 4];
        self.0.read_exact_at(&mut b, off).unwrap();
        u32::from_ne_bytes(b)
    }
    fn u64(&self, off: u64) -> u64 {
        use std::os::unix::fs::FileExt;
        let mut b = [0u8; 8];
        self.0.read_exact_at(&mut b, off).unwrap();
        u64::from_ne_bytes(b)
    }
    fn set32(&self, off: u64, v: u32) {
        use std::os::unix::fs::FileExt;
        self.0.write_all_at(&v.to_ne_bytes(), off).unwrap();
    }
    fn set64(&self, off: u64, v: u64) {
        use std::os::unix::fs::FileExt;
        self.0.write_all_at(&v.to_ne_bytes(), off).unwrap();
    }
    fn base(&self) -> u64 {
        self.u64(48)
    }
    /// File offset of the frame word of index slot `slot`.
    fn frame_word(&self, slot: u64) -> u64 {
        let base = self.base();
        let b = slot / 4096;
        let node = self.u32(base - 4096 + (b >> 10) * 4) as u64;
        let unit = self.u32(base + (node - 1) * 4096 + (b & 1023) * 4) as u64;
        base + (unit - 1) * 65536 + slot % 4096 * 16 + 8
    }
}

#[test]
fn truncate_killed_inside_its_loop_leaves_exact_counts_after_the_next_trim() {
    let p = db("trunc-killed.db");
    let h = Coordinator::open(&p, &Options::default()).unwrap();
    h.acquire(Role::Writer, 0).unwrap();
    const N: u64 = 10_000;
    for f in 1..=N {
        h.index_append((f % 3000) as u32, f).unwrap();
    }
    // what a writer killed halfway through a rollback to 0 leaves: the newer half of the
    // entries marked dead (newest first), no counter moved yet
    let raw = Raw::open(&p);
    for slot in (N / 2..N).rev() {
        let w = raw.frame_word(slot);
        raw.set64(w, raw.u64(w) | 1 << 63);
    }
    // the next writer trims what was never committed
    h.release(Role::Writer).unwrap();
    h.acquire(Role::Writer, 0).unwrap();
    let st = h.index_stats().unwrap();
    assert_eq!((st.entries, st.dead, st.tail_frame), (N, N, 0));
    h.release(Role::Writer).unwrap();
    h.close(|_| {}).unwrap();
    let (code, out, err) = tshm(&["check", "--idle"], &p);
    assert_eq!(code, 0, "{out}{err}");
    let j = inspect_json(&p);
    assert_eq!(j["index"]["dead"], N);
}

#[test]
fn check_finds_a_directory_that_is_not_a_tree() {
    let p = db("not-a-tree.db");
    let h = Coordinator::open(&p, &Options::default()).unwrap();
    h.acquire(Role::Writer, 0).unwrap();
    for f in 1..=3000u64 {
        h.index_append((f * 7 % 1500) as u32, f).unwrap();
    }
    h.publish(
        &tshm_snapshot {
            max_frame: 3000,
            ..Default::default()
        },
        1,
    )
    .unwrap();
    h.release(Role::Writer).unwrap();
    let (code, out, err) = tshm(&["check"], &p);
    assert_eq!(code, 0, "{out}{err}");
    // every directory top word names one node page P, and P is filled with P
    let raw = Raw::open(&p);
    let dir_top = raw.base() - 36864;
    let np = raw.u32(dir_top);
    for t in 0..8192 {
        raw.set32(dir_top + t * 4, np);
    }
    for i in 0..1024 {
        raw.set32(raw.base() + (np as u64 - 1) * 4096 + i * 4, np);
    }
    let (code, _, err) = tshm(&["check"], &p);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("corrupt"), "{err}");
    assert!(matches!(
        h.index_find(7, 3000),
        Err(tshm::Error::Corrupt(_))
    ));
    h.close(|_| {}).unwrap();
}

#[test]
fn check_compares_the_file_length_and_the_reservation_with_the_counters() {
    let p = db("lengths.db");
    let h = Coordinator::open(&p, &Options::default()).unwrap();
    h.acquire(Role::Writer, 0).unwrap();
    for f in 1..=10_000u64 {
        h.index_append((f % 2000) as u32, f).unwrap();
    }
    h.release(Role::Writer).unwrap();
    let (code, out, err) = tshm(&["check"], &p);
    assert_eq!(code, 0, "{out}{err}");
    let raw = Raw::open(&p);
    // a reservation far beyond what entries, nodes and regions can use
    let reserved = raw.u64(616);
    raw.set64(616, 1 << 26);
    let (code, _, err) = tshm(&["check"], &p);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("corrupt") && err.contains("reserv"), "{err}");
    raw.set64(616, reserved);
    let (code, out, err) = tshm(&["check"], &p);
    assert_eq!(code, 0, "{out}{err}");
    // a file shorter than its published units
    let len = raw.0.metadata().unwrap().len();
    raw.0.set_len(len - 65536).unwrap();
    let (code, _, err) = tshm(&["check"], &p);
    assert_eq!(code, 1, "{err}");
    assert!(err.contains("corrupt"), "{err}");
    h.close(|_| {}).unwrap();
}

/// File offset of instance record `i` (the instance table's offset is header word 40).
fn instance_record(raw: &Raw, i: u64) -> u64 {
    raw.u64(40) + i * 128
}

/// Role counters (header words 640.. writer, 704.. checkpointer, 768.. readers) and instance
/// words written as another process would: `inspect` shows them, in the table and in JSON.
#[test]
fn contention_counters_holder_and_waiters_show_in_inspect() {
    let p = db("contention.db");
    let a = Coordinator::open(&p, &Options::default()).unwrap();
    let b = Coordinator::open(&p, &Options::default()).unwrap();
    a.acquire(Role::Writer, 0).unwrap();
    let me = std::process::id() as u64;
    let j = inspect_json(&p);
    let ia = j["writer"]["instance"].as_u64().unwrap();
    let ib = j["attached"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["instance"].as_u64().unwrap())
        .find(|i| *i != ia)
        .unwrap();
    assert_eq!(j["contention"]["writer"]["waiters"], serde_json::json!([]));

    let raw = Raw::open(&p);
    for (k, v) in [40u64, 10, 5_000_000, 2_000_000, 3, 1, 9]
        .iter()
        .enumerate()
    {
        raw.set64(640 + k as u64 * 8, *v);
    }
    for (k, v) in [6u64, 3, 3_000, 2_000, 0, 0, 2].iter().enumerate() {
        raw.set64(704 + k as u64 * 8, *v);
    }
    for (k, v) in [11u64, 12, 13, 14].iter().enumerate() {
        raw.set64(768 + k as u64 * 8, *v);
    }
    raw.set64(instance_record(&raw, ib) + 32, 17); // b waits for the writer role
    raw.set64(instance_record(&raw, ia) + 64, 25); // a took it 25 times,
    raw.set64(instance_record(&raw, ia) + 72, 1_500); // waiting 1.5 us in all

    let j = inspect_json(&p);
    assert_eq!(j["role_strategy"], "shm");
    let w = &j["contention"]["writer"];
    let expect = serde_json::json!({
        "acquires": 40, "waited": 10, "waited_pct": 25.0, "wait_ns": 5_000_000,
        "mean_wait_ns": 500_000, "max_wait_ns": 2_000_000, "busy": 3, "reclaims": 1,
        "handoffs": 9, "announced_waiters": 0,
        "holder": {"held": true, "alive": true, "pid": me, "instance": ia},
        "waiters": [{"pid": me, "instance": ib, "ticket": 17}],
    });
    assert_eq!(w, &expect, "{w:#}");
    let c = &j["contention"]["checkpointer"];
    assert_eq!(
        (&c["acquires"], &c["waited_pct"], &c["mean_wait_ns"]),
        (
            &serde_json::json!(6),
            &serde_json::json!(50.0),
            &serde_json::json!(1_000)
        )
    );
    assert_eq!(c["holder"]["held"], false);
    assert_eq!(
        j["contention"]["readers"],
        serde_json::json!({"claims": 11, "reclaims": 12, "busy": 13, "extra": 14})
    );
    let att = |i: u64| {
        j["attached"]
            .as_array()
            .unwrap()
            .iter()
            .find(|x| x["instance"] == i)
            .unwrap()
            .clone()
    };
    assert_eq!(
        att(ia)["writer"],
        serde_json::json!({"acquires": 25, "wait_ns": 1_500, "waiting": false, "ticket": 0})
    );
    assert_eq!(att(ib)["writer"]["waiting"], true);
    assert_eq!(att(ib)["writer"]["ticket"], 17);

    let (code, out, err) = tshm(&["inspect"], &p);
    assert_eq!(code, 0, "{err}");
    for line in [
        "contention   roles in shared memory (waiters queued by ticket)\n".to_string(),
        "  writer       acquires 40  waited 10 (25.0%)  wait mean 500.0 us max 2.00 ms  busy 3  \
         reclaims 1  handoffs 9\n"
            .into(),
        format!("               held by pid {me} (instance {ia}), 1 waiting\n"),
        format!("                 1. pid {me} (instance {ib})  ticket 17\n"),
        "  checkpointer acquires 6  waited 3 (50.0%)  wait mean 1.0 us max 2.0 us".into(),
        "               free, nobody waiting\n".into(),
        "  readers      claims 11  reclaims 12  busy 13  extra 14\n".into(),
        format!("  pid {me} (instance {ia})  writer 25 acquires, 1.5 us waited  checkpointer 0"),
        format!("(instance {ib})  writer 0 acquires, 0 ns waited (waiting, ticket 17)"),
    ] {
        assert!(out.contains(&line), "missing {line:?} in\n{out}");
    }

    raw.set64(instance_record(&raw, ib) + 32, 0);
    a.release(Role::Writer).unwrap();
    b.close(|_| {}).unwrap();
    a.close(|_| {}).unwrap();
}

/// `watch` shows rates between refreshes; counters that went down (a re-initialized sidecar)
/// read as a reset, not as a huge rate, and counting resumes at the next refresh.
#[test]
fn watch_shows_rates_and_a_reset_as_a_reset() {
    use std::io::Read;
    let p = db("watch-rates.db");
    let h = Coordinator::open(&p, &Options::default()).unwrap();
    let raw = Raw::open(&p);
    raw.set64(640, 1_000_000); // writer acquires
    let mut child = Command::new(env!("CARGO_BIN_EXE_tshm"))
        .args(["watch", "--interval", "50"])
        .arg(&p)
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = child.stdout.take().unwrap();
    let mut pending = String::new();
    let mut buf = [0u8; 8192];
    // the next complete report (each ends with the separator line)
    let mut screen = || loop {
        if let Some(end) = pending.find("\n--\n").map(|e| e + 4) {
            let s: String = pending.drain(..end).collect();
            return s;
        }
        let n = out.read(&mut buf).unwrap();
        assert!(n > 0, "watch ended early: {pending}");
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
    };
    let first = screen();
    assert!(
        first.contains("rates        from the next refresh on"),
        "{first}"
    );
    // The first screen (bounded, by screens, not by time) that shows what a change produces.
    let mut until = |what: &dyn Fn(&str) -> bool| {
        for _ in 0..400 {
            let s = screen();
            if what(&s) {
                return s;
            }
        }
        panic!("no screen showed it");
    };
    let writer_rate = |s: &str| -> Option<f64> {
        let line = s.lines().find(|l| l.contains("acquires/s"))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    let steady = until(&|s| s.contains("rates        per second"));
    assert_eq!(writer_rate(&steady), Some(0.0), "{steady}");
    raw.set64(640, 5); // the counters start again, as after a re-initialization
    let reset = until(&|s| !s.contains("rates        per second"));
    assert!(
        reset.contains("rates        sidecar re-initialized since the last refresh"),
        "{reset}"
    );
    assert_eq!(writer_rate(&reset), None, "{reset}");
    raw.set64(640, 1_000_005); // a million acquisitions since
    let moved = until(&|s| writer_rate(s).is_some_and(|r| r != 0.0));
    let r = writer_rate(&moved).unwrap();
    // within an interval of at least 50 ms: positive and at most 1e6 / 0.05
    assert!(r > 0.0 && r <= 2e7, "{moved}");
    child.kill().unwrap();
    child.wait().unwrap();
    h.close(|_| {}).unwrap();
}

/// A database used through the SQLite shim: its wal-index in engine region 0 (crafted here as
/// SQLite writes it) and SQLite's lock slots by name show in `inspect`, text and JSON; a
/// sidecar without one has `"sqlite": null`; a region table entry out of range is corruption
/// (exit 1), not a crash.
#[test]
fn sqlite_section_shows_the_wal_index_and_the_lock_slots_by_name() {
    use tshm::engine::TSHM_LOCK_SHARED;
    let p = db("sqlite.db");
    let a = Coordinator::open(&p, &Options::default()).unwrap();
    let b = Coordinator::open(&p, &Options::default()).unwrap();
    assert!(inspect_json(&p)["sqlite"].is_null());
    a.region(0, 32768, true).unwrap().unwrap();
    let raw = Raw::open(&p);
    let region = raw.base() + (raw.u32(1024) as u64 - 1) * 65536;
    let salt = [0x0102_0304u32, 0xa0b0_c0d0];
    let mut hdr = [0u32; 12];
    hdr[0] = 3_007_000;
    hdr[2] = 3; // iChange
    let [lo, hi] = 4096u16.to_ne_bytes();
    hdr[3] = u32::from_ne_bytes([1, 0, lo, hi]); // isInit, bigEndCksum, szPage
    hdr[4] = 17; // mxFrame
    hdr[5] = 6; // nPage
                // SQLite copies the salts' bytes from the WAL header, big-endian there
    hdr[8] = u32::from_ne_bytes(salt[0].to_be_bytes());
    hdr[9] = u32::from_ne_bytes(salt[1].to_be_bytes());
    let (mut s1, mut s2) = (0u32, 0u32);
    for w in hdr[..10].chunks(2) {
        s1 = s1.wrapping_add(w[0]).wrapping_add(s2);
        s2 = s2.wrapping_add(w[1]).wrapping_add(s1);
    }
    (hdr[10], hdr[11]) = (s1, s2);
    for (k, w) in hdr.iter().enumerate() {
        raw.set32(region + 4 * k as u64, *w);
        raw.set32(region + 48 + 4 * k as u64, *w);
    }
    raw.set32(region + 96, 4); // nBackfill
    let marks = [0, 17, 12, u32::MAX, u32::MAX];
    for (k, m) in marks.iter().enumerate() {
        raw.set32(region + 100 + 4 * k as u64, *m);
    }
    raw.set32(region + 128, 4); // nBackfillAttempted
    let mut wal = vec![0u8; 32];
    for (at, v) in [(0, 0x377f_0682u32), (4, 3_007_000), (8, 4096), (12, 2)] {
        wal[at..at + 4].copy_from_slice(&v.to_be_bytes());
    }
    wal[16..20].copy_from_slice(&salt[0].to_be_bytes());
    wal[20..24].copy_from_slice(&salt[1].to_be_bytes());
    let wal_path = format!("{}-wal", p.display());
    std::fs::write(&wal_path, &wal).unwrap();
    a.acquire(Role::Writer, 0).unwrap();
    assert!(b.engine_lock(5, 1, TSHM_LOCK_SHARED).unwrap()); // READ2
    let me = std::process::id() as u64;

    let j = inspect_json(&p);
    let q = &j["sqlite"];
    let wi = &q["wal_index"];
    assert_eq!(wi["version"], 3_007_000);
    assert_eq!(wi["max_frame"], 17);
    assert_eq!(wi["pages"], 6);
    assert_eq!(wi["page_size"], 4096);
    assert_eq!(wi["change"], 3);
    assert_eq!(wi["salt"], serde_json::json!(salt));
    assert_eq!(wi["checksum_ok"], true);
    assert_eq!(wi["copies_agree"], true);
    assert_eq!(
        (wi["nbackfill"].clone(), wi["nbackfill_attempted"].clone()),
        (4.into(), 4.into())
    );
    assert_eq!(q["wal_file"]["bytes"], 32);
    assert_eq!(q["wal_file"]["header"]["checkpoint_seq"], 2);
    assert_eq!(q["salts_match"], true);
    let locks = &q["locks"];
    assert_eq!(locks["WRITE"]["holder"]["pid"], me);
    assert_eq!(locks["WRITE"]["holder"]["alive"], true);
    assert_eq!(locks["WRITE"]["waiters"], serde_json::json!([]));
    assert_eq!(locks["READ2"]["slot"], 5);
    assert_eq!(locks["READ2"]["mark"], 12);
    assert_eq!(locks["READ2"]["shared"][0]["pid"], me);
    assert_eq!(locks["READ1"]["mark"], 17);
    assert_eq!(locks["READ1"]["shared"], serde_json::json!([]));
    assert!(locks["READ3"]["mark"].is_null(), "unused");
    assert_eq!(locks["STEP_ASIDE"]["slot"], 8);

    let (code, out, _) = tshm(&["inspect"], &p);
    assert_eq!(code, 0);
    for line in [
        "sqlite       wal-index version 3007000  change 3  page size 4096  mxFrame 17  nPage 6  checksum ok",
        "salt 0x01020304 0xa0b0c0d0  nBackfill 4  nBackfillAttempted 4  header copies agree",
        "WAL file 32 bytes  checkpoint seq 2  salt 0x01020304 0xa0b0c0d0: salts match",
        &format!("  WRITE      pid {me} (instance "),
        "  READ1      mark 17      free",
        &format!("  READ2      mark 12      shared by pid {me} (instance "),
        "  READ3      mark unused  free",
    ] {
        assert!(out.contains(line), "{line:?} not in\n{out}");
    }
    assert!(!out.contains("STEP_ASIDE"), "shown only when held:\n{out}");

    // the WAL file removed; the region table entry beyond the pool
    std::fs::remove_file(&wal_path).unwrap();
    assert!(inspect_json(&p)["sqlite"]["wal_file"].is_null());
    let (_, out, _) = tshm(&["inspect"], &p);
    assert!(out.contains("no WAL file"), "{out}");
    let entry = raw.u32(1024);
    raw.set32(1024, u32::MAX);
    for args in [&["check"][..], &["inspect"][..], &["inspect", "--json"][..]] {
        let (code, _, err) = tshm(args, &p);
        assert_eq!(code, 1, "{args:?}: {err}");
        assert!(err.contains("corrupt") && err.contains("region 0"), "{err}");
    }
    raw.set32(1024, entry);
    a.release(Role::Writer).unwrap();
    b.close(|_| {}).unwrap();
    a.close(|_| {}).unwrap();
}

/// An idle sidecar of a fresh database, for the tests of the command line itself.
fn idle_db(name: &str) -> PathBuf {
    let p = db(name);
    Coordinator::open(&p, &Options::default())
        .unwrap()
        .close(|_| {})
        .unwrap();
    p
}

#[test]
fn watch_into_a_pipe_writes_plain_reports_and_stops_after_count() {
    let p = idle_db("watch-count.db");
    let (code, out, err) = tshm(&["watch", "--interval", "50", "--count", "3"], &p);
    assert_eq!(code, 0, "{err}");
    assert!(!out.contains('\x1b'), "terminal codes into a pipe: {out:?}");
    let r = reports(&out);
    assert_eq!(r.len(), 3, "{out}");
    for (k, report) in r.iter().enumerate() {
        assert!(report.starts_with("sidecar      "), "report {k}:\n{report}");
        assert!(report.contains("\nrates        "), "report {k}:\n{report}");
    }
    assert!(
        r[0].contains("rates        from the next refresh on"),
        "{}",
        r[0]
    );
    assert!(r[2].contains("rates        per second"), "{}", r[2]);
}

/// On a terminal (here the pseudo-terminal of script(1)) each refresh redraws the screen.
#[test]
fn watch_on_a_terminal_redraws_the_screen() {
    let p = idle_db("watch-tty.db");
    let cmd = format!(
        "{} watch --interval 50 --count 2 {}",
        env!("CARGO_BIN_EXE_tshm"),
        p.display()
    );
    let out = match Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .stdin(std::process::Stdio::null())
        .output()
    {
        Ok(out) => out,
        Err(e) => {
            eprintln!("skipped: script(1) cannot run: {e}");
            return;
        }
    };
    let out = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.matches("\x1b[H\x1b[2J").count(), 2, "{out:?}");
    assert!(
        !out.contains("\n--\r\n") && !out.contains("\n--\n"),
        "{out:?}"
    );
}

#[test]
fn every_json_document_carries_schema_1() {
    let p = idle_db("schema.db");
    assert_eq!(inspect_json(&p)["schema"], 1);
    for args in [&["check", "--json"][..], &["check", "--json", "--idle"][..]] {
        let (code, out, err) = tshm(args, &p);
        assert_eq!(code, 0, "{args:?}: {err}");
        let j: serde_json::Value = serde_json::from_str(&out).unwrap();
        assert_eq!(j["schema"], 1, "{args:?}: {j:#}");
    }
    let (code, out, err) = tshm(&["watch", "--json", "--interval", "50", "--count", "2"], &p);
    assert_eq!(code, 0, "{err}");
    let docs: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(docs.len(), 2, "{out}");
    for j in &docs {
        assert_eq!(j["schema"], 1, "{j:#}");
        assert_eq!(j["mode"], "none", "the fields of inspect: {j:#}");
    }
    assert!(docs[0]["rates"].is_null(), "{:#}", docs[0]);
    assert_eq!(docs[1]["rates"]["reset"], false, "{:#}", docs[1]);
    assert!(docs[1]["rates"]["seconds"].as_f64().unwrap() > 0.0);
    assert_eq!(docs[1]["rates"]["writer"]["acquires"], 0.0);
    // a verdict that the sidecar cannot be read is a document too
    let (code, out, _) = tshm(&["check", "--json"], &db("schema-bare.db"));
    assert_eq!(code, 2);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&j["schema"], &j["result"]),
        (&1.into(), &"unreadable".into())
    );
}

#[test]
fn error_messages_say_what_went_wrong_once_and_name_the_path() {
    let (code, _, err) = tshm(&["inspect"], Path::new("/nonexistent/x.db"));
    assert_eq!(code, 2);
    assert_eq!(err, "tshm: no database at /nonexistent/x.db\n");
    let bare = db("once-bare.db");
    for args in [
        &["inspect"][..],
        &["check"][..],
        &["watch", "--count", "1"][..],
    ] {
        let (code, _, err) = tshm(args, &bare);
        assert_eq!(code, 2, "{args:?}");
        assert_eq!(
            err,
            format!("tshm: no sidecar at {}-tshm\n", bare.display())
        );
    }
    let p = idle_db("once-magic.db");
    let side = format!("{}-tshm", p.display());
    let mut bytes = std::fs::read(&side).unwrap();
    bytes[0..4].copy_from_slice(b"XXXX");
    std::fs::write(&side, &bytes).unwrap();
    let (code, _, err) = tshm(&["check"], &p);
    assert_eq!(code, 1);
    assert!(
        err.starts_with(&format!("tshm: {side}: corrupt sidecar: bad magic")),
        "{err}"
    );
    assert_eq!(err.matches("corrupt").count(), 1, "{err}");
}

#[test]
fn an_empty_sidecar_is_reported_empty_with_its_real_size() {
    let p = db("empty.db");
    let side = format!("{}-tshm", p.display());
    std::fs::write(&side, b"").unwrap();
    for args in [&["inspect"][..], &["check"][..]] {
        let (code, _, err) = tshm(args, &p);
        assert_eq!(code, 1, "{args:?}");
        assert!(err.contains("empty (0 bytes)"), "{err}");
        assert!(err.contains("uninitialized"), "{err}");
        assert!(!err.contains("1 bytes"), "{err}");
    }
    std::fs::write(&side, b"T").unwrap();
    let (code, _, err) = tshm(&["check"], &p);
    assert_eq!(code, 1);
    assert!(err.contains("the file is 1 byte, shorter"), "{err}");
    std::fs::write(&side, b"TS").unwrap();
    let (_, _, err) = tshm(&["check"], &p);
    assert!(err.contains("the file is 2 bytes, shorter"), "{err}");
    // counts in the reports agree with their nouns too
    let p = db("plural.db");
    let h = Coordinator::open(&p, &Options::default()).unwrap();
    // the slot the handle keeps after its transaction pins no frame
    let (slot, _) = h.reader_begin().unwrap();
    h.reader_end(slot).unwrap();
    let (_, out, _) = tshm(&["inspect"], &p);
    assert!(out.contains(", 1 handle attached\n"), "{out}");
    assert!(out.contains("kept, no frame pinned\n"), "{out}");
    assert!(!out.contains("18446744073709551615"), "{out}");
    let (code, out, _) = tshm(&["check", "--idle"], &p);
    assert_eq!(code, 1);
    assert!(
        out.contains("1 handle attached; 1 reader slot has an owner"),
        "{out}"
    );
    h.close(|_| {}).unwrap();
}

#[test]
fn a_directory_is_refused_as_not_a_database_file() {
    let dir = db("dir.db");
    std::fs::remove_file(&dir).unwrap();
    std::fs::create_dir_all(&dir).unwrap();
    // also with a sound sidecar beside it
    let donor = idle_db("dir-donor.db");
    std::fs::copy(
        format!("{}-tshm", donor.display()),
        format!("{}-tshm", dir.display()),
    )
    .unwrap();
    let with_slash = format!("{}/", dir.display());
    for path in [dir.as_path(), Path::new(&with_slash)] {
        for args in [&["inspect"][..], &["check"][..], &["inspect", "--json"][..]] {
            let (code, out, err) = tshm(args, path);
            assert_eq!(code, 2, "{args:?} {}: {out}", path.display());
            assert!(
                err.contains(&format!(
                    "{} is a directory, not a database file",
                    dir.display()
                )) || err.contains("names a directory, not a database file"),
                "{err}"
            );
            assert!(!err.contains("No such device"), "{err}");
        }
    }
}

#[test]
fn usage_errors_exit_64_and_help_and_version_exit_0() {
    for args in [
        &["frobnicate"][..],
        &["inspect"][..],
        &["check", "--bogus", "x.db"][..],
        &["watch", "--count", "0", "x.db"][..],
        &["watch", "--interval", "soon", "x.db"][..],
        &["watch", "--interval", "10", "x.db"][..],
        &["completions", "tcsh"][..],
        &[][..],
    ] {
        let (code, out, err) = tshm_args(args);
        assert_eq!(code, 64, "{args:?}: {err}");
        assert!(out.is_empty(), "{args:?}: {out}");
        assert!(
            err.contains("error") || err.contains("Usage"),
            "{args:?}: {err}"
        );
    }
    for args in [&["--help"][..], &["help"][..], &["check", "--help"][..]] {
        let (code, out, err) = tshm_args(args);
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(out.contains("Usage"), "{args:?}: {out}");
    }
    let (_, out, _) = tshm_args(&["--help"]);
    for line in [
        "Exit status:",
        "  0   ok",
        "  1   ",
        "  2   ",
        "  64  usage error",
    ] {
        assert!(out.contains(line), "{line:?} not in\n{out}");
    }
    let (code, out, _) = tshm_args(&["--version"]);
    assert_eq!(code, 0);
    assert!(out.starts_with("tshm "), "{out}");
}

#[test]
fn check_says_that_it_checked_the_sidecar_not_the_database() {
    let p = idle_db("scope.db");
    let side = format!("{}-tshm", p.display());
    let (code, out, _) = tshm(&["check"], &p);
    assert_eq!(code, 0);
    assert_eq!(
        out,
        format!(
            "sidecar {side}: consistent (checked: header, frame index, role words, engine \
             region table; the database file is not checked)\n"
        )
    );
    let (code, out, _) = tshm(&["check", "--idle"], &p);
    assert_eq!(code, 0);
    assert!(
        out.starts_with(&format!("sidecar {side}: consistent and idle (")),
        "{out}"
    );
    let (code, out, _) = tshm(&["check", "--json", "--idle"], &p);
    assert_eq!(code, 0);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(j["checked"], "sidecar");
    assert_eq!(j["sidecar"], side);
    assert_eq!(j["database_file_checked"], false);
    assert_eq!(
        j["checks"],
        serde_json::json!(["header", "frame_index", "roles", "engine_regions"])
    );
    assert_eq!(
        (&j["result"], &j["consistent"]),
        (&"consistent".into(), &true.into())
    );
    assert_eq!(j["idle"], true);
    // in use: consistent but not idle
    let h = Coordinator::open(&p, &Options::default()).unwrap();
    let (code, out, _) = tshm(&["check", "--json", "--idle"], &p);
    assert_eq!(code, 1);
    let j: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(
        (&j["result"], &j["idle"]),
        (&"not_idle".into(), &false.into())
    );
    assert_eq!(j["problems"], serde_json::json!(["1 handle attached"]));
    h.close(|_| {}).unwrap();
}

#[test]
fn completions_for_each_shell_know_the_commands() {
    for shell in ["bash", "zsh", "fish"] {
        let (code, out, err) = tshm_args(&["completions", shell]);
        assert_eq!(code, 0, "{shell}: {err}");
        assert!(!out.is_empty(), "{shell}");
        for word in ["inspect", "check", "watch"] {
            assert!(out.contains(word), "{shell}: no {word} in\n{out}");
        }
    }
}
