//! Fuzz target `index`: sequences of frame-index operations (append, find, truncate, reset,
//! for-each, stats, publish, writer hand-over) through the safe API, each result checked
//! against an in-memory model of what the index must answer.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::OnceLock;
use tshm::{tshm_snapshot, Coordinator, Error, Options, Role};
use tshm_fuzz::Input;

/// Most frames one input may append (keeps each input's work bounded).
const MAX_APPENDS: usize = 20_000;
const DEAD_BIT: u64 = 1 << 63;

struct Model {
    /// (page, frame, live) in slot order since the last reset.
    entries: Vec<(u32, u64, bool)>,
    tail: u64,
    dead: u64,
    committed: u64,
    limit: u64,
    generation: u64,
}

impl Model {
    fn find(&self, page: u32, max: u64) -> Option<u64> {
        self.entries
            .iter()
            .rev()
            .find(|(p, f, live)| *live && *p == page && *f <= max)
            .map(|e| e.1)
    }

    fn newest(&self, max: u64) -> Vec<(u32, u64)> {
        let mut m = BTreeMap::new();
        for (p, f, live) in &self.entries {
            if *live && *f <= max {
                m.insert(*p, *f);
            }
        }
        m.into_iter().collect()
    }

    fn pages(&self) -> Vec<u32> {
        let mut v: Vec<u32> = self.entries.iter().map(|e| e.0).collect();
        v.sort_unstable();
        v.dedup();
        v
    }
}

fn db() -> &'static PathBuf {
    static DB: OnceLock<PathBuf> = OnceLock::new();
    DB.get_or_init(|| {
        let d = tshm_fuzz::scratch_dir("index");
        let db = d.join("ix.db");
        std::fs::write(&db, b"").expect("database file");
        db
    })
}

fn page(inp: &mut Input, m: &Model) -> u32 {
    match inp.u8() % 6 {
        0 => inp.u8() as u32,
        1 => inp.u16() as u32,
        2 => inp.u32(),
        3 => {
            let p = m.pages();
            if p.is_empty() {
                0
            } else {
                p[inp.u16() as usize % p.len()]
            }
        }
        4 => (inp.u8() as u32) << 19 | inp.u8() as u32, // spreads over directory top words
        _ => u32::MAX - (inp.u8() as u32),
    }
}

fn frame_near(inp: &mut Input, m: &Model) -> u64 {
    match inp.u8() % 5 {
        0 => m.tail,
        1 => m.committed,
        2 => {
            if m.entries.is_empty() {
                0
            } else {
                m.entries[inp.u16() as usize % m.entries.len()].1
            }
        }
        3 => inp.interesting(m.tail),
        _ => m.tail.saturating_sub(inp.u8() as u64),
    }
}

fn publish(c: &Coordinator, m: &mut Model, max_frame: u64) {
    let snap = tshm_snapshot {
        max_frame,
        ..Default::default()
    };
    c.publish(&snap, tshm::snapshot::TSHM_SNAP_MAX_FRAME)
        .expect("publish with the writer role");
    m.committed = max_frame;
}

