//! Instrumented tasks: `instrument`, the seam the `task` module spawns through
//! (`instrument_with`), the task record that lives
//! inline in each instrumented future (so in tokio's own task allocation), and the
//! current-task thread-local that waits read to know who waits.
//!
//! # The record
//!
//! [`Record`] holds everything the agent knows of one task: id, site, spawn time, its
//! wait slots (see `blocked`), its place in its thread's live-task list (see `shard`),
//! its parent and handle link (see `tree`). It is written by the task's own polls and read
//! by the agent thread under the locks of the lists it is on. Its address is only handed
//! out once the future is pinned (at its first poll), and the future is `!Unpin`, so the
//! address stays valid until `drop`, which takes the record off every list first.
//!
//! # A poll
//!
//! - first poll: the record joins its thread's list for its site;
//! - a wait recorded from the previous poll (uninstrumented, poll-scoped) ends;
//! - the thread's poll slot names the task (the `running` count);
//! - on a *sampled* poll (the task's first, then one per site every [`RESAMPLE_MS`]),
//!   the future gets a sampling waker (see `capture`) that learns where it waits;
//! - if it returns Pending with no instrumented wait pending, the task is recorded as
//!   waiting where the sampler saw it (or, unsampled, where it last was seen);
//! - Ready: the task is over (counts, lifetime, tree), before tokio drops the future.

use std::cell::{Cell, UnsafeCell};
use std::future::Future;
use std::marker::PhantomPinned;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::{AtomicPtr, AtomicU32, AtomicU64, AtomicU8, Ordering::*};
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::blocked::{self, FastSlot, WaitOn, EXTRA_SLOTS};
use crate::capture::{self, Sampler};
use crate::clock;
use crate::registry::{lock, registry, Site};
use crate::shard::{self, Ends};
use crate::stack::RESAMPLE_MS;
use crate::tree::{self, Family, TaskLink};
use crate::wire::{self, Op, SiteKind};

pub(crate) use crate::tree::{AbortLink, HandleLink};

#[derive(Clone, Copy)]
struct Current {
    rec: *const Record,
    id: u64,
    /// An address inside the frame of the task's `Instrumented::poll`: captures stop
    /// there, so a task's await chain is the same whatever runtime path polled it.
    frame: usize,
}

thread_local! {
    /// The instrumented task being polled on this thread, if any.
    static CURRENT: Cell<Current> = const {
        Cell::new(Current { rec: std::ptr::null(), id: 0, frame: 0 })
    };
}

/// See `Current::frame`; 0 outside an instrumented poll.
#[inline]
pub(crate) fn poll_frame() -> usize {
    CURRENT.try_with(|c| c.get().frame).unwrap_or(0)
}

/// The address and id of the task being polled on this thread ((0, 0) outside one): a
/// cheap identity check for waits.
#[inline]
pub(crate) fn current() -> (usize, u64) {
    CURRENT
        .try_with(|c| {
            let c = c.get();
            (c.rec as usize, c.id)
        })
        .unwrap_or((0, 0))
}

/// Runs `f` with the record of the task being polled on this thread (None outside one).
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Record>) -> R) -> R {
    let ptr = CURRENT
        .try_with(|c| c.get().rec)
        .unwrap_or(std::ptr::null());
    // SAFETY: CURRENT is set only for the duration of `Instrumented::poll` of a pinned
    // record, which outlives that call.
    f(unsafe { ptr.as_ref() })
}

/// Whether some thread is polling the task `rec` now.
pub(crate) fn is_polled(rec: &Record, polling: &[usize]) -> bool {
    polling
        .binary_search(&(rec as *const Record as usize))
        .is_ok()
}

const F_LINKED: u32 = 1;
const F_POLLED: u32 = 2;
const F_DONE: u32 = 4;
/// The first slot holds a poll-scoped wait (ended at the next poll).
const F_POLL_WAIT: u32 = 8;

