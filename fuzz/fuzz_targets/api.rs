//! Fuzz target `api`: random C-API call sequences over up to three handles of one process,
//! misuse included (NULL arguments, closed handles, wrong roles, releases of what is not held,
//! absurd sizes, bad paths, read-only handles writing). Every result is checked against a
//! model of what `include/tshm.h` documents for the call.
#![no_main]

use ::tshm::error::*;
use ::tshm::ffi::handle::tshm;
use ::tshm::ffi::*;
use ::tshm::{tshm_index_stats, tshm_info, tshm_owner_info, tshm_snapshot};
use libfuzzer_sys::fuzz_target;
use std::ffi::{c_int, c_void, CString};
use std::path::PathBuf;
use std::ptr::{null, null_mut};
use std::sync::OnceLock;
use tshm_fuzz::{check, expect, Input};

const SLOTS: usize = 3;
const LOCKS: usize = 32;
const NO_FRAME: u64 = u64::MAX;
const DEAD_BIT: u64 = 1 << 63;
const SNAP_ALL: u32 = ::tshm::snapshot::TSHM_SNAP_ALL;
const LOCK_S: u32 = ::tshm::engine::TSHM_LOCK_SHARED;
const LOCK_X: u32 = ::tshm::engine::TSHM_LOCK_EXCLUSIVE;
const LOCK_U: u32 = ::tshm::engine::TSHM_LOCK_UNLOCK;

struct Paths {
    db: CString,
    sidecar: PathBuf,
    dir_as_db: CString,
    trailing: CString,
    dot: CString,
}

fn paths() -> &'static Paths {
    static P: OnceLock<Paths> = OnceLock::new();
    P.get_or_init(|| {
        let d = tshm_fuzz::scratch_dir("api");
        let db = d.join("api.db");
        std::fs::write(&db, b"").expect("database file");
        std::fs::create_dir_all(d.join("adir")).expect("directory");
        Paths {
            db: tshm_fuzz::cpath(&db),
            sidecar: ::tshm::region::sidecar_path(&db),
            dir_as_db: tshm_fuzz::cpath(&d.join("adir")),
            trailing: tshm_fuzz::cpath(&d.join("api.db/")),
            dot: tshm_fuzz::cpath(&d.join(".")),
        }
    })
}

struct H {
    ptr: *mut tshm,
    ro: bool,
    limit: u64,
    /// (slot, pinned frame, snapshot sequence)
    readers: Vec<(u32, u64, u64)>,
    /// the slot a CAS handle keeps from its first read transaction until it closes
    kept: Option<u32>,
    locks: [u8; LOCKS],
}

struct Model {
    h: [Option<H>; SLOTS],
    closed: Vec<*mut tshm>,
    node_excl: bool,
    exists: bool,
    /// reader slots of the sidecar (fixed when it is created)
    readers: u32,
    /// the sidecar's reader strategy
    strategy: u32,
    writer: Option<usize>,
    ckpt: Option<usize>,
    entries: Vec<(u32, u64, bool)>,
    tail: u64,
    dead: u64,
    snap: tshm_snapshot,
    region_size: u64,
    /// region index -> the marker this model last wrote into it
    regions: std::collections::BTreeMap<u32, u64>,
}

impl Model {
    fn open_count(&self) -> usize {
        self.h.iter().flatten().count()
    }

    fn find(&self, page: u32, max: u64) -> Option<u64> {
        self.entries
            .iter()
            .rev()
            .find(|(p, f, live)| *live && *p == page && *f <= max)
            .map(|e| e.1)
    }

    fn drop_above(&mut self, max: u64) {
        if self.tail > max {
            for e in self.entries.iter_mut().filter(|e| e.2 && e.1 > max) {
                e.2 = false;
                self.dead += 1;
            }
            self.tail = max;
        }
    }

    fn reader_held(&self, slot: u32) -> Option<u64> {
        self.h
            .iter()
            .flatten()
            .flat_map(|h| h.readers.iter())
            .filter(|r| r.0 == slot)
            .map(|r| r.1)
            .min()
    }

    /// Whether a handle keeps `slot` (held, alive, pinned or not).
    fn kept(&self, slot: u32) -> bool {
        self.h.iter().flatten().any(|h| h.kept == Some(slot))
    }

    /// Slots held now: pinned by a transaction or kept by a handle.
    fn used(&self) -> usize {
        let mut all: Vec<u32> = self
            .h
            .iter()
            .flatten()
            .flat_map(|h| h.readers.iter().map(|r| r.0).chain(h.kept))
            .collect();
        all.sort_unstable();
        all.dedup();
        all.len()
    }
}

fn snapshot_of(h: *const tshm) -> tshm_snapshot {
    let mut s = tshm_snapshot::default();
    expect(
        "snapshot_get",
        unsafe { tshm_snapshot_get(h, &mut s) },
        &[TSHM_OK],
    );
    s
}

