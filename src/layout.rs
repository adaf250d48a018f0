//! `docs/PROTOCOL.md` is the specification of this byte map and of every protocol on it.
//! The sidecar's byte map: the single description of the `-tshm` file, layout version 3.
//!
//! Owns: every offset, size and magic number of the file and of the lock-byte map. Other modules
//! name these constants; none computes an offset of its own. All multi-byte fields are native
//! endian (the sidecar is a transient file of one machine) and naturally aligned, so each can be
//! viewed as an `AtomicU32`/`AtomicU64`. The endianness tag refuses a file written by another byte
//! order.
//!
//! ```text
//! file offset  size        contents
//! 0            4096        header page (fields below)
//! 4096         R * 16      reader slots: [owner tag u64][pinned frame u64]
//! ...          I * 128     instance table (record below; two cache lines, one per handle)
//! (page)       32768       index directory top: 8192 x u32 (node page for pages >> 19)
//! +32768       4096        index block top: 1024 x u32 (node page for blocks >> 10)
//! base_len     ...         index pool: 64 KiB units, each an entry block or 16 node pages
//! ```
//!
//! The pool is owned by [`crate::index`], which documents its structure.
//!
//! The file only grows while anyone has it mapped. Shrinking it from outside under live mappings
//! is outside the contract (an access to a lost page is SIGBUS, as with SQLite's `-shm`); every
//! other change to its bytes is detected and reported as corruption.
//!
//! Header page (byte offsets):
//!
//! ```text
//!   0 u32 magic 'TSHM'          4 u32 layout version        8 u32 endianness tag 0x01020304
//!  12 u32 header bytes (4096)  16 u32 reader slots R        20 u32 reader strategy
//!  24 u32 instance slots I     28 u32 role strategy        32 u64 readers offset
//!  40 u64 instances offset     48 u64 base_len             56 u64 FNV-1a of bytes 0..56
//!  64 u64 init epoch (first-opener (re)initializations)
//!  72 u32 open mode (1 SHARED, 2 EXCLUSIVE)                 80 u64 exclusive holder id
//!  88 u64 exclusive holder nonce
//! 128 u64 writer owner id      136 u64 writer owner nonce
//! 144 u64 checkpointer owner id 152 u64 checkpointer owner nonce
//! 160 u64 publish token (tag of the handle publishing a snapshot, 0 when none)
//! 168 u64 writer role word     176 u64 checkpointer role word (shared-memory roles: the
//!         holder's tag, | ROLE_WAITERS while someone waits; 0 when free)
//! 192 u32 writer release counter (futex word)   196 u32 checkpointer release counter
//! 200 u32 writer waiters       204 u32 checkpointer waiters (byte-lock roles: releasers skip
//!         the wake when 0)
//! 208 u64 writer next ticket   216 u64 checkpointer next ticket (shared-memory roles: arrival
//!         order of waiters)
//! 256 u64 snapshot sequence    264 9 x u64 snapshot copy 0    336 9 x u64 snapshot copy 1
//! 512 u64 index generation     520 u64 pool units published  528 u64 entry blocks with a unit
//! 536 u64 next free node page  544 u64 end of the node unit   552 u64 node pages in use
//! 576 u64 index entry count    584 u64 tail frame
//! 592 u64 trim word: floor slot << 32 | dead entries (all below the floor), one atomic
//! 600 u64 trim floor frame     608 u64 unused (0)             616 u64 pool units reserved
//! 624 u32 engine region size (0 until the first region is made)
//! 632 u32 instance high-water mark (instances 0..hwm may be in use)
//! 636 u32 reader slot high-water mark (slots 0..hwm may be in use)
//! 640 8 x u64 writer counters     704 8 x u64 checkpointer counters (see `ROLE_STAT_*`)
//! 768 4 x u64 reader counters (see `READER_STAT_*`)
//! 1024 512 x u32 engine region table: pool unit + 1 of region i, 0 when it does not exist
//! 3072 32 x u64 engine lock slots: tag of the EXCLUSIVE holder, 0 when none
//! ```
//!
//! Index words that readers load on every lookup (512..) sit on a cache line apart from those the
//! writer stores on every append (576..).
//!
//! An owner id is `pid << 32 | instance index`; the nonce is the instance's random nonce, so a
//! reused pid cannot alias an old record. A *tag* names a live instance incarnation:
//! `(index + 1) << 48 | (generation & TAG_GEN_MASK)`, a generation of 47 bits (bit 47 is
//! `ROLE_WAITERS`, never set in a tag); a tag whose generation no longer matches the instance
//! table, or whose liveness byte is free, belongs to a dead instance. The 16 bits of
//! `index + 1` are why a sidecar has at most 65535 instance slots.
//!
//! Lock bytes (offsets on the sidecar descriptor; they need not lie inside the file):
//!
//! ```text
//! 0            lifetime: SHARED by every attached process, EXCLUSIVE while alone
//! 1            writer role (byte-lock role strategy only)
//! 2            checkpointer role (byte-lock role strategy only)
//! 2048         init: serializes the open and close protocols across processes
//! 8192 .. +32  engine lock slots held SHARED by read-only handles (see [`crate::engine`])
//! 2^20 .. +R   reader slots (byte-lock reader strategy only)
//! 2^24 .. +I   instance liveness: held EXCLUSIVE by each open handle for its whole life
//! ```
//!
//! One lock byte lies on the *database file* (a descriptor of its own, opened read-only):
//!
//! ```text
//! DB_ATTACH_BYTE  attach: SHARED by every process attached to the database's sidecar
//! ```
//!
//! It is far beyond any data and clear of the bytes SQLite locks (0x40000000 .. +510). A
//! process that finds itself alone on the sidecar at its path while another process holds this
//! byte knows the sidecar was replaced (renamed over or removed) under live users, who
//! coordinate through the old file: it refuses to start a second session (see
//! [`crate::node::DbGuard`]).
//!
//! Instance record (128 bytes):
//!
//! ```text
//!  +0 u64 owner id   +8 u64 nonce   +16 u64 generation   +24 u64 engine locks
//! +32 u64 writer wait ticket   +40 u64 checkpointer wait ticket (0: not waiting)
//! +48 u32 writer wake word     +52 u32 checkpointer wake word (futex words of this waiter)
//! +64 u64 writer acquires      +72 u64 writer wait ns   +80 u64 checkpointer acquires
//! +88 u64 checkpointer wait ns (written by the role holder only)
//! ```
//!
//! The engine lock word (+24) holds the engine lock slots its handle holds: bits 0..32 SHARED,
//! bits 32..64 EXCLUSIVE (the SHARED bits are the locks themselves; see [`crate::engine`]).

