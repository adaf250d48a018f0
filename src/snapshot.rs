//! The published snapshot header: a latched sequence lock with two copies.
//!
//! Owns: header bytes 160 (publish token) and 256..408 (sequence and two snapshot copies).
//!
//! Why a latch and not a plain seqlock: a plain seqlock makes the sequence odd while a publisher
//! writes, and readers wait for it to turn even. A publisher killed in that window leaves it odd
//! forever and every reader spins. Here readers never wait for a publisher:
//!
//! * the sequence `s` names the *current* copy, `s & 1`, which is always complete;
//! * a publisher writes the new values into the *other* copy, which no reader is told to use, then
//!   increments `s` with Release, turning the other copy into the current one;
//! * a reader loads `s` (Acquire), reads copy `s & 1` with Relaxed loads, issues an Acquire fence
//!   and reloads `s`; an unchanged `s` proves that no publisher overwrote that copy meanwhile
//!   (overwriting it needs two increments, and the second publisher's Acquire load of `s` plus its
//!   Release fence before its stores make any store a reader saw imply a changed `s`).
//!
//! A publisher killed mid-write leaves a torn copy that no reader looks at; the next publisher
//! overwrites it. There is nothing to repair, and any parity is valid.
//!
//! Publishers (the writer and the checkpointer may publish concurrently) are serialized by the
//! publish token, a CAS-claimed word holding the publisher's instance tag (claimed AcqRel, read
//! Acquire, so the tag carries its instance's generation). A token whose owner instance is dead
//! is taken over. Each publish copies the current snapshot and changes only the
//! fields its mask names, so a checkpointer publishing `nbackfills` can never undo a commit the
//! writer published a moment earlier.
//!
//! Example (the test `publish_then_read_round_trips` is this example):
//!
//! ```ignore
//! let mut s = tshm_snapshot::default();
//! s.max_frame = 42;
//! latch.publish(&s, TSHM_SNAP_MAX_FRAME, my_tag, |tag| is_alive(tag))?;
//! assert_eq!(latch.read().max_frame, 42);
//! ```

use crate::error::{Error, Result};
use crate::layout::*;
use crate::region::Shm;
use std::sync::atomic::{fence, Ordering::*};

/// The committed WAL state every process agrees on. Filled by `tshm_snapshot_get()` and
/// `tshm_reader_begin()`; written through `tshm_publish()`.
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct tshm_snapshot {
    /// Last committed WAL frame (0: the WAL is empty).
    pub max_frame: u64,
    /// Frames copied back into the database file by checkpoints.
    pub nbackfills: u64,
    /// Number of publishes so far; changes on every publish (set by the library, not the caller).
    pub sequence: u64,
    /// Engine-defined words, published and read like the other fields.
    pub engine: [u64; 2],
    /// Checkpoint sequence (bumped by the engine when the WAL restarts).
    pub checkpoint_seq: u32,
    /// Database page size in bytes.
    pub page_size: u32,
    /// Database size in pages.
    pub db_size: u32,
    /// Reserved; always 0.
    pub reserved: u32,
    /// WAL salts.
    pub salt: [u32; 2],
    /// Running WAL checksum at `max_frame`.
    pub checksum: [u32; 2],
}

const _: () = assert!(std::mem::size_of::<tshm_snapshot>() == 72);
const _: () = assert!(std::mem::size_of::<tshm_snapshot>() == SNAP_WORDS * 8);