/// One live instrumented task. See the module docs.
pub(crate) struct Record {
    pub id: u64,
    pub site: &'static Site,
    pub spawned_ms: u64,
    /// `F_*`; written by the polling thread (polls of a task are sequenced by the runtime)
    /// and by the task's end.
    flags: AtomicU32,
    /// The shard whose lists hold the record (valid with `F_LINKED`).
    shard: AtomicU32,
    /// The `testing` scope the task belongs to (0: none), inherited from its spawner.
    pub scope: AtomicU32,
    /// StackId + 1 of the stack at spawn, captured only for tasks in a `testing` scope.
    pub spawn_stack: AtomicU32,
    /// NameId + 1 (0: unnamed).
    pub name: u32,
    /// The poll-scoped wait of the last sampled poll (op code + 1, key): unsampled polls that
    /// return Pending assume the task waits there again.
    last_op: AtomicU8,
    last_key: AtomicU32,
    /// Promoted waits (low byte) and the class the task is counted under (next byte);
    /// under the site lock (see `blocked`).
    pub promoted: AtomicU32,
    /// Where the record is on a candidate list (see `blocked::enlist`); 0: not listed.
    pub cand: AtomicU64,
    pub fast: FastSlot,
    extra: AtomicPtr<[FastSlot; EXTRA_SLOTS]>,
    /// Previous and next record of the same site in its shard's list (under that lock).
    links: UnsafeCell<(*const Record, *const Record)>,
    /// The parent's family (`Arc::into_raw`; null: no instrumented parent).
    parent: AtomicPtr<Family>,
    /// This task's own family, made at its first child (`Arc::into_raw`).
    family: AtomicPtr<Family>,
    link: Option<TaskLink>,
    _pin: PhantomPinned,
}

// SAFETY: `links` is only touched under the list lock of the shard named by `shard`;
// every other field is atomic or immutable after creation.
unsafe impl Sync for Record {}
// SAFETY: as above; the raw pointers are list links and `Arc`s this record owns.
unsafe impl Send for Record {}

impl Record {
    fn new(
        site: &'static Site,
        opts: &TaskOptions,
        link: Option<TaskLink>,
        parent: Option<Arc<Family>>,
    ) -> Record {
        let id = registry().next_task_id();
        let scope = crate::testing::inherited_scope();
        let spawn_stack = if scope != 0 {
            crate::testing::spawn_stack()
        } else {
            0
        };
        let name = opts
            .name
            .as_deref()
            .and_then(|n| registry().intern_name(n))
            .map_or(0, |id| id + 1);
        if name != 0 {
            site.name.store(name, Relaxed);
        }
        if scope != 0 {
            crate::testing::unpolled_add(scope, site, 1);
        }
        let c = shard::mine().counters(site);
        c.spawned.fetch_add(1, Relaxed);
        c.edge(tree::parent_key(parent.as_ref().map(|p| p.site)))
            .live
            .fetch_add(1, Relaxed);
        Record {
            id,
            site,
            // The agent thread's cached clock (<= ~100 ms old) is enough for ages shown
            // in seconds, and a load instead of a clock read on every spawn.
            spawned_ms: clock::cached_now_ms(),
            flags: AtomicU32::new(0),
            shard: AtomicU32::new(0),
            scope: AtomicU32::new(scope),
            spawn_stack: AtomicU32::new(spawn_stack),
            name,
            last_op: AtomicU8::new(0),
            last_key: AtomicU32::new(0),
            promoted: AtomicU32::new(0),
            cand: AtomicU64::new(0),
            fast: FastSlot::new(id << 28),
            extra: AtomicPtr::new(std::ptr::null_mut()),
            links: UnsafeCell::new((std::ptr::null(), std::ptr::null())),
            parent: AtomicPtr::new(
                parent.map_or(std::ptr::null_mut(), |p| Arc::into_raw(p) as *mut Family),
            ),
            family: AtomicPtr::new(std::ptr::null_mut()),
            link,
            _pin: PhantomPinned,
        }
    }

