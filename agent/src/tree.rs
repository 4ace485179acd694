//! The task tree: who spawned whom (Go's "created by"), what became of each task's
//! `JoinHandle` (awaited, aborted, or dropped: detached), and orphans: live tasks whose
//! parent finished and whose handle was dropped, so nothing will ever wait for them or
//! stop them.
//!
//! - A task that spawns children gets a [`Family`] (allocated at its first child): its id
//!   and site, whether it finished, and how many of its live children of each site are
//!   detached. Each child holds the family (`Arc`), so it outlives the parent.
//! - A task spawned through the agent's `JoinHandle` shares a *link* with its handle: one
//!   word in a slab (no allocation per task), freed once both sides are gone; its
//!   generation makes a stale `AbortHandle` harmless.
//! - Counts go to the per-thread [`SiteCounters`](crate::shard::SiteCounters) of the
//!   child's site: detached, orphans (and per parent site), awaited, aborted.
//!
//! Every transition that decides "orphan" happens under the family's lock: a handle drop
//! (detached; an orphan at once if the parent is done), the parent's end (its detached
//! children become orphans), a child's end (it leaves whichever count holds it).

use std::cell::RefCell;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering::*};
use std::sync::{Arc, Mutex};

use crate::registry::{lock, Site};
use crate::shard::{self, SiteCounters};

/// A parent task, as its children see it.
pub(crate) struct Family {
    pub id: u64,
    pub site: &'static Site,
    state: Mutex<FamilyState>,
}

#[derive(Default)]
struct FamilyState {
    done: bool,
    /// Live detached children per child site.
    detached: Vec<(&'static Site, i64)>,
}

impl Family {
    pub fn new(id: u64, site: &'static Site) -> Family {
        Family {
            id,
            site,
            state: Mutex::new(FamilyState::default()),
        }
    }

    pub fn is_done(&self) -> bool {
        lock(&self.state).done
    }

    fn add_detached(st: &mut FamilyState, site: &'static Site, n: i64) {
        match st.detached.iter_mut().find(|(s, _)| std::ptr::eq(*s, site)) {
            Some((_, c)) => *c += n,
            None => st.detached.push((site, n)),
        }
    }

    /// A child of `child_site` was detached (its handle dropped while it runs).
    fn child_detached(&self, child_site: &'static Site) {
        let mut st = lock(&self.state);
        if st.done {
            orphans(child_site, self.site, 1);
        } else {
            Self::add_detached(&mut st, child_site, 1);
        }
    }

    /// A detached child of `child_site` ended.
    fn detached_child_ended(&self, child_site: &'static Site) {
        let mut st = lock(&self.state);
        if st.done {
            orphans(child_site, self.site, -1);
        } else {
            Self::add_detached(&mut st, child_site, -1);
        }
    }

    /// The parent finished: its detached children are orphans now.
    pub fn finish(&self) {
        let mut st = lock(&self.state);
        st.done = true;
        for (site, n) in std::mem::take(&mut st.detached) {
            if n != 0 {
                orphans(site, self.site, n);
            }
        }
    }
}

fn counters(site: &'static Site) -> &'static SiteCounters {
    shard::mine().counters(site)
}

fn orphans(child: &'static Site, parent: &'static Site, n: i64) {
    let c = counters(child);
    c.orphans.fetch_add(n, Relaxed);
    c.edge(parent_key(Some(parent)))
        .orphans
        .fetch_add(n, Relaxed);
}

/// The key of a parent site in the per-site edge tables.
pub(crate) fn parent_key(parent: Option<&'static Site>) -> usize {
    parent.map_or(shard::ROOT_PARENT, |s| s as *const Site as usize)
}

// ---------------------------------------------------------------------------------------
// Links between a task and its JoinHandle

const HANDLE_GONE: u64 = 1;
const TASK_DONE: u64 = 2;
const AWAITED: u64 = 4;
const ABORTED: u64 = 8;
/// The handle returned the task's output: gone, but not detached.
const HANDLE_FINISHED: u64 = 16;

const LINK_CHUNK: usize = 4096;
const LINK_CHUNKS: usize = 4096;

struct LinkSlab {
    chunks: Box<[AtomicPtr<[AtomicU64; LINK_CHUNK]>]>,
    /// Chunks allocated so far, and the free slots no thread holds.
    pool: Mutex<(usize, Vec<u32>)>,
}

static SLAB: std::sync::OnceLock<LinkSlab> = std::sync::OnceLock::new();

fn slab() -> &'static LinkSlab {
    SLAB.get_or_init(|| LinkSlab {
        chunks: (0..LINK_CHUNKS)
            .map(|_| AtomicPtr::new(std::ptr::null_mut()))
            .collect(),
        pool: Mutex::new((0, Vec::new())),
    })
}

thread_local! {
    static FREE: RefCell<Vec<u32>> = const { RefCell::new(Vec::new()) };
}

/// Free slots a thread keeps before handing half to the pool.
const LOCAL_FREE: usize = 1024;

fn word(idx: u32) -> Option<&'static AtomicU64> {
    let chunk = slab().chunks.get(idx as usize / LINK_CHUNK)?.load(Acquire);
    // SAFETY: chunks are published once (Release, under the pool lock) and never freed.
    (!chunk.is_null()).then(|| unsafe { &(*chunk)[idx as usize % LINK_CHUNK] })
}

