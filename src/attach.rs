//! Finding agents and connecting to them: socket discovery, the handshake, and the errors a
//! user can act on (no agent, permission denied, version mismatch, pid reuse, …).

#![cfg_attr(not(test), warn(clippy::indexing_slicing))]
// Data from outside (agent bytes, recordings, /proc) must never panic leaktop.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use leaktop_agent::paths::{self, SocketName};

use crate::proc;
use leaktop_agent::wire::{self, AgentHello, AgentMsg, ClientMsg};

/// How long the handshake may take before the agent counts as not answering.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(3);

#[derive(Debug, thiserror::Error)]
pub enum AttachError {
    #[error("process {pid} does not exist (check the pid with `ps -p {pid}` or `leaktop list`)")]
    NoProcess { pid: u32 },
    #[error("process {pid} has no leaktop agent socket at {}: link leaktop-agent and call leaktop_agent::start() (or set LEAKTOP_SOCKET_DIR to where its socket is)", display_paths(.looked))]
    NoAgent { pid: u32, looked: Vec<PathBuf> },
    #[error("permission denied on {path} (owned by uid {owner}, you are uid {me}): run leaktop as uid {owner} or root")]
    PermissionDenied { path: PathBuf, owner: u32, me: u32 },
    #[error("the agent of process {pid} refused the connection: {reason}")]
    Refused { pid: u32, reason: String },
    #[error("the agent of process {pid} is not serving: {reason} (the process itself runs on; restart it to attach again)")]
    Stopped { pid: u32, reason: String },
    #[error("protocol version mismatch with process {pid}: leaktop speaks {ours_min}..={ours_max}, its agent {agent_version} speaks {theirs}; use a leaktop built with a matching leaktop-agent")]
    VersionMismatch {
        pid: u32,
        ours_min: u32,
        ours_max: u32,
        theirs: u32,
        agent_version: String,
    },
    #[error("process {pid} exited before its agent answered ({path})")]
    Exited { pid: u32, path: PathBuf },
    #[error("{path} is not a leaktop agent socket ({detail})")]
    NotAnAgent { path: PathBuf, detail: String },
    #[error("stale socket {path}: nothing listens on it (the process that made it has exited{})", if *.pid_alive { "; its pid was reused by another process" } else { "" })]
    Stale { path: PathBuf, pid_alive: bool },
    #[error("socket {path} belongs to an earlier process with pid {pid} (pid reused): it is not the process running now")]
    PidReused { pid: u32, path: PathBuf },
    #[error("socket {path} is served by process {peer}, not by process {pid}: it is not that process's agent (remove the file if it is a leftover, then restart process {pid})")]
    WrongPeer { pid: u32, peer: u32, path: PathBuf },
    #[error("process {pid} runs as uid {uid} and you are uid {me}: its agent answers only uid {uid} or root, and its socket is not visible to you; run leaktop as uid {uid} or as root")]
    OtherUser { pid: u32, uid: u32, me: u32 },
    #[error("the agent at {path} did not answer within {}s (is the process stopped, e.g. under a debugger?)", HANDSHAKE_TIMEOUT.as_secs())]
    Timeout { path: PathBuf },
    #[error("connection to {path} failed: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

fn our_uid() -> u32 {
    nix::unistd::geteuid().as_raw()
}

/// The effective uid of `pid`, from `/proc/<pid>/status`.
pub fn process_uid(pid: u32) -> Option<u32> {
    proc::uid(pid)
}

/// How long process `pid` has run, from its start time and the system's uptime.
pub fn process_uptime_ms(pid: u32) -> Option<u64> {
    let start = SocketName::of_pid(pid)?.start?;
    let uptime: f64 = std::fs::read_to_string("/proc/uptime")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()?;
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok()??;
    let hz = u64::try_from(hz).ok().filter(|h| *h > 0)?;
    Some(((uptime * 1000.0) as u64).saturating_sub(start * 1000 / hz))
}

/// The pid a socket path is named for.
fn pid_of_path(path: &Path) -> Option<u32> {
    path.file_name()
        .and_then(|n| n.to_str())
        .and_then(paths::pid_of_socket_name)
}

/// True when `pid` is gone or goes within a moment. A dying process closes its sockets
/// before /proc shows it as a zombie, so a connection closed without a word is given a
/// short grace to be explained by the exit (regression: "not a leaktop agent socket" for a
/// target killed during the handshake).
fn gone_soon(pid: u32) -> bool {
    let until = Instant::now() + Duration::from_millis(250);
    loop {
        if proc::gone(pid) {
            return true;
        }
        if Instant::now() >= until {
            return false;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Directories where `pid`'s socket may be, most specific first: the target's own
/// environment (it decided where to bind), seen through its root when it has another one
/// (a container whose socket directory the host does not share), ours, and the per-uid
/// fallback.
pub fn candidate_dirs(pid: u32) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    let target_uid = process_uid(pid);
    if let Some(uid) = target_uid {
        let (theirs, _) = paths::socket_dir_checked(|k| proc::env(pid, k), uid, paths::dir_owner);
        if other_root(pid) {
            if let Ok(rel) = theirs.strip_prefix("/") {
                dirs.push(PathBuf::from(format!("/proc/{pid}/root")).join(rel));
            }
        }
        dirs.push(theirs);
    }
    dirs.push(paths::socket_dir_with(|k| std::env::var(k).ok(), our_uid()));
    if let Some(uid) = target_uid {
        dirs.push(paths::fallback_dir(uid));
        dirs.push(PathBuf::from(format!("/run/user/{uid}/leaktop")));
    }
    dirs.extend(bound_socket_dirs());
    let mut seen = std::collections::HashSet::new();
    dirs.retain(|d| seen.insert(d.clone()));
    dirs
}

/// True when `pid` sees other mounts than we do (a container): its paths are reached
/// through `/proc/<pid>/root` then.
fn other_root(pid: u32) -> bool {
    let ours = std::fs::metadata("/proc/self/ns/mnt");
    let theirs = std::fs::metadata(format!("/proc/{pid}/ns/mnt"));
    match (ours, theirs) {
        (Ok(a), Ok(b)) => (a.dev(), a.ino()) != (b.dev(), b.ino()),
        _ => false,
    }
}

/// Directories of bound Unix sockets named `<digits>.sock` under a `leaktop` directory,
/// from `/proc/net/unix`: finds agents whose directory was set in code.
fn bound_socket_dirs() -> Vec<PathBuf> {
    proc::bound_unix_sockets()
        .iter()
        .filter(|p| p.contains("leaktop"))
        .filter_map(|p| {
            let path = Path::new(p);
            let name = path.file_name()?.to_str()?;
            paths::pid_of_socket_name(name)?;
            path.parent().map(Path::to_path_buf)
        })
        .collect()
}

/// One socket found by [`discover`].
#[derive(Debug, Clone)]
pub struct Found {
    /// The process as we see it (from a container's socket, its pid on this side); `None`
    /// when its pid namespace is not visible from here.
    pub pid: Option<u32>,
    /// What the socket's name says.
    pub name: SocketName,
    pub path: PathBuf,
    /// False when the process that bound it is gone (or its pid was reused).
    pub alive: bool,
}

/// Every agent socket in the known directories.
pub fn discover() -> Vec<Found> {
    let mut dirs = vec![paths::socket_dir_with(|k| std::env::var(k).ok(), our_uid())];
    dirs.push(paths::fallback_dir(our_uid()));
    dirs.extend(bound_socket_dirs());
    let own_ns = paths::pid_ns_inode(Path::new("/proc/self"));
    let mut seen = std::collections::HashSet::new();
    let mut found = Vec::new();
    for dir in dirs {
        if !seen.insert(dir.clone()) {
            continue;
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().and_then(SocketName::parse) else {
                continue;
            };
            let pid = match name.pid_ns {
                Some(ns) if Some(ns) != own_ns => pid_in_our_namespace(&name),
                _ => Some(name.pid),
            };
            let alive = pid
                .and_then(SocketName::of_pid)
                .is_some_and(|now| name.start.is_none() || now.start == name.start);
            found.push(Found {
                pid,
                name,
                path: entry.path(),
                alive: alive || (pid.is_none() && !paths::nobody_listens(&entry.path())),
            });
        }
    }
    found.sort_by_key(|f| (f.pid.is_none(), f.pid, f.name.pid));
    found
}

/// The pid, as we see it, of the process a socket name of another pid namespace stands
/// for: the one whose innermost pid, start time and pid namespace are the name's.
fn pid_in_our_namespace(name: &SocketName) -> Option<u32> {
    let entries = std::fs::read_dir("/proc").ok()?;
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
        .find(|pid| SocketName::of_pid(*pid).is_some_and(|n| n.matches(name) && n.pid_ns.is_some()))
}

/// Finds the socket of `pid`: in each candidate directory, a name whose pid, pid namespace
/// and start time are that process's (as it sees them: a process in a container names its
/// socket with its pid there), or the old `<pid>.sock`.
pub fn socket_of(pid: u32) -> Result<PathBuf, AttachError> {
    let Some(target) = SocketName::of_pid(pid) else {
        return Err(AttachError::NoProcess { pid });
    };
    let dirs = candidate_dirs(pid);
    // A directory we may not look into is the answer only if no other has the socket.
    let mut denied = None;
    for dir in &dirs {
        match socket_in(dir, pid, &target) {
            Ok(Some(path)) => return Ok(path),
            Ok(None) => {}
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                if denied.is_none() {
                    let owner = std::fs::metadata(dir).map(|m| m.uid()).unwrap_or(0);
                    denied = Some(AttachError::PermissionDenied {
                        path: dir.clone(),
                        owner,
                        me: our_uid(),
                    });
                }
            }
            Err(_) => {}
        }
    }
    // Not found: if the process is someone else's, that is the reason (its environment,
    // which names its socket directory, is not readable to us either).
    let me = our_uid();
    let name = paths::socket_file_name(pid);
    match (process_uid(pid), denied) {
        (Some(uid), _) if uid != me && me != 0 => Err(AttachError::OtherUser { pid, uid, me }),
        (_, Some(denied)) => Err(denied),
        _ => Err(AttachError::NoAgent {
            pid,
            looked: dirs.iter().take(2).map(|d| d.join(&name)).collect(),
        }),
    }
}

/// The socket of the process `target` (pid `pid` here) in `dir`, if there is one: the
/// current name first, else an old-style `<pid>.sock` (of an older agent). A directory
/// we may not list is an error; one that does not exist is not.
fn socket_in(dir: &Path, pid: u32, target: &SocketName) -> std::io::Result<Option<PathBuf>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let mut legacy = None;
    for entry in entries.flatten() {
        let Some(name) = entry.file_name().to_str().and_then(SocketName::parse) else {
            continue;
        };
        if name.pid_ns.is_some() {
            if target.matches(&name) {
                return Ok(Some(entry.path()));
            }
        } else if name.pid == pid || name.pid == target.pid {
            legacy = Some(entry.path());
        }
    }
    Ok(legacy)
}

/// A connection to an agent after a successful handshake.
pub struct Connection {
    stream: UnixStream,
    pub hello: AgentHello,
    pub path: PathBuf,
}

impl std::fmt::Debug for Connection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Connection")
            .field("path", &self.path)
            .field("pid", &self.hello.pid)
            .finish()
    }
}

