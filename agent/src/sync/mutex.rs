//! Instrumented [`tokio::sync::Mutex`]: same API and semantics (it wraps tokio's), plus
//! who waits (op `mutex lock`, since when, the `lock()` call site, the mutex's creation
//! site) and who holds it (see [`super::holders`]).

use std::fmt;
use std::future::Future;
use std::marker::PhantomData;
use std::panic::Location;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::sync as tk;

use super::acquire::{Acquiring, Caller};
use super::holders::{Hold, LockCell};
use super::Slow;
use crate::wire::{ChannelKind, Op};

pub use tk::TryLockError;

/// An asynchronous mutex that records its waiters and its holder. See
/// [`tokio::sync::Mutex`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use leaktop_agent::sync::Mutex; // was: use tokio::sync::Mutex;
///
/// let count = Arc::new(Mutex::new(0));
/// let c = count.clone();
/// leaktop_agent::spawn(async move { *c.lock().await += 1 }).await.unwrap();
/// assert_eq!(*count.lock().await, 1);
/// # }
/// ```
pub struct Mutex<T: ?Sized> {
    cell: LockCell<1>,
    inner: tk::Mutex<T>,
}

impl<T: ?Sized> Mutex<T> {
    /// A new unlocked mutex, recording the caller as its creation site. See
    /// [`tokio::sync::Mutex::new`].
    #[track_caller]
    pub fn new(t: T) -> Self
    where
        T: Sized,
    {
        Mutex {
            cell: LockCell::new(ChannelKind::Mutex, None, Location::caller()),
            inner: tk::Mutex::new(t),
        }
    }

    /// A new unlocked mutex in a `const` context (a `static`); the caller is recorded as
    /// its creation site, its agent record is made on first use. See
    /// [`tokio::sync::Mutex::const_new`].
    #[track_caller]
    pub const fn const_new(t: T) -> Self
    where
        T: Sized,
    {
        Mutex {
            cell: LockCell::lazy(ChannelKind::Mutex, None, Location::caller()),
            inner: tk::Mutex::const_new(t),
        }
    }

    /// Locks the mutex, waiting until it is free. See [`tokio::sync::Mutex::lock`].
    #[track_caller]
    pub fn lock(&self) -> Lock<'_, T> {
        Lock {
            mutex: self,
            acq: Acquiring::new(Location::caller()),
        }
    }

    /// Locks the mutex from synchronous code (the holder is recorded; the thread's wait
    /// is not). See [`tokio::sync::Mutex::blocking_lock`].
    #[track_caller]
    pub fn blocking_lock(&self) -> MutexGuard<'_, T> {
        let inner = self.inner.blocking_lock();
        MutexGuard::new(self, inner, Location::caller())
    }

    /// See [`tokio::sync::Mutex::blocking_lock_owned`].
    #[track_caller]
    pub fn blocking_lock_owned(self: Arc<Self>) -> OwnedMutexGuard<T>
    where
        T: 'static,
    {
        let m = owned_ref(&self);
        let inner = m.inner.blocking_lock();
        OwnedMutexGuard::new(self, m, inner, Location::caller())
    }

    /// Locks the mutex, waiting until it is free; the guard keeps the `Arc`. See
    /// [`tokio::sync::Mutex::lock_owned`].
    #[track_caller]
    pub fn lock_owned(self: Arc<Self>) -> LockOwned<T>
    where
        T: 'static,
    {
        LockOwned {
            acq: Acquiring::new(Location::caller()),
            mutex: Some(self),
        }
    }

    /// See [`tokio::sync::Mutex::try_lock`].
    #[track_caller]
    pub fn try_lock(&self) -> Result<MutexGuard<'_, T>, TryLockError> {
        let inner = self.inner.try_lock()?;
        Ok(MutexGuard::new(self, inner, Location::caller()))
    }

    /// See [`tokio::sync::Mutex::try_lock_owned`].
    #[track_caller]
    pub fn try_lock_owned(self: Arc<Self>) -> Result<OwnedMutexGuard<T>, TryLockError>
    where
        T: 'static,
    {
        let m = owned_ref(&self);
        let inner = m.inner.try_lock()?;
        Ok(OwnedMutexGuard::new(self, m, inner, Location::caller()))
    }

    /// See [`tokio::sync::Mutex::get_mut`].
    pub fn get_mut(&mut self) -> &mut T {
        self.inner.get_mut()
    }

    /// See [`tokio::sync::Mutex::into_inner`].
    pub fn into_inner(self) -> T
    where
        T: Sized,
    {
        self.inner.into_inner()
    }

    /// Escape hatch: tokio's mutex inside (locks taken through it are not seen).
    pub fn as_tokio(&self) -> &tk::Mutex<T> {
        &self.inner
    }
}

