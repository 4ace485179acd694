//! The wire protocol between the agent (in the target process) and `leaktop`.
//!
//! This module is the one definition of the protocol: the attaching side and the recording
//! format both use these types, never a copy of them. It builds without the `runtime`
//! feature, so a client pulls in serde and postcard only.
//!
//! # Framing
//!
//! Every message travels in a frame: a little-endian `u32` payload length, then that many
//! bytes of [postcard]-encoded [`ClientMsg`] or [`AgentMsg`]. A frame longer than
//! [`MAX_FRAME`] (or [`MAX_CLIENT_FRAME`] for what a client sends to the agent) is an error;
//! the peer is dropped, nothing is allocated for it.
//!
//! # Session
//!
//! 1. The client connects and sends [`ClientMsg::Hello`] with its protocol version.
//! 2. The agent answers [`AgentMsg::Hello`] (pid, process start time, exe, build id, …) or
//!    [`AgentMsg::Refused`] with a reason (wrong uid, unsupported version) and closes.
//! 3. The client asks: [`ClientMsg::Snapshot`] for one snapshot, [`ClientMsg::Subscribe`]
//!    for one every `interval_ms`, [`ClientMsg::History`] for the per-site rings,
//!    [`ClientMsg::Tasks`] for the oldest tasks of a group.
//!
//! Locations (spawn sites, call sites, channel creation sites) and stacks are interned per
//! connection: [`AgentMsg::Location`] / [`AgentMsg::Stack`] define an id once, before the
//! first message that uses it; later messages carry only the id. Ids are stable for the
//! life of the agent, so a recording may concatenate them.
//!
//! # Evolution rules (additive)
//!
//! postcard is not self-describing: a struct's fields are its layout. So:
//! - never reorder, remove or retype a field or an enum variant that has shipped;
//! - new message kinds are new enum variants appended at the end of [`ClientMsg`] /
//!   [`AgentMsg`]; a receiver that cannot decode a frame (unknown variant) skips that frame
//!   (the length prefix makes that safe) and, on the agent side, answers
//!   [`AgentMsg::Error`];
//! - a changed layout of an existing message is a new variant (e.g. `SnapshotV2`) plus a
//!   bump of [`PROTOCOL_VERSION`]; the agent answers with the highest version both sides
//!   speak (`min(client, agent)`) and keeps sending the old variants to old clients;
//! - [`PROTOCOL_VERSION`] is bumped for every change, additive or not, and the agent
//!   refuses clients below [`MIN_PROTOCOL_VERSION`] with both versions in the reason.

#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

use serde::{Deserialize, Serialize};

/// The protocol version this build speaks.
pub const PROTOCOL_VERSION: u32 = 2;
/// The oldest protocol version this build still accepts.
pub const MIN_PROTOCOL_VERSION: u32 = 1;
/// Largest frame payload either side accepts from the agent (snapshots of huge programs).
pub const MAX_FRAME: usize = 32 * 1024 * 1024;
/// Largest frame payload the agent accepts from a client: requests are tiny.
pub const MAX_CLIENT_FRAME: usize = 64 * 1024;
/// Bytes of the length prefix.
pub const HEADER_LEN: usize = 4;
/// How the reason of [`AgentMsg::Refused`] begins when the agent stopped serving after an
/// internal error (a panic on its thread); the rest of the reason says which. The host
/// program runs on; restarting it brings the agent back.
pub const AGENT_STOPPED: &str = "agent stopped after an internal error";

/// Id of an interned [`Location`], stable for the life of the agent.
pub type LocId = u32;
/// Id of an interned raw stack, stable for the life of the agent.
pub type StackId = u32;

/// A source location (`std::panic::Location`, owned).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Location {
    pub file: String,
    pub line: u32,
    pub column: u32,
}

impl std::fmt::Display for Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}:{}", self.file, self.line, self.column)
    }
}

/// What a client sends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum ClientMsg {
    /// First message: the client's protocol version and a name for logs.
    Hello { protocol: u32, client: String },
    /// Send one [`Snapshot`] now.
    Snapshot,
    /// Send a [`Snapshot`] now and then every `interval_ms` (clamped by the agent to
    /// 50 ms ..= 1 h). A second `Subscribe` changes the interval.
    Subscribe { interval_ms: u32 },
    /// Stop the periodic snapshots.
    Unsubscribe,
    /// Send the per-site history rings ([`History`]), in one or more messages (parts of
    /// at most 65 536 samples, sent as the client reads, all with the same `end_ms`). A
    /// [`ClientMsg::Snapshot`] asked for during the transfer comes after its last part,
    /// and subscription snapshots pause until then.
    History,
    /// Send the oldest `limit` live tasks of a site, or only those of one blocked group.
    Tasks {
        site: LocId,
        group: Option<GroupKey>,
        limit: u32,
    },
    /// Send an open descriptor of the agent's own executable (SCM_RIGHTS), for
    /// symbolizing when its path is not reachable from the client.
    ExeFd,
    /// Liveness check; answered by [`AgentMsg::Pong`].
    Ping,
    // Protocol 2 (appended).
    /// Like [`ClientMsg::Tasks`], answered by [`AgentMsg::TasksV2`]; `group` is a
    /// [`WaitKey`] of a [`SnapshotV2`].
    TasksV2 {
        site: LocId,
        group: Option<WaitKey>,
        limit: u32,
    },
    /// Await chains of the tasks the runtime hooks count (plain `tokio::spawn`), from
    /// tokio's task dump: answered by [`AgentMsg::TaskDump`] within `timeout_ms` (clamped
    /// by the agent), with a note when the runtime did not answer in time.
    TaskDump { timeout_ms: u32 },
}

/// What the agent sends.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum AgentMsg {
    Hello(AgentHello),
    /// The connection is refused (wrong uid, unsupported protocol, too many clients);
    /// the agent closes it after this frame.
    Refused {
        reason: String,
    },
    /// Defines location `id` for this connection.
    Location {
        id: LocId,
        loc: Location,
    },
    /// Defines raw stack `id`: return addresses, innermost first, as captured in the target.
    Stack {
        id: StackId,
        frames: Vec<u64>,
    },
    /// The executable mappings of the target, to symbolize stacks later.
    Modules(Vec<Mapping>),
    Snapshot(Snapshot),
    History(History),
    Tasks(TaskList),
    /// Carries the executable's descriptor as ancillary data (SCM_RIGHTS). `ok` is false
    /// (and no descriptor attached) when the agent could not open it.
    ExeFd {
        ok: bool,
    },
    /// A request could not be served; the connection stays open.
    Error {
        message: String,
    },
    Pong,
    // Protocol 2 (appended). A protocol-2 agent sends these instead of `Snapshot`,
    // `History` and `Tasks`.
    SnapshotV2(SnapshotV2),
    HistoryV2(HistoryV2),
    TasksV2(TaskListV2),
    /// Defines task name `id` (from `task::Builder::name`) for this connection.
    Name {
        id: NameId,
        name: String,
    },
    TaskDump(TaskDump),
}

