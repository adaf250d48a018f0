//! The sidecar file and its mapping.
//!
//! Owns: creating and opening `<db>-tshm` (`O_CLOEXEC | O_NOFOLLOW`, the database file's
//! permissions and owner), refusing network filesystems, growing the file by writing real pages
//! (never a sparse `ftruncate` whose pages could SIGBUS on a full disk), giving storage to the
//! holes of a sidecar made sparse from outside before a writable mapping can store into them,
//! mapping it `MAP_SHARED`, and the typed atomic views of its bytes.
//!
//! Invariant: every access to shared memory goes through [`Shm::u32`] / [`Shm::u64`], which hand
//! out `&AtomicU32` / `&AtomicU64` for an in-bounds, naturally aligned offset. Offsets come from
//! [`crate::layout`] constants or from a [`Geometry`] that [`read_header`] validated against the
//! mapped length, so no value read from the file can steer an access out of bounds.

use crate::error::{Error, Result};
use crate::layout::*;
use std::ffi::CString;
use std::os::fd::{FromRawFd, RawFd};
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering::Relaxed};

/// A `MAP_SHARED` mapping of the sidecar. Only atomics are ever formed over it.
pub struct Shm {
    map: memmap2::MmapRaw,
    writable: bool,
}

// SAFETY: the mapping is only accessed through atomics (see the module invariant).
unsafe impl Send for Shm {}
unsafe impl Sync for Shm {}

impl Shm {
    /// Maps the first `len` bytes of the file open at `fd`.
    pub fn map(fd: RawFd, len: u64, writable: bool) -> Result<Shm> {
        // SAFETY: the File is wrapped in ManuallyDrop, so the caller keeps ownership of fd.
        let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(fd) });
        let mut opts = memmap2::MmapOptions::new();
        opts.len(len as usize);
        let map = if writable {
            opts.map_raw(&*file)
        } else {
            opts.map_raw_read_only(&*file)
        };
        let map = map.map_err(|e| Error::io("mmap sidecar", e))?;
        Ok(Shm { map, writable })
    }

    pub fn mapped_len(&self) -> usize {
        self.map.len()
    }

    pub fn writable(&self) -> bool {
        self.writable
    }

    #[inline]
    pub fn u32(&self, off: usize) -> &AtomicU32 {
        assert!(
            off.is_multiple_of(4) && off + 4 <= self.map.len(),
            "shm offset {off} out of bounds"
        );
        // SAFETY: in bounds and aligned (page-aligned mapping); the memory lives as long as self
        // and is only ever accessed atomically.
        unsafe { &*(self.map.as_mut_ptr().add(off) as *const AtomicU32) }
    }

    #[inline]
    pub fn u64(&self, off: usize) -> &AtomicU64 {
        assert!(
            off.is_multiple_of(8) && off + 8 <= self.map.len(),
            "shm offset {off} out of bounds"
        );
        // SAFETY: as for u32.
        unsafe { &*(self.map.as_mut_ptr().add(off) as *const AtomicU64) }
    }

    /// `N` consecutive `u64`s at `off`, bounds-checked once (for words read together on a hot
    /// path).
    #[inline]
    pub fn u64s<const N: usize>(&self, off: usize) -> &[AtomicU64; N] {
        assert!(
            off.is_multiple_of(8) && off + 8 * N <= self.map.len(),
            "shm offset {off} (+{N} words) out of bounds"
        );
        // SAFETY: as for u32; an array of atomics has their alignment.
        unsafe { &*(self.map.as_mut_ptr().add(off) as *const [AtomicU64; N]) }
    }

    /// The geometry bytes (0..56) as read now, for the checksum.
    fn geometry_bytes(&self) -> [u8; H_GEOM_SUM] {
        let mut out = [0u8; H_GEOM_SUM];
        for (i, chunk) in out.chunks_mut(8).enumerate() {
            chunk.copy_from_slice(&self.u64(i * 8).load(Relaxed).to_ne_bytes());
        }
        out
    }
}