fn same_published(a: &tshm_snapshot, b: &tshm_snapshot) -> bool {
    a.max_frame == b.max_frame
        && a.nbackfills == b.nbackfills
        && a.engine == b.engine
        && a.checkpoint_seq == b.checkpoint_seq
        && a.page_size == b.page_size
        && a.db_size == b.db_size
        && a.salt == b.salt
        && a.checksum == b.checksum
}

unsafe extern "C" fn collect(ctx: *mut c_void, page: u32, frame: u64) -> c_int {
    let v = unsafe { &mut *(ctx as *mut (Vec<(u32, u64)>, usize)) };
    v.0.push((page, frame));
    (v.1 != 0 && v.0.len() >= v.1) as c_int
}

/// Which handle an operation targets: an open one, one closed earlier, or NULL.
enum Target {
    Open(usize),
    Bad(*mut tshm),
}

fn target(inp: &mut Input, m: &Model) -> Target {
    let b = inp.u8();
    match b % 8 {
        6 if !m.closed.is_empty() => Target::Bad(m.closed[b as usize % m.closed.len()]),
        7 => Target::Bad(null_mut()),
        _ => {
            let i = b as usize % SLOTS;
            match m.h[i] {
                Some(_) => Target::Open(i),
                None => Target::Bad(null_mut()),
            }
        }
    }
}

fn page(inp: &mut Input, m: &Model) -> u32 {
    match inp.u8() % 4 {
        0 if !m.entries.is_empty() => m.entries[inp.u16() as usize % m.entries.len()].0,
        1 => inp.u32(),
        _ => inp.u8() as u32 % 16,
    }
}

fn frame(inp: &mut Input, m: &Model) -> u64 {
    match inp.u8() % 5 {
        0 => m.tail + 1 + inp.u8() as u64 % 4,
        1 => m.snap.max_frame,
        2 => m.tail,
        3 => inp.interesting(m.tail),
        _ => m.tail.saturating_sub(inp.u8() as u64 % 8),
    }
}