/// `'TSHM'` in the first four bytes.
pub(crate) const MAGIC: u32 = u32::from_le_bytes(*b"TSHM");
/// Bumped whenever the byte map changes incompatibly.
pub(crate) const VERSION: u32 = 3;
pub(crate) const ENDIAN_TAG: u32 = 0x0102_0304;
pub(crate) const PAGE: u64 = 4096;
/// The header page in 64-bit words.
pub(crate) const HEADER_WORDS: usize = PAGE as usize / 8;

pub(crate) const H_MAGIC: usize = 0;
pub(crate) const H_VERSION: usize = 4;
pub(crate) const H_ENDIAN: usize = 8;
pub(crate) const H_HEADER_BYTES: usize = 12;
pub(crate) const H_READERS: usize = 16;
pub(crate) const H_READER_STRATEGY: usize = 20;
pub(crate) const H_INSTANCES: usize = 24;
pub(crate) const H_ROLE_STRATEGY: usize = 28;
pub(crate) const H_READERS_OFF: usize = 32;
pub(crate) const H_INSTANCES_OFF: usize = 40;
pub(crate) const H_BASE_LEN: usize = 48;
pub(crate) const H_GEOM_SUM: usize = 56;
pub(crate) const H_INIT_EPOCH: usize = 64;
pub(crate) const H_MODE: usize = 72;
pub(crate) const H_EXCL_ID: usize = 80;
pub(crate) const H_EXCL_NONCE: usize = 88;
pub(crate) const H_WRITER_ID: usize = 128;
pub(crate) const H_WRITER_NONCE: usize = 136;
pub(crate) const H_CKPT_ID: usize = 144;
pub(crate) const H_CKPT_NONCE: usize = 152;
pub(crate) const H_PUBLISH_TOKEN: usize = 160;
pub(crate) const H_WRITER_WORD: usize = 168;
pub(crate) const H_CKPT_WORD: usize = 176;
pub(crate) const H_WRITER_WAKE: usize = 192;
pub(crate) const H_CKPT_WAKE: usize = 196;
pub(crate) const H_WRITER_WAITERS: usize = 200;
pub(crate) const H_CKPT_WAITERS: usize = 204;
pub(crate) const H_WRITER_TICKET: usize = 208;
pub(crate) const H_CKPT_TICKET: usize = 216;
pub(crate) const H_SNAP_SEQ: usize = 256;
pub(crate) const H_SNAP_COPY: [usize; 2] = [264, 336];
pub(crate) const H_IX_GEN: usize = 512;
pub(crate) const H_IX_UNITS: usize = 520;
pub(crate) const H_IX_BLOCKS: usize = 528;
pub(crate) const H_IX_NODE_NEXT: usize = 536;
pub(crate) const H_IX_NODE_END: usize = 544;
pub(crate) const H_IX_NODES: usize = 552;
pub(crate) const H_IX_COUNT: usize = 576;
pub(crate) const H_IX_TAIL: usize = 584;
pub(crate) const H_IX_FLOOR: usize = 592;
pub(crate) const H_IX_FLOOR_FRAME: usize = 600;
pub(crate) const H_IX_RESERVED: usize = 616;
pub(crate) const H_REGION_SIZE: usize = 624;
pub(crate) const H_INSTANCE_HWM: usize = 632;
pub(crate) const H_READER_HWM: usize = 636;
pub(crate) const H_WRITER_STATS: usize = 640;
pub(crate) const H_CKPT_STATS: usize = 704;
pub(crate) const H_READER_STATS: usize = 768;
/// Role counters (u64 each, from the role's counter block): acquisitions, acquisitions that
/// waited, total and longest wait in ns — written by the holder only, so plain loads and stores
/// count exactly — then BUSY returns (by the refused handle, an atomic add), stale holders
/// reclaimed and direct handoffs to a waiter.
pub(crate) const ROLE_STAT_ACQUIRES: usize = 0;
pub(crate) const ROLE_STAT_WAITED: usize = 8;
pub(crate) const ROLE_STAT_WAIT_NS: usize = 16;
pub(crate) const ROLE_STAT_MAX_WAIT_NS: usize = 24;
pub(crate) const ROLE_STAT_BUSY: usize = 32;
pub(crate) const ROLE_STAT_RECLAIMS: usize = 40;
pub(crate) const ROLE_STAT_HANDOFFS: usize = 48;
/// Reader counters: slots claimed, stale slots reclaimed, BUSY returns, transactions that had
/// to take a slot of their own beside the handle's kept ones (atomic adds, on slow paths only).
pub(crate) const READER_STAT_CLAIMS: usize = 0;
pub(crate) const READER_STAT_RECLAIMS: usize = 8;
pub(crate) const READER_STAT_BUSY: usize = 16;
pub(crate) const READER_STAT_EXTRA: usize = 24;
/// Instance record fields (offsets within a record).
pub(crate) const I_ID: usize = 0;
pub(crate) const I_NONCE: usize = 8;
pub(crate) const I_GENERATION: usize = 16;
pub(crate) const I_ENGINE_LOCKS: usize = 24;
pub(crate) const I_WRITER_TICKET: usize = 32;
pub(crate) const I_CKPT_TICKET: usize = 40;
pub(crate) const I_WRITER_WAKE: usize = 48;
pub(crate) const I_CKPT_WAKE: usize = 52;
pub(crate) const I_WRITER_ACQUIRES: usize = 64;
pub(crate) const I_WRITER_WAIT_NS: usize = 72;
pub(crate) const I_CKPT_ACQUIRES: usize = 80;
pub(crate) const I_CKPT_WAIT_NS: usize = 88;
pub(crate) const H_REGIONS: usize = 1024;
pub(crate) const H_ENGINE_OWNERS: usize = 3072;
/// Bytes in one index-pool unit (an entry block, 16 node pages, or an engine region).
pub(crate) const POOL_UNIT: u64 = 65536;
/// Engine regions a sidecar can hold.
pub(crate) const MAX_REGIONS: u32 = 512;
/// Engine lock slots.
pub(crate) const ENGINE_LOCKS: u32 = 32;
/// Directory top table entries (one per 2^19 database pages).
pub(crate) const IX_DIR_TOP: u64 = 8192;
/// Block top table entries (one per 1024 entry blocks).
pub(crate) const IX_BLK_TOP: u64 = 1024;
/// Node pages in one pool unit.
pub(crate) const NODES_PER_UNIT: u64 = POOL_UNIT / PAGE;
/// Bytes of one index entry: the page, the link to the previous entry of that page, the frame.
pub(crate) const ENTRY_BYTES: u64 = 16;
/// Entries per block (a block is one pool unit).
pub(crate) const BLOCK_ENTRIES: u64 = POOL_UNIT / ENTRY_BYTES;
/// Set in the frame word of an entry dropped by a rollback.
pub(crate) const DEAD: u64 = 1 << 63;
/// Slots per generation (slot + 1 must fit the 32-bit `prev` and directory fields).
pub(crate) const MAX_ENTRIES: u64 = u32::MAX as u64 - 1;
/// Units beyond those the counters account for that a reservation may reach (allocators killed
/// between reserving and publishing a unit; the index's `unit_bound`).
pub(crate) const UNIT_MARGIN: u64 = 64;
/// Words in one snapshot copy.
pub(crate) const SNAP_WORDS: usize = 9;

