//! The agent's one OS thread: accepts clients, answers requests and streams snapshots.
//! Nothing here runs on the host program's threads.
//!
//! Every client is non-blocking and bounded ([`Limits`]): requests are at most
//! [`wire::MAX_CLIENT_FRAME`] bytes; unsent output at most [`MAX_PENDING_OUT`] (a
//! subscriber that falls behind skips snapshots; the requests of a client with more than
//! [`READ_PAUSE_OUT`] unsent are not read until it catches up, so a client that asks and
//! never reads costs neither memory nor CPU; one whose replies would pass the cap gets
//! what was queued, an error saying why, and EOF); location and stack definitions and history
//! parts are queued only as the client reads, so a process with any number of them can be
//! attached; a client that says nothing useful within [`HELLO_TIMEOUT`], leaves its
//! replies unread for [`STALL_TIMEOUT`] or sits idle for [`IDLE_TIMEOUT`] is dropped; at
//! most [`MAX_CLIENTS`] are served at once, and each is read at most [`READ_PER_TURN`]
//! bytes per turn of the loop so none can starve the others.
//!
//! Every write is `MSG_NOSIGNAL`: a client that disconnects mid-write costs an `EPIPE`,
//! never a SIGPIPE (which kills a host that keeps its default action). A panic on this
//! thread (a bug, or a `metrics` recorder of the host's) is caught: the agent stops
//! serving, tells every later client why, and the host goes on.

use std::io::{ErrorKind, Read};
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials, MsgFlags};

use crate::forked;
use crate::history::{self, Rings};
use crate::registry::registry;
use crate::wire::{self, AgentMsg, ClientMsg};
use crate::{clock, procinfo};

pub(crate) const MAX_CLIENTS: usize = 64;
pub(crate) const MAX_PENDING_OUT: usize = 16 * 1024 * 1024;
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// A client with replies it has not read for this long is dropped.
pub(crate) const STALL_TIMEOUT: Duration = Duration::from_secs(30);
/// A client that has asked nothing, has nothing to read and no subscription for this long
/// is dropped.
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
/// Unsent output above which a client's further requests wait in its socket.
pub(crate) const READ_PAUSE_OUT: usize = 1024 * 1024;
/// Bytes read from one client per turn of the loop.
pub(crate) const READ_PER_TURN: usize = 64 * 1024;
/// A client's output below which the next definitions or history part are queued.
const LOW_WATER: usize = 256 * 1024;
/// How long accepting pauses after `accept` failed for want of descriptors or memory
/// (the connection stays queued and the listener readable: polling it at once would spin).
const ACCEPT_BACKOFF: Duration = Duration::from_millis(250);
const MIN_INTERVAL: Duration = Duration::from_millis(50);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
/// Longest history sample interval; longer ones are clamped (an `Instant` plus a huge
/// interval overflows).
pub(crate) const MAX_SAMPLE_INTERVAL: Duration = Duration::from_secs(86_400);
const MAX_TASKS_PER_REQUEST: usize = 10_000;
/// The loop turns at least this often, refreshing the cached clock of the hot paths.
pub(crate) const TICK_EVERY: Duration = Duration::from_millis(100);

/// What an agent that stopped after an internal error tells every client (the rest of
/// the reason says which error).
pub(crate) const STOPPED: &str = wire::AGENT_STOPPED;

/// The bounds of the thread's work per client.
#[derive(Clone, Debug)]
pub(crate) struct Limits {
    pub max_clients: usize,
    pub max_pending_out: usize,
    pub read_pause_out: usize,
    pub read_per_turn: usize,
    pub low_water: usize,
    pub hello_timeout: Duration,
    pub stall_timeout: Duration,
    pub idle_timeout: Duration,
    /// Longest wait of one turn (the clock refresh).
    pub tick: Duration,
    /// SO_SNDBUF of accepted sockets (tests: tiny kernel buffers).
    pub sndbuf: Option<usize>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_clients: MAX_CLIENTS,
            max_pending_out: MAX_PENDING_OUT,
            read_pause_out: READ_PAUSE_OUT,
            read_per_turn: READ_PER_TURN,
            low_water: LOW_WATER,
            hello_timeout: HELLO_TIMEOUT,
            stall_timeout: STALL_TIMEOUT,
            idle_timeout: IDLE_TIMEOUT,
            tick: TICK_EVERY,
            sndbuf: None,
        }
    }
}

