//! The C API. Each exported function checks its arguments, calls the safe API in
//! [`crate::coordinator`] and maps the result; no logic lives here.
//!
//! Conventions (also in README.md): every fallible function returns an `int` result code
//! (`TSHM_OK` is 0); outputs are written only on success; a NULL pointer argument is
//! `TSHM_MISUSE`; `tshm_errmsg()` explains the most recent failure on the calling thread; a panic
//! never crosses the boundary (it becomes `TSHM_INTERNAL`). Each function's comment lists every
//! code it returns. On every function taking a handle, `TSHM_MISUSE` also covers a NULL or closed
//! handle and one inherited across `fork()`, and `TSHM_INTERNAL` (a bug in libtshm) is possible.

pub(crate) mod guard;
pub mod handle;

use crate::coordinator::{tshm_info, Coordinator, Options};
use crate::error::{Error, TSHM_MISUSE, TSHM_OK};
use crate::roles::Role;
use crate::slots::tshm_owner_info;
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
/// Open flag: never write or create the sidecar (no role, reader slot, EXCLUSIVE engine lock or
/// new region; regions that exist may be read, SHARED engine locks taken). A missing sidecar
/// gives `TSHM_NOTFOUND`: the engine should use its legacy read-only path.
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

/// Role strategy: the writer and checkpointer roles live in shared memory (no syscall when
/// uncontended; waiters are served in arrival order, each handed the role and woken directly).
pub const TSHM_ROLES_SHM: u32 = 0;
/// Role strategy: one byte-range lock per role (two system calls per acquire and release).
pub const TSHM_ROLES_BYTELOCK: u32 = 1;

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
// The C names of the byte map's values (the header needs literals).
const _: () = assert!(
    TSHM_READERS_CAS == crate::layout::READERS_CAS
        && TSHM_READERS_BYTELOCK == crate::layout::READERS_BYTELOCK
        && TSHM_NO_FRAME == crate::layout::NO_FRAME
        && TSHM_ROLES_SHM == crate::layout::ROLES_SHM
        && TSHM_ROLES_BYTELOCK == crate::layout::ROLES_BYTELOCK
);

/// Options for `tshm_open`. Initialize with `tshm_options_init()`, then change fields.
#[allow(non_camel_case_types)]
#[repr(C)]
pub struct tshm_options {
    /// `sizeof(tshm_options)`, set by `tshm_options_init`; lets later versions add fields. A
    /// library older than the caller's header refuses a larger struct with `TSHM_NOTSUPPORTED`.
    pub size: u32,
    /// `TSHM_OPEN_*` flags.
    pub flags: u32,
    /// Reader slots of the sidecar (64..65536; 0 for the default, 4096). A slot pins one
    /// snapshot for any number of read transactions of one handle; a handle keeps its slots
    /// until it closes. Like every shape field below, it is chosen by the first process to
    /// attach (the sidecar is re-initialized to it then); a later opener that asks for another
    /// value gets `TSHM_CONFLICT`.
    pub reader_slots: u32,
    /// `TSHM_READERS_CAS` (default) or `TSHM_READERS_BYTELOCK`.
    pub reader_strategy: u32,
    /// Called by `tshm_close` when this handle is the last one attached in any process, while it
    /// still holds the sidecar exclusively: the place for a final checkpoint. The handle is fully
    /// usable inside the callback (but must not be closed there). May be NULL.
    pub on_last_close: tshm_last_close_fn,
    /// Passed to `on_last_close`.
    pub ctx: *mut c_void,
    /// Most entries this handle lets the frame index hold (one generation) before
    /// `tshm_index_append` fails with `TSHM_FULL`; 0 (default) for no limit but the format's
    /// (2^32 - 2, also the largest value accepted) and the disk.
    pub index_limit: u64,
    /// Instance slots of the sidecar: how many handles (every writable handle is one) may be
    /// open at once across all processes (1..65536; 0 for the default, 4096). Chosen like
    /// `reader_slots`.
    pub instance_slots: u32,
    /// `TSHM_ROLES_SHM` (default) or `TSHM_ROLES_BYTELOCK`. Chosen like `reader_slots`.
    pub role_strategy: u32,
}

