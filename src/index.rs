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
//! 6. Node pages are handed out in increasing order and a child after its parent, so a
//!    child's page number exceeds its parent's and lies below the allocator's end: a lookup
//!    rejects a node naming itself or an ancestor in one comparison. A whole walk (for-each,
//!    `check`) also requires a tree: each node page met once, no more of them than the node
//!    count, in a unit holding no entry block or region, every slot within the entry count.
//!    Its work is therefore bounded by the counters, whatever the file holds.
//! 7. The pool grows only as far as the counters can use (`unit_bound`): a reservation
//!    beyond it is corrupt, not growth; growth that would pass the file-size limit is
//!    [`Error::Full`] before the write (never SIGXFSZ).
//!
//! **The writer's memo.** A writer handle keeps an [`AppendMemo`] in process memory: the
//! current entry block's and recent directory leaves' addresses in its mapping, with the table
//! words and bounds the walk to them checked. Each append compares those words and bounds with
//! the sidecar's instead of walking again, and reads the counters, the generation and the
//! directory word as always; its stores and their order are the same with or without it.
//!
//! **Rollback and its counters.** A rollback leaves dead entries in place until the next
//! reset; the *trim word* (one atomic: `floor << 32 | dead`) says that `dead` is exactly the
//! number of dead marks below slot `floor`, and the floor frame that every entry below the
//! floor is dead or at most that frame. It is stored only when exact, so a kill at any store
//! leaves it true; marks at or above the floor are *uncounted* (made by a rollback killed
//! before its last stores). [`Index::truncate`] to frame `m`:
//!
//! 1. if `m` is below the floor frame, lowers the floor beneath the live entries above `m`,
//!    taking the dead marks it passes out of `dead` in the same store (they are now above);
//! 2. scans down from the newest slot to the floor: counts the marks it meets, marks (after
//!    pointing the directory back) the live entries above `m`, stops at the first live entry
//!    at or below `m`;
//! 3. stores the floor frame, the trim word (`count`, `dead` + all it counted), the tail last.
//!
//! A rollback killed before step 3 leaves the tail above the committed frame, so the next
//! writer's trim (its first act, to the committed frame, at or below the killed rollback's
//! target) runs again; the killed one marked from the newest slot down only entries above its
//! target, so the new scan passes every such mark before it meets a live entry at or below its
//! own target, and counts them. The floor keeps repeated rollbacks from rescanning old ones.

use crate::error::{Error, Result};
use crate::layout::*;
use crate::node::Mapped;
use crate::region::{Pool, Shm};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, AtomicUsize, Ordering::*};

// The entry format and its limits (ENTRY_BYTES, BLOCK_ENTRIES, DEAD, MAX_ENTRIES, UNIT_MARGIN)
// are defined with the rest of the byte map, in crate::layout.
const UNIT: u64 = POOL_UNIT;
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

/// Directory leaves an [`AppendMemo`] remembers, direct-mapped by `page >> 9` (a leaf covers
/// 512 consecutive pages, so they cover any 32,768 consecutive pages).
const LEAF_MEMO: usize = 64;

/// What a writer handle remembers between its appends, in process memory (never in the
/// sidecar): for the current entry block and for the directory leaves of recently appended
/// pages, the table words on the way to it and its address in this process's mapping of the
/// pool, as one checked walk found them. An append then walks nothing and range-checks no
/// pool offset: it compares those table words with the sidecar's (independent loads, not a
/// chain of dependent ones), and the node pages and the unit with the node allocator's end and
/// the published units, as a walk checks them. Any difference sends it down the walk, which
/// reports what is wrong or learns the new place. So an append answers as it would without
/// the memo, in every state of the sidecar (a corrupted table word is still `Corrupt`); and
/// the counters, the generation and the directory word are read from the sidecar every time,
/// so other writers, rollbacks and resets in between change nothing.
///
/// (The places in fact never move while anyone is attached: a table word, once it names a
/// block's unit or a node page, is not changed until the first opener's [`Index::init`]; only
/// corruption makes the comparisons fail.)
///
/// Every field is an atomic (Relaxed), so no interleaving is undefined behaviour, and every
/// address stored in it was range-checked within one mapping, whose pool it names (see
/// `Index::append_with`). The fields of one place match each other because appends are
/// serialized: the index has one mutator, the writer, and one thread of a handle at a time uses
/// it (the coordinator's writer role state is `IN_USE` meanwhile; another thread is refused).
pub struct AppendMemo {
    /// Address of the [`Pool`] the addresses below lie in (0: nothing remembered).
    pool: AtomicUsize,
    /// The current entry block (key: block number + 1).
    block: Place,
    /// Directory leaves (key: `page >> 9` + 1).
    leaves: [Place; LEAF_MEMO],
}

/// One remembered place. The walk to it read `n1` from the top table word at `top` (in the
/// fixed part), the node page `n1` names, and `n2` from that node's word at `word`: for a
/// block, `n1` its block-table node and `n2` its unit + 1; for a leaf, `n1` its middle node
/// and `n2` the leaf's node page. It arrived at `ptr`, the block's unit or the leaf's page.
/// The walk's bounds (node pages below the allocator's end and inside the published units,
/// the unit published) hold for as long as those counters are at least `end` and `units`.
#[derive(Default)]
struct Place {
    /// What the place is for, + 1 (0: nothing remembered).
    key: AtomicU64,
    top: AtomicUsize,
    n1: AtomicU32,
    n2: AtomicU32,
    word: AtomicUsize,
    end: AtomicU64,
    units: AtomicU64,
    ptr: AtomicUsize,
}

impl Place {
    /// The remembered address, if the place is for `key` and what its walk read still holds.
    #[inline]
    fn get(&self, key: u64, end: u64, units: u64) -> Option<usize> {
        // SAFETY: `top` and `word` are addresses of u32 table words that a walk checked (the
        // key is set last, so they belong to it)
        let same = self.key.load(Relaxed) == key
            && unsafe { at::<AtomicU32>(self.top.load(Relaxed)) }.load(Acquire)
                == self.n1.load(Relaxed)
            && unsafe { at::<AtomicU32>(self.word.load(Relaxed)) }.load(Acquire)
                == self.n2.load(Relaxed)
            && end >= self.end.load(Relaxed)
            && units >= self.units.load(Relaxed);
        same.then(|| self.ptr.load(Relaxed))
    }

    /// Remembers what a walk read and where it arrived (see [`Place`]).
    #[allow(clippy::too_many_arguments)]
    fn set(
        &self,
        key: u64,
        top: &AtomicU32,
        n1: u32,
        word: &AtomicU32,
        n2: u32,
        end: u64,
        units: u64,
        ptr: usize,
    ) {
        self.top.store(top as *const AtomicU32 as usize, Relaxed);
        self.n1.store(n1, Relaxed);
        self.word.store(word as *const AtomicU32 as usize, Relaxed);
        self.n2.store(n2, Relaxed);
        self.end.store(end, Relaxed);
        self.units.store(units, Relaxed);
        self.ptr.store(ptr, Relaxed);
        self.key.store(key, Relaxed);
    }
}

