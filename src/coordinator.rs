//! The safe Rust API: open and close protocols, modes, and the per-handle record of what a
//! handle holds.
//!
//! Owns: header fields 64..96 (init epoch, mode, exclusive holder) and the lifetime and init lock
//! bytes.
//!
//! **Open.** Under the init byte (exclusive, waited for; read-only openers take it shared) the
//! first handle of a process tries the lifetime byte exclusively. Winning proves that no other
//! process is attached: the opener validates the header and re-initializes it when it is absent or
//! corrupt, or else clears every owner record left by dead processes; then it converts the byte to
//! shared in place (or keeps it exclusive in EXCLUSIVE mode). Losing means others are attached: it
//! takes the byte shared and validates the header, refusing a corrupt one with `TSHM_CORRUPT`.
//! The init byte makes "win, initialize, downgrade" atomic with respect to other openers, so two
//! simultaneous first openers can never both initialize.
//!
//! **Close.** The last handle of a process takes the init byte and tries to convert its shared
//! lifetime lock to exclusive in place. Winning proves it is the last process; it runs the
//! caller's last-close hook while still holding everything, then releases. Two closers can never
//! both win, and a newcomer waits on the init byte instead of initializing under a closer.
//!
//! Handles of one process share one [`Node`]; the lifetime byte is held on behalf of the node
//! (lock-table holder 0) and the node's `attached` record says how many handles use it.
//!
//! A handle may be used from several threads at once; [`Coordinator::close`] needs exclusive
//! access. A handle inherited across `fork()` refuses every call but `close`, which then only
//! frees memory in the child.

use crate::error::{Error, Result};
use crate::index::{tshm_index_stats, AppendMemo, Index};
use crate::layout::*;
use crate::lock::{self, Backend, Kind};
use crate::node::{fork_gen, DbGuard, HandleId, Node};
use crate::pins::Pins;
use crate::region;
use crate::roles::{self, Role, Take};
use crate::slots::{self, Ident};
use crate::snapshot::{tshm_snapshot, Latch};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};

/// Lock-table holder id of the node itself (for the lifetime byte).
const NODE_HOLDER: HandleId = 0;

/// How to open a sidecar.
#[derive(Clone, Debug)]
pub struct Options {
    /// Single-process mode: the lifetime byte is held exclusively for the handle's life.
    pub exclusive: bool,
    /// Never write the sidecar; never create it (a missing one is [`Error::NotFound`]).
    pub readonly: bool,
    /// Allow a sidecar on a network filesystem.
    pub allow_netfs: bool,
    /// Force the POSIX lock backend (`TSHM_LOCK_BACKEND=posix` does the same).
    pub posix_locks: bool,
    /// Reader slots of the sidecar (0: the sidecar's, or the default for a new one). The shape
    /// (slot counts and strategies) is chosen by the first process to attach; a later opener
    /// asking for another one is refused with [`Error::Conflict`].
    pub reader_slots: u32,
    /// Reader strategy: `READERS_CAS` or `READERS_BYTELOCK`.
    pub reader_strategy: u32,
    /// Instance slots of the sidecar (0: the sidecar's, or the default for a new one).
    pub instance_slots: u32,
    /// Role strategy: `ROLES_SHM` or `ROLES_BYTELOCK`.
    pub role_strategy: u32,
    /// Most entries this handle lets the frame index hold before appends fail with
    /// [`Error::Full`] (0: no limit but the format's, 2^32 - 2 per generation).
    pub index_limit: u64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            exclusive: false,
            readonly: false,
            allow_netfs: false,
            posix_locks: false,
            reader_slots: 0,
            reader_strategy: READERS_CAS,
            instance_slots: 0,
            role_strategy: ROLES_SHM,
            index_limit: 0,
        }
    }
}

/// A handle's facts, filled by `tshm_info_get()`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct tshm_info {
    /// `TSHM_MODE_SHARED` or `TSHM_MODE_EXCLUSIVE`.
    pub mode: u32,
    /// `TSHM_BACKEND_OFD` or `TSHM_BACKEND_POSIX`.
    pub backend: u32,
    /// `TSHM_READERS_CAS` or `TSHM_READERS_BYTELOCK`.
    pub reader_strategy: u32,
    /// Number of reader slots.
    pub reader_slots: u32,
    /// Number of instance slots.
    pub instance_slots: u32,
    /// This handle's instance index (`UINT32_MAX` for a read-only handle, which has none).
    pub instance: u32,
    /// Process id that opened the handle.
    pub pid: u32,
    /// 1 when the handle is read-only.
    pub readonly: i32,
    /// 1 when this open found no other process attached and (re)initialized the sidecar's shared
    /// state: the engine should rebuild what it keeps there (e.g. its frame index) from its WAL.
    pub initialized: i32,
    /// `TSHM_ROLES_SHM` or `TSHM_ROLES_BYTELOCK`.
    pub role_strategy: u32,
    /// How many times a first opener has (re)initialized this sidecar.
    pub init_epoch: u64,
}

/// `tshm_info.mode`: several processes may attach.
pub const TSHM_MODE_SHARED: u32 = 1;
/// `tshm_info.mode`: one process holds the sidecar exclusively.
pub const TSHM_MODE_EXCLUSIVE: u32 = 2;
// The C names of the byte map's mode values (the header needs literals).
const _: () = assert!(TSHM_MODE_SHARED == MODE_SHARED && TSHM_MODE_EXCLUSIVE == MODE_EXCLUSIVE);
/// `tshm_info.backend`: Linux open-file-description locks.
pub const TSHM_BACKEND_OFD: u32 = 1;
/// `tshm_info.backend`: POSIX process-associated record locks.
pub const TSHM_BACKEND_POSIX: u32 = 2;