/// The agent's half of the handshake.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct AgentHello {
    /// Protocol version used on this connection (`min(client, agent)`).
    pub protocol: u32,
    /// `leaktop-agent` crate version.
    pub agent_version: String,
    pub pid: u32,
    /// Field 22 of `/proc/<pid>/stat` (clock ticks since boot): with the pid it names
    /// one process for good, so a reused pid is never mistaken for the old one.
    pub start_time_ticks: u64,
    /// `/proc/self/exe` as the target sees it.
    pub exe: String,
    /// GNU build id of the executable (empty when it has none).
    pub build_id: Vec<u8>,
    /// Effective uid of the target.
    pub uid: u32,
    /// Wall clock (ms since the Unix epoch) at the agent's time origin: every `*_ms`
    /// field in the protocol is milliseconds since that origin.
    pub origin_unix_ms: u64,
    /// Agent time (ms since origin) when this hello was sent.
    pub now_ms: u64,
    /// Interval of the history samples.
    pub sample_interval_ms: u32,
    /// Number of samples each history ring holds at most (fewer when the agent's history
    /// memory cap is shared by many sites).
    pub history_len: u32,
    /// Maximum number of distinct spawn sites tracked; more fold into one "other" row.
    pub site_cap: u32,
}

/// What a spawn-site row stands for.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SiteKind {
    /// A real `#[track_caller]` spawn site.
    Spawn,
    /// Channel operations in tasks not spawned through the agent.
    Uninstrumented,
    /// Sites beyond the site cap, folded together.
    Other,
    // Protocol 2 (appended).
    /// A `spawn_blocking` site: closures on tokio's blocking pool.
    Blocking,
}

impl SiteKind {
    /// The `site` label of a synthetic row in metrics (`site="<other>"`); `None` for a
    /// real site, which is labelled by its location.
    pub fn metric_label(self) -> Option<&'static str> {
        match self {
            SiteKind::Uninstrumented => Some("<uninstrumented>"),
            SiteKind::Other => Some("<other>"),
            SiteKind::Spawn | SiteKind::Blocking => None,
        }
    }

    /// The name of a synthetic row in reports and the live view; `None` for a real site.
    pub fn row_label(self) -> Option<&'static str> {
        match self {
            SiteKind::Uninstrumented => Some("<uninstrumented tasks>"),
            SiteKind::Other => Some("<other sites, past the site cap>"),
            SiteKind::Spawn | SiteKind::Blocking => None,
        }
    }
}

/// Counters of one spawn site, kept incrementally in the agent.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct SiteStats {
    pub site: LocId,
    pub kind: Option<SiteKind>,
    /// Tasks alive now (spawned, future not yet dropped).
    pub live: u64,
    /// Tasks inside `poll` right now.
    pub running: u64,
    /// Tasks pending on an instrumented send-like operation.
    pub blocked_send: u64,
    /// Tasks pending on an instrumented receive-like operation.
    pub blocked_recv: u64,
    /// Tasks ever spawned at this site.
    pub spawned: u64,
    /// Tasks whose future completed, panicked or was dropped (aborted).
    pub completed: u64,
    /// Spawn time (agent ms) of the oldest live task.
    pub oldest_live_ms: Option<u64>,
}

impl SiteStats {
    /// Live tasks that are neither running nor blocked on an instrumented channel.
    pub fn idle(&self) -> u64 {
        self.live
            .saturating_sub(self.running)
            .saturating_sub(self.blocked_send)
            .saturating_sub(self.blocked_recv)
    }
}

/// The channel operation a task waits in.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Op {
    Send,
    Reserve,
    Recv,
    Changed,
    /// Waiting for the other side to close (`Sender::closed`).
    Closed,
    Other,
    // Protocol 2 (appended: postcard encodes variants by index).
    /// `Mutex::lock` (and its owned variant).
    Lock,
    /// `RwLock::read` (and its owned variant).
    Read,
    /// `RwLock::write` (and its owned variant).
    Write,
    /// `Semaphore::acquire` / `acquire_many` (and their owned variants).
    Acquire,
    /// `Notify::notified`.
    Notified,
    /// `Barrier::wait`.
    BarrierWait,
    /// Waiting for another task to initialise a `OnceCell` / `SetOnce`.
    Init,
    /// Awaiting an instrumented task's `JoinHandle`, or `JoinSet::join_next`.
    Join,
    /// An uninstrumented wait (a socket, a timer, another library's channel, …): the agent
    /// knows only the await chain; `leaktop` names the reason from its symbols.
    Wait,
    /// Polled, returned Pending and registered no waker at all (its first poll): nothing
    /// can wake it (`std::future::pending()`, a hand-written future that forgets its
    /// waker). The chain is the task's root future.
    Pending,
    /// Not waiting: it woke itself (`yield_now`, an exhausted cooperative budget) and
    /// waits for a worker.
    Yield,
    /// Pending, but no sampled poll saw where (the capture budget was spent, or its leaf
    /// kept a waker from an unsampled poll). The chain is the task's root future.
    Uncaptured,
}

impl Op {
    /// Send-like ops count as "blocked send", everything else as "blocked recv" (in
    /// protocol 1; protocol 2 counts sync waits and uninstrumented waits apart, see
    /// [`Op::is_sync`] and [`Op::Wait`]).
    pub fn is_send(self) -> bool {
        matches!(self, Op::Send | Op::Reserve)
    }
    /// Channel operations (protocol 1's ops).
    pub fn is_channel(self) -> bool {
        matches!(
            self,
            Op::Send | Op::Reserve | Op::Recv | Op::Changed | Op::Closed | Op::Other
        )
    }
    /// Waits on an instrumented synchronisation primitive or task handle.
    pub fn is_sync(self) -> bool {
        matches!(
            self,
            Op::Lock
                | Op::Read
                | Op::Write
                | Op::Acquire
                | Op::Notified
                | Op::BarrierWait
                | Op::Init
                | Op::Join
        )
    }
    /// Recorded by the task wrapper from a poll (not by an instrumented operation).
    pub fn is_poll_scoped(self) -> bool {
        matches!(self, Op::Wait | Op::Pending | Op::Yield | Op::Uncaptured)
    }
    pub fn name(self) -> &'static str {
        match self {
            Op::Send => "chan send",
            Op::Reserve => "chan reserve",
            Op::Recv => "chan recv",
            Op::Changed => "watch changed",
            Op::Closed => "chan closed",
            Op::Other => "chan wait",
            Op::Lock => "mutex lock",
            Op::Read => "rwlock read",
            Op::Write => "rwlock write",
            Op::Acquire => "semaphore acquire",
            Op::Notified => "notify",
            Op::BarrierWait => "barrier wait",
            Op::Init => "once init",
            Op::Join => "join",
            Op::Wait => "wait",
            Op::Pending => "pending forever",
            Op::Yield => "runnable",
            Op::Uncaptured => "not captured",
        }
    }
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ChannelKind {
    Mpsc,
    UnboundedMpsc,
    Oneshot,
    Broadcast,
    Watch,
    // Protocol 2 (appended): the other instrumented resources a task can wait on.
    Mutex,
    RwLock,
    Semaphore,
    Notify,
    Barrier,
    OnceCell,
    SetOnce,
    /// An instrumented task's `JoinHandle` (its "creation site" is the task's spawn site).
    JoinHandle,
    JoinSet,
}

