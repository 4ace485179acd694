//! Stream adapters over the instrumented channels (feature `stream`): the
//! `tokio_stream::wrappers` of the same names, implementing `futures_core::Stream`, for
//! channels the agent keeps seeing. Migrating is the same `use` change as for the
//! channels themselves:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! use leaktop_agent::stream::wrappers::ReceiverStream; // was: use tokio_stream::wrappers::ReceiverStream;
//! use leaktop_agent::sync::mpsc;
//! # use std::future::poll_fn;
//! # use std::pin::Pin;
//! # use futures_core::Stream;
//!
//! let (tx, rx) = mpsc::channel(4);
//! tx.send(1).await.unwrap();
//! drop(tx);
//! let mut stream = ReceiverStream::new(rx);
//! // stream.next().await with futures' StreamExt:
//! assert_eq!(poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await, Some(1));
//! assert_eq!(poll_fn(|cx| Pin::new(&mut stream).poll_next(cx)).await, None);
//! # }
//! ```
//!
//! A wait inside a stream is recorded like the channel operation it stands for (`chan
//! recv`, `watch changed`), with the place where the stream was created as its call site
//! (`poll_next` has no caller worth naming).

/// The wrappers: see each type.
pub mod wrappers {
    pub use super::broadcast::BroadcastStream;
    pub use super::join_set::JoinSetStream;
    pub use super::mpsc::{ReceiverStream, UnboundedReceiverStream};
    pub use super::watch::WatchStream;

    /// Errors of the wrappers, as in `tokio_stream::wrappers::errors`.
    pub mod errors {
        pub use super::super::broadcast::BroadcastStreamRecvError;
    }
}

mod mpsc {
    use std::panic::Location;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures_core::Stream;

    use crate::sync::mpsc::{Receiver, UnboundedReceiver};

    macro_rules! receiver_stream {
        ($(#[$doc:meta])* $Stream:ident, $Receiver:ident, $closed_hint:expr) => {
            $(#[$doc])*
            #[derive(Debug)]
            pub struct $Stream<T> {
                inner: $Receiver<T>,
                at: &'static Location<'static>,
            }

            impl<T> $Stream<T> {
                /// Wraps `recv`; the caller is the call site of the stream's waits.
                #[track_caller]
                pub fn new(recv: $Receiver<T>) -> Self {
                    $Stream {
                        inner: recv,
                        at: Location::caller(),
                    }
                }

                /// The receiver back.
                pub fn into_inner(self) -> $Receiver<T> {
                    self.inner
                }

                /// Closes the receiving half without dropping it.
                pub fn close(&mut self) {
                    self.inner.close();
                }
            }

            impl<T> Stream for $Stream<T> {
                type Item = T;

                fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
                    let at = self.at;
                    self.inner.poll_recv_at(cx, at)
                }

                fn size_hint(&self) -> (usize, Option<usize>) {
                    let len = self.inner.len();
                    if self.inner.is_closed() {
                        #[allow(clippy::redundant_closure_call)]
                        (len, Some(($closed_hint)(&self.inner)))
                    } else {
                        (len, None)
                    }
                }
            }

            impl<T> AsRef<$Receiver<T>> for $Stream<T> {
                fn as_ref(&self) -> &$Receiver<T> {
                    &self.inner
                }
            }

            impl<T> AsMut<$Receiver<T>> for $Stream<T> {
                fn as_mut(&mut self) -> &mut $Receiver<T> {
                    &mut self.inner
                }
            }

            impl<T> From<$Receiver<T>> for $Stream<T> {
                #[track_caller]
                fn from(recv: $Receiver<T>) -> Self {
                    Self::new(recv)
                }
            }
        };
    }

    receiver_stream!(
        /// A [`Receiver`] as a `Stream`. See `tokio_stream::wrappers::ReceiverStream`.
        ReceiverStream,
        Receiver,
        |r: &Receiver<T>| r.max_capacity() - r.capacity()
    );
    receiver_stream!(
        /// An [`UnboundedReceiver`] as a `Stream`. See
        /// `tokio_stream::wrappers::UnboundedReceiverStream`.
        UnboundedReceiverStream,
        UnboundedReceiver,
        |r: &UnboundedReceiver<T>| r.len()
    );
}

mod broadcast {
    use std::fmt;
    use std::future::Future;
    use std::panic::Location;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures_core::Stream;

