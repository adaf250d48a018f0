//! The writer and checkpointer roles: taking, waiting for, handing over and reclaiming them, and
//! their counters.
//!
//! Owns: header bytes 128..160 (owner records), 168..224 (role words, release counters, waiter
//! counts, tickets) and 640..768 (role counters), the waiter fields of the instance records
//! (+32..+96), and the lock bytes 1 and 2 of [`crate::layout`].
//!
//! Two strategies, fixed when the sidecar is created:
//!
//! **Shared memory (default).** The role word holds the holder's instance tag, 0 when free. An
//! uncontended acquire is one CAS `0 -> tag`, a release one CAS `tag -> 0`: no system call. A
//! holder's liveness is its instance's (the tag names an incarnation whose liveness byte is held
//! for the handle's life), so a killed holder is noticed by its waiters and the role taken over
//! by CAS from that exact tag: two reclaimers cannot both win, and a live holder is never
//! reclaimed.
//!
//! A waiter takes a ticket (arrival order), writes it into its own instance record, sets the
//! `ROLE_WAITERS` bit in the role word and sleeps on the futex word of its own record. A
//! release that finds the bit set hands the role over: it claims the oldest live waiter's ticket
//! by CAS (`ticket -> 0`), stores that waiter's tag (with the bit) into the role word and wakes
//! that waiter alone. A waiter leaves on time-out only by taking its own ticket back by the same
//! CAS, so a waiter that was chosen always gets the role. Finding no waiter, the releaser stores
//! 0 and then wakes every waiter registered meanwhile (a SeqCst fence after a waiter's ticket
//! and one after the releaser's 0: one of the two sides sees the other). Waiters sleep in slices
//! of about `WAIT_SLICE` (ending on a whole millisecond, see `SLICE_GRID_NS`): after a slice
//! without a wake each checks the holder's liveness, so a holder (or a chosen waiter) killed
//! with the role is detected within one slice; the waiter that takes the role over from the
//! dead hands it on in arrival order. `tests/loom_roles.rs` checks this under the C11 model.
//!
//! **Byte locks (the seed's).** The role is the exclusive lock on byte 1 or 2, taken without
//! waiting; a waiter sleeps on the role's release counter in slices of at most
//! `BYTELOCK_WAIT_SLICE` and retries the lock after each (a holder killed without bumping the
//! counter delays a waiter by one slice at most). Two system calls per acquire and release.
//!
//! Owner records (`pid << 32 | instance`, nonce) are written after the role is won and cleared
//! before it is given up; they are diagnostics, the role word or lock is the truth.
//!
//! **Counters.** Acquisitions, waits and wait times are written by the holder only (the role
//! serializes them), with plain loads and stores: exact and cheap. BUSY returns come from
//! handles that do not hold the role and are atomic adds.

use crate::error::{Error, Result};
use crate::layout::*;
use crate::lock::Kind;
use crate::node::Node;
use crate::region::Shm;
use crate::slots::{self, tag_alive, tshm_owner_info, Ident};
use std::sync::atomic::{fence, AtomicU32, AtomicU64, Ordering::*};
use std::time::{Duration, Instant};

/// Shortest futex sleep of a waiter for a shared-memory role before it checks that the holder is
/// alive; the sleep ends on the next whole millisecond after this ([`SLICE_GRID_NS`]), so a
/// killed holder is noticed within 2.5 ms (a check is one lock probe).
pub(crate) const WAIT_SLICE: Duration = Duration::from_micros(1500);
/// Longest futex sleep of a waiter for a byte-lock role before it retries the lock.
pub(crate) const BYTELOCK_WAIT_SLICE: Duration = Duration::from_millis(10);

/// The slice, or in a build with test hooks the test setting `TSHM_TEST_WAIT_SLICE_MS` (a long
/// slice proves that a waiter was woken by the release, not by its own retry).
fn wait_slice(default: Duration) -> Duration {
    static SLICE: std::sync::OnceLock<Option<Duration>> = std::sync::OnceLock::new();
    SLICE
        .get_or_init(|| {
            crate::testpoint::setting(c"TSHM_TEST_WAIT_SLICE_MS")
                .and_then(|v| v.parse().ok())
                .map(Duration::from_millis)
        })
        .unwrap_or(default)
}

