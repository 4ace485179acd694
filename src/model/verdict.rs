//! Leak verdicts per spawn site, each with its evidence in words.
//!
//! - **stuck**: tasks blocked on a channel that has made no progress that could wake them
//!   for longer than [`Thresholds::stuck_age_ms`] while they wait (the receiver is alive
//!   but does not read; senders are alive but never send; every peer is gone). A busy
//!   channel is never stuck, however many tasks wait on it: progress on it (a receive for
//!   a blocked sender, a send for a blocked receiver) resets the clock.
//! - **growing**: the site's live count rises over the trailing window: a robust slope
//!   (Theil–Sen) of at least [`Thresholds::min_rate_per_min`], a steady trend (Mann–Kendall
//!   tau ≥ [`Thresholds::min_trend`]) and a rise, fitted and net, of at least
//!   [`Thresholds::min_rise`] tasks (a site that grew and dropped back has recovered).
//! - **leak**: growing, and its tasks either blocked without progress for
//!   [`Thresholds::min_age_ms`] or idle (waiting on something uninstrumented, such as a
//!   socket read without a timeout) with the oldest live task older than that.
//!
//! Everything here is a pure function of the [`Session`].

use leaktop_agent::wire::{BlockedGroup, GroupKey, LocId, Op, SiteKind, SiteStats};

use super::series::{self, Series};
use super::Session;
use crate::duration::age;

/// What counts as a leak. Durations in agent milliseconds.
#[derive(Debug, Clone, PartialEq)]
pub struct Thresholds {
    /// Trailing window the growth is measured over.
    pub window_ms: u64,
    /// Minimum growth, in live tasks per minute.
    pub min_rate_per_min: f64,
    /// Minimum rise over the window, in tasks (rate × span).
    pub min_rise: f64,
    /// Minimum Mann–Kendall trend in `[-1, 1]`: how consistently the count rises.
    pub min_trend: f64,
    /// A growing site's tasks count as leaked once blocked without progress (or, when
    /// idle, alive) this long.
    pub min_age_ms: u64,
    /// Tasks blocked without progress this long are stuck even if their site is not
    /// growing (a fixed set of deadlocked tasks).
    pub stuck_age_ms: u64,
}

impl Default for Thresholds {
    /// Flags a leak that has grown for 90 s with its oldest tasks stuck for 60 s; does not
    /// flag waiters that get a message every 30 s, nor a busy channel with many waiters.
    fn default() -> Self {
        Thresholds {
            window_ms: 120_000,
            min_rate_per_min: 1.0,
            min_rise: 3.0,
            min_trend: 0.5,
            min_age_ms: 45_000,
            stuck_age_ms: 300_000,
        }
    }
}

impl Thresholds {
    /// Shortest stretch of data on which growth is decided: half the window.
    pub fn min_span_ms(&self) -> u64 {
        self.window_ms / 2
    }
}

/// The verdict on one site, from harmless to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    Leak,
    Growing,
    Stuck,
    None,
}

