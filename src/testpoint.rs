//! Named points in the code where a test can kill, pause or fail the process.
//!
//! Owns: the process's test-point arming. Points exist only in builds with the cargo feature
//! `test-hooks` (the test library, `build/test-lib`); without it every function here is an
//! empty inline body, so a release build holds no point name, reads no environment variable and
//! runs no code for them. With the feature, the arming is read from the environment once per
//! process (and once more in a child after `fork()`, whose environment a test may have changed),
//! and a disarmed point costs one relaxed atomic load.
//!
//! * `TSHM_TEST_CRASH_AT=<name>`: the process SIGKILLs itself at point `<name>` (any point:
//!   [`hit`], [`note`] and [`fail`] alike).
//! * `TSHM_TEST_PAUSE_AT=<name>` with `TSHM_TEST_PAUSE_FD=<fd>`: the thread reaching `<name>`
//!   writes `<name>\n` to the descriptor, then blocks until it can read one byte from it (a
//!   socket the test holds the other end of). Another thread of the process carries on, so a test
//!   can hold one thread inside a protocol step and drive the rest deterministically.
//! * `TSHM_TEST_FAIL_AT=<name>`: [`fail`] answers true at point `<name>`, where the caller then
//!   fails as if the system call there had failed (EIO).
//! * [`note`] writes `<name>\n` to the pause descriptor without blocking the thread (so a test
//!   learns that a thread reached a wait it cannot announce otherwise).
//!
//! The points ([`NAMES`], in this order), each where a kill leaves a state of its own:
//!
//! * `open_holding_init` — an open holds the init byte, before the open protocol runs;
//! * `open_initialized` — a first opener initialized the sidecar, the lifetime byte still
//!   exclusive (before the downgrade to shared);
//! * `instance_claim` — an open holds a free instance slot's liveness byte, its record not yet
//!   written;
//! * `instance_reclaim` — the same for a slot taken over from a dead instance (its old record
//!   still in place);
//! * `writer_claim`, `ckpt_claim` — the role is won (its word or byte lock), its owner record
//!   not written;
//! * `writer_release`, `ckpt_release` — the owner record is cleared, the role still held and
//!   waiters not woken;
//! * `writer_reclaim`, `ckpt_reclaim` — the role word was taken over from a dead holder, its
//!   owner record not written and waiters not served;
//! * `trim_mark` — a writer's acquire trims index entries a dead writer left above the committed
//!   frame: one of them is marked dead, the counters not yet stored;
//! * `truncate_mark` — the same inside a rollback (`tshm_index_truncate`);
//! * `append_entry` — an index entry and the tail are written, the entry count not yet stored;
//! * `pool_zeroed` — a pool unit is reserved and written as zeros, the published unit count not
//!   yet covering it;
//! * `block_unit` — a new entry block's unit is stored in the block table, the block count not
//!   yet raised to cover it;
//! * `publish_copy` — a publisher holds the publish token and wrote half of the new copy;
//! * `publish_seq` — the new snapshot is current, the publish token not yet given back;
//! * `reader_claim` — a reader slot is claimed (its owner word set), no frame pinned yet;
//! * `reader_reclaim` — a reader slot is taken over from a dead reader, no frame pinned yet;
//! * `reader_pin` — a reader's frame is pinned, the snapshot not yet re-read;
//! * `reader_end` — a releasing reader cleared its frame, its owner word still set;
//! * `engine_grant` — an EXCLUSIVE engine lock request owns the slots' owner words, its bits not
//!   yet announced in its instance record;
//! * `engine_release` — releasing EXCLUSIVE engine locks cleared the owner words, the bits
//!   still announced;
//! * `engine_probe` — the liveness probe of a conflicting engine-lock holder (a fail point:
//!   `TSHM_TEST_FAIL_AT=engine_probe` makes every probe fail);
//! * `region_create` — a unit for a new engine region is written, the region table entry not
//!   yet set;
//! * `hole_storage` — an open gives storage to a sparse sidecar's holes (a fail point too:
//!   `TSHM_TEST_FAIL_AT=hole_storage` acts as a filesystem without `fallocate`);
//! * `close_init` — a last handle of a process is about to take the init byte to close (a fail
//!   point too: the wait fails);
//! * `close_upgrade` — a closing process holds the init byte and tried to convert its lifetime
//!   lock to exclusive (won when it is the last process, lost when others are attached);
//! * `close_last_hook` — the last closer of the last process holds everything, before the
//!   caller's last-close hook runs;
//! * `close_last_done` — the hook ran; the closer has not yet reset the records or let go;
//! * `node_drop` — a process's node on the sidecar is being dropped, its descriptor still open;
//! * `node_get_waits` — an open waits for such a drop to finish (a note);
//! * `observe_mapped` — an observer (the inspector) mapped the sidecar, before it reads it.

