//! The `leaktop` command line. Library errors are typed (thiserror); here they become a
//! one-line message and exit code 2.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};

use leaktop::attach::{self, Connection};
use leaktop::record::{self, Target};
use leaktop::symbolize::FoldMode;
use leaktop::{check, demo, duration, export, report, tui, util};

/// `print!` that treats a closed stdout (`leaktop dump 1 | head`) as the end of the
/// output, like other Unix tools, instead of panicking.
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = write!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// `println!` counterpart of [`out!`].
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout().lock(), $($arg)*);
    }};
}

/// Find leaked async tasks in live tokio programs.
///
/// The target links the `leaktop-agent` crate and calls `leaktop_agent::start()`;
/// leaktop attaches from outside over a Unix socket.
#[derive(Parser, Debug)]
#[command(
    name = "leaktop",
    version,
    after_help = "Examples:\n  leaktop demo               run a leaky demo program and show what leaktop finds\n  leaktop 1234               live view of pid 1234 (? lists the keys)\n  leaktop list               every process with a leaktop agent\n  leaktop dump 1234          one report of pid 1234's tasks, grouped by spawn site\n  leaktop dump 1234 --format json | jq '.sites[0]'\n  leaktop check 1234 --for 5m   exit 1 if pid 1234 leaks tasks (for cron, alerts, CI)\n  leaktop 1234 --record s.ltrec  live view, recorded (or press r in the live view)\n  leaktop record 1234 -o s.ltrec --duration 10m   record without a screen\n  leaktop replay s.ltrec     the live view of a recording, with seeking\n  leaktop dump s.ltrec --at 5m   the report 5 minutes into a recording\n  leaktop export 1234        per-site counts and verdicts as OpenMetrics text"
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Process to watch live: the TUI (`?` inside it lists the keys).
    pid: Option<u32>,
    /// Record the live view's session to FILE (the `r` key starts and stops recording too).
    #[arg(long, value_name = "FILE")]
    record: Option<PathBuf>,
    /// Refresh interval of the live view: `1s`, `500ms`, `2.5s`, `1m` (50ms ..= 1h).
    #[arg(long, short = 'i', default_value = "1s", value_parser = parse_interval, global = true)]
    interval: Duration,
    /// What the live view marks as a leak (as for `leaktop check`).
    #[command(flatten)]
    thresholds: check::ThresholdArgs,
}

