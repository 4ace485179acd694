//! Per-thread state of the hot path: everything a spawn, a poll or a completion writes
//! lives in the [`Shard`] of the thread doing it, so workers that spawn and complete tasks
//! of the same site never write a shared cache line or take a shared lock.
//!
//! A shard holds, for its thread:
//! - the poll slot: which task (and site) the thread polls right now (the `running`
//!   counts and a task's Running state are read from these, O(threads));
//! - the per-site counters ([`SiteCounters`]: spawned, completed, lifetimes, the task
//!   tree), which the snapshot sums over the shards;
//! - the live-task lists: every task first polled on this thread is linked into its
//!   site's list here (oldest first), for the oldest-task age, the task list requests and
//!   `testing`;
//! - the candidates: tasks that began a wait since the agent last looked (see
//!   `blocked`).
//!
//! Shards are leaked (`&'static`) and handed to the next thread once their thread exits,
//! so their number is the peak number of threads that ran instrumented code. A task may
//! end on another thread than the one it was linked on: it then takes the other shard's
//! list lock, which only that shard's thread and the agent thread otherwise take.

use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicPtr, AtomicU64, AtomicUsize, Ordering::*};
use std::sync::Mutex;

use crate::blocked::RecPtr;
use crate::instrumented::Record;
use crate::registry::{lock, Site};

/// Most sites a counter table can index (the site cap is clamped to this).
pub(crate) const MAX_SITES: usize = 1 << 16;
const CHUNK: usize = 64;
const CHUNKS: usize = MAX_SITES / CHUNK;
/// Buckets of the lifetime histograms: `< 1 ms`, then powers of two up to 2^30 ms
/// (12 days); the last bucket holds everything longer.
pub(crate) const LIFE_BUCKETS: usize = 32;

/// Parent slots per site and thread in [`SiteCounters::edges`] (the last one counts every
/// other parent site).
pub(crate) const EDGES: usize = 4;
/// The parent key of tasks spawned outside any instrumented task.
pub(crate) const ROOT_PARENT: usize = 1;
/// The parent key of the overflow edge.
pub(crate) const OTHER_PARENTS: usize = 2;

/// Live tasks of a site by parent site (a parent `Site` address, or [`ROOT_PARENT`]).
#[derive(Default)]
pub(crate) struct Edge {
    pub parent: AtomicUsize,
    pub live: AtomicI64,
    pub orphans: AtomicI64,
}

/// Counters of one site on one thread. Several threads may write one (a shard whose
/// thread is gone is used through the fallback), so every write is an atomic add.
#[derive(Default)]
pub(crate) struct SiteCounters {
    pub spawned: AtomicU64,
    pub completed: AtomicU64,
    /// Live tasks whose `JoinHandle` was dropped (+1 at the drop, -1 at the end).
    pub detached: AtomicI64,
    /// Live detached tasks whose parent finished.
    pub orphans: AtomicI64,
    pub awaited: AtomicU64,
    pub aborted: AtomicU64,
    pub lifetimes: [AtomicU64; LIFE_BUCKETS],
    pub edges: [Edge; EDGES + 1],
}

impl SiteCounters {
    /// The edge of parent key `parent`, claimed on first use; the overflow edge when all
    /// are taken.
    #[inline]
    pub fn edge(&self, parent: usize) -> &Edge {
        let (slots, other) = self.edges.split_at(EDGES);
        for e in slots {
            let p = e.parent.load(Relaxed);
            if p == parent {
                return e;
            }
            if p == 0 {
                match e.parent.compare_exchange(0, parent, Relaxed, Relaxed) {
                    Ok(_) => return e,
                    Err(q) if q == parent => return e,
                    Err(_) => {}
                }
            }
        }
        let o = &other[0];
        o.parent.store(OTHER_PARENTS, Relaxed);
        o
    }
}

type Chunk = [SiteCounters; CHUNK];

/// The ends of one site's list of live tasks in one shard.
#[derive(Clone, Copy)]
pub(crate) struct Ends {
    pub head: *const Record,
    pub tail: *const Record,
}

impl Default for Ends {
    fn default() -> Self {
        Ends {
            head: std::ptr::null(),
            tail: std::ptr::null(),
        }
    }
}

/// Live-task lists of one shard, indexed by site index.
#[derive(Default)]
pub(crate) struct Lists {
    pub ends: Vec<Ends>,
}

