//! A writer process killed inside the index's growth leaves an index that the next writer,
//! a process joining afterwards and `tshm check` all read as sound. The killed writer and the
//! joiner are this test binary run again as child processes (the test point is armed in the
//! child's environment only); they synchronize with this process by exiting.

mod scratch;

use std::collections::BTreeMap;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use tshm::{tshm_snapshot, Coordinator, Options, Role};

/// Set in a child's environment: the part it plays.
const PART: &str = "TSHM_KILLED_WRITER_PART";
const DB: &str = "TSHM_KILLED_WRITER_DB";
/// Entries per index block (the unit of index growth).
const BLOCK: u64 = 4096;
/// Frames the test appends in all: one block and a part of the next.
const FRAMES: u64 = BLOCK + 200;

fn db(name: &str) -> PathBuf {
    let dir = scratch::dir("tshm-kill");
    let p = dir.join(name);
    std::fs::write(&p, b"").unwrap(); // the inspector wants a database beside the sidecar
    let _ = std::fs::remove_file(format!("{}-tshm", p.display()));
    p
}

fn page_of(frame: u64) -> u32 {
    (frame % 997) as u32 + 1
}

fn commit(h: &Coordinator, max_frame: u64) {
    let s = tshm_snapshot {
        max_frame,
        ..Default::default()
    };
    h.publish(&s, tshm::snapshot::TSHM_SNAP_MAX_FRAME).unwrap();
}

/// Runs test `test` of this binary as a child process playing `part` on `db`, with the test
/// point `crash_at` armed in it.
fn child(test: &str, part: &str, db: &Path, crash_at: Option<&str>) -> Output {
    let mut c = Command::new(std::env::current_exe().unwrap());
    c.args(["--exact", test, "--nocapture", "--test-threads=1"])
        .env(PART, part)
        .env(DB, db)
        .env_remove("TSHM_TEST_CRASH_AT");
    if let Some(point) = crash_at {
        c.env("TSHM_TEST_CRASH_AT", point);
    }
    c.output().unwrap()
}

fn show(o: &Output) -> String {
    format!(
        "{:?}\n{}{}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// The newest frame of each page at or below `max` (frames `1..=max` in order).
fn model(max: u64) -> BTreeMap<u32, u64> {
    (1..=max).map(|f| (page_of(f), f)).collect()
}

/// What the joiner checks: it opens (validating the index), and the stats and every lookup
/// agree with the frames appended.
fn joiner(p: &Path) {
    let h = Coordinator::open(p, &Options::default()).unwrap();
    let st = h.index_stats().unwrap();
    assert_eq!(st.entries, FRAMES);
    assert_eq!(st.tail_frame, FRAMES);
    assert!(st.blocks * BLOCK >= st.entries, "{st:?}");
    for (page, frame) in model(FRAMES) {
        assert_eq!(
            h.index_find(page, FRAMES).unwrap(),
            Some(frame),
            "page {page}"
        );
        assert_eq!(
            h.index_find(page, BLOCK).unwrap(),
            model(BLOCK).get(&page).copied(),
            "page {page} at frame {BLOCK}"
        );
    }
    h.close(|_| {}).unwrap();
}

#[test]
fn writer_killed_between_a_blocks_unit_and_the_block_count_leaves_a_sound_index() {
    const NAME: &str =
        "writer_killed_between_a_blocks_unit_and_the_block_count_leaves_a_sound_index";
    if let Ok(part) = std::env::var(PART) {
        let p = PathBuf::from(std::env::var_os(DB).unwrap());
        match part.as_str() {
            // appends the rest of block 0, commits, and dies giving block 1 its unit
            "writer" => {
                let h = Coordinator::open(&p, &Options::default()).unwrap();
                h.acquire(Role::Writer, 0).unwrap();
                let tail = h.index_stats().unwrap().tail_frame;
                for f in tail + 1..=BLOCK {
                    h.index_append(page_of(f), f).unwrap();
                }
                commit(&h, BLOCK);
                h.index_append(page_of(BLOCK + 1), BLOCK + 1).unwrap();
                panic!("the writer was not killed at block_unit");
            }
            "joiner" => joiner(&p),
            _ => unreachable!("{part}"),
        }
        return;
    }

    let p = db("block-unit.db");
    // keeps the session (and its index) alive across the kill; block 0 is made here, so that
    // the first block the child makes is block 1
    let h = Coordinator::open(&p, &Options::default()).unwrap();
    h.acquire(Role::Writer, 0).unwrap();
    h.index_append(page_of(1), 1).unwrap();
    commit(&h, 1);
    h.release(Role::Writer).unwrap();

    let o = child(NAME, "writer", &p, Some("block_unit"));
    assert_eq!(o.status.signal(), Some(libc::SIGKILL), "{}", show(&o));

    // the next writer takes over the dead one's role and appends into block 1
    h.acquire(Role::Writer, 0).unwrap();
    assert_eq!(h.index_stats().unwrap().entries, BLOCK);
    for f in BLOCK + 1..=FRAMES {
        h.index_append(page_of(f), f).unwrap();
    }
    commit(&h, FRAMES);
    h.release(Role::Writer).unwrap();
    let st = h.index_stats().unwrap();
    assert_eq!((st.entries, st.blocks), (FRAMES, 2), "{st:?}");

    let o = child(NAME, "joiner", &p, None);
    assert!(o.status.success(), "the joiner: {}", show(&o));
    let c = Command::new(env!("CARGO_BIN_EXE_tshm"))
        .arg("check")
        .arg(&p)
        .output()
        .unwrap();
    assert!(c.status.success(), "tshm check: {}", show(&c));
    for (page, frame) in model(FRAMES) {
        assert_eq!(h.index_find(page, FRAMES).unwrap(), Some(frame));
    }
    assert!(h.close(|_| {}).unwrap());
}
