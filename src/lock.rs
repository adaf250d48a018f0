//! Kernel byte-range locks on the sidecar's file descriptor.
//!
//! Owns: every `fcntl` call in the crate. Two backends speak the same interface:
//!
//! * [`Backend::Ofd`] — Linux open-file-description locks (`F_OFD_SETLK`, `F_OFD_GETLK`). They
//!   belong to the open file description, so a stray `close()` of another descriptor on the same
//!   file in this process cannot drop them, and a lock can be converted shared ⇄ exclusive in
//!   place.
//! * [`Backend::Posix`] — classic process-associated record locks (`F_SETLK`). Any `close()` of any
//!   descriptor for the file drops all of the process's locks, which is why the process-local
//!   registry keeps exactly one descriptor per sidecar inode.
//!
//! Within one process both backends see no conflict between two holders (same OFD, same process);
//! the per-node lock table in [`crate::node`] arbitrates between handles of one process. This
//! module therefore only answers "does another *process* hold a conflicting lock".
//!
//! The backend is chosen once per sidecar per process: OFD where the kernel supports it, POSIX
//! where it answers `EINVAL`, or POSIX when forced by `TSHM_OPEN_POSIX_LOCKS` or the environment
//! variable `TSHM_LOCK_BACKEND=posix` (so the whole test suite can run on both).

use crate::error::{Error, Result};
use std::os::fd::RawFd;

/// Which kernel lock family a sidecar uses in this process.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Ofd,
    Posix,
}

impl Backend {
    pub fn name(self) -> &'static str {
        match self {
            Backend::Ofd => "ofd",
            Backend::Posix => "posix",
        }
    }

    /// The backend requested by the environment (`TSHM_LOCK_BACKEND=posix|ofd`), if any.
    pub fn from_env() -> Option<Backend> {
        match std::env::var("TSHM_LOCK_BACKEND").ok()?.as_str() {
            "posix" => Some(Backend::Posix),
            "ofd" => Some(Backend::Ofd),
            _ => None,
        }
    }
}

/// Lock strength.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Shared,
    Exclusive,
}

impl Kind {
    fn l_type(self) -> libc::c_short {
        match self {
            Kind::Shared => libc::F_RDLCK as libc::c_short,
            Kind::Exclusive => libc::F_WRLCK as libc::c_short,
        }
    }
}

fn flock(l_type: libc::c_short, start: u64, len: u64) -> libc::flock {
    // SAFETY: flock is a plain C struct for which all-zero is a valid value.
    let mut fl: libc::flock = unsafe { std::mem::zeroed() };
    fl.l_type = l_type;
    fl.l_whence = libc::SEEK_SET as libc::c_short;
    fl.l_start = start as libc::off_t;
    fl.l_len = len as libc::off_t;
    fl.l_pid = 0; // OFD requires 0
    fl
}

fn cmd(backend: Backend, setlk: bool, wait: bool) -> libc::c_int {
    match (backend, setlk, wait) {
        (Backend::Ofd, true, false) => libc::F_OFD_SETLK,
        (Backend::Ofd, true, true) => libc::F_OFD_SETLKW,
        (Backend::Ofd, false, _) => libc::F_OFD_GETLK,
        (Backend::Posix, true, false) => libc::F_SETLK,
        (Backend::Posix, true, true) => libc::F_SETLKW,
        (Backend::Posix, false, _) => libc::F_GETLK,
    }
}

fn fcntl_lock(fd: RawFd, cmd: libc::c_int, fl: &mut libc::flock) -> std::io::Result<()> {
    loop {
        // SAFETY: fd is a descriptor owned by the caller's node; fl is a valid flock.
        let rc = unsafe { libc::fcntl(fd, cmd, fl as *mut libc::flock) };
        if rc == 0 {
            return Ok(());
        }
        let err = std::io::Error::last_os_error();
        if err.raw_os_error() != Some(libc::EINTR) {
            return Err(err);
        }
    }
}

/// Tries to take `len` bytes at `start` in mode `kind` without waiting. `Ok(false)` means another
/// process holds a conflicting lock. Converting a lock this process (OFD: this descriptor) already
/// holds is done in place and atomically.
pub fn try_lock(fd: RawFd, backend: Backend, start: u64, len: u64, kind: Kind) -> Result<bool> {
    let mut fl = flock(kind.l_type(), start, len);
    match fcntl_lock(fd, cmd(backend, true, false), &mut fl) {
        Ok(()) => Ok(true),
        Err(e) if matches!(e.raw_os_error(), Some(libc::EAGAIN) | Some(libc::EACCES)) => Ok(false),
        Err(e) => Err(Error::io(
            format!("fcntl lock byte {start} ({})", backend.name()),
            e,
        )),
    }
}

