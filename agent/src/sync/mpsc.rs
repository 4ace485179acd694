//! Instrumented [`tokio::sync::mpsc`]: bounded and unbounded multi-producer,
//! single-consumer channels. Same API; see the [module docs](super) for what is observed
//! and where the mirror is not exact.
//!
//! A worker fed by a channel, and how leaktop sees it while it waits (here through
//! [`crate::testing`], which reads the same task table as `leaktop <pid>`):
//!
//! ```
//! use leaktop_agent::sync::mpsc; // was: use tokio::sync::mpsc;
//!
//! #[tokio::main(flavor = "current_thread")]
//! async fn main() {
//!     let guard = leaktop_agent::testing::guard();
//!     let (tx, mut rx) = mpsc::channel::<String>(8);
//!     let worker = leaktop_agent::spawn(async move {
//!         let mut jobs = 0;
//!         while let Some(_job) = rx.recv().await {
//!             jobs += 1;
//!         }
//!         jobs
//!     });
//!     tx.send("resize image".to_string()).await.unwrap();
//!     tokio::task::yield_now().await; // the worker takes the job and waits for the next
//!
//!     let waiting = guard.leaked_now();
//!     let blocked = waiting[0].blocked.as_ref().expect("blocked on the channel");
//!     assert_eq!((blocked.op, blocked.channel), ("chan recv", "mpsc"));
//!
//!     drop(tx); // the last sender gone: `recv` returns None and the worker ends
//!     assert_eq!(worker.await.unwrap(), 1);
//!     guard.finish().await; // no task left behind
//! }
//! ```
//!
//! `unbounded_channel` works the same way; only its receivers can wait.

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use tokio::sync::mpsc as tk;
use tokio::task::coop;

use super::Slow;
use crate::blocked::Wait;
use crate::chan::{ChanMeta, RxToken, TxToken};
use crate::wire::{ChannelKind, Op};

use error::{SendError, SendTimeoutError, TryRecvError, TrySendError};
pub use tk::error;

type Caller = &'static Location<'static>;

// ---------------------------------------------------------------------------------------
// Constructors

/// Creates a bounded channel with room for `buffer` messages, recording the caller as
/// its creation site. Like [`tokio::sync::mpsc::channel`], panics if `buffer` is 0.
#[track_caller]
pub fn channel<T>(buffer: usize) -> (Sender<T>, Receiver<T>) {
    let (tx, rx) = tk::channel(buffer);
    let meta = ChanMeta::new(ChannelKind::Mpsc, Some(buffer as u64), Location::caller());
    (
        Sender {
            inner: tx,
            tok: TxToken::new(meta.clone()),
        },
        Receiver {
            inner: rx,
            tok: RxToken::new(meta),
            wait: Wait::new(),
        },
    )
}

/// Creates an unbounded channel, recording the caller as its creation site.
#[track_caller]
pub fn unbounded_channel<T>() -> (UnboundedSender<T>, UnboundedReceiver<T>) {
    let (tx, rx) = tk::unbounded_channel();
    let meta = ChanMeta::new(ChannelKind::UnboundedMpsc, None, Location::caller());
    (
        UnboundedSender {
            inner: tx,
            tok: TxToken::new(meta.clone()),
        },
        UnboundedReceiver {
            inner: rx,
            tok: RxToken::new(meta),
            wait: Wait::new(),
        },
    )
}

// ---------------------------------------------------------------------------------------
// Bounded sender