fn run(data: &[u8]) {
    let mut inp = Input::new(data);
    let db = db();
    let _ = std::fs::remove_file(tshm::region::sidecar_path(db));
    let limit = match inp.u8() % 4 {
        0 => inp.u16() as u64 + 1,
        _ => 0,
    };
    let opts = Options {
        index_limit: limit,
        ..Default::default()
    };
    let c = Coordinator::open(db, &opts).expect("open a fresh sidecar");
    c.acquire(Role::Writer, 0)
        .expect("writer role of a fresh sidecar");
    let st = c.index_stats().unwrap();
    let mut m = Model {
        entries: Vec::new(),
        tail: 0,
        dead: 0,
        committed: 0,
        limit,
        generation: st.generation,
    };
    let mut appended = 0usize;
    let mut ops = 0;
    while !inp.is_empty() && ops < 256 {
        ops += 1;
        match inp.u8() % 12 {
            // one append, any frame (misuse included)
            0 => {
                let p = page(&mut inp, &m);
                let f = match inp.u8() % 3 {
                    0 => m.tail + 1 + inp.u8() as u64,
                    1 => frame_near(&mut inp, &m),
                    _ => inp.interesting(m.tail),
                };
                let r = c.index_append(p, f);
                let want_misuse = f == 0 || f >= DEAD_BIT || f <= m.tail;
                let want_full = !want_misuse && m.limit != 0 && m.entries.len() as u64 >= m.limit;
                match r {
                    Ok(()) => {
                        assert!(!want_misuse && !want_full, "append({p}, {f}) accepted");
                        m.entries.push((p, f, true));
                        m.tail = f;
                        appended += 1;
                    }
                    Err(Error::Misuse(_)) => assert!(want_misuse, "append({p}, {f}): {r:?}"),
                    Err(Error::Full(_)) => assert!(want_full, "append({p}, {f}): {r:?}"),
                    Err(e) => panic!("append({p}, {f}): {e:?}"),
                }
            }
            // a batch of valid appends over a few pages (crosses entry blocks)
            1 => {
                let n = (inp.u16() as usize % 6000).min(MAX_APPENDS.saturating_sub(appended));
                let npages = inp.u8() as u32 % 64 + 1;
                let base = page(&mut inp, &m);
                let step = inp.u8() as u64 % 4 + 1;
                for i in 0..n {
                    let p = base.wrapping_add((i as u32).wrapping_mul(7) % npages);
                    let f = m.tail + step;
                    if f >= DEAD_BIT {
                        // past the largest frame: refused, the index unchanged
                        let r = c.index_append(p, f);
                        assert!(
                            matches!(r, Err(Error::Misuse(_))),
                            "append({p}, {f}): {r:?}"
                        );
                        break;
                    }
                    match c.index_append(p, f) {
                        Ok(()) => {
                            assert!(m.limit == 0 || (m.entries.len() as u64) < m.limit);
                            m.entries.push((p, f, true));
                            m.tail = f;
                            appended += 1;
                        }
                        Err(Error::Full(_)) => {
                            assert!(m.limit != 0 && m.entries.len() as u64 >= m.limit);
                            break;
                        }
                        Err(e) => panic!("batch append({p}, {f}): {e:?}"),
                    }
                }
            }
            2 | 3 => {
                let p = page(&mut inp, &m);
                let max = frame_near(&mut inp, &m);
                let got = c.index_find(p, max).expect("find");
                assert_eq!(got, m.find(p, max), "find({p}, {max})");
            }
            4 => {
                let max = frame_near(&mut inp, &m);
                let r = c.index_truncate(max);
                if max < m.committed {
                    assert!(matches!(r, Err(Error::Misuse(_))), "truncate({max}): {r:?}");
                } else {
                    let n = r.expect("truncate");
                    let mut dropped = 0;
                    if m.tail > max {
                        for e in m.entries.iter_mut().filter(|e| e.2 && e.1 > max) {
                            e.2 = false;
                            dropped += 1;
                        }
                        m.tail = max;
                        m.dead += dropped;
                    }
                    assert_eq!(n, dropped, "truncate({max}) dropped");
                }
            }
            5 => {
                // commit: the tail, or a frame between the committed one and the tail
                let f = if m.tail > m.committed && inp.bool() {
                    m.committed + inp.u64() % (m.tail - m.committed + 1)
                } else {
                    m.tail
                };
                let f = f.max(m.committed);
                publish(&c, &mut m, f);
            }
            6 => {
                c.index_reset().expect("reset");
                m.entries.clear();
                m.tail = 0;
                m.dead = 0;
                m.generation += 1;
                if inp.bool() {
                    publish(&c, &mut m, 0); // the WAL restarted
                }
            }
            7 => {
                let max = frame_near(&mut inp, &m);
                let stop = inp.u16() as usize;
                let mut got = Vec::new();
                c.index_for_each(max, |p, f| {
                    got.push((p, f));
                    got.len() < stop || stop == 0
                })
                .expect("for_each");
                let mut want = m.newest(max);
                if stop != 0 {
                    want.truncate(stop);
                }
                assert_eq!(got, want, "for_each({max}, stop {stop})");
            }
            8 => {
                let s = c.index_stats().expect("stats");
                assert_eq!(s.entries, m.entries.len() as u64, "stats.entries");
                assert_eq!(s.dead, m.dead, "stats.dead");
                assert_eq!(s.tail_frame, m.tail, "stats.tail_frame");
                assert_eq!(s.generation, m.generation, "stats.generation");
                assert!(s.dead <= s.entries);
            }
            9 => {
                // hand the writer role over: the new writer trims to the committed frame
                c.release(Role::Writer).expect("release");
                c.acquire(Role::Writer, 0).expect("re-acquire");
                if m.tail > m.committed {
                    let max = m.committed;
                    for e in m.entries.iter_mut().filter(|e| e.2 && e.1 > max) {
                        e.2 = false;
                        m.dead += 1;
                    }
                    m.tail = max;
                }
            }
            10 => {
                // every page of the model, at the committed frame and at the tail
                for p in m.pages().into_iter().take(256) {
                    for max in [m.committed, m.tail, u64::MAX] {
                        assert_eq!(
                            c.index_find(p, max).unwrap(),
                            m.find(p, max),
                            "find({p}, {max})"
                        );
                    }
                }
            }
            _ => {
                // a lookup from a read-only handle of the same process
                let ro = Coordinator::open(
                    db,
                    &Options {
                        readonly: true,
                        ..Default::default()
                    },
                )
                .expect("read-only open");
                let p = page(&mut inp, &m);
                let max = frame_near(&mut inp, &m);
                assert_eq!(ro.index_find(p, max).unwrap(), m.find(p, max));
                assert!(matches!(
                    ro.index_append(p, m.tail + 1),
                    Err(Error::ReadOnly(_))
                ));
                ro.close(|_| {}).expect("close read-only");
            }
        }
    }
    let was_last = c.close(|_| {}).expect("close");
    assert!(was_last);
}

fuzz_target!(|data: &[u8]| run(data));
