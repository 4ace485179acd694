//! Compact, lossless codings of the two big messages: a snapshot as a delta against the
//! previous one in the file (only the sites whose counters changed, as field differences),
//! and the history rings as runs of equal sample-to-sample differences.
//!
//! The writer checks every delta by applying it before it is written, and falls back to a
//! full list when the patch would not reproduce the snapshot exactly, so a reader always
//! rebuilds the very message the live source yielded.

#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

use std::collections::HashSet;
use std::hash::Hash;

use serde::{Deserialize, Serialize};

use leaktop_agent::wire::{
    BlockedGroup, ChannelKind, ChannelSiteStats, GroupKey, History, LocId, Sample, SiteHistory,
    SiteStats, Snapshot,
};

/// A snapshot is written whole (against an empty base) at least this often, so damage or
/// a decoder bug never spreads further than this many snapshots.
pub const KEYFRAME_EVERY: u32 = 300;
/// Most samples a packed history may expand to (all sites together): bounds what a
/// damaged or hostile file can make a reader allocate.
pub const MAX_HISTORY_SAMPLES: u64 = 1 << 22;

/// Why a delta could not be applied (a damaged file, or one that was not written by us).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DeltaError {
    #[error("snapshot delta without a previous snapshot to apply it to")]
    NoBase,
    #[error("{0} delta out of range of the previous snapshot")]
    OutOfRange(&'static str),
    #[error("history expands past {MAX_HISTORY_SAMPLES} samples")]
    HistoryTooLarge,
}

/// Changes of a list between two snapshots.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum ListDelta<T, C> {
    /// Identical to the previous list.
    Same,
    /// The whole new list.
    Full(Vec<T>),
    /// Remove some elements, change some in place, append new ones.
    Patch {
        /// Indices into the previous list, ascending, each as the gap after the previous
        /// one (`index = previous + 1 + gap`; the first is the index itself).
        removed: Vec<u32>,
        /// Changes to the list after removal, indices gap-coded the same way.
        changed: Vec<(u32, C)>,
        /// New elements, appended at the end.
        added: Vec<T>,
    },
}

/// How one changed site row is written: a mask of the fields that changed (bit i for
/// field i: live, running, blocked_send, blocked_recv, spawned, completed, oldest_live_ms
/// as `ms + 1` or 0 for none), then one zigzag varint difference per set bit, wrapping like
/// `u64` arithmetic; no length, no tag. Mask bit 7 means the row is written whole instead
/// (its kind changed). A typical changed site costs its index gap, the mask and one or two
/// bytes per changed counter.
#[derive(Clone, Debug, PartialEq)]
pub enum SiteChange {
    Fields { mask: u8, vals: [i64; 7] },
    Replace(Box<SiteStats>),
}

const REPLACE_BIT: u8 = 1 << 7;

impl Serialize for SiteChange {
    fn serialize<S: serde::Serializer>(&self, ser: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        match self {
            SiteChange::Fields { mask, vals } => {
                let mask = mask & !REPLACE_BIT;
                let mut t = ser.serialize_tuple(1 + mask.count_ones() as usize)?;
                t.serialize_element(&mask)?;
                for (i, v) in vals.iter().enumerate() {
                    if mask & (1 << i) != 0 {
                        t.serialize_element(v)?;
                    }
                }
                t.end()
            }
            SiteChange::Replace(st) => {
                let mut t = ser.serialize_tuple(2)?;
                t.serialize_element(&REPLACE_BIT)?;
                t.serialize_element(st.as_ref())?;
                t.end()
            }
        }
    }
}

impl<'de> Deserialize<'de> for SiteChange {
    fn deserialize<D: serde::Deserializer<'de>>(de: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = SiteChange;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a site change (mask, then its values)")
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<SiteChange, A::Error> {
                use serde::de::Error;
                let mask: u8 = seq
                    .next_element()?
                    .ok_or_else(|| A::Error::invalid_length(0, &self))?;
                if mask & REPLACE_BIT != 0 {
                    let st: SiteStats = seq
                        .next_element()?
                        .ok_or_else(|| A::Error::invalid_length(1, &self))?;
                    return Ok(SiteChange::Replace(Box::new(st)));
                }
                let mut vals = [0i64; 7];
                for (i, v) in vals.iter_mut().enumerate() {
                    if mask & (1 << i) != 0 {
                        *v = seq
                            .next_element()?
                            .ok_or_else(|| A::Error::invalid_length(i + 1, &self))?;
                    }
                }
                Ok(SiteChange::Fields { mask, vals })
            }
        }
        // postcard reads a tuple's elements on demand: the mask says how many follow.
        de.deserialize_tuple(8, V)
    }
}

