//! Per-site history: one sample of each site's counters every sample interval, kept in
//! fixed-size rings, so a client that attaches now receives the growth that came before.
//! Owned by the agent thread (no locks: nothing else reads or writes these rings).
//!
//! # Memory bound
//!
//! A sample is stored in 24 bytes ([`Compact`]: live, blocked send, blocked recv, blocked
//! on sync primitives, waiting elsewhere as `u32`, spawned as a `u32` delta from the
//! previous sample; completed is `spawned - live`). Every
//! ring has the same length `L`, at most the configured history length (600 samples: ten
//! minutes at 1 s). All rings together hold at most `budget / 24` samples (default budget
//! [`DEFAULT_BUDGET_BYTES`], 32 MiB): when the number of sites grows past what fits, `L`
//! shrinks for everyone (never below [`MIN_LEN`] samples), so the ring memory is at most
//!
//! `24 B × max(budget / 24 B, MIN_LEN × sites)`, with `sites ≤ site cap + 2`:
//!
//! 32 MiB by default, 3.8 MiB more only if a budget below `24 B × MIN_LEN × sites` is
//! forced. At the default cap (10 002 rows) that keeps about 110 samples (almost two
//! minutes) per site; a program with up to 2 330 sites keeps the full ten minutes. A
//! program with 100 sites uses 100 × 600 × 24 B ≈ 1.4 MiB.
//!
//! Each part of a transfer also carries every site's lifetime histogram of completed
//! tasks as it is when the part is built, so a client that attaches knows how long the
//! site's tasks normally live.
//!
//! # Sending
//!
//! A history at the cap is far larger than one frame or a client's output allowance, so
//! it is sent in parts (a [`Cursor`] per client, [`MAX_CHUNK_SAMPLES`] samples per
//! [`wire::HistoryV2`] message) as the client reads. Every part has the same `end_ms`.

use std::collections::{HashMap, VecDeque};

use crate::wire::{self, LocId, SampleV2 as Sample};

/// Default cap on the memory of all rings together.
pub const DEFAULT_BUDGET_BYTES: usize = 32 * 1024 * 1024;
/// Rings never shrink below this many samples.
pub const MIN_LEN: usize = 16;
/// Samples per history message (≈ 1-2 MB encoded at worst).
pub const MAX_CHUNK_SAMPLES: usize = 65_536;

/// One stored sample: 24 bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Compact {
    live: u32,
    blocked_send: u32,
    blocked_recv: u32,
    blocked_sync: u32,
    waiting: u32,
    /// Tasks spawned since the previous sample (saturating).
    spawned_delta: u32,
}

fn clamp32(v: u64) -> u32 {
    v.min(u32::MAX as u64) as u32
}

struct Ring {
    site: LocId,
    /// Oldest first; the newest is sample number `Rings::taken - 1`.
    buf: VecDeque<Compact>,
    /// Absolute spawned count of the newest sample.
    spawned: u64,
}

/// The rings of every site.
pub(crate) struct Rings {
    interval_ms: u32,
    /// Configured (maximum) ring length.
    max_len: usize,
    /// Current ring length (shrinks with the number of sites, see the module docs).
    len: usize,
    budget_samples: usize,
    /// Samples taken so far.
    taken: u64,
    /// Agent ms of the newest sample.
    last_ms: u64,
    rings: Vec<Ring>,
    index: HashMap<LocId, usize>,
}

/// Where a client's history transfer is: everything up to sample `end_taken` (exclusive),
/// sites from `next` on.
#[derive(Clone, Debug)]
pub(crate) struct Cursor {
    end_taken: u64,
    end_ms: u64,
    next: usize,
    sent_any: bool,
}

impl Rings {
    pub fn new(interval_ms: u32, max_len: usize, budget_bytes: usize) -> Rings {
        let max_len = max_len.max(1);
        Rings {
            interval_ms,
            max_len,
            len: max_len,
            budget_samples: budget_bytes / std::mem::size_of::<Compact>(),
            taken: 0,
            last_ms: 0,
            rings: Vec::new(),
            index: HashMap::new(),
        }
    }

