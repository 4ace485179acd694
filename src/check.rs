//! `leaktop check`: decide whether a process leaks tasks, for cron jobs, alerts and CI.
//!
//! Without `--for` it decides at once from the agent's history (the last minutes of
//! per-site samples) and one snapshot; with `--for` it watches live for that long first.
//! Exit codes: 0 no leak, 1 leak found, 2 could not check.
//!
//! # JSON schema (`leaktop.check`, version 1)
//!
//! Fields are only ever added within a version:
//!
//! ```text
//! {
//!   "schema": "leaktop.check", "version": 1,
//!   "result": "leak" | "ok" | "inconclusive", "exit_code": 1 | 0 | 2,
//!   "reason": null | "why the check is inconclusive",
//!   "process": { "pid", "exe", "start_time_ticks", "uptime_ms" } | null,
//!   "observed_ms": ms of data the verdicts rest on (history + watching),
//!   "exited": null | "reason",
//!   "thresholds": { "window_ms", "min_rate_per_min", "min_rise", "min_trend",
//!                   "min_age_ms", "stuck_age_ms", "fail_on" },
//!   "findings": [ { "verdict": "leak"|"stuck"|"growing", "fails": bool,
//!                   "site": { "file", "line", "column" } | null,
//!                   "kind": "spawn"|"uninstrumented"|"other", "label",
//!                   "live", "idle", "rate_per_min", "stuck_tasks",
//!                   "oldest_stuck_age_ms" | null, "oldest_live_age_ms" | null,
//!                   "evidence": [ "sentence", … ],
//!                   "groups": [ GROUP ] } ]     // worst first; GROUP as in `leaktop.dump`
//! }
//! ```

// Data from outside (agent bytes, recordings, /proc) must never panic leaktop.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::time::{Duration, Instant};

use serde::Serialize;

use leaktop_agent::wire::{AgentMsg, SiteKind};

use crate::attach::AttachError;
use crate::duration::{self, age};
use crate::model::{Session, SiteVerdict, Thresholds, Verdict};
use crate::source::{Event, LiveSource, Source};
use crate::symbolize::FoldMode;

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

/// Which verdicts make `check` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum FailOn {
    /// Only leaks (growing, with stuck or long-idle tasks).
    Leak,
    /// Leaks and stuck tasks (a fixed set blocked for good: deadlocks).
    Stuck,
    /// Any finding, growth included.
    Growing,
}

impl FailOn {
    pub fn fails(self, v: Verdict) -> bool {
        match self {
            FailOn::Leak => v == Verdict::Leak,
            FailOn::Stuck => matches!(v, Verdict::Leak | Verdict::Stuck),
            FailOn::Growing => v != Verdict::None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            FailOn::Leak => "leak",
            FailOn::Stuck => "stuck",
            FailOn::Growing => "growing",
        }
    }
}

/// Collects the session `check` decides on: history and one snapshot, or history and
/// `watch` of live snapshots. A process that exits while watched ends the watch early
/// (the session says so in `ended`).
pub fn gather(pid: u32, watch: Option<Duration>) -> Result<Session, AttachError> {
    let mut session = watch_or_snapshot(pid, watch)?;
    // The await chains of what we found, while the process (and its maps) are there.
    crate::resolve::StackResolver::for_session(&session).resolve_new(&mut session);
    Ok(session)
}

fn watch_or_snapshot(pid: u32, watch: Option<Duration>) -> Result<Session, AttachError> {
    let Some(watch) = watch else {
        return crate::util::snapshot_session(pid, true);
    };
    let interval = (watch / 20).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut source = LiveSource::attach(pid, interval)?;
    let mut session = Session::new();
    session.apply(&AgentMsg::Hello(source.hello().clone()));
    let start = Instant::now();
    let mut snapshots = 0u64;
    loop {
        let left = watch.saturating_sub(start.elapsed());
        // Past the deadline, still wait for one snapshot after the history.
        if left.is_zero() && snapshots > 0 {
            break;
        }
        let wait = left
            .max(Duration::from_millis(50))
            .min(Duration::from_secs(1));
        match source.next(wait) {
            Some(Event::Msg(msg)) => {
                if matches!(msg, AgentMsg::Snapshot(_)) {
                    snapshots += 1;
                }
                session.apply(&msg);
            }
            Some(Event::End(reason)) => {
                session.end(&reason);
                break;
            }
            None if start.elapsed() > watch + Duration::from_secs(10) => {
                session.end("the agent sent no snapshot for 10 s");
                break;
            }
            None => {}
        }
    }
    Ok(session)
}

