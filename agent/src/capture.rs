//! Where a task waits, whatever it waits on: the sampling waker.
//!
//! A leaf future (a socket read, a timer, a lock, any library's channel) registers the
//! task's waker inside its own `poll`: it clones `cx.waker()` (or compares it with
//! `will_wake` and clones it when it differs). So on a *sampled* poll the task wrapper
//! hands its future a [`Sampler`]'s waker instead of the runtime's. Its `clone` runs inside
//! the leaf's `poll`, with the whole await chain down to the leaf on the stack: that is
//! where the chain is captured. It returns a clone of the runtime's own waker, so the leaf
//! stores that and later wakes cost nothing extra. `wake_by_ref` (a future waking itself:
//! `yield_now`, an exhausted cooperative budget) is forwarded and noted. Unsampled polls
//! get the runtime's waker untouched.
//!
//! - `will_wake`: the sampler's waker never "will wake" like the runtime's (its vtable
//!   differs), so a leaf that skips the clone when the waker is unchanged still clones on
//!   a sampled poll.
//! - A leaf that never registers anything returns Pending with no clone: on a task's
//!   first poll nothing can wake it then ([`wire::Op::Pending`]); on a later poll it may
//!   hold a waker from an unsampled poll ([`wire::Op::Uncaptured`]).
//! - `select!`/`join!`: every leaf clones; up to [`MAX_LEAVES`] chains are kept.
//!
//! # Cost
//!
//! Unwinding a stack costs microseconds, so captures are cached per thread, keyed by
//! (spawn site, stack depth of the clone below the task's poll frame, clone number): tasks
//! of a site that wait at the same place reach the same depth, and re-use the capture for
//! [`RESAMPLE_MS`]. A key found to stand for two different chains (two await points at the
//! same depth) is marked ambiguous and captured every time, within the budget. A key seen
//! for the first time is always captured (their number is bounded by the program's code);
//! re-captures are limited per thread by a token bucket ([`BUDGET_PER_SEC`], burst
//! [`BUDGET_BURST`]), past which a wait is recorded as assumed from the key's last
//! capture, never guessed silently. Nothing here allocates on the steady path.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU8, Ordering::Relaxed};
use std::sync::Mutex;
use std::task::{RawWaker, RawWakerVTable, Waker};

use foldhash::fast::FixedState;

use crate::clock;
use crate::registry::{lock, registry};
use crate::stack::RESAMPLE_MS;
use crate::wire::{Op, StackId};

/// Chains kept from one poll (the leaves of a `select!`/`join!`).
pub(crate) const MAX_LEAVES: usize = 4;
/// Unwinds per second and thread, steady state.
pub(crate) const BUDGET_PER_SEC: u32 = 200;
/// Unwinds a thread may take at once.
pub(crate) const BUDGET_BURST: u32 = 64;
/// How long a key stays ambiguous once two chains were seen under it.
const AMBIGUOUS_MS: u32 = 60_000;
/// Entries of a thread's capture cache before it is cleared.
const CACHE_CAP: usize = 4096;
/// Marks a wait key that names several leaves (an interned combination).
const COMBO: u32 = 1 << 31;

/// The waker a sampled poll hands its future, and what it saw.
pub(crate) struct Sampler {
    inner: *const Waker,
    /// An address inside the task's poll frame: captures stop there, and depths are
    /// measured from it.
    frame: usize,
    site: usize,
    clones: AtomicU8,
    woke: AtomicBool,
    leaves: [AtomicU32; MAX_LEAVES],
    /// Per leaf: captured (true) or assumed from a cached capture (false).
    seen: [AtomicBool; MAX_LEAVES],
}

static VTABLE: RawWakerVTable = RawWakerVTable::new(clone, wake, wake_by_ref, drop_waker);

unsafe fn clone(data: *const ()) -> RawWaker {
    // SAFETY: `data` is the `Sampler` of a poll in progress (see `Sampler::waker`): the
    // waker it backs is only reachable through that poll's `Context`.
    let s = unsafe { &*(data as *const Sampler) };
    s.on_clone();
    // SAFETY: `inner` is the runtime's waker, borrowed for the same poll.
    let w = ManuallyDrop::new(unsafe { &*s.inner }.clone());
    RawWaker::new(w.data(), w.vtable())
}

unsafe fn wake(data: *const ()) {
    // SAFETY: as in `clone`; nothing is owned, so waking by value is waking by reference.
    unsafe { wake_by_ref(data) }
}

unsafe fn wake_by_ref(data: *const ()) {
    // SAFETY: as in `clone`.
    let s = unsafe { &*(data as *const Sampler) };
    s.woke.store(true, Relaxed);
    // SAFETY: as in `clone`.
    unsafe { &*s.inner }.wake_by_ref();
}

