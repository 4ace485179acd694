//! The state every lock-like future shares (`Mutex::lock`, `RwLock::read`/`write`,
//! `Semaphore::acquire*`, their owned variants): try tokio's non-blocking variant first,
//! charged to the task's cooperative budget as tokio's own future is; only when that would
//! wait, box tokio's future and record the wait (the task's blocked registration and the
//! lock's waiter registration that [`super::holders::lock_states`] reads).

use std::panic::Location;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use tokio::task::coop;

use super::holders::{LockShared, LockWait};
use super::Slow;
use crate::blocked::Wait;
use crate::wire::Op;

pub(crate) type Caller = &'static Location<'static>;

pub(crate) struct Acquiring<'a, O, M> {
    slow: Option<Slow<'a, O, M>>,
    caller: Caller,
    done: bool,
    wait: Wait,
    lock_wait: LockWait,
}

impl<'a, O, M> Acquiring<'a, O, M> {
    pub const fn new(caller: Caller) -> Self {
        Acquiring {
            slow: None,
            caller,
            done: false,
            wait: Wait::new(),
            lock_wait: LockWait::new(),
        }
    }

    pub fn caller(&self) -> Caller {
        self.caller
    }

    /// One poll of the acquisition. `fast` is tokio's `try_*` (None: it would wait);
    /// `slow` builds tokio's waiting future.
    #[inline]
    pub fn poll<const N: usize>(
        &mut self,
        cx: &mut Context<'_>,
        op: Op,
        shared: &Arc<LockShared<N>>,
        fast: impl FnOnce() -> Option<O>,
        slow: impl FnOnce() -> Slow<'a, O, M>,
    ) -> Poll<O> {
        assert!(!self.done, "lock future polled after completion");
        let s = match &mut self.slow {
            Some(s) => s,
            None => {
                let coop = ready!(coop::poll_proceed(cx));
                if let Some(o) = fast() {
                    coop.made_progress();
                    self.done = true;
                    return Poll::Ready(o);
                }
                drop(coop);
                self.slow.insert(slow())
            }
        };
        match self.wait.track(s.poll(cx), op, &shared.meta, self.caller) {
            Poll::Pending => {
                self.lock_wait.begin(shared, op, self.caller);
                Poll::Pending
            }
            Poll::Ready(o) => {
                self.lock_wait.end();
                self.slow = None;
                self.done = true;
                Poll::Ready(o)
            }
        }
    }
}

impl<O, M> std::fmt::Debug for Acquiring<'_, O, M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Acquiring")
            .field("caller", &self.caller)
            .field("wait", &self.wait)
            .finish()
    }
}

/// Runs `fut` to completion on this thread (the `blocking_*` methods tokio added after
/// the oldest tokio we support). Like tokio's, it panics inside an asynchronous execution
/// context; the check is tokio's own (a `blocking_recv` that returns at once).
pub(crate) fn block_on<F: std::future::Future>(fut: F) -> F::Output {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let _ = tx.send(());
    let _ = rx.blocking_recv();
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
        fn wake_by_ref(self: &Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut fut = std::pin::pin!(fut);
    loop {
        if let Poll::Ready(v) = fut.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}
