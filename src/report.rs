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
//!                                  "completed", "per_min" },
//!                "groups": [ GROUP ] } ],   // most live first
//!   "observed_ms": ms of history the verdicts rest on,
//!   "baseline": null | { "at_ms", "ago_ms" }
//! }
//! ```
//!
//! Verdicts and Δ/min come from the agent's history (see `model::verdict`); `delta` is the
//! change since `--baseline` when one was given.
//!
//! A `GROUP` is the tasks of the site blocked at one place (same op, same channel creation
//! site, same blocking call site, same await chain), most tasks first:
//!
//! ```text
//! { "op": "send"|"reserve"|"recv"|"changed"|"closed"|"other", "op_name": "chan send",
//!   "count", "oldest_age_ms",
//!   "call_site": LOCATION | null, "channel_site": LOCATION | null,
//!   "channel_kind": "mpsc"|"unbounded mpsc"|"oneshot"|"broadcast"|"watch",
//!   "channel": { "id", "capacity" | null, "len" | null, "senders", "receivers", "closed",
//!                "last_send_age_ms" | null, "last_recv_age_ms" | null } | null,
//!                                          // the channel the oldest task waits on
//!   "stack": { "id", "frames": ["0x…", …] } | null }  // raw return addresses, innermost first
//! ```
//!
//! `LOCATION` is `{ "file", "line", "column" }`. Ages are relative to `taken_at_ms`.

use serde::Serialize;

use leaktop_agent::wire::{BlockedGroup, ChannelStats, LocId, Op, SiteKind, SiteStats};

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
        for g in session.groups_of(id) {
            let _ = writeln!(out, "    {}", group_line(session, g));
            if let Some(frames) = g.key.stack.and_then(|s| session.stacks.get(&s)) {
                let hex: Vec<String> = frames.iter().map(|ip| format!("{ip:#x}")).collect();
                let _ = writeln!(out, "        stack: {}", hex.join(" "));
            }
        }
    }
    out
}

/// `4211 tasks [chan send, 5m12s] at src/a.rs:22:18 on mpsc(cap 1, len 1, 1 sender,
/// 1 receiver, last recv 5m12s ago) created at src/a.rs:8:9`
fn group_line(session: &Session, g: &BlockedGroup) -> String {
    let age_ms = session.now_ms.saturating_sub(g.oldest_since_ms);
    let mut line = format!(
        "{} {} [{}, {}] at {}",
        g.count,
        if g.count == 1 { "task" } else { "tasks" },
        g.key.op.name(),
        age(age_ms),
        session.location(g.key.call_site)
    );
    let chan = match &g.channel {
        Some(c) => channel_text(session.now_ms, c),
        None => g.kind.name().to_string(),
    };
    line.push_str(&format!(
        " on {chan} created at {}",
        session.location(g.key.channel_site)
    ));
    line
}

fn plural(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `mpsc(cap 1, len 1, 3 senders, 1 receiver, last recv 5m12s ago)`
fn channel_text(now_ms: u64, c: &ChannelStats) -> String {
    let mut parts = Vec::new();
    if let Some(cap) = c.capacity {
        parts.push(format!("cap {cap}"));
    }
    if let Some(len) = c.len {
        parts.push(format!("len {len}"));
    }
    parts.push(plural(c.senders, "sender", "senders"));
    parts.push(plural(c.receivers, "receiver", "receivers"));
    if c.closed {
        parts.push("closed".into());
    }
    let last = |what: &str, t: Option<u64>| match t {
        Some(t) => format!("last {what} {} ago", age(now_ms.saturating_sub(t))),
        None => format!("never a {what}"),
    };
    parts.push(last("send", c.last_send_ms));
    parts.push(last("recv", c.last_recv_ms));
    format!("{}({})", c.kind.name(), parts.join(", "))
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
    groups: Vec<JsonGroup>,
}

#[derive(Serialize)]
struct JsonGroup {
    op: &'static str,
    op_name: &'static str,
    count: u64,
    oldest_age_ms: u64,
    call_site: Option<JsonLocation>,
    channel_site: Option<JsonLocation>,
    channel_kind: &'static str,
    channel: Option<JsonChannel>,
    stack: Option<JsonStack>,
}

#[derive(Serialize)]
struct JsonChannel {
    id: u64,
    capacity: Option<u64>,
    len: Option<u64>,
    senders: u64,
    receivers: u64,
    closed: bool,
    last_send_age_ms: Option<u64>,
    last_recv_age_ms: Option<u64>,
}

#[derive(Serialize)]
struct JsonStack {
    id: u32,
    frames: Vec<String>,
}

fn op_key(op: Op) -> &'static str {
    match op {
        Op::Send => "send",
        Op::Reserve => "reserve",
        Op::Recv => "recv",
        Op::Changed => "changed",
        Op::Closed => "closed",
        Op::Other => "other",
    }
}

