//! Drop-in for all of `tokio::sync`: the channels (`mpsc`, `oneshot`, `broadcast`,
//! `watch`), [`Mutex`], [`RwLock`], [`Semaphore`], [`Notify`], [`Barrier`], [`OnceCell`],
//! [`SetOnce`] and their guards, permits, futures and errors, so moving a program over is
//! a change of `use` lines:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use leaktop_agent::sync::mpsc; // was: use tokio::sync::mpsc;
//!
//! let (tx, mut rx) = mpsc::channel(8);
//! leaktop_agent::spawn(async move { tx.send(42).await.unwrap() });
//! assert_eq!(rx.recv().await, Some(42));
//! # }
//! ```
//!
//! Every wrapper holds tokio's own type and only observes: the semantics (ordering,
//! fairness, capacity, errors, cancel safety, cooperative budget) are tokio's. What the
//! agent learns:
//!
//! - the channel table: each channel's creation site (the constructors are
//!   `#[track_caller]`), capacity, length, live senders and receivers, closed flag, last
//!   successful send and receive; per creation site aggregates in every snapshot;
//! - who is blocked: `send`, `reserve*`, `recv*`, `changed`, `wait_for` and `closed` are
//!   `#[track_caller]` and return named futures. When one returns Pending inside a task
//!   spawned with [`crate::spawn`] (or wrapped by [`crate::instrument`]), the task is
//!   counted as blocked {op, channel, blocking call site, since} in its spawn site's blocked
//!   groups, with the raw await chain captured at that moment (inside the future's `poll`,
//!   up to the task's own poll frame); Ready, drop (`select!`, `timeout`) or abort clears
//!   it. Operations in other tasks are counted under the "uninstrumented task" row.
//!
//! # Cost
//!
//! A message costs one relaxed atomic add on the channel's own cache line and a compare
//! with a clock the agent thread ticks every 100 ms. A wait in an instrumented task is
//! written into the task's own record (a few relaxed stores and one atomic swap, no lock,
//! no allocation, no reference count) and its end is one compare-and-swap; the agent
//! moves waits still pending into their site's groups whenever it looks (snapshot, task
//! list, history sample), so what a client sees is exact at that moment while a wait that
//! ends before anyone looks never touches shared state. Stacks are captured once per
//! (thread, spawn site, call site) and re-sampled at most every 5 s. The benchmark
//! (`scripts/bench.sh channels`) compares a ping-pong over `mpsc(1)` with tokio's.
//!
//! The error types are tokio's own, re-exported (`mpsc::error`, `oneshot::error`, …).
//!
//! # Where the mirror is not exact
//!
//! - The futures are named types (`mpsc::Send<'a, T>`, `mpsc::Recv<'a, T>`,
//!   `watch::Changed<'a, T>`, …) instead of anonymous `async fn` futures, and they are
//!   `Unpin`. Code that awaits them cannot tell the difference.
//! - Operations that may have to wait try tokio's non-blocking variant first (`try_send`,
//!   `try_reserve`, `try_recv`, `has_changed`, with the task's cooperative budget charged
//!   the same way); only when that would block is tokio's future boxed and awaited. So a
//!   wait costs one allocation; an operation that does not wait costs none.
//! - `blocking_send` / `blocking_recv` block a thread, not a task: they are counted as
//!   messages but never as blocked tasks.
//! - `poll_recv` / `poll_recv_many` / `oneshot::Sender::poll_closed` keep their blocked
//!   registration in the handle until they return Ready or the handle is dropped (there is
//!   no future whose drop would say the caller stopped waiting).
//! - A channel future moved to another task (or sent out of its task) while it waits
//!   leaves its first task marked blocked there until that task ends.
//! - `watch::Receiver::wait_for` requires its closure to outlive the receiver borrow
//!   (`F: 'a`); the compiler satisfies that by shortening the borrow.
//! - `into_inner()` (`as_tokio()` for locks and cells) hands out tokio's type; from then on
//!   that handle is invisible to the agent (it no longer counts as a sender or receiver of
//!   the channel). The tokio-stream / tokio-util channel adapters have agent counterparts
//!   (feature `stream`), so they no longer need it.
//! - Locks, semaphores, `Notify`, `Barrier`, `OnceCell` and `SetOnce` wait like the
//!   channels (ops `mutex lock`, `rwlock read`/`write`, `semaphore acquire`, `notify`,
//!   `barrier wait`, `once init`), and the locks also record who holds them: the holder
//!   task, its spawn site, where it acquired and since when (see the `holders` module's
//!   docs for the cost: a few stores per acquisition). Their owned guards (`lock_owned`,
//!   `read_owned`, `write_owned`) need `T: 'static`; tokio's do not.
//! - A lock future tries tokio's `try_*` first, charged to the cooperative budget like
//!   tokio's own; when its budget is spent it yields before queueing, as tokio before 1.54
//!   did (tokio 1.54 queues first).
//! - A channel's "last send/receive" time has the agent's 100 ms tick resolution, and its
//!   creation site's message totals include a busy channel's latest messages once the
//!   tick moves on (or the channel is dropped). Before the agent is started nothing is
//!   time-stamped.

pub mod broadcast;
pub mod mpsc;
pub mod oneshot;
pub mod watch;

mod acquire;
mod barrier;
pub(crate) mod holders;
mod mutex;
mod notify;
mod once_cell;
mod rwlock;
mod semaphore;