impl Default for AppendMemo {
    fn default() -> AppendMemo {
        AppendMemo {
            pool: AtomicUsize::new(0),
            block: Place::default(),
            leaves: std::array::from_fn(|_| Place::default()),
        }
    }
}

impl AppendMemo {
    /// Forgets everything unless it was learnt in `pool`, and from now on learns in `pool`.
    fn adopt(&self, pool: &Pool) {
        let addr = pool as *const Pool as usize;
        if self.pool.load(Relaxed) != addr {
            self.block.key.store(0, Relaxed);
            for l in &self.leaves {
                l.key.store(0, Relaxed);
            }
            self.pool.store(addr, Relaxed);
        }
    }
}

/// Whether `p` may be a node page below `parent` (0: a top table's child), with the node
/// allocator's end at `end` and `units` pool units published (see [`Index::node_off`]).
fn node_in_bounds(p: u32, parent: u32, end: u64, units: u64) -> bool {
    p > parent && (p as u64) < end && p as u64 * PAGE <= units.saturating_mul(UNIT)
}

/// The least allocator end and published units under which node page `p` is in bounds.
fn node_needs(p: u32) -> (u64, u64) {
    (p as u64 + 1, (p as u64 * PAGE).div_ceil(UNIT))
}

/// The shared word at an address an [`AppendMemo`] remembers.
///
/// # Safety
/// `addr` is aligned for `T` and lies, with the `T` there, in a mapping that is still alive:
/// the fixed part of a [`Shm`] (its accessors checked it) or a range [`Pool::range`] checked.
unsafe fn at<'a, T>(addr: usize) -> &'a T {
    // SAFETY: the caller's; shared memory is only ever accessed atomically.
    unsafe { &*(addr as *const T) }
}

