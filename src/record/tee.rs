//! A source that records what passes through it: `leaktop record`, `leaktop <pid>
//! --record` and the TUI's `r` key all wrap their live source in a [`Tee`].
//!
//! Recording can start at any moment: the tee remembers what a recording must begin with
//! (hello, module map, every location and stack defined so far, their symbols, the last
//! snapshot) and writes that first, then asks the agent for its history again, so a file
//! started mid-session replays on its own. That memory is the stream's definitions, kept
//! here rather than read from the model, so recording depends on nothing above the source.
//!
//! Symbols come as the [`Event::Symbols`] of the symbolizing stage before the tee
//! ([`crate::source::Symbolize`]); they are stored per raw address, as the format wants.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use leaktop_agent::wire::{
    AgentHello, AgentMsg, ClientMsg, LocId, Location, Mapping, Snapshot, StackId,
};

use super::format::SymbolEntry;
use super::writer::{RecordOptions, RecordStats, Recorder, WriteError};
use crate::frame::Frame;
use crate::source::{Event, Recorder as RecorderControl, Source, Timeline};

/// What happened to a recording, for a status line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecordState {
    Off,
    On {
        path: PathBuf,
        stats: RecordStats,
    },
    /// The last recording ended (stopped, source ended, or failed: `error`).
    Done {
        path: PathBuf,
        stats: RecordStats,
        error: Option<String>,
    },
}

/// Tees a source into an optional recording.
pub struct Tee<S> {
    inner: S,
    hello: AgentHello,
    modules: Option<Vec<Mapping>>,
    locations: BTreeMap<LocId, Location>,
    stacks: BTreeMap<StackId, Vec<u64>>,
    /// Resolved frames of every raw address seen in a `Symbols` event.
    symbols: HashMap<u64, Vec<Frame>>,
    last_snapshot: Option<Snapshot>,
    recorder: Option<Recorder>,
    /// Snapshot interval asked of the agent, for the meta frame of files started by `r`.
    interval_ms: u32,
    state: RecordState,
    ended: bool,
}

impl<S: Source> Tee<S> {
    pub fn new(inner: S) -> Tee<S> {
        Tee {
            hello: inner.hello().clone(),
            inner,
            modules: None,
            locations: BTreeMap::new(),
            stacks: BTreeMap::new(),
            symbols: HashMap::new(),
            last_snapshot: None,
            recorder: None,
            interval_ms: 0,
            state: RecordState::Off,
            ended: false,
        }
    }

