//! Fuzz target `sidecar`: arbitrary sidecar bytes, opened alone (the opener validates or
//! re-initializes) and joined (another process holds the sidecar open, so the opener must
//! validate and refuse what it cannot trust), then used.
//!
//! Once per fuzzing process a child process is forked that opens a real sidecar and builds a
//! session on it: a frame index of two entry blocks with committed, rolled-back and uncommitted
//! entries, engine regions, SHARED and EXCLUSIVE engine locks, reader slots in use, the
//! checkpointer role, a read-only handle. It keeps those handles open for the whole run (it exits
//! when the fuzzer's end of a pipe closes). A copy of that file is the template each input
//! starts from: the input picks structure-aware mutations (header words, index counters,
//! directory and block tables, pool words, reader slots, instance records, region table, engine
//! lock owners, file length, raw bytes), the result is written over the child's sidecar (joined)
//! or a sidecar nobody holds (alone), opened, and driven through the C API and the inspector
//! while further mutations land in the file under the open handle.
#![no_main]

use ::tshm::coordinator::{Coordinator, Options};
use ::tshm::error::*;
use ::tshm::ffi::handle::tshm;
use ::tshm::ffi::*;
use ::tshm::{tshm_index_stats, tshm_info, tshm_owner_info, tshm_snapshot, Role};
use libfuzzer_sys::fuzz_target;
use std::ffi::{c_int, c_void, CString};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::ptr::null_mut;
use std::sync::OnceLock;
use tshm_fuzz::{check, Input};

// Offsets from src/layout.rs (its constants are crate-private; these must follow it).
const HDR_U32: [usize; 15] = [
    0, 4, 8, 12, 16, 20, 24, 28, 72, 192, 196, 200, 204, 624, 632,
];
const HDR_U64: [usize; 27] = [
    32, 40, 48, 56, 64, 80, 88, 128, 136, 144, 152, 160, 256, 512, 520, 528, 536, 544, 552, 576,
    584, 592, 600, 608, 616, 264, 336,
];
const H_SNAP_COPY: [usize; 2] = [264, 336];
const H_REGIONS: usize = 1024;
const H_ENGINE_OWNERS: usize = 3072;
const H_GEOM_SUM: usize = 56;
const UNIT: u64 = 65536;
/// Bytes an input may add to the file (sparse growth could otherwise fake huge counters).
const MAX_GROWTH: u64 = 4 << 20;

struct World {
    template: Vec<u8>,
    joined_db: CString,
    joined_sidecar: PathBuf,
    alone_db: CString,
    alone_sidecar: PathBuf,
    alone_path: PathBuf,
    joined_path: PathBuf,
    /// The write end of the pipe the child waits on; never closed (the child exits when this
    /// process does).
    _keep: c_int,
}

