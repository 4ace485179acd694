//! Session state: a pure fold of protocol messages. No IO, no UI: the TUI, the reports and
//! replay all read the same [`Session`].
//!
//! - [`series`]: per-site time series (history rings, then snapshots) and the robust
//!   statistics on them;
//! - [`verdict`]: leak / stuck / growing verdicts per site, with evidence;
//! - [`baseline`]: a marked point in time, and the change of every site since;
//! - [`progress`]: per-channel-site send/receive throughput over time.

pub mod baseline;
pub mod check;
pub mod progress;
pub mod series;
pub mod verdict;

use std::collections::{BTreeMap, HashMap};

use crate::frame::Frame;
use crate::source::Event;
use leaktop_agent::wire::{
    AgentHello, AgentMsg, BlockedGroup, ChannelSiteStats, History, LocId, Location, Mapping,
    Sample, SiteStats, Snapshot, StackId, TaskList,
};

pub use baseline::{Baseline, Delta};
pub use progress::ChannelProgress;
pub use series::{Point, Series};
pub use verdict::{assess, SiteVerdict, Thresholds, Verdict};

/// What the session knows about one spawn site.
#[derive(Debug, Clone, Default)]
pub struct SiteState {
    /// Counters of the latest snapshot (None before the first one that names it).
    pub stats: Option<SiteStats>,
    /// Live count and friends over time, oldest first (history, then snapshots).
    pub series: Series,
}

/// Everything folded so far.
#[derive(Debug, Clone, Default)]
pub struct Session {
    pub hello: Option<AgentHello>,
    pub locations: HashMap<LocId, Location>,
    pub stacks: HashMap<StackId, Vec<u64>>,
    pub modules: Vec<Mapping>,
    pub sites: BTreeMap<LocId, SiteState>,
    pub groups: Vec<BlockedGroup>,
    pub channels: Vec<ChannelSiteStats>,
    /// The latest snapshot's time and sequence number.
    pub now_ms: u64,
    pub seq: u64,
    pub sites_seen: u64,
    pub task_lists: Vec<TaskList>,
    /// Set once the source ended (process exited, file over), with the reason.
    pub ended: Option<String>,
    /// Errors the agent reported for our requests.
    pub errors: Vec<String>,
    /// The marked point everything is compared against, if any.
    pub baseline: Option<Baseline>,
    /// Send/receive counts over time, per channel creation site.
    pub channel_progress: BTreeMap<LocId, ChannelProgress>,
    /// Resolved frames of each raw stack, innermost first (from `Event::Symbols`: the
    /// symbolizing stage of a live source, or a recording's symbol table).
    pub symbols: HashMap<StackId, Vec<Frame>>,
    /// What the symbolizer had to say (missing debug info, replaced binary, …), once each.
    pub symbol_notes: Vec<String>,
}

impl Session {
    pub fn new() -> Session {
        Session::default()
    }

    /// Folds one event into the state: a message, the symbols of a stack, the end.
    pub fn apply(&mut self, ev: &Event) {
        match ev {
            Event::Msg(msg) => self.apply_msg(msg),
            Event::Symbols { stack, frames } => {
                self.symbols.insert(*stack, frames.clone());
            }
            Event::SymbolNote(note) => {
                if !self.symbol_notes.contains(note) {
                    self.symbol_notes.push(note.clone());
                }
            }
            Event::End(reason) => self.end(reason),
        }
    }

