//! Who holds each instrumented lock (`Mutex`, `RwLock`, `Semaphore` permits) and which
//! locks tasks wait on: what [`lock_states`] reports as protocol 2's
//! `SnapshotV2::locks`, where a wait cycle (a deadlock) shows as holders that wait on each
//! other's locks.
//!
//! # Cost
//!
//! Every lock owns a [`LockShared`] record (allocated with the lock; for the `const fn`
//! constructors on its first use), with up to `N` holder slots. Taking the lock writes the
//! holder into a slot: the task's id and spawn site (read from the current-task
//! thread-local), the `#[track_caller]` location of `lock()`/`read()`/`acquire()` and the
//! agent's cached clock; a `Mutex` does that with plain relaxed stores into its single
//! slot, a shared lock (readers, permits) claims a free slot with one compare-and-swap.
//! Dropping the guard is one store. Nothing global is touched while a lock is uncontended.
//!
//! Only a wait (a lock future that returns Pending) enters shared tables: the lock joins
//! the *contended* set and the waiting task's entry says which lock it waits on. Both are
//! sharded maps under short mutexes, touched once when a wait begins and once when it
//! ends. [`lock_states`] therefore costs O(contended locks), never O(tasks or locks).
//!
//! # What is approximate
//!
//! Holder fields are read without stopping the host: a lock changing hands while a
//! snapshot reads it may show fields of two successive holders. A shared lock with more
//! holders than slots shows the first ones that found a free slot (the oldest, mostly) and
//! counts the rest in `holders_total`.

use std::collections::BTreeMap;
use std::panic::Location;
use std::sync::atomic::Ordering::{Acquire, Relaxed, Release};
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex, OnceLock};

use crate::chan::ChanMeta;
use crate::clock;
use crate::registry::{lock, registry};
use crate::wire::{self, ChannelKind, LocId, Op};

type Caller = &'static Location<'static>;

/// Holder slots of a shared lock (readers, semaphore permits).
pub(crate) const SHARED_SLOTS: usize = 4;

/// One holder: who, where, since when. `permits` is 0 while the slot is free.
pub(crate) struct HolderSlot {
    permits: AtomicU64,
    task: AtomicU64,
    /// Spawn site `LocId + 1` of the holding task (0: none).
    site: AtomicU32,
    /// `&'static Location` of the acquiring call, as an address (0: unknown).
    acquired_at: AtomicUsize,
    since: AtomicU64,
}

impl HolderSlot {
    const fn new() -> HolderSlot {
        HolderSlot {
            permits: AtomicU64::new(0),
            task: AtomicU64::new(0),
            site: AtomicU32::new(0),
            acquired_at: AtomicUsize::new(0),
            since: AtomicU64::new(0),
        }
    }