/// Bytes in the first pool window; window `w` is `POOL_WINDOW0 << w` bytes long.
const POOL_WINDOW0: u64 = 1 << 20;
/// Windows a pool can have: together they span `POOL_WINDOW0 * (2^POOL_WINDOWS - 1)` bytes.
const POOL_WINDOWS: usize = 40;

/// The growable part of the sidecar (file offsets from `base_len` on), mapped lazily in windows
/// of doubling size so that a mapped byte never moves while the file grows: window `w` covers
/// pool offsets `[W0 * (2^w - 1), W0 * (2^(w+1) - 1))`.
///
/// Invariant: a pointer is formed only for an offset below the file length observed by `fstat`
/// (so an access can never fault beyond the end of the file, whatever a corrupt counter says),
/// aligned to the size of the atomic formed over it.
pub struct Pool {
    fd: RawFd,
    base: u64,
    writable: bool,
    windows: [std::sync::OnceLock<memmap2::MmapRaw>; POOL_WINDOWS],
    /// Pool bytes the file was known to hold at the last `fstat`.
    known: AtomicU64,
}

// SAFETY: as for Shm, only atomics are formed over the mappings.
unsafe impl Send for Pool {}
unsafe impl Sync for Pool {}

impl Pool {
    pub fn new(fd: RawFd, base: u64, writable: bool) -> Pool {
        Pool {
            fd,
            base,
            writable,
            windows: std::array::from_fn(|_| std::sync::OnceLock::new()),
            known: AtomicU64::new(0),
        }
    }

    /// File offset of pool offset 0.
    pub fn base(&self) -> u64 {
        self.base
    }

    fn window_of(off: u64) -> (usize, u64) {
        let k = off / POOL_WINDOW0 + 1;
        let w = 63 - k.leading_zeros() as u64;
        (w as usize, off - POOL_WINDOW0 * ((1u64 << w) - 1))
    }

    fn ptr(&self, off: u64, size: u64) -> Result<*mut u8> {
        self.range(off, size, size)
    }

    /// A pointer to `len` bytes at pool offset `off` (aligned to `align`), which must lie in one
    /// 64 KiB unit. Valid for as long as the pool lives.
    pub fn range(&self, off: u64, len: u64, align: u64) -> Result<*mut u8> {
        let end = off
            .checked_add(len)
            .ok_or_else(|| Error::Corrupt(format!("index offset {off} overflows")))?;
        if !off.is_multiple_of(align) || len == 0 || off / POOL_UNIT != (end - 1) / POOL_UNIT {
            return Err(Error::Corrupt(format!("misaligned index offset {off}")));
        }
        if end > self.known.load(Relaxed) {
            let have = file_len(self.fd)?.saturating_sub(self.base);
            self.known.fetch_max(have, Relaxed);
            if end > have {
                return Err(Error::Corrupt(format!(
                    "index offset {off} lies beyond the end of the sidecar"
                )));
            }
        }
        let (w, inner) = Self::window_of(off);
        if w >= POOL_WINDOWS {
            return Err(Error::Corrupt(format!("index offset {off} out of range")));
        }
        let map = match self.windows[w].get() {
            Some(m) => m,
            None => {
                let start = self.base + POOL_WINDOW0 * ((1u64 << w) - 1);
                let m = self.map_window(start, POOL_WINDOW0 << w)?;
                let _ = self.windows[w].set(m);
                self.windows[w].get().expect("window set above")
            }
        };
        // SAFETY: inner < the window's length by construction of window_of.
        Ok(unsafe { map.as_mut_ptr().add(inner as usize) })
    }

