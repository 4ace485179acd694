//! One measurement: one workload, one variant, in this process (the suite runs every
//! measurement in a fresh process, so memory and warm-up never carry over).

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use leaktop_agent::wire::{self, AgentMsg};
use serde::{Deserialize, Serialize};

use crate::mem::rss_bytes;

/// How the workload is built and observed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Variant {
    /// tokio alone.
    Plain,
    /// leaktop-agent's spawn and channels, agent started, a client streaming at 1 s.
    Agent,
    /// tokio built with `--cfg tokio_unstable` and console-subscriber, a tokio-console
    /// gRPC client streaming updates (every 1 s, console-subscriber's default).
    Console,
}

impl Variant {
    pub const ALL: [Variant; 3] = [Variant::Plain, Variant::Agent, Variant::Console];

    pub fn name(self) -> &'static str {
        match self {
            Variant::Plain => "plain",
            Variant::Agent => "agent",
            Variant::Console => "console",
        }
    }

    pub fn parse(s: &str) -> Option<Variant> {
        Variant::ALL.into_iter().find(|v| v.name() == s)
    }
}

/// The benchmark workloads (issue 10).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Workload {
    Spawn,
    PingPong,
    FanIn,
    Park,
    Scale,
    Attach,
    Contention,
}

impl Workload {
    pub const ALL: [Workload; 7] = [
        Workload::Spawn,
        Workload::PingPong,
        Workload::FanIn,
        Workload::Park,
        Workload::Scale,
        Workload::Attach,
        Workload::Contention,
    ];

    pub fn name(self) -> &'static str {
        match self {
            Workload::Spawn => "spawn",
            Workload::PingPong => "ping-pong",
            Workload::FanIn => "fan-in",
            Workload::Park => "park",
            Workload::Scale => "scale",
            Workload::Attach => "attach",
            Workload::Contention => "contention",
        }
    }

    pub fn parse(s: &str) -> Option<Workload> {
        Workload::ALL.into_iter().find(|w| w.name() == s)
    }

    /// The main size: tasks, round trips or messages.
    pub fn size(self, quick: bool) -> usize {
        match (self, quick) {
            (Workload::Spawn, false) => 200_000,
            (Workload::Spawn, true) => 2_000,
            (Workload::PingPong, false) => 100_000,
            (Workload::PingPong, true) => 1_000,
            (Workload::FanIn, false) => FAN_IN_PRODUCERS * 2_000,
            (Workload::FanIn, true) => FAN_IN_PRODUCERS * 10,
            (Workload::Park, false) => 100_000,
            (Workload::Park, true) => 1_000,
            (Workload::Scale, false) => 1_000_000,
            (Workload::Scale, true) => 5_000,
            (Workload::Attach, false) => 100_000,
            (Workload::Attach, true) => 1_000,
            (Workload::Contention, false) => 200_000,
            (Workload::Contention, true) => 2_000,
        }
    }

    /// The variants this workload compares (console only where the suite has its build).
    pub fn variants(self) -> &'static [Variant] {
        match self {
            Workload::Spawn
            | Workload::PingPong
            | Workload::FanIn
            | Workload::Park
            | Workload::Contention => &Variant::ALL,
            // Snapshot size and build time are the agent's own; plain tokio is the memory
            // baseline. console-subscriber at a million tasks takes minutes and gigabytes.
            Workload::Scale => &[Variant::Plain, Variant::Agent],
            Workload::Attach => &[Variant::Agent],
        }
    }
}

pub const FAN_IN_PRODUCERS: usize = 200;
pub const FAN_IN_CAPACITY: usize = 256;
pub const SCALE_GROUPS: usize = 50;
/// Clients of the contention workload, and the workers it runs on.
pub const CONTENTION_CLIENTS: usize = 64;
pub const CONTENTION_WORKERS: usize = 8;
/// Time given to the agent's sampler (1 s) and console-subscriber's aggregator (1 s
/// publish interval) to take in parked tasks before memory is read.
const SETTLE: Duration = Duration::from_millis(1_200);
/// The same in quick (smoke) runs, whose memory numbers mean little.
const SETTLE_QUICK: Duration = Duration::from_millis(100);

/// One measured value.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Metric {
    pub name: String,
    pub unit: String,
    pub value: f64,
}

/// The result of one measurement.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Record {
    pub workload: Workload,
    pub variant: Variant,
    pub n: usize,
    pub metrics: Vec<Metric>,
}

impl Record {
    fn push(&mut self, name: &str, unit: &str, value: f64) {
        self.metrics.push(Metric {
            name: name.into(),
            unit: unit.into(),
            value,
        });
    }
}

/// What to run.
pub struct Spec {
    pub workload: Workload,
    pub variant: Variant,
    pub n: usize,
    /// The `leaktop` binary (attach workload).
    pub leaktop: Option<PathBuf>,
    /// Quick (smoke) run: shorter settling.
    pub quick: bool,
}

/// The variant's instrumentation, running.
struct Instrumentation {
    agent: Option<leaktop_agent::Agent>,
    socket_dir: Option<PathBuf>,
}