fn do_open(inp: &mut Input, m: &mut Model) {
    let Some(slot) = (0..SLOTS).find(|i| m.h[*i].is_none()) else {
        return;
    };
    let p = paths();
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
    expect(
        "options_init",
        unsafe { tshm_options_init(&mut o) },
        &[TSHM_OK],
    );
    assert_eq!(unsafe { tshm_options_init(null_mut()) }, TSHM_MISUSE);
    let sel = inp.u8();
    let use_opts = sel & 1 == 0;
    o.flags = [
        0,
        0,
        0,
        TSHM_OPEN_EXCLUSIVE,
        TSHM_OPEN_READONLY,
        TSHM_OPEN_READONLY,
        TSHM_OPEN_READONLY | TSHM_OPEN_EXCLUSIVE,
        0x100,
        TSHM_OPEN_POSIX_LOCKS,
        TSHM_OPEN_ALLOW_NETFS,
    ][(sel >> 1) as usize % 10];
    let v = inp.u8();
    o.reader_slots = [0, 64, 1024, 63, 65537, u32::MAX, 0, 0][v as usize % 8];
    o.reader_strategy = [0, 1, 2, 0][(v >> 3) as usize % 4];
    o.index_limit = [
        0,
        0,
        (inp.u8() % 8) as u64 + 1,
        u32::MAX as u64 - 1,
        u32::MAX as u64,
    ][(v >> 5) as usize % 5];
    let native = std::mem::size_of::<tshm_options>() as u32;
    let sz = inp.u8();
    o.size = match sz % 16 {
        0 => native - 4,
        1 => native + 8,
        3 => native - 8, // the first version's struct
        2 => 5000,
        _ => native,
    };
    let pv = inp.u8() % 16;
    let path: *const std::ffi::c_char = match pv {
        0 => null(),
        1 => c"".as_ptr(),
        2 => p.dir_as_db.as_ptr(),
        3 => p.trailing.as_ptr(),
        4 => p.dot.as_ptr(),
        _ => p.db.as_ptr(),
    };
    let null_out = inp.u8() % 32 == 0;
    let mut out: *mut tshm = null_mut();
    let rc = check("open", unsafe {
        tshm_open(
            path,
            if use_opts { &o } else { null() },
            if null_out { null_mut() } else { &mut out },
        )
    });
    // the documented order of the checks
    let (excl, ro) = if use_opts {
        (
            o.flags & TSHM_OPEN_EXCLUSIVE != 0,
            o.flags & TSHM_OPEN_READONLY != 0,
        )
    } else {
        (false, false)
    };
    let want = if pv == 0 || null_out {
        TSHM_MISUSE
    } else if use_opts && ((o.size < native && o.size != native - 8) || o.size > 4096) {
        TSHM_MISUSE
    } else if use_opts && o.size > native {
        TSHM_NOTSUPPORTED
    } else if use_opts && o.flags & 0x100 != 0 {
        TSHM_MISUSE
    } else if pv == 1 || pv == 3 || pv == 4 {
        TSHM_MISUSE
    } else if pv == 2 {
        TSHM_CANTOPEN
    } else if ro && excl {
        TSHM_MISUSE
    } else if use_opts
        && (o.reader_strategy > 1
            || !(o.reader_slots == 0 || (64..=65536).contains(&o.reader_slots))
            || o.index_limit > u32::MAX as u64 - 1)
    {
        TSHM_MISUSE
    } else if ro && !m.exists {
        TSHM_NOTFOUND
    } else if m.open_count() > 0 && m.node_excl != excl {
        TSHM_CONFLICT
    } else if m.open_count() > 0
        && use_opts
        && !ro
        && ((o.reader_slots != 0 && o.reader_slots != m.readers)
            || (o.reader_strategy != 0 && o.reader_strategy != m.strategy))
    {
        TSHM_CONFLICT
    } else {
        TSHM_OK
    };
    assert_eq!(
        rc,
        want,
        "open(path {pv}, opts {use_opts}, flags {:#x}, size {}): {}",
        o.flags,
        o.size,
        tshm_fuzz::errmsg()
    );
    if rc != TSHM_OK {
        return;
    }
    let first = m.open_count() == 0;
    let created = !m.exists;
    if first {
        m.node_excl = excl;
        if !ro {
            // alone: the open re-initializes the index and forgets every region
            m.entries.clear();
            m.tail = 0;
            m.dead = 0;
            m.region_size = 0;
            m.regions.clear();
        }
    }
    m.exists = true;
    m.h[slot] = Some(H {
        ptr: out,
        ro,
        limit: if use_opts { o.index_limit } else { 0 },
        readers: Vec::new(),
        kept: None,
        locks: [0; LOCKS],
    });
    let mut info = tshm_info::default();
    expect(
        "info_get",
        unsafe { tshm_info_get(out, &mut info) },
        &[TSHM_OK],
    );
    assert_eq!(info.readonly, ro as i32);
    assert_eq!(info.initialized, (first && !ro) as i32, "initialized");
    assert_eq!(info.mode, if excl { 2 } else { 1 });
    assert_eq!(info.instance == u32::MAX, ro);
    if first && !ro {
        // the first process of a session chooses the shape
        let want = if use_opts && o.reader_slots != 0 {
            o.reader_slots
        } else if created {
            4096
        } else {
            m.readers
        };
        assert_eq!(info.reader_slots, want, "reader slots of a new session");
        m.readers = info.reader_slots;
        m.strategy = info.reader_strategy;
    } else {
        assert_eq!(info.reader_slots, m.readers, "reader slots stay");
    }
    if first {
        m.snap = snapshot_of(out);
    } else {
        assert!(
            same_published(&snapshot_of(out), &m.snap),
            "a joining handle sees the snapshot"
        );
    }
}

fn do_close(i: usize, inp: &mut Input, m: &mut Model) {
    let h = m.h[i].take().expect("open handle");
    let last = m.open_count() == 0;
    let mut was_last: c_int = -1;
    let rc = unsafe {
        tshm_close(
            h.ptr,
            if inp.bool() {
                &mut was_last
            } else {
                null_mut()
            },
        )
    };
    expect("close", rc, &[TSHM_OK]);
    if was_last != -1 {
        assert_eq!(was_last, (last && !h.ro) as c_int, "was_last");
    }
    if m.writer == Some(i) {
        m.writer = None;
    }
    if m.ckpt == Some(i) {
        m.ckpt = None;
    }
    m.closed.push(h.ptr);
}

/// An operation on a NULL or closed handle: every call is TSHM_MISUSE (closing NULL is OK).
fn bad_handle_op(p: *mut tshm, op: u8) {
    let mut snap = tshm_snapshot::default();
    let mut u = 0u32;
    let mut f = 0u64;
    let mut info = tshm_info::default();
    let mut own = tshm_owner_info::default();
    let mut st = tshm_index_stats::default();
    let mut ptr: *mut c_void = null_mut();
    let rc = unsafe {
        match op % 20 {
            0 => tshm_info_get(p, &mut info),
            1 => tshm_snapshot_get(p, &mut snap),
            2 => tshm_publish(p, &snap, SNAP_ALL),
            3 => tshm_writer_acquire(p, 0),
            4 => tshm_writer_release(p),
            5 => tshm_checkpointer_acquire(p, 0),
            6 => tshm_checkpointer_release(p),
            7 => tshm_reader_begin(p, &mut u, &mut snap),
            8 => tshm_reader_end(p, 0),
            9 => tshm_min_reader_frame(p, &mut f),
            10 => tshm_owner(p, 1, &mut own),
            11 => tshm_index_append(p, 1, 1),
            12 => tshm_index_find(p, 1, 1, &mut f),
            13 => tshm_index_truncate(p, 0),
            14 => tshm_index_reset(p),
            15 => tshm_index_foreach(p, 0, Some(collect), null_mut()),
            16 => tshm_index_stats_get(p, &mut st),
            17 => tshm_region(p, 0, 64, 1, &mut ptr),
            18 => tshm_lock(p, 0, 1, LOCK_S),
            _ => {
                let rc = tshm_close(p, null_mut());
                if p.is_null() {
                    expect("close(NULL)", rc, &[TSHM_OK]);
                    return;
                }
                rc
            }
        }
    };
    expect(
        &format!("op {} on a bad handle", op % 20),
        rc,
        &[TSHM_MISUSE],
    );
}

