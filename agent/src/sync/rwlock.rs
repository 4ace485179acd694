//! Instrumented [`tokio::sync::RwLock`]: same API and semantics (it wraps tokio's), plus
//! who waits (ops `rwlock read` / `rwlock write`) and who holds it: the writer, or the
//! first readers (see [`super::holders`]).

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::sync as tk;

use super::acquire::{Acquiring, Caller};
use super::holders::{Hold, LockCell, SHARED_SLOTS};
use super::mutex::guard_traits;
use super::{SendSync, Slow};
use crate::wire::{ChannelKind, Op};

pub use tk::TryLockError;

/// An asynchronous reader-writer lock that records its waiters and its holders. See
/// [`tokio::sync::RwLock`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use leaktop_agent::sync::RwLock; // was: use tokio::sync::RwLock;
///
/// let lock = RwLock::new(5);
/// {
///     let (a, b) = (lock.read().await, lock.read().await);
///     assert_eq!(*a + *b, 10);
/// }
/// *lock.write().await += 1;
/// assert_eq!(*lock.read().await, 6);
/// # }
/// ```
pub struct RwLock<T: ?Sized> {
    cell: LockCell<SHARED_SLOTS>,
    inner: tk::RwLock<T>,
}

/// tokio's reader limit (`RwLock::new`'s).
const MAX_READS: u32 = u32::MAX >> 3;

fn owned_ref<T: ?Sized + 'static>(l: &Arc<RwLock<T>>) -> &'static RwLock<T> {
    // SAFETY: as `mutex::owned_ref`: the `Arc` is stored beside every borrow made from
    // this reference and dropped after it (field order).
    unsafe { &*Arc::as_ptr(l) }
}

impl<T: ?Sized> RwLock<T> {
    /// See [`tokio::sync::RwLock::new`]; the caller is recorded as its creation site.
    #[track_caller]
    pub fn new(value: T) -> RwLock<T>
    where
        T: Sized,
    {
        RwLock {
            cell: LockCell::new(
                ChannelKind::RwLock,
                Some(MAX_READS as u64),
                Location::caller(),
            ),
            inner: tk::RwLock::new(value),
        }
    }

    /// See [`tokio::sync::RwLock::with_max_readers`].
    #[track_caller]
    pub fn with_max_readers(value: T, max_reads: u32) -> RwLock<T>
    where
        T: Sized,
    {
        let inner = tk::RwLock::with_max_readers(value, max_reads);
        RwLock {
            cell: LockCell::new(
                ChannelKind::RwLock,
                Some(max_reads as u64),
                Location::caller(),
            ),
            inner,
        }
    }

    /// See [`tokio::sync::RwLock::const_new`]; the agent record is made on first use.
    #[track_caller]
    pub const fn const_new(value: T) -> RwLock<T>
    where
        T: Sized,
    {
        RwLock {
            cell: LockCell::lazy(
                ChannelKind::RwLock,
                Some(MAX_READS as u64),
                Location::caller(),
            ),
            inner: tk::RwLock::const_new(value),
        }
    }

    /// See [`tokio::sync::RwLock::const_with_max_readers`].
    #[track_caller]
    pub const fn const_with_max_readers(value: T, max_reads: u32) -> RwLock<T>
    where
        T: Sized,
    {
        let inner = tk::RwLock::const_with_max_readers(value, max_reads);
        RwLock {
            cell: LockCell::lazy(
                ChannelKind::RwLock,
                Some(max_reads as u64),
                Location::caller(),
            ),
            inner,
        }
    }