/// `tshm_options.size` of the first version of the struct (up to `index_limit`): a caller built
/// against that header gets the defaults for the later fields.
const OPTIONS_V1_SIZE: usize = std::mem::offset_of!(tshm_options, instance_slots);

/// The first version of `tshm_options`: the fields every caller's struct has.
#[repr(C)]
struct OptionsV1 {
    size: u32,
    flags: u32,
    reader_slots: u32,
    reader_strategy: u32,
    on_last_close: tshm_last_close_fn,
    ctx: *mut c_void,
    index_limit: u64,
}
const _: () = assert!(std::mem::size_of::<OptionsV1>() == OPTIONS_V1_SIZE);
const _: () = assert!(
    std::mem::offset_of!(OptionsV1, index_limit) == std::mem::offset_of!(tshm_options, index_limit)
);

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

/// A `tshm_options.size` above this is no struct of any version: garbage, not a later header.
const MAX_OPTIONS_SIZE: usize = 4096;

/// Checks `opts.size` without reading past it: below this version's struct and not the size of
/// the first version's, or absurdly large, is an uninitialized struct (`TSHM_MISUSE`); larger than this version's is a caller
/// built against a later header (`TSHM_NOTSUPPORTED`: this library cannot know what the later
/// fields ask for). Returns the size, which says which fields the caller's struct has.
///
/// # Safety
/// `opts` is non-null and points to at least a `u32`.
unsafe fn check_options_size(opts: *const tshm_options) -> crate::Result<usize> {
    let ours = std::mem::size_of::<tshm_options>();
    // SAFETY: `size` is the first field; the caller's struct has it in every version.
    let size = unsafe { std::ptr::addr_of!((*opts).size).read() } as usize;
    if (size < ours && size != OPTIONS_V1_SIZE) || size > MAX_OPTIONS_SIZE {
        return Err(Error::Misuse(format!(
            "tshm_open: opts.size is {size}, not the size of a tshm_options ({ours} bytes in this \
             version): opts was not initialized with tshm_options_init"
        )));
    }
    if size > ours {
        return Err(Error::NotSupported(format!(
            "tshm_open: opts is {size} bytes, from a later tshm.h than this libtshm ({}, {ours} \
             bytes); link the library that matches the header",
            env!("CARGO_PKG_VERSION")
        )));
    }
    Ok(size)
}

/// The library's version number, `TSHM_VERSION_NUMBER` of the headers it was built with.
///
/// Returns the number, not a result code; never fails.
#[no_mangle]
pub extern "C" fn tshm_libversion_number() -> c_int {
    TSHM_VERSION_NUMBER
}

/// The library's version string, e.g. "0.1.0". Static; never NULL.
///
/// Returns the string, not a result code; never fails.
#[no_mangle]
pub extern "C" fn tshm_libversion() -> *const c_char {
    concat!(env!("CARGO_PKG_VERSION"), "\0").as_ptr().cast()
}

/// A static English description of result code `rc`; never NULL, also for unknown codes.
///
/// Returns the string, not a result code; never fails.
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
/// yet. Owned by the library; valid until the next failing call on this thread (or the
/// thread's exit). Successful calls leave it unchanged, and so do `TSHM_BUSY` from `tshm_lock`
/// and `TSHM_NOTFOUND` from `tshm_index_find`.
///
/// Returns the message, not a result code; never fails.
#[no_mangle]
pub extern "C" fn tshm_errmsg() -> *const c_char {
    guard::message_ptr()
}

/// The OS errno behind the most recent failed call on this thread (0 when it had none); left
/// unchanged like `tshm_errmsg()`.
///
/// Returns the errno, not a result code; never fails.
#[no_mangle]
pub extern "C" fn tshm_errno() -> c_int {
    guard::errno()
}

