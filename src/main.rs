//! The `leaktop` command line: parse ([`leaktop::cli`]), gather through
//! [`leaktop::driver`], print what [`leaktop::report`] words. Library errors are typed
//! (thiserror); here they become a one-line message and exit code 2.

use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use clap::Parser;

use leaktop::attach::{self, Connection};
use leaktop::cli::{
    self, CheckArgs, Cli, Cmd, DemoArgs, DumpArgs, ExportFormat, Format, RecordArgs, ReplayArgs,
    Target,
};
use leaktop::driver::{self, record::Options as RecordOptions, view};
use leaktop::frame::FoldMode;
use leaktop::model::check::{self, DataFrom};
use leaktop::model::{Session, Thresholds};
use leaktop::{demo, export, record, report};

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
    let Some(command) = cli.command else {
        return match cli.pid {
            Some(pid) => {
                let mut options = view::Options::new(cli.interval);
                options.record = cli.record;
                options.thresholds = cli.thresholds.thresholds(None);
                live(pid, options)
            }
            None => {
                use clap::CommandFactory;
                Cli::command().print_help()?;
                Ok(ExitCode::from(2))
            }
        };
    };
    match command {
        Cmd::List { verbose } => list(verbose),
        Cmd::Dump(a) => dump(&a),
        Cmd::Export(a) => run_export(a.pid, a.format, &a.thresholds.thresholds(None)),
        Cmd::Check(a) => run_check(&a),
        Cmd::Record(a) => record_cmd(&a, cli.interval),
        Cmd::Replay(a) => replay(&a),
        Cmd::Demo(a) if a.list => {
            out!("{}", demo::list_text());
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Demo(a) => run_demo(&a, cli.interval),
        Cmd::DemoChild { args } => demo::run_child(&args),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            write_stdout(&leaktop::shell::completions(shell, Cli::command()))
        }
        Cmd::Man { subcommand, dir } => man(subcommand.as_deref(), dir.as_deref()),
    }
}

/// `leaktop man`: one page to stdout, or every page into `dir`.
fn man(subcommand: Option<&str>, dir: Option<&std::path::Path>) -> Result<ExitCode> {
    use clap::CommandFactory;
    match dir {
        Some(dir) => {
            for page in leaktop::shell::write_man_pages(Cli::command(), dir)? {
                outln!("{}", page.display());
            }
            Ok(ExitCode::SUCCESS)
        }
        None => write_stdout(&leaktop::shell::man_page(Cli::command(), subcommand)?),
    }
}

/// Writes generated text to stdout; a closed stdout (`| head`) ends it quietly.
fn write_stdout(bytes: &[u8]) -> Result<ExitCode> {
    use std::io::Write as _;
    let _ = std::io::stdout().lock().write_all(bytes);
    Ok(ExitCode::SUCCESS)
}

fn live(pid: u32, options: view::Options) -> Result<ExitCode> {
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
    view::run_live(pid, &options)?;
    Ok(ExitCode::SUCCESS)
}

fn replay(a: &ReplayArgs) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let (file, at) = (&a.file, a.at.as_deref());
    let mut source = record::RecordingSource::open(file)?;
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
    source.start_at(start_at.unwrap_or(0), a.speed, !a.paused);
    let mut options = view::Options::new(source.interval());
    options.thresholds = a.thresholds.thresholds(None);
    view::run_replay(source, &options)?;
    Ok(ExitCode::SUCCESS)
}

/// A recording's path, the time shown and its length (ms).
type RecordingAt = (std::path::PathBuf, u64, u64);

