//! Instrumented [`tokio::sync::Semaphore`]: same API and semantics (it wraps tokio's),
//! plus who waits (op `semaphore acquire`) and who holds permits (see
//! [`super::holders`]).

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::sync as tk;

use super::acquire::{block_on, Acquiring, Caller};
use super::holders::{Hold, LockCell, SHARED_SLOTS};
use super::Slow;
use crate::wire::{ChannelKind, Op};

pub use tk::{AcquireError, TryAcquireError};

/// A counting semaphore that records its waiters and who holds its permits. See
/// [`tokio::sync::Semaphore`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use leaktop_agent::sync::{Semaphore, TryAcquireError}; // was: use tokio::sync::{…};
///
/// let sem = Semaphore::new(3);
/// let a = sem.acquire().await.unwrap();
/// let b = sem.acquire_many(2).await.unwrap();
/// assert_eq!(sem.available_permits(), 0);
/// assert_eq!(sem.try_acquire().err(), Some(TryAcquireError::NoPermits));
/// drop((a, b));
/// assert_eq!(sem.available_permits(), 3);
/// # }
/// ```
pub struct Semaphore {
    cell: LockCell<SHARED_SLOTS>,
    inner: tk::Semaphore,
}

fn owned_ref(s: &Arc<Semaphore>) -> &'static Semaphore {
    // SAFETY: as `mutex::owned_ref`: every borrow made from this reference is stored
    // beside the `Arc` and dropped before it (field order).
    unsafe { &*Arc::as_ptr(s) }
}

impl Semaphore {
    /// See [`tokio::sync::Semaphore::MAX_PERMITS`].
    pub const MAX_PERMITS: usize = tk::Semaphore::MAX_PERMITS;

    /// See [`tokio::sync::Semaphore::new`]; the caller is recorded as its creation site.
    #[track_caller]
    pub fn new(permits: usize) -> Self {
        Semaphore {
            inner: tk::Semaphore::new(permits),
            cell: LockCell::new(
                ChannelKind::Semaphore,
                Some(permits as u64),
                Location::caller(),
            ),
        }
    }

    /// See [`tokio::sync::Semaphore::const_new`]; the agent record is made on first use.
    #[track_caller]
    pub const fn const_new(permits: usize) -> Self {
        Semaphore {
            inner: tk::Semaphore::const_new(permits),
            cell: LockCell::lazy(
                ChannelKind::Semaphore,
                Some(permits as u64),
                Location::caller(),
            ),
        }
    }

    /// See [`tokio::sync::Semaphore::available_permits`].
    pub fn available_permits(&self) -> usize {
        self.inner.available_permits()
    }

    /// See [`tokio::sync::Semaphore::add_permits`].
    pub fn add_permits(&self, n: usize) {
        self.inner.add_permits(n)
    }

    /// See [`tokio::sync::Semaphore::forget_permits`].
    pub fn forget_permits(&self, n: usize) -> usize {
        self.inner.forget_permits(n)
    }

