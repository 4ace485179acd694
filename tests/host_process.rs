//! The agent inside other people's processes (issue 20): what the host does to it —
//! signals, panics in its code, `fork`, containers, its limits — and hostile timing.
//! Each test runs real host programs (tests/fixtures: `hostile_host`, `fragile_host`)
//! and real `leaktop`, and failed before the fix it is named after.

mod common;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::host::*;
use common::*;
use leaktop::attach::Connection;
use leaktop_agent::wire::{self, AgentMsg, ClientMsg};

fn hostile_host_env(mode: &str, env: &[(&str, &str)]) -> ChildGuard {
    let bin = fixture_bin("hostile_host", Profile::Debug);
    let mut child = spawn_child_env(&bin, &[mode], env);
    child.wait_ready();
    child
}

fn fragile_host(mode: &str) -> ChildGuard {
    let bin = fixture_bin("fragile_host", Profile::Debug);
    let mut child = spawn_child_with_stdin(&bin, &[mode]);
    child.wait_ready();
    child
}

/// The host has not died (of a signal or otherwise).
fn assert_alive(child: &mut ChildGuard, when: &str) {
    if let Some(status) = child.child.try_wait().expect("try_wait") {
        panic!("{when}: the host died: {status:?}");
    }
}

/// A hello, then requests written until the agent stops reading us (its output for us
/// passed its pause mark): a large unsent reply is queued for a client that never reads.
fn client_with_a_large_unsent_reply(path: &Path) -> UnixStream {
    let mut s = raw_connect(path);
    s.write_all(&frame(&ClientMsg::Hello {
        protocol: wire::PROTOCOL_VERSION,
        client: "leaves mid-write".into(),
    }))
    .unwrap();
    s.set_nonblocking(true).unwrap();
    let requests: Vec<u8> = (0..1000)
        .flat_map(|_| frame(&ClientMsg::Snapshot))
        .collect();
    let start = Instant::now();
    let mut stuck_since: Option<Instant> = None;
    while start.elapsed() < Duration::from_secs(20) {
        match s.write(&requests) {
            Ok(_) => stuck_since = None,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                let since = *stuck_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    return s;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("cut off instead of paused: {e}"),
        }
    }
    panic!("the agent kept reading a client that never reads");
}

/// Regression: replies were written without MSG_NOSIGNAL, so a client that left while a
/// large reply was being written raised SIGPIPE, and a host that keeps SIGPIPE's default
/// action (C, C++ or JVM programs embedding a Rust library) died of it.
#[test]
fn a_client_leaving_mid_write_does_not_kill_a_host_with_default_sigpipe() {
    let mut child = hostile_host_env("progress", &[("HOSTILE_SIGPIPE", "default")]);
    let path = sock_of(&child);
    normal_client(&path).expect("first client");
    std::thread::sleep(Duration::from_millis(300));
    let baseline = vitals(child.pid());
    for round in 0..3 {
        let s = client_with_a_large_unsent_reply(&path);
        drop(s); // gone, with megabytes still to write to it
                 // The agent's next writes to it meet a closed socket; a normal client after it
                 // proves the loop went on.
        normal_client(&path).unwrap_or_else(|e| panic!("round {round}: {e}"));
        assert_alive(&mut child, &format!("round {round}"));
    }
    assert_healthy(&mut child, baseline, "clients leaving mid-write");
    assert_alive(&mut child, "the end");
}