    /// Locks for reading, waiting while a writer holds or waits. See
    /// [`tokio::sync::RwLock::read`].
    #[track_caller]
    pub fn read(&self) -> Read<'_, T> {
        Read {
            lock: self,
            acq: Acquiring::new(Location::caller()),
        }
    }

    /// See [`tokio::sync::RwLock::blocking_read`] (the holder is recorded, the thread's
    /// wait is not).
    #[track_caller]
    pub fn blocking_read(&self) -> RwLockReadGuard<'_, T> {
        let inner = self.inner.blocking_read();
        RwLockReadGuard::new(self, inner, Location::caller())
    }

    /// See [`tokio::sync::RwLock::read_owned`].
    #[track_caller]
    pub fn read_owned(self: Arc<Self>) -> ReadOwned<T>
    where
        T: 'static,
    {
        ReadOwned {
            acq: Acquiring::new(Location::caller()),
            lock: Some(self),
        }
    }

    /// See [`tokio::sync::RwLock::try_read`].
    #[track_caller]
    pub fn try_read(&self) -> Result<RwLockReadGuard<'_, T>, TryLockError> {
        let inner = self.inner.try_read()?;
        Ok(RwLockReadGuard::new(self, inner, Location::caller()))
    }

    /// See [`tokio::sync::RwLock::try_read_owned`].
    #[track_caller]
    pub fn try_read_owned(self: Arc<Self>) -> Result<OwnedRwLockReadGuard<T>, TryLockError>
    where
        T: 'static,
    {
        let l = owned_ref(&self);
        let inner = l.inner.try_read()?;
        Ok(OwnedRwLockReadGuard::new(
            self,
            l,
            inner,
            Location::caller(),
        ))
    }

    /// Locks for writing, waiting until no one holds it. See
    /// [`tokio::sync::RwLock::write`].
    #[track_caller]
    pub fn write(&self) -> Write<'_, T> {
        Write {
            lock: self,
            acq: Acquiring::new(Location::caller()),
        }
    }

    /// See [`tokio::sync::RwLock::blocking_write`].
    #[track_caller]
    pub fn blocking_write(&self) -> RwLockWriteGuard<'_, T> {
        let inner = self.inner.blocking_write();
        RwLockWriteGuard::new(self, inner, Location::caller())
    }

    /// See [`tokio::sync::RwLock::write_owned`].
    #[track_caller]
    pub fn write_owned(self: Arc<Self>) -> WriteOwned<T>
    where
        T: 'static,
    {
        WriteOwned {
            acq: Acquiring::new(Location::caller()),
            lock: Some(self),
        }
    }

    /// See [`tokio::sync::RwLock::try_write`].
    #[track_caller]
    pub fn try_write(&self) -> Result<RwLockWriteGuard<'_, T>, TryLockError> {
        let inner = self.inner.try_write()?;
        Ok(RwLockWriteGuard::new(self, inner, Location::caller()))
    }

    /// See [`tokio::sync::RwLock::try_write_owned`].
    #[track_caller]
    pub fn try_write_owned(self: Arc<Self>) -> Result<OwnedRwLockWriteGuard<T>, TryLockError>
    where
        T: 'static,
    {
        let l = owned_ref(&self);
        let inner = l.inner.try_write()?;
        Ok(OwnedRwLockWriteGuard::new(
            self,
            l,
            inner,
            Location::caller(),
        ))
    }

    /// See [`tokio::sync::RwLock::get_mut`].
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    /// See [`tokio::sync::RwLock::into_inner`].
    pub fn into_inner(self) -> T
    where
        T: Sized,
    {
        self.inner.into_inner()
    }

    /// Escape hatch: tokio's lock inside (locks taken through it are not seen).
    pub fn as_tokio(&self) -> &tk::RwLock<T> {
        &self.inner
    }
}

impl<T> From<T> for RwLock<T> {
    #[track_caller]
    fn from(t: T) -> Self {
        RwLock::new(t)
    }
}

impl<T: Default> Default for RwLock<T> {
    #[track_caller]
    fn default() -> Self {
        RwLock::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for RwLock<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

// ---------------------------------------------------------------------------------------
// Futures

macro_rules! lock_future {
    (
        $(#[$doc:meta])* $Fut:ident, $OwnedFut:ident, $op:expr, $try:ident, $wait:ident,
        $TkGuard:ident, $Guard:ident, $OwnedGuard:ident
    ) => {
        $(#[$doc])*
        #[must_use = "futures do nothing unless you `.await` or poll them"]
        pub struct $Fut<'a, T: ?Sized> {
            lock: &'a RwLock<T>,
            acq: Acquiring<'a, tk::$TkGuard<'a, T>, SendSync<T>>,
        }

        impl<T: ?Sized> fmt::Debug for $Fut<'_, T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($Fut)).field("acq", &self.acq).finish()
            }
        }

        impl<'a, T: ?Sized> Future for $Fut<'a, T> {
            type Output = $Guard<'a, T>;

            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
                let this = self.get_mut();
                let l: &'a RwLock<T> = this.lock;
                let inner = ready!(this.acq.poll(
                    cx,
                    $op,
                    l.cell.get(),
                    || l.inner.$try().ok(),
                    // SAFETY: proofs::rwlock_ops.
                    || unsafe { Slow::new(l.inner.$wait()) },
                ));
                Poll::Ready($Guard::new(l, inner, this.acq.caller()))
            }
        }

        #[doc = concat!("Owned variant of [`", stringify!($Fut), "`].")]
        #[must_use = "futures do nothing unless you `.await` or poll them"]
        pub struct $OwnedFut<T: ?Sized + 'static> {
            acq: Acquiring<'static, tk::$TkGuard<'static, T>, SendSync<T>>,
            lock: Option<Arc<RwLock<T>>>,
        }