/// What one handle does with one role, in a word its threads share (no lock on the path).
#[derive(Default)]
struct RoleState(std::sync::atomic::AtomicU8);

impl RoleState {
    const FREE: u8 = 0;
    /// A thread of the handle waits for the role (or reclaims it, or takes a byte-lock role);
    /// the uncontended shared-memory acquire does not pass through this state.
    const PENDING: u8 = 1;
    const HELD: u8 = 2;
    /// Held, and a thread of the handle is using the frame index under it.
    const IN_USE: u8 = 3;
    /// A release of a byte-lock role is in progress.
    const RELEASING: u8 = 4;

    fn swap_if(&self, from: u8, to: u8) -> bool {
        self.0.compare_exchange(from, to, Acquire, Relaxed).is_ok()
    }
    fn set(&self, v: u8) {
        self.0.store(v, Release);
    }
    fn held(&self) -> bool {
        matches!(self.0.load(Acquire), Self::HELD | Self::IN_USE)
    }
}

/// One open handle on a sidecar.
pub struct Coordinator {
    node: Arc<Node>,
    hid: HandleId,
    ident: Option<Ident>,
    fork_gen: u64,
    exclusive: bool,
    initialized: bool,
    index_limit: u64,
    /// The writer's and the checkpointer's state.
    roles: [RoleState; 2],
    /// The reader slots this handle holds and the transactions pinned in them.
    pins: Pins,
    /// Where this handle's index appends land (process memory; used only with `node`).
    append_memo: AppendMemo,
    /// Engine lock slots this handle holds: 0 none, 1 SHARED, 2 EXCLUSIVE.
    engine_locks: Mutex<[u8; ENGINE_LOCKS as usize]>,
    closed: std::sync::atomic::AtomicBool,
    closing: std::sync::atomic::AtomicBool,
}

thread_local! {
    /// The nodes whose last-close hooks this thread is running (a hook may close another
    /// database's last handle, whose hook then runs inside it).
    static LAST_CLOSE_HOOKS: std::cell::RefCell<Vec<(u64, u64)>> =
        const { std::cell::RefCell::new(Vec::new()) };
}

/// Marks this thread as inside `key`'s last-close hook until dropped (also when it unwinds).
struct InLastCloseHook;

impl InLastCloseHook {
    fn enter(key: (u64, u64)) -> InLastCloseHook {
        LAST_CLOSE_HOOKS.with(|k| k.borrow_mut().push(key));
        InLastCloseHook
    }

    fn running(key: (u64, u64)) -> bool {
        LAST_CLOSE_HOOKS.with(|k| k.borrow().contains(&key))
    }
}

impl Drop for InLastCloseHook {
    fn drop(&mut self) {
        LAST_CLOSE_HOOKS.with(|k| k.borrow_mut().pop());
    }
}

/// Refuses database paths that cannot name a database file: empty, ending in a slash or in
/// `.`/`..`, or naming a directory. Nothing is created for them.
pub(crate) fn check_db_path(db_path: &Path) -> Result<()> {
    use std::os::unix::ffi::OsStrExt;
    let bytes = db_path.as_os_str().as_bytes();
    if bytes.is_empty() {
        return Err(Error::Misuse("the database path is empty".into()));
    }
    let last = bytes.rsplit(|b| *b == b'/').next().unwrap_or_default();
    if last.is_empty() || last == b"." || last == b".." {
        return Err(Error::Misuse(format!(
            "{} names a directory, not a database file",
            db_path.display()
        )));
    }
    if std::fs::metadata(db_path).is_ok_and(|m| m.is_dir()) {
        return Err(Error::CantOpen {
            what: format!("{} is a directory, not a database file", db_path.display()),
            source: std::io::Error::from_raw_os_error(libc::EISDIR),
        });
    }
    Ok(())
}

/// Clears every record a process that died attached may have left: roles, then instances and
/// slots. Only for a process provably alone (see [`slots::reset_all`]).
fn reset_stale(node: &Node) -> Result<()> {
    let m = node.mapped()?;
    roles::reset_all(&m.shm, &m.geom);
    slots::reset_all(node)
}

fn next_hid() -> HandleId {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    NEXT.fetch_add(1, Relaxed)
}

/// Maps the whole sidecar. A writable node first gives storage to any page without it (see
/// [`region::fill_holes`]; `alone`: no other process is attached): a store through a shared
/// mapping into a hole makes the filesystem allocate a page, which on a full disk fails as
/// SIGBUS. A read-only node cannot mend a sidecar made sparse from outside (on tmpfs even its
/// loads of such pages fault on a full disk); that is outside the contract, like shrinking the
/// file. The library itself never leaves a hole in a page it uses.
fn map_and_validate(node: &Node, alone: bool) -> std::result::Result<region::Shm, Error> {
    let len = region::file_len(node.fd())?;
    if len < PAGE {
        return Err(Error::Corrupt(format!(
            "sidecar is {len} bytes, shorter than its header"
        )));
    }
    if node.writable {
        region::fill_holes(node.fd(), len, alone)?;
    }
    node.map(len)
}

