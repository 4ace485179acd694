//! Where events come from: a live agent socket ([`LiveSource`]) or a recording
//! ([`crate::record::RecordingSource`]), with the stages a live stream passes through on the
//! way: [`Symbolize`] turns new stacks into [`Event::Symbols`] on a worker thread, and
//! [`crate::record::Tee`] records what passes. Everything after the source (model, report,
//! tui) is the same for live and replay; a recording adds a [`Timeline`] to move through it.

#![cfg_attr(not(test), warn(clippy::indexing_slicing))]
// Data from outside (agent bytes, recordings, /proc) must never panic leaktop.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

mod live;
mod symbols;

use std::time::Duration;

use leaktop_agent::wire::{AgentHello, AgentMsg, ClientMsg, StackId};

use crate::frame::Frame;

pub use live::LiveSource;
pub use symbols::{Resolver, Symbolize, SYMBOLS_WAIT};

/// What a source yields: the agent's messages, and what the attaching side learns about
/// them on the way. Never sent by the agent: `Symbols` and `SymbolNote` come from the
/// symbolizing stage (live) or the recording's symbol table (replay).
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// One protocol message.
    Msg(AgentMsg),
    /// The resolved frames of a stack the agent defined, innermost first (each raw
    /// address's inlined frames expanded in place).
    Symbols { stack: StackId, frames: Vec<Frame> },
    /// What the symbolizer had to say about the frames' quality (missing debug info, a
    /// replaced binary, unreadable maps), once each.
    SymbolNote(String),
    /// The source is over: the process exited, the connection broke, the file ended.
    /// The reason is for the user.
    End(String),
}

impl From<AgentMsg> for Event {
    fn from(msg: AgentMsg) -> Event {
        Event::Msg(msg)
    }
}

/// A stream of protocol messages, live or recorded.
pub trait Source {
    /// The target's hello (the first message of every session).
    fn hello(&self) -> &AgentHello;
    /// The next event, waiting at most `timeout`; `None` when nothing came in time.
    fn next(&mut self, timeout: Duration) -> Option<Event>;
    /// Sends a request to the agent; recordings ignore requests they cannot answer.
    fn request(&mut self, msg: ClientMsg);
    /// Playback controls, for a source that is a recording; `None` for a live one.
    fn timeline(&mut self) -> Option<&mut dyn Timeline> {
        None
    }
    /// True while the source has work in flight that will yield events without the
    /// agent sending anything (stacks being symbolized): a one-off report waits for it.
    fn busy(&self) -> bool {
        false
    }
    /// Recording controls, for a source that can record what it yields
    /// ([`crate::record::Tee`]); `None` otherwise.
    fn recorder(&mut self) -> Option<&mut dyn Recorder> {
        None
    }
}

/// Start and stop recording what a source yields (the TUI's `r` key, `--record`).
pub trait Recorder {
    /// Starts recording into a new file at `path` (refused if it exists).
    fn start_recording(&mut self, path: &std::path::Path) -> Result<(), String>;
    /// Stops recording; a sentence for the user (where it went, how big), `None` when
    /// nothing was being recorded.
    fn stop_recording(&mut self) -> Option<String>;
    fn is_recording(&self) -> bool;
    /// One line for the screen: the file and its size while recording, or how the last
    /// recording ended (an error says so); `None` before any recording.
    fn recording_status(&self) -> Option<String>;
}

/// A saved copy of a folded state (a replay's checkpoint).
pub type Saved = std::sync::Arc<dyn std::any::Any + Send + Sync>;

/// What a [`Timeline`] folds into when it moves: the model's session, seen from here
/// only through this, so the source depends on nothing above it.
pub trait Refold {
    /// Folds one event.
    fn fold(&mut self, ev: &Event);
    /// A copy of the state, kept as a checkpoint.
    fn save(&self) -> Saved;
    /// Back to a saved state; `None`: the state before any event.
    fn restore(&mut self, saved: Option<&Saved>);
}

/// Playback controls of a recorded source. Times are ms of recording time (receive time
/// since the recording started). A source with a timeline yields events only up to its
/// playback position, which moves while playing.
pub trait Timeline {
    /// Time of the recording's last frame.
    fn duration_ms(&self) -> u64;
    /// Playback position: everything up to here has been yielded.
    fn position_ms(&self) -> u64;
    fn playing(&self) -> bool;
    fn set_playing(&mut self, playing: bool);
    /// Playback speed (1.0: real time).
    fn speed(&self) -> f64;
    fn set_speed(&mut self, speed: f64);
    /// Wall clock (ms since the Unix epoch) at recording time zero.
    fn started_unix_ms(&self) -> u64;
    /// Receive times of the recorded snapshots, ascending: the steps of ←/→.
    fn snapshot_times(&self) -> &[u64];
    /// Moves the playback position to `t_ms` (clamped to the recording) and brings
    /// `into` to the state at that time. `into` must be the fold of exactly what this
    /// source yielded so far: going forward folds the frames in between into it, going
    /// back restores it to a checkpoint (or the start) and folds on from there.
    fn seek(&mut self, t_ms: u64, into: &mut dyn Refold);
    /// Moves to the next (or previous) snapshot and pauses there.
    fn step(&mut self, forward: bool, into: &mut dyn Refold) {
        let pos = self.position_ms();
        let times = self.snapshot_times();
        let target = if forward {
            times.iter().copied().find(|t| *t > pos)
        } else {
            times.iter().rev().copied().find(|t| *t < pos)
        };
        self.set_playing(false);
        match target {
            Some(t) => self.seek(t, into),
            None if forward => {
                let end = self.duration_ms();
                self.seek(end, into)
            }
            None => self.seek(0, into),
        }
    }
}