    /// Current ring length.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.len
    }

    /// Samples stored now, over all rings.
    #[cfg(test)]
    pub fn stored_samples(&self) -> usize {
        self.rings.iter().map(|r| r.buf.len()).sum()
    }

    /// Records one sample of every site, taken at agent time `now_ms`. O(sites).
    pub fn record(&mut self, now_ms: u64, sites: impl IntoIterator<Item = (LocId, Sample)>) {
        for (site, s) in sites {
            let idx = match self.index.get(&site) {
                Some(&i) => i,
                None => {
                    self.add_ring(site);
                    self.rings.len() - 1
                }
            };
            let len = self.len;
            let ring = &mut self.rings[idx];
            let delta = s.spawned.saturating_sub(ring.spawned);
            ring.spawned = s.spawned;
            if ring.buf.len() >= len {
                ring.buf.pop_front();
            }
            ring.buf.push_back(Compact {
                live: s.live,
                blocked_send: s.blocked_send,
                blocked_recv: s.blocked_recv,
                blocked_sync: s.blocked_sync,
                waiting: s.waiting,
                spawned_delta: clamp32(delta),
            });
        }
        self.taken += 1;
        self.last_ms = now_ms;
    }

    fn add_ring(&mut self, site: LocId) {
        let sites = self.rings.len() + 1;
        if sites * self.len > self.budget_samples && self.len > MIN_LEN {
            // Shrink for a quarter more sites than now, so this happens rarely.
            let room = self.budget_samples / (sites + sites / 4).max(1);
            self.len = room.clamp(MIN_LEN, self.max_len).min(self.len);
            for r in &mut self.rings {
                let excess = r.buf.len().saturating_sub(self.len);
                r.buf.drain(..excess);
                r.buf.shrink_to_fit();
            }
        }
        self.index.insert(site, self.rings.len());
        self.rings.push(Ring {
            site,
            buf: VecDeque::with_capacity(self.len.min(64)),
            spawned: 0,
        });
    }

    /// Starts a transfer of everything recorded so far.
    pub fn cursor(&self) -> Cursor {
        Cursor {
            end_taken: self.taken,
            end_ms: self.last_ms,
            next: 0,
            sent_any: false,
        }
    }

    /// The next part of a transfer, `None` when it is complete. The first part is sent
    /// even when there is nothing to send, so every request gets an answer. `lifetimes`
    /// gives a site's lifetime histogram now.
    pub fn next_chunk(
        &self,
        cur: &mut Cursor,
        lifetimes: impl Fn(LocId) -> wire::LogHistogram,
    ) -> Option<wire::HistoryV2> {
        if cur.sent_any && cur.next >= self.rings.len() {
            return None;
        }
        let mut out = wire::HistoryV2 {
            interval_ms: self.interval_ms,
            end_ms: cur.end_ms,
            sites: Vec::new(),
        };
        let mut budget = MAX_CHUNK_SAMPLES;
        while cur.next < self.rings.len() && budget > 0 {
            let ring = &self.rings[cur.next];
            cur.next += 1;
            // Samples newer than the transfer's end are left out.
            let newer = (self.taken - cur.end_taken) as usize;
            let usable = ring.buf.len().saturating_sub(newer);
            if usable == 0 {
                continue;
            }
            let samples = expand(ring, newer, usable);
            budget = budget.saturating_sub(samples.len());
            out.sites.push(wire::SiteHistoryV2 {
                site: ring.site,
                samples,
                lifetimes: lifetimes(ring.site),
            });
        }
        cur.sent_any = true;
        Some(out)
    }
}