/// Sends values to the associated [`Receiver`]. See [`tokio::sync::mpsc::Sender`].
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
    pub(crate) fn meta(&self) -> &Arc<ChanMeta> {
        self.tok.meta()
    }

    /// Sends a value, waiting until there is capacity. See
    /// [`tokio::sync::mpsc::Sender::send`].
    #[track_caller]
    pub fn send(&self, value: T) -> Send<'_, T> {
        Send {
            tx: self,
            value: Some(value),
            slow: None,
            caller: Location::caller(),
            wait: Wait::new(),
        }
    }

    /// Completes when the receiver has dropped (or closed). See
    /// [`tokio::sync::mpsc::Sender::closed`].
    #[track_caller]
    pub fn closed(&self) -> Closed<'_, T> {
        let inner = &self.inner;
        Closed {
            // SAFETY: proofs::mpsc_ops.
            slow: unsafe { Slow::new(inner.closed()) },
            meta: self.meta(),
            caller: Location::caller(),
            wait: Wait::new(),
        }
    }

    /// See [`tokio::sync::mpsc::Sender::try_send`].
    pub fn try_send(&self, message: T) -> Result<(), TrySendError<T>> {
        let r = self.inner.try_send(message);
        if r.is_ok() {
            self.meta().on_send(1);
        }
        r
    }

    /// Sends a value, waiting at most `timeout` for capacity. See
    /// [`tokio::sync::mpsc::Sender::send_timeout`].
    #[track_caller]
    pub fn send_timeout(&self, value: T, timeout: Duration) -> SendTimeout<'_, T> {
        SendTimeout {
            tx: self,
            value: Some(value),
            timeout,
            slow: None,
            caller: Location::caller(),
            wait: Wait::new(),
        }
    }

    /// Blocking send for synchronous code (counted as a message, never as a blocked
    /// task). See [`tokio::sync::mpsc::Sender::blocking_send`].
    #[track_caller]
    pub fn blocking_send(&self, value: T) -> Result<(), SendError<T>> {
        let r = self.inner.blocking_send(value);
        if r.is_ok() {
            self.meta().on_send(1);
        }
        r
    }

    /// See [`tokio::sync::mpsc::Sender::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Waits for capacity for one message. See [`tokio::sync::mpsc::Sender::reserve`].
    #[track_caller]
    pub fn reserve(&self) -> Reserve<'_, T> {
        Reserve {
            tx: self,
            slow: None,
            done: false,
            caller: Location::caller(),
            wait: Wait::new(),
        }
    }

    /// Waits for capacity for `n` messages. See
    /// [`tokio::sync::mpsc::Sender::reserve_many`].
    #[track_caller]
    pub fn reserve_many(&self, n: usize) -> ReserveMany<'_, T> {
        ReserveMany {
            tx: self,
            n,
            slow: None,
            done: false,
            caller: Location::caller(),
            wait: Wait::new(),
        }
    }

    /// Waits for capacity, moving the sender into the returned permit. See
    /// [`tokio::sync::mpsc::Sender::reserve_owned`].
    #[track_caller]
    pub fn reserve_owned(self) -> ReserveOwned<T> {
        self.reserve_owned_at(Location::caller())
    }

    /// [`Self::reserve_owned`] with the call site given (`PollSender`).
    pub(crate) fn reserve_owned_at(self, caller: Caller) -> ReserveOwned<T> {
        ReserveOwned {
            start: Some(self.inner),
            tok: Some(self.tok),
            slow: None,
            caller,
            wait: Wait::new(),
        }
    }

    /// See [`tokio::sync::mpsc::Sender::try_reserve`].
    pub fn try_reserve(&self) -> Result<Permit<'_, T>, TrySendError<()>> {
        self.inner.try_reserve().map(|inner| Permit {
            inner,
            meta: self.meta(),
        })
    }

    /// See [`tokio::sync::mpsc::Sender::try_reserve_many`].
    pub fn try_reserve_many(&self, n: usize) -> Result<PermitIterator<'_, T>, TrySendError<()>> {
        self.inner.try_reserve_many(n).map(|inner| PermitIterator {
            inner,
            meta: self.meta(),
        })
    }

    /// See [`tokio::sync::mpsc::Sender::try_reserve_owned`].
    pub fn try_reserve_owned(self) -> Result<OwnedPermit<T>, TrySendError<Self>> {
        let Sender { inner, tok } = self;
        match inner.try_reserve_owned() {
            Ok(inner) => Ok(OwnedPermit { inner, tok }),
            Err(TrySendError::Full(inner)) => Err(TrySendError::Full(Sender { inner, tok })),
            Err(TrySendError::Closed(inner)) => Err(TrySendError::Closed(Sender { inner, tok })),
        }
    }

    /// See [`tokio::sync::mpsc::Sender::same_channel`].
    pub fn same_channel(&self, other: &Self) -> bool {
        self.inner.same_channel(&other.inner)
    }

    /// See [`tokio::sync::mpsc::Sender::capacity`].
    pub fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// See [`tokio::sync::mpsc::Sender::downgrade`].
    pub fn downgrade(&self) -> WeakSender<T> {
        WeakSender {
            inner: self.inner.downgrade(),
            meta: self.meta().clone(),
        }
    }

    /// See [`tokio::sync::mpsc::Sender::max_capacity`].
    pub fn max_capacity(&self) -> usize {
        self.inner.max_capacity()
    }

    /// See [`tokio::sync::mpsc::Sender::strong_count`].
    pub fn strong_count(&self) -> usize {
        self.inner.strong_count()
    }

    /// See [`tokio::sync::mpsc::Sender::weak_count`].
    pub fn weak_count(&self) -> usize {
        self.inner.weak_count()
    }

    /// Escape hatch: tokio's sender. The agent no longer sees this handle.
    pub fn into_inner(self) -> tk::Sender<T> {
        self.inner
    }

    /// Tokio's sender, borrowed (messages sent through it are not counted).
    pub fn as_inner(&self) -> &tk::Sender<T> {
        &self.inner
    }
}