#[inline]
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

    /// Pool offset of node page `p` (1-based), a child of node page `parent` (0: of a top
    /// table). Node pages are handed out in increasing order and a child is always allocated
    /// after its parent, so `p` must exceed `parent` (which rules out a node naming itself or
    /// an ancestor), lie below the node allocator's end and inside the published units.
    fn node_off(&self, p: u32, parent: u32) -> Result<u64> {
        let off = (p as u64).wrapping_sub(1) * PAGE;
        // both loaded after the pointer (stored after them): the reload covers a valid one
        let end = word(self.shm, H_IX_NODE_END).load(Acquire);
        let units = self.units();
        if !node_in_bounds(p, parent, end, units) {
            return Err(Error::Corrupt(format!(
                "index node page {p} (child of {parent}) is not a node page: node pages end \
                 at {end}, {units} units published"
            )));
        }
        Ok(off)
    }

    /// The node page the table word `w` (in node page `parent`, 0 for a top table) points to,
    /// with its pool offset; an empty word is `None`, or, with `create` (writer only), gets a
    /// fresh node page.
    fn follow(&self, w: &AtomicU32, create: bool, parent: u32) -> Result<Option<(u32, u64)>> {
        let mut n = w.load(Acquire);
        if n == 0 {
            if !create {
                return Ok(None);
            }
            n = self.alloc_node()?;
            w.store(n, Release);
        }
        Ok(Some((n, self.node_off(n, parent)?)))
    }

    fn blk_top(&self, b: u64) -> &AtomicU32 {
        self.shm.u32(self.geom.blk_top() + (b >> 10) as usize * 4)
    }

    /// Pool offset of entry block `b`, if it has a unit.
    fn block_off(&self, b: u64) -> Result<Option<u64>> {
        if b >= IX_BLK_TOP * 1024 {
            return Ok(None);
        }
        let Some((_, node)) = self.follow(self.blk_top(b), false, 0)? else {
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

    /// [`Index::block_off`]'s walk, returning what it read: the node page, its word for `b`,
    /// and that word's value (the unit + 1). (A walk of its own, so that lookups keep theirs
    /// lean; `append_memo`'s test holds the two to the same answers.)
    fn block_path(&self, b: u64) -> Result<Option<(u32, &'a AtomicU32, u32)>> {
        if b >= IX_BLK_TOP * 1024 {
            return Ok(None);
        }
        let Some((n, node)) = self.follow(self.blk_top(b), false, 0)? else {
            return Ok(None);
        };
        let w = self.pool.u32(node + (b & 1023) * 4)?;
        let u = w.load(Acquire);
        if u == 0 {
            return Ok(None);
        }
        let units = self.units();
        if u as u64 > units {
            return Err(Error::Corrupt(format!(
                "index block {b} in unit {u} beyond the {units} published"
            )));
        }
        Ok(Some((n, w, u)))
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
        let top = self.dir_top(page);
        let Some((mid_page, mid)) = self.follow(top, create, 0)? else {
            return Ok(None);
        };
        let leaf_word = self.pool.u32(mid + ((page >> 9) & 1023) as u64 * 4)?;
        let Some((_, leaf)) = self.follow(leaf_word, create, mid_page)? else {
            return Ok(None);
        };
        Ok(Some(self.pool.u64(leaf + (page & 511) as u64 * 8)?))
    }

    fn dir_top(&self, page: u32) -> &'a AtomicU32 {
        self.shm
            .u32(self.geom.dir_top() + (page >> 19) as usize * 4)
    }

    /// [`Index::dir_word`]'s walk to the leaf holding `page`'s word, returning what it read:
    /// the middle node page, its word for the leaf, the leaf's node page and pool offset. (A
    /// walk of its own, as [`Index::block_path`] is.)
    fn leaf_path(&self, page: u32, create: bool) -> Result<Option<(u32, &'a AtomicU32, u32, u64)>> {
        let Some((mid_page, mid)) = self.follow(self.dir_top(page), create, 0)? else {
            return Ok(None);
        };
        let leaf_word = self.pool.u32(mid + ((page >> 9) & 1023) as u64 * 4)?;
        Ok(self
            .follow(leaf_word, create, mid_page)?
            .map(|(leaf_page, leaf)| (mid_page, leaf_word, leaf_page, leaf)))
    }

    /// The two words of entry `slot` and `page`'s directory word, creating the block and the
    /// directory nodes they need (writer only): from the memo when it knows them, else found
    /// (and remembered).
    #[inline(always)]
    fn append_words(
        &self,
        memo: Option<&AppendMemo>,
        slot: u64,
        page: u32,
    ) -> Result<(&'a AtomicU64, &'a AtomicU64, &'a AtomicU64)> {
        let Some(memo) = memo else {
            let off = self.ensure_block(slot / BLOCK_ENTRIES)? + slot % BLOCK_ENTRIES * ENTRY_BYTES;
            let dir = self.dir_word(page, true)?.expect("created above");
            return Ok((self.pool.u64(off)?, self.pool.u64(off + 8)?, dir));
        };
        // the bounds a walk checks the node pages and the unit against
        let end = word(self.shm, H_IX_NODE_END).load(Acquire);
        let units = self.units();
        let b = slot / BLOCK_ENTRIES;
        let block = match memo.block.get(b + 1, end, units) {
            Some(p) => p,
            None => self.learn_block(&memo.block, b)?,
        };
        let key = (page >> 9) as u64;
        let lp = &memo.leaves[key as usize % LEAF_MEMO];
        let leaf = match lp.get(key + 1, end, units) {
            Some(p) => p,
            None => self.learn_leaf(lp, page)?,
        };
        let entry = block + (slot % BLOCK_ENTRIES * ENTRY_BYTES) as usize;
        let dir = leaf + (page & 511) as usize * 8;
        // SAFETY: `block` is the start of a whole unit and `leaf` of a whole node page, each
        // range-checked in this pool when it was learnt (`append_with`'s contract: this pool,
        // which keeps its windows mapped while it lives); the entry's 16 bytes lie inside the
        // unit and the word's 8 inside the page, 8-aligned.
        unsafe { Ok((at(entry), at(entry + 8), at(dir))) }
    }

    /// Gives block `b` a unit if it has none, then walks to it once more and remembers in `bp`
    /// what that walk read (writer only). Returns the block's address.
    fn learn_block(&self, bp: &Place, b: u64) -> Result<usize> {
        self.ensure_block(b)?;
        let Some((node, w, unit1)) = self.block_path(b)? else {
            return Err(Error::Corrupt(format!(
                "index block {b} lost its unit while the writer gave it one"
            )));
        };
        let p = self.pool.range((unit1 as u64 - 1) * UNIT, UNIT, UNIT)? as usize;
        let (end, units) = node_needs(node);
        let units = units.max(unit1 as u64);
        bp.set(b + 1, self.blk_top(b), node, w, unit1, end, units, p);
        Ok(p)
    }

    /// Gives `page` the directory nodes it lacks, walks to its leaf and remembers in `lp` what
    /// the walk read (writer only). Returns the leaf's address.
    fn learn_leaf(&self, lp: &Place, page: u32) -> Result<usize> {
        let (mid, w, leaf, off) = self.leaf_path(page, true)?.expect("created above");
        let p = self.pool.range(off, PAGE, PAGE)? as usize;
        // the leaf lies above its middle node: its bounds cover both
        let (end, units) = node_needs(leaf);
        lp.set(
            (page >> 9) as u64 + 1,
            self.dir_top(page),
            mid,
            w,
            leaf,
            end,
            units,
            p,
        );
        Ok(p)
    }

    /// Takes a zeroed node page (1-based pool page number).
    fn alloc_node(&self) -> Result<u32> {
        let next = word(self.shm, H_IX_NODE_NEXT);
        let end = word(self.shm, H_IX_NODE_END);
        let mut n = next.load(Relaxed);
        let e = end.load(Relaxed);
        // `n` must lie in the current node unit [end - 16, end): a writer killed between the
        // two stores below leaves `next` behind in an older unit, whose successor is not ours
        if n == 0 || n >= e || n < e.saturating_sub(NODES_PER_UNIT) {
            let u = alloc_unit(self.shm, self.pool)?;
            n = u * NODES_PER_UNIT + 1;
            end.store(n + NODES_PER_UNIT, Release);
        }
        // a node number is a u32 in every table word: a mutated allocator beyond that is corrupt,
        // not a reason to hand out a truncated (existing) node page
        let n32 = u32::try_from(n)
            .map_err(|_| Error::Corrupt(format!("index node allocator at page {n}")))?;
        next.store(n + 1, Release);
        word(self.shm, H_IX_NODES).fetch_add(1, Relaxed);
        Ok(n32)
    }

    /// Pool offset of block `b`, giving it a unit when it has none (writer only). Either way the
    /// block count covers `b` on return, before any entry of `b` is counted: a writer killed
    /// between the two stores below leaves `b` with a unit and the count short of it, and the
    /// next writer to reach `b` finds the unit and raises the count.
    fn ensure_block(&self, b: u64) -> Result<u64> {
        let blocks = word(self.shm, H_IX_BLOCKS);
        if let Some(off) = self.block_off(b)? {
            if blocks.load(Relaxed) <= b {
                // Release, as below: the unit this writer found (Acquire) is published
                blocks.fetch_max(b + 1, Release);
            }
            return Ok(off);
        }
        let (_, node) = self
            .follow(self.blk_top(b), true, 0)?
            .expect("created above");
        let u = alloc_unit(self.shm, self.pool)?;
        self.pool
            .u32(node + (b & 1023) * 4)?
            .store(u as u32 + 1, Release);
        crate::testpoint::hit("block_unit");
        // Release: a joiner that reads the block count reads units that cover it (validate)
        blocks.fetch_max(b + 1, Release);
        Ok(u * UNIT)
    }

    /// The newest frame appended (or the last rollback point).
    #[inline]
    pub fn tail(&self) -> u64 {
        word(self.shm, H_IX_TAIL).load(Relaxed)
    }

    /// Appends `(page, frame)`; `frame` must exceed [`Index::tail`]. Writer only. `limit`
    /// caps the entries of one generation (0: no cap beyond the format's).
    pub fn append(&self, page: u32, frame: u64, limit: u64) -> Result<()> {
        self.append_in(None, page, frame, limit)
    }

    /// [`Index::append`], using and filling `memo`.
    ///
    /// # Safety
    /// `memo` is used with no other mapping than this view's during its whole life (the
    /// addresses it remembers must not outlive the mapping they point into; the address check
    /// in [`AppendMemo`] tells mappings apart only while they are alive).
    pub(crate) unsafe fn append_with(
        &self,
        memo: &AppendMemo,
        page: u32,
        frame: u64,
        limit: u64,
    ) -> Result<()> {
        memo.adopt(self.pool);
        self.append_in(Some(memo), page, frame, limit)
    }

    #[inline(always)]
    fn append_in(
        &self,
        memo: Option<&AppendMemo>,
        page: u32,
        frame: u64,
        limit: u64,
    ) -> Result<()> {
        let tail_word = word(self.shm, H_IX_TAIL);
        let count_word = word(self.shm, H_IX_COUNT);
        let tail = tail_word.load(Relaxed);
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
        let count = count_word.load(Relaxed);
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
        let (w0, w1, dir) = self.append_words(memo, count, page)?;
        let d = dir.load(Relaxed);
        let prev = if d >> 32 == g32 { d & 0xffff_ffff } else { 0 };
        if prev > count {
            return Err(Error::Corrupt(format!(
                "directory of page {page} points to slot {prev} beyond the {count} entries"
            )));
        }
        w0.store(page as u64 | prev << 32, Relaxed);
        w1.store(frame, Relaxed);
        tail_word.store(frame, Relaxed);
        crate::testpoint::hit("append_entry");
        count_word.store(count + 1, Release);
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
        let r = self.each_page(g, max_frame, false, &mut f).map(drop);
        fence(Acquire);
        if gen.load(Relaxed) != g {
            return Err(Error::Busy(
                "the frame index was reset during the walk".into(),
            ));
        }
        r
    }

    /// Visits every page of the directory (see [`Index::for_each`]), checking on the way that
    /// no more node pages are met than the allocator counted, each child page above its
    /// parent's, every slot within the entry count; so the work is bounded by the node count,
    /// whatever the file says. It allocates nothing unless `full` (the inspector's check),
    /// which also requires a tree: every node page met once, in a unit holding no entry block
    /// and no engine region.
    fn each_page(
        &self,
        g: u64,
        max_frame: u64,
        full: bool,
        f: &mut impl FnMut(u32, u64) -> bool,
    ) -> Result<Tree> {
        let mut tree = Tree::new(self, full)?;
        if max_frame == 0 {
            return Ok(tree);
        }
        for t in 0..IX_DIR_TOP {
            let top = self.shm.u32(self.geom.dir_top() + t as usize * 4);
            let Some((mid, mid_off)) = self.follow(top, false, 0)? else {
                continue;
            };
            tree.node(self, mid)?;
            for m in 0..1024u64 {
                let w = self.pool.u32(mid_off + m * 4)?;
                let Some((leaf, leaf_off)) = self.follow(w, false, mid)? else {
                    continue;
                };
                tree.node(self, leaf)?;
                for l in 0..512u64 {
                    let d = self.pool.u64(leaf_off + l * 8)?.load(Acquire);
                    let page = (t << 19 | m << 9 | l) as u32;
                    if d >> 32 == Self::gen32(g) {
                        tree.slot(self, d & 0xffff_ffff)?;
                    }
                    if let Some(frame) = self.walk(page, d, g, max_frame)? {
                        if !f(page, frame) {
                            return Ok(tree);
                        }
                    }
                    if full {
                        // the whole chain, not only down to its newest live entry (no frame is
                        // at or below 0): chains are per page, so this is O(entries) in all
                        self.walk(page, d, g, 0)?;
                    }
                }
            }
        }
        Ok(tree)
    }

    /// Validates the whole index (the inspector's `check`): the directory is a tree (see
    /// `Index::each_page`), every chain ends, and the published and reserved units are
    /// accounted for by the units in use.
    pub fn check(&self) -> Result<()> {
        let gen = word(self.shm, H_IX_GEN);
        let g = gen.load(Acquire);
        let tree = self.each_page(g, (1 << 63) - 1, true, &mut |_, _| true)?;
        fence(Acquire);
        if gen.load(Relaxed) != g {
            return Err(Error::Busy(
                "the frame index was reset during the check".into(),
            ));
        }
        // The dead counter counts exactly the marks below the floor (marks above it are a
        // killed rollback's, which the next trim counts).
        let count = word(self.shm, H_IX_COUNT).load(Acquire);
        let trim = word(self.shm, H_IX_FLOOR).load(Acquire);
        let (floor, dead) = split_trim(trim);
        if floor > count {
            return Err(Error::Corrupt(format!(
                "index trim floor {floor} beyond the {count} entries"
            )));
        }
        let mut marks = 0;
        for slot in 0..floor {
            marks += (self.entry(slot)?.frame & DEAD != 0) as u64;
        }
        fence(Acquire);
        if word(self.shm, H_IX_FLOOR).load(Relaxed) != trim {
            return Err(Error::Busy(
                "the frame index was rolled back during the check".into(),
            ));
        }
        if marks != dead {
            return Err(Error::Corrupt(format!(
                "index counts {dead} dead entries below its floor {floor} but {marks} are marked"
            )));
        }
        let units = self.units();
        let reserved = word(self.shm, H_IX_RESERVED).load(Acquire);
        let bound = unit_bound(self.shm);
        let used = tree.kinds.len() as u64;
        if used > units {
            return Err(Error::Corrupt(format!(
                "index uses {used} units but {units} are published"
            )));
        }
        if reserved > bound || units > reserved {
            return Err(Error::Corrupt(format!(
                "index reserved {reserved} units and published {units}, but its entry blocks, \
                 node pages and regions use {used} (at most {bound} can be reserved)"
            )));
        }
        Ok(())
    }

    /// Drops every entry above `max_frame` (a rollback). Writer only. Returns how many it
    /// marked dead (entries a killed rollback had marked are counted, not returned).
    ///
    /// Kill-safe at every store (see "Rollback and its counters" in the module doc): the trim
    /// word (floor and dead count, one atomic) is stored only when it is exact, the tail last.
    pub fn truncate(&self, max_frame: u64) -> Result<u64> {
        self.truncate_as(max_frame, false)
    }

    /// [`Index::truncate`]; `by_trim` says that a writer's acquire runs it (its test point, after
    /// the first entry it marks dead, is then `trim_mark` instead of `truncate_mark`).
    pub(crate) fn truncate_as(&self, max_frame: u64, by_trim: bool) -> Result<u64> {
        if self.tail() <= max_frame {
            return Ok(0);
        }
        let count = word(self.shm, H_IX_COUNT).load(Relaxed);
        let trim = word(self.shm, H_IX_FLOOR);
        let (mut floor, mut dead) = split_trim(trim.load(Relaxed));
        if floor > count || dead > floor {
            return Err(Error::Corrupt(format!(
                "index trim floor {floor} / dead count {dead} beyond the {count} entries"
            )));
        }
        let floor_frame = word(self.shm, H_IX_FLOOR_FRAME).load(Relaxed);
        let g32 = Self::gen32(word(self.shm, H_IX_GEN).load(Relaxed));
        if max_frame < floor_frame {
            // Live entries below the floor may lie above the target: lower the floor beneath
            // them first. The dead entries it passes leave the count (they are counted again,
            // with the marks, by the scan below), in the same store.
            let mut low = floor;
            let mut passed = 0;
            while low > 0 {
                let e = self.entry(low - 1)?;
                if e.frame & DEAD != 0 {
                    passed += 1;
                } else if e.frame <= max_frame {
                    break;
                }
                low -= 1;
            }
            if passed > dead {
                return Err(Error::Corrupt(format!(
                    "index holds {passed} dead entries in slots {low}..{floor} but counts {dead}"
                )));
            }
            (floor, dead) = (low, dead - passed);
            stop_point()?;
            trim.store(make_trim(floor, dead), Release);
            // everything below the new floor is dead or at most max_frame
            stop_point()?;
            word(self.shm, H_IX_FLOOR_FRAME).store(max_frame, Relaxed);
        }
        let mut dropped = 0;
        let mut uncounted = 0;
        let mut slot = count;
        while slot > floor {
            slot -= 1;
            let e = self.entry(slot)?;
            if e.frame & DEAD != 0 {
                // above the floor: marked by a rollback killed before its count was stored
                uncounted += 1;
                continue;
            }
            if e.frame <= max_frame {
                break;
            }
            if let Some(dir) = self.dir_word(e.page, false)? {
                if dir.load(Relaxed) == g32 << 32 | (slot + 1) {
                    stop_point()?;
                    dir.store(g32 << 32 | e.prev, Release);
                }
            }
            let off = self.entry_off(slot)?;
            stop_point()?;
            self.pool.u64(off + 8)?.store(e.frame | DEAD, Release);
            if dropped == 0 {
                crate::testpoint::hit(if by_trim {
                    "trim_mark"
                } else {
                    "truncate_mark"
                });
            }
            dropped += 1;
        }
        // Below the new floor (the count) everything is dead or at most max_frame; the tail
        // last, so that a kill before it leaves the next writer a trim to finish.
        stop_point()?;
        word(self.shm, H_IX_FLOOR_FRAME).store(max_frame, Relaxed);
        stop_point()?;
        trim.store(make_trim(count, dead + dropped + uncounted), Release);
        stop_point()?;
        word(self.shm, H_IX_TAIL).store(max_frame, Relaxed);
        Ok(dropped)
    }

    /// Empties the index (the WAL restarted). Writer only. Keeps the pool's space for reuse.
    pub fn reset(&self) {
        let _ = self.reset_steps();
    }

    /// [`Index::reset`]'s stores, each after a stop point (tests stop it there: a kill).
    fn reset_steps(&self) -> Result<()> {
        // The trim words first, then the generation (Release), then the count, the tail last:
        // a joiner that reads the generation before and after its loads (validate) and sees it
        // unchanged read counters of one generation, with the trim word at most the count; and
        // a kill at any store leaves a tail above the committed frame (the next writer's trim
        // finishes the job) or the index empty, never old entries under a tail of 0.
        for off in [H_IX_FLOOR, H_IX_FLOOR_FRAME] {
            stop_point()?;
            word(self.shm, off).store(0, Relaxed);
        }
        let gen = word(self.shm, H_IX_GEN);
        stop_point()?;
        gen.store(gen.load(Relaxed).wrapping_add(1), Release);
        fence(Release);
        stop_point()?;
        word(self.shm, H_IX_COUNT).store(0, Release);
        stop_point()?;
        word(self.shm, H_IX_TAIL).store(0, Release);
        Ok(())
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
        // the trim word before the count (validate's order): dead <= entries
        let (_, dead) = split_trim(w(H_IX_FLOOR));
        tshm_index_stats {
            generation: w(H_IX_GEN),
            entries: w(H_IX_COUNT),
            dead,
            tail_frame: w(H_IX_TAIL),
            blocks: w(H_IX_BLOCKS),
            nodes: w(H_IX_NODES),
            pool_bytes: w(H_IX_UNITS).saturating_mul(UNIT),
        }
    }
}

