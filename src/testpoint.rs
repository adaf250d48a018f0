//! Named points in the code where a test can kill or pause the process.
//!
//! Owns: the process's test-point arming, read from the environment once per process (and once
//! more in a child after `fork()`, whose environment a test may have changed). A disarmed point
//! costs one relaxed atomic load: no environment lookup, allocation or lock on any path.
//!
//! * `TSHM_TEST_CRASH_AT=<name>`: the process SIGKILLs itself at point `<name>`.
//! * `TSHM_TEST_PAUSE_AT=<name>` with `TSHM_TEST_PAUSE_FD=<fd>`: the thread reaching `<name>`
//!   writes `<name>\n` to the descriptor, then blocks until it can read one byte from it (a
//!   socket the test holds the other end of). Another thread of the process carries on, so a test
//!   can hold one thread inside a protocol step and drive the rest deterministically.
//! * `TSHM_TEST_FAIL_AT=<name>`: [`fail`] answers true at point `<name>`, where the caller then
//!   fails as if the system call there had failed (EIO).
//! * [`note`] writes `<name>\n` to the pause descriptor without blocking the thread (so a test
//!   learns that a thread reached a wait it cannot announce otherwise).

use std::sync::atomic::{AtomicPtr, AtomicU8, Ordering::*};

const UNKNOWN: u8 = 0;
const DISARMED: u8 = 1;
const ARMED: u8 = 2;

static STATE: AtomicU8 = AtomicU8::new(UNKNOWN);

struct Arming {
    crash_at: Option<String>,
    fail_at: Option<String>,
    pause_at: Option<String>,
    pause_fd: i32,
}

/// The arming read last; published once and never freed (at most one per process and fork).
/// No lock guards it, so a child forked while another thread read the arming cannot block on one.
static ARMING: AtomicPtr<Arming> = AtomicPtr::new(std::ptr::null_mut());

/// Forgets the arming, so the next point re-reads the environment. Async-signal-safe: called by
/// the `fork()` child handler.
pub fn forget_after_fork() {
    STATE.store(UNKNOWN, Relaxed);
}

/// `getenv` without the Rust environment lock (which a thread of the parent may have held at
/// `fork()`); test points read the environment only, never change it.
fn env(name: &std::ffi::CStr) -> Option<String> {
    // SAFETY: name is NUL-terminated; the result, if any, is a NUL-terminated string.
    let v = unsafe { libc::getenv(name.as_ptr()) };
    (!v.is_null()).then(|| {
        unsafe { std::ffi::CStr::from_ptr(v) }
            .to_string_lossy()
            .into_owned()
    })
}

fn arming() -> Option<&'static Arming> {
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
    let armed =
        a.crash_at.is_some() || a.fail_at.is_some() || (a.pause_at.is_some() && a.pause_fd >= 0);
    if !armed {
        STATE.store(DISARMED, Release);
        return None;
    }
    let a: &'static Arming = Box::leak(Box::new(a));
    ARMING.store(a as *const Arming as *mut Arming, Release);
    STATE.store(ARMED, Release);
    Some(a)
}

fn send(fd: i32, name: &str) {
    let line = format!("{name}\n");
    // SAFETY: writes from a live buffer to a descriptor the test handed over.
    unsafe { libc::write(fd, line.as_ptr().cast(), line.len()) };
}

/// Test point `name`: kills or pauses the process there when a test armed it.
#[inline]
pub fn hit(name: &str) {
    if STATE.load(Relaxed) == DISARMED {
        return;
    }
    let Some(a) = arming() else { return };
    if a.crash_at.as_deref() == Some(name) {
        // SAFETY: raising a signal on ourselves.
        unsafe { libc::raise(libc::SIGKILL) };
    }
    if a.pause_at.as_deref() == Some(name) {
        let fd = a.pause_fd;
        send(fd, name);
        let mut b = 0u8;
        // SAFETY: reads one byte into a local.
        while unsafe { libc::read(fd, (&mut b as *mut u8).cast(), 1) } < 0
            && std::io::Error::last_os_error().raw_os_error() == Some(libc::EINTR)
        {}
    }
}

/// Tells an armed pause descriptor that a thread reached `name`, without stopping it.
#[inline]
pub fn note(name: &str) {
    if STATE.load(Relaxed) == DISARMED {
        return;
    }
    let Some(a) = arming() else { return };
    if a.pause_at.is_some() && a.pause_fd >= 0 {
        send(a.pause_fd, name);
    }
}

/// Whether a test asked the step at `name` to fail.
#[inline]
pub fn fail(name: &str) -> bool {
    if STATE.load(Relaxed) == DISARMED {
        return false;
    }
    arming().is_some_and(|a| a.fail_at.as_deref() == Some(name))
}

/// The error a failing test point stands for.
pub fn injected(name: &str) -> crate::error::Error {
    crate::error::Error::io(
        format!("test point {name}"),
        std::io::Error::from_raw_os_error(libc::EIO),
    )
}
