//! leaktop: find leaked async tasks in live tokio programs.
//!
//! The path of a byte from the target: [`attach`] finds the agent's socket and shakes
//! hands; a [`source::Source`] (live socket, or a recording) yields protocol messages
//! (`leaktop_agent::wire`); [`model::Session`] folds them into state; [`report`] (and the
//! TUI) render that state.

pub mod attach;
pub mod cli;
pub mod demo;
pub mod driver;
pub mod duration;
pub mod export;
pub mod frame;
#[doc(hidden)]
pub mod fuzz;
pub mod model;
pub mod plural;
pub mod proc;
pub mod record;
pub mod report;
pub mod shell;
pub mod source;
pub mod symbolize;
pub mod text;
pub mod tui;
