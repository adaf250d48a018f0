//! The process-local side of one sidecar: one descriptor, one mapping, one lock table.
//!
//! Owns: the registry that gives every sidecar inode exactly one [`Node`] per process, and the
//! node's lock table, which makes two handles of one process exclude each other exactly as two
//! processes do (the kernel sees one holder per process, or per open file description, and would
//! let them share anything).
//!
//! Why one descriptor: POSIX record locks belong to the process and every `close()` of any
//! descriptor on the file drops all of them, so a second descriptor could never be closed safely.
//! With one descriptor per inode the POSIX and OFD backends behave the same, and the lock table
//! below is the single arbiter inside the process.
//!
//! Concurrency contract:
//! * `key`, `fd`, `backend`, `writable`, `fork_gen` — fixed at creation (`fd` is taken once, by
//!   the drop or by a post-fork purge).
//! * `shared` — set once by the first successful open protocol (`OnceLock`), immutable after.
//! * `table` — `Mutex`; held across the kernel call that changes the process's lock on a byte, so
//!   the kernel state always equals "some handle in the table holds it". The one exception is the
//!   blocking wait for the init byte ([`Node::lock_wait`]), made without it.
//! * `open_close` — `Mutex`; serializes this process's open/close protocols on the node (the
//!   kernel init byte serializes them across processes).
//! * `attached` — `Mutex`; how many handles use the node, and in which mode.
//! * the registry — `Mutex`; one entry per inode. A node's drop removes its entry and closes its
//!   descriptor under it, and [`Node::get`] waits for such a drop to finish before it opens the
//!   inode again: a descriptor is never closed while another node of the process holds locks
//!   through a descriptor on the same inode.

use crate::error::{Error, Result};
use crate::layout::{Geometry, DB_ATTACH_BYTE};
use crate::lock::{self, Backend, Held, Kind};
use crate::region::{Pool, Shm};
use std::collections::HashMap;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicI32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, Weak};

/// Process-local id of one handle, unique for the process's life.
pub type HandleId = u64;

/// Lock-byte numbers hash to themselves: they are small, distinct integers chosen by this
/// library (no untrusted keys), and the table sits on every engine lock call.
#[derive(Default)]
struct ByteHasher(u64);

impl std::hash::Hasher for ByteHasher {
    fn finish(&self) -> u64 {
        self.0.wrapping_mul(0x9e37_79b9_7f4a_7c15)
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = self.0 << 8 | *b as u64;
        }
    }
    fn write_u64(&mut self, v: u64) {
        self.0 = v;
    }
}

type ByteTable = HashMap<u64, ByteState, std::hash::BuildHasherDefault<ByteHasher>>;

/// Holders of one byte in this process. Entries stay in the table once created (empty when
/// free), so that taking a byte again allocates nothing.
#[derive(Default)]
struct ByteState {
    exclusive: Option<HandleId>,
    shared: Vec<HandleId>,
}

impl ByteState {
    fn is_free(&self) -> bool {
        self.exclusive.is_none() && self.shared.is_empty()
    }
}

/// Mapping plus validated geometry, established by the first open in the process, and the
/// lazily mapped index pool beyond the fixed part.
pub struct Mapped {
    pub shm: Shm,
    pub geom: Geometry,
    pub pool: Pool,
}

/// Handles attached to a node and the lifetime mode they share.
#[derive(Default)]
pub struct Attached {
    pub handles: u32,
    pub exclusive: bool,
}

pub struct Node {
    pub key: (u64, u64),
    fd: AtomicI32,
    pub backend: Backend,
    pub writable: bool,
    pub fork_gen: u64,
    pub mapped: OnceLock<Mapped>,
    table: Mutex<ByteTable>,
    pub open_close: Mutex<()>,
    attached: Mutex<Attached>,
    /// Descriptors on the same inode that racing openers opened before they found this node:
    /// closing one while the node holds locks would drop them (POSIX), so they are closed with
    /// the node's own.
    spare_fds: Mutex<Vec<RawFd>>,
    /// The database's attach guard, while the node has handles and the database has one.
    pub db_guard: Mutex<Option<Arc<DbGuard>>>,
}

/// Bumped in the child after every `fork()`; handles and nodes remember the value they were
/// created under, so a child can tell inherited objects from its own without a syscall.
static FORK_GEN: AtomicU64 = AtomicU64::new(0);