/// The session the child builds and holds.
fn child_session(db: &std::path::Path) -> Vec<Coordinator> {
    let a = Coordinator::open(db, &Options::default()).expect("child open");
    a.acquire(Role::Writer, 0).expect("writer");
    let mut f = 0u64;
    for i in 0..4300u32 {
        f += 1;
        let page = match i % 10 {
            7 => 1 << 20 | i,
            9 => u32::MAX - (i % 50),
            _ => i % 300,
        };
        a.index_append(page, f).expect("append");
    }
    let commit = |c: &Coordinator, max_frame: u64| {
        let s = tshm_snapshot {
            max_frame,
            page_size: 4096,
            db_size: 300,
            salt: [0x1234, 0x5678],
            ..Default::default()
        };
        c.publish(&s, ::tshm::snapshot::TSHM_SNAP_ALL)
            .expect("publish");
    };
    commit(&a, 3800);
    a.index_truncate(4000).expect("rollback");
    for i in 0..150u32 {
        f = 4001 + i as u64;
        a.index_append(i % 40, f).expect("append after rollback");
    }
    a.release(Role::Writer).expect("release writer"); // leaves uncommitted entries, like a crash
    a.acquire(Role::Checkpointer, 0).expect("checkpointer");
    let b = Coordinator::open(db, &Options::default()).expect("second handle");
    let ro = Coordinator::open(
        db,
        &Options {
            readonly: true,
            ..Default::default()
        },
    )
    .expect("read-only handle");
    for (i, c) in [&a, &b].into_iter().enumerate() {
        for r in [0u32, 3, 7] {
            c.region(r + i as u32, 4096, true).expect("region");
        }
    }
    let _ = a.reader_begin().expect("reader");
    let _ = a.reader_begin().expect("reader");
    let _ = b.reader_begin().expect("reader");
    assert!(a
        .engine_lock(0, 4, ::tshm::engine::TSHM_LOCK_SHARED)
        .unwrap());
    assert!(a
        .engine_lock(8, 2, ::tshm::engine::TSHM_LOCK_EXCLUSIVE)
        .unwrap());
    assert!(b
        .engine_lock(2, 3, ::tshm::engine::TSHM_LOCK_SHARED)
        .unwrap());
    assert!(ro
        .engine_lock(20, 2, ::tshm::engine::TSHM_LOCK_SHARED)
        .unwrap());
    vec![a, b, ro]
}

fn world() -> &'static World {
    static W: OnceLock<World> = OnceLock::new();
    W.get_or_init(|| {
        let d = tshm_fuzz::scratch_dir("sidecar");
        let joined = d.join("joined.db");
        let alone = d.join("alone.db");
        for p in [&joined, &alone] {
            std::fs::write(p, b"").expect("database file");
        }
        let mut ready = [0 as c_int; 2];
        let mut hold = [0 as c_int; 2];
        unsafe {
            assert_eq!(libc::pipe(ready.as_mut_ptr()), 0);
            assert_eq!(libc::pipe(hold.as_mut_ptr()), 0);
        }
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0, "fork");
        if pid == 0 {
            unsafe {
                libc::close(ready[0]);
                libc::close(hold[1]);
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            }
            let handles = child_session(&joined);
            let b = 1u8;
            unsafe {
                libc::write(ready[1], &b as *const u8 as *const c_void, 1);
                let mut x = 0u8;
                // blocks until the fuzzer exits (EOF)
                while libc::read(hold[0], &mut x as *mut u8 as *mut c_void, 1) != 0 {}
            }
            std::mem::forget(handles);
            unsafe { libc::_exit(0) };
        }
        unsafe {
            libc::close(ready[1]);
            libc::close(hold[0]);
            let mut x = 0u8;
            assert_eq!(
                libc::read(ready[0], &mut x as *mut u8 as *mut c_void, 1),
                1,
                "the child built its session"
            );
            libc::close(ready[0]);
        }
        let joined_sidecar = ::tshm::region::sidecar_path(&joined);
        let template = std::fs::read(&joined_sidecar).expect("template");
        World {
            template,
            joined_db: tshm_fuzz::cpath(&joined),
            alone_db: tshm_fuzz::cpath(&alone),
            alone_sidecar: ::tshm::region::sidecar_path(&alone),
            joined_sidecar,
            alone_path: alone,
            joined_path: joined,
            _keep: hold[1],
        }
    })
}

fn rd32(b: &[u8], off: usize) -> u32 {
    b.get(off..off + 4)
        .map_or(0, |s| u32::from_ne_bytes(s.try_into().unwrap()))
}
fn rd64(b: &[u8], off: usize) -> u64 {
    b.get(off..off + 8)
        .map_or(0, |s| u64::from_ne_bytes(s.try_into().unwrap()))
}

/// A mutation: (offset, bytes) to write, or a new file length.
enum Patch {
    At(usize, Vec<u8>),
    Len(u64),
}

/// The template's fixed shape (the template is valid, so these are its true offsets).
struct Shape {
    readers: u64,
    readers_off: u64,
    instances: u64,
    instances_off: u64,
    base_len: u64,
}

