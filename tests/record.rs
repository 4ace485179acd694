//! End to end: `leaktop record` on a real child that grows on command, then `leaktop dump`
//! of the file at the end and at a middle time, compared with what live dumps showed; a
//! recorder killed or starved of disk leaves a file that still replays; damage and newer
//! versions are reported clearly.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Output, Stdio};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;

const SRC: &str = "tests/fixtures/src/bin/grow_on_command.rs";

/// A child killed and reaped when dropped, with its stdin and stdout piped.
struct Piped {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Option<BufReader<ChildStdout>>,
}

impl Piped {
    fn spawn(mut cmd: Command) -> Piped {
        let mut child = cmd
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn child");
        Piped {
            stdin: child.stdin.take(),
            stdout: child.stdout.take().map(BufReader::new),
            child,
        }
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.stdout
            .as_mut()
            .expect("stdout")
            .read_line(&mut line)
            .expect("read child stdout");
        line.trim().to_string()
    }

    fn say(&mut self, cmd: &str) -> String {
        let stdin = self.stdin.as_mut().expect("stdin");
        writeln!(stdin, "{cmd}").expect("write child stdin");
        stdin.flush().expect("flush");
        self.line()
    }

    fn signal(&self, sig: nix::sys::signal::Signal) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let _ = nix::sys::signal::kill(pid, sig);
    }

    /// Waits for the exit (at most `timeout`) and returns the output.
    fn wait(mut self, timeout: Duration) -> Output {
        let ok = eventually(timeout, || self.child.try_wait().ok().flatten());
        assert!(ok.is_some(), "child did not exit within {timeout:?}");
        let status = self.child.wait().expect("wait");
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        use std::io::Read;
        if let Some(mut o) = self.stdout.take() {
            let _ = o.read_to_end(&mut stdout);
        }
        if let Some(mut e) = self.child.stderr.take() {
            let _ = e.read_to_end(&mut stderr);
        }
        Output {
            status,
            stdout,
            stderr,
        }
    }
}

