//! The text and JSON of `leaktop check`.
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

use serde::Serialize;

use super::json::{json_group, kind_name, JsonGroup, JsonLocation};
use super::{age, chain_lines, evidence, group_line, site_label};
use crate::frame::FoldMode;
use crate::model::check::{FailOn, Outcome};
use crate::model::{Session, SiteVerdict, Thresholds};

fn label(session: &Session, v: &SiteVerdict) -> String {
    site_label(session, v.site, v.kind)
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
        for e in evidence::sentences(session, f) {
            let _ = writeln!(s, "    {e}");
        }
        for g in session.groups_of(f.site) {
            let _ = writeln!(s, "    {}", group_line(session, g));
            for line in chain_lines(session, g.key.stack, FoldMode::UserOnly) {
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
    groups: Vec<JsonGroup>,
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
                site: JsonLocation::of_site(session, f.site, f.kind),
                kind: kind_name(f.kind),
                label: label(session, f),
                live: f.live,
                idle: f.idle,
                rate_per_min: (f.rate_per_min * 10.0).round() / 10.0,
                stuck_tasks: f.stuck_tasks,
                oldest_stuck_age_ms: f.oldest_stuck_age_ms,
                oldest_live_age_ms: f.oldest_live_age_ms,
                evidence: evidence::sentences(session, f),
                groups: session
                    .groups_of(f.site)
                    .into_iter()
                    .map(|g| json_group(session, g, FoldMode::UserOnly))
                    .collect(),
            })
            .collect(),
    };
    serde_json::to_string_pretty(&doc).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
