//! Replaying a recording: a [`Source`] that yields the recorded messages paced by their
//! receive times, with a [`Timeline`] to pause, change speed and seek. Seeking forward
//! folds on from here; seeking back refolds from the nearest checkpoint (a copy of the
//! folded state kept every 10 s of recording once the timeline is used) or the start. The
//! model is a pure fold, so the state at any time is exactly what the live view showed.

#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

use std::collections::{HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use leaktop_agent::wire::{AgentHello, AgentMsg, ClientMsg, StackId};

use super::format::Meta;
use super::reader::{summarize, Entry, Item, OpenError, Reader, Summary};
use crate::frame::{Frame, FrameClass};
use crate::source::{Event, Refold, Saved, Source, Timeline};

/// Where a replay's time comes from: the wall clock, or (in tests) one they move.
pub trait Clock: Send {
    fn now(&self) -> Instant;
    /// Waits `d` of this clock's time.
    fn sleep(&self, d: Duration);
}

/// The wall clock.
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Instant {
        Instant::now()
    }

    fn sleep(&self, d: Duration) {
        std::thread::sleep(d)
    }
}

/// Slowest and fastest playback.
pub const MIN_SPEED: f64 = 1.0 / 64.0;
pub const MAX_SPEED: f64 = 1024.0;

/// Recording time between two checkpoints, at least (longer recordings space them out
/// so there are at most [`MAX_CHECKPOINTS`]).
const CHECKPOINT_EVERY_MS: u64 = 10_000;
const MAX_CHECKPOINTS: u64 = 128;

/// The replay's state just before the frame `pending`: every frame up to `from_ms` is
/// folded into `saved`. Good for any seek to `from_ms` or later.
#[derive(Debug, Clone)]
struct Checkpoint {
    from_ms: u64,
    saved: Saved,
    reader: Reader,
    pending: Entry,
    end_sent: bool,
}

