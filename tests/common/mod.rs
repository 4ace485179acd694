//! Shared helpers of the end-to-end tests: building fixture programs, running children
//! that are always killed, running the real `leaktop` binary.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
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
    let target = workspace_root().join("target").join("fixtures");
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

/// A child process that is killed and reaped when the guard drops, even on panic.
pub struct ChildGuard {
    pub child: Child,
    pub socket_dir: PathBuf,
    stdout: Option<BufReader<std::process::ChildStdout>>,
}

impl ChildGuard {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Waits for the fixture's `ready` line on stdout.
    pub fn wait_ready(&mut self) {
        let out = self.stdout.as_mut().expect("stdout piped");
        let mut line = String::new();
        loop {
            line.clear();
            let n = out.read_line(&mut line).expect("read child stdout");
            assert!(n > 0, "child exited before it was ready");
            if line.trim() == "ready" {
                return;
            }
        }
    }

    /// Reads the next stdout line.
    pub fn read_line(&mut self) -> String {
        let out = self.stdout.as_mut().expect("stdout piped");
        let mut line = String::new();
        out.read_line(&mut line).expect("read child stdout");
        line
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

/// Like [`spawn_child`], with extra environment variables.
pub fn spawn_child_env(bin: &Path, args: &[&str], env: &[(&str, &str)]) -> ChildGuard {
    let socket_dir = socket_dir();
    let mut child = Command::new(bin)
        .args(args)
        .envs(env.iter().copied())
        .env("LEAKTOP_SOCKET_DIR", &socket_dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {}: {e}", bin.display()));
    let stdout = child.stdout.take().map(BufReader::new);
    ChildGuard {
        child,
        socket_dir,
        stdout,
    }
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