/// The session of a target: a fresh symbolized snapshot of a live process (with its
/// history), or a recording folded up to `at`. Prints the replay's warnings.
fn target_session(
    target: &Target,
    at: Option<&str>,
    live_hint: &str,
) -> Result<(Session, Option<RecordingAt>)> {
    match target {
        Target::Pid(pid) => {
            if at.is_some() {
                anyhow::bail!(
                    "--at picks a time in a recording; pid {pid} is a live process ({live_hint})"
                );
            }
            Ok((driver::snapshot_of(*pid)?, None))
        }
        Target::Recording(path) => {
            let src = record::RecordingSource::open(path)?;
            let duration = src.summary().duration_ms;
            let at_ms = at
                .map(|a| record::parse_at(a, duration))
                .transpose()
                .map_err(anyhow::Error::msg)?;
            let (session, src) = driver::session_of(src, at_ms);
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

fn dump(a: &DumpArgs) -> Result<ExitCode> {
    let mode = if a.all_frames {
        FoldMode::All
    } else {
        FoldMode::UserOnly
    };
    let (mut session, recording) = target_session(
        &a.target,
        a.at.as_deref(),
        "record it with `leaktop record PID -o FILE`, then dump FILE --at TIME",
    )?;
    if let Some(back) = a.baseline {
        let back = back.as_millis().min(u64::MAX as u128) as u64;
        session.mark_baseline_at(session.now_ms.saturating_sub(back));
    }
    let th = a.thresholds.thresholds(None);
    match a.format {
        Format::Text => {
            if let Some((path, at, duration)) = recording {
                outln!(
                    "recording {} at {} of {}",
                    path.display(),
                    report::age(at),
                    report::age(duration)
                );
            }
            out!("{}", report::text_with(&session, &th, mode))
        }
        Format::Json => outln!("{}", report::json_with(&session, &th, mode)),
    }
    Ok(ExitCode::SUCCESS)
}

fn run_export(pid: u32, format: ExportFormat, th: &Thresholds) -> Result<ExitCode> {
    // The exposition has no await chains: no symbols to wait for.
    let session = driver::snapshot(Connection::attach(pid)?, true, false)?;
    out!("{}", export::render(&session, th, format));
    Ok(ExitCode::SUCCESS)
}

fn run_check(a: &CheckArgs) -> Result<ExitCode> {
    let (target, at, watch, fail_on) = (&a.target, a.at.as_deref(), a.watch, a.fail_on);
    let session = match (target, watch) {
        (Target::Pid(pid), _) if at.is_some() => anyhow::bail!(
            "--at picks a time in a recording; pid {pid} is a live process (use --for to watch it)"
        ),
        (Target::Pid(pid), Some(watch)) => driver::watch(*pid, watch)?,
        (Target::Pid(pid), None) => driver::snapshot_of(*pid)?,
        (Target::Recording(path), Some(_)) => anyhow::bail!(
            "--for watches a live process; {} is a recording (use --at TIME to decide at a time in it)",
            path.display()
        ),
        (Target::Recording(_), None) => target_session(target, at, "")?.0,
    };
    let from = match target {
        Target::Pid(_) => DataFrom::Live,
        Target::Recording(_) => DataFrom::Recording,
    };
    let th = a.thresholds.thresholds(watch);
    let outcome = check::decide(&session, &th, fail_on, from);
    match a.format {
        Format::Text => out!("{}", report::check::text(&session, &th, fail_on, &outcome)),
        Format::Json => outln!("{}", report::check::json(&session, &th, fail_on, &outcome)),
    }
    Ok(ExitCode::from(outcome.exit_code))
}

/// Ctrl-C, SIGTERM and SIGHUP end a headless recording cleanly (with a stop frame).
fn stop_on_signals() -> Arc<AtomicBool> {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let stop = Arc::new(AtomicBool::new(false));
    for sig in [SIGINT, SIGTERM, SIGHUP] {
        let _ = signal_hook::flag::register(sig, stop.clone());
    }
    stop
}

fn record_cmd(a: &RecordArgs, interval: Duration) -> Result<ExitCode> {
    let opts = RecordOptions {
        interval,
        duration: a.duration,
        force: a.force,
        progress: !a.quiet,
    };
    let stop = stop_on_signals();
    let outcome = driver::record::record_pid(a.pid, &a.output, &opts, &stop)?;
    if !a.quiet {
        eprintln!("{}", outcome.summary());
    }
    Ok(ExitCode::SUCCESS)
}

fn list(verbose: bool) -> Result<ExitCode> {
    let found = attach::discover();
    outln!("{:>8}  {:>9}  {:>10}  EXE", "PID", "UPTIME", "LIVE TASKS");
    for f in found {
        let Some(pid) = f.pid else {
            if verbose {
                eprintln!(
                    "skipped {}: process {} of another pid namespace, not visible from here",
                    f.path.display(),
                    f.name.pid
                );
            }
            continue;
        };
        if !f.alive {
            if verbose {
                eprintln!(
                    "skipped {}: stale socket, process {pid} is gone",
                    f.path.display()
                );
            }
            continue;
        }
        let row = Connection::open_as(&f.path, Some(pid)).and_then(|c| {
            c.verify(pid)?;
            driver::snapshot(c, false, false)
        });
        match row {
            Ok(s) => {
                let h = s.hello.as_ref();
                outln!(
                    "{:>8}  {:>9}  {:>10}  {}",
                    pid,
                    report::age(s.now_ms),
                    s.totals().0,
                    h.map(|h| h.exe.as_str()).unwrap_or("?")
                );
            }
            // An agent that stopped after an internal error: the process is there, say so.
            Err(attach::AttachError::Stopped { reason, .. }) => {
                let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|_| "?".into());
                let uptime = attach::process_uptime_ms(pid)
                    .map(report::age)
                    .unwrap_or_else(|| "?".into());
                outln!("{pid:>8}  {uptime:>9}  {:>10}  {exe} ({reason})", "stopped");
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

fn run_demo(a: &DemoArgs, interval: Duration) -> Result<ExitCode> {
    use std::io::IsTerminal;
    let thresholds = &a.thresholds;
    let screen = !a.once && std::io::stdout().is_terminal();
    let demo = driver::demo::start(&a.scenarios, a.fixed, screen)?;
    if screen {
        let mut options = view::Options::new(interval);
        options.thresholds = cli::demo_thresholds(thresholds, cli::DEMO_WINDOW, cli::DEMO_MIN_AGE);
        view::run_live(demo.pid, &options)?;
        return Ok(ExitCode::SUCCESS);
    }
    let warmup = Duration::from_secs_f64(a.warmup.clamp(0.0, 600.0));
    let session = driver::demo::warm_up(&demo, warmup)?;
    // The report `leaktop dump` gives, judged over the warm-up: a window of 1.5 times it
    // (growth needs half a window of data, and the agent starts a moment after the
    // child), tasks stuck for half of it.
    let th = cli::demo_thresholds(
        thresholds,
        (warmup * 3 / 2).max(Duration::from_millis(1500)),
        (warmup / 2).max(Duration::from_millis(500)),
    );
    out!("{}", report::text_with(&session, &th, FoldMode::UserOnly));
    Ok(ExitCode::SUCCESS)
}
