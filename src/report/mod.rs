//! Reports of a [`Session`]: the text of `leaktop dump` (grouped like Go's
//! `goroutine?debug=1`, with `debug=2`-style blocked groups and await chains under each
//! site) and its JSON form ([`json`], schema documented there).

use std::collections::HashMap;
use std::fmt::Write;

use leaktop_agent::wire::{BlockedGroup, ChannelStats, LocId, SiteKind, SiteStats, StackId};

use crate::frame::{display_name, fold, FoldMode, Folded};
use crate::model::{Session, SiteVerdict, Thresholds, Verdict};

pub mod check;
pub mod evidence;
mod json;
pub use json::{json, json_with};

/// `5m12s`-style age (see [`crate::duration::age`]).
pub fn age(ms: u64) -> String {
    crate::duration::age(ms)
}

/// The name of a site's row: its location, or what the synthetic rows stand for.
pub(crate) fn site_label(session: &Session, id: LocId, kind: Option<SiteKind>) -> String {
    match kind.and_then(SiteKind::row_label) {
        Some(label) => label.into(),
        None => session.location(id),
    }
}

/// The Go `goroutine?debug=1`-style text report, verdicts with default thresholds.
pub fn text(session: &Session) -> String {
    text_with(session, &Thresholds::default(), FoldMode::UserOnly)
}

/// The text report with each site's verdict (under `th`), Δ/min and evidence.
/// Await chains show the user's own frames unless `mode` is [`FoldMode::All`].
pub fn text_with(session: &Session, th: &Thresholds, mode: FoldMode) -> String {
    let verdicts = crate::model::verdict::by_site(session, th);
    let mut out = String::new();
    dump_header(&mut out, session, th, &verdicts);
    for (id, st) in session.sites_by_live() {
        let _ = writeln!(out);
        site_paragraph(&mut out, session, id, st, verdicts.get(&id), mode);
    }
    for note in &session.symbol_notes {
        let _ = writeln!(out, "\nnote: {note}");
    }
    out
}

