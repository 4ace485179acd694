//! `leaktop <pid>`: the live TUI.
//!
//! - [`app`]: state and input handling (events in, state changes and [`Action`]s out);
//! - [`render`] and [`widgets`]: the screen as pure functions of the state
//!   (`impl Widget for &App`), laid out by [`layout`];
//! - this module: the event loop, generic over the ratatui backend, the [`Source`] of
//!   protocol messages and the [`Input`] of terminal events, so tests drive it with a
//!   `TestBackend` and scripted input, and replay only brings another source;
//! - [`term`]: the real terminal (raw mode, restore on quit, error, panic and signals).

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
mod tests;

use std::time::{Duration, Instant};

use crossterm::event::Event as TermEvent;
use ratatui::backend::Backend;
use ratatui::Terminal;

use leaktop_agent::wire::AgentMsg;

pub use app::{Action, App, ReplayCmd, Timeline};

use crate::attach::AttachError;
use crate::record::{RecordOptions, RecordingSource, Tee, WriteError};
use crate::resolve::StackResolver;
use crate::source::{Event, LiveSource, Source};
use log::log;

/// How the TUI starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Snapshot interval asked of the agent.
    pub interval: Duration,
    /// When the user asked to attach: the first complete frame is timed from here.
    pub started: Instant,
    /// Resolve the raw stacks of the target's process (live sources; a recording
    /// carries its symbols).
    pub symbolize: bool,
    /// Record the session to this file from the start (`leaktop <pid> --record FILE`).
    pub record: Option<std::path::PathBuf>,
    /// How a replay starts (`leaktop replay`).
    pub replay: Option<ReplayOptions>,
    /// The symbolizer the live view shares with its recorder (debug info loaded once);
    /// `None`: the view makes its own.
    pub symbolizer: Option<crate::symbolize::SharedSymbolizer>,
    /// What the view marks as a leak (`--window` and the rest, as for `check`).
    pub thresholds: crate::model::Thresholds,
}

/// Where and how a replay starts.
#[derive(Debug, Clone, PartialEq)]
pub struct ReplayOptions {
    /// Recording ms to start at (`None`: the start).
    pub start_at: Option<u64>,
    pub speed: f64,
    pub playing: bool,
}