impl Verdict {
    /// 0 none, 1 growing, 2 stuck, 3 leak.
    pub fn severity(self) -> u8 {
        match self {
            Verdict::None => 0,
            Verdict::Growing => 1,
            Verdict::Stuck => 2,
            Verdict::Leak => 3,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Verdict::Leak => "leak",
            Verdict::Growing => "growing",
            Verdict::Stuck => "stuck",
            Verdict::None => "none",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// How a site's live count moved over the trailing window.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Growth {
    /// Theil–Sen slope of the live count, tasks per minute (0 without enough data).
    pub rate_per_min: f64,
    /// Same for the tasks neither blocked on a channel (idle or running). This and the
    /// trend fields are computed only when `rate_per_min` reaches the minimum rate (0
    /// otherwise), which keeps assessing thousands of sites cheap.
    pub idle_rate_per_min: f64,
    /// Mann–Kendall tau of the live count over the window.
    pub trend: f64,
    /// Share of sample pairs that rise (later value higher).
    pub rising_share: f64,
    /// Data the window actually covers, ms (≤ the window).
    pub span_ms: u64,
    /// Live count at the start and at the end of the covered span.
    pub from_live: u64,
    pub to_live: u64,
    /// The span is long enough to decide on growth.
    pub enough_data: bool,
    /// Passes every growth threshold.
    pub growing: bool,
}

/// Measures growth of `series` over the window ending at `now_ms`.
pub fn growth(series: &Series, now_ms: u64, th: &Thresholds) -> Growth {
    let from = now_ms.saturating_sub(th.window_ms);
    let Some(start) = series.start_ms() else {
        return Growth::default();
    };
    let span_ms = now_ms.saturating_sub(from.max(start));
    let enough_data = span_ms >= th.min_span_ms().max(1);
    let from_live = series.at(from.max(start)).map_or(0, |s| s.live as u64);
    let to_live = series.at(now_ms).map_or(0, |s| s.live as u64);
    let mut g = Growth {
        span_ms,
        from_live,
        to_live,
        enough_data,
        ..Growth::default()
    };
    // A constant window (the common case) needs no statistics.
    let first = series.partition_point(|p| p.t_ms < from).saturating_sub(1);
    let w = &series[first..];
    let constant = w.windows(2).all(|p| p[0].sample == p[1].sample);
    if constant || span_ms == 0 {
        return g;
    }
    let live = series.live_grid(from, now_ms);
    let per_min = |slope: Option<f64>| slope.unwrap_or(0.0) * 60_000.0;
    g.rate_per_min = per_min(series::theil_sen(&live));
    if g.rate_per_min < th.min_rate_per_min {
        // Not a candidate: spare the rest (trend and idle rate stay 0).
        return g;
    }
    let free = series.grid(from, now_ms, |s| {
        (s.live as f64 - s.blocked_send as f64 - s.blocked_recv as f64).max(0.0)
    });
    g.idle_rate_per_min = per_min(series::theil_sen(&free));
    let (rise, fall) = series::pair_shares(&live);
    g.trend = rise - fall;
    g.rising_share = rise;
    let rise_tasks = g.rate_per_min * span_ms as f64 / 60_000.0;
    // Both the fitted rise and the net one: a site that grew and then dropped back
    // (recovered) has a rising fit but no net rise.
    let net_rise = to_live as f64 - from_live as f64;
    g.growing = enough_data
        && g.rate_per_min >= th.min_rate_per_min
        && g.trend >= th.min_trend
        && rise_tasks >= th.min_rise
        && net_rise >= th.min_rise;
    g
}

/// How long a blocked group has waited, and how long the channel it waits on has made
/// no progress that could wake it.
#[derive(Debug, Clone, PartialEq)]
pub struct Stall {
    pub key: GroupKey,
    pub count: u64,
    /// Age of the oldest wait in the group.
    pub waiting_ms: u64,
    /// Time without progress on the channel while the oldest task waited (≤ waiting_ms).
    pub stalled_ms: u64,
    /// The other side of the channel, in words ("its receiver is alive but has not
    /// received for 5m12s").
    pub why: String,
}

/// The stall of one blocked group at `now_ms`.
pub fn stall(group: &BlockedGroup, now_ms: u64) -> Stall {
    let waiting_ms = now_ms.saturating_sub(group.oldest_since_ms);
    let op = group.key.op;
    let (stalled_ms, why) = match &group.channel {
        None => (
            waiting_ms,
            "leaktop has no state of its channel, so the wait alone counts".to_string(),
        ),
        Some(c) => {
            // Which side would wake this task, and when it last did anything.
            let (peers, peer_name, verb, progress) = match op {
                Op::Send | Op::Reserve => (c.receivers, "receiver", "received", c.last_recv_ms),
                Op::Recv | Op::Changed => (c.senders, "sender", "sent", c.last_send_ms),
                _ => (
                    c.receivers + c.senders,
                    "peer",
                    "sent or received",
                    c.last_send_ms.max(c.last_recv_ms),
                ),
            };
            let since = group.oldest_since_ms.max(progress.unwrap_or(0));
            let stalled = now_ms.saturating_sub(since);
            let queue = match (c.len, c.capacity) {
                (Some(len), Some(cap)) => format!(" (queue {len}/{cap})"),
                (Some(len), None) => format!(" (queue {len})"),
                _ => String::new(),
            };
            let why = if peers == 0 && op != Op::Closed {
                format!("every {peer_name} is gone, so nothing can wake it{queue}")
            } else {
                let alive = if peers == 1 {
                    format!("its {peer_name} is alive")
                } else {
                    format!("{peers} {peer_name}s are alive")
                };
                match progress {
                    None => format!("{alive} but has never {verb}{queue}"),
                    Some(_) if stalled >= waiting_ms => {
                        format!("{alive} but has not {verb} since the wait began{queue}")
                    }
                    Some(_) => format!("{alive}; last {verb} {} ago{queue}", age(stalled)),
                }
            };
            (stalled.min(waiting_ms), why)
        }
    };
    Stall {
        key: group.key.clone(),
        count: group.count,
        waiting_ms,
        stalled_ms,
        why,
    }
}

/// The verdict on one site with what it rests on.
#[derive(Debug, Clone, PartialEq)]
pub struct SiteVerdict {
    pub site: LocId,
    pub kind: Option<SiteKind>,
    pub verdict: Verdict,
    /// Robust growth of the live count over the window, tasks per minute.
    pub rate_per_min: f64,
    pub live: u64,
    pub idle: u64,
    pub growth: Growth,
    /// The site's blocked groups, longest stalled first.
    pub stalls: Vec<Stall>,
    /// Tasks in groups stalled at least `min_age_ms`.
    pub stuck_tasks: u64,
    /// Longest stall among those groups.
    pub oldest_stuck_age_ms: Option<u64>,
    /// Age of the site's oldest live task.
    pub oldest_live_age_ms: Option<u64>,
    /// Sentences a user can check, most important first. Empty for `Verdict::None`.
    pub evidence: Vec<String>,
}

impl SiteVerdict {
    /// Leak, stuck or growing.
    pub fn is_finding(&self) -> bool {
        self.verdict != Verdict::None
    }
}

/// Verdicts of every site the latest snapshot names, worst first (then fastest growing,
/// then most live).
pub fn assess(session: &Session, th: &Thresholds) -> Vec<SiteVerdict> {
    let mut out: Vec<SiteVerdict> = session
        .sites
        .keys()
        .filter_map(|&id| assess_site(session, id, th))
        .collect();
    out.sort_by(|a, b| {
        b.verdict
            .severity()
            .cmp(&a.verdict.severity())
            .then(b.rate_per_min.total_cmp(&a.rate_per_min))
            .then(b.live.cmp(&a.live))
            .then(a.site.cmp(&b.site))
    });
    out
}

/// The verdict of one site; `None` when the latest snapshot does not name it.
pub fn assess_site(session: &Session, site: LocId, th: &Thresholds) -> Option<SiteVerdict> {
    let state = session.sites.get(&site)?;
    let stats: &SiteStats = state.stats.as_ref()?;
    let now = session.now_ms;
    let g = growth(&state.series, now, th);
    let mut stalls: Vec<Stall> = session
        .groups
        .iter()
        .filter(|grp| grp.key.site == site)
        .map(|grp| stall(grp, now))
        .collect();
    stalls.sort_by(|a, b| b.stalled_ms.cmp(&a.stalled_ms).then(b.count.cmp(&a.count)));
    let over = |limit: u64| stalls.iter().filter(move |s| s.stalled_ms >= limit);
    let stuck_tasks: u64 = over(th.min_age_ms)
        .map(|s| s.count)
        .fold(0, u64::saturating_add);
    let oldest_stuck_age_ms = over(th.min_age_ms).map(|s| s.stalled_ms).max();
    let oldest_live_age_ms = stats.oldest_live_ms.map(|t| now.saturating_sub(t));
    let idle = stats.idle();
    // Idle tasks explain the growth, and they have been around long enough.
    let idle_old = idle > 0
        && g.idle_rate_per_min >= 0.5 * g.rate_per_min
        && oldest_live_age_ms.is_some_and(|a| a >= th.min_age_ms);
    let stuck_long = over(th.stuck_age_ms).next().is_some();
    // A queue of waiters that grows faster than its channel drains: the channel moves
    // (so no stall), but the oldest waiter has waited past `min_age` and more keep coming.
    let piling_up: Vec<&Stall> = stalls
        .iter()
        .filter(|s| s.waiting_ms >= th.min_age_ms && s.stalled_ms < th.min_age_ms)
        .collect();
    let verdict = if g.growing && (stuck_tasks > 0 || idle_old || !piling_up.is_empty()) {
        Verdict::Leak
    } else if stuck_long {
        Verdict::Stuck
    } else if g.growing {
        Verdict::Growing
    } else {
        Verdict::None
    };

    let mut evidence = Vec::new();
    if verdict != Verdict::None {
        if g.growing {
            evidence.push(format!(
                "live tasks rose from {} to {} over the last {} (+{:.1}/min; {:.0}% of sample pairs rising)",
                g.from_live,
                g.to_live,
                age(g.span_ms),
                g.rate_per_min,
                g.rising_share * 100.0
            ));
        }
        let limit = if verdict == Verdict::Leak {
            th.min_age_ms
        } else {
            th.stuck_age_ms
        };
        for s in over(limit).take(3) {
            evidence.push(stall_sentence(session, s));
        }
        if verdict == Verdict::Leak && stuck_tasks == 0 {
            for s in piling_up.iter().take(3) {
                evidence.push(piling_sentence(session, s));
            }
        }
        if verdict == Verdict::Leak && stuck_tasks == 0 && piling_up.is_empty() && idle_old {
            let (are, they_wait) = if idle == 1 {
                ("is", "it waits")
            } else {
                ("are", "they wait")
            };
            evidence.push(format!(
                "{} {are} idle, not waiting on any instrumented channel, and the oldest live task is {} old: {they_wait} on something leaktop does not see (a socket read without a timeout, a lock, a future that is never woken)",
                crate::plural::count(idle, "task"),
                age(oldest_live_age_ms.unwrap_or(0))
            ));
        }
        if verdict == Verdict::Growing {
            evidence.push(
                "no task of this site has waited without progress long enough to call it leaked yet"
                    .to_string(),
            );
        }
    }
    Some(SiteVerdict {
        site,
        kind: stats.kind,
        verdict,
        rate_per_min: g.rate_per_min,
        live: stats.live,
        idle,
        growth: g,
        stalls,
        stuck_tasks,
        oldest_stuck_age_ms,
        oldest_live_age_ms,
        evidence,
    })
}

/// "4,211 tasks blocked in chan send at src/a.rs:10:5 on an mpsc channel created at
/// src/b.rs:3:9 for 5m12s without progress: its receiver is alive but …"
/// "300 tasks have waited in chan send at … for up to 40s while the channel keeps moving:
/// they arrive faster than it drains" — a growing queue on a busy channel.
pub fn piling_sentence(session: &Session, s: &Stall) -> String {
    let kind = session
        .groups
        .iter()
        .find(|g| g.key == s.key)
        .map(|g| g.kind.name())
        .unwrap_or("channel");
    format!(
        "{} waiting in {} at {} on a {kind} channel created at {}, the oldest for {}, while the channel keeps moving (last progress {} ago): they arrive faster than it drains",
        crate::plural::count(s.count, "task"),
        s.key.op.name(),
        session.location(s.key.call_site),
        session.location(s.key.channel_site),
        age(s.waiting_ms),
        age(s.stalled_ms),
    )
}

pub fn stall_sentence(session: &Session, s: &Stall) -> String {
    let kind = session
        .groups
        .iter()
        .find(|g| g.key == s.key)
        .map(|g| g.kind.name())
        .unwrap_or("channel");
    let tasks = crate::plural::count(s.count, "task");
    format!(
        "{tasks} blocked in {} at {} on a {kind} channel created at {}, {} without progress: {}",
        s.key.op.name(),
        session.location(s.key.call_site),
        session.location(s.key.channel_site),
        age(s.stalled_ms),
        s.why
    )
}