/// The two exclusive roles.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Writer,
    Checkpointer,
}

impl Role {
    fn pick<T>(self, writer: T, ckpt: T) -> T {
        match self {
            Role::Writer => writer,
            Role::Checkpointer => ckpt,
        }
    }
    pub fn byte(self) -> u64 {
        self.pick(LOCK_WRITER, LOCK_CKPT)
    }
    pub(crate) fn id_off(self) -> usize {
        self.pick(H_WRITER_ID, H_CKPT_ID)
    }
    pub(crate) fn nonce_off(self) -> usize {
        self.id_off() + 8
    }
    pub(crate) fn word_off(self) -> usize {
        self.pick(H_WRITER_WORD, H_CKPT_WORD)
    }
    fn wake_off(self) -> usize {
        self.pick(H_WRITER_WAKE, H_CKPT_WAKE)
    }
    fn waiters_off(self) -> usize {
        self.pick(H_WRITER_WAITERS, H_CKPT_WAITERS)
    }
    fn ticket_off(self) -> usize {
        self.pick(H_WRITER_TICKET, H_CKPT_TICKET)
    }
    pub(crate) fn stats_off(self) -> usize {
        self.pick(H_WRITER_STATS, H_CKPT_STATS)
    }
    fn i_ticket(self) -> usize {
        self.pick(I_WRITER_TICKET, I_CKPT_TICKET)
    }
    fn i_wake(self) -> usize {
        self.pick(I_WRITER_WAKE, I_CKPT_WAKE)
    }
    fn i_acquires(self) -> usize {
        self.pick(I_WRITER_ACQUIRES, I_CKPT_ACQUIRES)
    }
    fn i_wait_ns(self) -> usize {
        self.pick(I_WRITER_WAIT_NS, I_CKPT_WAIT_NS)
    }
    pub fn name(self) -> &'static str {
        self.pick("writer", "checkpointer")
    }
    fn point(self, writer: &'static str, ckpt: &'static str) -> &'static str {
        self.pick(writer, ckpt)
    }
}

/// Where the end of a full wait slice falls: on a whole millisecond of `CLOCK_MONOTONIC`. The
/// kernel's periodic tick has a timer event there already, so a sleeping waiter's time-out adds
/// no timer programming of its own (on a virtual machine each is an exit to the hypervisor; on
/// this project's 2-core VM an unaligned 2 ms time-out made a handoff about 1.5 us slower).
const SLICE_GRID_NS: u64 = 1_000_000;

/// Sleeps while `word` holds `expected`, for up to `dur`; `on_grid`: a full slice, whose end is
/// rounded up to [`SLICE_GRID_NS`] (a deadline's nap is not rounded).
fn futex_wait(word: &AtomicU32, expected: u32, dur: Duration, on_grid: bool) {
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: writes the current time into `now`.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut now) };
    let mut end = (now.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(now.tv_nsec as u64)
        .saturating_add(dur.as_nanos().min(u64::MAX as u128) as u64);
    if on_grid {
        end = end.div_ceil(SLICE_GRID_NS).saturating_mul(SLICE_GRID_NS);
    }
    let ts = libc::timespec {
        tv_sec: (end / 1_000_000_000).min(libc::time_t::MAX as u64) as libc::time_t,
        tv_nsec: (end % 1_000_000_000) as libc::c_long,
    };
    // SAFETY: word is a live, aligned u32 in a MAP_SHARED mapping; a wait without the private
    // flag keys on the file page, so other processes' wakes reach it. FUTEX_WAIT_BITSET takes
    // an absolute CLOCK_MONOTONIC time-out.
    unsafe {
        libc::syscall(
            libc::SYS_futex,
            word.as_ptr(),
            libc::FUTEX_WAIT_BITSET,
            expected,
            &ts as *const libc::timespec,
            std::ptr::null::<u32>(),
            libc::FUTEX_BITSET_MATCH_ANY,
        );
    }
}

fn futex_wake(word: &AtomicU32, n: i32) {
    // SAFETY: as in futex_wait.
    unsafe {
        libc::syscall(libc::SYS_futex, word.as_ptr(), libc::FUTEX_WAKE, n);
    }
}

