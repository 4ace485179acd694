//! Hardening (issue #11): the agent runs inside other people's production processes and
//! `leaktop` is run in the middle of incidents; neither may ever make things worse.
//!
//! Hostile clients against a live agent, a starved or wedged runtime, targets that exit
//! mid-stream, reused pids, sockets that are not agents, other users, squatted socket
//! directories. After every attack on the agent: the next normal client is answered, the
//! agent thread is alive, its descriptors and memory are back where they were, and the host
//! never noticed (its ticker keeps ticking).

mod common;

use std::io::{Read, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::host::*;
use common::*;
use leaktop::attach::Connection;
use leaktop_agent::wire::{self, AgentMsg, ClientMsg};

#[test]
fn garbage_bytes_are_refused_and_the_agent_carries_on() {
    let (mut child, baseline) = host_and_baseline();
    let path = sock_of(&child);
    let mut seed = 0x1234_5678_9abc_def1;
    for round in 0..20 {
        let mut s = raw_connect(&path);
        // Half with a small length prefix (an undecodable hello), half random throughout.
        let mut bytes: Vec<u8> = (0..4096).map(|_| xorshift(&mut seed)).collect();
        if round % 2 == 0 {
            bytes[..4].copy_from_slice(&64u32.to_le_bytes());
        }
        let _ = s.write_all(&bytes);
        let msgs = read_until_closed(&mut s, Duration::from_secs(3));
        assert!(
            matches!(
                msgs.first(),
                Some(AgentMsg::Refused { .. } | AgentMsg::Error { .. })
            ),
            "round {round}: {msgs:?}"
        );
    }
    assert_healthy(&mut child, baseline, "garbage bytes");
}

#[test]
fn a_four_gib_frame_length_is_refused_without_allocating() {
    let (mut child, baseline) = host_and_baseline();
    let path = sock_of(&child);
    for _ in 0..10 {
        let mut s = raw_connect(&path);
        s.write_all(&u32::MAX.to_le_bytes()).unwrap();
        let msgs = read_until_closed(&mut s, Duration::from_secs(3));
        match msgs.as_slice() {
            [AgentMsg::Error { message }] => {
                assert!(message.contains("exceeds the limit"), "{message}")
            }
            other => panic!("{other:?}"),
        }
    }
    // The same after a valid hello.
    let mut s = raw_connect(&path);
    s.write_all(&frame(&ClientMsg::Hello {
        protocol: wire::PROTOCOL_VERSION,
        client: "hostile".into(),
    }))
    .unwrap();
    s.write_all(&(1u32 << 31).to_le_bytes()).unwrap();
    let msgs = read_until_closed(&mut s, Duration::from_secs(3));
    assert!(
        matches!(msgs.last(), Some(AgentMsg::Error { message }) if message.contains("exceeds")),
        "{msgs:?}"
    );
    assert_healthy(&mut child, baseline, "4 GiB frame length");
}

#[test]
fn truncated_frames_and_half_closed_clients_are_dropped() {
    let (mut child, baseline) = host_and_baseline();
    let path = sock_of(&child);
    let hello = frame(&ClientMsg::Hello {
        protocol: wire::PROTOCOL_VERSION,
        client: "hostile".into(),
    });
    for cut in [1, 3, 4, hello.len() - 1] {
        let mut s = raw_connect(&path);
        s.write_all(&hello[..cut]).unwrap();
        s.shutdown(std::net::Shutdown::Write).unwrap();
        let msgs = read_until_closed(&mut s, Duration::from_secs(3));
        assert!(msgs.is_empty(), "cut at {cut}: {msgs:?}");
    }
    // A frame announcing more than it sends, then silence, then gone.
    for _ in 0..10 {
        let mut s = raw_connect(&path);
        s.write_all(&1000u32.to_le_bytes()).unwrap();
        s.write_all(&[0u8; 10]).unwrap();
        drop(s);
    }
    assert_healthy(&mut child, baseline, "truncated frames");
}

#[test]
fn a_wrong_protocol_version_is_refused_with_both_versions() {
    let (mut child, baseline) = host_and_baseline();
    let path = sock_of(&child);
    let mut s = raw_connect(&path);
    s.write_all(&frame(&ClientMsg::Hello {
        protocol: 0,
        client: "ancient".into(),
    }))
    .unwrap();
    let msgs = read_until_closed(&mut s, Duration::from_secs(3));
    match msgs.as_slice() {
        [AgentMsg::Refused { reason }] => {
            assert!(reason.contains("protocol version mismatch"), "{reason}");
            assert!(reason.contains("client speaks 0"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    // A request before any hello.
    let mut s = raw_connect(&path);
    s.write_all(&frame(&ClientMsg::Snapshot)).unwrap();
    let msgs = read_until_closed(&mut s, Duration::from_secs(3));
    assert!(
        matches!(msgs.as_slice(), [AgentMsg::Refused { reason }] if reason.contains("Hello")),
        "{msgs:?}"
    );
    assert_healthy(&mut child, baseline, "wrong protocol version");
}

#[test]
fn a_client_that_never_reads_costs_the_host_nothing() {
    let (mut child, baseline) = host_and_baseline();
    let path = sock_of(&child);
    // A subscriber at the fastest rate that never reads.
    let mut slow = raw_connect(&path);
    slow.write_all(&frame(&ClientMsg::Hello {
        protocol: wire::PROTOCOL_VERSION,
        client: "slow".into(),
    }))
    .unwrap();
    slow.write_all(&frame(&ClientMsg::Subscribe { interval_ms: 1 }))
        .unwrap();
    slow.write_all(&frame(&ClientMsg::History)).unwrap();
    std::thread::sleep(Duration::from_millis(1500));
    // Meanwhile everyone else is served and the host goes on.
    normal_client(&path).expect("a normal client next to a stalled one");
    assert_host_progresses(&mut child, "slow subscriber");
    let rss = vitals(child.pid()).rss_kb;
    assert!(
        rss <= baseline.rss_kb + 20 * 1024,
        "a stalled subscriber grew the host to {rss} KiB (from {})",
        baseline.rss_kb
    );

    // A client that asks for snapshot after snapshot and reads none: once its unsent
    // replies pass the agent's pause mark its requests wait in its socket, so it costs
    // neither memory nor CPU, and everyone else is still served.
    let mut flood = raw_connect(&path);
    flood
        .write_all(&frame(&ClientMsg::Hello {
            protocol: wire::PROTOCOL_VERSION,
            client: "flood".into(),
        }))
        .unwrap();
    flood.set_nonblocking(true).unwrap();
    let requests: Vec<u8> = (0..1000)
        .flat_map(|_| frame(&ClientMsg::Snapshot))
        .collect();
    let start = Instant::now();
    let mut sent = 0usize;
    let mut stuck_since = None;
    while start.elapsed() < Duration::from_secs(20) {
        match flood.write(&requests) {
            Ok(n) => {
                sent += n;
                stuck_since = None;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                // Blocked for 300 ms running: the agent stopped reading us.
                let since = *stuck_since.get_or_insert_with(Instant::now);
                if since.elapsed() > Duration::from_millis(300) {
                    break;
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("the flooding client was cut off ({e}) instead of paused"),
        }
    }
    println!(
        "flooding client paused after {sent} bytes of requests, {:?}",
        start.elapsed()
    );
    assert!(
        stuck_since.is_some(),
        "the agent kept reading a client that never reads for 20 s"
    );
    let cpu_before = agent_thread_cpu_ticks(child.pid());
    normal_client(&path).expect("a normal client next to a paused flood");
    assert_host_progresses(&mut child, "paused flood");
    let cpu = agent_thread_cpu_ticks(child.pid()) - cpu_before;
    println!("agent thread CPU while a flood waits: {cpu} ticks in ~0.5 s");
    // A busy loop would take all of it (~50 ticks at 100 Hz).
    assert!(
        cpu < 25,
        "the agent thread spins on a paused client: {cpu} ticks"
    );
    let rss = vitals(child.pid()).rss_kb;
    assert!(
        rss <= baseline.rss_kb + 20 * 1024,
        "a flood of requests grew the host to {rss} KiB (from {})",
        baseline.rss_kb
    );
    drop(slow);
    drop(flood);
    assert_healthy(&mut child, baseline, "slow readers");
}

#[test]
fn a_thousand_connect_disconnect_cycles_leak_nothing() {
    let (mut child, baseline) = host_and_baseline();
    let path = sock_of(&child);
    let hello = frame(&ClientMsg::Hello {
        protocol: wire::PROTOCOL_VERSION,
        client: "cycle".into(),
    });
    for i in 0..1000 {
        let mut s = UnixStream::connect(&path).expect("connect");
        match i % 3 {
            0 => {}
            1 => {
                let _ = s.write_all(&hello);
            }
            _ => {
                let _ = s.write_all(&hello);
                let _ = s.write_all(&frame(&ClientMsg::Subscribe { interval_ms: 50 }));
                let mut b = [0u8; 64];
                let _ = s.read(&mut b);
            }
        }
    }
    assert_healthy(&mut child, baseline, "1000 connect/disconnect cycles");
}

#[test]
fn sixty_four_clients_at_once_are_served_and_the_sixty_fifth_told_why_not() {
    let (mut child, baseline) = host_and_baseline();
    let path = sock_of(&child);
    let mut conns: Vec<Connection> = (0..64)
        .map(|i| Connection::open(&path).unwrap_or_else(|e| panic!("client {i}: {e}")))
        .collect();
    for c in &mut conns {
        c.send(&ClientMsg::Subscribe { interval_ms: 50 }).unwrap();
    }
    // Every one of them streams.
    for (i, c) in conns.iter_mut().enumerate() {
        let got = (0..50).find_map(|_| match c.recv(Some(Duration::from_secs(5))) {
            Ok(AgentMsg::Snapshot(_)) => Some(()),
            Ok(_) => None,
            Err(e) => panic!("client {i}: {e}"),
        });
        assert!(got.is_some(), "client {i} got no snapshot");
    }
    let err = Connection::open(&path).expect_err("a 65th client");
    assert!(err.to_string().contains("too many clients"), "{err}");
    assert_host_progresses(&mut child, "64 clients streaming");
    drop(conns);
    assert_healthy(&mut child, baseline, "64 clients at once");
}

// ---------------------------------------------------------------------------------------
// `leaktop` facing bad targets: one clear line, exit 2, never a panic.

/// Runs `leaktop` as a child (killed on drop) so a test can act while it runs.
struct Running(std::process::Child);

impl Running {
    fn start(socket_dir: &Path, args: &[&str]) -> Running {
        Running(
            Command::new(env!("CARGO_BIN_EXE_leaktop"))
                .args(args)
                .env("LEAKTOP_SOCKET_DIR", socket_dir)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn leaktop"),
        )
    }

    /// Waits for it to exit by itself within `within`.
    fn finish(mut self, within: Duration) -> Output {
        let start = Instant::now();
        while start.elapsed() < within {
            if self.0.try_wait().expect("try_wait").is_some() {
                let child = std::mem::replace(
                    &mut self.0,
                    Command::new("true").spawn().expect("spawn true"),
                );
                return child.wait_with_output().expect("output");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("leaktop did not exit within {within:?}");
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A peer on a socket named for `pid` that is not (or pretends to be) an agent.
enum Fake {
    /// Accepts and never says a word.
    Silent,
    /// Answers anything with random bytes.
    Garbage,
    /// A frame header announcing 60 KiB, then one byte every 100 ms.
    Dribble,
    /// A well-formed hello with these fields.
    Hello { pid: u32, start_time_ticks: u64 },
}

fn fake_agent(dir: &Path, pid: u32, fake: Fake) {
    let listener = UnixListener::bind(dir.join(format!("{pid}.sock"))).expect("bind fake");
    std::thread::spawn(move || {
        let mut held = Vec::new();
        let mut seed = 0xdead_beef_u64;
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            match &fake {
                Fake::Silent => {}
                Fake::Garbage => {
                    let bytes: Vec<u8> = (0..256).map(|_| xorshift(&mut seed)).collect();
                    let _ = s.write_all(&bytes);
                }
                Fake::Dribble => {
                    let mut s2 = s.try_clone().expect("clone");
                    std::thread::spawn(move || {
                        let _ = s2.write_all(&(60_000u32).to_le_bytes());
                        while s2.write_all(&[0]).is_ok() {
                            std::thread::sleep(Duration::from_millis(100));
                        }
                    });
                }
                Fake::Hello {
                    pid,
                    start_time_ticks,
                } => {
                    let _ = wire::read_frame(&mut s, wire::MAX_CLIENT_FRAME);
                    let hello = AgentMsg::Hello(wire::AgentHello {
                        protocol: wire::PROTOCOL_VERSION,
                        agent_version: "0.1.0".into(),
                        pid: *pid,
                        start_time_ticks: *start_time_ticks,
                        exe: "/fake".into(),
                        build_id: Vec::new(),
                        uid: 0,
                        origin_unix_ms: 0,
                        now_ms: 0,
                        sample_interval_ms: 1000,
                        history_len: 10,
                        site_cap: 10,
                    });
                    let _ = s.write_all(&wire::encode_frame(&hello).unwrap());
                }
            }
            held.push(s);
        }
    });
}

#[test]
fn a_socket_that_is_not_an_agent_gets_a_clear_error_and_a_timeout() {
    for (fake, expect) in [
        (Fake::Silent, "did not answer within 3s"),
        (Fake::Dribble, "did not answer within 3s"),
        (Fake::Garbage, "is not a leaktop agent socket"),
    ] {
        let what = match fake {
            Fake::Silent => "silent peer",
            Fake::Dribble => "dribbling peer",
            _ => "garbage peer",
        };
        let other = bystander();
        let dir = socket_dir();
        fake_agent(&dir, other.pid(), fake);
        let start = Instant::now();
        let out = leaktop(&dir, &["dump", &other.pid().to_string()]);
        let took = start.elapsed();
        let err = assert_clean_error(&out, what);
        assert!(err.contains(expect), "{what}: {err}");
        println!("{what}: answered in {took:?}");
        assert!(took < Duration::from_secs(10), "{what}: took {took:?}");
    }
}

#[test]
fn a_file_that_is_not_a_recording_and_a_directory_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "not a recording\n").unwrap();
    let empty = dir.path().join("empty.ltrec");
    std::fs::write(&empty, "").unwrap();
    let text_s = text.to_str().unwrap();
    let dir_s = dir.path().to_str().unwrap();
    let empty_s = empty.to_str().unwrap();
    for args in [
        vec!["dump", text_s],
        vec!["check", text_s],
        vec!["dump", dir_s],
        vec!["check", dir_s],
        vec!["dump", empty_s],
        vec!["replay", text_s],
        vec!["replay", dir_s],
        vec!["dump", "/nonexistent/file.ltrec"],
    ] {
        let out = leaktop(dir.path(), &args);
        let err = assert_clean_error(&out, &args.join(" "));
        let named = args[1];
        assert!(
            err.contains(named),
            "{args:?}: the error names no path: {err}"
        );
    }
}

#[test]
fn pid_reuse_is_detected_by_start_time_and_by_the_socket_owner() {
    let me = std::process::id();
    let my_start = leaktop_agent::procinfo::start_time_ticks(me).expect("start time");

    // A socket left by a dead process, named for a live pid: nothing listens on it.
    let other = bystander();
    let dir = socket_dir();
    drop(UnixListener::bind(dir.join(format!("{}.sock", other.pid()))).unwrap());
    let err = assert_clean_error(
        &leaktop(&dir, &["dump", &other.pid().to_string()]),
        "stale socket of a reused pid",
    );
    assert!(err.contains("pid was reused"), "{err}");

    // A hello whose start time is not the live process's.
    let dir = socket_dir();
    fake_agent(
        &dir,
        me,
        Fake::Hello {
            pid: me,
            start_time_ticks: my_start + 1,
        },
    );
    let err = assert_clean_error(
        &leaktop(&dir, &["dump", &me.to_string()]),
        "start time mismatch",
    );
    assert!(err.contains("pid reused"), "{err}");

    // A hello naming another pid.
    let dir = socket_dir();
    fake_agent(
        &dir,
        me,
        Fake::Hello {
            pid: me + 1,
            start_time_ticks: my_start,
        },
    );
    let err = assert_clean_error(&leaktop(&dir, &["dump", &me.to_string()]), "pid mismatch");
    assert!(err.contains("pid reused"), "{err}");

    // Everything right in the hello, but the socket is served by another process.
    let other = bystander();
    let other_start = leaktop_agent::procinfo::start_time_ticks(other.pid()).unwrap();
    let dir = socket_dir();
    fake_agent(
        &dir,
        other.pid(),
        Fake::Hello {
            pid: other.pid(),
            start_time_ticks: other_start,
        },
    );
    let err = assert_clean_error(
        &leaktop(&dir, &["dump", &other.pid().to_string()]),
        "socket served by another process",
    );
    assert!(err.contains(&format!("served by process {me}")), "{err}");
    // And `list` does not show it as that process.
    let list = leaktop(&dir, &["list", "-v"]);
    assert!(list.status.success(), "{}", stderr(&list));
    assert!(
        !stdout(&list).contains("/fake"),
        "listed a squatter: {}",
        stdout(&list)
    );
}

// ---------------------------------------------------------------------------------------
// A starved or wedged host: the agent is its own thread.

#[test]
fn dump_answers_while_every_runtime_worker_is_blocked_or_deadlocked() {
    for mode in ["starve", "deadlock"] {
        let child = hostile_host(mode);
        let path = sock_of(&child);
        let start = Instant::now();
        let snap = normal_client(&path).unwrap_or_else(|e| panic!("{mode}: {e}"));
        let agent = start.elapsed();
        let start = Instant::now();
        let out = leaktop(&child.socket_dir, &["dump", &child.pid().to_string()]);
        let cli = start.elapsed();
        println!(
            "{mode}: agent handshake + snapshot {:.1} ms, whole `leaktop dump` {:.1} ms",
            agent.as_secs_f64() * 1e3,
            cli.as_secs_f64() * 1e3
        );
        assert!(out.status.success(), "{mode}: {}", stderr(&out));
        // Both workers are inside a task's poll, for good.
        let running: u64 = snap.sites.iter().map(|s| s.running).sum();
        assert_eq!(running, 2, "{mode}: {snap:?}");
        if mode == "starve" {
            let live: u64 = snap.sites.iter().map(|s| s.live).sum();
            assert_eq!(live, 7, "{mode}: {snap:?}");
        }
        // The speed goal (100 ms) lives in the benchmarks; here: it answers at all.
        assert!(
            agent < Duration::from_secs(2),
            "{mode}: agent took {agent:?}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// The target exits while leaktop is reading.

fn kill9(child: &mut ChildGuard) {
    child.kill();
}

#[test]
fn a_recording_in_progress_is_complete_up_to_the_targets_exit() {
    let mut child = hostile_host("progress");
    let pid = child.pid().to_string();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("cut.ltrec");
    let rec = Running::start(
        &child.socket_dir,
        &[
            "record",
            &pid,
            "-o",
            file.to_str().unwrap(),
            "--interval",
            "100ms",
        ],
    );
    // Some snapshots in the file, then the target dies without warning.
    let snapshots = || {
        leaktop::record::Reader::open(&file)
            .map(|mut r| {
                leaktop::record::reader::summarize(&mut r)
                    .snapshot_times
                    .len()
            })
            .unwrap_or(0)
    };
    eventually(Duration::from_secs(10), || (snapshots() >= 3).then_some(()))
        .expect("the recording got snapshots");
    kill9(&mut child);
    let out = rec.finish(Duration::from_secs(10));
    println!("record: {}", stderr(&out).trim_end());
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    let dump = leaktop(
        dir.path(),
        &["dump", file.to_str().unwrap(), "--format", "json"],
    );
    assert!(dump.status.success(), "{}", stderr(&dump));
    let v: serde_json::Value = serde_json::from_slice(&dump.stdout).expect("json");
    assert!(v["totals"]["live"].as_u64() >= Some(30), "{v:#}");
    // Two seconds of data decide nothing about growth: an honest "inconclusive" report
    // of the sites it has (exit 2 with a report on stdout), not an error.
    let check = leaktop(dir.path(), &["check", file.to_str().unwrap()]);
    assert!(!stderr(&check).contains("panicked"), "{}", stderr(&check));
    let report = stdout(&check);
    println!("check of the cut recording: {report}");
    assert!(report.contains(&format!("pid {pid}")), "{report}");
    assert!(report.contains("3 sites"), "{report}");
}

#[test]
fn check_keeps_what_it_saw_when_the_target_exits_mid_watch() {
    let mut child = hostile_host("progress");
    let pid = child.pid().to_string();
    let run = Running::start(&child.socket_dir, &["check", &pid, "--for", "20s"]);
    std::thread::sleep(Duration::from_millis(1500));
    kill9(&mut child);
    let start = Instant::now();
    let out = run.finish(Duration::from_secs(10));
    println!(
        "check ended {:?} after the exit, exit {:?}: {}{}",
        start.elapsed(),
        out.status.code(),
        stdout(&out),
        stderr(&out)
    );
    assert!(!stderr(&out).contains("panicked"), "{}", stderr(&out));
    // It reports on the sites it saw and says the process went away.
    let text = stdout(&out);
    assert!(text.contains(&format!("process {pid} exited")), "{text}");
    assert!(text.contains("3 sites"), "{text}");
}

#[test]
fn dump_of_a_target_that_dies_mid_handshake_says_so() {
    let mut child = hostile_host("progress");
    let pid = child.pid();
    // Stopped: the kernel still queues our connection, nobody answers it.
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let run = Running::start(&child.socket_dir, &["dump", &pid.to_string()]);
    std::thread::sleep(Duration::from_millis(500));
    kill9(&mut child);
    let out = run.finish(Duration::from_secs(10));
    let err = assert_clean_error(&out, "target killed mid-handshake");
    assert!(
        err.contains(&format!("process {pid} exited before its agent answered")),
        "{err}"
    );

    // A stopped target (under a debugger, say): a timeout that says what may be wrong.
    let child = hostile_host("progress");
    let pid = child.pid();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid as i32),
        nix::sys::signal::Signal::SIGSTOP,
    )
    .unwrap();
    let out = leaktop(&child.socket_dir, &["dump", &pid.to_string()]);
    let err = assert_clean_error(&out, "stopped target");
    assert!(err.contains("stopped"), "{err}");
}

// ---------------------------------------------------------------------------------------
// Access: other users, squatted socket directories.

/// A throwaway second user, deleted on drop.
struct TempUser {
    name: String,
    uid: u32,
    gid: u32,
}

impl TempUser {
    /// `None` (with the reason printed) when this machine cannot make one.
    fn create(tag: &str) -> Option<TempUser> {
        if !is_root() {
            println!("SKIP: needs root to create a second user (useradd); run the suite as root to cover this");
            return None;
        }
        let name = format!("lt{tag}{}", std::process::id() % 100_000);
        let made = Command::new("useradd")
            .args([
                "--system",
                "--no-create-home",
                "--shell",
                "/usr/sbin/nologin",
            ])
            .arg(&name)
            .output();
        match made {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                println!("SKIP: useradd {name} failed: {}", stderr(&o));
                return None;
            }
            Err(e) => {
                println!("SKIP: cannot run useradd: {e}");
                return None;
            }
        }
        let user = nix::unistd::User::from_name(&name).ok().flatten();
        let Some(user) = user else {
            let _ = Command::new("userdel").arg(&name).status();
            println!("SKIP: user {name} created but not found");
            return None;
        };
        Some(TempUser {
            name,
            uid: user.uid.as_raw(),
            gid: user.gid.as_raw(),
        })
    }

    /// `leaktop args` run as this user (through `setpriv`), with `env`.
    fn leaktop(&self, bin: &Path, args: &[&str], env: &[(&str, &Path)]) -> Output {
        let mut cmd = Command::new("setpriv");
        cmd.arg(format!("--reuid={}", self.uid))
            .arg(format!("--regid={}", self.gid))
            .arg("--clear-groups")
            .arg(bin)
            .args(args)
            .env_remove("LEAKTOP_SOCKET_DIR")
            .env_remove("XDG_RUNTIME_DIR")
            .stdin(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.output().expect("run setpriv")
    }
}

impl Drop for TempUser {
    fn drop(&mut self) {
        let _ = Command::new("userdel").arg(&self.name).output();
    }
}

/// The `leaktop` binary where any user may run it (the build tree may be private).
fn world_runnable_leaktop() -> (tempfile::TempDir, PathBuf) {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let bin = dir.path().join("leaktop");
    std::fs::copy(env!("CARGO_BIN_EXE_leaktop"), &bin).unwrap();
    std::fs::set_permissions(&bin, std::fs::Permissions::from_mode(0o755)).unwrap();
    (dir, bin)
}

#[test]
#[ignore = "needs root to create a second user (useradd); scripts/test.sh runs it when run as root"]
fn as_root_another_user_is_refused_by_peer_credentials_and_told_what_to_do() {
    use std::os::unix::fs::PermissionsExt;
    let user = TempUser::create("peer").expect("a second user: this test runs as root");
    let (_keep, bin) = world_runnable_leaktop();
    let (mut child, baseline) = host_and_baseline();
    let pid = child.pid().to_string();
    let sock = sock_of(&child);

    // The socket reachable by anyone (as if a directory were shared): the agent itself
    // refuses the other uid, by SO_PEERCRED.
    std::fs::set_permissions(&child.socket_dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o777)).unwrap();
    let out = user.leaktop(
        &bin,
        &["dump", &pid],
        &[("LEAKTOP_SOCKET_DIR", &child.socket_dir)],
    );
    let err = assert_clean_error(&out, "other uid, socket reachable");
    assert!(err.contains("refused the connection"), "{err}");
    assert!(
        err.contains(&format!("you are uid {}", user.uid))
            && err.contains("run leaktop as uid 0 or as root"),
        "{err}"
    );
    // The host and agent never noticed.
    std::fs::set_permissions(&child.socket_dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    std::fs::set_permissions(&sock, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_healthy(&mut child, baseline, "a refused other user");

    // As the agent made it (0700 directory): the file system refuses first.
    let out = user.leaktop(
        &bin,
        &["dump", &pid],
        &[("LEAKTOP_SOCKET_DIR", &child.socket_dir)],
    );
    let err = assert_clean_error(&out, "other uid, private directory");
    assert!(
        err.contains(&format!(
            "process {pid} runs as uid 0 and you are uid {}",
            user.uid
        )),
        "{err}"
    );
    assert!(err.contains("run leaktop as uid 0 or as root"), "{err}");

    // Without a hint where the socket is: the process is someone else's, and we say so.
    for target in [pid.as_str(), "1"] {
        let out = user.leaktop(&bin, &["dump", target], &[]);
        let err = assert_clean_error(&out, &format!("other user's process {target}"));
        assert!(
            err.contains(&format!(
                "process {target} runs as uid 0 and you are uid {}",
                user.uid
            )),
            "{err}"
        );
    }
    // `list` as that user shows nothing of root's and does not fail.
    let out = user.leaktop(
        &bin,
        &["list"],
        &[("LEAKTOP_SOCKET_DIR", &child.socket_dir)],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(!stdout(&out).contains(&pid), "{}", stdout(&out));
}

/// Starts the host with `env` (no LEAKTOP_SOCKET_DIR unless given) and returns what the
/// agent said: `Err(agent-error line)` or `Ok(())` when it started.
fn agent_start(env: &[(&str, &Path)]) -> Result<(), String> {
    host_with_env(env).map(|_| ())
}

#[test]
fn squatted_or_loose_socket_directories_are_refused_not_reused() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let base = tempfile::tempdir().unwrap();
    let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;

    // Group/other permissions: refused, left as it was, no socket made in it.
    let loose = base.path().join("loose");
    std::fs::create_dir(&loose).unwrap();
    std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
    let err = agent_start(&[("LEAKTOP_SOCKET_DIR", &loose)]).expect_err("0755 dir");
    assert!(err.contains("its mode is 0755"), "{err}");
    assert_eq!(mode(&loose), 0o755);
    assert_eq!(std::fs::read_dir(&loose).unwrap().count(), 0);

    // A symlink to a private directory (someone may repoint it later): refused.
    let private = base.path().join("private");
    std::fs::create_dir(&private).unwrap();
    std::fs::set_permissions(&private, std::fs::Permissions::from_mode(0o700)).unwrap();
    let link = base.path().join("link");
    std::os::unix::fs::symlink(&private, &link).unwrap();
    let err = agent_start(&[("LEAKTOP_SOCKET_DIR", &link)]).expect_err("symlink");
    assert!(err.contains("symbolic link"), "{err}");
    assert_eq!(std::fs::read_dir(&private).unwrap().count(), 0);

    // Squatting the default place ($XDG_RUNTIME_DIR/leaktop, like /tmp/leaktop-<uid>):
    // planted before the agent starts, by another user (root can chown) or wide open.
    let runtime = base.path().join("run");
    std::fs::create_dir(&runtime).unwrap();
    let squatted = runtime.join("leaktop");
    std::fs::create_dir(&squatted).unwrap();
    std::fs::set_permissions(&squatted, std::fs::Permissions::from_mode(0o700)).unwrap();
    if is_root() {
        nix::unistd::chown(&squatted, Some(nix::unistd::Uid::from_raw(65534)), None).unwrap();
        let err = agent_start(&[("XDG_RUNTIME_DIR", &runtime)]).expect_err("squatted");
        assert!(err.contains("owned by uid 65534"), "{err}");
        nix::unistd::chown(&squatted, Some(nix::unistd::getuid()), None).unwrap();
    } else {
        println!("SKIP (part): a directory owned by another uid needs root to chown");
    }
    std::fs::set_permissions(&squatted, std::fs::Permissions::from_mode(0o777)).unwrap();
    let err = agent_start(&[("XDG_RUNTIME_DIR", &runtime)]).expect_err("0777 squat");
    assert!(err.contains("its mode is 0777"), "{err}");
    assert_eq!(
        mode(&squatted),
        0o777,
        "the agent 'fixed' a planted directory"
    );

    // The same place, made by the agent itself: private, and the socket 0600.
    std::fs::remove_dir(&squatted).unwrap();
    agent_start(&[("XDG_RUNTIME_DIR", &runtime)]).expect("fresh directory");
    assert_eq!(mode(&squatted), 0o700);
}