/// Fills `*opts` with the defaults: SHARED mode, OFD locks, CAS reader slots, shared-memory
/// roles, the default table sizes (4096 reader and 4096 instance slots), no hook.
///
/// Returns:
/// * `TSHM_OK`: `*opts` holds the defaults;
/// * `TSHM_MISUSE`: `opts` is NULL;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
                instance_slots: 0,
                role_strategy: TSHM_ROLES_SHM,
            })
        };
        TSHM_OK
    })
}

/// Opens the sidecar `<db_path>-tshm` (creating it unless `TSHM_OPEN_READONLY`) and attaches a
/// new handle to it. `opts` may be NULL for the defaults. On success `*out` is the handle; on
/// failure `*out` is left unchanged and nothing needs closing.
///
/// A process keeps one descriptor per sidecar, opened read-write whenever the file allows it
/// (also for a `TSHM_OPEN_READONLY` handle, which still writes nothing). A read-write open of a
/// sidecar this process may only read gives a read-only handle (`tshm_info.readonly`).
///
/// When the database file exists and is readable, the process also opens it once (read-only,
/// `O_CLOEXEC`) and keeps that descriptor until it exits: while attached it holds a shared
/// lock on byte `0x7473686d00000000` of the database file (far from any byte SQLite locks),
/// which lets an opener tell a sidecar replaced under live users (see `TSHM_BUSY`). The
/// descriptor is never closed, since a close would drop the process's POSIX locks on the
/// database (e.g. SQLite's). Without a database file there is no such check.
///
/// Returns:
/// * `TSHM_OK`: `*out` is the new handle;
/// * `TSHM_MISUSE`: `db_path` or `out` NULL; `db_path` empty or ending in `/`, `.` or `..`;
///   `opts` not initialized by `tshm_options_init` (`opts->size` smaller than this version's
///   struct, or above 4096); unknown flag bits; `TSHM_OPEN_EXCLUSIVE` with
///   `TSHM_OPEN_READONLY`; `reader_slots` outside 64..65536 or `instance_slots` outside
///   1..65536 (0 is the default for both); an unknown reader or role strategy;
///   `index_limit` above 2^32 - 2; or an open of the database from inside its own
///   `on_last_close` hook;
/// * `TSHM_CANTOPEN`: the sidecar cannot be opened or created (e.g. its directory is not
///   writable, or the sidecar is not readable: `tshm_errno()` is `EACCES`), `db_path` names a
///   directory (`EISDIR`), or the process has no descriptor left for the sidecar or the
///   database file (`EMFILE`, `ENFILE`); nothing is created and nothing is left open;
/// * `TSHM_BUSY`: the sidecar at the path was replaced (renamed over or removed, then made
///   anew) while other processes, or this one, are attached to the file that was there before
///   (`tshm_errmsg()` says "was replaced while in use"). Opening it would start a second
///   session beside theirs, with two writers at once; open again once they have closed;
/// * `TSHM_NOTFOUND`: `TSHM_OPEN_READONLY` and there is no sidecar: use the engine's legacy
///   read-only path;
/// * `TSHM_READONLY`: `TSHM_OPEN_EXCLUSIVE` on a sidecar this process cannot write; a read-write
///   open while this process holds the sidecar through a read-only descriptor (it was not
///   writable when first opened here: close every handle on it first). (An existing sidecar
///   this process may not write, e.g. on a read-only filesystem, gives a read-only handle; one
///   that cannot be created there is `TSHM_CANTOPEN`.)
/// * `TSHM_CONFLICT`: other processes use the other mode (`tshm_errmsg()` names a pid), or the
///   sidecar they use has another shape than `opts` asks for: a `reader_slots`,
///   `instance_slots`, `reader_strategy` or `role_strategy` other than 0 and other than the
///   sidecar's (`tshm_errmsg()` gives both values; 0 joins any; a read-only handle takes the
///   shape as it is; `tshm_info_get` tells a handle the shape);
/// * `TSHM_CORRUPT`: others are attached and the sidecar is invalid (a process that is alone
///   re-initializes instead);
/// * `TSHM_NOTSUPPORTED`: a network filesystem without `TSHM_OPEN_ALLOW_NETFS`, or `opts` is a
///   later version of the struct (the caller was built against a later `tshm.h`);
/// * `TSHM_FULL`: every instance slot is in use, or the disk (`ENOSPC`, quota) or the file-size
///   limit stops the sidecar from being created (`tshm_errmsg()` says which; the next open once
///   there is room initializes it), or there is no room to give storage to the pages of a
///   sidecar made sparse from outside (which a store through the mapping would need);
/// * `TSHM_IOERR`, `TSHM_PERM`, `TSHM_NOMEM`: a system call failed (`tshm_errno()`);
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
            let size = match unsafe { check_options_size(opts) } {
                Ok(size) => size,
                Err(e) => return fail(e),
            };
            // SAFETY: the caller's struct holds `size` bytes; a field past them is left at its
            // default (a caller built against the first version of the header).
            let later = |off: usize, f: *const u32| -> u32 {
                if off + 4 <= size {
                    unsafe { f.read() }
                } else {
                    0
                }
            };
            o.instance_slots = later(std::mem::offset_of!(tshm_options, instance_slots), unsafe {
                std::ptr::addr_of!((*opts).instance_slots)
            });
            o.role_strategy = later(std::mem::offset_of!(tshm_options, role_strategy), unsafe {
                std::ptr::addr_of!((*opts).role_strategy)
            });
            // SAFETY: every first-version field lies within `size` bytes (checked above).
            let opts = unsafe { &*opts.cast::<OptionsV1>() };
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
/// Returns:
/// * `TSHM_OK`: closed and freed (also for `h` NULL, and for a handle inherited across `fork()`,
///   whose `*was_last` is then 0);
/// * `TSHM_MISUSE`: a closed or bad handle (but not NULL), or a close from inside the handle's
///   own `on_last_close` hook (the handle stays open then);
/// * `TSHM_IOERR` (or `TSHM_PERM`, `TSHM_NOMEM` by errno): a lock or unlock call of the close
///   failed; `TSHM_CORRUPT`: a role word or reader slot of the handle was overwritten from
///   outside. In both cases the handle is freed all the same, having released all it could,
///   and `*was_last` is not written;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
/// Returns:
/// * `TSHM_OK`: `*out` is filled;
/// * `TSHM_MISUSE`: `out` NULL, a bad handle;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
/// Returns:
/// * `TSHM_OK`: `*out` is the snapshot;
/// * `TSHM_MISUSE`: `out` NULL, a bad handle;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
///
/// # Safety
/// `h` is NULL or a handle; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn tshm_snapshot_get(h: *const tshm, out: *mut tshm_snapshot) -> c_int {
    ffi_guard!({ get_into(h, out, "tshm_snapshot_get", |c| c.snapshot()) })
}

