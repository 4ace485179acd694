//! Who waits where: the wait groups of one spawn site, and the registration a wait holds
//! while its task waits.
//!
//! Every wait of an instrumented task is written into one of the task's own
//! [`FastSlot`]s (inline in its record, plus up to [`EXTRA_SLOTS`] more allocated the first
//! time the task waits in several places at once, as under `select!`): a few relaxed
//! stores and one atomic swap on the task's own memory, no lock, no allocation. Its end is
//! one compare-and-swap. The task also enlists itself on its thread's candidate list, at
//! most once per look of the agent. Whoever looks (a snapshot, a task list, the history
//! sampler) first *promotes* the candidates still waiting into their site's groups, under
//! the site's lock: slots are linked into their group's list in place (no allocation), so
//! every observation sees every wait pending at that moment, exactly, while a wait that
//! ends before anyone looks never touches shared state.
//!
//! Waits are of three kinds:
//! - instrumented operations (`leaktop_agent::sync` channels, locks, cells, handles):
//!   future-scoped, registered by their future's [`Wait`] until it completes or is dropped;
//! - uninstrumented waits ([`Op::Wait`], [`Op::Pending`]): poll-scoped, recorded by the
//!   task wrapper after a poll that returned Pending with nothing instrumented pending,
//!   from what the sampling waker saw (see `capture`), and ended when the task is polled
//!   again;
//! - states rather than waits ([`Op::Yield`]: the task woke itself; [`Op::Uncaptured`]:
//!   no sampled poll saw where it waits), recorded the same way so they are counted
//!   exactly.
//!
//! Waits outside instrumented tasks, and a task's waits past its slots, register directly
//! under the site's lock ("slow" registrations, boxed).

use std::cell::UnsafeCell;
use std::collections::HashMap;
use std::panic::Location as StdLocation;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};
use std::sync::Arc;
use std::task::Poll;

use foldhash::fast::FixedState;

use crate::chan::{ChanMeta, ChanRef, ChanSite};
use crate::clock;
use crate::instrumented::{self, Record};
use crate::registry::{lock, registry, Site, SiteInner};
use crate::shard;
use crate::stack::RESAMPLE_MS;
use crate::wire::{self, ChannelKind, LocId, Op, Resource, StackId};

/// Slots a task gets beyond its first, on its first concurrent wait.
pub(crate) const EXTRA_SLOTS: usize = 3;

const S_NONE: u64 = 0;
const S_PENDING: u64 = 1;
const S_PROMOTED: u64 = 2;
/// Candidates of one thread beyond this many are promoted by that thread itself, so the
/// list stays bounded when no agent thread looks.
const MAX_CANDIDATES: usize = 4096;

// ---------------------------------------------------------------------------------------
// Keys

/// A group's identity inside its site (the site is the table's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) struct GKey {
    pub op: Op,
    pub chan: Option<(ChannelKind, LocId)>,
    pub call: Option<LocId>,
    /// Instrumented waits: StackId + 1 of the await chain (0: none). Uninstrumented
    /// waits: a wait key (see `capture::WaitKeys`).
    pub key: u32,
}

impl GKey {
    /// The wire key of this group of `site`.
    pub fn to_wire(self, site: LocId) -> wire::WaitKey {
        let stacks = if self.op.is_channel() || self.op.is_sync() {
            self.key.checked_sub(1).into_iter().collect()
        } else {
            crate::capture::stacks_of(self.key)
        };
        wire::WaitKey {
            site,
            op: self.op,
            resource: self.chan.map(|(kind, site)| Resource { kind, site }),
            call_site: self.call,
            stacks,
        }
    }
}

/// The counter a task is counted under while it waits with `op`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum Class {
    Send = 1,
    Recv = 2,
    Sync = 3,
    Waiting = 4,
    Runnable = 5,
    Uncaptured = 6,
}