fn alloc() -> Option<u32> {
    if let Ok(Some(i)) = FREE.try_with(|f| f.borrow_mut().pop()) {
        return Some(i);
    }
    let mut pool = lock(&slab().pool);
    if pool.1.is_empty() {
        let c = pool.0;
        if c >= LINK_CHUNKS {
            return None;
        }
        let chunk: Box<[AtomicU64; LINK_CHUNK]> =
            Box::new(std::array::from_fn(|_| AtomicU64::new(0)));
        slab().chunks[c].store(Box::into_raw(chunk), Release);
        pool.0 += 1;
        pool.1.extend(
            (0..LINK_CHUNK as u32)
                .rev()
                .map(|i| (c * LINK_CHUNK) as u32 + i),
        );
    }
    let take = pool.1.len().min(64);
    let at = pool.1.len() - take;
    let batch: Vec<u32> = pool.1.drain(at..).collect();
    drop(pool);
    let mut batch = batch;
    let first = batch.pop();
    let _ = FREE.try_with(|f| f.borrow_mut().extend(batch.iter().copied()));
    first
}

fn free(idx: u32) {
    let pushed = FREE.try_with(|f| {
        let mut f = f.borrow_mut();
        f.push(idx);
        if f.len() > LOCAL_FREE {
            let half = f.split_off(LOCAL_FREE / 2);
            lock(&slab().pool).1.extend(half);
        }
    });
    if pushed.is_err() {
        lock(&slab().pool).1.push(idx);
    }
}

/// Sets `bits` in link `idx` of generation `gen`; the bits before, or None if the link is
/// no longer that generation's.
fn set(idx: u32, gen: u32, bits: u64) -> Option<u64> {
    let w = word(idx)?;
    let mut cur = w.load(Acquire);
    loop {
        if (cur >> 32) as u32 != gen {
            return None;
        }
        match w.compare_exchange_weak(cur, cur | bits, AcqRel, Acquire) {
            Ok(_) => return Some(cur & 0xffff_ffff),
            Err(now) => cur = now,
        }
    }
}

/// Both sides are gone: the slot goes back, with its generation bumped.
fn release(idx: u32, gen: u32) {
    if let Some(w) = word(idx) {
        w.store(u64::from(gen.wrapping_add(1)) << 32, Release);
        free(idx);
    }
}

/// The task side of a link (held in the task's record).
#[derive(Clone, Copy, Debug)]
pub(crate) struct TaskLink {
    idx: u32,
    gen: u32,
}

/// The handle side: held by the agent's `JoinHandle`. Dropping it without
/// [`HandleLink::finished`] means the handle was dropped while the task may still run.
pub(crate) struct HandleLink {
    link: Option<TaskLink>,
    site: &'static Site,
    parent: Option<Arc<Family>>,
}