pub(crate) const MODE_SHARED: u32 = 1;
pub(crate) const MODE_EXCLUSIVE: u32 = 2;

pub(crate) const READER_SLOT_BYTES: u64 = 16;
/// Two cache lines: a handle's record (its engine-lock word changes on every engine lock, its
/// wake words on every handoff) shares no line with another process's.
pub(crate) const INSTANCE_BYTES: u64 = 128;
pub(crate) const MIN_READERS: u32 = 64;
pub(crate) const DEFAULT_READERS: u32 = 4096;
pub(crate) const MAX_READERS: u32 = 65536;
pub(crate) const MIN_INSTANCES: u32 = 1;
pub(crate) const DEFAULT_INSTANCES: u32 = 4096;
/// A tag holds `index + 1` in its 16 high bits, 0 meaning nobody: 65535 instances at most.
pub(crate) const MAX_INSTANCES: u32 = 65535;

/// Reader strategy: claim a slot by CAS in shared memory, liveness from the instance byte.
pub(crate) const READERS_CAS: u32 = 0;
/// Reader strategy: one byte lock per read transaction (the reference system's way).
pub(crate) const READERS_BYTELOCK: u32 = 1;
/// Role strategy: the writer and checkpointer roles are words in shared memory (the holder's
/// tag), liveness from the instance byte, waiters queued by ticket and handed the role.
pub(crate) const ROLES_SHM: u32 = 0;
/// Role strategy: one byte lock per role (the seed's way; two syscalls per transaction).
pub(crate) const ROLES_BYTELOCK: u32 = 1;
/// Set in a role word while a handle waits for the role: its release goes the slow way, handing
/// the role to the longest waiter. Bit 47 is the top bit of a tag's generation, which tags
/// never use (see [`TAG_GEN_MASK`]).
pub(crate) const ROLE_WAITERS: u64 = 1 << 47;
/// The generation bits of a tag.
pub(crate) const TAG_GEN_MASK: u64 = (1 << 47) - 1;

