//! A baseline: a marked point in time; everything after it reads as a change since then
//! (the TUI's `b` key, `dump --baseline 30s`).

use std::collections::BTreeMap;

use leaktop_agent::wire::{LocId, Sample};

use super::series::counter_delta;

/// The counters of every site at the marked time. A site absent here did not exist then
/// (its baseline is zero).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Baseline {
    /// Agent ms of the mark.
    pub t_ms: u64,
    pub sites: BTreeMap<LocId, Sample>,
}

/// Change of one site since the baseline.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delta {
    /// Live now minus live then (negative when tasks finished).
    pub live: i64,
    pub blocked_send: i64,
    pub blocked_recv: i64,
    /// Tasks spawned / completed since the mark.
    pub spawned: u64,
    pub completed: u64,
    /// ms from the mark to the sample `now` was taken from.
    pub elapsed_ms: u64,
}

impl Delta {
    /// Between two samples taken `elapsed_ms` apart.
    pub fn between(then: &Sample, now: &Sample, elapsed_ms: u64) -> Delta {
        Delta {
            live: now.live as i64 - then.live as i64,
            blocked_send: now.blocked_send as i64 - then.blocked_send as i64,
            blocked_recv: now.blocked_recv as i64 - then.blocked_recv as i64,
            spawned: counter_delta(then.spawned, now.spawned),
            completed: counter_delta(then.completed, now.completed),
            elapsed_ms,
        }
    }

    /// Live change per minute since the mark (0 right at the mark).
    pub fn live_per_min(&self) -> f64 {
        if self.elapsed_ms == 0 {
            0.0
        } else {
            self.live as f64 * 60_000.0 / self.elapsed_ms as f64
        }
    }
}

impl Baseline {
    /// The change of `site` from the mark to `now` (its sample at `now_ms`).
    pub fn delta(&self, site: LocId, now: &Sample, now_ms: u64) -> Delta {
        let zero = Sample::default();
        let then = self.sites.get(&site).unwrap_or(&zero);
        Delta::between(then, now, now_ms.saturating_sub(self.t_ms))
    }
}