    fn map_window(&self, start: u64, len: u64) -> Result<memmap2::MmapRaw> {
        // SAFETY: ManuallyDrop keeps the node's descriptor open.
        let file = std::mem::ManuallyDrop::new(unsafe { std::fs::File::from_raw_fd(self.fd) });
        let mut opts = memmap2::MmapOptions::new();
        opts.offset(start).len(len as usize);
        if self.writable {
            opts.map_raw(&*file)
        } else {
            opts.map_raw_read_only(&*file)
        }
        .map_err(|e| Error::io("map sidecar index window", e))
    }

    /// Pool bytes the file holds now.
    pub fn file_bytes(&self) -> Result<u64> {
        let have = file_len(self.fd)?.saturating_sub(self.base);
        self.known.fetch_max(have, Relaxed);
        Ok(have)
    }

    /// The `u32` at pool offset `off`, if the file holds it.
    pub fn u32(&self, off: u64) -> Result<&AtomicU32> {
        // SAFETY: in bounds of a live mapping, aligned, accessed only atomically.
        Ok(unsafe { &*(self.ptr(off, 4)? as *const AtomicU32) })
    }

    /// The `u64` at pool offset `off`, if the file holds it.
    pub fn u64(&self, off: u64) -> Result<&AtomicU64> {
        // SAFETY: as for u32.
        Ok(unsafe { &*(self.ptr(off, 8)? as *const AtomicU64) })
    }

    /// Writes `len` zero bytes at pool offset `off` (real pages, not a hole), so that the pages
    /// exist before any counter announces them. Disk full, quota or file-size limits give
    /// [`Error::Full`].
    pub fn zero(&self, off: u64, len: u64) -> Result<()> {
        write_zeros(self.fd, self.base + off, len)?;
        self.known.fetch_max(off + len, Relaxed);
        Ok(())
    }
}

/// Validates the header of a mapped sidecar and returns its geometry. Every field is checked
/// before it is used to compute an offset.
pub fn read_header(shm: &Shm) -> std::result::Result<Geometry, String> {
    if shm.mapped_len() < PAGE as usize {
        return Err(format!(
            "file is {} bytes, shorter than the {PAGE}-byte header",
            shm.mapped_len()
        ));
    }
    let magic = shm.u32(H_MAGIC).load(Relaxed);
    if magic != MAGIC {
        return Err(format!("bad magic {magic:#010x}"));
    }
    let version = shm.u32(H_VERSION).load(Relaxed);
    if version != VERSION {
        return Err(format!(
            "layout version {version}, this library speaks {VERSION}"
        ));
    }
    if shm.u32(H_ENDIAN).load(Relaxed) != ENDIAN_TAG {
        return Err("written by a machine of another byte order".into());
    }
    let sum = geometry_sum(&shm.geometry_bytes());
    if shm.u64(H_GEOM_SUM).load(Relaxed) != sum {
        return Err("header checksum mismatch".into());
    }
    if shm.u32(H_HEADER_BYTES).load(Relaxed) as u64 != PAGE {
        return Err("bad header size".into());
    }
    let g = Geometry {
        readers: shm.u32(H_READERS).load(Relaxed),
        reader_strategy: shm.u32(H_READER_STRATEGY).load(Relaxed),
        instances: shm.u32(H_INSTANCES).load(Relaxed),
        role_strategy: shm.u32(H_ROLE_STRATEGY).load(Relaxed),
        readers_off: shm.u64(H_READERS_OFF).load(Relaxed),
        instances_off: shm.u64(H_INSTANCES_OFF).load(Relaxed),
        base_len: shm.u64(H_BASE_LEN).load(Relaxed),
    };
    g.validate()?;
    if g.base_len > shm.mapped_len() as u64 {
        return Err(format!(
            "file is {} bytes but its tables need {}",
            shm.mapped_len(),
            g.base_len
        ));
    }
    Ok(g)
}

