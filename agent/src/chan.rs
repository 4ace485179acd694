//! The channel table: one [`ChanMeta`] per live instrumented channel, shared by all its
//! handles, and one [`ChanSite`] per creation site with the site's aggregates.
//!
//! Hot-path rules: a message costs one relaxed atomic add on the channel's own cache line
//! (sender-side and receiver-side fields are on separate lines, like tokio's own; a sole
//! receiver does a plain load and store) and a compare with the agent thread's cached
//! clock. Only when that clock has moved on (every ~100 ms) does a message stamp its
//! "last send" time and fold the channel's new messages into its creation site's totals,
//! so busy channels of one site do not fight over the site's counters. A dropped channel
//! folds the rest. Before the agent is started nothing is stamped (nobody can look).
//! Creating or dropping a channel takes its creation site's short table lock.

use std::collections::{BTreeMap, HashMap};
use std::panic::Location as StdLocation;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex, RwLock, Weak};

use foldhash::fast::FixedState;

use crate::clock;
use crate::registry::{lock, registry};
use crate::wire::{self, ChannelKind, LocId};

/// Aligns its content to a cache line, so fields written by different threads do not
/// share one.
#[repr(align(64))]
#[derive(Default)]
pub(crate) struct Line<T>(pub T);

impl<T> std::ops::Deref for Line<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

/// Stores `now + 1` into a "last time" stamp (0 = never) unless it already holds it:
/// a load of a line that is rarely written stays cheap under sharing. True when it
/// stored.
#[inline]
fn stamp(slot: &AtomicU64, now: u64) -> bool {
    let v = now + 1;
    if slot.load(Relaxed) < v {
        slot.fetch_max(v, Relaxed);
        return true;
    }
    false
}

/// Adds the messages of `count` not yet in `folded` to `site` (each exactly once, even
/// with several threads folding at once).
fn fold(count: &AtomicU64, folded: &AtomicU64, site: &SideStats, now: u64) {
    let c = count.load(Relaxed);
    let prev = folded.fetch_max(c, Relaxed);
    if c > prev {
        site.count.fetch_add(c - prev, Relaxed);
    }
    stamp(&site.last, now);
}

fn unstamp(v: u64) -> Option<u64> {
    v.checked_sub(1)
}

#[derive(Default)]
pub(crate) struct SideStats {
    pub count: AtomicU64,
    /// Agent ms + 1 of the last success (0 = never).
    pub last: AtomicU64,
}

/// Aggregates of all channels created at one source location.
pub(crate) struct ChanSite {
    pub loc: LocId,
    pub kind: ChannelKind,
    pub live: AtomicU64,
    pub created: AtomicU64,
    pub sends: Line<SideStats>,
    pub recvs: Line<SideStats>,
    /// Live channels of this site by id (oldest first).
    pub table: Mutex<BTreeMap<u64, Weak<ChanMeta>>>,
}

impl ChanSite {
    pub fn stats(&self) -> wire::ChannelSiteStats {
        wire::ChannelSiteStats {
            site: self.loc,
            kind: self.kind,
            live: self.live.load(Relaxed),
            created: self.created.load(Relaxed),
            sends: self.sends.count.load(Relaxed),
            recvs: self.recvs.count.load(Relaxed),
            last_send_ms: unstamp(self.sends.last.load(Relaxed)),
            last_recv_ms: unstamp(self.recvs.last.load(Relaxed)),
        }
    }

    /// The oldest `limit` live channels of this site that something waited on.
    #[allow(dead_code)] // for a channel-list request; used by tests today
    pub fn channels(&self, limit: usize) -> Vec<wire::ChannelStats> {
        let metas: Vec<Arc<ChanMeta>> = lock(&self.table)
            .values()
            .filter_map(Weak::upgrade)
            .take(limit)
            .collect();
        metas.iter().map(|m| m.stats()).collect()
    }
}

/// All channel creation sites. Sites live for the whole process (their number is bounded
/// by the program's source), so they are leaked and referred to as `&'static`.
#[derive(Default)]
pub(crate) struct ChanSites {
    by_loc: RwLock<HashMap<LocId, &'static ChanSite>>,
    list: RwLock<Vec<&'static ChanSite>>,
}

