//! Text and JSON reports of a [`Session`]: `leaktop dump`.
//!
//! # JSON schema (`leaktop.dump`, version 1)
//!
//! A single object; fields are only ever added, never renamed or removed, within a version:
//!
//! ```text
//! {
//!   "schema": "leaktop.dump", "version": 1,
//!   "process": { "pid", "exe", "build_id" (hex), "agent_version", "start_time_ticks",
//!                "uptime_ms", "origin_unix_ms" },
//!   "taken_at_ms": agent ms of the snapshot, "exited": null | "reason",
//!   "totals": { "live", "blocked_send", "blocked_recv", "sites", "sites_seen" },
//!   "sites": [ { "site": { "file", "line", "column" } | null, "kind": "spawn"|"uninstrumented"|"other",
//!                "live", "running", "idle", "blocked_send", "blocked_recv",
//!                "spawned", "completed", "oldest_live_age_ms" | null,
//!                "verdict": "leak"|"stuck"|"growing"|"none", "rate_per_min",
//!                "evidence": [ "sentence", … ],
//!                "delta": null | { "live", "blocked_send", "blocked_recv", "spawned",
//!                                  "completed", "per_min" } } ],   // most live first
//!   "observed_ms": ms of history the verdicts rest on,
//!   "baseline": null | { "at_ms", "ago_ms" }
//! }
//! ```
//!
//! Verdicts and Δ/min come from the agent's history (see `model::verdict`); `delta` is the
//! change since `--baseline` when one was given.

use serde::Serialize;

use leaktop_agent::wire::{LocId, SiteKind, SiteStats};

use crate::model::{Session, SiteVerdict, Thresholds, Verdict};

/// Output format of `dump`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    Text,
    Json,
}

/// `5m12s`-style age (see [`crate::duration::age`]).
pub fn age(ms: u64) -> String {
    crate::duration::age(ms)
}

fn site_label(session: &Session, id: LocId, kind: Option<SiteKind>) -> String {
    match kind {
        Some(SiteKind::Uninstrumented) => "<uninstrumented tasks>".into(),
        Some(SiteKind::Other) => "<other sites, past the site cap>".into(),
        _ => session.location(id),
    }
}

/// The Go `goroutine?debug=1`-style text report, verdicts with default thresholds.
pub fn text(session: &Session) -> String {
    text_with(session, &Thresholds::default())
}

fn verdict_map(
    session: &Session,
    th: &Thresholds,
) -> std::collections::HashMap<LocId, SiteVerdict> {
    crate::model::assess(session, th)
        .into_iter()
        .map(|v| (v.site, v))
        .collect()
}

/// The text report with each site's verdict (under `th`), Δ/min and evidence.
pub fn text_with(session: &Session, th: &Thresholds) -> String {
    let verdicts = verdict_map(session, th);
    use std::fmt::Write;
    let mut out = String::new();
    if let Some(h) = &session.hello {
        let _ = writeln!(
            out,
            "leaktop dump of pid {} ({}), up {}, agent {}",
            h.pid,
            h.exe,
            age(session.now_ms),
            h.agent_version
        );
    }
    let (live, blocked) = session.totals();
    let sites = session.sites_by_live();
    let _ = writeln!(
        out,
        "{live} live tasks in {} spawn sites, {blocked} blocked on channels",
        sites.len()
    );
    if let Some(reason) = &session.ended {
        let _ = writeln!(out, "note: {reason}; showing the last state received");
    }
    if let Some(h) = &session.hello {
        if session.sites_seen > h.site_cap as u64 {
            let _ = writeln!(
                out,
                "note: {} spawn sites seen, past the agent's cap of {}: the rest are counted together as <other sites>",
                session.sites_seen, h.site_cap
            );
        }
    }
    let count = |v: Verdict| verdicts.values().filter(|x| x.verdict == v).count();
    let _ = writeln!(
        out,
        "verdicts: {} leak, {} stuck, {} growing (window {} over {} of history)",
        count(Verdict::Leak),
        count(Verdict::Stuck),
        count(Verdict::Growing),
        age(th.window_ms),
        age(session.observed_ms())
    );
    if let Some(b) = &session.baseline {
        let _ = writeln!(
            out,
            "changes since the baseline {} ago are marked Δ",
            age(session.now_ms.saturating_sub(b.t_ms))
        );
    }
    for (id, st) in sites {
        let _ = writeln!(out);
        let v = verdicts.get(&id);
        let mut tags = Vec::new();
        if let Some(v) = v {
            if v.verdict != Verdict::None {
                tags.push(v.verdict.name().to_uppercase());
            }
            if v.growth.enough_data {
                tags.push(format!("{:+.1}/min", v.rate_per_min));
            }
        }
        let _ = writeln!(
            out,
            "{} live ({} spawned, {} done) @ {}{}",
            st.live,
            st.spawned,
            st.completed,
            site_label(session, id, st.kind),
            if tags.is_empty() {
                String::new()
            } else {
                format!("  [{}]", tags.join(", "))
            }
        );
        let mut states = Vec::new();
        if st.running > 0 {
            states.push(format!("{} running", st.running));
        }
        if st.idle() > 0 {
            states.push(format!("{} idle", st.idle()));
        }
        if st.blocked_send > 0 {
            states.push(format!("{} blocked on send", st.blocked_send));
        }
        if st.blocked_recv > 0 {
            states.push(format!("{} blocked on recv", st.blocked_recv));
        }
        if let Some(oldest) = st.oldest_live_ms {
            states.push(format!(
                "oldest {}",
                age(session.now_ms.saturating_sub(oldest))
            ));
        }
        if !states.is_empty() {
            let _ = writeln!(out, "    {}", states.join(", "));
        }
        if let Some(d) = session.delta(id) {
            let _ = writeln!(
                out,
                "    Δ {:+} live ({:+.1}/min), {} spawned, {} done",
                d.live,
                d.live_per_min(),
                d.spawned,
                d.completed
            );
        }
        for e in v.map(|v| v.evidence.as_slice()).unwrap_or(&[]) {
            let _ = writeln!(out, "    {e}");
        }
    }
    out
}