/// What `check` concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Every site with a verdict other than none, worst first.
    pub findings: Vec<SiteVerdict>,
    /// 0 no leak, 1 leak found, 2 could not check.
    pub exit_code: u8,
    /// Why the check is inconclusive (exit code 2).
    pub reason: Option<String>,
}

/// Where the data came from: it decides what to advise when there is too little of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFrom {
    /// A live process: watching longer (`--for`) gets more.
    Live,
    /// A recording: only a later `--at` (or a longer recording) has more.
    Recording,
}

/// Decides on a gathered session. Pure.
pub fn decide(session: &Session, th: &Thresholds, fail_on: FailOn, from: DataFrom) -> Outcome {
    let findings: Vec<SiteVerdict> = crate::model::assess(session, th)
        .into_iter()
        .filter(SiteVerdict::is_finding)
        .collect();
    let fails = findings.iter().any(|f| fail_on.fails(f.verdict));
    if fails {
        return Outcome {
            findings,
            exit_code: 1,
            reason: None,
        };
    }
    let observed = session.observed_ms();
    let reason = if session.hello.is_none() || session.seq == 0 {
        Some("no snapshot was received from the agent".to_string())
    } else if observed < th.min_span_ms() {
        let enough = age(th.min_span_ms().max(1000));
        let advice = match from {
            DataFrom::Live => format!("wait, or run with --for {enough}"),
            DataFrom::Recording => {
                format!("pick a later --at, a shorter --window, or record for at least {enough}")
            }
        };
        Some(format!(
            "only {} of data, and growth needs {} (half the {} window): {advice}",
            age(observed),
            age(th.min_span_ms()),
            age(th.window_ms),
        ))
    } else {
        session
            .ended
            .as_ref()
            .map(|e| format!("{e} before the check finished"))
    };
    Outcome {
        findings,
        exit_code: if reason.is_some() { 2 } else { 0 },
        reason,
    }
}

fn label(session: &Session, v: &SiteVerdict) -> String {
    match v.kind {
        Some(SiteKind::Uninstrumented) => "<uninstrumented tasks>".into(),
        Some(SiteKind::Other) => "<other sites, past the site cap>".into(),
        _ => session.location(v.site),
    }
}

/// The text report.
pub fn text(session: &Session, th: &Thresholds, fail_on: FailOn, out: &Outcome) -> String {
    use std::fmt::Write;
    let mut s = String::new();
    let who = session
        .hello
        .as_ref()
        .map(|h| format!("pid {} ({})", h.pid, h.exe))
        .unwrap_or_else(|| "the process".into());
    let failing = out
        .findings
        .iter()
        .filter(|f| fail_on.fails(f.verdict))
        .count();
    let head = match out.exit_code {
        1 => format!(
            "LEAK in {} of {who}",
            crate::plural::count(failing as u64, "site")
        ),
        0 => format!("ok: no leak in {who}"),
        _ => format!("inconclusive for {who}"),
    };
    let _ = writeln!(
        s,
        "{head}: {}, {} of data, window {}",
        crate::plural::count(session.sites.len() as u64, "site"),
        age(session.observed_ms()),
        age(th.window_ms)
    );
    if let Some(reason) = &out.reason {
        let _ = writeln!(s, "could not check: {reason}");
    }
    // Why the data stops where it does (the process exited mid-watch), unless said above.
    if let Some(ended) = session
        .ended
        .as_ref()
        .filter(|e| !out.reason.as_ref().is_some_and(|r| r.contains(e.as_str())))
    {
        let _ = writeln!(s, "note: {ended}");
    }
    for f in &out.findings {
        let _ = writeln!(s);
        let _ = writeln!(
            s,
            "{} {}: {} live, {:+.1}/min{}",
            f.verdict.name().to_uppercase(),
            label(session, f),
            f.live,
            f.rate_per_min,
            if fail_on.fails(f.verdict) {
                ""
            } else {
                " (not failing the check)"
            }
        );
        for e in &f.evidence {
            let _ = writeln!(s, "    {e}");
        }
        for g in session.groups_of(f.site) {
            let _ = writeln!(s, "    {}", crate::report::group_line(session, g));
            for line in crate::report::chain_lines(session, g.key.stack, FoldMode::UserOnly) {
                let _ = writeln!(s, "        {line}");
            }
        }
    }
    for note in &session.symbol_notes {
        let _ = writeln!(s, "\nnote: {note}");
    }
    s
}

