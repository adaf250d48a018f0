//! The shared frame index: database page number → newest WAL frame, for every process.
//!
//! Owns: header words 512..624, the two top tables of the fixed part, and the whole index pool
//! (the file beyond `base_len`). Only the writer mutates it; lookups are lock-free.
//!
//! **Structure.** Entries live in *blocks* of 4096 (16 bytes each: `page | prev << 32`, then the
//! frame), in slot order, one slot per appended frame. `prev` is the slot + 1 of the previous
//! entry for the same page (0: none), so the entries of one page form a chain from newest to
//! oldest. A *directory* maps each page to the slot + 1 of its newest entry, tagged with the
//! index generation: a radix tree of 8192 top words (in the fixed part), 1024-word middle nodes
//! and 512-word leaves (4 KiB node pages in the pool). Blocks are found through a second radix
//! tree (1024 top words, 1024-word nodes). A lookup is therefore: directory (three loads), then
//! one entry per version of the page newer than the asked-for frame — its cost does not depend
//! on how many frames the index holds. The pool grows in 64 KiB *units* (an entry block, or 16
//! node pages) written as real zero pages before the unit count that announces them is stored.
//!
//! **Invariants.**
//! 1. Within a generation an entry is written once, before the count and the directory word
//!    that make it reachable (Release); a reader that reached it (Acquire) sees it whole.
//! 2. Rollback ([`Index::truncate`]) never clears or reuses an entry: it points directory words
//!    back to the dropped entries' `prev` and sets the dropped frames' DEAD bit, which only makes
//!    them look newer than any snapshot. A reader that still holds a pointer to a dropped entry
//!    follows its (immutable) `prev` chain, which never skips a live entry.
//! 3. Live entries have strictly increasing frames in slot order, every frame above the last
//!    committed one; so for a reader whose snapshot is at most the committed frame, the first
//!    entry on a page's chain at or below its snapshot is the answer.
//! 4. Slots are reused only after [`Index::reset`], which bumps the generation first (then a
//!    Release fence). Lookups read the generation before and after (seqlock) and retry when it
//!    moved; directory words of an older generation read as empty.
//! 5. Every pointer read from the file (node page, unit, slot, `prev`) is range-checked, and
//!    `prev` must be below the slot that holds it, so a walk always ends; a violation is
//!    [`Error::Corrupt`].
//!
//! A rollback leaves dead entries in place until the next reset (they are counted in the
//! statistics); the trim floor keeps repeated rollbacks from rescanning them.

use crate::error::{Error, Result};
use crate::layout::*;
use crate::node::Mapped;
use crate::region::{Pool, Shm};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering::*};

const UNIT: u64 = POOL_UNIT;
const NODES_PER_UNIT: u64 = UNIT / PAGE;
const ENTRY_BYTES: u64 = 16;
/// Entries per block.
pub const BLOCK_ENTRIES: u64 = UNIT / ENTRY_BYTES;
/// Set in the frame word of an entry dropped by a rollback.
const DEAD: u64 = 1 << 63;
/// Slots per generation (slot + 1 must fit the 32-bit `prev` and directory fields).
pub const MAX_ENTRIES: u64 = u32::MAX as u64 - 1;
/// A lookup that sees the generation move this many times in a row gives up with BUSY.
const RETRIES: u32 = 16;

/// Statistics of the shared frame index (`tshm_index_stats`).
#[allow(non_camel_case_types)]
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct tshm_index_stats {
    /// Bumped by every reset (and by the first opener).
    pub generation: u64,
    /// Entries appended since the last reset, dropped ones included.
    pub entries: u64,
    /// Entries dropped by rollbacks since the last reset.
    pub dead: u64,
    /// Newest frame appended (or the rollback point, after a rollback).
    pub tail_frame: u64,
    /// Entry blocks (4096 entries each) with pool space.
    pub blocks: u64,
    /// Directory and block-table node pages in use.
    pub nodes: u64,
    /// Bytes of the sidecar that belong to the index pool.
    pub pool_bytes: u64,
}

/// One entry as read from shared memory.
struct Entry {
    page: u32,
    prev: u64,
    frame: u64,
}