        impl<T: ?Sized + 'static> fmt::Debug for $OwnedFut<T> {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.debug_struct(stringify!($OwnedFut)).field("acq", &self.acq).finish()
            }
        }

        impl<T: ?Sized + 'static> Future for $OwnedFut<T> {
            type Output = $OwnedGuard<T>;

            fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
                let this = self.get_mut();
                let Some(arc) = this.lock.as_ref() else {
                    panic!(concat!(stringify!($OwnedFut), " polled after completion"))
                };
                let l = owned_ref(arc);
                let inner = ready!(this.acq.poll(
                    cx,
                    $op,
                    l.cell.get(),
                    || l.inner.$try().ok(),
                    // SAFETY: proofs::rwlock_ops.
                    || unsafe { Slow::new(l.inner.$wait()) },
                ));
                let Some(arc) = this.lock.take() else {
                    unreachable!("checked above")
                };
                Poll::Ready($OwnedGuard::new(arc, l, inner, this.acq.caller()))
            }
        }
    };
}

lock_future!(
    /// Future of [`RwLock::read`].
    Read, ReadOwned, Op::Read, try_read, read, RwLockReadGuard, RwLockReadGuard,
    OwnedRwLockReadGuard
);
lock_future!(
    /// Future of [`RwLock::write`].
    Write, WriteOwned, Op::Write, try_write, write, RwLockWriteGuard, RwLockWriteGuard,
    OwnedRwLockWriteGuard
);

// ---------------------------------------------------------------------------------------
// Guards (the hold is declared first: cleared before the lock is released)

/// See [`tokio::sync::RwLockReadGuard`].
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockReadGuard<'a, T: ?Sized> {
    hold: Hold<'a>,
    inner: tk::RwLockReadGuard<'a, T>,
}

impl<'a, T: ?Sized> RwLockReadGuard<'a, T> {
    fn new(lock: &'a RwLock<T>, inner: tk::RwLockReadGuard<'a, T>, at: Caller) -> Self {
        RwLockReadGuard {
            hold: lock.cell.get().hold_shared(1, at),
            inner,
        }
    }

    /// See [`tokio::sync::RwLockReadGuard::map`].
    pub fn map<F, U: ?Sized>(this: Self, f: F) -> RwLockReadGuard<'a, U>
    where
        F: FnOnce(&T) -> &U,
    {
        let RwLockReadGuard { hold, inner } = this;
        RwLockReadGuard {
            hold,
            inner: tk::RwLockReadGuard::map(inner, f),
        }
    }

    /// See [`tokio::sync::RwLockReadGuard::try_map`].
    pub fn try_map<F, U: ?Sized>(this: Self, f: F) -> Result<RwLockReadGuard<'a, U>, Self>
    where
        F: FnOnce(&T) -> Option<&U>,
    {
        let RwLockReadGuard { hold, inner } = this;
        match tk::RwLockReadGuard::try_map(inner, f) {
            Ok(inner) => Ok(RwLockReadGuard { hold, inner }),
            Err(inner) => Err(RwLockReadGuard { hold, inner }),
        }
    }
}

/// See [`tokio::sync::RwLockWriteGuard`].
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockWriteGuard<'a, T: ?Sized> {
    hold: Hold<'a>,
    inner: tk::RwLockWriteGuard<'a, T>,
}

impl<'a, T: ?Sized> RwLockWriteGuard<'a, T> {
    fn new(lock: &'a RwLock<T>, inner: tk::RwLockWriteGuard<'a, T>, at: Caller) -> Self {
        RwLockWriteGuard {
            hold: lock.cell.get().hold_exclusive(at),
            inner,
        }
    }

