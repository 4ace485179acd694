//! Where agent sockets live and what they are called. Shared by the agent (which binds)
//! and `leaktop` (which discovers), so both sides agree by construction.
//!
//! Directory: `$LEAKTOP_SOCKET_DIR`, else `$XDG_RUNTIME_DIR/leaktop` (when that variable
//! names an existing directory owned by the process's effective uid: `sudo -E` hands
//! another user's), else `/tmp/leaktop-<uid>`.
//!
//! Name: `<pid>-<pid-ns>-<start>.sock`: the pid as the process sees it, the inode of its
//! pid namespace and its start time (field 22 of `/proc/<pid>/stat`). Processes with the
//! same pid in different pid namespaces (pid 1 of every container) sharing one directory
//! get different names, and so does a later process that reuses a pid, so no agent ever
//! takes another's name. Agents of earlier versions bound `<pid>.sock`; `leaktop` still
//! finds those.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Environment variable that overrides the socket directory.
pub const SOCKET_DIR_ENV: &str = "LEAKTOP_SOCKET_DIR";

/// Socket directory for a process with this environment lookup and effective uid,
/// without looking at the file system (see [`socket_dir_checked`]).
pub fn socket_dir_with(env: impl Fn(&str) -> Option<String>, uid: u32) -> PathBuf {
    socket_dir_checked(env, uid, |_| Ok(uid)).0
}

/// Socket directory for a process with this environment lookup and effective uid, and
/// why `$XDG_RUNTIME_DIR` was passed over, if it was. `owner` tells the uid owning a
/// directory (`std::fs::metadata`); an `XDG_RUNTIME_DIR` that does not exist or belongs
/// to another uid (`sudo -E` keeps the invoking user's) is not used.
pub fn socket_dir_checked(
    env: impl Fn(&str) -> Option<String>,
    uid: u32,
    owner: impl Fn(&Path) -> std::io::Result<u32>,
) -> (PathBuf, Option<String>) {
    if let Some(dir) = env(SOCKET_DIR_ENV).filter(|d| !d.is_empty()) {
        return (PathBuf::from(dir), None);
    }
    let fallback = fallback_dir(uid);
    let Some(xdg) = env("XDG_RUNTIME_DIR").filter(|d| d.starts_with('/')) else {
        return (fallback, None);
    };
    let why = match owner(Path::new(&xdg)) {
        Ok(o) if o == uid => return (Path::new(&xdg).join("leaktop"), None),
        Ok(o) => format!("it is owned by uid {o}, not by uid {uid} (sudo -E?)"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => "it does not exist".to_string(),
        Err(e) => format!("cannot stat it: {e}"),
    };
    let note = format!(
        "ignoring XDG_RUNTIME_DIR={xdg}: {why}; using {}",
        fallback.display()
    );
    (fallback, Some(note))
}

/// The owner of `dir` (following symlinks, as `XDG_RUNTIME_DIR` may be one).
pub fn dir_owner(dir: &Path) -> std::io::Result<u32> {
    std::fs::metadata(dir).map(|m| m.uid())
}

/// The directory used when neither variable is set.
pub fn fallback_dir(uid: u32) -> PathBuf {
    PathBuf::from(format!("/tmp/leaktop-{uid}"))
}

/// What a socket's name says about the process that bound it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SocketName {
    /// The pid as that process sees it (in its own pid namespace).
    pub pid: u32,
    /// Inode of its pid namespace; `None` in the old `<pid>.sock` names.
    pub pid_ns: Option<u64>,
    /// Its start time, clock ticks after boot; `None` in the old names.
    pub start: Option<u64>,
}

impl SocketName {
    /// The old name, `<pid>.sock`.
    pub fn legacy(pid: u32) -> SocketName {
        SocketName {
            pid,
            pid_ns: None,
            start: None,
        }
    }

    /// The file name: `<pid>-<pid-ns>-<start>.sock`, or `<pid>.sock` when either part is
    /// unknown.
    pub fn file_name(&self) -> String {
        match (self.pid_ns, self.start) {
            (Some(ns), Some(start)) => format!("{}-{ns}-{start}.sock", self.pid),
            _ => format!("{}.sock", self.pid),
        }
    }