/// A view of one sidecar's index.
pub struct Index<'a> {
    shm: &'a Shm,
    geom: &'a Geometry,
    pool: &'a Pool,
}

fn word(shm: &Shm, off: usize) -> &AtomicU64 {
    shm.u64(off)
}

impl<'a> Index<'a> {
    pub fn new(m: &'a Mapped) -> Index<'a> {
        Index {
            shm: &m.shm,
            geom: &m.geom,
            pool: &m.pool,
        }
    }

    fn gen32(g: u64) -> u64 {
        g & 0xffff_ffff
    }

    /// Published pool units. Loaded at each check, after the pointer being checked (a pointer
    /// is stored after the units that hold it, so the reload always covers a valid one).
    fn units(&self) -> u64 {
        word(self.shm, H_IX_UNITS).load(Acquire)
    }

    /// Pool offset of node page `p` (1-based), checked against the published units.
    fn node_off(&self, p: u32) -> Result<u64> {
        let off = (p as u64).wrapping_sub(1) * PAGE;
        let units = self.units();
        if p == 0 || off + PAGE > units.saturating_mul(UNIT) {
            return Err(Error::Corrupt(format!(
                "index node page {p} outside the {units} published units"
            )));
        }
        Ok(off)
    }

    /// Pool offset of the node page table word `w` points to; an empty word is `None`, or,
    /// with `create` (writer only), gets a fresh node page.
    fn follow(&self, w: &AtomicU32, create: bool) -> Result<Option<u64>> {
        let mut n = w.load(Acquire);
        if n == 0 {
            if !create {
                return Ok(None);
            }
            n = self.alloc_node()?;
            w.store(n, Release);
        }
        self.node_off(n).map(Some)
    }

    fn blk_top(&self, b: u64) -> &AtomicU32 {
        self.shm.u32(self.geom.blk_top() + (b >> 10) as usize * 4)
    }

    /// Pool offset of entry block `b`, if it has a unit.
    fn block_off(&self, b: u64) -> Result<Option<u64>> {
        if b >= IX_BLK_TOP * 1024 {
            return Ok(None);
        }
        let Some(node) = self.follow(self.blk_top(b), false)? else {
            return Ok(None);
        };
        let u = self.pool.u32(node + (b & 1023) * 4)?.load(Acquire) as u64;
        if u == 0 {
            return Ok(None);
        }
        let units = self.units();
        if u > units {
            return Err(Error::Corrupt(format!(
                "index block {b} in unit {u} beyond the {units} published"
            )));
        }
        Ok(Some((u - 1) * UNIT))
    }

    fn entry_off(&self, slot: u64) -> Result<u64> {
        match self.block_off(slot / BLOCK_ENTRIES)? {
            Some(off) => Ok(off + slot % BLOCK_ENTRIES * ENTRY_BYTES),
            None => Err(Error::Corrupt(format!(
                "index slot {slot} lies in a block that has no space"
            ))),
        }
    }

    fn entry(&self, slot: u64) -> Result<Entry> {
        let off = self.entry_off(slot)?;
        let w0 = self.pool.u64(off)?.load(Relaxed);
        let frame = self.pool.u64(off + 8)?.load(Relaxed);
        Ok(Entry {
            page: w0 as u32,
            prev: w0 >> 32,
            frame,
        })
    }

    /// The directory word of `page`; with `create`, allocates missing nodes (writer only).
    fn dir_word(&self, page: u32, create: bool) -> Result<Option<&'a AtomicU64>> {
        let top = self
            .shm
            .u32(self.geom.dir_top() + (page >> 19) as usize * 4);
        let Some(mid) = self.follow(top, create)? else {
            return Ok(None);
        };
        let leaf_word = self.pool.u32(mid + ((page >> 9) & 1023) as u64 * 4)?;
        let Some(leaf) = self.follow(leaf_word, create)? else {
            return Ok(None);
        };
        Ok(Some(self.pool.u64(leaf + (page & 511) as u64 * 8)?))
    }

