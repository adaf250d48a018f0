//! The shared frame index against a plain in-memory model (one process; the C harness
//! `c-tests/test_index.c` runs it across processes).

mod scratch;

use proptest::prelude::*;
use std::collections::BTreeMap;
use std::path::PathBuf;
use tshm::{tshm_snapshot, Coordinator, Error, Options, Role};

fn db(name: &str) -> PathBuf {
    let dir = scratch::dir("tshm-ix");
    let p = dir.join(name);
    let _ = std::fs::remove_file(format!("{}-tshm", p.display()));
    p
}

const MAX_FRAME_BIT: u32 = 1;

fn commit(h: &Coordinator, max_frame: u64) {
    let s = tshm_snapshot {
        max_frame,
        ..Default::default()
    };
    h.publish(&s, MAX_FRAME_BIT).unwrap();
}

/// What the index should hold: live entries in append order.
#[derive(Default)]
struct Model {
    live: Vec<(u32, u64)>,
    tail: u64,
    committed: u64,
}

impl Model {
    fn find(&self, page: u32, max: u64) -> Option<u64> {
        self.live
            .iter()
            .rev()
            .find(|(p, f)| *p == page && *f <= max)
            .map(|e| e.1)
    }
    fn newest(&self, max: u64) -> BTreeMap<u32, u64> {
        let mut m = BTreeMap::new();
        for (p, f) in &self.live {
            if *f <= max {
                m.insert(*p, *f);
            }
        }
        m
    }
}

#[derive(Clone, Debug)]
enum Op {
    /// Append `n` frames, each `gap` above the last, pages from `0..pages` (seeded).
    Append {
        n: u32,
        gap: u64,
        pages: u32,
        seed: u64,
    },
    Commit,
    /// Roll back to a point between the committed frame and the tail (fraction in 0..=100).
    Truncate(u8),
    Reset,
    Find {
        page: u32,
        at: u8,
    },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (1u32..300, 1u64..4, prop_oneof![Just(5u32), Just(600), Just(u32::MAX)], any::<u64>())
            .prop_map(|(n, gap, pages, seed)| Op::Append { n, gap, pages, seed }),
        1 => (5_000u32..40_000, Just(1u64), Just(3_000u32), any::<u64>())
            .prop_map(|(n, gap, pages, seed)| Op::Append { n, gap, pages, seed }),
        2 => Just(Op::Commit),
        2 => (0u8..=100).prop_map(Op::Truncate),
        1 => Just(Op::Reset),
        4 => (0u32..700, 0u8..=100).prop_map(|(page, at)| Op::Find { page, at }),
    ]
}

fn pick(seed: &mut u64, n: u32) -> u32 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    (*seed % n as u64) as u32
}

fn check_all(h: &Coordinator, m: &Model, max: u64) {
    let mut got = BTreeMap::new();
    h.index_for_each(max, |p, f| {
        got.insert(p, f);
        true
    })
    .unwrap();
    assert_eq!(got, m.newest(max), "iteration at {max}");
    for (p, f) in &got {
        assert_eq!(h.index_find(*p, max).unwrap(), Some(*f));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 40, .. ProptestConfig::default() })]

    #[test]
    fn index_matches_model(ops in proptest::collection::vec(op(), 1..40)) {
        let h = Coordinator::open(&db("model.db"), &Options::default()).unwrap();
        h.acquire(Role::Writer, 0).unwrap();
        let mut m = Model::default();
        for op in ops {
            match op {
                Op::Append { n, gap, pages, mut seed } => {
                    seed |= 1;
                    for _ in 0..n {
                        let page = pick(&mut seed, pages);
                        m.tail += gap;
                        h.index_append(page, m.tail).unwrap();
                        m.live.push((page, m.tail));
                    }
                }
                Op::Commit => {
                    m.committed = m.tail;
                    commit(&h, m.committed);
                }
                Op::Truncate(pct) => {
                    let to = m.committed + (m.tail - m.committed) * pct as u64 / 100;
                    let before = m.live.len();
                    m.live.retain(|e| e.1 <= to);
                    let dropped = h.index_truncate(to).unwrap();
                    prop_assert_eq!(dropped as usize, before - m.live.len());
                    m.tail = to;
                }
                Op::Reset => {
                    h.index_reset().unwrap();
                    m = Model::default();
                    commit(&h, 0);
                }
                Op::Find { page, at } => {
                    let max = m.tail * at as u64 / 100;
                    prop_assert_eq!(h.index_find(page, max).unwrap(), m.find(page, max));
                }
            }
            let st = h.index_stats().unwrap();
            prop_assert!(st.entries - st.dead == m.live.len() as u64);
        }
        check_all(&h, &m, m.committed);
        check_all(&h, &m, m.tail);
        // A new writer trims what was never committed.
        h.release(Role::Writer).unwrap();
        h.acquire(Role::Writer, 0).unwrap();
        m.live.retain(|e| e.1 <= m.committed);
        check_all(&h, &m, u64::MAX >> 1);
    }
}

