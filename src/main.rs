//! The `leaktop` command line. Library errors are typed (thiserror); here they become a
//! one-line message and exit code 2.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use leaktop::attach::{self, Connection};
use leaktop::{check, demo, duration, export, report, util};

/// Find leaked async tasks in live tokio programs.
///
/// The target links the `leaktop-agent` crate and calls `leaktop_agent::start()`;
/// leaktop attaches from outside over a Unix socket.
#[derive(Parser, Debug)]
#[command(
    name = "leaktop",
    version,
    after_help = "Examples:\n  leaktop demo               run a leaky demo program and show what leaktop finds\n  leaktop list               every process with a leaktop agent\n  leaktop dump 1234          one report of pid 1234's tasks, grouped by spawn site\n  leaktop dump 1234 --format json | jq '.sites[0]'\n  leaktop check 1234 --for 5m   exit 1 if pid 1234 leaks tasks (for cron, alerts, CI)\n  leaktop export 1234        the same per-site counts and verdicts as OpenMetrics text"
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
        after_help = "Examples:\n  leaktop dump 1234\n  leaktop dump 1234 --format json | jq '.sites[] | select(.live > 100)'"
    )]
    Dump {
        /// Process id of a program running the leaktop agent.
        pid: u32,
        #[arg(long, value_enum, default_value = "text")]
        format: report::Format,
        /// Also show each site's change over the last DURATION (from the agent's history).
        #[arg(long, value_name = "DURATION", value_parser = duration::parse_arg)]
        baseline: Option<Duration>,
        #[command(flatten)]
        thresholds: check::ThresholdArgs,
    },
    /// Decide whether a process leaks tasks: exit 0 no leak, 1 leak found, 2 could not check.
    #[command(
        after_help = "Without --for, decides at once from the agent's history (its last minutes of\nper-site samples); with --for, watches the process that long first.\n\nExamples:\n  leaktop check 1234\n  leaktop check 1234 --for 5m --format json\n  leaktop check 1234 --fail-on stuck     also fail on deadlocked tasks"
    )]
    Check {
        /// Process id of a program running the leaktop agent.
        pid: u32,
        /// Watch the process this long (30s, 5m, …) before deciding.
        #[arg(long = "for", value_name = "DURATION", value_parser = duration::parse_arg)]
        watch: Option<Duration>,
        #[arg(long, value_enum, default_value = "text")]
        format: report::Format,
        /// Which findings make the check fail (exit 1).
        #[arg(long, value_enum, default_value = "leak")]
        fail_on: check::FailOn,
        #[command(flatten)]
        thresholds: check::ThresholdArgs,
    },
    /// Print one snapshot of a process's tasks as metrics (OpenMetrics text, for Prometheus).
    #[command(
        after_help = "Per-site live, running, idle and blocked counts, spawned/completed counters, ages,\ngrowth and verdicts (a stateset), labelled site=\"file:line:column\"; ends with # EOF.\nTo have the process publish these itself, enable the agent's `metrics` feature.\n\nExamples:\n  leaktop export 1234 > /var/lib/node_exporter/textfile/leaktop.prom\n  leaktop export 1234 | curl --data-binary @- http://pushgateway:9091/metrics/job/leaktop"
    )]
    Export {
        /// Process id of a program running the leaktop agent.
        pid: u32,
        #[arg(long, value_enum, default_value = "openmetrics")]
        format: export::Format,
        #[command(flatten)]
        thresholds: check::ThresholdArgs,
    },
    /// Run a bundled leaky program as a child and show what leaktop finds in it.
    #[command(
        after_help = "Examples:\n  leaktop demo                   all seven leaks at once, live\n  leaktop demo --list            the scenarios and the seed each comes from\n  leaktop demo fan-out --fixed   the fixed twin of one scenario"
    )]
    Demo {
        /// Scenarios to run (default: all seven leaks at once). See --list.
        scenarios: Vec<String>,
        /// Run the fixed twins instead of the leaks.
        #[arg(long)]
        fixed: bool,
        /// Name the scenarios, each with its story and seed, and exit.
        #[arg(long)]
        list: bool,
        /// Print one report and exit instead of the live view (default when stdout is
        /// not a terminal).
        #[arg(long)]
        once: bool,
        /// Seconds to let the demo run before reporting.
        #[arg(long, default_value_t = 2.0)]
        warmup: f64,
    },
    #[command(name = "__demo-child", hide = true)]
    DemoChild {
        #[arg(allow_hyphen_values = true, trailing_var_arg = true)]
        args: Vec<String>,
    },
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
        (
            Some(Cmd::Dump {
                pid,
                format,
                baseline,
                thresholds,
            }),
            _,
        ) => dump(pid, format, baseline, &thresholds.thresholds(None)),
        (
            Some(Cmd::Export {
                pid,
                format,
                thresholds,
            }),
            _,
        ) => run_export(pid, format, &thresholds.thresholds(None)),
        (
            Some(Cmd::Check {
                pid,
                watch,
                format,
                fail_on,
                thresholds,
            }),
            _,
        ) => run_check(pid, watch, format, fail_on, &thresholds.thresholds(watch)),
        (
            Some(Cmd::Demo {
                scenarios,
                fixed,
                list,
                once,
                warmup,
            }),
            _,
        ) => {
            if list {
                print!("{}", demo::list_text());
                return Ok(ExitCode::SUCCESS);
            }
            run_demo(&scenarios, fixed, once, warmup)
        }
        (Some(Cmd::DemoChild { args }), _) => demo::run_child(&args),
        (None, Some(pid)) => dump(
            pid,
            report::Format::Text,
            None,
            &leaktop::model::Thresholds::default(),
        ),
        (None, None) => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            Ok(ExitCode::from(2))
        }
    }
}

fn dump(
    pid: u32,
    format: report::Format,
    baseline: Option<Duration>,
    th: &leaktop::model::Thresholds,
) -> Result<ExitCode> {
    let mut session = util::snapshot_session(pid, true)?;
    if let Some(back) = baseline {
        let back = back.as_millis().min(u64::MAX as u128) as u64;
        session.mark_baseline_at(session.now_ms.saturating_sub(back));
    }
    match format {
        report::Format::Text => print!("{}", report::text_with(&session, th)),
        report::Format::Json => println!("{}", report::json_with(&session, th)),
    }
    Ok(ExitCode::SUCCESS)
}

fn run_export(
    pid: u32,
    format: export::Format,
    th: &leaktop::model::Thresholds,
) -> Result<ExitCode> {
    let session = util::snapshot_session(pid, true)?;
    match format {
        export::Format::Openmetrics => print!("{}", export::openmetrics(&session, th)),
    }
    Ok(ExitCode::SUCCESS)
}

fn run_check(
    pid: u32,
    watch: Option<Duration>,
    format: report::Format,
    fail_on: check::FailOn,
    th: &leaktop::model::Thresholds,
) -> Result<ExitCode> {
    let session = check::gather(pid, watch)?;
    let outcome = check::decide(&session, th, fail_on);
    match format {
        report::Format::Text => print!("{}", check::text(&session, th, fail_on, &outcome)),
        report::Format::Json => println!("{}", check::json(&session, th, fail_on, &outcome)),
    }
    Ok(ExitCode::from(outcome.exit_code))
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

fn run_demo(scenarios: &[String], fixed: bool, once: bool, warmup: f64) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let _interactive = !once && std::io::stdout().is_terminal();
    demo::select(scenarios).map_err(anyhow::Error::msg)?;
    let child =
        demo::spawn_child(scenarios, fixed, None).context("cannot start the demo program")?;
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
