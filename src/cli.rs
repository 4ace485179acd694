//! The command line: every argument type of every subcommand (clap derive), and how they
//! turn into what the library takes.

use std::path::PathBuf;
use std::time::Duration;

use clap::builder::PossibleValue;
use clap::{Parser, Subcommand};

use crate::duration;
use crate::model::check::FailOn;
use crate::model::Thresholds;

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
pub struct Cli {
    #[command(subcommand)]
    pub command: Option<Cmd>,
    /// Process to watch live: the TUI (`?` inside it lists the keys).
    pub pid: Option<u32>,
    /// Record the live view's session to FILE (the `r` key starts and stops recording too).
    #[arg(long, value_name = "FILE")]
    pub record: Option<PathBuf>,
    /// Refresh interval of the live view: `1s`, `500ms`, `2.5s`, `1m` (50ms ..= 1h).
    #[arg(long, short = 'i', default_value = "1s", value_parser = parse_interval, global = true)]
    pub interval: Duration,
    /// What the live view marks as a leak (as for `leaktop check`).
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

/// Parses the refresh / snapshot interval (`1s`, `500ms`, …): 50ms (the agent's fastest)
/// ..= 1h.
pub fn parse_interval(text: &str) -> Result<Duration, String> {
    let d = duration::parse_arg(text)?;
    if !(Duration::from_millis(50)..=Duration::from_secs(3600)).contains(&d) {
        return Err(format!(
            "interval `{text}` is out of range: use 50ms ..= 1h"
        ));
    }
    Ok(d)
}

#[derive(Subcommand, Debug)]
pub enum Cmd {
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
    Dump(DumpArgs),
    /// Decide whether a process leaks tasks: exit 0 no leak, 1 leak found, 2 could not check.
    #[command(
        after_help = "Without --for, decides at once from the agent's history (its last minutes of\nper-site samples); with --for, watches the process that long first.\n\nExamples:\n  leaktop check 1234\n  leaktop check 1234 --for 5m --format json\n  leaktop check 1234 --fail-on stuck     also fail on deadlocked tasks"
    )]
    Check(CheckArgs),
    /// Record a process's session to a file without a screen, for `leaktop replay`.
    #[command(
        after_help = "Snapshots come every --interval (default 1s). Stops after --duration, when the process\nexits, or on Ctrl-C; the file is readable at every moment (a recording cut off by a\ncrash or a full disk replays up to its last whole frame).\n\nExamples:\n  leaktop record 1234 -o session.ltrec --duration 10m\n  leaktop record 1234 -o session.ltrec --interval 250ms"
    )]
    Record(RecordArgs),
    /// Replay a recording in the live view: space plays/pauses, ←/→ step, [ ] speed.
    #[command(
        after_help = "Keys (besides every key of the live view; ? lists them all):\n  space        play / pause\n  ← →          previous / next snapshot\n  [ ]          slower / faster (1/64x .. 1024x)\n  { }          back / forward 10s\n  g G          start / end of the recording\n  :            jump to a time (5m, 1m30s, 50%, -30s)\n\nExamples:\n  leaktop replay session.ltrec\n  leaktop replay session.ltrec --at 5m --speed 10"
    )]
    Replay(ReplayArgs),
    /// Print one snapshot of a process's tasks as metrics (OpenMetrics text, for Prometheus).
    #[command(
        after_help = "Per-site live, running, idle and blocked counts, spawned/completed counters, ages,\ngrowth and verdicts (a stateset), labelled site=\"file:line:column\"; ends with # EOF.\nTo have the process publish these itself, enable the agent's `metrics` feature.\nnode_exporter's textfile collector and the Pushgateway read --format prometheus.\n\nExamples:\n  leaktop export 1234 --format prometheus > /var/lib/node_exporter/textfile/leaktop.prom\n  leaktop export 1234 --format prometheus | curl --data-binary @- http://pushgateway:9091/metrics/job/leaktop"
    )]
    Export(ExportArgs),
    /// Run a bundled leaky program as a child and show what leaktop finds in it.
    #[command(
        after_help = "The live demo judges over a 20s window with tasks stuck for 8s (unless --window is\ngiven), so its leaks are marked within seconds; a production view waits for 1 minute\nof data.\n\nExamples:\n  leaktop demo                   all seven leaks at once, live\n  leaktop demo --list            the scenarios and the seed each comes from\n  leaktop demo fan-out --fixed   the fixed twin of one scenario"
    )]
    Demo(DemoArgs),
    /// Print a shell completion script for leaktop.
    #[command(
        after_help = "Install (then open a new shell):\n  bash        leaktop completions bash > ~/.local/share/bash-completion/completions/leaktop\n  zsh         leaktop completions zsh > ~/.zfunc/_leaktop   (with fpath+=~/.zfunc before compinit)\n  fish        leaktop completions fish > ~/.config/fish/completions/leaktop.fish\n  elvish      leaktop completions elvish >> ~/.config/elvish/rc.elv\n  powershell  leaktop completions powershell >> $PROFILE"
    )]
    Completions {
        #[arg(value_enum)]
        shell: crate::shell::Shell,
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

/// The arguments of `leaktop dump`.
#[derive(clap::Args, Debug)]
pub struct DumpArgs {
    /// Process id of a program running the leaktop agent, or the path of a recording
    /// (`./1234` for a file named like a pid).
    #[arg(value_name = "PID|FILE")]
    pub target: Target,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// For a recording: the time to report (5m, 1m30s, 50%, -30s from the end, end).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub at: Option<String>,
    /// Also show each site's change over the last DURATION (from the agent's history).
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_arg)]
    pub baseline: Option<Duration>,
    /// Show every frame of the await chains (runtime, std and agent frames too).
    #[arg(long)]
    pub all_frames: bool,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