    /// Acquires a permit, waiting for one. See [`tokio::sync::Semaphore::acquire`].
    #[track_caller]
    pub fn acquire(&self) -> Acquire<'_> {
        self.acquire_at(1, Location::caller())
    }

    /// Acquires `n` permits, waiting for them. See
    /// [`tokio::sync::Semaphore::acquire_many`].
    #[track_caller]
    pub fn acquire_many(&self, n: u32) -> Acquire<'_> {
        self.acquire_at(n, Location::caller())
    }

    fn acquire_at(&self, n: u32, caller: Caller) -> Acquire<'_> {
        Acquire {
            sem: self,
            n,
            acq: Acquiring::new(caller),
        }
    }

    /// See [`tokio::sync::Semaphore::try_acquire`].
    #[track_caller]
    pub fn try_acquire(&self) -> Result<SemaphorePermit<'_>, TryAcquireError> {
        let inner = self.inner.try_acquire()?;
        Ok(SemaphorePermit::new(self, inner, Location::caller()))
    }

    /// See [`tokio::sync::Semaphore::try_acquire_many`].
    #[track_caller]
    pub fn try_acquire_many(&self, n: u32) -> Result<SemaphorePermit<'_>, TryAcquireError> {
        let inner = self.inner.try_acquire_many(n)?;
        Ok(SemaphorePermit::new(self, inner, Location::caller()))
    }

    /// Acquires a permit from synchronous code; panics inside an asynchronous context,
    /// like tokio's (available whatever tokio version). See
    /// `tokio::sync::Semaphore::blocking_acquire`.
    #[track_caller]
    pub fn blocking_acquire(&self) -> Result<SemaphorePermit<'_>, AcquireError> {
        let at = Location::caller();
        let inner = block_on(self.inner.acquire())?;
        Ok(SemaphorePermit::new(self, inner, at))
    }

    /// See [`Semaphore::blocking_acquire`].
    #[track_caller]
    pub fn blocking_acquire_many(&self, n: u32) -> Result<SemaphorePermit<'_>, AcquireError> {
        let at = Location::caller();
        let inner = block_on(self.inner.acquire_many(n))?;
        Ok(SemaphorePermit::new(self, inner, at))
    }

    /// See [`Semaphore::blocking_acquire`].
    #[track_caller]
    pub fn blocking_acquire_owned(self: Arc<Self>) -> Result<OwnedSemaphorePermit, AcquireError> {
        self.blocking_acquire_many_owned_at(1, Location::caller())
    }

    /// See [`Semaphore::blocking_acquire`].
    #[track_caller]
    pub fn blocking_acquire_many_owned(
        self: Arc<Self>,
        n: u32,
    ) -> Result<OwnedSemaphorePermit, AcquireError> {
        self.blocking_acquire_many_owned_at(n, Location::caller())
    }

    fn blocking_acquire_many_owned_at(
        self: Arc<Self>,
        n: u32,
        at: Caller,
    ) -> Result<OwnedSemaphorePermit, AcquireError> {
        let s = owned_ref(&self);
        let inner = block_on(s.inner.acquire_many(n))?;
        Ok(OwnedSemaphorePermit::new(self, s, inner, at))
    }

    /// See [`tokio::sync::Semaphore::acquire_owned`].
    #[track_caller]
    pub fn acquire_owned(self: Arc<Self>) -> AcquireOwned {
        AcquireOwned {
            acq: Acquiring::new(Location::caller()),
            n: 1,
            sem: Some(self),
        }
    }

    /// See [`tokio::sync::Semaphore::acquire_many_owned`].
    #[track_caller]
    pub fn acquire_many_owned(self: Arc<Self>, n: u32) -> AcquireOwned {
        AcquireOwned {
            acq: Acquiring::new(Location::caller()),
            n,
            sem: Some(self),
        }
    }

    /// See [`tokio::sync::Semaphore::try_acquire_owned`].
    #[track_caller]
    pub fn try_acquire_owned(self: Arc<Self>) -> Result<OwnedSemaphorePermit, TryAcquireError> {
        let s = owned_ref(&self);
        let inner = s.inner.try_acquire()?;
        Ok(OwnedSemaphorePermit::new(
            self,
            s,
            inner,
            Location::caller(),
        ))
    }

    /// See [`tokio::sync::Semaphore::try_acquire_many_owned`].
    #[track_caller]
    pub fn try_acquire_many_owned(
        self: Arc<Self>,
        n: u32,
    ) -> Result<OwnedSemaphorePermit, TryAcquireError> {
        let s = owned_ref(&self);
        let inner = s.inner.try_acquire_many(n)?;
        Ok(OwnedSemaphorePermit::new(
            self,
            s,
            inner,
            Location::caller(),
        ))
    }

    /// See [`tokio::sync::Semaphore::close`].
    pub fn close(&self) {
        self.inner.close()
    }

    /// See [`tokio::sync::Semaphore::is_closed`].
    pub fn is_closed(&self) -> bool {
        self.inner.is_closed()
    }

    /// Escape hatch: tokio's semaphore inside (permits taken through it are not seen).
    pub fn as_tokio(&self) -> &tk::Semaphore {
        &self.inner
    }
}