/// A weak handle on a link for `AbortHandle`s: only marks aborts, and only while the link
/// is still the same task's.
#[derive(Clone, Copy, Debug)]
pub(crate) struct AbortLink(Option<TaskLink>);

/// A new link for a task of `site` whose parent is `parent`: the task's and the handle's
/// sides. None for the task side when the slab is full (then nothing is recorded).
pub(crate) fn link(
    site: &'static Site,
    parent: Option<Arc<Family>>,
) -> (Option<TaskLink>, HandleLink) {
    let link = alloc().and_then(|idx| {
        let w = word(idx)?;
        let gen = (w.load(Acquire) >> 32) as u32;
        Some(TaskLink { idx, gen })
    });
    (link, HandleLink { link, site, parent })
}

impl std::fmt::Debug for HandleLink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HandleLink")
            .field("link", &self.link)
            .finish()
    }
}

impl HandleLink {
    /// The handle is polled: its owner awaits the task.
    #[inline]
    pub fn awaited(&self) {
        if let Some(l) = self.link {
            if let Some(w) = word(l.idx) {
                if w.load(Relaxed) & AWAITED == 0 {
                    set(l.idx, l.gen, AWAITED);
                }
            }
        }
    }

    /// The handle returned the task's output (or error): the task is over.
    #[inline]
    pub fn finished(&mut self) {
        if let Some(l) = self.link.take() {
            if set(l.idx, l.gen, HANDLE_FINISHED).is_some_and(|b| b & TASK_DONE != 0) {
                release(l.idx, l.gen);
            }
        }
    }

    /// `abort()` was called on the handle.
    #[inline]
    pub fn aborted(&self) {
        self.abort_link().aborted();
    }

    /// A link for an `AbortHandle`.
    pub fn abort_link(&self) -> AbortLink {
        AbortLink(self.link)
    }
}

impl AbortLink {
    /// `abort()` was called.
    pub fn aborted(&self) {
        if let Some(l) = self.0 {
            set(l.idx, l.gen, ABORTED);
        }
    }
}

impl Drop for HandleLink {
    fn drop(&mut self) {
        let Some(l) = self.link.take() else {
            return;
        };
        match set(l.idx, l.gen, HANDLE_GONE) {
            Some(b) if b & TASK_DONE != 0 => release(l.idx, l.gen),
            Some(_) => {
                counters(self.site).detached.fetch_add(1, Relaxed);
                if let Some(f) = &self.parent {
                    f.child_detached(self.site);
                }
            }
            None => {}
        }
    }
}

/// The task of `site` (child of `parent`) with link `link` ended: settles its handle's
/// counts.
pub(crate) fn task_ended(site: &'static Site, parent: Option<&Family>, link: Option<TaskLink>) {
    let Some(l) = link else {
        return;
    };
    let Some(bits) = set(l.idx, l.gen, TASK_DONE) else {
        return;
    };
    let c = counters(site);
    if bits & AWAITED != 0 {
        c.awaited.fetch_add(1, Relaxed);
    }
    if bits & ABORTED != 0 {
        c.aborted.fetch_add(1, Relaxed);
    }
    if bits & HANDLE_GONE != 0 {
        c.detached.fetch_add(-1, Relaxed);
        if let Some(f) = parent {
            f.detached_child_ended(site);
        }
    }
    if bits & (HANDLE_GONE | HANDLE_FINISHED) != 0 {
        release(l.idx, l.gen);
    }
}

/// Whether a task with `link` has had its handle dropped (for task lists).
pub(crate) fn handle_state(link: Option<TaskLink>) -> crate::wire::HandleState {
    use crate::wire::HandleState;
    let Some(l) = link else {
        return HandleState::Held;
    };
    let Some(w) = word(l.idx) else {
        return HandleState::Held;
    };
    let v = w.load(Relaxed);
    if (v >> 32) as u32 != l.gen {
        return HandleState::Held;
    }
    if v & ABORTED != 0 {
        HandleState::Aborted
    } else if v & HANDLE_GONE != 0 {
        HandleState::Dropped
    } else if v & (HANDLE_FINISHED | AWAITED) != 0 {
        HandleState::Awaited
    } else {
        HandleState::Held
    }
}
