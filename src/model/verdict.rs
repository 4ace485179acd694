//! Leak verdicts per spawn site, each with its evidence as data ([`Evidence`]): the kind,
//! the numbers, the groups it rests on. `report` and `tui` word them.
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

use leaktop_agent::wire::{BlockedGroup, ChannelKind, GroupKey, LocId, Op, SiteKind, SiteStats};

use super::series::{self, Series};
use super::Session;

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
    /// Flags a leak that has grown for 90 s with its oldest tasks stuck for 45 s; does not
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
    /// The kind of channel the group waits on.
    pub kind: ChannelKind,
    pub count: u64,
    /// Age of the oldest wait in the group.
    pub waiting_ms: u64,
    /// Time without progress on the channel while the oldest task waited (≤ waiting_ms).
    pub stalled_ms: u64,
    /// The other side of the channel; `None` when leaktop has no state of the channel
    /// (the wait alone counts).
    pub peer: Option<Peer>,
}

/// The side of a channel that would wake a blocked group, and what it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Peer {
    pub side: Side,
    /// How many of them are alive.
    pub alive: u64,
    pub progress: Progress,
    /// Length of the channel's queue, and its capacity when bounded.
    pub queue: Option<(u64, Option<u64>)>,
}

/// Who would wake a blocked group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    /// A blocked sender waits for a receiver to receive.
    Receiver,
    /// A blocked receiver waits for a sender to send.
    Sender,
    /// Any peer (other waits).
    Peer,
}

/// What the waking side did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    Never,
    /// Nothing since the oldest task began to wait.
    NotSinceTheWait,
    /// Last progress this long ago.
    Ago(u64),
}

/// The stall of one blocked group at `now_ms`.
pub fn stall(group: &BlockedGroup, now_ms: u64) -> Stall {
    let waiting_ms = now_ms.saturating_sub(group.oldest_since_ms);
    let (stalled_ms, peer) = match &group.channel {
        None => (waiting_ms, None),
        Some(c) => {
            // Which side would wake this task, and when it last did anything.
            let (side, alive, last) = match group.key.op {
                Op::Send | Op::Reserve => (Side::Receiver, c.receivers, c.last_recv_ms),
                Op::Recv | Op::Changed => (Side::Sender, c.senders, c.last_send_ms),
                _ => (
                    Side::Peer,
                    c.receivers + c.senders,
                    c.last_send_ms.max(c.last_recv_ms),
                ),
            };
            let since = group.oldest_since_ms.max(last.unwrap_or(0));
            let stalled = now_ms.saturating_sub(since);
            let progress = match last {
                None => Progress::Never,
                Some(_) if stalled >= waiting_ms => Progress::NotSinceTheWait,
                Some(_) => Progress::Ago(stalled),
            };
            let peer = Peer {
                side,
                alive,
                progress,
                queue: c.len.map(|len| (len, c.capacity)),
            };
            (stalled.min(waiting_ms), Some(peer))
        }
    };
    Stall {
        key: group.key.clone(),
        kind: group.kind,
        count: group.count,
        waiting_ms,
        stalled_ms,
        peer,
    }
}

/// What a verdict rests on, strongest first in a [`SiteVerdict`].
#[derive(Debug, Clone, PartialEq)]
pub enum Evidence {
    /// The live count rose over the window.
    Growth(Growth),
    /// Tasks blocked on a channel that made no progress that could wake them.
    Stalled(Stall),
    /// Waiters that arrive faster than their (moving) channel drains.
    PilingUp(Stall),
    /// Tasks idle, waiting on nothing instrumented, the oldest live this long.
    Idle { tasks: u64, oldest_live_ms: u64 },
    /// Growing, but no task has waited without progress long enough to call it leaked.
    NotStuckYet,
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
    /// What the verdict rests on, most important first. Empty for `Verdict::None`.
    pub evidence: Vec<Evidence>,
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

/// The verdicts of every site, by site.
pub fn by_site(
    session: &Session,
    th: &Thresholds,
) -> std::collections::HashMap<LocId, SiteVerdict> {
    assess(session, th)
        .into_iter()
        .map(|v| (v.site, v))
        .collect()
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
    let found = Found {
        verdict,
        growth: g,
        stalls: &stalls,
        piling_up: &piling_up,
        stuck_tasks,
        idle_old: idle_old.then(|| (idle, oldest_live_age_ms.unwrap_or(0))),
    };
    let evidence = found.evidence(th);
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

/// What a site's verdict was decided on, for [`Found::evidence`].
struct Found<'a> {
    verdict: Verdict,
    growth: Growth,
    /// Longest stalled first.
    stalls: &'a [Stall],
    piling_up: &'a [&'a Stall],
    stuck_tasks: u64,
    /// Idle tasks and the oldest live age, when they explain the growth.
    idle_old: Option<(u64, u64)>,
}

impl Found<'_> {
    /// The evidence of the verdict, strongest first (at most three groups of a kind).
    fn evidence(&self, th: &Thresholds) -> Vec<Evidence> {
        let mut evidence = Vec::new();
        if self.verdict == Verdict::None {
            return evidence;
        }
        let leak = self.verdict == Verdict::Leak;
        if self.growth.growing {
            evidence.push(Evidence::Growth(self.growth));
        }
        let limit = if leak { th.min_age_ms } else { th.stuck_age_ms };
        let stalled = self.stalls.iter().filter(|s| s.stalled_ms >= limit).take(3);
        evidence.extend(stalled.cloned().map(Evidence::Stalled));
        if leak && self.stuck_tasks == 0 {
            let piling = self.piling_up.iter().take(3);
            evidence.extend(piling.map(|s| Evidence::PilingUp((*s).clone())));
            if let (true, Some((tasks, oldest_live_ms))) =
                (self.piling_up.is_empty(), self.idle_old)
            {
                evidence.push(Evidence::Idle {
                    tasks,
                    oldest_live_ms,
                });
            }
        }
        if self.verdict == Verdict::Growing {
            evidence.push(Evidence::NotStuckYet);
        }
        evidence
    }
}