impl ChannelKind {
    pub fn name(self) -> &'static str {
        match self {
            ChannelKind::Mpsc => "mpsc",
            ChannelKind::UnboundedMpsc => "unbounded mpsc",
            ChannelKind::Oneshot => "oneshot",
            ChannelKind::Broadcast => "broadcast",
            ChannelKind::Watch => "watch",
            ChannelKind::Mutex => "Mutex",
            ChannelKind::RwLock => "RwLock",
            ChannelKind::Semaphore => "Semaphore",
            ChannelKind::Notify => "Notify",
            ChannelKind::Barrier => "Barrier",
            ChannelKind::OnceCell => "OnceCell",
            ChannelKind::SetOnce => "SetOnce",
            ChannelKind::JoinHandle => "JoinHandle",
            ChannelKind::JoinSet => "JoinSet",
        }
    }
    /// A channel (protocol 1's kinds), as opposed to a lock, a cell or a task handle.
    pub fn is_channel(self) -> bool {
        matches!(
            self,
            ChannelKind::Mpsc
                | ChannelKind::UnboundedMpsc
                | ChannelKind::Oneshot
                | ChannelKind::Broadcast
                | ChannelKind::Watch
        )
    }
}

/// Identity of a blocked group: tasks of one spawn site waiting in the same op, on a
/// channel created at the same place, called from the same place, with the same stack.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub site: LocId,
    pub op: Op,
    pub channel_site: LocId,
    pub call_site: LocId,
    pub stack: Option<StackId>,
}

/// State of one channel at snapshot time.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ChannelStats {
    pub id: u64,
    pub kind: ChannelKind,
    pub site: LocId,
    pub capacity: Option<u64>,
    pub len: Option<u64>,
    pub senders: u64,
    pub receivers: u64,
    pub closed: bool,
    /// Agent ms of the last successful send / receive (None: never).
    pub last_send_ms: Option<u64>,
    pub last_recv_ms: Option<u64>,
}

/// Tasks blocked at the same place, with the age of the oldest.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct BlockedGroup {
    pub key: GroupKey,
    pub kind: ChannelKind,
    pub count: u64,
    /// Agent ms since which the oldest task of the group has been blocked.
    pub oldest_since_ms: u64,
    /// The channel the oldest task waits on.
    pub channel: Option<ChannelStats>,
}

/// Channels of one creation site, aggregated.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ChannelSiteStats {
    pub site: LocId,
    pub kind: ChannelKind,
    /// Channels from this site alive now / ever created.
    pub live: u64,
    pub created: u64,
    pub sends: u64,
    pub recvs: u64,
    pub last_send_ms: Option<u64>,
    pub last_recv_ms: Option<u64>,
}

/// One snapshot of the task table: O(sites + groups + channel sites), never O(tasks).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Snapshot {
    /// Increases by one per snapshot built by this agent (any client).
    pub seq: u64,
    /// Agent ms when the snapshot was taken.
    pub now_ms: u64,
    pub sites: Vec<SiteStats>,
    pub groups: Vec<BlockedGroup>,
    pub channels: Vec<ChannelSiteStats>,
    /// Distinct spawn sites seen, including those folded past the cap.
    pub sites_seen: u64,
}

/// One history sample of one site.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Sample {
    pub live: u32,
    pub blocked_send: u32,
    pub blocked_recv: u32,
    pub spawned: u64,
    pub completed: u64,
}

/// The samples of one site, oldest first; the last sample was taken at `History::end_ms`.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SiteHistory {
    pub site: LocId,
    pub samples: Vec<Sample>,
}

/// Per-site history rings as kept by the agent, or one part of them (see
/// [`ClientMsg::History`]): a site appears in one part only.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct History {
    pub interval_ms: u32,
    /// Agent ms of the newest sample.
    pub end_ms: u64,
    pub sites: Vec<SiteHistory>,
}

#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    Running,
    Idle,
    Blocked,
    // Protocol 2 (appended).
    /// Pending in an uninstrumented wait whose await chain was captured.
    Waiting,
    /// Woke itself (`yield_now`) or was woken, and waits for a worker.
    Runnable,
    /// Pending, but no poll of it was sampled (its wait is not known).
    Uncaptured,
    /// Seen by the runtime hooks only (plain `tokio::spawn`): no state.
    Unknown,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TaskInfo {
    pub id: u64,
    pub spawned_ms: u64,
    pub state: TaskState,
    /// Set when blocked: since when, and where.
    pub blocked_since_ms: Option<u64>,
    pub group: Option<GroupKey>,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TaskList {
    pub site: LocId,
    pub group: Option<GroupKey>,
    /// Oldest first.
    pub tasks: Vec<TaskInfo>,
}

/// One executable mapping of the target (a line of `/proc/<pid>/maps`).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub start: u64,
    pub end: u64,
    /// File offset of `start`.
    pub offset: u64,
    pub path: String,
}

// ---------------------------------------------------------------------------------------
// Protocol 2: every wait (not only channels), sync primitives and their holders, the task
// tree, lifetimes, task names, and task dumps of plain-spawned tasks.

/// Id of an interned task name, stable for the life of the agent.
pub type NameId = u32;

/// The instrumented resource a wait is on: what it is and where it was created.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Resource {
    pub kind: ChannelKind,
    /// Creation site (for [`ChannelKind::JoinHandle`]: the awaited task's spawn site).
    pub site: LocId,
}

/// Identity of a wait group: tasks of one spawn site waiting in the same way at the same
/// place. Instrumented waits (channels, locks, cells, handles) carry their resource and
/// `#[track_caller]` call site; uninstrumented ones ([`Op::Wait`]) only their await chains.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaitKey {
    pub site: LocId,
    pub op: Op,
    pub resource: Option<Resource>,
    pub call_site: Option<LocId>,
    /// Await chains, innermost frame first: one per leaf future that registered the
    /// task's waker in the captured poll (several under `select!`/`join!`); empty when
    /// none was captured.
    pub stacks: Vec<StackId>,
}

impl WaitKey {
    /// The protocol-1 key of a channel wait (None for other waits).
    pub fn to_v1(&self) -> Option<GroupKey> {
        let r = self.resource.filter(|r| r.kind.is_channel())?;
        Some(GroupKey {
            site: self.site,
            op: self.op,
            channel_site: r.site,
            call_site: self.call_site?,
            stack: self.stacks.first().copied(),
        })
    }

    /// The protocol-2 key of a protocol-1 group.
    pub fn from_v1(key: &GroupKey, kind: ChannelKind) -> WaitKey {
        WaitKey {
            site: key.site,
            op: key.op,
            resource: Some(Resource {
                kind,
                site: key.channel_site,
            }),
            call_site: Some(key.call_site),
            stacks: key.stack.into_iter().collect(),
        }
    }
}

/// Tasks waiting in the same [`WaitKey`], with the age of the oldest wait.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct WaitGroup {
    pub key: WaitKey,
    pub count: u64,
    /// Agent ms since which the oldest task of the group has been waiting.
    pub oldest_since_ms: u64,
    /// The channel the oldest task waits on (channel waits).
    pub channel: Option<ChannelStats>,
    /// The lock the oldest task waits on ([`SnapshotV2::locks`] id; lock and semaphore
    /// waits).
    pub lock: Option<u64>,
    /// Tasks of the group whose current wait was captured in their own poll; the others
    /// were last captured here and have been pending since, unsampled (the chain is
    /// sampled, not seen, for them).
    pub captured: u64,
}