impl Drop for Piped {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The grow fixture, ready, with its own socket directory.
fn grow_child() -> (Piped, PathBuf) {
    let bin = fixture_bin("grow_on_command", Profile::Debug);
    let dir = socket_dir();
    let mut cmd = Command::new(bin);
    cmd.env("LEAKTOP_SOCKET_DIR", &dir);
    let mut child = Piped::spawn(cmd);
    assert_eq!(child.line(), "ready");
    (child, dir)
}

/// `leaktop record` as a child.
fn recorder(socket_dir: &Path, args: &[&str]) -> Piped {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leaktop"));
    cmd.arg("record")
        .args(args)
        .env("LEAKTOP_SOCKET_DIR", socket_dir);
    Piped::spawn(cmd)
}

fn json(o: &Output) -> serde_json::Value {
    assert!(o.status.success(), "leaktop failed: {}", stderr(o));
    serde_json::from_slice(&o.stdout).unwrap_or_else(|e| panic!("{e}: {}", stdout(o)))
}

fn site(v: &serde_json::Value, marker: &str) -> serde_json::Value {
    let loc = location_of(SRC, marker, "leaktop_agent::spawn");
    v["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .find(|s| s["site"]["file"] == loc.0.as_str() && s["site"]["line"] == loc.1)
        .unwrap_or_else(|| panic!("site {marker} missing in {v:#}"))
        .clone()
}

/// The counters of a site that do not depend on when they were read.
fn counts(s: &serde_json::Value) -> Vec<serde_json::Value> {
    [
        "live",
        "running",
        "blocked_send",
        "blocked_recv",
        "spawned",
        "completed",
    ]
    .iter()
    .map(|k| s[k].clone())
    .collect()
}

fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Snapshots in the recording so far (it is readable while being written).
fn snapshots_in(path: &Path) -> usize {
    let Ok(mut r) = leaktop::record::Reader::open(path) else {
        return 0;
    };
    leaktop::record::reader::summarize(&mut r)
        .snapshot_times
        .len()
}

fn live_dump_until(dir: &Path, pid: u32, grow_live: u64) -> serde_json::Value {
    eventually(Duration::from_secs(10), || {
        let v = json(&leaktop(
            dir,
            &["dump", &pid.to_string(), "--format", "json"],
        ));
        (site(&v, "// site: grow")["live"] == grow_live).then_some(v)
    })
    .unwrap_or_else(|| panic!("live dump never showed {grow_live} grow tasks"))
}

#[test]
fn a_recording_replays_what_the_live_dumps_showed_at_the_end_and_in_the_middle() {
    let (mut child, dir) = grow_child();
    let pid = child.pid();
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("s.ltrec");
    let file_s = file.to_str().unwrap();
    let rec = recorder(
        &dir,
        &[&pid.to_string(), "-o", file_s, "--interval", "100ms", "-q"],
    );
    eventually(Duration::from_secs(10), || {
        (snapshots_in(&file) >= 2).then_some(())
    })
    .expect("the recording got its first snapshots");

    assert_eq!(child.say("spawn 10"), "ok 10");
    let first = live_dump_until(&dir, pid, 10);
    let wait_snapshots = |more: usize| {
        let n = snapshots_in(&file);
        eventually(Duration::from_secs(10), || {
            (snapshots_in(&file) >= n + more).then_some(())
        })
        .expect("the recording kept getting snapshots");
    };
    wait_snapshots(3);
    let middle_unix_ms = unix_ms();
    wait_snapshots(3);
    assert_eq!(child.say("spawn 25"), "ok 35");
    let second = live_dump_until(&dir, pid, 35);
    let n = snapshots_in(&file);
    eventually(Duration::from_secs(10), || {
        (snapshots_in(&file) >= n + 3).then_some(())
    })
    .expect("the recording went on");
    rec.signal(nix::sys::signal::Signal::SIGINT);
    let rec_out = rec.wait(Duration::from_secs(10));
    assert!(rec_out.status.success(), "{}", stderr(&rec_out));

    // At the end: what the last live dump showed.
    let end = json(&leaktop(&dir, &["dump", file_s, "--format", "json"]));
    assert_eq!(end["process"]["pid"], second["process"]["pid"]);
    assert_eq!(end["process"]["exe"], second["process"]["exe"]);
    assert_eq!(end["process"]["build_id"], second["process"]["build_id"]);
    assert_eq!(
        counts(&site(&end, "// site: grow")),
        counts(&site(&second, "// site: grow"))
    );
    let churn = site(&end, "// site: churn");
    assert!(
        churn["spawned"].as_u64() >= site(&second, "// site: churn")["spawned"].as_u64(),
        "{churn}"
    );
    assert_eq!(
        end["sites"].as_array().unwrap().len(),
        second["sites"].as_array().unwrap().len()
    );

    // In the middle: what the first live dump showed.
    let meta = {
        let mut r = leaktop::record::Reader::open(&file).unwrap();
        leaktop::record::reader::summarize(&mut r).meta.unwrap()
    };
    let at = format!("{}ms", middle_unix_ms - meta.started_unix_ms);
    let mid = json(&leaktop(
        &dir,
        &["dump", file_s, "--format", "json", "--at", &at],
    ));
    assert_eq!(
        counts(&site(&mid, "// site: grow")),
        counts(&site(&first, "// site: grow"))
    );
    assert!(mid["exited"].is_null(), "{mid:#}");

    // The text report says which recording and when.
    let text = leaktop(&dir, &["dump", file_s, "--at", "0"]);
    assert!(text.status.success(), "{}", stderr(&text));
    let head = stdout(&text);
    assert!(
        head.starts_with(&format!("recording {file_s} at 0.0s of ")),
        "{head}"
    );

    // Too little of a recording to decide on: the advice fits a file, not a process
    // (regression: it said "run with --for", which a recording refuses).
    let short = leaktop(&dir, &["check", file_s, "--window", "1h"]);
    assert_eq!(short.status.code(), Some(2), "{}", stderr(&short));
    let advice = stdout(&short);
    assert!(advice.contains("pick a later --at"), "{advice}");
    assert!(!advice.contains("--for"), "{advice}");

    // A live process still dumps live, and the two agree on the target.
    drop(child);
    let after = json(&leaktop(&dir, &["dump", file_s, "--format", "json"]));
    assert_eq!(after["process"]["pid"], pid);
}

#[test]
fn a_killed_recorder_leaves_a_file_that_replays_and_damage_is_reported_with_its_offset() {
    let (mut child, dir) = grow_child();
    let pid = child.pid();
    assert_eq!(child.say("spawn 7"), "ok 7");
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("killed.ltrec");
    let file_s = file.to_str().unwrap();
    let rec = recorder(
        &dir,
        &[&pid.to_string(), "-o", file_s, "--interval", "50ms", "-q"],
    );
    eventually(Duration::from_secs(10), || {
        (snapshots_in(&file) >= 5).then_some(())
    })
    .expect("snapshots recorded");
    rec.signal(nix::sys::signal::Signal::SIGKILL);
    let _ = rec.wait(Duration::from_secs(10));

    let v = json(&leaktop(&dir, &["dump", file_s, "--format", "json"]));
    assert_eq!(site(&v, "// site: grow")["live"], 7);

    // Cut in the middle of its last frame: a warning names the offset, the rest replays.
    let bytes = std::fs::read(&file).unwrap();
    let cut = out.path().join("cut.ltrec");
    std::fs::write(&cut, &bytes[..bytes.len() - 3]).unwrap();
    let o = leaktop(&dir, &["dump", cut.to_str().unwrap(), "--format", "json"]);
    assert_eq!(site(&json(&o), "// site: grow")["live"], 7);
    let warning = stderr(&o);
    assert!(warning.contains("cut off at byte"), "{warning}");

    // A flipped bit inside: the damage and its offset are reported.
    let mut flipped = bytes.clone();
    let at = bytes.len() - 5;
    flipped[at] ^= 0x10;
    let bad = out.path().join("flipped.ltrec");
    std::fs::write(&bad, &flipped).unwrap();
    let o = leaktop(&dir, &["dump", bad.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let warning = stderr(&o);
    assert!(
        warning.contains("damaged at byte") && warning.contains("checksum"),
        "{warning}"
    );
}

#[test]
fn a_full_disk_stops_the_recorder_with_a_clear_error_and_a_readable_file() {
    let (mut child, dir) = grow_child();
    let pid = child.pid();
    assert_eq!(child.say("spawn 3"), "ok 3");
    let out = tempfile::tempdir().unwrap();
    let file = out.path().join("full.ltrec");
    let file_s = file.to_str().unwrap();
    // RLIMIT_FSIZE makes writes past the limit fail (EFBIG) like a full disk (ENOSPC).
    const LIMIT: u64 = 2500;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_leaktop"));
    cmd.args([
        "record",
        &pid.to_string(),
        "-o",
        file_s,
        "--interval",
        "50ms",
    ])
    .env("LEAKTOP_SOCKET_DIR", &dir);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        use std::os::unix::process::CommandExt;
        cmd.pre_exec(|| {
            libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
            let lim = libc::rlimit {
                rlim_cur: LIMIT,
                rlim_max: LIMIT,
            };
            if libc::setrlimit(libc::RLIMIT_FSIZE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let rec = Piped::spawn(cmd);
    let o = rec.wait(Duration::from_secs(60));
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    let err = stderr(&o);
    assert!(
        err.contains(&format!("writing recording {file_s} failed after"))
            && err.contains("readable up to there"),
        "{err}"
    );
    let len = std::fs::metadata(&file).unwrap().len();
    assert!(len <= LIMIT, "{len}");
    // The half-written frame was cut off: the file is whole and replays.
    let d = leaktop(&dir, &["dump", file_s, "--format", "json"]);
    assert!(stderr(&d).is_empty(), "{}", stderr(&d));
    assert_eq!(site(&json(&d), "// site: grow")["live"], 3);
}

#[test]
fn bad_files_get_clear_errors() {
    let out = tempfile::tempdir().unwrap();
    let dir = out.path();
    let run = |args: &[&str]| leaktop(dir, args);

    // Recorded by a newer leaktop.
    let newer = dir.join("newer.ltrec");
    let mut header = leaktop::record::format::file_header_of(99).to_vec();
    header.extend_from_slice(&[0; 40]);
    std::fs::write(&newer, &header).unwrap();
    let o = run(&["dump", newer.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("recorded by a newer leaktop") && e.contains("version 99"),
        "{e}"
    );

    // Not a recording at all.
    let text = dir.join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let o = run(&["dump", text.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("is not a leaktop recording"),
        "{}",
        stderr(&o)
    );

    // Missing file.
    let o = run(&["dump", "./nope.ltrec"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope.ltrec"), "{}", stderr(&o));

    // Recording into an existing file is refused.
    let o = run(&["record", "1", "-o", text.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    assert_eq!(std::fs::read_to_string(&text).unwrap(), "hello");

    // A pid without an agent leaves no file behind.
    let none = dir.join("none.ltrec");
    let o = run(&["record", "1", "-o", none.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(!none.exists());
}

#[test]
fn a_recording_replays_with_symbols_after_the_recorded_binary_is_deleted() {
    // A private copy of a fixture whose handlers block on an instrumented channel, so the
    // agent captures their await chain.
    let built = fixture_bin("growth", Profile::Debug);
    let tmp = tempfile::tempdir().unwrap();
    let copy = tmp.path().join("growth-copy");
    std::fs::copy(&built, &copy).unwrap();
    let mut child = spawn_child_env(&copy, &["--chan", "--tick-ms", "50"], &[]);
    child.wait_ready();
    let pid = child.pid().to_string();
    let file = tmp.path().join("chain.ltrec");
    let file_s = file.to_str().unwrap();
    let o = leaktop(
        &child.socket_dir,
        &["record", &pid, "-o", file_s, "--duration", "1500ms", "-q"],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    child.kill();
    std::fs::remove_file(&copy).unwrap();

    // Nothing of the binary is left; the await chain still names the fixture's own fn,
    // with its file and line, from the symbols stored in the recording.
    let src = leaktop::record::RecordingSource::open(&file).unwrap();
    assert!(!copy.exists());
    let stacks = src.stack_symbols();
    assert!(!stacks.is_empty(), "no resolved stack in the recording");
    let line = location_of(
        "tests/fixtures/src/bin/growth.rs",
        "// site: reply_wait",
        "rx.await",
    )
    .1;
    let found = stacks
        .values()
        .flatten()
        .find(|f| f.function.contains("handle_request_chan"));
    let f = found.unwrap_or_else(|| panic!("no handle_request_chan frame in {stacks:#?}"));
    assert!(
        f.file.as_deref().is_some_and(|p| p.ends_with("growth.rs")),
        "{f:?}"
    );
    assert_eq!(f.line, Some(line), "{f:?}");
    assert_eq!(f.class, leaktop::frame::FrameClass::User);

    // And dump reads it like any recording.
    let d = leaktop(&child.socket_dir, &["dump", file_s]);
    assert!(d.status.success(), "{}", stderr(&d));
}

/// A tmux server of its own, killed on drop.
struct Tmux(String);

impl Tmux {
    fn run(&self, args: &[&str]) -> String {
        let o = Command::new("tmux")
            .args(["-L", &self.0])
            .args(args)
            .output()
            .expect("run tmux (apt-get install tmux)");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn wait_for(&self, what: &str, f: impl Fn(&str) -> bool) -> String {
        eventually(Duration::from_secs(15), || {
            let s = self.run(&["capture-pane", "-p"]);
            f(&s).then_some(s)
        })
        .unwrap_or_else(|| {
            panic!(
                "never saw {what}; screen:\n{}",
                self.run(&["capture-pane", "-p"])
            )
        })
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.0, "kill-server"])
            .output();
    }
}

#[test]
fn replay_in_a_real_terminal_seeks_with_its_keys_and_quits_cleanly() {
    use leaktop_agent::wire::{AgentHello, AgentMsg, Location, SiteKind, SiteStats, Snapshot};
    // A 30 s recording: one site whose live count is the second it was taken at.
    let tmp = tempfile::tempdir().unwrap();
    let file = tmp.path().join("t.ltrec");
    let mut rec =
        leaktop::record::Recorder::create(&file, &leaktop::record::RecordOptions::default())
            .unwrap();
    rec.write_msg_at(
        0,
        &AgentMsg::Hello(AgentHello {
            protocol: 1,
            agent_version: "0.1.0".into(),
            pid: 777,
            start_time_ticks: 1,
            exe: "/srv/replayed".into(),
            build_id: vec![],
            uid: 0,
            origin_unix_ms: 0,
            now_ms: 0,
            sample_interval_ms: 1000,
            history_len: 600,
            site_cap: 100,
        }),
    )
    .unwrap();
    rec.write_msg_at(
        0,
        &AgentMsg::Location {
            id: 1,
            loc: Location {
                file: "src/replayed.rs".into(),
                line: 42,
                column: 9,
            },
        },
    )
    .unwrap();
    for i in 1..=30u64 {
        let live = i * 100;
        let snap = Snapshot {
            seq: i,
            now_ms: i * 1000,
            sites: vec![SiteStats {
                site: 1,
                kind: Some(SiteKind::Spawn),
                live,
                spawned: live,
                ..Default::default()
            }],
            sites_seen: 1,
            ..Default::default()
        };
        rec.write_msg_at(i * 1000, &AgentMsg::Snapshot(snap))
            .unwrap();
    }
    rec.finish("test").unwrap();

    let tmux = Tmux(format!("ltrec{}", std::process::id()));
    let cmd = format!(
        "{} replay {} --paused; echo EXIT=$?; sleep 30",
        env!("CARGO_BIN_EXE_leaktop"),
        file.display()
    );
    tmux.run(&["new-session", "-d", "-x", "100", "-y", "20", &cmd]);
    // Starts paused at the first snapshot.
    tmux.wait_for("the replay at its first snapshot", |s| {
        s.contains("REPLAY") && s.contains("src/replayed.rs:42:9") && s.contains(" ‖ 1x")
    });
    tmux.run(&["send-keys", "G"]);
    tmux.wait_for("the end: 3000 live", |s| {
        s.contains("3,000") && s.contains("30s / 30s")
    });
    tmux.run(&["send-keys", ":", "1", "2", "s", "Enter"]);
    tmux.wait_for("12 s in: 1200 live", |s| {
        s.contains("1,200") && s.contains("12s / 30s")
    });
    tmux.run(&["send-keys", "Left"]);
    tmux.wait_for("one snapshot back: 1100 live", |s| s.contains("1,100"));
    tmux.run(&["send-keys", "q"]);
    tmux.wait_for("a clean exit", |s| s.contains("EXIT=0"));
}
