//! Errors of the safe API and their C codes.
//!
//! Owns: the one mapping from a failure to a `TSHM_*` code. Every layer returns [`Error`]; only
//! the ffi layer turns it into an `int`. The numbers match SQLite's primary result codes where the
//! meaning matches, so that engine authors recognise them; codes are never renumbered.

use std::io;

/// A failure of a libtshm operation. The message is written for the engine author who reads
/// `tshm_errmsg()`: it says what was attempted and why it failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Another handle or process holds what was asked for; retrying later may succeed.
    #[error("busy: {0}")]
    Busy(String),
    /// The sidecar's contents are not a valid libtshm sidecar of this version.
    #[error("corrupt sidecar: {0}")]
    Corrupt(String),
    /// The caller broke the API contract (NULL argument, closed handle, releasing what it does
    /// not hold, wrong role). Nothing was changed.
    #[error("misuse: {0}")]
    Misuse(String),
    /// The sidecar is in use in an incompatible mode (EXCLUSIVE against SHARED).
    #[error("mode conflict: {0}")]
    Conflict(String),
    /// The operation or environment is not supported (e.g. a network filesystem).
    #[error("not supported: {0}")]
    NotSupported(String),
    /// The handle was opened read-only and the operation would write shared state.
    #[error("read-only: {0}")]
    ReadOnly(String),
    /// Nothing matched (e.g. a read-only open found no sidecar: use the legacy path).
    #[error("not found: {0}")]
    NotFound(String),
    /// A table in the sidecar is full.
    #[error("full: {0}")]
    Full(String),
    /// The sidecar (or the database path) could not be opened or created; `source` is the
    /// operating system's reason, reported by `tshm_errno()`.
    #[error("cannot open: {what}: {source}")]
    CantOpen {
        what: String,
        #[source]
        source: io::Error,
    },
    /// An operating-system call failed.
    #[error("I/O error: {what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    /// A bug in libtshm (for example a caught panic).
    #[error("internal error: {0}")]
    Internal(String),
}

pub type Result<T> = std::result::Result<T, Error>;

/// Success.
pub const TSHM_OK: i32 = 0;
/// Reserved: no function of this version returns it.
pub const TSHM_ERROR: i32 = 1;
/// A bug in libtshm, e.g. a panic caught at the C boundary. The handle should be closed.
pub const TSHM_INTERNAL: i32 = 2;
/// Permission denied by the operating system.
pub const TSHM_PERM: i32 = 3;
/// Contended: another handle or process holds the lock or role; retry later.
pub const TSHM_BUSY: i32 = 5;
/// Out of memory.
pub const TSHM_NOMEM: i32 = 7;
/// The handle is read-only and the call would write shared state.
pub const TSHM_READONLY: i32 = 8;
/// An operating-system call failed; `tshm_errno()` has the errno.
pub const TSHM_IOERR: i32 = 10;
/// The sidecar is corrupt or of an unknown layout.
pub const TSHM_CORRUPT: i32 = 11;
/// Not found. From `tshm_open` with `TSHM_OPEN_READONLY`: there is no sidecar; use the
/// engine's legacy read-only path.
pub const TSHM_NOTFOUND: i32 = 12;
/// A fixed-size table in the sidecar is full.
pub const TSHM_FULL: i32 = 13;
/// The sidecar could not be opened or created (e.g. its directory is not writable, or the
/// database path names a directory); `tshm_errno()` has the reason.
pub const TSHM_CANTOPEN: i32 = 14;
/// Reserved: no function of this version returns it.
pub const TSHM_PROTOCOL: i32 = 15;
/// API misuse: NULL argument, closed handle, releasing what is not held, wrong role.
pub const TSHM_MISUSE: i32 = 21;
/// Reserved: no function of this version returns it (an argument out of range is
/// `TSHM_MISUSE`).
pub const TSHM_RANGE: i32 = 25;
/// Not supported here (e.g. the sidecar is on a network filesystem).
pub const TSHM_NOTSUPPORTED: i32 = 40;
/// The sidecar is in use in an incompatible mode (EXCLUSIVE vs SHARED).
pub const TSHM_CONFLICT: i32 = 41;

