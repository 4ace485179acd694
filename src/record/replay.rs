//! Replaying a recording: a [`Source`] that yields the recorded messages paced by their
//! receive times, with a [`Timeline`] to pause, change speed and seek. Seeking forward
//! folds on from here; seeking back refolds from the nearest checkpoint (a copy of the
//! folded state kept every 10 s of recording once the timeline is used) or the start. The
//! model is a pure fold, so the state at any time is exactly what the live view showed.

#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use leaktop_agent::wire::{AgentHello, ClientMsg, StackId};

use super::format::{Meta, SymFrame};
use super::reader::{summarize, Entry, Item, OpenError, Reader, Summary};
use crate::model::Session;
use crate::source::{Event, Source, Timeline};

/// Slowest and fastest playback.
pub const MIN_SPEED: f64 = 1.0 / 64.0;
pub const MAX_SPEED: f64 = 1024.0;

/// Recording time between two checkpoints, at least (longer recordings space them out
/// so there are at most [`MAX_CHECKPOINTS`]).
const CHECKPOINT_EVERY_MS: u64 = 10_000;
const MAX_CHECKPOINTS: u64 = 128;

/// The replay's state just before the frame `pending`: every frame up to `from_ms` is
/// folded into `session`. Good for any seek to `from_ms` or later.
#[derive(Debug, Clone)]
struct Checkpoint {
    from_ms: u64,
    session: Session,
    reader: Reader,
    pending: Entry,
    end_sent: bool,
}

/// A recording as a source.
pub struct RecordingSource {
    path: PathBuf,
    hello: AgentHello,
    summary: Summary,
    reader: Reader,
    /// Read but not yet due.
    pending: Option<Entry>,
    pos_ms: f64,
    playing: bool,
    speed: f64,
    last_tick: Instant,
    /// Folded states along the recording, so going back starts from the nearest one
    /// instead of the start. Kept once the timeline is used (a seek), not for one-off
    /// folds like `dump --at`.
    checkpoints: Vec<Checkpoint>,
    checkpointing: bool,
    /// Time of the last frame folded or handed out.
    folded_ms: u64,
    end_sent: bool,
}

impl std::fmt::Debug for RecordingSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RecordingSource")
            .field("path", &self.path)
            .field("pos_ms", &self.pos_ms)
            .finish()
    }
}

impl RecordingSource {
    /// Opens `path`, reads it through once (to know its length, snapshots and symbols)
    /// and stands at time zero, paused.
    pub fn open(path: &Path) -> Result<RecordingSource, OpenError> {
        Self::from_reader(Reader::open(path)?, path)
    }

