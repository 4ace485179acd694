//! Starting the agent: socket directory checks, stale socket cleanup, bind, and the one
//! `leaktop-agent` thread. Errors are returned, never panicked, and never stop the host.

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::paths;
use crate::registry::{lock, registry, DEFAULT_SITE_CAP};
use crate::server::{Server, ServerConfig};

/// Why the agent could not start. The host program goes on either way.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot create the leaktop socket directory {path}: {source}")]
    CreateDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing the leaktop socket directory {path}: {reason} (remove it or set LEAKTOP_SOCKET_DIR to a private directory)")]
    UnsafeDir { path: PathBuf, reason: String },
    #[error("leaktop socket path {path} is {len} bytes, over the {max}-byte limit of a Unix socket path (set LEAKTOP_SOCKET_DIR to a shorter directory)")]
    PathTooLong {
        path: PathBuf,
        len: usize,
        max: usize,
    },
    #[error("cannot bind the leaktop socket {path}: {source}")]
    Bind {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot start the leaktop-agent thread: {0}")]
    Thread(std::io::Error),
}

/// A running agent. Cheap to clone; the agent runs until the process exits (its socket is
/// removed then) or until [`Agent::shutdown`].
#[derive(Clone, Debug)]
pub struct Agent {
    inner: Arc<Running>,
}

#[derive(Debug)]
struct Running {
    path: PathBuf,
    stop: Arc<AtomicBool>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Agent {
    /// The socket clients connect to.
    pub fn socket_path(&self) -> &Path {
        &self.inner.path
    }

    /// Stops the agent thread and removes the socket. Later [`start`] calls start anew.
    pub fn shutdown(&self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        if let Some(t) = lock(&self.inner.thread).take() {
            let _ = t.join();
        }
        let _ = std::fs::remove_file(&self.inner.path);
        let mut running = lock(&RUNNING);
        if running
            .as_ref()
            .is_some_and(|a| Arc::ptr_eq(&a.inner, &self.inner))
        {
            *running = None;
        }
    }
}

static RUNNING: Mutex<Option<Agent>> = Mutex::new(None);
static EXIT_PATH: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Starts the agent with default settings; see [`Builder`]. Call it once, early; later
/// calls return the agent already running.
///
/// It never panics and never stops the program: when the agent cannot start (an unsafe
/// socket directory, a socket path too long, no thread), the error says why and what to
/// do. Log it and go on: spawned tasks and channels work the same, only nobody can attach.
///
/// ```
/// if let Err(e) = leaktop_agent::start() {
///     eprintln!("leaktop agent not started: {e}");
/// }
/// ```
///
/// The agent keeps running when the returned [`Agent`] is dropped; keep it to learn the
/// socket path or to [`Agent::shutdown`]:
///
/// ```
/// match leaktop_agent::start() {
///     Ok(agent) => {
///         assert!(agent.socket_path().ends_with(format!("{}.sock", std::process::id())));
///         agent.shutdown(); // stops the thread, removes the socket
///     }
///     Err(e) => eprintln!("leaktop agent not started: {e}"),
/// }
/// ```
pub fn start() -> Result<Agent, StartError> {
    Builder::new().start()
}

/// Options of the agent.
///
/// ```
/// use std::time::Duration;
///
/// let agent = leaktop_agent::Builder::new()
///     .site_cap(1_000) // tasks of further spawn sites share one "other sites" row
///     .sample_interval(Duration::from_secs(5))
///     .history(Duration::from_secs(3600)) // what `leaktop check` sees at attach
///     .start();
/// if let Err(e) = agent {
///     eprintln!("leaktop agent not started: {e}");
/// }
/// ```
#[derive(Clone, Debug)]
pub struct Builder {
    socket_dir: Option<PathBuf>,
    site_cap: usize,
    sample_interval: Duration,
    history: Duration,
    history_memory: usize,
}

impl Default for Builder {
    fn default() -> Self {
        Self::new()
    }
}

impl Builder {
    /// The defaults: see each setter.
    pub fn new() -> Builder {
        Builder {
            socket_dir: None,
            site_cap: DEFAULT_SITE_CAP,
            sample_interval: Duration::from_secs(1),
            history: Duration::from_secs(600),
            history_memory: crate::history::DEFAULT_BUDGET_BYTES,
        }
    }

    /// Directory for the socket (default: `$LEAKTOP_SOCKET_DIR`, else
    /// `$XDG_RUNTIME_DIR/leaktop`, else `/tmp/leaktop-<uid>`).
    pub fn socket_dir(mut self, dir: impl Into<PathBuf>) -> Builder {
        self.socket_dir = Some(dir.into());
        self
    }

    /// Maximum number of distinct spawn sites tracked (default 10 000); tasks of further
    /// sites are counted in one "other sites" row.
    pub fn site_cap(mut self, cap: usize) -> Builder {
        self.site_cap = cap.max(1);
        self
    }

    /// How often per-site history is sampled (default 1 s).
    pub fn sample_interval(mut self, every: Duration) -> Builder {
        self.sample_interval = every.max(Duration::from_millis(10));
        self
    }

    /// How much history is kept (default 10 minutes), as long as it fits in
    /// [`Builder::history_memory`].
    pub fn history(mut self, keep: Duration) -> Builder {
        self.history = keep;
        self
    }

    /// Memory cap of the history of all sites together (default 32 MiB). Each sample takes
    /// 16 bytes, so the default keeps ten minutes at 1 s for up to 3 495 sites; with more
    /// sites every site keeps less (never under 16 samples).
    pub fn history_memory(mut self, bytes: usize) -> Builder {
        self.history_memory = bytes;
        self
    }