/// Adds to a counter only the role holder writes (a plain load and store: exact, no atomic
/// read-modify-write on the path).
fn bump(w: &AtomicU64, by: u64) {
    w.store(w.load(Relaxed).wrapping_add(by), Relaxed);
}

/// The owner record of a role, as a message fragment ("pid 123 (instance 4)").
fn describe_owner(id: u64) -> String {
    if id == 0 {
        "another handle (owner record not yet written)".into()
    } else {
        format!("pid {} (instance {})", id >> 32, id as u32)
    }
}

fn busy(shm: &Shm, role: Role) -> Result<()> {
    shm.u64(role.stats_off() + ROLE_STAT_BUSY)
        .fetch_add(1, Relaxed);
    let holder = shm.u64(role.id_off()).load(Acquire);
    Err(Error::Busy(format!(
        "the {} role is held by {}",
        role.name(),
        describe_owner(holder)
    )))
}

/// The header page as words: one bounds check, after which the constant offsets of this module
/// index it without any.
#[inline(always)]
fn header(shm: &Shm) -> &[AtomicU64; HEADER_WORDS] {
    shm.u64s::<HEADER_WORDS>(0)
}

/// The holder's bookkeeping once it has the role: owner record and counters.
#[inline(always)]
fn won(shm: &Shm, geom: &Geometry, id: &Ident, role: Role, waited: Option<Instant>) {
    let h = header(shm);
    h[role.nonce_off() / 8].store(id.nonce, Relaxed);
    h[role.id_off() / 8].store(id.owner_id(), Release);
    let rec = shm.u64s::<{ INSTANCE_BYTES as usize / 8 }>(geom.instance(id.instance));
    bump(&h[(role.stats_off() + ROLE_STAT_ACQUIRES) / 8], 1);
    bump(&rec[role.i_acquires() / 8], 1);
    if let Some(t0) = waited {
        count_wait(h, rec, role, t0);
    }
}

/// The wait counters of a holder that waited since `t0`.
#[inline(never)]
fn count_wait(h: &[AtomicU64; HEADER_WORDS], rec: &[AtomicU64], role: Role, t0: Instant) {
    let st = &h[role.stats_off() / 8..];
    let ns = t0.elapsed().as_nanos().min(u64::MAX as u128) as u64;
    bump(&st[ROLE_STAT_WAITED / 8], 1);
    bump(&st[ROLE_STAT_WAIT_NS / 8], ns);
    bump(&rec[role.i_wait_ns() / 8], ns);
    let max = &st[ROLE_STAT_MAX_WAIT_NS / 8];
    if ns > max.load(Relaxed) {
        max.store(ns, Relaxed);
    }
}

/// What the single attempt of [`take`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Take {
    /// The role is this handle's now.
    Taken,
    /// The role word holds this handle's own tag: another of its threads holds, takes or
    /// releases the role.
    Mine,
    /// Held by another handle (or a byte-lock role, which [`take`] does not try).
    Other,
}

/// The uncontended acquire: one CAS `0 -> tag` on a shared-memory role word, nothing else that
/// can block. The handle's threads need no other guard on this path: the role word itself tells
/// them apart (each thread that wins it has seen it free; a sibling sees the handle's tag).
#[inline(always)]
pub fn take(node: &Node, id: &Ident, role: Role) -> Result<Take> {
    let m = node.mapped()?;
    if m.geom.role_strategy == ROLES_BYTELOCK {
        return Ok(Take::Other);
    }
    let word = &header(&m.shm)[role.word_off() / 8];
    let tag = id.tag();
    match word.compare_exchange(0, tag, Acquire, Relaxed) {
        Ok(_) => {
            crate::testpoint::hit(role.point("writer_claim", "ckpt_claim"));
            won(&m.shm, &m.geom, id, role, None);
            Ok(Take::Taken)
        }
        Err(w) if w & !ROLE_WAITERS == tag => Ok(Take::Mine),
        Err(_) => Ok(Take::Other),
    }
}

fn sibling_holds(role: Role) -> Error {
    Error::Misuse(format!(
        "another thread of this handle holds, takes or releases the {} role",
        role.name()
    ))
}