    /// Takes a zeroed node page (1-based pool page number).
    fn alloc_node(&self) -> Result<u32> {
        let next = word(self.shm, H_IX_NODE_NEXT);
        let end = word(self.shm, H_IX_NODE_END);
        let mut n = next.load(Relaxed);
        if n == 0 || n >= end.load(Relaxed) {
            let u = alloc_unit(self.shm, self.pool)?;
            n = u * NODES_PER_UNIT + 1;
            end.store(n + NODES_PER_UNIT, Release);
        }
        next.store(n + 1, Release);
        word(self.shm, H_IX_NODES).fetch_add(1, Relaxed);
        Ok(n as u32)
    }

    /// Pool offset of block `b`, giving it a unit when it has none (writer only).
    fn ensure_block(&self, b: u64) -> Result<u64> {
        if let Some(off) = self.block_off(b)? {
            return Ok(off);
        }
        let node = self.follow(self.blk_top(b), true)?.expect("created above");
        let u = alloc_unit(self.shm, self.pool)?;
        self.pool
            .u32(node + (b & 1023) * 4)?
            .store(u as u32 + 1, Release);
        word(self.shm, H_IX_BLOCKS).fetch_max(b + 1, Relaxed);
        Ok(u * UNIT)
    }

    /// The newest frame appended (or the last rollback point).
    pub fn tail(&self) -> u64 {
        word(self.shm, H_IX_TAIL).load(Relaxed)
    }

    /// Appends `(page, frame)`; `frame` must exceed [`Index::tail`]. Writer only. `limit`
    /// caps the entries of one generation (0: no cap beyond the format's).
    pub fn append(&self, page: u32, frame: u64, limit: u64) -> Result<()> {
        let tail = self.tail();
        if frame == 0 || frame >= DEAD {
            return Err(Error::Misuse(format!(
                "frame {frame} outside 1..2^63 (frame numbers start at 1)"
            )));
        }
        if frame <= tail {
            return Err(Error::Misuse(format!(
                "frame {frame} is not above the newest indexed frame {tail}"
            )));
        }
        let count = word(self.shm, H_IX_COUNT).load(Relaxed);
        let cap = if limit == 0 {
            MAX_ENTRIES
        } else {
            limit.min(MAX_ENTRIES)
        };
        if count >= cap {
            return Err(Error::Full(format!(
                "the frame index holds {count} entries, its limit (reset it after the WAL restarts)"
            )));
        }
        let g32 = Self::gen32(word(self.shm, H_IX_GEN).load(Relaxed));
        let off = self.ensure_block(count / BLOCK_ENTRIES)? + count % BLOCK_ENTRIES * ENTRY_BYTES;
        let dir = self.dir_word(page, true)?.expect("created above");
        let d = dir.load(Relaxed);
        let prev = if d >> 32 == g32 { d & 0xffff_ffff } else { 0 };
        if prev > count {
            return Err(Error::Corrupt(format!(
                "directory of page {page} points to slot {prev} beyond the {count} entries"
            )));
        }
        self.pool.u64(off)?.store(page as u64 | prev << 32, Relaxed);
        self.pool.u64(off + 8)?.store(frame, Relaxed);
        word(self.shm, H_IX_TAIL).store(frame, Relaxed);
        word(self.shm, H_IX_COUNT).store(count + 1, Release);
        dir.store(g32 << 32 | (count + 1), Release);
        Ok(())
    }

    /// Runs `f` between two reads of the generation and retries while it moved.
    fn stable<T>(&self, mut f: impl FnMut(u64) -> Result<T>) -> Result<T> {
        let gen = word(self.shm, H_IX_GEN);
        for _ in 0..RETRIES {
            let g = gen.load(Acquire);
            let r = f(g);
            fence(Acquire);
            if gen.load(Relaxed) == g {
                return r;
            }
        }
        Err(Error::Busy(
            "the frame index was reset repeatedly during a lookup".into(),
        ))
    }

