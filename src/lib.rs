//! libtshm: multi-process coordination for write-ahead-logged databases.
//!
//! Beside a database `app.db` it keeps a memory-mapped sidecar `app.db-tshm` holding byte-range
//! lock slots, owner records, a latched snapshot header and a shared frame index.
//! The layers, lowest first — each module's doc says what it owns and which invariant it keeps:
//!
//! * [`testpoint`] — named points where a test kills or pauses the process;
//! * [`lock`] — kernel byte-range locks (OFD, POSIX fallback); the only `fcntl` caller;
//! * [`layout`] — the byte map of the sidecar;
//! * [`region`] — the sidecar file and its mapping, typed atomic views;
//! * [`node`] — one descriptor, mapping and lock table per sidecar per process;
//! * [`snapshot`] — the two-copy snapshot latch;
//! * [`slots`] — instances, reader slots, owner records, stale reclaim;
//! * [`roles`] — the writer and checkpointer roles: acquire, wait, handoff, reclaim, counters;
//! * [`index`] — the shared frame index (page → newest frame), lock-free lookups;
//! * [`engine`] — engine regions and engine lock slots (what the SQLite shim runs on);
//! * [`coordinator`] — open/close protocols and the safe API;
//! * [`inspect`] — observing a sidecar without taking part (the `tshm` binary);
//! * `ffi` — the C API (`include/tshm.h`), argument checks and error mapping only.

pub mod coordinator;
pub mod engine;
pub mod error;
pub mod ffi;
pub mod index;
pub mod inspect;
pub mod layout;
pub mod lock;
pub mod node;
pub mod region;
pub mod roles;
pub mod slots;
pub mod snapshot;
pub mod testpoint;

pub use coordinator::{tshm_info, Coordinator, Options, ReadTxn, RoleGuard};
pub use error::{Error, Result};
pub use index::tshm_index_stats;
pub use roles::Role;
pub use slots::tshm_owner_info;
pub use snapshot::tshm_snapshot;