pub(crate) const LOCK_LIFETIME: u64 = 0;
pub(crate) const LOCK_WRITER: u64 = 1;
pub(crate) const LOCK_CKPT: u64 = 2;
pub(crate) const LOCK_INIT: u64 = 2048;
pub(crate) const LOCK_ENGINE_RO_BASE: u64 = 8192;
pub(crate) const LOCK_READER_BASE: u64 = 1 << 20;
pub(crate) const LOCK_INSTANCE_BASE: u64 = 1 << 24;
/// The attach byte on the database file ('tshm' in the high bytes): far beyond any data and
/// any lock byte SQLite uses.
pub(crate) const DB_ATTACH_BYTE: u64 = 0x7473_686d_0000_0000;

/// A frame number meaning "no frame pinned".
pub(crate) const NO_FRAME: u64 = u64::MAX;

const _: () = assert!(LOCK_ENGINE_RO_BASE + ENGINE_LOCKS as u64 <= LOCK_READER_BASE);
const _: () = assert!(LOCK_READER_BASE + MAX_READERS as u64 <= LOCK_INSTANCE_BASE);
const _: () = assert!(MAX_INSTANCES < 1 << 16, "a tag's instance field is 16 bits");
const _: () = assert!(H_READER_STATS + 32 <= H_REGIONS);
const _: () = assert!(I_CKPT_WAIT_NS + 8 <= INSTANCE_BYTES as usize);
const _: () = assert!(DB_ATTACH_BYTE > 0x4000_0000 + 512 && DB_ATTACH_BYTE < i64::MAX as u64);
const _: () = assert!(H_SNAP_COPY[1] + SNAP_WORDS * 8 <= H_IX_GEN);
const _: () = assert!(H_REGION_SIZE + 4 <= H_REGIONS);
const _: () = assert!(H_REGIONS + MAX_REGIONS as usize * 4 <= H_ENGINE_OWNERS);
const _: () = assert!(H_ENGINE_OWNERS + ENGINE_LOCKS as usize * 8 <= PAGE as usize);
#[cfg(not(target_has_atomic = "64"))]
compile_error!("libtshm needs lock-free 64-bit atomics to share memory between processes");

