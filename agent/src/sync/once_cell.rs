//! Instrumented [`tokio::sync::OnceCell`] and [`tokio::sync::SetOnce`]: same API and
//! semantics (they wrap tokio's), plus who waits for another task to initialise them (op
//! `once init`, since when, call site, creation site).
//!
//! A task inside `get_or_init` that is running its own initialisation future is not
//! waiting on the cell (it waits on whatever that future waits on); only a task waiting
//! for *another* task's initialisation is recorded as waiting in `once init`.

use std::cell::Cell;
use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync as tk;

use super::LazyMeta;
use crate::blocked::Wait;
use crate::wire::{ChannelKind, Op};

pub use tk::{SetError, SetOnceError};

thread_local! {
    /// Set while an initialisation future passed to `get_or_init` is polled: tells the
    /// enclosing [`InitWait`] that its task is initialising, not waiting.
    static INIT_POLLED: Cell<bool> = const { Cell::new(false) };
}

pin_project_lite::pin_project! {
    /// A cell's waiting future (tokio's), recorded as a wait while it is Pending without
    /// having polled the caller's own initialisation future.
    struct InitWait<'a, F> {
        #[pin]
        fut: F,
        meta: &'a LazyMeta,
        caller: &'static Location<'static>,
        wait: Wait,
    }
}

impl<'a, F> InitWait<'a, F> {
    fn new(meta: &'a LazyMeta, caller: &'static Location<'static>, fut: F) -> Self {
        InitWait {
            fut,
            meta,
            caller,
            wait: Wait::new(),
        }
    }
}

impl<F: Future> Future for InitWait<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let prev = INIT_POLLED.with(|c| c.replace(false));
        let r = this.fut.poll(cx);
        let initialising = INIT_POLLED.with(|c| c.replace(prev));
        match &r {
            Poll::Pending if !initialising => {
                this.wait.pending(Op::Init, this.meta.get(), this.caller)
            }
            _ => this.wait.ready(),
        }
        r
    }
}

pin_project_lite::pin_project! {
    /// The caller's initialisation future: marks its polls (see `INIT_POLLED`).
    struct RunsInit<F> {
        #[pin]
        fut: F,
    }
}

impl<F: Future> Future for RunsInit<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        INIT_POLLED.with(|c| c.set(true));
        self.project().fut.poll(cx)
    }
}

/// A cell initialised at most once, asynchronously. See [`tokio::sync::OnceCell`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use leaktop_agent::sync::OnceCell; // was: use tokio::sync::OnceCell;
///
/// static CONFIG: OnceCell<u32> = OnceCell::const_new();
/// let v = CONFIG.get_or_init(|| async { 7 }).await;
/// assert_eq!(*v, 7);
/// assert_eq!(CONFIG.get(), Some(&7));
/// # }
/// ```
pub struct OnceCell<T> {
    meta: LazyMeta,
    inner: tk::OnceCell<T>,
}

impl<T> OnceCell<T> {
    /// See [`tokio::sync::OnceCell::new`]; the caller is recorded as its creation site.
    #[track_caller]
    pub fn new() -> Self {
        OnceCell {
            meta: LazyMeta::new(ChannelKind::OnceCell, Location::caller()),
            inner: tk::OnceCell::new(),
        }
    }

    /// See [`tokio::sync::OnceCell::const_new`]; the agent record is made on first use.
    #[track_caller]
    pub const fn const_new() -> Self {
        OnceCell {
            meta: LazyMeta::lazy(ChannelKind::OnceCell, Location::caller()),
            inner: tk::OnceCell::const_new(),
        }
    }

    /// See [`tokio::sync::OnceCell::new_with`].
    #[track_caller]
    pub fn new_with(value: Option<T>) -> Self {
        OnceCell {
            meta: LazyMeta::new(ChannelKind::OnceCell, Location::caller()),
            inner: tk::OnceCell::new_with(value),
        }
    }

    /// See [`tokio::sync::OnceCell::const_new_with`].
    #[track_caller]
    pub const fn const_new_with(value: T) -> Self {
        OnceCell {
            meta: LazyMeta::lazy(ChannelKind::OnceCell, Location::caller()),
            inner: tk::OnceCell::const_new_with(value),
        }
    }

    /// See [`tokio::sync::OnceCell::initialized`].
    pub fn initialized(&self) -> bool {
        self.inner.initialized()
    }

    /// See [`tokio::sync::OnceCell::get`].
    pub fn get(&self) -> Option<&T> {
        self.inner.get()
    }

    /// See [`tokio::sync::OnceCell::get_mut`].
    pub fn get_mut(&mut self) -> Option<&mut T> {
        self.inner.get_mut()
    }

    /// See [`tokio::sync::OnceCell::set`].
    pub fn set(&self, value: T) -> Result<(), SetError<T>> {
        self.inner.set(value)
    }