/// Checks the index counters of a sidecar being joined against each other and the file.
///
/// A writer may be running. Each counter is loaded after those it is stored after (in the
/// writer's program order, each store Release, each load here Acquire), so that a consistent
/// but moving index never looks corrupt:
///
/// * the generation first and again last: a reset stores the trim word and the tail, then
///   the generation, then the count, so an unchanged generation means every load below saw
///   one generation;
/// * the node allocator's `next` before its `end` (stored before `next`);
/// * the trim word (floor, dead) before the count: the trim word is only ever stored with a
///   floor at most the count of that moment, and within a generation the count only grows;
/// * the count before the blocks, the blocks before the units, the units before the
///   reservation, the reservation before the counters bounding it (`unit_bound`), and all
///   of them before the file's length: growth writes pages before it announces them.
///
/// A moving index gets another look (three) before it is called corrupt.
pub fn validate(shm: &Shm, geom: &Geometry, fd: std::os::fd::RawFd) -> Result<()> {
    let mut bad = String::new();
    for _ in 0..3 {
        let w = |off| word(shm, off).load(Acquire);
        let gen = w(H_IX_GEN);
        let (next, end) = (w(H_IX_NODE_NEXT), w(H_IX_NODE_END));
        let (floor, dead) = split_trim(w(H_IX_FLOOR));
        let tail = w(H_IX_TAIL);
        let count = w(H_IX_COUNT);
        let blocks = w(H_IX_BLOCKS);
        let units = w(H_IX_UNITS);
        let reserved = w(H_IX_RESERVED);
        let bound = unit_bound(shm);
        let pool_len = crate::region::file_len(fd)?.saturating_sub(geom.base_len);
        fence(Acquire);
        if w(H_IX_GEN) != gen {
            bad = "the frame index was reset during every look".into();
            continue;
        }
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
        } else if next > end || end > units.saturating_mul(NODES_PER_UNIT) + 1 {
            "index node allocator out of range".into()
        } else if tail >= DEAD || floor > count || dead > floor {
            format!("index tail {tail}, trim floor {floor} or dead count {dead} out of range ({count} entries)")
        } else if reserved < units || reserved > bound {
            format!(
                "index reservation counter {reserved} outside {units}..={bound}, the units \
                 its blocks, nodes and regions can use"
            )
        } else {
            return Ok(());
        };
    }
    Err(Error::Corrupt(bad))
}