/// Who holds a lock (or semaphore permits).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The holding task's id (0: held outside any instrumented task).
    pub task: u64,
    /// The holding task's spawn site.
    pub site: Option<LocId>,
    /// Where it took the lock (`#[track_caller]` of `lock()`/`read()`/…).
    pub acquired_at: LocId,
    /// Agent ms since when it holds it.
    pub since_ms: u64,
    /// What the holder itself waits on now, if anything.
    pub waits: Option<WaitKey>,
    /// The lock the holder waits on, if it waits on one ([`LockState::id`]): the edge a
    /// wait cycle (deadlock) is found through.
    pub waits_on_lock: Option<u64>,
}

/// A lock, semaphore or other exclusive resource that tasks wait on, with its holders.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct LockState {
    pub id: u64,
    pub kind: ChannelKind,
    /// Creation site.
    pub site: LocId,
    /// The longest-held holders (at most a few; an `RwLock`'s readers, a semaphore's
    /// permits).
    pub holders: Vec<Holder>,
    /// All current holders (readers, permits taken).
    pub holders_total: u64,
    /// Tasks waiting to take it.
    pub waiters: u64,
}

/// The wait cycles (deadlocks) among `locks`: each a list of lock ids where a holder of
/// each lock waits on the next one, and a holder of the last waits on the first. Every
/// cycle once, starting at its smallest id; ordered by that id. O(locks + holders).
pub fn lock_cycles(locks: &[LockState]) -> Vec<Vec<u64>> {
    use std::collections::{BTreeMap, BTreeSet};
    // lock -> the locks its holders wait on.
    let edges: BTreeMap<u64, BTreeSet<u64>> = locks
        .iter()
        .map(|l| {
            let next = l.holders.iter().filter_map(|h| h.waits_on_lock).collect();
            (l.id, next)
        })
        .collect();
    let mut cycles = BTreeSet::new();
    // Depth-first from every lock, along the path so far (graphs here are tiny: a few
    // contended locks, a few holders each).
    fn walk(
        at: u64,
        path: &mut Vec<u64>,
        edges: &BTreeMap<u64, BTreeSet<u64>>,
        done: &mut BTreeSet<u64>,
        cycles: &mut BTreeSet<Vec<u64>>,
    ) {
        if let Some(i) = path.iter().position(|&p| p == at) {
            let mut cycle = path.get(i..).map(<[u64]>::to_vec).unwrap_or_default();
            let min = cycle
                .iter()
                .enumerate()
                .min_by_key(|(_, id)| **id)
                .map_or(0, |m| m.0);
            cycle.rotate_left(min);
            cycles.insert(cycle);
            return;
        }
        if done.contains(&at) {
            return;
        }
        path.push(at);
        for &next in edges.get(&at).into_iter().flatten() {
            walk(next, path, edges, done, cycles);
        }
        path.pop();
        done.insert(at);
    }
    let mut done = BTreeSet::new();
    for &start in edges.keys() {
        walk(start, &mut Vec::new(), &edges, &mut done, &mut cycles);
    }
    cycles.into_iter().collect()
}

/// A log2 histogram of durations in ms, sparse: `(bucket, count)` ascending by bucket.
/// Bucket 0 counts durations under 1 ms, bucket `i > 0` those in `[2^(i-1), 2^i)` ms.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct LogHistogram {
    pub buckets: Vec<(u8, u64)>,
}

impl LogHistogram {
    /// Buckets of a dense histogram (0 ..= 64 cover every u64 of ms).
    pub const BUCKETS: usize = 65;

    /// The bucket of a duration of `ms`.
    pub fn bucket(ms: u64) -> usize {
        (u64::BITS - ms.leading_zeros()) as usize
    }

    /// Lower bound of bucket `b`, ms.
    pub fn lower_ms(b: usize) -> u64 {
        match b {
            0 => 0,
            b => 1u64 << (b - 1).min(63),
        }
    }

    /// Upper bound (exclusive) of bucket `b`, ms.
    pub fn upper_ms(b: usize) -> u64 {
        1u64.checked_shl(b as u32).unwrap_or(u64::MAX)
    }

    /// From dense counts.
    pub fn from_dense(counts: &[u64]) -> LogHistogram {
        LogHistogram {
            buckets: counts
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(b, c)| (b.min(255) as u8, *c))
                .collect(),
        }
    }

    /// Total count.
    pub fn total(&self) -> u64 {
        self.buckets
            .iter()
            .fold(0u64, |a, (_, c)| a.saturating_add(*c))
    }

    /// The upper bound of the bucket holding quantile `q` (0..=1), ms; None when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<u64> {
        let total = self.total();
        if total == 0 {
            return None;
        }
        let rank = ((q.clamp(0.0, 1.0) * total as f64).ceil() as u64).max(1);
        let mut seen = 0u64;
        for (b, c) in &self.buckets {
            seen = seen.saturating_add(*c);
            if seen >= rank {
                return Some(Self::upper_ms(*b as usize));
            }
        }
        self.buckets
            .last()
            .map(|(b, _)| Self::upper_ms(*b as usize))
    }

    /// Count of durations at least `ms` long (whole buckets at or above `ms`'s bucket
    /// lower bound, so it never undercounts by more than one bucket).
    pub fn at_least(&self, ms: u64) -> u64 {
        let b = Self::bucket(ms);
        self.buckets
            .iter()
            .filter(|(x, _)| *x as usize >= b)
            .fold(0u64, |a, (_, c)| a.saturating_add(*c))
    }
}

/// Live tasks of one site by the spawn site of their parent ("created by").
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ParentEdge {
    /// The parent's spawn site; None: spawned outside any instrumented task.
    pub site: Option<LocId>,
    pub live: u64,
    /// Of those, orphans: the parent finished and the child's `JoinHandle` was dropped.
    pub orphans: u64,
}

/// The task tree of one spawn site.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct TreeStats {
    /// Live tasks whose `JoinHandle` was dropped (orphans included).
    pub detached: u64,
    /// Live tasks whose parent finished and whose `JoinHandle` was dropped.
    pub orphans: u64,
    /// Tasks that finished with their `JoinHandle` awaited, ever.
    pub awaited: u64,
    /// Tasks aborted (through their handle or a `JoinSet`), ever.
    pub aborted: u64,
    /// Live tasks by parent site, most first.
    pub parents: Vec<ParentEdge>,
}