/// A [`Sender`] that does not keep the channel open. See
/// [`tokio::sync::mpsc::WeakSender`].
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
    /// See [`tokio::sync::mpsc::WeakSender::upgrade`].
    pub fn upgrade(&self) -> Option<Sender<T>> {
        self.inner.upgrade().map(|inner| Sender {
            inner,
            tok: TxToken::new(self.meta.clone()),
        })
    }

    /// See [`tokio::sync::mpsc::WeakSender::strong_count`].
    pub fn strong_count(&self) -> usize {
        self.inner.strong_count()
    }

    /// See [`tokio::sync::mpsc::WeakSender::weak_count`].
    pub fn weak_count(&self) -> usize {
        self.inner.weak_count()
    }
}

/// Capacity for one message, borrowed from a [`Sender`]. See
/// [`tokio::sync::mpsc::Permit`].
pub struct Permit<'a, T> {
    inner: tk::Permit<'a, T>,
    meta: &'a ChanMeta,
}

impl<T> Permit<'_, T> {
    /// See [`tokio::sync::mpsc::Permit::send`].
    pub fn send(self, value: T) {
        self.inner.send(value);
        self.meta.on_send(1);
    }
}

impl<T> fmt::Debug for Permit<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("inner", &self.inner)
            .finish()
    }
}

/// Permits for several messages. See [`tokio::sync::mpsc::PermitIterator`].
pub struct PermitIterator<'a, T> {
    inner: tk::PermitIterator<'a, T>,
    meta: &'a ChanMeta,
}

impl<'a, T> Iterator for PermitIterator<'a, T> {
    type Item = Permit<'a, T>;

    fn next(&mut self) -> Option<Permit<'a, T>> {
        let meta = self.meta;
        self.inner.next().map(|inner| Permit { inner, meta })
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        self.inner.size_hint()
    }
}

impl<T> ExactSizeIterator for PermitIterator<'_, T> {}
impl<T> std::iter::FusedIterator for PermitIterator<'_, T> {}

impl<T> fmt::Debug for PermitIterator<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PermitIterator")
            .field("inner", &self.inner)
            .finish()
    }
}

/// Capacity for one message, owning its [`Sender`]. See
/// [`tokio::sync::mpsc::OwnedPermit`].
pub struct OwnedPermit<T> {
    inner: tk::OwnedPermit<T>,
    tok: TxToken,
}

impl<T> OwnedPermit<T> {
    /// See [`tokio::sync::mpsc::OwnedPermit::send`].
    pub fn send(self, value: T) -> Sender<T> {
        let OwnedPermit { inner, tok } = self;
        let inner = inner.send(value);
        tok.meta().on_send(1);
        Sender { inner, tok }
    }

    /// See [`tokio::sync::mpsc::OwnedPermit::release`].
    pub fn release(self) -> Sender<T> {
        let OwnedPermit { inner, tok } = self;
        Sender {
            inner: inner.release(),
            tok,
        }
    }

    /// See [`tokio::sync::mpsc::OwnedPermit::same_channel`].
    pub fn same_channel(&self, other: &Self) -> bool {
        self.inner.same_channel(&other.inner)
    }

    /// See [`tokio::sync::mpsc::OwnedPermit::same_channel_as_sender`].
    pub fn same_channel_as_sender(&self, sender: &Sender<T>) -> bool {
        self.inner.same_channel_as_sender(&sender.inner)
    }
}

impl<T> fmt::Debug for OwnedPermit<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedPermit")
            .field("inner", &self.inner)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------
// Bounded sender futures

type ReserveSlow<'a, T> = Slow<'a, Result<tk::Permit<'a, T>, SendError<()>>, T>;

/// Future of [`Sender::send`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Send<'a, T> {
    tx: &'a Sender<T>,
    value: Option<T>,
    slow: Option<ReserveSlow<'a, T>>,
    caller: Caller,
    wait: Wait,
}

impl<T> Unpin for Send<'_, T> {}

impl<T> fmt::Debug for Send<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Send").field("wait", &self.wait).finish()
    }
}