/// Settings the thread runs with.
pub(crate) struct ServerConfig {
    pub sample_interval: Duration,
    pub history_len: usize,
    /// Memory cap of all history rings together, bytes.
    pub history_budget: usize,
    pub limits: Limits,
}

/// What the thread and the agent handle share.
#[derive(Debug, Default)]
pub(crate) struct Shared {
    pub stop: AtomicBool,
    /// Set once when the thread stopped serving after a panic: why.
    pub failed: OnceLock<String>,
}

/// Facts sent in every hello, computed once.
struct Identity {
    pid: u32,
    uid: u32,
    start_time_ticks: u64,
    exe: String,
    build_id: Vec<u8>,
}

struct Client {
    stream: UnixStream,
    /// Registered for closing in a forked child; released before the stream closes.
    fd_slot: Option<forked::Slot>,
    dec: wire::FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
    greeted: bool,
    connected_at: Instant,
    /// Close once `out` is flushed; nothing more is queued.
    closing: bool,
    /// Close now, whatever is unsent.
    abandoned: bool,
    subscription: Option<(Duration, Instant)>,
    /// Locations `0..defined_locs` have been sent to this client.
    defined_locs: usize,
    /// Stacks `0..defined_stacks` have been sent to this client.
    defined_stacks: usize,
    /// Locations and stacks to define before `after_defs` goes out.
    defs_target: (usize, usize),
    /// Encoded replies that wait for their definitions.
    after_defs: Vec<u8>,
    /// Ancillary descriptor to send with the first byte of the next write.
    pending_fd: Option<std::fs::File>,
    /// A history transfer in progress (sent in parts as the client reads).
    history: Option<history::Cursor>,
    /// A snapshot was asked for during the history transfer: it follows the last part.
    snapshot_after_history: bool,
    /// Bytes in the kernel's send queue after our last write (SIOCOUTQ).
    outq_seen: usize,
    /// When the client last read any of its replies, or had none unread.
    progress_at: Instant,
    /// When the client last sent a request or had replies to read.
    active_at: Instant,
}

impl Drop for Client {
    fn drop(&mut self) {
        if let Some(slot) = self.fd_slot.take() {
            forked::unregister(slot);
        }
    }
}