/// Every test point, in the order of the module doc.
pub const NAMES: &[&str] = &[
    "open_holding_init",
    "open_initialized",
    "instance_claim",
    "instance_reclaim",
    "writer_claim",
    "ckpt_claim",
    "writer_release",
    "ckpt_release",
    "writer_reclaim",
    "ckpt_reclaim",
    "trim_mark",
    "truncate_mark",
    "append_entry",
    "pool_zeroed",
    "block_unit",
    "publish_copy",
    "publish_seq",
    "reader_claim",
    "reader_reclaim",
    "reader_pin",
    "reader_end",
    "engine_grant",
    "engine_release",
    "engine_probe",
    "region_create",
    "hole_storage",
    "close_init",
    "close_upgrade",
    "close_last_hook",
    "close_last_done",
    "node_drop",
    "node_get_waits",
    "observe_mapped",
];

#[cfg(feature = "test-hooks")]
mod armed {
    use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering::*};

    const UNKNOWN: u8 = 0;
    const DISARMED: u8 = 1;
    const ARMED: u8 = 2;

    static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

    pub(super) struct Arming {
        pub crash_at: Option<String>,
        pub fail_at: Option<String>,
        pub pause_at: Option<String>,
        pub pause_fd: i32,
    }

    /// The arming read last; published once and never freed (at most one per process and
    /// fork). No lock guards it, so a child forked while another thread read the arming cannot
    /// block on one.
    static ARMING: AtomicPtr<Arming> = AtomicPtr::new(std::ptr::null_mut());

    pub(super) fn forget() {
        STATE.store(UNKNOWN, Relaxed);
    }

    /// `getenv` without the Rust environment lock (which a thread of the parent may have held
    /// at `fork()`); test points read the environment only, never change it.
    pub(super) fn env(name: &std::ffi::CStr) -> Option<String> {
        // SAFETY: name is NUL-terminated; the result, if any, is a NUL-terminated string.
        let v = unsafe { libc::getenv(name.as_ptr()) };
        (!v.is_null()).then(|| {
            unsafe { std::ffi::CStr::from_ptr(v) }
                .to_string_lossy()
                .into_owned()
        })
    }

    /// The arming, `None` when disarmed. Checks (in test builds) that `name` is listed.
    pub(super) fn arming(name: &str) -> Option<&'static Arming> {
        debug_assert!(
            super::NAMES.contains(&name),
            "test point {name} is not listed in testpoint::NAMES"
        );
        match STATE.load(Acquire) {
            DISARMED => return None,
            // SAFETY: ARMED is stored after ARMING points to a leaked, never-freed Arming.
            ARMED => return unsafe { ARMING.load(Acquire).as_ref() },
            _ => {}
        }
        let a = Arming {
            crash_at: env(c"TSHM_TEST_CRASH_AT"),
            fail_at: env(c"TSHM_TEST_FAIL_AT"),
            pause_at: env(c"TSHM_TEST_PAUSE_AT"),
            pause_fd: env(c"TSHM_TEST_PAUSE_FD")
                .and_then(|v| v.parse().ok())
                .unwrap_or(-1),
        };
        let armed = a.crash_at.is_some()
            || a.fail_at.is_some()
            || (a.pause_at.is_some() && a.pause_fd >= 0);
        if !armed {
            STATE.store(DISARMED, Release);
            return None;
        }
        let a: &'static Arming = Box::leak(Box::new(a));
        ARMING.store(a as *const Arming as *mut Arming, Release);
        STATE.store(ARMED, Release);
        Some(a)
    }

    /// Whether every point is disarmed, as far as this process knows (one relaxed load).
    #[inline]
    pub(super) fn disarmed() -> bool {
        STATE.load(Relaxed) == DISARMED
    }

    /// Kills the process when `name` is the crash point.
    pub(super) fn crash(a: &Arming, name: &str) {
        if a.crash_at.as_deref() == Some(name) {
            // SAFETY: raising a signal on ourselves.
            unsafe { libc::raise(libc::SIGKILL) };
        }
    }

    pub(super) fn send(fd: i32, name: &str) {
        let line = format!("{name}\n");
        // SAFETY: writes from a live buffer to a descriptor the test handed over.
        unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
    }
}