    /// Folds one protocol message: one arm per message kind.
    pub fn apply_msg(&mut self, msg: &AgentMsg) {
        match msg {
            AgentMsg::Hello(h) => {
                // A different process (agent restart under a reused pid): start over.
                if let Some(old) = &self.hello {
                    if old.pid != h.pid || old.start_time_ticks != h.start_time_ticks {
                        *self = Session::default();
                    }
                }
                self.hello = Some(h.clone());
                self.now_ms = self.now_ms.max(h.now_ms);
            }
            AgentMsg::Refused { reason } => self.ended = Some(reason.clone()),
            AgentMsg::Location { id, loc } => {
                self.locations.insert(*id, loc.clone());
            }
            AgentMsg::Stack { id, frames } => {
                self.stacks.insert(*id, frames.clone());
            }
            AgentMsg::Modules(m) => self.modules = m.clone(),
            AgentMsg::Snapshot(s) => self.apply_snapshot(s),
            AgentMsg::History(h) => self.apply_history(h),
            AgentMsg::Tasks(t) => {
                self.task_lists
                    .retain(|l| !(l.site == t.site && l.group == t.group));
                self.task_lists.push(t.clone());
            }
            AgentMsg::Error { message } => {
                self.errors.push(message.clone());
                if self.errors.len() > 100 {
                    self.errors.remove(0);
                }
            }
            // Protocol 2, folded as protocol 1 until the model holds the new data.
            AgentMsg::SnapshotV2(s) => self.apply_snapshot(&s.to_v1()),
            AgentMsg::HistoryV2(h) => self.apply_history(&h.to_v1()),
            AgentMsg::ExeFd { .. }
            | AgentMsg::Pong
            | AgentMsg::TasksV2(_)
            | AgentMsg::Name { .. }
            | AgentMsg::TaskDump(_) => {}
        }
    }

    /// Marks the session as ended (the source said so).
    pub fn end(&mut self, reason: &str) {
        if self.ended.is_none() {
            self.ended = Some(reason.to_string());
        }
    }

    fn apply_snapshot(&mut self, s: &Snapshot) {
        self.now_ms = s.now_ms;
        self.seq = s.seq;
        self.sites_seen = s.sites_seen;
        for st in &s.sites {
            let site = self.sites.entry(st.site).or_default();
            let point = Point {
                t_ms: s.now_ms,
                sample: Sample {
                    live: st.live.min(u32::MAX as u64) as u32,
                    blocked_send: st.blocked_send.min(u32::MAX as u64) as u32,
                    blocked_recv: st.blocked_recv.min(u32::MAX as u64) as u32,
                    spawned: st.spawned,
                    completed: st.completed,
                },
            };
            if site.series.last().is_none_or(|p| p.t_ms < s.now_ms) {
                site.series.push(point);
            }
            site.stats = Some(st.clone());
        }
        self.groups = s.groups.clone();
        self.channels = s.channels.clone();
        for c in &s.channels {
            self.channel_progress
                .entry(c.site)
                .or_default()
                .push(s.now_ms, c);
        }
    }

    fn apply_history(&mut self, h: &History) {
        let interval = h.interval_ms as u64;
        for sh in &h.sites {
            let site = self.sites.entry(sh.site).or_default();
            let n = sh.samples.len() as u64;
            let points = sh.samples.iter().enumerate().map(|(i, s)| Point {
                t_ms: h
                    .end_ms
                    .saturating_sub((n - 1 - i as u64).saturating_mul(interval)),
                sample: *s,
            });
            site.series.prepend(points);
        }
        self.now_ms = self.now_ms.max(h.end_ms);
    }

    /// Marks a baseline now (at the latest snapshot): later, [`Session::delta`] gives each
    /// site's change since.
    pub fn mark_baseline(&mut self) {
        self.mark_baseline_at(self.now_ms);
    }

    /// Marks a baseline at agent time `t_ms` (e.g. 30 s ago, from the history): each
    /// site's sample in force then. Sites without data then count from zero.
    pub fn mark_baseline_at(&mut self, t_ms: u64) {
        let sites = self
            .sites
            .iter()
            .filter_map(|(id, s)| s.series.at(t_ms).map(|sample| (*id, sample)))
            .collect();
        self.baseline = Some(Baseline { t_ms, sites });
    }

    pub fn clear_baseline(&mut self) {
        self.baseline = None;
    }

