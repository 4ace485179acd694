//! `leaktop export`: one snapshot of a [`Session`] as an OpenMetrics text exposition, for
//! a Prometheus textfile collector, a push gateway, or a one-off scrape from a cron job.
//!
//! The series mirror what the agent's `metrics` feature publishes from inside the process
//! (same names and `site` labels), plus what only the attaching side knows: each site's
//! verdict (a stateset) and growth rate, from the agent's history.
//!
//! ```text
//! # TYPE leaktop_site_live gauge
//! leaktop_site_live{site="src/server.rs:88:9"} 4211
//! # TYPE leaktop_site_verdict stateset
//! leaktop_site_verdict{site="src/server.rs:88:9",leaktop_site_verdict="leak"} 1
//! …
//! # EOF
//! ```
//!
//! Label cardinality is bounded by the agent's site cap: sites past it are one
//! `site="<other>"` row; channel waits outside instrumented tasks are
//! `site="<uninstrumented>"`.

use std::fmt::Write;

use leaktop_agent::wire::{LocId, SiteKind, SiteStats};

use crate::cli::ExportFormat;
use crate::model::{verdict, Session, SiteVerdict, Thresholds, Verdict};

/// The exposition of the session's latest snapshot in `format`, verdicts under `th`.
pub fn render(session: &Session, th: &Thresholds, format: ExportFormat) -> String {
    let text = openmetrics(session, th);
    match format {
        ExportFormat::Openmetrics => text,
        ExportFormat::Prometheus => prometheus_text(&text),
    }
}

/// An exposition [`openmetrics`] wrote, in the Prometheus text format 0.0.4. The sample
/// lines are the same, so queries, dashboards and alerts work on either; the metadata
/// differs: a counter's family is named with its `_total` (`# TYPE x_total counter`), an
/// info family with its `_info`, info and stateset families are gauges, and there is no
/// `# UNIT` and no `# EOF`.
pub fn prometheus_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    // The family of the last TYPE line, and its name in the text format.
    let mut family: (String, String) = Default::default();
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "unknown"));
            let (renamed, kind) = match kind {
                "counter" => (format!("{name}_total"), "counter"),
                "info" => (format!("{name}_info"), "gauge"),
                "stateset" => (name.to_string(), "gauge"),
                "unknown" => (name.to_string(), "untyped"),
                other => (name.to_string(), other),
            };
            let _ = writeln!(out, "# TYPE {renamed} {kind}");
            family = (name.to_string(), renamed);
        } else if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').unwrap_or((rest, ""));
            let name = if name == family.0 { &family.1 } else { name };
            // The text format escapes only backslash and line feed in HELP.
            let _ = writeln!(out, "# HELP {name} {}", help.replace("\\\"", "\""));
        } else {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// The `site` label of a row (the same the agent's `metrics` feature uses).
pub fn site_label(session: &Session, id: LocId, kind: Option<SiteKind>) -> String {
    match kind.and_then(SiteKind::metric_label) {
        Some(label) => label.to_string(),
        None => session.location(id),
    }
}

/// Escapes a label value: backslash, double quote and line feed.
fn label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// A number as OpenMetrics writes it: integers without a fraction, others as Rust's
/// shortest round-trip form.
fn number(v: f64) -> String {
    if v.is_nan() {
        "NaN".into()
    } else if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.into()
    } else if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

struct Family<'a> {
    out: &'a mut String,
}

impl Family<'_> {
    fn header(out: &mut String, name: &str, kind: &str, unit: Option<&str>, help: &str) {
        let _ = writeln!(out, "# TYPE {name} {kind}");
        if let Some(u) = unit {
            let _ = writeln!(out, "# UNIT {name} {u}");
        }
        // HELP text is escaped like a label value (a raw '"' is not allowed either).
        let _ = writeln!(out, "# HELP {name} {}", label_value(help));
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.out.push_str(name);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.out.push(',');
                }
                let _ = write!(self.out, "{k}=\"{}\"", label_value(v));
            }
            self.out.push('}');
        }
        let _ = writeln!(self.out, " {}", number(value));
    }
}

fn family<'a>(
    out: &'a mut String,
    name: &str,
    kind: &str,
    unit: Option<&str>,
    help: &str,
) -> Family<'a> {
    Family::header(out, name, kind, unit, help);
    Family { out }
}

/// One row of the exposition.
struct Row<'a> {
    site: String,
    stats: &'a SiteStats,
    verdict: Option<&'a SiteVerdict>,
}

/// The OpenMetrics text exposition of the session's latest snapshot, verdicts under
/// `th`. Ends with `# EOF`.
pub fn openmetrics(session: &Session, th: &Thresholds) -> String {
    let verdicts = verdict::by_site(session, th);
    let mut rows: Vec<Row> = session
        .sites_by_live()
        .into_iter()
        .map(|(id, st)| Row {
            site: site_label(session, id, st.kind),
            stats: st,
            verdict: verdicts.get(&id),
        })
        .collect();
    // Stable order for diffs and for the reader: by label.
    rows.sort_by(|a, b| a.site.cmp(&b.site));
    let mut out = String::new();
    process_families(&mut out, session);
    gauge_families(&mut out, &rows, session.now_ms);
    counter_families(&mut out, &rows);
    verdict_family(&mut out, &rows);
    out.push_str("# EOF\n");
    out
}

