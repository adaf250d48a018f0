//! SQLite's view of a database used through the SQLite shim (`examples/sqlite-vfs/tshm_vfs.c`).
//!
//! Owns: finding SQLite's wal-index in engine region 0, decoding its header and checkpoint
//! information, naming the engine lock slots after SQLite's `xShmLock` slots, and reading the
//! header of `<db>-wal`. Like the rest of the inspector it takes no lock and writes nothing.
//!
//! **Why this shape.** The shim hands SQLite libtshm engine regions as its wal-index regions
//! (region i is SQLite's iRegion, 32 KiB each) and maps SQLite's lock slots onto libtshm:
//! WAL_WRITE_LOCK (slot 0) is the writer role, slots 1..7 are engine lock slots 1..7 (CKPT,
//! RECOVER, READ0..READ4), and engine lock slot 8 is the shim's own "step aside" lock, held
//! EXCLUSIVE by a write-lock holder whose checkpoint waits for read marks. The inspector
//! already knows who holds each engine slot (the instance records' engine-lock words) and the
//! writer role; this module puts SQLite's names and the read marks beside them, so that "who
//! holds READ2, at which frame" is one line instead of a lookup in two source files.
//!
//! Region 0 begins with what SQLite writes there, native endian, as in memory (`wal.c`):
//!
//! ```text
//!   0  WalIndexHdr copy 0 (48 bytes)      48  WalIndexHdr copy 1 (48 bytes)
//!  WalIndexHdr:  +0 u32 iVersion (3007000)  +4 u32 unused  +8 u32 iChange
//!               +12 u8 isInit  +13 u8 bigEndCksum  +14 u16 szPage (1 means 65536)
//!               +16 u32 mxFrame  +20 u32 nPage  +24 2 x u32 aFrameCksum
//!               +32 2 x u32 aSalt (bytes as in the WAL header)  +40 2 x u32 aCksum
//!  96  WalCkptInfo: u32 nBackfill, 100 5 x u32 aReadMark, 120 8 x u8 aLock (unused by the
//!      shim), 128 u32 nBackfillAttempted, 132 u32 unused
//! ```
//!
//! and `<db>-wal` with its 32-byte header, big endian: magic @0 (0x377f0682 or 0x377f0683),
//! format @4, page size @8, checkpoint sequence @12, salt-1 @16, salt-2 @20, checksums @24.
//!
//! **Detection.** A sidecar is taken for a shim database when region 0 exists, is at least
//! [`WAL_INDEX_MIN`] bytes, and its header copy 0 says iVersion 3007000 or has isInit set.
//! Anything else has no SQLite view (`None`), which is not an error: other engines use regions
//! too.
//!
//! **Reading a header that moves.** SQLite writes the header with plain stores, copy 1 first,
//! a barrier, then copy 0; its readers load copy 0, a barrier, then copy 1 and trust the header
//! only when both agree. The observer does the same, one atomic load per 32-bit word (the
//! bytes at +12..16 are one word, split after the load). Copies that still differ after
//! three looks are reported as changing (a writer is at work), never as an error.
//!
//! **Bounds.** Nothing read from the sidecar steers an access unchecked: the region table entry
//! must name a unit the pool has published and the region size word must be a possible size,
//! or the sidecar is corrupt ([`Error::Corrupt`], which `tshm check` reports as such); every
//! load goes through [`crate::region::Pool::u32`], which also refuses an offset beyond the end
//! of the file.

use super::Attached;
use crate::error::{Error, Result};
use crate::layout::*;
use crate::node::{Mapped, Node};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::atomic::{fence, Ordering::*};

/// SQLite's `WALINDEX_MAX_VERSION`, the iVersion of every wal-index it writes.
pub const WAL_INDEX_VERSION: u32 = 3_007_000;
/// Bytes of region 0 the view reads: two header copies and the checkpoint information.
pub const WAL_INDEX_MIN: u64 = 136;
/// SQLite's `READMARK_NOT_USED`.
pub const READMARK_NOT_USED: u32 = 0xffff_ffff;
/// The engine lock slot the shim holds EXCLUSIVE while a checkpoint of the write-lock holder
/// waits for read marks (`STEP_ASIDE_SLOT` in the shim).
pub const STEP_ASIDE_SLOT: u32 = 8;
/// Looks at the two header copies before they are called changing.
const LOOKS: usize = 3;

