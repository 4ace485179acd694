//! [`JoinSet`]: tokio's, with its tasks counted under their spawn sites and a task
//! waiting in `join_next` recorded (op `join`, the set's creation site).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::task::{Context, Poll};

use tokio::task::{Id, JoinError};

use super::{blocking_task, instrumented, unhooked, AbortHandle, Caller, LocalSet};
use crate::blocked::Wait;
use crate::instrumented::HandleLink;
use crate::sync::LazyMeta;
use crate::wire::{ChannelKind, Op};

/// A collection of tasks spawned on a runtime, joined in completion order. See
/// [`tokio::task::JoinSet`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use leaktop_agent::task::JoinSet; // was: use tokio::task::JoinSet;
///
/// let mut set: JoinSet<u32> = (1..=3).map(|i| async move { i }).collect();
/// set.spawn(async { 10 });
/// let mut all = set.join_all().await;
/// all.sort();
/// assert_eq!(all, [1, 2, 3, 10]);
/// # }
/// ```
pub struct JoinSet<T> {
    inner: tokio::task::JoinSet<T>,
    /// The handle links of the tasks not joined yet.
    links: HashMap<Id, HandleLink>,
    /// The set's resource record (made on its first wait).
    meta: LazyMeta,
    /// Blocked registration of `poll_join_next*`.
    wait: Wait,
}

impl<T> JoinSet<T> {
    /// An empty set, recording the caller as its creation site. See
    /// [`tokio::task::JoinSet::new`].
    #[track_caller]
    pub fn new() -> Self {
        JoinSet {
            inner: tokio::task::JoinSet::new(),
            links: HashMap::new(),
            meta: LazyMeta::lazy(ChannelKind::JoinSet, Location::caller()),
            wait: Wait::new(),
        }
    }

    /// See [`tokio::task::JoinSet::len`].
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// See [`tokio::task::JoinSet::is_empty`].
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }
}

