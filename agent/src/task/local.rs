//! [`LocalSet`]: tokio's, whose `spawn_local` counts its tasks in the task table.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

use super::{spawn_local_at, JoinHandle};

/// A set of `!Send` tasks run on the same thread. See [`tokio::task::LocalSet`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::rc::Rc;
/// use leaktop_agent::task::LocalSet; // was: use tokio::task::LocalSet;
///
/// let local = LocalSet::new();
/// let shared = Rc::new(5);
/// let s = shared.clone();
/// let v = local.run_until(async move {
///     leaktop_agent::task::spawn_local(async move { *s + 1 }).await.unwrap()
/// }).await;
/// assert_eq!(v, 6);
/// # }
/// ```
#[derive(Default)]
pub struct LocalSet {
    inner: tokio::task::LocalSet,
}

impl LocalSet {
    /// See [`tokio::task::LocalSet::new`].
    pub fn new() -> LocalSet {
        LocalSet::default()
    }

    /// See [`tokio::task::LocalSet::enter`].
    pub fn enter(&self) -> tokio::task::LocalEnterGuard {
        self.inner.enter()
    }

    /// Spawns a `!Send` task on this set, counted under the caller's location. See
    /// [`tokio::task::LocalSet::spawn_local`].
    #[track_caller]
    pub fn spawn_local<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        spawn_local_at(future, Location::caller(), None, Some(self))
    }

    /// See [`tokio::task::LocalSet::block_on`].
    #[track_caller]
    pub fn block_on<F: Future>(&self, rt: &tokio::runtime::Runtime, future: F) -> F::Output {
        self.inner.block_on(rt, future)
    }

    /// See [`tokio::task::LocalSet::run_until`].
    pub fn run_until<F: Future>(&self, future: F) -> impl Future<Output = F::Output> + use<'_, F> {
        self.inner.run_until(future)
    }

    /// Escape hatch: tokio's set (tasks spawned through it directly are not counted).
    pub fn as_tokio(&self) -> &tokio::task::LocalSet {
        &self.inner
    }
}

impl Future for LocalSet {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        Pin::new(&mut self.get_mut().inner).poll(cx)
    }
}

impl fmt::Debug for LocalSet {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}
