//! Shared helpers of the end-to-end tests: building fixture programs, running children
//! that are always killed, running the real `leaktop` binary.
#![allow(dead_code)]

pub mod host;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Profile {
    Debug,
    Release,
}

static BUILD_LOCK: Mutex<()> = Mutex::new(());

/// Builds (once; cargo makes later calls no-ops) a bin of the `leaktop-fixtures` crate
/// and returns its path. Fixtures use their own target dir so a build from inside a test
/// never waits on the lock of the build that runs the tests.
pub fn fixture_bin(name: &str, profile: Profile) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let target = fixtures_target_dir();
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "-p", "leaktop-fixtures", "--bin", name])
        .env("CARGO_TARGET_DIR", &target);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    let status = cmd.status().expect("run cargo build for a fixture");
    assert!(status.success(), "building fixture {name} failed");
    target
        .join(if profile == Profile::Release {
            "release"
        } else {
            "debug"
        })
        .join(name)
}

/// The lines a child prints, read on a thread of their own so a wait can time out.
fn line_reader(out: std::process::ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A child process that is killed and reaped when the guard drops, even on panic. Its
/// stdout is read by a thread, so every read has a timeout and a silent child cannot hang
/// a test.
pub struct ChildGuard {
    pub child: Child,
    /// Where its agent socket lives (a fresh private directory).
    pub socket_dir: PathBuf,
    lines: Option<mpsc::Receiver<String>>,
    /// Piped only for children started with [`spawn_child_with_stdin`].
    stdin: Option<std::process::ChildStdin>,
}

/// How long a fixture may take to say `ready`.
pub const READY_TIMEOUT: Duration = Duration::from_secs(60);

impl ChildGuard {
    /// Spawns `cmd` with stdout piped and its agent socket in a fresh private directory.
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        Self::spawn_with(cmd, false)
    }

    /// Like [`ChildGuard::spawn`], with a stdin pipe when `piped_stdin`.
    pub fn spawn_with(cmd: &mut Command, piped_stdin: bool) -> ChildGuard {
        let socket_dir = socket_dir();
        let mut child = cmd
            .env("LEAKTOP_SOCKET_DIR", &socket_dir)
            .stdin(if piped_stdin {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let lines = child.stdout.take().map(line_reader);
        let stdin = child.stdin.take();
        ChildGuard {
            child,
            socket_dir,
            lines,
            stdin,
        }
    }

    /// Sends one command line to the child and waits for its `done` line.
    pub fn command(&mut self, cmd: &str) {
        self.command_output(cmd);
    }

    /// Sends one command line and returns the lines the child printed before its `done`.
    pub fn command_output(&mut self, cmd: &str) -> Vec<String> {
        use std::io::Write;
        let stdin = self
            .stdin
            .as_mut()
            .expect("stdin piped (spawn_child_with_stdin)");
        writeln!(stdin, "{cmd}").expect("write child stdin");
        stdin.flush().expect("flush child stdin");
        let mut lines = Vec::new();
        loop {
            let line = self.read_line(READY_TIMEOUT);
            if line.starts_with("done") {
                return lines;
            }
            lines.push(line);
        }
    }

    /// Spawns `cmd` as it is (its environment untouched: no socket directory is set),
    /// stdout piped.
    pub fn spawn_unmanaged(cmd: &mut Command) -> ChildGuard {
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let lines = child.stdout.take().map(line_reader);
        assert!(lines.is_some(), "piped stdout");
        ChildGuard {
            child,
            socket_dir: PathBuf::new(),
            lines,
            stdin: None,
        }
    }

    /// Spawns the program at `path` with no arguments.
    pub fn spawn_path(path: &Path) -> ChildGuard {
        Self::spawn(&mut Command::new(path))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the fixture's `ready` line on stdout.
    pub fn wait_ready(&mut self) {
        self.read_line_starting("ready", READY_TIMEOUT);
    }

    /// The next line of the child's stdout; panics after `timeout` or if stdout closes.
    pub fn read_line(&mut self, timeout: Duration) -> String {
        let rx = self.lines.as_ref().expect("stdout was not piped");
        match rx.recv_timeout(timeout) {
            Ok(line) => line,
            Err(e) => {
                let status = self.child.try_wait();
                panic!(
                    "no line from child {} within {timeout:?} ({e}); exit status: {status:?}",
                    self.child.id()
                )
            }
        }
    }

    /// The next stdout line that starts with `prefix`, with the prefix removed.
    pub fn read_line_starting(&mut self, prefix: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = self.read_line(left);
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }

    /// Every stdout line that has arrived so far, without waiting.
    pub fn drain_lines(&mut self) -> Vec<String> {
        let rx = self.lines.as_ref().expect("stdout was not piped");
        rx.try_iter().collect()
    }

    /// Kills the child now and waits for it to be gone.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        self.kill();
    }
}

/// The socket the agent of `pid` binds in `dir` (its name carries the pid as the process
/// sees it, its pid namespace and start time).
pub fn agent_socket(dir: &Path, pid: u32) -> PathBuf {
    let name = leaktop_agent::paths::SocketName::of_pid(pid)
        .unwrap_or_else(|| panic!("process {pid} is gone"));
    dir.join(name.file_name())
}

/// A private socket directory per test, so parallel tests never see each other.
pub fn socket_dir() -> PathBuf {
    let dir = tempfile::Builder::new()
        .prefix("lt")
        .tempdir_in("/tmp")
        .expect("temp dir")
        .keep();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
    dir
}

/// Starts `bin` with `args`, its agent socket in a fresh private directory.
pub fn spawn_child(bin: &Path, args: &[&str]) -> ChildGuard {
    spawn_child_env(bin, args, &[])
}

/// Like [`spawn_child`], with a stdin pipe for [`ChildGuard::command`].
pub fn spawn_child_with_stdin(bin: &Path, args: &[&str]) -> ChildGuard {
    ChildGuard::spawn_with(Command::new(bin).args(args), true)
}

/// Like [`spawn_child`], with extra environment variables.
pub fn spawn_child_env(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    ChildGuard::spawn(Command::new(bin).args(args).envs(env.iter().copied()))
}

/// Runs the real `leaktop` binary with the socket directory of `child`.
pub fn leaktop(socket_dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_leaktop"))
        .args(args)
        .env("LEAKTOP_SOCKET_DIR", socket_dir)
        .stdin(Stdio::null())
        .output()
        .expect("run leaktop")
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// Polls `f` until it returns Some or `timeout` passes.
pub fn eventually<T>(timeout: Duration, mut f: impl FnMut() -> Option<T>) -> Option<T> {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return Some(v);
        }
        if start.elapsed() > timeout {
            return None;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until the agent of `pid` has been up `up` (its uptime, as `leaktop export`
/// reports it): the history a check decides on covers that long.
pub fn wait_for_uptime(socket_dir: &Path, pid: u32, up: Duration) {
    let pid = pid.to_string();
    let uptime = || {
        let out = leaktop(socket_dir, &["export", &pid]);
        stdout(&out)
            .lines()
            .find_map(|l| l.strip_prefix("leaktop_uptime_seconds "))
            .and_then(|v| v.trim().parse::<f64>().ok())
    };
    eventually(Duration::from_secs(60), || {
        uptime().filter(|s| *s >= up.as_secs_f64()).map(|_| ())
    })
    .unwrap_or_else(|| panic!("the agent of {pid} was not up {up:?} within 60 s"));
}

/// `file:line:column` of the call that starts with `call` on the line of `src` that
/// carries `marker` (column 1-based, as `std::panic::Location` reports it).
pub fn location_of(src_rel: &str, marker: &str, call: &str) -> (String, u32, u32) {
    let text = std::fs::read_to_string(workspace_root().join(src_rel)).expect("read source");
    for (i, line) in text.lines().enumerate() {
        if line.contains(marker) {
            let col = line
                .find(call)
                .unwrap_or_else(|| panic!("{call} not on line {}", i + 1));
            return (src_rel.to_string(), i as u32 + 1, col as u32 + 1);
        }
    }
    panic!("marker {marker} not in {src_rel}");
}

/// Target directory of fixture builds.
pub fn fixtures_target_dir() -> PathBuf {
    workspace_root().join("target").join("fixtures")
}

/// Source file of a fixture bin.
pub fn fixture_source(name: &str) -> PathBuf {
    workspace_root()
        .join("tests/fixtures/src/bin")
        .join(format!("{name}.rs"))
}

/// Runs a tool (objcopy, …) and panics with its stderr if it fails.
pub fn run_tool(program: &str, args: &[&std::ffi::OsStr]) {
    let out = Command::new(program)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program} (install binutils?): {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

static LEAKTOP_RELEASE: Mutex<Option<PathBuf>> = Mutex::new(None);

/// The `leaktop` binary built in release (opt-level 3, `debug = "limited"`, as users ship
/// it), in the fixtures' target dir so the build never waits on the outer cargo's lock.
/// Its hidden `__demo-child` mode runs the seed scenarios.
pub fn leaktop_release() -> PathBuf {
    let mut built = LEAKTOP_RELEASE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(p) = built.as_ref() {
        return p.clone();
    }
    let target = fixtures_target_dir();
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "--release",
            "-p",
            "leaktop",
            "--bin",
            "leaktop",
        ])
        .arg("--target-dir")
        .arg(&target)
        .status()
        .expect("run cargo build --release for leaktop");
    assert!(
        status.success(),
        "release build of leaktop failed: {status}"
    );
    let bin = target.join("release").join("leaktop");
    *built = Some(bin.clone());
    bin
}

/// Builds a debug bin of `leaktop-fixtures` with `--cfg tokio_unstable` and the given
/// fixture features (tokio's unstable APIs, e.g. runtime hooks), in its own target dir
/// (`target/fixtures-unstable`): other RUSTFLAGS in a shared dir would rebuild everything
/// each time. The first build compiles the fixture's dependencies once (about a minute of
/// CPU); later ones only what changed.
pub fn fixture_bin_unstable(name: &str, features: &str) -> PathBuf {
    let _guard = BUILD_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let target = workspace_root().join("target").join("fixtures-unstable");
    let rustflags = match std::env::var("RUSTFLAGS") {
        Ok(f) if !f.trim().is_empty() => format!("{f} --cfg tokio_unstable"),
        _ => "--cfg tokio_unstable".to_string(),
    };
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args(["build", "--quiet", "-p", "leaktop-fixtures", "--bin", name])
        .args(["--features", features])
        .env("CARGO_TARGET_DIR", &target)
        .env("RUSTFLAGS", rustflags)
        .status()
        .expect("run cargo build for a fixture");
    assert!(
        status.success(),
        "building fixture {name} (tokio_unstable) failed"
    );
    target.join("debug").join(name)
}