    /// Writes who holds (the slot is already claimed or exclusive).
    #[inline]
    fn fill(&self, who: Who, at: Caller) {
        self.task.store(who.task, Relaxed);
        self.site.store(who.site, Relaxed);
        self.acquired_at
            .store(at as *const Location<'static> as usize, Relaxed);
        self.since.store(clock::cached_now_ms(), Relaxed);
    }

    fn holder(&self) -> Option<(wire::Holder, u64)> {
        let permits = self.permits.load(Acquire);
        if permits == 0 {
            return None;
        }
        let at = self.acquired_at.load(Relaxed);
        let acquired_at = if at == 0 {
            0
        } else {
            // SAFETY: `acquired_at` only ever holds 0 or the address of a
            // `&'static Location<'static>` (see `fill`).
            registry().intern_cached(unsafe { &*(at as *const Location<'static>) })
        };
        Some((
            wire::Holder {
                task: self.task.load(Relaxed),
                site: self.site.load(Relaxed).checked_sub(1),
                acquired_at,
                since_ms: self.since.load(Relaxed),
                waits: None,
                waits_on_lock: None,
            },
            permits,
        ))
    }
}

/// The task taking a lock: its id (0 outside instrumented tasks) and spawn site + 1.
#[derive(Clone, Copy)]
struct Who {
    task: u64,
    site: u32,
}

#[inline]
fn who() -> Who {
    crate::instrumented::with_current(|c| match c {
        Some(c) => Who {
            task: c.id,
            site: c.site.loc + 1,
        },
        None => Who { task: 0, site: 0 },
    })
}

/// The shared record of one lock: its resource identity (a [`ChanMeta`] of the lock's
/// kind) and its holders. `N` is 1 for exclusive locks.
pub(crate) struct LockShared<const N: usize> {
    pub meta: Arc<ChanMeta>,
    slots: [HolderSlot; N],
    /// Holders that found every slot taken (their permits).
    overflow: AtomicU64,
    /// Lock futures of this lock that are waiting (changed under the contended shard's
    /// lock).
    waiters: AtomicU64,
}

impl<const N: usize> LockShared<N> {
    fn new(kind: ChannelKind, capacity: Option<u64>, loc: Caller) -> Arc<Self> {
        Arc::new(LockShared {
            meta: ChanMeta::new(kind, capacity, loc),
            slots: [const { HolderSlot::new() }; N],
            overflow: AtomicU64::new(0),
            waiters: AtomicU64::new(0),
        })
    }

    /// Records the caller's task as the holder of `permits` (an exclusive lock: slot 0,
    /// free by construction).
    #[inline]
    pub fn hold_exclusive(&self, at: Caller) -> Hold<'_> {
        let slot = &self.slots[0];
        slot.fill(who(), at);
        slot.permits.store(1, Release);
        Hold::Slot(slot)
    }

    /// Records the caller's task as one more holder of `permits` (a shared lock).
    #[inline]
    pub fn hold_shared(&self, permits: u64, at: Caller) -> Hold<'_> {
        if permits == 0 {
            return Hold::Overflow(&self.overflow, 0);
        }
        for slot in &self.slots {
            if slot.permits.load(Relaxed) == 0
                && slot
                    .permits
                    .compare_exchange(0, permits, Acquire, Relaxed)
                    .is_ok()
            {
                slot.fill(who(), at);
                return Hold::Slot(slot);
            }
        }
        self.overflow.fetch_add(permits, Relaxed);
        Hold::Overflow(&self.overflow, permits)
    }

    fn state(&self, waits: &dyn Fn(u64) -> Option<TaskWait>) -> wire::LockState {
        let mut holders = Vec::new();
        let mut total = self.overflow.load(Relaxed);
        for slot in &self.slots {
            if let Some((mut h, permits)) = slot.holder() {
                total += permits;
                if h.task != 0 {
                    if let Some(w) = waits(h.task) {
                        h.waits_on_lock = Some(w.lock);
                        h.waits = Some(w.key(h.site));
                    }
                }
                holders.push(h);
            }
        }
        holders.sort_by_key(|h| h.since_ms);
        wire::LockState {
            id: self.meta.id,
            kind: self.meta.kind,
            site: self.meta.site.loc,
            holders,
            holders_total: total,
            waiters: self.waiters.load(Relaxed),
        }
    }
}

/// A guard's hold on its lock: cleared on drop (before the guard releases the lock, so
/// that the next holder's record is never wiped by the previous one's).
pub(crate) enum Hold<'a> {
    Slot(&'a HolderSlot),
    /// Every slot was taken: counted in the lock's overflow (permits).
    Overflow(&'a AtomicU64, u64),
}

impl Hold<'_> {
    /// Permits merged into (or split off) this hold: `n` more (or fewer) permits.
    pub fn add(&mut self, n: u64) {
        match self {
            Hold::Slot(s) => {
                s.permits.fetch_add(n, Relaxed);
            }
            Hold::Overflow(o, p) => {
                o.fetch_add(n, Relaxed);
                *p += n;
            }
        }
    }

    pub fn sub(&mut self, n: u64) {
        match self {
            Hold::Slot(s) => {
                // Never to 0 (that frees the slot): a permit split down to nothing still
                // holds its slot until dropped.
                let cur = s.permits.load(Relaxed);
                s.permits.store(cur.saturating_sub(n).max(1), Relaxed);
            }
            Hold::Overflow(o, p) => {
                let n = n.min(*p);
                o.fetch_sub(n, Relaxed);
                *p -= n;
            }
        }
    }
}

impl Drop for Hold<'_> {
    #[inline]
    fn drop(&mut self) {
        match self {
            Hold::Slot(s) => s.permits.store(0, Release),
            Hold::Overflow(o, p) => {
                o.fetch_sub(*p, Relaxed);
            }
        }
    }
}

impl std::fmt::Debug for Hold<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Hold")
    }
}

/// A lock's record, created with the lock or, for the `const fn` constructors (which
/// cannot allocate), on first use: the creation site is known at compile time either way.
pub(crate) struct LockCell<const N: usize> {
    loc: Caller,
    kind: ChannelKind,
    capacity: Option<u64>,
    shared: OnceLock<Arc<LockShared<N>>>,
}

impl<const N: usize> LockCell<N> {
    /// A record created now.
    pub fn new(kind: ChannelKind, capacity: Option<u64>, loc: Caller) -> Self {
        let cell = Self::lazy(kind, capacity, loc);
        let _ = cell.shared.set(LockShared::new(kind, capacity, loc));
        cell
    }

    /// A record created on first use.
    pub const fn lazy(kind: ChannelKind, capacity: Option<u64>, loc: Caller) -> Self {
        LockCell {
            loc,
            kind,
            capacity,
            shared: OnceLock::new(),
        }
    }

    #[inline]
    pub fn get(&self) -> &Arc<LockShared<N>> {
        self.shared
            .get_or_init(|| LockShared::new(self.kind, self.capacity, self.loc))
    }
}

impl<const N: usize> std::fmt::Debug for LockCell<N> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockCell")
            .field("created_at", &self.loc)
            .finish()
    }
}

// ---------------------------------------------------------------------------------------
// Contended locks and the tasks waiting on them