#[derive(Clone, Debug)]
enum Step {
    /// The writer appends `n` frames (as in `Op::Append`).
    Append {
        n: u32,
        pages: u32,
        seed: u64,
    },
    Commit,
    Truncate(u8),
    Reset,
    /// The writer lets go and the other handle takes the role (and trims what was never
    /// committed, as every new writer does).
    Switch,
    Find {
        page: u32,
        at: u8,
    },
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (1u32..300, prop_oneof![Just(5u32), Just(600), Just(u32::MAX)], any::<u64>())
            .prop_map(|(n, pages, seed)| Step::Append { n, pages, seed }),
        2 => (3_000u32..12_000, Just(3_000u32), any::<u64>())
            .prop_map(|(n, pages, seed)| Step::Append { n, pages, seed }),
        2 => Just(Step::Commit),
        1 => (0u8..=100).prop_map(Step::Truncate),
        2 => Just(Step::Reset),
        3 => Just(Step::Switch),
        3 => (0u32..700, 0u8..=100).prop_map(|(page, at)| Step::Find { page, at }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 24, .. ProptestConfig::default() })]

    /// Two handles take turns as the writer, each remembering where its own appends went,
    /// while the other moves the index on in between: appends into new blocks and directory
    /// nodes, rollbacks, resets, the trim of a new writer. A third handle's lookups must match
    /// the model throughout.
    #[test]
    fn alternating_writers_match_the_model(steps in proptest::collection::vec(step(), 1..40)) {
        let p = db("alternating.db");
        let hs = [
            Coordinator::open(&p, &Options::default()).unwrap(),
            Coordinator::open(&p, &Options::default()).unwrap(),
        ];
        let reader = Coordinator::open(&p, &Options::default()).unwrap();
        let mut w = 0;
        hs[w].acquire(Role::Writer, 0).unwrap();
        let mut m = Model::default();
        for st in steps {
            let h = &hs[w];
            match st {
                Step::Append { n, pages, mut seed } => {
                    seed |= 1;
                    for _ in 0..n {
                        let page = pick(&mut seed, pages);
                        m.tail += 1;
                        h.index_append(page, m.tail).unwrap();
                        m.live.push((page, m.tail));
                    }
                }
                Step::Commit => {
                    m.committed = m.tail;
                    commit(h, m.committed);
                }
                Step::Truncate(pct) => {
                    let to = m.committed + (m.tail - m.committed) * pct as u64 / 100;
                    m.live.retain(|e| e.1 <= to);
                    h.index_truncate(to).unwrap();
                    m.tail = to;
                }
                Step::Reset => {
                    h.index_reset().unwrap();
                    m = Model::default();
                    commit(h, 0);
                }
                Step::Switch => {
                    h.release(Role::Writer).unwrap();
                    w = 1 - w;
                    hs[w].acquire(Role::Writer, 0).unwrap();
                    m.live.retain(|e| e.1 <= m.committed);
                    m.tail = m.committed;
                }
                Step::Find { page, at } => {
                    let max = m.tail * at as u64 / 100;
                    prop_assert_eq!(reader.index_find(page, max).unwrap(), m.find(page, max));
                }
            }
            let st = reader.index_stats().unwrap();
            prop_assert_eq!(st.entries - st.dead, m.live.len() as u64);
            prop_assert_eq!(st.tail_frame, m.tail);
        }
        // every page the model knows, at the committed frame and at the tail
        check_all(&reader, &m, m.committed);
        check_all(&reader, &m, m.tail);
    }
}