impl Instrumentation {
    fn start(variant: Variant) -> Result<Instrumentation, String> {
        match variant {
            Variant::Plain => Ok(Instrumentation {
                agent: None,
                socket_dir: None,
            }),
            Variant::Agent => {
                let dir = private_dir()?;
                let agent = leaktop_agent::Builder::new()
                    .socket_dir(&dir)
                    .start()
                    .map_err(|e| format!("cannot start the agent: {e}"))?;
                let me = Instrumentation {
                    agent: Some(agent),
                    socket_dir: Some(dir),
                };
                let socket = me.agent.as_ref().map(|a| a.socket_path().to_path_buf());
                crate::client::attach_agent(&socket.unwrap_or_default())?;
                Ok(me)
            }
            Variant::Console => start_console(),
        }
    }

    fn stop(self) {
        if let Some(a) = self.agent {
            a.shutdown();
        }
        if let Some(d) = self.socket_dir {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}

#[cfg(feature = "console")]
fn start_console() -> Result<Instrumentation, String> {
    if !cfg!(tokio_unstable) {
        return Err("the console variant needs RUSTFLAGS=\"--cfg tokio_unstable\"".into());
    }
    // A free loopback port, so runs never collide with a console on the default 6669.
    let port = std::net::TcpListener::bind(("127.0.0.1", 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot find a free port: {e}"))?
        .port();
    console_subscriber::ConsoleLayer::builder()
        .with_default_env()
        .server_addr((std::net::Ipv4Addr::LOCALHOST, port))
        .init();
    crate::client::attach_console(port)?;
    Ok(Instrumentation {
        agent: None,
        socket_dir: None,
    })
}

#[cfg(not(feature = "console"))]
fn start_console() -> Result<Instrumentation, String> {
    Err(
        "this leaktop-bench was built without the console variant: build it with \
         `--features console` and RUSTFLAGS=\"--cfg tokio_unstable\" (scripts/bench.sh does)"
            .into(),
    )
}

/// A fresh 0700 directory for the agent's socket.
fn private_dir() -> Result<PathBuf, String> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for i in 0..100u32 {
        let dir = base.join(format!("ltbench-{}-{i}", std::process::id()));
        match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot create {}: {e}", dir.display())),
        }
    }
    Err(format!(
        "cannot create a socket directory in {}",
        base.display()
    ))
}

fn runtime(workers: usize) -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(workers)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot build the tokio runtime: {e}"))
}

/// Runs `fut` as a task of the variant (the agent's spawn for the agent variant) and
/// waits for it.
fn drive<T: Send + 'static>(
    rt: &tokio::runtime::Runtime,
    variant: Variant,
    fut: impl std::future::Future<Output = T> + Send + 'static,
) -> T {
    rt.block_on(async move {
        match variant {
            Variant::Agent => leaktop_agent::spawn(fut).await,
            Variant::Plain | Variant::Console => tokio::spawn(fut).await,
        }
        .expect("the driver task panicked")
    })
}

/// Picks the workload module of the variant: `flavor!(variant, |m| body using m::...)`.
macro_rules! flavor {
    ($v:expr, |$m:ident| $body:expr) => {
        match $v {
            Variant::Agent => {
                use crate::flavors::agent as $m;
                $body
            }
            Variant::Plain | Variant::Console => {
                use crate::flavors::plain as $m;
                $body
            }
        }
    };
}

fn ns_per(d: Duration, n: usize) -> f64 {
    d.as_nanos() as f64 / n.max(1) as f64
}

fn per_task(after: u64, before: u64, n: usize) -> f64 {
    (after as f64 - before as f64) / n.max(1) as f64
}

