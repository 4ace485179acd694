//! Helpers of the tests that attack a live host (tests/hardening.rs,
//! tests/host_process.rs): the host's vitals, its progress, normal and raw clients.

use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use super::*;
use leaktop::attach::Connection;
use leaktop_agent::wire::{self, AgentMsg, ClientMsg};

pub fn hostile_host(mode: &str) -> ChildGuard {
    let bin = fixture_bin("hostile_host", Profile::Debug);
    let mut child = spawn_child(&bin, &[mode]);
    child.wait_ready();
    child
}

/// The agent socket of `child` (named for its pid, pid namespace and start time).
pub fn sock_of(child: &ChildGuard) -> PathBuf {
    agent_socket(&child.socket_dir, child.pid())
}

/// What the agent's process holds: descriptors and resident memory.
#[derive(Debug, Clone, Copy)]
pub struct Vitals {
    pub fds: usize,
    pub rss_kb: u64,
}

pub fn vitals(pid: u32) -> Vitals {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("read /proc/pid/fd")
        .count();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let rss_kb = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .expect("VmRSS");
    Vitals { fds, rss_kb }
}

pub fn agent_thread_alive(pid: u32) -> bool {
    std::fs::read_dir(format!("/proc/{pid}/task"))
        .map(|tasks| {
            tasks.flatten().any(|t| {
                std::fs::read_to_string(t.path().join("comm"))
                    .is_ok_and(|c| c.trim() == "leaktop-agent")
            })
        })
        .unwrap_or(false)
}

/// User + system CPU ticks of the `leaktop-agent` thread.
pub fn agent_thread_cpu_ticks(pid: u32) -> u64 {
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .expect("tasks")
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        if comm.trim() == "leaktop-agent" {
            let stat = std::fs::read_to_string(t.path().join("stat")).expect("stat");
            // Fields after the parenthesised name: state is field 3, utime 14, stime 15.
            let rest = &stat[stat.rfind(')').expect("comm") + 2..];
            let f: Vec<&str> = rest.split_whitespace().collect();
            return f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap();
        }
    }
    panic!("no leaktop-agent thread in {pid}")
}