impl Coordinator {
    /// Opens (creating when needed) the sidecar `<db_path>-tshm` and attaches this handle.
    pub fn open(db_path: &Path, opts: &Options) -> Result<Coordinator> {
        check_db_path(db_path)?;
        if opts.readonly && opts.exclusive {
            return Err(Error::Misuse(
                "a read-only handle cannot hold the sidecar exclusively".into(),
            ));
        }
        let opts = &Self::with_test_strategies(opts);
        if opts.reader_strategy > READERS_BYTELOCK {
            return Err(Error::Misuse(format!(
                "unknown reader strategy {}",
                opts.reader_strategy
            )));
        }
        if opts.role_strategy > ROLES_BYTELOCK {
            return Err(Error::Misuse(format!(
                "unknown role strategy {}",
                opts.role_strategy
            )));
        }
        if opts.reader_slots != 0 && !(MIN_READERS..=MAX_READERS).contains(&opts.reader_slots) {
            return Err(Error::Misuse(format!(
                "reader_slots {} outside {MIN_READERS}..={MAX_READERS} (0: the default, \
                 {DEFAULT_READERS})",
                opts.reader_slots
            )));
        }
        if opts.instance_slots != 0
            && !(MIN_INSTANCES..=MAX_INSTANCES).contains(&opts.instance_slots)
        {
            return Err(Error::Misuse(format!(
                "instance_slots {} outside {MIN_INSTANCES}..={MAX_INSTANCES} (0: the default, \
                 {DEFAULT_INSTANCES})",
                opts.instance_slots
            )));
        }
        if opts.index_limit > crate::layout::MAX_ENTRIES {
            return Err(Error::Misuse(format!(
                "index_limit {} is above the most entries the index can hold ({})",
                opts.index_limit,
                crate::layout::MAX_ENTRIES
            )));
        }
        if !opts.allow_netfs {
            let dir = match db_path.parent() {
                Some(p) if !p.as_os_str().is_empty() => p,
                _ => Path::new("."),
            };
            region::check_local_fs(dir)?;
        }
        let forced = opts.posix_locks.then_some(Backend::Posix);
        let node = Node::get(db_path, opts.readonly, !opts.readonly, forced)?;
        if InLastCloseHook::running(node.key) {
            return Err(Error::Misuse(
                "the database cannot be opened from its own last-close hook: the closing handle \
                 still holds it exclusively (use that handle inside the hook)"
                    .into(),
            ));
        }
        let hid = next_hid();
        let readonly = opts.readonly || !node.writable;
        if readonly && opts.exclusive {
            return Err(Error::ReadOnly(
                "the sidecar is read-only; EXCLUSIVE mode needs to write it".into(),
            ));
        }
        let (r, unlocked) = {
            let _serial = node.open_close.lock().unwrap_or_else(|e| e.into_inner());
            // Only the process's first handle runs the open protocol and needs the init byte;
            // a later one joins under `open_close` alone, so a process stopped in the middle of
            // its own open never holds up this process's other handles.
            let first = node.attached().handles == 0;
            // Only a first handle takes the database's attach byte, so only it needs the guard's
            // descriptor. Taken before any lock: a failure leaves nothing behind (the node,
            // unused, goes with its descriptor).
            let guard = if first {
                DbGuard::get(db_path, forced)?
            } else {
                None
            };
            if first {
                let init_kind = if node.writable {
                    Kind::Exclusive
                } else {
                    Kind::Shared
                };
                node.lock_wait(hid, LOCK_INIT, init_kind)?;
                crate::testpoint::hit("open_holding_init");
            }
            let r = Self::attach(&node, hid, opts, readonly, db_path, guard.as_ref());
            let unlocked = if first {
                node.unlock(hid, LOCK_INIT).map(|_| ())
            } else {
                Ok(())
            };
            (r, unlocked)
        };
        let (ident, initialized) = r?;
        let c = Coordinator {
            node,
            hid,
            ident,
            fork_gen: fork_gen(),
            exclusive: opts.exclusive,
            initialized,
            index_limit: opts.index_limit,
            roles: Default::default(),
            pins: Pins::default(),
            append_memo: AppendMemo::default(),
            engine_locks: Mutex::new([0; ENGINE_LOCKS as usize]),
            closed: std::sync::atomic::AtomicBool::new(false),
            closing: std::sync::atomic::AtomicBool::new(false),
        };
        // Attached but unable to let go of the init byte: detach again rather than leak.
        unlocked.map(|_| c)
    }

