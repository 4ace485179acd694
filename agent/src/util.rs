//! Sink adapters over the instrumented channels (feature `stream`): the `tokio_util::sync`
//! items of the same names, for channels the agent keeps seeing.

/// As `tokio_util::sync`: [`PollSender`](sync::PollSender).
pub mod sync {
    pub use super::poll_sender::{PollSendError, PollSender};
}

mod poll_sender {
    use std::fmt;
    use std::future::Future;
    use std::panic::Location;
    use std::pin::Pin;
    use std::task::{Context, Poll};

    use futures_sink::Sink;

    use crate::sync::mpsc::{OwnedPermit, ReserveOwned, Sender};

    /// The channel is closed (with the item, when one was being sent). See
    /// `tokio_util::sync::PollSendError`.
    #[derive(Debug)]
    pub struct PollSendError<T>(Option<T>);

    impl<T> PollSendError<T> {
        /// The item that could not be sent, if any.
        pub fn into_inner(self) -> Option<T> {
            self.0
        }
    }

    impl<T> fmt::Display for PollSendError<T> {
        fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            write!(f, "channel closed")
        }
    }

    impl<T: fmt::Debug> std::error::Error for PollSendError<T> {}

    #[derive(Debug)]
    enum State<T> {
        Idle(Sender<T>),
        Acquiring(ReserveOwned<T>),
        ReadyToSend(OwnedPermit<T>),
        Closed,
    }

    /// A bounded [`Sender`] with a poll-based send and a `Sink` implementation. See
    /// `tokio_util::sync::PollSender`. A wait for capacity is recorded as a `chan
    /// reserve` whose call site is where the `PollSender` was made.
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// use std::future::poll_fn;
    /// use leaktop_agent::sync::mpsc;
    /// use leaktop_agent::util::sync::PollSender; // was: use tokio_util::sync::PollSender;
    ///
    /// let (tx, mut rx) = mpsc::channel(1);
    /// let mut sender = PollSender::new(tx);
    /// poll_fn(|cx| sender.poll_reserve(cx)).await.unwrap();
    /// sender.send_item(5).unwrap();
    /// assert_eq!(rx.recv().await, Some(5));
    /// # }
    /// ```
    #[derive(Debug)]
    pub struct PollSender<T> {
        sender: Option<Sender<T>>,
        state: State<T>,
        at: &'static Location<'static>,
    }

    impl<T: Send + 'static> PollSender<T> {
        /// Wraps `sender`; the caller is the call site of its waits for capacity.
        #[track_caller]
        pub fn new(sender: Sender<T>) -> Self {
            PollSender {
                sender: Some(sender.clone()),
                state: State::Idle(sender),
                at: Location::caller(),
            }
        }

        fn take_state(&mut self) -> State<T> {
            std::mem::replace(&mut self.state, State::Closed)
        }

        /// Waits for capacity for one item. See `tokio_util::sync::PollSender::poll_reserve`.
        pub fn poll_reserve(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), PollSendError<T>>> {
            loop {
                let (result, next) = match self.take_state() {
                    State::Idle(sender) => {
                        (None, State::Acquiring(sender.reserve_owned_at(self.at)))
                    }
                    State::Acquiring(mut fut) => match Pin::new(&mut fut).poll(cx) {
                        Poll::Ready(Ok(permit)) => {
                            (Some(Poll::Ready(Ok(()))), State::ReadyToSend(permit))
                        }
                        Poll::Ready(Err(_)) => {
                            (Some(Poll::Ready(Err(PollSendError(None)))), State::Closed)
                        }
                        Poll::Pending => (Some(Poll::Pending), State::Acquiring(fut)),
                    },
                    s @ State::Closed => (Some(Poll::Ready(Err(PollSendError(None)))), s),
                    s @ State::ReadyToSend(_) => (Some(Poll::Ready(Ok(()))), s),
                };
                self.state = next;
                if let Some(result) = result {
                    return result;
                }
            }
        }

        /// Sends an item into the capacity reserved by [`Self::poll_reserve`]; panics
        /// without one, like tokio-util's. See `tokio_util::sync::PollSender::send_item`.
        #[track_caller]
        pub fn send_item(&mut self, value: T) -> Result<(), PollSendError<T>> {
            let (result, next) = match self.take_state() {
                State::Idle(_) | State::Acquiring(_) => {
                    panic!("`send_item` called without first calling `poll_reserve`")
                }
                State::ReadyToSend(permit) => (Ok(()), State::Idle(permit.send(value))),
                State::Closed => (Err(PollSendError(Some(value))), State::Closed),
            };
            // A `close` between `poll_reserve` and `send_item` takes effect now.
            self.state = if self.sender.is_some() {
                next
            } else {
                State::Closed
            };
            result
        }

        /// See `tokio_util::sync::PollSender::is_closed`.
        pub fn is_closed(&self) -> bool {
            matches!(self.state, State::Closed) || self.sender.is_none()
        }

        /// See `tokio_util::sync::PollSender::get_ref`.
        pub fn get_ref(&self) -> Option<&Sender<T>> {
            self.sender.as_ref()
        }

        /// See `tokio_util::sync::PollSender::close`.
        pub fn close(&mut self) {
            self.sender = None;
            match self.state {
                State::Idle(_) | State::Acquiring(_) => self.state = State::Closed,
                _ => {}
            }
        }

        /// See `tokio_util::sync::PollSender::abort_send`.
        pub fn abort_send(&mut self) -> bool {
            let (result, next) = match self.take_state() {
                State::Acquiring(fut) => {
                    drop(fut);
                    let state = match self.sender.clone() {
                        Some(sender) => State::Idle(sender),
                        None => State::Closed,
                    };
                    (true, state)
                }
                State::ReadyToSend(permit) => {
                    let state = if self.sender.is_some() {
                        State::Idle(permit.release())
                    } else {
                        State::Closed
                    };
                    (true, state)
                }
                s => (false, s),
            };
            self.state = next;
            result
        }
    }

    impl<T> Clone for PollSender<T> {
        fn clone(&self) -> PollSender<T> {
            let (sender, state) = match self.sender.clone() {
                Some(sender) => (Some(sender.clone()), State::Idle(sender)),
                None => (None, State::Closed),
            };
            PollSender {
                sender,
                state,
                at: self.at,
            }
        }
    }

    impl<T: Send + 'static> Sink<T> for PollSender<T> {
        type Error = PollSendError<T>;

        fn poll_ready(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Pin::into_inner(self).poll_reserve(cx)
        }

        fn poll_flush(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }

        fn start_send(self: Pin<&mut Self>, item: T) -> Result<(), Self::Error> {
            Pin::into_inner(self).send_item(item)
        }

        fn poll_close(
            self: Pin<&mut Self>,
            _cx: &mut Context<'_>,
        ) -> Poll<Result<(), Self::Error>> {
            Pin::into_inner(self).close();
            Poll::Ready(Ok(()))
        }
    }
}
