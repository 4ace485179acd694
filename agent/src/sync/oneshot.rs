//! Instrumented [`tokio::sync::oneshot`]: a channel for sending a single value. Same API;
//! see the [module docs](super) for what is observed and where the mirror is not exact.
//!
//! The [`Receiver`] is itself the future: awaiting it where it returns Pending records the
//! `.await` (or the `poll` caller) as the blocking call site.
//!
//! A request answered by a task, and a task that stops when its caller gives up
//! ([`Sender::closed`]) instead of leaking:
//!
//! ```
//! use std::time::Duration;
//! use leaktop_agent::sync::oneshot; // was: use tokio::sync::oneshot;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() {
//!     let (tx, rx) = oneshot::channel();
//!     leaktop_agent::spawn(async move {
//!         let _ = tx.send(6 * 7);
//!     });
//!     assert_eq!(rx.await.unwrap(), 42);
//!
//!     let (mut tx, rx) = oneshot::channel::<u32>();
//!     let slow = leaktop_agent::spawn(async move {
//!         tokio::select! {
//!             _ = tx.closed() => "caller gave up",
//!             _ = tokio::time::sleep(Duration::from_secs(3600)) => "answered",
//!         }
//!     });
//!     drop(rx);
//!     assert_eq!(slow.await.unwrap(), "caller gave up");
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::sync::oneshot as tk;

use crate::blocked::Wait;
use crate::chan::{ChanMeta, RxToken, TxToken};
use crate::wire::{ChannelKind, Op};

use error::{RecvError, TryRecvError};
pub use tk::error;

/// Creates a oneshot channel, recording the caller as its creation site.
#[track_caller]
pub fn channel<T>() -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tk::channel();
    let meta = ChanMeta::new(ChannelKind::Oneshot, Some(1), Location::caller());
    (
        Sender {
            inner: tx,
            tok: TxToken::new(meta.clone()),
            wait: Wait::new(),
        },
        Receiver {
            inner: rx,
            tok: RxToken::new(meta),
            wait: Wait::new(),
        },
    )
}

/// Sends a value to the associated [`Receiver`]. See [`tokio::sync::oneshot::Sender`].
pub struct Sender<T> {
    inner: tk::Sender<T>,
    tok: TxToken,
    /// Blocked registration of `poll_closed`.
    wait: Wait,
}

impl<T: fmt::Debug> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("inner", &self.inner)
            .field("channel", &self.tok.meta().id)
            .finish()
    }
}

impl<T> Sender<T> {
    /// See [`tokio::sync::oneshot::Sender::send`].
    pub fn send(self, t: T) -> Result<(), T> {
        let Sender { inner, tok, wait } = self;
        drop(wait);
        let r = inner.send(t);
        if r.is_ok() {
            tok.meta().on_send(1);
        }
        r
    }

    /// Completes when the receiver has dropped or closed. See
    /// [`tokio::sync::oneshot::Sender::closed`].
    #[track_caller]
    pub fn closed(&mut self) -> Closed<'_, T> {
        Closed {
            inner: &mut self.inner,
            meta: self.tok.meta(),
            caller: Location::caller(),
            wait: Wait::new(),
        }
    }

    /// See [`tokio::sync::oneshot::Sender::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// See [`tokio::sync::oneshot::Sender::poll_closed`]; a Pending registers the task as
    /// blocked until a later call returns Ready or the sender is dropped or used.
    #[track_caller]
    pub fn poll_closed(&mut self, cx: &mut Context<'_>) -> Poll<()> {
        match self.inner.poll_closed(cx) {
            Poll::Pending => {
                self.wait
                    .pending(Op::Closed, self.tok.meta(), Location::caller());
                Poll::Pending
            }
            Poll::Ready(()) => {
                self.wait.ready();
                Poll::Ready(())
            }
        }
    }

    /// Escape hatch: tokio's sender. The agent no longer sees this handle.
    pub fn into_inner(self) -> tk::Sender<T> {
        self.inner
    }
}

/// Future of [`Sender::closed`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Closed<'a, T> {
    inner: &'a mut tk::Sender<T>,
    meta: &'a Arc<ChanMeta>,
    caller: &'static Location<'static>,
    wait: Wait,
}

impl<T> fmt::Debug for Closed<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Closed").field("wait", &self.wait).finish()
    }
}

impl<T> Future for Closed<'_, T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        ready!(this.wait.track(
            this.inner.poll_closed(cx),
            Op::Closed,
            this.meta,
            this.caller
        ));
        Poll::Ready(())
    }
}

/// Receives the value from the associated [`Sender`]; await it. See
/// [`tokio::sync::oneshot::Receiver`].
pub struct Receiver<T> {
    inner: tk::Receiver<T>,
    tok: RxToken,
    wait: Wait,
}

impl<T: fmt::Debug> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("inner", &self.inner)
            .field("channel", &self.tok.meta().id)
            .finish()
    }
}

impl<T> Receiver<T> {
    /// See [`tokio::sync::oneshot::Receiver::close`].
    pub fn close(&mut self) {
        self.inner.close();
        self.tok.meta().mark_closed();
    }

    /// See [`tokio::sync::oneshot::Receiver::is_terminated`].
    pub fn is_terminated(&self) -> bool {
        self.inner.is_terminated()
    }

    /// See [`tokio::sync::oneshot::Receiver::is_empty`].
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// See [`tokio::sync::oneshot::Receiver::try_recv`].
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let r = self.inner.try_recv();
        if r.is_ok() {
            self.tok.meta().on_recv_sole(1);
        }
        r
    }

    /// Blocking receive for synchronous code (counted as a message, never as a blocked
    /// task). See [`tokio::sync::oneshot::Receiver::blocking_recv`].
    #[track_caller]
    pub fn blocking_recv(self) -> Result<T, RecvError> {
        let Receiver { inner, tok, wait } = self;
        drop(wait);
        let r = inner.blocking_recv();
        if r.is_ok() {
            tok.meta().on_recv_sole(1);
        }
        r
    }

    /// Escape hatch: tokio's receiver. The agent no longer sees this handle.
    pub fn into_inner(self) -> tk::Receiver<T> {
        self.inner
    }
}

impl<T> Future for Receiver<T> {
    type Output = Result<T, RecvError>;

    #[track_caller]
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll(cx) {
            Poll::Pending => {
                this.wait
                    .pending(Op::Recv, this.tok.meta(), Location::caller());
                Poll::Pending
            }
            Poll::Ready(r) => {
                this.wait.ready();
                if r.is_ok() {
                    this.tok.meta().on_recv_sole(1);
                }
                Poll::Ready(r)
            }
        }
    }
}
