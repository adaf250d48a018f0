//! The opaque `tshm` handle: allocation, validation of the pointers C passes in, and the
//! quarantine that lets a call on a recently closed handle fail with `TSHM_MISUSE` instead of
//! touching freed memory.
//!
//! Owns: the handle's `state` word. A handle is `OPEN` from `tshm_open` until `tshm_close`
//! returns, then `CLOSED`; the coordinator inside is dropped at close (so the process lets go of
//! the sidecar), but the small shell stays allocated in a bounded quarantine (the `QUARANTINE`
//! most recent ones), so using a closed handle is a reported misuse, not undefined behaviour.

use crate::coordinator::Coordinator;
use crate::error::{Error, Result};
use std::collections::VecDeque;
use std::ffi::c_void;
use std::sync::atomic::{AtomicU32, Ordering::*};
use std::sync::Mutex;

const OPEN: u32 = 0x7453_484d;
const CLOSED: u32 = 0xdead_7348;
/// Closed handles kept allocated so that later calls on them are detected.
pub(crate) const QUARANTINE: usize = 4096;

#[allow(non_camel_case_types)]
/// Called by `tshm_close` in the last process to detach, while it still holds everything.
pub type tshm_last_close_fn = Option<unsafe extern "C" fn(h: *mut tshm, ctx: *mut c_void)>;

/// An open sidecar handle. Opaque to C.
#[allow(non_camel_case_types)]
pub struct tshm {
    state: AtomicU32,
    /// `Some` while open. Written only by `tshm_open` (before the pointer is handed out) and by
    /// `retire` (which the API forbids to run concurrently with other calls on the handle).
    coord: std::cell::UnsafeCell<Option<Coordinator>>,
    pub(crate) on_last: tshm_last_close_fn,
    pub(crate) ctx: *mut c_void,
}

struct Quarantined(*mut tshm);
// SAFETY: the pointers are only freed under the mutex and never dereferenced through the queue.
unsafe impl Send for Quarantined {}

static CLOSED_HANDLES: Mutex<VecDeque<Quarantined>> = Mutex::new(VecDeque::new());

thread_local! {
    /// The quarantine guard the forking thread holds across `fork()`.
    static HELD_FOR_FORK: std::cell::RefCell<Option<std::sync::MutexGuard<'static, VecDeque<Quarantined>>>> =
        const { std::cell::RefCell::new(None) };
}

/// Before `fork()`: take the quarantine, so a child (which may close inherited handles) never
/// inherits it locked by a thread that does not exist there.
extern "C" fn before_fork() {
    let g = CLOSED_HANDLES.lock().unwrap_or_else(|e| e.into_inner());
    HELD_FOR_FORK.with(|h| *h.borrow_mut() = Some(g));
}

/// After `fork()`, in the parent and in the child.
extern "C" fn after_fork() {
    HELD_FOR_FORK.with(|h| drop(h.borrow_mut().take()));
}

impl tshm {
    pub fn new(coord: Coordinator, on_last: tshm_last_close_fn, ctx: *mut c_void) -> *mut tshm {
        static ONCE: std::sync::Once = std::sync::Once::new();
        // SAFETY: registers handlers that only take and release the quarantine mutex.
        ONCE.call_once(|| unsafe {
            libc::pthread_atfork(Some(before_fork), Some(after_fork), Some(after_fork));
        });
        Box::into_raw(Box::new(tshm {
            state: AtomicU32::new(OPEN),
            coord: Some(coord).into(),
            on_last,
            ctx,
        }))
    }
}

/// Validates a handle pointer from C and returns its coordinator.
#[inline(always)]
pub(crate) fn coord<'a>(h: *const tshm) -> Result<&'a Coordinator> {
    if !h.is_null() {
        // SAFETY: non-null pointers come from tshm_open and stay allocated while open or
        // quarantined; a pointer older than the quarantine is a use-after-free by the caller.
        let r = unsafe { &*h };
        if r.state.load(Acquire) == OPEN {
            // SAFETY: while OPEN the cell is Some and only retire() (not concurrent) writes it.
            if let Some(c) = unsafe { &*r.coord.get() }.as_ref() {
                return Ok(c);
            }
        }
    }
    Err(bad_handle(h))
}

/// Why `h` is not an open handle.
#[cold]
#[inline(never)]
fn bad_handle(h: *const tshm) -> Error {
    if h.is_null() {
        return Error::Misuse("NULL handle".into());
    }
    // SAFETY: as in coord.
    match unsafe { &*h }.state.load(Acquire) {
        OPEN | CLOSED => Error::Misuse("handle is closed".into()),
        _ => Error::Misuse("not a tshm handle".into()),
    }
}

/// Marks an (already shut down) handle closed and moves it to the quarantine, freeing the
/// oldest quarantined handle when it is full.
pub(crate) fn retire(h: *mut tshm) {
    // SAFETY: h was validated by coord() and is owned by the caller of tshm_close, which the
    // API forbids to run concurrently with any other call on h.
    let coord = unsafe {
        (*h).state.store(CLOSED, Release);
        (*(*h).coord.get()).take()
    };
    drop(coord);
    let mut q = CLOSED_HANDLES.lock().unwrap_or_else(|e| e.into_inner());
    q.push_back(Quarantined(h));
    if q.len() > QUARANTINE {
        if let Some(Quarantined(old)) = q.pop_front() {
            // SAFETY: allocated by Box::into_raw in tshm::new; closed, so nothing uses it.
            drop(unsafe { Box::from_raw(old) });
        }
    }
}