#[derive(Serialize)]
struct JsonCheck<'a> {
    schema: &'static str,
    version: u32,
    result: &'static str,
    exit_code: u8,
    reason: Option<&'a str>,
    process: Option<JsonProcess<'a>>,
    observed_ms: u64,
    exited: Option<&'a str>,
    thresholds: JsonThresholds,
    findings: Vec<JsonFinding>,
}

#[derive(Serialize)]
struct JsonProcess<'a> {
    pid: u32,
    exe: &'a str,
    start_time_ticks: u64,
    uptime_ms: u64,
}

#[derive(Serialize)]
struct JsonThresholds {
    window_ms: u64,
    min_rate_per_min: f64,
    min_rise: f64,
    min_trend: f64,
    min_age_ms: u64,
    stuck_age_ms: u64,
    fail_on: &'static str,
}

#[derive(Serialize)]
struct JsonLocation {
    file: String,
    line: u32,
    column: u32,
}

#[derive(Serialize)]
struct JsonFinding {
    verdict: &'static str,
    fails: bool,
    site: Option<JsonLocation>,
    kind: &'static str,
    label: String,
    live: u64,
    idle: u64,
    rate_per_min: f64,
    stuck_tasks: u64,
    oldest_stuck_age_ms: Option<u64>,
    oldest_live_age_ms: Option<u64>,
    evidence: Vec<String>,
    /// The site's blocked groups with their await chains (the `leaktop.dump` GROUP).
    groups: Vec<crate::report::JsonGroup>,
}

/// `"spawn"`, `"uninstrumented"` or `"other"`.
pub fn kind_name(kind: Option<SiteKind>) -> &'static str {
    match kind {
        Some(SiteKind::Uninstrumented) => "uninstrumented",
        Some(SiteKind::Other) => "other",
        _ => "spawn",
    }
}

/// The JSON report (pretty-printed).
pub fn json(session: &Session, th: &Thresholds, fail_on: FailOn, out: &Outcome) -> String {
    let doc = JsonCheck {
        schema: "leaktop.check",
        version: 1,
        result: match out.exit_code {
            1 => "leak",
            0 => "ok",
            _ => "inconclusive",
        },
        exit_code: out.exit_code,
        reason: out.reason.as_deref(),
        process: session.hello.as_ref().map(|h| JsonProcess {
            pid: h.pid,
            exe: &h.exe,
            start_time_ticks: h.start_time_ticks,
            uptime_ms: session.now_ms,
        }),
        observed_ms: session.observed_ms(),
        exited: session.ended.as_deref(),
        thresholds: JsonThresholds {
            window_ms: th.window_ms,
            min_rate_per_min: th.min_rate_per_min,
            min_rise: th.min_rise,
            min_trend: th.min_trend,
            min_age_ms: th.min_age_ms,
            stuck_age_ms: th.stuck_age_ms,
            fail_on: fail_on.name(),
        },
        findings: out
            .findings
            .iter()
            .map(|f| JsonFinding {
                verdict: f.verdict.name(),
                fails: fail_on.fails(f.verdict),
                site: (kind_name(f.kind) == "spawn")
                    .then(|| session.locations.get(&f.site))
                    .flatten()
                    .map(|l| JsonLocation {
                        file: l.file.clone(),
                        line: l.line,
                        column: l.column,
                    }),
                kind: kind_name(f.kind),
                label: label(session, f),
                live: f.live,
                idle: f.idle,
                rate_per_min: (f.rate_per_min * 10.0).round() / 10.0,
                stuck_tasks: f.stuck_tasks,
                oldest_stuck_age_ms: f.oldest_stuck_age_ms,
                oldest_live_age_ms: f.oldest_live_age_ms,
                evidence: f.evidence.clone(),
                groups: session
                    .groups_of(f.site)
                    .into_iter()
                    .map(|g| crate::report::json_group(session, g, FoldMode::UserOnly))
                    .collect(),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