fn json_location(session: &Session, id: LocId) -> Option<JsonLocation> {
    session.locations.get(&id).map(|l| JsonLocation {
        file: l.file.clone(),
        line: l.line,
        column: l.column,
    })
}

fn json_group(session: &Session, g: &BlockedGroup) -> JsonGroup {
    let now = session.now_ms;
    JsonGroup {
        op: op_key(g.key.op),
        op_name: g.key.op.name(),
        count: g.count,
        oldest_age_ms: now.saturating_sub(g.oldest_since_ms),
        call_site: json_location(session, g.key.call_site),
        channel_site: json_location(session, g.key.channel_site),
        channel_kind: g.kind.name(),
        channel: g.channel.as_ref().map(|c| JsonChannel {
            id: c.id,
            capacity: c.capacity,
            len: c.len,
            senders: c.senders,
            receivers: c.receivers,
            closed: c.closed,
            last_send_age_ms: c.last_send_ms.map(|t| now.saturating_sub(t)),
            last_recv_age_ms: c.last_recv_ms.map(|t| now.saturating_sub(t)),
        }),
        stack: g.key.stack.map(|id| JsonStack {
            id,
            frames: session
                .stacks
                .get(&id)
                .map(|f| f.iter().map(|ip| format!("{ip:#x}")).collect())
                .unwrap_or_default(),
        }),
    }
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
            .then(|| json_location(session, id))
            .flatten(),
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
        groups: session
            .groups_of(id)
            .into_iter()
            .map(|g| json_group(session, g))
            .collect(),
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

#[cfg(test)]
mod tests {
    use super::*;

    use leaktop_agent::wire::{
        AgentMsg, ChannelKind, GroupKey, Location, SiteKind, SiteStats, Snapshot,
    };

    /// A session with one site and one blocked group of 4211 tasks on a stuck mpsc.
    fn stuck_session() -> Session {
        let mut s = Session::new();
        for (id, line) in [(1, 3), (2, 8), (3, 22)] {
            s.apply(&AgentMsg::Location {
                id,
                loc: Location {
                    file: "src/a.rs".into(),
                    line,
                    column: 9,
                },
            });
        }
        s.apply(&AgentMsg::Stack {
            id: 0,
            frames: vec![0x1000, 0x2abc],
        });
        let key = GroupKey {
            site: 1,
            op: Op::Send,
            channel_site: 2,
            call_site: 3,
            stack: Some(0),
        };
        s.apply(&AgentMsg::Snapshot(Snapshot {
            seq: 1,
            now_ms: 400_000,
            sites: vec![SiteStats {
                site: 1,
                kind: Some(SiteKind::Spawn),
                live: 4211,
                blocked_send: 4211,
                spawned: 4211,
                oldest_live_ms: Some(88_000),
                ..Default::default()
            }],
            groups: vec![BlockedGroup {
                key,
                kind: ChannelKind::Mpsc,
                count: 4211,
                oldest_since_ms: 88_000,
                channel: Some(ChannelStats {
                    id: 7,
                    kind: ChannelKind::Mpsc,
                    site: 2,
                    capacity: Some(1),
                    len: Some(1),
                    senders: 4212,
                    receivers: 1,
                    closed: false,
                    last_send_ms: Some(88_000),
                    last_recv_ms: None,
                }),
            }],
            ..Default::default()
        }));
        s
    }

    #[test]
    fn blocked_group_reads_like_go_debug_2() {
        let text = text(&stuck_session());
        assert!(
            text.contains(
                "    4211 tasks [chan send, 5m12s] at src/a.rs:22:9 on mpsc(cap 1, len 1, \
                 4212 senders, 1 receiver, last send 5m12s ago, never a recv) created at \
                 src/a.rs:8:9\n        stack: 0x1000 0x2abc\n"
            ),
            "{text}"
        );
    }

    #[test]
    fn json_has_groups_under_their_site() {
        let v: serde_json::Value = serde_json::from_str(&json(&stuck_session())).unwrap();
        let g = &v["sites"][0]["groups"][0];
        assert_eq!(g["op"], "send");
        assert_eq!(g["count"], 4211);
        assert_eq!(g["oldest_age_ms"], 312_000);
        assert_eq!(g["call_site"]["line"], 22);
        assert_eq!(g["channel_site"]["line"], 8);
        assert_eq!(g["channel_kind"], "mpsc");
        assert_eq!(g["channel"]["receivers"], 1);
        assert_eq!(g["channel"]["last_recv_age_ms"], serde_json::Value::Null);
        assert_eq!(g["stack"]["frames"][1], "0x2abc");
    }

    #[test]
    fn ages_read_like_go() {
        assert_eq!(age(1500), "1.5s");
        assert_eq!(age(42_000), "42s");
        assert_eq!(age(312_000), "5m12s");
        assert_eq!(age(3 * 3600 * 1000 + 60_000), "3h01m");
        assert_eq!(age(2 * 86_400_000), "2d00h");
    }
}