impl ChanSites {
    fn get(&self, loc: LocId, kind: ChannelKind) -> &'static ChanSite {
        if let Some(s) = self
            .by_loc
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&loc)
        {
            return s;
        }
        let mut map = self.by_loc.write().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = map.get(&loc) {
            return s;
        }
        let site: &'static ChanSite = Box::leak(Box::new(ChanSite {
            loc,
            kind,
            live: AtomicU64::new(0),
            created: AtomicU64::new(0),
            sends: Line::default(),
            recvs: Line::default(),
            table: Mutex::new(BTreeMap::new()),
        }));
        map.insert(loc, site);
        self.list
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(site);
        site
    }

    /// Every channel site, in creation order.
    pub fn all(&self) -> Vec<&'static ChanSite> {
        self.list.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    #[allow(dead_code)] // tests and future channel-list requests
    pub fn by_loc(&self, loc: LocId) -> Option<&'static ChanSite> {
        self.by_loc
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&loc)
            .copied()
    }
}

thread_local! {
    /// Per-thread cache of creation-site lookups, keyed by the `Location`'s address.
    /// (foldhash: SipHash cost ~45 instructions of every channel creation.)
    static SITE_CACHE: std::cell::RefCell<HashMap<usize, &'static ChanSite, FixedState>> =
        std::cell::RefCell::new(HashMap::with_hasher(FixedState::default()));
}

fn chan_site(loc: &'static StdLocation<'static>, kind: ChannelKind) -> &'static ChanSite {
    let ptr = loc as *const _ as usize;
    let cached = SITE_CACHE
        .try_with(|c| c.borrow().get(&ptr).copied())
        .ok()
        .flatten();
    if let Some(s) = cached {
        return s;
    }
    let reg = registry();
    let site = reg.chan_sites().get(reg.intern_cached(loc), kind);
    let _ = SITE_CACHE.try_with(|c| c.borrow_mut().insert(ptr, site));
    site
}

static NEXT_CHANNEL: AtomicU64 = AtomicU64::new(1);

/// One live channel, shared by its handles (weak ones too). Dropped with the last handle,
/// which takes it out of its site's table.
pub(crate) struct ChanMeta {
    pub id: u64,
    pub kind: ChannelKind,
    pub site: &'static ChanSite,
    pub capacity: Option<u64>,
    tx: Line<Side>,
    rx: Line<Side>,
    /// `close()` was called on the receiving side.
    closed: AtomicBool,
    /// In its site's table (done at its first wait: a channel nobody waits on costs no
    /// lock to create or drop).
    listed: AtomicBool,
}

/// One direction of a channel.
#[derive(Default)]
struct Side {
    /// Live handles (senders or receivers).
    handles: AtomicU64,
    /// Messages sent / received.
    count: AtomicU64,
    /// Part of `count` already added to the site's totals.
    folded: AtomicU64,
    /// Agent ms + 1 of the last success (0 = never), at cached-clock resolution.
    last: AtomicU64,
}

impl ChanMeta {
    /// A new channel created at `loc`; handles are counted by the tokens built from it.
    pub fn new(
        kind: ChannelKind,
        capacity: Option<u64>,
        loc: &'static StdLocation<'static>,
    ) -> Arc<ChanMeta> {
        let site = chan_site(loc, kind);
        let meta = Arc::new(ChanMeta {
            id: NEXT_CHANNEL.fetch_add(1, Relaxed),
            kind,
            site,
            capacity,
            tx: Line::default(),
            rx: Line::default(),
            closed: AtomicBool::new(false),
            listed: AtomicBool::new(false),
        });
        site.created.fetch_add(1, Relaxed);
        site.live.fetch_add(1, Relaxed);
        meta
    }

    /// Puts the channel in its site's table (so a group's channel state can be found), the
    /// first time something waits on it.
    #[inline]
    pub fn list(self: &Arc<Self>) {
        if !self.listed.load(Relaxed) {
            self.list_slow();
        }
    }

    #[cold]
    #[inline(never)]
    fn list_slow(self: &Arc<Self>) {
        let mut table = lock(&self.site.table);
        if !self.listed.swap(true, Relaxed) {
            table.insert(self.id, Arc::downgrade(self));
        }
    }

    /// One message (or `n`) went in.
    #[inline]
    pub fn on_send(&self, n: u64) {
        self.tx.count.fetch_add(n, Relaxed);
        if let Some(now) = clock::ticked_now_ms() {
            if stamp(&self.tx.last, now) {
                fold(&self.tx.count, &self.tx.folded, &self.site.sends, now);
            }
        }
    }

    /// One message (or `n`) came out, through a receiver that may have company
    /// (broadcast, watch).
    #[inline]
    pub fn on_recv(&self, n: u64) {
        self.rx.count.fetch_add(n, Relaxed);
        self.recv_stamp();
    }

