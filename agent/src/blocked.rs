//! Who is blocked where: the blocked groups of one spawn site, and the registration a
//! channel future holds while its task waits in it.
//!
//! Each spawn site keeps a [`BlockedTable`] inside its own mutex (`SiteInner`): groups
//! keyed by [`GroupKey`] (spawn site, op, channel creation site, blocking call site,
//! stack), each an intrusive list of waiters in arrival order, so the oldest is its head.
//! Adding and removing a waiter is O(1) with no allocation once the slabs have grown to the
//! peak number of waiters; a snapshot reads O(groups), never O(waiters).
//!
//! A channel future calls [`Wait::pending`] when it returns Pending and [`Wait::ready`]
//! (or drops the `Wait`) when it completes or is dropped. Only the first Pending of a
//! future registers; later ones are a pointer compare.
//!
//! # Two speeds
//!
//! Most waits are short (a busy ping-pong blocks on every receive), so a wait inside an
//! instrumented task first goes into the task's own [`FastSlot`]: a few relaxed stores and
//! one atomic swap on the task's own cache line, no lock, no reference count. Its Ready is
//! one compare-and-swap. The task also puts itself on its site's candidate list, at most
//! once per drain. Whoever looks at the groups (a snapshot, a task list, the history
//! sampler, all on the agent thread; or a push that finds the list long) first *promotes*
//! the candidates still waiting into their groups under the site's lock. Every
//! observation therefore sees every wait that is pending at that moment, exactly, while a
//! wait that ends before anyone looks never touches shared state.
//!
//! Waits outside instrumented tasks, and a task's second concurrent wait (`select!` over
//! two channels), register directly under the site's lock.

use std::collections::HashMap;
use std::panic::Location as StdLocation;
use std::sync::atomic::Ordering::{AcqRel, Acquire, Relaxed, SeqCst};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicU8, AtomicUsize};
use std::sync::Arc;
use std::task::Poll;

use foldhash::fast::FixedState;

use crate::chan::{ChanMeta, ChanRef, ChanSite};
use crate::clock;
use crate::instrumented as task;
use crate::registry::{lock, registry, Site, SiteInner, TaskCell, STATE_BLOCKED, STATE_IDLE};
use crate::stack::RESAMPLE_MS;
use crate::wire::{self, ChannelKind, GroupKey, Op, StackId};

const NIL: u32 = u32::MAX;

struct Waiter {
    prev: u32,
    next: u32,
    group: u32,
    since_ms: u64,
    /// 0 for operations outside instrumented tasks.
    task_id: u64,
    spawned_ms: u64,
    /// None when the slot is free.
    chan: Option<ChanRef>,
}

struct Group {
    key: GroupKey,
    kind: ChannelKind,
    count: u64,
    head: u32,
    tail: u32,
}

/// The blocked groups of one spawn site. Lives in the site's mutex.
#[derive(Default)]
pub(crate) struct BlockedTable {
    index: HashMap<GroupKey, u32, FixedState>,
    groups: Vec<Option<Group>>,
    free_groups: Vec<u32>,
    waiters: Vec<Waiter>,
    free_waiters: Vec<u32>,
}

/// One waiter as listed on request.
pub(crate) struct WaiterInfo {
    pub task_id: u64,
    pub spawned_ms: u64,
    pub since_ms: u64,
}

