//! The symbolizing stage of a live stream: every stack the agent defines goes to a worker
//! thread, which resolves it out of process and answers with an [`Event::Symbols`] (and an
//! [`Event::SymbolNote`] for whatever the user should know). The model folds them like any
//! other event, a [`crate::record::Tee`] after this stage records them, and nothing that
//! reads events (the screen above all) ever loads debug info or waits for it.
//!
//! [`Resolver`] holds the one set of rules for a live target's addresses.

use std::collections::VecDeque;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use leaktop_agent::wire::{AgentHello, AgentMsg, ClientMsg, Mapping, StackId};

use super::{Event, Recorder, Source, Timeline};
use crate::frame::Frame;
use crate::symbolize::{Options, ProcessMaps, Symbolizer};

/// Longest the end of a source is held back for symbols still being resolved (the
/// process is gone, but its files are usually still there to read).
pub const SYMBOLS_WAIT: Duration = Duration::from_secs(30);

/// While symbols are on their way, how often the stage looks at them between waits on
/// the inner source.
const POLL: Duration = Duration::from_millis(10);

/// Resolves the stacks of one live process.
///
/// The rules: the process's maps as `/proc` shows them (read again when an address falls
/// outside every known module, e.g. after a `dlopen`); when `/proc/<pid>` cannot be read,
/// the agent's own module list, checked against the hello's build id; with neither, a
/// note says why and the stacks stay raw addresses.
pub struct Resolver {
    symbolizer: Symbolizer,
    hello: AgentHello,
    modules: Vec<Mapping>,
    maps: Option<ProcessMaps>,
    noted: Vec<String>,
}

impl Resolver {
    pub fn new(hello: AgentHello) -> Resolver {
        Resolver {
            symbolizer: Symbolizer::new(Options::default()),
            hello,
            modules: Vec::new(),
            maps: None,
            noted: Vec::new(),
        }
    }

    /// The agent's module list (`AgentMsg::Modules`), for when `/proc` is out of reach.
    pub fn set_modules(&mut self, modules: Vec<Mapping>) {
        self.modules = modules;
        if self.maps.as_ref().is_some_and(|m| m.pid().is_none()) {
            self.maps = None;
        }
    }

    /// The frames of `addrs` (`None` when nothing can resolve them), and the notes not
    /// said before.
    pub fn resolve(&mut self, addrs: &[u64]) -> (Option<Vec<Frame>>, Vec<String>) {
        let mut notes = Vec::new();
        let stale = self
            .maps
            .as_ref()
            .is_none_or(|m| addrs.iter().any(|a| m.find(a.saturating_sub(1)).is_none()));
        if stale {
            match self.read_maps() {
                Ok(maps) => self.maps = Some(maps),
                Err(note) if self.maps.is_none() => notes.push(note),
                Err(_) => {}
            }
        }
        let frames = self.maps.as_ref().map(|maps| {
            self.symbolizer
                .resolve(maps, addrs)
                .into_iter()
                .flat_map(|r| r.frames)
                .collect()
        });
        notes.extend(self.symbolizer.take_notes().iter().map(|n| n.to_string()));
        notes.retain(|n| !self.noted.contains(n));
        self.noted.extend(notes.iter().cloned());
        (frames, notes)
    }

    /// `/proc/<pid>/maps`, else the agent's module list; `Err`: what to tell the user.
    fn read_maps(&self) -> Result<ProcessMaps, String> {
        let h = &self.hello;
        match ProcessMaps::read(h.pid) {
            Ok(m) => Ok(m.with_exe(h.exe.clone(), h.build_id.clone())),
            Err(_) if !self.modules.is_empty() => {
                Ok(ProcessMaps::from_mappings(self.modules.clone())
                    .with_exe(h.exe.clone(), h.build_id.clone()))
            }
            Err(e) => Err(format!("cannot symbolize: {e}")),
        }
    }
}

/// What the stage asks of its worker.
enum Request {
    /// A (new) process: start over with it.
    Hello(AgentHello),
    Modules(Vec<Mapping>),
    Stack(StackId, Vec<u64>),
}

/// Wraps a source and adds the symbols of its stacks to what it yields.
pub struct Symbolize<S> {
    inner: S,
    requests: Option<mpsc::Sender<Request>>,
    /// One answer per stack asked: the events it produced (possibly none).
    answers: mpsc::Receiver<Vec<Event>>,
    in_flight: usize,
    ready: VecDeque<Event>,
    /// The inner source's end, held back while stacks are being resolved.
    held_end: Option<(Event, Instant)>,
}

