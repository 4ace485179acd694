//! The site table's rows, derived from the session: one pure function of the session and
//! the view settings (sort, filter, baseline). The app recomputes them when either changes.

use std::cmp::Ordering;
use std::collections::HashMap;

use leaktop_agent::wire::{LocId, SiteKind};

use super::format::short_path;
use crate::model::verdict::{assess_site, Thresholds, Verdict};
use crate::model::Session;

/// Columns the table can be sorted by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SortKey {
    /// Verdict, then growth, then blocked tasks, then live tasks.
    #[default]
    Suspicion,
    Site,
    Live,
    Growth,
    BlockedSend,
    BlockedRecv,
    OldestBlock,
}

impl SortKey {
    pub const ALL: [SortKey; 7] = [
        SortKey::Suspicion,
        SortKey::Site,
        SortKey::Live,
        SortKey::Growth,
        SortKey::BlockedSend,
        SortKey::BlockedRecv,
        SortKey::OldestBlock,
    ];

    pub fn name(self) -> &'static str {
        match self {
            SortKey::Suspicion => "suspicion",
            SortKey::Site => "site",
            SortKey::Live => "live",
            SortKey::Growth => "Δ/min",
            SortKey::BlockedSend => "blocked send",
            SortKey::BlockedRecv => "blocked recv",
            SortKey::OldestBlock => "oldest block",
        }
    }

    pub fn next(self) -> SortKey {
        let i = SortKey::ALL.iter().position(|k| *k == self).unwrap_or(0);
        SortKey::ALL[(i + 1) % SortKey::ALL.len()]
    }
}

/// Sort key and direction. `reverse: false` is each key's natural order: most suspicious,
/// largest, oldest first; sites A→Z.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Sort {
    pub key: SortKey,
    pub reverse: bool,
}

/// One row of the site table.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub site: LocId,
    /// `file:line:col`, or a name for the synthetic rows.
    pub label: String,
    pub kind: Option<SiteKind>,
    pub live: u64,
    /// Robust growth of the live count, tasks per minute, over the verdict window (or
    /// what history there is); `None` before a few seconds of data.
    pub growth: Option<f64>,
    pub blocked_send: u64,
    pub blocked_recv: u64,
    /// How long the longest-blocked task of the site has been blocked.
    pub oldest_block_ms: Option<u64>,
    /// Live now minus live at the baseline.
    pub since_baseline: Option<i64>,
    /// The model's verdict on the site.
    pub verdict: Verdict,
}

/// How often the verdicts of every site are assessed again: they rest on a two-minute
/// window, so a few seconds of lag cost nothing, and assessing a thousand churning sites
/// every second would cost the TUI most of its CPU (robust slopes are O(n²) per site).
pub const VERDICT_EVERY_MS: u64 = 5_000;

/// What the table needs of a site's verdict.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Assessed {
    pub verdict: Verdict,
    pub rate_per_min: f64,
    pub span_ms: u64,
}

/// The verdicts of every site, assessed at most every [`VERDICT_EVERY_MS`] (sites that
/// appear in between are assessed at once).
#[derive(Debug, Clone, Default)]
pub struct Verdicts {
    /// Agent time of the session when last assessed.
    pub at_ms: Option<u64>,
    pub by_site: HashMap<LocId, Assessed>,
}

impl Verdicts {
    /// Brings the verdicts up to date with `session` when they are due (or the session
    /// went back in time: a replay seek, a different process).
    pub fn refresh(&mut self, session: &Session, th: &Thresholds) {
        let due = self
            .at_ms
            .is_none_or(|t| session.now_ms < t || session.now_ms - t >= VERDICT_EVERY_MS);
        if due {
            self.by_site.clear();
            self.at_ms = Some(session.now_ms);
        }
        for id in session.sites.keys() {
            if !self.by_site.contains_key(id) {
                self.reassess(session, th, *id);
            }
        }
    }

