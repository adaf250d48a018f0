//! The C API. Each exported function checks its arguments, calls the safe API in
//! [`crate::coordinator`] and maps the result; no logic lives here.
//!
//! Conventions (also in README.md): every fallible function returns an `int` result code
//! (`TSHM_OK` is 0); outputs are written only on success; a NULL pointer argument is
//! `TSHM_MISUSE`; `tshm_errmsg()` explains the most recent failure on the calling thread; a panic
//! never crosses the boundary (it becomes `TSHM_INTERNAL`).

pub(crate) mod guard;
pub mod handle;

use crate::coordinator::{tshm_info, Coordinator, Options};
use crate::error::{Error, TSHM_MISUSE, TSHM_OK};
use crate::slots::{tshm_owner_info, Role};
use crate::snapshot::tshm_snapshot;
use guard::{code, fail, ffi_guard};
use handle::{coord, tshm, tshm_last_close_fn};
use std::ffi::{c_char, c_int, c_void, CStr};

/// Major version of this header.
pub const TSHM_VERSION_MAJOR: c_int = 0;
/// Minor version of this header.
pub const TSHM_VERSION_MINOR: c_int = 1;
/// Patch version of this header.
pub const TSHM_VERSION_PATCH: c_int = 0;
/// `MAJOR * 1000000 + MINOR * 1000 + PATCH`; compare with `tshm_libversion_number()`.
pub const TSHM_VERSION_NUMBER: c_int =
    TSHM_VERSION_MAJOR * 1_000_000 + TSHM_VERSION_MINOR * 1_000 + TSHM_VERSION_PATCH;

/// Open flag: single-process mode; other processes' opens fail with `TSHM_CONFLICT`.
pub const TSHM_OPEN_EXCLUSIVE: u32 = 1;
/// Open flag: never write or create the sidecar. A missing sidecar gives `TSHM_NOTFOUND`: the
/// engine should use its legacy read-only path.
pub const TSHM_OPEN_READONLY: u32 = 2;
/// Open flag: allow a sidecar on a network filesystem (refused with `TSHM_NOTSUPPORTED`
/// otherwise).
pub const TSHM_OPEN_ALLOW_NETFS: u32 = 4;
/// Open flag: use POSIX record locks even where OFD locks exist (the environment variable
/// `TSHM_LOCK_BACKEND=posix` does the same for every open).
pub const TSHM_OPEN_POSIX_LOCKS: u32 = 8;

/// Reader strategy: claim a slot by CAS in shared memory (no syscall per read transaction).
pub const TSHM_READERS_CAS: u32 = 0;
/// Reader strategy: one byte-range lock per read transaction.
pub const TSHM_READERS_BYTELOCK: u32 = 1;

/// `tshm_owner` role: the lifetime lock (EXCLUSIVE-mode holder).
pub const TSHM_ROLE_LIFETIME: u32 = 0;
/// `tshm_owner` role: the writer.
pub const TSHM_ROLE_WRITER: u32 = 1;
/// `tshm_owner` role: the checkpointer.
pub const TSHM_ROLE_CHECKPOINTER: u32 = 2;
/// `tshm_owner` role of reader slot `i` is `TSHM_ROLE_READER0 + i`.
pub const TSHM_ROLE_READER0: u32 = 3;

/// "No frame": `tshm_min_reader_frame` when no reader pins one.
pub const TSHM_NO_FRAME: u64 = u64::MAX;

/// Options for `tshm_open`. Initialize with `tshm_options_init()`, then change fields.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct tshm_options {
    /// `sizeof(tshm_options)`, set by `tshm_options_init`; lets later versions add fields.
    pub size: u32,
    /// `TSHM_OPEN_*` flags.
    pub flags: u32,
    /// Reader slots of a newly created sidecar (64..1024; 0 for the default, 128).
    pub reader_slots: u32,
    /// `TSHM_READERS_CAS` (default) or `TSHM_READERS_BYTELOCK`, for a newly created sidecar.
    pub reader_strategy: u32,
    /// Called by `tshm_close` when this handle is the last one attached in any process, while it
    /// still holds the sidecar exclusively: the place for a final checkpoint. The handle is fully
    /// usable inside the callback (but must not be closed there). May be NULL.
    pub on_last_close: tshm_last_close_fn,
    /// Passed to `on_last_close`.
    pub ctx: *mut c_void,
    /// Most entries this handle lets the frame index hold (one generation) before
    /// `tshm_index_append` fails with `TSHM_FULL`; 0 (default) for no limit but the format's
    /// (2^32 - 2) and the disk.
    pub index_limit: u64,
}

