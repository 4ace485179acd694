//! [`JoinHandle`] and [`AbortHandle`]: tokio's, with the task table told when a handle is
//! awaited, aborted or dropped (detached), and the wait of a task awaiting another
//! recorded (op `join`, the awaited task's spawn site as the resource's site).

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::task::{Id, JoinError};

use crate::blocked::Wait;
use crate::chan::ChanMeta;
use crate::instrumented::{AbortLink, HandleLink};
use crate::wire::{ChannelKind, Op};

/// An owned permission to join on a task (await its termination). See
/// [`tokio::task::JoinHandle`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use leaktop_agent::task::JoinHandle; // was: use tokio::task::JoinHandle;
///
/// let handle: JoinHandle<u32> = leaktop_agent::spawn(async { 7 });
/// assert_eq!(handle.await.unwrap(), 7);
/// # }
/// ```
pub struct JoinHandle<T> {
    inner: tokio::task::JoinHandle<T>,
    link: HandleLink,
    /// The task's spawn site: the "creation site" of a wait on this handle.
    site: &'static Location<'static>,
    /// The handle's resource record, made on its first wait.
    meta: Option<Arc<ChanMeta>>,
    wait: Wait,
}

impl<T> JoinHandle<T> {
    pub(crate) fn new(
        inner: tokio::task::JoinHandle<T>,
        link: HandleLink,
        site: &'static Location<'static>,
    ) -> Self {
        JoinHandle {
            inner,
            link,
            site,
            meta: None,
            wait: Wait::new(),
        }
    }

    /// See [`tokio::task::JoinHandle::abort`].
    pub fn abort(&self) {
        self.link.aborted();
        self.inner.abort();
    }

    /// See [`tokio::task::JoinHandle::is_finished`].
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// See [`tokio::task::JoinHandle::abort_handle`].
    #[must_use = "don't forget to use the abort handle"]
    pub fn abort_handle(&self) -> AbortHandle {
        AbortHandle {
            inner: self.inner.abort_handle(),
            link: self.link.abort_link(),
        }
    }

    /// See [`tokio::task::JoinHandle::id`].
    pub fn id(&self) -> Id {
        self.inner.id()
    }

    /// Escape hatch: tokio's handle. The task stays counted; the agent no longer learns
    /// whether the handle is awaited (it counts as detached).
    pub fn into_inner(self) -> tokio::task::JoinHandle<T> {
        self.inner
    }
}

impl<T> Unpin for JoinHandle<T> {}

impl<T> Future for JoinHandle<T> {
    type Output = Result<T, JoinError>;

    /// Polls tokio's handle; a Pending records the caller (the `.await`) as waiting in
    /// `join` on this task.
    #[track_caller]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        this.link.awaited();
        match Pin::new(&mut this.inner).poll(cx) {
            Poll::Pending => {
                let site = this.site;
                let meta = this
                    .meta
                    .get_or_insert_with(|| ChanMeta::new(ChannelKind::JoinHandle, None, site));
                this.wait.pending(Op::Join, meta, Location::caller());
                Poll::Pending
            }
            Poll::Ready(r) => {
                this.wait.ready();
                this.link.finished();
                Poll::Ready(r)
            }
        }
    }
}

impl<T: fmt::Debug> fmt::Debug for JoinHandle<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JoinHandle")
            .field("id", &self.inner.id())
            .field("spawned_at", &self.site)
            .finish()
    }
}

/// An owned permission to abort a spawned task, without awaiting its completion. See
/// [`tokio::task::AbortHandle`].
#[derive(Clone)]
pub struct AbortHandle {
    inner: tokio::task::AbortHandle,
    link: AbortLink,
}

impl AbortHandle {
    pub(crate) fn new(inner: tokio::task::AbortHandle, link: AbortLink) -> Self {
        AbortHandle { inner, link }
    }

    /// See [`tokio::task::AbortHandle::abort`].
    pub fn abort(&self) {
        self.link.aborted();
        self.inner.abort();
    }

    /// See [`tokio::task::AbortHandle::is_finished`].
    pub fn is_finished(&self) -> bool {
        self.inner.is_finished()
    }

    /// See [`tokio::task::AbortHandle::id`].
    pub fn id(&self) -> Id {
        self.inner.id()
    }

    /// Escape hatch: tokio's handle (aborts through it are not reported).
    pub fn into_inner(self) -> tokio::task::AbortHandle {
        self.inner
    }
}

impl fmt::Debug for AbortHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}