    /// The open protocol proper, run under the init byte.
    fn attach(
        node: &Arc<Node>,
        hid: HandleId,
        opts: &Options,
        readonly: bool,
        db_path: &Path,
        guard: Option<&Arc<DbGuard>>,
    ) -> Result<(Option<Ident>, bool)> {
        let mut att = node.attached();
        let mut initialized = false;
        let first = att.handles == 0;
        if !first && att.exclusive != opts.exclusive {
            return Err(Error::Conflict(format!(
                "this process already has the sidecar open in {} mode",
                if att.exclusive { "EXCLUSIVE" } else { "SHARED" }
            )));
        }
        // What a failed first open gives back: the attach byte before the lifetime byte (a
        // newcomer that finds itself alone must not see this process still attached).
        let undo = |e: Error| -> Result<(Option<Ident>, bool)> {
            node.release_db_guard()?;
            node.unlock(NODE_HOLDER, LOCK_LIFETIME)?;
            Err(e)
        };
        if first {
            let alone = !readonly && node.try_lock(NODE_HOLDER, LOCK_LIFETIME, Kind::Exclusive)?;
            // Alone on this sidecar: refuse it if others are attached to another one of the
            // database (it was replaced under them), before anything is written to it.
            let r = if alone {
                node.hold_db_guard(guard, db_path, true)
                    .and_then(|_| Self::first_open(node, opts))
                    .map(|_| initialized = true)
            } else {
                Self::join(node, opts, db_path, guard)
                    .and_then(|_| Self::check_shape(&node.mapped()?.geom, opts, readonly))
            };
            if let Err(e) = r {
                return undo(e);
            }
        }
        if !first {
            Self::check_shape(&node.mapped()?.geom, opts, readonly)?;
        }
        let ident = if readonly {
            None
        } else {
            match slots::claim_instance(node, hid) {
                Ok(id) => Some(id),
                Err(e) if first => return undo(e),
                Err(e) => return Err(e),
            }
        };
        let m = node.mapped()?;
        if let (Some(id), true, true) = (&ident, first, opts.exclusive) {
            m.shm.u64(H_EXCL_NONCE).store(id.nonce, Relaxed);
            m.shm.u64(H_EXCL_ID).store(id.owner_id(), Release);
        }
        att.handles += 1;
        att.exclusive = opts.exclusive;
        Ok((ident, initialized))
    }

    /// Alone (lifetime byte exclusive): validate or (re)initialize, reset stale owners, then
    /// downgrade in place unless EXCLUSIVE.
    fn first_open(node: &Node, opts: &Options) -> Result<()> {
        let existing = match map_and_validate(node, true) {
            Ok(shm) => region::read_header(&shm).ok().map(|g| (shm, g)),
            Err(Error::Corrupt(_)) => None,
            Err(e) => return Err(e),
        };
        // The first process of a session chooses the shape: the one asked for, where `opts`
        // leaves a count open the sidecar's (or the default).
        let want = |old: Option<&Geometry>| {
            let pick = |asked: u32, had: Option<u32>, default: u32| match (asked, had) {
                (0, Some(h)) => h,
                (0, None) => default,
                (a, _) => a,
            };
            Geometry::new(
                pick(opts.reader_slots, old.map(|g| g.readers), DEFAULT_READERS),
                opts.reader_strategy,
                pick(
                    opts.instance_slots,
                    old.map(|g| g.instances),
                    DEFAULT_INSTANCES,
                ),
                opts.role_strategy,
            )
        };
        let mapped = match existing {
            Some((shm, geom)) if want(Some(&geom)) == geom => {
                node.set_mapped(shm, geom);
                reset_stale(node)?;
                node.mapped()?
            }
            old => {
                let geom = want(old.as_ref().map(|(_, g)| g));
                drop(old);
                region::grow(node.fd(), geom.base_len)?;
                let len = region::file_len(node.fd())?.max(geom.base_len);
                let shm = node.map(len)?;
                region::write_header(&shm, &geom);
                node.set_mapped(shm, geom);
                node.mapped()?
            }
        };
        Index::new(mapped).init();
        let shm = &mapped.shm;
        shm.u64(H_INIT_EPOCH).fetch_add(1, Relaxed);
        shm.u32(H_MODE).store(
            if opts.exclusive {
                MODE_EXCLUSIVE
            } else {
                MODE_SHARED
            },
            Release,
        );
        crate::testpoint::hit("open_initialized");
        if !opts.exclusive && !node.try_lock(NODE_HOLDER, LOCK_LIFETIME, Kind::Shared)? {
            return Err(Error::Internal(
                "converting the lifetime lock to shared in place failed".into(),
            ));
        }
        Ok(())
    }

    /// Others are attached: join them, or report the mode conflict.
    /// The mapping is the node's, shared by every handle of the process: its protection follows
    /// the node's descriptor, never the mode of the handle that happens to open first.
    fn join(
        node: &Node,
        opts: &Options,
        db_path: &Path,
        guard: Option<&Arc<DbGuard>>,
    ) -> Result<()> {
        let shared = !opts.exclusive && node.try_lock(NODE_HOLDER, LOCK_LIFETIME, Kind::Shared)?;
        if shared {
            // A read-only opener never wins the lifetime byte exclusively; nobody else holding
            // it shows that it is alone on this sidecar all the same.
            let alone = lock::probe(node.fd(), node.backend, LOCK_LIFETIME)?.0 == lock::Held::Free;
            node.hold_db_guard(guard, db_path, alone)?;
        }
        let shm = map_and_validate(node, false)?;
        let geom = region::read_header(&shm);
        if !shared {
            let msg = Self::conflict_message(node, &shm, geom.as_ref().ok(), opts.exclusive);
            if let Ok(g) = geom {
                node.set_mapped(shm, g);
            }
            return Err(Error::Conflict(msg));
        }
        let geom = geom.map_err(Error::Corrupt)?;
        crate::index::validate(&shm, &geom, node.fd())?;
        node.set_mapped(shm, geom);
        Ok(())
    }

