//! [`Handle`]: tokio's runtime handle whose `spawn` and `spawn_blocking` count their tasks
//! in the task table. Everything else is tokio's, through `Deref`.

use std::future::Future;
use std::ops::Deref;
use std::panic::Location;

use crate::task::JoinHandle;

pub use tokio::runtime::{EnterGuard, RuntimeFlavor, TryCurrentError};

/// A handle to a tokio runtime that spawns instrumented tasks. See
/// [`tokio::runtime::Handle`]; its other methods (`block_on`, `enter`, `metrics`, …) are
/// reached through `Deref`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use leaktop_agent::runtime::Handle; // was: use tokio::runtime::Handle;
///
/// let handle = Handle::current();
/// assert_eq!(handle.spawn(async { 3 }).await.unwrap(), 3);
/// # }
/// ```
#[derive(Clone, Debug)]
pub struct Handle {
    inner: tokio::runtime::Handle,
}

impl Handle {
    /// See [`tokio::runtime::Handle::current`].
    #[track_caller]
    pub fn current() -> Handle {
        Handle {
            inner: tokio::runtime::Handle::current(),
        }
    }

    /// See [`tokio::runtime::Handle::try_current`].
    pub fn try_current() -> Result<Handle, TryCurrentError> {
        tokio::runtime::Handle::try_current().map(|inner| Handle { inner })
    }

    /// Spawns `future` on this runtime, counted under the caller's location. See
    /// [`tokio::runtime::Handle::spawn`].
    #[track_caller]
    pub fn spawn<F>(&self, future: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        crate::task::spawn_at(future, Location::caller(), None, Some(&self.inner))
    }

    /// Runs `func` on this runtime's blocking pool, counted at a blocking site. See
    /// [`tokio::runtime::Handle::spawn_blocking`].
    #[track_caller]
    pub fn spawn_blocking<F, R>(&self, func: F) -> JoinHandle<R>
    where
        F: FnOnce() -> R + Send + 'static,
        R: Send + 'static,
    {
        crate::task::spawn_blocking_at(func, Location::caller(), None, Some(&self.inner))
    }

    /// Escape hatch: tokio's handle.
    pub fn into_inner(self) -> tokio::runtime::Handle {
        self.inner
    }
}

impl Deref for Handle {
    type Target = tokio::runtime::Handle;

    fn deref(&self) -> &tokio::runtime::Handle {
        &self.inner
    }
}

impl From<tokio::runtime::Handle> for Handle {
    fn from(inner: tokio::runtime::Handle) -> Handle {
        Handle { inner }
    }
}