impl Error {
    /// The C result code of this error.
    pub fn code(&self) -> i32 {
        match self {
            Error::Busy(_) => TSHM_BUSY,
            Error::Corrupt(_) => TSHM_CORRUPT,
            Error::Misuse(_) => TSHM_MISUSE,
            Error::Conflict(_) => TSHM_CONFLICT,
            Error::NotSupported(_) => TSHM_NOTSUPPORTED,
            Error::ReadOnly(_) => TSHM_READONLY,
            Error::NotFound(_) => TSHM_NOTFOUND,
            Error::Full(_) => TSHM_FULL,
            Error::Io { source, .. } => match source.raw_os_error() {
                Some(libc::EACCES) | Some(libc::EPERM) => TSHM_PERM,
                Some(libc::ENOMEM) => TSHM_NOMEM,
                Some(libc::EROFS) => TSHM_READONLY,
                _ => TSHM_IOERR,
            },
            Error::CantOpen { .. } => TSHM_CANTOPEN,
            Error::Internal(_) => TSHM_INTERNAL,
        }
    }

    /// The OS errno behind this error, or 0.
    pub fn errno(&self) -> i32 {
        match self {
            Error::Io { source, .. } | Error::CantOpen { source, .. } => {
                source.raw_os_error().unwrap_or(0)
            }
            _ => 0,
        }
    }

    /// Wraps the last OS error with what was being attempted.
    pub fn last_os(what: impl Into<String>) -> Error {
        Error::Io {
            what: what.into(),
            source: io::Error::last_os_error(),
        }
    }

    pub fn io(what: impl Into<String>, source: io::Error) -> Error {
        Error::Io {
            what: what.into(),
            source,
        }
    }
}

/// The static description of a result code; never NULL-equivalent, also for unknown codes.
pub fn errstr(code: i32) -> &'static str {
    match code {
        TSHM_OK => "not an error",
        TSHM_ERROR => "generic error",
        TSHM_INTERNAL => "internal error in libtshm",
        TSHM_PERM => "permission denied",
        TSHM_BUSY => "resource busy",
        TSHM_NOMEM => "out of memory",
        TSHM_READONLY => "handle or sidecar is read-only",
        TSHM_IOERR => "disk I/O error",
        TSHM_CORRUPT => "sidecar is corrupt",
        TSHM_NOTFOUND => "not found",
        TSHM_FULL => "table is full",
        TSHM_CANTOPEN => "unable to open the sidecar",
        TSHM_PROTOCOL => "locking protocol violation",
        TSHM_MISUSE => "library routine called out of sequence or with bad arguments",
        TSHM_RANGE => "argument out of range",
        TSHM_NOTSUPPORTED => "operation not supported here",
        TSHM_CONFLICT => "sidecar in use in an incompatible mode",
        _ => "unknown error code",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_has_a_distinct_description_and_unknown_codes_are_named() {
        let codes = [
            TSHM_OK,
            TSHM_ERROR,
            TSHM_INTERNAL,
            TSHM_PERM,
            TSHM_BUSY,
            TSHM_NOMEM,
            TSHM_READONLY,
            TSHM_IOERR,
            TSHM_CORRUPT,
            TSHM_NOTFOUND,
            TSHM_FULL,
            TSHM_CANTOPEN,
            TSHM_PROTOCOL,
            TSHM_MISUSE,
            TSHM_RANGE,
            TSHM_NOTSUPPORTED,
            TSHM_CONFLICT,
        ];
        let mut seen = std::collections::HashSet::new();
        for c in codes {
            assert!(seen.insert(errstr(c)), "duplicate description for {c}");
            assert_ne!(errstr(c), errstr(9999));
        }
        assert_eq!(errstr(-1), "unknown error code");
    }

    #[test]
    fn io_errors_map_to_specific_codes() {
        let e = Error::io("open", io::Error::from_raw_os_error(libc::EACCES));
        assert_eq!(e.code(), TSHM_PERM);
        assert_eq!(e.errno(), libc::EACCES);
        let e = Error::io("write", io::Error::from_raw_os_error(libc::ENOSPC));
        assert_eq!(e.code(), TSHM_IOERR);
    }
}
