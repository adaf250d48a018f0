//! The C API of libtshm as Rust sees it, in one self-contained file.
//!
//! ctest macro-expands this file on its own (`rustc -Zunpretty=expanded`), so it may use only
//! `core`/`std`: no `libc`, no `tshm`. `src/main.rs` checks at compile time that every item here
//! matches the definition in the `tshm` crate (value, type, size, alignment, field offsets and
//! types, function signatures); the generated tests check the same items against
//! `include/tshm.h`. Together: header == this file == src/.

#![allow(non_camel_case_types, dead_code)]

use std::ffi::{c_char, c_int, c_void};

// Version (the string comes from cbindgen.toml, the numbers from src/ffi).
pub const TSHM_VERSION: *const c_char = c"0.1.0".as_ptr();
pub const TSHM_VERSION_MAJOR: c_int = 0;
pub const TSHM_VERSION_MINOR: c_int = 1;
pub const TSHM_VERSION_PATCH: c_int = 0;
pub const TSHM_VERSION_NUMBER: c_int =
    TSHM_VERSION_MAJOR * 1_000_000 + TSHM_VERSION_MINOR * 1_000 + TSHM_VERSION_PATCH;

// `tshm_info.mode` and `tshm_info.backend`.
pub const TSHM_MODE_SHARED: u32 = 1;
pub const TSHM_MODE_EXCLUSIVE: u32 = 2;
pub const TSHM_BACKEND_OFD: u32 = 1;
pub const TSHM_BACKEND_POSIX: u32 = 2;

// Result codes.
pub const TSHM_OK: c_int = 0;
pub const TSHM_ERROR: c_int = 1;
pub const TSHM_INTERNAL: c_int = 2;
pub const TSHM_PERM: c_int = 3;
pub const TSHM_BUSY: c_int = 5;
pub const TSHM_NOMEM: c_int = 7;
pub const TSHM_READONLY: c_int = 8;
pub const TSHM_IOERR: c_int = 10;
pub const TSHM_CORRUPT: c_int = 11;
pub const TSHM_NOTFOUND: c_int = 12;
pub const TSHM_FULL: c_int = 13;
pub const TSHM_CANTOPEN: c_int = 14;
pub const TSHM_PROTOCOL: c_int = 15;
pub const TSHM_MISUSE: c_int = 21;
pub const TSHM_RANGE: c_int = 25;
pub const TSHM_NOTSUPPORTED: c_int = 40;
pub const TSHM_CONFLICT: c_int = 41;

// Open flags.
pub const TSHM_OPEN_EXCLUSIVE: u32 = 1;
pub const TSHM_OPEN_READONLY: u32 = 2;
pub const TSHM_OPEN_ALLOW_NETFS: u32 = 4;
pub const TSHM_OPEN_POSIX_LOCKS: u32 = 8;

// Reader strategies.
pub const TSHM_READERS_CAS: u32 = 0;
pub const TSHM_READERS_BYTELOCK: u32 = 1;

// Role strategies.
pub const TSHM_ROLES_SHM: u32 = 0;
pub const TSHM_ROLES_BYTELOCK: u32 = 1;

// `tshm_owner` roles.
pub const TSHM_ROLE_LIFETIME: u32 = 0;
pub const TSHM_ROLE_WRITER: u32 = 1;
pub const TSHM_ROLE_CHECKPOINTER: u32 = 2;
pub const TSHM_ROLE_READER0: u32 = 3;

pub const TSHM_NO_FRAME: u64 = u64::MAX;

// `tshm_lock` flags and engine limits.
pub const TSHM_LOCK_SHARED: u32 = 1;
pub const TSHM_LOCK_EXCLUSIVE: u32 = 2;
pub const TSHM_LOCK_UNLOCK: u32 = 4;
pub const TSHM_ENGINE_LOCKS: u32 = 32;
pub const TSHM_MAX_REGIONS: u32 = 512;

// `tshm_publish` field masks.
pub const TSHM_SNAP_MAX_FRAME: u32 = 1 << 0;
pub const TSHM_SNAP_NBACKFILLS: u32 = 1 << 1;
pub const TSHM_SNAP_ENGINE0: u32 = 1 << 2;
pub const TSHM_SNAP_ENGINE1: u32 = 1 << 3;
pub const TSHM_SNAP_CHECKPOINT_SEQ: u32 = 1 << 4;
pub const TSHM_SNAP_PAGE_SIZE: u32 = 1 << 5;
pub const TSHM_SNAP_DB_SIZE: u32 = 1 << 6;
pub const TSHM_SNAP_SALT: u32 = 1 << 7;
pub const TSHM_SNAP_CHECKSUM: u32 = 1 << 8;
pub const TSHM_SNAP_ALL: u32 = (1 << 9) - 1;

/// Opaque handle (skipped by the generated tests: C has no sizeof for it).
#[repr(C)]
pub struct tshm {
    _opaque: [u8; 0],
}

pub type tshm_last_close_fn = Option<unsafe extern "C" fn(h: *mut tshm, ctx: *mut c_void)>;

