//! Per-site task counts through the [`metrics`] facade (feature `metrics`), so the
//! exporter the application already installed (Prometheus, OpenTelemetry, StatsD, …)
//! carries them to the fleet's dashboards and alerts.
//!
//! The agent thread publishes at every history sample (each
//! [`crate::Builder::sample_interval`], 1 s by default); [`publish`] does the same on
//! demand (from a scrape handler, or a test under `metrics::with_local_recorder`).
//! Series, each labelled `site="file:line:column"` (`<uninstrumented>` for channel waits
//! outside instrumented tasks, `<other>` for sites past the site cap):
//!
//! | name | type | what |
//! | --- | --- | --- |
//! | `leaktop_site_live` | gauge | live tasks |
//! | `leaktop_site_blocked` | gauge, label `op` = `send` / `recv` | tasks blocked on instrumented channels |
//! | `leaktop_site_spawned_total` | counter | tasks ever spawned |
//! | `leaktop_site_completed_total` | counter | tasks finished, dropped or aborted |
//! | `leaktop_site_oldest_live_seconds` | gauge | age of the oldest live task (0: none) |
//! | `leaktop_site_stalled_seconds` | gauge | longest time a blocked task's channel made no progress that could wake it (0: none blocked) |
//! | `leaktop_sites_seen` | gauge (no labels) | distinct spawn sites seen, including those folded into `<other>` |
//!
//! Label cardinality is bounded by the site cap ([`crate::Builder::site_cap`], 10 000 by
//! default; set it lower for metrics), plus the two pseudo rows.
//!
//! The names are in [`crate::series`]. Alerting rules in the spirit of `leaktop check`:
//! growth is `deriv(leaktop_site_live[10m]) * 60 > 1`, a stuck site is
//! `leaktop_site_stalled_seconds > 300`, and together with growth a leak. The leaktop
//! repository has a Prometheus rule file and a Grafana dashboard for these series under
//! `docs/fleet/`.
//!
//! With the Prometheus exporter of the `metrics` ecosystem (`metrics-exporter-prometheus`;
//! in a service, its `install()` also serves `/metrics`):
//!
//! ```
//! use metrics_exporter_prometheus::PrometheusBuilder;
//!
//! #[tokio::main]
//! async fn main() {
//!     let prometheus = PrometheusBuilder::new()
//!         .install_recorder()
//!         .expect("the only metrics recorder");
//!     if let Err(e) = leaktop_agent::start() {
//!         eprintln!("leaktop agent not started: {e}");
//!     }
//!     let (_tx, rx) = leaktop_agent::sync::oneshot::channel::<()>();
//!     leaktop_agent::spawn(async move {
//!         let _ = rx.await;
//!     });
//!     // The agent thread publishes at every sample; this publishes now.
//!     leaktop_agent::metrics::publish();
//!     let scrape = prometheus.render();
//!     assert!(scrape.contains("leaktop_site_live{site=\""), "{scrape}");
//!     assert!(scrape.contains("leaktop_site_spawned_total{site=\""), "{scrape}");
//! }
//! ```

use std::sync::atomic::Ordering::Relaxed;

use crate::clock;
use crate::registry::{registry, Site};
use crate::series;
use crate::wire::{BlockedGroup, Op};

/// Publishes every site's current counts to the current `metrics` recorder.
/// O(sites + blocked groups).
pub fn publish() {
    let reg = registry();
    let now = clock::now_ms();
    reg.promote_all();
    for site in reg.sites() {
        publish_site(site, now);
    }
    metrics::gauge!(series::SITES_SEEN).set(reg.sites_seen() as f64);
}

fn label(site: &Site) -> String {
    match site.kind.metric_label() {
        Some(label) => label.to_string(),
        None => registry()
            .location(site.loc)
            .map_or_else(|| format!("<location {}>", site.loc), |l| l.to_string()),
    }
}

fn publish_site(site: &Site, now: u64) {
    let (st, groups) = site.stats_and_groups();
    let name = label(site);
    metrics::gauge!(series::SITE_LIVE, series::SITE => name.clone()).set(st.live as f64);
    metrics::gauge!(series::SITE_BLOCKED, series::SITE => name.clone(), series::OP => "send")
        .set(st.blocked_send as f64);
    metrics::gauge!(series::SITE_BLOCKED, series::SITE => name.clone(), series::OP => "recv")
        .set(st.blocked_recv as f64);
    metrics::counter!(series::SITE_SPAWNED_TOTAL, series::SITE => name.clone())
        .absolute(site.spawned.load(Relaxed));
    metrics::counter!(series::SITE_COMPLETED_TOTAL, series::SITE => name.clone())
        .absolute(site.completed.load(Relaxed));
    let oldest = st
        .oldest_live_ms
        .map_or(0.0, |t| now.saturating_sub(t) as f64 / 1000.0);
    metrics::gauge!(series::SITE_OLDEST_LIVE_SECONDS, series::SITE => name.clone()).set(oldest);
    let stalled = groups.iter().map(|g| stalled_ms(g, now)).max().unwrap_or(0);
    metrics::gauge!(series::SITE_STALLED_SECONDS, series::SITE => name)
        .set(stalled as f64 / 1000.0);
}

/// How long the group's oldest waiter has waited without progress on its channel that
/// could wake it (a receive for a sender, a send for a receiver): the agent-side twin of
/// `leaktop`'s stall measure.
pub(crate) fn stalled_ms(g: &BlockedGroup, now: u64) -> u64 {
    let progress = g.channel.as_ref().and_then(|c| match g.key.op {
        Op::Send | Op::Reserve => c.last_recv_ms,
        Op::Recv | Op::Changed => c.last_send_ms,
        _ => c.last_send_ms.max(c.last_recv_ms),
    });
    now.saturating_sub(g.oldest_since_ms.max(progress.unwrap_or(0)))
}