/// What `lock_states` needs of a lock, whatever its number of slots.
trait LockView: Send + Sync {
    fn state(&self, waits: &dyn Fn(u64) -> Option<TaskWait>) -> wire::LockState;
    fn waiters(&self) -> &AtomicU64;
}

impl<const N: usize> LockView for LockShared<N> {
    fn state(&self, waits: &dyn Fn(u64) -> Option<TaskWait>) -> wire::LockState {
        LockShared::state(self, waits)
    }
    fn waiters(&self) -> &AtomicU64 {
        &self.waiters
    }
}

/// Which lock a task waits on, and how.
#[derive(Clone, Copy)]
struct TaskWait {
    lock: u64,
    op: Op,
    kind: ChannelKind,
    lock_site: LocId,
    call: Caller,
}

impl TaskWait {
    fn key(&self, site: Option<LocId>) -> wire::WaitKey {
        wire::WaitKey {
            site: site.unwrap_or(0),
            op: self.op,
            resource: Some(wire::Resource {
                kind: self.kind,
                site: self.lock_site,
            }),
            call_site: Some(registry().intern_cached(self.call)),
            stacks: Vec::new(),
        }
    }
}

const SHARDS: usize = 16;

type Contended = BTreeMap<u64, Arc<dyn LockView>>;

/// Locks with waiters, by id, sharded by id.
static CONTENDED: [Mutex<Contended>; SHARDS] = [const { Mutex::new(BTreeMap::new()) }; SHARDS];
/// Tasks waiting on a lock, by task id, sharded by task id.
static WAITING: [Mutex<BTreeMap<u64, TaskWait>>; SHARDS] =
    [const { Mutex::new(BTreeMap::new()) }; SHARDS];

fn shard(id: u64) -> usize {
    (id as usize) % SHARDS
}

/// The registration of one waiting lock future: the lock is in the contended set and the
/// task (if any) in the waiting map while it is held. Inert until [`LockWait::begin`].
#[derive(Default)]
pub(crate) struct LockWait {
    reg: Option<Box<Registered>>,
}

struct Registered {
    lock: Arc<dyn LockView>,
    id: u64,
    task: u64,
}

impl LockWait {
    pub const fn new() -> LockWait {
        LockWait { reg: None }
    }

    /// The future returned Pending: the lock has one more waiter, the current task waits
    /// on it. Later calls are no-ops until [`LockWait::end`].
    #[inline]
    pub fn begin<const N: usize>(&mut self, shared: &Arc<LockShared<N>>, op: Op, call: Caller) {
        if self.reg.is_none() {
            self.begin_slow(shared, op, call);
        }
    }

    #[cold]
    #[inline(never)]
    fn begin_slow<const N: usize>(&mut self, shared: &Arc<LockShared<N>>, op: Op, call: Caller) {
        let id = shared.meta.id;
        {
            let mut locks = lock(&CONTENDED[shard(id)]);
            if shared.waiters.fetch_add(1, Relaxed) == 0 {
                locks.insert(id, shared.clone());
            }
        }
        let task = who().task;
        if task != 0 {
            lock(&WAITING[shard(task)]).insert(
                task,
                TaskWait {
                    lock: id,
                    op,
                    kind: shared.meta.kind,
                    lock_site: shared.meta.site.loc,
                    call,
                },
            );
        }
        self.reg = Some(Box::new(Registered {
            lock: shared.clone(),
            id,
            task,
        }));
    }

    /// The wait is over (acquired, cancelled or dropped).
    #[inline]
    pub fn end(&mut self) {
        if let Some(r) = self.reg.take() {
            end_slow(r);
        }
    }
}

#[cold]
#[inline(never)]
fn end_slow(r: Box<Registered>) {
    if r.task != 0 {
        let mut w = lock(&WAITING[shard(r.task)]);
        if w.get(&r.task).is_some_and(|t| t.lock == r.id) {
            w.remove(&r.task);
        }
    }
    let mut locks = lock(&CONTENDED[shard(r.id)]);
    if r.lock.waiters().fetch_sub(1, Relaxed) == 1 {
        locks.remove(&r.id);
    }
    drop(locks);
    drop(r);
}

impl Drop for LockWait {
    #[inline]
    fn drop(&mut self) {
        self.end();
    }
}

impl std::fmt::Debug for LockWait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LockWait")
            .field("waiting", &self.reg.is_some())
            .finish()
    }
}

/// The locks and semaphores that have waiters now, with their holders and what those
/// holders wait on (when that is another instrumented lock: `waits_on_lock`, the edge a
/// wait cycle is found through). Ordered by lock id. O(contended locks).
pub(crate) fn lock_states() -> Vec<wire::LockState> {
    let locks: Vec<Arc<dyn LockView>> = CONTENDED
        .iter()
        .flat_map(|s| lock(s).values().cloned().collect::<Vec<_>>())
        .collect();
    let waits = |task: u64| lock(&WAITING[shard(task)]).get(&task).copied();
    let mut out: Vec<wire::LockState> = locks.iter().map(|l| l.state(&waits)).collect();
    out.retain(|l| l.waiters > 0);
    out.sort_by_key(|l| l.id);
    out
}
