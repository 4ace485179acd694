//! The TUI's log: lines appended to a file, never written to the screen (the screen is
//! the TUI's). `LEAKTOP_LOG` names the file; by default it is
//! `$XDG_STATE_HOME/leaktop/leaktop.log` (`~/.local/state/leaktop/leaktop.log`).
//!
//! Hand-written (a dozen lines) rather than a logging crate: the TUI logs a handful of
//! events per session, so a global file handle is all it needs.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

static LOG: Mutex<Option<File>> = Mutex::new(None);

/// Where the log goes.
pub fn default_path() -> PathBuf {
    if let Some(p) = std::env::var_os("LEAKTOP_LOG").filter(|p| !p.is_empty()) {
        return PathBuf::from(p);
    }
    let state = std::env::var_os("XDG_STATE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".local/state")));
    match state {
        Some(dir) => dir.join("leaktop").join("leaktop.log"),
        None => {
            std::env::temp_dir().join(format!("leaktop-{}.log", nix::unistd::geteuid().as_raw()))
        }
    }
}

/// The log file at `path`, opened for appending (its directory made when missing).
fn append_to(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

/// The log file, opened for appending: where a child whose stderr would scribble over
/// the screen writes (the demo program under the live view).
pub fn append() -> std::io::Result<File> {
    append_to(&default_path())
}

/// Opens (appends to) the log file; later [`line()`] calls write there.
pub fn open(path: &Path) -> std::io::Result<()> {
    let file = append_to(path)?;
    *LOG.lock().unwrap_or_else(|p| p.into_inner()) = Some(file);
    Ok(())
}

/// Appends one line (with a Unix timestamp) when a log is open; otherwise does nothing.
pub fn line(args: std::fmt::Arguments<'_>) {
    let mut guard = LOG.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(f) = guard.as_mut() {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        let _ = writeln!(
            f,
            "{}.{:03} [{}] {args}",
            now.as_secs(),
            now.subsec_millis(),
            std::process::id()
        );
    }
}

/// `log!("...", args)`: [`line`] with `format_args!`.
macro_rules! log {
    ($($t:tt)*) => { $crate::tui::log::line(format_args!($($t)*)) };
}
pub(crate) use log;