/// The immutable shape of one sidecar, fixed when it is initialized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Geometry {
    pub readers: u32,
    pub reader_strategy: u32,
    pub instances: u32,
    pub role_strategy: u32,
    pub readers_off: u64,
    pub instances_off: u64,
    pub base_len: u64,
}

impl Geometry {
    /// The geometry a new sidecar gets for the given counts (already range-checked).
    pub fn new(readers: u32, reader_strategy: u32, instances: u32, role_strategy: u32) -> Geometry {
        let readers_off = PAGE;
        let instances_off = readers_off + readers as u64 * READER_SLOT_BYTES;
        let end = instances_off + instances as u64 * INSTANCE_BYTES;
        let index_off = end.div_ceil(PAGE) * PAGE;
        Geometry {
            readers,
            reader_strategy,
            instances,
            role_strategy,
            readers_off,
            instances_off,
            base_len: index_off + IX_DIR_TOP * 4 + IX_BLK_TOP * 4,
        }
    }

    /// Checks a geometry read from a file: every count in range and every offset exactly where
    /// [`Geometry::new`] would put it. A file that fails this is corrupt.
    pub fn validate(&self) -> Result<(), String> {
        if !(MIN_READERS..=MAX_READERS).contains(&self.readers) {
            return Err(format!(
                "reader slot count {} outside {MIN_READERS}..={MAX_READERS}",
                self.readers
            ));
        }
        if self.reader_strategy > READERS_BYTELOCK {
            return Err(format!("unknown reader strategy {}", self.reader_strategy));
        }
        if !(MIN_INSTANCES..=MAX_INSTANCES).contains(&self.instances) {
            return Err(format!(
                "instance count {} outside {MIN_INSTANCES}..={MAX_INSTANCES}",
                self.instances
            ));
        }
        if self.role_strategy > ROLES_BYTELOCK {
            return Err(format!("unknown role strategy {}", self.role_strategy));
        }
        let expect = Geometry::new(
            self.readers,
            self.reader_strategy,
            self.instances,
            self.role_strategy,
        );
        if expect != *self {
            return Err(format!(
                "table offsets {:?} do not match the counts (expected {:?})",
                self, expect
            ));
        }
        Ok(())
    }