/// Publishes the fields of `*snap` selected by `mask` (`TSHM_SNAP_*` bits) as the new snapshot;
/// the other fields keep their published values and `sequence` is advanced. The handle must hold
/// the writer or checkpointer role.
///
/// Returns:
/// * `TSHM_OK`: published;
/// * `TSHM_MISUSE`: `snap` NULL, neither role held by this handle, unknown `mask` bits, a bad
///   handle;
/// * `TSHM_READONLY`: a read-only handle;
/// * `TSHM_BUSY`: another live publisher (the other role's holder, or another thread of this
///   handle) kept the publish token for over two seconds; nothing was published;
/// * `TSHM_IOERR`: the liveness probe of the token's holder failed;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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

/// Asked by `tshm_writer_acquire_while` and `tshm_checkpointer_acquire_while` whether to go on
/// waiting: nonzero to wait on, 0 to stop.
#[allow(non_camel_case_types)]
pub type tshm_keep_waiting_fn = Option<unsafe extern "C" fn(ctx: *mut c_void) -> c_int>;

fn acquire_while(
    h: *mut tshm,
    writer: bool,
    timeout_ms: u32,
    keep_waiting: tshm_keep_waiting_fn,
    ctx: *mut c_void,
) -> c_int {
    // SAFETY: the caller promises a callable `keep_waiting` that does not unwind.
    let mut ask = || keep_waiting.is_none_or(|f| unsafe { f(ctx) } != 0);
    code(coord(h).and_then(|c| c.acquire_while(role(writer), timeout_ms, Some(&mut ask))))
}

