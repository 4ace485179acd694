//! Helpers shared by the end-to-end tests: building fixture binaries, and child processes
//! that are killed whatever happens to the test.
#![allow(dead_code)] // each test crate uses its own subset

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::Mutex;
use std::time::Duration;

/// Cargo profile a fixture is built with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Profile {
    /// `dev`: unoptimised, full debug info.
    Debug,
    /// `release`: opt-level 3 with the workspace's `debug = "limited"`.
    Release,
}

impl Profile {
    fn dir(self) -> &'static str {
        match self {
            Profile::Debug => "debug",
            Profile::Release => "release",
        }
    }
}

/// The workspace root (the `leaktop` package lives there).
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Target directory of fixture builds: separate from the one running the tests, so a build
/// from inside a test never waits for the outer cargo's lock.
pub fn fixtures_target_dir() -> PathBuf {
    workspace_root().join("target").join("fixtures")
}

/// Source file of a fixture bin.
pub fn fixture_source(name: &str) -> PathBuf {
    workspace_root()
        .join("tests/fixtures/src/bin")
        .join(format!("{name}.rs"))
}

static BUILT: Mutex<Option<HashSet<(String, Profile)>>> = Mutex::new(None);

/// Builds the bin `name` of package `leaktop-fixtures` (once per test process; cargo makes
/// later builds no-ops) and returns the path of the executable.
pub fn fixture_bin(name: &str, profile: Profile) -> PathBuf {
    let mut built = BUILT.lock().unwrap_or_else(|e| e.into_inner());
    let built = built.get_or_insert_with(HashSet::new);
    let target = fixtures_target_dir();
    let bin = target.join(profile.dir()).join(name);
    if built.contains(&(name.to_owned(), profile)) {
        return bin;
    }
    let mut cmd = Command::new(env!("CARGO"));
    cmd.current_dir(workspace_root())
        .args(["build", "--quiet", "-p", "leaktop-fixtures", "--bin", name])
        .arg("--target-dir")
        .arg(&target);
    if profile == Profile::Release {
        cmd.arg("--release");
    }
    let status = cmd
        .status()
        .unwrap_or_else(|e| panic!("cannot run cargo to build fixture {name}: {e}"));
    assert!(
        status.success(),
        "building fixture {name} ({profile:?}) failed: {status}"
    );
    assert!(
        bin.exists(),
        "fixture {name} built but {} is missing",
        bin.display()
    );
    built.insert((name.to_owned(), profile));
    bin
}

/// A child process that is killed and reaped when dropped, so a failing test leaves
/// nothing behind.
pub struct ChildGuard {
    child: Child,
    lines: Option<mpsc::Receiver<String>>,
}

impl ChildGuard {
    /// Spawns `cmd` with stdout piped (read it with [`ChildGuard::read_line`]).
    pub fn spawn(cmd: &mut Command) -> ChildGuard {
        let mut child = cmd
            .stdout(Stdio::piped())
            .stdin(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot spawn {cmd:?}: {e}"));
        let lines = child.stdout.take().map(|out| {
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
        });
        ChildGuard { child, lines }
    }

    /// Spawns the program at `path` with no arguments.
    pub fn spawn_path(path: &Path) -> ChildGuard {
        Self::spawn(&mut Command::new(path))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
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
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.read_line(left);
            if let Some(rest) = line.strip_prefix(prefix) {
                return rest.to_owned();
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
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