// SAFETY: the pointers are records linked under the `Mutex<Lists>` that owns this value;
// they are only dereferenced under that lock, and a record unlinks itself (under the same
// lock) before its memory goes away.
unsafe impl Send for Lists {}

/// The slot one thread publishes the task it polls in; on its own cache line.
#[repr(align(64))]
pub(crate) struct PollSlot {
    pub site: AtomicUsize,
    pub rec: AtomicUsize,
}

pub(crate) struct Shard {
    pub index: u16,
    pub poll: PollSlot,
    pub candidates: Mutex<Vec<RecPtr>>,
    pub lists: Mutex<Lists>,
    counters: Box<[AtomicPtr<Chunk>]>,
}

impl Shard {
    fn new(index: u16) -> Shard {
        Shard {
            index,
            poll: PollSlot {
                site: AtomicUsize::new(0),
                rec: AtomicUsize::new(0),
            },
            candidates: Mutex::new(Vec::new()),
            lists: Mutex::new(Lists::default()),
            counters: (0..CHUNKS)
                .map(|_| AtomicPtr::new(std::ptr::null_mut()))
                .collect(),
        }
    }

    /// The counters of `site` on this shard, allocated on first use.
    #[inline]
    pub fn counters(&self, site: &Site) -> &SiteCounters {
        let i = site.idx as usize % MAX_SITES;
        let chunk = self.counters[i / CHUNK].load(Acquire);
        let chunk = if chunk.is_null() {
            self.new_chunk(i / CHUNK)
        } else {
            chunk
        };
        // SAFETY: chunks are allocated once, published with Release and never freed.
        unsafe { &(*chunk)[i % CHUNK] }
    }

    /// The counters of site index `idx` if this shard ever wrote them.
    pub fn counters_at(&self, idx: u32) -> Option<&SiteCounters> {
        let i = idx as usize % MAX_SITES;
        let chunk = self.counters[i / CHUNK].load(Acquire);
        // SAFETY: as in `counters`.
        (!chunk.is_null()).then(|| unsafe { &(*chunk)[i % CHUNK] })
    }

    #[cold]
    #[inline(never)]
    fn new_chunk(&self, c: usize) -> *mut Chunk {
        let fresh: Box<Chunk> = Box::new(std::array::from_fn(|_| SiteCounters::default()));
        let fresh = Box::into_raw(fresh);
        match self.counters[c].compare_exchange(std::ptr::null_mut(), fresh, AcqRel, Acquire) {
            Ok(_) => fresh,
            Err(other) => {
                // SAFETY: `fresh` was never published.
                drop(unsafe { Box::from_raw(fresh) });
                other
            }
        }
    }
}

struct Shards {
    all: Mutex<Vec<&'static Shard>>,
    free: Mutex<Vec<&'static Shard>>,
}

static SHARDS: Shards = Shards {
    all: Mutex::new(Vec::new()),
    free: Mutex::new(Vec::new()),
};

/// Used where a thread's own shard is not reachable (its thread-locals are being torn
/// down): always shard 0.
static FALLBACK: std::sync::OnceLock<&'static Shard> = std::sync::OnceLock::new();

fn fallback() -> &'static Shard {
    FALLBACK.get_or_init(|| {
        let mut all = lock(&SHARDS.all);
        let s: &'static Shard = Box::leak(Box::new(Shard::new(all.len() as u16)));
        all.push(s);
        s
    })
}

thread_local! {
    static MINE: Cell<*const Shard> = const { Cell::new(std::ptr::null()) };
    static OWNER: Owner = Owner::claim();
}

struct Owner(&'static Shard);

impl Owner {
    fn claim() -> Owner {
        fallback();
        let shard = lock(&SHARDS.free).pop().unwrap_or_else(|| {
            let mut all = lock(&SHARDS.all);
            let s: &'static Shard = Box::leak(Box::new(Shard::new(all.len() as u16)));
            all.push(s);
            s
        });
        MINE.with(|c| c.set(shard));
        Owner(shard)
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        MINE.with(|c| c.set(std::ptr::null()));
        self.0.poll.site.store(0, Relaxed);
        self.0.poll.rec.store(0, Relaxed);
        lock(&SHARDS.free).push(self.0);
    }
}

/// This thread's shard, or the fallback while its thread-locals are torn down.
#[inline]
pub(crate) fn mine() -> &'static Shard {
    let p = MINE.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: shards are leaked.
        return unsafe { &*p };
    }
    claim()
}