fn release(h: *mut tshm, writer: bool) -> c_int {
    code(coord(h).and_then(|c| c.release(role(writer))))
}

/// Takes the writer role. `timeout_ms == 0`: try once, `TSHM_BUSY` if it is held. Otherwise wait
/// up to `timeout_ms` milliseconds, woken as soon as the holder releases it (or, if the holder
/// died, within 2.5 ms; 10 ms with `TSHM_ROLES_BYTELOCK`). Waiters get the role in arrival
/// order (shared-memory roles). On success the frame index is trimmed to the published `max_frame` (a previous
/// writer may have died with uncommitted entries).
///
/// Returns:
/// * `TSHM_OK`: this handle holds the role;
/// * `TSHM_BUSY`: another handle (of this process or another) holds it past the timeout (at
///   once for `timeout_ms == 0`);
/// * `TSHM_MISUSE`: this handle holds the role, or another of its threads is taking or
///   releasing it; a bad handle;
/// * `TSHM_READONLY`: a read-only handle;
/// * `TSHM_CORRUPT`: the trim found the index corrupt (the role is not taken);
/// * `TSHM_IOERR`: a lock call or liveness probe failed, or mapping a grown part of the index
///   for the trim failed (the role is not taken);
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
///
/// # Safety
/// `h` is NULL or a handle.
#[no_mangle]
pub unsafe extern "C" fn tshm_writer_acquire(h: *mut tshm, timeout_ms: u32) -> c_int {
    ffi_guard!({ acquire(h, true, timeout_ms) })
}

/// Takes the writer role like `tshm_writer_acquire`, and while it waits asks
/// `keep_waiting(ctx)` whether to go on: before the first sleep, after every wake-up, and at
/// least once a wait slice (2.5 ms; 10 ms with `TSHM_ROLES_BYTELOCK`). When it returns 0 the
/// call leaves the queue and returns `TSHM_BUSY` (unless a release has already handed it the
/// role, which it then takes: `TSHM_OK`). An engine uses it to stop waiting when waiting could
/// only delay another holder (for example one that waits for something this caller holds).
/// `keep_waiting` NULL: exactly `tshm_writer_acquire`. It is never called when the role is taken
/// at once; it may call libtshm, on `h` too (but not to take this role), and must not unwind.
///
/// Returns what `tshm_writer_acquire` returns, and also:
/// * `TSHM_BUSY`: `keep_waiting` returned 0 (this call left the queue without the role).
///
/// # Safety
/// `h` is NULL or a handle; `keep_waiting` is NULL or a function that can be called with `ctx`.
#[no_mangle]
pub unsafe extern "C" fn tshm_writer_acquire_while(
    h: *mut tshm,
    timeout_ms: u32,
    keep_waiting: tshm_keep_waiting_fn,
    ctx: *mut c_void,
) -> c_int {
    ffi_guard!({ acquire_while(h, true, timeout_ms, keep_waiting, ctx) })
}

/// Releases the writer role.
///
/// Returns:
/// * `TSHM_OK`: released (handed to the longest waiter, if any);
/// * `TSHM_MISUSE`: this handle does not hold the role, another of its threads is releasing it
///   or (writer) is inside an index call under it; a bad handle;
/// * `TSHM_READONLY`: a read-only handle;
/// * `TSHM_CORRUPT`: the role word was overwritten from outside (the handle no longer holds
///   the role);
/// * `TSHM_IOERR`: the unlock call failed (`TSHM_ROLES_BYTELOCK`; the handle no longer holds
///   the role);
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
///
/// # Safety
/// `h` is NULL or a handle.
#[no_mangle]
pub unsafe extern "C" fn tshm_writer_release(h: *mut tshm) -> c_int {
    ffi_guard!({ release(h, true) })
}

