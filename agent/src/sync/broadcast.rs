//! Instrumented [`tokio::sync::broadcast`]: a multi-producer, multi-consumer channel where
//! every receiver sees every value. Same API; see the [module docs](super) for what is
//! observed and where the mirror is not exact.
//!
//! The channel table counts a value once when sent and once per receiver that receives
//! it; a channel's length is not tracked (it differs per receiver).
//!
//! ```
//! use leaktop_agent::sync::broadcast; // was: use tokio::sync::broadcast;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() {
//!     let (tx, _) = broadcast::channel::<&str>(16);
//!     let listeners: Vec<_> = (0..2)
//!         .map(|_| {
//!             let mut rx = tx.subscribe();
//!             leaktop_agent::spawn(async move {
//!                 let mut seen = Vec::new();
//!                 while let Ok(event) = rx.recv().await {
//!                     seen.push(event);
//!                 }
//!                 seen // `recv` fails with `Closed` once every sender is gone
//!             })
//!         })
//!         .collect();
//!     tx.send("config reloaded").unwrap();
//!     drop(tx);
//!     for listener in listeners {
//!         assert_eq!(listener.await.unwrap(), ["config reloaded"]);
//!     }
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::sync::broadcast as tk;
use tokio::task::coop;

use super::Slow;
use crate::blocked::Wait;
use crate::chan::{ChanMeta, RxToken, TxToken};
use crate::wire::{ChannelKind, Op};

use error::{RecvError, SendError, TryRecvError};
pub use tk::error;

/// Creates a broadcast channel holding up to `capacity` values, recording the caller as
/// its creation site. Like [`tokio::sync::broadcast::channel`], panics if `capacity` is 0
/// or too large.
#[track_caller]
pub fn channel<T: Clone>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tk::channel(capacity);
    let meta = ChanMeta::new(
        ChannelKind::Broadcast,
        Some(capacity as u64),
        Location::caller(),
    );
    (
        Sender {
            inner: tx,
            tok: TxToken::new(meta.clone()),
        },
        Receiver {
            inner: rx,
            tok: RxToken::new(meta),
        },
    )
}

/// Sends values to every [`Receiver`]. See [`tokio::sync::broadcast::Sender`].
pub struct Sender<T> {
    inner: tk::Sender<T>,
    tok: TxToken,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            inner: self.inner.clone(),
            tok: self.tok.clone(),
        }
    }
}

impl<T> fmt::Debug for Sender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sender")
            .field("inner", &self.inner)
            .field("channel", &self.tok.meta().id)
            .finish()
    }
}

impl<T> Sender<T> {
    /// A sender of a new channel with no receivers yet, recording the caller as its
    /// creation site. See [`tokio::sync::broadcast::Sender::new`].
    #[track_caller]
    pub fn new(capacity: usize) -> Self {
        let inner = tk::Sender::new(capacity);
        let meta = ChanMeta::new(
            ChannelKind::Broadcast,
            Some(capacity as u64),
            Location::caller(),
        );
        Sender {
            inner,
            tok: TxToken::new(meta),
        }
    }

    /// See [`tokio::sync::broadcast::Sender::send`].
    pub fn send(&self, value: T) -> Result<usize, SendError<T>> {
        let r = self.inner.send(value);
        if r.is_ok() {
            self.tok.meta().on_send(1);
        }
        r
    }

    /// See [`tokio::sync::broadcast::Sender::subscribe`].
    pub fn subscribe(&self) -> Receiver<T> {
        Receiver {
            inner: self.inner.subscribe(),
            tok: RxToken::new(self.tok.meta().clone()),
        }
    }

    /// See [`tokio::sync::broadcast::Sender::downgrade`].
    pub fn downgrade(&self) -> WeakSender<T> {
        WeakSender {
            inner: self.inner.downgrade(),
            meta: self.tok.meta().clone(),
        }
    }

    /// See [`tokio::sync::broadcast::Sender::len`].
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// See [`tokio::sync::broadcast::Sender::is_empty`].
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// See [`tokio::sync::broadcast::Sender::receiver_count`].
    pub fn receiver_count(&self) -> usize {
        self.inner.receiver_count()
    }

    /// See [`tokio::sync::broadcast::Sender::same_channel`].
    pub fn same_channel(&self, other: &Self) -> bool {
        self.inner.same_channel(&other.inner)
    }

    /// Completes when every receiver has dropped. See
    /// [`tokio::sync::broadcast::Sender::closed`].
    #[track_caller]
    pub fn closed(&self) -> Closed<'_, T> {
        let inner = &self.inner;
        Closed {
            // SAFETY: proofs::broadcast_closed.
            slow: unsafe { Slow::new(inner.closed()) },
            meta: self.tok.meta(),
            caller: Location::caller(),
            wait: Wait::new(),
        }
    }

    /// See [`tokio::sync::broadcast::Sender::strong_count`].
    pub fn strong_count(&self) -> usize {
        self.inner.strong_count()
    }

    /// See [`tokio::sync::broadcast::Sender::weak_count`].
    pub fn weak_count(&self) -> usize {
        self.inner.weak_count()
    }

    /// Escape hatch: tokio's sender. The agent no longer sees this handle.
    pub fn into_inner(self) -> tk::Sender<T> {
        self.inner
    }
}

/// A [`Sender`] that does not keep the channel open. See
/// [`tokio::sync::broadcast::WeakSender`].
pub struct WeakSender<T> {
    inner: tk::WeakSender<T>,
    meta: Arc<ChanMeta>,
}

impl<T> Clone for WeakSender<T> {
    fn clone(&self) -> Self {
        WeakSender {
            inner: self.inner.clone(),
            meta: self.meta.clone(),
        }
    }
}

