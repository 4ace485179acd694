//! The task table: spawn sites, their counters, the live tasks of each site, interned
//! locations. Everything the hot path touches is an atomic or a short critical section of
//! one site's own mutex (sites are the shards).
//!
//! A snapshot walks the sites (O(sites)) and reads their counters; it never visits tasks.
//! Only an explicit task-list request walks one site's tasks.

use std::collections::HashMap;
use std::panic::Location as StdLocation;
use std::sync::atomic::{
    AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize, Ordering::Relaxed,
};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, RwLock};

use crate::blocked::{self, BlockedTable, FastSlot};
use crate::chan::ChanSites;
use crate::clock;
use crate::instrumented as task;
use crate::stack::StackTable;
use crate::wire::{self, GroupKey, LocId, SiteKind};

/// Default maximum number of distinct spawn sites.
pub const DEFAULT_SITE_CAP: usize = 10_000;

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

const NIL: u32 = u32::MAX;

/// The live tasks of one site, oldest first: a slab of slots linked into a list, so a
/// spawn appends and a completion unlinks in O(1), with no allocation once the slab has
/// grown to the site's peak (a tree keyed by task id cost ~40% of a spawn+join of a
/// trivial task: node searches, node allocations, rebalancing on removal of the oldest).
pub(crate) struct TaskList {
    slots: Vec<TaskSlot>,
    free: Vec<u32>,
    head: u32,
    tail: u32,
}

struct TaskSlot {
    /// None while the slot is free.
    cell: Option<Arc<TaskCell>>,
    prev: u32,
    next: u32,
}

impl Default for TaskList {
    fn default() -> Self {
        TaskList {
            slots: Vec::new(),
            free: Vec::new(),
            head: NIL,
            tail: NIL,
        }
    }
}

impl TaskList {
    /// Appends `cell` (the newest task) and returns its slot.
    fn push(&mut self, cell: Arc<TaskCell>) -> u32 {
        let slot = TaskSlot {
            cell: Some(cell),
            prev: self.tail,
            next: NIL,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as u32
            }
        };
        match self.slots.get_mut(self.tail as usize) {
            Some(t) => t.next = i,
            None => self.head = i,
        }
        self.tail = i;
        i
    }

    /// Unlinks the task in slot `i` if it is the task with id `id`.
    fn remove(&mut self, i: u32, id: u64) {
        let Some(slot) = self.slots.get_mut(i as usize) else {
            return;
        };
        if slot.cell.as_ref().map(|c| c.id) != Some(id) {
            return;
        }
        slot.cell = None;
        let (prev, next) = (slot.prev, slot.next);
        match self.slots.get_mut(prev as usize) {
            Some(p) => p.next = next,
            None => self.head = next,
        }
        match self.slots.get_mut(next as usize) {
            Some(n) => n.prev = prev,
            None => self.tail = prev,
        }
        self.free.push(i);
    }

    /// The oldest live task.
    pub fn first(&self) -> Option<&Arc<TaskCell>> {
        self.slots.get(self.head as usize)?.cell.as_ref()
    }

    /// Live tasks, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<TaskCell>> {
        let mut i = self.head;
        std::iter::from_fn(move || {
            let slot = self.slots.get(i as usize)?;
            i = slot.next;
            slot.cell.as_ref()
        })
    }
}

/// Per-site mutable state behind the site's own mutex.
#[derive(Default)]
pub(crate) struct SiteInner {
    /// Live tasks in spawn order.
    pub tasks: TaskList,
    /// Tasks of this site blocked on instrumented channels, grouped.
    pub blocked: BlockedTable,
    /// Tasks that began a fast wait since the last promotion (see `blocked`).
    pub candidates: Vec<Arc<TaskCell>>,
    /// Live plain-spawned tasks seen by tokio's runtime hooks (see `hooks`): tokio task id
    /// (ordered by spawn) -> (spawn time, test scope).
    #[cfg(all(feature = "tokio-hooks", tokio_unstable))]
    pub hooked: std::collections::BTreeMap<tokio::task::Id, (u64, u32)>,
}