/// `&'static` access to the mutex inside an `Arc` that the caller keeps alive for as long
/// as the reference is used (owned guards and futures hold the `Arc` and drop it last).
fn owned_ref<T: ?Sized + 'static>(m: &Arc<Mutex<T>>) -> &'static Mutex<T> {
    // SAFETY: an `Arc`'s pointee never moves and lives while the `Arc` does; every user
    // stores the `Arc` beside the borrow and drops the borrow first (field order).
    unsafe { &*Arc::as_ptr(m) }
}

impl<T> From<T> for Mutex<T> {
    #[track_caller]
    fn from(t: T) -> Self {
        Mutex::new(t)
    }
}

impl<T: Default> Default for Mutex<T> {
    #[track_caller]
    fn default() -> Self {
        Mutex::new(T::default())
    }
}

impl<T: ?Sized + fmt::Debug> fmt::Debug for Mutex<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

// ---------------------------------------------------------------------------------------
// Futures

/// Future of [`Mutex::lock`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct Lock<'a, T: ?Sized> {
    mutex: &'a Mutex<T>,
    acq: Acquiring<'a, tk::MutexGuard<'a, T>, PhantomData<T>>,
}

impl<T: ?Sized> fmt::Debug for Lock<'_, T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Lock").field("acq", &self.acq).finish()
    }
}

impl<'a, T: ?Sized> Future for Lock<'a, T> {
    type Output = MutexGuard<'a, T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let m: &'a Mutex<T> = this.mutex;
        let inner = ready!(this.acq.poll(
            cx,
            Op::Lock,
            m.cell.get(),
            || m.inner.try_lock().ok(),
            // SAFETY: proofs::mutex_ops.
            || unsafe { Slow::new(m.inner.lock()) },
        ));
        Poll::Ready(MutexGuard::new(m, inner, this.acq.caller()))
    }
}

/// Future of [`Mutex::lock_owned`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct LockOwned<T: ?Sized + 'static> {
    /// Borrows from `mutex`: declared (so dropped) first.
    acq: Acquiring<'static, tk::MutexGuard<'static, T>, PhantomData<T>>,
    mutex: Option<Arc<Mutex<T>>>,
}

impl<T: ?Sized + 'static> fmt::Debug for LockOwned<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("LockOwned").field("acq", &self.acq).finish()
    }
}

impl<T: ?Sized + 'static> Future for LockOwned<T> {
    type Output = OwnedMutexGuard<T>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.get_mut();
        let Some(arc) = this.mutex.as_ref() else {
            panic!("LockOwned polled after completion")
        };
        let m = owned_ref(arc);
        let inner = ready!(this.acq.poll(
            cx,
            Op::Lock,
            m.cell.get(),
            || m.inner.try_lock().ok(),
            // SAFETY: proofs::mutex_ops.
            || unsafe { Slow::new(m.inner.lock()) },
        ));
        let Some(arc) = this.mutex.take() else {
            unreachable!("checked above")
        };
        Poll::Ready(OwnedMutexGuard::new(arc, m, inner, this.acq.caller()))
    }
}

// ---------------------------------------------------------------------------------------
// Guards (the hold is declared first: cleared before the lock is released)

/// See [`tokio::sync::MutexGuard`].
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MutexGuard<'a, T: ?Sized> {
    hold: Hold<'a>,
    inner: tk::MutexGuard<'a, T>,
    lock: &'a Mutex<T>,
}