extern "C" fn after_fork_in_child() {
    FORK_GEN.fetch_add(1, Ordering::Relaxed);
    crate::testpoint::forget_after_fork();
    close_inherited_guards();
    close_inherited_nodes();
    after_fork_in_parent();
}

/// In the child after `fork()`: close the inherited nodes' sidecar descriptors now, while each
/// number still names the parent's file. Later the child may close them itself and reuse the
/// numbers for files of its own (a daemon closes every descriptor after fork), and a close by
/// number would then take one of those. The child holds no POSIX lock yet, so the closes drop
/// none; an inherited OFD lock stays the parent's (its description lives on there). The
/// mappings stay: only memory, freed when the inherited handles are closed.
fn close_inherited_nodes() {
    HELD_FOR_FORK.with(|h| {
        if let Some(reg) = h.borrow().as_ref() {
            for e in reg.values() {
                if let Some(n) = e.node.upgrade() {
                    n.purge();
                }
            }
        }
    });
}

pub fn fork_gen() -> u64 {
    FORK_GEN.load(Ordering::Relaxed)
}

fn install_fork_hook() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY: registers handlers that take and release the registry mutex around fork()
        // and bump an atomic in the child; no other state is touched.
        unsafe {
            libc::pthread_atfork(
                Some(before_fork),
                Some(after_fork_in_parent),
                Some(after_fork_in_child),
            )
        };
    });
}

/// A registry entry: the node, and the fork generation it was created under. An entry whose
/// node can no longer be upgraded belongs to a node being dropped right now: its drop removes the
/// entry and closes the descriptor in one step under the registry lock, and until then nobody
/// may open a second descriptor on that inode (closing the old one would drop the new one's
/// POSIX locks).
struct Entry {
    node: Weak<Node>,
    fork_gen: u64,
}

type Registry = HashMap<(u64, u64), Entry>;

static REG: OnceLock<Mutex<Registry>> = OnceLock::new();

/// The registry. Never drop an `Arc<Node>` while holding it: the drop takes it too (declare
/// every `Arc` a registry guard's scope produces before the guard, so it outlives it).
fn registry() -> MutexGuard<'static, Registry> {
    REG.get_or_init(|| Mutex::new(HashMap::new()))
        .lock()
        .unwrap_or_else(|e| e.into_inner())
}

/// Called after entries leave the registry: once the last one is gone its table is freed, so a
/// process that has closed every handle holds no memory of the library's (a leak checker in the
/// embedding program sees nothing). Reopening allocates the table again, once per open of a
/// first sidecar, never on a lock or read path.
fn release_if_empty(reg: &mut Registry) {
    if reg.is_empty() {
        reg.shrink_to_fit();
    }
}

thread_local! {
    /// The registry guard the forking thread holds across `fork()`.
    static HELD_FOR_FORK: std::cell::RefCell<Option<MutexGuard<'static, Registry>>> =
        const { std::cell::RefCell::new(None) };
}

/// Before `fork()`: take the registry and the attach-guard table, so the child never inherits
/// them locked by a thread that does not exist there.
extern "C" fn before_fork() {
    let g = registry();
    let d = guards();
    HELD_FOR_FORK.with(|h| *h.borrow_mut() = Some(g));
    GUARDS_HELD_FOR_FORK.with(|h| *h.borrow_mut() = Some(d));
}

/// After `fork()`, in the parent and in the child: let the registry go again.
extern "C" fn after_fork_in_parent() {
    GUARDS_HELD_FOR_FORK.with(|h| drop(h.borrow_mut().take()));
    HELD_FOR_FORK.with(|h| drop(h.borrow_mut().take()));
}

/// In the child after `fork()`: close the inherited database descriptors of the attach guards.
/// The child holds no POSIX lock yet (they are not inherited), so the closes drop none, and an
/// inherited OFD lock stays the parent's (the description lives on in the parent); left open,
/// it would outlive a parent that dies, and keep the byte held for nobody.
fn close_inherited_guards() {
    GUARDS_HELD_FOR_FORK.with(|h| {
        if let Some(table) = h.borrow().as_ref() {
            for g in table.values() {
                let fd = g.fd.swap(-1, Ordering::Relaxed);
                if fd >= 0 {
                    // SAFETY: the descriptor belonged to the guard and is closed once.
                    unsafe { libc::close(fd) };
                }
            }
        }
    });
}