    /// One message (or `n`) came out through the channel's only receiver (mpsc,
    /// oneshot: receiving takes `&mut`), so no atomic add is needed.
    #[inline]
    pub fn on_recv_sole(&self, n: u64) {
        let c = self.rx.count.load(Relaxed);
        self.rx.count.store(c + n, Relaxed);
        self.recv_stamp();
    }

    #[inline]
    fn recv_stamp(&self) {
        if let Some(now) = clock::ticked_now_ms() {
            if stamp(&self.rx.last, now) {
                fold(&self.rx.count, &self.rx.folded, &self.site.recvs, now);
            }
        }
    }

    /// The receiving side called `close()`.
    pub fn mark_closed(&self) {
        self.closed.store(true, Relaxed);
    }

    pub fn senders(&self) -> u64 {
        self.tx.handles.load(Relaxed)
    }

    pub fn receivers(&self) -> u64 {
        self.rx.handles.load(Relaxed)
    }

    pub fn stats(&self) -> wire::ChannelStats {
        let senders = self.senders();
        let receivers = self.receivers();
        let sent = self.tx.count.load(Relaxed);
        let received = self.rx.count.load(Relaxed);
        let explicit = self.closed.load(Relaxed);
        let (len, closed) = match self.kind {
            ChannelKind::Mpsc | ChannelKind::UnboundedMpsc => (
                Some(sent.saturating_sub(received)),
                explicit || receivers == 0 || senders == 0,
            ),
            ChannelKind::Oneshot => (
                Some(sent.saturating_sub(received)),
                explicit || receivers == 0 || (senders == 0 && sent == 0),
            ),
            ChannelKind::Broadcast | ChannelKind::Watch => (None, senders == 0),
            // Not channels: their state is in `LockState` (protocol 2).
            _ => (None, explicit),
        };
        wire::ChannelStats {
            id: self.id,
            kind: self.kind,
            site: self.site.loc,
            capacity: self.capacity,
            len,
            senders,
            receivers,
            closed,
            last_send_ms: unstamp(self.tx.last.load(Relaxed)),
            last_recv_ms: unstamp(self.rx.last.load(Relaxed)),
        }
    }
}

impl Drop for ChanMeta {
    fn drop(&mut self) {
        let now = clock::cached_now_ms();
        if self.tx.count.load(Relaxed) > self.tx.folded.load(Relaxed) {
            fold(&self.tx.count, &self.tx.folded, &self.site.sends, now);
        }
        if self.rx.count.load(Relaxed) > self.rx.folded.load(Relaxed) {
            fold(&self.rx.count, &self.rx.folded, &self.site.recvs, now);
        }
        self.site.live.fetch_sub(1, Relaxed);
        if self.listed.load(Relaxed) {
            lock(&self.site.table).remove(&self.id);
        }
    }
}

/// Names a channel without keeping it alive: what a blocked-group waiter records.
#[derive(Clone, Copy)]
pub(crate) struct ChanRef {
    pub id: u64,
    pub site: &'static ChanSite,
}

impl ChanRef {
    /// The channel's state now, if it is still alive.
    pub fn stats(&self) -> Option<wire::ChannelStats> {
        let meta = lock(&self.site.table).get(&self.id).and_then(Weak::upgrade);
        meta.map(|m| m.stats())
    }
}

/// A counted sending handle: the count goes up when built or cloned, down when dropped.
pub(crate) struct TxToken(Arc<ChanMeta>);

impl TxToken {
    pub fn new(meta: Arc<ChanMeta>) -> TxToken {
        meta.tx.handles.fetch_add(1, Relaxed);
        TxToken(meta)
    }
    pub fn meta(&self) -> &Arc<ChanMeta> {
        &self.0
    }
}

impl Clone for TxToken {
    fn clone(&self) -> TxToken {
        TxToken::new(self.0.clone())
    }
}

impl Drop for TxToken {
    fn drop(&mut self) {
        self.0.tx.handles.fetch_sub(1, Relaxed);
    }
}

/// A counted receiving handle.
pub(crate) struct RxToken(Arc<ChanMeta>);

impl RxToken {
    pub fn new(meta: Arc<ChanMeta>) -> RxToken {
        meta.rx.handles.fetch_add(1, Relaxed);
        RxToken(meta)
    }
    pub fn meta(&self) -> &Arc<ChanMeta> {
        &self.0
    }
}

impl Clone for RxToken {
    fn clone(&self) -> RxToken {
        RxToken::new(self.0.clone())
    }
}

impl Drop for RxToken {
    fn drop(&mut self) {
        self.0.rx.handles.fetch_sub(1, Relaxed);
    }
}