impl Client {
    fn new(stream: UnixStream, now: Instant) -> Client {
        Client {
            stream,
            fd_slot: None,
            dec: wire::FrameDecoder::new(wire::MAX_CLIENT_FRAME),
            out: Vec::new(),
            out_pos: 0,
            greeted: false,
            connected_at: now,
            closing: false,
            abandoned: false,
            subscription: None,
            defined_locs: 0,
            defined_stacks: 0,
            defs_target: (0, 0),
            after_defs: Vec::new(),
            pending_fd: None,
            history: None,
            snapshot_after_history: false,
            outq_seen: 0,
            progress_at: now,
            active_at: now,
        }
    }

    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Its requests wait until it has read enough of its replies (and until a reply
    /// waiting for its definitions has gone out).
    fn paused(&self, limits: &Limits) -> bool {
        self.pending() > limits.read_pause_out || !self.after_defs.is_empty()
    }

    /// Anything sent or to send that the client has not read.
    fn has_unread(&self) -> bool {
        self.pending() > 0 || self.outq_seen > 0 || !self.after_defs.is_empty()
    }

    fn defs_done(&self) -> bool {
        self.defined_locs >= self.defs_target.0 && self.defined_stacks >= self.defs_target.1
    }

    fn queue(&mut self, msg: &AgentMsg, limits: &Limits) {
        if self.closing {
            return;
        }
        match wire::encode_frame(msg) {
            Ok(frame) if self.pending() + frame.len() > limits.max_pending_out => {
                self.overflow(limits)
            }
            Ok(frame) => self.out.extend_from_slice(&frame),
            Err(e) => self.queue_error(format!("cannot encode reply: {e}"), limits),
        }
    }

    fn queue_error(&mut self, message: String, limits: &Limits) {
        self.queue(&AgentMsg::Error { message }, limits);
    }

    /// Queues `msg` behind the definitions it may use: at once when they are all sent,
    /// else once the client has read them.
    fn queue_after_defs(&mut self, msg: &AgentMsg, limits: &Limits) {
        let reg = registry();
        self.defs_target = (reg.location_count(), reg.stacks().count());
        self.send_defs(limits);
        if self.defs_done() && self.after_defs.is_empty() {
            return self.queue(msg, limits);
        }
        if self.closing {
            return;
        }
        match wire::encode_frame(msg) {
            Ok(frame) if self.after_defs.len() + frame.len() > limits.max_pending_out => {
                self.overflow(limits)
            }
            Ok(frame) => self.after_defs.extend_from_slice(&frame),
            Err(e) => self.queue_error(format!("cannot encode reply: {e}"), limits),
        }
    }

    /// Queues definitions up to the target while the client's output is below the low
    /// water mark; then the replies that waited for them.
    fn send_defs(&mut self, limits: &Limits) {
        let reg = registry();
        while self.defined_locs < self.defs_target.0 && self.pending() < limits.low_water {
            let id = self.defined_locs as wire::LocId;
            if let Some(loc) = reg.location(id) {
                self.queue(&AgentMsg::Location { id, loc }, limits);
            }
            self.defined_locs += 1;
        }
        let stacks = reg.stacks();
        while self.defined_locs >= self.defs_target.0
            && self.defined_stacks < self.defs_target.1
            && self.pending() < limits.low_water
        {
            let id = self.defined_stacks as wire::StackId;
            if let Some(frames) = stacks.get(id) {
                self.queue(&AgentMsg::Stack { id, frames }, limits);
            }
            self.defined_stacks += 1;
        }
        if self.defs_done() && !self.after_defs.is_empty() && !self.closing {
            let waiting = std::mem::take(&mut self.after_defs);
            if self.pending() + waiting.len() > limits.max_pending_out {
                return self.overflow(limits);
            }
            self.out.extend_from_slice(&waiting);
        }
    }

    /// The client's replies would pass the output cap: what is queued goes out (whole
    /// frames, each after the definitions it uses), then one error saying why, then the
    /// connection closes. Nothing else is queued for it.
    fn overflow(&mut self, limits: &Limits) {
        self.after_defs = Vec::new();
        self.history = None;
        self.subscription = None;
        self.closing = true;
        // The last frame, past the cap by its few bytes.
        let why = AgentMsg::Error {
            message: format!(
                "dropped: this client fell more than {} KiB behind in reading its replies",
                limits.max_pending_out >> 10
            ),
        };
        if let Ok(frame) = wire::encode_frame(&why) {
            self.out.extend_from_slice(&frame);
        }
    }

    /// Drops the client now, without flushing.
    fn abandon(&mut self) {
        self.closing = true;
        self.abandoned = true;
        self.out = Vec::new();
        self.out_pos = 0;
        self.after_defs = Vec::new();
        self.pending_fd = None;
    }

    /// Notes whether the client read anything since our last write.
    fn note_progress(&mut self, now: Instant) {
        if !self.has_unread() {
            self.progress_at = now;
            return;
        }
        self.active_at = now;
        let outq = outq(&self.stream);
        if outq < self.outq_seen || outq == 0 {
            self.progress_at = now;
        }
        self.outq_seen = outq;
    }

    /// Writes what it can without blocking.
    fn flush(&mut self, now: Instant) {
        if self.abandoned {
            return;
        }
        self.note_progress(now);
        if self.pending_fd.is_some() && self.pending() > 0 {
            match send_with_fd(&self.stream, &self.out[self.out_pos..], &self.pending_fd) {
                Ok(n) => {
                    self.out_pos += n;
                    self.pending_fd = None;
                }
                Err(Errno::EAGAIN | Errno::EINTR) => {}
                Err(_) => return self.abandon(),
            }
        }
        while self.pending() > 0 && self.pending_fd.is_none() {
            match send_nosignal(&self.stream, &self.out[self.out_pos..]) {
                Ok(0) => break,
                Ok(n) => self.out_pos += n,
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => break,
                Err(_) => return self.abandon(),
            }
        }
        if self.pending() == 0 {
            self.out.clear();
            self.out_pos = 0;
        } else if self.out_pos > 1024 * 1024 {
            self.out.drain(..self.out_pos);
            self.out_pos = 0;
        }
        self.outq_seen = outq(&self.stream);
    }

    /// Why the client is to be dropped now, if it is.
    fn expired(&self, now: Instant, limits: &Limits) -> bool {
        let done = self.abandoned || (self.closing && self.pending() == 0);
        let silent = !self.greeted && now.duration_since(self.connected_at) > limits.hello_timeout;
        let stalled =
            self.has_unread() && now.duration_since(self.progress_at) > limits.stall_timeout;
        let idle = self.greeted
            && !self.has_unread()
            && self.subscription.is_none()
            && self.history.is_none()
            && now.duration_since(self.active_at) > limits.idle_timeout;
        done || silent || stalled || idle
    }
}

/// Bytes (with their kernel overhead) the peer has not read yet, of what we wrote.
fn outq(stream: &UnixStream) -> usize {
    let mut n: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) writes one int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(stream.as_raw_fd(), libc::TIOCOUTQ, &mut n) };
    if rc == 0 {
        n.max(0) as usize
    } else {
        0
    }
}

