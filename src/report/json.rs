//! The JSON form of `leaktop dump`.
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
//!                                  "completed", "per_min" } ,
//!                "groups": [ GROUP ] } ],   // most live first
//!   "observed_ms": ms of history the verdicts rest on,
//!   "baseline": null | { "at_ms", "ago_ms" }
//! }
//! ```
//!
//! Verdicts and Δ/min come from the agent's history (see `model::verdict`); `delta` is the
//! change since `--baseline` when one was given.

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
//!   "stack": { "id", "frames": ["0x…", …] } | null,  // raw return addresses, innermost first
//!   "chain": [ { "function", "file" | null, "line" | null, "column" | null,
//!                "inlined", "class": "user"|"runtime"|"std"|"agent" } ] }
//!            // the symbolized await chain, innermost first; folded to the user's own
//!            // frames unless --all-frames (empty when the stack has no symbols)
//! ```
//!
//! `LOCATION` is `{ "file", "line", "column" }`. Ages are relative to `taken_at_ms`.

use serde::Serialize;

use leaktop_agent::wire::{BlockedGroup, LocId, Op, SiteKind, SiteStats};

use crate::frame::{fold, FoldMode, Folded};
use crate::model::{Session, SiteVerdict, Thresholds};
use crate::text::hex;

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
pub(crate) struct JsonLocation {
    file: String,
    line: u32,
    column: u32,
}

impl JsonLocation {
    pub(crate) fn of(session: &Session, id: LocId) -> Option<JsonLocation> {
        session.locations.get(&id).map(|l| JsonLocation {
            file: l.file.clone(),
            line: l.line,
            column: l.column,
        })
    }

    /// The location of a spawn site; `None` for the synthetic rows.
    pub(crate) fn of_site(
        session: &Session,
        id: LocId,
        kind: Option<SiteKind>,
    ) -> Option<JsonLocation> {
        (kind_name(kind) == "spawn")
            .then(|| JsonLocation::of(session, id))
            .flatten()
    }
}

/// `"spawn"`, `"uninstrumented"` or `"other"`.
pub(crate) fn kind_name(kind: Option<SiteKind>) -> &'static str {
    match kind {
        Some(SiteKind::Uninstrumented) => "uninstrumented",
        Some(SiteKind::Other) => "other",
        _ => "spawn",
    }
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

fn json_site(
    session: &Session,
    id: LocId,
    st: &SiteStats,
    verdict: Option<&SiteVerdict>,
    mode: FoldMode,
) -> JsonSite {
    JsonSite {
        site: JsonLocation::of_site(session, id, st.kind),
        kind: kind_name(st.kind),
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
        evidence: verdict.map_or_else(Vec::new, |v| super::evidence::sentences(session, v)),
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
            .map(|g| json_group(session, g, mode))
            .collect(),
    }
}

/// The JSON report (pretty-printed), verdicts with default thresholds.
pub fn json(session: &Session) -> String {
    json_with(session, &Thresholds::default(), FoldMode::UserOnly)
}

/// The JSON report with each site's verdict under `th`.
pub fn json_with(session: &Session, th: &Thresholds, mode: FoldMode) -> String {
    let verdicts = crate::model::verdict::by_site(session, th);
    let sites: Vec<(LocId, &SiteStats)> = session.sites_by_live();
    let totals = JsonTotals {
        live: sites.iter().map(|s| s.1.live).fold(0, u64::saturating_add),
        blocked_send: sites
            .iter()
            .map(|s| s.1.blocked_send)
            .fold(0, u64::saturating_add),
        blocked_recv: sites
            .iter()
            .map(|s| s.1.blocked_recv)
            .fold(0, u64::saturating_add),
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
            .map(|(id, st)| json_site(session, *id, st, verdicts.get(id), mode))
            .collect(),
        observed_ms: session.observed_ms(),
        baseline: session.baseline.as_ref().map(|b| JsonBaseline {
            at_ms: b.t_ms,
            ago_ms: session.now_ms.saturating_sub(b.t_ms),
        }),
    };
    serde_json::to_string_pretty(&dump).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
}

#[derive(Serialize)]
pub(crate) struct JsonGroup {
    op: &'static str,
    op_name: &'static str,
    count: u64,
    oldest_age_ms: u64,
    call_site: Option<JsonLocation>,
    channel_site: Option<JsonLocation>,
    channel_kind: &'static str,
    channel: Option<JsonChannel>,
    stack: Option<JsonStack>,
    chain: Vec<JsonFrame>,
}

#[derive(Serialize)]
struct JsonFrame {
    function: String,
    file: Option<String>,
    line: Option<u32>,
    column: Option<u32>,
    inlined: bool,
    class: &'static str,
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
        Op::Lock => "lock",
        Op::Read => "read",
        Op::Write => "write",
        Op::Acquire => "acquire",
        Op::Notified => "notified",
        Op::BarrierWait => "barrier_wait",
        Op::Init => "init",
        Op::Join => "join",
        Op::Wait => "wait",
    }
}

pub(crate) fn json_group(session: &Session, g: &BlockedGroup, mode: FoldMode) -> JsonGroup {
    let now = session.now_ms;
    JsonGroup {
        op: op_key(g.key.op),
        op_name: g.key.op.name(),
        count: g.count,
        oldest_age_ms: now.saturating_sub(g.oldest_since_ms),
        call_site: JsonLocation::of(session, g.key.call_site),
        channel_site: JsonLocation::of(session, g.key.channel_site),
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
        chain: g
            .key
            .stack
            .and_then(|id| session.symbols.get(&id))
            .map(|frames| {
                fold(frames, mode)
                    .into_iter()
                    .filter_map(|f| match f {
                        Folded::Frame(f) => Some(JsonFrame {
                            function: f.function.to_string(),
                            file: f.file.as_deref().map(str::to_string),
                            line: f.line,
                            column: f.column,
                            inlined: f.inlined,
                            class: f.class.name(),
                        }),
                        Folded::Hidden { .. } => None,
                    })
                    .collect()
            })
            .unwrap_or_default(),
    }
}