/// Counters of one spawn site, protocol 2.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct SiteStatsV2 {
    pub site: LocId,
    pub kind: Option<SiteKind>,
    /// The name of the site's most recent named task (`task::Builder::name`).
    pub name: Option<NameId>,
    /// Tasks alive now (spawned, future not yet dropped).
    pub live: u64,
    /// Tasks inside `poll` right now.
    pub running: u64,
    /// Tasks pending on an instrumented send-like channel operation.
    pub blocked_send: u64,
    /// Tasks pending on an instrumented receive-like channel operation.
    pub blocked_recv: u64,
    /// Tasks pending on an instrumented lock, semaphore, notify, barrier, cell or handle.
    pub blocked_sync: u64,
    /// Tasks pending in an uninstrumented wait whose await chain was captured.
    pub waiting: u64,
    /// Tasks that woke themselves (`yield_now`) in their last captured poll.
    pub runnable: u64,
    /// Pending tasks whose wait was never captured (or not yet polled).
    pub uncaptured: u64,
    pub spawned: u64,
    pub completed: u64,
    pub oldest_live_ms: Option<u64>,
    pub tree: TreeStats,
    /// Lifetimes of the site's completed tasks, since the agent started.
    pub lifetimes: LogHistogram,
    /// Ages of its live tasks (exact for the oldest; see the agent's docs for the bound).
    pub live_ages: LogHistogram,
}

impl SiteStatsV2 {
    /// Live tasks that are in none of the other states: neither polled now nor known to
    /// wait anywhere (runnable, uncaptured, or seen only by the runtime hooks).
    pub fn idle(&self) -> u64 {
        self.live
            .saturating_sub(self.running)
            .saturating_sub(self.blocked_send)
            .saturating_sub(self.blocked_recv)
            .saturating_sub(self.blocked_sync)
            .saturating_sub(self.waiting)
    }

    /// The protocol-1 counters.
    pub fn to_v1(&self) -> SiteStats {
        SiteStats {
            site: self.site,
            kind: self.kind.map(|k| match k {
                SiteKind::Blocking => SiteKind::Spawn,
                k => k,
            }),
            live: self.live,
            running: self.running,
            blocked_send: self.blocked_send,
            blocked_recv: self.blocked_recv,
            spawned: self.spawned,
            completed: self.completed,
            oldest_live_ms: self.oldest_live_ms,
        }
    }

    /// Protocol-1 counters seen as protocol 2 (nothing of the new fields known).
    pub fn from_v1(s: &SiteStats) -> SiteStatsV2 {
        SiteStatsV2 {
            site: s.site,
            kind: s.kind,
            live: s.live,
            running: s.running,
            blocked_send: s.blocked_send,
            blocked_recv: s.blocked_recv,
            spawned: s.spawned,
            completed: s.completed,
            oldest_live_ms: s.oldest_live_ms,
            ..SiteStatsV2::default()
        }
    }
}

/// One snapshot, protocol 2: O(sites + groups + channel sites + contended locks).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct SnapshotV2 {
    pub seq: u64,
    pub now_ms: u64,
    pub sites: Vec<SiteStatsV2>,
    pub groups: Vec<WaitGroup>,
    pub channels: Vec<ChannelSiteStats>,
    /// Locks and semaphores that have waiters, with their holders.
    pub locks: Vec<LockState>,
    pub sites_seen: u64,
}

impl SnapshotV2 {
    /// What a protocol-1 client is sent: channel groups only, new counters dropped.
    pub fn to_v1(&self) -> Snapshot {
        Snapshot {
            seq: self.seq,
            now_ms: self.now_ms,
            sites: self.sites.iter().map(SiteStatsV2::to_v1).collect(),
            groups: self
                .groups
                .iter()
                .filter_map(|g| {
                    let key = g.key.to_v1()?;
                    Some(BlockedGroup {
                        key,
                        kind: g.key.resource?.kind,
                        count: g.count,
                        oldest_since_ms: g.oldest_since_ms,
                        channel: g.channel.clone(),
                    })
                })
                .collect(),
            channels: self.channels.clone(),
            sites_seen: self.sites_seen,
        }
    }

    /// A protocol-1 snapshot (an old agent, an old recording) as protocol 2.
    pub fn from_v1(s: &Snapshot) -> SnapshotV2 {
        SnapshotV2 {
            seq: s.seq,
            now_ms: s.now_ms,
            sites: s.sites.iter().map(SiteStatsV2::from_v1).collect(),
            groups: s
                .groups
                .iter()
                .map(|g| WaitGroup {
                    key: WaitKey::from_v1(&g.key, g.kind),
                    count: g.count,
                    oldest_since_ms: g.oldest_since_ms,
                    channel: g.channel.clone(),
                    lock: None,
                    captured: g.count,
                })
                .collect(),
            channels: s.channels.clone(),
            locks: Vec::new(),
            sites_seen: s.sites_seen,
        }
    }
}

/// One history sample of one site, protocol 2.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct SampleV2 {
    pub live: u32,
    pub blocked_send: u32,
    pub blocked_recv: u32,
    pub blocked_sync: u32,
    pub waiting: u32,
    pub spawned: u64,
    pub completed: u64,
}

impl SampleV2 {
    pub fn to_v1(&self) -> Sample {
        Sample {
            live: self.live,
            blocked_send: self.blocked_send,
            blocked_recv: self.blocked_recv,
            spawned: self.spawned,
            completed: self.completed,
        }
    }
    pub fn from_v1(s: &Sample) -> SampleV2 {
        SampleV2 {
            live: s.live,
            blocked_send: s.blocked_send,
            blocked_recv: s.blocked_recv,
            spawned: s.spawned,
            completed: s.completed,
            ..SampleV2::default()
        }
    }
}

/// The samples of one site, protocol 2, with its completed tasks' lifetimes so far (so a
/// client that attaches now knows how long this site's tasks normally live).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SiteHistoryV2 {
    pub site: LocId,
    pub samples: Vec<SampleV2>,
    pub lifetimes: LogHistogram,
}

/// Per-site history rings, protocol 2 (parts as for [`History`]).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct HistoryV2 {
    pub interval_ms: u32,
    pub end_ms: u64,
    pub sites: Vec<SiteHistoryV2>,
}

impl HistoryV2 {
    pub fn to_v1(&self) -> History {
        History {
            interval_ms: self.interval_ms,
            end_ms: self.end_ms,
            sites: self
                .sites
                .iter()
                .map(|s| SiteHistory {
                    site: s.site,
                    samples: s.samples.iter().map(SampleV2::to_v1).collect(),
                })
                .collect(),
        }
    }
    pub fn from_v1(h: &History) -> HistoryV2 {
        HistoryV2 {
            interval_ms: h.interval_ms,
            end_ms: h.end_ms,
            sites: h
                .sites
                .iter()
                .map(|s| SiteHistoryV2 {
                    site: s.site,
                    samples: s.samples.iter().map(SampleV2::from_v1).collect(),
                    lifetimes: LogHistogram::default(),
                })
                .collect(),
        }
    }
}

/// What became of a task's `JoinHandle`.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum HandleState {
    /// Held by someone (or not known: a plain tokio handle).
    #[default]
    Held,
    /// Dropped: the task is detached.
    Dropped,
    /// Being awaited.
    Awaited,
    /// Abort requested.
    Aborted,
}

/// The parent of a task ("created by").
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentInfo {
    pub id: u64,
    pub site: LocId,
    pub finished: bool,
}