fn shape(t: &[u8]) -> Shape {
    Shape {
        readers: rd32(t, 16) as u64,
        instances: rd32(t, 24) as u64,
        readers_off: rd64(t, 32),
        instances_off: rd64(t, 40),
        base_len: rd64(t, 48),
    }
}

/// One structure-aware mutation of `cur` (the file's bytes now), chosen by the input.
fn mutation(inp: &mut Input, cur: &[u8], s: &Shape, allow_len: bool) -> Patch {
    let word = |inp: &mut Input, off: usize, wide: bool| -> Patch {
        if wide {
            let v = inp.interesting(rd64(cur, off));
            Patch::At(off, v.to_ne_bytes().to_vec())
        } else {
            let v = inp.interesting(rd32(cur, off) as u64) as u32;
            Patch::At(off, v.to_ne_bytes().to_vec())
        }
    };
    let pool_units = (cur.len() as u64).saturating_sub(s.base_len) / UNIT;
    match inp.u8() % 16 {
        0 => {
            let off = HDR_U32[inp.u8() as usize % HDR_U32.len()];
            word(inp, off, false)
        }
        1 => {
            let off = HDR_U64[inp.u8() as usize % HDR_U64.len()];
            word(inp, off, true)
        }
        2 => {
            // index counters (512..624) and snapshot words
            let off = if inp.bool() {
                512 + (inp.u8() as usize % 14) * 8
            } else {
                H_SNAP_COPY[inp.u8() as usize % 2] + (inp.u8() as usize % 9) * 8
            };
            word(inp, off, true)
        }
        3 => {
            // directory top table
            let off = (s.base_len - 8192 * 4 - 1024 * 4) as usize + (inp.u16() as usize % 8192) * 4;
            word(inp, off, false)
        }
        4 => {
            let off = (s.base_len - 1024 * 4) as usize + (inp.u16() as usize % 1024) * 4;
            word(inp, off, false)
        }
        5 | 6 => {
            // a pool word: entry (page|prev, frame) or node page word
            if pool_units == 0 {
                return Patch::At(0, vec![]);
            }
            let unit = inp.u8() as u64 % pool_units;
            let wide = inp.bool();
            let within = if wide {
                (inp.u16() as u64 % (UNIT / 8)) * 8
            } else {
                (inp.u16() as u64 % (UNIT / 4)) * 4
            };
            word(inp, (s.base_len + unit * UNIT + within) as usize, wide)
        }
        7 => {
            let i = inp.u8() as u64 % s.readers;
            let off = (s.readers_off + i * 16 + (inp.u8() as u64 % 2) * 8) as usize;
            word(inp, off, true)
        }
        8 => {
            let i = inp.u16() as u64 % s.instances.min(8);
            let off = (s.instances_off + i * 64 + (inp.u8() as u64 % 4) * 8) as usize;
            word(inp, off, true)
        }
        9 => {
            let off = H_REGIONS + (inp.u16() as usize % 512) * 4;
            word(inp, off, false)
        }
        10 => {
            let off = H_ENGINE_OWNERS + (inp.u8() as usize % 32) * 8;
            word(inp, off, true)
        }
        11 if allow_len => {
            let len = cur.len() as u64;
            let l = match inp.u8() % 6 {
                0 => inp.u16() as u64,
                1 => len.saturating_sub(UNIT * (inp.u8() as u64 % 8 + 1)),
                2 => len + UNIT * (inp.u8() as u64 % 8 + 1),
                3 => s.base_len.saturating_sub(inp.u8() as u64),
                4 => len.saturating_sub(inp.u16() as u64),
                _ => len + inp.u16() as u64,
            };
            Patch::Len(l.min(cur.len() as u64 + MAX_GROWTH))
        }
        12 => {
            // copy a word from one structured place to another (spreads valid tags, pointers)
            let places = [
                s.readers_off as usize,
                s.instances_off as usize,
                s.instances_off as usize + 16,
                128,
                144,
                160,
                H_ENGINE_OWNERS + 8 * 8,
                H_REGIONS,
                512,
                576,
            ];
            let from = places[inp.u8() as usize % places.len()] + (inp.u8() as usize % 4) * 8;
            let to = places[inp.u8() as usize % places.len()] + (inp.u8() as usize % 4) * 8;
            Patch::At(to, rd64(cur, from).to_ne_bytes().to_vec())
        }
        13 => {
            // recompute the geometry checksum (so geometry mutations reach validation)
            let sum = ::tshm::layout::geometry_sum(&cur[..H_GEOM_SUM.min(cur.len())]);
            Patch::At(H_GEOM_SUM, sum.to_ne_bytes().to_vec())
        }
        _ => {
            let len = cur.len().max(1);
            let off = match inp.u8() % 3 {
                0 => inp.u16() as usize % 4096,
                1 => inp.u32() as usize % len,
                _ => s.base_len as usize + inp.u32() as usize % len,
            };
            Patch::At(off, inp.bytes(16).to_vec())
        }
    }
}