    pub fn reader_slot(&self, i: u32) -> usize {
        assert!(i < self.readers, "reader slot index checked by caller");
        (self.readers_off + i as u64 * READER_SLOT_BYTES) as usize
    }

    /// Offset of the index directory top table (`IX_DIR_TOP` x u32).
    pub fn dir_top(&self) -> usize {
        (self.base_len - IX_DIR_TOP * 4 - IX_BLK_TOP * 4) as usize
    }

    /// Offset of the index block top table (`IX_BLK_TOP` x u32).
    pub fn blk_top(&self) -> usize {
        (self.base_len - IX_BLK_TOP * 4) as usize
    }

    pub fn instance(&self, i: u32) -> usize {
        assert!(i < self.instances, "instance index checked by caller");
        (self.instances_off + i as u64 * INSTANCE_BYTES) as usize
    }
}

/// FNV-1a over the geometry bytes of the header, stored at `H_GEOM_SUM`.
pub fn geometry_sum(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ *b as u64).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// Owner id as stored in owner records: `pid << 32 | instance index`.
pub fn owner_id(pid: u32, instance: u32) -> u64 {
    (pid as u64) << 32 | instance as u64
}

pub fn make_tag(instance: u32, generation: u64) -> u64 {
    ((instance as u64 + 1) << 48) | (generation & TAG_GEN_MASK)
}

/// Splits a tag into (instance index, generation); `None` for 0 (free).
pub fn split_tag(tag: u64) -> Option<(u32, u64)> {
    let hi = tag >> 48;
    if hi == 0 {
        None
    } else {
        Some(((hi - 1) as u32, tag & TAG_GEN_MASK))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_geometry_validates_and_is_page_aligned() {
        let g = Geometry::new(DEFAULT_READERS, READERS_CAS, DEFAULT_INSTANCES, ROLES_SHM);
        assert!(g.validate().is_ok());
        assert_eq!(g.base_len % PAGE, 0);
        assert!(g.instance(g.instances - 1) + INSTANCE_BYTES as usize <= g.base_len as usize);
    }

    #[test]
    fn absurd_counts_and_moved_offsets_are_rejected() {
        let mut g = Geometry::new(64, READERS_CAS, 8, ROLES_SHM);
        g.readers = 1 << 30;
        assert!(g.validate().is_err());
        let mut g = Geometry::new(64, READERS_CAS, 8, ROLES_SHM);
        g.instances_off += 8;
        assert!(g.validate().is_err());
        let mut g = Geometry::new(64, READERS_CAS, 8, ROLES_SHM);
        g.reader_strategy = 7;
        assert!(g.validate().is_err());
        let mut g = Geometry::new(64, READERS_CAS, 8, ROLES_SHM);
        g.base_len = u64::MAX;
        assert!(g.validate().is_err());
    }

    #[test]
    fn tags_round_trip_and_zero_is_free() {
        assert_eq!(split_tag(0), None);
        let t = make_tag(4095, 0x1234_5678_9abc_def0);
        assert_eq!(split_tag(t), Some((4095, 0x5678_9abc_def0 & TAG_GEN_MASK)));
        assert_eq!(t & ROLE_WAITERS, 0, "a tag never has the waiters bit");
    }

    #[test]
    fn every_instance_a_table_can_hold_has_a_tag_naming_it() {
        for i in 0..MAX_INSTANCES {
            let t = make_tag(i, 1);
            assert_eq!(split_tag(t), Some((i, 1)), "instance {i}: tag {t:#x}");
        }
        let g = Geometry::new(MIN_READERS, READERS_CAS, MAX_INSTANCES, ROLES_SHM);
        assert!(g.validate().is_ok());
    }
}