impl<'a, T> Future for Send<'a, T> {
    type Output = Result<(), SendError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let tx: &'a Sender<T> = this.tx;
        let slow = match &mut this.slow {
            Some(slow) => slow,
            None => {
                let coop = ready!(coop::poll_proceed(cx));
                #[allow(
                    clippy::expect_used,
                    reason = "polling a finished future is the caller's bug (tokio panics alike), not outside data"
                )]
                let value = this
                    .value
                    .take()
                    .expect("mpsc::Send polled after completion");
                match tx.inner.try_send(value) {
                    Ok(()) => {
                        coop.made_progress();
                        tx.meta().on_send(1);
                        return Poll::Ready(Ok(()));
                    }
                    Err(TrySendError::Closed(v)) => {
                        coop.made_progress();
                        return Poll::Ready(Err(SendError(v)));
                    }
                    Err(TrySendError::Full(v)) => {
                        this.value = Some(v);
                        drop(coop);
                        // SAFETY: proofs::mpsc_ops.
                        this.slow.insert(unsafe { Slow::new(tx.inner.reserve()) })
                    }
                }
            }
        };
        let r = ready!(this
            .wait
            .track(slow.poll(cx), Op::Send, tx.meta(), this.caller));
        this.slow = None;
        #[allow(
            clippy::expect_used,
            reason = "polling a finished future is the caller's bug (tokio panics alike), not outside data"
        )]
        let value = this
            .value
            .take()
            .expect("mpsc::Send polled after completion");
        Poll::Ready(match r {
            Ok(permit) => {
                permit.send(value);
                tx.meta().on_send(1);
                Ok(())
            }
            Err(_) => Err(SendError(value)),
        })
    }
}

type SendTimeoutSlow<'a, T> = Slow<'a, Result<(), SendTimeoutError<T>>, T>;

/// Future of [`Sender::send_timeout`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct SendTimeout<'a, T> {
    tx: &'a Sender<T>,
    value: Option<T>,
    timeout: Duration,
    slow: Option<SendTimeoutSlow<'a, T>>,
    caller: Caller,
    wait: Wait,
}

impl<T> Unpin for SendTimeout<'_, T> {}

impl<T> fmt::Debug for SendTimeout<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SendTimeout")
            .field("timeout", &self.timeout)
            .field("wait", &self.wait)
            .finish()
    }
}

impl<'a, T> Future for SendTimeout<'a, T> {
    type Output = Result<(), SendTimeoutError<T>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let tx: &'a Sender<T> = this.tx;
        let slow = match &mut this.slow {
            Some(slow) => slow,
            None => {
                let coop = ready!(coop::poll_proceed(cx));
                #[allow(
                    clippy::expect_used,
                    reason = "polling a finished future is the caller's bug (tokio panics alike), not outside data"
                )]
                let value = this
                    .value
                    .take()
                    .expect("mpsc::SendTimeout polled after completion");
                match tx.inner.try_send(value) {
                    Ok(()) => {
                        coop.made_progress();
                        tx.meta().on_send(1);
                        return Poll::Ready(Ok(()));
                    }
                    Err(TrySendError::Closed(v)) => {
                        coop.made_progress();
                        return Poll::Ready(Err(SendTimeoutError::Closed(v)));
                    }
                    Err(TrySendError::Full(v)) => {
                        drop(coop);
                        // SAFETY: proofs::mpsc_ops.
                        this.slow
                            .insert(unsafe { Slow::new(tx.inner.send_timeout(v, this.timeout)) })
                    }
                }
            }
        };
        let r = ready!(this
            .wait
            .track(slow.poll(cx), Op::Send, tx.meta(), this.caller));
        this.slow = None;
        if r.is_ok() {
            tx.meta().on_send(1);
        }
        Poll::Ready(r)
    }
}

/// Future of [`Sender::reserve`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Reserve<'a, T> {
    tx: &'a Sender<T>,
    slow: Option<ReserveSlow<'a, T>>,
    done: bool,
    caller: Caller,
    wait: Wait,
}

impl<T> Unpin for Reserve<'_, T> {}

impl<T> fmt::Debug for Reserve<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Reserve").field("wait", &self.wait).finish()
    }
}