/// A snapshot as stored: differences against the previous snapshot in the file.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub struct SnapshotDelta {
    /// True: the base is an empty snapshot (first of a file, first after a new hello, and
    /// every [`KEYFRAME_EVERY`] snapshots).
    pub key: bool,
    pub seq: i64,
    pub now_ms: i64,
    pub sites_seen: i64,
    pub sites: ListDelta<SiteStats, SiteChange>,
    pub groups: ListDelta<BlockedGroup, BlockedGroup>,
    pub channels: ListDelta<ChannelSiteStats, ChannelSiteStats>,
}

/// An element of a list that deltas know how to pair and diff.
trait Item: Clone + PartialEq {
    type Key: Eq + Hash;
    type Change: Clone;
    fn key(&self) -> Self::Key;
    fn change(old: &Self, new: &Self) -> Self::Change;
    fn apply(old: &Self, change: &Self::Change) -> Self;
}

impl Item for BlockedGroup {
    type Key = GroupKey;
    type Change = BlockedGroup;
    fn key(&self) -> GroupKey {
        self.key.clone()
    }
    fn change(_: &Self, new: &Self) -> Self {
        new.clone()
    }
    fn apply(_: &Self, change: &Self) -> Self {
        change.clone()
    }
}

impl Item for ChannelSiteStats {
    type Key = (LocId, ChannelKind);
    type Change = ChannelSiteStats;
    fn key(&self) -> Self::Key {
        (self.site, self.kind)
    }
    fn change(_: &Self, new: &Self) -> Self {
        new.clone()
    }
    fn apply(_: &Self, change: &Self) -> Self {
        change.clone()
    }
}

fn opt_code(v: Option<u64>) -> u64 {
    v.map_or(0, |v| v.wrapping_add(1))
}

fn opt_decode(code: u64) -> Option<u64> {
    code.checked_sub(1)
}

fn site_fields(s: &SiteStats) -> [u64; 7] {
    [
        s.live,
        s.running,
        s.blocked_send,
        s.blocked_recv,
        s.spawned,
        s.completed,
        opt_code(s.oldest_live_ms),
    ]
}

impl Item for SiteStats {
    type Key = LocId;
    type Change = SiteChange;
    fn key(&self) -> LocId {
        self.site
    }
    fn change(old: &Self, new: &Self) -> SiteChange {
        if old.kind != new.kind || old.site != new.site {
            return SiteChange::Replace(Box::new(new.clone()));
        }
        let (a, b) = (site_fields(old), site_fields(new));
        let mut mask = 0u8;
        let mut vals = [0i64; 7];
        for (i, ((a, b), val)) in a.iter().zip(&b).zip(&mut vals).enumerate() {
            if a != b {
                mask |= 1 << i;
                *val = b.wrapping_sub(*a) as i64;
            }
        }
        SiteChange::Fields { mask, vals }
    }
    fn apply(old: &Self, change: &SiteChange) -> Self {
        match change {
            SiteChange::Replace(s) => s.as_ref().clone(),
            SiteChange::Fields { mask, vals } => {
                let mut f = site_fields(old);
                for (i, (field, val)) in f.iter_mut().zip(vals).enumerate() {
                    if mask & (1 << i) != 0 {
                        *field = field.wrapping_add(*val as u64);
                    }
                }
                let [live, running, blocked_send, blocked_recv, spawned, completed, oldest] = f;
                SiteStats {
                    site: old.site,
                    kind: old.kind,
                    live,
                    running,
                    blocked_send,
                    blocked_recv,
                    spawned,
                    completed,
                    oldest_live_ms: opt_decode(oldest),
                }
            }
        }
    }
}

fn diff_list<T: Item>(prev: &[T], next: &[T]) -> ListDelta<T, T::Change> {
    if prev == next {
        return ListDelta::Same;
    }
    if prev.is_empty() {
        return ListDelta::Full(next.to_vec());
    }
    let keys: HashSet<T::Key> = next.iter().map(Item::key).collect();
    let mut removed = Vec::new();
    let mut kept = Vec::new();
    let mut last: Option<usize> = None;
    for (i, p) in prev.iter().enumerate() {
        if keys.contains(&p.key()) {
            kept.push(p);
        } else {
            removed.push(gap(last, i));
            last = Some(i);
        }
    }
    let in_order = kept.len() <= next.len()
        && kept
            .iter()
            .zip(next)
            .all(|(old, new)| old.key() == new.key());
    if !in_order {
        return ListDelta::Full(next.to_vec());
    }
    let mut changed = Vec::new();
    let mut last: Option<usize> = None;
    for (j, (old, new)) in kept.iter().zip(next).enumerate() {
        if *old != new {
            changed.push((gap(last, j), T::change(old, new)));
            last = Some(j);
        }
    }
    let delta = ListDelta::Patch {
        removed,
        changed,
        added: next.get(kept.len()..).unwrap_or_default().to_vec(),
    };
    // The patch must rebuild `next` exactly (duplicate keys, say, would break pairing).
    match apply_list(prev, &delta, "self-check") {
        Ok(v) if v == next => delta,
        _ => ListDelta::Full(next.to_vec()),
    }
}

