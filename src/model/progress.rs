//! Per-channel-site progress: how many sends and receives the channels created at one site
//! made, over time, so a view can tell a busy channel from a silent one.

use std::collections::VecDeque;

use leaktop_agent::wire::{ChannelKind, ChannelSiteStats};

use super::series::counter_delta;

/// Points kept per channel site (oldest dropped first).
pub const MAX_PROGRESS_POINTS: usize = 256;

/// Send/receive totals of one channel creation site at one time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProgressPoint {
    pub t_ms: u64,
    pub sends: u64,
    pub recvs: u64,
}

/// Throughput history of the channels created at one site.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ChannelProgress {
    pub kind: Option<ChannelKind>,
    pub points: VecDeque<ProgressPoint>,
    pub last_send_ms: Option<u64>,
    pub last_recv_ms: Option<u64>,
}

impl ChannelProgress {
    /// Folds the site's stats from a snapshot taken at `t_ms`.
    pub fn push(&mut self, t_ms: u64, c: &ChannelSiteStats) {
        self.kind = Some(c.kind);
        self.last_send_ms = c.last_send_ms;
        self.last_recv_ms = c.last_recv_ms;
        if self.points.back().is_some_and(|p| p.t_ms >= t_ms) {
            return;
        }
        self.points.push_back(ProgressPoint {
            t_ms,
            sends: c.sends,
            recvs: c.recvs,
        });
        while self.points.len() > MAX_PROGRESS_POINTS {
            self.points.pop_front();
        }
    }

    /// Sends and receives per minute over the last `window_ms` of what we saw
    /// (None before two points).
    pub fn rates_per_min(&self, window_ms: u64) -> Option<(f64, f64)> {
        let last = self.points.back()?;
        let from = last.t_ms.saturating_sub(window_ms);
        let first = self
            .points
            .iter()
            .find(|p| p.t_ms >= from)
            .filter(|p| p.t_ms < last.t_ms)?;
        let min = (last.t_ms - first.t_ms) as f64 / 60_000.0;
        Some((
            counter_delta(first.sends, last.sends) as f64 / min,
            counter_delta(first.recvs, last.recvs) as f64 / min,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(sends: u64, recvs: u64) -> ChannelSiteStats {
        ChannelSiteStats {
            site: 3,
            kind: ChannelKind::Mpsc,
            live: 1,
            created: 1,
            sends,
            recvs,
            last_send_ms: None,
            last_recv_ms: None,
        }
    }

    #[test]
    fn rates_over_the_window() {
        let mut p = ChannelProgress::default();
        assert_eq!(p.rates_per_min(60_000), None);
        for i in 0..=60u64 {
            p.push(i * 1000, &stats(i * 10, i * 5));
        }
        let (s, r) = p.rates_per_min(30_000).unwrap();
        assert!(
            (s - 600.0).abs() < 1e-9 && (r - 300.0).abs() < 1e-9,
            "{s} {r}"
        );
        for i in 0..1000u64 {
            p.push(61_000 + i, &stats(0, 0));
        }
        assert_eq!(p.points.len(), MAX_PROGRESS_POINTS);
    }
}