#[derive(Serialize)]
struct JsonDump<'a> {
    schema: &'static str,
    version: u32,
    process: Option<JsonProcess<'a>>,
    taken_at_ms: u64,
    exited: Option<&'a str>,
    totals: JsonTotals,
    sites: Vec<JsonSite>,
    observed_ms: u64,
    baseline: Option<JsonBaseline>,
}

#[derive(Serialize)]
struct JsonBaseline {
    at_ms: u64,
    ago_ms: u64,
}

#[derive(Serialize)]
struct JsonDelta {
    live: i64,
    blocked_send: i64,
    blocked_recv: i64,
    spawned: u64,
    completed: u64,
    per_min: f64,
}

#[derive(Serialize)]
struct JsonProcess<'a> {
    pid: u32,
    exe: &'a str,
    build_id: String,
    agent_version: &'a str,
    start_time_ticks: u64,
    uptime_ms: u64,
    origin_unix_ms: u64,
}

#[derive(Serialize)]
struct JsonTotals {
    live: u64,
    blocked_send: u64,
    blocked_recv: u64,
    sites: usize,
    sites_seen: u64,
}

#[derive(Serialize)]
struct JsonLocation {
    file: String,
    line: u32,
    column: u32,
}

#[derive(Serialize)]
struct JsonSite {
    site: Option<JsonLocation>,
    kind: &'static str,
    live: u64,
    running: u64,
    idle: u64,
    blocked_send: u64,
    blocked_recv: u64,
    spawned: u64,
    completed: u64,
    oldest_live_age_ms: Option<u64>,
    verdict: &'static str,
    rate_per_min: f64,
    evidence: Vec<String>,
    delta: Option<JsonDelta>,
}

fn json_site(
    session: &Session,
    id: LocId,
    st: &SiteStats,
    verdict: Option<&SiteVerdict>,
) -> JsonSite {
    let kind = match st.kind {
        Some(SiteKind::Uninstrumented) => "uninstrumented",
        Some(SiteKind::Other) => "other",
        _ => "spawn",
    };
    JsonSite {
        site: (kind == "spawn")
            .then(|| session.locations.get(&id))
            .flatten()
            .map(|l| JsonLocation {
                file: l.file.clone(),
                line: l.line,
                column: l.column,
            }),
        kind,
        live: st.live,
        running: st.running,
        idle: st.idle(),
        blocked_send: st.blocked_send,
        blocked_recv: st.blocked_recv,
        spawned: st.spawned,
        completed: st.completed,
        oldest_live_age_ms: st.oldest_live_ms.map(|t| session.now_ms.saturating_sub(t)),
        verdict: verdict.map_or("none", |v| v.verdict.name()),
        rate_per_min: verdict.map_or(0.0, |v| (v.rate_per_min * 10.0).round() / 10.0),
        evidence: verdict.map(|v| v.evidence.clone()).unwrap_or_default(),
        delta: session.delta(id).map(|d| JsonDelta {
            live: d.live,
            blocked_send: d.blocked_send,
            blocked_recv: d.blocked_recv,
            spawned: d.spawned,
            completed: d.completed,
            per_min: (d.live_per_min() * 10.0).round() / 10.0,
        }),
    }
}

/// Hex of a build id.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The JSON report (pretty-printed), verdicts with default thresholds.
pub fn json(session: &Session) -> String {
    json_with(session, &Thresholds::default())
}

/// The JSON report with each site's verdict under `th`.
pub fn json_with(session: &Session, th: &Thresholds) -> String {
    let verdicts = verdict_map(session, th);
    let sites: Vec<(LocId, &SiteStats)> = session.sites_by_live();
    let totals = JsonTotals {
        live: sites.iter().map(|s| s.1.live).sum(),
        blocked_send: sites.iter().map(|s| s.1.blocked_send).sum(),
        blocked_recv: sites.iter().map(|s| s.1.blocked_recv).sum(),
        sites: sites.len(),
        sites_seen: session.sites_seen,
    };
    let dump = JsonDump {
        schema: "leaktop.dump",
        version: 1,
        process: session.hello.as_ref().map(|h| JsonProcess {
            pid: h.pid,
            exe: &h.exe,
            build_id: hex(&h.build_id),
            agent_version: &h.agent_version,
            start_time_ticks: h.start_time_ticks,
            uptime_ms: session.now_ms,
            origin_unix_ms: h.origin_unix_ms,
        }),
        taken_at_ms: session.now_ms,
        exited: session.ended.as_deref(),
        totals,
        sites: sites
            .iter()
            .map(|(id, st)| json_site(session, *id, st, verdicts.get(id)))
            .collect(),
        observed_ms: session.observed_ms(),
        baseline: session.baseline.as_ref().map(|b| JsonBaseline {
            at_ms: b.t_ms,
            ago_ms: session.now_ms.saturating_sub(b.t_ms),
        }),
    };
    serde_json::to_string_pretty(&dump).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}
