//! The `leaktop` command line. Library errors are typed (thiserror); here they become a
//! one-line message and exit code 2.

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use leaktop::attach::{self, Connection};
use leaktop::record::{self, Target};
use leaktop::{demo, duration, report, util};

/// Find leaked async tasks in live tokio programs.
///
/// The target links the `leaktop-agent` crate and calls `leaktop_agent::start()`;
/// leaktop attaches from outside over a Unix socket.
#[derive(Parser, Debug)]
#[command(
    name = "leaktop",
    version,
    after_help = "Examples:\n  leaktop demo               run a leaky demo program and show what leaktop finds\n  leaktop list               every process with a leaktop agent\n  leaktop dump 1234          one report of pid 1234's tasks, grouped by spawn site\n  leaktop dump 1234 --format json | jq '.sites[0]'\n  leaktop record 1234 -o s.ltrec --duration 10m\n  leaktop dump s.ltrec --at 5m"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Process to watch live (same as `leaktop dump <PID>` until the TUI lands).
    pid: Option<u32>,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// List every live process with a leaktop agent: pid, exe, uptime, live tasks.
    List {
        /// Also say which sockets were skipped and why.
        #[arg(short, long)]
        verbose: bool,
    },
    /// Print one report of a process's tasks, grouped by spawn site (most live first).
    #[command(
        after_help = "Examples:\n  leaktop dump 1234\n  leaktop dump 1234 --format json | jq '.sites[] | select(.live > 100)'\n  leaktop dump session.ltrec --at 5m    the state 5 minutes into a recording"
    )]
    Dump {
        /// Process id of a program running the leaktop agent, or the path of a recording
        /// (`./1234` for a file named like a pid).
        #[arg(value_name = "PID|FILE")]
        target: Target,
        #[arg(long, value_enum, default_value = "text")]
        format: report::Format,
        /// For a recording: the time to report (5m, 1m30s, 50%, -30s from the end, end).
        #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
        at: Option<String>,
    },
    /// Record a process's session to a file, without a screen, for `leaktop replay`.
    #[command(
        after_help = "Stops after --duration, when the process exits, or on Ctrl-C; the file is readable\nat every moment (a recording cut off by a crash replays up to its last whole frame).\n\nExamples:\n  leaktop record 1234 -o session.ltrec --duration 10m\n  leaktop record 1234 -o session.ltrec --interval 250ms"
    )]
    Record {
        /// Process id of a program running the leaktop agent.
        pid: u32,
        /// File to write (refused if it exists, unless --force).
        #[arg(short, long, value_name = "FILE")]
        output: std::path::PathBuf,
        /// Stop after this long (30s, 5m, 1h).
        #[arg(long, value_name = "D", value_parser = duration::parse_arg)]
        duration: Option<Duration>,
        /// Snapshot interval.
        #[arg(long, value_name = "I", default_value = "1s", value_parser = duration::parse_arg)]
        interval: Duration,
        /// No progress line and no summary.
        #[arg(short, long)]
        quiet: bool,
        /// Replace FILE if it exists (never while another recorder writes it).
        #[arg(long)]
        force: bool,
    },
    /// Run a bundled leaky program as a child and show what leaktop finds in it.
    Demo {
        /// Print one report and exit instead of the live view (default when stdout is
        /// not a terminal).
        #[arg(long)]
        once: bool,
        /// Seconds to let the demo run before reporting.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
    },
    #[command(name = "__demo-child", hide = true)]
    DemoChild,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("leaktop: {e:#}");
            ExitCode::from(2)
        }
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match (cli.command, cli.pid) {
        (Some(Cmd::List { verbose }), _) => list(verbose),
        (Some(Cmd::Dump { target, format, at }), _) => dump(target, format, at.as_deref()),
        (
            Some(Cmd::Record {
                pid,
                output,
                duration,
                interval,
                quiet,
                force,
            }),
            _,
        ) => record_cmd(
            pid,
            &output,
            &record::headless::Options {
                interval,
                duration,
                force,
                progress: !quiet,
            },
            quiet,
        ),
        (Some(Cmd::Demo { once, warmup }), _) => run_demo(once, warmup),
        (Some(Cmd::DemoChild), _) => demo::run_child(),
        (None, Some(pid)) => dump(Target::Pid(pid), report::Format::Text, None),
        (None, None) => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            Ok(ExitCode::from(2))
        }
    }
}