/// The attach guard of one database file in this process: a descriptor on the database file
/// (read-only, opened once and kept for the process's life) through which the process holds
/// `DB_ATTACH_BYTE` SHARED while any of its nodes for that database has handles attached.
///
/// Why: the sidecar at `<db>-tshm` may be renamed over or removed while processes are attached.
/// They keep coordinating through the old inode; a newcomer opening the path finds a new file,
/// is alone on it and would start a second session (two writers at once). The database file is
/// the one thing both sides share, so a process that is alone on its sidecar holds the byte and
/// then checks that nobody else does: someone else holding it is attached to another sidecar
/// of this database, and the open is refused ([`Error::Busy`]). Within the process, the guard
/// remembers which sidecar its holders use and refuses a node on another one.
///
/// Why never closed: closing any descriptor of the database file drops every POSIX lock this
/// process holds on it, including the engine's own (SQLite's), so the descriptor stays open
/// until the process exits or execs (it is `O_CLOEXEC`), or is closed in a `fork()` child that
/// holds no lock yet. One descriptor per database file per process.
///
/// Cost: one `open` of the database file per process and database, and two `fcntl` calls per
/// process's first handle on a sidecar; nothing per operation.
///
/// Limits: without a database file (it need not exist) or without read access to it there is
/// no guard and no such check. Under the POSIX lock backend, any close of another descriptor of
/// the database file in the process (e.g. SQLite closing a connection) drops the process's hold,
/// so a later replacement may go unnoticed; the OFD backend has no such gap.
pub struct DbGuard {
    fd: AtomicI32,
    backend: Backend,
    fork_gen: u64,
    /// Nodes of this process holding the byte, and the sidecar (dev, inode) they all use.
    holders: Mutex<(u32, (u64, u64))>,
}

/// The guards by database file (dev, inode). A guard lives as long as the process, so the table
/// does too: a vector (a handful of database files per process, searched on a first open only),
/// whose block a leak checker sees pointed to from its start, so the guards of a process that
/// closed every handle count as still in use, never as possibly lost (a hash table's pointer
/// points into the middle of its block).
struct GuardTable(Vec<((u64, u64), Arc<DbGuard>)>);

impl GuardTable {
    fn get(&self, key: &(u64, u64)) -> Option<&Arc<DbGuard>> {
        self.0.iter().find(|(k, _)| k == key).map(|(_, g)| g)
    }

    /// Adds the guard of `key`, replacing one inherited across `fork()`.
    fn insert(&mut self, key: (u64, u64), g: Arc<DbGuard>) {
        match self.0.iter_mut().find(|(k, _)| *k == key) {
            Some(e) => e.1 = g,
            None => self.0.push((key, g)),
        }
    }

    fn values(&self) -> impl Iterator<Item = &Arc<DbGuard>> {
        self.0.iter().map(|(_, g)| g)
    }
}

static GUARDS: Mutex<GuardTable> = Mutex::new(GuardTable(Vec::new()));

fn guards() -> MutexGuard<'static, GuardTable> {
    GUARDS.lock().unwrap_or_else(|e| e.into_inner())
}

thread_local! {
    /// The guard table's lock the forking thread holds across `fork()`.
    static GUARDS_HELD_FOR_FORK: std::cell::RefCell<Option<MutexGuard<'static, GuardTable>>> =
        const { std::cell::RefCell::new(None) };
}

