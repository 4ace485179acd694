//! The live view and replay: the event loop between a source, the terminal and the TUI's
//! state. It is generic over the ratatui backend, the [`Source`] and the [`Input`] of
//! terminal events, so tests drive it with a `TestBackend` and scripted input, and replay
//! only brings another source.

use std::time::{Duration, Instant};

use ratatui::backend::Backend;
use ratatui::Terminal;

use leaktop_agent::wire::AgentMsg;

use super::{drain, Fold, Until};
use crate::attach::AttachError;
use crate::record::{RecordOptions, RecordingSource, WriteError};
use crate::source::{Event, Source};
use crate::tui::log::{self, log};
use crate::tui::{term, Action, App, Input, ReplayCmd, Timeline};

/// How the view starts.
#[derive(Debug, Clone)]
pub struct Options {
    /// Snapshot interval asked of the agent.
    pub interval: Duration,
    /// When the user asked to attach: the first complete frame is timed from here.
    pub started: Instant,
    /// Record the session to this file from the start (`leaktop <pid> --record FILE`).
    pub record: Option<std::path::PathBuf>,
    /// What the view marks as a leak (`--window` and the rest, as for `check`).
    pub thresholds: crate::model::Thresholds,
}

impl Options {
    pub fn new(interval: Duration) -> Options {
        Options {
            interval,
            started: Instant::now(),
            record: None,
            thresholds: crate::model::Thresholds::default(),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ViewError {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Record(#[from] WriteError),
    #[error("cannot use the terminal: {0} (leaktop's live view needs an interactive terminal; `leaktop dump <pid>` prints a report instead)")]
    Terminal(String),
}

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

fn term_err(e: impl std::fmt::Display) -> ViewError {
    ViewError::Terminal(e.to_string())
}

impl Fold for App {
    fn fold(&mut self, ev: &Event) {
        if let Event::End(reason) = ev {
            log!("source ended: {reason}");
        }
        self.on_event(ev);
    }

    fn session(&self) -> &crate::model::Session {
        self.live_session()
    }
}

/// The event loop: folds source events into `app`, draws when something changed, hands
/// keys to the app and carries out its actions, until the user quits.
pub fn run<B: Backend, S: Source + ?Sized>(
    terminal: &mut Terminal<B>,
    source: &mut S,
    input: &mut dyn Input,
    app: &mut App,
    options: &Options,
) -> Result<RunStats, ViewError> {
    let mut stats = RunStats::default();
    app.on_event(&AgentMsg::Hello(source.hello().clone()).into());
    let mut dirty = true;
    loop {
        dirty |= sync_source(source, app);
        let folded = drain(source, app, Until::Idle { max: MAX_BATCH });
        dirty |= folded.events > 0;
        draw_if(terminal, app, dirty, &mut stats, options)?;
        dirty = false;
        if app.quit || input.interrupted() {
            break;
        }
        let wait = if folded.events == MAX_BATCH {
            Duration::ZERO
        } else if stats.first_frame.is_none() {
            FIRST_TICK
        } else {
            TICK
        };
        if let Some(ev) = input.next(wait).map_err(term_err)? {
            for action in app.on_input(&ev) {
                act(source, app, action);
            }
            dirty = true;
        }
        if app.quit || input.interrupted() {
            break;
        }
    }
    Ok(stats)
}

/// Draws the app when it changed or the terminal's size did.
fn draw_if<B: Backend>(
    terminal: &mut Terminal<B>,
    app: &mut App,
    dirty: bool,
    stats: &mut RunStats,
    options: &Options,
) -> Result<(), ViewError> {
    let size = terminal.size().map_err(term_err)?;
    let resized = (size.width, size.height) != (app.size.width, app.size.height);
    if resized {
        app.resize(size.width, size.height);
    }
    if !dirty && !resized {
        return Ok(());
    }
    terminal
        .draw(|f| f.render_widget(&*app, f.area()))
        .map_err(term_err)?;
    stats.frames += 1;
    if stats.first_frame.is_none() && app.view().seq > 0 {
        let t = options.started.elapsed();
        stats.first_frame = Some(t);
        log!("first complete frame {} ms after attach", t.as_millis());
    }
    Ok(())
}

/// Carries out what the app asked of the source.
fn act<S: Source + ?Sized>(source: &mut S, app: &mut App, action: Action) {
    match action {
        Action::Request(msg) => source.request(msg),
        Action::Replay(cmd) if source.timeline().is_some() => replay_action(source, app, cmd),
        Action::ToggleRecord if source.recorder().is_some() => toggle_record(source, app),
        Action::ToggleRecord if app.timeline.is_some() => {
            app.status = Some("this is a replay: it is recorded already".into())
        }
        Action::ToggleRecord => {
            app.status = Some("this view cannot record; use `leaktop record`".into())
        }
        Action::Replay(_) => app.status = Some("seeking needs a recording".into()),
    }
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
            app.status = Some(format!("speed {}", crate::tui::format::speed(tl.speed())));
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

/// Runs the view on the real terminal over `source`, restoring the terminal however it
/// ends.
pub fn run_in_terminal<S: Source + ?Sized>(
    source: &mut S,
    options: &Options,
) -> Result<RunStats, ViewError> {
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
    let result = run(&mut terminal, source, &mut input, &mut app, options);
    drop(guard);
    if let Err(e) = &result {
        log!("error: {e}");
    }
    log!("quit");
    result
}

/// `leaktop <pid>`: attaches to `pid` and runs the live view until the user quits. Attach
/// errors come back before the terminal is touched, so they print as usual.
pub fn run_live(pid: u32, options: &Options) -> Result<RunStats, ViewError> {
    let mut source = super::live(pid, options.interval)?;
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
    let result = run_in_terminal(&mut source, options);
    if let Some(Err(e)) = source.stop("the live view was closed") {
        log!("recording: {e}");
    }
    result
}

/// `leaktop replay`: the same view over a recording, with its timeline. The await chains
/// come from the symbols stored in the file (the source yields them), never from a
/// binary.
pub fn run_replay(mut source: RecordingSource, options: &Options) -> Result<RunStats, ViewError> {
    run_in_terminal(&mut source, options)
}