/// Called by `tshm_index_foreach` with each page and its newest frame; return 0 to go on,
/// anything else to stop.
#[allow(non_camel_case_types)]
pub type tshm_index_fn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, page: u32, frame: u64) -> c_int>;

fn role(is_writer: bool) -> Role {
    if is_writer {
        Role::Writer
    } else {
        Role::Checkpointer
    }
}

fn misuse(what: &str) -> c_int {
    fail(Error::Misuse(what.into()))
}

/// The common shape of a getter: refuse a NULL `out`, run `get` on the handle, write `*out`
/// only on success.
fn get_into<T>(
    h: *const tshm,
    out: *mut T,
    name: &str,
    get: impl FnOnce(&Coordinator) -> crate::Result<T>,
) -> c_int {
    if out.is_null() {
        return misuse(&format!("{name}: out is NULL"));
    }
    match coord(h).and_then(get) {
        Ok(v) => {
            // SAFETY: out is non-null and, by the function's contract, writable.
            unsafe { out.write(v) };
            TSHM_OK
        }
        Err(e) => fail(e),
    }
}

/// The library's version number, `TSHM_VERSION_NUMBER` of the headers it was built with.
#[no_mangle]
pub extern "C" fn tshm_libversion_number() -> c_int {
    TSHM_VERSION_NUMBER
}

/// The library's version string, e.g. "0.1.0". Static; never NULL.
#[no_mangle]
pub extern "C" fn tshm_libversion() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// A static English description of result code `rc`; never NULL, also for unknown codes.
#[no_mangle]
pub extern "C" fn tshm_errstr(rc: c_int) -> *const c_char {
    // The descriptions are 'static str without NUL: keep NUL-terminated copies.
    static TABLE: std::sync::OnceLock<Vec<(c_int, std::ffi::CString)>> = std::sync::OnceLock::new();
    let t = TABLE.get_or_init(|| {
        (-1..=64)
            .map(|c| {
                (
                    c,
                    std::ffi::CString::new(crate::error::errstr(c)).unwrap_or_default(),
                )
            })
            .collect()
    });
    let idx = t.iter().position(|(c, _)| *c == rc).unwrap_or(0);
    t[idx].1.as_ptr()
}

/// The detailed message of the most recent failed call on this thread, or NULL if none failed
/// yet. Valid until the next failing call on this thread.
#[no_mangle]
pub extern "C" fn tshm_errmsg() -> *const c_char {
    guard::message_ptr()
}

/// The OS errno behind the most recent failed call on this thread (0 when it had none).
#[no_mangle]
pub extern "C" fn tshm_errno() -> c_int {
    guard::errno()
}

/// Fills `*opts` with the defaults: SHARED mode, OFD locks, 128 CAS reader slots, no hook.
/// `TSHM_MISUSE` if `opts` is NULL.
///
/// # Safety
/// `opts` is NULL or points to writable memory for a `tshm_options`.
#[no_mangle]
pub unsafe extern "C" fn tshm_options_init(opts: *mut tshm_options) -> c_int {
    ffi_guard!({
        if opts.is_null() {
            return misuse("tshm_options_init: opts is NULL");
        }
        unsafe {
            opts.write(tshm_options {
                size: std::mem::size_of::<tshm_options>() as u32,
                flags: 0,
                reader_slots: 0,
                reader_strategy: TSHM_READERS_CAS,
                on_last_close: None,
                ctx: std::ptr::null_mut(),
                index_limit: 0,
            })
        };
        TSHM_OK
    })
}