/// Regression: a panic on the agent thread (here the host's own `metrics` recorder, which
/// the agent calls at every sample) killed the thread silently: the cached clock froze,
/// clients met a dead socket, and `start()` kept returning the dead agent. Now the host
/// goes on, every client and `leaktop list` are told, and `start()` says so.
#[test]
fn a_panicking_metrics_recorder_stops_the_agent_not_the_host_and_everyone_is_told() {
    let mut child = fragile_host("panicking-recorder");
    let pid = child.pid();
    let path = sock_of(&child);
    let refusal = eventually(Duration::from_secs(10), || match Connection::open(&path) {
        Err(leaktop::attach::AttachError::Stopped { reason, .. }) => Some(reason),
        _ => None,
    })
    .expect("the next client is told the agent stopped");
    assert!(refusal.starts_with(wire::AGENT_STOPPED), "{refusal}");
    assert!(
        refusal.contains("the host's metrics exporter is broken"),
        "{refusal}"
    );
    assert_host_progresses(&mut child, "after the panic");
    assert_alive(&mut child, "after the panic");

    let out = leaktop(&child.socket_dir, &["dump", &pid.to_string()]);
    let err = assert_clean_error(&out, "dump of a stopped agent");
    assert!(err.contains("is not serving"), "{err}");
    assert!(err.contains("restart it"), "{err}");

    let list = leaktop(&child.socket_dir, &["list"]);
    let row = stdout(&list)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pid.to_string().as_str()))
        .unwrap_or_else(|| panic!("not listed: {}", stdout(&list)))
        .to_string();
    println!("list: {row}");
    assert_eq!(row.split_whitespace().nth(2), Some("stopped"), "{row}");
    assert!(row.contains(wire::AGENT_STOPPED), "{row}");

    let answer = |child: &mut ChildGuard, cmd: &str, prefix: &str| {
        child
            .command_output(cmd)
            .into_iter()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no answer to {cmd}"))
    };
    let start = answer(&mut child, "start", "start: ");
    assert!(start.starts_with("start: err"), "{start}");
    assert!(start.contains("stopped"), "{start}");
    let error = answer(&mut child, "error", "error: ");
    assert!(error.contains("metrics exporter is broken"), "{error}");
}

/// Regression: `Instant + sample_interval` overflowed with a huge interval and panicked
/// the agent thread at its first turn.
#[test]
fn a_huge_sample_interval_does_not_kill_the_agent_thread() {
    let mut child = fragile_host("huge-interval");
    let path = sock_of(&child);
    for _ in 0..3 {
        let snap = normal_client(&path).expect("served");
        assert!(
            snap.sites.iter().map(|s| s.live).sum::<u64>() >= 5,
            "{snap:?}"
        );
    }
    assert!(agent_thread_alive(child.pid()));
    assert_host_progresses(&mut child, "huge interval");
}

/// The pid the fork fixture's child reported, and a guard that kills it.
fn forked_child(child: &mut ChildGuard) -> (u32, KillOnDrop) {
    let pid: u32 = child
        .read_line_starting("child ", READY_TIMEOUT)
        .trim()
        .parse()
        .expect("child pid");
    (pid, KillOnDrop(Some(pid)))
}

/// Kills a process we did not spawn ourselves (a forked grandchild), unless it is known
/// to have exited (its pid may be another's by then).
struct KillOnDrop(Option<u32>);

