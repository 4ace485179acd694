//! Writing a recording: one frame per message, written and flushed as it comes, so the
//! file on disk is always a readable recording up to its last whole frame.
//!
//! Two recorders never share a file: a new recording is created with `O_EXCL` and held
//! under an exclusive `flock` while it is written; `--force` replaces an existing file
//! only when no recorder holds it, by unlinking it first (a recorder that somehow still
//! wrote to the old file would write to its own, now nameless, inode, never into ours).

use std::fs::File;
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use nix::fcntl::{Flock, FlockArg};

use leaktop_agent::wire::AgentMsg;

use super::delta::{pack_history, SnapshotEncoder};
use super::format::{self, Meta, Record, SymbolEntry};
use crate::source::Event;

/// How often written data is forced to the disk (beyond the page cache, which already
/// survives the recorder being killed).
const SYNC_EVERY: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("{path} already exists: choose another file name, or pass --force to replace it")]
    Exists { path: PathBuf },
    #[error("{path} is being written by another leaktop recorder right now; not replacing it")]
    Busy { path: PathBuf },
    #[error("cannot create recording {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("writing recording {path} failed after {bytes} bytes: {source}; the file is readable up to there")]
    Write {
        path: PathBuf,
        bytes: u64,
        source: std::io::Error,
    },
    #[error("recording {path} was stopped earlier by a write error")]
    Closed { path: PathBuf },
}

/// Options of a new recording.
#[derive(Debug, Clone, Default)]
pub struct RecordOptions {
    /// Replace an existing file (when no recorder is writing it).
    pub force: bool,
    /// Snapshot interval asked of the agent (stored in the meta frame).
    pub interval_ms: u32,
    /// How the recording was started, for the meta frame.
    pub recorded_by: String,
}

/// Counters of a recording so far.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecordStats {
    pub bytes: u64,
    pub frames: u64,
    pub snapshots: u64,
    /// Recording time of the last frame.
    pub t_ms: u64,
}

/// An open recording.
pub struct Recorder {
    file: Option<Flock<File>>,
    path: PathBuf,
    started: Instant,
    last_sync: Instant,
    snapshots: SnapshotEncoder,
    stats: RecordStats,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Recorder")
            .field("path", &self.path)
            .field("stats", &self.stats)
            .finish()
    }
}

fn unix_ms_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

fn create_new(path: &Path) -> std::io::Result<File> {
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
}

/// Creates `path` exclusively and locks it.
fn create_locked(path: &Path, force: bool) -> Result<Flock<File>, WriteError> {
    let create_err = |source| WriteError::Create {
        path: path.to_path_buf(),
        source,
    };
    let file = match create_new(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            if !force {
                return Err(WriteError::Exists {
                    path: path.to_path_buf(),
                });
            }
            // Refuse to pull the file from under a live recorder.
            let old = File::open(path).map_err(create_err)?;
            match Flock::lock(old, FlockArg::LockExclusiveNonblock) {
                Ok(lock) => {
                    std::fs::remove_file(path).map_err(create_err)?;
                    drop(lock);
                }
                Err((_, nix::errno::Errno::EWOULDBLOCK)) => {
                    return Err(WriteError::Busy {
                        path: path.to_path_buf(),
                    })
                }
                Err((_, errno)) => return Err(create_err(errno.into())),
            }
            // Another recorder may have raced us to the name: then it wins, untouched.
            create_new(path).map_err(|e| match e.kind() {
                std::io::ErrorKind::AlreadyExists => WriteError::Busy {
                    path: path.to_path_buf(),
                },
                _ => create_err(e),
            })?
        }
        Err(e) => return Err(create_err(e)),
    };
    Flock::lock(file, FlockArg::LockExclusiveNonblock)
        .map_err(|(_, errno)| create_err(errno.into()))
}

