//! Instrumented tasks: `spawn`, `spawn_local`, `instrument`, and the current-task
//! thread-local that channel operations read to know who is blocking.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;
use std::task::{Context, Poll};

use crate::registry::{registry, TaskCell, STATE_BLOCKED, STATE_IDLE, STATE_RUNNING};

thread_local! {
    /// The instrumented task being polled on this thread, if any, and an address inside
    /// the frame of its `Instrumented::poll` (0 outside one): stack captures stop there,
    /// so a task's await chain is the same whatever runtime path polled it.
    static CURRENT: Cell<(*const TaskCell, usize)> = const { Cell::new((std::ptr::null(), 0)) };
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
    cell: *const TaskCell,
}

impl Drop for CurrentGuard {
    fn drop(&mut self) {
        CURRENT.with(|c| c.set(self.prev));
        // SAFETY: `cell` points into an Arc kept alive by the Instrumented being polled.
        let cell = unsafe { &*self.cell };
        cell.site.running.fetch_sub(1, Relaxed);
        // A channel op may have marked the task blocked during this poll; keep that.
        let _ = cell
            .state
            .compare_exchange(STATE_RUNNING, STATE_IDLE, Relaxed, Relaxed);
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
        cell.site.running.fetch_add(1, Relaxed);
        let state = cell.state.load(Relaxed);
        if state != STATE_BLOCKED {
            cell.state.store(STATE_RUNNING, Relaxed);
        }
        let marker = 0u8;
        let frame = std::hint::black_box(&marker) as *const u8 as usize;
        let prev = CURRENT.with(|c| c.replace((ptr, frame)));
        let guard = CurrentGuard { prev, cell: ptr };
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

/// Drop-in for [`tokio::spawn`]: the task is counted under the caller's location.
#[track_caller]
pub fn spawn<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let fut = instrument(fut);
    // Counted here; the runtime hooks must not count it again.
    #[cfg(all(feature = "tokio-hooks", tokio_unstable))]
    let _skip = crate::hooks::SkipHook::new();
    tokio::spawn(fut)
}

/// Drop-in for [`tokio::task::spawn_local`].
#[track_caller]
pub fn spawn_local<F>(fut: F) -> tokio::task::JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let fut = instrument(fut);
    #[cfg(all(feature = "tokio-hooks", tokio_unstable))]
    let _skip = crate::hooks::SkipHook::new();
    tokio::task::spawn_local(fut)
}