    /// The change of `site` since the baseline (None without a baseline or data).
    pub fn delta(&self, site: LocId) -> Option<Delta> {
        let b = self.baseline.as_ref()?;
        let now = self.sites.get(&site)?.series.last()?;
        Some(b.delta(site, &now.sample, self.now_ms.max(now.t_ms)))
    }

    /// Verdicts of every site, worst first (see [`verdict::assess`]).
    pub fn verdicts(&self, th: &Thresholds) -> Vec<SiteVerdict> {
        verdict::assess(self, th)
    }

    /// How far back the data goes: ms from the oldest point of any site to now.
    pub fn observed_ms(&self) -> u64 {
        self.sites
            .values()
            .filter_map(|s| s.series.start_ms())
            .min()
            .map_or(0, |t| self.now_ms.saturating_sub(t))
    }

    /// Location text of an interned id, `?` when undefined.
    pub fn location(&self, id: LocId) -> String {
        self.locations
            .get(&id)
            .map(|l| l.to_string())
            .unwrap_or_else(|| format!("<location {id}>"))
    }

    /// Sites with their latest stats, most live first.
    pub fn sites_by_live(&self) -> Vec<(LocId, &SiteStats)> {
        let mut v: Vec<(LocId, &SiteStats)> = self
            .sites
            .iter()
            .filter_map(|(id, s)| s.stats.as_ref().map(|st| (*id, st)))
            .collect();
        v.sort_by(|a, b| b.1.live.cmp(&a.1.live).then(a.0.cmp(&b.0)));
        v
    }

    /// Blocked groups of spawn site `site`, most tasks first (then longest blocked).
    pub fn groups_of(&self, site: LocId) -> Vec<&BlockedGroup> {
        let mut v: Vec<&BlockedGroup> = self.groups.iter().filter(|g| g.key.site == site).collect();
        v.sort_by(|a, b| {
            b.count
                .cmp(&a.count)
                .then(a.oldest_since_ms.cmp(&b.oldest_since_ms))
                .then(a.key.cmp(&b.key))
        });
        v
    }

    /// Total live tasks and blocked tasks.
    pub fn totals(&self) -> (u64, u64) {
        self.sites
            .values()
            .filter_map(|s| s.stats.as_ref())
            .fold((0, 0), |(l, b), s| {
                // Counters come from outside: saturate rather than overflow.
                (
                    l.saturating_add(s.live),
                    b.saturating_add(s.blocked_send)
                        .saturating_add(s.blocked_recv),
                )
            })
    }
}

#[cfg(test)]
mod scenarios;

#[cfg(test)]
mod tests {
    use super::*;
    use leaktop_agent::wire::{SiteHistory, SiteKind};

    fn stats(site: LocId, live: u64) -> SiteStats {
        SiteStats {
            site,
            kind: Some(SiteKind::Spawn),
            live,
            spawned: live,
            ..Default::default()
        }
    }

    #[test]
    fn snapshots_extend_history_without_overlap() {
        let mut s = Session::new();
        s.apply_msg(&AgentMsg::History(History {
            interval_ms: 1000,
            end_ms: 3000,
            sites: vec![SiteHistory {
                site: 1,
                samples: vec![
                    Sample {
                        live: 1,
                        ..Default::default()
                    },
                    Sample {
                        live: 2,
                        ..Default::default()
                    },
                    Sample {
                        live: 3,
                        ..Default::default()
                    },
                ],
            }],
        }));
        s.apply_msg(&AgentMsg::Snapshot(Snapshot {
            seq: 1,
            now_ms: 3500,
            sites: vec![stats(1, 4)],
            ..Default::default()
        }));
        let t: Vec<(u64, u32)> = s.sites[&1]
            .series
            .iter()
            .map(|p| (p.t_ms, p.sample.live))
            .collect();
        assert_eq!(t, vec![(1000, 1), (2000, 2), (3000, 3), (3500, 4)]);
        assert_eq!(s.totals(), (4, 0));
    }
}