/// The newest `tick N` the host printed (waits for the first one).
pub fn latest_tick(child: &mut ChildGuard) -> u64 {
    let mut latest = None;
    let deadline = Instant::now() + Duration::from_secs(10);
    while latest.is_none() && Instant::now() < deadline {
        for line in child.drain_lines() {
            if let Some(n) = line.strip_prefix("tick ").and_then(|n| n.parse().ok()) {
                latest = Some(n);
            }
        }
        if latest.is_none() {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    latest.expect("the host printed no tick for 10 s")
}

/// The host keeps ticking (every 20 ms): three more ticks come within a few seconds.
pub fn assert_host_progresses(child: &mut ChildGuard, when: &str) {
    let before = latest_tick(child);
    let deadline = Instant::now() + Duration::from_secs(5);
    let mut after = before;
    while after < before + 3 && Instant::now() < deadline {
        after = latest_tick(child).max(after);
    }
    assert!(
        after >= before + 3,
        "{when}: the host stalled (tick {before} -> {after} in 5 s)"
    );
}

/// A normal client: handshake, one snapshot.
pub fn normal_client(path: &Path) -> Result<wire::Snapshot, String> {
    let mut conn = Connection::open(path).map_err(|e| e.to_string())?;
    conn.send(&ClientMsg::Snapshot).map_err(|e| e.to_string())?;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        match conn.recv(Some(Duration::from_secs(5))) {
            Ok(AgentMsg::Snapshot(s)) => return Ok(s),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
    Err("no snapshot within 5 s".into())
}

/// The agent after an attack: answers, thread alive, descriptors back, memory bounded,
/// host still making progress.
pub fn assert_healthy(child: &mut ChildGuard, baseline: Vitals, after: &str) {
    let pid = child.pid();
    let path = sock_of(child);
    let snap = normal_client(&path)
        .unwrap_or_else(|e| panic!("after {after}: a normal client got no answer: {e}"));
    assert!(
        snap.sites.iter().map(|s| s.live).sum::<u64>() >= 30,
        "after {after}: {snap:?}"
    );
    assert!(
        agent_thread_alive(pid),
        "after {after}: the leaktop-agent thread is gone"
    );
    // Closed clients are reaped within a turn of the agent's loop (100 ms).
    let fds = eventually(Duration::from_secs(5), || {
        let v = vitals(pid);
        (v.fds <= baseline.fds).then_some(v.fds)
    });
    assert!(
        fds.is_some(),
        "after {after}: descriptors not back: {} now, {} before",
        vitals(pid).fds,
        baseline.fds
    );
    // Freed memory need not go back to the system, but nothing may pile up: at most
    // one client's output cap (16 MiB) above where it was.
    let rss = vitals(pid).rss_kb;
    println!(
        "after {after}: VmRSS {rss} KiB (baseline {} KiB), fds {}",
        baseline.rss_kb,
        vitals(pid).fds
    );
    assert!(
        rss <= baseline.rss_kb + 20 * 1024,
        "after {after}: VmRSS {rss} KiB, baseline {} KiB",
        baseline.rss_kb
    );
    assert_host_progresses(child, after);
}

/// A host, warmed up by one normal client, and its vitals then.
pub fn host_and_baseline() -> (ChildGuard, Vitals) {
    let mut child = hostile_host("progress");
    normal_client(&sock_of(&child)).expect("first client");
    // Let the first client's socket be reaped.
    std::thread::sleep(Duration::from_millis(300));
    let baseline = vitals(child.pid());
    assert_host_progresses(&mut child, "start");
    (child, baseline)
}

pub fn raw_connect(path: &Path) -> UnixStream {
    let s = UnixStream::connect(path).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s
}

pub fn frame(msg: &ClientMsg) -> Vec<u8> {
    wire::encode_frame(msg).unwrap()
}

/// Reads agent frames until the agent closes the connection; panics if it does not close
/// within `within`.
pub fn read_until_closed(s: &mut UnixStream, within: Duration) -> Vec<AgentMsg> {
    let start = Instant::now();
    s.set_read_timeout(Some(within)).unwrap();
    let mut msgs = Vec::new();
    loop {
        match wire::read_frame(s, wire::MAX_FRAME) {
            Ok(Some(p)) => msgs.push(wire::decode::<AgentMsg>(&p).expect("agent frame")),
            Ok(None) => return msgs,
            Err(wire::WireError::Io(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => {
                return msgs
            }
            Err(e) => panic!(
                "the agent did not close the connection within {within:?} ({:?}): {e}; got {msgs:?}",
                start.elapsed()
            ),
        }
    }
}

pub fn xorshift(seed: &mut u64) -> u8 {
    *seed ^= *seed << 13;
    *seed ^= *seed >> 7;
    *seed ^= *seed << 17;
    *seed as u8
}

/// A finished `leaktop` run that failed the way a user can act on: exit 2, one line
/// starting `leaktop:`, no panic. Returns the line.
pub fn assert_clean_error(out: &Output, what: &str) -> String {
    let err = stderr(out);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{what}: exit {:?}, stderr {err}, stdout {}",
        out.status,
        stdout(out)
    );
    assert!(
        !err.contains("panicked") && !err.contains("RUST_BACKTRACE"),
        "{what}: {err}"
    );
    assert_eq!(err.trim_end().lines().count(), 1, "{what}: {err}");
    assert!(err.starts_with("leaktop: "), "{what}: {err}");
    println!("{what}: {}", err.trim_end());
    err
}

/// A live process that is not an agent (a pid for the fakes to name).
pub fn bystander() -> ChildGuard {
    ChildGuard::spawn(Command::new("sleep").arg("60"))
}

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Starts a `hostile_host progress` with `env` (no LEAKTOP_SOCKET_DIR or XDG_RUNTIME_DIR
/// unless given): the host and the socket its agent bound, or the agent's error line.
pub fn host_with_env(env: &[(&str, &Path)]) -> Result<(ChildGuard, PathBuf), String> {
    let bin = fixture_bin("hostile_host", Profile::Debug);
    let mut cmd = Command::new(bin);
    cmd.arg("progress")
        .env_remove("LEAKTOP_SOCKET_DIR")
        .env_remove("XDG_RUNTIME_DIR");
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = ChildGuard::spawn_unmanaged(&mut cmd);
    let line = child.read_line(READY_TIMEOUT);
    match line.strip_prefix("agent-error: ") {
        Some(e) => Err(e.to_string()),
        None => match line.strip_prefix("socket: ") {
            Some(path) => Ok((child, PathBuf::from(path))),
            None => Err(format!("unexpected first line: {line}")),
        },
    }
}