/// The caller's say, while a handle waits for a role, in whether to go on waiting: asked
/// before every sleep (so when the wait begins, after every wake-up and at least once a slice).
pub type Keep<'a> = Option<&'a mut dyn FnMut() -> bool>;

fn go_on(keep: &mut Keep) -> bool {
    keep.as_mut().is_none_or(|f| f())
}

fn gave_up(shm: &Shm, role: Role) -> Result<()> {
    shm.u64(role.stats_off() + ROLE_STAT_BUSY)
        .fetch_add(1, Relaxed);
    Err(Error::Busy(format!(
        "stopped waiting for the {} role: the caller's keep-waiting check said so",
        role.name()
    )))
}

/// Takes `role` for `id`. `timeout_ms == 0` tries once; otherwise waits up to that long, or
/// until `keep` says stop. At most one thread of a handle may be here at a time (the caller
/// guards it); others of its threads may meanwhile try [`take`].
#[inline(never)]
pub fn acquire(node: &Node, id: &Ident, role: Role, timeout_ms: u32, keep: Keep) -> Result<()> {
    let m = node.mapped()?;
    if m.geom.role_strategy == ROLES_BYTELOCK {
        return bytelock_acquire(node, id, role, timeout_ms, keep);
    }
    let word = &header(&m.shm)[role.word_off() / 8];
    let tag = id.tag();
    let w = match word.compare_exchange(0, tag, Acquire, Relaxed) {
        Ok(_) => {
            crate::testpoint::hit(role.point("writer_claim", "ckpt_claim"));
            won(&m.shm, &m.geom, id, role, None);
            return Ok(());
        }
        Err(w) => w,
    };
    // Held: by a live handle, or by one that died with it (taken over, waiters bit kept).
    let holder = w & !ROLE_WAITERS;
    if holder == tag {
        return Err(sibling_holds(role));
    }
    if holder != 0
        && !tag_alive(node, holder)?
        && word
            .compare_exchange(w, tag | (w & ROLE_WAITERS), AcqRel, Relaxed)
            .is_ok()
    {
        crate::testpoint::hit(role.point("writer_reclaim", "ckpt_reclaim"));
        bump(m.shm.u64(role.stats_off() + ROLE_STAT_RECLAIMS), 1);
        won(&m.shm, &m.geom, id, role, None);
        return Ok(());
    }
    if timeout_ms == 0 {
        return busy(&m.shm, role);
    }
    wait_for(node, id, role, Instant::now(), timeout_ms, keep)
}