impl KillOnDrop {
    fn exited(&mut self) {
        self.0 = None;
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Some(pid) = self.0 {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

fn fork_host(mode: &str) -> (ChildGuard, PathBuf) {
    let bin = fixture_bin("fragile_host", Profile::Debug);
    let mut child = spawn_child(&bin, &[mode]);
    let socket = PathBuf::from(child.read_line_starting("socket: ", READY_TIMEOUT));
    (child, socket)
}

/// Regression: the exit handler of a forked child removed the *parent's* socket (it was
/// registered before the fork), so a parent whose worker children exit normally could not
/// be attached any more.
#[test]
fn a_forked_child_exiting_leaves_the_parents_socket() {
    let (mut parent, socket) = fork_host("fork-exit");
    let (_pid, mut kill) = forked_child(&mut parent);
    let status = parent.read_line_starting("child exited ", READY_TIMEOUT);
    kill.exited();
    assert_eq!(status.trim(), "0", "the child exited normally");
    parent.wait_ready();
    assert!(
        socket.exists(),
        "the child's exit removed {}",
        socket.display()
    );
    let out = leaktop(&parent.socket_dir, &["dump", &parent.pid().to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
}

/// Regression: in a forked child `shutdown()` joined a thread that does not exist there
/// (it never returned) and removed the parent's socket.
#[test]
fn shutdown_in_a_forked_child_returns_and_leaves_the_parents_socket() {
    let (mut parent, socket) = fork_host("fork-shutdown");
    let (_pid, mut kill) = forked_child(&mut parent);
    parent.read_line_starting("child shutdown returned", Duration::from_secs(20));
    parent.read_line_starting("child exited ", READY_TIMEOUT);
    kill.exited();
    parent.wait_ready();
    assert!(
        socket.exists(),
        "the child's shutdown removed the parent's socket"
    );
    normal_client(&socket).expect("the parent's agent still answers");
}

/// The inode of the listening socket bound at `path`, from /proc/net/unix.
fn listener_inode(path: &Path) -> u64 {
    let table = std::fs::read_to_string("/proc/net/unix").expect("/proc/net/unix");
    table
        .lines()
        .skip(1)
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.get(7) == Some(&path.to_str()?)).then(|| f[6].parse().ok())?
        })
        .unwrap_or_else(|| panic!("{} not in /proc/net/unix", path.display()))
}

/// Socket inodes among the open descriptors of `pid`.
fn socket_inodes(pid: u32) -> Vec<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .expect("fds")
        .flatten()
        .filter_map(|e| {
            let target = std::fs::read_link(e.path()).ok()?;
            let t = target.to_str()?;
            t.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()
        })
        .collect()
}

/// Regression: after a fork the child's `start()` returned the parent's agent (whose
/// thread the child does not have), so the child could never be attached; and the child
/// kept the parent's listening socket open. Now the child starts its own agent, both are
/// attachable, and the child holds none of the parent's agent descriptors.
#[test]
fn a_forked_child_starts_its_own_agent_and_holds_none_of_the_parents_sockets() {
    let (mut parent, parent_socket) = fork_host("fork-start");
    let (child_pid, _kill) = forked_child(&mut parent);
    let child_socket = PathBuf::from(parent.read_line_starting("child socket: ", READY_TIMEOUT));
    parent.read_line_starting("child ready", READY_TIMEOUT);
    assert_ne!(child_socket, parent_socket);
    assert_eq!(child_socket, agent_socket(&parent.socket_dir, child_pid));
    for pid in [parent.pid(), child_pid] {
        let out = leaktop(
            &parent.socket_dir,
            &["dump", &pid.to_string(), "--format", "json"],
        );
        assert!(out.status.success(), "pid {pid}: {}", stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(v["process"]["pid"], pid, "{v:#}");
    }
    let inherited = listener_inode(&parent_socket);
    assert!(
        !socket_inodes(child_pid).contains(&inherited),
        "the child still holds the parent's listening socket"
    );
    assert!(socket_inodes(parent.pid()).contains(&inherited));
}

/// Regression: `shutdown()` joined the agent thread, so called from async code it blocked
/// a runtime worker for as long as the agent thread was busy (here: for ever, in a
/// recorder waiting on the caller). Inside a runtime it now returns at once.
#[test]
fn shutdown_from_async_code_does_not_wait_for_the_agent_thread() {
    let bin = fixture_bin("fragile_host", Profile::Debug);
    let mut child = spawn_child(&bin, &["shutdown-in-async"]);
    child.wait_ready();
    child.read_line_starting("agent thread blocked", READY_TIMEOUT);
    let line = child.read_line_starting("shutdown returned", Duration::from_secs(20));
    assert!(line.contains("socket exists: false"), "{line}");
    child.read_line_starting("released", Duration::from_secs(10));
    let gone = eventually(Duration::from_secs(5), || {
        (!agent_thread_alive(child.pid())).then_some(())
    });
    assert!(gone.is_some(), "the agent thread did not end once released");
}

/// `unshare` of a pid namespace (a container as far as pids go), or why not.
fn can_unshare() -> Result<(), String> {
    if !is_root() {
        return Err("needs root for pid namespaces (unshare)".into());
    }
    match Command::new("unshare")
        .args(["--pid", "--fork", "--mount-proc", "true"])
        .output()
    {
        Ok(o) if o.status.success() => Ok(()),
        Ok(o) => Err(format!("unshare failed: {}", stderr(&o).trim())),
        Err(e) => Err(format!("cannot run unshare: {e}")),
    }
}

/// A host as pid 1 of its own pid namespace, sharing `dir`; `script` may prepare its
/// mount namespace first (`$BIN` is the host).
struct Container {
    guard: ChildGuard,
    /// The host's pid as we see it.
    pid: u32,
}

fn container(dir: &Path, mode: &str, script: &str) -> Container {
    let bin = fixture_bin("hostile_host", Profile::Debug);
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "sh",
        "-c",
    ])
    .arg(format!("{script} exec \"$BIN\" {mode}"))
    .env("BIN", &bin)
    .env("LEAKTOP_SOCKET_DIR", dir);
    let mut guard = ChildGuard::spawn_unmanaged(&mut cmd);
    guard.wait_ready();
    let unshare = guard.pid();
    let children = std::fs::read_to_string(format!("/proc/{unshare}/task/{unshare}/children"))
        .expect("children of unshare");
    let pid = children
        .split_whitespace()
        .next()
        .and_then(|p| p.parse().ok())
        .expect("the contained host");
    Container { guard, pid }
}