    /// Parses a file name made by [`SocketName::file_name`].
    pub fn parse(name: &str) -> Option<SocketName> {
        let stem = name.strip_suffix(".sock")?;
        let mut parts = stem.split('-');
        let pid = digits(parts.next()?)?;
        match (parts.next(), parts.next(), parts.next()) {
            (None, _, _) => Some(SocketName::legacy(u32::try_from(pid).ok()?)),
            (Some(ns), Some(start), None) => Some(SocketName {
                pid: u32::try_from(pid).ok()?,
                pid_ns: Some(digits(ns)?),
                start: Some(digits(start)?),
            }),
            _ => None,
        }
    }

    /// This process's name, read from `/proc/self`. The parts that cannot be read (no
    /// /proc) are left out, which gives the old name.
    pub fn own() -> SocketName {
        SocketName {
            pid: std::process::id(),
            pid_ns: pid_ns_inode(Path::new("/proc/self")),
            start: std::fs::read_to_string("/proc/self/stat")
                .ok()
                .and_then(|s| parse_start_time(&s)),
        }
    }

    /// The name the agent of process `pid` (a pid as *we* see it) binds: its pid in its
    /// own namespace (`NSpid` of its status), its namespace and start time. `None` when
    /// there is no such process. The namespace is `None` when we may not read it (another
    /// user's process); [`SocketName::matches`] then compares the rest.
    pub fn of_pid(pid: u32) -> Option<SocketName> {
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let stat = std::fs::read_to_string(proc_dir.join("stat")).ok()?;
        let inner_pid = std::fs::read_to_string(proc_dir.join("status"))
            .ok()
            .and_then(|s| innermost_ns_pid(&s))
            .unwrap_or(pid);
        Some(SocketName {
            pid: inner_pid,
            pid_ns: pid_ns_inode(&proc_dir),
            start: parse_start_time(&stat),
        })
    }

    /// True when a socket named `found` may be the agent of the process named `self`:
    /// the pids agree, and so does every other part both names know.
    pub fn matches(&self, found: &SocketName) -> bool {
        let agree = |a: Option<u64>, b: Option<u64>| a.is_none() || b.is_none() || a == b;
        self.pid == found.pid && agree(self.pid_ns, found.pid_ns) && agree(self.start, found.start)
    }
}

fn digits(s: &str) -> Option<u64> {
    if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

/// The inode of the pid namespace of the process whose /proc directory is `proc_dir`.
pub fn pid_ns_inode(proc_dir: &Path) -> Option<u64> {
    std::fs::metadata(proc_dir.join("ns/pid"))
        .ok()
        .map(|m| m.ino())
}

/// The pid in the innermost pid namespace, from the `NSpid:` line of a status file.
pub fn innermost_ns_pid(status: &str) -> Option<u32> {
    let line = status.lines().find(|l| l.starts_with("NSpid:"))?;
    line.split_whitespace().last()?.parse().ok()
}

/// Parses `starttime` (field 22) out of a `/proc/<pid>/stat` line. The command name
/// (field 2) may hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    let rest = stat.get(stat.rfind(')')? + 1..)?;
    // After ")" come fields 3.. ; starttime is field 22, so index 19 here.
    rest.split_whitespace().nth(19)?.parse().ok()
}

/// True when a connection to the socket at `path` is refused: nothing listens on it (its
/// process is gone, whatever pid namespace made it). Never blocks: a frozen process whose
/// backlog is full answers EAGAIN, which counts as alive, like any other failure.
#[cfg(feature = "runtime")]
pub fn nobody_listens(path: &Path) -> bool {
    use nix::sys::socket::{connect, socket, AddressFamily, SockFlag, SockType, UnixAddr};
    use std::os::fd::AsRawFd;
    let Ok(fd) = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::SOCK_CLOEXEC | SockFlag::SOCK_NONBLOCK,
        None,
    ) else {
        return false;
    };
    let Ok(addr) = UnixAddr::new(path) else {
        return false;
    };
    matches!(
        connect(fd.as_raw_fd(), &addr),
        Err(nix::errno::Errno::ECONNREFUSED)
    )
}

/// The old socket file name for `pid` (`<pid>.sock`).
pub fn socket_file_name(pid: u32) -> String {
    SocketName::legacy(pid).file_name()
}

/// The pid (as the process that bound it sees it) a socket file name stands for
/// (`"1234.sock"` or `"1234-4026531836-98765.sock"` → 1234).
pub fn pid_of_socket_name(name: &str) -> Option<u32> {
    SocketName::parse(name).map(|n| n.pid)
}