impl Options {
    pub fn new(interval: Duration) -> Options {
        Options {
            interval,
            started: Instant::now(),
            record: None,
            replay: None,
            symbolize: true,
            symbolizer: None,
            thresholds: crate::model::Thresholds::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TuiError {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Record(#[from] WriteError),
    #[error("cannot use the terminal: {0} (leaktop's live view needs an interactive terminal; `leaktop dump <pid>` prints a report instead)")]
    Terminal(String),
}

/// Terminal events, from the real terminal or a script.
pub trait Input {
    /// The next event, waiting at most `timeout`.
    fn next(&mut self, timeout: Duration) -> std::io::Result<Option<TermEvent>>;
    /// True when the process was asked to stop (SIGTERM and the like).
    fn interrupted(&self) -> bool {
        false
    }
}

/// What a host of the TUI (a recorder, a replayer) adds to the loop.
pub trait Hooks {
    /// Sees every event from the source before the app folds it.
    fn on_event(&mut self, _ev: &Event, _app: &mut App) {}
    /// Carries out what the app asked that neither the loop nor the source can:
    /// [`Action::ToggleRecord`] without a recorder, [`Action::Replay`] without a timeline.
    fn on_action(&mut self, action: &Action, app: &mut App) {
        app.status = Some(match action {
            Action::ToggleRecord if app.timeline.is_some() => {
                "this is a replay: it is recorded already".into()
            }
            Action::ToggleRecord => "this view cannot record; use `leaktop record`".into(),
            Action::Replay(_) => "seeking needs a recording".into(),
            Action::Request(_) => return,
        });
    }
}

/// No additions: the plain live view.
pub struct NoHooks;
impl Hooks for NoHooks {}

/// What one run measured.
#[derive(Debug, Clone, Default)]
pub struct RunStats {
    /// From [`Options::started`] to the first frame drawn with a snapshot.
    pub first_frame: Option<Duration>,
    pub frames: u64,
}

/// Most source events folded between two looks at the keyboard.
const MAX_BATCH: usize = 512;
/// Longest wait for a key before looking at the source again.
const TICK: Duration = Duration::from_millis(50);
/// The same before the first snapshot, so the first frame is not late.
const FIRST_TICK: Duration = Duration::from_millis(5);

fn term_err(e: impl std::fmt::Display) -> TuiError {
    TuiError::Terminal(e.to_string())
}

/// The event loop: folds source events into `app`, draws when something changed, hands
/// keys to the app and carries out its actions, until the user quits.
pub fn run<B: Backend, S: Source + ?Sized>(
    terminal: &mut Terminal<B>,
    source: &mut S,
    input: &mut dyn Input,
    app: &mut App,
    hooks: &mut dyn Hooks,
    options: &Options,
) -> Result<RunStats, TuiError> {
    let mut stats = RunStats::default();
    let hello = Event::Msg(AgentMsg::Hello(source.hello().clone()));
    hooks.on_event(&hello, app);
    app.on_event(&hello);
    if let (Some(r), Some(tl)) = (&options.replay, source.timeline()) {
        tl.set_speed(r.speed);
        if let Some(t) = r.start_at {
            app.rewind(|s| tl.seek(t, s));
        }
        tl.set_playing(r.playing);
    }
    let mut dirty = true;
    let mut resolver: Option<StackResolver> = None;
    loop {
        dirty |= sync_source(source, app);
        let mut n = 0;
        let mut new_stacks = false;
        while n < MAX_BATCH {
            let Some(ev) = source.next(Duration::ZERO) else {
                break;
            };
            if let Event::End(reason) = &ev {
                log!("source ended: {reason}");
            }
            new_stacks |= matches!(ev, Event::Msg(AgentMsg::Stack { .. }));
            hooks.on_event(&ev, app);
            app.on_event(&ev);
            n += 1;
            dirty = true;
        }
        if new_stacks {
            // A recording carries its symbols; a live process is symbolized here.
            let mut filled = false;
            app.update_sessions(|s| filled |= source.fill_symbols(s));
            new_stacks = !filled;
        }
        if new_stacks && options.symbolize {
            // Symbols are resolved here, outside rendering: the first stack loads the
            // target's debug info (once), later ones hit the symbolizer's caches.
            let t = Instant::now();
            let r = resolver.get_or_insert_with(|| {
                let shared = options
                    .symbolizer
                    .clone()
                    .unwrap_or_else(crate::symbolize::shared);
                StackResolver::for_session_with(app.live_session(), shared)
            });
            app.update_sessions(|s| r.resolve_new(s));
            log!("resolved new stacks in {} ms", t.elapsed().as_millis());
        }
        if dirty {
            let size = terminal.size().map_err(term_err)?;
            if (size.width, size.height) != (app.size.width, app.size.height) {
                app.resize(size.width, size.height);
            }
            terminal
                .draw(|f| f.render_widget(&*app, f.area()))
                .map_err(term_err)?;
            stats.frames += 1;
            dirty = false;
            if stats.first_frame.is_none() && app.view().seq > 0 {
                let t = options.started.elapsed();
                stats.first_frame = Some(t);
                log!("first complete frame {} ms after attach", t.as_millis());
            }
        }
        if app.quit || input.interrupted() {
            break;
        }
        let wait = if n == MAX_BATCH {
            Duration::ZERO
        } else if stats.first_frame.is_none() {
            FIRST_TICK
        } else {
            TICK
        };
        if let Some(ev) = input.next(wait).map_err(term_err)? {
            for action in app.on_input(&ev) {
                match action {
                    Action::Request(msg) => source.request(msg),
                    Action::Replay(cmd) if source.timeline().is_some() => {
                        replay_action(source, app, cmd)
                    }
                    Action::ToggleRecord if source.recorder().is_some() => {
                        toggle_record(source, app)
                    }
                    other => hooks.on_action(&other, app),
                }
            }
            dirty = true;
        }
        if app.quit || input.interrupted() {
            break;
        }
    }
    Ok(stats)
}

/// Copies the source's replay position and recording state into the app; true when they
/// changed (a playing replay moves every tick).
fn sync_source<S: Source + ?Sized>(source: &mut S, app: &mut App) -> bool {
    let mut changed = false;
    if let Some(tl) = source.timeline() {
        let t = Timeline {
            start_ms: 0,
            end_ms: tl.duration_ms(),
            pos_ms: tl.position_ms(),
            playing: tl.playing(),
            speed: tl.speed(),
        };
        if app.timeline.as_ref() != Some(&t) {
            app.timeline = Some(t);
            changed = true;
        }
    }
    if let Some(rec) = source.recorder() {
        let status = if rec.is_recording() {
            rec.recording_status()
        } else {
            None
        };
        if app.recording != status {
            // A recording that ended by itself (the target exited, a write failed) says so.
            if app.recording.is_some() && status.is_none() {
                app.status = rec.recording_status();
            }
            app.recording = status;
            changed = true;
        }
    }
    changed
}

/// Carries out a replay key on the source's timeline.
fn replay_action<S: Source + ?Sized>(source: &mut S, app: &mut App, cmd: ReplayCmd) {
    let Some(tl) = source.timeline() else {
        return;
    };
    let (pos, end) = (tl.position_ms(), tl.duration_ms());
    let seek = |tl: &mut dyn crate::source::Timeline, app: &mut App, t: u64| {
        app.rewind(|s| tl.seek(t, s));
    };
    match cmd {
        ReplayCmd::PlayPause => {
            let play = !tl.playing();
            tl.set_playing(play);
        }
        ReplayCmd::Step { forward } => app.rewind(|s| tl.step(forward, s)),
        ReplayCmd::Speed { faster } => {
            let speed = if faster {
                tl.speed() * 2.0
            } else {
                tl.speed() / 2.0
            };
            tl.set_speed(speed);
            app.status = Some(format!("speed {}", format::speed(tl.speed())));
        }
        ReplayCmd::SeekBy(ms) => {
            let t = (pos as i64).saturating_add(ms).clamp(0, end as i64) as u64;
            seek(tl, app, t);
        }
        ReplayCmd::SeekStart => seek(tl, app, 0),
        ReplayCmd::SeekEnd => seek(tl, app, end),
        ReplayCmd::Goto(text) => match crate::record::parse_at(&text, end) {
            Ok(t) => seek(tl, app, t),
            Err(e) => app.status = Some(e),
        },
    }
}

/// `r`: starts recording to an automatically named file in the current directory, or
/// stops the recording.
fn toggle_record<S: Source + ?Sized>(source: &mut S, app: &mut App) {
    let pid = source.hello().pid;
    let Some(rec) = source.recorder() else {
        return;
    };
    if rec.is_recording() {
        app.status = rec.stop_recording();
    } else {
        let path = crate::record::auto_name(pid);
        app.status = Some(match rec.start_recording(&path) {
            Ok(()) => format!("recording to {} (r stops)", path.display()),
            Err(e) => format!("cannot record: {e}"),
        });
    }
    app.recording = if rec.is_recording() {
        rec.recording_status()
    } else {
        None
    };
}

/// Runs the TUI on the real terminal over `source`, restoring the terminal however it ends.
pub fn run_in_terminal<S: Source + ?Sized>(
    source: &mut S,
    options: &Options,
    hooks: &mut dyn Hooks,
) -> Result<RunStats, TuiError> {
    let path = log::default_path();
    if log::open(&path).is_ok() {
        let h = source.hello();
        log!(
            "leaktop {} attached to pid {} ({})",
            env!("CARGO_PKG_VERSION"),
            h.pid,
            h.exe
        );
    }
    let mut input = term::TerminalInput::new().map_err(term_err)?;
    let (mut terminal, guard) = term::enter().map_err(term_err)?;
    let mut app = App::new(options.interval);
    app.thresholds = options.thresholds.clone();
    let result = run(&mut terminal, source, &mut input, &mut app, hooks, options);
    drop(guard);
    if let Err(e) = &result {
        log!("error: {e}");
    }
    log!("quit");
    result
}

/// `leaktop <pid>`: attaches to `pid` and runs the live TUI until the user quits. Attach
/// errors come back before the terminal is touched, so they print as usual.
pub fn run_live(pid: u32, options: &Options) -> Result<RunStats, TuiError> {
    let symbolizer = crate::symbolize::shared();
    let mut source = Tee::new(LiveSource::attach(pid, options.interval)?)
        .with_resolver(crate::record::symbols::live_resolver_with(
            symbolizer.clone(),
        ))
        .with_interval(options.interval);
    let mut options = options.clone();
    options.symbolizer = Some(symbolizer);
    let options = &options;
    if let Some(path) = &options.record {
        source.start(
            path,
            &RecordOptions {
                force: false,
                interval_ms: options.interval.as_millis().min(u32::MAX as u128) as u32,
                recorded_by: "leaktop --record".into(),
            },
        )?;
    }
    let result = run_in_terminal(&mut source, options, &mut NoHooks);
    if let Some(Err(e)) = source.stop("the live view was closed") {
        log!("recording: {e}");
    }
    result
}

/// `leaktop replay`: the same TUI over a recording, with its timeline. The await chains
/// come from the symbols stored in the file (the source fills them in), never from a
/// binary.
pub fn run_replay(mut source: RecordingSource, options: &Options) -> Result<RunStats, TuiError> {
    let mut options = options.clone();
    options.symbolize = false;
    run_in_terminal(&mut source, &options, &mut NoHooks)
}
