//! Instrumented tasks: `instrument`, the seam the `task` module spawns through
//! (`instrument_with`), and the current-task thread-local that channel operations read to
//! know who is blocking.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use crate::registry::{lock, registry, Site, TaskCell};

thread_local! {
    /// The instrumented task being polled on this thread, if any, and an address inside
    /// the frame of its `Instrumented::poll` (0 outside one): stack captures stop there,
    /// so a task's await chain is the same whatever runtime path polled it.
    static CURRENT: Cell<(*const TaskCell, usize)> = const { Cell::new((std::ptr::null(), 0)) };
}

/// What one thread is polling: the innermost instrumented task and its site (addresses,
/// 0 = none), written only by that thread on its own cache line. A site's `running`
/// count and a task's Running state are read from these (O(threads)) instead of being
/// kept in shared counters: a poll then costs two plain stores and no atomic
/// read-modify-write on a line that other workers polling the same site also write.
#[repr(align(64))]
pub(crate) struct PollSlot {
    site: AtomicUsize,
    cell: AtomicUsize,
}

/// Every slot ever handed to a thread, and those of exited threads (reused), so their
/// number is bounded by the peak number of threads that polled instrumented tasks. Slots
/// are leaked: the agent thread reads them without synchronising with thread exits.
static SLOTS: Mutex<Vec<&'static PollSlot>> = Mutex::new(Vec::new());
static FREE_SLOTS: Mutex<Vec<&'static PollSlot>> = Mutex::new(Vec::new());

thread_local! {
    /// This thread's slot (null until its first instrumented poll, and again once the
    /// thread's destructors have run).
    static SLOT: Cell<*const PollSlot> = const { Cell::new(std::ptr::null()) };
    /// Gives the slot back when the thread exits.
    static SLOT_OWNER: SlotOwner = SlotOwner::claim();
}

struct SlotOwner(&'static PollSlot);

impl SlotOwner {
    fn claim() -> SlotOwner {
        let slot = lock(&FREE_SLOTS).pop().unwrap_or_else(|| {
            let slot: &'static PollSlot = Box::leak(Box::new(PollSlot {
                site: AtomicUsize::new(0),
                cell: AtomicUsize::new(0),
            }));
            lock(&SLOTS).push(slot);
            slot
        });
        SLOT.with(|c| c.set(slot));
        SlotOwner(slot)
    }
}

impl Drop for SlotOwner {
    fn drop(&mut self) {
        SLOT.with(|c| c.set(std::ptr::null()));
        self.0.site.store(0, Relaxed);
        self.0.cell.store(0, Relaxed);
        lock(&FREE_SLOTS).push(self.0);
    }
}

/// This thread's slot; None while its thread-locals are being torn down.
#[inline]
fn poll_slot() -> Option<&'static PollSlot> {
    let p = SLOT.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: slots are leaked (`&'static`), see SLOTS.
        return Some(unsafe { &*p });
    }
    claim_slot()
}

#[cold]
#[inline(never)]
fn claim_slot() -> Option<&'static PollSlot> {
    SLOT_OWNER.try_with(|o| o.0).ok()
}

#[inline]
fn publish(slot: Option<&'static PollSlot>, cell: *const TaskCell) {
    if let Some(slot) = slot {
        let site = if cell.is_null() {
            0
        } else {
            // SAFETY: `cell` is null or the task being polled (or the outer task whose
            // poll frame is still on this thread's stack), kept alive by its Instrumented.
            unsafe { (*cell).site as *const Site as usize }
        };
        slot.site.store(site, Relaxed);
        slot.cell.store(cell as usize, Relaxed);
    }
}

/// The sites of the tasks being polled right now, one entry per polling thread
/// (addresses of `Site`s), sorted. A task that polls another instrumented future inline
/// counts only the innermost one.
pub(crate) fn polling_sites() -> Vec<usize> {
    let mut v: Vec<usize> = lock(&SLOTS)
        .iter()
        .map(|s| s.site.load(Relaxed))
        .filter(|&a| a != 0)
        .collect();
    v.sort_unstable();
    v
}