/// One non-blocking write that never raises SIGPIPE.
fn send_nosignal(stream: &UnixStream, bytes: &[u8]) -> nix::Result<usize> {
    nix::sys::socket::send(
        stream.as_raw_fd(),
        bytes,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
    )
}

/// One non-blocking write with `fd` attached as SCM_RIGHTS (it goes with the first byte);
/// what is left of `bytes` is written like any other reply.
fn send_with_fd(
    stream: &UnixStream,
    bytes: &[u8],
    fd: &Option<std::fs::File>,
) -> nix::Result<usize> {
    use nix::sys::socket::{sendmsg, ControlMessage};
    let fds: Vec<_> = fd.iter().map(|f| f.as_raw_fd()).collect();
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(bytes)];
    sendmsg::<()>(
        stream.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_NOSIGNAL | MsgFlags::MSG_DONTWAIT,
        None,
    )
}

/// The message of a caught panic.
fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "a panic with a non-string payload".into())
}

pub(crate) struct Server {
    listener: UnixListener,
    listener_slot: Option<forked::Slot>,
    /// Read end of the pipe `Agent::shutdown` writes to, to end a wait at once.
    wake: OwnedFd,
    wake_slot: Option<forked::Slot>,
    clients: Vec<Client>,
    identity: Identity,
    config: ServerConfig,
    rings: Rings,
    seq: u64,
    next_sample: Instant,
    accept_paused_until: Option<Instant>,
    shared: Arc<Shared>,
}

impl Drop for Server {
    fn drop(&mut self) {
        for slot in [self.listener_slot.take(), self.wake_slot.take()]
            .into_iter()
            .flatten()
        {
            forked::unregister(slot);
        }
    }
}