    /// See [`tokio::sync::RwLockWriteGuard::map`].
    pub fn map<F, U: ?Sized>(this: Self, f: F) -> RwLockMappedWriteGuard<'a, U>
    where
        F: FnOnce(&mut T) -> &mut U,
    {
        let RwLockWriteGuard { hold, inner } = this;
        RwLockMappedWriteGuard {
            hold,
            inner: tk::RwLockWriteGuard::map(inner, f),
        }
    }

    /// See [`tokio::sync::RwLockWriteGuard::downgrade_map`] (the holder stays recorded).
    pub fn downgrade_map<F, U: ?Sized>(this: Self, f: F) -> RwLockReadGuard<'a, U>
    where
        F: FnOnce(&T) -> &U,
    {
        let RwLockWriteGuard { hold, inner } = this;
        RwLockReadGuard {
            hold,
            inner: tk::RwLockWriteGuard::downgrade_map(inner, f),
        }
    }

    /// See [`tokio::sync::RwLockWriteGuard::try_map`].
    pub fn try_map<F, U: ?Sized>(this: Self, f: F) -> Result<RwLockMappedWriteGuard<'a, U>, Self>
    where
        F: FnOnce(&mut T) -> Option<&mut U>,
    {
        let RwLockWriteGuard { hold, inner } = this;
        match tk::RwLockWriteGuard::try_map(inner, f) {
            Ok(inner) => Ok(RwLockMappedWriteGuard { hold, inner }),
            Err(inner) => Err(RwLockWriteGuard { hold, inner }),
        }
    }

    /// See [`tokio::sync::RwLockWriteGuard::try_downgrade_map`].
    pub fn try_downgrade_map<F, U: ?Sized>(this: Self, f: F) -> Result<RwLockReadGuard<'a, U>, Self>
    where
        F: FnOnce(&T) -> Option<&U>,
    {
        let RwLockWriteGuard { hold, inner } = this;
        match tk::RwLockWriteGuard::try_downgrade_map(inner, f) {
            Ok(inner) => Ok(RwLockReadGuard { hold, inner }),
            Err(inner) => Err(RwLockWriteGuard { hold, inner }),
        }
    }

    /// See [`tokio::sync::RwLockWriteGuard::into_mapped`].
    pub fn into_mapped(this: Self) -> RwLockMappedWriteGuard<'a, T> {
        let RwLockWriteGuard { hold, inner } = this;
        RwLockMappedWriteGuard {
            hold,
            inner: tk::RwLockWriteGuard::into_mapped(inner),
        }
    }

    /// See [`tokio::sync::RwLockWriteGuard::downgrade`] (the holder stays recorded).
    pub fn downgrade(self) -> RwLockReadGuard<'a, T> {
        let RwLockWriteGuard { hold, inner } = self;
        RwLockReadGuard {
            hold,
            inner: inner.downgrade(),
        }
    }
}

/// See [`tokio::sync::RwLockMappedWriteGuard`].
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct RwLockMappedWriteGuard<'a, T: ?Sized> {
    hold: Hold<'a>,
    inner: tk::RwLockMappedWriteGuard<'a, T>,
}

impl<'a, T: ?Sized> RwLockMappedWriteGuard<'a, T> {
    /// See [`tokio::sync::RwLockMappedWriteGuard::map`].
    pub fn map<F, U: ?Sized>(this: Self, f: F) -> RwLockMappedWriteGuard<'a, U>
    where
        F: FnOnce(&mut T) -> &mut U,
    {
        let RwLockMappedWriteGuard { hold, inner } = this;
        RwLockMappedWriteGuard {
            hold,
            inner: tk::RwLockMappedWriteGuard::map(inner, f),
        }
    }

    /// See [`tokio::sync::RwLockMappedWriteGuard::try_map`].
    pub fn try_map<F, U: ?Sized>(this: Self, f: F) -> Result<RwLockMappedWriteGuard<'a, U>, Self>
    where
        F: FnOnce(&mut T) -> Option<&mut U>,
    {
        let RwLockMappedWriteGuard { hold, inner } = this;
        match tk::RwLockMappedWriteGuard::try_map(inner, f) {
            Ok(inner) => Ok(RwLockMappedWriteGuard { hold, inner }),
            Err(inner) => Err(RwLockMappedWriteGuard { hold, inner }),
        }
    }
}

/// See [`tokio::sync::OwnedRwLockReadGuard`].
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct OwnedRwLockReadGuard<T: ?Sized + 'static, U: ?Sized + 'static = T> {
    hold: Hold<'static>,
    inner: tk::RwLockReadGuard<'static, U>,
    /// Keeps the borrows above valid: dropped last.
    lock: Arc<RwLock<T>>,
}