/// Writes a fresh header for `g` and clears every table. Only called by a process that holds the
/// lifetime byte exclusively (provably alone), on a mapping at least `g.base_len` long.
pub fn write_header(shm: &Shm, g: &Geometry) {
    for off in (0..g.base_len as usize).step_by(8) {
        shm.u64(off).store(0, Relaxed);
    }
    for i in 0..g.readers {
        shm.u64(g.reader_slot(i) + 8).store(NO_FRAME, Relaxed);
    }
    shm.u32(H_VERSION).store(VERSION, Relaxed);
    shm.u32(H_ENDIAN).store(ENDIAN_TAG, Relaxed);
    shm.u32(H_HEADER_BYTES).store(PAGE as u32, Relaxed);
    shm.u32(H_READERS).store(g.readers, Relaxed);
    shm.u32(H_READER_STRATEGY).store(g.reader_strategy, Relaxed);
    shm.u32(H_INSTANCES).store(g.instances, Relaxed);
    shm.u32(H_ROLE_STRATEGY).store(g.role_strategy, Relaxed);
    shm.u64(H_READERS_OFF).store(g.readers_off, Relaxed);
    shm.u64(H_INSTANCES_OFF).store(g.instances_off, Relaxed);
    shm.u64(H_BASE_LEN).store(g.base_len, Relaxed);
    // magic last among the geometry, then the checksum over all of it
    shm.u32(H_MAGIC).store(MAGIC, Relaxed);
    let sum = geometry_sum(&shm.geometry_bytes());
    shm.u64(H_GEOM_SUM).store(sum, Relaxed);
}

/// `<db_path>-tshm`.
pub fn sidecar_path(db_path: &Path) -> std::path::PathBuf {
    let mut s = db_path.as_os_str().to_owned();
    s.push("-tshm");
    s.into()
}

fn cpath(p: &Path) -> Result<CString> {
    use std::os::unix::ffi::OsStrExt;
    CString::new(p.as_os_str().as_bytes())
        .map_err(|_| Error::Misuse("path contains a NUL byte".into()))
}

/// Filesystems whose byte-range locks or shared mappings are not coherent across machines.
pub fn network_fs_name(magic: i64) -> Option<&'static str> {
    Some(match magic as u32 {
        0x6969 => "NFS",
        0x517B => "SMB",
        0xFF53_4D42 => "CIFS",
        0xFE53_4D42 => "SMB2",
        0x00C3_6400 => "Ceph",
        0x0116_1970 => "GFS2",
        0x0BD0_0BD0 => "Lustre",
        0x7461_636f => "OCFS2",
        0x5346_414F | 0x6B41_4653 => "AFS",
        0x0102_1997 => "9P",
        _ => return None,
    })
}

/// Refuses a directory on a network filesystem. In a build with test hooks the test setting
/// `TSHM_TEST_FS_MAGIC` substitutes the filesystem magic the kernel reports.
pub fn check_local_fs(dir: &Path) -> Result<()> {
    let magic = match crate::testpoint::setting(c"TSHM_TEST_FS_MAGIC").and_then(|s| parse_magic(&s))
    {
        Some(m) => m,
        None => {
            let c = cpath(dir)?;
            // SAFETY: statfs is plain data; c is NUL-terminated.
            let mut st: libc::statfs = unsafe { std::mem::zeroed() };
            if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
                return Err(Error::last_os(format!("statfs {}", dir.display())));
            }
            st.f_type as i64
        }
    };
    match network_fs_name(magic) {
        Some(name) => Err(Error::NotSupported(format!(
            "{} is on a network filesystem ({name}); its locks and shared mappings are not coherent \
             across machines (pass TSHM_OPEN_ALLOW_NETFS to override)",
            dir.display()
        ))),
        None => Ok(()),
    }
}

fn parse_magic(s: &str) -> Option<i64> {
    let s = s.trim();
    match s.strip_prefix("0x") {
        Some(h) => i64::from_str_radix(h, 16).ok(),
        None => s.parse().ok(),
    }
}

