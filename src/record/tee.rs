//! A source that records what passes through it: `leaktop record`, `leaktop <pid>
//! --record` and the TUI's `r` key all wrap their live source in a [`Tee`].
//!
//! Recording can start at any moment: the tee remembers what a recording must begin with
//! (hello, module map, every location and stack defined so far, their symbols, the last
//! snapshot) and writes that first, then asks the agent for its history again, so a file
//! started mid-session replays on its own.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::Duration;

use leaktop_agent::wire::{
    AgentHello, AgentMsg, ClientMsg, LocId, Location, Mapping, Snapshot, StackId,
};

use super::format::{SymFrame, SymbolEntry};
use super::writer::{RecordOptions, RecordStats, Recorder, WriteError};
use crate::source::{Event, Recorder as RecorderControl, Source, Timeline};

/// Resolves raw return addresses of the live target to frames (the symbolizer, when the
/// source is live). Called once per new address.
pub type Resolver = Box<dyn FnMut(&AgentHello, &[Mapping], &[u64]) -> Vec<SymbolEntry> + Send>;

/// Longest a stopping recording waits for symbols still being resolved.
pub const SYMBOLS_WAIT: Duration = Duration::from_secs(30);

/// The symbolizer's thread: requests in, resolved entries out.
struct Worker {
    tx: std::sync::mpsc::Sender<(AgentHello, Vec<Mapping>, Vec<u64>)>,
    rx: std::sync::mpsc::Receiver<Vec<SymbolEntry>>,
}