/// What the exposition is of: the target, its uptime, the sites it has seen.
fn process_families(out: &mut String, session: &Session) {
    if let Some(h) = &session.hello {
        let mut f = family(
            out,
            "leaktop_target",
            "info",
            None,
            "The process leaktop attached to.",
        );
        let pid = h.pid.to_string();
        let build_id = crate::text::hex(&h.build_id);
        f.sample(
            "leaktop_target_info",
            &[
                ("pid", &pid),
                ("exe", &h.exe),
                ("agent_version", &h.agent_version),
                ("build_id", &build_id),
            ],
            1.0,
        );
    }
    family(
        out,
        "leaktop_uptime_seconds",
        "gauge",
        Some("seconds"),
        "Time since the agent started.",
    )
    .sample(
        "leaktop_uptime_seconds",
        &[],
        session.now_ms as f64 / 1000.0,
    );
    family(
        out,
        "leaktop_sites_seen",
        "gauge",
        None,
        "Distinct spawn sites seen, including those folded into site=\"<other>\" past the agent's site cap.",
    )
    .sample("leaktop_sites_seen", &[], session.sites_seen as f64);
}

/// The per-site gauges: counts, ages, growth, blocked tasks by operation.
fn gauge_families(out: &mut String, rows: &[Row], now: u64) {
    type Value = fn(&Row, u64) -> f64;
    let gauges: [(&str, Option<&str>, &str, Value); 6] = [
        ("leaktop_site_live", None, "Live tasks per spawn site.", |r, _| {
            r.stats.live as f64
        }),
        (
            "leaktop_site_running",
            None,
            "Tasks being polled right now.",
            |r, _| r.stats.running as f64,
        ),
        (
            "leaktop_site_idle",
            None,
            "Live tasks neither running nor blocked on an instrumented channel.",
            |r, _| r.stats.idle() as f64,
        ),
        (
            "leaktop_site_oldest_live_seconds",
            Some("seconds"),
            "Age of the site's oldest live task (0: none live).",
            |r, now| {
                r.stats
                    .oldest_live_ms
                    .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0)
            },
        ),
        (
            "leaktop_site_stalled_seconds",
            Some("seconds"),
            "Longest time a blocked task's channel made no progress that could wake it (0: none blocked).",
            |r, _| {
                r.verdict
                    .and_then(|v| v.stalls.iter().map(|s| s.stalled_ms).max())
                    .map_or(0.0, |ms| ms as f64 / 1000.0)
            },
        ),
        (
            "leaktop_site_growth_per_minute",
            None,
            "Robust slope of the live count over the verdict window, tasks per minute.",
            |r, _| r.verdict.map_or(0.0, |v| (v.rate_per_min * 10.0).round() / 10.0),
        ),
    ];
    for (name, unit, help, value) in gauges {
        let mut f = family(out, name, "gauge", unit, help);
        for r in rows {
            f.sample(name, &[("site", &r.site)], value(r, now));
        }
    }
    let name = "leaktop_site_blocked";
    let help = "Tasks blocked on instrumented channels, by operation.";
    let mut f = family(out, name, "gauge", None, help);
    for r in rows {
        for (op, n) in [
            ("send", r.stats.blocked_send),
            ("recv", r.stats.blocked_recv),
        ] {
            f.sample(name, &[("site", &r.site), ("op", op)], n as f64);
        }
    }
}

/// The per-site counters: spawned and completed tasks.
fn counter_families(out: &mut String, rows: &[Row]) {
    for (name, help, get) in [
        (
            "leaktop_site_spawned",
            "Tasks ever spawned at the site.",
            (|s: &SiteStats| s.spawned) as fn(&SiteStats) -> u64,
        ),
        (
            "leaktop_site_completed",
            "Tasks of the site that finished, were dropped or aborted.",
            |s: &SiteStats| s.completed,
        ),
    ] {
        let mut f = family(out, name, "counter", None, help);
        let sample = format!("{name}_total");
        for r in rows {
            f.sample(&sample, &[("site", &r.site)], get(r.stats) as f64);
        }
    }
}