    /// Assesses one site now (the selected one, so its mark agrees with the detail
    /// pane's evidence).
    pub fn reassess(&mut self, session: &Session, th: &Thresholds, site: LocId) {
        if let Some(v) = assess_site(session, site, th) {
            self.by_site.insert(
                site,
                Assessed {
                    verdict: v.verdict,
                    rate_per_min: v.rate_per_min,
                    span_ms: v.growth.span_ms,
                },
            );
        }
    }
}

/// Least history for a rate.
pub const GROWTH_MIN_SPAN_MS: u64 = 3_000;

/// Name of a site row: its location with dependency paths shortened
/// ([`short_path`]).
pub fn site_label(session: &Session, id: LocId, kind: Option<SiteKind>) -> String {
    match kind.and_then(SiteKind::row_label) {
        Some(label) => label.into(),
        None => location(session, id),
    }
}

/// A location as shown: `file:line:col`, dependency paths shortened.
pub fn location(session: &Session, id: LocId) -> String {
    match session.locations.get(&id) {
        Some(l) => format!("{}:{}:{}", short_path(&l.file), l.line, l.column),
        None => format!("<location {id}>"),
    }
}

/// The rows of every site with stats, filtered and sorted, with the model's verdicts.
pub fn rows(session: &Session, sort: Sort, filter: &str, verdicts: &Verdicts) -> Vec<Row> {
    let mut oldest_block: HashMap<LocId, u64> = HashMap::new();
    for g in &session.groups {
        let e = oldest_block.entry(g.key.site).or_insert(u64::MAX);
        *e = (*e).min(g.oldest_since_ms);
    }
    let needle = filter.trim().to_lowercase();
    let mut out: Vec<Row> = session
        .sites
        .iter()
        .filter_map(|(id, site)| {
            let st = site.stats.as_ref()?;
            let label = site_label(session, *id, st.kind);
            if !needle.is_empty() && !label.to_lowercase().contains(&needle) {
                return None;
            }
            let v = verdicts.by_site.get(id).copied().unwrap_or(Assessed {
                verdict: Verdict::None,
                rate_per_min: 0.0,
                span_ms: 0,
            });
            let growth = (v.span_ms >= GROWTH_MIN_SPAN_MS).then_some(v.rate_per_min);
            Some(Row {
                site: *id,
                label,
                kind: st.kind,
                live: st.live,
                growth,
                blocked_send: st.blocked_send,
                blocked_recv: st.blocked_recv,
                oldest_block_ms: oldest_block
                    .get(id)
                    .map(|since| session.now_ms.saturating_sub(*since)),
                since_baseline: session.delta(*id).map(|d| d.live),
                verdict: v.verdict,
            })
        })
        .collect();
    out.sort_by(|a, b| {
        let ord = compare(a, b, sort.key);
        let ord = if sort.reverse { ord.reverse() } else { ord };
        ord.then_with(|| a.label.cmp(&b.label))
            .then(a.site.cmp(&b.site))
    });
    out
}

fn f(v: Option<f64>) -> f64 {
    v.unwrap_or(0.0)
}

/// Natural order of each key: "worst" first.
fn compare(a: &Row, b: &Row, key: SortKey) -> Ordering {
    match key {
        SortKey::Suspicion => b
            .verdict
            .severity()
            .cmp(&a.verdict.severity())
            .then_with(|| {
                b.since_baseline
                    .unwrap_or(0)
                    .cmp(&a.since_baseline.unwrap_or(0))
            })
            .then_with(|| f(b.growth).total_cmp(&f(a.growth)))
            .then_with(|| (b.blocked_send + b.blocked_recv).cmp(&(a.blocked_send + a.blocked_recv)))
            .then_with(|| b.live.cmp(&a.live)),
        SortKey::Site => a.label.cmp(&b.label),
        SortKey::Live => b.live.cmp(&a.live),
        SortKey::Growth => f(b.growth).total_cmp(&f(a.growth)),
        SortKey::BlockedSend => b.blocked_send.cmp(&a.blocked_send),
        SortKey::BlockedRecv => b.blocked_recv.cmp(&a.blocked_recv),
        SortKey::OldestBlock => b.oldest_block_ms.cmp(&a.oldest_block_ms),
    }
}