impl Worker {
    fn start(mut resolver: Resolver) -> Option<Worker> {
        let (tx, requests) = std::sync::mpsc::channel::<(AgentHello, Vec<Mapping>, Vec<u64>)>();
        let (answers, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("leaktop-symbolize".into())
            .spawn(move || {
                for (hello, modules, addrs) in requests {
                    let mut entries = resolver(&hello, &modules, &addrs);
                    // Every address asked gets an answer, resolved or not, so nobody
                    // waits for it.
                    let answered: std::collections::HashSet<u64> =
                        entries.iter().map(|e| e.addr).collect();
                    entries.extend(addrs.iter().filter(|a| !answered.contains(a)).map(|a| {
                        SymbolEntry {
                            addr: *a,
                            frames: Vec::new(),
                        }
                    }));
                    if answers.send(entries).is_err() {
                        return;
                    }
                }
            })
            .ok()?;
        Some(Worker { tx, rx })
    }
}

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
    symbols: HashMap<u64, Vec<SymFrame>>,
    last_snapshot: Option<Snapshot>,
    symbolizer: Option<Worker>,
    /// Addresses handed to the symbolizer and not answered yet.
    requested: std::collections::HashSet<u64>,
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
            symbolizer: None,
            requested: Default::default(),
            recorder: None,
            interval_ms: 0,
            state: RecordState::Off,
            ended: false,
        }
    }

    /// Sets the symbolizer used to store resolved frames alongside stacks. It runs on a
    /// thread of its own: reading a large binary's DWARF the first time takes a while, and
    /// the source (and the screen) must not wait for it.
    pub fn with_resolver(mut self, resolver: Resolver) -> Tee<S> {
        self.symbolizer = Worker::start(resolver);
        self
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

    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
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
        let mut missing: Vec<u64> = self
            .stacks
            .values()
            .flatten()
            .copied()
            .filter(|a| !self.symbols.contains_key(a))
            .collect();
        missing.sort_unstable();
        missing.dedup();
        self.request_symbols(missing);
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

    /// Stops recording; `reason` is stored as the recording's last frame. Symbols still
    /// being resolved are waited for (at most [`SYMBOLS_WAIT`]) so the file has them.
    pub fn stop(&mut self, reason: &str) -> Option<Result<RecordStats, WriteError>> {
        self.recorder.as_ref()?;
        self.collect_symbols(SYMBOLS_WAIT);
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

    fn remember(&mut self, msg: &AgentMsg) -> Vec<u64> {
        match msg {
            AgentMsg::Hello(h) => {
                if h.pid != self.hello.pid || h.start_time_ticks != self.hello.start_time_ticks {
                    self.locations.clear();
                    self.stacks.clear();
                    self.symbols.clear();
                    self.last_snapshot = None;
                }
                self.hello = h.clone();
            }
            AgentMsg::Modules(m) => self.modules = Some(m.clone()),
            AgentMsg::Location { id, loc } => {
                self.locations.insert(*id, loc.clone());
            }
            AgentMsg::Stack { id, frames } => {
                self.stacks.insert(*id, frames.clone());
                let mut new: Vec<u64> = frames
                    .iter()
                    .copied()
                    .filter(|a| !self.symbols.contains_key(a))
                    .collect();
                new.sort_unstable();
                new.dedup();
                return new;
            }
            AgentMsg::Snapshot(s) => self.last_snapshot = Some(s.clone()),
            _ => {}
        }
        Vec::new()
    }

    /// Hands addresses without symbols to the symbolizer thread.
    fn request_symbols(&mut self, mut addrs: Vec<u64>) {
        let Some(worker) = &self.symbolizer else {
            return;
        };
        addrs.retain(|a| !self.symbols.contains_key(a) && !self.requested.contains(a));
        if addrs.is_empty() {
            return;
        }
        let modules = self.modules.clone().unwrap_or_default();
        if worker
            .tx
            .send((self.hello.clone(), modules, addrs.clone()))
            .is_ok()
        {
            self.requested.extend(addrs);
        }
    }

    /// Takes what the symbolizer has answered, waiting up to `wait` while something is
    /// still asked, and records it.
    fn collect_symbols(&mut self, wait: Duration) {
        let Some(worker) = &self.symbolizer else {
            return;
        };
        let deadline = std::time::Instant::now() + wait;
        let mut got = Vec::new();
        while !self.requested.is_empty() {
            let answer = if wait.is_zero() {
                worker.rx.try_recv().ok()
            } else {
                let left = deadline.saturating_duration_since(std::time::Instant::now());
                worker.rx.recv_timeout(left).ok()
            };
            let Some(entries) = answer else {
                break;
            };
            for e in &entries {
                self.requested.remove(&e.addr);
            }
            got.extend(entries);
        }
        // Unresolved addresses are remembered (not asked again) but not written.
        for e in &got {
            self.symbols.insert(e.addr, e.frames.clone());
        }
        got.retain(|e| !e.frames.is_empty());
        if got.is_empty() {
            return;
        }
        if let Some(rec) = self.recorder.as_mut() {
            if let Err(e) = rec.write_symbols(got) {
                self.fail(e);
            }
        }
    }

    fn fail(&mut self, e: WriteError) {
        let rec = self.recorder.take();
        self.state = RecordState::Done {
            path: rec.map(|r| r.path().to_path_buf()).unwrap_or_default(),
            stats: RecordStats::default(),
            error: Some(e.to_string()),
        };
    }

    fn record(&mut self, ev: &Event) {
        let end = matches!(ev, Event::End(_));
        if end {
            // The process is gone: what is being resolved still goes in before the end.
            self.collect_symbols(SYMBOLS_WAIT);
        }
        let Some(rec) = self.recorder.as_mut() else {
            return;
        };
        let result = rec.write_event(ev);
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
        let new_addrs = match &ev {
            Event::Msg(m) => self.remember(m),
            Event::End(_) => {
                self.ended = true;
                Vec::new()
            }
        };
        // Symbolize only what goes into a file; a recording started later resolves the
        // stacks it missed in its preamble.
        if self.recorder.is_some() {
            self.request_symbols(new_addrs);
            self.collect_symbols(Duration::ZERO);
        }
        self.record(&ev);
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

    fn fill_symbols(&mut self, session: &mut crate::model::Session) -> bool {
        self.inner.fill_symbols(session)
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
                super::headless::human_bytes(stats.bytes)
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
                super::headless::human_bytes(stats.bytes)
            )),
            RecordState::Done { error: Some(e), .. } => Some(format!("recording stopped: {e}")),
            RecordState::Done { path, stats, .. } => Some(format!(
                "saved {} ({})",
                path.display(),
                super::headless::human_bytes(stats.bytes)
            )),
        }
    }
}