impl Class {
    pub fn of(op: Op) -> Class {
        match op {
            Op::Send | Op::Reserve => Class::Send,
            Op::Wait | Op::Pending => Class::Waiting,
            Op::Yield => Class::Runnable,
            Op::Uncaptured => Class::Uncaptured,
            op if op.is_sync() => Class::Sync,
            _ => Class::Recv,
        }
    }
    fn from_u8(v: u8) -> Option<Class> {
        Some(match v {
            1 => Class::Send,
            2 => Class::Recv,
            3 => Class::Sync,
            4 => Class::Waiting,
            5 => Class::Runnable,
            6 => Class::Uncaptured,
            _ => return None,
        })
    }
    fn counter(self, site: &Site) -> &AtomicU64 {
        match self {
            Class::Send => &site.blocked_send,
            Class::Recv => &site.blocked_recv,
            Class::Sync => &site.blocked_sync,
            Class::Waiting => &site.waiting,
            Class::Runnable => &site.runnable,
            Class::Uncaptured => &site.uncaptured,
        }
    }
}

pub(crate) fn op_code(op: Op) -> u8 {
    OPS.iter().position(|o| *o == op).unwrap_or(0) as u8
}

pub(crate) fn op_of(code: u8) -> Op {
    OPS.get(code as usize).copied().unwrap_or(Op::Other)
}

const OPS: [Op; 18] = [
    Op::Other,
    Op::Send,
    Op::Reserve,
    Op::Recv,
    Op::Changed,
    Op::Closed,
    Op::Lock,
    Op::Read,
    Op::Write,
    Op::Acquire,
    Op::Notified,
    Op::BarrierWait,
    Op::Init,
    Op::Join,
    Op::Wait,
    Op::Pending,
    Op::Yield,
    Op::Uncaptured,
];

// ---------------------------------------------------------------------------------------
// Slots

/// Links of a slot in its group's list (under the site lock).
struct Node {
    prev: *const FastSlot,
    next: *const FastSlot,
}

/// One wait record. Written by its task while it polls (or, for a slow registration, once
/// under the site lock), read by the promoter. `word` is `generation << 2 | state`; a new
/// wait bumps the generation, so a promoter that read a stale record fails its
/// compare-and-swap and drops what it read. Every field the promoter reads is atomic, so a
/// racing read sees some value each field once held, never a torn one.
pub(crate) struct FastSlot {
    word: AtomicU64,
    op: AtomicU8,
    /// The wait's place was not captured in this poll (assumed from an earlier one).
    assumed: AtomicBool,
    /// `&'static ChanSite` as an address (0: not an instrumented resource).
    chan_site: AtomicUsize,
    chan_id: AtomicU64,
    /// `&'static Location` of the instrumented call (0: none).
    call: AtomicUsize,
    /// See [`GKey::key`].
    key: AtomicU32,
    /// When `key` was captured (instrumented waits; agent ms, truncated): with `call` it is
    /// the slot's one-entry stack cache.
    key_at: AtomicU32,
    since: AtomicU64,
    /// The record this slot belongs to (null: a wait outside instrumented tasks).
    owner: AtomicPtr<Record>,
    /// Group index while promoted (under the site lock).
    group: AtomicU32,
    node: UnsafeCell<Node>,
}

// SAFETY: `node` is only touched under the owning site's mutex; every other field is
// atomic.
unsafe impl Sync for FastSlot {}
// SAFETY: as above; the raw pointers are links the site mutex guards.
unsafe impl Send for FastSlot {}

impl FastSlot {
    /// `gen_base` makes generations unique across tasks (the task id shifted high).
    pub fn new(gen_base: u64) -> FastSlot {
        FastSlot {
            word: AtomicU64::new(gen_base << 2),
            op: AtomicU8::new(0),
            assumed: AtomicBool::new(false),
            chan_site: AtomicUsize::new(0),
            chan_id: AtomicU64::new(0),
            call: AtomicUsize::new(0),
            key: AtomicU32::new(0),
            key_at: AtomicU32::new(0),
            since: AtomicU64::new(0),
            owner: AtomicPtr::new(std::ptr::null_mut()),
            group: AtomicU32::new(u32::MAX),
            node: UnsafeCell::new(Node {
                prev: std::ptr::null(),
                next: std::ptr::null(),
            }),
        }
    }

    fn state(&self) -> u64 {
        self.word.load(Acquire) & 3
    }

    /// The op of the slot's current wait if it holds one.
    pub fn pending_op(&self) -> Option<Op> {
        (self.state() != S_NONE).then(|| op_of(self.op.load(Relaxed)))
    }