impl<'a, T: ?Sized> MutexGuard<'a, T> {
    fn new(lock: &'a Mutex<T>, inner: tk::MutexGuard<'a, T>, at: Caller) -> Self {
        MutexGuard {
            hold: lock.cell.get().hold_exclusive(at),
            inner,
            lock,
        }
    }

    /// See [`tokio::sync::MutexGuard::map`].
    pub fn map<U: ?Sized, F>(this: Self, f: F) -> MappedMutexGuard<'a, U>
    where
        F: FnOnce(&mut T) -> &mut U,
    {
        let MutexGuard { hold, inner, .. } = this;
        MappedMutexGuard {
            hold,
            inner: tk::MutexGuard::map(inner, f),
        }
    }

    /// See [`tokio::sync::MutexGuard::try_map`].
    pub fn try_map<U: ?Sized, F>(this: Self, f: F) -> Result<MappedMutexGuard<'a, U>, Self>
    where
        F: FnOnce(&mut T) -> Option<&mut U>,
    {
        let MutexGuard { hold, inner, lock } = this;
        match tk::MutexGuard::try_map(inner, f) {
            Ok(inner) => Ok(MappedMutexGuard { hold, inner }),
            Err(inner) => Err(MutexGuard { hold, inner, lock }),
        }
    }

    /// See [`tokio::sync::MutexGuard::mutex`].
    pub fn mutex(this: &Self) -> &'a Mutex<T> {
        this.lock
    }
}

/// See [`tokio::sync::OwnedMutexGuard`].
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct OwnedMutexGuard<T: ?Sized + 'static> {
    hold: Hold<'static>,
    inner: tk::MutexGuard<'static, T>,
    /// Keeps the borrows above valid: dropped last.
    lock: Arc<Mutex<T>>,
}

impl<T: ?Sized + 'static> OwnedMutexGuard<T> {
    fn new(
        lock: Arc<Mutex<T>>,
        m: &'static Mutex<T>,
        inner: tk::MutexGuard<'static, T>,
        at: Caller,
    ) -> Self {
        OwnedMutexGuard {
            hold: m.cell.get().hold_exclusive(at),
            inner,
            lock,
        }
    }

    /// See [`tokio::sync::OwnedMutexGuard::map`].
    pub fn map<U: ?Sized, F>(this: Self, f: F) -> OwnedMappedMutexGuard<T, U>
    where
        F: FnOnce(&mut T) -> &mut U,
    {
        let OwnedMutexGuard { hold, inner, lock } = this;
        OwnedMappedMutexGuard {
            hold,
            inner: tk::MutexGuard::map(inner, f),
            lock,
        }
    }

    /// See [`tokio::sync::OwnedMutexGuard::try_map`].
    pub fn try_map<U: ?Sized, F>(this: Self, f: F) -> Result<OwnedMappedMutexGuard<T, U>, Self>
    where
        F: FnOnce(&mut T) -> Option<&mut U>,
    {
        let OwnedMutexGuard { hold, inner, lock } = this;
        match tk::MutexGuard::try_map(inner, f) {
            Ok(inner) => Ok(OwnedMappedMutexGuard { hold, inner, lock }),
            Err(inner) => Err(OwnedMutexGuard { hold, inner, lock }),
        }
    }

    /// See [`tokio::sync::OwnedMutexGuard::mutex`].
    pub fn mutex(this: &Self) -> &Arc<Mutex<T>> {
        &this.lock
    }
}

/// See [`tokio::sync::MappedMutexGuard`].
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct MappedMutexGuard<'a, T: ?Sized> {
    hold: Hold<'a>,
    inner: tk::MappedMutexGuard<'a, T>,
}

impl<'a, T: ?Sized> MappedMutexGuard<'a, T> {
    /// See [`tokio::sync::MappedMutexGuard::map`].
    pub fn map<U, F>(this: Self, f: F) -> MappedMutexGuard<'a, U>
    where
        F: FnOnce(&mut T) -> &mut U,
    {
        let MappedMutexGuard { hold, inner } = this;
        MappedMutexGuard {
            hold,
            inner: tk::MappedMutexGuard::map(inner, f),
        }
    }