pub type tshm_keep_waiting_fn = Option<unsafe extern "C" fn(ctx: *mut c_void) -> c_int>;

#[repr(C)]
pub struct tshm_options {
    pub size: u32,
    pub flags: u32,
    pub reader_slots: u32,
    pub reader_strategy: u32,
    pub on_last_close: tshm_last_close_fn,
    pub ctx: *mut c_void,
    pub index_limit: u64,
    pub instance_slots: u32,
    pub role_strategy: u32,
}

pub type tshm_index_fn =
    Option<unsafe extern "C" fn(ctx: *mut c_void, page: u32, frame: u64) -> c_int>;

#[repr(C)]
pub struct tshm_index_stats {
    pub generation: u64,
    pub entries: u64,
    pub dead: u64,
    pub tail_frame: u64,
    pub blocks: u64,
    pub nodes: u64,
    pub pool_bytes: u64,
}

#[repr(C)]
pub struct tshm_info {
    pub mode: u32,
    pub backend: u32,
    pub reader_strategy: u32,
    pub reader_slots: u32,
    pub instance_slots: u32,
    pub instance: u32,
    pub pid: u32,
    pub readonly: i32,
    pub initialized: i32,
    pub role_strategy: u32,
    pub init_epoch: u64,
}

#[repr(C)]
pub struct tshm_snapshot {
    pub max_frame: u64,
    pub nbackfills: u64,
    pub sequence: u64,
    pub engine: [u64; 2],
    pub checkpoint_seq: u32,
    pub page_size: u32,
    pub db_size: u32,
    pub reserved: u32,
    pub salt: [u32; 2],
    pub checksum: [u32; 2],
}

#[repr(C)]
pub struct tshm_owner_info {
    pub id: u64,
    pub nonce: u64,
    pub frame: u64,
    pub pid: u32,
    pub instance: u32,
    pub held: i32,
    pub alive: i32,
}

extern "C" {
    pub fn tshm_libversion_number() -> c_int;
    pub fn tshm_libversion() -> *const c_char;
    pub fn tshm_errstr(rc: c_int) -> *const c_char;
    pub fn tshm_errmsg() -> *const c_char;
    pub fn tshm_errno() -> c_int;
    pub fn tshm_options_init(opts: *mut tshm_options) -> c_int;
    pub fn tshm_open(
        db_path: *const c_char,
        opts: *const tshm_options,
        out: *mut *mut tshm,
    ) -> c_int;
    pub fn tshm_close(h: *mut tshm, was_last: *mut c_int) -> c_int;
    pub fn tshm_info_get(h: *const tshm, out: *mut tshm_info) -> c_int;
    pub fn tshm_snapshot_get(h: *const tshm, out: *mut tshm_snapshot) -> c_int;
    pub fn tshm_publish(h: *mut tshm, snap: *const tshm_snapshot, mask: u32) -> c_int;
    pub fn tshm_writer_acquire(h: *mut tshm, timeout_ms: u32) -> c_int;
    pub fn tshm_writer_acquire_while(
        h: *mut tshm,
        timeout_ms: u32,
        keep_waiting: tshm_keep_waiting_fn,
        ctx: *mut c_void,
    ) -> c_int;
    pub fn tshm_writer_release(h: *mut tshm) -> c_int;
    pub fn tshm_checkpointer_acquire(h: *mut tshm, timeout_ms: u32) -> c_int;
    pub fn tshm_checkpointer_acquire_while(
        h: *mut tshm,
        timeout_ms: u32,
        keep_waiting: tshm_keep_waiting_fn,
        ctx: *mut c_void,
    ) -> c_int;
    pub fn tshm_checkpointer_release(h: *mut tshm) -> c_int;
    pub fn tshm_reader_begin(
        h: *mut tshm,
        slot_out: *mut u32,
        snap_out: *mut tshm_snapshot,
    ) -> c_int;
    pub fn tshm_reader_end(h: *mut tshm, slot: u32) -> c_int;
    pub fn tshm_min_reader_frame(h: *const tshm, frame_out: *mut u64) -> c_int;
    pub fn tshm_owner(h: *const tshm, role: u32, out: *mut tshm_owner_info) -> c_int;
    pub fn tshm_index_append(h: *mut tshm, page: u32, frame: u64) -> c_int;
    pub fn tshm_index_find(h: *const tshm, page: u32, max_frame: u64, frame_out: *mut u64)
        -> c_int;
    pub fn tshm_index_truncate(h: *mut tshm, max_frame: u64) -> c_int;
    pub fn tshm_index_reset(h: *mut tshm) -> c_int;
    pub fn tshm_index_foreach(
        h: *const tshm,
        max_frame: u64,
        cb: tshm_index_fn,
        ctx: *mut c_void,
    ) -> c_int;
    pub fn tshm_index_stats_get(h: *const tshm, out: *mut tshm_index_stats) -> c_int;
    pub fn tshm_region(
        h: *mut tshm,
        idx: u32,
        size: usize,
        extend: c_int,
        ptr: *mut *mut c_void,
    ) -> c_int;
    pub fn tshm_lock(h: *mut tshm, slot: u32, n: u32, flags: u32) -> c_int;
}