impl<S: Source> Symbolize<S> {
    /// Starts the worker thread (without one, the stage passes events through).
    pub fn new(inner: S) -> Symbolize<S> {
        let (tx, rx) = mpsc::channel();
        let (answer, answers) = mpsc::channel();
        let hello = inner.hello().clone();
        let started = std::thread::Builder::new()
            .name("leaktop-symbolize".into())
            .spawn(move || work(hello, rx, answer))
            .is_ok();
        Symbolize {
            inner,
            requests: started.then_some(tx),
            answers,
            in_flight: 0,
            ready: VecDeque::new(),
            held_end: None,
        }
    }

    pub fn inner(&self) -> &S {
        &self.inner
    }

    fn ask(&mut self, request: Request) {
        let counts = matches!(request, Request::Stack(..));
        let sent = self
            .requests
            .as_ref()
            .is_some_and(|tx| tx.send(request).is_ok());
        if sent && counts {
            self.in_flight += 1;
        } else if !sent {
            self.requests = None;
        }
    }

    /// Takes what the worker has answered, waiting up to `wait` for the first answer.
    fn collect(&mut self, wait: Duration) {
        let mut first = if wait.is_zero() || self.in_flight == 0 {
            self.answers.try_recv().ok()
        } else {
            self.answers.recv_timeout(wait).ok()
        };
        while let Some(events) = first.take().or_else(|| self.answers.try_recv().ok()) {
            self.in_flight = self.in_flight.saturating_sub(1);
            self.ready.extend(events);
        }
        if self.requests.is_none() {
            // The worker is gone: nothing more will come.
            self.in_flight = 0;
        }
    }

    /// Looks at an event of the inner source on its way out.
    fn pass(&mut self, ev: Event) -> Option<Event> {
        match &ev {
            Event::Msg(AgentMsg::Hello(h)) => self.ask(Request::Hello(h.clone())),
            Event::Msg(AgentMsg::Modules(m)) => self.ask(Request::Modules(m.clone())),
            Event::Msg(AgentMsg::Stack { id, frames }) => {
                self.ask(Request::Stack(*id, frames.clone()))
            }
            Event::End(_) if self.in_flight > 0 => {
                self.held_end = Some((ev, Instant::now()));
                return None;
            }
            _ => {}
        }
        Some(ev)
    }
}

/// The worker: resolves stacks in the order asked, one answer each.
fn work(hello: AgentHello, requests: mpsc::Receiver<Request>, answers: mpsc::Sender<Vec<Event>>) {
    let mut resolver = Resolver::new(hello);
    for request in requests {
        let (stack, addrs) = match request {
            Request::Hello(h) => {
                resolver = Resolver::new(h);
                continue;
            }
            Request::Modules(m) => {
                resolver.set_modules(m);
                continue;
            }
            Request::Stack(stack, addrs) => (stack, addrs),
        };
        let (frames, notes) = resolver.resolve(&addrs);
        let mut events: Vec<Event> = notes.into_iter().map(Event::SymbolNote).collect();
        events.extend(frames.map(|frames| Event::Symbols { stack, frames }));
        if answers.send(events).is_err() {
            return;
        }
    }
}

impl<S: Source> Source for Symbolize<S> {
    fn hello(&self) -> &AgentHello {
        self.inner.hello()
    }

    fn next(&mut self, timeout: Duration) -> Option<Event> {
        let deadline = Instant::now() + timeout;
        loop {
            self.collect(Duration::ZERO);
            if let Some(ev) = self.ready.pop_front() {
                return Some(ev);
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if let Some((_, since)) = &self.held_end {
                if self.in_flight == 0 || since.elapsed() >= SYMBOLS_WAIT {
                    return self.held_end.take().map(|(end, _)| end);
                }
                self.collect(left.min(POLL));
            } else {
                let slice = if self.in_flight > 0 {
                    left.min(POLL)
                } else {
                    left
                };
                if let Some(ev) = self.inner.next(slice).and_then(|ev| self.pass(ev)) {
                    return Some(ev);
                }
            }
            if Instant::now() >= deadline {
                return None;
            }
        }
    }

    fn request(&mut self, msg: ClientMsg) {
        self.inner.request(msg)
    }

    fn timeline(&mut self) -> Option<&mut dyn Timeline> {
        self.inner.timeline()
    }

    fn recorder(&mut self) -> Option<&mut dyn Recorder> {
        self.inner.recorder()
    }

    fn busy(&self) -> bool {
        self.in_flight > 0 || self.held_end.is_some() || !self.ready.is_empty() || self.inner.busy()
    }
}
