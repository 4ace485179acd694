//! Drop-in for [`tokio::task`]: every way to start a task counts it in the task table
//! under its `#[track_caller]` spawn site, and the handles ([`JoinHandle`],
//! [`AbortHandle`], [`JoinSet`]) behave as tokio's while telling the agent who awaits,
//! aborts or detaches a task.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use leaktop_agent::task::{self, JoinSet}; // was: use tokio::task::{self, JoinSet};
//!
//! let mut set = JoinSet::new();
//! for i in 0..3u32 {
//!     set.spawn(async move { i * 2 });
//! }
//! let blocking = task::spawn_blocking(|| 40 + 2);
//! let mut sum = 0;
//! while let Some(r) = set.join_next().await {
//!     sum += r.unwrap();
//! }
//! assert_eq!((sum, blocking.await.unwrap()), (6, 42));
//! # }
//! ```
//!
//! - [`spawn_blocking`] closures are counted as tasks of a *blocking* site while they run
//!   (waiting for a blocking thread they are counted, idle).
//! - [`Builder::name`] names a task; the name is kept with the task for the views.
//! - Items that start nothing are tokio's own, re-exported: [`yield_now`],
//!   [`consume_budget`], [`unconstrained`], [`coop`], [`Id`], [`id`], [`try_id`],
//!   [`JoinError`], [`LocalKey`], [`LocalEnterGuard`], [`futures`].
//!   `block_in_place` needs tokio's `rt-multi-thread` feature, which the agent does not
//!   enable: keep using `tokio::task::block_in_place`.

mod builder;
mod join;
pub mod join_set;
mod local;

use std::future::Future;
use std::panic::Location;

pub use builder::Builder;
pub use join::{AbortHandle, JoinHandle};
pub use join_set::JoinSet;
pub use local::LocalSet;
pub use tokio::task::{
    consume_budget, coop, futures, id, try_id, unconstrained, yield_now, Id, JoinError,
    LocalEnterGuard, LocalKey, Unconstrained,
};

use crate::instrumented::{instrument_with, HandleLink, Instrumented, TaskOptions};

type Caller = &'static Location<'static>;

/// `fut` counted in the task table as a task of `loc`.
fn instrumented<F: Future>(
    fut: F,
    loc: Caller,
    name: Option<&str>,
    blocking: bool,
) -> (Instrumented<F>, HandleLink) {
    instrument_with(
        fut,
        loc,
        TaskOptions {
            name: name.map(str::to_owned),
            blocking,
        },
    )
}

/// Runs a tokio spawn call: tokio's runtime hooks (feature `tokio-hooks`) must not count
/// the task again.
#[inline]
fn unhooked<R>(spawn: impl FnOnce() -> R) -> R {
    #[cfg(all(feature = "tokio-hooks", tokio_unstable))]
    let _skip = crate::hooks::SkipHook::new();
    spawn()
}

/// A blocking closure as a task of a blocking site: the returned closure runs `f` inside
/// the task's poll (so the task is "running" while it does, and waits inside it are the
/// task's).
fn blocking_task<F, R>(f: F, loc: Caller, name: Option<&str>) -> (impl FnOnce() -> R, HandleLink)
where
    F: FnOnce() -> R,
{
    let (task, link) = instrumented(async move { f() }, loc, name, true);
    let run = move || {
        let mut task = std::pin::pin!(task);
        let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
        match task.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(v) => v,
            // An `async` block without `.await` completes in its first poll.
            std::task::Poll::Pending => unreachable!("a blocking closure never waits"),
        }
    };
    (run, link)
}

/// Drop-in for [`tokio::spawn`]: the task is counted under the caller's location.
#[track_caller]
pub fn spawn<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    spawn_at(future, Location::caller(), None, None)
}

pub(crate) fn spawn_at<F>(
    future: F,
    loc: Caller,
    name: Option<&str>,
    handle: Option<&tokio::runtime::Handle>,
) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    let (task, link) = instrumented(future, loc, name, false);
    let inner = unhooked(|| match handle {
        Some(h) => h.spawn(task),
        None => tokio::spawn(task),
    });
    JoinHandle::new(inner, link, loc)
}

/// Drop-in for [`tokio::task::spawn_local`] (inside a [`LocalSet`], or tokio's).
#[track_caller]
pub fn spawn_local<F>(future: F) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    spawn_local_at(future, Location::caller(), None, None)
}

fn spawn_local_at<F>(
    future: F,
    loc: Caller,
    name: Option<&str>,
    set: Option<&LocalSet>,
) -> JoinHandle<F::Output>
where
    F: Future + 'static,
    F::Output: 'static,
{
    let (task, link) = instrumented(future, loc, name, false);
    let inner = unhooked(|| match set {
        Some(s) => s.as_tokio().spawn_local(task),
        None => tokio::task::spawn_local(task),
    });
    JoinHandle::new(inner, link, loc)
}

/// Drop-in for [`tokio::task::spawn_blocking`]: the closure is counted as a task of a
/// blocking site (`SiteKind::Blocking`) under the caller's location.
#[track_caller]
pub fn spawn_blocking<F, R>(f: F) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    spawn_blocking_at(f, Location::caller(), None, None)
}

pub(crate) fn spawn_blocking_at<F, R>(
    f: F,
    loc: Caller,
    name: Option<&str>,
    handle: Option<&tokio::runtime::Handle>,
) -> JoinHandle<R>
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    let (run, link) = blocking_task(f, loc, name);
    let inner = unhooked(|| match handle {
        Some(h) => h.spawn_blocking(run),
        None => tokio::task::spawn_blocking(run),
    });
    JoinHandle::new(inner, link, loc)
}
