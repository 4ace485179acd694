//! Per-site history: one sample of each site's counters every sample interval, kept in
//! fixed-size rings so a client that attaches now sees the growth that came before.
//! Only the agent thread samples and reads these rings.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use crate::clock;
use crate::registry::{lock, registry};
use crate::wire::{self, LocId, Sample};

struct Rings {
    /// Agent ms of the newest sample.
    end_ms: u64,
    /// Samples taken so far (the rings hold the last `len` of them).
    taken: u64,
    len: usize,
    sites: HashMap<LocId, Ring>,
}

/// A ring of samples; `first` is the index of the sample number the site's ring began at.
struct Ring {
    first: u64,
    buf: Vec<Sample>,
}

static RINGS: Mutex<Option<Rings>> = Mutex::new(None);

/// Takes one sample of every site. O(sites).
pub(crate) fn sample(len: usize) {
    let len = len.max(1);
    let mut guard = lock(&RINGS);
    let rings = guard.get_or_insert_with(|| Rings {
        end_ms: 0,
        taken: 0,
        len,
        sites: HashMap::new(),
    });
    let n = rings.taken;
    // Waits that began since the last look become blocked-group members now.
    registry().promote_all();
    for site in registry().sites() {
        let stats = site.stats();
        let ring = rings.sites.entry(site.loc).or_insert_with(|| Ring {
            first: n,
            buf: Vec::new(),
        });
        let sample = Sample {
            live: stats.live.min(u32::MAX as u64) as u32,
            blocked_send: stats.blocked_send.min(u32::MAX as u64) as u32,
            blocked_recv: stats.blocked_recv.min(u32::MAX as u64) as u32,
            spawned: stats.spawned,
            completed: stats.completed,
        };
        if ring.buf.len() < rings.len {
            ring.buf.push(sample);
        } else {
            let slot = ((n - ring.first) % rings.len as u64) as usize;
            ring.buf[slot] = sample;
        }
    }
    rings.taken += 1;
    rings.end_ms = clock::now_ms();
}

/// Every site's samples, oldest first, aligned so that each ends at `end_ms`.
pub(crate) fn history(interval: Duration) -> wire::History {
    let guard = lock(&RINGS);
    let Some(rings) = guard.as_ref() else {
        return wire::History {
            interval_ms: interval.as_millis() as u32,
            ..Default::default()
        };
    };
    let mut sites: Vec<wire::SiteHistory> = rings
        .sites
        .iter()
        .map(|(&site, ring)| {
            let count = ring.buf.len();
            let taken_by_site = rings.taken - ring.first;
            // Oldest sample sits right after the newest once the ring has wrapped.
            let start = if (taken_by_site as usize) > count {
                (taken_by_site % rings.len as u64) as usize
            } else {
                0
            };
            let samples = (0..count).map(|k| ring.buf[(start + k) % count]).collect();
            wire::SiteHistory { site, samples }
        })
        .collect();
    sites.sort_by_key(|s| s.site);
    wire::History {
        interval_ms: interval.as_millis() as u32,
        end_ms: rings.end_ms,
        sites,
    }
}