    /// A recording already in memory (`path` names it in messages).
    pub fn from_reader(reader: Reader, path: &Path) -> Result<RecordingSource, OpenError> {
        let mut pass = reader.clone();
        let summary = summarize(&mut pass);
        let Some(hello) = summary.hello.clone() else {
            let detail = summary.tail.describe().unwrap_or_else(|| {
                "it ends before the target's hello (was the recorder stopped at once?)".into()
            });
            return Err(OpenError::Empty {
                path: path.to_path_buf(),
                detail,
            });
        };
        Ok(RecordingSource {
            path: path.to_path_buf(),
            hello,
            summary,
            reader,
            pending: None,
            pos_ms: 0.0,
            playing: false,
            speed: 1.0,
            last_tick: Instant::now(),
            end_sent: false,
            checkpoints: Vec::new(),
            checkpointing: false,
            folded_ms: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    pub fn meta(&self) -> Option<&Meta> {
        self.summary.meta.as_ref()
    }

    /// Resolved frames of every raw address the recording has symbols for.
    pub fn symbols(&self) -> &HashMap<u64, Vec<SymFrame>> {
        &self.summary.symbols
    }

    /// The resolved frames of every stack in the recording, innermost first (an address
    /// without symbols becomes a frame named by its address). Stacks none of whose
    /// addresses were resolved are left out.
    pub fn stack_symbols(&self) -> HashMap<StackId, Vec<SymFrame>> {
        let table = &self.summary.symbols;
        self.summary
            .stacks
            .iter()
            .filter(|(_, addrs)| addrs.iter().any(|a| table.contains_key(a)))
            .map(|(id, addrs)| {
                let frames = addrs
                    .iter()
                    .flat_map(|a| match table.get(a) {
                        Some(f) => f.clone(),
                        None => vec![SymFrame {
                            function: Some(format!("{a:#x}")),
                            ..Default::default()
                        }],
                    })
                    .collect();
                (*id, frames)
            })
            .collect()
    }

    /// Why the replay ends: the process exit, the recorder's stop, or the cut.
    pub fn end_reason(&self) -> String {
        let s = &self.summary;
        if let Some(cut) = s.tail.describe() {
            return cut;
        }
        match (&s.end, s.source_ended) {
            (Some(r), true) => r.clone(),
            (Some(r), false) => format!("end of recording ({r})"),
            (None, _) => "end of recording".into(),
        }
    }

    /// A warning for the user when the file is cut off or damaged.
    pub fn warning(&self) -> Option<String> {
        let s = &self.summary;
        let what = s.tail.describe()?;
        Some(format!(
            "{}: {what}; replaying the {} before it ({})",
            self.path.display(),
            crate::plural::count(s.frames, "whole frame"),
            crate::report::age(s.duration_ms)
        ))
    }

    fn tick(&mut self) {
        let now = Instant::now();
        if self.playing {
            let dt = now.duration_since(self.last_tick).as_secs_f64() * 1000.0 * self.speed;
            self.pos_ms = (self.pos_ms + dt).min(self.summary.duration_ms as f64);
        }
        self.last_tick = now;
    }

    fn take_entry(&mut self) -> Option<Entry> {
        self.pending.take().or_else(|| self.reader.next())
    }

    fn event_of(&mut self, item: Item) -> Option<Event> {
        match item {
            Item::Msg(m) => Some(Event::Msg(m)),
            Item::End(reason) => {
                self.end_sent = true;
                Some(Event::End(reason))
            }
            Item::Meta(_) | Item::Symbols(_) | Item::Stop(_) => None,
        }
    }

    /// How many checkpoints are kept (for tests).
    #[cfg(test)]
    pub(crate) fn checkpoints(&self) -> usize {
        self.checkpoints.len()
    }

    /// Back to the first frame, nothing folded.
    fn rewind_reader(&mut self) {
        self.reader = self.reader.rewound();
        self.pending = None;
        self.end_sent = false;
        self.folded_ms = 0;
    }

    fn checkpoint_every(&self) -> u64 {
        CHECKPOINT_EVERY_MS.max(self.summary.duration_ms / MAX_CHECKPOINTS)
    }

    /// Keeps the state before `next` (the frame about to be folded) when it is far enough
    /// from the last checkpoint.
    fn maybe_checkpoint(&mut self, next: &Entry, session: &Session) {
        let due = self
            .checkpoints
            .last()
            .map_or(next.t_ms >= self.checkpoint_every(), |c| {
                next.t_ms >= c.from_ms + self.checkpoint_every()
            });
        if self.checkpointing && due && next.t_ms > self.folded_ms {
            self.checkpoints.push(Checkpoint {
                from_ms: self.folded_ms,
                session: session.clone(),
                reader: self.reader.clone(),
                pending: next.clone(),
                end_sent: self.end_sent,
            });
        }
    }

    /// Folds every frame up to `t_ms` into `session`.
    fn fold_until(&mut self, t_ms: u64, session: &mut Session) {
        loop {
            let entry = self.take_entry();
            if let Some(e) = &entry {
                if e.t_ms <= t_ms {
                    self.maybe_checkpoint(e, session);
                    self.folded_ms = e.t_ms;
                }
            }
            match entry {
                Some(e) if e.t_ms <= t_ms => match e.item {
                    Item::Msg(m) => session.apply(&m),
                    Item::End(reason) => {
                        self.end_sent = true;
                        session.end(&reason);
                    }
                    _ => {}
                },
                Some(e) => {
                    self.pending = Some(e);
                    return;
                }
                None => {
                    let reason = self.end_reason();
                    session.end(&reason);
                    self.end_sent = true;
                    return;
                }
            }
        }
    }
}

impl Source for RecordingSource {
    fn hello(&self) -> &AgentHello {
        &self.hello
    }

    fn next(&mut self, timeout: Duration) -> Option<Event> {
        self.tick();
        loop {
            match self.take_entry() {
                None => {
                    self.pos_ms = self.summary.duration_ms as f64;
                    self.playing = false;
                    if !self.end_sent {
                        self.end_sent = true;
                        return Some(Event::End(self.end_reason()));
                    }
                    std::thread::sleep(timeout);
                    return None;
                }
                Some(e) if e.t_ms as f64 <= self.pos_ms => {
                    self.folded_ms = e.t_ms;
                    if let Some(ev) = self.event_of(e.item) {
                        return Some(ev);
                    }
                }
                Some(e) => {
                    let due = e.t_ms as f64;
                    self.pending = Some(e);
                    let wait = if self.playing {
                        Duration::from_secs_f64(
                            ((due - self.pos_ms) / self.speed / 1000.0).max(0.0),
                        )
                        .min(timeout)
                    } else {
                        timeout
                    };
                    std::thread::sleep(wait);
                    self.tick();
                    if due > self.pos_ms {
                        return None;
                    }
                }
            }
        }
    }

    /// A recording cannot answer requests: the answers it has are in the file already.
    fn request(&mut self, _msg: ClientMsg) {}

    fn timeline(&mut self) -> Option<&mut dyn Timeline> {
        Some(self)
    }

    fn fill_symbols(&mut self, session: &mut Session) -> bool {
        let table = &self.summary.symbols;
        for (id, addrs) in &session.stacks {
            if session.symbols.contains_key(id) || !addrs.iter().any(|a| table.contains_key(a)) {
                continue;
            }
            let frames = addrs
                .iter()
                .flat_map(|a| match table.get(a) {
                    Some(frames) => frames.iter().map(|f| frame_of(*a, f)).collect(),
                    None => vec![raw_frame(*a)],
                })
                .collect();
            session.symbols.insert(*id, frames);
        }
        true
    }
}

/// A resolved frame as the symbolizer would have given it live.
fn frame_of(addr: u64, f: &SymFrame) -> crate::symbolize::Frame {
    use crate::symbolize::FrameClass;
    crate::symbolize::Frame {
        function: f.function.as_deref().unwrap_or("??").into(),
        file: f.file.as_deref().map(Into::into),
        line: f.line,
        column: f.column,
        inlined: f.inlined,
        class: match f.class.as_deref() {
            Some("runtime") => FrameClass::Runtime,
            Some("std") => FrameClass::Std,
            Some("agent") => FrameClass::Agent,
            _ => FrameClass::User,
        },
        module: f.module.as_deref().unwrap_or("").into(),
        addr,
    }
}

/// An address the recording has no symbols for (folded away like runtime frames).
fn raw_frame(addr: u64) -> crate::symbolize::Frame {
    crate::symbolize::unknown_frame(
        format!("{addr:#x}"),
        crate::symbolize::FrameClass::Runtime,
        "",
        addr,
    )
}

impl Timeline for RecordingSource {
    fn duration_ms(&self) -> u64 {
        self.summary.duration_ms
    }

    fn position_ms(&self) -> u64 {
        self.pos_ms as u64
    }

    fn playing(&self) -> bool {
        self.playing
    }

    fn set_playing(&mut self, playing: bool) {
        self.tick();
        // Play at the end starts over.
        if playing && !self.playing && self.pos_ms >= self.summary.duration_ms as f64 {
            self.pos_ms = 0.0;
            self.rewind_reader();
        }
        self.playing = playing;
        self.last_tick = Instant::now();
    }

    fn speed(&self) -> f64 {
        self.speed
    }

    fn set_speed(&mut self, speed: f64) {
        self.tick();
        self.speed = if speed.is_finite() {
            speed.clamp(MIN_SPEED, MAX_SPEED)
        } else {
            1.0
        };
    }

    fn started_unix_ms(&self) -> u64 {
        self.summary.meta.as_ref().map_or(0, |m| m.started_unix_ms)
    }

    fn snapshot_times(&self) -> &[u64] {
        &self.summary.snapshot_times
    }

    fn seek(&mut self, t_ms: u64, session: &mut Session) {
        self.tick();
        self.checkpointing = true;
        let t = t_ms.min(self.summary.duration_ms);
        let here = self.pos_ms as u64;
        if t < here {
            // From the nearest checkpoint before `t`, or from the start.
            match self.checkpoints.iter().rev().find(|c| c.from_ms <= t) {
                Some(c) => {
                    let c = c.clone();
                    *session = c.session;
                    self.reader = c.reader;
                    self.pending = Some(c.pending);
                    self.end_sent = c.end_sent;
                    self.folded_ms = c.from_ms;
                }
                None => {
                    *session = Session::new();
                    self.rewind_reader();
                }
            }
        }
        self.fold_until(t, session);
        self.fill_symbols(session);
        self.pos_ms = t as f64;
        self.last_tick = Instant::now();
    }
}

/// Opens `path` and folds it up to `at_ms` (the end when `None`): what `leaktop dump` and
/// `leaktop check` show of a recording.
pub fn session_at(
    path: &Path,
    at_ms: Option<u64>,
) -> Result<(Session, RecordingSource), OpenError> {
    session_of(RecordingSource::open(path)?, at_ms)
}

/// [`session_at`] of an opened recording.
pub fn session_of(
    mut src: RecordingSource,
    at_ms: Option<u64>,
) -> Result<(Session, RecordingSource), OpenError> {
    let mut session = Session::new();
    let t = at_ms.unwrap_or(u64::MAX);
    src.seek(t, &mut session);
    Ok((session, src))
}
