//! The task table: spawn sites, interned locations and names, and the views the agent
//! thread builds of them (snapshots, task lists, history samples).
//!
//! The hot path writes only per-thread state (see `shard`) and its tasks' own records; a
//! snapshot sums the shards per site (O(sites × threads)) and reads each site's wait
//! groups (O(groups)); it never visits tasks. Only an explicit task-list request, or the
//! live-age histogram's bounded walk, visits tasks.

use std::collections::HashMap;
use std::panic::Location as StdLocation;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Mutex, MutexGuard, OnceLock, RwLock};

use crate::blocked::{self, BlockedTable};
use crate::chan::ChanSites;
use crate::clock;
use crate::instrumented::Record;
use crate::shard::{self, Shard, Totals, MAX_SITES, ROOT_PARENT};
use crate::stack::StackTable;
use crate::wire::{self, LocId, NameId, SiteKind};

/// Default maximum number of distinct spawn sites.
pub const DEFAULT_SITE_CAP: usize = 10_000;
/// Most distinct task names kept; later ones are not shown.
pub const MAX_NAMES: usize = 4096;
/// Live tasks of a site searched for a lock holder's own wait.
pub const HOLDER_WALK: usize = 10_000;
/// Live tasks per site visited for the live-age histogram (oldest first); younger ones
/// are counted in the bucket of the last one visited, which they do not exceed.
pub const AGE_WALK: usize = 4096;