/// `tshm_publish` field mask: `max_frame`.
pub const TSHM_SNAP_MAX_FRAME: u32 = 1 << 0;
/// `tshm_publish` field mask: `nbackfills`.
pub const TSHM_SNAP_NBACKFILLS: u32 = 1 << 1;
/// `tshm_publish` field mask: `engine[0]`.
pub const TSHM_SNAP_ENGINE0: u32 = 1 << 2;
/// `tshm_publish` field mask: `engine[1]`.
pub const TSHM_SNAP_ENGINE1: u32 = 1 << 3;
/// `tshm_publish` field mask: `checkpoint_seq`.
pub const TSHM_SNAP_CHECKPOINT_SEQ: u32 = 1 << 4;
/// `tshm_publish` field mask: `page_size`.
pub const TSHM_SNAP_PAGE_SIZE: u32 = 1 << 5;
/// `tshm_publish` field mask: `db_size`.
pub const TSHM_SNAP_DB_SIZE: u32 = 1 << 6;
/// `tshm_publish` field mask: both `salt` words.
pub const TSHM_SNAP_SALT: u32 = 1 << 7;
/// `tshm_publish` field mask: both `checksum` words.
pub const TSHM_SNAP_CHECKSUM: u32 = 1 << 8;
/// `tshm_publish` field mask: every field.
pub const TSHM_SNAP_ALL: u32 = (1 << 9) - 1;

fn to_words(s: &tshm_snapshot) -> [u64; SNAP_WORDS] {
    [
        s.max_frame,
        s.nbackfills,
        s.sequence,
        s.engine[0],
        s.engine[1],
        s.checkpoint_seq as u64 | (s.page_size as u64) << 32,
        s.db_size as u64 | (s.reserved as u64) << 32,
        s.salt[0] as u64 | (s.salt[1] as u64) << 32,
        s.checksum[0] as u64 | (s.checksum[1] as u64) << 32,
    ]
}

fn from_words(w: &[u64; SNAP_WORDS]) -> tshm_snapshot {
    tshm_snapshot {
        max_frame: w[0],
        nbackfills: w[1],
        sequence: w[2],
        engine: [w[3], w[4]],
        checkpoint_seq: w[5] as u32,
        page_size: (w[5] >> 32) as u32,
        db_size: w[6] as u32,
        reserved: 0,
        salt: [w[7] as u32, (w[7] >> 32) as u32],
        checksum: [w[8] as u32, (w[8] >> 32) as u32],
    }
}

/// Merges the fields of `new` named by `mask` into `cur`.
fn merge(cur: &mut tshm_snapshot, new: &tshm_snapshot, mask: u32) {
    let pick = |bit: u32| mask & bit != 0;
    if pick(TSHM_SNAP_MAX_FRAME) {
        cur.max_frame = new.max_frame;
    }
    if pick(TSHM_SNAP_NBACKFILLS) {
        cur.nbackfills = new.nbackfills;
    }
    if pick(TSHM_SNAP_ENGINE0) {
        cur.engine[0] = new.engine[0];
    }
    if pick(TSHM_SNAP_ENGINE1) {
        cur.engine[1] = new.engine[1];
    }
    if pick(TSHM_SNAP_CHECKPOINT_SEQ) {
        cur.checkpoint_seq = new.checkpoint_seq;
    }
    if pick(TSHM_SNAP_PAGE_SIZE) {
        cur.page_size = new.page_size;
    }
    if pick(TSHM_SNAP_DB_SIZE) {
        cur.db_size = new.db_size;
    }
    if pick(TSHM_SNAP_SALT) {
        cur.salt = new.salt;
    }
    if pick(TSHM_SNAP_CHECKSUM) {
        cur.checksum = new.checksum;
    }
}

/// The latch over one mapping.
pub struct Latch<'a> {
    pub shm: &'a Shm,
}