impl<'a, T> Future for Reserve<'a, T> {
    type Output = Result<Permit<'a, T>, SendError<()>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let tx: &'a Sender<T> = this.tx;
        let meta: &'a ChanMeta = tx.meta();
        assert!(!this.done, "mpsc::Reserve polled after completion");
        let slow = match &mut this.slow {
            Some(slow) => slow,
            None => {
                let coop = ready!(coop::poll_proceed(cx));
                match tx.inner.try_reserve() {
                    Ok(inner) => {
                        coop.made_progress();
                        this.done = true;
                        return Poll::Ready(Ok(Permit { inner, meta }));
                    }
                    Err(TrySendError::Closed(())) => {
                        coop.made_progress();
                        this.done = true;
                        return Poll::Ready(Err(SendError(())));
                    }
                    Err(TrySendError::Full(())) => {
                        drop(coop);
                        // SAFETY: proofs::mpsc_ops.
                        this.slow.insert(unsafe { Slow::new(tx.inner.reserve()) })
                    }
                }
            }
        };
        let r = ready!(this
            .wait
            .track(slow.poll(cx), Op::Reserve, tx.meta(), this.caller));
        this.slow = None;
        this.done = true;
        Poll::Ready(r.map(|inner| Permit { inner, meta }))
    }
}

type ReserveManySlow<'a, T> = Slow<'a, Result<tk::PermitIterator<'a, T>, SendError<()>>, T>;

/// Future of [`Sender::reserve_many`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct ReserveMany<'a, T> {
    tx: &'a Sender<T>,
    n: usize,
    slow: Option<ReserveManySlow<'a, T>>,
    done: bool,
    caller: Caller,
    wait: Wait,
}

impl<T> Unpin for ReserveMany<'_, T> {}

impl<T> fmt::Debug for ReserveMany<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReserveMany")
            .field("n", &self.n)
            .field("wait", &self.wait)
            .finish()
    }
}

impl<'a, T> Future for ReserveMany<'a, T> {
    type Output = Result<PermitIterator<'a, T>, SendError<()>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let tx: &'a Sender<T> = this.tx;
        let meta: &'a ChanMeta = tx.meta();
        assert!(!this.done, "mpsc::ReserveMany polled after completion");
        let slow = match &mut this.slow {
            Some(slow) => slow,
            None => {
                let coop = ready!(coop::poll_proceed(cx));
                match tx.inner.try_reserve_many(this.n) {
                    Ok(inner) => {
                        coop.made_progress();
                        this.done = true;
                        return Poll::Ready(Ok(PermitIterator { inner, meta }));
                    }
                    Err(TrySendError::Closed(())) => {
                        coop.made_progress();
                        this.done = true;
                        return Poll::Ready(Err(SendError(())));
                    }
                    Err(TrySendError::Full(())) => {
                        drop(coop);
                        // SAFETY: proofs::mpsc_ops.
                        this.slow
                            .insert(unsafe { Slow::new(tx.inner.reserve_many(this.n)) })
                    }
                }
            }
        };
        let r = ready!(this
            .wait
            .track(slow.poll(cx), Op::Reserve, tx.meta(), this.caller));
        this.slow = None;
        this.done = true;
        Poll::Ready(r.map(|inner| PermitIterator { inner, meta }))
    }
}

type ReserveOwnedSlow<T> = Slow<'static, Result<tk::OwnedPermit<T>, SendError<()>>, T>;

/// Future of [`Sender::reserve_owned`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct ReserveOwned<T> {
    start: Option<tk::Sender<T>>,
    /// The sender's count, carried into the permit.
    tok: Option<TxToken>,
    slow: Option<ReserveOwnedSlow<T>>,
    caller: Caller,
    wait: Wait,
}

impl<T> Unpin for ReserveOwned<T> {}

impl<T> fmt::Debug for ReserveOwned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReserveOwned")
            .field("wait", &self.wait)
            .finish()
    }
}

