//! Behaviour of several handles inside one process (multi-process behaviour is tested by the C
//! harnesses in c-tests/, which fork real processes).

mod scratch;

use std::path::PathBuf;
use tshm::{Coordinator, Error, Options, Role};

fn db(name: &str) -> PathBuf {
    let dir = scratch::dir("tshm-rs");
    let p = dir.join(name);
    let _ = std::fs::remove_file(format!("{}-tshm", p.display()));
    p
}

fn both_backends(f: impl Fn(&Options)) {
    for posix in [false, true] {
        f(&Options {
            posix_locks: posix,
            ..Options::default()
        });
    }
}

#[test]
fn first_handle_initializes_and_second_joins() {
    both_backends(|o| {
        let p = db(&format!("init-{}.db", o.posix_locks));
        let a = Coordinator::open(&p, o).unwrap();
        let b = Coordinator::open(&p, o).unwrap();
        assert_eq!(a.info().unwrap().initialized, 1);
        assert_eq!(b.info().unwrap().initialized, 0);
        assert_ne!(a.info().unwrap().instance, b.info().unwrap().instance);
        assert!(!b.close(|_| panic!("not last")).unwrap());
        let mut ran = false;
        assert!(a.close(|_| ran = true).unwrap());
        assert!(ran);
    });
}

#[test]
fn two_handles_of_one_process_exclude_each_other_like_processes() {
    both_backends(|o| {
        let p = db(&format!("excl-{}.db", o.posix_locks));
        let a = Coordinator::open(&p, o).unwrap();
        let b = Coordinator::open(&p, o).unwrap();
        a.acquire(Role::Writer, 0).unwrap();
        assert!(matches!(b.acquire(Role::Writer, 0), Err(Error::Busy(_))));
        assert!(matches!(b.acquire(Role::Writer, 20), Err(Error::Busy(_))));
        assert!(matches!(a.acquire(Role::Writer, 0), Err(Error::Misuse(_))));
        assert!(matches!(b.release(Role::Writer), Err(Error::Misuse(_))));
        a.release(Role::Writer).unwrap();
        b.acquire(Role::Writer, 0).unwrap();
        let owner = a.owner(1).unwrap();
        assert_eq!(owner.pid, std::process::id());
        assert_eq!(owner.instance, b.info().unwrap().instance);
        assert_eq!(owner.alive, 1);
    });
}

#[test]
fn a_blocked_writer_is_woken_by_release_in_another_thread() {
    let p = db("wake.db");
    let a = Coordinator::open(&p, &Options::default()).unwrap();
    let b = Coordinator::open(&p, &Options::default()).unwrap();
    a.acquire(Role::Writer, 0).unwrap();
    std::thread::scope(|s| {
        let t = s.spawn(|| b.acquire(Role::Writer, 10_000));
        // the waiter cannot win until a releases; release and expect it to win
        while a.owner(1).unwrap().instance != a.info().unwrap().instance {}
        a.release(Role::Writer).unwrap();
        t.join().unwrap().unwrap();
    });
    assert_eq!(a.owner(1).unwrap().instance, b.info().unwrap().instance);
}

#[test]
fn readers_pin_frames_and_the_minimum_follows_them() {
    for strategy in [0, 1] {
        let p = db(&format!("pin-{strategy}.db"));
        let o = Options {
            reader_strategy: strategy,
            ..Options::default()
        };
        let w = Coordinator::open(&p, &o).unwrap();
        let r = Coordinator::open(&p, &o).unwrap();
        assert_eq!(w.info().unwrap().reader_strategy, strategy);
        assert_eq!(w.min_reader_frame().unwrap(), u64::MAX);
        w.acquire(Role::Writer, 0).unwrap();
        let mut s = w.snapshot().unwrap();
        s.max_frame = 10;
        w.publish(&s, tshm::snapshot::TSHM_SNAP_MAX_FRAME).unwrap();
        let t1 = r.read_txn().unwrap();
        assert_eq!(t1.snapshot.max_frame, 10);
        s.max_frame = 20;
        w.publish(&s, tshm::snapshot::TSHM_SNAP_MAX_FRAME).unwrap();
        let (slot2, snap2) = w.reader_begin().unwrap();
        assert_eq!(snap2.max_frame, 20);
        assert_eq!(w.min_reader_frame().unwrap(), 10);
        drop(t1);
        assert_eq!(w.min_reader_frame().unwrap(), 20);
        assert!(matches!(r.reader_end(slot2), Err(Error::Misuse(_))));
        w.reader_end(slot2).unwrap();
        assert_eq!(w.min_reader_frame().unwrap(), u64::MAX);
    }
}