/// This thread's own shard (not the fallback), if it has one.
#[inline]
pub(crate) fn own() -> Option<&'static Shard> {
    let p = MINE.with(|c| c.get());
    if !p.is_null() {
        // SAFETY: shards are leaked.
        return Some(unsafe { &*p });
    }
    OWNER.try_with(|o| o.0).ok()
}

#[cold]
#[inline(never)]
fn claim() -> &'static Shard {
    OWNER.try_with(|o| o.0).unwrap_or_else(|_| fallback())
}

/// Shard number `i` (as stored in a record).
pub(crate) fn by_index(i: u16) -> &'static Shard {
    lock(&SHARDS.all)
        .get(i as usize)
        .copied()
        .unwrap_or_else(fallback)
}

/// Every shard.
pub(crate) fn all() -> Vec<&'static Shard> {
    fallback();
    lock(&SHARDS.all).clone()
}

/// The sites being polled now, one entry per polling thread (`Site` addresses), sorted.
pub(crate) fn polling_sites() -> Vec<usize> {
    let mut v: Vec<usize> = all()
        .iter()
        .map(|s| s.poll.site.load(Relaxed))
        .filter(|&a| a != 0)
        .collect();
    v.sort_unstable();
    v
}

/// Addresses of the records being polled now, sorted.
pub(crate) fn polling_records() -> Vec<usize> {
    let mut v: Vec<usize> = all()
        .iter()
        .map(|s| s.poll.rec.load(Relaxed))
        .filter(|&a| a != 0)
        .collect();
    v.sort_unstable();
    v
}

/// How many entries of `polling` (from [`polling_sites`]) are `site`.
pub(crate) fn running_at(polling: &[usize], site: &Site) -> u64 {
    let a = site as *const Site as usize;
    let lo = polling.partition_point(|&x| x < a);
    let hi = polling.partition_point(|&x| x <= a);
    (hi - lo) as u64
}

/// Sums of one site's counters over every shard.
#[derive(Default, Clone)]
pub(crate) struct Totals {
    pub spawned: u64,
    pub completed: u64,
    pub detached: i64,
    pub orphans: i64,
    pub awaited: u64,
    pub aborted: u64,
    pub lifetimes: [u64; LIFE_BUCKETS],
    /// (parent key, live, orphans), merged over shards.
    pub edges: Vec<(usize, i64, i64)>,
}

/// Sums site index `idx`'s counters over `shards`. O(shards).
pub(crate) fn totals(shards: &[&'static Shard], idx: u32) -> Totals {
    let mut t = Totals::default();
    for s in shards {
        let Some(c) = s.counters_at(idx) else {
            continue;
        };
        t.spawned = t.spawned.wrapping_add(c.spawned.load(Relaxed));
        t.completed = t.completed.wrapping_add(c.completed.load(Relaxed));
        t.detached = t.detached.wrapping_add(c.detached.load(Relaxed));
        t.orphans = t.orphans.wrapping_add(c.orphans.load(Relaxed));
        t.awaited = t.awaited.wrapping_add(c.awaited.load(Relaxed));
        t.aborted = t.aborted.wrapping_add(c.aborted.load(Relaxed));
        for (a, b) in t.lifetimes.iter_mut().zip(&c.lifetimes) {
            *a = a.wrapping_add(b.load(Relaxed));
        }
        for e in &c.edges {
            let p = e.parent.load(Relaxed);
            if p == 0 {
                continue;
            }
            let (live, orphans) = (e.live.load(Relaxed), e.orphans.load(Relaxed));
            match t.edges.iter_mut().find(|(q, _, _)| *q == p) {
                Some((_, l, o)) => {
                    *l = l.wrapping_add(live);
                    *o = o.wrapping_add(orphans);
                }
                None => t.edges.push((p, live, orphans)),
            }
        }
    }
    t
}

/// The lifetime bucket of a task that lived `ms`.
#[inline]
pub(crate) fn life_bucket(ms: u64) -> usize {
    ((u64::BITS - ms.leading_zeros()) as usize).min(LIFE_BUCKETS - 1)
}