fn apply(buf: &mut Vec<u8>, p: &Patch) {
    match p {
        Patch::At(off, b) => {
            if *off < buf.len() {
                let n = b.len().min(buf.len() - off);
                buf[*off..off + n].copy_from_slice(&b[..n]);
            }
        }
        Patch::Len(l) => buf.resize(*l as usize, 0),
    }
}

fn fix_sum(buf: &mut [u8]) {
    if buf.len() >= 64 {
        let sum = ::tshm::layout::geometry_sum(&buf[..H_GEOM_SUM]);
        buf[H_GEOM_SUM..H_GEOM_SUM + 8].copy_from_slice(&sum.to_ne_bytes());
    }
}

/// Writes the file in place (same inode: the child's locks stay on it).
fn write_file(path: &std::path::Path, bytes: &[u8]) {
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)
        .expect("sidecar");
    f.write_all_at(bytes, 0).expect("write sidecar");
    f.set_len(bytes.len() as u64).expect("sidecar length");
}

unsafe extern "C" fn count_cb(ctx: *mut c_void, _page: u32, _frame: u64) -> c_int {
    let n = unsafe { &mut *(ctx as *mut (u64, u64)) };
    n.0 += 1;
    (n.1 != 0 && n.0 >= n.1) as c_int
}

fn inspect(path: &std::path::Path, full: bool) {
    // the inspector (what `tshm` runs): any result but a panic
    match ::tshm::inspect::observe(path) {
        Ok(r) => {
            let _ = r.idle_problems();
        }
        Err(e) => {
            check("observe", e.code());
        }
    };
    if !full {
        return;
    }
    if let Err(e) = ::tshm::inspect::check(path) {
        check("inspect check", e.code());
    }
}

struct Session {
    handles: Vec<(*mut tshm, bool)>,
    readers: Vec<(usize, u32)>,
}

fn open(db: &CString, flags: u32) -> (i32, *mut tshm) {
    let mut o = tshm_options {
        size: 0,
        flags: 0,
        reader_slots: 0,
        reader_strategy: 0,
        on_last_close: None,
        ctx: null_mut(),
        index_limit: 0,
        instance_slots: 0,
        role_strategy: 0,
    };
    unsafe { tshm_options_init(&mut o) };
    o.flags = flags;
    let mut h = null_mut();
    let rc = check("open", unsafe { tshm_open(db.as_ptr(), &o, &mut h) });
    (rc, h)
}