/// Rebuilds full samples of `ring`, oldest first, leaving out the `newer` newest and
/// keeping `usable` of the rest.
fn expand(ring: &Ring, newer: usize, usable: usize) -> Vec<Sample> {
    let n = ring.buf.len();
    // Walk back from the newest to recover the absolute spawned counts.
    let mut spawned = ring.spawned;
    for c in ring.buf.iter().rev().take(newer) {
        spawned = spawned.saturating_sub(c.spawned_delta as u64);
    }
    let mut out: Vec<Sample> = ring
        .buf
        .iter()
        .take(n - newer)
        .rev()
        .take(usable)
        .map(|c| {
            let s = Sample {
                live: c.live,
                blocked_send: c.blocked_send,
                blocked_recv: c.blocked_recv,
                blocked_sync: c.blocked_sync,
                waiting: c.waiting,
                spawned,
                completed: spawned.saturating_sub(c.live as u64),
            };
            spawned = spawned.saturating_sub(c.spawned_delta as u64);
            s
        })
        .collect();
    out.reverse();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(live: u32, spawned: u64) -> Sample {
        Sample {
            live,
            blocked_send: live / 2,
            blocked_recv: 1,
            blocked_sync: live / 3,
            waiting: 2,
            spawned,
            completed: spawned - live as u64,
        }
    }

    fn all(rings: &Rings) -> Vec<wire::HistoryV2> {
        let mut cur = rings.cursor();
        std::iter::from_fn(|| rings.next_chunk(&mut cur, |_| wire::LogHistogram::default()))
            .collect()
    }

    #[test]
    fn compact_samples_are_24_bytes() {
        assert_eq!(std::mem::size_of::<Compact>(), 24);
    }

    #[test]
    fn rings_keep_the_last_len_samples_and_rebuild_them_exactly() {
        let mut r = Rings::new(1000, 5, DEFAULT_BUDGET_BYTES);
        for k in 0..12u64 {
            let mut sites = vec![(7, s(k as u32, 10 * k))];
            if k >= 9 {
                sites.push((8, s(1, 100 + k))); // a site born later
            }
            r.record(1000 * k, sites);
        }
        let h = all(&r);
        assert_eq!(h.len(), 1);
        assert_eq!(h[0].end_ms, 11_000);
        let a = &h[0].sites[0];
        assert_eq!(a.site, 7);
        assert_eq!(
            a.samples,
            (7..12u64).map(|k| s(k as u32, 10 * k)).collect::<Vec<_>>()
        );
        let b = &h[0].sites[1];
        assert_eq!(
            b.samples,
            (9..12u64).map(|k| s(1, 100 + k)).collect::<Vec<_>>()
        );
    }

    #[test]
    fn an_empty_history_still_answers_once() {
        let r = Rings::new(1000, 600, DEFAULT_BUDGET_BYTES);
        let h = all(&r);
        assert_eq!(h.len(), 1);
        assert!(h[0].sites.is_empty());
        assert_eq!(h[0].interval_ms, 1000);
    }

    #[test]
    fn memory_stays_within_the_budget_at_the_site_cap() {
        let budget = 1024 * 1024;
        let mut r = Rings::new(1000, 600, budget);
        for k in 0..40u64 {
            r.record(k * 1000, (0..10_002u32).map(|site| (site, s(k as u32, k))));
            if k == 0 {
                assert!(r.len() < 600);
            }
        }
        assert!(r.len() >= MIN_LEN);
        let bytes = r.stored_samples() * std::mem::size_of::<Compact>();
        let bound = budget.max(MIN_LEN * 10_002 * 24);
        assert!(bytes <= bound, "{bytes} > {bound}");
        // Sent in parts that each fit comfortably in a frame.
        let h = all(&r);
        assert!(h.len() > 1);
        assert!(h.iter().all(|p| p.end_ms == 39_000));
        let sites: usize = h.iter().map(|p| p.sites.len()).sum();
        assert_eq!(sites, 10_002);
        for part in &h {
            let frame = wire::encode_frame(&wire::AgentMsg::HistoryV2(part.clone())).unwrap();
            assert!(frame.len() < 4 * 1024 * 1024, "{}", frame.len());
        }
    }

    #[test]
    fn default_budget_keeps_ten_minutes_for_thousands_of_sites() {
        let mut r = Rings::new(1000, 600, DEFAULT_BUDGET_BYTES);
        r.record(0, (0..2_000u32).map(|site| (site, s(0, 0))));
        assert_eq!(r.len(), 600);
    }

    #[test]
    fn samples_taken_during_a_transfer_are_left_out() {
        let mut r = Rings::new(1000, 10, DEFAULT_BUDGET_BYTES);
        for k in 0..4u64 {
            r.record(k * 1000, [(1, s(k as u32, k)), (2, s(0, 0))]);
        }
        let mut cur = r.cursor();
        for k in 4..6u64 {
            r.record(k * 1000, [(1, s(k as u32, k)), (2, s(0, 0)), (3, s(9, 9))]);
        }
        let h = r
            .next_chunk(&mut cur, |_| wire::LogHistogram::default())
            .unwrap();
        assert_eq!(h.end_ms, 3000);
        assert_eq!(
            h.sites[0].samples,
            (0..4u64).map(|k| s(k as u32, k)).collect::<Vec<_>>()
        );
        // Site 3 was born after the request: nothing of it before the end.
        assert_eq!(h.sites.len(), 2);
        assert!(r
            .next_chunk(&mut cur, |_| wire::LogHistogram::default())
            .is_none());
    }
}