/// Parses the refresh / snapshot interval (`1s`, `500ms`, …): 50ms (the agent's fastest)
/// ..= 1h.
fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = duration::parse_arg(text)?;
    if !(Duration::from_millis(50)..=Duration::from_secs(3600)).contains(&d) {
        return Err(format!(
            "interval `{text}` is out of range: use 50ms ..= 1h"
        ));
    }
    Ok(d)
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
        /// Also show each site's change over the last DURATION (from the agent's history).
        #[arg(long, value_name = "DURATION", value_parser = duration::parse_arg)]
        baseline: Option<Duration>,
        /// Show every frame of the await chains (runtime, std and agent frames too).
        #[arg(long)]
        all_frames: bool,
        #[command(flatten)]
        thresholds: check::ThresholdArgs,
    },
    /// Decide whether a process leaks tasks: exit 0 no leak, 1 leak found, 2 could not check.
    #[command(
        after_help = "Without --for, decides at once from the agent's history (its last minutes of\nper-site samples); with --for, watches the process that long first.\n\nExamples:\n  leaktop check 1234\n  leaktop check 1234 --for 5m --format json\n  leaktop check 1234 --fail-on stuck     also fail on deadlocked tasks"
    )]
    Check {
        /// Process id of a program running the leaktop agent, or the path of a recording.
        #[arg(value_name = "PID|FILE")]
        target: Target,
        /// For a recording: decide at this time (5m, 50%, -30s from the end; default: end).
        #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
        at: Option<String>,
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
    /// Record a process's session to a file without a screen, for `leaktop replay`.
    #[command(
        after_help = "Snapshots come every --interval (default 1s). Stops after --duration, when the process\nexits, or on Ctrl-C; the file is readable at every moment (a recording cut off by a\ncrash or a full disk replays up to its last whole frame).\n\nExamples:\n  leaktop record 1234 -o session.ltrec --duration 10m\n  leaktop record 1234 -o session.ltrec --interval 250ms"
    )]
    Record {
        /// Process id of a program running the leaktop agent.
        pid: u32,
        /// File to write (refused if it exists, unless --force).
        #[arg(short, long, value_name = "FILE")]
        output: PathBuf,
        /// Stop after this long (30s, 5m, 1h).
        #[arg(long, value_name = "D", value_parser = duration::parse_arg)]
        duration: Option<Duration>,
        /// No progress line and no summary.
        #[arg(short, long)]
        quiet: bool,
        /// Replace FILE if it exists (never while another recorder writes it).
        #[arg(long)]
        force: bool,
    },
    /// Replay a recording in the live view: space plays/pauses, ←/→ step, [ ] speed.
    #[command(
        after_help = "Keys (besides every key of the live view; ? lists them all):\n  space        play / pause\n  ← →          previous / next snapshot\n  [ ]          slower / faster (1/64x .. 1024x)\n  { }          back / forward 10s\n  g G          start / end of the recording\n  :            jump to a time (5m, 1m30s, 50%, -30s)\n\nExamples:\n  leaktop replay session.ltrec\n  leaktop replay session.ltrec --at 5m --speed 10"
    )]
    Replay {
        /// A recording made by `leaktop record`, `--record` or the live view's `r` key.
        file: PathBuf,
        /// Start at this time (5m, 1m30s, 50%, -30s from the end, end).
        #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
        at: Option<String>,
        /// Playback speed (1 = real time).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Start paused.
        #[arg(long)]
        paused: bool,
        #[command(flatten)]
        thresholds: check::ThresholdArgs,
    },
    /// Print one snapshot of a process's tasks as metrics (OpenMetrics text, for Prometheus).
    #[command(
        after_help = "Per-site live, running, idle and blocked counts, spawned/completed counters, ages,\ngrowth and verdicts (a stateset), labelled site=\"file:line:column\"; ends with # EOF.\nTo have the process publish these itself, enable the agent's `metrics` feature.\nnode_exporter's textfile collector and the Pushgateway read --format prometheus.\n\nExamples:\n  leaktop export 1234 --format prometheus > /var/lib/node_exporter/textfile/leaktop.prom\n  leaktop export 1234 --format prometheus | curl --data-binary @- http://pushgateway:9091/metrics/job/leaktop"
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
        after_help = "The live demo judges over a 20s window with tasks stuck for 8s (unless --window is\ngiven), so its leaks are marked within seconds; a production view waits for 1 minute\nof data.\n\nExamples:\n  leaktop demo                   all seven leaks at once, live\n  leaktop demo --list            the scenarios and the seed each comes from\n  leaktop demo fan-out --fixed   the fixed twin of one scenario"
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
        #[command(flatten)]
        thresholds: check::ThresholdArgs,
    },
    /// Print a shell completion script for leaktop.
    #[command(
        after_help = "Install (then open a new shell):\n  bash        leaktop completions bash > ~/.local/share/bash-completion/completions/leaktop\n  zsh         leaktop completions zsh > ~/.zfunc/_leaktop   (with fpath+=~/.zfunc before compinit)\n  fish        leaktop completions fish > ~/.config/fish/completions/leaktop.fish\n  elvish      leaktop completions elvish >> ~/.config/elvish/rc.elv\n  powershell  leaktop completions powershell >> $PROFILE"
    )]
    Completions {
        #[arg(value_enum)]
        shell: leaktop::shell::Shell,
    },
    /// Print leaktop's man page (or a subcommand's), or write them all to a directory.
    #[command(
        after_help = "Examples:\n  leaktop man | man -l -               read it now\n  leaktop man dump | man -l -          the page of `leaktop dump`\n  leaktop man --dir ~/.local/share/man/man1   install every page (then `man leaktop-check`)"
    )]
    Man {
        /// The subcommand whose page to print (default: leaktop's own).
        subcommand: Option<String>,
        /// Write leaktop.1 and a page per subcommand (leaktop-dump.1, …) into DIR.
        #[arg(long, value_name = "DIR", conflicts_with = "subcommand")]
        dir: Option<PathBuf>,
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
            eprintln!("leaktop: {}", one_line(&e));
            ExitCode::from(2)
        }
    }
}