fn gap(last: Option<usize>, i: usize) -> u32 {
    match last {
        None => i as u32,
        Some(l) => (i - l - 1) as u32,
    }
}

/// Turns gap-coded indices into indices, `None` on overflow.
fn next_index(last: Option<usize>, gap: u32) -> Option<usize> {
    match last {
        None => Some(gap as usize),
        Some(l) => l.checked_add(1)?.checked_add(gap as usize),
    }
}

fn apply_list<T: Item>(
    prev: &[T],
    delta: &ListDelta<T, T::Change>,
    what: &'static str,
) -> Result<Vec<T>, DeltaError> {
    let mut list = prev.to_vec();
    patch_list(&mut list, delta, what)?;
    Ok(list)
}

/// Applies `delta` to `list` in place.
fn patch_list<T: Item>(
    list: &mut Vec<T>,
    delta: &ListDelta<T, T::Change>,
    what: &'static str,
) -> Result<(), DeltaError> {
    match delta {
        ListDelta::Same => Ok(()),
        ListDelta::Full(v) => {
            *list = v.clone();
            Ok(())
        }
        ListDelta::Patch {
            removed,
            changed,
            added,
        } => {
            if removed.len() > list.len() {
                return Err(DeltaError::OutOfRange(what));
            }
            if !removed.is_empty() {
                let mut drop = vec![false; list.len()];
                let mut last = None;
                for g in removed {
                    let i = next_index(last, *g).ok_or(DeltaError::OutOfRange(what))?;
                    *drop.get_mut(i).ok_or(DeltaError::OutOfRange(what))? = true;
                    last = Some(i);
                }
                let mut keep = drop.iter().map(|d| !d);
                list.retain(|_| keep.next().unwrap_or(true));
            }
            let mut last = None;
            for (g, change) in changed {
                let j = next_index(last, *g).ok_or(DeltaError::OutOfRange(what))?;
                let item = list.get_mut(j).ok_or(DeltaError::OutOfRange(what))?;
                *item = T::apply(item, change);
                last = Some(j);
            }
            list.extend(added.iter().cloned());
            Ok(())
        }
    }
}

fn diff_u64(old: u64, new: u64) -> i64 {
    new.wrapping_sub(old) as i64
}

fn add_u64(old: u64, d: i64) -> u64 {
    old.wrapping_add(d as u64)
}

/// Turns snapshots into deltas (writer side). One per recording.
#[derive(Debug, Default)]
pub struct SnapshotEncoder {
    prev: Option<Snapshot>,
    since_key: u32,
}

impl SnapshotEncoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Forgets the base: the next snapshot is written whole (after a new hello).
    pub fn reset(&mut self) {
        self.prev = None;
    }

    pub fn encode(&mut self, s: &Snapshot) -> SnapshotDelta {
        let empty = Snapshot::default();
        let key = self.prev.is_none() || self.since_key >= KEYFRAME_EVERY;
        let base = if key {
            &empty
        } else {
            self.prev.as_ref().unwrap_or(&empty)
        };
        let delta = SnapshotDelta {
            key,
            seq: diff_u64(base.seq, s.seq),
            now_ms: diff_u64(base.now_ms, s.now_ms),
            sites_seen: diff_u64(base.sites_seen, s.sites_seen),
            sites: diff_list(&base.sites, &s.sites),
            groups: diff_list(&base.groups, &s.groups),
            channels: diff_list(&base.channels, &s.channels),
        };
        self.since_key = if key { 1 } else { self.since_key + 1 };
        self.prev = Some(s.clone());
        delta
    }
}

/// Rebuilds snapshots from deltas (reader side).
#[derive(Debug, Default, Clone)]
pub struct SnapshotDecoder {
    prev: Option<Snapshot>,
}