    /// Starts the agent, or returns the one already running.
    pub fn start(self) -> Result<Agent, StartError> {
        let mut running = lock(&RUNNING);
        if let Some(agent) = running.as_ref() {
            return Ok(agent.clone());
        }
        registry().set_site_cap(self.site_cap);
        let uid = nix::unistd::geteuid().as_raw();
        let dir = match self.socket_dir {
            Some(d) => d,
            None => paths::socket_dir_with(|k| std::env::var(k).ok(), uid),
        };
        prepare_dir(&dir, uid)?;
        remove_stale_sockets(&dir);
        let pid = std::process::id();
        let path = dir.join(paths::socket_file_name(pid));
        let len = path.as_os_str().len();
        if len > paths::MAX_SOCKET_PATH {
            return Err(StartError::PathTooLong {
                path,
                len,
                max: paths::MAX_SOCKET_PATH,
            });
        }
        // A leftover of an earlier process with our pid.
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).map_err(|source| StartError::Bind {
            path: path.clone(),
            source,
        })?;
        if let Err(source) = std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))
        {
            let _ = std::fs::remove_file(&path);
            return Err(StartError::Bind { path, source });
        }
        let stop = Arc::new(AtomicBool::new(false));
        let samples = (self.history.as_millis() / self.sample_interval.as_millis().max(1)).max(1);
        let server = Server::new(
            listener,
            path.clone(),
            ServerConfig {
                sample_interval: self.sample_interval,
                history_len: samples.min(1 << 20) as usize,
                history_budget: self.history_memory,
            },
            stop.clone(),
        );
        // Hot paths stamp times from the agent thread's ticks; the first is now, so
        // anything that happens once `start` returns is stamped.
        crate::clock::tick();
        let thread = std::thread::Builder::new()
            .name("leaktop-agent".into())
            .spawn(move || server.run())
            .map_err(|e| {
                let _ = std::fs::remove_file(&path);
                StartError::Thread(e)
            })?;
        register_exit_cleanup(&path);
        let agent = Agent {
            inner: Arc::new(Running {
                path,
                stop,
                thread: Mutex::new(Some(thread)),
            }),
        };
        *running = Some(agent.clone());
        Ok(agent)
    }
}

/// Creates the directory 0700, or checks that an existing one is ours, a real directory
/// (not a symlink) and private. A directory that fails these checks is refused, never
/// reused or "fixed": someone else may have planted it.
fn prepare_dir(dir: &Path, uid: u32) -> Result<(), StartError> {
    match std::fs::DirBuilder::new().mode(0o700).create(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            // Parents missing (a custom LEAKTOP_SOCKET_DIR): create them, then ours 0700.
            if let Some(parent) = dir.parent() {
                std::fs::create_dir_all(parent).map_err(|source| StartError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
            }
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(dir)
                .or_else(|e| {
                    if e.kind() == std::io::ErrorKind::AlreadyExists {
                        Ok(())
                    } else {
                        Err(e)
                    }
                })
                .map_err(|source| StartError::CreateDir {
                    path: dir.to_path_buf(),
                    source,
                })?;
        }
        Err(source) => {
            return Err(StartError::CreateDir {
                path: dir.to_path_buf(),
                source,
            })
        }
    }
    let meta = std::fs::symlink_metadata(dir).map_err(|source| StartError::CreateDir {
        path: dir.to_path_buf(),
        source,
    })?;
    let unsafe_dir = |reason: String| StartError::UnsafeDir {
        path: dir.to_path_buf(),
        reason,
    };
    if meta.file_type().is_symlink() {
        return Err(unsafe_dir("it is a symbolic link".into()));
    }
    if !meta.is_dir() {
        return Err(unsafe_dir("it is not a directory".into()));
    }
    if meta.uid() != uid {
        return Err(unsafe_dir(format!(
            "it is owned by uid {}, not by us (uid {uid})",
            meta.uid()
        )));
    }
    if meta.mode() & 0o077 != 0 {
        return Err(unsafe_dir(format!(
            "its mode is {:04o}; it must not be accessible to group or others (0700)",
            meta.mode() & 0o7777
        )));
    }
    Ok(())
}

/// Removes `<pid>.sock` files of processes that no longer exist.
fn remove_stale_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().and_then(paths::pid_of_socket_name) else {
            continue;
        };
        let dead = !Path::new(&format!("/proc/{pid}")).exists();
        // A live pid may be a reused one whose socket nobody listens on any more.
        let orphaned = || {
            matches!(
                std::os::unix::net::UnixStream::connect(entry.path()),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused
            )
        };
        if dead || orphaned() {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes the socket when the process exits normally (return from `main`,
/// `std::process::exit`). A killed process leaves it; the next agent and `leaktop list`
/// recognise it as stale.
fn register_exit_cleanup(path: &Path) {
    let mut slot = lock(&EXIT_PATH);
    let first = slot.is_none();
    *slot = Some(path.to_path_buf());
    if first {
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe {
            libc::atexit(remove_socket_at_exit);
        }
    }
}

extern "C" fn remove_socket_at_exit() {
    // try_lock: never block process exit on a lock some other thread holds.
    if let Ok(slot) = EXIT_PATH.try_lock() {
        if let Some(path) = slot.as_ref() {
            let _ = std::fs::remove_file(path);
        }
    }
}