/// Units the counters can legitimately account for: one per entry block, the node units (16
/// node pages each, the last partly used), every engine region and as many again for
/// regions whose allocation lost a race, one allocation in flight (or cut short by a kill)
/// per instance slot, and a margin. A reservation beyond it is corrupt, not a reason to grow
/// the file.
pub(crate) fn unit_bound(shm: &Shm) -> u64 {
    let w = |off| word(shm, off).load(Acquire);
    let instances = shm.u32(H_INSTANCES).load(Relaxed) as u64;
    w(H_IX_BLOCKS)
        .saturating_add(w(H_IX_NODES).div_ceil(NODES_PER_UNIT) + 1)
        .saturating_add(2 * MAX_REGIONS as u64 + instances + UNIT_MARGIN)
}

/// Adds a zeroed unit to the pool and returns its number. Lock-free, for the index writer and
/// for engine regions alike: a unit number is reserved by `fetch_add`, its pages are written,
/// and only then does the published unit count cover it (`fetch_max`), so the published count
/// never exceeds what the file holds. A unit whose allocator died before writing it is never
/// referenced; one whose write failed is given back when no one reserved after it. A
/// reservation beyond [`unit_bound`] is [`Error::Corrupt`]: the file never grows to match a
/// mutated counter.
pub(crate) fn alloc_unit(shm: &Shm, pool: &Pool) -> Result<u64> {
    let reserved = word(shm, H_IX_RESERVED);
    let u = reserved.fetch_add(1, AcqRel);
    let give_back = || {
        let _ = reserved.compare_exchange(u + 1, u, AcqRel, Relaxed);
    };
    let bound = unit_bound(shm);
    if u >= bound {
        give_back();
        return Err(Error::Corrupt(format!(
            "index reservation counter {u} beyond the {bound} units its blocks, nodes and \
             regions can use"
        )));
    }
    if u >= u32::MAX as u64 / NODES_PER_UNIT {
        give_back();
        return Err(Error::Full(
            "the index pool reached its addressable size".into(),
        ));
    }
    if let Err(e) = pool.zero(u * UNIT, UNIT) {
        give_back();
        return Err(e);
    }
    crate::testpoint::hit("pool_zeroed");
    word(shm, H_IX_UNITS).fetch_max(u + 1, Release);
    Ok(u)
}