/// Forgets the arming, so the next point re-reads the environment. Async-signal-safe: called by
/// the `fork()` child handler.
#[cfg(feature = "test-hooks")]
pub fn forget_after_fork() {
    armed::forget();
}

/// Test point `name`: kills or pauses the process there when a test armed it.
#[cfg(feature = "test-hooks")]
#[inline]
pub fn hit(name: &str) {
    if armed::disarmed() {
        return;
    }
    let Some(a) = armed::arming(name) else { return };
    armed::crash(a, name);
    if a.pause_at.as_deref() == Some(name) {
        let fd = a.pause_fd;
        armed::send(fd, name);
        let mut b = 0u8;
        // SAFETY: reads one byte into a local.
        while unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
}

/// Tells an armed pause descriptor that a thread reached `name`, without stopping it.
#[cfg(feature = "test-hooks")]
#[inline]
pub fn note(name: &str) {
    if armed::disarmed() {
        return;
    }
    let Some(a) = armed::arming(name) else { return };
    armed::crash(a, name);
    if a.pause_at.is_some() && a.pause_fd >= 0 {
        armed::send(a.pause_fd, name);
    }
}

/// Whether a test asked the step at `name` to fail.
#[cfg(feature = "test-hooks")]
#[inline]
pub fn fail(name: &str) -> bool {
    if armed::disarmed() {
        return false;
    }
    let Some(a) = armed::arming(name) else {
        return false;
    };
    armed::crash(a, name);
    a.fail_at.as_deref() == Some(name)
}

/// The error a failing test point stands for.
#[cfg(feature = "test-hooks")]
pub fn injected(name: &str) -> crate::error::Error {
    crate::error::Error::io(
        format!("test point {name}"),
        std::io::Error::from_raw_os_error(libc::EIO),
    )
}

/// A test setting from the environment variable `name` (read where the caller reads it: at
/// open, or once per process), for what a test substitutes rather than kills or pauses.
#[cfg(feature = "test-hooks")]
pub fn setting(name: &std::ffi::CStr) -> Option<String> {
    armed::env(name)
}

// Without `test-hooks`: nothing. The names passed in are dropped with the calls.

/// A test setting (none without `test-hooks`).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn setting(_name: &std::ffi::CStr) -> Option<String> {
    None
}

/// Forgets the arming (nothing to forget without `test-hooks`).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn forget_after_fork() {}

/// Test point `name` (nothing without `test-hooks`).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn hit(_name: &str) {}

/// Tells a pause descriptor that a thread reached `name` (nothing without `test-hooks`).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn note(_name: &str) {}

/// Whether a test asked the step at `name` to fail (never without `test-hooks`).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn fail(_name: &str) -> bool {
    false
}

/// The error a failing test point stands for (unreachable without `test-hooks`: [`fail`] never
/// answers true there).
#[cfg(not(feature = "test-hooks"))]
#[inline(always)]
pub fn injected(_name: &str) -> crate::error::Error {
    crate::error::Error::Internal(String::new())
}