/// How many entries of `polling` (from [`polling_sites`]) are `site`.
pub(crate) fn running_at(polling: &[usize], site: &Site) -> u64 {
    let a = site as *const Site as usize;
    let lo = polling.partition_point(|&x| x < a);
    let hi = polling.partition_point(|&x| x <= a);
    (hi - lo) as u64
}

/// Whether some thread is polling the task at `cell` now.
pub(crate) fn is_polled(cell: &TaskCell) -> bool {
    let a = cell as *const TaskCell as usize;
    lock(&SLOTS).iter().any(|s| s.cell.load(Relaxed) == a)
}

/// See `CURRENT`.
#[inline]
pub(crate) fn poll_frame() -> usize {
    CURRENT.with(|c| c.get().1)
}

/// Address of the task being polled on this thread (0 outside instrumented tasks): a
/// cheap identity check for the channel futures.
#[inline]
pub(crate) fn current_ptr() -> usize {
    CURRENT.with(|c| c.get().0) as usize
}

/// Runs `f` with the task being polled on this thread (None outside instrumented tasks).
pub(crate) fn with_current<R>(f: impl FnOnce(Option<&Arc<TaskCell>>) -> R) -> R {
    let ptr = CURRENT.with(|c| c.get().0);
    if ptr.is_null() {
        return f(None);
    }
    // SAFETY: CURRENT is set only for the duration of `Instrumented::poll`, which holds
    // an `Arc<TaskCell>` that outlives the call; the pointer is that Arc's, so we can
    // borrow it as an `Arc` without touching the count.
    let arc = std::mem::ManuallyDrop::new(unsafe { Arc::from_raw(ptr) });
    f(Some(&arc))
}

pin_project_lite::pin_project! {
    /// A future counted in the task table under its spawn site. Created by
    /// [`instrument`], [`spawn`] and [`spawn_local`].
    pub struct Instrumented<F> {
        #[pin]
        inner: F,
        cell: Option<Arc<TaskCell>>,
    }

    impl<F> PinnedDrop for Instrumented<F> {
        fn drop(this: Pin<&mut Self>) {
            // Dropped before completion: aborted, cancelled, or its runtime shut down.
            if let Some(cell) = this.project().cell.take() {
                registry().task_done(&cell);
            }
        }
    }
}

struct CurrentGuard {
    prev: (*const TaskCell, usize),
    slot: Option<&'static PollSlot>,
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
        publish(self.slot, self.prev.0);
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Some(cell) = this.cell.as_ref() else {
            // Polled after completion: the inner future decides what that means.
            return this.inner.poll(cx);
        };
        let ptr = Arc::as_ptr(cell);
        let slot = poll_slot();
        publish(slot, ptr);
        let marker = 0u8;
        let frame = std::hint::black_box(&marker) as *const u8 as usize;
        let prev = CURRENT.with(|c| c.replace((ptr, frame)));
        let guard = CurrentGuard { prev, slot };
        let out = this.inner.poll(cx);
        drop(guard);
        if out.is_ready() {
            if let Some(cell) = this.cell.take() {
                registry().task_done(&cell);
            }
        }
        out
    }
}

/// How an instrumented task is counted, beyond its spawn site (`task::Builder`,
/// `spawn_blocking`).
#[derive(Clone, Debug, Default)]
pub(crate) struct TaskOptions {
    /// The task's name (`task::Builder::name`).
    // Kept for the task table's names (protocol 2); not shown yet.
    #[allow(dead_code)]
    pub name: Option<String>,
    /// A `spawn_blocking` closure: its site is counted as a blocking site.
    pub blocking: bool,
}