fn lock_op(i: usize, inp: &mut Input, m: &mut Model) {
    let p = m.h[i].as_ref().unwrap().ptr;
    let (slot, n) = match inp.u8() % 8 {
        0 => (inp.u32(), inp.u32()),
        1 => (inp.u8() as u32 % 34, 0),
        2 => (inp.u8() as u32 % 32, 32),
        _ => {
            let s = inp.u8() as u32 % 32;
            (s, (inp.u8() as u32 % 4 + 1).min(32 - s))
        }
    };
    let flags = match inp.u8() % 8 {
        0 => LOCK_S | LOCK_U,
        1 => LOCK_X | LOCK_U,
        2 => LOCK_S | LOCK_X,
        3 => inp.u32(),
        4 | 5 => LOCK_S,
        _ => LOCK_X,
    };
    let rc = check("lock", unsafe { tshm_lock(p, slot, n, flags) });
    let h = m.h[i].as_ref().unwrap();
    let in_range = n != 0 && slot.checked_add(n).is_some_and(|e| e <= 32);
    let kind = flags & !LOCK_U;
    let want: u8 = if kind == LOCK_S { 1 } else { 2 };
    let unlock = flags & LOCK_U != 0;
    let expected = if !in_range || (kind != LOCK_S && kind != LOCK_X) {
        TSHM_MISUSE
    } else {
        let r = slot as usize..(slot + n) as usize;
        if unlock && r.clone().any(|s| h.locks[s] != want) {
            TSHM_MISUSE
        } else if !unlock && r.clone().any(|s| h.locks[s] != 0 && h.locks[s] != want) {
            TSHM_MISUSE
        } else if h.ro && want == 2 {
            TSHM_READONLY
        } else if unlock {
            TSHM_OK
        } else {
            let conflict = m.h.iter().enumerate().any(|(j, o)| {
                j != i
                    && o.as_ref().is_some_and(|o| {
                        r.clone()
                            .any(|s| o.locks[s] == 2 || (want == 2 && o.locks[s] == 1))
                    })
            });
            if conflict {
                TSHM_BUSY
            } else {
                TSHM_OK
            }
        }
    };
    assert_eq!(
        rc,
        expected,
        "lock({slot}, {n}, {flags:#x}) on handle {i}: {}",
        tshm_fuzz::errmsg()
    );
    if rc == TSHM_OK {
        let h = m.h[i].as_mut().unwrap();
        for s in slot as usize..(slot + n) as usize {
            h.locks[s] = if unlock { 0 } else { want };
        }
    }
}

fn region_op(i: usize, inp: &mut Input, m: &mut Model) {
    let h = m.h[i].as_ref().unwrap();
    let idx = match inp.u8() % 8 {
        0 => inp.u32(),
        1 => 511 + inp.u8() as u32 % 3,
        _ => inp.u8() as u32 % 8,
    };
    let size: usize = match inp.u8() % 10 {
        0 => 0,
        1 => 12,
        2 => 65536,
        3 => 65544,
        4 => usize::MAX,
        5 => (inp.u16() as usize) & !7,
        _ => 4096,
    };
    let extend = inp.bool();
    let null_ptr = inp.u8() % 32 == 0;
    let mut ptr: *mut c_void = 1 as *mut c_void;
    let rc = check("region", unsafe {
        tshm_region(
            h.ptr,
            idx,
            size,
            extend as c_int,
            if null_ptr { null_mut() } else { &mut ptr },
        )
    });
    let exists = m.regions.contains_key(&idx);
    let expected = if null_ptr
        || idx >= 512
        || size == 0
        || size > 65536
        || size % 8 != 0
        || (m.region_size != 0 && m.region_size != size as u64)
    {
        TSHM_MISUSE
    } else if !exists && extend && h.ro {
        TSHM_READONLY
    } else {
        TSHM_OK
    };
    assert_eq!(
        rc,
        expected,
        "region({idx}, {size}, {extend}) ro {}: {}",
        h.ro,
        tshm_fuzz::errmsg()
    );
    if rc != TSHM_OK {
        return;
    }
    if !exists && !extend {
        assert!(ptr.is_null(), "a region that does not exist gives NULL");
        return;
    }
    assert!(!ptr.is_null() && ptr as usize % 8 == 0);
    let words =
        unsafe { std::slice::from_raw_parts(ptr as *const std::sync::atomic::AtomicU64, size / 8) };
    use std::sync::atomic::Ordering::Relaxed;
    match m.regions.get(&idx) {
        Some(marker) => {
            assert_eq!(
                words[0].load(Relaxed),
                *marker,
                "region {idx} keeps its contents"
            );
        }
        None => {
            assert!(
                words.iter().all(|w| w.load(Relaxed) == 0),
                "a new region is zeroed"
            );
            m.region_size = size as u64;
            m.regions.insert(idx, 0);
        }
    }
    if !h.ro {
        let marker = 0x5245_4700_0000_0000 | (idx as u64) << 16 | inp.u16() as u64;
        words[0].store(marker, Relaxed);
        words[words.len() - 1].store(marker, Relaxed);
        m.regions.insert(idx, marker);
    }
}