impl Connection {
    /// Connects to the agent of `pid` and checks it is that process (not a reused pid).
    pub fn attach(pid: u32) -> Result<Connection, AttachError> {
        let path = socket_of(pid)?;
        let conn = Connection::open_as(&path, Some(pid))?;
        conn.verify(pid)?;
        Ok(conn)
    }

    /// Checks that this connection is the agent of the process running as `pid` now: the
    /// hello names that pid and its start time (a reused pid has another), and the kernel
    /// says the listening end belongs to that process (`SO_PEERCRED`), so neither a
    /// leftover socket nor a program squatting on its name passes for it.
    pub fn verify(&self, pid: u32) -> Result<(), AttachError> {
        let path = self.path.clone();
        // A process in a container says its pid there.
        let inner = SocketName::of_pid(pid).map_or(pid, |n| n.pid);
        if self.hello.pid != pid && self.hello.pid != inner {
            return Err(AttachError::PidReused { pid, path });
        }
        if let Some(now) = leaktop_agent::procinfo::start_time_ticks(pid) {
            if self.hello.start_time_ticks != 0 && self.hello.start_time_ticks != now {
                return Err(AttachError::PidReused { pid, path });
            }
        }
        match self.peer_pid() {
            Some(peer) if peer != pid => Err(AttachError::WrongPeer { pid, peer, path }),
            _ => Ok(()),
        }
    }

