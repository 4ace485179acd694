//! `leaktop-agent`: the part of [leaktop] that lives inside your program.
//!
//! Link it, call [`start`] once, and spawn with [`spawn`] instead of `tokio::spawn`:
//!
//! ```no_run
//! #[tokio::main]
//! async fn main() {
//!     // Never panics, never stops the program: log why it did not start and go on.
//!     if let Err(e) = leaktop_agent::start() {
//!         eprintln!("leaktop agent not started: {e}");
//!     }
//!     let handle = leaktop_agent::spawn(async { 1 + 1 });
//!     assert_eq!(handle.await.unwrap(), 2);
//! }
//! ```
//!
//! Then `leaktop <pid>` (or `leaktop dump <pid>`) from another shell shows your tasks per
//! spawn site. The agent runs one OS thread of its own (`leaktop-agent`) for all socket
//! IO; the host program's threads only touch atomics and short per-site critical sections.
//! What runs where, every `unsafe` and why it is sound, and what happens under `fork`,
//! exit, `panic = "abort"`, seccomp and containers: [`safety`] (`agent/SAFETY.md`).
//!
//! [leaktop]: https://crates.io/crates/leaktop

#![cfg_attr(not(feature = "runtime"), allow(dead_code))]
// Nothing from outside (a client's bytes, /proc, the environment) may panic the host: no
// unwrap/expect outside tests; each remaining one says why it cannot fail.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod paths;
pub mod wire;

#[doc = include_str!("../SAFETY.md")]
pub mod safety {}

#[cfg(feature = "runtime")]
mod blocked;
#[cfg(feature = "runtime")]
mod chan;
#[cfg(feature = "runtime")]
mod clock;
#[cfg(feature = "runtime")]
mod forked;
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
pub use instrumented::{instrument, spawn, spawn_local, Instrumented};

#[cfg(feature = "runtime")]
mod start;

#[cfg(feature = "runtime")]
pub use start::{start, Agent, Builder, StartError};

/// Bench support (tests/bench, scripts/bench.sh); not an API.
#[cfg(feature = "runtime")]
#[doc(hidden)]
pub mod bench_support;