/// Runs one measurement.
pub fn run(spec: &Spec) -> Result<Record, String> {
    let inst = Instrumentation::start(spec.variant)?;
    let workers = match spec.workload {
        Workload::Contention => CONTENTION_WORKERS,
        _ => 2,
    };
    let rt = runtime(workers)?;
    let mut rec = Record {
        workload: spec.workload,
        variant: spec.variant,
        n: spec.n,
        metrics: Vec::new(),
    };
    let n = spec.n.max(1);
    let v = spec.variant;
    let settle = if spec.quick { SETTLE_QUICK } else { SETTLE };
    match spec.workload {
        Workload::Spawn => {
            let d = flavor!(v, |m| {
                drive(&rt, v, m::spawn_storm(n / 10 + 1));
                drive(&rt, v, async move {
                    let t = Instant::now();
                    m::spawn_storm(n).await;
                    t.elapsed()
                })
            });
            rec.push("ns_per_task", "ns", ns_per(d, n));
        }
        Workload::PingPong => {
            let d = flavor!(v, |m| {
                drive(&rt, v, m::ping_pong(n / 10 + 1));
                drive(&rt, v, async move {
                    let t = Instant::now();
                    m::ping_pong(n).await;
                    t.elapsed()
                })
            });
            rec.push("ns_per_round_trip", "ns", ns_per(d, n));
        }
        Workload::FanIn => {
            let per = (n / FAN_IN_PRODUCERS).max(1);
            let total = per * FAN_IN_PRODUCERS;
            rec.n = total;
            let d = flavor!(v, |m| {
                drive(
                    &rt,
                    v,
                    m::fan_in(FAN_IN_PRODUCERS, per / 10 + 1, FAN_IN_CAPACITY),
                );
                drive(&rt, v, async move {
                    let t = Instant::now();
                    m::fan_in(FAN_IN_PRODUCERS, per, FAN_IN_CAPACITY).await;
                    t.elapsed()
                })
            });
            rec.push("ns_per_message", "ns", ns_per(d, total));
        }
        Workload::Contention => {
            let per = (n / CONTENTION_CLIENTS).max(1);
            rec.n = per * CONTENTION_CLIENTS;
            let d = flavor!(v, |m| {
                drive(&rt, v, m::contention(CONTENTION_CLIENTS, per / 10 + 1));
                drive(&rt, v, async move {
                    let t = Instant::now();
                    m::contention(CONTENTION_CLIENTS, per).await;
                    t.elapsed()
                })
            });
            rec.push("ns_per_request", "ns", ns_per(d, rec.n));
        }
        Workload::Park => {
            let before = rss_bytes();
            flavor!(v, |m| {
                let (d, senders) = drive(&rt, v, async move {
                    let t = Instant::now();
                    let s = m::park(n, 1).await;
                    (t.elapsed(), s)
                });
                std::thread::sleep(settle);
                let after = rss_bytes();
                rec.push("ns_per_task", "ns", ns_per(d, n));
                rec.push("rss_bytes_per_task", "B", per_task(after, before, n));
                // Exiting is faster than waking them all: the process ends right after.
                std::mem::forget(senders);
            });
        }
        Workload::Scale => {
            let before = rss_bytes();
            flavor!(v, |m| {
                let (d, senders) = drive(&rt, v, async move {
                    let t = Instant::now();
                    let s = m::park(n, SCALE_GROUPS).await;
                    (t.elapsed(), s)
                });
                rec.push("ns_per_task", "ns", ns_per(d, n));
                if v == Variant::Agent {
                    // The first snapshot after a million waits began (it may include
                    // taking them into their groups), then the steady state.
                    let t = Instant::now();
                    let first = leaktop_agent::bench_support::snapshot_frame();
                    rec.push("first_snapshot_ms", "ms", t.elapsed().as_secs_f64() * 1e3);
                    std::hint::black_box(first);
                }
                std::thread::sleep(settle);
                let after = rss_bytes();
                rec.push("rss_bytes_per_task", "B", per_task(after, before, n));
                rec.push("rss_total_mib", "MiB", after as f64 / (1024.0 * 1024.0));
                if v == Variant::Agent {
                    let mut times = Vec::new();
                    let mut last = Vec::new();
                    for _ in 0..11 {
                        let t = Instant::now();
                        last = leaktop_agent::bench_support::snapshot_frame();
                        times.push(t.elapsed().as_secs_f64() * 1e3);
                    }
                    let len = last.len();
                    times.sort_by(f64::total_cmp);
                    rec.push("snapshot_ms", "ms", times[times.len() / 2]);
                    rec.push("update_bytes", "B", len as f64);
                    if let Ok(AgentMsg::SnapshotV2(s)) = wire::decode(&last[wire::HEADER_LEN..]) {
                        rec.push("blocked_groups", "", s.groups.len() as f64);
                    }
                }
                std::mem::forget(senders);
            });
        }
        Workload::Attach => {
            if v != Variant::Agent {
                return Err("the attach workload runs with the agent only".into());
            }
            let leaktop = spec
                .leaktop
                .clone()
                .ok_or("the attach workload needs --leaktop PATH (the release leaktop binary)")?;
            let dir = inst.socket_dir.clone().unwrap_or_default();
            flavor!(v, |m| {
                let senders = drive(&rt, v, m::park(n, 1));
                // Let the sampler take the waits in, as it has in any process that has
                // been running for a second.
                std::thread::sleep(settle);
                let (d, bytes) = dump(&leaktop, &dir)?;
                rec.push("dump_ms", "ms", d.as_secs_f64() * 1e3);
                rec.push("dump_output_bytes", "B", bytes as f64);
                std::mem::forget(senders);
            });
        }
    }
    // Not torn down: the process ends right after, and instruction counts (callgrind)
    // should not include dropping every parked task.
    std::mem::forget(rt);
    inst.stop();
    Ok(rec)
}

/// Runs `leaktop dump <this pid>` and times it from start to exit (all output read).
fn dump(leaktop: &Path, socket_dir: &Path) -> Result<(Duration, usize), String> {
    let t = Instant::now();
    let out = std::process::Command::new(leaktop)
        .arg("dump")
        .arg(std::process::id().to_string())
        .env("LEAKTOP_SOCKET_DIR", socket_dir)
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {}: {e}", leaktop.display()))?;
    let d = t.elapsed();
    if !out.status.success() {
        return Err(format!(
            "{} dump failed ({}): {}",
            leaktop.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    if !String::from_utf8_lossy(&out.stdout).contains("body.rs") {
        return Err("leaktop dump did not list the parked tasks' spawn site".into());
    }
    Ok((d, out.stdout.len()))
}