/// The arguments of `leaktop check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// Process id of a program running the leaktop agent, or the path of a recording.
    #[arg(value_name = "PID|FILE")]
    pub target: Target,
    /// For a recording: decide at this time (5m, 50%, -30s from the end; default: end).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub at: Option<String>,
    /// Watch the process this long (30s, 5m, …) before deciding.
    #[arg(long = "for", value_name = "DURATION", value_parser = duration::parse_arg)]
    pub watch: Option<Duration>,
    #[arg(long, value_enum, default_value = "text")]
    pub format: Format,
    /// Which findings make the check fail (exit 1).
    #[arg(long, value_enum, default_value = "leak")]
    pub fail_on: FailOn,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

/// The arguments of `leaktop record`.
#[derive(clap::Args, Debug)]
pub struct RecordArgs {
    /// Process id of a program running the leaktop agent.
    pub pid: u32,
    /// File to write (refused if it exists, unless --force).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Stop after this long (30s, 5m, 1h).
    #[arg(long, value_name = "D", value_parser = duration::parse_arg)]
    pub duration: Option<Duration>,
    /// No progress line and no summary.
    #[arg(short, long)]
    pub quiet: bool,
    /// Replace FILE if it exists (never while another recorder writes it).
    #[arg(long)]
    pub force: bool,
}

/// The arguments of `leaktop replay`.
#[derive(clap::Args, Debug)]
pub struct ReplayArgs {
    /// A recording made by `leaktop record`, `--record` or the live view's `r` key.
    pub file: PathBuf,
    /// Start at this time (5m, 1m30s, 50%, -30s from the end, end).
    #[arg(long, value_name = "TIME", allow_hyphen_values = true)]
    pub at: Option<String>,
    /// Playback speed (1 = real time).
    #[arg(long, default_value_t = 1.0)]
    pub speed: f64,
    /// Start paused.
    #[arg(long)]
    pub paused: bool,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

/// The arguments of `leaktop export`.
#[derive(clap::Args, Debug)]
pub struct ExportArgs {
    /// Process id of a program running the leaktop agent.
    pub pid: u32,
    #[arg(long, value_enum, default_value = "openmetrics")]
    pub format: ExportFormat,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

/// The arguments of `leaktop demo`.
#[derive(clap::Args, Debug)]
pub struct DemoArgs {
    /// Scenarios to run (default: all seven leaks at once). See --list.
    pub scenarios: Vec<String>,
    /// Run the fixed twins instead of the leaks.
    #[arg(long)]
    pub fixed: bool,
    /// Name the scenarios, each with its story and seed, and exit.
    #[arg(long)]
    pub list: bool,
    /// Print one report and exit instead of the live view (default when stdout is
    /// not a terminal).
    #[arg(long)]
    pub once: bool,
    /// Seconds to let the demo run before reporting.
    #[arg(long, default_value_t = 2.0)]
    pub warmup: f64,
    #[command(flatten)]
    pub thresholds: ThresholdArgs,
}

/// Output format of `dump` and `check`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// Output format of `export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExportFormat {
    /// The OpenMetrics text format (Prometheus reads it when it scrapes).
    Openmetrics,
    /// The Prometheus text format 0.0.4, for node_exporter's textfile collector and the
    /// Pushgateway (they refuse OpenMetrics' stateset and info types). Same samples.
    Prometheus,
}

/// What `dump` and `check` look at: a live process or a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pid(u32),
    Recording(PathBuf),
}