/// The error and its causes on one line, each cause once: typed errors often say their
/// source already (`cannot read X: Is a directory`), and `{:#}` would repeat it.
fn one_line(e: &anyhow::Error) -> String {
    let mut msg = e.to_string();
    for cause in e.chain().skip(1) {
        let cause = cause.to_string();
        if !msg.contains(&cause) {
            msg.push_str(": ");
            msg.push_str(&cause);
        }
    }
    msg.replace('\n', " ")
}

fn run(cli: Cli) -> Result<ExitCode> {
    match (cli.command, cli.pid) {
        (Some(Cmd::List { verbose }), _) => list(verbose),
        (
            Some(Cmd::Dump {
                target,
                format,
                at,
                baseline,
                all_frames,
                thresholds,
            }),
            _,
        ) => dump(
            target,
            format,
            at.as_deref(),
            baseline,
            all_frames,
            &thresholds.thresholds(None),
        ),
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
                target,
                at,
                watch,
                format,
                fail_on,
                thresholds,
            }),
            _,
        ) => run_check(
            target,
            at.as_deref(),
            watch,
            format,
            fail_on,
            &thresholds.thresholds(watch),
        ),
        (
            Some(Cmd::Record {
                pid,
                output,
                duration,
                quiet,
                force,
            }),
            _,
        ) => record_cmd(
            pid,
            &output,
            &record::headless::Options {
                interval: cli.interval,
                duration,
                force,
                progress: !quiet,
            },
            quiet,
        ),
        (
            Some(Cmd::Replay {
                file,
                at,
                speed,
                paused,
                thresholds,
            }),
            _,
        ) => replay(
            &file,
            at.as_deref(),
            speed,
            paused,
            thresholds.thresholds(None),
        ),
        (
            Some(Cmd::Demo {
                scenarios,
                fixed,
                list,
                once,
                warmup,
                thresholds,
            }),
            _,
        ) => {
            if list {
                out!("{}", demo::list_text());
                return Ok(ExitCode::SUCCESS);
            }
            run_demo(&scenarios, fixed, once, warmup, cli.interval, &thresholds)
        }
        (Some(Cmd::DemoChild { args }), _) => demo::run_child(&args),
        (Some(Cmd::Completions { shell }), _) => {
            use clap::CommandFactory;
            write_stdout(&leaktop::shell::completions(shell, Cli::command()))
        }
        (Some(Cmd::Man { subcommand, dir }), _) => {
            use clap::CommandFactory;
            match dir {
                Some(dir) => {
                    for page in leaktop::shell::write_man_pages(Cli::command(), &dir)? {
                        outln!("{}", page.display());
                    }
                    Ok(ExitCode::SUCCESS)
                }
                None => write_stdout(&leaktop::shell::man_page(
                    Cli::command(),
                    subcommand.as_deref(),
                )?),
            }
        }
        (None, Some(pid)) => {
            let mut options = tui::Options::new(cli.interval);
            options.record = cli.record;
            options.thresholds = cli.thresholds.thresholds(None);
            live(pid, options)
        }
        (None, None) => {
            use clap::CommandFactory;
            Cli::command().print_help()?;
            Ok(ExitCode::from(2))
        }
    }
}

/// Writes generated text to stdout; a closed stdout (`| head`) ends it quietly.
fn write_stdout(bytes: &[u8]) -> Result<ExitCode> {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(bytes);
    Ok(ExitCode::SUCCESS)
}

fn live(pid: u32, options: tui::Options) -> Result<ExitCode> {
    use std::io::IsTerminal;
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "the live view needs a terminal on stdout; for a report use `leaktop dump {pid}`{}",
            if options.record.is_some() {
                format!(", to record without a screen `leaktop record {pid} -o FILE`")
            } else {
                String::new()
            }
        );
    }
    tui::run_live(pid, &options)?;
    Ok(ExitCode::SUCCESS)
}