    fn gkey(&self) -> Option<GKey> {
        let op = op_of(self.op.load(Relaxed));
        let chan_site = self.chan_site.load(Relaxed);
        let chan = (chan_site != 0).then(|| {
            // SAFETY: only ever an address of a leaked `&'static ChanSite`.
            let s = unsafe { &*(chan_site as *const ChanSite) };
            (s.kind, s.loc)
        });
        let call = self.call.load(Relaxed);
        let call = (call != 0).then(|| {
            // SAFETY: only ever an address of a `&'static Location<'static>`.
            let l = unsafe { &*(call as *const StdLocation<'static>) };
            registry().intern_cached(l)
        });
        Some(GKey {
            op,
            chan,
            call,
            key: self.key.load(Relaxed),
        })
    }

    fn chan_ref(&self) -> Option<ChanRef> {
        let s = self.chan_site.load(Relaxed);
        (s != 0).then(|| ChanRef {
            id: self.chan_id.load(Relaxed),
            // SAFETY: see `gkey`.
            site: unsafe { &*(s as *const ChanSite) },
        })
    }
}

/// A record pointer in a candidate list. The record unlinks itself from the list (under
/// the list's lock) before its memory goes away.
#[derive(Clone, Copy)]
pub(crate) struct RecPtr(pub *const Record);
// SAFETY: see the type's docs: only dereferenced under the candidate list's lock.
unsafe impl Send for RecPtr {}

// ---------------------------------------------------------------------------------------
// Groups

struct Group {
    key: GKey,
    count: u64,
    assumed: u64,
    head: *const FastSlot,
    tail: *const FastSlot,
}

/// The wait groups of one spawn site. Lives in the site's mutex.
#[derive(Default)]
pub(crate) struct BlockedTable {
    index: HashMap<GKey, u32, FixedState>,
    groups: Vec<Option<Group>>,
    free: Vec<u32>,
}

// SAFETY: the slot pointers are only dereferenced under the site mutex that owns the
// table; a slot leaves its group (under that mutex) before its memory goes away.
unsafe impl Send for BlockedTable {}

/// One waiter as listed on request.
pub(crate) struct WaiterInfo {
    pub task_id: u64,
    pub spawned_ms: u64,
    pub since_ms: u64,
}

impl BlockedTable {
    fn group_for(&mut self, key: GKey) -> u32 {
        if let Some(g) = self.index.get(&key) {
            return *g;
        }
        let group = Group {
            key,
            count: 0,
            assumed: 0,
            head: std::ptr::null(),
            tail: std::ptr::null(),
        };
        let g = match self.free.pop() {
            Some(g) => {
                self.groups[g as usize] = Some(group);
                g
            }
            None => {
                self.groups.push(Some(group));
                (self.groups.len() - 1) as u32
            }
        };
        self.index.insert(key, g);
        g
    }

    /// Links `slot` at the tail of group `key`.
    ///
    /// # Safety
    /// `slot` stays valid until it is [`BlockedTable::remove`]d, which happens under the
    /// same lock as this call.
    unsafe fn insert(&mut self, key: GKey, slot: &FastSlot) {
        let g = self.group_for(key);
        let Some(group) = self.groups[g as usize].as_mut() else {
            return;
        };
        let p = slot as *const FastSlot;
        // SAFETY: under the site lock (caller), nodes are ours to write.
        unsafe {
            *slot.node.get() = Node {
                prev: group.tail,
                next: std::ptr::null(),
            };
            if let Some(tail) = group.tail.as_ref() {
                (*tail.node.get()).next = p;
            } else {
                group.head = p;
            }
        }
        group.tail = p;
        group.count += 1;
        if slot.assumed.load(Relaxed) {
            group.assumed += 1;
        }
        slot.group.store(g, Relaxed);
    }

    /// Unlinks `slot` from its group.
    fn remove(&mut self, slot: &FastSlot) {
        let g = slot.group.swap(u32::MAX, Relaxed);
        let Some(group) = self.groups.get_mut(g as usize).and_then(|g| g.as_mut()) else {
            return;
        };
        // SAFETY: under the site lock; linked slots are valid (see `insert`).
        unsafe {
            let Node { prev, next } = std::ptr::replace(
                slot.node.get(),
                Node {
                    prev: std::ptr::null(),
                    next: std::ptr::null(),
                },
            );
            match prev.as_ref() {
                Some(p) => (*p.node.get()).next = next,
                None => group.head = next,
            }
            match next.as_ref() {
                Some(n) => (*n.node.get()).prev = prev,
                None => group.tail = prev,
            }
        }
        group.count -= 1;
        if slot.assumed.load(Relaxed) {
            group.assumed = group.assumed.saturating_sub(1);
        }
        if group.count == 0 {
            if let Some(group) = self.groups[g as usize].take() {
                self.index.remove(&group.key);
            }
            self.free.push(g);
        }
    }

    /// The groups of site `site` with their oldest waiter's age, channel and lock.
    /// O(groups).
    pub fn groups(&self, site: LocId) -> Vec<wire::WaitGroup> {
        self.groups
            .iter()
            .flatten()
            .map(|g| {
                // SAFETY: under the site lock (the table is borrowed from it).
                let head = unsafe { g.head.as_ref() };
                let chan = head.and_then(|s| s.chan_ref());
                let is_lock = g.key.chan.is_some_and(|(k, _)| !k.is_channel());
                wire::WaitGroup {
                    key: g.key.to_wire(site),
                    count: g.count,
                    oldest_since_ms: head.map_or(0, |s| s.since.load(Relaxed)),
                    channel: chan
                        .filter(|c| c.site.kind.is_channel())
                        .and_then(|c| c.stats()),
                    lock: chan.filter(|_| is_lock).map(|c| c.id),
                    captured: g.count - g.assumed.min(g.count),
                }
            })
            .collect()
    }

    /// The oldest `limit` waiters of group `key`.
    pub fn oldest(&self, key: &GKey, limit: usize) -> Vec<WaiterInfo> {
        let mut out = Vec::new();
        let Some(g) = self.index.get(key) else {
            return out;
        };
        let Some(group) = self.groups.get(*g as usize).and_then(|g| g.as_ref()) else {
            return out;
        };
        let mut p = group.head;
        // SAFETY: under the site lock; linked slots and their owners are valid.
        while let Some(slot) = unsafe { p.as_ref() } {
            if out.len() >= limit {
                break;
            }
            let (task_id, spawned_ms) = match unsafe { slot.owner.load(Relaxed).as_ref() } {
                Some(r) => (r.id, r.spawned_ms),
                None => {
                    // A slot without an owner is a `SlowSlot` (see `register`).
                    let s = unsafe { &*(slot as *const FastSlot as *const SlowSlot) };
                    (s.task_id, s.spawned_ms)
                }
            };
            out.push(WaiterInfo {
                task_id,
                spawned_ms,
                since_ms: slot.since.load(Relaxed),
            });
            p = unsafe { (*slot.node.get()).next };
        }
        out
    }

    /// The key and since-time of a promoted slot.
    pub fn waiter_of(&self, slot: &FastSlot) -> Option<(u64, GKey)> {
        let g = slot.group.load(Relaxed);
        let group = self.groups.get(g as usize)?.as_ref()?;
        Some((slot.since.load(Relaxed), group.key))
    }

    /// The key of one of the site's groups by its wire form.
    pub fn find(&self, key: &wire::WaitKey) -> Option<GKey> {
        self.index
            .keys()
            .find(|k| k.to_wire(key.site) == *key)
            .copied()
    }

    /// Number of live groups.
    #[allow(dead_code)]
    pub fn group_count(&self) -> usize {
        self.index.len()
    }
}

// ---------------------------------------------------------------------------------------
// Stacks of instrumented waits

type StackCache = HashMap<(usize, usize), (Option<StackId>, u64), FixedState>;

thread_local! {
    /// Per-thread stack cache: (spawn site, call site) addresses -> stack, capture time.
    static STACKS: std::cell::RefCell<StackCache> =
        std::cell::RefCell::new(HashMap::with_hasher(FixedState::default()));
}

/// The await chain of a wait at `call` in a task of `site`: captured now if this thread
/// has none for the pair or its capture is older than [`RESAMPLE_MS`] (and the capture
/// budget allows). Must be called from the leaf future's `poll`.
#[inline(never)]
fn stack_for(site: &Site, call: usize, now: u64) -> Option<StackId> {
    let key = (site as *const Site as usize, call);
    let cached = STACKS
        .try_with(|c| c.borrow().get(&key).copied())
        .ok()
        .flatten();
    // A pair never seen is always captured; re-captures are what the budget limits.
    if let Some((id, at)) = cached {
        if now.saturating_sub(at) < RESAMPLE_MS || !crate::capture::take_budget() {
            return id;
        }
    }
    let id = registry().stacks().capture();
    let _ = STACKS.try_with(|c| {
        let mut c = c.borrow_mut();
        if c.len() > 4096 {
            c.clear();
        }
        c.insert(key, (id, now))
    });
    id
}

// ---------------------------------------------------------------------------------------
// The fast path

/// What a wait is on, for [`fast_pending`].
pub(crate) struct WaitOn<'a> {
    pub op: Op,
    pub chan: Option<&'a Arc<ChanMeta>>,
    pub call: Option<&'static StdLocation<'static>>,
    /// For uninstrumented waits: the wait key; instrumented ones capture their own.
    pub key: u32,
    pub assumed: bool,
}

/// Records a wait in `slot` of `rec` (which is being polled on this thread); false when
/// the slot is busy.
#[inline]
pub(crate) fn fast_pending(rec: &Record, slot: &FastSlot, on: &WaitOn<'_>) -> Option<u64> {
    let w = slot.word.load(Relaxed);
    if w & 3 != S_NONE {
        return None;
    }
    let gen = (w >> 2) + 1;
    let now = clock::cached_now_ms();
    match on.call {
        Some(call) => {
            let call_addr = call as *const StdLocation<'static> as usize;
            // `call` and `key` still hold this slot's previous wait (only the task
            // writes them): a wait at the same call site within RESAMPLE_MS reuses it.
            if slot.call.load(Relaxed) != call_addr
                || (now as u32).wrapping_sub(slot.key_at.load(Relaxed)) as u64 >= RESAMPLE_MS
            {
                let s = stack_for(rec.site, call_addr, now).map_or(0, |id| id + 1);
                slot.call.store(call_addr, Relaxed);
                slot.key.store(s, Relaxed);
                slot.key_at.store(now as u32, Relaxed);
            }
        }
        None => {
            slot.call.store(0, Relaxed);
            slot.key.store(on.key, Relaxed);
        }
    }
    slot.op.store(op_code(on.op), Relaxed);
    slot.assumed.store(on.assumed, Relaxed);
    match on.chan {
        Some(c) => {
            c.list();
            slot.chan_id.store(c.id, Relaxed);
            slot.chan_site
                .store(c.site as *const ChanSite as usize, Relaxed);
        }
        None => slot.chan_site.store(0, Relaxed),
    }
    slot.since.store(now, Relaxed);
    slot.owner
        .store(rec as *const Record as *mut Record, Relaxed);
    // SeqCst pairs with the promoter's clear of the record's candidate mark then load of
    // `word`: either it sees this wait, or we see the mark cleared and enlist again.
    slot.word.swap(gen << 2 | S_PENDING, SeqCst);
    if rec.cand.load(SeqCst) == 0 {
        enlist(rec);
    }
    Some(gen)
}

#[cold]
#[inline(never)]
fn enlist(rec: &Record) {
    let shard = shard::mine();
    let mut list = lock(&shard.candidates);
    if rec.cand.load(SeqCst) != 0 {
        return;
    }
    list.push(RecPtr(rec));
    rec.cand
        .store(cand_mark(shard.index, list.len() - 1), SeqCst);
    if list.len() > MAX_CANDIDATES {
        promote_list(&mut list);
    }
}

fn cand_mark(shard: u16, pos: usize) -> u64 {
    (u64::from(shard) << 32) | (pos as u64 + 1)
}

/// Takes `rec` off its candidate list, if it is on one. Called when its record goes away.
pub(crate) fn unlist(rec: &Record) {
    let mark = rec.cand.load(SeqCst);
    if mark == 0 {
        return;
    }
    let shard = shard::by_index((mark >> 32) as u16);
    let mut list = lock(&shard.candidates);
    let mark = rec.cand.load(SeqCst);
    if mark == 0 {
        return;
    }
    let pos = (mark & 0xffff_ffff) as usize - 1;
    if list.get(pos).is_some_and(|p| std::ptr::eq(p.0, rec)) {
        list.swap_remove(pos);
        if let Some(moved) = list.get(pos) {
            // SAFETY: under the list's lock, listed records are alive.
            unsafe { &*moved.0 }
                .cand
                .store(cand_mark(shard.index, pos), SeqCst);
        }
    }
    rec.cand.store(0, SeqCst);
}

/// The wait of generation `gen` in `slot` is over.
#[inline]
pub(crate) fn fast_ready(rec: &Record, slot: &FastSlot, gen: u64) {
    if slot
        .word
        .compare_exchange(gen << 2 | S_PENDING, gen << 2 | S_NONE, AcqRel, Relaxed)
        .is_ok()
    {
        return;
    }
    fast_unpromote(rec, slot, gen);
}

#[cold]
#[inline(never)]
fn fast_unpromote(rec: &Record, slot: &FastSlot, gen: u64) {
    let site = rec.site;
    let mut inner = lock(&site.inner);
    clear_promoted(&mut inner, site, rec, slot, gen);
}

/// Under the site lock: if `slot` holds promoted generation `gen`, takes it out of its
/// group.
fn clear_promoted(inner: &mut SiteInner, site: &Site, rec: &Record, slot: &FastSlot, gen: u64) {
    if slot.word.load(Acquire) != gen << 2 | S_PROMOTED {
        return;
    }
    inner.blocked.remove(slot);
    task_unblocked(site, rec);
    slot.word.store(gen << 2 | S_NONE, SeqCst);
}

/// Ends whatever `slot` holds (its record is going away, or its poll-scoped wait ends).
pub(crate) fn end_any(rec: &Record, slot: &FastSlot) {
    let w = slot.word.load(Acquire);
    let gen = w >> 2;
    match w & 3 {
        S_PENDING => fast_ready(rec, slot, gen),
        S_PROMOTED => fast_unpromote(rec, slot, gen),
        _ => {}
    }
}

/// Promotes every candidate of every thread that still waits into its group.
/// O(candidates): tasks that began a wait since the last promotion.
pub(crate) fn promote_all() {
    for shard in shard::all() {
        let mut list = lock(&shard.candidates);
        promote_list(&mut list);
    }
}

fn promote_list(list: &mut Vec<RecPtr>) {
    for r in list.drain(..) {
        // SAFETY: under the candidate list's lock, listed records are alive (a record
        // takes itself off the list under this lock before going away).
        let rec = unsafe { &*r.0 };
        rec.cand.store(0, SeqCst);
        let site = rec.site;
        let mut inner = lock(&site.inner);
        rec.for_each_slot(|slot| promote_slot(&mut inner, site, rec, slot));
    }
}

fn promote_slot(inner: &mut SiteInner, site: &Site, rec: &Record, slot: &FastSlot) {
    let w = slot.word.load(SeqCst);
    if w & 3 != S_PENDING {
        return;
    }
    let Some(key) = slot.gkey() else {
        return;
    };
    // SAFETY: `slot` is a slot of `rec`, alive while its record is (the caller holds the
    // candidate lock); it leaves the group under the site lock before it goes away.
    unsafe { inner.blocked.insert(key, slot) };
    if slot
        .word
        .compare_exchange(w, (w & !3) | S_PROMOTED, AcqRel, Relaxed)
        .is_ok()
    {
        task_blocked(site, rec, key.op);
    } else {
        // Ended (or restarted) while we read it.
        inner.blocked.remove(slot);
    }
}

/// Under the site lock: one more promoted wait of `rec`; the first one counts the task
/// under its class (a task waiting in several places at once counts once, under its
/// first wait's class).
fn task_blocked(site: &Site, rec: &Record, op: Op) {
    let v = rec.promoted.load(Relaxed);
    if v & 0xff == 0 {
        let class = Class::of(op);
        class.counter(site).fetch_add(1, Relaxed);
        rec.promoted.store(1 | (class as u32) << 8, Relaxed);
    } else {
        rec.promoted.store(v + 1, Relaxed);
    }
}

/// Under the site lock: one promoted wait of `rec` is over.
fn task_unblocked(site: &Site, rec: &Record) {
    let v = rec.promoted.load(Relaxed);
    match v & 0xff {
        0 => {}
        1 => {
            if let Some(class) = Class::from_u8((v >> 8) as u8) {
                class.counter(site).fetch_sub(1, Relaxed);
            }
            rec.promoted.store(0, Relaxed);
        }
        _ => rec.promoted.store(v - 1, Relaxed),
    }
}

/// The class and since-time of `rec`'s first promoted wait, and its group key (under the
/// site lock).
pub(crate) fn wait_of(inner: &SiteInner, rec: &Record) -> Option<(u64, GKey)> {
    let mut found = None;
    rec.for_each_slot(|slot| {
        if found.is_none() && slot.word.load(Acquire) & 3 == S_PROMOTED {
            found = inner.blocked.waiter_of(slot);
        }
    });
    found
}

// ---------------------------------------------------------------------------------------
// The registration a future holds

/// A slot registered directly in its site's table: a wait outside instrumented tasks, or
/// past a task's slots. It names its task by id (never by address: the future holding it
/// may outlive the task), and counts under its site directly rather than per task.
#[repr(C)]
pub(crate) struct SlowSlot {
    slot: FastSlot,
    task_id: u64,
    spawned_ms: u64,
}

/// A wait registered directly in its site's table.
struct Registration {
    /// The slot, linked into its group.
    slot: Box<SlowSlot>,
    site: &'static Site,
    /// The uninstrumented row's table it is in (see `Site::outside`); None: the site's own.
    table: Option<u8>,
    /// The task it was made in (its address) and that task's id; 0 outside one.
    rec: usize,
    task: u64,
}

enum Reg {
    /// In slot `slot` of the task at address `rec` with id `task`. The address is only
    /// dereferenced while that task is being polled (then it is alive).
    Fast {
        rec: usize,
        task: u64,
        slot: u8,
        gen: u64,
    },
    /// Boxed: rare (past a task's slots, or outside tasks) and already takes a lock; kept
    /// out of line so every future stays small.
    Slow(Box<Registration>),
}

/// The wait state of one instrumented future (or pollable handle).
#[derive(Default)]
pub(crate) struct Wait {
    reg: Option<Reg>,
}

impl Wait {
    pub const fn new() -> Wait {
        Wait { reg: None }
    }