impl fmt::Debug for Semaphore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

type AcquireOut<'a> = Result<tk::SemaphorePermit<'a>, AcquireError>;

/// Future of [`Semaphore::acquire`] and [`Semaphore::acquire_many`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Acquire<'a> {
    sem: &'a Semaphore,
    n: u32,
    acq: Acquiring<'a, AcquireOut<'a>, ()>,
}

impl fmt::Debug for Acquire<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Acquire")
            .field("permits", &self.n)
            .field("acq", &self.acq)
            .finish()
    }
}

/// One poll of an acquisition of `n` permits of `s`.
fn poll_acquire<'a>(
    s: &'a Semaphore,
    n: u32,
    acq: &mut Acquiring<'a, AcquireOut<'a>, ()>,
    cx: &mut Context<'_>,
) -> Poll<AcquireOut<'a>> {
    acq.poll(
        cx,
        Op::Acquire,
        s.cell.get(),
        // Closed: tokio's future returns the error (its type has no public constructor).
        || s.inner.try_acquire_many(n).ok().map(Ok),
        // SAFETY: proofs::semaphore_ops.
        || unsafe { Slow::new(s.inner.acquire_many(n)) },
    )
}

impl<'a> Future for Acquire<'a> {
    type Output = Result<SemaphorePermit<'a>, AcquireError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let s: &'a Semaphore = this.sem;
        let r = ready!(poll_acquire(s, this.n, &mut this.acq, cx));
        let at = this.acq.caller();
        Poll::Ready(r.map(|inner| SemaphorePermit::new(s, inner, at)))
    }
}

/// Future of [`Semaphore::acquire_owned`] and [`Semaphore::acquire_many_owned`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct AcquireOwned {
    /// Borrows from `sem`: declared (so dropped) first.
    acq: Acquiring<'static, AcquireOut<'static>, ()>,
    n: u32,
    sem: Option<Arc<Semaphore>>,
}

impl fmt::Debug for AcquireOwned {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AcquireOwned")
            .field("permits", &self.n)
            .field("acq", &self.acq)
            .finish()
    }
}

impl Future for AcquireOwned {
    type Output = Result<OwnedSemaphorePermit, AcquireError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(arc) = this.sem.as_ref() else {
            panic!("AcquireOwned polled after completion")
        };
        let s = owned_ref(arc);
        let r = ready!(poll_acquire(s, this.n, &mut this.acq, cx));
        let Some(arc) = this.sem.take() else {
            unreachable!("checked above")
        };
        let at = this.acq.caller();
        Poll::Ready(r.map(|inner| OwnedSemaphorePermit::new(arc, s, inner, at)))
    }
}

// ---------------------------------------------------------------------------------------
// Permits (the hold is declared first: cleared before the permits go back)

/// Permits borrowed from a [`Semaphore`]. See [`tokio::sync::SemaphorePermit`].
#[must_use]
pub struct SemaphorePermit<'a> {
    hold: Hold<'a>,
    inner: tk::SemaphorePermit<'a>,
    sem: &'a Semaphore,
}

impl<'a> SemaphorePermit<'a> {
    fn new(sem: &'a Semaphore, inner: tk::SemaphorePermit<'a>, at: Caller) -> Self {
        SemaphorePermit {
            hold: sem.cell.get().hold_shared(inner.num_permits() as u64, at),
            inner,
            sem,
        }
    }