unsafe fn drop_waker(_: *const ()) {}

impl Sampler {
    pub fn new(inner: &Waker, frame: usize, site: usize) -> Sampler {
        Sampler {
            inner,
            frame,
            site,
            clones: AtomicU8::new(0),
            woke: AtomicBool::new(false),
            leaves: Default::default(),
            seen: Default::default(),
        }
    }

    /// The waker to poll with. It must not outlive `self`, and `self` must not move while
    /// it lives: it is only handed out by reference, through a `Context` of one poll.
    pub fn waker(&self) -> ManuallyDrop<Waker> {
        let raw = RawWaker::new(self as *const Sampler as *const (), &VTABLE);
        // SAFETY: the vtable's functions uphold the `RawWaker` contract for a waker that
        // borrows `self` (clones are the runtime's own wakers; drop does nothing).
        ManuallyDrop::new(unsafe { Waker::from_raw(raw) })
    }

    #[inline(never)]
    fn on_clone(&self) {
        let n = self.clones.fetch_add(1, Relaxed).min(u8::MAX - 1);
        let Some(slot) = self.leaves.get(n as usize) else {
            return;
        };
        let marker = 0u8;
        let here = std::hint::black_box(&marker) as *const u8 as usize;
        let depth = self.frame.wrapping_sub(here) as u32;
        let (stack, seen) = lookup((self.site, depth, n), self.frame);
        slot.store(stack, Relaxed);
        if let Some(s) = self.seen.get(n as usize) {
            s.store(seen, Relaxed);
        }
    }

    /// What the poll showed, as the op and key of a poll-scoped wait (None: the key is the
    /// task's root future), `first` being whether this was the task's first poll. The
    /// bool is true when the place was captured in this poll.
    pub fn outcome(&self, first: bool) -> (Op, Option<u32>, bool) {
        let n = (self.clones.load(Relaxed) as usize).min(MAX_LEAVES);
        if self.woke.load(Relaxed) {
            return (Op::Yield, None, true);
        }
        if n == 0 {
            return if first {
                (Op::Pending, None, true)
            } else {
                (Op::Uncaptured, None, false)
            };
        }
        let mut leaves = [0u32; MAX_LEAVES];
        let mut seen = true;
        for ((out, leaf), s) in leaves.iter_mut().zip(&self.leaves).zip(&self.seen).take(n) {
            *out = leaf.load(Relaxed);
            seen &= s.load(Relaxed);
        }
        let leaves = &leaves[..n];
        if leaves.iter().all(|&l| l == 0) {
            return (Op::Uncaptured, None, false);
        }
        (Op::Wait, Some(combine(leaves)), seen)
    }
}

/// Whether `w` is a sampler's waker (a task polled inside another task's sampled poll).
#[inline]
pub(crate) fn is_sampler(w: &Waker) -> bool {
    std::ptr::eq(w.vtable(), &VTABLE)
}

// ---------------------------------------------------------------------------------------
// The per-thread capture cache and budget

#[derive(Clone, Copy)]
struct Entry {
    /// StackId + 1 (0: none).
    stack: u32,
    at: u32,
    /// Agent ms (truncated) until which the key counts as ambiguous (0: never was).
    ambiguous_until: u32,
}

type Key = (usize, u32, u8);

thread_local! {
    static CACHE: RefCell<HashMap<Key, Entry, FixedState>> =
        RefCell::new(HashMap::with_hasher(FixedState::default()));
    /// (agent ms of the last refill, tokens).
    static BUDGET: Cell<(u32, u32)> = const { Cell::new((0, BUDGET_BURST)) };
}

/// The chain of a wait at `key`, and whether it was captured for this wait (false: taken
/// from an earlier capture, the budget being spent).
fn lookup(key: Key, frame: usize) -> (u32, bool) {
    let now = clock::cached_now_ms() as u32;
    let cached = CACHE
        .try_with(|c| c.borrow().get(&key).copied())
        .ok()
        .flatten();
    let fresh = |e: &Entry| now.wrapping_sub(e.at) < RESAMPLE_MS as u32 && !is_ambiguous(e, now);
    match cached {
        Some(e) if fresh(&e) => return (e.stack, true),
        // A place never seen is always captured (their number is bounded by the program's
        // code); re-captures of known places are what the budget limits.
        Some(e) if !take_budget() => return (e.stack, false),
        _ => {}
    }
    let stack = registry().stacks().capture_to(frame).map_or(0, |id| id + 1);
    let ambiguous_until = match cached {
        Some(e) if e.stack != stack && e.stack != 0 => now.wrapping_add(AMBIGUOUS_MS),
        Some(e) if is_ambiguous(&e, now) => e.ambiguous_until,
        _ => now.wrapping_sub(1),
    };
    let _ = CACHE.try_with(|c| {
        let mut c = c.borrow_mut();
        if c.len() >= CACHE_CAP {
            c.clear();
        }
        c.insert(
            key,
            Entry {
                stack,
                at: now,
                ambiguous_until,
            },
        );
    });
    (stack, true)
}