/// Names of engine lock slots 1..=8 as the shim uses them (slot 0, WRITE, is the writer role).
const SLOT_NAMES: [&str; 8] = [
    "CKPT",
    "RECOVER",
    "READ0",
    "READ1",
    "READ2",
    "READ3",
    "READ4",
    "STEP_ASIDE",
];

/// Header words and where SQLite keeps its checkpoint information (byte offsets in region 0).
const HDR_WORDS: usize = 12;
const HDR_COPY1: u64 = 48;
const CKPT_NBACKFILL: u64 = 96;
const CKPT_READ_MARKS: u64 = 100;
const CKPT_NBACKFILL_ATTEMPTED: u64 = 128;

/// The WAL file's magic numbers (checksums little- or big-endian) and its header length.
const WAL_MAGIC: [u32; 2] = [0x377f_0682, 0x377f_0683];
const WAL_HDR_BYTES: usize = 32;

/// One copy of SQLite's `WalIndexHdr`, decoded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalIndexHdr {
    pub version: u32,
    pub change: u32,
    pub is_init: bool,
    pub big_end_cksum: bool,
    /// Page size in bytes (the stored 1 is 65536).
    pub page_size: u32,
    pub max_frame: u32,
    pub n_page: u32,
    pub frame_cksum: [u32; 2],
    /// The salts as the WAL header holds them: SQLite copies the header's bytes, so each word
    /// is read as a big-endian number, the way the WAL file shows it.
    pub salt: [u32; 2],
    pub cksum: [u32; 2],
    /// `cksum` is SQLite's checksum of the header's first 40 bytes.
    pub cksum_ok: bool,
}

impl WalIndexHdr {
    /// Decodes the twelve native-endian words of one copy.
    pub fn decode(w: &[u32; HDR_WORDS]) -> WalIndexHdr {
        let b = w[3].to_ne_bytes();
        let sz = u16::from_ne_bytes([b[2], b[3]]) as u32;
        let be = |x: u32| u32::from_be_bytes(x.to_ne_bytes());
        // walChecksumBytes with native byte order over words 0..10
        let (mut s1, mut s2) = (0u32, 0u32);
        for pair in w[..10].chunks(2) {
            s1 = s1.wrapping_add(pair[0]).wrapping_add(s2);
            s2 = s2.wrapping_add(pair[1]).wrapping_add(s1);
        }
        WalIndexHdr {
            version: w[0],
            change: w[2],
            is_init: b[0] != 0,
            big_end_cksum: b[1] != 0,
            page_size: if sz == 1 { 65536 } else { sz },
            max_frame: w[4],
            n_page: w[5],
            frame_cksum: [w[6], w[7]],
            salt: [be(w[8]), be(w[9])],
            cksum: [w[10], w[11]],
            cksum_ok: (s1, s2) == (w[10], w[11]),
        }
    }
}

/// The header of `<db>-wal` (big endian in the file).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct WalFileHdr {
    pub magic: u32,
    pub format: u32,
    pub page_size: u32,
    pub checkpoint_seq: u32,
    pub salt: [u32; 2],
}

impl WalFileHdr {
    /// Whether the magic is one SQLite writes.
    pub fn magic_ok(&self) -> bool {
        WAL_MAGIC.contains(&self.magic)
    }
}

/// What `<db>-wal` holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalFile {
    /// No such file (never written, or removed by the last close).
    Missing,
    /// The file exists but cannot be read (the reason); the rest of the report stands.
    Unreadable(String),
    /// The file, its length and its header (`None` when shorter than a header: SQLite
    /// truncates it to 0 bytes on a TRUNCATE checkpoint).
    Present {
        bytes: u64,
        header: Option<WalFileHdr>,
    },
}