    /// The process at the other end, as the kernel saw it bind; `None` when unknown (e.g.
    /// in another pid namespace).
    pub fn peer_pid(&self) -> Option<u32> {
        use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
        let cred = getsockopt(&self.stream, PeerCredentials).ok()?;
        u32::try_from(cred.pid()).ok().filter(|p| *p != 0)
    }

    /// Connects to the socket at `path` and performs the handshake.
    pub fn open(path: &Path) -> Result<Connection, AttachError> {
        Self::open_as(path, pid_of_path(path))
    }

    /// Like [`Connection::open`], for the socket of process `pid` as we see it (a process
    /// in a container names its socket with its pid there): errors name this pid.
    pub fn open_as(path: &Path, pid: Option<u32>) -> Result<Connection, AttachError> {
        let io = |source: std::io::Error| AttachError::Io {
            path: path.to_path_buf(),
            source,
        };
        let stream = connect(path, pid)?;
        stream
            .set_read_timeout(Some(HANDSHAKE_TIMEOUT))
            .map_err(io)?;
        let mut conn = Connection {
            stream,
            hello: AgentHello {
                protocol: 0,
                agent_version: String::new(),
                pid: 0,
                start_time_ticks: 0,
                exe: String::new(),
                build_id: Vec::new(),
                uid: 0,
                origin_unix_ms: 0,
                now_ms: 0,
                sample_interval_ms: 0,
                history_len: 0,
                site_cap: 0,
            },
            path: path.to_path_buf(),
        };
        conn.hello = conn.handshake(pid)?;
        conn.stream.set_read_timeout(None).map_err(io)?;
        Ok(conn)
    }