    /// Tracks one poll of an operation: a Pending records the current task as waiting
    /// (see [`Wait::pending`]), a Ready clears it. Returns the poll, so a future's body is
    /// `ready!(self.wait.track(inner.poll(cx), op, meta, caller))`.
    #[inline]
    pub fn track<R>(
        &mut self,
        poll: Poll<R>,
        op: Op,
        chan: &Arc<ChanMeta>,
        call_site: &'static StdLocation<'static>,
    ) -> Poll<R> {
        match poll {
            Poll::Pending => self.pending(op, chan, call_site),
            Poll::Ready(_) => self.ready(),
        }
        poll
    }

    /// The operation returned Pending. Records the current task as waiting the first
    /// time; later calls from the same task compare two words.
    #[inline]
    pub fn pending(
        &mut self,
        op: Op,
        chan: &Arc<ChanMeta>,
        call_site: &'static StdLocation<'static>,
    ) {
        let (cur, id) = instrumented::current();
        match &self.reg {
            Some(Reg::Fast { rec, task, .. }) if *rec == cur && *task == id => return,
            Some(Reg::Slow(r)) if r.rec == cur && r.task == id => return,
            // Moved to another task (or into/out of one): record anew.
            Some(_) => self.ready(),
            None => {}
        }
        let on = WaitOn {
            op,
            chan: Some(chan),
            call: Some(call_site),
            key: 0,
            assumed: false,
        };
        if cur != 0 {
            let fast = instrumented::with_current(|r| {
                let r = r?;
                r.try_slots(|i, slot| fast_pending(r, slot, &on).map(|g| (i, g)))
            });
            if let Some((slot, gen)) = fast {
                self.reg = Some(Reg::Fast {
                    rec: cur,
                    task: id,
                    slot,
                    gen,
                });
                return;
            }
        }
        self.reg = Some(Reg::Slow(Box::new(register(&on, cur, id))));
    }