    /// Wait slot `i` (0: the first; 1..: the extra ones, if allocated).
    pub fn slot(&self, i: u8) -> Option<&FastSlot> {
        if i == 0 {
            return Some(&self.fast);
        }
        let extra = self.extra.load(Acquire);
        // SAFETY: the extra slots live until the record ends (see `end`).
        unsafe { extra.as_ref() }.and_then(|e| e.get(i as usize - 1))
    }

    /// Runs `f` on every slot.
    pub fn for_each_slot(&self, mut f: impl FnMut(&FastSlot)) {
        f(&self.fast);
        let extra = self.extra.load(Acquire);
        // SAFETY: as in `slot`.
        if let Some(e) = unsafe { extra.as_ref() } {
            e.iter().for_each(f);
        }
    }

    /// Tries `f` on each slot in turn (allocating the extra ones the first time the first
    /// is busy) until it returns Some. Only while the task is polled on this thread.
    pub fn try_slots<R>(&self, mut f: impl FnMut(u8, &FastSlot) -> Option<R>) -> Option<R> {
        if let Some(r) = f(0, &self.fast) {
            return Some(r);
        }
        let mut extra = self.extra.load(Acquire);
        if extra.is_null() {
            let fresh = Box::new(std::array::from_fn(|_| FastSlot::new(self.id << 28)));
            extra = Box::into_raw(fresh);
            self.extra.store(extra, Release);
        }
        // SAFETY: as in `slot`.
        let e = unsafe { &*extra };
        e.iter().enumerate().find_map(|(i, s)| f(i as u8 + 1, s))
    }

    /// Whether an instrumented operation (not a poll-scoped wait) is pending in a slot.
    fn waits_instrumented(&self) -> bool {
        let mut any = false;
        self.for_each_slot(|s| {
            any |= s.pending_op().is_some_and(|op| !op.is_poll_scoped());
        });
        any
    }

    /// This task's family, made on first use (it is spawning a child).
    fn family(&self) -> Arc<Family> {
        let p = self.family.load(Acquire);
        if p.is_null() {
            let f = Arc::new(Family::new(self.id, self.site));
            let raw = Arc::into_raw(f.clone()) as *mut Family;
            self.family.store(raw, Release);
            return f;
        }
        // SAFETY: `family` holds one strong count (from `into_raw`) until `end`.
        unsafe {
            Arc::increment_strong_count(p);
            Arc::from_raw(p)
        }
    }

    /// The parent's family, if any.
    pub fn parent(&self) -> Option<&Family> {
        // SAFETY: `parent` holds a strong count until `end`, which runs after every use
        // through `&self` that could observe it (the record's own teardown).
        unsafe { self.parent.load(Acquire).as_ref() }
    }

    pub fn handle_state(&self) -> wire::HandleState {
        tree::handle_state(self.link)
    }

    /// First poll: joins this thread's list. Also ends a poll-scoped wait of the previous
    /// poll. Returns whether this is the task's first poll.
    #[inline]
    fn begin_poll(&self) -> bool {
        let f = self.flags.load(Relaxed);
        if f & F_POLL_WAIT != 0 {
            self.flags.store(f & !F_POLL_WAIT, Relaxed);
            blocked::end_any(self, &self.fast);
        }
        if f & F_POLLED == 0 {
            self.link_first();
            return true;
        }
        false
    }

    #[cold]
    #[inline(never)]
    fn link_first(&self) {
        let shard = shard::mine();
        let mut lists = lock(&shard.lists);
        let idx = self.site.idx as usize;
        if lists.ends.len() <= idx {
            lists.ends.resize(idx + 1, Ends::default());
        }
        let ends = &mut lists.ends[idx];
        let me = self as *const Record;
        // SAFETY: under the shard's list lock; linked records are alive.
        unsafe {
            *self.links.get() = (ends.tail, std::ptr::null());
            match ends.tail.as_ref() {
                Some(t) => (*t.links.get()).1 = me,
                None => ends.head = me,
            }
        }
        ends.tail = me;
        self.shard.store(u32::from(shard.index), Relaxed);
        let f = self.flags.load(Relaxed);
        self.flags.store(f | F_LINKED | F_POLLED, Relaxed);
        drop(lists);
        let scope = self.scope.load(Relaxed);
        if scope != 0 {
            crate::testing::unpolled_add(scope, self.site, -1);
        }
    }