impl<T> fmt::Debug for WeakSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakSender")
            .field("inner", &self.inner)
            .field("channel", &self.meta.id)
            .finish()
    }
}

impl<T> WeakSender<T> {
    /// See [`tokio::sync::broadcast::WeakSender::upgrade`].
    pub fn upgrade(&self) -> Option<Sender<T>> {
        self.inner.upgrade().map(|inner| Sender {
            inner,
            tok: TxToken::new(self.meta.clone()),
        })
    }

    /// See [`tokio::sync::broadcast::WeakSender::strong_count`].
    pub fn strong_count(&self) -> usize {
        self.inner.strong_count()
    }

    /// See [`tokio::sync::broadcast::WeakSender::weak_count`].
    pub fn weak_count(&self) -> usize {
        self.inner.weak_count()
    }
}

/// Future of [`Sender::closed`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Closed<'a, T> {
    slow: Slow<'a, (), T>,
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
        ready!(this
            .wait
            .track(this.slow.poll(cx), Op::Closed, this.meta, this.caller));
        Poll::Ready(())
    }
}

/// Receives every value sent after it subscribed. See
/// [`tokio::sync::broadcast::Receiver`].
pub struct Receiver<T> {
    inner: tk::Receiver<T>,
    tok: RxToken,
}

impl<T> fmt::Debug for Receiver<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Receiver")
            .field("inner", &self.inner)
            .field("channel", &self.tok.meta().id)
            .finish()
    }
}

impl<T> Receiver<T> {
    /// See [`tokio::sync::broadcast::Receiver::len`].
    pub fn len(&self) -> usize {
        self.inner.len()
    }

    /// See [`tokio::sync::broadcast::Receiver::is_empty`].
    pub fn is_empty(&self) -> bool {
        self.inner.is_empty()
    }

    /// See [`tokio::sync::broadcast::Receiver::same_channel`].
    pub fn same_channel(&self, other: &Self) -> bool {
        self.inner.same_channel(&other.inner)
    }

    /// See [`tokio::sync::broadcast::Receiver::sender_strong_count`].
    pub fn sender_strong_count(&self) -> usize {
        self.inner.sender_strong_count()
    }

    /// See [`tokio::sync::broadcast::Receiver::sender_weak_count`].
    pub fn sender_weak_count(&self) -> usize {
        self.inner.sender_weak_count()
    }

    /// See [`tokio::sync::broadcast::Receiver::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Escape hatch: tokio's receiver. The agent no longer sees this handle.
    pub fn into_inner(self) -> tk::Receiver<T> {
        self.inner
    }
}

impl<T: Clone> Receiver<T> {
    /// See [`tokio::sync::broadcast::Receiver::resubscribe`].
    pub fn resubscribe(&self) -> Self {
        Receiver {
            inner: self.inner.resubscribe(),
            tok: RxToken::new(self.tok.meta().clone()),
        }
    }

    /// Receives the next value. See [`tokio::sync::broadcast::Receiver::recv`].
    #[track_caller]
    pub fn recv(&mut self) -> Recv<'_, T> {
        self.recv_at(Location::caller())
    }

    /// [`Self::recv`] with the call site given (stream adapters).
    pub(crate) fn recv_at(&mut self, caller: &'static Location<'static>) -> Recv<'_, T> {
        Recv {
            inner: Some(&mut self.inner),
            meta: self.tok.meta(),
            slow: None,
            caller,
            wait: Wait::new(),
        }
    }

    /// See [`tokio::sync::broadcast::Receiver::try_recv`].
    pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
        let r = self.inner.try_recv();
        if r.is_ok() {
            self.tok.meta().on_recv(1);
        }
        r
    }

    /// Blocking receive for synchronous code (counted as a message, never as a blocked
    /// task). See [`tokio::sync::broadcast::Receiver::blocking_recv`].
    #[track_caller]
    pub fn blocking_recv(&mut self) -> Result<T, RecvError> {
        let r = self.inner.blocking_recv();
        if r.is_ok() {
            self.tok.meta().on_recv(1);
        }
        r
    }
}

/// Future of [`Receiver::recv`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Recv<'a, T> {
    /// Set until the slow path takes it.
    inner: Option<&'a mut tk::Receiver<T>>,
    meta: &'a Arc<ChanMeta>,
    slow: Option<Slow<'a, Result<T, RecvError>, T>>,
    caller: &'static Location<'static>,
    wait: Wait,
}

impl<T> fmt::Debug for Recv<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Recv").field("wait", &self.wait).finish()
    }
}

impl<'a, T: Clone> Future for Recv<'a, T> {
    type Output = Result<T, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let slow = match &mut this.slow {
            Some(slow) => slow,
            None => {
                let coop = ready!(coop::poll_proceed(cx));
                let Some(inner) = this.inner.take() else {
                    panic!("broadcast::Recv polled after completion")
                };
                match inner.try_recv() {
                    Ok(v) => {
                        coop.made_progress();
                        this.meta.on_recv(1);
                        return Poll::Ready(Ok(v));
                    }
                    Err(TryRecvError::Lagged(n)) => {
                        coop.made_progress();
                        return Poll::Ready(Err(RecvError::Lagged(n)));
                    }
                    Err(TryRecvError::Closed) => {
                        coop.made_progress();
                        return Poll::Ready(Err(RecvError::Closed));
                    }
                    Err(TryRecvError::Empty) => {
                        drop(coop);
                        // SAFETY: proofs::broadcast_recv.
                        this.slow.insert(unsafe { Slow::new(inner.recv()) })
                    }
                }
            }
        };
        let r = ready!(this
            .wait
            .track(slow.poll(cx), Op::Recv, this.meta, this.caller));
        if r.is_ok() {
            this.meta.on_recv(1);
        }
        Poll::Ready(r)
    }
}