/// One live task as listed on request, protocol 2.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TaskInfoV2 {
    pub id: u64,
    pub spawned_ms: u64,
    pub state: TaskState,
    /// Since when it waits (blocked, waiting, uncaptured).
    pub since_ms: Option<u64>,
    /// Where it waits, when known.
    pub wait: Option<WaitKey>,
    pub name: Option<NameId>,
    pub parent: Option<ParentInfo>,
    pub handle: HandleState,
}

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct TaskListV2 {
    pub site: LocId,
    pub group: Option<WaitKey>,
    /// Oldest first.
    pub tasks: Vec<TaskInfoV2>,
}

/// Tasks of one spawn site found waiting at the same place by a task dump.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct DumpGroup {
    pub site: LocId,
    /// Raw return addresses, innermost first, including the task's root poll frame.
    pub stack: StackId,
    pub count: u64,
}

/// The answer to [`ClientMsg::TaskDump`].
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct TaskDump {
    /// Agent ms when the dump was taken.
    pub at_ms: u64,
    pub groups: Vec<DumpGroup>,
    /// Tasks the dump covered.
    pub tasks: u64,
    /// What could not be had and why (no runtime registered, not built with
    /// `--cfg tokio_taskdump`, the runtime did not answer within the time limit, …).
    pub notes: Vec<String>,
}