/// Takes `len` bytes at `start`, waiting for other processes. Used only for the short
/// open/close serialization byte, never while waiting could deadlock (no other lock is awaited
/// while it is held).
pub fn lock_wait(fd: RawFd, backend: Backend, start: u64, len: u64, kind: Kind) -> Result<()> {
    let mut fl = flock(kind.l_type(), start, len);
    fcntl_lock(fd, cmd(backend, true, true), &mut fl).map_err(|e| {
        Error::io(
            format!("fcntl wait for byte {start} ({})", backend.name()),
            e,
        )
    })
}

/// Releases `len` bytes at `start`.
pub fn unlock(fd: RawFd, backend: Backend, start: u64, len: u64) -> Result<()> {
    let mut fl = flock(libc::F_UNLCK as libc::c_short, start, len);
    fcntl_lock(fd, cmd(backend, true, false), &mut fl)
        .map_err(|e| Error::io(format!("fcntl unlock byte {start} ({})", backend.name()), e))
}

/// What another process holds on a byte, as seen by a probe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Held {
    Free,
    Shared,
    Exclusive,
}

/// Asks the kernel whether another process (OFD: another open file description) holds a lock on
/// `start` that would conflict with an exclusive lock. Locks of this process are invisible to the
/// POSIX probe and locks of this descriptor to the OFD probe: callers consult the node's lock table
/// first. The POSIX probe reports the holder's pid, the OFD probe reports -1.
pub fn probe(fd: RawFd, backend: Backend, start: u64) -> Result<(Held, i32)> {
    let mut fl = flock(libc::F_WRLCK as libc::c_short, start, 1);
    fcntl_lock(fd, cmd(backend, false, false), &mut fl)
        .map_err(|e| Error::io(format!("fcntl probe byte {start} ({})", backend.name()), e))?;
    let held = match fl.l_type as libc::c_int {
        libc::F_UNLCK => Held::Free,
        libc::F_RDLCK => Held::Shared,
        _ => Held::Exclusive,
    };
    Ok((held, fl.l_pid))
}

/// Picks the backend for a descriptor: the requested one, or OFD when the kernel accepts an OFD
/// probe, POSIX otherwise.
pub fn choose(fd: RawFd, forced: Option<Backend>) -> Backend {
    if let Some(b) = forced.or_else(Backend::from_env) {
        return b;
    }
    let mut fl = flock(libc::F_WRLCK as libc::c_short, 0, 1);
    match fcntl_lock(fd, libc::F_OFD_GETLK, &mut fl) {
        Ok(()) => Backend::Ofd,
        Err(_) => Backend::Posix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::AsRawFd;

    fn temp_file() -> std::fs::File {
        let dir = std::env::temp_dir().join(format!("tshm-lock-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join(format!("f{}", rand_suffix()));
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(p)
            .unwrap()
    }

    fn rand_suffix() -> u64 {
        use std::sync::atomic::{AtomicU64, Ordering};
        static N: AtomicU64 = AtomicU64::new(0);
        N.fetch_add(1, Ordering::Relaxed)
    }

    #[test]
    fn ofd_locks_on_two_descriptions_conflict_and_convert_in_place() {
        let f = temp_file();
        let g = f.try_clone().unwrap(); // same description: compatible
        assert!(try_lock(f.as_raw_fd(), Backend::Ofd, 5, 1, Kind::Exclusive).unwrap());
        assert!(try_lock(g.as_raw_fd(), Backend::Ofd, 5, 1, Kind::Exclusive).unwrap());
        let path = format!("/proc/self/fd/{}", f.as_raw_fd());
        let other = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .unwrap();
        assert!(!try_lock(other.as_raw_fd(), Backend::Ofd, 5, 1, Kind::Shared).unwrap());
        assert_eq!(
            probe(other.as_raw_fd(), Backend::Ofd, 5).unwrap().0,
            Held::Exclusive
        );
        // downgrade in place lets the other description share it
        assert!(try_lock(f.as_raw_fd(), Backend::Ofd, 5, 1, Kind::Shared).unwrap());
        assert!(try_lock(other.as_raw_fd(), Backend::Ofd, 5, 1, Kind::Shared).unwrap());
        assert!(!try_lock(f.as_raw_fd(), Backend::Ofd, 5, 1, Kind::Exclusive).unwrap());
        unlock(other.as_raw_fd(), Backend::Ofd, 5, 1).unwrap();
        assert!(try_lock(f.as_raw_fd(), Backend::Ofd, 5, 1, Kind::Exclusive).unwrap());
        assert_eq!(
            probe(other.as_raw_fd(), Backend::Ofd, 6).unwrap().0,
            Held::Free
        );
    }

    #[test]
    fn the_kernel_supports_ofd_here() {
        let f = temp_file();
        assert_eq!(
            choose(f.as_raw_fd(), None),
            Backend::from_env().unwrap_or(Backend::Ofd)
        );
    }
}