    /// See [`tokio::sync::SemaphorePermit::forget`].
    pub fn forget(self) {
        let SemaphorePermit { hold, inner, .. } = self;
        drop(hold);
        inner.forget();
    }

    /// See [`tokio::sync::SemaphorePermit::merge`].
    #[track_caller]
    pub fn merge(&mut self, other: Self) {
        let n = other.inner.num_permits() as u64;
        let SemaphorePermit { hold, inner, .. } = other;
        self.inner.merge(inner);
        drop(hold);
        self.hold.add(n);
    }

    /// See [`tokio::sync::SemaphorePermit::split`]; the part split off is a holder of its
    /// own, acquired where `split` is called.
    #[track_caller]
    pub fn split(&mut self, n: usize) -> Option<Self> {
        let inner = self.inner.split(n)?;
        self.hold.sub(n as u64);
        Some(SemaphorePermit::new(self.sem, inner, Location::caller()))
    }

    /// The semaphore the permits belong to (whatever the tokio version). See
    /// `tokio::sync::SemaphorePermit::semaphore`.
    pub fn semaphore(&self) -> &'a Semaphore {
        self.sem
    }

    /// See [`tokio::sync::SemaphorePermit::num_permits`].
    pub fn num_permits(&self) -> usize {
        self.inner.num_permits()
    }
}

impl fmt::Debug for SemaphorePermit<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SemaphorePermit")
            .field("sem", &self.sem)
            .field("permits", &self.num_permits())
            .finish()
    }
}

/// Permits of a [`Semaphore`] in an `Arc`. See [`tokio::sync::OwnedSemaphorePermit`].
#[must_use]
pub struct OwnedSemaphorePermit {
    hold: Hold<'static>,
    inner: tk::SemaphorePermit<'static>,
    /// Keeps the borrows above valid: dropped last.
    sem: Arc<Semaphore>,
}

impl OwnedSemaphorePermit {
    fn new(
        sem: Arc<Semaphore>,
        s: &'static Semaphore,
        inner: tk::SemaphorePermit<'static>,
        at: Caller,
    ) -> Self {
        OwnedSemaphorePermit {
            hold: s.cell.get().hold_shared(inner.num_permits() as u64, at),
            inner,
            sem,
        }
    }

    /// See [`tokio::sync::OwnedSemaphorePermit::forget`].
    pub fn forget(self) {
        let OwnedSemaphorePermit { hold, inner, sem } = self;
        drop(hold);
        inner.forget();
        drop(sem);
    }

    /// See [`tokio::sync::OwnedSemaphorePermit::merge`].
    #[track_caller]
    pub fn merge(&mut self, other: Self) {
        assert!(
            Arc::ptr_eq(&self.sem, &other.sem),
            "merging permits from different semaphore instances"
        );
        let n = other.inner.num_permits() as u64;
        let OwnedSemaphorePermit { hold, inner, sem } = other;
        self.inner.merge(inner);
        drop(hold);
        drop(sem);
        self.hold.add(n);
    }

    /// See [`tokio::sync::OwnedSemaphorePermit::split`].
    #[track_caller]
    pub fn split(&mut self, n: usize) -> Option<Self> {
        let inner = self.inner.split(n)?;
        self.hold.sub(n as u64);
        let s = owned_ref(&self.sem);
        Some(OwnedSemaphorePermit::new(
            self.sem.clone(),
            s,
            inner,
            Location::caller(),
        ))
    }

    /// See [`tokio::sync::OwnedSemaphorePermit::semaphore`].
    pub fn semaphore(&self) -> &Arc<Semaphore> {
        &self.sem
    }

    /// See [`tokio::sync::OwnedSemaphorePermit::num_permits`].
    pub fn num_permits(&self) -> usize {
        self.inner.num_permits()
    }
}

impl fmt::Debug for OwnedSemaphorePermit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OwnedSemaphorePermit")
            .field("sem", &self.sem)
            .field("permits", &self.num_permits())
            .finish()
    }
}