#[test]
fn more_than_a_million_frames_stay_correct_and_flat() {
    let h = Coordinator::open(&db("million.db"), &Options::default()).unwrap();
    h.acquire(Role::Writer, 0).unwrap();
    let mut m = Model::default();
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    const N: u64 = 1_100_000;
    for frame in 1..=N {
        // a hot set and a long tail, as a real WAL sees
        let page = if frame % 4 == 0 {
            pick(&mut seed, 200_000)
        } else {
            pick(&mut seed, 2_000)
        };
        h.index_append(page, frame).unwrap();
        m.live.push((page, frame));
    }
    m.tail = N;
    commit(&h, N);
    let st = h.index_stats().unwrap();
    assert_eq!(st.entries, N);
    assert_eq!(st.blocks, N.div_ceil(4096));
    assert!(st.pool_bytes >= N * 16);
    let mut last: BTreeMap<u32, Vec<u64>> = BTreeMap::new();
    for (p, f) in &m.live {
        last.entry(*p).or_default().push(*f);
    }
    for probe in 0..20_000u32 {
        let page = pick(&mut seed, 210_000);
        let max = 1 + (probe as u64 * 7919) % N;
        let want = last
            .get(&page)
            .and_then(|v| v.iter().rev().find(|f| **f <= max).copied());
        assert_eq!(
            h.index_find(page, max).unwrap(),
            want,
            "page {page} at {max}"
        );
    }
    let mut n = 0;
    h.index_for_each(N, |p, f| {
        assert_eq!(last[&p].last(), Some(&f));
        n += 1;
        true
    })
    .unwrap();
    assert_eq!(n, last.len());
    // Reset reuses the space: a second million needs no new blocks.
    h.index_reset().unwrap();
    commit(&h, 0);
    for frame in 1..=N {
        h.index_append((frame % 5000) as u32, frame).unwrap();
    }
    assert_eq!(h.index_stats().unwrap().pool_bytes, st.pool_bytes);
    assert_eq!(h.index_find(1, N).unwrap(), Some(1_095_001));
}

#[test]
fn writer_only_operations_and_bad_frames_are_misuse() {
    let p = db("misuse.db");
    let h = Coordinator::open(&p, &Options::default()).unwrap();
    let other = Coordinator::open(&p, &Options::default()).unwrap();
    assert!(matches!(h.index_append(1, 1), Err(Error::Misuse(_))));
    assert!(matches!(h.index_reset(), Err(Error::Misuse(_))));
    assert!(matches!(h.index_truncate(0), Err(Error::Misuse(_))));
    h.acquire(Role::Writer, 0).unwrap();
    assert!(matches!(h.index_append(1, 0), Err(Error::Misuse(_))));
    h.index_append(1, 5).unwrap();
    assert!(matches!(h.index_append(2, 5), Err(Error::Misuse(_))));
    assert!(matches!(h.index_append(2, 1 << 63), Err(Error::Misuse(_))));
    h.index_append(2, 6).unwrap();
    commit(&h, 6);
    assert!(matches!(h.index_truncate(5), Err(Error::Misuse(_))));
    assert!(matches!(other.index_append(3, 7), Err(Error::Misuse(_))));
    assert_eq!(other.index_find(1, 6).unwrap(), Some(5));
    assert_eq!(other.index_find(1, 4).unwrap(), None);
    assert_eq!(other.index_find(3, 6).unwrap(), None);
}

#[test]
fn limit_option_gives_full_and_the_index_stays_usable() {
    let o = Options {
        index_limit: 5000,
        ..Options::default()
    };
    let h = Coordinator::open(&db("limit.db"), &o).unwrap();
    h.acquire(Role::Writer, 0).unwrap();
    for f in 1..=5000 {
        h.index_append(f as u32 % 7, f).unwrap();
    }
    assert!(matches!(h.index_append(1, 5001), Err(Error::Full(_))));
    assert_eq!(h.index_find(3, 5000).unwrap(), Some(4994));
    h.index_reset().unwrap();
    h.index_append(3, 1).unwrap();
    assert_eq!(h.index_find(3, 1).unwrap(), Some(1));
}