/// The trim word: `floor << 32 | dead`.
fn make_trim(floor: u64, dead: u64) -> u64 {
    floor << 32 | dead
}

/// (floor, dead) of a trim word.
fn split_trim(w: u64) -> (u64, u64) {
    (w >> 32, w & 0xffff_ffff)
}

/// What kind of data a pool unit holds, as far as a walk has seen.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Nodes,
    Block,
    Region,
}

/// What a walk over the whole index has met (see [`Index::each_page`]).
struct Tree {
    /// Whether to remember every node page and the kind of every unit (allocates).
    full: bool,
    kinds: std::collections::HashMap<u64, Kind>,
    nodes: std::collections::HashSet<u32>,
    /// Node pages met.
    met: u64,
    /// Node pages counted by the allocator (reloaded before giving up).
    budget: u64,
    /// Entries (reloaded before giving up).
    count: u64,
}

impl Tree {
    /// Registers the entry blocks, the block table's nodes and the engine regions.
    fn new(ix: &Index, full: bool) -> Result<Tree> {
        let mut t = Tree {
            full,
            met: 0,
            kinds: Default::default(),
            nodes: Default::default(),
            budget: Self::budget(ix)?,
            count: word(ix.shm, H_IX_COUNT).load(Acquire),
        };
        if !full {
            return Ok(t);
        }
        for i in 0..MAX_REGIONS as usize {
            let u = ix.shm.u32(H_REGIONS + i * 4).load(Acquire) as u64;
            if u != 0 {
                t.unit(u - 1, Kind::Region)?;
            }
        }
        // every block below the count has a unit, and the units bound the blocks
        let blocks = word(ix.shm, H_IX_BLOCKS).load(Acquire).min(ix.units());
        for top in 0..blocks.div_ceil(1024) {
            if let Some((n, _)) = ix.follow(ix.blk_top(top << 10), false, 0)? {
                t.node(ix, n)?;
            }
        }
        for b in 0..blocks {
            if let Some(off) = ix.block_off(b)? {
                t.unit(off / UNIT, Kind::Block)?;
            }
        }
        Ok(t)
    }

    /// Node pages a walk may meet: those the allocator counted, no more than lie below its end
    /// or in the file (so a mutated count cannot lift the bound).
    fn budget(ix: &Index) -> Result<u64> {
        let nodes = word(ix.shm, H_IX_NODES).load(Acquire);
        let end = word(ix.shm, H_IX_NODE_END).load(Acquire);
        Ok(nodes
            .min(end.saturating_sub(1))
            .min(ix.pool.file_bytes()? / PAGE))
    }

    fn unit(&mut self, u: u64, k: Kind) -> Result<()> {
        match self.kinds.insert(u, k) {
            None => Ok(()),
            Some(Kind::Nodes) if k == Kind::Nodes => Ok(()),
            Some(was) => Err(Error::Corrupt(format!(
                "index pool unit {u} is used as {was:?} and as {k:?}"
            ))),
        }
    }

    /// A node page met on the walk: once only, within the allocator's count, in a unit of
    /// node pages.
    fn node(&mut self, ix: &Index, p: u32) -> Result<()> {
        self.met += 1;
        if self.met > self.budget {
            self.budget = Self::budget(ix)?;
            if self.met > self.budget {
                return Err(Error::Corrupt(format!(
                    "the index directory holds more node pages than the {} allocated",
                    self.budget
                )));
            }
        }
        if !self.full {
            return Ok(());
        }
        if !self.nodes.insert(p) {
            return Err(Error::Corrupt(format!(
                "index node page {p} is referenced twice"
            )));
        }
        self.unit((p as u64 - 1) / NODES_PER_UNIT, Kind::Nodes)
    }

    /// A directory word's slot + 1: within the entry count.
    fn slot(&mut self, ix: &Index, s: u64) -> Result<()> {
        if s > self.count {
            self.count = word(ix.shm, H_IX_COUNT).load(Acquire);
            if s > self.count {
                return Err(Error::Corrupt(format!(
                    "index directory names slot {s} beyond the {} entries",
                    self.count
                )));
            }
        }
        Ok(())
    }
}