impl<T: 'static> Future for ReserveOwned<T> {
    type Output = Result<OwnedPermit<T>, SendError<()>>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let slow = match &mut this.slow {
            Some(slow) => slow,
            None => {
                // Budget first, so a Pending here keeps the sender for the next poll.
                let coop = ready!(coop::poll_proceed(cx));
                let Some(inner) = this.start.take() else {
                    panic!("mpsc::ReserveOwned polled after completion")
                };
                match inner.try_reserve_owned() {
                    Ok(inner) => {
                        coop.made_progress();
                        let Some(tok) = this.tok.take() else {
                            panic!("mpsc::ReserveOwned polled after completion")
                        };
                        return Poll::Ready(Ok(OwnedPermit { inner, tok }));
                    }
                    Err(TrySendError::Closed(inner)) => {
                        coop.made_progress();
                        drop(inner);
                        this.tok = None;
                        return Poll::Ready(Err(SendError(())));
                    }
                    Err(TrySendError::Full(inner)) => {
                        drop(coop);
                        // SAFETY: proofs::mpsc_ops.
                        this.slow
                            .insert(unsafe { Slow::new(inner.reserve_owned()) })
                    }
                }
            }
        };
        match slow.poll(cx) {
            Poll::Pending => {
                if let Some(tok) = &this.tok {
                    this.wait.pending(Op::Reserve, tok.meta(), this.caller);
                }
                Poll::Pending
            }
            Poll::Ready(r) => {
                this.wait.ready();
                this.slow = None;
                let tok = this.tok.take();
                Poll::Ready(match (r, tok) {
                    (Ok(inner), Some(tok)) => Ok(OwnedPermit { inner, tok }),
                    (Ok(_), None) => panic!("mpsc::ReserveOwned polled after completion"),
                    (Err(e), _) => Err(e),
                })
            }
        }
    }
}

/// Future of [`Sender::closed`] and [`UnboundedSender::closed`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Closed<'a, T> {
    slow: Slow<'a, (), T>,
    meta: &'a Arc<ChanMeta>,
    caller: Caller,
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

// ---------------------------------------------------------------------------------------
// Receivers (bounded and unbounded share their shape)

