//! `leaktop demo`: the scenarios as a child process (see [`crate::demo`]), and leaktop on
//! it: the live view, or one report once the agent has enough history to judge.

use std::process::Stdio;
use std::time::{Duration, Instant};

use super::{drain, Until, SNAPSHOT_PATIENCE};
use crate::attach::{AttachError, Connection};
use crate::demo::{self, ChildGuard};
use crate::model::Session;
use crate::source::{LiveSource, Symbolize};

/// How often the agent of a demo that prints a report samples, so a report after a 2 s
/// warm-up has a growth curve to judge.
pub const ONCE_SAMPLE_MS: u64 = 100;

/// How long the demo program may take to start its agent.
const AGENT_START: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("{0}")]
    Scenario(String),
    #[error("cannot start the demo program: {0}")]
    Spawn(std::io::Error),
    #[error("the demo program (pid {pid}) did not start its agent: {source}")]
    Agent { pid: u32, source: AttachError },
    #[error(transparent)]
    Attach(#[from] AttachError),
}

/// The running demo program, killed and reaped when dropped.
pub struct Demo {
    pub pid: u32,
    _child: ChildGuard,
}

/// Starts the demo program with `scenarios` (their fixed twins when `fixed`) and waits
/// for its agent. `screen`: the live view will own the terminal, so the child's stderr
/// goes to the log file; otherwise its agent samples every [`ONCE_SAMPLE_MS`].
pub fn start(scenarios: &[String], fixed: bool, screen: bool) -> Result<Demo, DemoError> {
    demo::select(scenarios).map_err(DemoError::Scenario)?;
    let stderr = if screen {
        crate::tui::log::append()
            .map(Stdio::from)
            .unwrap_or_else(|_| Stdio::null())
    } else {
        Stdio::inherit()
    };
    let extra = if screen {
        Vec::new()
    } else {
        vec![format!("--sample-ms={ONCE_SAMPLE_MS}")]
    };
    let child =
        demo::spawn_child_with(scenarios, fixed, &extra, stderr).map_err(DemoError::Spawn)?;
    let child = ChildGuard(child);
    let pid = child.0.id();
    wait_for_agent(pid, AGENT_START).map_err(|source| DemoError::Agent { pid, source })?;
    Ok(Demo { pid, _child: child })
}

/// Waits until the agent of `pid` answers, up to `timeout`.
pub fn wait_for_agent(pid: u32, timeout: Duration) -> Result<(), AttachError> {
    let start = Instant::now();
    loop {
        match Connection::attach(pid) {
            Ok(_) => return Ok(()),
            Err(e) if start.elapsed() >= timeout => return Err(e),
            Err(_) => std::thread::sleep(Duration::from_millis(20)),
        }
    }
}

/// Watches the demo until the agent's history covers `warmup` (the report judges over
/// it), symbolized: what `leaktop demo --once` reports on.
pub fn warm_up(demo: &Demo, warmup: Duration) -> Result<Session, DemoError> {
    let interval = Duration::from_millis(ONCE_SAMPLE_MS);
    let mut source = Symbolize::new(LiveSource::attach(demo.pid, interval)?);
    let mut session = Session::new();
    drain(
        &mut source,
        &mut session,
        Until::Observed {
            ms: warmup.as_millis().min(u64::MAX as u128) as u64,
            patience: warmup + SNAPSHOT_PATIENCE,
        },
    );
    Ok(session)
}