    /// A joiner's request against the shape the first process chose: a count or a non-default
    /// strategy asked for (not 0) that differs is refused, never silently ignored. A read-only
    /// handle chooses nothing (it never writes the sidecar): it takes the shape as it is.
    fn check_shape(g: &Geometry, opts: &Options, readonly: bool) -> Result<()> {
        if readonly {
            return Ok(());
        }
        let strategy = |v: u32| if v == 0 { "CAS/shm" } else { "BYTELOCK" };
        let differs = [
            (
                "reader_slots",
                opts.reader_slots,
                g.readers,
                opts.reader_slots != 0,
            ),
            (
                "instance_slots",
                opts.instance_slots,
                g.instances,
                opts.instance_slots != 0,
            ),
            // the default strategy (0) joins either; another one is a request
            (
                "reader_strategy",
                opts.reader_strategy,
                g.reader_strategy,
                opts.reader_strategy != 0,
            ),
            (
                "role_strategy",
                opts.role_strategy,
                g.role_strategy,
                opts.role_strategy != 0,
            ),
        ]
        .into_iter()
        .find(|(_, asked, has, counts)| *counts && asked != has);
        match differs {
            None => Ok(()),
            Some((name, asked, has, _)) if name.ends_with("strategy") => {
                Err(Error::Conflict(format!(
                    "{name} {asked} ({}) asked for, but the processes attached use {has} ({}); \
                     the first process to attach chooses it",
                    strategy(asked),
                    strategy(has)
                )))
            }
            Some((name, asked, has, _)) => Err(Error::Conflict(format!(
                "{name} {asked} asked for, but the processes attached use a sidecar with {has}; \
                 the first process to attach chooses it (0 joins any)"
            ))),
        }
    }