    /// Says hello and reads the agent's.
    fn handshake(&mut self, pid: Option<u32>) -> Result<AgentHello, AttachError> {
        let path = self.path.clone();
        // An agent that refuses us (another uid, too many clients) says why at once and
        // closes: our hello may then meet a closed socket, but the reason is still there
        // to read, so a failed send is reported only if no answer follows.
        let sent = self.send(&ClientMsg::Hello {
            protocol: wire::PROTOCOL_VERSION,
            client: format!("leaktop {}", env!("CARGO_PKG_VERSION")),
        });
        // One deadline for the whole hello: a peer that dribbles bytes cannot hold us.
        let mut until = Deadline {
            stream: &self.stream,
            until: Instant::now() + HANDSHAKE_TIMEOUT,
        };
        let first = recv_from(&mut until, wire::MAX_CLIENT_FRAME);
        if let Err(e) = sent {
            if !matches!(first, Ok(AgentMsg::Refused { .. })) {
                return Err(e);
            }
        }
        let first = first.map_err(|e| handshake_error(&path, pid, e))?;
        accept_hello(&path, pid, first)
    }
    /// Sends one request.
    pub fn send(&mut self, msg: &ClientMsg) -> Result<(), AttachError> {
        let frame = wire::encode_frame(msg).map_err(|e| AttachError::Io {
            path: self.path.clone(),
            source: std::io::Error::other(e.to_string()),
        })?;
        self.stream
            .write_all(&frame)
            .map_err(|source| AttachError::Io {
                path: self.path.clone(),
                source,
            })
    }

    fn recv_raw(&mut self) -> Result<AgentMsg, RecvError> {
        recv_from(&mut self.stream, wire::MAX_FRAME)
    }