impl Target {
    /// A number is a pid; anything else is a path (write `./1234` for a file named
    /// `1234`).
    pub fn parse(s: &str) -> Result<Target, String> {
        if s.is_empty() {
            return Err("expected a pid or the path of a .ltrec recording".into());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(Target::Pid)
                .map_err(|_| format!("{s} is not a valid pid"));
        }
        Ok(Target::Recording(PathBuf::from(s)))
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        Target::parse(s)
    }
}

impl clap::ValueEnum for FailOn {
    fn value_variants<'a>() -> &'a [Self] {
        &[FailOn::Leak, FailOn::Stuck, FailOn::Growing]
    }

    fn to_possible_value(&self) -> Option<PossibleValue> {
        let help = match self {
            FailOn::Leak => "Only leaks (growing, with stuck or long-idle tasks)",
            FailOn::Stuck => "Leaks and stuck tasks (a fixed set blocked for good: deadlocks)",
            FailOn::Growing => "Any finding, growth included",
        };
        Some(PossibleValue::new(self.name()).help(help))
    }
}

/// Threshold flags shared by `check` and `dump`.
#[derive(Debug, Clone, clap::Args)]
pub struct ThresholdArgs {
    /// Trailing window growth is measured over [default: 2m, or the --for duration if longer]
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_arg)]
    pub window: Option<Duration>,
    /// Minimum growth of a site to count as growing, in live tasks per minute.
    #[arg(long, value_name = "TASKS", default_value_t = Thresholds::default().min_rate_per_min)]
    pub min_rate: f64,
    /// Minimum rise over the window, in tasks.
    #[arg(long, value_name = "TASKS", default_value_t = Thresholds::default().min_rise)]
    pub min_rise: f64,
    /// How steadily the count must rise: Mann–Kendall trend from 0 (noise) to 1 (never
    /// steps down).
    #[arg(long, value_name = "TREND", default_value_t = Thresholds::default().min_trend)]
    pub min_trend: f64,
    /// A growing site's tasks are leaked once blocked without progress (or, if idle, alive)
    /// this long [default: 45s].
    #[arg(long, value_name = "DURATION", value_parser = duration::parse_arg)]
    pub min_age: Option<Duration>,
    /// Tasks blocked without progress this long are stuck even if their site does not grow.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = duration::parse_arg)]
    pub stuck_age: Duration,
}

fn ms(d: Duration) -> u64 {
    d.as_millis().min(u64::MAX as u128) as u64
}

impl ThresholdArgs {
    /// The thresholds; `watch` (check's `--for`) widens the default window.
    pub fn thresholds(&self, watch: Option<Duration>) -> Thresholds {
        let default = Thresholds::default();
        let window_ms = match (self.window, watch) {
            (Some(w), _) => ms(w),
            (None, Some(w)) => default.window_ms.max(ms(w)),
            (None, None) => default.window_ms,
        };
        Thresholds {
            window_ms: window_ms.max(1),
            min_rate_per_min: self.min_rate,
            min_rise: self.min_rise,
            min_trend: self.min_trend,
            min_age_ms: self.min_age.map_or(default.min_age_ms, ms),
            stuck_age_ms: ms(self.stuck_age),
        }
    }
}

/// The demo's leaks are seconds old: unless told otherwise it judges over `window` with
/// tasks stuck for `min_age`, so the marks show within seconds instead of the minute a
/// production view waits for.
pub fn demo_thresholds(args: &ThresholdArgs, window: Duration, min_age: Duration) -> Thresholds {
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
pub const DEMO_WINDOW: Duration = Duration::from_secs(20);
pub const DEMO_MIN_AGE: Duration = Duration::from_secs(8);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completions_and_man_pages_cover_every_subcommand() {
        use crate::shell::{self, Shell};
        use clap::CommandFactory;
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

    fn demo_args(args: &[&str]) -> ThresholdArgs {
        let cli = Cli::try_parse_from([&["leaktop", "demo"], args].concat()).expect("parses");
        match cli.command {
            Some(Cmd::Demo(d)) => d.thresholds,
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
        let default = Thresholds::default();
        assert_eq!((th.window_ms, th.min_age_ms), (300_000, default.min_age_ms));
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

    #[test]
    fn targets_are_pids_or_paths() {
        assert_eq!(Target::parse("1234"), Ok(Target::Pid(1234)));
        assert_eq!(
            Target::parse("s.ltrec"),
            Ok(Target::Recording("s.ltrec".into()))
        );
        assert_eq!(
            Target::parse("./1234"),
            Ok(Target::Recording("./1234".into()))
        );
        assert!(Target::parse("99999999999").is_err());
        assert!(Target::parse("").is_err());
    }
}