    fn unlink(&self) {
        let shard = shard::by_index(self.shard.load(Relaxed) as u16);
        let mut lists = lock(&shard.lists);
        let Some(ends) = lists.ends.get_mut(self.site.idx as usize) else {
            return;
        };
        // SAFETY: under the shard's list lock; linked records are alive.
        unsafe {
            let (prev, next) = *self.links.get();
            match prev.as_ref() {
                Some(p) => (*p.links.get()).1 = next,
                None => ends.head = next,
            }
            match next.as_ref() {
                Some(n) => (*n.links.get()).0 = prev,
                None => ends.tail = prev,
            }
        }
    }

    /// The poll returned Pending: unless an instrumented wait is pending, record where
    /// the task waits (what `sampler` saw, or where its last sampled poll saw it).
    fn after_pending(&self, sampler: Option<&Sampler>, first: bool, root: usize) {
        if self.waits_instrumented() {
            return;
        }
        let (op, key, seen) = match sampler {
            Some(s) => {
                let (op, key, seen) = s.outcome(first);
                let key = key.unwrap_or_else(|| capture::root_stack(root));
                self.last_op.store(blocked::op_code(op) + 1, Relaxed);
                self.last_key.store(key, Relaxed);
                (op, key, seen)
            }
            None => match self.last_op.load(Relaxed) {
                0 => (Op::Uncaptured, capture::root_stack(root), false),
                code => (blocked::op_of(code - 1), self.last_key.load(Relaxed), false),
            },
        };
        let on = WaitOn {
            op,
            chan: None,
            call: None,
            key,
            assumed: !seen,
        };
        if blocked::fast_pending(self, &self.fast, &on).is_some() {
            let f = self.flags.load(Relaxed);
            self.flags.store(f | F_POLL_WAIT, Relaxed);
        }
    }

    /// The task is over (its future completed, or is being dropped): off every list,
    /// counted, its tree settled. Idempotent.
    fn end(&self) {
        let f = self.flags.load(Relaxed);
        if f & F_DONE != 0 {
            return;
        }
        self.flags.store(f | F_DONE, Relaxed);
        self.for_each_slot(|s| blocked::end_any(self, s));
        blocked::unlist(self);
        if f & F_LINKED != 0 {
            self.unlink();
        } else {
            let scope = self.scope.load(Relaxed);
            if scope != 0 {
                crate::testing::unpolled_add(scope, self.site, -1);
            }
        }
        let extra = self.extra.swap(std::ptr::null_mut(), AcqRel);
        if !extra.is_null() {
            // SAFETY: allocated by `try_slots`; no list holds the record any more, so
            // nothing can reach these slots.
            drop(unsafe { Box::from_raw(extra) });
        }
        let lived = clock::cached_now_ms().saturating_sub(self.spawned_ms);
        let parent = self.parent.swap(std::ptr::null_mut(), AcqRel);
        // SAFETY: `parent` held one strong count (`into_raw`), taken back here once.
        let parent = (!parent.is_null()).then(|| unsafe { Arc::from_raw(parent) });
        let c = shard::mine().counters(self.site);
        c.completed.fetch_add(1, Relaxed);
        c.lifetimes[shard::life_bucket(lived)].fetch_add(1, Relaxed);
        c.edge(tree::parent_key(parent.as_ref().map(|p| p.site)))
            .live
            .fetch_sub(1, Relaxed);
        tree::task_ended(self.site, parent.as_deref(), self.link);
        let family = self.family.swap(std::ptr::null_mut(), AcqRel);
        if !family.is_null() {
            // SAFETY: as for `parent`.
            let family = unsafe { Arc::from_raw(family) };
            family.finish();
        }
    }