/// What a `keep_waiting` callback was asked to do, and what it saw.
struct Waiting {
    calls: u32,
    answer: c_int,
    /// a handle holding the role, released at the first call (NULL: none)
    release: *mut tshm,
    writer: bool,
    /// that release's result (-1: not made)
    released: c_int,
}

unsafe extern "C" fn keep_waiting(ctx: *mut c_void) -> c_int {
    let w = unsafe { &mut *(ctx as *mut Waiting) };
    w.calls += 1;
    if !w.release.is_null() && w.released == -1 {
        w.released = unsafe {
            if w.writer {
                tshm_writer_release(w.release)
            } else {
                tshm_checkpointer_release(w.release)
            }
        };
    }
    w.answer
}

fn op(i: usize, code: u8, inp: &mut Input, m: &mut Model) {
    let (p, ro) = {
        let h = m.h[i].as_ref().unwrap();
        (h.ptr, h.ro)
    };
    match code % 20 {
        0 => {
            let null = inp.u8() % 16 == 0;
            let mut info = tshm_info::default();
            let rc = unsafe { tshm_info_get(p, if null { null_mut() } else { &mut info }) };
            expect("info_get", rc, &[if null { TSHM_MISUSE } else { TSHM_OK }]);
        }
        1 => {
            let s = snapshot_of(p);
            assert!(
                same_published(&s, &m.snap),
                "snapshot {s:?} vs model {:?}",
                m.snap
            );
            assert!(s.sequence >= m.snap.sequence);
            expect(
                "snapshot_get(NULL)",
                unsafe { tshm_snapshot_get(p, null_mut()) },
                &[TSHM_MISUSE],
            );
        }
        2 => {
            let s = tshm_snapshot {
                max_frame: frame(inp, m),
                nbackfills: inp.interesting(0),
                sequence: inp.u64(),
                engine: [inp.u64(), inp.u64()],
                checkpoint_seq: inp.u32(),
                page_size: inp.u32(),
                db_size: inp.u32(),
                reserved: inp.u32(),
                salt: [inp.u32(), inp.u32()],
                checksum: [inp.u32(), inp.u32()],
            };
            let mask = match inp.u8() % 4 {
                0 => SNAP_ALL,
                1 => inp.u32(),
                _ => inp.u32() & SNAP_ALL,
            };
            let null = inp.u8() % 32 == 0;
            let rc = check("publish", unsafe {
                tshm_publish(p, if null { std::ptr::null() } else { &s }, mask)
            });
            let expected = if null {
                TSHM_MISUSE
            } else if ro {
                TSHM_READONLY
            } else if m.writer != Some(i) && m.ckpt != Some(i) {
                TSHM_MISUSE
            } else if mask & !SNAP_ALL != 0 {
                TSHM_MISUSE
            } else {
                TSHM_OK
            };
            assert_eq!(
                rc,
                expected,
                "publish(mask {mask:#x}): {}",
                tshm_fuzz::errmsg()
            );
            if rc == TSHM_OK {
                use ::tshm::snapshot::*;
                let o = &mut m.snap;
                if mask & TSHM_SNAP_MAX_FRAME != 0 {
                    o.max_frame = s.max_frame;
                }
                if mask & TSHM_SNAP_NBACKFILLS != 0 {
                    o.nbackfills = s.nbackfills;
                }
                if mask & TSHM_SNAP_ENGINE0 != 0 {
                    o.engine[0] = s.engine[0];
                }
                if mask & TSHM_SNAP_ENGINE1 != 0 {
                    o.engine[1] = s.engine[1];
                }
                if mask & TSHM_SNAP_CHECKPOINT_SEQ != 0 {
                    o.checkpoint_seq = s.checkpoint_seq;
                }
                if mask & TSHM_SNAP_PAGE_SIZE != 0 {
                    o.page_size = s.page_size;
                }
                if mask & TSHM_SNAP_DB_SIZE != 0 {
                    o.db_size = s.db_size;
                }
                if mask & TSHM_SNAP_SALT != 0 {
                    o.salt = s.salt;
                }
                if mask & TSHM_SNAP_CHECKSUM != 0 {
                    o.checksum = s.checksum;
                }
                let now = snapshot_of(p);
                assert!(
                    now.sequence > m.snap.sequence,
                    "publish advances the sequence"
                );
                assert!(
                    same_published(&now, &m.snap),
                    "published {now:?}, model {:?}",
                    m.snap
                );
                m.snap.sequence = now.sequence;
            }
        }
        3 | 4 => {
            let writer = code % 20 == 3;
            let holder = if writer { m.writer } else { m.ckpt };
            let sel = inp.u8();
            // 0: the plain call; 1: `_while`, no callback; 2: `_while`, the callback says stop;
            // 3: `_while`, the callback releases the holder (another handle of this process) and
            // says go on or stop: the role is handed to this waiter either way.
            let mode = (sel >> 3) % 4;
            let timeout = if mode == 3 { 10_000 } else if sel % 8 == 0 { 1 } else { 0 };
            let other = holder.filter(|&o| o != i && mode == 3 && !ro);
            let mut w = Waiting {
                calls: 0,
                answer: (mode == 3 && inp.bool()) as c_int,
                release: other.map_or(null_mut(), |o| m.h[o].as_ref().unwrap().ptr),
                writer,
                released: -1,
            };
            let rc = check("acquire", unsafe {
                let ctx = &mut w as *mut Waiting as *mut c_void;
                let keep: ::tshm::ffi::tshm_keep_waiting_fn =
                    if mode >= 2 { Some(keep_waiting) } else { None };
                match (writer, mode) {
                    (true, 0) => tshm_writer_acquire(p, timeout),
                    (false, 0) => tshm_checkpointer_acquire(p, timeout),
                    (true, _) => tshm_writer_acquire_while(p, timeout, keep, ctx),
                    (false, _) => tshm_checkpointer_acquire_while(p, timeout, keep, ctx),
                }
            });
            let expected = if ro {
                TSHM_READONLY
            } else if holder == Some(i) {
                TSHM_MISUSE
            } else if other.is_some() {
                TSHM_OK
            } else if holder.is_some() {
                TSHM_BUSY
            } else {
                TSHM_OK
            };
            assert_eq!(
                rc,
                expected,
                "acquire(writer {writer}, mode {mode}, timeout {timeout}) on {i}: {}",
                tshm_fuzz::errmsg()
            );
            // Asked only while waiting: never when the call ends at once.
            let waited = !ro && holder.is_some_and(|o| o != i) && timeout > 0 && mode >= 2;
            assert_eq!(w.calls > 0, waited, "keep_waiting called {} times", w.calls);
            if other.is_some() {
                assert_eq!(w.released, TSHM_OK, "the holder's release inside keep_waiting");
                assert_eq!(w.calls, 1, "handed the role at the first ask");
                if writer {
                    m.writer = None;
                } else {
                    m.ckpt = None;
                }
            }
            if rc == TSHM_OK {
                if writer {
                    m.writer = Some(i);
                    let c = m.snap.max_frame;
                    m.drop_above(c);
                } else {
                    m.ckpt = Some(i);
                }
            }
        }
        5 | 6 => {
            let writer = code % 20 == 5;
            let holder = if writer { m.writer } else { m.ckpt };
            let rc = check("release", unsafe {
                if writer {
                    tshm_writer_release(p)
                } else {
                    tshm_checkpointer_release(p)
                }
            });
            let expected = if ro {
                TSHM_READONLY
            } else if holder != Some(i) {
                TSHM_MISUSE
            } else {
                TSHM_OK
            };
            assert_eq!(
                rc,
                expected,
                "release(writer {writer}) on {i}: {}",
                tshm_fuzz::errmsg()
            );
            if rc == TSHM_OK {
                if writer {
                    m.writer = None
                } else {
                    m.ckpt = None
                }
            }
        }
        7 => {
            let null = inp.u8() % 32 == 0;
            let mut slot = u32::MAX;
            let mut s = tshm_snapshot::default();
            let rc = check("reader_begin", unsafe {
                tshm_reader_begin(p, if null { null_mut() } else { &mut slot }, &mut s)
            });
            let expected = if null {
                TSHM_MISUSE
            } else if ro {
                TSHM_READONLY
            } else {
                TSHM_OK // or BUSY when every slot is held (checked below)
            };
            if !(rc == TSHM_BUSY && expected == TSHM_OK) {
                assert_eq!(rc, expected, "reader_begin: {}", tshm_fuzz::errmsg());
            }
            if rc == TSHM_BUSY {
                assert!(
                    m.used() >= m.readers as usize,
                    "BUSY with {} of {} slots held",
                    m.used(),
                    m.readers
                );
                let h = m.h[i].as_ref().unwrap();
                let idle_kept = h.kept.is_some_and(|k| h.readers.iter().all(|r| r.0 != k));
                assert!(!idle_kept, "BUSY although the handle keeps an idle slot");
            }
            if rc == TSHM_OK {
                let h = m.h[i].as_ref().unwrap();
                let others =
                    m.h.iter()
                        .enumerate()
                        .filter(|(k, _)| *k != i)
                        .filter_map(|(_, h)| h.as_ref())
                        .any(|o| o.kept == Some(slot) || o.readers.iter().any(|r| r.0 == slot));
                assert!(slot < m.readers && !others, "slot {slot} handed out twice");
                // sharing: only with this handle's transactions at the same snapshot
                assert!(
                    h.readers.iter().all(|r| r.0 != slot || r.2 == s.sequence),
                    "slot {slot} shared across snapshots"
                );
                assert!(same_published(&s, &m.snap), "reader snapshot");
                let kept_now = m.strategy == 0 && h.kept.is_none();
                let h = m.h[i].as_mut().unwrap();
                if kept_now {
                    h.kept = Some(slot);
                }
                h.readers.push((slot, s.max_frame, s.sequence));
            }
        }
        8 => {
            let h = m.h[i].as_ref().unwrap();
            let slot = if !h.readers.is_empty() && inp.u8() % 4 != 0 {
                h.readers[inp.u8() as usize % h.readers.len()].0
            } else {
                inp.interesting(0) as u32
            };
            let rc = check("reader_end", unsafe { tshm_reader_end(p, slot) });
            let mine = h.readers.iter().position(|r| r.0 == slot);
            let expected = if ro {
                TSHM_READONLY
            } else if mine.is_none() {
                TSHM_MISUSE
            } else {
                TSHM_OK
            };
            assert_eq!(rc, expected, "reader_end({slot}): {}", tshm_fuzz::errmsg());
            if let Some(k) = mine {
                m.h[i].as_mut().unwrap().readers.swap_remove(k);
            }
        }
        9 => {
            let mut f = 0u64;
            expect(
                "min_reader_frame",
                unsafe { tshm_min_reader_frame(p, &mut f) },
                &[TSHM_OK],
            );
            let want =
                m.h.iter()
                    .flatten()
                    .flat_map(|h| h.readers.iter())
                    .map(|r| r.1)
                    .min()
                    .unwrap_or(NO_FRAME);
            assert_eq!(f, want, "min_reader_frame");
            expect(
                "min_reader_frame(NULL)",
                unsafe { tshm_min_reader_frame(p, null_mut()) },
                &[TSHM_MISUSE],
            );
        }
        10 => {
            let role = match inp.u8() % 6 {
                0 => 0,
                1 => 1,
                2 => 2,
                3 => inp.u32(),
                _ => 3 + inp.u8() as u32 % (m.readers + 2),
            };
            let mut o = tshm_owner_info::default();
            let rc = check("owner", unsafe { tshm_owner(p, role, &mut o) });
            let expected = if role >= 3 + m.readers {
                TSHM_MISUSE
            } else {
                TSHM_OK
            };
            assert_eq!(rc, expected, "owner({role}): {}", tshm_fuzz::errmsg());
            if rc == TSHM_OK {
                let held = match role {
                    0 => None,
                    1 => Some(m.writer.is_some()),
                    2 => Some(m.ckpt.is_some()),
                    r => Some(m.reader_held(r - 3).is_some() || m.kept(r - 3)),
                };
                if let Some(held) = held {
                    assert_eq!(o.held != 0, held, "owner({role}).held");
                    assert_eq!(o.alive != 0, held, "owner({role}).alive");
                    if held {
                        assert_eq!(o.pid, std::process::id(), "owner({role}).pid");
                    }
                }
                if role >= 3 {
                    let pinned = m.reader_held(role - 3);
                    if pinned.is_some() || m.kept(role - 3) {
                        assert_eq!(o.frame, pinned.unwrap_or(NO_FRAME), "owner({role}).frame");
                    }
                }
            }
        }
        11 => {
            let pg = page(inp, m);
            let f = frame(inp, m);
            let rc = check("index_append", unsafe { tshm_index_append(p, pg, f) });
            let limit = m.h[i].as_ref().unwrap().limit;
            let expected = if ro {
                TSHM_READONLY
            } else if m.writer != Some(i) || f == 0 || f >= DEAD_BIT || f <= m.tail {
                TSHM_MISUSE
            } else if limit != 0 && m.entries.len() as u64 >= limit {
                TSHM_FULL
            } else {
                TSHM_OK
            };
            assert_eq!(
                rc,
                expected,
                "index_append({pg}, {f}): {}",
                tshm_fuzz::errmsg()
            );
            if rc == TSHM_OK {
                m.entries.push((pg, f, true));
                m.tail = f;
            }
        }
        12 => {
            let pg = page(inp, m);
            let max = frame(inp, m);
            let null = inp.u8() % 32 == 0;
            let mut f = 0u64;
            let rc = check("index_find", unsafe {
                tshm_index_find(p, pg, max, if null { null_mut() } else { &mut f })
            });
            if null {
                assert_eq!(rc, TSHM_MISUSE);
            } else {
                match m.find(pg, max) {
                    Some(w) => {
                        assert_eq!(rc, TSHM_OK, "index_find({pg}, {max})");
                        assert_eq!(f, w, "index_find({pg}, {max})");
                    }
                    None => assert_eq!(rc, TSHM_NOTFOUND, "index_find({pg}, {max})"),
                }
            }
        }
        13 => {
            let max = frame(inp, m);
            let rc = check("index_truncate", unsafe { tshm_index_truncate(p, max) });
            let expected = if max < m.snap.max_frame {
                TSHM_MISUSE
            } else if ro {
                TSHM_READONLY
            } else if m.writer != Some(i) {
                TSHM_MISUSE
            } else {
                TSHM_OK
            };
            assert_eq!(
                rc,
                expected,
                "index_truncate({max}): {}",
                tshm_fuzz::errmsg()
            );
            if rc == TSHM_OK {
                m.drop_above(max);
            }
        }
        14 => {
            let rc = check("index_reset", unsafe { tshm_index_reset(p) });
            let expected = if ro {
                TSHM_READONLY
            } else if m.writer != Some(i) {
                TSHM_MISUSE
            } else {
                TSHM_OK
            };
            assert_eq!(rc, expected, "index_reset: {}", tshm_fuzz::errmsg());
            if rc == TSHM_OK {
                m.entries.clear();
                m.tail = 0;
                m.dead = 0;
            }
        }
        15 => {
            let max = frame(inp, m);
            let stop = inp.u8() as usize % 4;
            let mut ctx: (Vec<(u32, u64)>, usize) = (Vec::new(), stop);
            let null = inp.u8() % 32 == 0;
            let rc = check("index_foreach", unsafe {
                tshm_index_foreach(
                    p,
                    max,
                    if null { None } else { Some(collect) },
                    &mut ctx as *mut _ as *mut c_void,
                )
            });
            if null {
                assert_eq!(rc, TSHM_MISUSE);
            } else {
                assert_eq!(rc, TSHM_OK, "index_foreach: {}", tshm_fuzz::errmsg());
                let mut want = std::collections::BTreeMap::new();
                for (pg, f, live) in &m.entries {
                    if *live && *f <= max {
                        want.insert(*pg, *f);
                    }
                }
                let mut want: Vec<_> = want.into_iter().collect();
                if stop != 0 {
                    want.truncate(stop);
                }
                assert_eq!(ctx.0, want, "index_foreach({max})");
            }
        }
        16 => {
            let mut st = tshm_index_stats::default();
            expect(
                "index_stats",
                unsafe { tshm_index_stats_get(p, &mut st) },
                &[TSHM_OK],
            );
            assert_eq!(st.entries, m.entries.len() as u64, "stats.entries");
            assert_eq!(st.dead, m.dead, "stats.dead");
            assert_eq!(st.tail_frame, m.tail, "stats.tail_frame");
            expect(
                "index_stats(NULL)",
                unsafe { tshm_index_stats_get(p, null_mut()) },
                &[TSHM_MISUSE],
            );
        }
        17 => region_op(i, inp, m),
        18 => lock_op(i, inp, m),
        _ => do_close(i, inp, m),
    }
}

fn run(data: &[u8]) {
    let p = paths();
    let _ = std::fs::remove_file(&p.sidecar);
    let mut m = Model {
        h: [None, None, None],
        closed: Vec::new(),
        node_excl: false,
        exists: false,
        readers: 0,
        strategy: 0,
        writer: None,
        ckpt: None,
        entries: Vec::new(),
        tail: 0,
        dead: 0,
        snap: tshm_snapshot::default(),
        region_size: 0,
        regions: Default::default(),
    };
    let mut inp = Input::new(data);
    let mut n = 0;
    while !inp.is_empty() && n < 200 {
        n += 1;
        let code = inp.u8();
        if code >= 224 || m.open_count() == 0 && code % 2 == 0 {
            do_open(&mut inp, &mut m);
            continue;
        }
        match target(&mut inp, &m) {
            Target::Open(i) => op(i, code, &mut inp, &mut m),
            Target::Bad(ptr) => bad_handle_op(ptr, code),
        }
    }
    for i in 0..SLOTS {
        if let Some(h) = m.h[i].take() {
            expect(
                "final close",
                unsafe { tshm_close(h.ptr, null_mut()) },
                &[TSHM_OK],
            );
        }
    }
}

fuzz_target!(|data: &[u8]| run(data));