impl BlockedTable {
    fn insert(
        &mut self,
        key: GroupKey,
        kind: ChannelKind,
        since_ms: u64,
        task: Option<&TaskCell>,
        chan: ChanRef,
    ) -> u32 {
        let g = match self.index.get(&key) {
            Some(g) => *g,
            None => {
                let group = Group {
                    key: key.clone(),
                    kind,
                    count: 0,
                    head: NIL,
                    tail: NIL,
                };
                let g = match self.free_groups.pop() {
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
        };
        let waiter = Waiter {
            prev: NIL,
            next: NIL,
            group: g,
            since_ms,
            task_id: task.map_or(0, |t| t.id),
            spawned_ms: task.map_or(0, |t| t.spawned_ms),
            chan: Some(chan),
        };
        let w = match self.free_waiters.pop() {
            Some(w) => {
                self.waiters[w as usize] = waiter;
                w
            }
            None => {
                self.waiters.push(waiter);
                (self.waiters.len() - 1) as u32
            }
        };
        let Some(group) = self.groups[g as usize].as_mut() else {
            return w;
        };
        let tail = group.tail;
        group.tail = w;
        if tail == NIL {
            group.head = w;
        }
        group.count += 1;
        if tail != NIL {
            self.waiters[tail as usize].next = w;
        }
        self.waiters[w as usize].prev = tail;
        w
    }

    fn remove(&mut self, w: u32) {
        let Some(waiter) = self.waiters.get_mut(w as usize) else {
            return;
        };
        if waiter.chan.take().is_none() {
            return; // already free
        }
        let (prev, next, g) = (waiter.prev, waiter.next, waiter.group);
        if prev != NIL {
            self.waiters[prev as usize].next = next;
        }
        if next != NIL {
            self.waiters[next as usize].prev = prev;
        }
        self.free_waiters.push(w);
        let Some(group) = self.groups.get_mut(g as usize).and_then(|g| g.as_mut()) else {
            return;
        };
        if group.head == w {
            group.head = next;
        }
        if group.tail == w {
            group.tail = prev;
        }
        group.count -= 1;
        if group.count == 0 {
            if let Some(group) = self.groups[g as usize].take() {
                self.index.remove(&group.key);
            }
            self.free_groups.push(g);
        }
    }

    /// The groups with their oldest waiter's age and channel. O(groups).
    pub fn groups(&self) -> Vec<wire::BlockedGroup> {
        self.groups
            .iter()
            .flatten()
            .map(|g| {
                let head = self.waiters.get(g.head as usize);
                wire::BlockedGroup {
                    key: g.key.clone(),
                    kind: g.kind,
                    count: g.count,
                    oldest_since_ms: head.map_or(0, |w| w.since_ms),
                    channel: head.and_then(|w| w.chan.as_ref()).and_then(|c| c.stats()),
                }
            })
            .collect()
    }

    /// The oldest `limit` waiters of group `key`.
    pub fn oldest(&self, key: &GroupKey, limit: usize) -> Vec<WaiterInfo> {
        let mut out = Vec::new();
        let Some(g) = self.index.get(key) else {
            return out;
        };
        let Some(group) = self.groups.get(*g as usize).and_then(|g| g.as_ref()) else {
            return out;
        };
        let mut w = group.head;
        while w != NIL && out.len() < limit {
            let Some(waiter) = self.waiters.get(w as usize) else {
                break;
            };
            out.push(WaiterInfo {
                task_id: waiter.task_id,
                spawned_ms: waiter.spawned_ms,
                since_ms: waiter.since_ms,
            });
            w = waiter.next;
        }
        out
    }

    /// Since when, and in which group, waiter slot `w` waits.
    pub fn waiter(&self, w: u32) -> Option<(u64, GroupKey)> {
        let waiter = self.waiters.get(w as usize)?;
        waiter.chan.as_ref()?;
        let group = self.groups.get(waiter.group as usize)?.as_ref()?;
        Some((waiter.since_ms, group.key.clone()))
    }

    /// Number of live groups.
    #[allow(dead_code)]
    pub fn group_count(&self) -> usize {
        self.index.len()
    }
}

// ---------------------------------------------------------------------------------------
// Stacks

type StackCache = HashMap<(usize, usize), (Option<StackId>, u64), FixedState>;

thread_local! {
    /// Per-thread stack cache: (spawn site, call site) addresses -> stack, capture time.
    static STACKS: std::cell::RefCell<StackCache> =
        std::cell::RefCell::new(HashMap::with_hasher(FixedState::default()));
}

/// The await chain of a wait at `call` in a task of `site`: captured now if this thread
/// has none for the pair or its capture is older than [`RESAMPLE_MS`]. Must be called from
/// the leaf future's `poll` (the chain is on the stack only then).
#[inline(never)]
fn stack_for(site: &Site, call: usize, now: u64) -> Option<StackId> {
    let key = (site as *const Site as usize, call);
    let cached = STACKS
        .try_with(|c| c.borrow().get(&key).copied())
        .ok()
        .flatten()
        .filter(|(_, at)| now.saturating_sub(*at) < RESAMPLE_MS);
    if let Some((id, _)) = cached {
        return id;
    }
    let id = registry().stacks().capture();
    let _ = STACKS.try_with(|c| c.borrow_mut().insert(key, (id, now)));
    id
}

// ---------------------------------------------------------------------------------------
// The fast slot of a task

const S_NONE: u64 = 0;
const S_PENDING: u64 = 1;
const S_PROMOTED: u64 = 2;
/// Candidates beyond this many are promoted by the pushing thread itself, so the list
/// stays bounded when no agent thread drains it.
const MAX_CANDIDATES: usize = 4096;

fn op_code(op: Op) -> u8 {
    match op {
        Op::Send => 0,
        Op::Reserve => 1,
        Op::Recv => 2,
        Op::Changed => 3,
        Op::Closed => 4,
        Op::Other => 5,
        Op::Lock => 6,
        Op::Read => 7,
        Op::Write => 8,
        Op::Acquire => 9,
        Op::Notified => 10,
        Op::BarrierWait => 11,
        Op::Init => 12,
        Op::Join => 13,
        Op::Wait => 14,
    }
}

fn op_of(code: u8) -> Op {
    match code {
        0 => Op::Send,
        1 => Op::Reserve,
        2 => Op::Recv,
        3 => Op::Changed,
        4 => Op::Closed,
        6 => Op::Lock,
        7 => Op::Read,
        8 => Op::Write,
        9 => Op::Acquire,
        10 => Op::Notified,
        11 => Op::BarrierWait,
        12 => Op::Init,
        13 => Op::Join,
        14 => Op::Wait,
        _ => Op::Other,
    }
}

/// A task's own wait record: written by the task (while polling it), read by the
/// promoter. `word` is `generation << 2 | state`; a new wait bumps the generation, so a
/// promoter that read a stale record fails its compare-and-swap and drops what it read.
/// Every field is an atomic, so a racing read sees some value each field once held,
/// never a torn one.
pub(crate) struct FastSlot {
    word: AtomicU64,
    in_list: AtomicBool,
    op: AtomicU8,
    chan_id: AtomicU64,
    /// `&'static ChanSite` as an address (0 before the first wait).
    chan_site: AtomicUsize,
    /// `&'static Location<'static>` of the blocking call, as an address.
    call: AtomicUsize,
    /// StackId + 1 (0: none).
    stack: AtomicU32,
    since: AtomicU64,
    /// Waiter slot in the site's table while promoted.
    slot: AtomicU32,
    /// When `stack` was captured (agent ms, truncated: compared with wrapping
    /// arithmetic). With `call` and `stack` it is the task's one-entry stack cache: a
    /// wait at the same call site within RESAMPLE_MS reuses the last capture. (u32 and no
    /// separate cache fields: `TaskCell` stays within 104 bytes, which keeps its
    /// allocation in glibc's fast bins.)
    stack_at: AtomicU32,
}

impl FastSlot {
    /// `gen_base` makes generations unique across tasks (a task id shifted high).
    pub fn new(gen_base: u64) -> FastSlot {
        FastSlot {
            word: AtomicU64::new(gen_base << 2),
            in_list: AtomicBool::new(false),
            op: AtomicU8::new(0),
            chan_id: AtomicU64::new(0),
            chan_site: AtomicUsize::new(0),
            call: AtomicUsize::new(0),
            stack: AtomicU32::new(0),
            since: AtomicU64::new(0),
            slot: AtomicU32::new(0),
            stack_at: AtomicU32::new(0),
        }
    }
}

/// Records a wait in the task's fast slot; None when the slot is busy (the task already
/// waits elsewhere).
#[inline]
fn fast_pending(
    cell: &Arc<TaskCell>,
    op: Op,
    chan: &ChanMeta,
    call: &'static StdLocation<'static>,
) -> Option<u64> {
    let f = &cell.fast;
    let w = f.word.load(Relaxed);
    if w & 3 != S_NONE {
        return None;
    }
    let gen = (w >> 2) + 1;
    let now = clock::cached_now_ms();
    let call_addr = call as *const StdLocation<'static> as usize;
    // `call` and `stack` still hold this task's previous wait (only the task writes them).
    if f.call.load(Relaxed) != call_addr
        || (now as u32).wrapping_sub(f.stack_at.load(Relaxed)) as u64 >= RESAMPLE_MS
    {
        let s = stack_for(cell.site, call_addr, now).map_or(0, |id| id + 1);
        f.call.store(call_addr, Relaxed);
        f.stack.store(s, Relaxed);
        f.stack_at.store(now as u32, Relaxed);
    }
    f.op.store(op_code(op), Relaxed);
    f.chan_id.store(chan.id, Relaxed);
    f.chan_site
        .store(chan.site as *const ChanSite as usize, Relaxed);
    f.since.store(now, Relaxed);
    // SeqCst pairs with the promoter's clear of `in_list` then load of `word`: either it
    // sees this wait, or we see the list flag cleared and enlist again.
    f.word.swap(gen << 2 | S_PENDING, SeqCst);
    if !f.in_list.load(SeqCst) {
        enlist(cell);
    }
    Some(gen)
}

#[cold]
#[inline(never)]
fn enlist(cell: &Arc<TaskCell>) {
    let site = &cell.site;
    let mut inner = lock(&site.inner);
    if !cell.fast.in_list.load(SeqCst) {
        cell.fast.in_list.store(true, SeqCst);
        inner.candidates.push(cell.clone());
        if inner.candidates.len() > MAX_CANDIDATES {
            promote_locked(&mut inner, site);
        }
    }
}

/// The fast wait of generation `gen` is over.
#[inline]
fn fast_ready(cell: &TaskCell, gen: u64) {
    let f = &cell.fast;
    if f.word
        .compare_exchange(gen << 2 | S_PENDING, gen << 2 | S_NONE, AcqRel, Relaxed)
        .is_ok()
    {
        return;
    }
    fast_unpromote(cell, gen);
}

#[cold]
#[inline(never)]
fn fast_unpromote(cell: &TaskCell, gen: u64) {
    let site = &cell.site;
    let mut inner = lock(&site.inner);
    clear_promoted(&mut inner, site, cell, gen);
}

/// Under the site lock: if the fast slot holds promoted generation `gen`, takes it out of
/// its group.
fn clear_promoted(inner: &mut SiteInner, site: &Site, cell: &TaskCell, gen: u64) {
    let f = &cell.fast;
    if f.word.load(Acquire) != gen << 2 | S_PROMOTED {
        return;
    }
    let slot = f.slot.load(Relaxed);
    inner.blocked.remove(slot);
    task_unblocked(site, cell, slot);
    f.word.store(gen << 2 | S_NONE, SeqCst);
}

/// The task is done: whatever its fast slot holds is over.
pub(crate) fn task_done_locked(inner: &mut SiteInner, site: &Site, cell: &TaskCell) {
    let w = cell.fast.word.load(Acquire);
    let gen = w >> 2;
    match w & 3 {
        S_PENDING => {
            let _ = cell
                .fast
                .word
                .compare_exchange(w, gen << 2 | S_NONE, AcqRel, Relaxed);
        }
        S_PROMOTED => clear_promoted(inner, site, cell, gen),
        _ => {}
    }
}

/// Promotes every candidate of `site` that still waits into its group. O(candidates):
/// tasks that began a wait since the last promotion.
pub(crate) fn promote(site: &Site) {
    let mut inner = lock(&site.inner);
    promote_locked(&mut inner, site);
}

fn promote_locked(inner: &mut SiteInner, site: &Site) {
    let list = std::mem::take(&mut inner.candidates);
    let reg = registry();
    for cell in &list {
        let f = &cell.fast;
        f.in_list.store(false, SeqCst);
        let w = f.word.load(SeqCst);
        if w & 3 != S_PENDING {
            continue;
        }
        let chan_site = f.chan_site.load(Relaxed);
        let call = f.call.load(Relaxed);
        if chan_site == 0 || call == 0 {
            continue;
        }
        // SAFETY: `chan_site` and `call` only ever hold addresses of `&'static ChanSite`
        // (leaked, never freed) and `&'static Location<'static>` values (see
        // fast_pending); 0 was excluded above.
        let (chan_site, call) = unsafe {
            (
                &*(chan_site as *const ChanSite),
                &*(call as *const StdLocation<'static>),
            )
        };
        let op = op_of(f.op.load(Relaxed));
        let stack = f.stack.load(Relaxed).checked_sub(1);
        let key = GroupKey {
            site: site.loc,
            op,
            channel_site: chan_site.loc,
            call_site: reg.intern_cached(call),
            stack,
        };
        let chan = ChanRef {
            id: f.chan_id.load(Relaxed),
            site: chan_site,
        };
        let slot =
            inner
                .blocked
                .insert(key, chan_site.kind, f.since.load(Relaxed), Some(cell), chan);
        f.slot.store(slot, Relaxed);
        if f.word
            .compare_exchange(w, (w & !3) | S_PROMOTED, AcqRel, Relaxed)
            .is_ok()
        {
            task_blocked(site, cell, op, slot);
        } else {
            // Ended (or restarted) while we read it.
            inner.blocked.remove(slot);
        }
    }
    // Keep the allocation for the next round.
    let mut list = list;
    list.clear();
    if inner.candidates.is_empty() {
        inner.candidates = list;
    }
}

/// Under the site lock: one more wait of `cell`; the first one marks the task blocked.
fn task_blocked(site: &Site, cell: &TaskCell, op: Op, slot: u32) {
    // A task waiting in several futures at once (select!, join!) counts once, under the
    // op of its first wait.
    if cell.blocked_regs.fetch_add(1, Relaxed) == 0 {
        cell.blocked_is_send.store(op.is_send(), Relaxed);
        cell.blocked_slot.store(slot + 1, Relaxed);
        cell.state.store(STATE_BLOCKED, Relaxed);
        counter(site, op.is_send()).fetch_add(1, Relaxed);
    }
}

/// Under the site lock: one wait of `cell` (in waiter slot `slot`) is over.
fn task_unblocked(site: &Site, cell: &TaskCell, slot: u32) {
    if cell.blocked_regs.fetch_sub(1, Relaxed) == 1 {
        counter(site, cell.blocked_is_send.load(Relaxed)).fetch_sub(1, Relaxed);
        cell.blocked_slot.store(0, Relaxed);
        cell.state.store(STATE_IDLE, Relaxed);
    } else if cell.blocked_slot.load(Relaxed) == slot + 1 {
        // Still waiting elsewhere; that wait's slot is not known here.
        cell.blocked_slot.store(0, Relaxed);
    }
}

// ---------------------------------------------------------------------------------------
// The registration a future holds

/// Whose wait this is: an instrumented task, or an operation outside one.
enum Owner {
    Task(Arc<TaskCell>),
    Uninstrumented(&'static Site),
}

impl Owner {
    fn site(&self) -> &Site {
        match self {
            Owner::Task(c) => c.site,
            Owner::Uninstrumented(s) => s,
        }
    }
}

/// A wait registered directly in its site's table.
struct Registration {
    owner: Owner,
    /// `task::current_ptr()` at registration (0 outside instrumented tasks).
    task_ptr: usize,
    slot: u32,
    op: Op,
}

enum Reg {
    /// In the fast slot of the task at this address, with this generation. The address
    /// is only dereferenced while that task is being polled (then it is alive).
    Fast { cell: usize, gen: u64 },
    /// Boxed: rare (a second concurrent wait of a task, or outside tasks) and already
    /// takes a lock; kept out of line so every channel future stays three words smaller.
    Slow(Box<Registration>),
}

/// The blocked-state slot of one channel future (or pollable handle).
#[derive(Default)]
pub(crate) struct Wait {
    reg: Option<Reg>,
}

impl Wait {
    /// Tracks one poll of a channel operation: a Pending records the task as waiting
    /// (see [`Wait::pending`]), a Ready clears it. Returns the poll, so a future's body is
    /// `ready!(self.wait.track(inner.poll(cx), op, meta, caller))`.
    #[inline]
    pub fn track<R>(
        &mut self,
        poll: Poll<R>,
        op: Op,
        chan: &ChanMeta,
        call_site: &'static StdLocation<'static>,
    ) -> Poll<R> {
        match poll {
            Poll::Pending => self.pending(op, chan, call_site),
            Poll::Ready(_) => self.ready(),
        }
        poll
    }
}

impl Wait {
    pub const fn new() -> Wait {
        Wait { reg: None }
    }

    /// The operation returned Pending. Records the current task as waiting the first
    /// time; later calls from the same task only compare a pointer.
    #[inline]
    pub fn pending(&mut self, op: Op, chan: &ChanMeta, call_site: &'static StdLocation<'static>) {
        let current = task::current_ptr();
        match &self.reg {
            Some(Reg::Fast { cell, .. }) if *cell == current => return,
            Some(Reg::Slow(r)) if r.task_ptr == current => return,
            // Moved to another task (or into/out of one): record anew.
            Some(_) => self.ready(),
            None => {}
        }
        if current != 0 {
            let fast = task::with_current(|c| c.and_then(|c| fast_pending(c, op, chan, call_site)));
            if let Some(gen) = fast {
                self.reg = Some(Reg::Fast { cell: current, gen });
                return;
            }
        }
        self.reg = Some(Reg::Slow(Box::new(register(op, chan, call_site, current))));
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
            // slot then (see task_done_locked).
            Some(Reg::Fast { cell, gen }) if task::current_ptr() == cell => {
                task::with_current(|c| {
                    if let Some(c) = c {
                        fast_ready(c, gen)
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

fn counter(site: &Site, send: bool) -> &AtomicU64 {
    if send {
        &site.blocked_send
    } else {
        &site.blocked_recv
    }
}

#[cold]
#[inline(never)]
fn register(
    op: Op,
    chan: &ChanMeta,
    call_site: &'static StdLocation<'static>,
    task_ptr: usize,
) -> Registration {
    let reg = registry();
    let owner = match task::with_current(|c| c.cloned()) {
        Some(cell) => Owner::Task(cell),
        None => Owner::Uninstrumented(reg.uninstrumented_site()),
    };
    let call = reg.intern_cached(call_site);
    let site = owner.site();
    let now = clock::cached_now_ms();
    let stack = stack_for(site, call_site as *const StdLocation<'static> as usize, now);
    let key = GroupKey {
        site: site.loc,
        op,
        channel_site: chan.site.loc,
        call_site: call,
        stack,
    };
    let mut inner = lock(&site.inner);
    let task = match &owner {
        Owner::Task(c) => Some(&**c),
        Owner::Uninstrumented(_) => None,
    };
    let slot = inner
        .blocked
        .insert(key, chan.kind, now, task, chan.chan_ref());
    match &owner {
        Owner::Task(cell) => task_blocked(site, cell, op, slot),
        Owner::Uninstrumented(site) => {
            counter(site, op.is_send()).fetch_add(1, Relaxed);
            site.live.fetch_add(1, Relaxed);
        }
    }
    drop(inner);
    Registration {
        owner,
        task_ptr,
        slot,
        op,
    }
}

#[inline(never)]
fn unregister(reg: Registration) {
    let site = reg.owner.site();
    let mut inner = lock(&site.inner);
    inner.blocked.remove(reg.slot);
    match &reg.owner {
        Owner::Task(cell) => task_unblocked(site, cell, reg.slot),
        Owner::Uninstrumented(site) => {
            counter(site, reg.op.is_send()).fetch_sub(1, Relaxed);
            site.live.fetch_sub(1, Relaxed);
        }
    }
}