/// One spawn site (or a pseudo site: uninstrumented / other).
pub(crate) struct Site {
    pub loc: LocId,
    pub kind: SiteKind,
    pub live: AtomicU64,
    pub blocked_send: AtomicU64,
    pub blocked_recv: AtomicU64,
    pub spawned: AtomicU64,
    pub completed: AtomicU64,
    pub inner: Mutex<SiteInner>,
}

impl Site {
    fn new(loc: LocId, kind: SiteKind) -> Site {
        Site {
            loc,
            kind,
            live: AtomicU64::new(0),
            blocked_send: AtomicU64::new(0),
            blocked_recv: AtomicU64::new(0),
            spawned: AtomicU64::new(0),
            completed: AtomicU64::new(0),
            inner: Mutex::new(SiteInner::default()),
        }
    }

    /// The counters as a history sample: atomics only, no lock.
    pub fn sample(&self) -> wire::Sample {
        let clamp = |v: u64| v.min(u32::MAX as u64) as u32;
        wire::Sample {
            live: clamp(self.live.load(Relaxed)),
            blocked_send: clamp(self.blocked_send.load(Relaxed)),
            blocked_recv: clamp(self.blocked_recv.load(Relaxed)),
            spawned: self.spawned.load(Relaxed),
            completed: self.completed.load(Relaxed),
        }
    }

    /// The counters and the blocked groups, read under one lock. O(groups + threads).
    #[allow(dead_code)] // feature `metrics`
    pub fn stats_and_groups(&self) -> (wire::SiteStats, Vec<wire::BlockedGroup>) {
        self.stats_and_groups_with(&task::polling_sites())
    }

    /// [`Site::stats_and_groups`] with the polling threads' sites read once for all
    /// sites ([`task::polling_sites`]).
    pub fn stats_and_groups_with(
        &self,
        polling: &[usize],
    ) -> (wire::SiteStats, Vec<wire::BlockedGroup>) {
        let inner = lock(&self.inner);
        let oldest = inner.tasks.first().map(|t| t.spawned_ms);
        #[cfg(all(feature = "tokio-hooks", tokio_unstable))]
        let oldest = match (oldest, inner.hooked.first_key_value()) {
            (Some(a), Some((_, (b, _)))) => Some(a.min(*b)),
            (a, b) => a.or(b.map(|(_, (t, _))| *t)),
        };
        let groups = inner.blocked.groups();
        drop(inner);
        (
            self.stats_with(oldest, task::running_at(polling, self)),
            groups,
        )
    }

    fn stats_with(&self, oldest_live_ms: Option<u64>, running: u64) -> wire::SiteStats {
        wire::SiteStats {
            site: self.loc,
            kind: Some(self.kind),
            live: self.live.load(Relaxed),
            running,
            blocked_send: self.blocked_send.load(Relaxed),
            blocked_recv: self.blocked_recv.load(Relaxed),
            spawned: self.spawned.load(Relaxed),
            completed: self.completed.load(Relaxed),
            oldest_live_ms,
        }
    }
}

/// `TaskCell::state`: not blocked on an instrumented channel (running or idle: whether a
/// thread is polling it is read from the poll slots, see `task::is_polled`)...
pub(crate) const STATE_IDLE: u8 = 0;
/// ... or blocked on one (registered in its site's blocked table).
pub(crate) const STATE_BLOCKED: u8 = 2;

/// One live instrumented task.
pub(crate) struct TaskCell {
    pub id: u64,
    pub site: &'static Site,
    pub spawned_ms: u64,
    pub state: AtomicU8,
    /// Channel waits this task is registered in (several under select!/join!); written
    /// under the site's mutex.
    pub blocked_regs: AtomicU32,
    /// Whether the first of those waits is send-like (decides the site counter).
    pub blocked_is_send: AtomicBool,
    /// Waiter slot + 1 of that first wait in the site's blocked table (0: none known).
    pub blocked_slot: AtomicU32,
    /// The task's own record of its current channel wait.
    pub fast: FastSlot,
    /// Its slot in the site's task list (written and read under the site's mutex).
    list_slot: AtomicU32,
    /// The `testing` scope the task belongs to (0: none), inherited from its spawner.
    pub scope: AtomicU32,
    /// StackId + 1 of the stack at spawn, captured only for tasks in a `testing` scope.
    pub spawn_stack: AtomicU32,
}

