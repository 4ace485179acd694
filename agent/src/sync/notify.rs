//! Instrumented [`tokio::sync::Notify`]: same API and semantics (it wraps tokio's), plus
//! who waits in `notified()` (op `notify`, since when, call site, creation site).

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::sync as tk;

use super::LazyMeta;
use crate::blocked::Wait;
use crate::wire::{ChannelKind, Op};

/// Notifies one task or all waiting tasks. See [`tokio::sync::Notify`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use leaktop_agent::sync::Notify; // was: use tokio::sync::Notify;
///
/// let notify = Arc::new(Notify::new());
/// let n = notify.clone();
/// let waiter = leaktop_agent::spawn(async move { n.notified().await });
/// notify.notify_one();
/// waiter.await.unwrap();
/// # }
/// ```
pub struct Notify {
    meta: LazyMeta,
    inner: tk::Notify,
}

impl Notify {
    /// See [`tokio::sync::Notify::new`]; the caller is recorded as its creation site.
    #[track_caller]
    pub fn new() -> Notify {
        Notify {
            meta: LazyMeta::new(ChannelKind::Notify, Location::caller()),
            inner: tk::Notify::new(),
        }
    }

    /// See [`tokio::sync::Notify::const_new`]; the agent record is made on first use.
    #[track_caller]
    pub const fn const_new() -> Notify {
        Notify {
            meta: LazyMeta::lazy(ChannelKind::Notify, Location::caller()),
            inner: tk::Notify::const_new(),
        }
    }

    /// Waits for a notification. See [`tokio::sync::Notify::notified`].
    #[track_caller]
    pub fn notified(&self) -> Notified<'_> {
        Notified {
            inner: self.inner.notified(),
            meta: &self.meta,
            caller: Location::caller(),
            wait: Wait::new(),
        }
    }

    /// See [`tokio::sync::Notify::notified_owned`].
    #[track_caller]
    pub fn notified_owned(self: Arc<Self>) -> OwnedNotified {
        // SAFETY: the `Arc` is stored beside the borrow in `OwnedNotified` and dropped
        // after it (field order); an `Arc`'s pointee never moves.
        let n: &'static Notify = unsafe { &*Arc::as_ptr(&self) };
        OwnedNotified {
            inner: n.inner.notified(),
            caller: Location::caller(),
            wait: Wait::new(),
            notify: self,
        }
    }

    /// See [`tokio::sync::Notify::notify_one`].
    pub fn notify_one(&self) {
        self.inner.notify_one()
    }

    /// See [`tokio::sync::Notify::notify_last`].
    pub fn notify_last(&self) {
        self.inner.notify_last()
    }

    /// See [`tokio::sync::Notify::notify_waiters`].
    pub fn notify_waiters(&self) {
        self.inner.notify_waiters()
    }

    /// Escape hatch: tokio's `Notify` inside (waits through it are not seen).
    pub fn as_tokio(&self) -> &tk::Notify {
        &self.inner
    }
}

impl Default for Notify {
    #[track_caller]
    fn default() -> Notify {
        Notify::new()
    }
}

impl fmt::Debug for Notify {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

pin_project_lite::pin_project! {
    /// Future of [`Notify::notified`]. See `tokio::sync::futures::Notified`.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct Notified<'a> {
        #[pin]
        inner: tk::futures::Notified<'a>,
        meta: &'a LazyMeta,
        caller: &'static Location<'static>,
        wait: Wait,
    }
}

impl Notified<'_> {
    /// See `tokio::sync::futures::Notified::enable`.
    pub fn enable(self: Pin<&mut Self>) -> bool {
        self.project().inner.enable()
    }
}

impl fmt::Debug for Notified<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Notified")
            .field("inner", &self.inner)
            .field("wait", &self.wait)
            .finish()
    }
}

impl Future for Notified<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        this.wait.track(
            this.inner.poll(cx),
            Op::Notified,
            this.meta.get(),
            this.caller,
        )
    }
}

pin_project_lite::pin_project! {
    /// Future of [`Notify::notified_owned`]. See `tokio::sync::futures::OwnedNotified`.
    #[must_use = "futures do nothing unless you `.await` or poll them"]
    pub struct OwnedNotified {
        // Borrows from `notify`: declared (so dropped) first.
        #[pin]
        inner: tk::futures::Notified<'static>,
        caller: &'static Location<'static>,
        wait: Wait,
        notify: Arc<Notify>,
    }
}

impl OwnedNotified {
    /// See `tokio::sync::futures::OwnedNotified::enable`.
    pub fn enable(self: Pin<&mut Self>) -> bool {
        self.project().inner.enable()
    }
}

impl fmt::Debug for OwnedNotified {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedNotified")
            .field("inner", &self.inner)
            .field("wait", &self.wait)
            .finish()
    }
}

impl Future for OwnedNotified {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.project();
        let meta = this.notify.meta.get();
        this.wait
            .track(this.inner.poll(cx), Op::Notified, meta, this.caller)
    }
}
