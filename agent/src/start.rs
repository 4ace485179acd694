//! Starting the agent: socket directory checks, stale socket cleanup, bind, and the one
//! `leaktop-agent` thread. Errors are returned, never panicked, and never stop the host.

use std::io::Write;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::fs::{DirBuilderExt, MetadataExt};
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::paths::{self, SocketName};
use crate::registry::{lock, registry, DEFAULT_SITE_CAP};
use crate::server::{Limits, Server, ServerConfig, Shared, MAX_SAMPLE_INTERVAL};
use crate::{clock, forked};

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
    /// The agent of this process stopped serving after an internal error; it is not
    /// restarted by itself ([`Agent::shutdown`] first, then `start` again, if you must).
    #[error("the leaktop agent of this process stopped: {reason}")]
    Stopped { reason: String },
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
    /// The process that started it: in a forked child (another pid) the agent's thread
    /// does not exist and its socket is the parent's.
    pid: u32,
    shared: Arc<Shared>,
    /// Write end of the pipe that ends the thread's wait at once.
    wake: Option<OwnedFd>,
    wake_slot: Option<forked::Slot>,
    thread: Mutex<Option<std::thread::JoinHandle<()>>>,
}

impl Running {
    fn forked_away(&self) -> bool {
        self.pid != std::process::id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if self.forked_away() {
            // The descriptors were closed by the fork handler and their numbers may be
            // another's now; the thread handle names a thread of the parent.
            std::mem::forget(self.wake.take());
            std::mem::forget(lock(&self.thread).take());
        } else if let Some(slot) = self.wake_slot.take() {
            forked::unregister(slot);
        }
    }
}

impl Agent {
    /// The socket clients connect to.
    pub fn socket_path(&self) -> &Path {
        &self.inner.path
    }

    /// Why the agent stopped serving by itself, if it did: a panic on its thread (a bug,
    /// or a panicking `metrics` recorder) is caught, and from then on every client is told
    /// this reason. The host program is not affected.
    pub fn error(&self) -> Option<String> {
        self.inner.shared.failed.get().cloned()
    }

    /// Stops the agent thread and removes the socket. Later [`start`] calls start anew.
    ///
    /// Never blocks for long: the thread is woken at once, and it is waited for only
    /// outside async code (inside a tokio runtime it ends by itself within a moment, so a
    /// runtime worker never waits on it). In a forked child, where the agent is the
    /// parent's, it only forgets it: the parent's socket stays.
    pub fn shutdown(&self) {
        let mut running = lock(&RUNNING);
        let ours = running
            .as_ref()
            .is_some_and(|a| Arc::ptr_eq(&a.inner, &self.inner));
        if self.inner.forked_away() {
            if ours {
                std::mem::forget(running.take());
            }
            return;
        }
        self.inner.shared.stop.store(true, Ordering::Relaxed);
        if let Some(wake) = &self.inner.wake {
            let _ = nix::unistd::write(wake, &[1]);
        }
        if let Some(thread) = lock(&self.inner.thread).take() {
            if tokio::runtime::Handle::try_current().is_err() {
                let _ = thread.join();
            }
        }
        let _ = std::fs::remove_file(&self.inner.path);
        forget_exit_cleanup(&self.inner.path);
        if ours {
            *running = None;
        }
    }
}

static RUNNING: Mutex<Option<Agent>> = Mutex::new(None);
static EXIT_PATH: Mutex<Option<PathBuf>> = Mutex::new(None);
/// The process that registered `EXIT_PATH` (a forked child must not remove it).
static EXIT_PID: AtomicU32 = AtomicU32::new(0);

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
///         let name = agent.socket_path().file_name().unwrap().to_string_lossy();
///         assert!(name.starts_with(&format!("{}-", std::process::id())));
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
    client_timeout: Duration,
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
            client_timeout: crate::server::STALL_TIMEOUT,
        }
    }

    /// Directory for the socket (default: `$LEAKTOP_SOCKET_DIR`, else
    /// `$XDG_RUNTIME_DIR/leaktop` if that directory exists and is ours, else
    /// `/tmp/leaktop-<uid>`).
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

    /// How often per-site history is sampled (default 1 s; 10 ms ..= 1 day).
    pub fn sample_interval(mut self, every: Duration) -> Builder {
        self.sample_interval = every.clamp(Duration::from_millis(10), MAX_SAMPLE_INTERVAL);
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

    /// How long a connected client may leave the agent's replies unread before it is
    /// dropped (default 30 s; at least 100 ms), so clients that stopped reading cannot
    /// hold the agent's client slots.
    pub fn client_timeout(mut self, timeout: Duration) -> Builder {
        self.client_timeout = timeout.max(Duration::from_millis(100));
        self
    }

    /// Starts the agent, or returns the one already running.
    ///
    /// In a child forked after `start`, the parent's agent is not this process's: this
    /// starts the child's own (its own thread and socket), and the parent's socket stays.
    pub fn start(self) -> Result<Agent, StartError> {
        forked::install();
        let mut running = lock(&RUNNING);
        match running.as_ref() {
            Some(agent) if agent.inner.forked_away() => std::mem::forget(running.take()),
            Some(agent) => {
                return match agent.error() {
                    Some(reason) => Err(StartError::Stopped { reason }),
                    None => Ok(agent.clone()),
                }
            }
            None => {}
        }
        registry().set_site_cap(self.site_cap);
        let uid = nix::unistd::geteuid().as_raw();
        let dir = match self.socket_dir {
            Some(d) => d,
            None => {
                let (dir, note) =
                    paths::socket_dir_checked(|k| std::env::var(k).ok(), uid, paths::dir_owner);
                if let Some(note) = note {
                    // One line, never a panic (stderr may be closed or a broken pipe).
                    let _ = writeln!(std::io::stderr(), "leaktop-agent: {note}");
                }
                dir
            }
        };
        prepare_dir(&dir, uid)?;
        remove_stale_sockets(&dir);
        let path = dir.join(SocketName::own().file_name());
        let len = path.as_os_str().len();
        if len > paths::MAX_SOCKET_PATH {
            return Err(StartError::PathTooLong {
                path,
                len,
                max: paths::MAX_SOCKET_PATH,
            });
        }
        // Our name is ours alone (pid, pid namespace and start time): a file there is a
        // leftover of an agent of this very process.
        let _ = std::fs::remove_file(&path);
        let listener = bind_private(&path).map_err(|source| StartError::Bind {
            path: path.clone(),
            source,
        })?;
        let (wake_rx, wake_tx) = wake_pipe().map_err(|source| {
            let _ = std::fs::remove_file(&path);
            StartError::Bind {
                path: path.clone(),
                source,
            }
        })?;
        let shared = Arc::new(Shared::default());
        let samples = (self.history.as_millis() / self.sample_interval.as_millis().max(1)).max(1);
        let server = Server::new(
            listener,
            wake_rx,
            ServerConfig {
                sample_interval: self.sample_interval,
                history_len: samples.min(1 << 20) as usize,
                history_budget: self.history_memory,
                limits: Limits {
                    stall_timeout: self.client_timeout,
                    ..Limits::default()
                },
            },
            shared.clone(),
        );
        // Hot paths stamp times from the agent thread's ticks; the first is now, so
        // anything that happens once `start` returns is stamped.
        clock::tick();
        let thread = std::thread::Builder::new()
            .name("leaktop-agent".into())
            .spawn(move || server.run())
            .map_err(|e| {
                clock::stop_ticking();
                let _ = std::fs::remove_file(&path);
                StartError::Thread(e)
            })?;
        register_exit_cleanup(&path);
        let agent = Agent {
            inner: Arc::new(Running {
                path,
                pid: std::process::id(),
                shared,
                wake_slot: forked::register(wake_tx.as_raw_fd()),
                wake: Some(wake_tx),
                thread: Mutex::new(Some(thread)),
            }),
        };
        *running = Some(agent.clone());
        Ok(agent)
    }
}