fn run(data: &[u8]) {
    let w = world();
    let mut inp = Input::new(data);
    let mode = inp.u8();
    let joined = mode % 4 != 0;
    let mut flags = 0;
    if mode & 4 != 0 {
        flags |= TSHM_OPEN_READONLY;
    } else if mode & 8 != 0 && mode & 0x40 != 0 {
        flags |= TSHM_OPEN_EXCLUSIVE;
    }
    if mode & 16 != 0 {
        flags |= TSHM_OPEN_POSIX_LOCKS;
    }
    let (db, sidecar, path) = if joined {
        (&w.joined_db, &w.joined_sidecar, &w.joined_path)
    } else {
        (&w.alone_db, &w.alone_sidecar, &w.alone_path)
    };
    let s = shape(&w.template);
    let mut bytes = w.template.clone();
    // mostly a few mutations (so the calls after the open run), sometimes many
    let n = match inp.u8() {
        b if b < 160 => b % 3,
        b => b % 24,
    };
    for _ in 0..n {
        let p = mutation(&mut inp, &bytes, &s, true);
        apply(&mut bytes, &p);
    }
    if mode & 32 == 0 {
        fix_sum(&mut bytes);
    }
    write_file(sidecar, &bytes);
    let pre = inp.u8();
    if pre % 8 == 0 {
        inspect(path, pre % 32 == 0);
    }
    let (rc, h) = open(db, flags);
    if rc != TSHM_OK {
        inspect(path, pre % 4 == 1);
        return;
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(sidecar)
        .expect("sidecar");
    let mut ses = Session {
        handles: vec![(h, flags & TSHM_OPEN_READONLY != 0)],
        readers: Vec::new(),
    };
    let mut ops = 0;
    while !inp.is_empty() && ops < 48 {
        ops += 1;
        let code = inp.u8();
        let hi = inp.u8() as usize % ses.handles.len();
        let (h, ro) = ses.handles[hi];
        let mut snap = tshm_snapshot::default();
        let rc = unsafe {
            match code % 24 {
                0 => {
                    let mut i = tshm_info::default();
                    tshm_info_get(h, &mut i)
                }
                1 => tshm_snapshot_get(h, &mut snap),
                2 => {
                    let mut slot = 0;
                    let rc = tshm_reader_begin(h, &mut slot, &mut snap);
                    if rc == TSHM_OK {
                        ses.readers.push((hi, slot));
                    }
                    rc
                }
                3 => {
                    let slot = if !ses.readers.is_empty() && inp.bool() {
                        let k = inp.u8() as usize % ses.readers.len();
                        let (owner, slot) = ses.readers.swap_remove(k);
                        tshm_reader_end(ses.handles[owner].0, slot)
                    } else {
                        tshm_reader_end(h, inp.u8() as u32)
                    };
                    slot
                }
                4 => {
                    let mut f = 0;
                    tshm_min_reader_frame(h, &mut f)
                }
                5 => {
                    let mut o = tshm_owner_info::default();
                    let role = match inp.u8() % 4 {
                        0 => inp.u32(),
                        _ => inp.u8() as u32 % 140,
                    };
                    tshm_owner(h, role, &mut o)
                }
                6 | 7 => {
                    let page = match inp.u8() % 4 {
                        0 => inp.u32(),
                        1 => 1 << 20 | inp.u16() as u32,
                        2 => u32::MAX - inp.u8() as u32,
                        _ => inp.u16() as u32 % 320,
                    };
                    let mut f = 0;
                    let rc = tshm_index_find(h, page, inp.interesting(3800), &mut f);
                    if rc == TSHM_NOTFOUND {
                        TSHM_OK
                    } else {
                        rc
                    }
                }
                8 => {
                    let mut ctx = (0u64, inp.u16() as u64);
                    tshm_index_foreach(
                        h,
                        inp.interesting(3800),
                        Some(count_cb),
                        &mut ctx as *mut _ as *mut c_void,
                    )
                }
                9 => {
                    let mut st = tshm_index_stats::default();
                    tshm_index_stats_get(h, &mut st)
                }
                10 => tshm_writer_acquire(h, 0),
                11 => tshm_writer_release(h),
                12 | 13 => {
                    let mut st = tshm_index_stats::default();
                    tshm_index_stats_get(h, &mut st);
                    let mut rc = TSHM_OK;
                    for k in 0..(inp.u8() as u64 % 64 + 1) {
                        let f = st.tail_frame.wrapping_add(k + 1);
                        rc = tshm_index_append(h, inp.u16() as u32 % 400, f);
                        check("append", rc);
                        if rc != TSHM_OK {
                            break;
                        }
                    }
                    rc
                }
                14 => {
                    tshm_snapshot_get(h, &mut snap);
                    tshm_index_truncate(h, inp.interesting(snap.max_frame))
                }
                15 => tshm_index_reset(h),
                16 => {
                    let mut st = tshm_index_stats::default();
                    tshm_index_stats_get(h, &mut st);
                    let s = tshm_snapshot {
                        max_frame: inp.interesting(st.tail_frame),
                        nbackfills: inp.interesting(0),
                        ..Default::default()
                    };
                    tshm_publish(h, &s, inp.u16() as u32 & ::tshm::snapshot::TSHM_SNAP_ALL)
                }
                17 => {
                    if inp.bool() {
                        tshm_checkpointer_acquire(h, 0)
                    } else {
                        tshm_checkpointer_release(h)
                    }
                }
                18 => {
                    let idx = inp.u16() as u32 % 520;
                    let size = if inp.u8() % 4 == 0 {
                        (inp.u16() as usize) & !7
                    } else {
                        4096
                    };
                    let mut p: *mut c_void = null_mut();
                    let rc = tshm_region(h, idx, size, inp.bool() as c_int, &mut p);
                    if rc == TSHM_OK && !p.is_null() {
                        let w0 = &*(p as *const std::sync::atomic::AtomicU64);
                        let v = w0.load(std::sync::atomic::Ordering::Relaxed);
                        if !ro {
                            w0.store(v.wrapping_add(1), std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                    rc
                }
                19 => {
                    let slot = inp.u8() as u32 % 34;
                    let n = inp.u8() as u32 % 4 + 1;
                    let flags = [1, 2, 5, 6, 3, 0][inp.u8() as usize % 6];
                    let rc = tshm_lock(h, slot, n, flags);
                    if rc == TSHM_BUSY {
                        TSHM_OK
                    } else {
                        rc
                    }
                }
                20 => {
                    inspect(path, inp.u8() % 4 == 0);
                    TSHM_OK
                }
                21 | 22 => {
                    // bytes change under the open handle (never shorter: outside the contract)
                    let mut cur = vec![0u8; bytes.len()];
                    let len = file.metadata().map(|m| m.len()).unwrap_or(0) as usize;
                    cur.resize(len, 0);
                    let _ = file.read_at(&mut cur, 0);
                    if let Patch::At(off, b) = mutation(&mut inp, &cur, &s, false) {
                        if off < len {
                            let n = b.len().min(len - off);
                            let _ = file.write_at(&b[..n], off as u64);
                        }
                    }
                    TSHM_OK
                }
                _ => {
                    if ses.handles.len() < 3 && inp.bool() {
                        let f = if inp.bool() {
                            TSHM_OPEN_READONLY
                        } else {
                            flags & !TSHM_OPEN_READONLY
                        };
                        let (rc, h2) = open(db, f);
                        if rc == TSHM_OK {
                            ses.handles.push((h2, f & TSHM_OPEN_READONLY != 0));
                        }
                        rc
                    } else if ses.handles.len() > 1 {
                        let (h2, _) = ses.handles.remove(hi);
                        ses.readers.retain(|r| r.0 != hi);
                        for r in ses.readers.iter_mut() {
                            if r.0 > hi {
                                r.0 -= 1;
                            }
                        }
                        tshm_close(h2, null_mut())
                    } else {
                        TSHM_OK
                    }
                }
            }
        };
        check(&format!("op {}", code % 24), rc);
    }
    for (h, _) in ses.handles.drain(..).rev() {
        check("close", unsafe { tshm_close(h, null_mut()) });
    }
    let post = inp.u8();
    if post % 4 == 1 {
        inspect(path, post % 16 == 1);
    }
}

fuzz_target!(|data: &[u8]| run(data));
