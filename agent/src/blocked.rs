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

use std::collections::HashMap;
use std::panic::Location as StdLocation;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use foldhash::fast::FixedState;

use crate::chan::ChanMeta;
use crate::clock;
use crate::registry::{lock, registry, Site, TaskCell, STATE_BLOCKED, STATE_IDLE, STATE_RUNNING};
use crate::stack::RESAMPLE_MS;
use crate::task;
use crate::wire::{self, ChannelKind, GroupKey, LocId, Op, StackId};

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
    chan: Option<Arc<ChanMeta>>,
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
    /// Cached stack per blocking call site, with the time it was captured.
    stacks: HashMap<LocId, (Option<StackId>, u64), FixedState>,
}

/// One waiter as listed on request.
pub(crate) struct WaiterInfo {
    pub task_id: u64,
    pub spawned_ms: u64,
    pub since_ms: u64,
}

impl BlockedTable {
    /// The cached stack of `call_site`, unless it is missing or older than the re-sample
    /// period.
    fn cached_stack(&self, call_site: LocId, now: u64) -> Option<Option<StackId>> {
        self.stacks
            .get(&call_site)
            .filter(|(_, at)| now.saturating_sub(*at) < RESAMPLE_MS)
            .map(|(id, _)| *id)
    }

    fn insert(
        &mut self,
        key: GroupKey,
        kind: ChannelKind,
        since_ms: u64,
        task: Option<&TaskCell>,
        chan: Arc<ChanMeta>,
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
                    channel: head.and_then(|w| w.chan.as_ref()).map(|c| c.stats()),
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

/// Whose wait this is: an instrumented task, or an operation outside one.
enum Owner {
    Task(Arc<TaskCell>),
    Uninstrumented(Arc<Site>),
}

impl Owner {
    fn site(&self) -> &Site {
        match self {
            Owner::Task(c) => &c.site,
            Owner::Uninstrumented(s) => s,
        }
    }
}

/// A registered wait: one waiter slot in its site's table.
struct Registration {
    owner: Owner,
    /// `task::current_ptr()` at registration (0 outside instrumented tasks).
    task_ptr: usize,
    slot: u32,
    op: Op,
}

/// The blocked-state slot of one channel future (or pollable handle).
#[derive(Default)]
pub(crate) struct Wait {
    reg: Option<Registration>,
}

impl Wait {
    pub const fn new() -> Wait {
        Wait { reg: None }
    }

    /// The operation returned Pending. Registers the current task as blocked the first
    /// time; later calls from the same task only compare a pointer.
    #[inline]
    pub fn pending(
        &mut self,
        op: Op,
        chan: &Arc<ChanMeta>,
        call_site: &'static StdLocation<'static>,
    ) {
        let current = task::current_ptr();
        if let Some(reg) = &self.reg {
            if reg.task_ptr == current {
                return;
            }
            // Moved to another task (or into/out of one): register anew.
            self.ready();
        }
        self.reg = Some(register(op, chan, call_site, current));
    }

    /// The operation completed (or gave up): the task no longer waits here.
    #[inline]
    pub fn ready(&mut self) {
        if let Some(reg) = self.reg.take() {
            unregister(reg);
        }
    }

    #[allow(dead_code)]
    pub fn is_registered(&self) -> bool {
        self.reg.is_some()
    }
}

impl Drop for Wait {
    fn drop(&mut self) {
        self.ready();
    }
}

impl std::fmt::Debug for Wait {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Wait")
            .field("registered", &self.reg.is_some())
            .finish()
    }
}

fn counter(site: &Site, send: bool) -> &std::sync::atomic::AtomicU64 {
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
    chan: &Arc<ChanMeta>,
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
    let mut inner = lock(&site.inner);
    let now = clock::coarse_now_ms();
    let stack = match inner.blocked.cached_stack(call, now) {
        Some(s) => s,
        None => {
            // Unwind outside the lock: this is the one expensive step, done once per
            // (spawn site, call site) per RESAMPLE_MS. We are inside the leaf future's
            // poll, so the await chain is on the stack right now.
            drop(inner);
            let s = reg.stacks().capture();
            inner = lock(&site.inner);
            inner.blocked.stacks.insert(call, (s, now));
            s
        }
    };
    let key = GroupKey {
        site: site.loc,
        op,
        channel_site: chan.site.loc,
        call_site: call,
        stack,
    };
    let since = clock::coarse_now_ms();
    let task = match &owner {
        Owner::Task(c) => Some(&**c),
        Owner::Uninstrumented(_) => None,
    };
    let slot = inner
        .blocked
        .insert(key, chan.kind, since, task, chan.clone());
    match &owner {
        Owner::Task(cell) => {
            // A task waiting in several futures at once (select!, join!) counts once,
            // under the op of its first wait.
            if cell.blocked_regs.fetch_add(1, Relaxed) == 0 {
                cell.blocked_is_send.store(op.is_send(), Relaxed);
                cell.blocked_slot.store(slot + 1, Relaxed);
                cell.state.store(STATE_BLOCKED, Relaxed);
                counter(site, op.is_send()).fetch_add(1, Relaxed);
            }
        }
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
        Owner::Task(cell) => {
            if cell.blocked_regs.fetch_sub(1, Relaxed) == 1 {
                counter(site, cell.blocked_is_send.load(Relaxed)).fetch_sub(1, Relaxed);
                cell.blocked_slot.store(0, Relaxed);
                let polling = task::current_ptr() == Arc::as_ptr(cell) as usize;
                let _ = cell.state.compare_exchange(
                    STATE_BLOCKED,
                    if polling { STATE_RUNNING } else { STATE_IDLE },
                    Relaxed,
                    Relaxed,
                );
            } else if cell.blocked_slot.load(Relaxed) == reg.slot + 1 {
                // Still waiting elsewhere; that wait's slot is not known here.
                cell.blocked_slot.store(0, Relaxed);
            }
        }
        Owner::Uninstrumented(site) => {
            counter(site, reg.op.is_send()).fetch_sub(1, Relaxed);
            site.live.fetch_sub(1, Relaxed);
        }
    }
}