impl TaskCell {
    pub fn info(&self) -> wire::TaskInfo {
        let state = match self.state.load(Relaxed) {
            STATE_BLOCKED => wire::TaskState::Blocked,
            _ if task::is_polled(self) => wire::TaskState::Running,
            _ => wire::TaskState::Idle,
        };
        wire::TaskInfo {
            id: self.id,
            spawned_ms: self.spawned_ms,
            state,
            blocked_since_ms: None,
            group: None,
        }
    }
}

pub(crate) struct Registry {
    /// Sites are leaked: they live as long as the process (their number is capped), so a
    /// task refers to its site as `&'static` and a spawn or completion never touches a
    /// reference count shared by every task of the site.
    sites: RwLock<HashMap<LocKey, &'static Site>>,
    /// All sites in creation order (pseudo sites included), for snapshots.
    site_list: RwLock<Vec<&'static Site>>,
    locations: Mutex<Locations>,
    next_task: AtomicU64,
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
        locations: Mutex::new(Locations::default()),
        next_task: AtomicU64::new(1),
        site_cap: AtomicUsize::new(DEFAULT_SITE_CAP),
        sites_seen: AtomicU64::new(0),
        other: OnceLock::new(),
        uninstrumented: OnceLock::new(),
        stacks: StackTable::new(),
        chan_sites: ChanSites::default(),
    })
}