impl DbGuard {
    /// This process's guard for the database file at `db_path`; `None` when there is none to
    /// have (no database file, no read access to it, not a regular file). Opens the file the
    /// first time. Running out of descriptors is [`Error::CantOpen`] (`EMFILE`).
    pub fn get(db_path: &std::path::Path, forced: Option<Backend>) -> Result<Option<Arc<DbGuard>>> {
        use std::os::unix::fs::MetadataExt;
        install_fork_hook();
        // Only a regular file is opened (a device's open has effects; a FIFO's would block).
        let Ok(meta) = std::fs::metadata(db_path) else {
            return Ok(None);
        };
        if !meta.file_type().is_file() {
            return Ok(None);
        }
        let key = (meta.dev(), meta.ino());
        let now = fork_gen();
        if let Some(g) = guards().get(&key).filter(|g| g.fork_gen == now) {
            return Ok(Some(g.clone()));
        }
        let c = std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(db_path.as_os_str()))
            .map_err(|_| Error::Misuse("path contains a NUL byte".into()))?;
        let flags = libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK;
        // SAFETY: c is NUL-terminated.
        let fd = unsafe { libc::open(c.as_ptr(), flags) };
        if fd < 0 {
            let e = std::io::Error::last_os_error();
            return match e.raw_os_error() {
                Some(libc::ENOENT) | Some(libc::EACCES) | Some(libc::EPERM) => Ok(None),
                _ => Err(Error::CantOpen {
                    what: format!(
                        "open the database file {} (for the lock that guards its sidecar)",
                        db_path.display()
                    ),
                    source: e,
                }),
            };
        }
        // The file at the path may have changed since the stat: key it by what was opened.
        // SAFETY: fstat fills plain data.
        let mut st: libc::stat = unsafe { std::mem::zeroed() };
        if unsafe { libc::fstat(fd, &mut st) } != 0 {
            // (left open: closing a regular file's descriptor could drop the process's locks)
            return Err(Error::last_os("fstat the database file"));
        }
        if st.st_mode & libc::S_IFMT != libc::S_IFREG {
            // SAFETY: fd is ours; nobody locks a file that is not a regular one.
            unsafe { libc::close(fd) };
            return Ok(None);
        }
        let key = (st.st_dev, st.st_ino);
        let g = Arc::new(DbGuard {
            fd: AtomicI32::new(fd),
            backend: lock::choose(fd, forced),
            fork_gen: now,
            holders: Mutex::new((0, (0, 0))),
        });
        let mut table = guards();
        match table.get(&key).filter(|old| old.fork_gen == now) {
            // Another thread opened it meanwhile: this descriptor stays open, unused (a guard
            // never closes its descriptor), since closing it would drop the process's POSIX
            // locks on the database file, e.g. the engine's.
            Some(old) => Ok(Some(old.clone())),
            None => {
                table.insert(key, g.clone());
                Ok(Some(g))
            }
        }
    }

    /// Takes the attach byte for a node on sidecar `sidecar`. `alone`: the node's process is the
    /// only one attached to that sidecar, so anyone else holding the byte is attached to another
    /// sidecar of the database: then [`Error::Busy`], and nothing is held.
    pub fn hold(
        &self,
        sidecar: (u64, u64),
        side_path: &std::path::Path,
        alone: bool,
    ) -> Result<()> {
        let mut h = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        if h.0 > 0 {
            if h.1 != sidecar {
                return Err(Error::Busy(format!(
                    "the sidecar {} was replaced while in use: this process is attached to \
                     another sidecar of the same database file (the one that was at the path \
                     before it was renamed over or removed, or the database's under another \
                     name); close its handles on the database first",
                    side_path.display()
                )));
            }
            h.0 += 1;
            return Ok(());
        }
        let fd = self.fd.load(Ordering::Relaxed);
        let replaced = || {
            Error::Busy(format!(
                "the sidecar {} was replaced while in use: another process is attached to \
                 another sidecar of the same database file and coordinates through it (the one \
                 that was at the path before it was renamed over or removed, or the database's \
                 under another name); open again once every such process has closed the \
                 database",
                side_path.display()
            ))
        };
        if !lock::try_lock(fd, self.backend, DB_ATTACH_BYTE, 1, Kind::Shared)? {
            return Err(replaced()); // nobody takes it exclusively: not seen in practice
        }
        // Held shared first, probed second: two processes alone on two different sidecars at
        // once both see the other, so at most one session goes on (and possibly none).
        if alone {
            let other = lock::probe(fd, self.backend, DB_ATTACH_BYTE);
            if !matches!(other, Ok((Held::Free, _))) {
                let _ = lock::unlock(fd, self.backend, DB_ATTACH_BYTE, 1);
                return Err(other.err().unwrap_or_else(replaced));
            }
        }
        *h = (1, sidecar);
        Ok(())
    }

    /// Gives back one node's hold; the byte goes with the last.
    pub fn release(&self) -> Result<()> {
        let mut h = self.holders.lock().unwrap_or_else(|e| e.into_inner());
        if h.0 == 0 {
            return Ok(());
        }
        h.0 -= 1;
        if h.0 == 0 {
            lock::unlock(
                self.fd.load(Ordering::Relaxed),
                self.backend,
                DB_ATTACH_BYTE,
                1,
            )?;
        }
        Ok(())
    }
}