/// The sidecar's descriptor and whether it was opened for writing.
pub struct Opened {
    pub fd: RawFd,
    pub writable: bool,
}

/// Opens (creating when `create` and not `readonly`) the sidecar. Read-write whenever the file
/// allows it, even for `readonly`; a sidecar the caller may not write is opened read-only. A
/// missing sidecar that is not to be created is [`Error::NotFound`]; one that cannot be created
/// (or opened at all) is [`Error::CantOpen`] with the system's reason.
pub fn open_sidecar(db_path: &Path, readonly: bool, create: bool) -> Result<Opened> {
    let path = sidecar_path(db_path);
    let c = cpath(&path)?;
    let base = libc::O_CLOEXEC | libc::O_NOFOLLOW;
    // Only a regular file is a sidecar: anything else at the path is refused before it is
    // opened (a device's open has effects), and the open is non-blocking so that a FIFO swapped
    // in meanwhile cannot hang it (the check after the open then refuses it). A lease holder
    // makes a non-blocking open fail with EAGAIN: then it waits for the lease like any open.
    let not_regular = || std::io::Error::from_raw_os_error(libc::EINVAL);
    if std::fs::symlink_metadata(&path).is_ok_and(|m| !m.file_type().is_file()) {
        return Err(Error::CantOpen {
            what: format!("{} is not a regular file", path.display()),
            source: not_regular(),
        });
    }
    let open = |flags: libc::c_int, mode: libc::mode_t| {
        // SAFETY: c is NUL-terminated.
        let mut fd =
            unsafe { libc::open(c.as_ptr(), flags | libc::O_NONBLOCK, mode as libc::c_uint) };
        if fd < 0 && std::io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN) {
            // SAFETY: as above.
            fd = unsafe { libc::open(c.as_ptr(), flags, mode as libc::c_uint) };
        }
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        // SAFETY: fd is open; fstat fills plain data.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        let regular =
            unsafe { libc::fstat(fd, &mut st) } == 0 && st.st_mode & libc::S_IFMT == libc::S_IFREG;
        if !regular {
            unsafe { libc::close(fd) };
            return Err(not_regular());
        }
        // SAFETY: clears O_NONBLOCK on a descriptor we own.
        unsafe { libc::fcntl(fd, libc::F_SETFL, 0) };
        Ok(fd)
    };
    let missing = || {
        Error::NotFound(if readonly {
            format!(
                "no sidecar at {}; a read-only opener cannot create one (use the engine's \
                 legacy read-only path)",
                path.display()
            )
        } else {
            format!("no sidecar at {}", path.display())
        })
    };
    let cant_open = |what: &str, e: std::io::Error| Error::CantOpen {
        what: format!("{what} {}", path.display()),
        source: e,
    };
    // Read-write whenever the file allows it, also for a read-only handle: the process keeps
    // one descriptor per sidecar, and a later writable handle must be able to share it.
    let db_meta = std::fs::metadata(db_path).ok();
    let mode = db_meta.as_ref().map(|m| {
        use std::os::unix::fs::PermissionsExt;
        m.permissions().mode() & 0o666
    });
    let create = create && !readonly;
    let flags = base | libc::O_RDWR | if create { libc::O_CREAT } else { 0 };
    let denied = match open(flags, mode.unwrap_or(0o644) as libc::mode_t) {
        Ok(fd) => {
            if let (Some(m), true) = (db_meta, create) {
                match_owner(fd, &m, mode.unwrap_or(0o644));
            }
            return Ok(Opened { fd, writable: true });
        }
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::EACCES) | Some(libc::EROFS) | Some(libc::EPERM)
            ) =>
        {
            e
        }
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && !create => return Err(missing()),
        Err(e) => return Err(cant_open("open", e)),
    };
    match open(base | libc::O_RDONLY, 0) {
        Ok(fd) => Ok(Opened {
            fd,
            writable: false,
        }),
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) && readonly => Err(missing()),
        // Missing and not creatable: the reason is the one creating it met.
        Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Err(cant_open("create", denied)),
        Err(e) => Err(cant_open("open", e)),
    }
}