    use crate::sync::broadcast::error::RecvError;
    use crate::sync::broadcast::Receiver;

    type Waiting<T> = Pin<Box<dyn Future<Output = (Result<T, RecvError>, Receiver<T>)> + Send>>;

    enum State<T> {
        Idle(Receiver<T>),
        /// A receive that had to wait, owning the receiver.
        Waiting(Waiting<T>),
        Taken,
    }

    /// A broadcast [`Receiver`] as a `Stream`. See
    /// `tokio_stream::wrappers::BroadcastStream`.
    pub struct BroadcastStream<T> {
        state: State<T>,
        at: &'static Location<'static>,
    }

    /// A receiver fell behind. See
    /// `tokio_stream::wrappers::errors::BroadcastStreamRecvError`.
    #[derive(Debug, PartialEq, Eq, Clone)]
    pub enum BroadcastStreamRecvError {
        /// The receiver lagged too far behind: this many values were skipped.
        Lagged(u64),
    }

    impl fmt::Display for BroadcastStreamRecvError {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            match self {
                BroadcastStreamRecvError::Lagged(amt) => write!(f, "channel lagged by {amt}"),
            }
        }
    }

    impl std::error::Error for BroadcastStreamRecvError {}

    impl<T: 'static + Clone + Send> BroadcastStream<T> {
        /// Wraps `rx`; the caller is the call site of the stream's waits.
        #[track_caller]
        pub fn new(rx: Receiver<T>) -> Self {
            BroadcastStream {
                state: State::Idle(rx),
                at: Location::caller(),
            }
        }
    }

    fn item<T>(r: Result<T, RecvError>) -> Option<Result<T, BroadcastStreamRecvError>> {
        match r {
            Ok(v) => Some(Ok(v)),
            Err(RecvError::Closed) => None,
            Err(RecvError::Lagged(n)) => Some(Err(BroadcastStreamRecvError::Lagged(n))),
        }
    }

    impl<T: 'static + Clone + Send> Stream for BroadcastStream<T> {
        type Item = Result<T, BroadcastStreamRecvError>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            let this = &mut *self;
            let at = this.at;
            let mut waiting = match std::mem::replace(&mut this.state, State::Taken) {
                State::Idle(mut rx) => {
                    // Without waiting, no allocation: a receive that is ready at once.
                    let ready = Pin::new(&mut rx.recv_at(at)).poll(cx);
                    if let Poll::Ready(r) = ready {
                        this.state = State::Idle(rx);
                        return Poll::Ready(item(r));
                    }
                    // It has to wait (dropping the pending receive loses nothing: tokio's
                    // recv is cancel safe): a receive that owns the receiver.
                    let fut: Waiting<T> = Box::pin(async move {
                        let r = rx.recv_at(at).await;
                        (r, rx)
                    });
                    fut
                }
                State::Waiting(fut) => fut,
                State::Taken => unreachable!("the state is restored before every return"),
            };
            match waiting.as_mut().poll(cx) {
                Poll::Ready((r, rx)) => {
                    this.state = State::Idle(rx);
                    Poll::Ready(item(r))
                }
                Poll::Pending => {
                    this.state = State::Waiting(waiting);
                    Poll::Pending
                }
            }
        }
    }

    impl<T> fmt::Debug for BroadcastStream<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("BroadcastStream").finish()
        }
    }

    impl<T: 'static + Clone + Send> From<Receiver<T>> for BroadcastStream<T> {
        #[track_caller]
        fn from(recv: Receiver<T>) -> Self {
            Self::new(recv)
        }
    }
}

mod watch {
    use std::fmt;
    use std::future::Future;
    use std::panic::Location;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures_core::Stream;

    use crate::sync::watch::error::RecvError;
    use crate::sync::watch::Receiver;

    type Waiting<T> = Pin<Box<dyn Future<Output = (Result<(), RecvError>, Receiver<T>)> + Send>>;

    enum State<T> {
        /// `new`: the current value is the first item.
        First(Receiver<T>),
        Idle(Receiver<T>),
        Waiting(Waiting<T>),
        Taken,
    }