/// Key of a `&'static Location`: equal source positions are one site even if the compiler
/// emitted two `Location` statics for them (generic code).
type LocKey = (&'static str, u32, u32);

fn key_of(loc: &'static StdLocation<'static>) -> LocKey {
    (loc.file(), loc.line(), loc.column())
}

/// Locks a mutex, ignoring poisoning: the agent's tables stay usable even if a panic
/// unwound through a critical section of the host program.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Interned locations: one id per distinct source position, for the life of the process.
#[derive(Default)]
struct Locations {
    ids: HashMap<LocKey, LocId>,
    defs: Vec<wire::Location>,
}

/// Interned task names.
#[derive(Default)]
struct Names {
    ids: HashMap<String, NameId>,
    defs: Vec<String>,
}

/// Per-site state behind the site's own mutex: its wait groups.
#[derive(Default)]
pub(crate) struct SiteInner {
    pub blocked: BlockedTable,
    /// Live plain-spawned tasks seen by tokio's runtime hooks (see `hooks`): tokio task id
    /// (ordered by spawn) -> (spawn time, test scope).
    #[cfg(all(feature = "tokio-hooks", tokio_unstable))]
    pub hooked: std::collections::BTreeMap<tokio::task::Id, (u64, u32)>,
}

/// One spawn site (or a pseudo site: uninstrumented / other). Leaked: sites live as long
/// as the process (their number is capped), so tasks refer to them as `&'static`.
pub(crate) struct Site {
    pub loc: LocId,
    pub kind: SiteKind,
    /// Dense index of the site, for the per-thread counter tables.
    pub idx: u32,
    /// Tasks counted under each wait class (see `blocked::Class`), kept by promotion.
    pub blocked_send: AtomicU64,
    pub blocked_recv: AtomicU64,
    pub blocked_sync: AtomicU64,
    pub waiting: AtomicU64,
    pub runnable: AtomicU64,
    pub uncaptured: AtomicU64,
    /// Live count beyond spawned - completed: waits outside instrumented tasks (the
    /// uninstrumented row) and hooked tasks.
    pub live_extra: AtomicI64,
    /// Agent ms of the next sampled poll (see `instrumented`).
    pub next_sample: AtomicU64,
    /// NameId + 1 of the latest named task (0: none).
    pub name: AtomicU32,
    pub inner: Mutex<SiteInner>,
    /// Only for the uninstrumented row: waits outside instrumented tasks, in tables
    /// sharded by thread, so threads that wait outside tasks do not share one lock.
    pub outside: Box<[Mutex<BlockedTable>]>,
}

/// Tables of the uninstrumented row (see [`Site::outside`]).
const OUTSIDE_SHARDS: usize = 16;

impl Site {
    fn new(loc: LocId, kind: SiteKind, idx: u32) -> Site {
        Site {
            loc,
            kind,
            idx,
            blocked_send: AtomicU64::new(0),
            blocked_recv: AtomicU64::new(0),
            blocked_sync: AtomicU64::new(0),
            waiting: AtomicU64::new(0),
            runnable: AtomicU64::new(0),
            uncaptured: AtomicU64::new(0),
            live_extra: AtomicI64::new(0),
            next_sample: AtomicU64::new(0),
            name: AtomicU32::new(0),
            inner: Mutex::new(SiteInner::default()),
            outside: match kind {
                SiteKind::Uninstrumented => (0..OUTSIDE_SHARDS)
                    .map(|_| Mutex::new(BlockedTable::default()))
                    .collect(),
                _ => Box::new([]),
            },
        }
    }

    /// The site's groups: its own table's and, for the uninstrumented row, its shards'
    /// merged by key. O(groups).
    fn all_groups(&self, inner: &SiteInner) -> Vec<wire::WaitGroup> {
        let mut groups = inner.blocked.groups(self.loc);
        for table in self.outside.iter() {
            for g in lock(table).groups(self.loc) {
                match groups.iter_mut().find(|e| e.key == g.key) {
                    Some(e) => {
                        e.count = e.count.saturating_add(g.count);
                        e.captured = e.captured.saturating_add(g.captured);
                        if g.oldest_since_ms < e.oldest_since_ms {
                            e.oldest_since_ms = g.oldest_since_ms;
                            e.channel = g.channel;
                            e.lock = g.lock;
                        }
                    }
                    None => groups.push(g),
                }
            }
        }
        groups
    }

    /// The site's counters summed over `shards`.
    pub fn totals(&self, shards: &[&'static Shard]) -> Totals {
        shard::totals(shards, self.idx)
    }

    fn live(&self, t: &Totals) -> u64 {
        let live = t.spawned.wrapping_sub(t.completed) as i64;
        live.saturating_add(self.live_extra.load(Relaxed)).max(0) as u64
    }

    /// The counters as a history sample (no lock).
    pub fn sample(&self, shards: &[&'static Shard]) -> wire::SampleV2 {
        let t = self.totals(shards);
        let clamp = |v: u64| v.min(u32::MAX as u64) as u32;
        wire::SampleV2 {
            live: clamp(self.live(&t)),
            blocked_send: clamp(self.blocked_send.load(Relaxed)),
            blocked_recv: clamp(self.blocked_recv.load(Relaxed)),
            blocked_sync: clamp(self.blocked_sync.load(Relaxed)),
            waiting: clamp(self.waiting.load(Relaxed)),
            spawned: t.spawned,
            completed: t.completed,
        }
    }

    /// Completed tasks' lifetimes so far, summed over `shards`.
    pub fn lifetimes(&self, shards: &[&'static Shard]) -> wire::LogHistogram {
        wire::LogHistogram::from_dense(&self.totals(shards).lifetimes)
    }

    /// The site's counters, tree and groups (protocol 2). O(shards + groups), plus the
    /// bounded walk of the oldest live tasks.
    pub fn stats_v2(
        &self,
        shards: &[&'static Shard],
        polling: &[usize],
        now: u64,
    ) -> (wire::SiteStatsV2, Vec<wire::WaitGroup>) {
        let t = self.totals(shards);
        let (oldest, ages) = live_ages(self, shards, now);
        #[allow(unused_mut)]
        let mut oldest = oldest;
        let inner = lock(&self.inner);
        #[cfg(all(feature = "tokio-hooks", tokio_unstable))]
        if let Some((_, (t0, _))) = inner.hooked.first_key_value() {
            oldest = Some(oldest.map_or(*t0, |o: u64| o.min(*t0)));
        }
        let groups = self.all_groups(&inner);
        drop(inner);
        let stats = wire::SiteStatsV2 {
            site: self.loc,
            kind: Some(self.kind),
            name: self.name.load(Relaxed).checked_sub(1),
            live: self.live(&t),
            running: shard::running_at(polling, self),
            blocked_send: self.blocked_send.load(Relaxed),
            blocked_recv: self.blocked_recv.load(Relaxed),
            blocked_sync: self.blocked_sync.load(Relaxed),
            waiting: self.waiting.load(Relaxed),
            runnable: self.runnable.load(Relaxed),
            uncaptured: self.uncaptured.load(Relaxed),
            spawned: t.spawned,
            completed: t.completed,
            oldest_live_ms: oldest,
            tree: tree_stats(&t),
            lifetimes: wire::LogHistogram::from_dense(&t.lifetimes),
            live_ages: ages,
        };
        (stats, groups)
    }
}

fn tree_stats(t: &Totals) -> wire::TreeStats {
    let reg = registry();
    let mut parents: Vec<wire::ParentEdge> = t
        .edges
        .iter()
        .filter(|(_, live, orphans)| *live > 0 || *orphans > 0)
        .map(|&(p, live, orphans)| wire::ParentEdge {
            site: match p {
                ROOT_PARENT => None,
                p => reg.site_at(p).map(|s| s.loc),
            },
            live: live.max(0) as u64,
            orphans: orphans.max(0) as u64,
        })
        .collect();
    parents.sort_by(|a, b| b.live.cmp(&a.live).then(a.site.cmp(&b.site)));
    wire::TreeStats {
        detached: t.detached.max(0) as u64,
        orphans: t.orphans.max(0) as u64,
        awaited: t.awaited,
        aborted: t.aborted,
        parents,
    }
}

/// The spawn time of the oldest live (polled) task of `site`, and the ages of its live
/// tasks: exact for the oldest [`AGE_WALK`] per shard; the rest (younger, or never
/// polled) are counted in the youngest bucket seen. O(shards × AGE_WALK) at most.
fn live_ages(
    site: &Site,
    shards: &[&'static Shard],
    now: u64,
) -> (Option<u64>, wire::LogHistogram) {
    let mut dense = [0u64; wire::LogHistogram::BUCKETS];
    let mut oldest: Option<u64> = None;
    let mut visited = 0u64;
    for s in shards {
        let lists = lock(&s.lists);
        let Some(ends) = lists.ends.get(site.idx as usize) else {
            continue;
        };
        let mut p = ends.head;
        let mut n = 0;
        // SAFETY: under the shard's list lock, linked records are alive.
        while let Some(r) = unsafe { p.as_ref() } {
            if n == AGE_WALK {
                break;
            }
            if n == 0 {
                oldest = Some(oldest.map_or(r.spawned_ms, |o| o.min(r.spawned_ms)));
            }
            dense[wire::LogHistogram::bucket(now.saturating_sub(r.spawned_ms))] += 1;
            n += 1;
            p = r.next_in_list();
        }
        visited += n as u64;
    }
    // Tasks not visited (never polled, or past the walk) are younger than those visited:
    // the rest of the live count goes to the youngest bucket seen.
    let t = site.totals(shards);
    let live = site.live(&t);
    if live > visited {
        let youngest = dense.iter().position(|c| *c > 0).unwrap_or(0);
        dense[youngest] += live - visited;
    }
    (oldest, wire::LogHistogram::from_dense(&dense))
}

pub(crate) struct Registry {
    sites: RwLock<HashMap<LocKey, &'static Site>>,
    /// All sites in creation order (pseudo sites included), for snapshots.
    site_list: RwLock<Vec<&'static Site>>,
    /// Site addresses, sorted, for parent-key lookups.
    by_addr: RwLock<Vec<(usize, &'static Site)>>,
    locations: Mutex<Locations>,
    names: Mutex<Names>,
    next_task: AtomicU64,
    next_idx: AtomicU32,
    site_cap: AtomicUsize,
    /// Distinct real spawn sites seen, including those folded into `other`.
    sites_seen: AtomicU64,
    other: OnceLock<&'static Site>,
    uninstrumented: OnceLock<&'static Site>,
    stacks: StackTable,
    chan_sites: ChanSites,
}

static REGISTRY: OnceLock<Registry> = OnceLock::new();

/// The process-wide registry.
pub(crate) fn registry() -> &'static Registry {
    REGISTRY.get_or_init(|| Registry {
        sites: RwLock::new(HashMap::new()),
        site_list: RwLock::new(Vec::new()),
        by_addr: RwLock::new(Vec::new()),
        locations: Mutex::new(Locations::default()),
        names: Mutex::new(Names::default()),
        next_task: AtomicU64::new(1),
        next_idx: AtomicU32::new(0),
        site_cap: AtomicUsize::new(DEFAULT_SITE_CAP),
        sites_seen: AtomicU64::new(0),
        other: OnceLock::new(),
        uninstrumented: OnceLock::new(),
        stacks: StackTable::new(),
        chan_sites: ChanSites::default(),
    })
}

thread_local! {
    /// Per-thread cache of spawn sites by `Location` address: spawn loops over a few
    /// sites never touch the shared map.
    static SITES: std::cell::RefCell<HashMap<usize, &'static Site, foldhash::fast::FixedState>> =
        std::cell::RefCell::new(HashMap::with_hasher(foldhash::fast::FixedState::default()));
    /// Per-thread cache of interned `#[track_caller]` locations, keyed by address.
    static LOC_IDS: std::cell::RefCell<HashMap<usize, LocId, foldhash::fast::FixedState>> =
        std::cell::RefCell::new(HashMap::with_hasher(foldhash::fast::FixedState::default()));
}

/// Entries of a per-thread cache before it is cleared.
const THREAD_CACHE_CAP: usize = 4096;

fn read<T>(l: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    l.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(l: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    l.write().unwrap_or_else(|p| p.into_inner())
}

impl Registry {
    pub fn set_site_cap(&self, cap: usize) {
        self.site_cap.store(cap.clamp(1, MAX_SITES - 2), Relaxed);
    }

    pub fn site_cap(&self) -> usize {
        self.site_cap.load(Relaxed)
    }

    pub fn sites_seen(&self) -> u64 {
        self.sites_seen.load(Relaxed)
    }

    pub fn next_task_id(&self) -> u64 {
        self.next_task.fetch_add(1, Relaxed)
    }

    /// The id the next task will get (every task alive now has a lower one).
    pub fn peek_task_id(&self) -> u64 {
        self.next_task.load(Relaxed)
    }

    /// Interns a location given by parts (pseudo sites use this with made-up files).
    pub fn intern_parts(&self, file: &'static str, line: u32, column: u32) -> LocId {
        let mut locs = lock(&self.locations);
        if let Some(id) = locs.ids.get(&(file, line, column)) {
            return *id;
        }
        let id = locs.defs.len() as LocId;
        locs.defs.push(wire::Location {
            file: file.to_string(),
            line,
            column,
        });
        locs.ids.insert((file, line, column), id);
        id
    }

    /// Interns a `#[track_caller]` location (channel sites, call sites).
    pub fn intern(&self, loc: &'static StdLocation<'static>) -> LocId {
        let (f, l, c) = key_of(loc);
        self.intern_parts(f, l, c)
    }

    /// Like [`Registry::intern`], through a per-thread cache: the global lock is taken only
    /// the first time a thread sees a location.
    pub fn intern_cached(&self, loc: &'static StdLocation<'static>) -> LocId {
        let ptr = loc as *const _ as usize;
        if let Ok(Some(id)) = LOC_IDS.try_with(|c| c.borrow().get(&ptr).copied()) {
            return id;
        }
        let id = self.intern(loc);
        let _ = LOC_IDS.try_with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= THREAD_CACHE_CAP {
                c.clear();
            }
            c.insert(ptr, id)
        });
        id
    }

    /// Interns a task name; None past [`MAX_NAMES`].
    pub fn intern_name(&self, name: &str) -> Option<NameId> {
        let mut names = lock(&self.names);
        if let Some(id) = names.ids.get(name) {
            return Some(*id);
        }
        if names.defs.len() >= MAX_NAMES {
            return None;
        }
        let id = names.defs.len() as NameId;
        names.defs.push(name.to_string());
        names.ids.insert(name.to_string(), id);
        Some(id)
    }

    /// The name of id `id`.
    pub fn name(&self, id: NameId) -> Option<String> {
        lock(&self.names).defs.get(id as usize).cloned()
    }

    /// Number of interned names (ids are `0..count`).
    pub fn name_count(&self) -> usize {
        lock(&self.names).defs.len()
    }

    /// Interned raw stacks.
    pub fn stacks(&self) -> &StackTable {
        &self.stacks
    }

    /// Channel creation sites.
    pub fn chan_sites(&self) -> &ChanSites {
        &self.chan_sites
    }

    /// The definition of an interned location.
    pub fn location(&self, id: LocId) -> Option<wire::Location> {
        lock(&self.locations).defs.get(id as usize).cloned()
    }

    /// Number of interned locations (ids are `0..count`).
    pub fn location_count(&self) -> usize {
        lock(&self.locations).defs.len()
    }

    fn add_site(&self, loc: LocId, kind: SiteKind) -> &'static Site {
        let idx = self.next_idx.fetch_add(1, Relaxed);
        let site: &'static Site = Box::leak(Box::new(Site::new(loc, kind, idx)));
        write(&self.site_list).push(site);
        let mut by_addr = write(&self.by_addr);
        let a = site as *const Site as usize;
        let at = by_addr.partition_point(|(x, _)| *x < a);
        by_addr.insert(at, (a, site));
        site
    }

    fn pseudo_site(
        &self,
        cell: &OnceLock<&'static Site>,
        name: &'static str,
        kind: SiteKind,
    ) -> &'static Site {
        cell.get_or_init(|| self.add_site(self.intern_parts(name, 0, 0), kind))
    }

    /// The row for waits in tasks not spawned through the agent.
    pub fn uninstrumented_site(&self) -> &'static Site {
        self.pseudo_site(
            &self.uninstrumented,
            "<uninstrumented task>",
            SiteKind::Uninstrumented,
        )
    }

    /// The spawn site for `loc`, created on first use; past the site cap, the shared
    /// "other sites" row.
    pub fn site(&self, loc: &'static StdLocation<'static>) -> &'static Site {
        self.site_of_kind(loc, SiteKind::Spawn)
    }

    /// [`Registry::site`] for a site of `kind` (`Spawn` or `Blocking`; a location has one
    /// kind, the one it was first used with).
    #[inline]
    pub fn site_of_kind(
        &self,
        loc: &'static StdLocation<'static>,
        kind: SiteKind,
    ) -> &'static Site {
        let ptr = loc as *const _ as usize;
        if let Ok(Some(site)) = SITES.try_with(|c| c.borrow().get(&ptr).copied()) {
            return site;
        }
        let site = self.site_slow(loc, kind);
        let _ = SITES.try_with(|c| {
            let mut c = c.borrow_mut();
            if c.len() >= THREAD_CACHE_CAP {
                c.clear();
            }
            c.insert(ptr, site)
        });
        site
    }

    /// The site already made for `key`, if any.
    fn known_site(&self, key: &LocKey) -> Option<&'static Site> {
        read(&self.sites).get(key).copied()
    }

    #[cold]
    #[inline(never)]
    fn site_slow(&self, loc: &'static StdLocation<'static>, kind: SiteKind) -> &'static Site {
        let key = key_of(loc);
        if let Some(site) = self.known_site(&key) {
            return site;
        }
        let mut sites = write(&self.sites);
        if let Some(site) = sites.get(&key) {
            return site;
        }
        if sites.len() >= self.site_cap() {
            drop(sites);
            // Count each folded location once.
            let mut locs = lock(&self.locations);
            if !locs.ids.contains_key(&key) {
                let id = locs.defs.len() as LocId;
                locs.defs.push(wire::Location {
                    file: key.0.to_string(),
                    line: key.1,
                    column: key.2,
                });
                locs.ids.insert(key, id);
                self.sites_seen.fetch_add(1, Relaxed);
            }
            drop(locs);
            return self.pseudo_site(&self.other, "<other sites>", SiteKind::Other);
        }
        let site = self.add_site(self.intern(loc), kind);
        sites.insert(key, site);
        self.sites_seen.fetch_add(1, Relaxed);
        site
    }

    /// The row that counts `loc`'s tasks if it has one already (its own, or the "other
    /// sites" row for a location folded past the cap); never creates one.
    #[allow(dead_code)] // runtime hooks (feature `tokio-hooks`)
    pub fn existing_site(&self, loc: &'static StdLocation<'static>) -> Option<&'static Site> {
        self.known_site(&key_of(loc))
            .or_else(|| self.other.get().cloned())
    }

    /// The site at address `addr` (a parent key), if it is one.
    pub fn site_at(&self, addr: usize) -> Option<&'static Site> {
        let by_addr = read(&self.by_addr);
        by_addr
            .binary_search_by_key(&addr, |(a, _)| *a)
            .ok()
            .map(|i| by_addr[i].1)
    }

    /// Every site, in creation order.
    pub fn sites(&self) -> Vec<&'static Site> {
        read(&self.site_list).clone()
    }

    /// The site whose row has location id `loc`.
    pub fn site_by_loc(&self, loc: LocId) -> Option<&'static Site> {
        read(&self.site_list).iter().find(|s| s.loc == loc).cloned()
    }

    /// Promotes every thread's pending fast waits into their groups.
    pub fn promote_all(&self) {
        blocked::promote_all();
    }

    /// Runs `f` on every live, polled task of `site` (oldest first per thread), under the
    /// lock of the shard holding it and of the site; stops when `f` returns false.
    pub fn for_each_task(&self, site: &Site, mut f: impl FnMut(&Record, &SiteInner) -> bool) {
        for s in shard::all() {
            let lists = lock(&s.lists);
            let Some(ends) = lists.ends.get(site.idx as usize) else {
                continue;
            };
            let inner = lock(&site.inner);
            let mut p = ends.head;
            // SAFETY: under the shard's list lock, linked records are alive.
            while let Some(r) = unsafe { p.as_ref() } {
                if !f(r, &inner) {
                    return;
                }
                p = r.next_in_list();
            }
        }
    }

    /// The oldest `limit` live tasks of the site with location `loc`, or the oldest
    /// waiters of one of its groups (longest waiting first). Waiters outside instrumented
    /// tasks have task id 0.
    pub fn tasks_v2(
        &self,
        loc: LocId,
        group: Option<&wire::WaitKey>,
        limit: usize,
    ) -> Vec<wire::TaskInfoV2> {
        let Some(site) = self.site_by_loc(loc) else {
            return Vec::new();
        };
        self.promote_all();
        if let Some(key) = group {
            let state = match key.op {
                wire::Op::Yield => wire::TaskState::Runnable,
                wire::Op::Uncaptured => wire::TaskState::Uncaptured,
                op if op.is_poll_scoped() => wire::TaskState::Waiting,
                _ => wire::TaskState::Blocked,
            };
            let mut waiters = Vec::new();
            let inner = lock(&site.inner);
            if let Some(gkey) = inner.blocked.find(key) {
                waiters.extend(inner.blocked.oldest(&gkey, limit));
            }
            drop(inner);
            for table in site.outside.iter() {
                let t = lock(table);
                if let Some(gkey) = t.find(key) {
                    waiters.extend(t.oldest(&gkey, limit));
                }
            }
            waiters.sort_by_key(|w| w.since_ms);
            waiters.truncate(limit);
            return waiters
                .into_iter()
                .map(|w| wire::TaskInfoV2 {
                    id: w.task_id,
                    spawned_ms: w.spawned_ms,
                    state,
                    since_ms: Some(w.since_ms),
                    wait: Some(key.clone()),
                    name: None,
                    parent: None,
                    handle: wire::HandleState::Held,
                })
                .collect();
        }
        let polling = shard::polling_records();
        let mut out = Vec::new();
        self.for_each_task(site, |r, inner| {
            out.push(r.info(inner, &polling));
            out.len() < limit.saturating_mul(4).max(limit)
        });
        out.sort_by_key(|t| (t.spawned_ms, t.id));
        out.truncate(limit);
        out
    }

    /// [`Registry::tasks_v2`] in protocol 1's terms.
    pub fn oldest_tasks(
        &self,
        loc: LocId,
        group: Option<&wire::GroupKey>,
        limit: usize,
    ) -> Vec<wire::TaskInfo> {
        let key = group.map(|g| {
            let kind = self
                .chan_sites
                .by_loc(g.channel_site)
                .map_or(wire::ChannelKind::Mpsc, |c| c.kind);
            wire::WaitKey::from_v1(g, kind)
        });
        self.tasks_v2(loc, key.as_ref(), limit)
            .into_iter()
            .map(|t| wire::TaskInfo {
                id: t.id,
                spawned_ms: t.spawned_ms,
                state: match t.state {
                    wire::TaskState::Running => wire::TaskState::Running,
                    wire::TaskState::Blocked => wire::TaskState::Blocked,
                    _ => wire::TaskState::Idle,
                },
                blocked_since_ms: t.since_ms.filter(|_| t.state == wire::TaskState::Blocked),
                group: t
                    .wait
                    .as_ref()
                    .filter(|_| t.state == wire::TaskState::Blocked)
                    .and_then(|w| w.to_v1()),
            })
            .collect()
    }

    /// A protocol-2 snapshot: every site's counters, tree and groups, every channel
    /// site's aggregates, the contended locks. O(sites × threads + groups + channel sites).
    pub fn snapshot_v2(&self, seq: u64) -> wire::SnapshotV2 {
        self.promote_all();
        let now = clock::now_ms();
        let shards = shard::all();
        let polling = shard::polling_sites();
        let mut sites = Vec::new();
        let mut groups = Vec::new();
        for site in self.sites() {
            let (st, mut g) = site.stats_v2(&shards, &polling, now);
            sites.push(st);
            groups.append(&mut g);
        }
        let channels = self.chan_sites.all().iter().map(|c| c.stats()).collect();
        wire::SnapshotV2 {
            seq,
            now_ms: now,
            sites,
            groups,
            channels,
            locks: self.lock_states(),
            sites_seen: self.sites_seen(),
        }
    }

    /// The contended locks, each holder's own wait filled in when it is not on a lock
    /// (found among the first [`HOLDER_WALK`] live tasks of its site).
    fn lock_states(&self) -> Vec<wire::LockState> {
        let mut locks = crate::sync::holders::lock_states();
        for h in locks.iter_mut().flat_map(|l| l.holders.iter_mut()) {
            if h.waits.is_some() || h.task == 0 {
                continue;
            }
            let Some(site) = h.site.and_then(|s| self.site_by_loc(s)) else {
                continue;
            };
            let mut seen = 0;
            self.for_each_task(site, |r, inner| {
                seen += 1;
                if r.id == h.task {
                    h.waits = crate::blocked::wait_of(inner, r).map(|(_, k)| k.to_wire(site.loc));
                    return false;
                }
                seen < HOLDER_WALK
            });
        }
        locks
    }

    /// A protocol-1 snapshot.
    #[allow(dead_code)] // tests
    pub fn snapshot(&self, seq: u64) -> wire::Snapshot {
        self.snapshot_v2(seq).to_v1()
    }
}