impl SnapshotDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn decode(&mut self, d: &SnapshotDelta) -> Result<Snapshot, DeltaError> {
        let mut cur = if d.key {
            Snapshot::default()
        } else {
            self.prev.take().ok_or(DeltaError::NoBase)?
        };
        // Patched in place; a delta that does not apply leaves no base, so later deltas
        // wait for a keyframe instead of patching the wrong snapshot.
        cur.seq = add_u64(cur.seq, d.seq);
        cur.now_ms = add_u64(cur.now_ms, d.now_ms);
        cur.sites_seen = add_u64(cur.sites_seen, d.sites_seen);
        patch_list(&mut cur.sites, &d.sites, "site")?;
        patch_list(&mut cur.groups, &d.groups, "blocked group")?;
        patch_list(&mut cur.channels, &d.channels, "channel")?;
        self.prev = Some(cur.clone());
        Ok(cur)
    }
}

/// One run: `count` consecutive samples, each differing from the one before by `d`
/// (live, blocked_send, blocked_recv, spawned, completed).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Run {
    pub count: u32,
    pub d: [i64; 5],
}

/// One site's ring: the samples as runs of equal differences, starting from all zeros.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PackedSite {
    pub site: LocId,
    pub runs: Vec<Run>,
}

/// An `AgentMsg::History`, run-length coded: a site whose counters stay still or grow
/// steadily costs a few bytes whatever the ring's length.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct PackedHistory {
    pub interval_ms: u32,
    pub end_ms: u64,
    pub sites: Vec<PackedSite>,
}

fn sample_diff(a: &Sample, b: &Sample) -> [i64; 5] {
    [
        b.live as i64 - a.live as i64,
        b.blocked_send as i64 - a.blocked_send as i64,
        b.blocked_recv as i64 - a.blocked_recv as i64,
        diff_u64(a.spawned, b.spawned),
        diff_u64(a.completed, b.completed),
    ]
}

fn sample_add(a: &Sample, d: &[i64; 5]) -> Sample {
    Sample {
        live: (a.live as i64).wrapping_add(d[0]) as u32,
        blocked_send: (a.blocked_send as i64).wrapping_add(d[1]) as u32,
        blocked_recv: (a.blocked_recv as i64).wrapping_add(d[2]) as u32,
        spawned: add_u64(a.spawned, d[3]),
        completed: add_u64(a.completed, d[4]),
    }
}

pub fn pack_history(h: &History) -> PackedHistory {
    let sites = h
        .sites
        .iter()
        .map(|sh| {
            let mut runs: Vec<Run> = Vec::new();
            let mut prev = Sample::default();
            for s in &sh.samples {
                let d = sample_diff(&prev, s);
                match runs.last_mut() {
                    Some(r) if r.d == d && r.count < u32::MAX => r.count += 1,
                    _ => runs.push(Run { count: 1, d }),
                }
                prev = *s;
            }
            PackedSite {
                site: sh.site,
                runs,
            }
        })
        .collect();
    PackedHistory {
        interval_ms: h.interval_ms,
        end_ms: h.end_ms,
        sites,
    }
}