// Test builds: `STOP` stores into a truncate, then `Error::Internal`, as a kill would stop it
// (release builds compile the stop points to nothing).
#[cfg(test)]
thread_local! {
    static STOP: std::cell::Cell<Option<u32>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
fn stop_point() -> Result<()> {
    STOP.with(|s| match s.get() {
        Some(0) => Err(Error::Internal("stopped".into())),
        Some(n) => {
            s.set(Some(n - 1));
            Ok(())
        }
        None => Ok(()),
    })
}

#[cfg(not(test))]
#[inline(always)]
fn stop_point() -> Result<()> {
    Ok(())
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

/// A truncate stopped at each of its stores in turn (as a kill would stop it), then the next
/// writer's trim, possibly stopped too, then another: the counters must equal what the entries
/// say, and lookups must answer as if every rollback had run whole.
#[cfg(test)]
mod killed_truncates {
    use super::*;
    use crate::node::Mapped;
    use crate::region::{grow, write_header, Pool, Shm};
    use std::os::fd::AsRawFd;

    pub(super) fn fresh(name: &str) -> (std::fs::File, Mapped) {
        let dir = std::env::temp_dir().join(format!("tshm-ixk-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join(name);
        let file = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)
            .unwrap();
        let geom = Geometry::new(MIN_READERS, READERS_CAS, 8, ROLES_SHM);
        grow(file.as_raw_fd(), geom.base_len).unwrap();
        let shm = Shm::map(file.as_raw_fd(), geom.base_len, true).unwrap();
        write_header(&shm, &geom);
        let pool = Pool::new(file.as_raw_fd(), geom.base_len, true);
        let m = Mapped { shm, geom, pool };
        Index::new(&m).init();
        (file, m)
    }

    fn stopped_after(n: Option<u32>, f: impl FnOnce() -> Result<u64>) -> bool {
        STOP.with(|s| s.set(n));
        let r = f();
        STOP.with(|s| s.set(None));
        match r {
            Ok(_) => false,
            Err(Error::Internal(_)) => true,
            Err(e) => panic!("truncate failed: {e}"),
        }
    }

    /// (entries, dead by the counter, dead by the marks)
    fn counts(ix: &Index) -> (u64, u64, u64) {
        let st = ix.stats();
        let marks = (0..st.entries)
            .filter(|s| ix.entry(*s).unwrap().frame & DEAD != 0)
            .count() as u64;
        (st.entries, st.dead, marks)
    }

    /// A reset (after the WAL restarted) killed at any store, then the next writer's trim to
    /// the committed frame (0) and the new WAL's first frame: no lookup answers from the old WAL.
    #[test]
    fn reset_killed_at_any_store_never_answers_from_the_old_wal() {
        for k in 0.. {
            let (_f, m) = fresh("reset.tshm");
            let ix = Index::new(&m);
            for (p, f) in [(1u32, 1u64), (2, 2), (3, 3)] {
                ix.append(p, f, 0).unwrap();
            }
            STOP.with(|s| s.set(Some(k)));
            let stopped = ix.reset_steps().is_err();
            STOP.with(|s| s.set(None));
            if ix.tail() > 0 {
                ix.truncate(0).unwrap(); // what the next writer's acquire does
            }
            ix.append(2, 1, 0).unwrap();
            assert_eq!(ix.find(1, 1).unwrap(), None, "kill after {k} stores");
            assert_eq!(ix.find(2, 1).unwrap(), Some(1), "kill after {k} stores");
            assert_eq!(ix.find(3, 1).unwrap(), None, "kill after {k} stores");
            if !stopped {
                break;
            }
        }
    }

    /// The inspector's check follows every chain to its end and counts the dead marks.
    #[test]
    fn check_finds_a_broken_link_below_the_newest_entry_and_a_wrong_dead_count() {
        let (_f, m) = fresh("check.tshm");
        let ix = Index::new(&m);
        for f in 1..=4 {
            ix.append(1, f, 0).unwrap();
        }
        ix.truncate(3).unwrap();
        ix.check().unwrap();
        // the dead counter says 0 while slot 3 is marked
        let trim = word(&m.shm, H_IX_FLOOR);
        let good = trim.load(Relaxed);
        let (floor, _) = split_trim(good);
        trim.store(make_trim(floor, 0), Relaxed);
        assert!(matches!(ix.check(), Err(Error::Corrupt(_))));
        trim.store(good, Relaxed);
        // slot 0, under the newest live entry of page 1's chain, claims page 7
        let off = ix.entry_off(0).unwrap();
        m.pool.u64(off).unwrap().store(7, Relaxed);
        assert!(matches!(ix.check(), Err(Error::Corrupt(_))));
    }

    #[test]
    fn counters_are_exact_after_a_kill_at_any_store() {
        let page = |f: u64| (f * 5 % 7) as u32;
        let mut cases = 0;
        // (savepoint target, target of the killed rollback, target of the next writer's trim)
        for (savepoint, killed, trim) in [(30, 10, 10), (30, 10, 5), (30, 35, 20), (45, 48, 0)] {
            for k in 0.. {
                let (_f, m) = fresh("k.tshm");
                let ix = Index::new(&m);
                for f in 1..=40 {
                    ix.append(page(f), f, 0).unwrap();
                }
                ix.truncate(savepoint).unwrap();
                for f in 41..=60 {
                    ix.append(page(f), f, 0).unwrap();
                }
                let before = counts(&ix);
                if !stopped_after(Some(k), || ix.truncate(killed)) {
                    break; // k stores let it finish: every stop point was visited
                }
                cases += 1;
                // the next writer's trim, itself killed at each store in turn, then whole
                for k2 in [Some(0), Some(1), Some(3), Some(k / 2), None] {
                    stopped_after(k2, || ix.truncate(trim));
                }
                let (entries, dead, marks) = counts(&ix);
                assert_eq!(entries, before.0);
                assert_eq!(
                    dead, marks,
                    "killed after {k} stores ({savepoint}, {killed}, {trim})"
                );
                let live = (1..=60u64)
                    .filter(|f| (*f <= savepoint || *f > 40) && *f <= trim)
                    .count() as u64;
                assert_eq!(entries - dead, live, "killed after {k} stores");
                assert_eq!(ix.tail(), trim);
                for p in 0..7 {
                    let want = (1..=trim.min(60))
                        .rev()
                        .find(|f| page(*f) == p && (*f <= savepoint || *f > 40));
                    assert_eq!(ix.find(p, 1 << 40).unwrap(), want, "page {p} after {k}");
                }
                // and the index goes on: appends and a further rollback keep the counts exact
                for f in trim + 1..=trim + 10 {
                    ix.append(page(f), f, 0).unwrap();
                }
                ix.truncate(trim + 3).unwrap();
                let (_, dead, marks) = counts(&ix);
                assert_eq!(dead, marks);
            }
        }
        assert!(cases > 40, "{cases} stop points");
    }
}

/// Exhaustive interleavings of a joiner's [`validate`] against a writer appending, rolling
/// back and resetting, each a sequence of single stores in the order the writer performs them
/// (sequentially consistent memory; the Acquire/Release pairs give the same order for these
/// loads). The order of `validate` never reports a sound index as corrupt; the order it had
/// before (the count first, no generation check) does, in some interleaving.
#[cfg(test)]
mod validate_interleavings {
    #[derive(Clone, Copy, Default)]
    struct S {
        gen: u64,
        floor: u64,
        count: u64,
    }

    #[derive(Clone, Copy)]
    enum W {
        Append,
        Truncate,
        /// The reset's stores, in order.
        ResetTrim,
        ResetGen,
        ResetCount,
    }

    fn wstep(s: &mut S, w: W) {
        match w {
            W::Append => s.count += 1,
            W::Truncate => s.floor = s.count,
            W::ResetTrim => s.floor = 0,
            W::ResetGen => s.gen += 1,
            W::ResetCount => s.count = 0,
        }
    }

    /// The joiner's loads: `new` is the order of `validate`, else the count first.
    #[derive(Clone, Copy, Default)]
    struct J {
        tries: u8,
        pc: u8,
        g: u64,
        f: u64,
        c: u64,
        verdict: Option<bool>, // Some(true): sound
    }

    fn jstep(j: &mut J, s: &S, new: bool) {
        if new {
            match j.pc {
                0 => j.g = s.gen,
                1 => j.f = s.floor,
                2 => j.c = s.count,
                _ => {
                    if s.gen != j.g {
                        j.tries += 1;
                    } else if j.f <= j.c {
                        j.verdict = Some(true);
                    } else {
                        j.tries += 1;
                    }
                }
            }
            j.pc = (j.pc + 1) % 4;
        } else {
            match j.pc {
                0 => j.c = s.count,
                _ => {
                    j.f = s.floor;
                    if j.f <= j.c {
                        j.verdict = Some(true);
                    } else {
                        j.tries += 1;
                    }
                }
            }
            j.pc = (j.pc + 1) % 2;
        }
        if j.verdict.is_none() && j.tries == 3 {
            j.verdict = Some(false);
        }
    }

    fn explore(s: S, prog: &[W], j: J, new: bool, false_corrupt: &mut u64, runs: &mut u64) {
        if let Some(sound) = j.verdict {
            *runs += 1;
            *false_corrupt += !sound as u64;
            return;
        }
        let mut j2 = j;
        jstep(&mut j2, &s, new);
        explore(s, prog, j2, new, false_corrupt, runs);
        if let Some((w, rest)) = prog.split_first() {
            let mut s2 = s;
            wstep(&mut s2, *w);
            explore(s2, rest, j, new, false_corrupt, runs);
        }
    }

    fn run(new: bool) -> (u64, u64) {
        use W::*;
        let reset: &[W] = if new {
            &[ResetTrim, ResetGen, ResetCount]
        } else {
            &[ResetGen, ResetTrim, ResetCount]
        };
        let mut prog = vec![Append, Truncate, Append, Truncate];
        prog.extend_from_slice(reset);
        prog.extend_from_slice(&[Append, Append, Truncate, Append, Truncate, Append, Truncate]);
        let s = S {
            gen: 1,
            floor: 5,
            count: 5,
        };
        let (mut bad, mut runs) = (0, 0);
        explore(s, &prog, J::default(), new, &mut bad, &mut runs);
        (bad, runs)
    }

    #[test]
    fn joiners_never_see_a_moving_index_as_corrupt() {
        let (bad, runs) = run(true);
        assert_eq!(bad, 0, "{bad} of {runs} interleavings report corrupt");
        assert!(runs > 10_000, "{runs}");
        let (bad_before, _) = run(false);
        assert!(bad_before > 0, "the old order should fail somewhere");
    }
}

/// An append with a memo answers as one without it, whatever the sidecar holds. Two indexes
/// take the same appends and the same mutations of each word a memo relies on (the top table
/// words, the node words under them, the node allocator's end, the published units), then
/// have them put back; one appends with a memo, the other without. Every append's result, and
/// at the end every pool word, counter and lookup, must be the same in both.
#[cfg(test)]
mod append_memo {
    use super::killed_truncates::fresh;
    use super::*;

    #[derive(Clone, Copy, Debug)]
    enum Word {
        DirTop(u32),
        Mid(u32),
        BlkTop(u64),
        BlkNode(u64),
        Header(usize),
    }

    fn node_word(m: &Mapped, node: u32, i: u64) -> &AtomicU32 {
        m.pool.u32((node as u64 - 1) * PAGE + i * 4).unwrap()
    }

    /// Loads or stores (with `Some`) the word; returns what it held.
    fn poke(m: &Mapped, w: Word, v: Option<u64>) -> u64 {
        let w32 = |a: &AtomicU32| {
            let old = a.load(Relaxed) as u64;
            if let Some(v) = v {
                a.store(v as u32, Relaxed);
            }
            old
        };
        let dir_top = |page: u32| m.shm.u32(m.geom.dir_top() + (page >> 19) as usize * 4);
        let blk_top = |b: u64| m.shm.u32(m.geom.blk_top() + (b >> 10) as usize * 4);
        match w {
            Word::DirTop(page) => w32(dir_top(page)),
            Word::Mid(page) => {
                let mid = dir_top(page).load(Relaxed);
                w32(node_word(m, mid, ((page >> 9) & 1023) as u64))
            }
            Word::BlkTop(b) => w32(blk_top(b)),
            Word::BlkNode(b) => w32(node_word(m, blk_top(b).load(Relaxed), b & 1023)),
            Word::Header(off) => {
                let old = word(&m.shm, off).load(Relaxed);
                if let Some(v) = v {
                    word(&m.shm, off).store(v, Relaxed);
                }
                old
            }
        }
    }

    fn page(f: u64) -> u32 {
        [1, 600, 600_000, (f % 3000) as u32][(f % 4) as usize]
    }

    #[test]
    fn memo_appends_answer_as_walks_do_whatever_the_tables_hold() {
        let leaf_of_600 = |m: &Mapped| poke(m, Word::Mid(600), None);
        // (the word, its value meanwhile (None: another valid leaf), whether appends then fail)
        let cases: Vec<(Word, Option<u64>, bool)> = vec![
            (Word::DirTop(1), Some(0x7fff_ffff), true),
            (Word::DirTop(600_000), Some(0), false),
            (Word::Mid(1), Some(0x7fff_ffff), true),
            (Word::Mid(1), Some(1), true),
            (Word::Mid(1), None, false),
            (Word::BlkTop(1), Some(0x7fff_ffff), true),
            (Word::BlkTop(1), Some(0), false),
            (Word::BlkNode(1), Some(0x7fff_ffff), true),
            (Word::BlkNode(1), Some(0), false),
            (Word::Header(H_IX_NODE_END), Some(2), true),
            (Word::Header(H_IX_UNITS), Some(1), true),
        ];
        for (case, (w, v, fails)) in cases.into_iter().enumerate() {
            let (_fa, a) = fresh(&format!("memo-a-{case}.tshm"));
            let (_fb, b) = fresh(&format!("memo-b-{case}.tshm"));
            let memo = AppendMemo::default();
            let (ia, ib) = (Index::new(&a), Index::new(&b));
            let mut f = 0;
            let both = |n: u64, f: &mut u64| {
                let mut failed = 0;
                for _ in 0..n {
                    *f += 1;
                    // SAFETY: the memo is used with `a` only, which outlives it
                    let ra = unsafe { ia.append_with(&memo, page(*f), *f, 0) };
                    let rb = ib.append(page(*f), *f, 0);
                    assert_eq!(format!("{ra:?}"), format!("{rb:?}"), "{w:?} frame {f}");
                    if ra.is_err() {
                        *f -= 1;
                        failed += 1;
                    }
                }
                failed
            };
            assert_eq!(both(5000, &mut f), 0);
            let v = v.unwrap_or_else(|| leaf_of_600(&a));
            let old = [poke(&a, w, Some(v)), poke(&b, w, Some(v))];
            assert_eq!(old[0], old[1]);
            assert_eq!(both(20, &mut f) > 0, fails, "{w:?} set to {v}");
            poke(&a, w, Some(old[0]));
            poke(&b, w, Some(old[1]));
            assert_eq!(both(200, &mut f), 0, "{w:?} put back");
            let (sa, sb) = (ia.stats(), ib.stats());
            assert_eq!(sa, sb, "{w:?}");
            for off in (0..sa.pool_bytes).step_by(8) {
                let x = a.pool.u64(off).unwrap().load(Relaxed);
                assert_eq!(x, b.pool.u64(off).unwrap().load(Relaxed), "{w:?} at {off}");
            }
            for p in [1, 600, 600_000, 7, 2999] {
                let r = (ia.find(p, f).map_err(|e| e.to_string()), ib.find(p, f));
                assert_eq!(
                    format!("{:?}", r.0),
                    format!("{:?}", r.1.map_err(|e| e.to_string()))
                );
            }
        }
    }
}