    /// Follows the chain from directory word `d` to the newest frame at or below `max_frame`.
    fn walk(&self, page: u32, d: u64, g: u64, max_frame: u64) -> Result<Option<u64>> {
        if d >> 32 != Self::gen32(g) {
            return Ok(None);
        }
        let mut cur = d & 0xffff_ffff;
        while cur != 0 {
            let e = self.entry(cur - 1)?;
            if e.page != page {
                return Err(Error::Corrupt(format!(
                    "index slot {} holds page {} on the chain of page {page}",
                    cur - 1,
                    e.page
                )));
            }
            if e.frame <= max_frame && e.frame & DEAD == 0 {
                return Ok(Some(e.frame));
            }
            if e.prev >= cur {
                return Err(Error::Corrupt(format!(
                    "index slot {} links forward to slot {}",
                    cur - 1,
                    e.prev
                )));
            }
            cur = e.prev;
        }
        Ok(None)
    }

    /// The newest frame at or below `max_frame` holding `page`, or `None`. Lock-free.
    pub fn find(&self, page: u32, max_frame: u64) -> Result<Option<u64>> {
        if max_frame == 0 {
            return Ok(None);
        }
        self.stable(|g| match self.dir_word(page, false)? {
            Some(w) => self.walk(page, w.load(Acquire), g, max_frame),
            None => Ok(None),
        })
    }

    /// Calls `f(page, frame)` for every page with a frame at or below `max_frame`, in page
    /// order, with that page's newest such frame; stops early when `f` returns false. A reset
    /// during the walk is [`Error::Busy`] (pages already delivered cannot be taken back).
    pub fn for_each(&self, max_frame: u64, mut f: impl FnMut(u32, u64) -> bool) -> Result<()> {
        let gen = word(self.shm, H_IX_GEN);
        let g = gen.load(Acquire);
        let r = self.each_page(g, max_frame, &mut f);
        fence(Acquire);
        if gen.load(Relaxed) != g {
            return Err(Error::Busy(
                "the frame index was reset during the walk".into(),
            ));
        }
        r
    }