fn dump(target: Target, format: report::Format, at: Option<&str>) -> Result<ExitCode> {
    let session = match target {
        Target::Pid(pid) => {
            if at.is_some() {
                anyhow::bail!("--at picks a time in a recording; pid {pid} is a live process (record it with `leaktop record {pid} -o FILE`)");
            }
            util::snapshot_session(pid, false)?
        }
        Target::Recording(path) => {
            let src = record::RecordingSource::open(&path)?;
            let duration = src.summary().duration_ms;
            let at_ms = at
                .map(|a| record::parse_at(a, duration))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let (session, src) = record::replay::session_of(src, at_ms)?;
            if let Some(w) = src.warning() {
                eprintln!("leaktop: warning: {w}");
            }
            if format == report::Format::Text {
                println!(
                    "recording {} at {} of {}",
                    path.display(),
                    report::age(at_ms.unwrap_or(duration)),
                    report::age(duration)
                );
            }
            session
        }
    };
    match format {
        report::Format::Text => print!("{}", report::text(&session)),
        report::Format::Json => println!("{}", report::json(&session)),
    }
    Ok(ExitCode::SUCCESS)
}

static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn on_stop_signal(_: libc::c_int) {
    STOP.store(true, Ordering::Relaxed);
}

/// Ctrl-C, SIGTERM and SIGHUP end a headless recording cleanly (with a stop frame).
fn install_stop_handlers() {
    use nix::sys::signal::{sigaction, SaFlags, SigAction, SigHandler, SigSet, Signal};
    let action = SigAction::new(
        SigHandler::Handler(on_stop_signal),
        SaFlags::SA_RESTART,
        SigSet::empty(),
    );
    for sig in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
        let _ = unsafe { sigaction(sig, &action) };
    }
}

fn record_cmd(
    pid: u32,
    output: &std::path::Path,
    opts: &record::headless::Options,
    quiet: bool,
) -> Result<ExitCode> {
    install_stop_handlers();
    let outcome = record::headless::record_pid(pid, output, opts, &STOP)?;
    if !quiet {
        eprintln!("{}", outcome.summary());
    }
    Ok(ExitCode::SUCCESS)
}

fn list(verbose: bool) -> Result<ExitCode> {
    let found = attach::discover();
    println!("{:>8}  {:>9}  {:>10}  EXE", "PID", "UPTIME", "LIVE TASKS");
    for f in found {
        if !f.alive {
            if verbose {
                eprintln!(
                    "skipped {}: stale socket, process {} is gone",
                    f.path.display(),
                    f.pid
                );
            }
            continue;
        }
        let row = Connection::open(&f.path).and_then(|mut c| {
            if c.hello.pid != f.pid {
                return Err(attach::AttachError::PidReused {
                    pid: f.pid,
                    path: f.path.clone(),
                });
            }
            util::snapshot_of(&mut c, false)
        });
        match row {
            Ok(s) => {
                let h = s.hello.as_ref();
                println!(
                    "{:>8}  {:>9}  {:>10}  {}",
                    f.pid,
                    report::age(s.now_ms),
                    s.totals().0,
                    h.map(|h| h.exe.as_str()).unwrap_or("?")
                );
            }
            Err(e) => {
                if verbose {
                    eprintln!("skipped {}: {e}", f.path.display());
                }
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn run_demo(once: bool, warmup: f64) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let _interactive = !once && std::io::stdout().is_terminal();
    let child = demo::spawn_child().context("cannot start the demo program")?;
    let child = demo::ChildGuard(child);
    let pid = child.0.id();
    demo::wait_for_agent(pid, Duration::from_secs(10))
        .with_context(|| format!("the demo program (pid {pid}) did not start its agent"))?;
    let start = Instant::now();
    let warmup = Duration::from_secs_f64(warmup.clamp(0.0, 600.0));
    while start.elapsed() < warmup {
        std::thread::sleep(Duration::from_millis(50));
    }
    let session = util::snapshot_session(pid, false)?;
    print!("{}", report::text(&session));
    drop(child);
    Ok(ExitCode::SUCCESS)
}