impl Server {
    pub fn new(
        listener: UnixListener,
        wake: OwnedFd,
        mut config: ServerConfig,
        shared: Arc<Shared>,
    ) -> Server {
        config.sample_interval = config
            .sample_interval
            .clamp(Duration::from_millis(1), MAX_SAMPLE_INTERVAL);
        let pid = std::process::id();
        let rings = Rings::new(
            config.sample_interval.as_millis().min(u32::MAX as u128) as u32,
            config.history_len,
            config.history_budget,
        );
        let _ = listener.set_nonblocking(true);
        Server {
            listener_slot: forked::register(listener.as_raw_fd()),
            listener,
            wake_slot: forked::register(wake.as_raw_fd()),
            wake,
            clients: Vec::new(),
            identity: Identity {
                pid,
                uid: nix::unistd::geteuid().as_raw(),
                start_time_ticks: procinfo::start_time_ticks(pid).unwrap_or(0),
                exe: procinfo::exe_path(),
                build_id: procinfo::build_id(),
            },
            config,
            rings,
            seq: 0,
            next_sample: Instant::now(),
            accept_paused_until: None,
            shared,
        }
    }

    fn stopping(&self) -> bool {
        self.shared.stop.load(Ordering::Relaxed)
    }

    /// The thread's loop; returns when asked to stop.
    pub fn run(mut self) {
        while !self.stopping() {
            if let Err(payload) = catch_unwind(AssertUnwindSafe(|| self.turn())) {
                let reason = format!("{STOPPED}: {}", panic_message(&*payload));
                return self.refuse_until_stopped(reason);
            }
        }
        clock::stop_ticking();
    }

    /// One turn of the loop: sample, serve, wait for the sockets (at most
    /// [`Limits::tick`]), read, accept.
    pub(crate) fn turn(&mut self) {
        clock::tick();
        let now = Instant::now();
        if now >= self.next_sample {
            self.sample(now);
        }
        self.serve_defs();
        self.serve_history();
        self.serve_subscriptions(now);
        self.flush_all(now);
        self.reap(now);
        let deadline = self.next_deadline();
        self.wait(deadline);
        // Notice the clients that left before admitting new ones: a slot freed by a
        // disconnect is free for the connection that came right after it.
        let now = Instant::now();
        self.read_all(now);
        self.reap(now);
        self.accept_all(now);
    }

    fn sample(&mut self, now: Instant) {
        // Waits that began since the last look become blocked-group members now.
        registry().promote_all();
        let sites = registry().sites();
        self.rings
            .record(clock::now_ms(), sites.iter().map(|s| (s.loc, s.sample())));
        #[cfg(feature = "metrics")]
        crate::metrics::publish();
        self.next_sample = now
            .checked_add(self.config.sample_interval)
            .unwrap_or(now + MAX_SAMPLE_INTERVAL);
    }

    /// After a panic: every client so far is dropped, the hot paths read the clock
    /// themselves, and each later client is told why in one `Refused` frame, until the
    /// agent is shut down. Nothing here touches the task table.
    fn refuse_until_stopped(&mut self, reason: String) {
        clock::stop_ticking();
        self.clients.clear();
        let _ = self.shared.failed.set(reason.clone());
        let refusal = wire::encode_frame(&AgentMsg::Refused { reason }).unwrap_or_default();
        while !self.stopping() {
            let ran = catch_unwind(AssertUnwindSafe(|| {
                let now = Instant::now();
                let deadline = self
                    .accept_paused_until
                    .unwrap_or(now + Duration::from_secs(60));
                self.wait(deadline);
                self.drain_wake();
                self.accept_with(Instant::now(), |_, stream| {
                    let _ = send_nosignal(&stream, &refusal);
                });
            }));
            if ran.is_err() {
                return;
            }
        }
    }