/// The slow path of a shared-memory acquire: queue by ticket, sleep until handed the role (or
/// until the role is free, or its holder dead), give up at the deadline.
fn wait_for(
    node: &Node,
    id: &Ident,
    role: Role,
    t0: Instant,
    timeout_ms: u32,
    mut keep: Keep,
) -> Result<()> {
    let m = node.mapped()?;
    let (shm, geom) = (&m.shm, &m.geom);
    let word = shm.u64(role.word_off());
    let tag = id.tag();
    let rec = geom.instance(id.instance);
    let mine = shm.u64(rec + role.i_ticket());
    let wake = shm.u32(rec + role.i_wake());
    let ticket = shm
        .u64(role.ticket_off())
        .fetch_add(1, AcqRel)
        .wrapping_add(1)
        .max(1);
    // The record holds one ticket per role: a second waiting thread of the handle is refused.
    if mine.compare_exchange(0, ticket, SeqCst, Relaxed).is_err() {
        return Err(sibling_holds(role));
    }
    // The ticket before any look at the role word: a release storing 0 and then scanning the
    // queue (its own fence between) sees this ticket, or this waiter sees the 0.
    fence(SeqCst);
    let deadline = t0 + Duration::from_millis(timeout_ms as u64);
    let slice = wait_slice(WAIT_SLICE);
    // Chosen: a releaser took our ticket and is handing us the role; we may no longer leave.
    let mut chosen = false;
    loop {
        let seen = wake.load(SeqCst);
        let w = word.load(SeqCst);
        if w & !ROLE_WAITERS == tag {
            if mine.load(SeqCst) != ticket {
                // handed over (the releaser claimed our ticket)
                won(shm, geom, id, role, Some(t0));
                return Ok(());
            }
            // Our tag, our ticket unclaimed: another thread of this handle took the role.
            if mine.compare_exchange(ticket, 0, SeqCst, Relaxed).is_ok() {
                return Err(sibling_holds(role));
            }
            chosen = true; // handed to us meanwhile
            continue;
        }
        if w == 0 {
            // Free and nobody was handed it: take it. Keep the waiters bit, others may queue.
            if word
                .compare_exchange(0, tag | ROLE_WAITERS, AcqRel, Relaxed)
                .is_ok()
            {
                mine.store(0, SeqCst);
                crate::testpoint::hit(role.point("writer_claim", "ckpt_claim"));
                won(shm, geom, id, role, Some(t0));
                return Ok(());
            }
            continue;
        }
        if w & ROLE_WAITERS == 0
            && word
                .compare_exchange(w, w | ROLE_WAITERS, SeqCst, Relaxed)
                .is_err()
        {
            continue;
        }
        let now = Instant::now();
        let timed_out = now >= deadline;
        if !chosen && (timed_out || !go_on(&mut keep)) {
            if mine.compare_exchange(ticket, 0, SeqCst, Relaxed).is_ok() {
                return if timed_out {
                    busy(shm, role)
                } else {
                    gave_up(shm, role)
                };
            }
            chosen = true; // the role is on its way
            continue;
        }
        let nap = if chosen {
            slice
        } else {
            (deadline - now).min(slice)
        };
        futex_wait(wake, seen, nap, nap == slice);
        if wake.load(SeqCst) != seen {
            continue;
        }
        // A slice without a wake: is the holder alive?
        let w = word.load(SeqCst);
        let holder = w & !ROLE_WAITERS;
        if w == 0 || holder == tag {
            continue;
        }
        match tag_alive(node, holder) {
            Ok(true) => continue,
            Ok(false) => {}
            // Leave the queue before failing, or a release would hand the role to a handle
            // that no longer waits for it; a chosen waiter stays for the role.
            Err(e) if !chosen && mine.compare_exchange(ticket, 0, SeqCst, Relaxed).is_ok() => {
                return Err(e)
            }
            Err(_) => {
                chosen = true;
                continue;
            }
        }
        if word
            .compare_exchange(w, tag | ROLE_WAITERS, AcqRel, Relaxed)
            .is_err()
        {
            continue; // someone else took it over (or it was handed on)
        }
        crate::testpoint::hit(role.point("writer_reclaim", "ckpt_reclaim"));
        bump(shm.u64(role.stats_off() + ROLE_STAT_RECLAIMS), 1);
        // Holding it now; the longest waiter gets it, which may be this one (always when it
        // was chosen: its ticket is gone, and it was the longest then).
        while !chosen {
            match oldest_waiter(node, role)? {
                Some((i, t)) if i != id.instance => {
                    if hand_over(node, role, i, t)?.is_some() {
                        break;
                    }
                }
                _ => {
                    mine.store(0, SeqCst);
                    chosen = true;
                }
            }
        }
        if word.load(SeqCst) & !ROLE_WAITERS == tag {
            won(shm, geom, id, role, Some(t0));
            return Ok(());
        }
        // passed on to an older waiter; still queued
    }
}

/// The waiter with the smallest ticket, as (instance, ticket); dead or alive (see [`release`]).
fn oldest_waiter(node: &Node, role: Role) -> Result<Option<(u32, u64)>> {
    let m = node.mapped()?;
    let hwm = m
        .shm
        .u32(H_INSTANCE_HWM)
        .load(Acquire)
        .min(m.geom.instances);
    let mut best: Option<(u32, u64)> = None;
    for i in 0..hwm {
        let t = m.shm.u64(m.geom.instance(i) + role.i_ticket()).load(SeqCst);
        if t != 0 && best.is_none_or(|(_, b)| t < b) {
            best = Some((i, t));
        }
    }
    Ok(best)
}