/// Binds and listens on `path` with the socket file 0600 from its first moment: the mode
/// is set on the socket before `bind` (Linux creates the file with the socket's mode, less
/// the umask), so no path is ever followed to set it (a `chmod` by path after `bind`
/// would follow a symlink swapped in between).
fn bind_private(path: &Path) -> std::io::Result<UnixListener> {
    use nix::sys::socket::{bind, listen, socket, AddressFamily, Backlog, SockFlag, SockType};
    let fd = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    nix::sys::stat::fchmod(
        fd.as_raw_fd(),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )?;
    bind(fd.as_raw_fd(), &nix::sys::socket::UnixAddr::new(path)?)?;
    listen(&fd, Backlog::new(128).unwrap_or(Backlog::MAXCONN))?;
    Ok(UnixListener::from(fd))
}

/// A non-blocking, close-on-exec pipe: (read end, write end).
fn wake_pipe() -> std::io::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::OFlag;
    Ok(nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK)?)
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

/// Removes the sockets in `dir` that nobody listens on any more. A socket is judged by a
/// connection attempt that cannot block: refused means no listener (whatever pid
/// namespace made it), anything else (accepted, or a full backlog of a frozen process)
/// means alive. Sockets of this pid namespace whose process is gone (or is another
/// process now, by its start time) are removed without a probe. Names are unique across
/// pid namespaces and pid reuse, so a name judged stale cannot have been taken since.
fn remove_stale_sockets(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let own = SocketName::own();
    // Our /proc shows our pid namespace (not a host's /proc left mounted in a container).
    let proc_is_ours = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse::<u32>().ok())
        == Some(own.pid);
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().and_then(SocketName::parse) else {
            continue;
        };
        let gone = proc_is_ours
            && own.pid_ns.is_some()
            && name.pid_ns == own.pid_ns
            && SocketName::of_pid(name.pid).is_none_or(|now| now.start != name.start);
        if gone || paths::nobody_listens(&entry.path()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Removes the socket when the process exits normally (return from `main`,
/// `std::process::exit`). A killed process leaves it; the next agent and `leaktop list`
/// recognise it as stale. Only in the process that started the agent: a forked child
/// exiting leaves its parent's socket alone.
fn register_exit_cleanup(path: &Path) {
    let mut slot = lock(&EXIT_PATH);
    let first = slot.is_none() && EXIT_PID.load(Ordering::SeqCst) == 0;
    *slot = Some(path.to_path_buf());
    EXIT_PID.store(std::process::id(), Ordering::SeqCst);
    if first {
        // SAFETY: registering a plain extern "C" function with no captured state.
        unsafe {
            libc::atexit(remove_socket_at_exit);
        }
    }
}

/// The agent at `path` was shut down: nothing to remove at exit.
fn forget_exit_cleanup(path: &Path) {
    let mut slot = lock(&EXIT_PATH);
    if slot.as_deref() == Some(path) {
        *slot = None;
    }
}

extern "C" fn remove_socket_at_exit() {
    if EXIT_PID.load(Ordering::SeqCst) != std::process::id() {
        return;
    }
    // try_lock: never block process exit on a lock some other thread holds.
    if let Ok(slot) = EXIT_PATH.try_lock() {
        if let Some(path) = slot.as_ref() {
            let _ = std::fs::remove_file(path);
        }
    }
}
