//! The names of the metric series leaktop publishes: one list for the agent's `metrics`
//! feature (its `metrics` module publishes exactly [`AGENT`]) and for `leaktop export`
//! (which writes the same series, with the same `site` labels, plus what only the
//! attaching side knows: verdicts, growth, the target's identity). Dashboards and alerting
//! rules (the leaktop repository's `docs/fleet/`) name these.
//!
//! ```
//! use leaktop_agent::series;
//!
//! let live = series::AGENT.iter().find(|s| s.name == series::SITE_LIVE).unwrap();
//! assert_eq!(live.labels, [series::SITE]);
//! ```

/// Label: the spawn site, `file:line:column` (`<uninstrumented>` for channel waits outside
/// instrumented tasks, `<other>` for sites past the site cap).
pub const SITE: &str = "site";
/// Label of [`SITE_BLOCKED`]: the blocked operation, `send` or `recv`.
pub const OP: &str = "op";

/// Gauge: live tasks of the site.
pub const SITE_LIVE: &str = "leaktop_site_live";
/// Gauge: tasks of the site blocked on instrumented channels, by [`OP`].
pub const SITE_BLOCKED: &str = "leaktop_site_blocked";
/// Counter: tasks ever spawned at the site.
pub const SITE_SPAWNED_TOTAL: &str = "leaktop_site_spawned_total";
/// Counter: tasks of the site that finished, were dropped or aborted.
pub const SITE_COMPLETED_TOTAL: &str = "leaktop_site_completed_total";
/// Gauge: age of the site's oldest live task in seconds (0: none live).
pub const SITE_OLDEST_LIVE_SECONDS: &str = "leaktop_site_oldest_live_seconds";
/// Gauge: longest time in seconds a blocked task's channel made no progress that could
/// wake it (0: none blocked).
pub const SITE_STALLED_SECONDS: &str = "leaktop_site_stalled_seconds";
/// Gauge, no labels: distinct spawn sites seen, including those folded into
/// `site="<other>"`.
pub const SITES_SEEN: &str = "leaktop_sites_seen";

/// One series: its name (as a query names it: counters with their `_total`) and labels.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Series {
    pub name: &'static str,
    pub labels: &'static [&'static str],
}

/// Every series the agent's `metrics` feature publishes.
pub const AGENT: &[Series] = &[
    Series {
        name: SITE_LIVE,
        labels: &[SITE],
    },
    Series {
        name: SITE_BLOCKED,
        labels: &[SITE, OP],
    },
    Series {
        name: SITE_SPAWNED_TOTAL,
        labels: &[SITE],
    },
    Series {
        name: SITE_COMPLETED_TOTAL,
        labels: &[SITE],
    },
    Series {
        name: SITE_OLDEST_LIVE_SECONDS,
        labels: &[SITE],
    },
    Series {
        name: SITE_STALLED_SECONDS,
        labels: &[SITE],
    },
    Series {
        name: SITES_SEEN,
        labels: &[],
    },
];