pub use barrier::{Barrier, BarrierWait, BarrierWaitResult};
pub use mutex::{
    Lock, LockOwned, MappedMutexGuard, Mutex, MutexGuard, OwnedMappedMutexGuard, OwnedMutexGuard,
    TryLockError,
};
pub use notify::Notify;
pub use once_cell::{OnceCell, SetError, SetOnce, SetOnceError};
pub use rwlock::{
    OwnedRwLockMappedWriteGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, Read, ReadOwned,
    RwLock, RwLockMappedWriteGuard, RwLockReadGuard, RwLockWriteGuard, Write, WriteOwned,
};
pub use semaphore::{
    Acquire, AcquireError, AcquireOwned, OwnedSemaphorePermit, Semaphore, SemaphorePermit,
    TryAcquireError,
};

/// Named futures of [`Notify`], as in `tokio::sync::futures`.
pub mod futures {
    pub use super::notify::{Notified, OwnedNotified};
}

/// The resource record ([`ChanMeta`](crate::chan::ChanMeta)) of a `Notify`, `Barrier`,
/// `OnceCell` or `SetOnce`: made with the value, or for the `const fn` constructors
/// (which cannot allocate) on first use.
pub(crate) struct LazyMeta {
    loc: &'static std::panic::Location<'static>,
    kind: crate::wire::ChannelKind,
    meta: std::sync::OnceLock<std::sync::Arc<crate::chan::ChanMeta>>,
}

impl LazyMeta {
    pub fn new(
        kind: crate::wire::ChannelKind,
        loc: &'static std::panic::Location<'static>,
    ) -> Self {
        let m = Self::lazy(kind, loc);
        let _ = m.meta.set(crate::chan::ChanMeta::new(kind, None, loc));
        m
    }

    pub const fn lazy(
        kind: crate::wire::ChannelKind,
        loc: &'static std::panic::Location<'static>,
    ) -> Self {
        LazyMeta {
            loc,
            kind,
            meta: std::sync::OnceLock::new(),
        }
    }

    /// Where the resource was created.
    pub fn location(&self) -> &'static std::panic::Location<'static> {
        self.loc
    }

    #[inline]
    pub fn get(&self) -> &std::sync::Arc<crate::chan::ChanMeta> {
        self.meta
            .get_or_init(|| crate::chan::ChanMeta::new(self.kind, None, self.loc))
    }
}

use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

/// The boxed tokio future of a slow path (the operation has to wait). `M` is a marker
/// type that is `Send` exactly when the boxed future is; each constructor call proves that
/// with a compile-time check (see `proofs` below).
pub(crate) struct Slow<'a, O, M> {
    fut: Pin<Box<dyn Future<Output = O> + 'a>>,
    _m: PhantomData<fn() -> M>,
}

// SAFETY: `Slow::new`'s contract: the boxed future is `Send` whenever `M` is.
unsafe impl<O, M: Send> Send for Slow<'_, O, M> {}
// SAFETY: no `&self` method reaches the future (it is only polled through `&mut self`), so
// sharing a `&Slow` between threads allows nothing.
unsafe impl<O, M> Sync for Slow<'_, O, M> {}

impl<'a, O, M> Slow<'a, O, M> {
    /// # Safety
    /// `fut` must be `Send` whenever `M` is `Send`.
    pub(crate) unsafe fn new(fut: impl Future<Output = O> + 'a) -> Self {
        Slow {
            fut: Box::pin(fut),
            _m: PhantomData,
        }
    }

    #[inline]
    pub(crate) fn poll(&mut self, cx: &mut Context<'_>) -> Poll<O> {
        self.fut.as_mut().poll(cx)
    }
}

/// Compile-time proofs of the `Slow::new` contract for every tokio future we box: these
/// generic functions only type-check if each future is `Send` under the stated bounds.
#[allow(dead_code)]
mod proofs {
    use std::time::Duration;
    use tokio::sync::{broadcast, mpsc, oneshot, watch};

    fn send<X: Send>(_: X) {}

    fn mpsc_ops<T: Send>(tx: &mpsc::Sender<T>, o: mpsc::Sender<T>, v: T) {
        send(tx.reserve());
        send(tx.reserve_many(2));
        send(o.reserve_owned());
        send(tx.closed());
        send(tx.send_timeout(v, Duration::ZERO));
    }
    fn unbounded_ops<T: Send>(tx: &mpsc::UnboundedSender<T>) {
        send(tx.closed());
    }
    fn oneshot_ops<T: Send>(tx: &mut oneshot::Sender<T>) {
        send(tx.closed());
    }
    fn broadcast_closed<T: Send>(tx: &broadcast::Sender<T>) {
        send(tx.closed());
    }
    fn broadcast_recv<T: Send + Clone>(rx: &mut broadcast::Receiver<T>) {
        send(rx.recv());
    }
    fn mutex_ops<T: Send + ?Sized>(m: &tokio::sync::Mutex<T>) {
        send(m.lock());
    }
    fn rwlock_ops<T: Send + Sync + ?Sized>(l: &tokio::sync::RwLock<T>) {
        send(l.read());
        send(l.write());
    }
    fn semaphore_ops(s: &tokio::sync::Semaphore) {
        send(s.acquire_many(1));
    }
    fn barrier_ops(b: &tokio::sync::Barrier) {
        send(b.wait());
    }
    fn watch_ops<T: Send + Sync, F: FnMut(&T) -> bool + Send>(
        tx: &watch::Sender<T>,
        rx: &mut watch::Receiver<T>,
        f: F,
    ) {
        send(tx.closed());
        send(rx.changed());
        send(rx.wait_for(f));
    }
}

/// Marker that is `Send` exactly when `T: Send + Sync` (watch's futures hold `&T`-like
/// shared state across awaits).
pub(crate) struct SendSync<T: ?Sized>(PhantomData<fn() -> T>);
// SAFETY: a pure marker with no data.
unsafe impl<T: Send + Sync + ?Sized> Send for SendSync<T> {}

#[cfg(test)]
mod lock_tests;
#[cfg(test)]
mod tests;