    /// Receives the next message, waiting at most `timeout` (None: forever).
    pub fn recv(&mut self, timeout: Option<Duration>) -> Result<AgentMsg, RecvError> {
        let _ = self.stream.set_read_timeout(timeout);
        self.recv_raw()
    }

    /// Splits into a reader and a writer half (for a reader thread).
    pub fn split(self) -> std::io::Result<(UnixStream, UnixStream)> {
        let reader = self.stream.try_clone()?;
        Ok((reader, self.stream))
    }
}

/// Connects to the socket at `path`; a refused connection or a denied path says why.
fn connect(path: &Path, pid: Option<u32>) -> Result<UnixStream, AttachError> {
    match UnixStream::connect(path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            let pid_alive = pid.is_some_and(proc::exists);
            Err(AttachError::Stale {
                path: path.to_path_buf(),
                pid_alive,
            })
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            let owner = std::fs::metadata(path).map(|m| m.uid()).unwrap_or(0);
            Err(AttachError::PermissionDenied {
                path: path.to_path_buf(),
                owner,
                me: our_uid(),
            })
        }
        Err(source) => Err(AttachError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Why no hello came.
fn handshake_error(path: &Path, pid: Option<u32>, e: RecvError) -> AttachError {
    match e {
        RecvError::Timeout => AttachError::Timeout {
            path: path.to_path_buf(),
        },
        RecvError::Closed => match pid.filter(|p| gone_soon(*p)) {
            Some(pid) => AttachError::Exited {
                pid,
                path: path.to_path_buf(),
            },
            None => AttachError::NotAnAgent {
                path: path.to_path_buf(),
                detail: "it closed the connection without a hello".into(),
            },
        },
        RecvError::Wire(e) => AttachError::NotAnAgent {
            path: path.to_path_buf(),
            detail: e.to_string(),
        },
    }
}

/// The agent's first message: a hello of a protocol we speak, or why not.
fn accept_hello(path: &Path, pid: Option<u32>, first: AgentMsg) -> Result<AgentHello, AttachError> {
    match first {
        AgentMsg::Hello(hello) => {
            if hello.protocol < wire::MIN_PROTOCOL_VERSION
                || hello.protocol > wire::PROTOCOL_VERSION
            {
                return Err(AttachError::VersionMismatch {
                    pid: hello.pid,
                    ours_min: wire::MIN_PROTOCOL_VERSION,
                    ours_max: wire::PROTOCOL_VERSION,
                    theirs: hello.protocol,
                    agent_version: hello.agent_version,
                });
            }
            Ok(hello)
        }
        AgentMsg::Refused { reason } => {
            let pid = pid.unwrap_or(0);
            if reason.starts_with(wire::AGENT_STOPPED) {
                return Err(AttachError::Stopped { pid, reason });
            }
            Err(AttachError::Refused { pid, reason })
        }
        other => Err(AttachError::NotAnAgent {
            path: path.to_path_buf(),
            detail: format!("it answered {other:?} instead of a hello"),
        }),
    }
}

/// Reads one frame (at most `max` bytes) and decodes it.
fn recv_from<R: Read>(r: &mut R, max: usize) -> Result<AgentMsg, RecvError> {
    match wire::read_frame(r, max) {
        Ok(Some(payload)) => wire::decode(&payload).map_err(RecvError::Wire),
        Ok(None) => Err(RecvError::Closed),
        Err(wire::WireError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            Err(RecvError::Timeout)
        }
        Err(wire::WireError::Io(e))
            if matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe
            ) =>
        {
            Err(RecvError::Closed)
        }
        Err(e) => Err(RecvError::Wire(e)),
    }
}

/// A stream read under one deadline for all reads.
struct Deadline<'a> {
    stream: &'a UnixStream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::ErrorKind::TimedOut.into());
        }
        self.stream.set_read_timeout(Some(left))?;
        (&mut &*self.stream).read(buf)
    }
}

/// Why a receive ended.
#[derive(Debug, thiserror::Error)]
pub enum RecvError {
    #[error("timed out")]
    Timeout,
    #[error("the agent closed the connection (the process exited?)")]
    Closed,
    #[error(transparent)]
    Wire(wire::WireError),
}