macro_rules! receiver {
    (
        $(#[$doc:meta])* $Receiver:ident wraps $Tk:ident,
        $Recv:ident, $RecvMany:ident, $tkpath:literal
    ) => {
        $(#[$doc])*
        pub struct $Receiver<T> {
            inner: tk::$Tk<T>,
            tok: RxToken,
            /// Blocked registration of `poll_recv` / `poll_recv_many`.
            wait: Wait,
        }

        impl<T> fmt::Debug for $Receiver<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($Receiver))
                    .field("inner", &self.inner)
                    .field("channel", &self.tok.meta().id)
                    .finish()
            }
        }

        impl<T> Unpin for $Receiver<T> {}

        impl<T> $Receiver<T> {
            #[doc = concat!("Receives the next value. See [`", $tkpath, "::recv`].")]
            #[track_caller]
            pub fn recv(&mut self) -> $Recv<'_, T> {
                $Recv {
                    inner: &mut self.inner,
                    meta: self.tok.meta(),
                    caller: Location::caller(),
                    wait: Wait::new(),
                }
            }

            #[doc = concat!("Receives up to `limit` values into `buffer`. See [`", $tkpath, "::recv_many`].")]
            #[track_caller]
            pub fn recv_many<'a>(&'a mut self, buffer: &'a mut Vec<T>, limit: usize) -> $RecvMany<'a, T> {
                $RecvMany {
                    inner: &mut self.inner,
                    meta: self.tok.meta(),
                    buffer,
                    limit,
                    caller: Location::caller(),
                    wait: Wait::new(),
                }
            }

            #[doc = concat!("See [`", $tkpath, "::try_recv`].")]
            pub fn try_recv(&mut self) -> Result<T, TryRecvError> {
                let r = self.inner.try_recv();
                if r.is_ok() {
                    self.tok.meta().on_recv_sole(1);
                }
                r
            }

            #[doc = concat!("Blocking receive for synchronous code (counted as a message, never as a blocked task). See [`", $tkpath, "::blocking_recv`].")]
            #[track_caller]
            pub fn blocking_recv(&mut self) -> Option<T> {
                let r = self.inner.blocking_recv();
                if r.is_some() {
                    self.tok.meta().on_recv_sole(1);
                }
                r
            }

            #[doc = concat!("See [`", $tkpath, "::blocking_recv_many`].")]
            #[track_caller]
            pub fn blocking_recv_many(&mut self, buffer: &mut Vec<T>, limit: usize) -> usize {
                let n = self.inner.blocking_recv_many(buffer, limit);
                if n > 0 {
                    self.tok.meta().on_recv_sole(n as u64);
                }
                n
            }

            #[doc = concat!("See [`", $tkpath, "::close`].")]
            pub fn close(&mut self) {
                self.inner.close();
                self.tok.meta().mark_closed();
            }

            #[doc = concat!("See [`", $tkpath, "::is_closed`].")]
            pub fn is_closed(&self) -> bool {
                self.inner.is_closed()
            }

            #[doc = concat!("See [`", $tkpath, "::is_empty`].")]
            pub fn is_empty(&self) -> bool {
                self.inner.is_empty()
            }

            #[doc = concat!("See [`", $tkpath, "::len`].")]
            pub fn len(&self) -> usize {
                self.inner.len()
            }

            #[doc = concat!("Polls for the next value; a Pending registers the task as blocked until a later call returns Ready or the receiver drops. See [`", $tkpath, "::poll_recv`].")]
            #[track_caller]
            pub fn poll_recv(&mut self, cx: &mut Context<'_>) -> Poll<Option<T>> {
                self.poll_recv_at(cx, Location::caller())
            }

            /// [`Self::poll_recv`] with the call site given (stream adapters).
            #[allow(dead_code)] // feature `stream`
            pub(crate) fn poll_recv_at(&mut self, cx: &mut Context<'_>, caller: Caller) -> Poll<Option<T>> {
                let v = ready!(self.wait.track(self.inner.poll_recv(cx), Op::Recv, self.tok.meta(), caller));
                if v.is_some() {
                    self.tok.meta().on_recv_sole(1);
                }
                Poll::Ready(v)
            }

            #[doc = concat!("See [`", $tkpath, "::poll_recv_many`] and [`Self::poll_recv`].")]
            #[track_caller]
            pub fn poll_recv_many(&mut self, cx: &mut Context<'_>, buffer: &mut Vec<T>, limit: usize) -> Poll<usize> {
                let n = ready!(self.wait.track(self.inner.poll_recv_many(cx, buffer, limit), Op::Recv, self.tok.meta(), Location::caller()));
                if n > 0 {
                    self.tok.meta().on_recv_sole(n as u64);
                }
                Poll::Ready(n)
            }

            #[doc = concat!("See [`", $tkpath, "::sender_strong_count`].")]
            pub fn sender_strong_count(&self) -> usize {
                self.inner.sender_strong_count()
            }

            #[doc = concat!("See [`", $tkpath, "::sender_weak_count`].")]
            pub fn sender_weak_count(&self) -> usize {
                self.inner.sender_weak_count()
            }

            /// Escape hatch: tokio's receiver. The agent no longer sees this handle.
            pub fn into_inner(self) -> tk::$Tk<T> {
                self.inner
            }
        }

        #[doc = concat!("Future of [`", stringify!($Receiver), "::recv`].")]
        #[must_use = "futures do nothing unless you `.await` or poll them"]
        pub struct $Recv<'a, T> {
            inner: &'a mut tk::$Tk<T>,
            meta: &'a Arc<ChanMeta>,
            caller: Caller,
            wait: Wait,
        }

        impl<T> fmt::Debug for $Recv<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($Recv)).field("wait", &self.wait).finish()
            }
        }

        impl<T> Future for $Recv<'_, T> {
            type Output = Option<T>;

            #[inline]
            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
                let this = self.get_mut();
                let v = ready!(this.wait.track(this.inner.poll_recv(cx), Op::Recv, this.meta, this.caller));
                if v.is_some() {
                    this.meta.on_recv_sole(1);
                }
                Poll::Ready(v)
            }
        }

        #[doc = concat!("Future of [`", stringify!($Receiver), "::recv_many`].")]
        #[must_use = "futures do nothing unless you `.await` or poll them"]
        pub struct $RecvMany<'a, T> {
            inner: &'a mut tk::$Tk<T>,
            meta: &'a Arc<ChanMeta>,
            buffer: &'a mut Vec<T>,
            limit: usize,
            caller: Caller,
            wait: Wait,
        }

        impl<T> fmt::Debug for $RecvMany<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($RecvMany))
                    .field("limit", &self.limit)
                    .field("wait", &self.wait)
                    .finish()
            }
        }

        impl<T> Future for $RecvMany<'_, T> {
            type Output = usize;

            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<usize> {
                let this = self.get_mut();
                let n = ready!(this.wait.track(this.inner.poll_recv_many(cx, this.buffer, this.limit), Op::Recv, this.meta, this.caller));
                if n > 0 {
                    this.meta.on_recv_sole(n as u64);
                }
                Poll::Ready(n)
            }
        }
    };
}

receiver!(
    /// Receives values from the associated [`Sender`]. See
    /// [`tokio::sync::mpsc::Receiver`].
    Receiver wraps Receiver, Recv, RecvMany, "tokio::sync::mpsc::Receiver"
);

receiver!(
    /// Receives values from the associated [`UnboundedSender`]. See
    /// [`tokio::sync::mpsc::UnboundedReceiver`].
    UnboundedReceiver wraps UnboundedReceiver, UnboundedRecv, UnboundedRecvMany,
    "tokio::sync::mpsc::UnboundedReceiver"
);