/// Regression: sockets were named `<pid>.sock`, so the agents of pid 1 in two containers
/// sharing a socket directory had one name: the second deleted the first's live socket.
/// Now both live side by side, and from the host `leaktop list` and `dump <pid>` (its pid
/// here) reach each.
#[test]
fn two_containers_with_pid_1_share_a_socket_directory() {
    if let Err(why) = can_unshare() {
        println!("SKIP: {why}");
        return;
    }
    let dir = socket_dir();
    let a = container(&dir, "progress", "");
    let b = container(&dir, "starve", "");
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    println!("sockets of two pid-1 agents: {names:?}");
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names.iter().all(|n| n.starts_with("1-")), "{names:?}");
    for (c, live) in [(&a, 30), (&b, 7)] {
        let out = leaktop(&dir, &["dump", &c.pid.to_string(), "--format", "json"]);
        assert!(out.status.success(), "pid {}: {}", c.pid, stderr(&out));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            v["process"]["pid"], 1,
            "the agent speaks of its own pid: {v:#}"
        );
        assert_eq!(
            v["totals"]["live"], live,
            "pid {} reached another host",
            c.pid
        );
    }
    let list = stdout(&leaktop(&dir, &["list"]));
    println!("{list}");
    for c in [&a, &b] {
        assert!(
            list.lines()
                .any(|l| l.split_whitespace().next() == Some(c.pid.to_string().as_str())),
            "pid {} not listed:\n{list}",
            c.pid
        );
    }
    drop((a.guard, b.guard));
}