    /// A watch [`Receiver`] as a `Stream` of its values. See
    /// `tokio_stream::wrappers::WatchStream`.
    pub struct WatchStream<T> {
        state: State<T>,
        at: &'static Location<'static>,
    }

    impl<T: 'static + Clone + Send + Sync> WatchStream<T> {
        /// A stream that yields the current value first, then every change. The caller
        /// is the call site of the stream's waits.
        #[track_caller]
        pub fn new(rx: Receiver<T>) -> Self {
            WatchStream {
                state: State::First(rx),
                at: Location::caller(),
            }
        }

        /// A stream that yields only values sent after it was made.
        #[track_caller]
        pub fn from_changes(rx: Receiver<T>) -> Self {
            WatchStream {
                state: State::Idle(rx),
                at: Location::caller(),
            }
        }
    }

    impl<T: 'static + Clone + Send + Sync> Stream for WatchStream<T> {
        type Item = T;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
            let this = &mut *self;
            let at = this.at;
            let (r, mut rx) = match std::mem::replace(&mut this.state, State::Taken) {
                State::First(rx) => (Ok(()), rx),
                State::Idle(mut rx) => {
                    let ready = Pin::new(&mut rx.changed_at(at)).poll(cx);
                    match ready {
                        Poll::Ready(r) => (r, rx),
                        Poll::Pending => {
                            // tokio's `changed` is cancel safe: wait with one that owns
                            // the receiver.
                            let fut: Waiting<T> = Box::pin(async move {
                                let r = rx.changed_at(at).await;
                                (r, rx)
                            });
                            this.state = State::Waiting(fut);
                            return self.poll_next(cx);
                        }
                    }
                }
                State::Waiting(mut fut) => match fut.as_mut().poll(cx) {
                    Poll::Ready(out) => out,
                    Poll::Pending => {
                        this.state = State::Waiting(fut);
                        return Poll::Pending;
                    }
                },
                State::Taken => unreachable!("the state is restored before every return"),
            };
            let item = match r {
                Ok(()) => Some(rx.borrow_and_update().clone()),
                Err(_) => None,
            };
            this.state = State::Idle(rx);
            Poll::Ready(item)
        }
    }

    impl<T> Unpin for WatchStream<T> {}

    impl<T> fmt::Debug for WatchStream<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.debug_struct("WatchStream").finish()
        }
    }

    impl<T: 'static + Clone + Send + Sync> From<Receiver<T>> for WatchStream<T> {
        #[track_caller]
        fn from(recv: Receiver<T>) -> Self {
            Self::new(recv)
        }
    }
}

mod join_set {
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures_core::Stream;
    use tokio::task::JoinError;

    use crate::task::JoinSet;

    /// A [`JoinSet`] as a `Stream` of its tasks' results, in completion order. See
    /// `tokio_stream::wrappers::JoinSetStream`.
    #[derive(Debug)]
    pub struct JoinSetStream<T> {
        inner: JoinSet<T>,
    }

    impl<T> JoinSetStream<T> {
        /// Wraps `join_set`.
        pub fn new(join_set: JoinSet<T>) -> Self {
            JoinSetStream { inner: join_set }
        }

        /// The set back.
        pub fn into_inner(self) -> JoinSet<T> {
            self.inner
        }
    }

    impl<T: 'static> Stream for JoinSetStream<T> {
        type Item = Result<T, JoinError>;

        fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
            self.inner.poll_join_next(cx)
        }

        fn size_hint(&self) -> (usize, Option<usize>) {
            let n = self.inner.len();
            (n, Some(n))
        }
    }

    impl<T> AsRef<JoinSet<T>> for JoinSetStream<T> {
        fn as_ref(&self) -> &JoinSet<T> {
            &self.inner
        }
    }

    impl<T> AsMut<JoinSet<T>> for JoinSetStream<T> {
        fn as_mut(&mut self) -> &mut JoinSet<T> {
            &mut self.inner
        }
    }

    impl<T> From<JoinSet<T>> for JoinSetStream<T> {
        fn from(join_set: JoinSet<T>) -> Self {
            Self::new(join_set)
        }
    }
}