fn replay(
    file: &Path,
    at: Option<&str>,
    speed: f64,
    paused: bool,
    thresholds: leaktop::model::Thresholds,
) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let source = record::RecordingSource::open(file)?;
    if let Some(w) = source.warning() {
        eprintln!("leaktop: warning: {w}");
    }
    // By default the replay starts at the first snapshot: the screen has something to
    // show from the first frame (the history rings come with it).
    let start_at = at
        .map(|a| record::parse_at(a, source.summary().duration_ms))
        .transpose()
        .map_err(anyhow::Error::msg)?
        .or_else(|| source.summary().snapshot_times.first().copied());
    if !std::io::stdout().is_terminal() {
        anyhow::bail!(
            "replay needs a terminal on stdout; for a report use `leaktop dump {} --at TIME`",
            file.display()
        );
    }
    // The interval it was recorded at, or else the typical gap between its snapshots.
    let interval_ms = match source.meta().map_or(0, |m| m.interval_ms) {
        0 => {
            let mut gaps: Vec<u64> = source
                .summary()
                .snapshot_times
                .windows(2)
                .map(|w| w[1] - w[0])
                .collect();
            gaps.sort_unstable();
            gaps.get(gaps.len() / 2).copied().unwrap_or(1000).max(1)
        }
        ms => ms as u64,
    };
    let interval = Duration::from_millis(interval_ms);
    let mut options = tui::Options::new(interval);
    options.thresholds = thresholds;
    options.replay = Some(tui::ReplayOptions {
        start_at,
        speed,
        playing: !paused,
    });
    tui::run_replay(source, &options)?;
    Ok(ExitCode::SUCCESS)
}

/// A recording's path, the time shown and its length (ms).
type RecordingAt = (PathBuf, u64, u64);

/// The session of a target: a fresh snapshot of a live process (with its history), or a
/// recording folded up to `at`. Prints the replay's warnings.
fn target_session(
    target: &Target,
    at: Option<&str>,
    live_hint: &str,
) -> Result<(leaktop::model::Session, Option<RecordingAt>)> {
    match target {
        Target::Pid(pid) => {
            if at.is_some() {
                anyhow::bail!(
                    "--at picks a time in a recording; pid {pid} is a live process ({live_hint})"
                );
            }
            Ok((util::snapshot_session(*pid, true)?, None))
        }
        Target::Recording(path) => {
            let src = record::RecordingSource::open(path)?;
            let duration = src.summary().duration_ms;
            let at_ms = at
                .map(|a| record::parse_at(a, duration))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let (session, src) = record::replay::session_of(src, at_ms)?;
            if let Some(w) = src.warning() {
                eprintln!("leaktop: warning: {w}");
            }
            Ok((
                session,
                Some((path.clone(), at_ms.unwrap_or(duration), duration)),
            ))
        }
    }
}

fn dump(
    target: Target,
    format: report::Format,
    at: Option<&str>,
    baseline: Option<Duration>,
    all_frames: bool,
    th: &leaktop::model::Thresholds,
) -> Result<ExitCode> {
    let (mut session, recording) = target_session(
        &target,
        at,
        "record it with `leaktop record PID -o FILE`, then dump FILE --at TIME",
    )?;
    if recording.is_none() {
        leaktop::resolve::StackResolver::for_session(&session).resolve_new(&mut session);
    }
    let mode = if all_frames {
        FoldMode::All
    } else {
        FoldMode::UserOnly
    };
    if let Some(back) = baseline {
        let back = back.as_millis().min(u64::MAX as u128) as u64;
        session.mark_baseline_at(session.now_ms.saturating_sub(back));
    }
    match format {
        report::Format::Text => {
            if let Some((path, at, duration)) = recording {
                outln!(
                    "recording {} at {} of {}",
                    path.display(),
                    report::age(at),
                    report::age(duration)
                );
            }
            out!("{}", report::text_with(&session, th, mode))
        }
        report::Format::Json => outln!("{}", report::json_with(&session, th, mode)),
    }
    Ok(ExitCode::SUCCESS)
}

fn run_export(
    pid: u32,
    format: export::Format,
    th: &leaktop::model::Thresholds,
) -> Result<ExitCode> {
    let session = util::snapshot_session(pid, true)?;
    out!("{}", export::render(&session, th, format));
    Ok(ExitCode::SUCCESS)
}

