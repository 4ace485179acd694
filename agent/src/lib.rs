#![doc = include_str!("../README.md")]
//!
//! # Where things are
//!
//! - [`start`] / [`Builder`]: the agent's thread and socket; [`Agent`] is the running one.
//! - [`spawn`], [`spawn_local`], [`instrument`]: tasks counted per spawn site.
//! - [`sync`]: the instrumented channels, mirrors of `tokio::sync`'s.
//! - [`testing`]: leak checks for tests.
//! - `hooks` (feature `tokio-hooks`, with `--cfg tokio_unstable`): plain `tokio::spawn`
//!   tasks through tokio's runtime hooks.
//! - `metrics` (feature `metrics`): per-site series through the `metrics` facade; their
//!   names are in [`series`].
//! - [`wire`]: the protocol between the agent and `leaktop` (the one definition);
//!   [`paths`]: where the sockets are.
//! - [`safety`]: what runs where, every `unsafe` and why it is sound, and what happens
//!   under `fork`, exit, `panic = "abort"`, seccomp and containers (`agent/SAFETY.md`).

#![cfg_attr(not(feature = "runtime"), allow(dead_code))]
// Nothing from outside (a client's bytes, /proc, the environment) may panic the host: no
// unwrap/expect outside tests; each remaining one says why it cannot fail.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod paths;
pub mod series;
pub mod wire;

#[doc = include_str!("../SAFETY.md")]
pub mod safety {}

#[cfg(feature = "runtime")]
mod blocked;
#[cfg(feature = "runtime")]
mod capture;
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
mod shard;
#[cfg(feature = "runtime")]
mod stack;
#[cfg(feature = "runtime")]
pub mod sync;
#[cfg(feature = "runtime")]
pub mod testing;
#[cfg(feature = "runtime")]
mod tree;

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