    /// The task's state for a task list (under its site's lock, which the caller holds
    /// through `inner`).
    pub fn info(&self, inner: &crate::registry::SiteInner, polling: &[usize]) -> wire::TaskInfoV2 {
        let wait = blocked::wait_of(inner, self);
        let state = if is_polled(self, polling) {
            wire::TaskState::Running
        } else {
            match wait.map(|(_, k)| k.op) {
                None => wire::TaskState::Idle,
                Some(Op::Yield) => wire::TaskState::Runnable,
                Some(Op::Uncaptured) => wire::TaskState::Uncaptured,
                Some(op) if op.is_poll_scoped() => wire::TaskState::Waiting,
                Some(_) => wire::TaskState::Blocked,
            }
        };
        let parent = self.parent().map(|p| wire::ParentInfo {
            id: p.id,
            site: p.site.loc,
            finished: p.is_done(),
        });
        wire::TaskInfoV2 {
            id: self.id,
            spawned_ms: self.spawned_ms,
            state,
            since_ms: wait.map(|(since, _)| since),
            wait: wait.map(|(_, k)| k.to_wire(self.site.loc)),
            name: self.name.checked_sub(1),
            parent,
            handle: self.handle_state(),
        }
    }

    /// The next record of the same site in its shard list (under that lock).
    pub(crate) fn next_in_list(&self) -> *const Record {
        // SAFETY: callers hold the shard's list lock.
        unsafe { (*self.links.get()).1 }
    }
}

pin_project_lite::pin_project! {
    /// A future counted in the task table under its spawn site. Created by
    /// [`instrument`], [`spawn`] and [`spawn_local`]. It is `!Unpin`: the task record it
    /// carries must not move once polled.
    pub struct Instrumented<F> {
        #[pin]
        inner: F,
        #[pin]
        rec: Record,
    }

    impl<F> PinnedDrop for Instrumented<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before completion (aborted, cancelled, its runtime shut down), or
            // after it: `end` is idempotent.
            this.project().rec.into_ref().get_ref().end();
        }
    }
}

struct CurrentGuard {
    prev: Current,
    slot: Option<&'static shard::Shard>,
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        let _ = CURRENT.try_with(|c| c.set(self.prev));
        if let Some(s) = self.slot {
            // SAFETY: `prev.rec` is null or an outer task whose poll frame is still on
            // this thread's stack (nested instrumented polls).
            let site =
                unsafe { self.prev.rec.as_ref() }.map_or(0, |r| r.site as *const Site as usize);
            s.poll.site.store(site, Relaxed);
            s.poll.rec.store(self.prev.rec as usize, Relaxed);
        }
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let rec: &Record = this.rec.into_ref().get_ref();
        if rec.flags.load(Relaxed) & F_DONE != 0 {
            // Polled after completion: the inner future decides what that means.
            return this.inner.poll(cx);
        }
        let first = rec.begin_poll();
        let slot = shard::own();
        if let Some(s) = slot {
            s.poll.site.store(rec.site as *const Site as usize, Relaxed);
            s.poll.rec.store(rec as *const Record as usize, Relaxed);
        }
        let marker = 0u8;
        let frame = std::hint::black_box(&marker) as *const u8 as usize;
        let me = Current {
            rec,
            id: rec.id,
            frame,
        };
        let prev = CURRENT.try_with(|c| c.replace(me)).unwrap_or(me);
        let guard = CurrentGuard { prev, slot };
        // A task polled inside another's sampled poll leaves the sampling to the outer one.
        let sample = (first || rec.site.sample_due()) && !capture::is_sampler(cx.waker());
        let root = <F as Future>::poll as *const () as usize;
        // One call of the inner poll for both kinds of poll: the return address in this
        // frame is part of every await chain captured below it, and must not differ
        // between sampled and unsampled polls.
        let sampler =
            sample.then(|| Sampler::new(cx.waker(), frame, rec.site as *const Site as usize));
        let waker = sampler.as_ref().map(Sampler::waker);
        let mut ctx = Context::from_waker(waker.as_deref().unwrap_or(cx.waker()));
        let out = this.inner.poll(&mut ctx);
        if out.is_pending() {
            rec.after_pending(sampler.as_ref(), first, root);
        }
        drop(guard);
        if out.is_ready() {
            rec.end();
        }
        out
    }
}