    /// See [`tokio::sync::MappedMutexGuard::try_map`].
    pub fn try_map<U, F>(this: Self, f: F) -> Result<MappedMutexGuard<'a, U>, Self>
    where
        F: FnOnce(&mut T) -> Option<&mut U>,
    {
        let MappedMutexGuard { hold, inner } = this;
        match tk::MappedMutexGuard::try_map(inner, f) {
            Ok(inner) => Ok(MappedMutexGuard { hold, inner }),
            Err(inner) => Err(MappedMutexGuard { hold, inner }),
        }
    }
}

/// See [`tokio::sync::OwnedMappedMutexGuard`].
#[must_use = "if unused the Mutex will immediately unlock"]
pub struct OwnedMappedMutexGuard<T: ?Sized + 'static, U: ?Sized + 'static = T> {
    hold: Hold<'static>,
    inner: tk::MappedMutexGuard<'static, U>,
    lock: Arc<Mutex<T>>,
}

impl<T: ?Sized + 'static, U: ?Sized + 'static> OwnedMappedMutexGuard<T, U> {
    /// See [`tokio::sync::OwnedMappedMutexGuard::map`].
    pub fn map<S, F>(this: Self, f: F) -> OwnedMappedMutexGuard<T, S>
    where
        F: FnOnce(&mut U) -> &mut S,
    {
        let OwnedMappedMutexGuard { hold, inner, lock } = this;
        OwnedMappedMutexGuard {
            hold,
            inner: tk::MappedMutexGuard::map(inner, f),
            lock,
        }
    }

    /// See [`tokio::sync::OwnedMappedMutexGuard::try_map`].
    pub fn try_map<S, F>(this: Self, f: F) -> Result<OwnedMappedMutexGuard<T, S>, Self>
    where
        F: FnOnce(&mut U) -> Option<&mut S>,
    {
        let OwnedMappedMutexGuard { hold, inner, lock } = this;
        match tk::MappedMutexGuard::try_map(inner, f) {
            Ok(inner) => Ok(OwnedMappedMutexGuard { hold, inner, lock }),
            Err(inner) => Err(OwnedMappedMutexGuard { hold, inner, lock }),
        }
    }
}

/// Deref (and DerefMut with `, mut`), Debug and Display of a guard: those of tokio's
/// guard inside.
macro_rules! guard_traits {
    () => {};
    (impl[$($g:tt)*] $Guard:ty => $Target:ident, mut; $($rest:tt)*) => {
        guard_traits!(@ref [$($g)*] $Guard => $Target);
        guard_traits!(@mut [$($g)*] $Guard => $Target);
        guard_traits!($($rest)*);
    };
    (impl[$($g:tt)*] $Guard:ty => $Target:ident; $($rest:tt)*) => {
        guard_traits!(@ref [$($g)*] $Guard => $Target);
        guard_traits!($($rest)*);
    };
    (@ref [$($g:tt)*] $Guard:ty => $Target:ident) => {
        impl<$($g)*> std::ops::Deref for $Guard {
            type Target = $Target;
            fn deref(&self) -> &$Target {
                &self.inner
            }
        }
        impl<$($g)*> std::fmt::Debug for $Guard where $Target: std::fmt::Debug {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Debug::fmt(&self.inner, f)
            }
        }
        impl<$($g)*> std::fmt::Display for $Guard where $Target: std::fmt::Display {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                std::fmt::Display::fmt(&self.inner, f)
            }
        }
    };
    (@mut [$($g:tt)*] $Guard:ty => $Target:ident) => {
        impl<$($g)*> std::ops::DerefMut for $Guard {
            fn deref_mut(&mut self) -> &mut $Target {
                &mut self.inner
            }
        }
    };
}
pub(crate) use guard_traits;

guard_traits! {
    impl['a, T: ?Sized] MutexGuard<'a, T> => T, mut;
    impl[T: ?Sized + 'static] OwnedMutexGuard<T> => T, mut;
    impl['a, T: ?Sized] MappedMutexGuard<'a, T> => T, mut;
    impl[T: ?Sized + 'static, U: ?Sized + 'static] OwnedMappedMutexGuard<T, U> => U, mut;
}
