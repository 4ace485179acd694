//! The live view's state and screen: no IO but the terminal itself. The event loop that
//! feeds it from a source is the driver's (`driver::view`).
//!
//! - [`app`]: state and input handling (events in, state changes and [`Action`]s out);
//! - [`render`] and [`widgets`]: the screen as pure functions of the state
//!   (`impl Widget for &App`), laid out by [`layout`];
//! - [`term`]: the real terminal (raw mode, restore on quit, error, panic and signals)
//!   and its [`Input`] of terminal events (tests script their own).

pub mod app;
pub mod format;
pub mod keys;
pub mod layout;
pub mod log;
pub mod render;
pub mod rows;
pub mod term;
pub mod theme;
pub mod widgets;

#[cfg(test)]
pub(crate) mod tests;

use std::time::Duration;

use crossterm::event::Event as TermEvent;

pub use app::{Action, App, ReplayCmd, Timeline};

/// Terminal events, from the real terminal or a script.
pub trait Input {
    /// The next event, waiting at most `timeout`.
    fn next(&mut self, timeout: Duration) -> std::io::Result<Option<TermEvent>>;
    /// True when the process was asked to stop (SIGTERM and the like).
    fn interrupted(&self) -> bool {
        false
    }
}