/// The lines above the sites: the process, the totals, notes, the verdicts' tally.
fn dump_header(
    out: &mut String,
    session: &Session,
    th: &Thresholds,
    verdicts: &HashMap<LocId, SiteVerdict>,
) {
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
    let _ = writeln!(
        out,
        "{} in {}, {blocked} blocked on channels",
        crate::plural::count(live, "live task"),
        crate::plural::count(session.sites_by_live().len() as u64, "spawn site")
    );
    if let Some(reason) = &session.ended {
        let _ = writeln!(out, "note: {reason}; showing the last state received");
    }
    if let Some(h) = session
        .hello
        .as_ref()
        .filter(|h| session.sites_seen > h.site_cap as u64)
    {
        let _ = writeln!(
            out,
            "note: {} spawn sites seen, past the agent's cap of {}: the rest are counted together as <other sites>",
            session.sites_seen, h.site_cap
        );
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
}

/// One site: its counts and verdict, its tasks' states, the change since the baseline,
/// the evidence, then its blocked groups with their await chains.
fn site_paragraph(
    out: &mut String,
    session: &Session,
    id: LocId,
    st: &SiteStats,
    v: Option<&SiteVerdict>,
    mode: FoldMode,
) {
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
    let states = task_states(session, st);
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
    for e in v.iter().flat_map(|v| &v.evidence) {
        let _ = writeln!(out, "    {}", evidence::sentence(session, e));
    }
    for g in session.groups_of(id) {
        let _ = writeln!(out, "    {}", group_line(session, g));
        for line in chain_lines(session, g.key.stack, mode) {
            let _ = writeln!(out, "        {line}");
        }
    }
}

/// `1 idle, 53 blocked on send, oldest 4.0s`.
fn task_states(session: &Session, st: &SiteStats) -> Vec<String> {
    let mut states = Vec::new();
    for (n, what) in [
        (st.running, "running"),
        (st.idle(), "idle"),
        (st.blocked_send, "blocked on send"),
        (st.blocked_recv, "blocked on recv"),
    ] {
        if n > 0 {
            states.push(format!("{n} {what}"));
        }
    }
    if let Some(oldest) = st.oldest_live_ms {
        states.push(format!(
            "oldest {}",
            age(session.now_ms.saturating_sub(oldest))
        ));
    }
    states
}

/// `4211 tasks [chan send, 5m12s] at src/a.rs:22:18 on mpsc(cap 1, len 1, 1 sender,
/// 1 receiver, last recv 5m12s ago) created at src/a.rs:8:9`
pub(crate) fn group_line(session: &Session, g: &BlockedGroup) -> String {
    let age_ms = session.now_ms.saturating_sub(g.oldest_since_ms);
    let mut line = format!(
        "{} [{}, {}] at {}",
        crate::plural::count(g.count, "task"),
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

/// `mpsc(cap 1, len 1, 3 senders, 1 receiver, last recv 5m12s ago)`
pub(crate) fn channel_text(now_ms: u64, c: &ChannelStats) -> String {
    let mut parts = Vec::new();
    if let Some(cap) = c.capacity {
        parts.push(format!("cap {cap}"));
    }
    if let Some(len) = c.len {
        parts.push(format!("len {len}"));
    }
    parts.push(crate::plural::count(c.senders, "sender"));
    parts.push(crate::plural::count(c.receivers, "receiver"));
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

/// The await chain of `stack` folded by `mode`, one line per frame
/// (`function  file:line:col`, `… N runtime frames`), or the raw addresses when the stack
/// has no symbols. Empty without a stack.
pub fn chain_lines(session: &Session, stack: Option<StackId>, mode: FoldMode) -> Vec<String> {
    let Some(id) = stack else {
        return Vec::new();
    };
    match session.symbols.get(&id) {
        Some(frames) => fold(frames, mode)
            .into_iter()
            .map(|f| match f {
                Folded::Frame(f) => {
                    let name = display_name(&f.function);
                    match f.location() {
                        Some(loc) => format!("{name}\n            at {loc}"),
                        None => name.to_string(),
                    }
                }
                Folded::Hidden { count } => {
                    format!(
                        "… {}",
                        crate::plural::count(count as u64, "runtime/agent frame")
                    )
                }
            })
            .collect(),
        None => session
            .stacks
            .get(&id)
            .map(|raw| {
                let hex: Vec<String> = raw.iter().map(|ip| format!("{ip:#x}")).collect();
                vec![format!("stack (not symbolized): {}", hex.join(" "))]
            })
            .unwrap_or_default(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use leaktop_agent::wire::{AgentMsg, ChannelKind, GroupKey, Location, Op, SiteStats, Snapshot};

    /// A session with one site and one blocked group of 4211 tasks on a stuck mpsc.
    fn stuck_session() -> Session {
        let mut s = Session::new();
        for (id, line) in [(1, 3), (2, 8), (3, 22)] {
            s.apply_msg(&AgentMsg::Location {
                id,
                loc: Location {
                    file: "src/a.rs".into(),
                    line,
                    column: 9,
                },
            });
        }
        s.apply_msg(&AgentMsg::Stack {
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
        s.apply_msg(&AgentMsg::Snapshot(Snapshot {
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
                 src/a.rs:8:9\n        stack (not symbolized): 0x1000 0x2abc\n"
            ),
            "{text}"
        );
    }

    /// Issue 22: "1 live tasks in 1 spawn sites".
    #[test]
    fn one_site_with_one_task_reads_1_site_not_1_sites() {
        let mut session = stuck_session();
        session.apply_msg(&AgentMsg::Snapshot(Snapshot {
            seq: 2,
            now_ms: 401_000,
            sites: vec![SiteStats {
                site: 1,
                kind: Some(SiteKind::Spawn),
                live: 1,
                blocked_send: 1,
                spawned: 1,
                oldest_live_ms: Some(88_000),
                ..Default::default()
            }],
            ..Default::default()
        }));
        let text = text(&session);
        assert!(
            text.contains("1 live task in 1 spawn site, 1 blocked on channels"),
            "{text}"
        );
        assert!(
            !text.contains("1 sites") && !text.contains("1 tasks"),
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
}