    /// The operation completed (or gave up): the task no longer waits here.
    #[inline]
    pub fn ready(&mut self) {
        if self.reg.is_none() {
            return;
        }
        match self.reg.take() {
            None => {}
            // Outside its task's poll the task may be gone; its completion clears the
            // slot then.
            Some(Reg::Fast {
                rec,
                task,
                slot,
                gen,
            }) if instrumented::current() == (rec, task) => {
                instrumented::with_current(|r| {
                    if let Some(r) = r {
                        if let Some(s) = r.slot(slot) {
                            fast_ready(r, s, gen);
                        }
                    }
                });
            }
            Some(Reg::Fast { .. }) => {}
            Some(Reg::Slow(r)) => unregister(*r),
        }
    }

    #[allow(dead_code)]
    pub fn is_registered(&self) -> bool {
        self.reg.is_some()
    }
}

impl Drop for Wait {
    #[inline]
    fn drop(&mut self) {
        if self.reg.is_some() {
            self.ready();
        }
    }
}

impl std::fmt::Debug for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wait")
            .field("registered", &self.reg.is_some())
            .finish()
    }
}

#[cold]
#[inline(never)]
fn register(on: &WaitOn<'_>, rec: usize, task: u64) -> Registration {
    let reg = registry();
    let (site, spawned_ms) = instrumented::with_current(|r| r.map(|r| (r.site, r.spawned_ms)))
        .unwrap_or_else(|| (reg.uninstrumented_site(), 0));
    let now = clock::cached_now_ms();
    let slow = Box::new(SlowSlot {
        slot: FastSlot::new(0),
        task_id: task,
        spawned_ms,
    });
    let slot = &slow.slot;
    if let Some(call) = on.call {
        let call_addr = call as *const StdLocation<'static> as usize;
        let s = stack_for(site, call_addr, now).map_or(0, |id| id + 1);
        slot.call.store(call_addr, Relaxed);
        slot.key.store(s, Relaxed);
    } else {
        slot.key.store(on.key, Relaxed);
    }
    slot.op.store(op_code(on.op), Relaxed);
    if let Some(c) = on.chan {
        c.list();
        slot.chan_id.store(c.id, Relaxed);
        slot.chan_site
            .store(c.site as *const ChanSite as usize, Relaxed);
    }
    slot.since.store(now, Relaxed);
    slot.word.store(S_PROMOTED, Relaxed);
    // Waits outside instrumented tasks go to the uninstrumented row's table of this
    // thread's shard: threads waiting outside tasks do not share a lock.
    let table = (task == 0 && !site.outside.is_empty())
        .then(|| (shard::mine().index as usize % site.outside.len()) as u8);
    if let Some(key) = slot.gkey() {
        // SAFETY: the box lives in the registration until `unregister` takes it out of
        // its group under this same lock.
        match table {
            Some(i) => unsafe { lock(&site.outside[i as usize]).insert(key, slot) },
            None => unsafe { lock(&site.inner).blocked.insert(key, slot) },
        }
        Class::of(on.op).counter(site).fetch_add(1, Relaxed);
        if task == 0 {
            site.live_extra.fetch_add(1, Relaxed);
        }
    }
    Registration {
        slot: slow,
        site,
        table,
        rec,
        task,
    }
}

/// Takes a registered slot out of its group; false if it was in none.
fn remove_registered(table: &mut BlockedTable, slot: &FastSlot) -> bool {
    if slot.group.load(Relaxed) == u32::MAX {
        return false;
    }
    table.remove(slot);
    true
}

#[inline(never)]
fn unregister(reg: Registration) {
    let site = reg.site;
    let removed = match reg.table.and_then(|i| site.outside.get(i as usize)) {
        Some(t) => remove_registered(&mut lock(t), &reg.slot.slot),
        None => remove_registered(&mut lock(&site.inner).blocked, &reg.slot.slot),
    };
    if !removed {
        return;
    }
    Class::of(op_of(reg.slot.slot.op.load(Relaxed)))
        .counter(site)
        .fetch_sub(1, Relaxed);
    if reg.task == 0 {
        site.live_extra.fetch_sub(1, Relaxed);
    }
}
