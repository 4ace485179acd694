//! [`Builder`]: spawning named tasks. tokio's own `task::Builder` needs
//! `--cfg tokio_unstable`; this one works on stable tokio and keeps the name with the task
//! in the agent's task table.

use std::future::Future;
use std::io;
use std::panic::Location;

use super::{spawn_at, spawn_blocking_at, spawn_local_at, JoinHandle, LocalSet};

/// Configures a task before it is spawned (its name). See `tokio::task::Builder`.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use leaktop_agent::task::Builder;
///
/// let handle = Builder::new().name("flusher").spawn(async { 1 }).unwrap();
/// assert_eq!(handle.await.unwrap(), 1);
/// # }
/// ```
#[derive(Default, Debug, Clone, Copy)]
pub struct Builder<'a> {
    name: Option<&'a str>,
}

impl<'a> Builder<'a> {
    /// A builder with no name set.
    pub fn new() -> Self {
        Builder { name: None }
    }

    /// The name of the task to spawn.
    pub fn name(self, name: &'a str) -> Self {
        Builder { name: Some(name) }
    }

    /// Spawns on the current runtime. Never fails (the `Result` mirrors tokio's).
    #[track_caller]
    pub fn spawn<Fut>(self, future: Fut) -> io::Result<JoinHandle<Fut::Output>>
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        Ok(spawn_at(future, Location::caller(), self.name, None))
    }

    /// Spawns on the runtime of `handle`.
    #[track_caller]
    pub fn spawn_on<Fut>(
        self,
        future: Fut,
        handle: &tokio::runtime::Handle,
    ) -> io::Result<JoinHandle<Fut::Output>>
    where
        Fut: Future + Send + 'static,
        Fut::Output: Send + 'static,
    {
        Ok(spawn_at(
            future,
            Location::caller(),
            self.name,
            Some(handle),
        ))
    }

    /// Spawns a `!Send` task on the current [`LocalSet`] (or tokio's).
    #[track_caller]
    pub fn spawn_local<Fut>(self, future: Fut) -> io::Result<JoinHandle<Fut::Output>>
    where
        Fut: Future + 'static,
        Fut::Output: 'static,
    {
        Ok(spawn_local_at(future, Location::caller(), self.name, None))
    }

    /// Spawns a `!Send` task on `local_set`.
    #[track_caller]
    pub fn spawn_local_on<Fut>(
        self,
        future: Fut,
        local_set: &LocalSet,
    ) -> io::Result<JoinHandle<Fut::Output>>
    where
        Fut: Future + 'static,
        Fut::Output: 'static,
    {
        Ok(spawn_local_at(
            future,
            Location::caller(),
            self.name,
            Some(local_set),
        ))
    }

    /// Runs `function` on the blocking pool, counted at a blocking site.
    #[track_caller]
    pub fn spawn_blocking<Function, Output>(
        self,
        function: Function,
    ) -> io::Result<JoinHandle<Output>>
    where
        Function: FnOnce() -> Output + Send + 'static,
        Output: Send + 'static,
    {
        Ok(spawn_blocking_at(
            function,
            Location::caller(),
            self.name,
            None,
        ))
    }

    /// Runs `function` on the blocking pool of `handle`'s runtime.
    #[track_caller]
    pub fn spawn_blocking_on<Function, Output>(
        self,
        function: Function,
        handle: &tokio::runtime::Handle,
    ) -> io::Result<JoinHandle<Output>>
    where
        Function: FnOnce() -> Output + Send + 'static,
        Output: Send + 'static,
    {
        Ok(spawn_blocking_at(
            function,
            Location::caller(),
            self.name,
            Some(handle),
        ))
    }
}