/// Gives a sidecar we may have just created the database's owner and permission bits, as SQLite
/// does for its -shm file, so that another user of the database can open it. Best effort.
fn match_owner(fd: RawFd, db: &std::fs::Metadata, mode: u32) {
    use std::os::unix::fs::MetadataExt;
    // SAFETY: fd is open; fstat fills plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return;
    }
    if st.st_size == 0 {
        unsafe {
            libc::fchmod(fd, mode as libc::mode_t);
            if libc::geteuid() == 0 && (st.st_uid != db.uid() || st.st_gid != db.gid()) {
                libc::fchown(fd, db.uid(), db.gid());
            }
        }
    }
}

/// [`Error::Full`] when a file of `end` bytes would exceed the file-size limit.
fn check_size_limit(end: u64) -> Result<()> {
    // SAFETY: getrlimit fills plain data.
    let mut rl: libc::rlimit = unsafe { std::mem::zeroed() };
    if unsafe { libc::getrlimit(libc::RLIMIT_FSIZE, &mut rl) } != 0 {
        return Err(Error::last_os("getrlimit RLIMIT_FSIZE"));
    }
    if rl.rlim_cur != libc::RLIM_INFINITY && end > rl.rlim_cur as u64 {
        return Err(Error::Full(format!(
            "growing the sidecar to {end} bytes would pass the file-size limit of {} bytes",
            rl.rlim_cur
        )));
    }
    Ok(())
}

/// The file's current length.
pub fn file_len(fd: RawFd) -> Result<u64> {
    // SAFETY: fstat fills plain data.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(Error::last_os("fstat sidecar"));
    }
    Ok(st.st_size as u64)
}

/// (device, inode) of the file open at `fd`.
pub fn file_key(fd: RawFd) -> Result<(u64, u64)> {
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(fd, &mut st) } != 0 {
        return Err(Error::last_os("fstat sidecar"));
    }
    Ok((st.st_dev, st.st_ino))
}

/// Gives storage to every page of the first `len` bytes that has none (a hole: the file was
/// made sparse from outside, e.g. by a sparse copy or an `ftruncate`), so that a store through
/// the mapping never faults on a page the filesystem cannot allocate (SIGBUS on a full disk).
/// Finding no hole costs one `lseek`. Holes are allocated in place with `fallocate` (their
/// bytes read as zeros before and after, so this is safe while others use the file); where
/// the filesystem has no `fallocate`, a process `alone` on the file writes zeros over them
/// instead, and one that is not leaves them (the first opener filled them). No room for them
/// is [`Error::Full`].
pub fn fill_holes(fd: RawFd, len: u64, alone: bool) -> Result<()> {
    let Some(hole) = first_hole(fd, len) else {
        return Ok(());
    };
    if allocate(fd, hole, len - hole, libc::FALLOC_FL_KEEP_SIZE)? || !alone {
        return Ok(());
    }
    // No fallocate here, and alone: nobody stores into the holes meanwhile, so zeros written
    // over them lose nothing.
    let mut off = hole;
    while off < len {
        let data = seek(fd, off, libc::SEEK_DATA).unwrap_or(len).min(len);
        write_zeros(fd, off, data - off)?;
        off = seek(fd, data, libc::SEEK_HOLE).unwrap_or(len);
    }
    Ok(())
}

fn seek(fd: RawFd, off: u64, whence: libc::c_int) -> Option<u64> {
    // SAFETY: lseek on an owned descriptor; SEEK_DATA/SEEK_HOLE do not move data.
    let r = unsafe { libc::lseek(fd, off as libc::off_t, whence) };
    (r >= 0).then_some(r as u64)
}

