//! `leaktop-agent`: the part of [leaktop] that lives inside your program.
//!
//! Link it, call [`start`] once, and spawn with [`spawn`] instead of `tokio::spawn`:
//!
//! ```no_run
//! #[tokio::main]
//! async fn main() {
//!     let _agent = leaktop_agent::start().expect("leaktop agent");
//!     let handle = leaktop_agent::spawn(async { 1 + 1 });
//!     assert_eq!(handle.await.unwrap(), 2);
//! }
//! ```
//!
//! Then `leaktop <pid>` (or `leaktop dump <pid>`) from another shell shows your tasks per
//! spawn site. The agent runs one OS thread of its own (`leaktop-agent`) for all socket
//! IO; the host program's threads only touch atomics and short per-site critical sections.
//!
//! [leaktop]: https://crates.io/crates/leaktop

#![cfg_attr(not(feature = "runtime"), allow(dead_code))]
// Nothing from outside (a client's bytes, /proc, the environment) may panic the host: no
// unwrap/expect outside tests; each remaining one says why it cannot fail.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod paths;
pub mod wire;

#[cfg(feature = "runtime")]
mod blocked;
#[cfg(feature = "runtime")]
mod chan;
#[cfg(feature = "runtime")]
mod clock;
#[cfg(feature = "runtime")]
mod history;
#[cfg(feature = "runtime")]
mod instrumented;
#[cfg(feature = "runtime")]
pub mod procinfo;
#[cfg(feature = "runtime")]
mod registry;
#[cfg(feature = "runtime")]
mod server;
#[cfg(feature = "runtime")]
mod stack;
#[cfg(feature = "runtime")]
pub mod sync;
#[cfg(feature = "runtime")]
pub mod testing;

#[cfg(all(feature = "tokio-hooks", feature = "runtime"))]
pub mod hooks;
#[cfg(all(feature = "metrics", feature = "runtime"))]
pub mod metrics;

#[cfg(feature = "runtime")]
pub mod runtime;
#[cfg(feature = "stream")]
pub mod stream;
#[cfg(feature = "runtime")]
pub mod task;
#[cfg(feature = "stream")]
pub mod util;

#[cfg(feature = "runtime")]
pub use instrumented::{instrument, Instrumented};
#[cfg(feature = "runtime")]
pub use task::{spawn, spawn_local};

#[cfg(feature = "runtime")]
mod start;

#[cfg(feature = "runtime")]
pub use start::{start, Agent, Builder, StartError};

/// Bench support (tests/bench, scripts/bench.sh); not an API.
#[cfg(feature = "runtime")]
#[doc(hidden)]
pub mod bench_support;