    /// The snapshot interval the source was asked for (kept up to date from the
    /// `Subscribe` requests that pass through).
    pub fn with_interval(mut self, interval: Duration) -> Tee<S> {
        self.interval_ms = interval.as_millis().min(u32::MAX as u128) as u32;
        self
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    pub fn state(&self) -> &RecordState {
        &self.state
    }

    fn state_path(&self) -> Option<&Path> {
        match &self.state {
            RecordState::On { path, .. } | RecordState::Done { path, .. } => Some(path),
            RecordState::Off => None,
        }
    }

    pub fn is_recording(&self) -> bool {
        self.recorder.is_some()
    }

    /// Starts recording into a new file at `path`.
    pub fn start(&mut self, path: &Path, opts: &RecordOptions) -> Result<(), WriteError> {
        self.start_with(Recorder::create(path, opts)?)
    }

    /// Starts recording into a file already created.
    pub fn start_with(&mut self, mut rec: Recorder) -> Result<(), WriteError> {
        if self.recorder.is_some() {
            self.stop("recording restarted into another file");
        }
        let path = rec.path().to_path_buf();
        let path = path.as_path();
        let seen_any = self.modules.is_some() || self.last_snapshot.is_some();
        let result = self.write_preamble(&mut rec);
        if let Err(e) = result {
            self.state = RecordState::Done {
                path: path.to_path_buf(),
                stats: rec.stats().clone(),
                error: Some(e.to_string()),
            };
            return Err(e);
        }
        self.state = RecordState::On {
            path: path.to_path_buf(),
            stats: rec.stats().clone(),
        };
        self.recorder = Some(rec);
        if seen_any && !self.ended {
            // The history before now belongs in the file too.
            self.inner.request(ClientMsg::History);
        }
        Ok(())
    }

    fn write_preamble(&mut self, rec: &mut Recorder) -> Result<(), WriteError> {
        rec.write_msg(&AgentMsg::Hello(self.hello.clone()))?;
        if let Some(m) = &self.modules {
            rec.write_msg(&AgentMsg::Modules(m.clone()))?;
        }
        for (id, loc) in &self.locations {
            rec.write_msg(&AgentMsg::Location {
                id: *id,
                loc: loc.clone(),
            })?;
        }
        for (id, frames) in &self.stacks {
            rec.write_msg(&AgentMsg::Stack {
                id: *id,
                frames: frames.clone(),
            })?;
        }
        let mut syms: Vec<SymbolEntry> = self
            .symbols
            .iter()
            .filter(|(_, frames)| !frames.is_empty())
            .map(|(addr, frames)| SymbolEntry {
                addr: *addr,
                frames: frames.clone(),
            })
            .collect();
        syms.sort_by_key(|e| e.addr);
        rec.write_symbols(syms)?;
        if let Some(s) = &self.last_snapshot {
            rec.write_msg(&AgentMsg::Snapshot(s.clone()))?;
        }
        Ok(())
    }

    /// Stops recording; `reason` is stored as the recording's last frame.
    pub fn stop(&mut self, reason: &str) -> Option<Result<RecordStats, WriteError>> {
        let rec = self.recorder.take()?;
        let path = rec.path().to_path_buf();
        let result = rec.finish(reason);
        self.state = match &result {
            Ok(stats) => RecordState::Done {
                path,
                stats: stats.clone(),
                error: None,
            },
            Err(e) => RecordState::Done {
                path,
                stats: RecordStats::default(),
                error: Some(e.to_string()),
            },
        };
        Some(result)
    }

    /// Keeps what a recording started later must begin with; returns the symbol entries
    /// this event adds (each raw address once).
    fn remember(&mut self, ev: &Event) -> Vec<SymbolEntry> {
        match ev {
            Event::Msg(AgentMsg::Hello(h)) => {
                if h.pid != self.hello.pid || h.start_time_ticks != self.hello.start_time_ticks {
                    self.locations.clear();
                    self.stacks.clear();
                    self.symbols.clear();
                    self.last_snapshot = None;
                }
                self.hello = h.clone();
            }
            Event::Msg(AgentMsg::Modules(m)) => self.modules = Some(m.clone()),
            Event::Msg(AgentMsg::Location { id, loc }) => {
                self.locations.insert(*id, loc.clone());
            }
            Event::Msg(AgentMsg::Stack { id, frames }) => {
                self.stacks.insert(*id, frames.clone());
            }
            Event::Msg(AgentMsg::Snapshot(s)) => self.last_snapshot = Some(s.clone()),
            Event::Symbols { frames, .. } => {
                let mut new = Vec::new();
                for e in SymbolEntry::of_frames(frames) {
                    if let std::collections::hash_map::Entry::Vacant(v) = self.symbols.entry(e.addr)
                    {
                        v.insert(e.frames.clone());
                        new.push(e);
                    }
                }
                return new;
            }
            Event::End(_) => self.ended = true,
            _ => {}
        }
        Vec::new()
    }

    fn fail(&mut self, e: WriteError) {
        let rec = self.recorder.take();
        self.state = RecordState::Done {
            path: rec.map(|r| r.path().to_path_buf()).unwrap_or_default(),
            stats: RecordStats::default(),
            error: Some(e.to_string()),
        };
    }

    fn record(&mut self, ev: &Event, symbols: Vec<SymbolEntry>) {
        let end = matches!(ev, Event::End(_));
        let Some(rec) = self.recorder.as_mut() else {
            return;
        };
        let result = match ev {
            Event::Symbols { .. } => rec.write_symbols(symbols),
            Event::SymbolNote(_) => Ok(()),
            Event::Msg(_) | Event::End(_) => rec.write_event(ev),
        };
        match result {
            Ok(()) if end => {
                let rec = self.recorder.take();
                let path = rec
                    .as_ref()
                    .map(|r| r.path().to_path_buf())
                    .unwrap_or_default();
                let closed = rec.map(Recorder::close);
                self.state = RecordState::Done {
                    path,
                    stats: match &closed {
                        Some(Ok(s)) => s.clone(),
                        _ => RecordStats::default(),
                    },
                    error: closed.and_then(|r| r.err()).map(|e| e.to_string()),
                };
            }
            Ok(()) => {
                self.state = RecordState::On {
                    path: rec.path().to_path_buf(),
                    stats: rec.stats().clone(),
                }
            }
            Err(e) => self.fail(e),
        }
    }
}

impl<S: Source> Source for Tee<S> {
    fn hello(&self) -> &AgentHello {
        self.inner.hello()
    }

    fn next(&mut self, timeout: Duration) -> Option<Event> {
        let ev = self.inner.next(timeout)?;
        let symbols = self.remember(&ev);
        self.record(&ev, symbols);
        Some(ev)
    }

    fn request(&mut self, msg: ClientMsg) {
        if let ClientMsg::Subscribe { interval_ms } = msg {
            self.interval_ms = interval_ms;
        }
        self.inner.request(msg)
    }

    fn timeline(&mut self) -> Option<&mut dyn Timeline> {
        self.inner.timeline()
    }

    fn recorder(&mut self) -> Option<&mut dyn RecorderControl> {
        Some(self)
    }

    fn busy(&self) -> bool {
        self.inner.busy()
    }
}

impl<S: Source> RecorderControl for Tee<S> {
    fn start_recording(&mut self, path: &Path) -> Result<(), String> {
        let opts = RecordOptions {
            force: false,
            interval_ms: self.interval_ms,
            recorded_by: "leaktop live view (r)".into(),
        };
        self.start(path, &opts).map_err(|e| e.to_string())
    }

    fn stop_recording(&mut self) -> Option<String> {
        match self.stop("stopped from the live view")? {
            Ok(stats) => Some(format!(
                "recording saved: {} ({}, {})",
                self.state_path()
                    .map_or_else(String::new, |p| p.display().to_string()),
                crate::plural::count(stats.snapshots, "snapshot"),
                super::human_bytes(stats.bytes)
            )),
            Err(e) => Some(e.to_string()),
        }
    }

    fn is_recording(&self) -> bool {
        self.recorder.is_some()
    }

    fn recording_status(&self) -> Option<String> {
        match &self.state {
            RecordState::Off => None,
            RecordState::On { path, stats } => Some(format!(
                "{} {}",
                path.display(),
                super::human_bytes(stats.bytes)
            )),
            RecordState::Done { error: Some(e), .. } => Some(format!("recording stopped: {e}")),
            RecordState::Done { path, stats, .. } => Some(format!(
                "saved {} ({})",
                path.display(),
                super::human_bytes(stats.bytes)
            )),
        }
    }
}