impl<T> Receiver<T> {
    /// See [`tokio::sync::mpsc::Receiver::capacity`].
    pub fn capacity(&self) -> usize {
        self.inner.capacity()
    }

    /// See [`tokio::sync::mpsc::Receiver::max_capacity`].
    pub fn max_capacity(&self) -> usize {
        self.inner.max_capacity()
    }
}

// ---------------------------------------------------------------------------------------
// Unbounded sender

/// Sends values to the associated [`UnboundedReceiver`]. See
/// [`tokio::sync::mpsc::UnboundedSender`].
pub struct UnboundedSender<T> {
    inner: tk::UnboundedSender<T>,
    tok: TxToken,
}

impl<T> Clone for UnboundedSender<T> {
    fn clone(&self) -> Self {
        UnboundedSender {
            inner: self.inner.clone(),
            tok: self.tok.clone(),
        }
    }
}

impl<T> fmt::Debug for UnboundedSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("UnboundedSender")
            .field("inner", &self.inner)
            .field("channel", &self.tok.meta().id)
            .finish()
    }
}

impl<T> UnboundedSender<T> {
    /// See [`tokio::sync::mpsc::UnboundedSender::send`].
    pub fn send(&self, message: T) -> Result<(), SendError<T>> {
        let r = self.inner.send(message);
        if r.is_ok() {
            self.tok.meta().on_send(1);
        }
        r
    }

    /// See [`tokio::sync::mpsc::UnboundedSender::closed`].
    #[track_caller]
    pub fn closed(&self) -> Closed<'_, T> {
        let inner = &self.inner;
        Closed {
            // SAFETY: proofs::unbounded_ops.
            slow: unsafe { Slow::new(inner.closed()) },
            meta: self.tok.meta(),
            caller: Location::caller(),
            wait: Wait::new(),
        }
    }

    /// See [`tokio::sync::mpsc::UnboundedSender::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// See [`tokio::sync::mpsc::UnboundedSender::same_channel`].
    pub fn same_channel(&self, other: &Self) -> bool {
        self.inner.same_channel(&other.inner)
    }

    /// See [`tokio::sync::mpsc::UnboundedSender::downgrade`].
    pub fn downgrade(&self) -> WeakUnboundedSender<T> {
        WeakUnboundedSender {
            inner: self.inner.downgrade(),
            meta: self.tok.meta().clone(),
        }
    }

    /// See [`tokio::sync::mpsc::UnboundedSender::strong_count`].
    pub fn strong_count(&self) -> usize {
        self.inner.strong_count()
    }

    /// See [`tokio::sync::mpsc::UnboundedSender::weak_count`].
    pub fn weak_count(&self) -> usize {
        self.inner.weak_count()
    }

    /// Escape hatch: tokio's sender. The agent no longer sees this handle.
    pub fn into_inner(self) -> tk::UnboundedSender<T> {
        self.inner
    }

    /// Tokio's sender, borrowed (messages sent through it are not counted).
    pub fn as_inner(&self) -> &tk::UnboundedSender<T> {
        &self.inner
    }
}

/// An [`UnboundedSender`] that does not keep the channel open. See
/// [`tokio::sync::mpsc::WeakUnboundedSender`].
pub struct WeakUnboundedSender<T> {
    inner: tk::WeakUnboundedSender<T>,
    meta: Arc<ChanMeta>,
}

impl<T> Clone for WeakUnboundedSender<T> {
    fn clone(&self) -> Self {
        WeakUnboundedSender {
            inner: self.inner.clone(),
            meta: self.meta.clone(),
        }
    }
}

impl<T> fmt::Debug for WeakUnboundedSender<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WeakUnboundedSender")
            .field("inner", &self.inner)
            .field("channel", &self.meta.id)
            .finish()
    }
}

impl<T> WeakUnboundedSender<T> {
    /// See [`tokio::sync::mpsc::WeakUnboundedSender::upgrade`].
    pub fn upgrade(&self) -> Option<UnboundedSender<T>> {
        self.inner.upgrade().map(|inner| UnboundedSender {
            inner,
            tok: TxToken::new(self.meta.clone()),
        })
    }

    /// See [`tokio::sync::mpsc::WeakUnboundedSender::strong_count`].
    pub fn strong_count(&self) -> usize {
        self.inner.strong_count()
    }

    /// See [`tokio::sync::mpsc::WeakUnboundedSender::weak_count`].
    pub fn weak_count(&self) -> usize {
        self.inner.weak_count()
    }
}