    fn next_deadline(&self) -> Instant {
        let now = Instant::now();
        let mut deadline = self.next_sample;
        for c in &self.clients {
            if let Some((_, next)) = c.subscription {
                deadline = deadline.min(next);
            }
            if (c.history.is_some() || !c.after_defs.is_empty()) && c.pending() == 0 {
                deadline = now;
            }
        }
        if let Some(until) = self.accept_paused_until {
            deadline = deadline.min(until);
        }
        // Wake up now and then to notice `stop`, the timeouts, and refresh the clock.
        deadline.min(now + self.config.limits.tick)
    }

    fn wait(&mut self, deadline: Instant) {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let ms = timeout.as_millis().min(60_000) as u16;
        let mut fds = Vec::with_capacity(self.clients.len() + 2);
        fds.push(PollFd::new(self.wake.as_fd(), PollFlags::POLLIN));
        let listen = if self.accept_paused_until.is_some() {
            PollFlags::empty()
        } else {
            PollFlags::POLLIN
        };
        fds.push(PollFd::new(self.listener.as_fd(), listen));
        let limits = &self.config.limits;
        for c in &self.clients {
            let mut flags = PollFlags::empty();
            // Not for a client whose requests wait (it would wake the loop at once).
            if !c.closing && !c.paused(limits) {
                flags |= PollFlags::POLLIN;
            }
            if c.pending() > 0 {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.stream.as_fd(), flags));
        }
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }

    /// Empties the wake pipe (its bytes only end a wait).
    fn drain_wake(&self) {
        let mut buf = [0u8; 64];
        while matches!(nix::unistd::read(self.wake.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
    }

    fn accept_all(&mut self, now: Instant) {
        self.drain_wake();
        self.accept_with(now, |server, stream| server.admit(stream));
    }

    /// Accepts every queued connection, handing each to `take`. When the process is out
    /// of descriptors (or memory) accepting pauses for [`ACCEPT_BACKOFF`] instead of
    /// polling a listener that stays readable.
    fn accept_with(&mut self, now: Instant, mut take: impl FnMut(&mut Self, UnixStream)) {
        match self.accept_paused_until {
            Some(until) if now < until => return,
            _ => self.accept_paused_until = None,
        }
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => take(self, stream),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Interrupted | ErrorKind::ConnectionAborted
                    ) =>
                {
                    continue
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(_) => {
                    // EMFILE, ENFILE, ENOBUFS, ENOMEM: try again later.
                    self.accept_paused_until = Some(now + ACCEPT_BACKOFF);
                    break;
                }
            }
        }
    }

    fn admit(&mut self, stream: UnixStream) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let limits = self.config.limits.clone();
        if let Some(size) = limits.sndbuf {
            let _ = nix::sys::socket::setsockopt(&stream, nix::sys::socket::sockopt::SndBuf, &size);
        }
        let mut client = Client::new(stream, Instant::now());
        let refusal = match getsockopt(&client.stream, PeerCredentials) {
            Err(e) => Some(format!("cannot read peer credentials: {e}")),
            Ok(cred) if cred.uid() != self.identity.uid && cred.uid() != 0 => Some(format!(
                "permission denied: process {} runs as uid {}, and only uid {} or root may attach (you are uid {}): run leaktop as uid {} or as root",
                self.identity.pid,
                self.identity.uid,
                self.identity.uid,
                cred.uid(),
                self.identity.uid,
            )),
            Ok(_) if self.clients.len() >= limits.max_clients => Some(format!(
                "too many clients: the agent serves at most {} at once",
                limits.max_clients
            )),
            Ok(_) => None,
        };
        if let Some(reason) = refusal {
            client.queue(&AgentMsg::Refused { reason }, &limits);
            // Best effort, without blocking: the refused client gets one write.
            let _ = send_nosignal(&client.stream, &client.out);
            return;
        }
        client.fd_slot = forked::register(client.stream.as_raw_fd());
        self.clients.push(client);
    }

    fn read_all(&mut self, now: Instant) {
        let mut buf = [0u8; 4096];
        let limits = self.config.limits.clone();
        for i in 0..self.clients.len() {
            let mut eof = false;
            let mut read = 0;
            // Requests left over from a pause first.
            self.handle_frames(i, now);
            loop {
                let c = &mut self.clients[i];
                // Backpressure: a client that does not read its replies is not read either.
                if c.closing || c.paused(&limits) || read >= limits.read_per_turn {
                    break;
                }
                match c.stream.read(&mut buf) {
                    Ok(0) => {
                        eof = true;
                        break;
                    }
                    Ok(n) => {
                        read += n;
                        c.dec.push(&buf[..n]);
                        self.handle_frames(i, now);
                    }
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        eof = true;
                        break;
                    }
                }
            }
            if eof {
                // Peer closed its end: whatever is queued can't be read any more.
                self.clients[i].abandon();
            }
        }
    }

    fn handle_frames(&mut self, i: usize, now: Instant) {
        let limits = self.config.limits.clone();
        loop {
            let c = &mut self.clients[i];
            if c.closing || c.paused(&limits) {
                return;
            }
            let frame = match c.dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    // Cannot resynchronise after a bad length: say why and close.
                    c.queue_error(format!("protocol error: {e}"), &limits);
                    c.closing = true;
                    return;
                }
            };
            c.active_at = now;
            match wire::decode::<ClientMsg>(&frame) {
                Ok(msg) => self.handle(i, msg),
                Err(e) => {
                    let c = &mut self.clients[i];
                    if !c.greeted {
                        c.queue(
                            &AgentMsg::Refused {
                                reason: format!("expected a leaktop hello: {e}"),
                            },
                            &limits,
                        );
                        c.closing = true;
                        return;
                    }
                    c.queue_error(format!("unknown or malformed request: {e}"), &limits);
                }
            }
        }
    }

    fn hello(&self, protocol: u32) -> AgentMsg {
        AgentMsg::Hello(wire::AgentHello {
            protocol: protocol.min(wire::PROTOCOL_VERSION),
            agent_version: env!("CARGO_PKG_VERSION").to_string(),
            pid: self.identity.pid,
            start_time_ticks: self.identity.start_time_ticks,
            exe: self.identity.exe.clone(),
            build_id: self.identity.build_id.clone(),
            uid: self.identity.uid,
            origin_unix_ms: clock::origin_unix_ms(),
            now_ms: clock::now_ms(),
            sample_interval_ms: self.config.sample_interval.as_millis() as u32,
            history_len: self.config.history_len as u32,
            site_cap: registry().site_cap() as u32,
        })
    }

    fn handle(&mut self, i: usize, msg: ClientMsg) {
        let limits = self.config.limits.clone();
        if !self.clients[i].greeted {
            let reply = match msg {
                ClientMsg::Hello { protocol, .. } if protocol >= wire::MIN_PROTOCOL_VERSION => {
                    self.clients[i].greeted = true;
                    self.hello(protocol)
                }
                ClientMsg::Hello { protocol, .. } => AgentMsg::Refused {
                    reason: format!(
                        "protocol version mismatch: client speaks {protocol}, agent {} speaks {}..={}",
                        env!("CARGO_PKG_VERSION"),
                        wire::MIN_PROTOCOL_VERSION,
                        wire::PROTOCOL_VERSION
                    ),
                },
                _ => AgentMsg::Refused {
                    reason: "the first message must be Hello".into(),
                },
            };
            let c = &mut self.clients[i];
            c.queue(&reply, &limits);
            if matches!(reply, AgentMsg::Refused { .. }) {
                c.closing = true;
            } else {
                c.queue(&AgentMsg::Modules(procinfo::exec_mappings()), &limits);
            }
            return;
        }
        match msg {
            ClientMsg::Hello { .. } => {
                self.clients[i].queue_error("already greeted".into(), &limits)
            }
            ClientMsg::Snapshot if self.clients[i].history.is_some() => {
                self.clients[i].snapshot_after_history = true;
            }
            ClientMsg::Snapshot => self.send_snapshot(i),
            ClientMsg::Subscribe { interval_ms } => {
                let interval =
                    Duration::from_millis(interval_ms as u64).clamp(MIN_INTERVAL, MAX_INTERVAL);
                self.clients[i].subscription = Some((interval, Instant::now()));
            }
            ClientMsg::Unsubscribe => self.clients[i].subscription = None,
            ClientMsg::History => {
                // A second request restarts the transfer.
                self.clients[i].history = Some(self.rings.cursor());
                self.serve_history();
            }
            ClientMsg::Tasks { site, group, limit } => {
                let limit = (limit as usize).min(MAX_TASKS_PER_REQUEST);
                let tasks = registry().oldest_tasks(site, group.as_ref(), limit);
                self.clients[i].queue_after_defs(
                    &AgentMsg::Tasks(wire::TaskList { site, group, tasks }),
                    &limits,
                );
            }
            ClientMsg::ExeFd => {
                let c = &mut self.clients[i];
                // The descriptor goes with the first byte of the reply, so the reply must
                // be the next byte the client reads.
                match std::fs::File::open("/proc/self/exe") {
                    Ok(f) if c.pending() == 0 && c.after_defs.is_empty() && !c.closing => {
                        c.pending_fd = Some(f);
                        c.queue(&AgentMsg::ExeFd { ok: true }, &limits);
                    }
                    _ => c.queue(&AgentMsg::ExeFd { ok: false }, &limits),
                }
            }
            ClientMsg::Ping => self.clients[i].queue(&AgentMsg::Pong, &limits),
            ClientMsg::TasksV2 { .. } | ClientMsg::TaskDump { .. } => self.clients[i].queue_error(
                "this agent does not serve protocol-2 requests yet".into(),
                &limits,
            ),
        }
    }

    fn send_snapshot(&mut self, i: usize) {
        self.seq += 1;
        let snap = registry().snapshot(self.seq);
        let limits = &self.config.limits;
        self.clients[i].queue_after_defs(&AgentMsg::Snapshot(snap), limits);
    }

    /// Queues more definitions for the clients waiting on them.
    fn serve_defs(&mut self) {
        let limits = &self.config.limits;
        for c in &mut self.clients {
            if !c.closing && !c.after_defs.is_empty() {
                c.send_defs(limits);
            }
        }
    }

    /// Queues the next parts of history transfers for clients that have read the last.
    fn serve_history(&mut self) {
        let limits = self.config.limits.clone();
        for i in 0..self.clients.len() {
            loop {
                let c = &mut self.clients[i];
                if c.closing || c.pending() >= limits.low_water || !c.after_defs.is_empty() {
                    break;
                }
                let Some(cursor) = c.history.as_mut() else {
                    break;
                };
                match self.rings.next_chunk(cursor) {
                    Some(part) => c.queue_after_defs(&AgentMsg::History(part), &limits),
                    None => {
                        c.history = None;
                        if std::mem::take(&mut c.snapshot_after_history) {
                            self.send_snapshot(i);
                        }
                        break;
                    }
                }
            }
        }
    }

    fn serve_subscriptions(&mut self, now: Instant) {
        for i in 0..self.clients.len() {
            let c = &mut self.clients[i];
            let Some((interval, next)) = c.subscription else {
                continue;
            };
            if now < next || c.closing {
                continue;
            }
            c.subscription = Some((interval, now + interval));
            // A subscriber that has not read the last snapshot (or is still receiving the
            // history or definitions) skips this one.
            if c.pending() > 0 || c.history.is_some() || !c.after_defs.is_empty() {
                continue;
            }
            self.send_snapshot(i);
        }
    }

    fn flush_all(&mut self, now: Instant) {
        for c in &mut self.clients {
            c.flush(now);
        }
    }

    fn reap(&mut self, now: Instant) {
        let limits = &self.config.limits;
        self.clients.retain(|c| !c.expired(now, limits));
    }
}

#[cfg(test)]
mod tests;