    /// Gets the value, initialising it with `f` if no task has; waits while another task
    /// initialises it. See [`tokio::sync::OnceCell::get_or_init`].
    #[track_caller]
    pub fn get_or_init<'a, F, Fut>(
        &'a self,
        f: F,
    ) -> impl Future<Output = &'a T> + use<'a, T, F, Fut>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T>,
    {
        InitWait::new(
            &self.meta,
            Location::caller(),
            self.inner.get_or_init(move || RunsInit { fut: f() }),
        )
    }

    /// See [`tokio::sync::OnceCell::get_or_try_init`] and [`OnceCell::get_or_init`].
    #[track_caller]
    pub fn get_or_try_init<'a, E, F, Fut>(
        &'a self,
        f: F,
    ) -> impl Future<Output = Result<&'a T, E>> + use<'a, T, E, F, Fut>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, E>>,
    {
        InitWait::new(
            &self.meta,
            Location::caller(),
            self.inner.get_or_try_init(move || RunsInit { fut: f() }),
        )
    }

    /// See [`tokio::sync::OnceCell::into_inner`].
    pub fn into_inner(self) -> Option<T> {
        self.inner.into_inner()
    }

    /// See [`tokio::sync::OnceCell::take`].
    pub fn take(&mut self) -> Option<T> {
        self.inner.take()
    }
}

impl<T> Default for OnceCell<T> {
    #[track_caller]
    fn default() -> Self {
        OnceCell::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for OnceCell<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl<T: Clone> Clone for OnceCell<T> {
    /// A new cell with the same value, counted at the original's creation site.
    fn clone(&self) -> Self {
        OnceCell {
            meta: LazyMeta::new(ChannelKind::OnceCell, self.meta.location()),
            inner: self.inner.clone(),
        }
    }
}

impl<T: PartialEq> PartialEq for OnceCell<T> {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl<T: Eq> Eq for OnceCell<T> {}

impl<T> From<T> for OnceCell<T> {
    #[track_caller]
    fn from(value: T) -> Self {
        OnceCell {
            meta: LazyMeta::new(ChannelKind::OnceCell, Location::caller()),
            inner: tk::OnceCell::from(value),
        }
    }
}

/// A value set at most once that tasks can wait for. See [`tokio::sync::SetOnce`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use leaktop_agent::sync::SetOnce; // was: use tokio::sync::SetOnce;
///
/// let ready = Arc::new(SetOnce::new());
/// let r = ready.clone();
/// let waiter = leaktop_agent::spawn(async move { *r.wait().await });
/// ready.set(5).unwrap();
/// assert_eq!(waiter.await.unwrap(), 5);
/// # }
/// ```
pub struct SetOnce<T> {
    meta: LazyMeta,
    inner: tk::SetOnce<T>,
}

impl<T> SetOnce<T> {
    /// See [`tokio::sync::SetOnce::new`]; the caller is recorded as its creation site.
    #[track_caller]
    pub fn new() -> Self {
        SetOnce {
            meta: LazyMeta::new(ChannelKind::SetOnce, Location::caller()),
            inner: tk::SetOnce::new(),
        }
    }

    /// See [`tokio::sync::SetOnce::const_new`]; the agent record is made on first use.
    #[track_caller]
    pub const fn const_new() -> Self {
        SetOnce {
            meta: LazyMeta::lazy(ChannelKind::SetOnce, Location::caller()),
            inner: tk::SetOnce::const_new(),
        }
    }

    /// See [`tokio::sync::SetOnce::new_with`].
    #[track_caller]
    pub fn new_with(value: Option<T>) -> Self {
        SetOnce {
            meta: LazyMeta::new(ChannelKind::SetOnce, Location::caller()),
            inner: tk::SetOnce::new_with(value),
        }
    }

    /// See [`tokio::sync::SetOnce::const_new_with`].
    #[track_caller]
    pub const fn const_new_with(value: T) -> Self {
        SetOnce {
            meta: LazyMeta::lazy(ChannelKind::SetOnce, Location::caller()),
            inner: tk::SetOnce::const_new_with(value),
        }
    }

    /// See [`tokio::sync::SetOnce::initialized`].
    pub fn initialized(&self) -> bool {
        self.inner.initialized()
    }

    /// See [`tokio::sync::SetOnce::get`].
    pub fn get(&self) -> Option<&T> {
        self.inner.get()
    }

    /// See [`tokio::sync::SetOnce::set`].
    pub fn set(&self, value: T) -> Result<(), SetOnceError<T>> {
        self.inner.set(value)
    }

    /// See [`tokio::sync::SetOnce::into_inner`].
    pub fn into_inner(self) -> Option<T> {
        self.inner.into_inner()
    }

    /// Waits until the value is set. See [`tokio::sync::SetOnce::wait`].
    #[track_caller]
    pub fn wait(&self) -> impl Future<Output = &T> + use<'_, T> {
        InitWait::new(&self.meta, Location::caller(), self.inner.wait())
    }
}

impl<T> Default for SetOnce<T> {
    #[track_caller]
    fn default() -> Self {
        SetOnce::new()
    }
}

impl<T: fmt::Debug> fmt::Debug for SetOnce<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

impl<T: Clone> Clone for SetOnce<T> {
    /// A new cell with the same value, counted at the original's creation site.
    fn clone(&self) -> Self {
        SetOnce {
            meta: LazyMeta::new(ChannelKind::SetOnce, self.meta.location()),
            inner: self.inner.clone(),
        }
    }
}

impl<T: PartialEq> PartialEq for SetOnce<T> {
    fn eq(&self, other: &Self) -> bool {
        self.inner == other.inner
    }
}

impl<T: Eq> Eq for SetOnce<T> {}

impl<T> From<T> for SetOnce<T> {
    #[track_caller]
    fn from(value: T) -> Self {
        SetOnce {
            meta: LazyMeta::new(ChannelKind::SetOnce, Location::caller()),
            inner: tk::SetOnce::from(value),
        }
    }
}
