//! Per-site time series: the agent's history rings followed by the live snapshots, read as
//! a step function (a value holds from its point until the next one), and the robust
//! statistics the verdicts use on it (Theil–Sen slope, Mann–Kendall trend).
//!
//! Memory is bounded: a series keeps at most [`MAX_POINTS`] points. Runs of identical
//! samples keep only their first and last point (a quiet site costs two points however
//! long it stays quiet), and when the series is full its older half is thinned to every
//! other point, so old data loses resolution rather than disappearing. Worst case, every
//! site changing at every sample: `MAX_POINTS × size_of::<Point>()` = 1024 × 40 B = 40 KiB
//! per site.

use leaktop_agent::wire::Sample;

/// Points a series keeps at most.
pub const MAX_POINTS: usize = 1024;

/// Grid points the statistics resample a window to (Theil–Sen is O(grid²)).
pub const GRID: usize = 40;

/// One point of a site's time series.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Point {
    /// Agent ms.
    pub t_ms: u64,
    pub sample: Sample,
}

/// A site's samples over time, oldest first, strictly increasing in time. Reads like a
/// slice of [`Point`]s.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Series {
    points: Vec<Point>,
}

impl std::ops::Deref for Series {
    type Target = [Point];
    fn deref(&self) -> &[Point] {
        &self.points
    }
}

impl Series {
    pub fn new() -> Series {
        Series::default()
    }

    /// Appends a point newer than the last one (older or same-time points are ignored:
    /// a snapshot never rewrites the past).
    pub fn push(&mut self, p: Point) {
        if let Some(last) = self.points.last() {
            if p.t_ms <= last.t_ms {
                return;
            }
        }
        let n = self.points.len();
        if n >= 2 && self.points[n - 1].sample == p.sample && self.points[n - 2].sample == p.sample
        {
            // Middle of a constant run: move its end instead of adding a point.
            self.points[n - 1].t_ms = p.t_ms;
            return;
        }
        self.points.push(p);
        if self.points.len() > MAX_POINTS {
            self.thin();
        }
    }

    /// Adds points older than the first one we have (history that arrived after
    /// snapshots, or a second history request). `older` must be oldest first.
    pub fn prepend(&mut self, older: impl IntoIterator<Item = Point>) {
        let first = self.points.first().map(|p| p.t_ms);
        let mut merged = Series::new();
        for p in older {
            if first.is_none_or(|f| p.t_ms < f) {
                merged.push(p);
            }
        }
        for p in self.points.drain(..) {
            merged.push(p);
        }
        *self = merged;
    }

    /// Halves the resolution of the older half.
    fn thin(&mut self) {
        let half = self.points.len() / 2;
        let mut kept = Vec::with_capacity(self.points.len());
        for (i, p) in self.points.iter().enumerate() {
            if i >= half || i % 2 == 0 {
                kept.push(*p);
            }
        }
        self.points = kept;
    }

    /// The sample in force at `t_ms` (the latest point at or before it).
    pub fn at(&self, t_ms: u64) -> Option<Sample> {
        let idx = self.points.partition_point(|p| p.t_ms <= t_ms);
        idx.checked_sub(1).map(|i| self.points[i].sample)
    }

    /// Time of the first point.
    pub fn start_ms(&self) -> Option<u64> {
        self.points.first().map(|p| p.t_ms)
    }

    /// Time of the last point.
    pub fn end_ms(&self) -> Option<u64> {
        self.points.last().map(|p| p.t_ms)
    }

    /// `f(sample)` on a regular grid of at most [`GRID`] points over `[from, to]`, clipped
    /// to the data: `(t_ms, value)` pairs. Empty when no data covers the range.
    pub fn grid(&self, from_ms: u64, to_ms: u64, f: impl Fn(&Sample) -> f64) -> Vec<(u64, f64)> {
        let Some(start) = self.start_ms() else {
            return Vec::new();
        };
        let from = from_ms.max(start);
        if to_ms <= from {
            return Vec::new();
        }
        let span = to_ms - from;
        let n = GRID as u64;
        (0..n)
            .filter_map(|k| {
                let t = from + span * k / (n - 1);
                self.at(t).map(|s| (t, f(&s)))
            })
            .collect()
    }

    /// Live count on the window grid.
    pub fn live_grid(&self, from_ms: u64, to_ms: u64) -> Vec<(u64, f64)> {
        self.grid(from_ms, to_ms, |s| s.live as f64)
    }
}

/// Change of a monotonic counter from `a` to `b`: a wrap past `u64::MAX` is counted
/// through, a reset (agent restarted, counter back near zero) counts from zero.
pub fn counter_delta(a: u64, b: u64) -> u64 {
    if b >= a {
        b - a
    } else if a - b > u64::MAX / 2 {
        b.wrapping_sub(a)
    } else {
        b
    }
}