    /// In a build with test hooks, `TSHM_TEST_STRATEGIES=seed` turns default strategies into
    /// the seed's byte locks, so that the whole test suite runs on them too.
    fn with_test_strategies(opts: &Options) -> Options {
        let mut o = opts.clone();
        static SEED: std::sync::OnceLock<bool> = std::sync::OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            crate::testpoint::setting(c"TSHM_TEST_STRATEGIES").is_some_and(|v| v == "seed")
        });
        if seed {
            if o.reader_strategy == READERS_CAS {
                o.reader_strategy = READERS_BYTELOCK;
            }
            if o.role_strategy == ROLES_SHM {
                o.role_strategy = ROLES_BYTELOCK;
            }
        }
        o
    }

    fn conflict_message(
        node: &Node,
        shm: &region::Shm,
        geom: Option<&Geometry>,
        want_exclusive: bool,
    ) -> String {
        if want_exclusive {
            let mut pids: Vec<u32> = Vec::new();
            if let Some(g) = geom {
                for i in 0..g.instances {
                    let id = shm.u64(g.instance(i)).load(Acquire);
                    if id != 0
                        && node
                            .held_anywhere(LOCK_INSTANCE_BASE + i as u64)
                            .unwrap_or(false)
                    {
                        pids.push((id >> 32) as u32);
                    }
                }
            }
            pids.sort_unstable();
            pids.dedup();
            if pids.is_empty() {
                "cannot open EXCLUSIVE: other processes have the sidecar open".into()
            } else {
                format!(
                    "cannot open EXCLUSIVE: the sidecar is open in SHARED mode by pid {}",
                    pids.iter()
                        .map(|p| p.to_string())
                        .collect::<Vec<_>>()
                        .join(", pid ")
                )
            }
        } else {
            let id = shm.u64(H_EXCL_ID).load(Acquire);
            if shm.u32(H_MODE).load(Acquire) == MODE_EXCLUSIVE && id != 0 {
                format!("the sidecar is open EXCLUSIVE by pid {}", id >> 32)
            } else {
                "the sidecar is held exclusively by another process".into()
            }
        }
    }

    fn check(&self) -> Result<()> {
        if self.closed.load(Relaxed) {
            return Err(Error::Misuse("handle is closed".into()));
        }
        if self.fork_gen != fork_gen() {
            return Err(Error::Misuse(
                "handle was opened by the parent process; after fork() the child may only close it"
                    .into(),
            ));
        }
        Ok(())
    }

    fn ident(&self) -> Result<&Ident> {
        self.ident.as_ref().ok_or_else(|| {
            Error::ReadOnly("a read-only handle cannot take roles or reader slots".into())
        })
    }

    fn role_state(&self, role: Role) -> &RoleState {
        &self.roles[match role {
            Role::Writer => 0,
            Role::Checkpointer => 1,
        }]
    }

    /// This handle's facts.
    pub fn info(&self) -> Result<tshm_info> {
        self.check()?;
        let m = self.node.mapped()?;
        Ok(tshm_info {
            mode: if self.exclusive {
                MODE_EXCLUSIVE
            } else {
                MODE_SHARED
            },
            backend: match self.node.backend {
                Backend::Ofd => TSHM_BACKEND_OFD,
                Backend::Posix => TSHM_BACKEND_POSIX,
            },
            reader_strategy: m.geom.reader_strategy,
            reader_slots: m.geom.readers,
            instance_slots: m.geom.instances,
            instance: self.ident.map_or(u32::MAX, |i| i.instance),
            pid: std::process::id(),
            readonly: self.ident.is_none() as i32,
            initialized: self.initialized as i32,
            role_strategy: m.geom.role_strategy,
            init_epoch: m.shm.u64(H_INIT_EPOCH).load(Relaxed),
        })
    }

    /// The current published snapshot. Lock-free.
    pub fn snapshot(&self) -> Result<tshm_snapshot> {
        self.check()?;
        Ok(Latch {
            shm: &self.node.mapped()?.shm,
        }
        .read())
    }

    /// Publishes the fields of `snap` named by `mask`; the handle must hold the writer or the
    /// checkpointer role. Returns the snapshot as published.
    pub fn publish(&self, snap: &tshm_snapshot, mask: u32) -> Result<tshm_snapshot> {
        self.check()?;
        let id = self.ident()?;
        if !self.roles.iter().any(RoleState::held) {
            return Err(Error::Misuse(
                "publishing needs the writer or checkpointer role".into(),
            ));
        }
        if mask & !crate::snapshot::TSHM_SNAP_ALL != 0 {
            return Err(Error::Misuse(format!(
                "unknown snapshot field bits {:#x}",
                mask & !crate::snapshot::TSHM_SNAP_ALL
            )));
        }
        let node = &self.node;
        Latch {
            shm: &node.mapped()?.shm,
        }
        .publish(snap, mask, id.tag(), |t| slots::tag_alive(node, t))
    }

    /// Takes the writer or checkpointer role, waiting up to `timeout_ms` (0: try once).
    ///
    /// The uncontended shared-memory path is [`roles::take`] alone: the role word tells this
    /// handle's threads apart. Everything else (a wait, a reclaim, byte-lock roles) runs with
    /// the handle's state `PENDING`, so one thread of the handle at most queues for the role.
    pub fn acquire(&self, role: Role, timeout_ms: u32) -> Result<()> {
        self.acquire_while(role, timeout_ms, None)
    }

    /// [`Coordinator::acquire`], asking `keep` before every sleep whether to go on waiting (no
    /// more: `TSHM_BUSY`). A waiter already chosen by a release gets the role regardless.
    #[inline(always)]
    pub fn acquire_while(&self, role: Role, timeout_ms: u32, keep: roles::Keep) -> Result<()> {
        self.check()?;
        let id = self.ident()?;
        let state = self.role_state(role);
        match roles::take(&self.node, id, role)? {
            Take::Taken => return self.took(id, role, false),
            Take::Mine => return Err(Self::already_held(role)),
            Take::Other => {}
        }
        if !state.swap_if(RoleState::FREE, RoleState::PENDING) {
            return Err(Self::already_held(role));
        }
        match roles::acquire(&self.node, id, role, timeout_ms, keep) {
            Ok(()) => self.took(id, role, true),
            Err(e) => {
                state.swap_if(RoleState::PENDING, RoleState::FREE);
                Err(e)
            }
        }
    }

    fn already_held(role: Role) -> Error {
        Error::Misuse(format!(
            "this handle already holds the {} role (or another of its threads is taking or \
             releasing it)",
            role.name()
        ))
    }

    /// The role is this handle's: trims the index (writer) and marks it held. `pending`: this
    /// thread set the state `PENDING` (otherwise it left the state alone).
    #[inline(always)]
    fn took(&self, id: &Ident, role: Role, pending: bool) -> Result<()> {
        let state = self.role_state(role);
        if role == Role::Writer {
            // A previous writer may have died between appending and committing.
            if let Err(e) = self.trim_index() {
                let _ = roles::release(&self.node, id, role);
                if pending {
                    state.swap_if(RoleState::PENDING, RoleState::FREE);
                }
                return Err(e);
            }
        }
        // Any state a sibling thread left is older than this win (its release stored FREE
        // before it gave up the role word; a queued sibling leaves PENDING without storing).
        state.set(RoleState::HELD);
        Ok(())
    }

    /// Drops index entries above the committed `max_frame`.
    #[inline(always)]
    fn trim_index(&self) -> Result<()> {
        let m = self.node.mapped()?;
        let ix = Index::new(m);
        if ix.tail() > 0 {
            let committed = Latch { shm: &m.shm }.read().max_frame;
            ix.truncate_as(committed, true)?;
        }
        Ok(())
    }

    /// Runs `f` on the index while this handle holds the writer role (the index's only
    /// mutator); the writer state (`IN_USE`) keeps the handle's other threads out meanwhile.
    fn with_writer_index<T>(&self, what: &str, f: impl FnOnce(&Index) -> Result<T>) -> Result<T> {
        self.check()?;
        self.ident()?;
        let state = self.role_state(Role::Writer);
        if !state.swap_if(RoleState::HELD, RoleState::IN_USE) {
            return Err(Error::Misuse(if state.held() {
                format!("{what}: another thread of this handle is using the frame index")
            } else {
                format!("{what} needs the writer role")
            }));
        }
        let r = self.node.mapped().and_then(|m| f(&Index::new(m)));
        state.set(RoleState::HELD);
        r
    }

    /// Adds `(page, frame)` to the shared frame index. Writer only; frames strictly increase.
    pub fn index_append(&self, page: u32, frame: u64) -> Result<()> {
        self.with_writer_index("appending to the frame index", |ix| {
            // SAFETY: the memo is used with this handle's node only, which it cannot outlive.
            unsafe { ix.append_with(&self.append_memo, page, frame, self.index_limit) }
        })
    }

    /// The newest frame at or below `max_frame` that holds `page`. Lock-free.
    pub fn index_find(&self, page: u32, max_frame: u64) -> Result<Option<u64>> {
        self.check()?;
        Index::new(self.node.mapped()?).find(page, max_frame)
    }

    /// Rollback: drops index entries above `max_frame`, which may not be below the committed
    /// (published) `max_frame`. Writer only. Returns the number dropped.
    pub fn index_truncate(&self, max_frame: u64) -> Result<u64> {
        let committed = self.snapshot()?.max_frame;
        if max_frame < committed {
            return Err(Error::Misuse(format!(
                "truncating the index to frame {max_frame} would drop committed frames (the \
                 snapshot's max_frame is {committed}); reset the index after the WAL restarts"
            )));
        }
        self.with_writer_index("truncating the frame index", |ix| ix.truncate(max_frame))
    }

    /// Empties the index after the WAL restarted. Writer only.
    pub fn index_reset(&self) -> Result<()> {
        self.with_writer_index("resetting the frame index", |ix| {
            ix.reset();
            Ok(())
        })
    }

    /// Calls `f(page, frame)` for each page's newest frame at or below `max_frame`, in page
    /// order, until `f` returns false.
    pub fn index_for_each(&self, max_frame: u64, f: impl FnMut(u32, u64) -> bool) -> Result<()> {
        self.check()?;
        Index::new(self.node.mapped()?).for_each(max_frame, f)
    }

    /// The index's counters.
    pub fn index_stats(&self) -> Result<tshm_index_stats> {
        self.check()?;
        Ok(Index::new(self.node.mapped()?).stats())
    }

    /// Engine region `idx` of `size` bytes; `None` if it does not exist and `extend` is false.
    /// The pointer stays valid until this process's last handle on the sidecar closes.
    /// A read-only handle only finds regions that exist (`TSHM_READONLY` where it would have to
    /// create one); it must not write through the pointer.
    pub fn region(&self, idx: u32, size: u64, extend: bool) -> Result<Option<*mut u8>> {
        self.check()?;
        let readonly = self.ident.is_none();
        match crate::engine::region(&self.node, idx, size, extend && !readonly)? {
            None if extend && readonly => Err(Error::ReadOnly(format!(
                "engine region {idx} does not exist and a read-only handle cannot create it"
            ))),
            r => Ok(r),
        }
    }

    /// Takes or releases engine lock slots `slot..slot+n` (`TSHM_LOCK_*` flags); never waits.
    /// `Ok(false)`: another handle holds a conflicting lock, and nothing was taken.
    pub fn engine_lock(&self, slot: u32, n: u32, flags: u32) -> Result<bool> {
        self.check()?;
        let mut held = self.engine_locks.lock().unwrap_or_else(|e| e.into_inner());
        crate::engine::lock(
            &self.node,
            self.hid,
            self.ident.as_ref(),
            &mut held,
            slot,
            n,
            flags,
        )
    }

    /// Releases a role this handle holds.
    pub fn release(&self, role: Role) -> Result<()> {
        self.check()?;
        let id = self.ident()?;
        let state = self.role_state(role);
        // Shared-memory roles: FREE before the role word, so a sibling thread that wins the word
        // next stores HELD after this store, never before it. Byte locks: RELEASING until the
        // lock is gone, since a sibling's acquire waits for FREE.
        let bytelock = self.node.mapped()?.geom.role_strategy == ROLES_BYTELOCK;
        let next = if bytelock {
            RoleState::RELEASING
        } else {
            RoleState::FREE
        };
        if !state.swap_if(RoleState::HELD, next) {
            return Err(Error::Misuse(if state.held() {
                format!(
                    "the {} role cannot be released while another thread of this handle uses \
                     the frame index under it",
                    role.name()
                )
            } else {
                format!("this handle does not hold the {} role", role.name())
            }));
        }
        if !bytelock {
            return roles::release(&self.node, id, role);
        }
        let r = roles::release(&self.node, id, role);
        state.set(RoleState::FREE);
        r
    }

    /// Begins a read transaction pinning the current snapshot. Returns the slot and the
    /// snapshot. Transactions of one handle at one snapshot share a slot (see [`Pins`]).
    pub fn reader_begin(&self) -> Result<(u32, tshm_snapshot)> {
        let mut snap = tshm_snapshot::default();
        self.reader_begin_into(&mut snap).map(|slot| (slot, snap))
    }

    /// [`Coordinator::reader_begin`] into `out` (what the C API calls). `out` is unspecified
    /// after an error.
    pub fn reader_begin_into(&self, out: &mut tshm_snapshot) -> Result<u32> {
        self.check()?;
        self.pins.begin(&self.node, self.ident()?, out)
    }

    /// Ends a read transaction on `slot`.
    pub fn reader_end(&self, slot: u32) -> Result<()> {
        self.check()?;
        self.pins.end(&self.node, self.ident()?, slot)
    }

    /// The oldest frame pinned by a live reader, or `NO_FRAME`.
    pub fn min_reader_frame(&self) -> Result<u64> {
        self.check()?;
        slots::min_reader_frame(&self.node)
    }

    /// Who holds `role` (0 lifetime, 1 writer, 2 checkpointer, 3 + i reader slot i).
    pub fn owner(&self, role: u32) -> Result<slots::tshm_owner_info> {
        self.check()?;
        roles::owner(&self.node, role)
    }

    /// Live instances attached to the sidecar, as (pid, instance).
    pub fn live_instances(&self) -> Result<Vec<(u32, u32)>> {
        self.check()?;
        slots::live_instances(&self.node)
    }

    /// Releases every role, reader slot and engine lock the handle holds; a failure of one step
    /// is reported (the first) but never skips the others.
    fn release_everything(&self) -> Result<()> {
        let Some(id) = self.ident else { return Ok(()) };
        // Closing: no other call runs on the handle, so a role is held or free, nothing between.
        let writer = self
            .role_state(Role::Writer)
            .swap_if(RoleState::HELD, RoleState::FREE);
        let ckpt = self
            .role_state(Role::Checkpointer)
            .swap_if(RoleState::HELD, RoleState::FREE);
        let mut result = self.pins.release_all(&self.node, &id);
        if writer {
            result = result.and(roles::release(&self.node, &id, Role::Writer));
        }
        if ckpt {
            result = result.and(roles::release(&self.node, &id, Role::Checkpointer));
        }
        let mut locks = self.engine_locks.lock().unwrap_or_else(|e| e.into_inner());
        result.and(crate::engine::release_all(&self.node, &id, &mut locks))
    }

    /// Detaches the handle, releasing everything it holds. Returns whether it was the last
    /// handle of the last process attached; in that case `on_last` ran first, with this handle
    /// still fully usable and every other opener held off.
    pub fn close(self, on_last: impl FnOnce(&Coordinator)) -> Result<bool> {
        self.shutdown(on_last)
    }

    /// [`Coordinator::close`] for callers that cannot give up ownership (the C API, `Drop`).
    /// The handle refuses every call afterwards.
    pub fn shutdown(&self, on_last: impl FnOnce(&Coordinator)) -> Result<bool> {
        if self.closing.swap(true, AcqRel) {
            return Err(Error::Misuse("handle is already closed or closing".into()));
        }
        self.closed.store(true, Release);
        if self.fork_gen != fork_gen() {
            return Ok(false); // inherited: the parent's locks and records are not ours to touch
        }
        // Every step runs whatever failed before it: a failure is reported (the first one), but
        // the handle still lets go of everything and the node's count goes down.
        let node = self.node.clone();
        let _serial = node.open_close.lock().unwrap_or_else(|e| e.into_inner());
        let mut result = self.release_everything();
        let last_here = node.attached().handles == 1;
        let mut was_last = false;
        if last_here && self.ident.is_some() {
            let alone = if crate::testpoint::fail("close_init") {
                Err(crate::testpoint::injected("close_init"))
            } else {
                node.lock_wait(self.hid, LOCK_INIT, Kind::Exclusive)
            }
            .and_then(|_| node.try_lock(NODE_HOLDER, LOCK_LIFETIME, Kind::Exclusive));
            crate::testpoint::hit("close_upgrade");
            match alone {
                Ok(true) => {
                    was_last = true;
                    self.closed.store(false, Release);
                    crate::testpoint::hit("close_last_hook");
                    {
                        let _hook = InLastCloseHook::enter(node.key);
                        on_last(self);
                    }
                    crate::testpoint::hit("close_last_done");
                    self.closed.store(true, Release);
                    result = result.and(self.release_everything());
                    // Alone: records of processes that died attached are stale; leave none.
                    result = result.and(reset_stale(&node));
                    if let Ok(m) = node.mapped() {
                        m.shm.u64(H_EXCL_ID).store(0, Relaxed);
                        m.shm.u32(H_MODE).store(0, Release);
                    }
                }
                Ok(false) => {}
                Err(e) => result = result.and(Err(e)),
            }
        }
        if let Some(id) = &self.ident {
            result = result.and(slots::release_instance(&node, id));
        }
        // The lifetime byte goes before the init byte: a newcomer waiting on init must find it
        // free (and initialize) or shared, never still exclusive. The attach byte goes before
        // both: a newcomer alone on the sidecar must not find this process still attached.
        if last_here {
            result = result.and(node.release_db_guard());
            result = result.and(node.unlock(NODE_HOLDER, LOCK_LIFETIME).map(|_| ()));
        }
        result = result.and(node.unlock_all(self.hid));
        node.attached().handles -= 1;
        result.map(|_| was_last)
    }
}

