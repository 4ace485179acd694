//! The one reader of `/proc` on the attaching side: what leaktop learns about a target
//! process (alive, uid, environment, maps, executable) and about the machine (bound Unix
//! sockets, hostname). Each function reads one file and answers `None`/an error rather
//! than panicking on what it finds.
//!
//! Hand-written rather than the `procfs` crate: leaktop reads six files, each in a line
//! or two, and the crate would bring its dependencies for that.

use std::path::PathBuf;

/// A path under `/proc/<pid>/` (`exe`, `map_files/…`, `root/…`).
pub fn pid_path(pid: u32, rest: &str) -> PathBuf {
    PathBuf::from(format!("/proc/{pid}/{rest}"))
}

/// True when a process with this pid exists (a zombie too).
pub fn exists(pid: u32) -> bool {
    pid_path(pid, "").exists()
}

/// The effective uid of `pid`, from `/proc/<pid>/status`.
pub fn uid(pid: u32) -> Option<u32> {
    let status = std::fs::read_to_string(pid_path(pid, "status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("Uid:"))?;
    line.split_whitespace().nth(2)?.parse().ok()
}

/// True when `pid` has exited (gone, or a zombie not yet reaped).
pub fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(pid_path(pid, "stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

/// One variable of `pid`'s environment (same uid or root only).
pub fn env(pid: u32, key: &str) -> Option<String> {
    let env = std::fs::read(pid_path(pid, "environ")).ok()?;
    env.split(|b| *b == 0).find_map(|kv| {
        let kv = std::str::from_utf8(kv).ok()?;
        let (k, v) = kv.split_once('=')?;
        (k == key).then(|| v.to_string())
    })
}

/// The text of `/proc/<pid>/maps`.
pub fn maps(pid: u32) -> std::io::Result<String> {
    std::fs::read_to_string(pid_path(pid, "maps"))
}

/// Where `/proc/<pid>/exe` points.
pub fn exe(pid: u32) -> Option<PathBuf> {
    std::fs::read_link(pid_path(pid, "exe")).ok()
}

/// The paths of the bound Unix sockets on the machine, from `/proc/net/unix`.
pub fn bound_unix_sockets() -> Vec<String> {
    let Ok(table) = std::fs::read_to_string("/proc/net/unix") else {
        return Vec::new();
    };
    table
        .lines()
        .skip(1)
        .filter_map(|line| line.split_whitespace().nth(7))
        .filter(|p| p.starts_with('/'))
        .map(str::to_string)
        .collect()
}

/// The machine's host name (empty when unknown).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}