/// Opens the sidecar `<db_path>-tshm` (creating it unless `TSHM_OPEN_READONLY`) and attaches a
/// new handle to it. `opts` may be NULL for the defaults. On success `*out` is the handle; on
/// failure `*out` is left unchanged and nothing needs closing.
///
/// Results: `TSHM_CONFLICT` (other processes use the other mode; `tshm_errmsg()` names a pid),
/// `TSHM_CORRUPT` (others are attached and the sidecar is invalid; a process that is alone
/// re-initializes instead), `TSHM_NOTFOUND` (read-only open, no sidecar), `TSHM_NOTSUPPORTED`
/// (network filesystem), `TSHM_FULL` (every instance slot is in use), `TSHM_IOERR`/`TSHM_PERM`.
///
/// # Safety
/// `db_path` is NULL or a NUL-terminated string; `opts` is NULL or a `tshm_options` initialized
/// by `tshm_options_init`; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tshm_open(
    db_path: *const c_char,
    opts: *const tshm_options,
    out: *mut *mut tshm,
) -> c_int {
    ffi_guard!({
        if db_path.is_null() || out.is_null() {
            return misuse("tshm_open: db_path and out must not be NULL");
        }
        let path = unsafe { CStr::from_ptr(db_path) };
        use std::os::unix::ffi::OsStrExt;
        let path = std::path::Path::new(std::ffi::OsStr::from_bytes(path.to_bytes()));
        let (mut o, mut hook, mut ctx) = (Options::default(), None, std::ptr::null_mut());
        if !opts.is_null() {
            let opts = unsafe { &*opts };
            if (opts.size as usize) < std::mem::size_of::<tshm_options>() {
                return misuse("tshm_open: opts was not initialized with tshm_options_init");
            }
            let known = TSHM_OPEN_EXCLUSIVE
                | TSHM_OPEN_READONLY
                | TSHM_OPEN_ALLOW_NETFS
                | TSHM_OPEN_POSIX_LOCKS;
            if opts.flags & !known != 0 {
                return misuse("tshm_open: unknown flag bits");
            }
            o.exclusive = opts.flags & TSHM_OPEN_EXCLUSIVE != 0;
            o.readonly = opts.flags & TSHM_OPEN_READONLY != 0;
            o.allow_netfs = opts.flags & TSHM_OPEN_ALLOW_NETFS != 0;
            o.posix_locks = opts.flags & TSHM_OPEN_POSIX_LOCKS != 0;
            o.reader_slots = opts.reader_slots;
            o.reader_strategy = opts.reader_strategy;
            o.index_limit = opts.index_limit;
            hook = opts.on_last_close;
            ctx = opts.ctx;
        }
        match Coordinator::open(path, &o) {
            Ok(c) => {
                unsafe { *out = tshm::new(c, hook, ctx) };
                TSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Releases everything the handle holds and frees it. `*was_last` (if not NULL) is set to 1 when
/// this was the last handle attached in any process (the `on_last_close` hook then ran), else 0.
/// `tshm_close(NULL, ...)` is a no-op returning `TSHM_OK`. Must not run concurrently with other
/// calls on the same handle. In a child process after `fork()`, closing an inherited handle only
/// frees its memory. The sidecar file is never deleted.
///
/// # Safety
/// `h` is NULL or a handle from `tshm_open`; `was_last` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tshm_close(h: *mut tshm, was_last: *mut c_int) -> c_int {
    ffi_guard!({
        if h.is_null() {
            if !was_last.is_null() {
                unsafe { *was_last = 0 };
            }
            return TSHM_OK;
        }
        let c = match coord(h) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
        let (hook, ctx) = unsafe { ((*h).on_last, (*h).ctx) };
        let r = c.shutdown(|_| {
            if let Some(f) = hook {
                unsafe { f(h, ctx) };
            }
        });
        match r {
            Err(e) if e.code() == TSHM_MISUSE => fail(e), // closed inside its own hook: keep it
            r => {
                handle::retire(h);
                match r {
                    Ok(last) => {
                        if !was_last.is_null() {
                            unsafe { *was_last = last as c_int };
                        }
                        TSHM_OK
                    }
                    Err(e) => fail(e),
                }
            }
        }
    })
}

/// Writes the handle's facts (mode, lock backend, reader strategy, slot counts, instance, whether
/// this open initialized the sidecar) to `*out`.
///
/// # Safety
/// `h` is NULL or a handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tshm_info_get(h: *const tshm, out: *mut tshm_info) -> c_int {
    ffi_guard!({ get_into(h, out, "tshm_info_get", |c| c.info()) })
}

/// Reads the current published snapshot into `*out`. Lock-free; never waits for a publisher,
/// not even one that died mid-publish. Safe to call from many threads on one handle.
///
/// # Safety
/// `h` is NULL or a handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tshm_snapshot_get(h: *const tshm, out: *mut tshm_snapshot) -> c_int {
    ffi_guard!({ get_into(h, out, "tshm_snapshot_get", |c| c.snapshot()) })
}

/// Publishes the fields of `*snap` selected by `mask` (`TSHM_SNAP_*` bits) as the new snapshot;
/// the other fields keep their published values and `sequence` is advanced. The handle must hold
/// the writer or checkpointer role (`TSHM_MISUSE` otherwise); `TSHM_READONLY` on a read-only
/// handle.
///
/// # Safety
/// `h` is NULL or a handle; `snap` is NULL or readable.
#[no_mangle]
pub unsafe extern "C" fn tshm_publish(
    h: *mut tshm,
    snap: *const tshm_snapshot,
    mask: u32,
) -> c_int {
    ffi_guard!({
        if snap.is_null() {
            return misuse("tshm_publish: snap is NULL");
        }
        let s = unsafe { *snap };
        code(coord(h).and_then(|c| c.publish(&s, mask)).map(|_| ()))
    })
}

fn acquire(h: *mut tshm, writer: bool, timeout_ms: u32) -> c_int {
    code(coord(h).and_then(|c| c.acquire(role(writer), timeout_ms)))
}

fn release(h: *mut tshm, writer: bool) -> c_int {
    code(coord(h).and_then(|c| c.release(role(writer))))
}

/// Takes the writer role. `timeout_ms == 0`: try once, `TSHM_BUSY` if it is held. Otherwise wait
/// up to `timeout_ms` milliseconds, woken as soon as the holder releases it (or, if the holder
/// died, within 10 ms). `TSHM_MISUSE` if this handle already holds it.
///
/// # Safety
/// `h` is NULL or a handle.
#[no_mangle]
pub unsafe extern "C" fn tshm_writer_acquire(h: *mut tshm, timeout_ms: u32) -> c_int {
    ffi_guard!({ acquire(h, true, timeout_ms) })
}

/// Releases the writer role; `TSHM_MISUSE` if this handle does not hold it.
///
/// # Safety
/// `h` is NULL or a handle.
#[no_mangle]
pub unsafe extern "C" fn tshm_writer_release(h: *mut tshm) -> c_int {
    ffi_guard!({ release(h, true) })
}

/// Takes the checkpointer role; the same rules as `tshm_writer_acquire`.
///
/// # Safety
/// `h` is NULL or a handle.
#[no_mangle]
pub unsafe extern "C" fn tshm_checkpointer_acquire(h: *mut tshm, timeout_ms: u32) -> c_int {
    ffi_guard!({ acquire(h, false, timeout_ms) })
}

/// Releases the checkpointer role; `TSHM_MISUSE` if this handle does not hold it.
///
/// # Safety
/// `h` is NULL or a handle.
#[no_mangle]
pub unsafe extern "C" fn tshm_checkpointer_release(h: *mut tshm) -> c_int {
    ffi_guard!({ release(h, false) })
}

/// Begins a read transaction: claims a reader slot, pins the current snapshot's `max_frame` in
/// it (so no checkpoint backfills past it) and returns the slot in `*slot_out` and the pinned
/// snapshot in `*snap_out`. Stale slots of dead processes are reclaimed; `TSHM_BUSY` when every
/// slot is held by a live reader; `TSHM_READONLY` on a read-only handle.
///
/// # Safety
/// `h` is NULL or a handle; `slot_out` and `snap_out` are NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tshm_reader_begin(
    h: *mut tshm,
    slot_out: *mut u32,
    snap_out: *mut tshm_snapshot,
) -> c_int {
    ffi_guard!({
        if slot_out.is_null() || snap_out.is_null() {
            return misuse("tshm_reader_begin: slot_out and snap_out must not be NULL");
        }
        match coord(h).and_then(|c| c.reader_begin()) {
            Ok((slot, snap)) => {
                unsafe {
                    *slot_out = slot;
                    *snap_out = snap;
                }
                TSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Ends the read transaction holding `slot`; `TSHM_MISUSE` if this handle does not hold it.
///
/// # Safety
/// `h` is NULL or a handle.
#[no_mangle]
pub unsafe extern "C" fn tshm_reader_end(h: *mut tshm, slot: u32) -> c_int {
    ffi_guard!({ code(coord(h).and_then(|c| c.reader_end(slot))) })
}

/// The oldest frame pinned by a live reader, or `TSHM_NO_FRAME` when none is. A checkpointer
/// reads the snapshot first, then calls this, and backfills no frame above the smaller of the
/// two.
///
/// # Safety
/// `h` is NULL or a handle; `frame_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tshm_min_reader_frame(h: *const tshm, frame_out: *mut u64) -> c_int {
    ffi_guard!({
        get_into(h, frame_out, "tshm_min_reader_frame", |c| {
            c.min_reader_frame()
        })
    })
}

/// Who holds `role`: `TSHM_ROLE_LIFETIME`, `TSHM_ROLE_WRITER`, `TSHM_ROLE_CHECKPOINTER`, or
/// `TSHM_ROLE_READER0 + i` for reader slot `i`. `TSHM_MISUSE` for a role that does not exist.
///
/// # Safety
/// `h` is NULL or a handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tshm_owner(h: *const tshm, role: u32, out: *mut tshm_owner_info) -> c_int {
    ffi_guard!({ get_into(h, out, "tshm_owner", |c| c.owner(role)) })
}

/// Adds `(page, frame)` to the shared frame index: `frame` (1 .. 2^63) now holds the newest
/// copy of `page`. Writer only (`TSHM_MISUSE` otherwise); frames must strictly increase
/// (`TSHM_MISUSE` otherwise). Entries above the published snapshot's `max_frame` are
/// uncommitted: a rollback drops them (`tshm_index_truncate`), and so does the next writer if
/// this one dies first. `TSHM_FULL` when the `index_limit` option, the disk or the file-size
/// limit stops the index from growing; the index stays consistent and usable.
///
/// # Safety
/// `h` is NULL or a handle.
#[no_mangle]
pub unsafe extern "C" fn tshm_index_append(h: *mut tshm, page: u32, frame: u64) -> c_int {
    ffi_guard!({ code(coord(h).and_then(|c| c.index_append(page, frame))) })
}

/// Looks up the newest frame at or below `max_frame` that holds `page` (pass the `max_frame`
/// of your read snapshot). `TSHM_OK` with `*frame_out` set, or `TSHM_NOTFOUND` (the page is
/// not in the WAL at that snapshot: read it from the database file; `tshm_errmsg()` is not
/// changed). Lock-free; safe while the writer appends, rolls back or grows the index. Its cost
/// does not grow with the number of frames indexed.
///
/// # Safety
/// `h` is NULL or a handle; `frame_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tshm_index_find(
    h: *const tshm,
    page: u32,
    max_frame: u64,
    frame_out: *mut u64,
) -> c_int {
    ffi_guard!({
        if frame_out.is_null() {
            return misuse("tshm_index_find: frame_out is NULL");
        }
        match coord(h).and_then(|c| c.index_find(page, max_frame)) {
            Ok(Some(f)) => {
                unsafe { *frame_out = f };
                TSHM_OK
            }
            Ok(None) => crate::error::TSHM_NOTFOUND,
            Err(e) => fail(e),
        }
    })
}

/// Rollback: drops every index entry above `max_frame`. Writer only. `max_frame` may not be
/// below the published snapshot's `max_frame` (`TSHM_MISUSE`): committed frames are dropped
/// only by `tshm_index_reset` after the WAL restarts. Concurrent lookups never miss a
/// committed entry.
///
/// # Safety
/// `h` is NULL or a handle.
#[no_mangle]
pub unsafe extern "C" fn tshm_index_truncate(h: *mut tshm, max_frame: u64) -> c_int {
    ffi_guard!({
        code(
            coord(h)
                .and_then(|c| c.index_truncate(max_frame))
                .map(|_| ()),
        )
    })
}

/// Empties the index and bumps its generation, after the WAL restarted (every frame
/// backfilled, no reader pinning one). Writer only. Also the first step of a rebuild: a handle
/// whose `tshm_info.initialized` is 1 found no live sidecar and re-appends its WAL's frames.
///
/// # Safety
/// `h` is NULL or a handle.
#[no_mangle]
pub unsafe extern "C" fn tshm_index_reset(h: *mut tshm) -> c_int {
    ffi_guard!({ code(coord(h).and_then(|c| c.index_reset())) })
}

/// Calls `cb(ctx, page, frame)` for every page with a frame at or below `max_frame`, in
/// ascending page order, with that page's newest such frame (what a checkpointer copies back).
/// Allocates nothing. Stops early, still returning `TSHM_OK`, when `cb` returns non-zero.
/// `TSHM_BUSY` if the index was reset meanwhile.
///
/// # Safety
/// `h` is NULL or a handle; `cb` is NULL or a function safe to call with `ctx`.
#[no_mangle]
pub unsafe extern "C" fn tshm_index_foreach(
    h: *const tshm,
    max_frame: u64,
    cb: tshm_index_fn,
    ctx: *mut c_void,
) -> c_int {
    ffi_guard!({
        let Some(cb) = cb else {
            return misuse("tshm_index_foreach: cb is NULL");
        };
        code(coord(h).and_then(|c| {
            c.index_for_each(
                max_frame,
                |page, frame| unsafe { cb(ctx, page, frame) } == 0,
            )
        }))
    })
}

/// Writes the index's counters (generation, entries, dead entries, tail frame, blocks, node
/// pages, pool bytes) to `*out`.
///
/// # Safety
/// `h` is NULL or a handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tshm_index_stats_get(
    h: *const tshm,
    out: *mut crate::index::tshm_index_stats,
) -> c_int {
    ffi_guard!({ get_into(h, out, "tshm_index_stats_get", |c| c.index_stats()) })
}

/// Engine region `idx` (0 .. `TSHM_MAX_REGIONS`) of `size` bytes (a multiple of 8, at most
/// 65536; every region of a sidecar has the size of the first one made): `*ptr` gets its
/// address, shared with every process attached. With `extend == 0` a region that does not exist
/// yet gives `TSHM_OK` and `*ptr = NULL`; otherwise it is created, zeroed. Pointers stay valid
/// until this process's last handle on the sidecar closes. The first process to open a sidecar
/// that nobody has open finds every region gone (zeroed), like SQLite's dead-man switch.
/// `TSHM_READONLY` when a read-only handle would have to create one.
///
/// # Safety
/// `h` is NULL or a handle; `ptr` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tshm_region(
    h: *mut tshm,
    idx: u32,
    size: usize,
    extend: c_int,
    ptr: *mut *mut c_void,
) -> c_int {
    ffi_guard!({
        if ptr.is_null() {
            return misuse("tshm_region: ptr is NULL");
        }
        match coord(h).and_then(|c| c.region(idx, size as u64, extend != 0)) {
            Ok(p) => {
                unsafe { *ptr = p.map_or(std::ptr::null_mut(), |p| p.cast()) };
                TSHM_OK
            }
            Err(e) => fail(e),
        }
    })
}

/// Takes or releases engine lock slots `slot .. slot + n` (0 .. `TSHM_ENGINE_LOCKS`).
/// `flags`: `TSHM_LOCK_SHARED` or `TSHM_LOCK_EXCLUSIVE`, plus `TSHM_LOCK_UNLOCK` to release
/// (with the mode it was taken in). Never waits: `TSHM_BUSY` when another handle, of this
/// process or another, holds a conflicting lock, and then nothing was taken (ranges are
/// all-or-nothing). Re-taking a SHARED slot is a no-op; converting between SHARED and EXCLUSIVE
/// and releasing what the handle does not hold are `TSHM_MISUSE`. Released at close, or when
/// the holding process dies. The locks live in shared memory: SHARED makes no system call
/// unless a conflict has to be checked against a holder that may have died; a granted
/// EXCLUSIVE makes one probe per slot (for read-only holders). A read-only handle takes SHARED
/// locks (kernel read locks, which work on a sidecar it cannot write); EXCLUSIVE gives it
/// `TSHM_READONLY`.
///
/// # Safety
/// `h` is NULL or a handle.
#[no_mangle]
pub unsafe extern "C" fn tshm_lock(h: *mut tshm, slot: u32, n: u32, flags: u32) -> c_int {
    ffi_guard!({
        match coord(h).and_then(|c| c.engine_lock(slot, n, flags)) {
            Ok(true) => TSHM_OK,
            // contention is routine for an engine's lock protocol: no message, no allocation
            Ok(false) => crate::error::TSHM_BUSY,
            Err(e) => fail(e),
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_constants_match_the_package() {
        assert_eq!(
            TSHM_VERSION_MAJOR.to_string(),
            env!("CARGO_PKG_VERSION_MAJOR")
        );
        assert_eq!(
            TSHM_VERSION_MINOR.to_string(),
            env!("CARGO_PKG_VERSION_MINOR")
        );
        assert_eq!(
            TSHM_VERSION_PATCH.to_string(),
            env!("CARGO_PKG_VERSION_PATCH")
        );
        let s = unsafe { CStr::from_ptr(tshm_libversion()) };
        assert_eq!(s.to_str().unwrap(), env!("CARGO_PKG_VERSION"));
    }
}