    fn each_page(
        &self,
        g: u64,
        max_frame: u64,
        f: &mut impl FnMut(u32, u64) -> bool,
    ) -> Result<()> {
        if max_frame == 0 {
            return Ok(());
        }
        for t in 0..IX_DIR_TOP {
            let top = self.shm.u32(self.geom.dir_top() + t as usize * 4);
            let Some(mid_off) = self.follow(top, false)? else {
                continue;
            };
            for m in 0..1024u64 {
                let Some(leaf_off) = self.follow(self.pool.u32(mid_off + m * 4)?, false)? else {
                    continue;
                };
                for l in 0..512u64 {
                    let d = self.pool.u64(leaf_off + l * 8)?.load(Acquire);
                    let page = (t << 19 | m << 9 | l) as u32;
                    if let Some(frame) = self.walk(page, d, g, max_frame)? {
                        if !f(page, frame) {
                            return Ok(());
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Drops every entry above `max_frame` (a rollback). Writer only. Returns how many.
    pub fn truncate(&self, max_frame: u64) -> Result<u64> {
        if self.tail() <= max_frame {
            return Ok(0);
        }
        let count = word(self.shm, H_IX_COUNT).load(Relaxed);
        let floor = word(self.shm, H_IX_FLOOR).load(Relaxed);
        let floor_frame = word(self.shm, H_IX_FLOOR_FRAME).load(Relaxed);
        let g32 = Self::gen32(word(self.shm, H_IX_GEN).load(Relaxed));
        let stop = if max_frame >= floor_frame {
            floor.min(count)
        } else {
            0
        };
        let mut dropped = 0;
        let mut slot = count;
        while slot > stop {
            slot -= 1;
            let e = self.entry(slot)?;
            if e.frame & DEAD != 0 {
                continue;
            }
            if e.frame <= max_frame {
                break;
            }
            if let Some(dir) = self.dir_word(e.page, false)? {
                if dir.load(Relaxed) == g32 << 32 | (slot + 1) {
                    dir.store(g32 << 32 | e.prev, Release);
                }
            }
            let off = self.entry_off(slot)?;
            self.pool.u64(off + 8)?.store(e.frame | DEAD, Release);
            dropped += 1;
        }
        word(self.shm, H_IX_DEAD).fetch_add(dropped, Relaxed);
        word(self.shm, H_IX_TAIL).store(max_frame, Relaxed);
        // the floor frame first: with a crash between the two, the old floor and the new
        // frame still say "everything below the floor is dead or at most this frame"
        word(self.shm, H_IX_FLOOR_FRAME).store(max_frame, Relaxed);
        word(self.shm, H_IX_FLOOR).store(count, Release);
        Ok(dropped)
    }

    /// Empties the index (the WAL restarted). Writer only. Keeps the pool's space for reuse.
    pub fn reset(&self) {
        let gen = word(self.shm, H_IX_GEN);
        gen.store(gen.load(Relaxed).wrapping_add(1), Relaxed);
        fence(Release);
        // the count last: a joiner that sees the new count sees the rest zeroed (validate)
        for off in [H_IX_FLOOR, H_IX_FLOOR_FRAME, H_IX_DEAD, H_IX_TAIL] {
            word(self.shm, off).store(0, Relaxed);
        }
        word(self.shm, H_IX_COUNT).store(0, Release);
    }

    /// Empties the index and forgets the pool and the engine regions in it (first opener,
    /// provably alone): every unit will be rewritten with zeros before it is used again.
    pub fn init(&self) {
        self.reset();
        for off in [
            H_IX_UNITS,
            H_IX_RESERVED,
            H_IX_BLOCKS,
            H_IX_NODE_NEXT,
            H_IX_NODE_END,
            H_IX_NODES,
        ] {
            word(self.shm, off).store(0, Relaxed);
        }
        // engine regions live in the pool too: forgetting the pool zeroes them
        self.shm.u32(H_REGION_SIZE).store(0, Relaxed);
        for i in 0..MAX_REGIONS as usize {
            self.shm.u32(H_REGIONS + i * 4).store(0, Relaxed);
        }
        for t in 0..IX_DIR_TOP as usize {
            self.shm.u32(self.geom.dir_top() + t * 4).store(0, Relaxed);
        }
        for t in 0..IX_BLK_TOP as usize {
            self.shm.u32(self.geom.blk_top() + t * 4).store(0, Relaxed);
        }
    }

    pub fn stats(&self) -> tshm_index_stats {
        let w = |off| word(self.shm, off).load(Acquire);
        tshm_index_stats {
            generation: w(H_IX_GEN),
            entries: w(H_IX_COUNT),
            dead: w(H_IX_DEAD),
            tail_frame: w(H_IX_TAIL),
            blocks: w(H_IX_BLOCKS),
            nodes: w(H_IX_NODES),
            pool_bytes: w(H_IX_UNITS).saturating_mul(UNIT),
        }
    }
}

/// Checks the index counters of a sidecar being joined against each other and the file.
///
/// The counters are read before the file's length: growth writes pages before it announces
/// them, so a process joining during growth sees a file at least as long as they claim.
pub fn validate(shm: &Shm, geom: &Geometry, fd: std::os::fd::RawFd) -> Result<()> {
    // A writer may be running: read each counter after those it is stored before (the node
    // allocator's words, the count, the floor and dead count, the blocks, the units, the
    // reservation, the file), so that a consistent-but-moving index never looks corrupt; and
    // give a moving index another look before calling it corrupt.
    let mut bad = String::new();
    for _ in 0..3 {
        let w = |off| word(shm, off).load(Acquire);
        let (next, end) = (w(H_IX_NODE_NEXT), w(H_IX_NODE_END));
        let count = w(H_IX_COUNT);
        let (floor, dead, tail) = (w(H_IX_FLOOR), w(H_IX_DEAD), w(H_IX_TAIL));
        let blocks = w(H_IX_BLOCKS);
        let units = w(H_IX_UNITS);
        let reserved = w(H_IX_RESERVED);
        let pool_len = crate::region::file_len(fd)?.saturating_sub(geom.base_len);
        bad = if units > pool_len / UNIT {
            format!(
                "index claims {units} units but the file holds {}",
                pool_len / UNIT
            )
        } else if blocks > units
            || count > blocks.saturating_mul(BLOCK_ENTRIES)
            || count > MAX_ENTRIES
        {
            format!("index counts disagree: {count} entries, {blocks} blocks, {units} units")
        } else if next > end || end > units.saturating_mul(NODES_PER_UNIT) + 1 || dead > count {
            "index node allocator or dead count out of range".into()
        } else if tail >= DEAD || floor > count || reserved < units {
            "index tail or trim floor out of range".into()
        } else {
            return Ok(());
        };
    }
    Err(Error::Corrupt(bad))
}

/// Adds a zeroed unit to the pool and returns its number. Lock-free, for the index writer and
/// for engine regions alike: a unit number is reserved by `fetch_add`, its pages are written,
/// and only then does the published unit count cover it (`fetch_max`), so the published count
/// never exceeds what the file holds. A unit whose allocator died before writing it is never
/// referenced.
pub(crate) fn alloc_unit(shm: &Shm, pool: &Pool) -> Result<u64> {
    let u = word(shm, H_IX_RESERVED).fetch_add(1, AcqRel);
    if u >= u32::MAX as u64 / NODES_PER_UNIT {
        return Err(Error::Full(
            "the index pool reached its addressable size".into(),
        ));
    }
    pool.zero(u * UNIT, UNIT)?;
    word(shm, H_IX_UNITS).fetch_max(u + 1, Release);
    Ok(u)
}

/// Exhaustive interleavings of the directory / back-link protocol: a model of the writer's
/// steps (in the order [`Index::append`] and [`Index::truncate`] perform their shared-memory
/// stores) against a reader's steps (in the order [`Index::find`] loads), every interleaving
/// explored, memory sequentially consistent. Each reader's answer must be the newest frame at
/// or below its snapshot among the entries committed when it began.
#[cfg(test)]
mod interleavings {
    #[derive(Clone, Copy, Debug)]
    struct E {
        page: usize,
        prev: u64,
        frame: u64,
        dead: bool,
    }

    #[derive(Clone, Default)]
    struct S {
        e: Vec<E>,
        dir: [u64; 3],
        count: u64,
        tail: u64,
        committed: u64,
    }

    #[derive(Clone, Copy, Debug)]
    enum Op {
        /// Append, stopping (the writer dies) after this many of its three stores.
        Append(usize, u64, u8),
        Commit,
        /// Truncate to the committed frame (a rollback, or the next writer's trim).
        Trim,
    }

    #[derive(Clone)]
    struct W {
        ops: Vec<Op>,
        pc: usize,
        sub: u8,
        cursor: u64,
    }

    impl W {
        fn done(&self) -> bool {
            self.pc >= self.ops.len()
        }
        fn next(&mut self) {
            self.pc += 1;
            self.sub = 0;
        }
        /// One shared-memory store (or one decision of the truncate scan).
        fn step(&mut self, s: &mut S) {
            match self.ops[self.pc] {
                Op::Append(page, frame, upto) => {
                    if self.sub >= upto {
                        return self.next();
                    }
                    match self.sub {
                        0 => {
                            let slot = s.count as usize;
                            let e = E {
                                page,
                                prev: s.dir[page],
                                frame,
                                dead: false,
                            };
                            if s.e.len() <= slot {
                                s.e.push(e);
                            } else {
                                s.e[slot] = e;
                            }
                        }
                        1 => {
                            s.tail = frame;
                            s.count += 1;
                        }
                        _ => s.dir[page] = s.count,
                    }
                    self.sub += 1;
                    if self.sub == 3 {
                        self.next();
                    }
                }
                Op::Commit => {
                    s.committed = s.tail;
                    self.next();
                }
                Op::Trim => {
                    let m = s.committed;
                    if self.sub == 0 {
                        if s.tail <= m {
                            return self.next();
                        }
                        self.cursor = s.count;
                        self.sub = 1;
                        return;
                    }
                    let slot = self.cursor as usize;
                    if slot == 0 {
                        s.tail = m;
                        return self.next();
                    }
                    let e = s.e[slot - 1];
                    if e.dead {
                        self.cursor -= 1;
                    } else if e.frame <= m {
                        self.cursor = 0;
                    } else if self.sub == 1 {
                        if s.dir[e.page] == slot as u64 {
                            s.dir[e.page] = e.prev;
                        }
                        self.sub = 2;
                    } else {
                        s.e[slot - 1].dead = true;
                        self.cursor -= 1;
                        self.sub = 1;
                    }
                }
            }
        }
    }

    #[derive(Clone, Debug)]
    enum R {
        Begin,
        Dir {
            rmax: u64,
            want: Option<u64>,
        },
        Walk {
            rmax: u64,
            want: Option<u64>,
            cur: u64,
        },
    }

    fn answer(s: &S, page: usize, rmax: u64) -> Option<u64> {
        s.e[..s.count as usize]
            .iter()
            .filter(|e| e.page == page && !e.dead && e.frame <= rmax)
            .map(|e| e.frame)
            .max()
    }

    /// One reader step; `Some(result)` when the lookup finished.
    fn rstep(r: &mut R, s: &S, page: usize) -> Option<(Option<u64>, Option<u64>)> {
        match r.clone() {
            R::Begin => {
                let rmax = s.committed;
                *r = R::Dir {
                    rmax,
                    want: answer(s, page, rmax),
                };
                None
            }
            R::Dir { rmax, want } => {
                *r = R::Walk {
                    rmax,
                    want,
                    cur: s.dir[page],
                };
                None
            }
            R::Walk { rmax, want, cur } => {
                if cur == 0 {
                    return Some((None, want));
                }
                let e = s.e[cur as usize - 1];
                assert_eq!(e.page, page, "walk left the page's chain");
                if !e.dead && e.frame <= rmax {
                    return Some((Some(e.frame), want));
                }
                assert!(e.prev < cur, "walk went forward");
                *r = R::Walk {
                    rmax,
                    want,
                    cur: e.prev,
                };
                None
            }
        }
    }

    fn explore(s: &S, w: &W, r: &R, page: usize, seen: &mut u64) {
        let mut r2 = r.clone();
        match rstep(&mut r2, s, page) {
            Some((got, want)) => {
                assert_eq!(got, want, "reader of page {page} answered wrongly");
                *seen += 1;
            }
            None => explore(s, w, &r2, page, seen),
        }
        if !w.done() {
            let (mut s2, mut w2) = (s.clone(), w.clone());
            w2.step(&mut s2);
            explore(&s2, &w2, r, page, seen);
        }
    }

    fn run(ops: &[Op]) -> u64 {
        let mut s = S::default();
        // committed history: page 1 at frames 1 and 3, page 2 at frame 2
        let mut w = W {
            ops: vec![
                Op::Append(1, 1, 3),
                Op::Append(2, 2, 3),
                Op::Append(1, 3, 3),
                Op::Commit,
            ],
            pc: 0,
            sub: 0,
            cursor: 0,
        };
        while !w.done() {
            w.step(&mut s);
        }
        let w = W {
            ops: ops.to_vec(),
            pc: 0,
            sub: 0,
            cursor: 0,
        };
        let mut seen = 0;
        for page in 0..3 {
            explore(&s, &w, &R::Begin, page, &mut seen);
        }
        seen
    }

    #[test]
    fn rollback_and_commit_interleavings() {
        use Op::*;
        let mut total = 0;
        // a transaction rolled back, then a new one committed over the same frames
        total += run(&[
            Append(1, 4, 3),
            Append(2, 5, 3),
            Append(1, 6, 3),
            Trim,
            Append(2, 4, 3),
            Append(1, 5, 3),
            Commit,
        ]);
        // a savepoint rollback inside a transaction that then commits
        total += run(&[
            Append(1, 4, 3),
            Commit,
            Append(2, 5, 3),
            Append(1, 6, 3),
            Trim,
            Append(1, 5, 3),
            Commit,
            Append(2, 6, 3),
            Trim,
        ]);
        // a writer dies after each store of an append; the next writer trims and commits
        for upto in 0..=3 {
            total += run(&[
                Append(2, 4, 3),
                Append(1, 5, upto),
                Trim,
                Append(1, 4, 3),
                Commit,
            ]);
        }
        assert!(total > 10_000, "explored {total} reader outcomes");
    }
}