impl<T: ?Sized + 'static> OwnedRwLockReadGuard<T> {
    fn new(
        lock: Arc<RwLock<T>>,
        l: &'static RwLock<T>,
        inner: tk::RwLockReadGuard<'static, T>,
        at: Caller,
    ) -> Self {
        OwnedRwLockReadGuard {
            hold: l.cell.get().hold_shared(1, at),
            inner,
            lock,
        }
    }
}

impl<T: ?Sized + 'static, U: ?Sized + 'static> OwnedRwLockReadGuard<T, U> {
    /// See [`tokio::sync::OwnedRwLockReadGuard::map`].
    pub fn map<F, V: ?Sized>(this: Self, f: F) -> OwnedRwLockReadGuard<T, V>
    where
        F: FnOnce(&U) -> &V,
    {
        let OwnedRwLockReadGuard { hold, inner, lock } = this;
        OwnedRwLockReadGuard {
            hold,
            inner: tk::RwLockReadGuard::map(inner, f),
            lock,
        }
    }

    /// See [`tokio::sync::OwnedRwLockReadGuard::try_map`].
    pub fn try_map<F, V: ?Sized>(this: Self, f: F) -> Result<OwnedRwLockReadGuard<T, V>, Self>
    where
        F: FnOnce(&U) -> Option<&V>,
    {
        let OwnedRwLockReadGuard { hold, inner, lock } = this;
        match tk::RwLockReadGuard::try_map(inner, f) {
            Ok(inner) => Ok(OwnedRwLockReadGuard { hold, inner, lock }),
            Err(inner) => Err(OwnedRwLockReadGuard { hold, inner, lock }),
        }
    }

    /// See [`tokio::sync::OwnedRwLockReadGuard::rwlock`].
    pub fn rwlock(this: &Self) -> &Arc<RwLock<T>> {
        &this.lock
    }
}

/// See [`tokio::sync::OwnedRwLockWriteGuard`].
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct OwnedRwLockWriteGuard<T: ?Sized + 'static> {
    hold: Hold<'static>,
    inner: tk::RwLockWriteGuard<'static, T>,
    lock: Arc<RwLock<T>>,
}

impl<T: ?Sized + 'static> OwnedRwLockWriteGuard<T> {
    fn new(
        lock: Arc<RwLock<T>>,
        l: &'static RwLock<T>,
        inner: tk::RwLockWriteGuard<'static, T>,
        at: Caller,
    ) -> Self {
        OwnedRwLockWriteGuard {
            hold: l.cell.get().hold_exclusive(at),
            inner,
            lock,
        }
    }

    /// See [`tokio::sync::OwnedRwLockWriteGuard::map`].
    pub fn map<F, U: ?Sized>(this: Self, f: F) -> OwnedRwLockMappedWriteGuard<T, U>
    where
        F: FnOnce(&mut T) -> &mut U,
    {
        let OwnedRwLockWriteGuard { hold, inner, lock } = this;
        OwnedRwLockMappedWriteGuard {
            hold,
            inner: tk::RwLockWriteGuard::map(inner, f),
            lock,
        }
    }

    /// See [`tokio::sync::OwnedRwLockWriteGuard::downgrade_map`].
    pub fn downgrade_map<F, U: ?Sized>(this: Self, f: F) -> OwnedRwLockReadGuard<T, U>
    where
        F: FnOnce(&T) -> &U,
    {
        let OwnedRwLockWriteGuard { hold, inner, lock } = this;
        OwnedRwLockReadGuard {
            hold,
            inner: tk::RwLockWriteGuard::downgrade_map(inner, f),
            lock,
        }
    }

    /// See [`tokio::sync::OwnedRwLockWriteGuard::try_map`].
    pub fn try_map<F, U: ?Sized>(
        this: Self,
        f: F,
    ) -> Result<OwnedRwLockMappedWriteGuard<T, U>, Self>
    where
        F: FnOnce(&mut T) -> Option<&mut U>,
    {
        let OwnedRwLockWriteGuard { hold, inner, lock } = this;
        match tk::RwLockWriteGuard::try_map(inner, f) {
            Ok(inner) => Ok(OwnedRwLockMappedWriteGuard { hold, inner, lock }),
            Err(inner) => Err(OwnedRwLockWriteGuard { hold, inner, lock }),
        }
    }

    /// See [`tokio::sync::OwnedRwLockWriteGuard::try_downgrade_map`].
    pub fn try_downgrade_map<F, U: ?Sized>(
        this: Self,
        f: F,
    ) -> Result<OwnedRwLockReadGuard<T, U>, Self>
    where
        F: FnOnce(&T) -> Option<&U>,
    {
        let OwnedRwLockWriteGuard { hold, inner, lock } = this;
        match tk::RwLockWriteGuard::try_downgrade_map(inner, f) {
            Ok(inner) => Ok(OwnedRwLockReadGuard { hold, inner, lock }),
            Err(inner) => Err(OwnedRwLockWriteGuard { hold, inner, lock }),
        }
    }

    /// See [`tokio::sync::OwnedRwLockWriteGuard::into_mapped`].
    pub fn into_mapped(this: Self) -> OwnedRwLockMappedWriteGuard<T> {
        let OwnedRwLockWriteGuard { hold, inner, lock } = this;
        OwnedRwLockMappedWriteGuard {
            hold,
            inner: tk::RwLockWriteGuard::into_mapped(inner),
            lock,
        }
    }

    /// See [`tokio::sync::OwnedRwLockWriteGuard::downgrade`].
    pub fn downgrade(self) -> OwnedRwLockReadGuard<T> {
        let OwnedRwLockWriteGuard { hold, inner, lock } = self;
        OwnedRwLockReadGuard {
            hold,
            inner: inner.downgrade(),
            lock,
        }
    }

    /// See [`tokio::sync::OwnedRwLockWriteGuard::rwlock`].
    pub fn rwlock(this: &Self) -> &Arc<RwLock<T>> {
        &this.lock
    }
}

