//! Core costs, each next to a baseline measured in the same run (these machines are shared and
//! noisy, so only ratios mean anything):
//!
//! * `core.writer_pair` — writer acquire + release, against a raw OFD `fcntl` lock + unlock pair;
//! * `core.snapshot_read` — one snapshot read, against the raw OFD pair (what a reader would pay
//!   to take a lock instead);
//! * `core.reader_cas` — reader begin + end with CAS slots, against the byte-lock strategy;
//! * `core.reader_bytelock` — reader begin + end with byte-lock slots, against the raw OFD pair;
//! * `core.writer_handoff` — time for a waiting handle (another thread) to own the writer role
//!   after release, against the uncontended acquire + release pair.
//!
//! Run with `make bench` (all) or `make bench ONLY=core.reader` (ids with that prefix). The
//! report is `target/bench/report.json`: `[{"id","value","baseline","ratio","unit","note"}]`.

mod common;

use common::{db, ratio_row};
use criterion::Criterion;
use std::hint::black_box;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};
use tshm::{Coordinator, Options, Role};

fn raw_ofd_pair(c: &mut Criterion) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(db("raw"))
        .unwrap();
    let fd = f.as_raw_fd();
    c.bench_function("baseline.raw_ofd_pair", |b| {
        b.iter(|| {
            assert!(tshm::lock::try_lock(
                fd,
                tshm::lock::Backend::Ofd,
                1,
                1,
                tshm::lock::Kind::Exclusive
            )
            .unwrap());
            tshm::lock::unlock(fd, tshm::lock::Backend::Ofd, 1, 1).unwrap();
        })
    });
}

fn writer_pair(c: &mut Criterion) {
    let h = Coordinator::open(&db("writer.db"), &Options::default()).unwrap();
    c.bench_function("core.writer_pair", |b| {
        b.iter(|| {
            h.acquire(Role::Writer, 0).unwrap();
            h.release(Role::Writer).unwrap();
        })
    });
}

fn snapshot_read(c: &mut Criterion) {
    let h = Coordinator::open(&db("snap.db"), &Options::default()).unwrap();
    c.bench_function("core.snapshot_read", |b| {
        b.iter(|| black_box(h.snapshot().unwrap()))
    });
}

fn readers(c: &mut Criterion) {
    for (id, strategy) in [("core.reader_cas", 0), ("core.reader_bytelock", 1)] {
        let o = Options {
            reader_strategy: strategy,
            ..Options::default()
        };
        let h = Coordinator::open(&db(&format!("{id}.db")), &o).unwrap();
        c.bench_function(id, |b| {
            b.iter(|| {
                let (slot, snap) = h.reader_begin().unwrap();
                black_box(snap);
                h.reader_end(slot).unwrap();
            })
        });
    }
}

/// Two handles pass the writer role back and forth; each iteration is one handoff measured from
/// the release call to the waiter owning the role.
fn writer_handoff(c: &mut Criterion) {
    let p = db("handoff.db");
    let a = Coordinator::open(&p, &Options::default()).unwrap();
    let b = Coordinator::open(&p, &Options::default()).unwrap();
    c.bench_function("core.writer_handoff", |bench| {
        bench.iter_custom(|iters| {
            let released_at = AtomicU64::new(0);
            let total = AtomicU64::new(0);
            let (b_got, a_queued, a_held) =
                (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
            let start = Instant::now();
            let now = || start.elapsed().as_nanos() as u64;
            a.acquire(Role::Writer, 0).unwrap();
            std::thread::scope(|s| {
                s.spawn(|| {
                    for i in 0..iters {
                        b.acquire(Role::Writer, 60_000).unwrap();
                        total.fetch_add(
                            now() - released_at.load(Ordering::Acquire),
                            Ordering::Relaxed,
                        );
                        b_got.store(i + 1, Ordering::Release);
                        let more = i + 1 < iters;
                        // release only once `a` is queued, and re-queue only once it holds the
                        // role, so every release has exactly one waiter to wake
                        while more && a_queued.load(Ordering::Acquire) <= i {
                            std::hint::spin_loop();
                        }
                        b.release(Role::Writer).unwrap();
                        while more && a_held.load(Ordering::Acquire) <= i {
                            std::hint::spin_loop();
                        }
                    }
                });
                for i in 0..iters {
                    if i > 0 {
                        a_queued.store(i, Ordering::Release);
                        a.acquire(Role::Writer, 60_000).unwrap();
                        a_held.store(i, Ordering::Release);
                    }
                    // give the waiter time to block in the futex before releasing
                    std::thread::sleep(Duration::from_micros(50));
                    released_at.store(now(), Ordering::Release);
                    a.release(Role::Writer).unwrap();
                    while b_got.load(Ordering::Acquire) <= i {
                        std::hint::spin_loop();
                    }
                }
            });
            Duration::from_nanos(total.load(Ordering::Relaxed))
        })
    });
}

fn main() {
    if !common::wanted("core") {
        return;
    }
    let mut c = common::criterion();
    type Bench = (&'static str, fn(&mut Criterion));
    let benches: [Bench; 6] = [
        ("baseline.raw_ofd_pair", raw_ofd_pair),
        ("core.writer_pair", writer_pair),
        ("core.snapshot_read", snapshot_read),
        ("core.reader", readers),
        ("core.writer_handoff", writer_handoff),
        ("", |_| {}),
    ];
    // the baseline runs whenever anything that compares against it runs
    for (id, f) in benches {
        if !id.is_empty() && common::wanted(id) {
            f(&mut c);
        }
    }
    c.final_summary();

    let rows = [
        (
            "core.writer_pair",
            "baseline.raw_ofd_pair",
            "writer acquire+release vs raw OFD lock+unlock",
        ),
        (
            "core.snapshot_read",
            "baseline.raw_ofd_pair",
            "snapshot read vs raw OFD lock+unlock",
        ),
        (
            "core.reader_cas",
            "core.reader_bytelock",
            "reader begin+end: CAS slots vs byte-lock slots",
        ),
        (
            "core.reader_bytelock",
            "baseline.raw_ofd_pair",
            "reader begin+end (byte-lock) vs raw OFD lock+unlock",
        ),
        (
            "core.writer_handoff",
            "core.writer_pair",
            "release-to-owner latency of a waiting handle vs an uncontended pair",
        ),
    ];
    common::report(rows.map(|(id, base, note)| ratio_row(id, base, note)));
}