impl Drop for Coordinator {
    fn drop(&mut self) {
        if !self.closing.load(Acquire) {
            let _ = self.shutdown(|_| {});
        }
    }
}

/// RAII guard for a role taken through [`Coordinator::role_guard`]; releases on drop.
pub struct RoleGuard<'a> {
    coord: &'a Coordinator,
    role: Role,
}

impl Drop for RoleGuard<'_> {
    fn drop(&mut self) {
        let _ = self.coord.release(self.role);
    }
}

/// RAII read transaction from [`Coordinator::read_txn`]; ends on drop.
pub struct ReadTxn<'a> {
    coord: &'a Coordinator,
    pub slot: u32,
    pub snapshot: tshm_snapshot,
}

impl Drop for ReadTxn<'_> {
    fn drop(&mut self) {
        let _ = self.coord.reader_end(self.slot);
    }
}

impl Coordinator {
    /// Takes `role` and returns a guard that releases it.
    pub fn role_guard(&self, role: Role, timeout_ms: u32) -> Result<RoleGuard<'_>> {
        self.acquire(role, timeout_ms)?;
        Ok(RoleGuard { coord: self, role })
    }

    /// Begins a read transaction that ends when the returned value is dropped.
    pub fn read_txn(&self) -> Result<ReadTxn<'_>> {
        let (slot, snapshot) = self.reader_begin()?;
        Ok(ReadTxn {
            coord: self,
            slot,
            snapshot,
        })
    }
}