/// The first hole (a page without storage, or on some filesystems one given storage that
/// nothing wrote yet) below `len`, if any. One `lseek`; a filesystem without SEEK_HOLE reports
/// none.
fn first_hole(fd: RawFd, len: u64) -> Option<u64> {
    seek(fd, 0, libc::SEEK_HOLE).filter(|h| *h < len)
}

/// Gives storage to `[off, off + len)` with `fallocate(mode)`, keeping every byte already
/// written. `Ok(false)`: the filesystem has no `fallocate` (test point `hole_storage` acts so).
/// No room is [`Error::Full`].
fn allocate(fd: RawFd, off: u64, len: u64, mode: libc::c_int) -> Result<bool> {
    if crate::testpoint::fail("hole_storage") {
        return Ok(false);
    }
    loop {
        // SAFETY: fallocate on an owned descriptor.
        let rc = unsafe { libc::fallocate(fd, mode, off as libc::off_t, len as libc::off_t) };
        if rc == 0 {
            return Ok(true);
        }
        let e = std::io::Error::last_os_error();
        match e.raw_os_error() {
            Some(libc::EINTR) => continue,
            Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => {
                return Err(Error::Full(format!(
                    "giving storage to the sidecar's pages without any (it is sparse) failed: {e}"
                )))
            }
            Some(libc::EOPNOTSUPP) | Some(libc::ENOSYS) | Some(libc::EINVAL) => return Ok(false),
            _ => return Err(Error::io("fallocate sidecar", e)),
        }
    }
}

/// Grows the file to at least `len` bytes by writing zero pages, so that every page of the
/// mapping has disk blocks behind it (a full disk fails here, not as SIGBUS later).
pub fn grow(fd: RawFd, len: u64) -> Result<()> {
    let cur = file_len(fd)? / PAGE * PAGE;
    if cur < len {
        write_zeros(fd, cur, len - cur)?;
    }
    Ok(())
}

/// Writes zeros over `[off, off + len)`. A write reaching past the process's file-size limit
/// (`RLIMIT_FSIZE`) is refused up front with [`Error::Full`]: attempting it would raise
/// SIGXFSZ, whose default disposition kills the process (and the signal dispositions are the
/// application's, never changed here).
fn write_zeros(fd: RawFd, mut off: u64, len: u64) -> Result<()> {
    static ZEROS: [u8; 65536] = [0u8; 65536];
    let end = off
        .checked_add(len)
        .ok_or_else(|| Error::Full("sidecar offset overflows".into()))?;
    check_size_limit(end)?;
    while off < end {
        let n = (end - off).min(ZEROS.len() as u64) as usize;
        // SAFETY: ZEROS is a valid buffer of at least n bytes.
        let rc = unsafe { libc::pwrite(fd, ZEROS.as_ptr().cast(), n, off as libc::off_t) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::ENOSPC) | Some(libc::EDQUOT) | Some(libc::EFBIG) => {
                    return Err(Error::Full(format!("growing the sidecar failed: {e}")))
                }
                _ => return Err(Error::io("grow sidecar", e)),
            }
        }
        if rc == 0 {
            return Err(Error::Full(
                "growing the sidecar wrote nothing (disk full)".into(),
            ));
        }
        off += rc as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn network_filesystems_are_named_and_local_ones_pass() {
        for (m, n) in [
            (0x6969i64, "NFS"),
            (0xFF53_4D42, "CIFS"),
            (0x0102_1997, "9P"),
            (0x00C3_6400, "Ceph"),
        ] {
            assert_eq!(network_fs_name(m), Some(n));
        }
        assert_eq!(network_fs_name(0xEF53), None); // ext4
        assert_eq!(network_fs_name(0x0102_1994), None); // tmpfs
        assert_eq!(parse_magic("0x6969"), Some(0x6969));
        assert_eq!(parse_magic("26985"), Some(0x6969));
    }
}