impl Latch<'_> {
    fn read_copy(&self, i: usize) -> [u64; SNAP_WORDS] {
        let words = self.shm.u64s::<SNAP_WORDS>(H_SNAP_COPY[i & 1]);
        std::array::from_fn(|k| words[k].load(Relaxed))
    }

    /// The current snapshot. Lock-free; never waits for a publisher.
    pub fn read(&self) -> tshm_snapshot {
        self.read_at().0
    }

    /// The current snapshot and the latch sequence it was read at (see [`Latch::moved`]).
    pub fn read_at(&self) -> (tshm_snapshot, u64) {
        let mut snap = tshm_snapshot::default();
        let at = self.read_into(&mut snap);
        (snap, at)
    }

    /// [`Latch::read_at`] into `out` (no copy of the snapshot on a hot path).
    pub fn read_into(&self, out: &mut tshm_snapshot) -> u64 {
        let seq = self.shm.u64(H_SNAP_SEQ);
        loop {
            let s1 = seq.load(Acquire);
            let w = self.read_copy((s1 & 1) as usize);
            fence(Acquire);
            if seq.load(Relaxed) == s1 {
                *out = from_words(&w);
                return s1;
            }
            std::hint::spin_loop();
        }
    }

    /// Whether a snapshot was published since the one read at sequence `at`.
    pub fn moved(&self, at: u64) -> bool {
        self.shm.u64(H_SNAP_SEQ).load(Acquire) != at
    }

    /// Publishes the fields of `new` named by `mask`. `tag` identifies the publisher for the
    /// token; `alive(tag)` tells whether a token holder still exists.
    pub fn publish(
        &self,
        new: &tshm_snapshot,
        mask: u32,
        tag: u64,
        alive: impl Fn(u64) -> Result<bool>,
    ) -> Result<tshm_snapshot> {
        let token = self.shm.u64(H_PUBLISH_TOKEN);
        let mut spins = 0u32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(2);
        // The token holds a tag: claimed with Release and read with Acquire, so that a holder's
        // tag carries its instance's generation bump to whoever reads it (otherwise `alive`
        // may compare a live holder's tag with the generation from before its claim).
        loop {
            match token.compare_exchange(0, tag, AcqRel, Acquire) {
                Ok(_) => break,
                Err(holder) => {
                    spins += 1;
                    if spins.is_multiple_of(64) {
                        if !alive(holder)?
                            && token.compare_exchange(holder, tag, AcqRel, Acquire).is_ok()
                        {
                            break;
                        }
                        if std::time::Instant::now() > deadline {
                            return Err(Error::Busy(
                                "another live publisher holds the snapshot publish token".into(),
                            ));
                        }
                        std::thread::yield_now();
                    }
                    std::hint::spin_loop();
                }
            }
        }
        let seq = self.shm.u64(H_SNAP_SEQ);
        let s = seq.load(Acquire);
        fence(Release);
        let mut snap = from_words(&self.read_copy((s & 1) as usize));
        merge(&mut snap, new, mask);
        snap.sequence = snap.sequence.wrapping_add(1);
        let words = to_words(&snap);
        let base = H_SNAP_COPY[((s + 1) & 1) as usize];
        for (k, w) in words.iter().enumerate() {
            self.shm.u64(base + 8 * k).store(*w, Relaxed);
            if k == SNAP_WORDS / 2 {
                // after half of the new copy: the window a crash can hit
                crate::testpoint::hit("publish_copy");
            }
        }
        seq.store(s.wrapping_add(1), Release);
        crate::testpoint::hit("publish_seq");
        token.store(0, Release);
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::{grow, Shm};
    use std::os::fd::AsRawFd;

    fn shm() -> (std::fs::File, Shm) {
        let p = std::env::temp_dir().join(format!(
            "tshm-snap-{}-{:?}",
            std::process::id(),
            std::thread::current().id()
        ));
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        let _ = std::fs::remove_file(&p);
        grow(f.as_raw_fd(), PAGE).unwrap();
        let m = Shm::map(f.as_raw_fd(), PAGE, true).unwrap();
        (f, m)
    }

    #[test]
    fn publish_then_read_round_trips() {
        let (_f, m) = shm();
        let latch = Latch { shm: &m };
        let s = tshm_snapshot {
            max_frame: 42,
            nbackfills: 7,
            engine: [1, 2],
            checkpoint_seq: 3,
            page_size: 4096,
            db_size: 9,
            salt: [5, 6],
            checksum: [7, 8],
            ..Default::default()
        };
        let out = latch
            .publish(&s, TSHM_SNAP_ALL, 1 << 48, |_| Ok(true))
            .unwrap();
        assert_eq!(out.sequence, 1);
        assert_eq!(latch.read(), tshm_snapshot { sequence: 1, ..s });
    }

    #[test]
    fn masked_publish_keeps_other_fields() {
        let (_f, m) = shm();
        let latch = Latch { shm: &m };
        let s = tshm_snapshot {
            max_frame: 10,
            nbackfills: 0,
            ..Default::default()
        };
        latch
            .publish(&s, TSHM_SNAP_ALL, 1 << 48, |_| Ok(true))
            .unwrap();
        // a checkpointer that still believes max_frame is 5 publishes only nbackfills
        let ck = tshm_snapshot {
            max_frame: 5,
            nbackfills: 10,
            ..Default::default()
        };
        latch
            .publish(&ck, TSHM_SNAP_NBACKFILLS, 2 << 48, |_| Ok(true))
            .unwrap();
        let r = latch.read();
        assert_eq!((r.max_frame, r.nbackfills, r.sequence), (10, 10, 2));
    }

    #[test]
    fn a_dead_token_holder_is_taken_over_and_a_live_one_is_not() {
        let (_f, m) = shm();
        let latch = Latch { shm: &m };
        m.u64(H_PUBLISH_TOKEN).store(9 << 48, Relaxed);
        let s = tshm_snapshot {
            max_frame: 1,
            ..Default::default()
        };
        assert!(latch
            .publish(&s, TSHM_SNAP_ALL, 1 << 48, |t| Ok(t != 9 << 48))
            .is_ok());
        assert_eq!(m.u64(H_PUBLISH_TOKEN).load(Relaxed), 0);
    }

    #[test]
    fn a_torn_other_copy_is_never_read() {
        let (_f, m) = shm();
        let latch = Latch { shm: &m };
        latch
            .publish(
                &tshm_snapshot {
                    max_frame: 3,
                    ..Default::default()
                },
                TSHM_SNAP_ALL,
                1 << 48,
                |_| Ok(true),
            )
            .unwrap();
        // garbage in the copy that is not current (what a killed publisher leaves)
        let other = H_SNAP_COPY[0];
        for k in 0..SNAP_WORDS {
            m.u64(other + 8 * k).store(u64::MAX, Relaxed);
        }
        assert_eq!(latch.read().max_frame, 3);
        latch
            .publish(
                &tshm_snapshot {
                    max_frame: 4,
                    ..Default::default()
                },
                TSHM_SNAP_MAX_FRAME,
                1 << 48,
                |_| Ok(true),
            )
            .unwrap();
        let r = latch.read();
        assert_eq!((r.max_frame, r.nbackfills, r.sequence), (4, 0, 2));
    }

    #[test]
    fn concurrent_readers_never_see_a_mixed_snapshot() {
        let (_f, m) = shm();
        // every snapshot the readers can see, the first included, satisfies the invariant
        let first = tshm_snapshot {
            engine: [0xdead, 0],
            ..Default::default()
        };
        Latch { shm: &m }
            .publish(&first, TSHM_SNAP_ALL, 1 << 48, |_| Ok(true))
            .unwrap();
        let m = std::sync::Arc::new(m);
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..2)
            .map(|_| {
                let (m, stop) = (m.clone(), stop.clone());
                std::thread::spawn(move || {
                    let latch = Latch { shm: &m };
                    let mut n = 0u64;
                    // run until stopped, and at least once (a loaded machine may not schedule
                    // a reader before the publisher is done)
                    while n == 0 || !stop.load(Relaxed) {
                        let r = latch.read();
                        assert_eq!(r.nbackfills, r.max_frame.wrapping_mul(3));
                        assert_eq!(r.engine[0], r.max_frame ^ 0xdead);
                        n += 1;
                    }
                    n
                })
            })
            .collect();
        let latch = Latch { shm: &m };
        for i in 1..20_000u64 {
            let s = tshm_snapshot {
                max_frame: i,
                nbackfills: i * 3,
                engine: [i ^ 0xdead, 0],
                ..Default::default()
            };
            latch
                .publish(&s, TSHM_SNAP_ALL, 1 << 48, |_| Ok(true))
                .unwrap();
        }
        stop.store(true, Relaxed);
        for r in readers {
            assert!(r.join().unwrap() > 0);
        }
    }
}