/// A container whose socket directory the host does not share (a tmpfs of its own over
/// it): `leaktop dump <pid>` finds the socket through the process's root.
#[test]
fn a_container_with_a_private_socket_directory_is_attached_through_its_root() {
    if let Err(why) = can_unshare() {
        println!("SKIP: {why}");
        return;
    }
    let dir = socket_dir();
    let c = container(
        &dir,
        "progress",
        "mount -t tmpfs -o mode=0700 leaktop \"$LEAKTOP_SOCKET_DIR\" &&",
    );
    assert_eq!(
        std::fs::read_dir(&dir).unwrap().count(),
        0,
        "the host does not see the container's socket directory"
    );
    let out = leaktop(&dir, &["dump", &c.pid.to_string(), "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["totals"]["live"], 30, "{v:#}");
}

/// Regression: stale-socket cleanup probed each socket with a blocking `connect`, which
/// hangs while the listener's backlog is full (a frozen process), so `start()` hung.
/// The probe now cannot block, and a busy socket counts as alive and stays.
#[test]
fn a_frozen_peer_with_a_full_backlog_does_not_hang_start() {
    use nix::sys::socket::{
        bind, connect, listen, socket, AddressFamily, Backlog, SockFlag, SockType, UnixAddr,
    };
    use std::os::fd::AsRawFd;
    let dir = socket_dir();
    // A live process's old-style name, on a listener that never accepts.
    let other = bystander();
    let frozen = dir.join(format!("{}.sock", other.pid()));
    let listener = socket(
        AddressFamily::Unix,
        SockType::Stream,
        SockFlag::empty(),
        None,
    )
    .unwrap();
    bind(listener.as_raw_fd(), &UnixAddr::new(&frozen).unwrap()).unwrap();
    listen(&listener, Backlog::new(0).unwrap()).unwrap();
    let mut queued = Vec::new();
    loop {
        let s = socket(
            AddressFamily::Unix,
            SockType::Stream,
            SockFlag::SOCK_NONBLOCK,
            None,
        )
        .unwrap();
        match connect(s.as_raw_fd(), &UnixAddr::new(&frozen).unwrap()) {
            Ok(()) => queued.push(s),
            Err(nix::errno::Errno::EAGAIN) => break,
            Err(e) => panic!("filling the backlog: {e}"),
        }
        assert!(queued.len() < 1000, "the backlog never filled");
    }
    println!("backlog full after {} connections", queued.len());
    let bin = fixture_bin("hostile_host", Profile::Debug);
    let mut host = ChildGuard::spawn_unmanaged(
        Command::new(bin)
            .arg("progress")
            .env("LEAKTOP_SOCKET_DIR", &dir),
    );
    let start = Instant::now();
    let first = host.read_line(Duration::from_secs(15));
    println!(
        "agent started in {:?} next to a frozen peer",
        start.elapsed()
    );
    assert!(first.starts_with("socket: "), "{first}");
    assert!(frozen.exists(), "a busy peer's socket was removed as stale");
    drop(queued);
}

/// Regression: the socket was bound, then `chmod`ed by path (following a symlink swapped
/// in between). Now its mode is set on the socket before `bind`: under strace the agent
/// makes no `chmod` of any path, and with a umask of 000 the socket is still 0600.
#[test]
fn the_socket_is_0600_from_bind_on_without_a_chmod_by_path() {
    if Command::new("strace").arg("-V").output().is_err() {
        println!("SKIP: strace is not installed (apt-get install strace)");
        return;
    }
    let dir = socket_dir();
    let trace = dir.join("trace.txt");
    let bin = fixture_bin("hostile_host", Profile::Debug);
    let mut host = ChildGuard::spawn_unmanaged(
        Command::new("sh")
            .arg("-c")
            .arg("umask 000; exec strace -f -qq -e trace=/chmod -o \"$TRACE\" \"$BIN\" progress")
            .env("TRACE", &trace)
            .env("BIN", &bin)
            .env("LEAKTOP_SOCKET_DIR", &dir),
    );
    let socket = PathBuf::from(host.read_line_starting("socket: ", READY_TIMEOUT));
    // Killing strace leaves its tracee running: the host is killed by pid (from its
    // socket's name) before strace is.
    let traced = leaktop_agent::paths::SocketName::parse(
        socket.file_name().and_then(|n| n.to_str()).unwrap_or(""),
    )
    .map(|n| n.pid);
    let _kill_host = KillOnDrop(traced);
    host.wait_ready();
    let mode = std::fs::symlink_metadata(&socket)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "socket mode under umask 000");
    let calls = std::fs::read_to_string(&trace).unwrap();
    println!("mode-setting calls:\n{calls}");
    // `<pid> <syscall>(<args>) = <result>`: the calls that name a path.
    let by_path: Vec<&str> = calls
        .lines()
        .filter(|l| {
            let call = l.split_whitespace().nth(1).unwrap_or("");
            ["chmod(", "fchmodat(", "fchmodat2("]
                .iter()
                .any(|c| call.starts_with(c))
        })
        .collect();
    assert!(by_path.is_empty(), "chmod by path: {by_path:?}");
    assert!(calls.contains("fchmod("), "{calls}");
}

/// A hostile host with `env` and the socket its agent bound.
fn socket_with_env(env: &[(&str, &Path)]) -> (ChildGuard, PathBuf) {
    host_with_env(env).unwrap_or_else(|e| panic!("the agent did not start: {e}"))
}

/// Regression: an `XDG_RUNTIME_DIR` of another uid (`sudo -E` keeps the user's) was
/// trusted, and one that does not exist gave EACCES with no fallback (as root: it was
/// created). Both are now passed over for `/tmp/leaktop-<uid>`, and `leaktop` finds the
/// socket there.
#[test]
fn a_foreign_or_missing_xdg_runtime_dir_falls_back_to_the_tmp_directory() {
    let uid = nix::unistd::geteuid().as_raw();
    let fallback = PathBuf::from(format!("/tmp/leaktop-{uid}"));
    let base = tempfile::tempdir().unwrap();
    let missing = base.path().join("run/user/4242");
    let (child, socket) = socket_with_env(&[("XDG_RUNTIME_DIR", &missing)]);
    assert_eq!(
        socket.parent(),
        Some(fallback.as_path()),
        "{}",
        socket.display()
    );
    assert!(
        !missing.exists(),
        "the agent made the missing XDG_RUNTIME_DIR"
    );
    let out = Command::new(env!("CARGO_BIN_EXE_leaktop"))
        .args(["dump", &child.pid().to_string()])
        .env_remove("LEAKTOP_SOCKET_DIR")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    drop(child);
    if is_root() {
        let foreign = base.path().join("foreign");
        std::fs::create_dir(&foreign).unwrap();
        std::fs::set_permissions(&foreign, std::fs::Permissions::from_mode(0o700)).unwrap();
        nix::unistd::chown(&foreign, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let (_child, socket) = socket_with_env(&[("XDG_RUNTIME_DIR", &foreign)]);
        assert_eq!(
            socket.parent(),
            Some(fallback.as_path()),
            "{}",
            socket.display()
        );
        assert!(!foreign.join("leaktop").exists());
    } else {
        println!("SKIP (part): a directory owned by another uid needs root to chown");
    }
}

/// The lowest descriptor number `pid` has free.
fn lowest_free_fd(pid: u32) -> u64 {
    let used: std::collections::HashSet<u64> = std::fs::read_dir(format!("/proc/{pid}/fd"))
        .unwrap()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect();
    (0..).find(|n| !used.contains(n)).unwrap()
}

/// Sets the soft descriptor limit of `pid` (our child) and returns the old one.
fn set_nofile(pid: u32, soft: u64) -> u64 {
    let mut old = libc::rlimit64 {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: reads the limit into `old`, a valid out pointer.
    let rc =
        unsafe { libc::prlimit64(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut old) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    let new = libc::rlimit64 {
        rlim_cur: soft,
        rlim_max: old.rlim_max,
    };
    // SAFETY: `new` is a valid limit; the pid is our own child.
    let rc =
        unsafe { libc::prlimit64(pid as i32, libc::RLIMIT_NOFILE, &new, std::ptr::null_mut()) };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    old.rlim_cur
}

/// Regression: when `accept` failed for want of descriptors (EMFILE) the connection
/// stayed queued and the listener readable, so the agent thread spun at 100 % CPU. Now it
/// backs off, and serves the connection once descriptors are free.
#[test]
fn accept_out_of_descriptors_backs_off_instead_of_spinning() {
    let (mut child, _baseline) = host_and_baseline();
    let pid = child.pid();
    let path = sock_of(&child);
    let free = lowest_free_fd(pid);
    let old = set_nofile(pid, free);
    let mut waiting = raw_connect(&path); // queued; the agent cannot accept it
    waiting
        .write_all(&frame(&ClientMsg::Hello {
            protocol: wire::PROTOCOL_VERSION,
            client: "waits".into(),
        }))
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let before = agent_thread_cpu_ticks(pid);
    assert_host_progresses(&mut child, "out of descriptors");
    let cpu = agent_thread_cpu_ticks(pid) - before;
    println!("agent thread CPU while out of descriptors: {cpu} ticks in ~0.5 s");
    set_nofile(pid, old);
    assert!(
        cpu < 10,
        "the agent thread spins on a failing accept: {cpu} ticks"
    );
    // Descriptors free again: the queued client is served.
    let msg = wire::read_frame(&mut waiting, wire::MAX_FRAME)
        .expect("read")
        .expect("a frame");
    assert!(
        matches!(wire::decode::<AgentMsg>(&msg), Ok(AgentMsg::Hello(_))),
        "the queued client got no hello"
    );
}

/// Regression: clients that said hello and never read held their slots for ever; 64 of
/// them locked everyone out. With a client timeout they are dropped, and the host's
/// descriptors and memory come back.
#[test]
fn clients_that_never_read_lose_their_slots_after_the_client_timeout() {
    let mut child = hostile_host_env("progress", &[("HOSTILE_CLIENT_TIMEOUT_MS", "1000")]);
    let path = sock_of(&child);
    normal_client(&path).expect("first client");
    std::thread::sleep(Duration::from_millis(300));
    let baseline = vitals(child.pid());
    let hogs: Vec<UnixStream> = (0..64)
        .map(|_| {
            let mut s = raw_connect(&path);
            s.write_all(&frame(&ClientMsg::Hello {
                protocol: wire::PROTOCOL_VERSION,
                client: "never reads".into(),
            }))
            .unwrap();
            s
        })
        .collect();
    let locked_out = eventually(Duration::from_secs(5), || {
        matches!(Connection::open(&path), Err(e) if e.to_string().contains("too many clients"))
            .then_some(())
    });
    assert!(
        locked_out.is_some(),
        "64 silent clients did not fill the slots"
    );
    let start = Instant::now();
    let served = eventually(Duration::from_secs(15), || normal_client(&path).ok());
    assert!(
        served.is_some(),
        "the never-reading clients kept their slots"
    );
    println!("slots back {:?} after the lock-out", start.elapsed());
    assert_healthy(&mut child, baseline, "64 clients that never read");
    drop(hogs);
}