thread_local! {
    /// One-entry cache of the last spawn site used on this thread: spawn loops hit it.
    static LAST_SITE: std::cell::Cell<(usize, Option<&'static Site>)> =
        const { std::cell::Cell::new((0, None)) };
    /// Per-thread cache of interned `#[track_caller]` locations, keyed by address.
    static LOC_IDS: std::cell::RefCell<HashMap<usize, LocId, foldhash::fast::FixedState>> =
        std::cell::RefCell::new(HashMap::with_hasher(foldhash::fast::FixedState::default()));
}

impl Registry {
    pub fn set_site_cap(&self, cap: usize) {
        self.site_cap.store(cap.max(1), Relaxed);
    }

    pub fn site_cap(&self) -> usize {
        self.site_cap.load(Relaxed)
    }

    pub fn sites_seen(&self) -> u64 {
        self.sites_seen.load(Relaxed)
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
        let _ = LOC_IDS.try_with(|c| c.borrow_mut().insert(ptr, id));
        id
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

    fn pseudo_site(
        &self,
        cell: &OnceLock<&'static Site>,
        name: &'static str,
        kind: SiteKind,
    ) -> &'static Site {
        cell.get_or_init(|| {
            let site: &'static Site =
                Box::leak(Box::new(Site::new(self.intern_parts(name, 0, 0), kind)));
            self.site_list
                .write()
                .unwrap_or_else(|p| p.into_inner())
                .push(site);
            site
        })
    }

    /// The row for channel operations in tasks not spawned through the agent.
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
    pub fn site_of_kind(
        &self,
        loc: &'static StdLocation<'static>,
        kind: SiteKind,
    ) -> &'static Site {
        let ptr = loc as *const _ as usize;
        if let (p, Some(site)) = LAST_SITE.with(|c| c.get()) {
            if p == ptr {
                return site;
            }
        }
        let site = self.site_slow(loc, kind);
        LAST_SITE.with(|c| c.set((ptr, Some(site))));
        site
    }

    /// The site already made for `key`, if any.
    fn known_site(&self, key: &LocKey) -> Option<&'static Site> {
        self.sites
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(key)
            .copied()
    }

    fn site_slow(&self, loc: &'static StdLocation<'static>, kind: SiteKind) -> &'static Site {
        let key = key_of(loc);
        if let Some(site) = self.known_site(&key) {
            return site;
        }
        let mut sites = self.sites.write().unwrap_or_else(|p| p.into_inner());
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
        let site: &'static Site = Box::leak(Box::new(Site::new(self.intern(loc), kind)));
        sites.insert(key, site);
        self.sites_seen.fetch_add(1, Relaxed);
        self.site_list
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(site);
        site
    }

    /// The row that counts `loc`'s tasks if it has one already (its own, or the "other
    /// sites" row for a location folded past the cap); never creates one.
    #[allow(dead_code)] // runtime hooks (feature `tokio-hooks`)
    pub fn existing_site(&self, loc: &'static StdLocation<'static>) -> Option<&'static Site> {
        self.known_site(&key_of(loc))
            .or_else(|| self.other.get().cloned())
    }

    /// Every site, in creation order.
    pub fn sites(&self) -> Vec<&'static Site> {
        self.site_list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The site whose row has location id `loc`.
    pub fn site_by_loc(&self, loc: LocId) -> Option<&'static Site> {
        self.site_list
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .find(|s| s.loc == loc)
            .cloned()
    }

    /// Registers a newly spawned task of `site`.
    pub fn new_task(&self, site: &'static Site) -> Arc<TaskCell> {
        let id = self.next_task.fetch_add(1, Relaxed);
        let scope = crate::testing::inherited_scope();
        let spawn_stack = if scope != 0 {
            crate::testing::spawn_stack()
        } else {
            0
        };
        let cell = Arc::new(TaskCell {
            id,
            site,
            // The agent thread's cached clock (<= ~100 ms old) is enough for ages shown in
            // seconds, and a load instead of a clock read on every spawn.
            spawned_ms: clock::cached_now_ms(),
            state: AtomicU8::new(STATE_IDLE),
            blocked_regs: AtomicU32::new(0),
            blocked_is_send: AtomicBool::new(false),
            blocked_slot: AtomicU32::new(0),
            fast: FastSlot::new(id << 28),
            list_slot: AtomicU32::new(NIL),
            scope: AtomicU32::new(scope),
            spawn_stack: AtomicU32::new(spawn_stack),
        });
        site.spawned.fetch_add(1, Relaxed);
        site.live.fetch_add(1, Relaxed);
        let mut inner = lock(&site.inner);
        let slot = inner.tasks.push(cell.clone());
        cell.list_slot.store(slot, Relaxed);
        drop(inner);
        cell
    }

    /// The task's future completed, panicked or was dropped.
    pub fn task_done(&self, cell: &TaskCell) {
        let site = &cell.site;
        let mut inner = lock(&site.inner);
        inner.tasks.remove(cell.list_slot.load(Relaxed), cell.id);
        blocked::task_done_locked(&mut inner, site, cell);
        drop(inner);
        site.live.fetch_sub(1, Relaxed);
        site.completed.fetch_add(1, Relaxed);
    }

    /// The oldest `limit` live tasks of the site with location `loc`, or the oldest
    /// waiters of one of its blocked groups (longest blocked first). Waiters outside
    /// instrumented tasks have task id 0.
    pub fn oldest_tasks(
        &self,
        loc: LocId,
        group: Option<&GroupKey>,
        limit: usize,
    ) -> Vec<wire::TaskInfo> {
        let Some(site) = self.site_by_loc(loc) else {
            return Vec::new();
        };
        blocked::promote(site);
        let inner = lock(&site.inner);
        if let Some(key) = group {
            return inner
                .blocked
                .oldest(key, limit)
                .into_iter()
                .map(|w| wire::TaskInfo {
                    id: w.task_id,
                    spawned_ms: w.spawned_ms,
                    state: wire::TaskState::Blocked,
                    blocked_since_ms: Some(w.since_ms),
                    group: Some(key.clone()),
                })
                .collect();
        }
        inner
            .tasks
            .iter()
            .take(limit)
            .map(|c| {
                let mut info = c.info();
                let slot = c.blocked_slot.load(Relaxed);
                if let Some((since, key)) =
                    slot.checked_sub(1).and_then(|w| inner.blocked.waiter(w))
                {
                    info.state = wire::TaskState::Blocked;
                    info.blocked_since_ms = Some(since);
                    info.group = Some(key);
                }
                info
            })
            .collect()
    }

    /// Promotes every site's pending fast waits into their groups.
    pub fn promote_all(&self) {
        for site in self.sites() {
            blocked::promote(site);
        }
    }

    /// A snapshot: every site's counters and blocked groups, every channel site's
    /// aggregates. O(sites + groups + channel sites), never O(tasks).
    pub fn snapshot(&self, seq: u64) -> wire::Snapshot {
        let mut sites = Vec::new();
        let mut groups = Vec::new();
        let polling = task::polling_sites();
        for site in self.sites() {
            blocked::promote(site);
            let (st, mut g) = site.stats_and_groups_with(&polling);
            sites.push(st);
            groups.append(&mut g);
        }
        let channels = self.chan_sites.all().iter().map(|c| c.stats()).collect();
        wire::Snapshot {
            seq,
            now_ms: clock::now_ms(),
            sites,
            groups,
            channels,
            sites_seen: self.sites_seen(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(site: &'static Site, id: u64) -> Arc<TaskCell> {
        Arc::new(TaskCell {
            id,
            site,
            spawned_ms: id,
            state: AtomicU8::new(STATE_IDLE),
            blocked_regs: AtomicU32::new(0),
            blocked_is_send: AtomicBool::new(false),
            blocked_slot: AtomicU32::new(0),
            fast: FastSlot::new(id << 28),
            list_slot: AtomicU32::new(NIL),
            scope: AtomicU32::new(0),
            spawn_stack: AtomicU32::new(0),
        })
    }

    /// An `Arc<TaskCell>` of at most 120 bytes is a 128-byte chunk for glibc, the largest
    /// that its fast bins take: a burst of spawns then completions (more than the 7 of
    /// the thread cache) costs ~100 instructions per task there, ~470 in the small bins
    /// (measured with callgrind on the spawn-storm benchmark, scripts/bench.sh overhead).
    #[test]
    #[cfg(target_pointer_width = "64")]
    fn task_cell_stays_within_glibc_fast_bins() {
        assert!(
            std::mem::size_of::<TaskCell>() + 16 <= 120,
            "TaskCell is {} bytes",
            std::mem::size_of::<TaskCell>()
        );
    }

    #[test]
    fn task_list_keeps_spawn_order_and_reuses_slots() {
        let site: &'static Site = Box::leak(Box::new(Site::new(0, SiteKind::Spawn)));
        let mut list = TaskList::default();
        let ids = |l: &TaskList| l.iter().map(|c| c.id).collect::<Vec<_>>();
        let slots: Vec<u32> = (1..=4).map(|id| list.push(cell(site, id))).collect();
        assert_eq!(ids(&list), [1, 2, 3, 4]);
        list.remove(slots[1], 2); // middle
        list.remove(slots[0], 1); // oldest
        assert_eq!(list.first().map(|c| c.spawned_ms), Some(3));
        list.remove(slots[3], 4); // newest
        assert_eq!(ids(&list), [3]);
        // A stale slot (or a slot now holding another task) is left alone.
        list.remove(slots[3], 4);
        let reused = list.push(cell(site, 5));
        assert!(slots.contains(&reused), "slot {reused} not reused");
        list.remove(reused, 99);
        assert_eq!(ids(&list), [3, 5]);
        list.remove(slots[2], 3);
        list.remove(reused, 5);
        assert_eq!(ids(&list), Vec::<u64>::new());
        assert!(list.first().is_none());
        assert_eq!(list.slots.len(), 4, "no growth past the peak");
    }
}