/// Robust slope of `y` over `t` (units of y per ms): the median of the slopes of all
/// pairs (Theil–Sen). An outlier or a one-off burst moves it far less than least squares
/// or last-minus-first would. `None` with fewer than two distinct times.
pub fn theil_sen(points: &[(u64, f64)]) -> Option<f64> {
    let mut slopes = Vec::with_capacity(points.len() * points.len() / 2);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            if b.0 != a.0 {
                slopes.push((b.1 - a.1) / (b.0 as f64 - a.0 as f64));
            }
        }
    }
    median(&mut slopes)
}

fn median(v: &mut [f64]) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let mid = v.len() / 2;
    let (_, m, _) = v.select_nth_unstable_by(mid, |a, b| a.total_cmp(b));
    let m = *m;
    if v.len() % 2 == 1 {
        Some(m)
    } else {
        let lower = v[..mid].iter().copied().fold(f64::NEG_INFINITY, f64::max);
        Some((lower + m) / 2.0)
    }
}

/// Mann–Kendall trend in `[-1, 1]` (Kendall's tau-a against time): the share of pairs
/// that rise minus the share that fall. 1 is a staircase that never steps down, 0 is
/// flat or noise. Ties (flat stretches) count as neither.
pub fn trend(points: &[(u64, f64)]) -> f64 {
    let (rise, fall) = pair_shares(points);
    rise - fall
}

/// Shares of ordered pairs `(earlier, later)` whose later value is higher / lower.
pub fn pair_shares(points: &[(u64, f64)]) -> (f64, f64) {
    let n = points.len();
    if n < 2 {
        return (0.0, 0.0);
    }
    let (mut up, mut down) = (0u64, 0u64);
    for (i, a) in points.iter().enumerate() {
        for b in &points[i + 1..] {
            match b.1.partial_cmp(&a.1) {
                Some(std::cmp::Ordering::Greater) => up += 1,
                Some(std::cmp::Ordering::Less) => down += 1,
                _ => {}
            }
        }
    }
    let pairs = (n * (n - 1) / 2) as f64;
    (up as f64 / pairs, down as f64 / pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pt(t_ms: u64, live: u32) -> Point {
        Point {
            t_ms,
            sample: Sample {
                live,
                ..Default::default()
            },
        }
    }

    #[test]
    fn constant_runs_keep_their_ends_only() {
        let mut s = Series::new();
        for t in 0..100 {
            s.push(pt(t * 1000, 7));
        }
        assert_eq!(s.len(), 2);
        assert_eq!(s.at(50_000).map(|x| x.live), Some(7));
        assert_eq!(s.end_ms(), Some(99_000));
        s.push(pt(100_000, 8));
        assert_eq!(s.len(), 3);
        assert_eq!(s.at(99_999).map(|x| x.live), Some(7));
        assert_eq!(s.at(100_000).map(|x| x.live), Some(8));
    }

    #[test]
    fn points_are_bounded_and_old_data_thinned_not_dropped() {
        let mut s = Series::new();
        for t in 0..10 * MAX_POINTS as u64 {
            s.push(pt(t, t as u32));
        }
        assert!(s.len() <= MAX_POINTS);
        assert_eq!(s.start_ms(), Some(0));
        assert_eq!(s.end_ms(), Some(10 * MAX_POINTS as u64 - 1));
    }

    #[test]
    fn stale_or_duplicate_points_are_ignored() {
        let mut s = Series::new();
        s.push(pt(10, 1));
        s.push(pt(10, 2));
        s.push(pt(5, 3));
        assert_eq!(s.len(), 1);
        s.prepend([pt(1, 0), pt(10, 9), pt(20, 9)]);
        assert_eq!(
            s.iter()
                .map(|p| (p.t_ms, p.sample.live))
                .collect::<Vec<_>>(),
            vec![(1, 0), (10, 1)]
        );
    }

    #[test]
    fn theil_sen_ignores_a_burst_that_least_squares_would_follow() {
        let mut pts: Vec<(u64, f64)> = (0..20).map(|i| (i * 1000, 100.0)).collect();
        pts[19].1 = 1000.0; // one spike at the end
        assert_eq!(theil_sen(&pts), Some(0.0));
        let rising: Vec<(u64, f64)> = (0..20).map(|i| (i * 1000, i as f64 * 2.0)).collect();
        let slope = theil_sen(&rising).unwrap();
        assert!((slope - 0.002).abs() < 1e-12, "{slope}");
        assert_eq!(trend(&rising), 1.0);
        assert_eq!(trend(&pts[..19]), 0.0);
    }

    #[test]
    fn counters_survive_wrap_and_reset() {
        assert_eq!(counter_delta(5, 9), 4);
        assert_eq!(counter_delta(u64::MAX - 1, 2), 4);
        assert_eq!(counter_delta(1_000, 3), 3);
    }
}
