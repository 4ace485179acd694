//! `leaktop demo`: the seeds' goroutine leaks as small tokio programs, run as a child
//! process (the `leaktop` binary re-executed in a hidden mode, linked with the agent), so a
//! newcomer sees the whole tool work with one command. Each scenario has a fixed twin that
//! differs only by the fix its seed describes.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

mod scenarios;

/// The channels the scenarios use: tokio's API (`leaktop_agent::sync` mirrors
/// `tokio::sync`), observed by the agent. Moving a program over is this one line.
pub(crate) use leaktop_agent::sync as chan;

pub use scenarios::{Pace, Scenario, SCENARIOS};

/// Hidden subcommand that runs the scenarios.
pub const CHILD_COMMAND: &str = "__demo-child";

/// Finds scenarios by name; an unknown name is an error listing the known ones.
pub fn select(names: &[String]) -> Result<Vec<&'static Scenario>, String> {
    if names.is_empty() {
        return Ok(SCENARIOS.iter().collect());
    }
    names
        .iter()
        .map(|n| {
            SCENARIOS
                .iter()
                .find(|s| s.name == n.as_str())
                .ok_or_else(|| {
                    format!(
                        "unknown scenario {n:?}; known: {}",
                        SCENARIOS
                            .iter()
                            .map(|s| s.name)
                            .collect::<Vec<_>>()
                            .join(", ")
                    )
                })
        })
        .collect()
}

/// `leaktop demo --list`.
pub fn list_text() -> String {
    let mut out = String::new();
    for s in SCENARIOS {
        out.push_str(&format!(
            "{:<17} {}\n{:<17} seed {}; fixed twin: {}\n",
            s.name, s.story, "", s.seed, s.fix
        ));
    }
    out
}

/// Starts the demo program as a child of this process, with `extra` child flags
/// (`--tick-ms=`, `--sample-ms=`) and its stderr sent to `stderr` (the live view sends it
/// to its log file, so it cannot scribble over the screen).
pub fn spawn_child_with(
    names: &[String],
    fixed: bool,
    extra: &[String],
    stderr: Stdio,
) -> std::io::Result<Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.arg(CHILD_COMMAND).args(names).args(extra);
    if fixed {
        cmd.arg("--fixed");
    }
    cmd.stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
}

/// Kills and reaps a child when dropped, whatever happened.
pub struct ChildGuard(pub Child);

impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Arguments of the hidden child mode (`leaktop __demo-child [SCENARIO…] [--fixed]
/// [--tick-ms=N] [--sample-ms=N]`).
#[derive(clap::Parser, Debug)]
#[command(name = "leaktop __demo-child", no_binary_name = true)]
struct ChildArgs {
    /// Scenarios to run (default: all).
    names: Vec<String>,
    /// Run the fixed twins.
    #[arg(long)]
    fixed: bool,
    /// One request (or job, or connection) every N ms.
    #[arg(long = "tick-ms", value_name = "N")]
    tick_ms: Option<u64>,
    /// History sample interval of the agent, ms (tests use short ones).
    #[arg(long = "sample-ms", value_name = "N")]
    sample_ms: Option<u64>,
}

impl ChildArgs {
    fn pace(&self) -> Pace {
        self.tick_ms.map_or_else(Pace::default, |ms| {
            Pace::with_tick(Duration::from_millis(ms.max(1)))
        })
    }

    fn sample(&self) -> Option<Duration> {
        self.sample_ms.map(|ms| Duration::from_millis(ms.max(10)))
    }
}

/// The demo program itself (runs in the child): every selected scenario at once.
pub fn run_child(args: &[String]) -> ! {
    let args = match <ChildArgs as clap::Parser>::try_parse_from(args) {
        Ok(a) => a,
        Err(e) => {
            eprintln!("leaktop demo: {e}");
            std::process::exit(2);
        }
    };
    let selected = match select(&args.names) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("leaktop demo: {e}");
            std::process::exit(2);
        }
    };
    raise_fd_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("leaktop demo: cannot start a tokio runtime: {e}");
            std::process::exit(2);
        }
    };
    rt.block_on(async move {
        let mut agent = leaktop_agent::Builder::new();
        if let Some(every) = args.sample() {
            agent = agent.sample_interval(every);
        }
        if let Err(e) = agent.start() {
            eprintln!("leaktop demo: agent did not start: {e}");
            std::process::exit(2);
        }
        let mut running = tokio::task::JoinSet::new();
        let pace = args.pace();
        for s in selected {
            running.spawn((s.run)(args.fixed, pace));
        }
        while running.join_next().await.is_some() {}
    });
    std::process::exit(0)
}

/// Leaky scenarios hold sockets open; let them, up to the hard limit.
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard.min(65_536), hard);
    }
}