/// leaktop's verdict on each site, as a stateset.
fn verdict_family(out: &mut String, rows: &[Row]) {
    let mut f = family(
        out,
        "leaktop_site_verdict",
        "stateset",
        None,
        "leaktop's verdict on the site (see `leaktop check`): leak, stuck, growing or none.",
    );
    for r in rows {
        let current = r.verdict.map_or(Verdict::None, |v| v.verdict);
        for state in [
            Verdict::Leak,
            Verdict::Stuck,
            Verdict::Growing,
            Verdict::None,
        ] {
            f.sample(
                "leaktop_site_verdict",
                &[("site", &r.site), ("leaktop_site_verdict", state.name())],
                if state == current { 1.0 } else { 0.0 },
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leaktop_agent::wire::{AgentHello, AgentMsg, Location, Snapshot};

    fn session() -> Session {
        let mut s = Session::new();
        s.apply_msg(&AgentMsg::Hello(AgentHello {
            pid: 42,
            exe: "/srv/app \"v2\"\n".into(),
            agent_version: "0.1.0".into(),
            protocol: 1,
            start_time_ticks: 1,
            build_id: Vec::new(),
            uid: 0,
            origin_unix_ms: 0,
            now_ms: 0,
            sample_interval_ms: 1000,
            history_len: 600,
            site_cap: 10_000,
        }));
        s.apply_msg(&AgentMsg::Location {
            id: 1,
            loc: Location {
                file: "src/a\\b.rs".into(),
                line: 10,
                column: 5,
            },
        });
        s.apply_msg(&AgentMsg::Snapshot(Snapshot {
            seq: 1,
            now_ms: 61_500,
            sites: vec![
                SiteStats {
                    site: 1,
                    kind: Some(SiteKind::Spawn),
                    live: 3,
                    running: 1,
                    blocked_send: 1,
                    spawned: 10,
                    completed: 7,
                    oldest_live_ms: Some(1_500),
                    ..Default::default()
                },
                SiteStats {
                    site: 2,
                    kind: Some(SiteKind::Other),
                    live: 1,
                    spawned: 1,
                    ..Default::default()
                },
            ],
            sites_seen: 10_001,
            ..Default::default()
        }));
        s
    }

    #[test]
    fn exposition_has_escaped_labels_counters_statesets_and_eof() {
        let text = openmetrics(&session(), &Thresholds::default());
        let site = r#"site="src/a\\b.rs:10:5""#;
        for line in [
            format!("leaktop_site_live{{{site}}} 3"),
            format!("leaktop_site_idle{{{site}}} 1"),
            format!("leaktop_site_blocked{{{site},op=\"send\"}} 1"),
            format!("leaktop_site_blocked{{{site},op=\"recv\"}} 0"),
            format!("leaktop_site_spawned_total{{{site}}} 10"),
            format!("leaktop_site_completed_total{{{site}}} 7"),
            format!("leaktop_site_oldest_live_seconds{{{site}}} 60"),
            format!("leaktop_site_verdict{{{site},leaktop_site_verdict=\"none\"}} 1"),
            format!("leaktop_site_verdict{{{site},leaktop_site_verdict=\"leak\"}} 0"),
            "leaktop_site_live{site=\"<other>\"} 1".to_string(),
            "leaktop_sites_seen 10001".to_string(),
            "leaktop_uptime_seconds 61.5".to_string(),
            r#"leaktop_target_info{pid="42",exe="/srv/app \"v2\"\n",agent_version="0.1.0",build_id=""} 1"#
                .to_string(),
            "# TYPE leaktop_site_spawned counter".to_string(),
            "# UNIT leaktop_site_oldest_live_seconds seconds".to_string(),
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        assert!(text.ends_with("\n# EOF\n"), "{text}");
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn the_prometheus_text_format_has_the_same_samples_and_only_its_own_types() {
        let om = openmetrics(&session(), &Thresholds::default());
        let text = prometheus_text(&om);
        let samples = |t: &str| -> Vec<String> {
            t.lines()
                .filter(|l| !l.starts_with('#'))
                .map(String::from)
                .collect()
        };
        assert_eq!(samples(&text), samples(&om));
        for line in [
            "# TYPE leaktop_site_spawned_total counter",
            "# HELP leaktop_site_spawned_total Tasks ever spawned at the site.",
            "# TYPE leaktop_site_verdict gauge",
            "# TYPE leaktop_target_info gauge",
            "# TYPE leaktop_site_oldest_live_seconds gauge",
            "# HELP leaktop_sites_seen Distinct spawn sites seen, including those folded into site=\"<other>\" past the agent's site cap.",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line}:\n{text}");
        }
        for gone in ["# EOF", "# UNIT", "stateset", " info"] {
            assert!(!text.contains(gone), "{gone} in:\n{text}");
        }
        // Every TYPE names the samples that follow it.
        let mut typed = "";
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                typed = rest.split(' ').next().unwrap();
            } else if !line.starts_with('#') {
                let name = line.split(['{', ' ']).next().unwrap();
                assert_eq!(name, typed, "{line}");
            }
        }
    }

    #[test]
    fn numbers_follow_the_text_format() {
        assert_eq!(number(3.0), "3");
        assert_eq!(number(0.25), "0.25");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "+Inf");
        assert_eq!(number(-2.0), "-2");
    }
}