/// What the registry knows of an inode.
enum Found {
    Live(Arc<Node>),
    /// Its node is being dropped by another thread of this process.
    Dying,
    Absent,
}

fn lookup(reg: &Registry, key: &(u64, u64)) -> Found {
    match reg.get(key) {
        None => Found::Absent,
        Some(e) => match e.node.upgrade() {
            Some(n) => Found::Live(n),
            None => Found::Dying,
        },
    }
}

impl Node {
    /// Returns this process's node for the sidecar of `db_path`, opening the sidecar when the
    /// process has none. `readonly`/`create` are passed to [`crate::region::open_sidecar`].
    /// No file-system call is made under the registry lock: a hung mount stalls only the opener.
    pub fn get(
        db_path: &std::path::Path,
        readonly: bool,
        create: bool,
        forced: Option<Backend>,
    ) -> Result<Arc<Node>> {
        install_fork_hook();
        let path = crate::region::sidecar_path(db_path);
        let mut waited = false;
        loop {
            // The sidecar itself, not what a symbolic link points to (the open refuses links).
            let key = std::fs::symlink_metadata(&path).ok().map(|meta| {
                use std::os::unix::fs::MetadataExt;
                (meta.dev(), meta.ino())
            });
            // Declared before the registry guard, so every node they hold outlives it.
            let mut inherited = Vec::new();
            let found;
            {
                let mut reg = registry();
                let now = fork_gen();
                // Nodes inherited across fork() belong to the parent (their descriptors were
                // closed in the child at the fork): forget them. Entries of the parent's dying
                // nodes have no drop to finish them here.
                reg.retain(|_, e| {
                    if e.fork_gen == now {
                        return true;
                    }
                    inherited.extend(e.node.upgrade());
                    false
                });
                release_if_empty(&mut reg);
                found = key.map_or(Found::Absent, |k| lookup(&reg, &k));
            }
            drop(inherited);
            // (node, whether it existed before this call)
            let got = match found {
                Found::Live(n) => Some((n, true)),
                Found::Dying => None,
                Found::Absent => Self::create(db_path, readonly, create, forced)?,
            };
            match got {
                // A node this call created is read-only because the file is: a read-only handle.
                // One that existed may be read-only only because a read-only open came first.
                Some((n, true)) if !readonly && !n.writable => {
                    return Err(Error::ReadOnly(format!(
                        "{} is open in this process through a read-only descriptor (the \
                         sidecar was not writable when it was first opened here; close every \
                         handle on it first)",
                        path.display()
                    )))
                }
                Some((n, _)) => return Ok(n),
                None => {
                    if !waited {
                        crate::testpoint::note("node_get_waits");
                        waited = true;
                    }
                    std::thread::yield_now();
                }
            }
        }
    }

    /// Opens the sidecar and registers a new node for it: the node, and whether another thread
    /// had registered it first. `Ok(None)`: the file turned out to be an inode whose node is
    /// being dropped; the caller retries once that drop is done.
    fn create(
        db_path: &std::path::Path,
        readonly: bool,
        create: bool,
        forced: Option<Backend>,
    ) -> Result<Option<(Arc<Node>, bool)>> {
        let opened = crate::region::open_sidecar(db_path, readonly, create)?;
        let key = match crate::region::file_key(opened.fd) {
            Ok(k) => k,
            Err(e) => {
                unsafe { libc::close(opened.fd) };
                return Err(e);
            }
        };
        let now = fork_gen();
        let node = Arc::new(Node {
            key,
            fd: AtomicI32::new(opened.fd),
            backend: lock::choose(opened.fd, forced),
            writable: opened.writable,
            fork_gen: now,
            mapped: OnceLock::new(),
            table: Mutex::new(ByteTable::default()),
            open_close: Mutex::new(()),
            attached: Mutex::new(Attached::default()),
            spare_fds: Mutex::new(Vec::new()),
            db_guard: Mutex::new(None),
        });
        // Declared before the registry guard, so it outlives it.
        let found;
        {
            let mut reg = registry();
            found = lookup(&reg, &key);
            if let Found::Absent = found {
                reg.insert(
                    key,
                    Entry {
                        node: Arc::downgrade(&node),
                        fork_gen: now,
                    },
                );
                return Ok(Some((node, false)));
            }
        }
        // Another thread registered the inode meanwhile. The new descriptor must not be closed
        // while a live node holds locks on the inode: it goes with that node's. A dying node
        // holds none, so then it is closed at once.
        let fd = node.fd.swap(-1, Ordering::Relaxed);
        match found {
            Found::Live(n) => {
                n.spare_fds
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(fd);
                Ok(Some((n, true)))
            }
            _ => {
                unsafe { libc::close(fd) };
                Ok(None)
            }
        }
    }