/// A recording as a source. It yields the recorded messages and, right after each
/// `Stack`, the [`Event::Symbols`] of that stack from the file's symbol table.
pub struct RecordingSource {
    path: PathBuf,
    hello: AgentHello,
    summary: Summary,
    reader: Reader,
    /// Read but not yet due.
    pending: Option<Entry>,
    /// Due and not yet handed out (the symbols that follow a stack).
    queued: VecDeque<Event>,
    pos_ms: f64,
    playing: bool,
    speed: f64,
    last_tick: Instant,
    clock: Box<dyn Clock>,
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
            queued: VecDeque::new(),
            pos_ms: 0.0,
            playing: false,
            speed: 1.0,
            last_tick: Instant::now(),
            clock: Box::new(SystemClock),
            end_sent: false,
            checkpoints: Vec::new(),
            checkpointing: false,
            folded_ms: 0,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Where and how playback starts: everything up to `at_ms` is due at once (the first
    /// view shows the state then), then it plays on at `speed` when `playing`.
    pub fn start_at(&mut self, at_ms: u64, speed: f64, playing: bool) {
        self.pos_ms = at_ms.min(self.summary.duration_ms) as f64;
        self.set_speed(speed);
        self.playing = playing;
        self.last_tick = self.clock.now();
    }

    /// Plays by `clock` instead of the wall clock.
    pub fn with_clock(mut self, clock: Box<dyn Clock>) -> RecordingSource {
        self.last_tick = clock.now();
        self.clock = clock;
        self
    }

    /// The snapshot interval it was recorded at, or else the typical gap between its
    /// snapshots.
    pub fn interval(&self) -> Duration {
        let ms = match self.meta().map_or(0, |m| m.interval_ms) {
            0 => {
                let mut gaps: Vec<u64> = self
                    .summary
                    .snapshot_times
                    .windows(2)
                    .filter_map(|w| match w {
                        [a, b] => Some(b.saturating_sub(*a)),
                        _ => None,
                    })
                    .collect();
                gaps.sort_unstable();
                gaps.get(gaps.len() / 2).copied().unwrap_or(1000).max(1)
            }
            ms => ms as u64,
        };
        Duration::from_millis(ms)
    }

    pub fn summary(&self) -> &Summary {
        &self.summary
    }

    pub fn meta(&self) -> Option<&Meta> {
        self.summary.meta.as_ref()
    }

    /// Resolved frames of every raw address the recording has symbols for.
    pub fn symbols(&self) -> &HashMap<u64, Vec<Frame>> {
        &self.summary.symbols
    }

    /// The resolved frames of every stack in the recording (see `expand`); stacks none
    /// of whose addresses were resolved are left out.
    pub fn stack_symbols(&self) -> HashMap<StackId, Vec<Frame>> {
        self.summary
            .stacks
            .iter()
            .filter_map(|(id, addrs)| Some((*id, expand(&self.summary.symbols, addrs)?)))
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
            crate::duration::age(s.duration_ms)
        ))
    }

    fn tick(&mut self) {
        let now = self.clock.now();
        if self.playing {
            let dt = now.duration_since(self.last_tick).as_secs_f64() * 1000.0 * self.speed;
            self.pos_ms = (self.pos_ms + dt).min(self.summary.duration_ms as f64);
        }
        self.last_tick = now;
    }

    fn take_entry(&mut self) -> Option<Entry> {
        self.pending.take().or_else(|| self.reader.next())
    }

    /// Queues what a due frame yields: its message (and the symbols of a stack), or its
    /// end.
    fn queue(&mut self, item: Item) {
        match item {
            Item::Msg(m) => {
                let symbols = match &m {
                    AgentMsg::Stack { id, frames } => expand(&self.summary.symbols, frames)
                        .map(|frames| Event::Symbols { stack: *id, frames }),
                    _ => None,
                };
                self.queued.push_back(Event::Msg(m));
                self.queued.extend(symbols);
            }
            Item::End(reason) => {
                self.end_sent = true;
                self.queued.push_back(Event::End(reason));
            }
            Item::Meta(_) | Item::Symbols(_) | Item::Stop(_) => {}
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
        self.queued.clear();
        self.end_sent = false;
        self.folded_ms = 0;
    }

    fn checkpoint_every(&self) -> u64 {
        CHECKPOINT_EVERY_MS.max(self.summary.duration_ms / MAX_CHECKPOINTS)
    }

    /// Keeps the state before `next` (the frame about to be folded) when it is far enough
    /// from the last checkpoint.
    fn maybe_checkpoint(&mut self, next: &Entry, into: &dyn Refold) {
        let due = self
            .checkpoints
            .last()
            .map_or(next.t_ms >= self.checkpoint_every(), |c| {
                next.t_ms >= c.from_ms + self.checkpoint_every()
            });
        if self.checkpointing && due && next.t_ms > self.folded_ms {
            self.checkpoints.push(Checkpoint {
                from_ms: self.folded_ms,
                saved: into.save(),
                reader: self.reader.clone(),
                pending: next.clone(),
                end_sent: self.end_sent,
            });
        }
    }

    /// Folds every frame up to `t_ms` into `into`.
    fn fold_until(&mut self, t_ms: u64, into: &mut dyn Refold) {
        loop {
            let entry = self.take_entry();
            if let Some(e) = &entry {
                if e.t_ms <= t_ms {
                    self.maybe_checkpoint(e, into);
                    self.folded_ms = e.t_ms;
                }
            }
            match entry {
                Some(e) if e.t_ms <= t_ms => {
                    self.queue(e.item);
                    for ev in self.queued.drain(..) {
                        into.fold(&ev);
                    }
                }
                Some(e) => {
                    self.pending = Some(e);
                    return;
                }
                None => {
                    into.fold(&Event::End(self.end_reason()));
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
            if let Some(ev) = self.queued.pop_front() {
                return Some(ev);
            }
            match self.take_entry() {
                None => {
                    self.pos_ms = self.summary.duration_ms as f64;
                    self.playing = false;
                    if !self.end_sent {
                        self.end_sent = true;
                        return Some(Event::End(self.end_reason()));
                    }
                    self.clock.sleep(timeout);
                    return None;
                }
                Some(e) if e.t_ms as f64 <= self.pos_ms => {
                    self.folded_ms = e.t_ms;
                    self.queue(e.item);
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
                    self.clock.sleep(wait);
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
}

/// The frames of a recorded stack from the file's symbol table, innermost first: each
/// address's resolved frames in place, an address without symbols as a frame named by it
/// (folded away like runtime frames). `None` when no address of the stack was resolved.
fn expand(table: &HashMap<u64, Vec<Frame>>, addrs: &[u64]) -> Option<Vec<Frame>> {
    addrs.iter().any(|a| table.contains_key(a)).then(|| {
        addrs
            .iter()
            .flat_map(|a| match table.get(a) {
                Some(frames) => frames.clone(),
                None => vec![Frame::unknown(
                    format!("{a:#x}"),
                    FrameClass::Runtime,
                    "",
                    *a,
                )],
            })
            .collect()
    })
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
        self.last_tick = self.clock.now();
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

    fn seek(&mut self, t_ms: u64, into: &mut dyn Refold) {
        self.tick();
        self.checkpointing = true;
        let t = t_ms.min(self.summary.duration_ms);
        let here = self.pos_ms as u64;
        if t < here {
            // From the nearest checkpoint before `t`, or from the start.
            match self.checkpoints.iter().rev().find(|c| c.from_ms <= t) {
                Some(c) => {
                    let c = c.clone();
                    into.restore(Some(&c.saved));
                    self.reader = c.reader;
                    self.pending = Some(c.pending);
                    self.queued.clear();
                    self.end_sent = c.end_sent;
                    self.folded_ms = c.from_ms;
                }
                None => {
                    into.restore(None);
                    self.rewind_reader();
                }
            }
        }
        self.fold_until(t, into);
        self.pos_ms = t as f64;
        self.last_tick = self.clock.now();
    }
}