#[test]
fn reader_slots_run_out_with_busy_not_corruption() {
    let p = db("full.db");
    let o = Options {
        reader_slots: 64,
        ..Options::default()
    };
    let a = Coordinator::open(&p, &o).unwrap();
    // transactions of one handle at one snapshot share a slot: each begins at its own
    a.acquire(Role::Writer, 0).unwrap();
    let slots: Vec<u32> = (1..=64)
        .map(|f| {
            let s = tshm::tshm_snapshot {
                max_frame: f,
                ..Default::default()
            };
            a.publish(&s, tshm::snapshot::TSHM_SNAP_MAX_FRAME).unwrap();
            a.reader_begin().unwrap().0
        })
        .collect();
    assert!(matches!(a.reader_begin(), Err(Error::Busy(_))));
    a.reader_end(slots[7]).unwrap();
    assert_eq!(a.reader_begin().unwrap().0, slots[7]);
}

#[test]
fn a_closed_handle_refuses_calls_and_publish_needs_a_role() {
    let p = db("closed.db");
    let a = Coordinator::open(&p, &Options::default()).unwrap();
    assert!(matches!(
        a.publish(&Default::default(), 1),
        Err(Error::Misuse(_))
    ));
    a.shutdown(|_| {}).unwrap();
    assert!(matches!(a.snapshot(), Err(Error::Misuse(_))));
    assert!(matches!(a.shutdown(|_| {}), Err(Error::Misuse(_))));
}

#[test]
fn exclusive_and_shared_conflict_within_a_process() {
    let p = db("mode.db");
    let a = Coordinator::open(
        &p,
        &Options {
            exclusive: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert!(matches!(
        Coordinator::open(&p, &Options::default()),
        Err(Error::Conflict(_))
    ));
    drop(a);
    let _b = Coordinator::open(&p, &Options::default()).unwrap();
    assert!(matches!(
        Coordinator::open(
            &p,
            &Options {
                exclusive: true,
                ..Options::default()
            }
        ),
        Err(Error::Conflict(_))
    ));
}

#[test]
fn read_only_open_without_sidecar_reports_not_found() {
    let p = db("ro.db");
    let e = Coordinator::open(
        &p,
        &Options {
            readonly: true,
            ..Options::default()
        },
    );
    assert!(matches!(e, Err(Error::NotFound(_))));
    let w = Coordinator::open(&p, &Options::default()).unwrap();
    let r = Coordinator::open(
        &p,
        &Options {
            readonly: true,
            ..Options::default()
        },
    )
    .unwrap();
    assert_eq!(r.info().unwrap().readonly, 1);
    assert_eq!(r.snapshot().unwrap(), w.snapshot().unwrap());
    assert!(matches!(r.reader_begin(), Err(Error::ReadOnly(_))));
    assert!(matches!(
        r.acquire(Role::Writer, 0),
        Err(Error::ReadOnly(_))
    ));
}

/// A tag names its instance in 16 bits, 0 meaning none: 65535 instances at most. A table of
/// more is refused, like every other option outside its range.
#[test]
fn instance_slots_above_the_largest_taggable_table_are_misuse() {
    let p = db("instances-over.db");
    let over = Options {
        reader_slots: 64,
        instance_slots: 65536,
        ..Options::default()
    };
    assert!(matches!(
        Coordinator::open(&p, &over),
        Err(Error::Misuse(_))
    ));
    assert!(!std::path::Path::new(&format!("{}-tshm", p.display())).exists());
    let most = Options {
        instance_slots: 65535,
        ..over
    };
    let h = Coordinator::open(&p, &most).unwrap();
    assert_eq!(h.info().unwrap().instance_slots, 65535);
    h.close(|_| {}).unwrap();
}