impl<T: 'static> JoinSet<T> {
    fn insert(&mut self, inner: tokio::task::AbortHandle, link: HandleLink) -> AbortHandle {
        let handle = AbortHandle::new(inner, link.abort_link());
        self.links.insert(handle.id(), link);
        handle
    }

    fn spawn_at<F>(
        &mut self,
        task: F,
        loc: Caller,
        handle: Option<&tokio::runtime::Handle>,
    ) -> AbortHandle
    where
        F: Future<Output = T> + Send + 'static,
        T: Send,
    {
        let (task, link) = instrumented(task, loc, None, false);
        let inner = unhooked(|| match handle {
            Some(h) => self.inner.spawn_on(task, h),
            None => self.inner.spawn(task),
        });
        self.insert(inner, link)
    }

    /// Spawns `task` into the set, counted under the caller's location. See
    /// [`tokio::task::JoinSet::spawn`].
    #[track_caller]
    pub fn spawn<F>(&mut self, task: F) -> AbortHandle
    where
        F: Future<Output = T> + Send + 'static,
        T: Send,
    {
        self.spawn_at(task, Location::caller(), None)
    }

    /// See [`tokio::task::JoinSet::spawn_on`].
    #[track_caller]
    pub fn spawn_on<F>(&mut self, task: F, handle: &tokio::runtime::Handle) -> AbortHandle
    where
        F: Future<Output = T> + Send + 'static,
        T: Send,
    {
        self.spawn_at(task, Location::caller(), Some(handle))
    }

    /// See [`tokio::task::JoinSet::spawn_local`].
    #[track_caller]
    pub fn spawn_local<F>(&mut self, task: F) -> AbortHandle
    where
        F: Future<Output = T> + 'static,
    {
        let (task, link) = instrumented(task, Location::caller(), None, false);
        let inner = unhooked(|| self.inner.spawn_local(task));
        self.insert(inner, link)
    }

    /// See [`tokio::task::JoinSet::spawn_local_on`].
    #[track_caller]
    pub fn spawn_local_on<F>(&mut self, task: F, local_set: &LocalSet) -> AbortHandle
    where
        F: Future<Output = T> + 'static,
    {
        let (task, link) = instrumented(task, Location::caller(), None, false);
        let inner = unhooked(|| self.inner.spawn_local_on(task, local_set.as_tokio()));
        self.insert(inner, link)
    }

    /// See [`tokio::task::JoinSet::spawn_blocking`]; counted at a blocking site.
    #[track_caller]
    pub fn spawn_blocking<F>(&mut self, f: F) -> AbortHandle
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send,
    {
        let (run, link) = blocking_task(f, Location::caller(), None);
        let inner = unhooked(|| self.inner.spawn_blocking(run));
        self.insert(inner, link)
    }

    /// See [`tokio::task::JoinSet::spawn_blocking_on`].
    #[track_caller]
    pub fn spawn_blocking_on<F>(&mut self, f: F, handle: &tokio::runtime::Handle) -> AbortHandle
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send,
    {
        let (run, link) = blocking_task(f, Location::caller(), None);
        let inner = unhooked(|| self.inner.spawn_blocking_on(run, handle));
        self.insert(inner, link)
    }

    /// The task of `res` was joined: its handle link is done.
    fn joined(&mut self, res: &Result<(Id, T), JoinError>) {
        let id = match res {
            Ok((id, _)) => *id,
            Err(e) => e.id(),
        };
        if let Some(mut link) = self.links.remove(&id) {
            link.finished();
        }
    }

    fn poll_at(
        &mut self,
        cx: &mut Context<'_>,
        wait: &mut Wait,
        caller: Caller,
    ) -> Poll<Option<Result<(Id, T), JoinError>>> {
        match self.inner.poll_join_next_with_id(cx) {
            Poll::Pending => {
                wait.pending(Op::Join, self.meta.get(), caller);
                Poll::Pending
            }
            Poll::Ready(r) => {
                wait.ready();
                if let Some(res) = &r {
                    self.joined(res);
                }
                Poll::Ready(r)
            }
        }
    }

    /// Waits for one of the tasks to complete. See
    /// [`tokio::task::JoinSet::join_next`].
    #[track_caller]
    pub fn join_next(&mut self) -> impl Future<Output = Option<Result<T, JoinError>>> + use<'_, T> {
        let caller = Location::caller();
        let mut wait = Wait::new();
        std::future::poll_fn(move |cx| {
            self.poll_at(cx, &mut wait, caller)
                .map(|r| r.map(|r| r.map(|(_, v)| v)))
        })
    }

    /// See [`tokio::task::JoinSet::join_next_with_id`].
    #[track_caller]
    pub fn join_next_with_id(
        &mut self,
    ) -> impl Future<Output = Option<Result<(Id, T), JoinError>>> + use<'_, T> {
        let caller = Location::caller();
        let mut wait = Wait::new();
        std::future::poll_fn(move |cx| self.poll_at(cx, &mut wait, caller))
    }

    /// See [`tokio::task::JoinSet::try_join_next`].
    pub fn try_join_next(&mut self) -> Option<Result<T, JoinError>> {
        self.try_join_next_with_id().map(|r| r.map(|(_, v)| v))
    }

    /// See [`tokio::task::JoinSet::try_join_next_with_id`].
    pub fn try_join_next_with_id(&mut self) -> Option<Result<(Id, T), JoinError>> {
        let r = self.inner.try_join_next_with_id()?;
        self.joined(&r);
        Some(r)
    }

    /// Aborts every task and waits for them to stop. See
    /// [`tokio::task::JoinSet::shutdown`].
    #[track_caller]
    pub fn shutdown(&mut self) -> impl Future<Output = ()> + use<'_, T> {
        let caller = Location::caller();
        self.abort_all();
        let mut wait = Wait::new();
        std::future::poll_fn(move |cx| loop {
            match std::task::ready!(self.poll_at(cx, &mut wait, caller)) {
                Some(_) => continue,
                None => return Poll::Ready(()),
            }
        })
    }

    /// Waits for every task and returns their outputs; panics as tokio's does when one
    /// failed. See [`tokio::task::JoinSet::join_all`].
    #[track_caller]
    pub fn join_all(mut self) -> impl Future<Output = Vec<T>> + use<T> {
        let caller = Location::caller();
        async move {
            let mut output = Vec::with_capacity(self.len());
            let mut wait = Wait::new();
            while let Some(res) =
                std::future::poll_fn(|cx| self.poll_at(cx, &mut wait, caller)).await
            {
                match res {
                    Ok((_, t)) => output.push(t),
                    Err(err) if err.is_panic() => std::panic::resume_unwind(err.into_panic()),
                    Err(err) => panic!("{err}"),
                }
            }
            output
        }
    }

    /// See [`tokio::task::JoinSet::abort_all`].
    pub fn abort_all(&mut self) {
        for link in self.links.values() {
            link.aborted();
        }
        self.inner.abort_all();
    }

    /// See [`tokio::task::JoinSet::detach_all`]: the tasks count as detached.
    pub fn detach_all(&mut self) {
        self.inner.detach_all();
        self.links.clear();
    }

    /// Polls for one of the tasks to complete; a Pending records the caller as waiting
    /// until a later call returns Ready or the set is dropped. See
    /// [`tokio::task::JoinSet::poll_join_next`].
    #[track_caller]
    pub fn poll_join_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<T, JoinError>>> {
        self.poll_join_next_with_id(cx)
            .map(|r| r.map(|r| r.map(|(_, v)| v)))
    }

    /// See [`tokio::task::JoinSet::poll_join_next_with_id`] and
    /// [`JoinSet::poll_join_next`].
    #[track_caller]
    pub fn poll_join_next_with_id(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<(Id, T), JoinError>>> {
        let mut wait = std::mem::take(&mut self.wait);
        let r = self.poll_at(cx, &mut wait, Location::caller());
        self.wait = wait;
        r
    }
}

impl<T> Drop for JoinSet<T> {
    fn drop(&mut self) {
        // tokio's set aborts its tasks when dropped.
        for link in self.links.values() {
            link.aborted();
        }
    }
}

impl<T> fmt::Debug for JoinSet<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl<T> Default for JoinSet<T> {
    #[track_caller]
    fn default() -> Self {
        Self::new()
    }
}

impl<T, F> std::iter::FromIterator<F> for JoinSet<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    /// Spawns every future (counted where `collect` is called when the compiler can tell,
    /// else in the standard library's `collect`).
    #[track_caller]
    fn from_iter<I: IntoIterator<Item = F>>(iter: I) -> Self {
        let loc = Location::caller();
        let mut set = JoinSet {
            inner: tokio::task::JoinSet::new(),
            links: HashMap::new(),
            meta: LazyMeta::lazy(ChannelKind::JoinSet, loc),
            wait: Wait::new(),
        };
        for task in iter {
            set.spawn_at(task, loc, None);
        }
        set
    }
}

impl<T, F> std::iter::Extend<F> for JoinSet<T>
where
    F: Future<Output = T> + Send + 'static,
    T: Send + 'static,
{
    /// Spawns every future (whatever the tokio version).
    #[track_caller]
    fn extend<I: IntoIterator<Item = F>>(&mut self, iter: I) {
        let loc = Location::caller();
        for task in iter {
            self.spawn_at(task, loc, None);
        }
    }
}