impl Site {
    /// Whether a poll of this site's tasks should be sampled now: one poll per site every
    /// [`RESAMPLE_MS`], while an agent thread runs (nobody can look otherwise).
    #[inline]
    fn sample_due(&self) -> bool {
        let Some(now) = clock::ticked_now_ms() else {
            return false;
        };
        let next = self.next_sample.load(Relaxed);
        now >= next
            && self
                .next_sample
                .compare_exchange(next, now + RESAMPLE_MS, Relaxed, Relaxed)
                .is_ok()
    }
}

/// How an instrumented task is counted, beyond its spawn site (`task::Builder`,
/// `spawn_blocking`).
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskOptions {
    /// The task's name (`task::Builder::name`).
    pub name: Option<String>,
    /// A `spawn_blocking` closure: its site is counted as a blocking site.
    pub blocking: bool,
}

/// The future for a new task of `site`, child of the task polled on this thread (if any),
/// and its handle link when `linked`.
fn make<F: Future>(
    fut: F,
    site: &'static Site,
    opts: &TaskOptions,
    linked: bool,
) -> (Instrumented<F>, Option<HandleLink>) {
    let parent = with_current(|r| r.map(|r| r.family()));
    let (task_link, handle) = if linked {
        let (t, h) = tree::link(site, parent.clone());
        (t, Some(h))
    } else {
        (None, None)
    };
    let rec = Record::new(site, opts, task_link, parent);
    (Instrumented { inner: fut, rec }, handle)
}

/// [`instrument`] with the location given and options, and the link its `JoinHandle`
/// keeps to the task table. For the agent's own spawn functions (`task::Builder`,
/// `JoinSet`, `spawn_blocking`, spawning on a `Handle`).
pub(crate) fn instrument_with<F: Future>(
    fut: F,
    loc: &'static Location<'static>,
    opts: TaskOptions,
) -> (Instrumented<F>, HandleLink) {
    let kind = if opts.blocking {
        SiteKind::Blocking
    } else {
        SiteKind::Spawn
    };
    let site = registry().site_of_kind(loc, kind);
    let (fut, handle) = make(fut, site, &opts, true);
    let handle = handle.unwrap_or_else(|| tree::link(site, None).1);
    (fut, handle)
}

/// Wraps `fut` so that it is counted in the task table under the caller's location, for
/// runtimes or spawn functions the agent does not wrap itself (`JoinSet::spawn`,
/// `Runtime::block_on`, `tokio::task::spawn_blocking` futures, …).
#[track_caller]
pub fn instrument<F: Future>(fut: F) -> Instrumented<F> {
    let site = registry().site(Location::caller());
    make(fut, site, &TaskOptions::default(), false).0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn running(site: &Site) -> u64 {
        shard::running_at(&shard::polling_sites(), site)
    }

    /// The site's `running` count comes from the poll slots (no shared counter): set
    /// while a thread polls the task, clear once it returns, the outer task again after a
    /// nested instrumented poll.
    #[test]
    fn a_task_is_running_only_while_a_thread_polls_it() {
        let inner = instrument(async {
            let (rec, site) =
                with_current(|c| c.map(|c| (c as *const Record as usize, c.site))).unwrap();
            assert_eq!(running(site), 1);
            assert!(shard::polling_records().contains(&rec));
            site
        });
        let outer = instrument(async move {
            let outer_site = with_current(|c| c.map(|c| c.site)).unwrap();
            assert_eq!(running(outer_site), 1);
            let inner_site = inner.await;
            // Back in the outer task: it is the one published again.
            assert_eq!(running(outer_site), 1);
            assert_eq!(running(inner_site), 0);
            outer_site
        });
        let mut outer = std::pin::pin!(outer);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready(site) = outer.as_mut().poll(&mut cx) else {
            panic!("the task should complete in one poll");
        };
        assert_eq!(running(site), 0);
    }
}