/// A handle holding an engine lock slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Holder {
    pub pid: u32,
    pub instance: u32,
}

/// One of SQLite's lock slots that is an engine lock slot (all but WRITE), or the shim's
/// step-aside slot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SqliteLock {
    /// SQLite's name for it (`CKPT`, `RECOVER`, `READ0`..`READ4`), or `STEP_ASIDE`.
    pub name: &'static str,
    /// The engine lock slot (SQLite's slot number for 1..7).
    pub slot: u32,
    /// Attached handles holding it SHARED.
    pub shared: Vec<Holder>,
    /// Attached handles holding it EXCLUSIVE (at most one, unless a report caught a change).
    pub exclusive: Vec<Holder>,
    /// Held SHARED by a read-only handle: a kernel read lock, whose holder is not recorded.
    pub read_only_shared: bool,
    /// READ0..READ4: the read mark (`aReadMark`), the WAL frame a reader holding the slot
    /// reads up to; [`READMARK_NOT_USED`] when unused. `None` for other slots.
    pub mark: Option<u32>,
}

impl SqliteLock {
    /// Whether anybody holds the slot.
    pub fn held(&self) -> bool {
        !self.shared.is_empty() || !self.exclusive.is_empty() || self.read_only_shared
    }
}

/// SQLite's state on a database used through the shim.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sqlite {
    /// Bytes of region 0 (the shim makes 32768).
    pub region_bytes: u64,
    /// Header copy 0, the one SQLite's readers load first.
    pub header: WalIndexHdr,
    /// The two copies agreed at one look; `false`: a writer was changing the header at every
    /// look.
    pub copies_agree: bool,
    pub nbackfill: u32,
    pub nbackfill_attempted: u32,
    /// CKPT, RECOVER, READ0..READ4, STEP_ASIDE: engine slots 1..=8.
    pub locks: Vec<SqliteLock>,
    pub wal: WalFile,
}

impl Sqlite {
    /// Whether the wal-index salts are those of the WAL file's header: `None` without a WAL
    /// header to compare with. After a checkpoint restarted the log the wal-index has new
    /// salts (and mxFrame 0) until the next commit rewrites the WAL header: a mismatch is
    /// expected then.
    pub fn salts_match(&self) -> Option<bool> {
        match self.wal {
            WalFile::Present {
                header: Some(h), ..
            } if h.magic_ok() => Some(h.salt == self.header.salt),
            _ => None,
        }
    }

    /// The named lock (`CKPT`, `READ1`, `STEP_ASIDE`, ...).
    pub fn lock(&self, name: &str) -> Option<&SqliteLock> {
        self.locks.iter().find(|l| l.name == name)
    }
}

/// Where region 0 lies in the pool (offset, bytes), if it exists. An entry naming a unit the
/// pool has not published, or a region size no region can have, is corruption. The entry and
/// the unit count get [`LOOKS`] looks: a first opener re-initializing the pool meanwhile
/// zeroes both.
fn region0(m: &Mapped) -> Result<Option<(u64, u64)>> {
    let mut bad = Error::Corrupt(String::new());
    for _ in 0..LOOKS {
        let entry = m.shm.u32(H_REGIONS).load(Acquire);
        if entry == 0 {
            return Ok(None);
        }
        let size = m.shm.u32(H_REGION_SIZE).load(Acquire) as u64;
        bad = if !crate::engine::region_size_ok(size) {
            Error::Corrupt(format!(
                "engine region 0 exists but the region size word says {size} bytes"
            ))
        } else {
            match crate::engine::region_offset(m, 0, entry) {
                Ok(off) => return Ok(Some((off, size))),
                Err(e) => e,
            }
        };
    }
    Err(bad)
}

/// `N` consecutive native-endian words of region 0 at `off`.
fn words<const N: usize>(m: &Mapped, base: u64, off: u64) -> Result<[u32; N]> {
    let mut out = [0u32; N];
    for (k, w) in out.iter_mut().enumerate() {
        let word = m.pool.u32(base + off + 4 * k as u64).map_err(|e| match e {
            Error::Corrupt(why) => Error::Corrupt(format!("engine region 0: {why}")),
            e => e,
        })?;
        *w = word.load(Acquire);
    }
    Ok(out)
}