/// See [`tokio::sync::OwnedRwLockMappedWriteGuard`].
#[must_use = "if unused the RwLock will immediately unlock"]
pub struct OwnedRwLockMappedWriteGuard<T: ?Sized + 'static, U: ?Sized + 'static = T> {
    hold: Hold<'static>,
    inner: tk::RwLockMappedWriteGuard<'static, U>,
    lock: Arc<RwLock<T>>,
}

impl<T: ?Sized + 'static, U: ?Sized + 'static> OwnedRwLockMappedWriteGuard<T, U> {
    /// See [`tokio::sync::OwnedRwLockMappedWriteGuard::map`].
    pub fn map<F, V: ?Sized>(this: Self, f: F) -> OwnedRwLockMappedWriteGuard<T, V>
    where
        F: FnOnce(&mut U) -> &mut V,
    {
        let OwnedRwLockMappedWriteGuard { hold, inner, lock } = this;
        OwnedRwLockMappedWriteGuard {
            hold,
            inner: tk::RwLockMappedWriteGuard::map(inner, f),
            lock,
        }
    }

    /// See [`tokio::sync::OwnedRwLockMappedWriteGuard::try_map`].
    pub fn try_map<F, V: ?Sized>(
        this: Self,
        f: F,
    ) -> Result<OwnedRwLockMappedWriteGuard<T, V>, Self>
    where
        F: FnOnce(&mut U) -> Option<&mut V>,
    {
        let OwnedRwLockMappedWriteGuard { hold, inner, lock } = this;
        match tk::RwLockMappedWriteGuard::try_map(inner, f) {
            Ok(inner) => Ok(OwnedRwLockMappedWriteGuard { hold, inner, lock }),
            Err(inner) => Err(OwnedRwLockMappedWriteGuard { hold, inner, lock }),
        }
    }

    /// See [`tokio::sync::OwnedRwLockMappedWriteGuard::rwlock`].
    pub fn rwlock(this: &Self) -> &Arc<RwLock<T>> {
        &this.lock
    }
}

guard_traits! {
    impl['a, T: ?Sized] RwLockReadGuard<'a, T> => T;
    impl['a, T: ?Sized] RwLockWriteGuard<'a, T> => T, mut;
    impl['a, T: ?Sized] RwLockMappedWriteGuard<'a, T> => T, mut;
    impl[T: ?Sized + 'static, U: ?Sized + 'static] OwnedRwLockReadGuard<T, U> => U;
    impl[T: ?Sized + 'static] OwnedRwLockWriteGuard<T> => T, mut;
    impl[T: ?Sized + 'static, U: ?Sized + 'static] OwnedRwLockMappedWriteGuard<T, U> => U, mut;
}