fn is_ambiguous(e: &Entry, now: u32) -> bool {
    now.wrapping_sub(e.ambiguous_until) >= u32::MAX / 2
}

/// Takes one unwind from this thread's budget; false when it is spent.
pub(crate) fn take_budget() -> bool {
    BUDGET
        .try_with(|b| {
            let (last, tokens) = b.get();
            let now = clock::cached_now_ms() as u32;
            let refill = now.wrapping_sub(last).min(60_000) * BUDGET_PER_SEC / 1000;
            let (last, tokens) = if refill > 0 {
                (now, (tokens + refill).min(BUDGET_BURST))
            } else {
                (last, tokens)
            };
            if tokens == 0 {
                b.set((last, 0));
                return false;
            }
            b.set((last, tokens - 1));
            true
        })
        .unwrap_or(false)
}

// ---------------------------------------------------------------------------------------
// Wait keys

/// Interned combinations of leaves (several chains from one poll).
#[derive(Default)]
struct Combos {
    ids: HashMap<Vec<u32>, u32>,
    defs: Vec<Vec<u32>>,
}

static COMBOS: Mutex<Option<Combos>> = Mutex::new(None);
/// Most combinations interned; past it a combination keeps its first leaf only.
const MAX_COMBOS: usize = 1 << 16;

/// The key of a wait on `leaves` (StackId + 1 each, 0 for a leaf not captured): the one
/// leaf's stack, or an interned combination.
fn combine(leaves: &[u32]) -> u32 {
    let kept: Vec<u32> = leaves.iter().copied().filter(|&l| l != 0).collect();
    match kept.as_slice() {
        [] => 0,
        [one] => *one & !COMBO,
        many => {
            let mut combos = lock(&COMBOS);
            let c = combos.get_or_insert_with(Combos::default);
            if let Some(id) = c.ids.get(many) {
                return *id | COMBO;
            }
            if c.defs.len() >= MAX_COMBOS {
                return many[0] & !COMBO;
            }
            let id = c.defs.len() as u32;
            c.defs.push(many.to_vec());
            c.ids.insert(many.to_vec(), id);
            id | COMBO
        }
    }
}

/// The stacks of a poll-scoped wait key.
pub(crate) fn stacks_of(key: u32) -> Vec<StackId> {
    if key & COMBO != 0 {
        let combos = lock(&COMBOS);
        return combos
            .as_ref()
            .and_then(|c| c.defs.get((key & !COMBO) as usize))
            .map(|d| d.iter().map(|s| s - 1).collect())
            .unwrap_or_default();
    }
    key.checked_sub(1).into_iter().collect()
}

thread_local! {
    static ROOTS: RefCell<HashMap<usize, u32, FixedState>> =
        RefCell::new(HashMap::with_hasher(FixedState::default()));
}

/// StackId + 1 of a one-frame stack naming the function at `addr` (a task's root future's
/// `poll`), 0 when none can be made. The address is stored + 1, as a return address
/// would be, so the symbolizer's "return address - 1" lands on the function itself.
pub(crate) fn root_stack(addr: usize) -> u32 {
    if let Ok(Some(id)) = ROOTS.try_with(|r| r.borrow().get(&addr).copied()) {
        return id;
    }
    let id = registry()
        .stacks()
        .intern(&[addr as u64 + 1])
        .map_or(0, |id| id + 1);
    let _ = ROOTS.try_with(|r| {
        let mut r = r.borrow_mut();
        if r.len() >= CACHE_CAP {
            r.clear();
        }
        r.insert(addr, id)
    });
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combinations_are_interned_once_and_read_back() {
        let a = combine(&[5, 0, 9]);
        assert_ne!(a & COMBO, 0);
        assert_eq!(combine(&[5, 9]), a);
        assert_eq!(stacks_of(a), vec![4, 8]);
        assert_eq!(combine(&[0, 7]), 7);
        assert_eq!(stacks_of(7), vec![6]);
        assert_eq!(stacks_of(0), Vec::<StackId>::new());
    }

    #[test]
    fn the_budget_runs_out_and_refills() {
        std::thread::spawn(|| {
            let taken = (0..1000).filter(|_| take_budget()).count();
            assert!(taken as u32 <= BUDGET_BURST + BUDGET_PER_SEC / 5, "{taken}");
            assert!(taken >= BUDGET_BURST as usize / 2, "{taken}");
        })
        .join()
        .unwrap();
    }
}
