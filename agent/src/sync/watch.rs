//! Instrumented [`tokio::sync::watch`]: a single-value channel whose receivers see the
//! latest value. Same API; see the [module docs](super) for what is observed and where the
//! mirror is not exact.
//!
//! The channel table counts `send`, `send_modify`, `send_replace` and a modifying
//! `send_if_modified` as sends, and each completed `changed` / `wait_for` as a receive.
//!
//! ```
//! use leaktop_agent::sync::watch; // was: use tokio::sync::watch;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() {
//!     let (tx, mut rx) = watch::channel("starting");
//!     let ready = leaktop_agent::spawn(async move {
//!         // Waits for the value, and ends (with an error) if the sender goes away first:
//!         // a watcher that never returns would be a `changed` wait that leaktop flags.
//!         rx.wait_for(|state| *state == "ready").await.map(|s| *s)
//!     });
//!     tx.send("loading").unwrap();
//!     tx.send("ready").unwrap();
//!     assert_eq!(ready.await.unwrap().ok(), Some("ready"));
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::sync::watch as tk;
use tokio::task::coop;

use super::{SendSync, Slow};
use crate::blocked::Wait;
use crate::chan::{ChanMeta, RxToken, TxToken};
use crate::wire::{ChannelKind, Op};

use error::{RecvError, SendError};
pub use tk::{error, Ref};

/// Creates a watch channel holding `init`, recording the caller as its creation site.
#[track_caller]
pub fn channel<T>(init: T) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tk::channel(init);
    let meta = ChanMeta::new(ChannelKind::Watch, None, Location::caller());
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

/// Receives the latest value. See [`tokio::sync::watch::Receiver`].
pub struct Receiver<T> {
    inner: tk::Receiver<T>,
    tok: RxToken,
}

impl<T> Clone for Receiver<T> {
    fn clone(&self) -> Self {
        Receiver {
            inner: self.inner.clone(),
            tok: self.tok.clone(),
        }
    }
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
    /// See [`tokio::sync::watch::Receiver::borrow`].
    pub fn borrow(&self) -> Ref<'_, T> {
        self.inner.borrow()
    }

    /// See [`tokio::sync::watch::Receiver::borrow_and_update`].
    pub fn borrow_and_update(&mut self) -> Ref<'_, T> {
        self.inner.borrow_and_update()
    }

    /// See [`tokio::sync::watch::Receiver::has_changed`].
    pub fn has_changed(&self) -> Result<bool, RecvError> {
        self.inner.has_changed()
    }

    /// Whether every sender has dropped. See `tokio::sync::watch::Receiver::is_closed`
    /// (tokio 1.54); available with every tokio this crate supports.
    pub fn is_closed(&self) -> bool {
        // tokio's `is_closed` (1.54+) reads the same closed bit `has_changed` reports.
        self.inner.has_changed().is_err()
    }

    /// See [`tokio::sync::watch::Receiver::mark_changed`].
    pub fn mark_changed(&mut self) {
        self.inner.mark_changed()
    }

    /// See [`tokio::sync::watch::Receiver::mark_unchanged`].
    pub fn mark_unchanged(&mut self) {
        self.inner.mark_unchanged()
    }

    /// Waits for a value not seen yet and marks it seen. See
    /// [`tokio::sync::watch::Receiver::changed`].
    #[track_caller]
    pub fn changed(&mut self) -> Changed<'_, T> {
        self.changed_at(Location::caller())
    }

    /// [`Self::changed`] with the call site given (stream adapters).
    pub(crate) fn changed_at(&mut self, caller: &'static Location<'static>) -> Changed<'_, T> {
        Changed {
            inner: Some(&mut self.inner),
            meta: self.tok.meta(),
            slow: None,
            caller,
            wait: Wait::new(),
        }
    }

    /// Waits for a value that satisfies `f`. See
    /// [`tokio::sync::watch::Receiver::wait_for`]. Unlike tokio's, the closure must
    /// outlive the borrow of the receiver (`F: 'a`), which the compiler arranges by
    /// shortening that borrow.
    #[track_caller]
    pub fn wait_for<'a, F>(&'a mut self, f: F) -> WaitFor<'a, T, F>
    where
        F: FnMut(&T) -> bool + 'a,
    {
        let inner = &mut self.inner;
        WaitFor {
            // SAFETY: proofs::watch_ops (Send when T: Send + Sync and F: Send).
            slow: unsafe { Slow::new(inner.wait_for(f)) },
            meta: self.tok.meta(),
            caller: Location::caller(),
            wait: Wait::new(),
        }
    }

    /// See [`tokio::sync::watch::Receiver::same_channel`].
    pub fn same_channel(&self, other: &Self) -> bool {
        self.inner.same_channel(&other.inner)
    }

    /// Escape hatch: tokio's receiver. The agent no longer sees this handle.
    pub fn into_inner(self) -> tk::Receiver<T> {
        self.inner
    }
}

/// Future of [`Receiver::changed`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Changed<'a, T> {
    /// Set until the slow path takes it.
    inner: Option<&'a mut tk::Receiver<T>>,
    meta: &'a Arc<ChanMeta>,
    slow: Option<Slow<'a, Result<(), RecvError>, SendSync<T>>>,
    caller: &'static Location<'static>,
    wait: Wait,
}

