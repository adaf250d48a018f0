//! The C boundary's machinery: the panic barrier and the thread-local error detail.
//!
//! Owns: `tshm_errmsg()`/`tshm_errno()` state. Every exported function body runs inside
//! [`ffi_guard!`], which catches a panic (returning `TSHM_INTERNAL` with the panic message in
//! `tshm_errmsg()`), and reports failures through [`fail`], the only place an [`Error`] becomes an
//! `int`.

use crate::error::{Error, TSHM_INTERNAL};
use std::cell::{Cell, RefCell};
use std::ffi::{c_int, CString};

thread_local! {
    static MESSAGE: RefCell<Option<CString>> = const { RefCell::new(None) };
    static ERRNO: Cell<c_int> = const { Cell::new(0) };
}

/// Records `e` as this thread's last failure and returns its code.
pub fn fail(e: Error) -> c_int {
    let msg = CString::new(e.to_string().replace('\0', " ")).unwrap_or_default();
    MESSAGE.with(|m| *m.borrow_mut() = Some(msg));
    ERRNO.with(|n| n.set(e.errno()));
    e.code()
}

/// Maps a result to a code, recording the failure.
pub fn code(r: crate::error::Result<()>) -> c_int {
    match r {
        Ok(()) => 0,
        Err(e) => fail(e),
    }
}

pub fn message_ptr() -> *const std::ffi::c_char {
    MESSAGE.with(|m| m.borrow().as_ref().map_or(std::ptr::null(), |c| c.as_ptr()))
}

pub fn errno() -> c_int {
    ERRNO.with(|n| n.get())
}

/// Converts a caught panic payload into `TSHM_INTERNAL` with its message.
pub fn panicked(payload: Box<dyn std::any::Any + Send>) -> c_int {
    let what = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    let code = fail(Error::Internal(format!("panic inside libtshm: {what}")));
    debug_assert_eq!(code, TSHM_INTERNAL);
    code
}

/// Runs an exported function's body, turning a panic into `TSHM_INTERNAL`.
macro_rules! ffi_guard {
    ($body:block) => {{
        match std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| -> std::ffi::c_int {
            $body
        })) {
            Ok(rc) => rc,
            Err(p) => $crate::ffi::guard::panicked(p),
        }
    }};
}
pub(crate) use ffi_guard;