/// Hands the held role to waiter `i` (ticket `t`): claims its ticket, stores its tag, wakes it.
/// Returns the tag stored; `None` when the waiter left the queue meanwhile.
fn hand_over(node: &Node, role: Role, i: u32, t: u64) -> Result<Option<u64>> {
    let m = node.mapped()?;
    let rec = m.geom.instance(i);
    // The generation before the ticket: an instance record taken over meanwhile has its ticket
    // cleared before its generation moves, so a claimed ticket proves this generation waits.
    let generation = m.shm.u64(rec + I_GENERATION).load(SeqCst);
    if m.shm
        .u64(rec + role.i_ticket())
        .compare_exchange(t, 0, SeqCst, Relaxed)
        .is_err()
    {
        return Ok(None);
    }
    bump(m.shm.u64(role.stats_off() + ROLE_STAT_HANDOFFS), 1);
    m.shm.u64(role.id_off()).store(0, Relaxed);
    let theirs = make_tag(i, generation);
    m.shm
        .u64(role.word_off())
        .store(theirs | ROLE_WAITERS, SeqCst);
    let wake = m.shm.u32(rec + role.i_wake());
    wake.fetch_add(1, SeqCst);
    futex_wake(wake, 1);
    Ok(Some(theirs))
}

/// Releases `role` held by `id`: clears the owner record, then frees the role or hands it to
/// the longest waiter.
#[inline(always)]
pub fn release(node: &Node, id: &Ident, role: Role) -> Result<()> {
    let m = node.mapped()?;
    if m.geom.role_strategy == ROLES_BYTELOCK {
        return bytelock_release(node, id, role);
    }
    let h = header(&m.shm);
    let tag = id.tag();
    h[role.id_off() / 8].store(0, Release);
    h[role.nonce_off() / 8].store(0, Relaxed);
    crate::testpoint::hit(role.point("writer_release", "ckpt_release"));
    match h[role.word_off() / 8].compare_exchange(tag, 0, Release, Relaxed) {
        Ok(_) => Ok(()),
        Err(w) if w == tag | ROLE_WAITERS => hand_on(node, role),
        Err(w) => Err(Error::Corrupt(format!(
            "the {} role word holds {w:#x} instead of its live holder's tag {tag:#x}",
            role.name()
        ))),
    }
}

/// A release that found waiters: hands the role to the oldest, or frees it and wakes them all.
#[inline(never)]
fn hand_on(node: &Node, role: Role) -> Result<()> {
    let m = node.mapped()?;
    let word = m.shm.u64(role.word_off());
    // No liveness probe here: a system call between the wake and the waiter's run delays it. A
    // waiter killed while it waited holds the role dead, and is taken over like any dead
    // holder (by the next waiter's check after a slice, or at once by the next acquire).
    // The release's CAS read the waiters bit without ordering; the fence makes the ticket of
    // the waiter that set the bit (stored before it) visible to the scan.
    fence(Acquire);
    while let Some((i, t)) = oldest_waiter(node, role)? {
        if hand_over(node, role, i, t)?.is_some() {
            return Ok(());
        }
    }
    word.store(0, SeqCst);
    // A waiter that queued after the scan may sleep on the bit just dropped: wake them all. The
    // fence pairs with the one after a waiter's ticket: this scan sees it, or it sees the 0.
    fence(SeqCst);
    let hwm = m
        .shm
        .u32(H_INSTANCE_HWM)
        .load(Acquire)
        .min(m.geom.instances);
    for i in 0..hwm {
        let rec = m.geom.instance(i);
        if m.shm.u64(rec + role.i_ticket()).load(SeqCst) != 0 {
            let wake = m.shm.u32(rec + role.i_wake());
            wake.fetch_add(1, SeqCst);
            futex_wake(wake, i32::MAX);
        }
    }
    Ok(())
}

/// Who holds role number `role` (`tshm_owner`: 0 lifetime, 1 writer, 2 checkpointer, 3 + i
/// reader slot i; all but the two roles are [`slots::owner`]'s).
pub fn owner(node: &Node, role: u32) -> Result<tshm_owner_info> {
    let r = match role {
        1 => Role::Writer,
        2 => Role::Checkpointer,
        _ => return slots::owner(node, role),
    };
    let m = node.mapped()?;
    let [id, nonce] = m.shm.u64s::<2>(r.id_off());
    let id = id.load(Acquire);
    let alive = holder_alive(node, r)?;
    Ok(tshm_owner_info {
        id,
        nonce: nonce.load(Relaxed),
        frame: 0,
        pid: (id >> 32) as u32,
        instance: id as u32,
        held: (alive || id != 0) as i32,
        alive: alive as i32,
    })
}