impl<T> fmt::Debug for Changed<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Changed").field("wait", &self.wait).finish()
    }
}

impl<T> Future for Changed<'_, T> {
    type Output = Result<(), RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let slow = match &mut this.slow {
            Some(slow) => slow,
            None => {
                let coop = ready!(coop::poll_proceed(cx));
                let Some(inner) = this.inner.take() else {
                    panic!("watch::Changed polled after completion")
                };
                if let Ok(true) = inner.has_changed() {
                    // What tokio's `changed` does when a newer version is there: mark it
                    // seen and return.
                    inner.mark_unchanged();
                    coop.made_progress();
                    this.meta.on_recv(1);
                    return Poll::Ready(Ok(()));
                }
                drop(coop);
                // SAFETY: proofs::watch_ops.
                this.slow.insert(unsafe { Slow::new(inner.changed()) })
            }
        };
        let r = ready!(this
            .wait
            .track(slow.poll(cx), Op::Changed, this.meta, this.caller));
        if r.is_ok() {
            this.meta.on_recv(1);
        }
        Poll::Ready(r)
    }
}

/// Future of [`Receiver::wait_for`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct WaitFor<'a, T, F> {
    slow: Slow<'a, Result<Ref<'a, T>, RecvError>, (SendSync<T>, F)>,
    meta: &'a Arc<ChanMeta>,
    caller: &'static Location<'static>,
    wait: Wait,
}

impl<T, F> fmt::Debug for WaitFor<'_, T, F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WaitFor").field("wait", &self.wait).finish()
    }
}

impl<'a, T, F> Future for WaitFor<'a, T, F> {
    type Output = Result<Ref<'a, T>, RecvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let r = ready!(this
            .wait
            .track(this.slow.poll(cx), Op::Changed, this.meta, this.caller));
        if r.is_ok() {
            this.meta.on_recv(1);
        }
        Poll::Ready(r)
    }
}

/// Sends values to the [`Receiver`]s. See [`tokio::sync::watch::Sender`].
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

impl<T: Default> Default for Sender<T> {
    #[track_caller]
    fn default() -> Self {
        Self::new(T::default())
    }
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
    /// A sender of a new channel with no receivers yet, recording the caller as its
    /// creation site. See [`tokio::sync::watch::Sender::new`].
    #[track_caller]
    pub fn new(init: T) -> Self {
        let inner = tk::Sender::new(init);
        let meta = ChanMeta::new(ChannelKind::Watch, None, Location::caller());
        Sender {
            inner,
            tok: TxToken::new(meta),
        }
    }

    /// See [`tokio::sync::watch::Sender::send`].
    pub fn send(&self, value: T) -> Result<(), SendError<T>> {
        let r = self.inner.send(value);
        if r.is_ok() {
            self.tok.meta().on_send(1);
        }
        r
    }

    /// See [`tokio::sync::watch::Sender::send_modify`].
    pub fn send_modify<F>(&self, modify: F)
    where
        F: FnOnce(&mut T),
    {
        self.inner.send_modify(modify);
        self.tok.meta().on_send(1);
    }

    /// See [`tokio::sync::watch::Sender::send_if_modified`].
    pub fn send_if_modified<F>(&self, modify: F) -> bool
    where
        F: FnOnce(&mut T) -> bool,
    {
        let modified = self.inner.send_if_modified(modify);
        if modified {
            self.tok.meta().on_send(1);
        }
        modified
    }

    /// See [`tokio::sync::watch::Sender::send_replace`].
    pub fn send_replace(&self, value: T) -> T {
        let old = self.inner.send_replace(value);
        self.tok.meta().on_send(1);
        old
    }

    /// See [`tokio::sync::watch::Sender::borrow`].
    pub fn borrow(&self) -> Ref<'_, T> {
        self.inner.borrow()
    }

    /// See [`tokio::sync::watch::Sender::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Completes when every receiver has dropped. See
    /// [`tokio::sync::watch::Sender::closed`].
    #[track_caller]
    pub fn closed(&self) -> Closed<'_, T> {
        let inner = &self.inner;
        Closed {
            // SAFETY: proofs::watch_ops.
            slow: unsafe { Slow::new(inner.closed()) },
            meta: self.tok.meta(),
            caller: Location::caller(),
            wait: Wait::new(),
        }
    }

    /// See [`tokio::sync::watch::Sender::subscribe`].
    pub fn subscribe(&self) -> Receiver<T> {
        Receiver {
            inner: self.inner.subscribe(),
            tok: RxToken::new(self.tok.meta().clone()),
        }
    }

    /// See [`tokio::sync::watch::Sender::receiver_count`].
    pub fn receiver_count(&self) -> usize {
        self.inner.receiver_count()
    }

    /// See [`tokio::sync::watch::Sender::sender_count`].
    pub fn sender_count(&self) -> usize {
        self.inner.sender_count()
    }

    /// See [`tokio::sync::watch::Sender::same_channel`].
    pub fn same_channel(&self, other: &Self) -> bool {
        self.inner.same_channel(&other.inner)
    }

    /// Escape hatch: tokio's sender. The agent no longer sees this handle.
    pub fn into_inner(self) -> tk::Sender<T> {
        self.inner
    }
}

/// Future of [`Sender::closed`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Closed<'a, T> {
    slow: Slow<'a, (), SendSync<T>>,
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