    /// Takes the database's attach byte for this node's first handle (see [`DbGuard::hold`]);
    /// nothing to do without a guard.
    pub fn hold_db_guard(
        &self,
        guard: Option<&Arc<DbGuard>>,
        db_path: &std::path::Path,
        alone: bool,
    ) -> Result<()> {
        let Some(g) = guard else { return Ok(()) };
        g.hold(self.key, &crate::region::sidecar_path(db_path), alone)?;
        *self.db_guard.lock().unwrap_or_else(|e| e.into_inner()) = Some(g.clone());
        Ok(())
    }

    /// Gives back the attach byte when the node's last handle goes.
    pub fn release_db_guard(&self) -> Result<()> {
        let g = self
            .db_guard
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        g.map_or(Ok(()), |g| g.release())
    }

    /// The handles attached to the node and their mode.
    pub fn attached(&self) -> MutexGuard<'_, Attached> {
        self.attached.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn fd(&self) -> RawFd {
        self.fd.load(Ordering::Relaxed)
    }

    fn purge(&self) {
        let fd = self.fd.swap(-1, Ordering::Relaxed);
        // (try_lock: in a child purging an inherited node, a parent thread that held the list at
        // fork() does not exist; those descriptors then stay open)
        let spares = match self.spare_fds.try_lock() {
            Ok(mut v) => std::mem::take(&mut *v),
            Err(std::sync::TryLockError::Poisoned(e)) => std::mem::take(&mut *e.into_inner()),
            Err(std::sync::TryLockError::WouldBlock) => Vec::new(),
        };
        for fd in spares.into_iter().chain(Some(fd)).filter(|fd| *fd >= 0) {
            // SAFETY: the descriptors were owned by this node and are closed once.
            unsafe { libc::close(fd) };
        }
    }

    /// Whether this node was created in the current process (not inherited across fork).
    pub fn is_ours(&self) -> bool {
        self.fork_gen == fork_gen()
    }

    /// Maps the first `len` bytes of the sidecar. The protection is the node's (read-write
    /// exactly when its descriptor is): every handle of the process shares the mapping, whatever
    /// the mode of the one that happens to map it first.
    pub fn map(&self, len: u64) -> Result<Shm> {
        Shm::map(self.fd(), len, self.writable)
    }

    /// Records the validated mapping (first caller wins; later ones are dropped).
    pub fn set_mapped(&self, shm: Shm, geom: Geometry) {
        let pool = Pool::new(self.fd(), geom.base_len, shm.writable());
        let _ = self.mapped.set(Mapped { shm, geom, pool });
    }

    #[inline]
    pub fn mapped(&self) -> Result<&Mapped> {
        self.mapped
            .get()
            .ok_or_else(|| Error::Internal("sidecar used before it was mapped".into()))
    }

    fn table(&self) -> MutexGuard<'_, ByteTable> {
        self.table.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Tries to take `byte` for handle `h` without waiting. Taking a byte `h` already holds in
    /// the other mode converts it in place (upgrade only when `h` is its sole holder here).
    /// `Ok(false)`: another handle of this process or another process holds it.
    pub fn try_lock(&self, h: HandleId, byte: u64, kind: Kind) -> Result<bool> {
        self.lock_byte(h, byte, kind, true)
    }