pub fn unpack_history(p: &PackedHistory) -> Result<History, DeltaError> {
    let total: u64 = p
        .sites
        .iter()
        .flat_map(|s| &s.runs)
        .map(|r| r.count as u64)
        .sum();
    if total > MAX_HISTORY_SAMPLES {
        return Err(DeltaError::HistoryTooLarge);
    }
    let sites = p
        .sites
        .iter()
        .map(|ps| {
            let mut samples = Vec::new();
            let mut cur = Sample::default();
            for r in &ps.runs {
                for _ in 0..r.count {
                    cur = sample_add(&cur, &r.d);
                    samples.push(cur);
                }
            }
            SiteHistory {
                site: ps.site,
                samples,
            }
        })
        .collect();
    Ok(History {
        interval_ms: p.interval_ms,
        end_ms: p.end_ms,
        sites,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use leaktop_agent::wire::{Op, SiteKind};

    fn site(id: LocId, live: u64) -> SiteStats {
        SiteStats {
            site: id,
            kind: Some(SiteKind::Spawn),
            live,
            spawned: live * 3,
            completed: live * 2,
            oldest_live_ms: (live > 0).then_some(live * 10),
            ..Default::default()
        }
    }

    fn group(site: LocId, count: u64) -> BlockedGroup {
        BlockedGroup {
            key: GroupKey {
                site,
                op: Op::Recv,
                channel_site: 9,
                call_site: 8,
                stack: Some(1),
            },
            kind: ChannelKind::Mpsc,
            count,
            oldest_since_ms: 5,
            channel: None,
        }
    }

    fn roundtrip(snaps: &[Snapshot]) -> Vec<SnapshotDelta> {
        let mut enc = SnapshotEncoder::new();
        let mut dec = SnapshotDecoder::new();
        snaps
            .iter()
            .map(|s| {
                let d = enc.encode(s);
                // Through postcard, as in a file.
                let bytes = postcard::to_allocvec(&d).unwrap();
                let d2: SnapshotDelta = postcard::from_bytes(&bytes).unwrap();
                assert_eq!(&dec.decode(&d2).unwrap(), s);
                d
            })
            .collect()
    }

    #[test]
    fn unchanged_sites_cost_nothing_and_changes_are_small() {
        let a = Snapshot {
            seq: 1,
            now_ms: 1000,
            sites: (0..1000).map(|i| site(i, 5)).collect(),
            groups: vec![group(1, 3)],
            sites_seen: 1000,
            ..Default::default()
        };
        let mut b = a.clone();
        b.seq = 2;
        b.now_ms = 2000;
        b.sites[10] = site(10, 6);
        b.sites[500].kind = Some(SiteKind::Other);
        b.sites.remove(700);
        b.sites.push(site(5000, 1));
        b.groups[0].count = 4;
        let mut c = b.clone();
        c.seq = 3;
        c.now_ms = 3000;
        c.sites.swap(0, 1); // reordered: written whole
        let deltas = roundtrip(&[a, b, c]);
        assert!(deltas[0].key);
        let small = postcard::to_allocvec(&deltas[1]).unwrap().len();
        assert!(small < 100, "{small} bytes for a few changes");
        assert!(matches!(deltas[2].sites, ListDelta::Full(_)));
        assert!(matches!(deltas[2].groups, ListDelta::Same));
    }

    #[test]
    fn keyframes_come_back_periodically() {
        let snaps: Vec<Snapshot> = (0..(KEYFRAME_EVERY as u64 * 2 + 1))
            .map(|i| Snapshot {
                seq: i,
                now_ms: i * 1000,
                sites: vec![site(1, i % 7)],
                ..Default::default()
            })
            .collect();
        let deltas = roundtrip(&snaps);
        let keys: Vec<usize> = deltas
            .iter()
            .enumerate()
            .filter(|(_, d)| d.key)
            .map(|(i, _)| i)
            .collect();
        assert_eq!(
            keys,
            vec![0, KEYFRAME_EVERY as usize, 2 * KEYFRAME_EVERY as usize]
        );
    }

    #[test]
    fn delta_without_base_is_an_error_not_a_panic() {
        let mut enc = SnapshotEncoder::new();
        let _ = enc.encode(&Snapshot::default());
        let d = enc.encode(&Snapshot {
            seq: 1,
            ..Default::default()
        });
        assert_eq!(SnapshotDecoder::new().decode(&d), Err(DeltaError::NoBase));
        let bad = SnapshotDelta {
            key: true,
            seq: 0,
            now_ms: 0,
            sites_seen: 0,
            sites: ListDelta::Patch {
                removed: vec![u32::MAX, u32::MAX],
                changed: vec![],
                added: vec![],
            },
            groups: ListDelta::Same,
            channels: ListDelta::Same,
        };
        assert!(SnapshotDecoder::new().decode(&bad).is_err());
    }

    #[test]
    fn history_packs_steady_sites_into_a_few_runs() {
        let steady: Vec<Sample> = (0..600)
            .map(|i| Sample {
                live: 10,
                spawned: 1_000_000 + i * 5,
                completed: 999_990 + i * 5,
                ..Default::default()
            })
            .collect();
        let noisy: Vec<Sample> = (0..600u64)
            .map(|i| Sample {
                live: (i * 7919 % 13) as u32,
                blocked_recv: u32::MAX - (i % 3) as u32,
                spawned: u64::MAX - i,
                completed: i * i,
                ..Default::default()
            })
            .collect();
        let h = History {
            interval_ms: 1000,
            end_ms: 600_000,
            sites: vec![
                SiteHistory {
                    site: 1,
                    samples: steady,
                },
                SiteHistory {
                    site: 2,
                    samples: noisy,
                },
                SiteHistory {
                    site: 3,
                    samples: vec![],
                },
            ],
        };
        let p = pack_history(&h);
        assert_eq!(p.sites[0].runs.len(), 2);
        assert_eq!(unpack_history(&p).unwrap(), h);
        let huge = PackedHistory {
            interval_ms: 1,
            end_ms: 1,
            sites: vec![PackedSite {
                site: 1,
                runs: vec![
                    Run {
                        count: u32::MAX,
                        d: [0; 5]
                    };
                    4
                ],
            }],
        };
        assert_eq!(unpack_history(&huge), Err(DeltaError::HistoryTooLarge));
    }
}