/// Whether `role` is held by a live handle now.
fn holder_alive(node: &Node, role: Role) -> Result<bool> {
    let m = node.mapped()?;
    if m.geom.role_strategy == ROLES_BYTELOCK {
        return node.held_anywhere(role.byte());
    }
    let w = m.shm.u64(role.word_off()).load(Acquire) & !ROLE_WAITERS;
    Ok(w != 0 && tag_alive(node, w)?)
}

fn bytelock_acquire(
    node: &Node,
    id: &Ident,
    role: Role,
    timeout_ms: u32,
    mut keep: Keep,
) -> Result<()> {
    let m = node.mapped()?;
    let take = |waited: Option<Instant>| -> Result<bool> {
        if !node.try_lock(id.hid, role.byte(), Kind::Exclusive)? {
            return Ok(false);
        }
        crate::testpoint::hit(role.point("writer_claim", "ckpt_claim"));
        // An owner record left behind: its holder died with the role.
        if m.shm.u64(role.id_off()).load(Acquire) != 0 {
            bump(m.shm.u64(role.stats_off() + ROLE_STAT_RECLAIMS), 1);
        }
        won(&m.shm, &m.geom, id, role, waited);
        Ok(true)
    };
    if take(None)? {
        return Ok(());
    }
    if timeout_ms == 0 {
        return busy(&m.shm, role);
    }
    // Announce the wait before reading the counter: a releaser that sees no waiter bumped the
    // counter before this load (SeqCst), so the futex wait below returns at once.
    let t0 = Instant::now();
    let wake = m.shm.u32(role.wake_off());
    let waiters = m.shm.u32(role.waiters_off());
    waiters.fetch_add(1, SeqCst);
    let deadline = t0 + Duration::from_millis(timeout_ms as u64);
    let r = loop {
        let seen = wake.load(SeqCst);
        match take(Some(t0)) {
            Ok(true) => break Ok(()),
            Ok(false) => {}
            Err(e) => break Err(e),
        }
        let now = Instant::now();
        if now >= deadline {
            break busy(&m.shm, role);
        }
        if !go_on(&mut keep) {
            break gave_up(&m.shm, role);
        }
        let slice = wait_slice(BYTELOCK_WAIT_SLICE);
        let nap = (deadline - now).min(slice);
        futex_wait(wake, seen, nap, nap == slice);
    };
    waiters.fetch_sub(1, SeqCst);
    r
}

/// Clears the owner record, drops the lock, then wakes waiters (the syscall only when some
/// handle announced a wait; a waiter that died leaves the count high, which costs a wake).
fn bytelock_release(node: &Node, id: &Ident, role: Role) -> Result<()> {
    let m = node.mapped()?;
    m.shm.u64(role.id_off()).store(0, Release);
    m.shm.u64(role.nonce_off()).store(0, Relaxed);
    crate::testpoint::hit(role.point("writer_release", "ckpt_release"));
    node.unlock(id.hid, role.byte())?;
    let wake = m.shm.u32(role.wake_off());
    wake.fetch_add(1, SeqCst);
    if m.shm.u32(role.waiters_off()).load(SeqCst) != 0 {
        futex_wake(wake, i32::MAX);
    }
    Ok(())
}

/// Clears every role word, owner record and waiter field: only for a process provably alone
/// (see [`crate::slots::reset_all`]).
pub fn reset_all(shm: &Shm, geom: &Geometry) {
    for off in [
        H_WRITER_ID,
        H_WRITER_NONCE,
        H_CKPT_ID,
        H_CKPT_NONCE,
        H_WRITER_WORD,
        H_CKPT_WORD,
    ] {
        shm.u64(off).store(0, Relaxed);
    }
    // A waiter killed while waiting never took itself off the count; alone, nobody waits.
    for off in [H_WRITER_WAITERS, H_CKPT_WAITERS] {
        shm.u32(off).store(0, Relaxed);
    }
    for i in 0..geom.instances {
        for off in [I_WRITER_TICKET, I_CKPT_TICKET] {
            shm.u64(geom.instance(i) + off).store(0, Relaxed);
        }
    }
}
