//! `leaktop record <pid> -o s.ltrec`: a live source teed into a file, no screen; a one-line
//! progress status on stderr when it is a terminal.

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use leaktop_agent::wire::AgentMsg;

use super::tee::{RecordState, Tee};
use super::writer::{RecordOptions, RecordStats, Recorder, WriteError};
use crate::attach::AttachError;
use crate::source::{Event, LiveSource, Source};

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

/// `1.5 KB`-style size.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
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
    let source = match LiveSource::attach(pid, opts.interval) {
        Ok(s) => s,
        Err(e) => {
            // Nothing was recorded: leave no file behind.
            let _ = std::fs::remove_file(path);
            drop(rec);
            return Err(e.into());
        }
    };
    let exe = source.hello().exe.clone();
    // Stacks are symbolized while the process is alive, so the file needs no binary.
    let mut tee = Tee::new(source).with_resolver(super::symbols::live_resolver());
    tee.start_with(rec)?;
    let started = Instant::now();
    let show = opts.progress && std::io::stderr().is_terminal();
    let mut last_draw: Option<Instant> = None;
    let mut live = 0u64;
    let ending = loop {
        if stop.load(Ordering::Relaxed) {
            break Ending::Interrupted;
        }
        if opts.duration.is_some_and(|d| started.elapsed() >= d) {
            break Ending::Duration;
        }
        let wait = opts
            .duration
            .map_or(Duration::from_millis(200), |d| {
                d.saturating_sub(started.elapsed())
            })
            .min(Duration::from_millis(200));
        match tee.next(wait) {
            Some(Event::End(reason)) => break Ending::SourceEnded(reason),
            Some(Event::Msg(AgentMsg::Snapshot(s))) => {
                live = s.sites.iter().map(|st| st.live).sum();
            }
            _ => {}
        }
        if let RecordState::Done { error: Some(e), .. } = tee.state() {
            if show {
                eprint!("\r\x1b[2K");
            }
            return Err(RecordError::Failed(e.clone()));
        }
        if show && last_draw.is_none_or(|t| t.elapsed() >= Duration::from_millis(500)) {
            last_draw = Some(Instant::now());
            if let RecordState::On { stats, .. } = tee.state() {
                let mut err = std::io::stderr().lock();
                let _ = write!(
                    err,
                    "\r\x1b[2Krecording pid {pid} to {}: {}, {}, {}, {}",
                    path.display(),
                    crate::report::age(started.elapsed().as_millis() as u64),
                    crate::plural::count(stats.snapshots, "snapshot"),
                    human_bytes(stats.bytes),
                    crate::plural::count(live, "live task"),
                );
                let _ = err.flush();
            }
        }
    };
    if show {
        eprint!("\r\x1b[2K");
    }
    let elapsed = started.elapsed();
    let stats = match &ending {
        Ending::SourceEnded(_) => match tee.state() {
            RecordState::Done { error: Some(e), .. } => return Err(RecordError::Failed(e.clone())),
            RecordState::Done { stats, .. } | RecordState::On { stats, .. } => stats.clone(),
            RecordState::Off => RecordStats::default(),
        },
        Ending::Duration => stop_with(&mut tee, "--duration reached")?,
        Ending::Interrupted => stop_with(&mut tee, "interrupted")?,
    };
    Ok(Outcome {
        path: path.to_path_buf(),
        pid,
        exe,
        stats,
        elapsed,
        ending,
    })
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

#[cfg(test)]
mod tests {
    use super::human_bytes;

    #[test]
    fn sizes_read_like_ls_h() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500), "1.5 KB");
        assert_eq!(human_bytes(52_000_000), "52.0 MB");
    }
}