/// SQLite's view of the sidecar of `db`, or `None` when it is not a shim database (see the
/// module doc). `attached` gives the engine-lock holders.
pub fn observe(
    node: &Node,
    m: &Mapped,
    db: &Path,
    attached: &[Attached],
) -> Result<Option<Sqlite>> {
    let Some((base, size)) = region0(m)? else {
        return Ok(None);
    };
    if size < WAL_INDEX_MIN {
        return Ok(None);
    }
    let (mut h0, mut h1) = ([0u32; HDR_WORDS], [1u32; HDR_WORDS]);
    for _ in 0..LOOKS {
        h0 = words(m, base, 0)?;
        fence(Acquire);
        h1 = words(m, base, HDR_COPY1)?;
        if h0 == h1 {
            break;
        }
        std::thread::yield_now();
    }
    let header = WalIndexHdr::decode(&h0);
    if header.version != WAL_INDEX_VERSION && !header.is_init {
        return Ok(None);
    }
    let [nbackfill] = words(m, base, CKPT_NBACKFILL)?;
    let marks: [u32; 5] = words(m, base, CKPT_READ_MARKS)?;
    let [nbackfill_attempted] = words(m, base, CKPT_NBACKFILL_ATTEMPTED)?;
    let mut locks = Vec::with_capacity(SLOT_NAMES.len());
    for (k, name) in SLOT_NAMES.into_iter().enumerate() {
        let slot = k as u32 + 1;
        let who = |mask: fn(&Attached) -> u32| {
            attached
                .iter()
                .filter(|a| mask(a) >> slot & 1 != 0)
                .map(|a| Holder {
                    pid: a.pid,
                    instance: a.instance,
                })
                .collect::<Vec<_>>()
        };
        locks.push(SqliteLock {
            name,
            slot,
            shared: who(|a| a.engine_shared),
            exclusive: who(|a| a.engine_exclusive),
            read_only_shared: node.held_anywhere(LOCK_ENGINE_RO_BASE + slot as u64)?,
            mark: (3..=7).contains(&slot).then(|| marks[slot as usize - 3]),
        });
    }
    Ok(Some(Sqlite {
        region_bytes: size,
        header,
        copies_agree: h0 == h1,
        nbackfill,
        nbackfill_attempted,
        locks,
        wal: wal_file(db),
    }))
}

/// The length and header of `<db>-wal`, read without a lock (a header being rewritten may be
/// read half old, half new: then its salts do not match the wal-index's, as they do not
/// between a restart and the next commit either). A FIFO or device put there is not opened
/// blocking; anything but a regular file reads as no WAL file.
pub fn wal_file(db: &Path) -> WalFile {
    use std::io::Read;
    let mut path = db.as_os_str().to_owned();
    path.push("-wal");
    let f = match std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOFOLLOW)
        .open(&path)
    {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return WalFile::Missing,
        Err(e) => return WalFile::Unreadable(e.to_string()),
    };
    let meta = match f.metadata() {
        Ok(m) if m.is_file() => m,
        Ok(_) => return WalFile::Missing,
        Err(e) => return WalFile::Unreadable(e.to_string()),
    };
    let mut buf = [0u8; WAL_HDR_BYTES];
    let mut got = 0;
    let mut r = &f;
    while got < buf.len() {
        match r.read(&mut buf[got..]) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return WalFile::Unreadable(e.to_string()),
        }
    }
    let be = |at: usize| u32::from_be_bytes(buf[at..at + 4].try_into().expect("4 bytes"));
    WalFile::Present {
        bytes: meta.len(),
        header: (got == WAL_HDR_BYTES).then(|| WalFileHdr {
            magic: be(0),
            format: be(4),
            page_size: be(8),
            checkpoint_seq: be(12),
            salt: [be(16), be(20)],
        }),
    }
}