/// Longest path a `sockaddr_un` holds on Linux, without the terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn override_then_xdg_then_tmp() {
        let env = |k: &str| match k {
            SOCKET_DIR_ENV => Some("/x/y".to_string()),
            "XDG_RUNTIME_DIR" => Some("/run/user/5".to_string()),
            _ => None,
        };
        assert_eq!(socket_dir_with(env, 5), PathBuf::from("/x/y"));
        let env = |k: &str| (k == "XDG_RUNTIME_DIR").then(|| "/run/user/5".to_string());
        assert_eq!(
            socket_dir_with(env, 5),
            PathBuf::from("/run/user/5/leaktop")
        );
        assert_eq!(
            socket_dir_with(|_| None, 5),
            PathBuf::from("/tmp/leaktop-5")
        );
        // A relative XDG_RUNTIME_DIR is invalid per the spec and ignored.
        let env = |k: &str| (k == "XDG_RUNTIME_DIR").then(|| "rel".to_string());
        assert_eq!(socket_dir_with(env, 5), PathBuf::from("/tmp/leaktop-5"));
    }

    /// Regression: `sudo -E` keeps the user's XDG_RUNTIME_DIR (owned by them, not by
    /// root), and a variable naming a directory that is gone gave EACCES with no fallback.
    #[test]
    fn a_foreign_or_missing_xdg_runtime_dir_falls_back_with_a_reason() {
        let env = |k: &str| (k == "XDG_RUNTIME_DIR").then(|| "/run/user/1000".to_string());
        let (dir, why) = socket_dir_checked(env, 0, |_| Ok(1000));
        assert_eq!(dir, PathBuf::from("/tmp/leaktop-0"));
        let why = why.expect("a reason");
        assert!(why.contains("owned by uid 1000, not by uid 0"), "{why}");
        assert!(why.contains("/tmp/leaktop-0"), "{why}");
        let (dir, why) = socket_dir_checked(env, 7, |_| Err(std::io::ErrorKind::NotFound.into()));
        assert_eq!(dir, PathBuf::from("/tmp/leaktop-7"));
        assert!(why.unwrap().contains("does not exist"));
        let (dir, why) = socket_dir_checked(env, 1000, |_| Ok(1000));
        assert_eq!((dir, why), (PathBuf::from("/run/user/1000/leaktop"), None));
    }

    #[test]
    fn socket_names() {
        assert_eq!(pid_of_socket_name(&socket_file_name(1234)), Some(1234));
        assert_eq!(pid_of_socket_name("x.sock"), None);
        assert_eq!(pid_of_socket_name(".sock"), None);
        assert_eq!(pid_of_socket_name("12"), None);
        assert_eq!(pid_of_socket_name("99999999999999999999.sock"), None);
        let n = SocketName {
            pid: 1,
            pid_ns: Some(4026531836),
            start: Some(98765),
        };
        assert_eq!(n.file_name(), "1-4026531836-98765.sock");
        assert_eq!(SocketName::parse(&n.file_name()), Some(n));
        assert_eq!(SocketName::parse("1-2.sock"), None);
        assert_eq!(SocketName::parse("1-2-3-4.sock"), None);
        assert_eq!(SocketName::parse("1--3.sock"), None);
        assert_eq!(SocketName::parse("1-x-3.sock"), None);
    }

    /// Regression: pid 1 of two containers sharing a socket directory had one name, so
    /// each deleted the other's live socket.
    #[test]
    fn names_differ_across_pid_namespaces_and_pid_reuse() {
        let a = SocketName {
            pid: 1,
            pid_ns: Some(10),
            start: Some(5),
        };
        let other_ns = SocketName {
            pid_ns: Some(11),
            ..a
        };
        let reused = SocketName {
            start: Some(6),
            ..a
        };
        assert_ne!(a.file_name(), other_ns.file_name());
        assert_ne!(a.file_name(), reused.file_name());
        assert!(!a.matches(&other_ns) && !a.matches(&reused));
        // What we cannot read does not rule a socket out; the hello and SO_PEERCRED
        // decide then.
        assert!(SocketName { pid_ns: None, ..a }.matches(&other_ns));
        assert!(a.matches(&SocketName::legacy(1)));
    }

    #[test]
    fn own_name_and_the_name_seen_from_outside_agree() {
        let own = SocketName::own();
        assert!(own.pid_ns.is_some() && own.start.is_some(), "{own:?}");
        assert_eq!(SocketName::of_pid(std::process::id()), Some(own));
        assert_eq!(
            innermost_ns_pid("Name:\tx\nNSpid:\t4242\t7\t1\n"),
            Some(1),
            "the innermost pid is the last"
        );
    }

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat =
            "123 (a) b) (c) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert_eq!(parse_start_time("garbage"), None);
    }
}