    fn lock_byte(&self, h: HandleId, byte: u64, kind: Kind, reenter: bool) -> Result<bool> {
        let mut t = self.table();
        if !reenter && t.get(&byte).is_some_and(|st| !st.is_free()) {
            return Ok(false);
        }
        let st = t.entry(byte).or_default();
        let others_shared = st.shared.iter().any(|x| *x != h);
        let mine_shared = st.shared.contains(&h);
        match (kind, st.exclusive) {
            (_, Some(x)) if x != h => return Ok(false),
            (Kind::Exclusive, Some(_)) => return Ok(true),
            (Kind::Exclusive, None) if others_shared => return Ok(false),
            (Kind::Shared, None) if mine_shared => return Ok(true),
            (Kind::Shared, None) if others_shared => {
                st.shared.push(h);
                return Ok(true);
            }
            _ => {}
        }
        if !lock::try_lock(self.fd(), self.backend, byte, 1, kind)? {
            return Ok(false);
        }
        match kind {
            Kind::Exclusive => {
                st.shared.retain(|x| *x != h);
                st.exclusive = Some(h);
            }
            Kind::Shared => {
                st.exclusive = None;
                st.shared.push(h);
            }
        }
        Ok(true)
    }

    /// Takes `byte` exclusively for `h` only if no handle of this process, `h` included, holds
    /// it: a claim of a fresh slot, never a re-entry into one `h` already has.
    pub fn try_claim(&self, h: HandleId, byte: u64) -> Result<bool> {
        self.lock_byte(h, byte, Kind::Exclusive, false)
    }

    /// Takes `byte` for `h`, waiting for other processes. Only for the init byte, whose
    /// in-process holders are already serialized by `open_close` (so no handle here holds it or
    /// changes it meanwhile). The table is not held across the wait: a process stopped while it
    /// holds the byte must not stall this process's other lock operations.
    pub fn lock_wait(&self, h: HandleId, byte: u64, kind: Kind) -> Result<()> {
        lock::lock_wait(self.fd(), self.backend, byte, 1, kind)?;
        let mut t = self.table();
        let st = t.entry(byte).or_default();
        match kind {
            Kind::Exclusive => st.exclusive = Some(h),
            Kind::Shared => st.shared.push(h),
        }
        Ok(())
    }

    /// Releases `h`'s hold on `byte`; the kernel lock goes when no handle here holds it.
    /// `Ok(false)` when `h` held nothing there.
    pub fn unlock(&self, h: HandleId, byte: u64) -> Result<bool> {
        let mut t = self.table();
        let Some(st) = t.get_mut(&byte) else {
            return Ok(false);
        };
        let held = if st.exclusive == Some(h) {
            st.exclusive = None;
            true
        } else if let Some(i) = st.shared.iter().position(|x| *x == h) {
            st.shared.swap_remove(i);
            true
        } else {
            false
        };
        if held && st.is_free() {
            lock::unlock(self.fd(), self.backend, byte, 1)?;
        }
        Ok(held)
    }

    /// Whether some handle of this process holds `byte`.
    pub fn held_here(&self, byte: u64) -> bool {
        self.table().get(&byte).is_some_and(|st| !st.is_free())
    }

    /// Whether anyone (a handle here or another process) holds `byte`: the liveness test.
    pub fn held_anywhere(&self, byte: u64) -> Result<bool> {
        if self.held_here(byte) {
            return Ok(true);
        }
        Ok(lock::probe(self.fd(), self.backend, byte)?.0 != Held::Free)
    }

    /// Releases every byte `h` still holds (used when a handle closes).
    pub fn unlock_all(&self, h: HandleId) -> Result<()> {
        let bytes: Vec<u64> = self
            .table()
            .iter()
            .filter(|(_, st)| st.exclusive == Some(h) || st.shared.contains(&h))
            .map(|(b, _)| *b)
            .collect();
        for b in bytes {
            self.unlock(h, b)?;
        }
        Ok(())
    }
}

impl Drop for Node {
    /// Forgetting the node and closing its descriptor are one step under the registry lock, so
    /// no new node of this process can take locks on the inode in between (the close would drop
    /// them under POSIX locks).
    fn drop(&mut self) {
        crate::testpoint::hit("node_drop");
        let mut reg = registry();
        let me: *const Node = self;
        if reg
            .get(&self.key)
            .is_some_and(|e| std::ptr::eq(e.node.as_ptr(), me))
        {
            reg.remove(&self.key);
            release_if_empty(&mut reg);
        }
        // An inherited node's descriptors were closed in the child at the fork (or, the rare one
        // whose list a parent thread held then, left open): never close by number here, where
        // the number may name a file of the child's own by now.
        if self.is_ours() {
            self.purge();
        }
        drop(reg);
    }
}