/// Takes the checkpointer role; the same rules as `tshm_writer_acquire`, without the index
/// trim.
///
/// Returns what `tshm_writer_acquire` returns for the checkpointer role, but never
/// `TSHM_CORRUPT` and never the trim's `TSHM_IOERR`.
///
/// # Safety
/// `h` is NULL or a handle.
#[no_mangle]
pub unsafe extern "C" fn tshm_checkpointer_acquire(h: *mut tshm, timeout_ms: u32) -> c_int {
    ffi_guard!({ acquire(h, false, timeout_ms) })
}

/// Takes the checkpointer role like `tshm_checkpointer_acquire`, asking `keep_waiting` as
/// `tshm_writer_acquire_while` does.
///
/// Returns what `tshm_checkpointer_acquire` returns, and also `TSHM_BUSY` when `keep_waiting`
/// returned 0.
///
/// # Safety
/// `h` is NULL or a handle; `keep_waiting` is NULL or a function that can be called with `ctx`.
#[no_mangle]
pub unsafe extern "C" fn tshm_checkpointer_acquire_while(
    h: *mut tshm,
    timeout_ms: u32,
    keep_waiting: tshm_keep_waiting_fn,
    ctx: *mut c_void,
) -> c_int {
    ffi_guard!({ acquire_while(h, false, timeout_ms, keep_waiting, ctx) })
}

/// Releases the checkpointer role.
///
/// Returns what `tshm_writer_release` returns for the checkpointer role (no index call holds
/// it).
///
/// # Safety
/// `h` is NULL or a handle.
#[no_mangle]
pub unsafe extern "C" fn tshm_checkpointer_release(h: *mut tshm) -> c_int {
    ffi_guard!({ release(h, false) })
}