/// What a task's `JoinHandle` tells the task table: awaited, aborted, or dropped while the
/// task runs (detached). Held by the agent's `JoinHandle` wrapper; every method is cheap
/// and never blocks.
#[derive(Debug)]
pub(crate) struct HandleLink {
    _private: (),
}

#[allow(dead_code)] // the task tree (protocol 2) fills these in
impl HandleLink {
    /// The handle is being polled (its owner awaits the task).
    #[inline]
    pub fn awaited(&self) {}
    /// The handle returned the task's output (or error): the task is over.
    #[inline]
    pub fn finished(&mut self) {}
    /// `abort()` was called on the handle (or on an `AbortHandle` made from it).
    #[inline]
    pub fn aborted(&self) {}
    /// The link an `AbortHandle` made from this handle keeps.
    #[inline]
    pub fn abort_link(&self) -> AbortLink {
        AbortLink { _private: () }
    }
}

/// What an `AbortHandle` tells the task table: `abort()` was called through it. Cheap to
/// clone; never blocks.
#[derive(Clone, Debug)]
pub(crate) struct AbortLink {
    _private: (),
}

#[allow(dead_code)] // the task tree (protocol 2) fills this in
impl AbortLink {
    #[inline]
    pub fn aborted(&self) {}
}

/// [`instrument`] with the location given and options, and the link its `JoinHandle`
/// keeps to the task table. For the agent's own spawn functions (`task::Builder`,
/// `JoinSet`, `spawn_blocking`, spawning on a `Handle`).
pub(crate) fn instrument_with<F: Future>(
    fut: F,
    loc: &'static std::panic::Location<'static>,
    opts: TaskOptions,
) -> (Instrumented<F>, HandleLink) {
    let kind = if opts.blocking {
        crate::wire::SiteKind::Blocking
    } else {
        crate::wire::SiteKind::Spawn
    };
    let site = registry().site_of_kind(loc, kind);
    (
        Instrumented {
            inner: fut,
            cell: Some(registry().new_task(site)),
        },
        HandleLink { _private: () },
    )
}

/// Wraps `fut` so that it is counted in the task table under the caller's location, for
/// runtimes or spawn functions the agent does not wrap itself (`JoinSet::spawn`,
/// `Runtime::block_on`, `tokio::task::spawn_blocking` futures, …).
#[track_caller]
pub fn instrument<F: Future>(fut: F) -> Instrumented<F> {
    let site = registry().site(std::panic::Location::caller());
    Instrumented {
        inner: fut,
        cell: Some(registry().new_task(site)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::TaskState;

    fn running(site: &Site) -> u64 {
        running_at(&polling_sites(), site)
    }

    /// The site's `running` count and the task's Running state come from the poll slots
    /// (no shared counter): set while a thread polls the task, clear once it returns,
    /// the outer task again after a nested instrumented poll.
    #[test]
    fn a_task_is_running_only_while_a_thread_polls_it() {
        let inner = instrument(async {
            let (cell, site) = with_current(|c| c.map(|c| (c.clone(), c.site))).unwrap();
            assert_eq!(running(site), 1);
            assert_eq!(cell.info().state, TaskState::Running);
            cell
        });
        let outer = instrument(async move {
            let (outer_cell, outer_site) =
                with_current(|c| c.map(|c| (c.clone(), c.site))).unwrap();
            assert_eq!(running(outer_site), 1);
            let inner_cell = inner.await;
            // Back in the outer task: it is the one published again.
            assert_eq!(running(outer_site), 1);
            assert_eq!(running(inner_cell.site), 0);
            assert_eq!(inner_cell.info().state, TaskState::Idle);
            (outer_cell, outer_site)
        });
        let mut outer = std::pin::pin!(outer);
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let Poll::Ready((cell, site)) = outer.as_mut().poll(&mut cx) else {
            panic!("the task should complete in one poll");
        };
        assert_eq!(running(site), 0);
        assert_eq!(cell.info().state, TaskState::Idle);
    }
}
