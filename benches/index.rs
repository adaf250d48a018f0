//! The shared frame index, each number next to a baseline measured in the same run:
//!
//! * `index.find_1m_vs_4k` — mean lookup with 1,000,000 frames indexed / with 4,096 (the same
//!   page mix: writes to 4,096 pages, half of them to a hot 1,000; lookups over 8,192 pages, so
//!   about half miss as reads of pages not in the WAL do). Flat cost means a ratio near 1.
//! * `index.find_vs_block_scan_1m` — at 1,000,000 frames, the classic structure (one hash table
//!   per 4096-frame block, probed newest block first, as SQLite's wal-index and the reference
//!   system do; plain process memory here, so it pays no atomics) / ours. Higher is better.
//! * `index.append_vs_block_scan` — our append per frame (`Coordinator::index_append`, the
//!   writer-role check included) / the block-scan structure's (a push and a hash slot). Lower is
//!   better; the target is at most 1.5.
//!
//! `make bench ONLY=index` runs only these.

mod common;

use common::{db, mean_ns, Row};
use std::hint::black_box;
use tshm::{tshm_snapshot, Coordinator, Options, Role};

const PAGES: u32 = 4096;
const LOOKUP_PAGES: u32 = 8192;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn write_page(&mut self) -> u32 {
        let r = self.next();
        1 + if r & 1 == 0 {
            (r >> 1) as u32 % 1000
        } else {
            (r >> 1) as u32 % PAGES
        }
    }
}

/// The block-scan structure: per block of 4096 frames, the pages and an open-addressing hash
/// table of 8192 u16 slots (slot value: index in the block + 1).
#[derive(Default)]
struct BlockScan {
    blocks: Vec<(Vec<u32>, Vec<u16>)>,
    frames: u64,
}

impl BlockScan {
    fn hash(page: u32) -> usize {
        (page as usize).wrapping_mul(383) & 8191
    }
    fn append(&mut self, page: u32) {
        let i = (self.frames % 4096) as usize;
        if i == 0 {
            self.blocks
                .push((Vec::with_capacity(4096), vec![0u16; 8192]));
        }
        let (pages, hash) = self.blocks.last_mut().unwrap();
        pages.push(page);
        let mut h = Self::hash(page);
        while hash[h] != 0 {
            h = (h + 1) & 8191;
        }
        hash[h] = i as u16 + 1;
        self.frames += 1;
    }
    /// Newest frame (1-based) <= max holding page.
    fn find(&self, page: u32, max: u64) -> Option<u64> {
        for (b, (pages, hash)) in self.blocks.iter().enumerate().rev() {
            let first = b as u64 * 4096 + 1;
            if first > max {
                continue;
            }
            let mut best = None;
            let mut h = Self::hash(page);
            while hash[h] != 0 {
                let i = hash[h] as u64 - 1;
                let f = first + i;
                if pages[i as usize] == page && f <= max && best.is_none_or(|b| f > b) {
                    best = Some(f);
                }
                h = (h + 1) & 8191;
            }
            if best.is_some() {
                return best;
            }
        }
        None
    }
}

/// An index of `frames` frames (committed), in a fresh sidecar.
fn build(frames: u64) -> Coordinator {
    let h = Coordinator::open(&db(&format!("index-{frames}.db")), &Options::default()).unwrap();
    h.acquire(Role::Writer, 0).unwrap();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for f in 1..=frames {
        h.index_append(rng.write_page(), f).unwrap();
    }
    let s = tshm_snapshot {
        max_frame: frames,
        ..Default::default()
    };
    h.publish(&s, 1).unwrap();
    h.release(Role::Writer).unwrap();
    h
}

fn lookups() -> Vec<u32> {
    let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
    (0..1 << 16)
        .map(|_| 1 + rng.next() as u32 % LOOKUP_PAGES)
        .collect()
}

fn bench_find(c: &mut criterion::Criterion, id: &str, frames: u64) {
    let h = build(frames);
    let pages = lookups();
    let mut i = 0usize;
    c.bench_function(id, |b| {
        b.iter(|| {
            i = (i + 1) & 0xffff;
            black_box(h.index_find(pages[i], frames).unwrap())
        })
    });
}

fn bench_block_scan(c: &mut criterion::Criterion) {
    let mut bs = BlockScan::default();
    let mut rng = Rng(0x2545_f491_4f6c_dd1d);
    for _ in 0..1_000_000 {
        bs.append(rng.write_page());
    }
    // the same answers as ours, or the comparison means nothing
    let h = build(1_000_000);
    for p in lookups().iter().take(2000) {
        assert_eq!(bs.find(*p, 1_000_000), h.index_find(*p, 1_000_000).unwrap());
    }
    let pages = lookups();
    let mut i = 0usize;
    c.bench_function("baseline.block_scan_find_1m", |b| {
        b.iter(|| {
            i = (i + 1) & 0xffff;
            black_box(bs.find(pages[i], 1_000_000))
        })
    });
    c.bench_function("baseline.block_scan_append", |b| {
        let mut bs = BlockScan::default();
        let mut rng = Rng(7);
        b.iter(|| {
            if bs.frames == 1 << 20 {
                bs = BlockScan::default();
            }
            bs.append(rng.write_page())
        })
    });
}

fn bench_append(c: &mut criterion::Criterion) {
    let h = Coordinator::open(&db("append.db"), &Options::default()).unwrap();
    h.acquire(Role::Writer, 0).unwrap();
    let mut rng = Rng(7);
    let mut f = 0u64;
    c.bench_function("index.append", |b| {
        b.iter(|| {
            if f == 1 << 20 {
                h.index_reset().unwrap();
                f = 0;
            }
            f += 1;
            h.index_append(rng.write_page(), f).unwrap()
        })
    });
}

fn main() {
    if !common::wanted("index") {
        return;
    }
    let mut c = common::criterion();
    bench_find(&mut c, "index.find_4k", 4096);
    bench_find(&mut c, "index.find_1m", 1_000_000);
    bench_block_scan(&mut c);
    bench_append(&mut c);
    c.final_summary();
    let row = |id: &str, value: Option<f64>, baseline: Option<f64>, flip: bool, note: &str| {
        let (value, baseline) = (value?, baseline?);
        Some(Row {
            id: id.into(),
            value,
            baseline,
            ratio: if flip {
                baseline / value
            } else {
                value / baseline
            },
            unit: "ns".into(),
            note: note.into(),
        })
    };
    common::report([
        row(
            "index.find_1m_vs_4k",
            mean_ns("index.find_1m"),
            mean_ns("index.find_4k"),
            false,
            "lookup at 1,000,000 frames / at 4,096 (target <= 1.5)",
        ),
        row(
            "index.find_vs_block_scan_1m",
            mean_ns("index.find_1m"),
            mean_ns("baseline.block_scan_find_1m"),
            true,
            "block-scan lookup / ours at 1,000,000 frames (ratio = baseline / value, target >= 10)",
        ),
        row(
            "index.append_vs_block_scan",
            mean_ns("index.append"),
            mean_ns("baseline.block_scan_append"),
            false,
            "append per frame, ours / block-scan (target <= 1.5)",
        ),
    ]);
}