/// Begins a read transaction: claims a reader slot, pins the current snapshot's `max_frame` in
/// it (so no checkpoint backfills past it) and returns the slot in `*slot_out` and the pinned
/// snapshot in `*snap_out`. Stale slots of dead processes are reclaimed.
///
/// Returns:
/// * `TSHM_OK`: `*slot_out` and `*snap_out` are set; end the transaction with
///   `tshm_reader_end(h, *slot_out)`;
/// * `TSHM_BUSY`: every reader slot is held by a live reader;
/// * `TSHM_MISUSE`: `slot_out` or `snap_out` NULL, a bad handle;
/// * `TSHM_READONLY`: a read-only handle;
/// * `TSHM_CORRUPT`: the slot claimed was overwritten from outside while pinning (nothing is
///   held);
/// * `TSHM_IOERR`: a lock call or liveness probe failed;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
        let mut snap = tshm_snapshot::default();
        match coord(h).and_then(|c| c.reader_begin_into(&mut snap)) {
            Ok(slot) => {
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

/// Ends the read transaction holding `slot`.
///
/// Returns:
/// * `TSHM_OK`: the transaction ended;
/// * `TSHM_MISUSE`: this handle has no read transaction on `slot`; a bad handle;
/// * `TSHM_READONLY`: a read-only handle;
/// * `TSHM_CORRUPT`: the slot was overwritten from outside while held (the transaction is
///   ended all the same);
/// * `TSHM_IOERR`: the unlock call failed (`TSHM_READERS_BYTELOCK`; the transaction is ended);
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
/// Returns:
/// * `TSHM_OK`: `*frame_out` is set;
/// * `TSHM_MISUSE`: `frame_out` NULL, a bad handle;
/// * `TSHM_IOERR`: a liveness probe failed;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
/// `TSHM_ROLE_READER0 + i` for reader slot `i`.
///
/// Returns:
/// * `TSHM_OK`: `*out` is filled (also for a role nobody holds: `held == 0`);
/// * `TSHM_MISUSE`: `out` NULL, a role that does not exist, a bad handle;
/// * `TSHM_IOERR`: a liveness probe failed;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
/// this one dies first.
///
/// Returns:
/// * `TSHM_OK`: added;
/// * `TSHM_MISUSE`: writer role not held by this handle, another of its threads inside an index
///   call, `frame` not above the last one or out of range, a bad handle;
/// * `TSHM_READONLY`: a read-only handle;
/// * `TSHM_FULL`: the `index_limit` option, the format's limit, the disk or the file-size limit
///   stops the index from growing (the index stays consistent and usable);
/// * `TSHM_CORRUPT`: the index's shared words are inconsistent (changed from outside);
/// * `TSHM_IOERR`: growing the sidecar or mapping a grown part failed;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
/// Returns:
/// * `TSHM_OK`: `*frame_out` is the frame;
/// * `TSHM_NOTFOUND`: no frame at or below `max_frame` holds `page` (`tshm_errmsg()` is not
///   changed);
/// * `TSHM_BUSY`: the index was reset again and again during the lookup;
/// * `TSHM_CORRUPT`: the index's shared words are inconsistent (changed from outside);
/// * `TSHM_MISUSE`: `frame_out` NULL, a bad handle;
/// * `TSHM_IOERR`: mapping a grown part of the index failed;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
/// Returns:
/// * `TSHM_OK`: nothing above `max_frame` is left (also when there was nothing to drop);
/// * `TSHM_MISUSE`: `max_frame` below the published one, writer role not held by this handle,
///   another of its threads inside an index call, a bad handle;
/// * `TSHM_READONLY`: a read-only handle;
/// * `TSHM_CORRUPT`: the index's shared words are inconsistent (changed from outside);
/// * `TSHM_IOERR`: mapping a grown part of the index failed;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
/// Returns:
/// * `TSHM_OK`: the index is empty;
/// * `TSHM_MISUSE`: writer role not held by this handle, another of its threads inside an index
///   call, a bad handle;
/// * `TSHM_READONLY`: a read-only handle;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
///
/// Returns:
/// * `TSHM_OK`: every page was passed to `cb`, or `cb` stopped the walk;
/// * `TSHM_BUSY`: the index was reset during the walk (pages already passed to `cb` may be
///   stale);
/// * `TSHM_CORRUPT`: the index's shared words are inconsistent (changed from outside);
/// * `TSHM_MISUSE`: `cb` NULL, a bad handle;
/// * `TSHM_IOERR`: mapping a grown part of the index failed;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
/// Returns:
/// * `TSHM_OK`: `*out` is filled;
/// * `TSHM_MISUSE`: `out` NULL, a bad handle;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
/// that nobody has open finds every region gone (zeroed), like SQLite's dead-man switch. A
/// read-only handle finds existing regions (and must only read them) but never creates one.
///
/// Returns:
/// * `TSHM_OK`: `*ptr` is the region's address (NULL when it does not exist and `extend == 0`);
/// * `TSHM_MISUSE`: `ptr` NULL, `idx` or `size` out of range, `size` unlike the sidecar's
///   regions, a bad handle;
/// * `TSHM_READONLY`: a read-only handle would have to create the region;
/// * `TSHM_FULL`: the disk or the file-size limit stops the sidecar from growing, or the pool
///   reached its addressable size;
/// * `TSHM_CORRUPT`: the region table or the pool's counters point outside the file;
/// * `TSHM_IOERR`: growing the sidecar or mapping the region failed;
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
/// locks (kernel read locks, which work on a sidecar it cannot write).
///
/// Returns:
/// * `TSHM_OK`: every slot of the range is taken (or released);
/// * `TSHM_BUSY`: a conflicting lock is held; nothing was taken (`tshm_errmsg()` is not
///   changed);
/// * `TSHM_MISUSE`: slots out of range, bad flags, a mode conversion, releasing what is not
///   held, a bad handle;
/// * `TSHM_READONLY`: EXCLUSIVE on a read-only handle;
/// * `TSHM_IOERR`: a lock call or liveness probe failed (a request that fails takes nothing);
/// * `TSHM_INTERNAL`: a bug in libtshm (a caught panic).
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
