//! Instrumented [`tokio::sync::Barrier`]: same API and semantics (it wraps tokio's), plus
//! who waits at it (op `barrier wait`, since when, call site, creation site).

use std::fmt;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::task::{Context, Poll};

use tokio::sync as tk;

use super::{LazyMeta, Slow};
use crate::blocked::Wait;
use crate::wire::{ChannelKind, Op};

pub use tk::BarrierWaitResult;

/// Lets a number of tasks wait for each other. See [`tokio::sync::Barrier`].
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use leaktop_agent::sync::Barrier; // was: use tokio::sync::Barrier;
///
/// let barrier = Arc::new(Barrier::new(2));
/// let b = barrier.clone();
/// let other = leaktop_agent::spawn(async move { b.wait().await.is_leader() });
/// let me = barrier.wait().await.is_leader();
/// assert!(me ^ other.await.unwrap());
/// # }
/// ```
pub struct Barrier {
    meta: LazyMeta,
    inner: tk::Barrier,
}

impl Barrier {
    /// See [`tokio::sync::Barrier::new`]; the caller is recorded as its creation site.
    #[track_caller]
    pub fn new(n: usize) -> Barrier {
        Barrier {
            meta: LazyMeta::new(ChannelKind::Barrier, Location::caller()),
            inner: tk::Barrier::new(n),
        }
    }

    /// Waits until all tasks have reached the barrier. See
    /// [`tokio::sync::Barrier::wait`].
    #[track_caller]
    pub fn wait(&self) -> BarrierWait<'_> {
        let inner = &self.inner;
        BarrierWait {
            // SAFETY: proofs::barrier_ops.
            slow: unsafe { Slow::new(inner.wait()) },
            meta: &self.meta,
            caller: Location::caller(),
            wait: Wait::new(),
        }
    }
}

impl fmt::Debug for Barrier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.inner, f)
    }
}

/// Future of [`Barrier::wait`].
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct BarrierWait<'a> {
    slow: Slow<'a, BarrierWaitResult, ()>,
    meta: &'a LazyMeta,
    caller: &'static Location<'static>,
    wait: Wait,
}

impl fmt::Debug for BarrierWait<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BarrierWait")
            .field("wait", &self.wait)
            .finish()
    }
}

impl Future for BarrierWait<'_> {
    type Output = BarrierWaitResult;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<BarrierWaitResult> {
        let this = self.get_mut();
        this.wait.track(
            this.slow.poll(cx),
            Op::BarrierWait,
            this.meta.get(),
            this.caller,
        )
    }
}
