//! `leaktop record <pid> -o s.ltrec`: a live source teed into a file, no screen; a one-line
//! progress status on stderr when it is a terminal.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use super::{drain, Until};
use crate::attach::AttachError;
use crate::model::Session;
use crate::record::{
    human_bytes, RecordOptions, RecordState, RecordStats, Recorder, Tee, WriteError,
};
use crate::source::{Source, SYMBOLS_WAIT};

/// Settings of a headless recording.
#[derive(Debug, Clone)]
pub struct Options {
    pub interval: Duration,
    /// Stop after this long (`None`: until the process exits or the user interrupts).
    pub duration: Option<Duration>,
    pub force: bool,
    /// Show the progress line (only drawn when stderr is a terminal).
    pub progress: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Attach(#[from] AttachError),
    #[error(transparent)]
    Write(#[from] WriteError),
    /// Writing failed while recording (the message names the file and what is readable).
    #[error("{0}")]
    Failed(String),
}

/// Why a recording ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// `--duration` passed.
    Duration,
    /// The user (or a signal) stopped it.
    Interrupted,
    /// The target went away; its reason.
    SourceEnded(String),
}

/// What a finished recording holds.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub path: PathBuf,
    pub pid: u32,
    pub exe: String,
    pub stats: RecordStats,
    pub elapsed: Duration,
    pub ending: Ending,
}

/// Records `pid` into `path` until the duration passes, the process exits or `stop` is
/// set (by a signal handler).
pub fn record_pid(
    pid: u32,
    path: &Path,
    opts: &Options,
    stop: &AtomicBool,
) -> Result<Outcome, RecordError> {
    // The file first: a name already taken is the quickest error to give.
    let rec = Recorder::create(
        path,
        &RecordOptions {
            force: opts.force,
            interval_ms: opts.interval.as_millis().min(u32::MAX as u128) as u32,
            recorded_by: "leaktop record".into(),
        },
    )?;
    // Stacks are symbolized while the process is alive, so the file needs no binary.
    let mut tee = match super::live(pid, opts.interval) {
        Ok(s) => s,
        Err(e) => {
            // Nothing was recorded: leave no file behind.
            let _ = std::fs::remove_file(path);
            drop(rec);
            return Err(e.into());
        }
    };
    let exe = tee.hello().exe.clone();
    tee.start_with(rec)?;
    let started = Instant::now();
    let mut progress = Progress::new(opts.progress, pid, path);
    let mut session = Session::new();
    let ending = loop {
        if let Some(ending) = ending(&session, opts, started, stop) {
            break ending;
        }
        let step = Instant::now() + Duration::from_millis(200);
        let until = opts.duration.map_or(step, |d| step.min(started + d));
        drain(&mut tee, &mut session, Until::Time(until));
        if let RecordState::Done { error: Some(e), .. } = tee.state() {
            progress.clear();
            return Err(RecordError::Failed(e.clone()));
        }
        progress.draw(&tee, &session, started);
    };
    progress.clear();
    let elapsed = started.elapsed();
    let stats = finish(&mut tee, &mut session, &ending)?;
    Ok(Outcome {
        path: path.to_path_buf(),
        pid,
        exe,
        stats,
        elapsed,
        ending,
    })
}

/// Why the recording is over, if it is.
fn ending(
    session: &Session,
    opts: &Options,
    started: Instant,
    stop: &AtomicBool,
) -> Option<Ending> {
    if let Some(reason) = &session.ended {
        Some(Ending::SourceEnded(reason.clone()))
    } else if stop.load(Ordering::Relaxed) {
        Some(Ending::Interrupted)
    } else if opts.duration.is_some_and(|d| started.elapsed() >= d) {
        Some(Ending::Duration)
    } else {
        None
    }
}

/// Closes the file: after the source's own end, or with a stop frame once the stacks
/// still being symbolized are in (there is no screen to keep waiting).
fn finish<S: Source>(
    tee: &mut Tee<S>,
    session: &mut Session,
    ending: &Ending,
) -> Result<RecordStats, RecordError> {
    let reason = match ending {
        Ending::SourceEnded(_) => {
            return match tee.state() {
                RecordState::Done { error: Some(e), .. } => Err(RecordError::Failed(e.clone())),
                RecordState::Done { stats, .. } | RecordState::On { stats, .. } => {
                    Ok(stats.clone())
                }
                RecordState::Off => Ok(RecordStats::default()),
            }
        }
        Ending::Duration => "--duration reached",
        Ending::Interrupted => "interrupted",
    };
    let until = Instant::now() + SYMBOLS_WAIT;
    while tee.busy() && Instant::now() < until && session.ended.is_none() {
        drain(
            tee,
            session,
            Until::Time(Instant::now() + Duration::from_millis(50)),
        );
    }
    Ok(stop_with(tee, reason)?)
}

/// The one-line progress status on stderr, when it is a terminal.
struct Progress<'a> {
    show: bool,
    pid: u32,
    path: &'a Path,
    last_draw: Option<Instant>,
}

impl<'a> Progress<'a> {
    fn new(wanted: bool, pid: u32, path: &'a Path) -> Progress<'a> {
        Progress {
            show: wanted && std::io::stderr().is_terminal(),
            pid,
            path,
            last_draw: None,
        }
    }

    fn draw<S: Source>(&mut self, tee: &Tee<S>, session: &Session, started: Instant) {
        if !self.show
            || self
                .last_draw
                .is_some_and(|t| t.elapsed() < Duration::from_millis(500))
        {
            return;
        }
        self.last_draw = Some(Instant::now());
        if let RecordState::On { stats, .. } = tee.state() {
            let mut err = std::io::stderr().lock();
            let _ = write!(
                err,
                "\r\x1b[2Krecording pid {} to {}: {}, {}, {}, {}",
                self.pid,
                self.path.display(),
                crate::report::age(started.elapsed().as_millis() as u64),
                crate::plural::count(stats.snapshots, "snapshot"),
                human_bytes(stats.bytes),
                crate::plural::count(session.totals().0, "live task"),
            );
            let _ = err.flush();
        }
    }

    fn clear(&self) {
        if self.show {
            eprint!("\r\x1b[2K");
        }
    }
}

fn stop_with<S: Source>(tee: &mut Tee<S>, reason: &str) -> Result<RecordStats, WriteError> {
    match tee.stop(reason) {
        Some(r) => r,
        None => match tee.state() {
            RecordState::Done { stats, .. } => Ok(stats.clone()),
            _ => Ok(RecordStats::default()),
        },
    }
}

impl Outcome {
    /// The closing line for the user.
    pub fn summary(&self) -> String {
        let minutes = self.elapsed.as_secs_f64() / 60.0;
        let rate = if minutes > 0.0 {
            format!(
                ", {}/min",
                human_bytes((self.stats.bytes as f64 / minutes) as u64)
            )
        } else {
            String::new()
        };
        let why = match &self.ending {
            Ending::Duration => String::new(),
            Ending::Interrupted => " (interrupted)".into(),
            Ending::SourceEnded(r) => format!(" ({r})"),
        };
        format!(
            "recorded {} of pid {} ({}) to {}{why}: {}, {}{rate}; replay with `leaktop replay {}`",
            crate::report::age(self.elapsed.as_millis() as u64),
            self.pid,
            self.exe,
            self.path.display(),
            crate::plural::count(self.stats.snapshots, "snapshot"),
            human_bytes(self.stats.bytes),
            self.path.display(),
        )
    }
}