fn run_check(
    target: Target,
    at: Option<&str>,
    watch: Option<Duration>,
    format: report::Format,
    fail_on: check::FailOn,
    th: &leaktop::model::Thresholds,
) -> Result<ExitCode> {
    let session = match (&target, watch) {
        (Target::Pid(pid), _) if at.is_some() => anyhow::bail!(
            "--at picks a time in a recording; pid {pid} is a live process (use --for to watch it)"
        ),
        (Target::Pid(pid), watch) => check::gather(*pid, watch)?,
        (Target::Recording(path), Some(_)) => anyhow::bail!(
            "--for watches a live process; {} is a recording (use --at TIME to decide at a time in it)",
            path.display()
        ),
        (Target::Recording(_), None) => target_session(&target, at, "")?.0,
    };
    let from = match target {
        Target::Pid(_) => check::DataFrom::Live,
        Target::Recording(_) => check::DataFrom::Recording,
    };
    let outcome = check::decide(&session, th, fail_on, from);
    match format {
        report::Format::Text => out!("{}", check::text(&session, th, fail_on, &outcome)),
        report::Format::Json => outln!("{}", check::json(&session, th, fail_on, &outcome)),
    }
    Ok(ExitCode::from(outcome.exit_code))
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
    output: &Path,
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
    outln!("{:>8}  {:>9}  {:>10}  EXE", "PID", "UPTIME", "LIVE TASKS");
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
            c.verify(f.pid)?;
            util::snapshot_of(&mut c, false)
        });
        match row {
            Ok(s) => {
                let h = s.hello.as_ref();
                outln!(
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

/// The demo's leaks are seconds old: unless told otherwise it judges over `window` with
/// tasks stuck for `min_age`, so the marks show within seconds instead of the minute a
/// production view waits for.
fn demo_thresholds(
    args: &check::ThresholdArgs,
    window: Duration,
    min_age: Duration,
) -> leaktop::model::Thresholds {
    let mut th = args.thresholds(None);
    if args.window.is_none() {
        th.window_ms = window.as_millis() as u64;
        if args.min_age.is_none() {
            th.min_age_ms = min_age.as_millis() as u64;
        }
    }
    th
}

/// The live demo's judging window and stuck age.
const DEMO_WINDOW: Duration = Duration::from_secs(20);
const DEMO_MIN_AGE: Duration = Duration::from_secs(8);
/// How often the `--once` demo's agent samples, so a report after a 2 s warm-up has a
/// growth curve to judge.
const DEMO_ONCE_SAMPLE_MS: u64 = 100;

fn run_demo(
    scenarios: &[String],
    fixed: bool,
    once: bool,
    warmup: f64,
    interval: Duration,
    thresholds: &check::ThresholdArgs,
) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let interactive = !once && std::io::stdout().is_terminal();
    demo::select(scenarios).map_err(anyhow::Error::msg)?;
    // In the live view the child's stderr would scribble over the screen: it goes to
    // the log file instead.
    let stderr = if interactive {
        demo_stderr()
    } else {
        std::process::Stdio::inherit()
    };
    let extra = if interactive {
        Vec::new()
    } else {
        vec![format!("--sample-ms={DEMO_ONCE_SAMPLE_MS}")]
    };
    let child = demo::spawn_child_with(scenarios, fixed, &extra, stderr)
        .context("cannot start the demo program")?;
    let child = demo::ChildGuard(child);
    let pid = child.0.id();
    demo::wait_for_agent(pid, Duration::from_secs(10))
        .with_context(|| format!("the demo program (pid {pid}) did not start its agent"))?;
    if interactive {
        let mut options = tui::Options::new(interval);
        options.thresholds = demo_thresholds(thresholds, DEMO_WINDOW, DEMO_MIN_AGE);
        tui::run_live(pid, &options)?;
        drop(child);
        return Ok(ExitCode::SUCCESS);
    }
    let start = Instant::now();
    let warmup = Duration::from_secs_f64(warmup.clamp(0.0, 600.0));
    while start.elapsed() < warmup {
        std::thread::sleep(Duration::from_millis(50));
    }
    // The report `leaktop dump` gives, judged over the warm-up: a window of 1.5 times it
    // (growth needs half a window of data, and the agent starts a moment after the
    // child), tasks stuck for half of it.
    let th = demo_thresholds(
        thresholds,
        (warmup * 3 / 2).max(Duration::from_millis(1500)),
        (warmup / 2).max(Duration::from_millis(500)),
    );
    let code = dump(
        Target::Pid(pid),
        report::Format::Text,
        None,
        None,
        false,
        &th,
    );
    drop(child);
    code
}

/// Where the demo child's stderr goes while the live view owns the screen.
fn demo_stderr() -> std::process::Stdio {
    let path = tui::log::default_path();
    let file = path
        .parent()
        .map(std::fs::create_dir_all)
        .transpose()
        .ok()
        .and_then(|_| {
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .ok()
        });
    match file {
        Some(f) => std::process::Stdio::from(f),
        None => std::process::Stdio::null(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn demo_args(args: &[&str]) -> check::ThresholdArgs {
        let cli = Cli::try_parse_from([&["leaktop", "demo"], args].concat()).expect("parses");
        match cli.command {
            Some(Cmd::Demo { thresholds, .. }) => thresholds,
            other => panic!("not the demo: {other:?}"),
        }
    }

    #[test]
    fn the_demo_judges_on_a_short_window_unless_told_otherwise() {
        let th = demo_thresholds(&demo_args(&[]), DEMO_WINDOW, DEMO_MIN_AGE);
        assert_eq!((th.window_ms, th.min_age_ms), (20_000, 8_000));
        let th = demo_thresholds(&demo_args(&["--min-age", "3s"]), DEMO_WINDOW, DEMO_MIN_AGE);
        assert_eq!((th.window_ms, th.min_age_ms), (20_000, 3_000));
        // Given explicitly, even at its production value, it stays.
        let th = demo_thresholds(&demo_args(&["--min-age", "45s"]), DEMO_WINDOW, DEMO_MIN_AGE);
        assert_eq!((th.window_ms, th.min_age_ms), (20_000, 45_000));
        let th = demo_thresholds(&demo_args(&["--window", "5m"]), DEMO_WINDOW, DEMO_MIN_AGE);
        let default = leaktop::model::Thresholds::default();
        assert_eq!((th.window_ms, th.min_age_ms), (300_000, default.min_age_ms));
    }

    #[test]
    fn completions_and_man_pages_cover_every_subcommand() {
        use clap::CommandFactory;
        use leaktop::shell::{self, Shell};
        let subcommands = shell::subcommands(&Cli::command());
        assert!(subcommands.len() >= 9, "{subcommands:?}");
        for sh in [
            Shell::Bash,
            Shell::Zsh,
            Shell::Fish,
            Shell::Elvish,
            Shell::PowerShell,
        ] {
            let script = String::from_utf8(shell::completions(sh, Cli::command())).unwrap();
            for sub in &subcommands {
                assert!(script.contains(sub.as_str()), "{sh} completion lacks {sub}");
            }
            assert!(
                !script.contains("__demo-child"),
                "{sh} offers the hidden subcommand"
            );
        }
        let page = String::from_utf8(shell::man_page(Cli::command(), None).unwrap()).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pages = shell::write_man_pages(Cli::command(), dir.path()).unwrap();
        for sub in &subcommands {
            assert!(
                page.contains(&format!("leaktop\\-{sub}(1)")),
                "leaktop.1 lacks {sub}"
            );
            let own = dir.path().join(format!("leaktop-{sub}.1"));
            assert!(pages.contains(&own), "no page for {sub}: {pages:?}");
        }
    }

    #[test]
    fn the_live_view_takes_the_threshold_flags() {
        let cli = Cli::try_parse_from(["leaktop", "1234", "--window", "30s", "--min-age", "5s"])
            .expect("parses");
        let th = cli.thresholds.thresholds(None);
        assert_eq!(
            (cli.pid, th.window_ms, th.min_age_ms),
            (Some(1234), 30_000, 5_000)
        );
    }
}