impl Recorder {
    /// Creates a new recording at `path` and writes its header and meta frame.
    pub fn create(path: &Path, opts: &RecordOptions) -> Result<Recorder, WriteError> {
        let file = create_locked(path, opts.force)?;
        // Make the new name itself durable.
        if let Some(dir) = path.parent() {
            let dir = if dir.as_os_str().is_empty() {
                Path::new(".")
            } else {
                dir
            };
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        let now = Instant::now();
        let mut rec = Recorder {
            file: Some(file),
            path: path.to_path_buf(),
            started: now,
            last_sync: now,
            snapshots: SnapshotEncoder::new(),
            stats: RecordStats::default(),
        };
        rec.write_bytes(&format::file_header())?;
        rec.write_record(&Record::Meta(Meta {
            leaktop_version: env!("CARGO_PKG_VERSION").to_string(),
            started_unix_ms: unix_ms_now(),
            interval_ms: opts.interval_ms,
            hostname: crate::proc::hostname(),
            recorded_by: opts.recorded_by.clone(),
        }))?;
        Ok(rec)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn stats(&self) -> &RecordStats {
        &self.stats
    }

    /// Time since the recording started.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    fn write_bytes(&mut self, bytes: &[u8]) -> Result<(), WriteError> {
        let Some(file) = self.file.as_mut() else {
            return Err(WriteError::Closed {
                path: self.path.clone(),
            });
        };
        match file.write_all(bytes) {
            Ok(()) => {
                self.stats.bytes += bytes.len() as u64;
                if self.last_sync.elapsed() >= SYNC_EVERY {
                    self.last_sync = Instant::now();
                    let _ = file.sync_data();
                }
                Ok(())
            }
            Err(source) => {
                // Cut a half-written frame off so the file stays clean, then stop.
                let _ = file.set_len(self.stats.bytes);
                let _ = file.sync_data();
                self.file = None;
                Err(WriteError::Write {
                    path: self.path.clone(),
                    bytes: self.stats.bytes,
                    source,
                })
            }
        }
    }

    /// Recording time now: ms since the recording started.
    pub fn now_ms(&self) -> u64 {
        self.started.elapsed().as_millis() as u64
    }

    fn write_record(&mut self, record: &Record) -> Result<(), WriteError> {
        self.write_record_at(self.now_ms(), record)
    }

    fn write_record_at(&mut self, t_ms: u64, record: &Record) -> Result<(), WriteError> {
        // Frames are in time order, whatever the caller's clock says.
        let t_ms = t_ms.max(self.stats.t_ms);
        let frame = format::encode_frame(t_ms, record).map_err(|e| WriteError::Write {
            path: self.path.clone(),
            bytes: self.stats.bytes,
            source: std::io::Error::other(e.to_string()),
        })?;
        self.write_bytes(&frame)?;
        self.stats.frames += 1;
        self.stats.t_ms = t_ms;
        Ok(())
    }

    /// Writes one protocol message received now (snapshots and history in their compact
    /// codings).
    pub fn write_msg(&mut self, msg: &AgentMsg) -> Result<(), WriteError> {
        self.write_msg_at(self.now_ms(), msg)
    }

    /// Writes one protocol message received at recording time `t_ms` (for tools that
    /// convert or synthesize recordings; times never go backwards in a file).
    pub fn write_msg_at(&mut self, t_ms: u64, msg: &AgentMsg) -> Result<(), WriteError> {
        match msg {
            AgentMsg::Snapshot(s) => {
                let delta = self.snapshots.encode(s);
                self.write_record_at(t_ms, &Record::Snapshot(delta))?;
                self.stats.snapshots += 1;
                Ok(())
            }
            AgentMsg::History(h) => self.write_record_at(t_ms, &Record::History(pack_history(h))),
            AgentMsg::Hello(_) => {
                // A new process (or a new connection): snapshots start over from whole.
                self.snapshots.reset();
                self.write_record_at(t_ms, &Record::Msg(msg.clone()))
            }
            _ => self.write_record_at(t_ms, &Record::Msg(msg.clone())),
        }
    }

    /// Writes what a source yielded now; an end of the source is stored as such.
    pub fn write_event(&mut self, ev: &Event) -> Result<(), WriteError> {
        self.write_event_at(self.now_ms(), ev)
    }

    /// Writes what a source yielded at recording time `t_ms`.
    pub fn write_event_at(&mut self, t_ms: u64, ev: &Event) -> Result<(), WriteError> {
        match ev {
            Event::Msg(m) => self.write_msg_at(t_ms, m),
            Event::End(reason) => self.write_record_at(
                t_ms,
                &Record::End {
                    reason: reason.clone(),
                },
            ),
            Event::Symbols { frames, .. } => {
                let entries: Vec<SymbolEntry> = SymbolEntry::of_frames(frames).collect();
                self.write_record_at(t_ms, &Record::Symbols(entries))
            }
            // What the symbolizer said is about this machine, not the recording.
            Event::SymbolNote(_) => Ok(()),
        }
    }

    /// Writes resolved symbols of raw addresses.
    pub fn write_symbols(&mut self, entries: Vec<SymbolEntry>) -> Result<(), WriteError> {
        if entries.is_empty() {
            return Ok(());
        }
        self.write_record(&Record::Symbols(entries))
    }

    /// Ends the recording with a stop frame (`reason`: why, for the replay) and syncs it.
    pub fn finish(mut self, reason: &str) -> Result<RecordStats, WriteError> {
        self.write_record(&Record::Stop {
            reason: reason.to_string(),
        })?;
        self.close()
    }

    /// Syncs and closes without a stop frame (after the source's own end frame).
    pub fn close(mut self) -> Result<RecordStats, WriteError> {
        if let Some(f) = self.file.take() {
            f.sync_all().map_err(|source| WriteError::Write {
                path: self.path.clone(),
                bytes: self.stats.bytes,
                source,
            })?;
        }
        Ok(self.stats.clone())
    }
}