/// Errors of decoding or framing. Never a panic, whatever the bytes.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge { len: usize, max: usize },
    #[error("connection closed in the middle of a frame ({got} of {want} bytes)")]
    Truncated { got: usize, want: usize },
    #[error("undecodable message: {0}")]
    Decode(#[from] postcard::Error),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Encodes `msg` as one frame (length prefix + payload).
pub fn encode_frame<T: Serialize>(msg: &T) -> Result<Vec<u8>, WireError> {
    let mut out = vec![0u8; HEADER_LEN];
    let mut out = postcard::to_extend(msg, std::mem::take(&mut out))?;
    let len = out.len() - HEADER_LEN;
    if len > MAX_FRAME {
        return Err(WireError::FrameTooLarge {
            len,
            max: MAX_FRAME,
        });
    }
    if let Some(header) = out.get_mut(..HEADER_LEN) {
        header.copy_from_slice(&(len as u32).to_le_bytes());
    }
    Ok(out)
}

/// Decodes one payload (without the length prefix).
pub fn decode<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T, WireError> {
    Ok(postcard::from_bytes(payload)?)
}

/// Incremental frame splitter for non-blocking readers: push bytes in, take whole
/// payloads out. Holds at most one frame of at most `max` bytes.
#[derive(Debug)]
pub struct FrameDecoder {
    buf: Vec<u8>,
    max: usize,
}

impl FrameDecoder {
    pub fn new(max: usize) -> Self {
        FrameDecoder {
            buf: Vec::new(),
            max,
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet returned as a frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole payload, `Ok(None)` when more bytes are needed, an error when the
    /// announced length is over the limit (the stream cannot be resynchronised then).
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, WireError> {
        let Some(header) = self.buf.get(..HEADER_LEN) else {
            return Ok(None);
        };
        let mut len_bytes = [0u8; HEADER_LEN];
        len_bytes.copy_from_slice(header);
        let len = u32::from_le_bytes(len_bytes) as usize;
        if len > self.max {
            return Err(WireError::FrameTooLarge { len, max: self.max });
        }
        let Some(payload) = self.buf.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let payload = payload.to_vec();
        self.buf.drain(..HEADER_LEN + len);
        Ok(Some(payload))
    }
}

/// Reads one whole frame payload from a blocking reader. `Ok(None)` on a clean end of
/// stream before the first byte of a frame.
pub fn read_frame<R: std::io::Read>(r: &mut R, max: usize) -> Result<Option<Vec<u8>>, WireError> {
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(r, &mut header)?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(WireError::Truncated {
            got,
            want: HEADER_LEN,
        });
    }
    let len = u32::from_le_bytes(header) as usize;
    if len > max {
        return Err(WireError::FrameTooLarge { len, max });
    }
    let mut payload = vec![0u8; len];
    let got = read_full(r, &mut payload)?;
    if got < len {
        return Err(WireError::Truncated { got, want: len });
    }
    Ok(Some(payload))
}

fn read_full<R: std::io::Read>(r: &mut R, buf: &mut [u8]) -> Result<usize, std::io::Error> {
    let mut filled = 0;
    while let Some(rest) = buf.get_mut(filled..).filter(|rest| !rest.is_empty()) {
        match r.read(rest) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Feeds `data` through every path a peer's bytes take (the agent's non-blocking
/// [`FrameDecoder`] at both limits, the client's blocking [`read_frame`], [`decode`] of both
/// message kinds) and checks that whatever decodes re-encodes to the same message. For
/// the fuzz target (`fuzz/fuzz_targets/wire.rs`) and the property tests; never panics on
/// any bytes (it panics only on a broken round trip, which is a bug).
///
/// The first byte is the chunk size the bytes arrive in (as a socket may split them).
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) -> usize {
    let Some((&chunk, rest)) = data.split_first() else {
        return 0;
    };
    let mut decoded = 0;
    let mut check = |payload: &[u8]| {
        if let Ok(msg) = decode::<ClientMsg>(payload) {
            decoded += 1;
            round_trip(&msg);
        }
        if let Ok(msg) = decode::<AgentMsg>(payload) {
            decoded += 1;
            round_trip(&msg);
        }
    };
    for max in [MAX_CLIENT_FRAME, MAX_FRAME] {
        let mut dec = FrameDecoder::new(max);
        'feed: for part in rest.chunks(usize::from(chunk).max(1)) {
            dec.push(part);
            loop {
                match dec.next_frame() {
                    Ok(Some(payload)) => check(&payload),
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
            // Holds at most one frame of at most `max` bytes, plus what came with it.
            assert!(dec.buffered() <= HEADER_LEN + max + part.len());
        }
    }
    let mut reader = rest;
    while let Ok(Some(payload)) = read_frame(&mut reader, MAX_FRAME) {
        check(&payload);
    }
    check(rest);
    decoded
}

/// Panics unless `msg` survives encode → decode unchanged.
fn round_trip<T>(msg: &T)
where
    T: Serialize + for<'de> Deserialize<'de> + PartialEq + std::fmt::Debug,
{
    if let Ok(frame) = encode_frame(msg) {
        let again = frame.get(HEADER_LEN..).map(decode::<T>);
        assert!(
            matches!(&again, Some(Ok(m)) if m == msg),
            "round trip changed {msg:?} into {again:?}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loc(id: u32) -> LocId {
        id
    }

    fn group_key() -> GroupKey {
        GroupKey {
            site: loc(1),
            op: Op::Send,
            channel_site: loc(2),
            call_site: loc(3),
            stack: Some(7),
        }
    }

    fn wait_key() -> WaitKey {
        WaitKey {
            site: 1,
            op: Op::Wait,
            resource: None,
            call_site: None,
            stacks: vec![7, 8],
        }
    }

    fn chan() -> ChannelStats {
        ChannelStats {
            id: 9,
            kind: ChannelKind::Mpsc,
            site: 2,
            capacity: Some(1),
            len: Some(1),
            senders: 3,
            receivers: 1,
            closed: false,
            last_send_ms: Some(10),
            last_recv_ms: None,
        }
    }

    fn every_client_msg() -> Vec<ClientMsg> {
        vec![
            ClientMsg::Hello {
                protocol: PROTOCOL_VERSION,
                client: "test".into(),
            },
            ClientMsg::Snapshot,
            ClientMsg::Subscribe { interval_ms: 1000 },
            ClientMsg::Unsubscribe,
            ClientMsg::History,
            ClientMsg::Tasks {
                site: 1,
                group: Some(group_key()),
                limit: 10,
            },
            ClientMsg::ExeFd,
            ClientMsg::Ping,
            ClientMsg::TasksV2 {
                site: 1,
                group: Some(wait_key()),
                limit: 10,
            },
            ClientMsg::TaskDump { timeout_ms: 2000 },
        ]
    }

    fn lock(id: u64, waits_on: &[Option<u64>]) -> LockState {
        LockState {
            id,
            kind: ChannelKind::Mutex,
            site: 1,
            holders: waits_on
                .iter()
                .map(|w| Holder {
                    task: id,
                    site: None,
                    acquired_at: 2,
                    since_ms: 0,
                    waits: None,
                    waits_on_lock: *w,
                })
                .collect(),
            holders_total: waits_on.len() as u64,
            waiters: 1,
        }
    }

    #[test]
    fn lock_cycles_names_each_cycle_once_from_its_smallest_lock() {
        // 7 -> 3 -> 7 (the two-mutex deadlock), 5 -> 9 -> 11 -> 5, 1 -> 7 (waits on a
        // deadlocked lock but is not in the cycle), 20 held by a task that waits on no
        // lock, 30 waits on a lock with no waiters (not listed).
        let locks = [
            lock(3, &[Some(7)]),
            lock(7, &[Some(3)]),
            lock(9, &[Some(11)]),
            lock(11, &[Some(5)]),
            lock(5, &[None, Some(9)]),
            lock(1, &[Some(7)]),
            lock(20, &[None]),
            lock(30, &[Some(31)]),
        ];
        assert_eq!(lock_cycles(&locks), vec![vec![3, 7], vec![5, 9, 11]]);
        assert!(lock_cycles(&locks[5..]).is_empty());
        assert!(lock_cycles(&[]).is_empty());
    }

    fn every_agent_msg() -> Vec<AgentMsg> {
        vec![
            AgentMsg::Hello(AgentHello {
                protocol: 1,
                agent_version: "0.1.0".into(),
                pid: 42,
                start_time_ticks: 123456,
                exe: "/bin/x".into(),
                build_id: vec![1, 2, 3],
                uid: 1000,
                origin_unix_ms: 1_700_000_000_000,
                now_ms: 5,
                sample_interval_ms: 1000,
                history_len: 600,
                site_cap: 10_000,
            }),
            AgentMsg::Refused {
                reason: "no".into(),
            },
            AgentMsg::Location {
                id: 1,
                loc: Location {
                    file: "src/main.rs".into(),
                    line: 10,
                    column: 5,
                },
            },
            AgentMsg::Stack {
                id: 7,
                frames: vec![0x5555_0000_1234, u64::MAX],
            },
            AgentMsg::Modules(vec![Mapping {
                start: 0x1000,
                end: 0x2000,
                offset: 0,
                path: "/bin/x".into(),
            }]),
            AgentMsg::Snapshot(Snapshot {
                seq: 3,
                now_ms: 99,
                sites: vec![SiteStats {
                    site: 1,
                    kind: Some(SiteKind::Spawn),
                    live: 5,
                    running: 1,
                    blocked_send: 2,
                    blocked_recv: 1,
                    spawned: 10,
                    completed: 5,
                    oldest_live_ms: Some(3),
                }],
                groups: vec![BlockedGroup {
                    key: group_key(),
                    kind: ChannelKind::Mpsc,
                    count: 2,
                    oldest_since_ms: 4,
                    channel: Some(chan()),
                }],
                channels: vec![ChannelSiteStats {
                    site: 2,
                    kind: ChannelKind::Oneshot,
                    live: 1,
                    created: 2,
                    sends: 3,
                    recvs: 4,
                    last_send_ms: Some(1),
                    last_recv_ms: None,
                }],
                sites_seen: 1,
            }),
            AgentMsg::History(History {
                interval_ms: 1000,
                end_ms: 5000,
                sites: vec![SiteHistory {
                    site: 1,
                    samples: vec![Sample {
                        live: 1,
                        blocked_send: 0,
                        blocked_recv: 1,
                        spawned: 3,
                        completed: 2,
                    }],
                }],
            }),
            AgentMsg::Tasks(TaskList {
                site: 1,
                group: None,
                tasks: vec![TaskInfo {
                    id: 77,
                    spawned_ms: 12,
                    state: TaskState::Blocked,
                    blocked_since_ms: Some(13),
                    group: Some(group_key()),
                }],
            }),
            AgentMsg::ExeFd { ok: true },
            AgentMsg::Error {
                message: "bad".into(),
            },
            AgentMsg::Pong,
            AgentMsg::SnapshotV2(SnapshotV2 {
                seq: 4,
                now_ms: 100,
                sites: vec![SiteStatsV2 {
                    site: 1,
                    kind: Some(SiteKind::Blocking),
                    name: Some(3),
                    live: 9,
                    waiting: 4,
                    tree: TreeStats {
                        detached: 2,
                        orphans: 1,
                        awaited: 5,
                        aborted: 1,
                        parents: vec![ParentEdge {
                            site: Some(2),
                            live: 9,
                            orphans: 1,
                        }],
                    },
                    lifetimes: LogHistogram::from_dense(&[0, 3, 0, 7]),
                    ..SiteStatsV2::default()
                }],
                groups: vec![WaitGroup {
                    key: wait_key(),
                    count: 4,
                    oldest_since_ms: 10,
                    channel: None,
                    lock: Some(5),
                    captured: 1,
                }],
                channels: Vec::new(),
                locks: vec![LockState {
                    id: 5,
                    kind: ChannelKind::Mutex,
                    site: 2,
                    holders: vec![Holder {
                        task: 77,
                        site: Some(1),
                        acquired_at: 3,
                        since_ms: 9,
                        waits: Some(wait_key()),
                        waits_on_lock: Some(6),
                    }],
                    holders_total: 1,
                    waiters: 4,
                }],
                sites_seen: 1,
            }),
            AgentMsg::HistoryV2(HistoryV2 {
                interval_ms: 1000,
                end_ms: 5000,
                sites: vec![SiteHistoryV2 {
                    site: 1,
                    samples: vec![SampleV2 {
                        live: 3,
                        waiting: 2,
                        ..SampleV2::default()
                    }],
                    lifetimes: LogHistogram::from_dense(&[1]),
                }],
            }),
            AgentMsg::TasksV2(TaskListV2 {
                site: 1,
                group: Some(wait_key()),
                tasks: vec![TaskInfoV2 {
                    id: 1,
                    spawned_ms: 2,
                    state: TaskState::Waiting,
                    since_ms: Some(3),
                    wait: Some(wait_key()),
                    name: Some(3),
                    parent: Some(ParentInfo {
                        id: 9,
                        site: 2,
                        finished: true,
                    }),
                    handle: HandleState::Dropped,
                }],
            }),
            AgentMsg::Name {
                id: 3,
                name: "conn-reader".into(),
            },
            AgentMsg::TaskDump(TaskDump {
                at_ms: 5,
                groups: vec![DumpGroup {
                    site: 1,
                    stack: 7,
                    count: 300,
                }],
                tasks: 300,
                notes: vec!["2 runtimes".into()],
            }),
        ]
    }

    #[test]
    fn log_histogram_buckets_and_quantiles() {
        assert_eq!(LogHistogram::bucket(0), 0);
        assert_eq!(LogHistogram::bucket(1), 1);
        assert_eq!(LogHistogram::bucket(1023), 10);
        assert_eq!(LogHistogram::bucket(1024), 11);
        assert_eq!(LogHistogram::bucket(u64::MAX), 64);
        for ms in [0, 1, 2, 3, 500, 1 << 40] {
            let b = LogHistogram::bucket(ms);
            assert!(LogHistogram::lower_ms(b) <= ms && ms < LogHistogram::upper_ms(b).max(1));
        }
        let mut dense = [0u64; LogHistogram::BUCKETS];
        dense[LogHistogram::bucket(100)] = 98;
        dense[LogHistogram::bucket(5_000)] = 2;
        let h = LogHistogram::from_dense(&dense);
        assert_eq!(h.total(), 100);
        assert_eq!(h.quantile_ms(0.5), Some(128));
        assert_eq!(h.quantile_ms(0.99), Some(8192));
        assert_eq!(h.at_least(4096), 2);
        assert_eq!(LogHistogram::default().quantile_ms(0.5), None);
    }

    #[test]
    fn protocol_1_messages_convert_to_protocol_2_and_back() {
        let AgentMsg::Snapshot(v1) = every_agent_msg()[5].clone() else {
            panic!("not a snapshot")
        };
        let v2 = SnapshotV2::from_v1(&v1);
        assert_eq!(v2.to_v1(), v1);
        let AgentMsg::History(h1) = every_agent_msg()[6].clone() else {
            panic!("not a history")
        };
        assert_eq!(HistoryV2::from_v1(&h1).to_v1(), h1);
        // Waits that protocol 1 cannot say are left out of its snapshot.
        let AgentMsg::SnapshotV2(s) = every_agent_msg()[11].clone() else {
            panic!("not a v2 snapshot")
        };
        assert!(s.to_v1().groups.is_empty());
        assert_eq!(s.to_v1().sites[0].kind, Some(SiteKind::Spawn));
    }

    #[test]
    fn every_message_round_trips_through_a_frame() {
        for msg in every_client_msg() {
            let frame = encode_frame(&msg).unwrap();
            let payload = read_frame(&mut &frame[..], MAX_CLIENT_FRAME)
                .unwrap()
                .unwrap();
            assert_eq!(decode::<ClientMsg>(&payload).unwrap(), msg);
        }
        for msg in every_agent_msg() {
            let frame = encode_frame(&msg).unwrap();
            let mut dec = FrameDecoder::new(MAX_FRAME);
            // Byte by byte, as a non-blocking socket may deliver it.
            let mut out = None;
            for b in &frame {
                dec.push(std::slice::from_ref(b));
                if let Some(p) = dec.next_frame().unwrap() {
                    out = Some(p);
                }
            }
            assert_eq!(decode::<AgentMsg>(&out.unwrap()).unwrap(), msg);
            assert_eq!(dec.buffered(), 0);
        }
    }

    #[test]
    fn frame_over_the_limit_is_an_error_before_any_allocation() {
        let header = (u32::MAX).to_le_bytes();
        let err = read_frame(&mut &header[..], MAX_CLIENT_FRAME).unwrap_err();
        assert!(matches!(err, WireError::FrameTooLarge { .. }), "{err}");
        let mut dec = FrameDecoder::new(MAX_CLIENT_FRAME);
        dec.push(&header);
        assert!(matches!(
            dec.next_frame(),
            Err(WireError::FrameTooLarge { .. })
        ));
    }

    #[test]
    fn truncated_frame_is_an_error() {
        let frame = encode_frame(&ClientMsg::Ping).unwrap();
        let mut long = encode_frame(&every_agent_msg()[0]).unwrap();
        long.truncate(long.len() - 3);
        let err = read_frame(&mut &long[..], MAX_FRAME).unwrap_err();
        assert!(matches!(err, WireError::Truncated { .. }), "{err}");
        let err = read_frame(&mut &frame[..2], MAX_FRAME).unwrap_err();
        assert!(matches!(err, WireError::Truncated { .. }), "{err}");
        assert!(read_frame(&mut &[][..], MAX_FRAME).unwrap().is_none());
    }

    #[test]
    fn garbage_bytes_decode_to_errors_not_panics() {
        let mut seed = 0x9e37_79b9_7f4a_7c15u64;
        for len in 0..200 {
            let bytes: Vec<u8> = (0..len)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    seed as u8
                })
                .collect();
            let _ = decode::<AgentMsg>(&bytes);
            let _ = decode::<ClientMsg>(&bytes);
        }
        assert!(decode::<ClientMsg>(&[0xff, 0xff, 0xff]).is_err());
    }

    /// Bounded property test of [`fuzz_one`] (the fuzz target runs it unbounded): random
    /// bytes, and valid frames with random bytes flipped, cut or appended.
    #[test]
    fn any_bytes_and_mutated_frames_never_panic_the_decoders() {
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        let mut next = move || {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            seed
        };
        let mut valid = Vec::new();
        for msg in every_client_msg() {
            valid.push(encode_frame(&msg).unwrap());
        }
        for msg in every_agent_msg() {
            valid.push(encode_frame(&msg).unwrap());
        }
        let mut decoded = 0;
        for case in 0..4000 {
            let mut data = vec![next() as u8];
            if case % 2 == 0 {
                let len = (next() % 300) as usize;
                data.extend((0..len).map(|_| next() as u8));
            } else {
                // A few valid frames in a row, then mutations.
                for _ in 0..1 + next() % 3 {
                    data.extend_from_slice(&valid[(next() as usize) % valid.len()]);
                }
                for _ in 0..next() % 4 {
                    let i = 1 + (next() as usize) % (data.len() - 1);
                    match next() % 3 {
                        0 => data[i] ^= 1 << (next() % 8),
                        1 => data.truncate(i),
                        _ => data.insert(i, next() as u8),
                    }
                    if data.len() < 2 {
                        break;
                    }
                }
            }
            decoded += fuzz_one(&data);
        }
        // The mutations keep many frames intact: the decoders were really exercised.
        assert!(decoded > 1000, "only {decoded} messages decoded");
    }

    #[test]
    fn hello_from_a_future_version_still_decodes_its_version() {
        // Rule: Hello's layout never changes, so any version can read the other's.
        let frame = encode_frame(&ClientMsg::Hello {
            protocol: 99,
            client: "future".into(),
        })
        .unwrap();
        let payload = read_frame(&mut &frame[..], MAX_CLIENT_FRAME)
            .unwrap()
            .unwrap();
        match decode::<ClientMsg>(&payload).unwrap() {
            ClientMsg::Hello { protocol, .. } => assert_eq!(protocol, 99),
            other => panic!("{other:?}"),
        }
    }
}
