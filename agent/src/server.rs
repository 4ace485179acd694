//! The agent's one OS thread: binds the socket, accepts clients, answers requests and
//! streams snapshots. Nothing here runs on the host program's threads.
//!
//! Every client is non-blocking and bounded: requests are at most
//! [`wire::MAX_CLIENT_FRAME`] bytes, unsent output at most [`MAX_PENDING_OUT`] (a
//! subscriber that falls behind skips snapshots; the requests of a client with more than
//! [`READ_PAUSE_OUT`] unsent are not read until it catches up, so a client that asks and
//! never reads costs neither memory nor CPU; one whose single reply overflows the cap is
//! dropped), a client that says nothing useful within [`HELLO_TIMEOUT`] is dropped, at
//! most [`MAX_CLIENTS`] are served at once, and each is read at most [`READ_PER_TURN`]
//! bytes per turn of the loop so none can starve the others.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};

use crate::history::{self, Rings};
use crate::registry::registry;
use crate::wire::{self, AgentMsg, ClientMsg};
use crate::{clock, procinfo};

pub(crate) const MAX_CLIENTS: usize = 64;
pub(crate) const MAX_PENDING_OUT: usize = 16 * 1024 * 1024;
pub(crate) const HELLO_TIMEOUT: Duration = Duration::from_secs(10);
/// Unsent output above which a client's further requests wait in its socket.
pub(crate) const READ_PAUSE_OUT: usize = 1024 * 1024;
/// Bytes read from one client per turn of the loop.
pub(crate) const READ_PER_TURN: usize = 64 * 1024;
const MIN_INTERVAL: Duration = Duration::from_millis(50);
const MAX_INTERVAL: Duration = Duration::from_secs(3600);
const MAX_TASKS_PER_REQUEST: usize = 10_000;
/// The loop turns at least this often, refreshing the cached clock of the hot paths.
pub(crate) const TICK_EVERY: Duration = Duration::from_millis(100);

/// Settings the thread runs with.
pub(crate) struct ServerConfig {
    pub sample_interval: Duration,
    pub history_len: usize,
    /// Memory cap of all history rings together, bytes.
    pub history_budget: usize,
}

/// A client's output below which the next part of a history transfer is queued.
const HISTORY_LOW_WATER: usize = 256 * 1024;

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
    dec: wire::FrameDecoder,
    out: Vec<u8>,
    out_pos: usize,
    greeted: bool,
    connected_at: Instant,
    /// Close once `out` is flushed.
    closing: bool,
    subscription: Option<(Duration, Instant)>,
    /// Locations `0..defined_locs` have been sent to this client.
    defined_locs: usize,
    /// Stacks `0..defined_stacks` have been sent to this client.
    defined_stacks: usize,
    /// Task names `0..defined_names` have been sent to this client.
    defined_names: usize,
    /// The protocol version agreed in the handshake.
    protocol: u32,
    /// Ancillary descriptor to send with the next write.
    pending_fd: Option<std::fs::File>,
    /// A history transfer in progress (sent in parts as the client reads).
    history: Option<history::Cursor>,
    /// A snapshot was asked for during the history transfer: it follows the last part.
    snapshot_after_history: bool,
}

impl Client {
    fn pending(&self) -> usize {
        self.out.len() - self.out_pos
    }

    /// Its requests wait until it has read enough of its replies.
    fn paused(&self) -> bool {
        self.pending() > READ_PAUSE_OUT
    }

    fn queue(&mut self, msg: &AgentMsg) {
        match wire::encode_frame(msg) {
            Ok(frame) => {
                if self.pending() + frame.len() > MAX_PENDING_OUT {
                    // Not reading: drop rather than grow.
                    self.closing = true;
                    self.out.clear();
                    self.out_pos = 0;
                    return;
                }
                self.out.extend_from_slice(&frame);
            }
            Err(e) => self.queue_error(format!("cannot encode reply: {e}")),
        }
    }

    fn queue_error(&mut self, message: String) {
        if let Ok(frame) = wire::encode_frame(&AgentMsg::Error { message }) {
            self.out.extend_from_slice(&frame);
        }
    }

    /// Sends definitions of every location and stack interned since the last call (so
    /// they precede the first message that uses them).
    fn define_new_locations(&mut self) {
        let reg = registry();
        let count = reg.location_count();
        while self.defined_locs < count {
            let id = self.defined_locs as wire::LocId;
            if let Some(loc) = reg.location(id) {
                self.queue(&AgentMsg::Location { id, loc });
            }
            self.defined_locs += 1;
        }
        let stacks = reg.stacks();
        let count = stacks.count();
        while self.defined_stacks < count {
            let id = self.defined_stacks as wire::StackId;
            if let Some(frames) = stacks.get(id) {
                self.queue(&AgentMsg::Stack { id, frames });
            }
            self.defined_stacks += 1;
        }
        if self.protocol < 2 {
            return;
        }
        let count = reg.name_count();
        while self.defined_names < count {
            let id = self.defined_names as wire::NameId;
            if let Some(name) = reg.name(id) {
                self.queue(&AgentMsg::Name { id, name });
            }
            self.defined_names += 1;
        }
    }
}

pub(crate) struct Server {
    listener: UnixListener,
    path: PathBuf,
    clients: Vec<Client>,
    identity: Identity,
    config: ServerConfig,
    rings: Rings,
    seq: u64,
    stop: Arc<AtomicBool>,
}

impl Server {
    pub fn new(
        listener: UnixListener,
        path: PathBuf,
        config: ServerConfig,
        stop: Arc<AtomicBool>,
    ) -> Server {
        let pid = std::process::id();
        let rings = Rings::new(
            config.sample_interval.as_millis().min(u32::MAX as u128) as u32,
            config.history_len,
            config.history_budget,
        );
        Server {
            listener,
            path,
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
            stop,
        }
    }

    /// The thread's loop; returns when asked to stop (the socket is removed then).
    pub fn run(mut self) {
        let _ = self.listener.set_nonblocking(true);
        let mut next_sample = Instant::now();
        while !self.stop.load(Ordering::Relaxed) {
            clock::tick();
            let now = Instant::now();
            if now >= next_sample {
                // Waits that began since the last look become blocked-group members now.
                registry().promote_all();
                let sites = registry().sites();
                let shards = crate::shard::all();
                self.rings.record(
                    clock::now_ms(),
                    sites.iter().map(|s| (s.loc, s.sample(&shards))),
                );
                #[cfg(feature = "metrics")]
                crate::metrics::publish();
                next_sample = now + self.config.sample_interval;
            }
            self.serve_history();
            self.serve_subscriptions(now);
            self.flush_all();
            self.reap(now);
            let deadline = self.next_deadline(next_sample);
            self.wait(deadline);
            // Notice the clients that left before admitting new ones: a slot freed by a
            // disconnect is free for the connection that came right after it.
            self.read_all();
            self.reap(Instant::now());
            self.accept_all();
        }
        clock::stop_ticking();
        let _ = std::fs::remove_file(&self.path);
    }

    fn next_deadline(&self, next_sample: Instant) -> Instant {
        let mut deadline = next_sample;
        for c in &self.clients {
            if let Some((_, next)) = c.subscription {
                deadline = deadline.min(next);
            }
            if !c.greeted {
                deadline = deadline.min(c.connected_at + HELLO_TIMEOUT);
            }
            if c.history.is_some() && c.pending() == 0 {
                deadline = Instant::now();
            }
        }
        // Wake up now and then to notice `stop` and refresh the cached clock.
        deadline.min(Instant::now() + TICK_EVERY)
    }

    fn wait(&mut self, deadline: Instant) {
        let timeout = deadline.saturating_duration_since(Instant::now());
        let ms = timeout.as_millis().min(60_000) as u16;
        let mut fds = Vec::with_capacity(self.clients.len() + 1);
        fds.push(PollFd::new(self.listener.as_fd(), PollFlags::POLLIN));
        for c in &self.clients {
            let mut flags = PollFlags::empty();
            // Not for a client whose requests wait (it would wake the loop at once).
            if !c.closing && !c.paused() {
                flags |= PollFlags::POLLIN;
            }
            if c.pending() > 0 {
                flags |= PollFlags::POLLOUT;
            }
            fds.push(PollFd::new(c.stream.as_fd(), flags));
        }
        let _ = poll(&mut fds, PollTimeout::from(ms));
    }

    fn accept_all(&mut self) {
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => self.admit(stream),
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => break, // WouldBlock, or EMFILE: try again next round
            }
        }
    }

    fn admit(&mut self, stream: UnixStream) {
        if stream.set_nonblocking(true).is_err() {
            return;
        }
        let mut client = Client {
            stream,
            dec: wire::FrameDecoder::new(wire::MAX_CLIENT_FRAME),
            out: Vec::new(),
            out_pos: 0,
            greeted: false,
            connected_at: Instant::now(),
            closing: false,
            subscription: None,
            defined_locs: 0,
            defined_stacks: 0,
            defined_names: 0,
            protocol: 1,
            pending_fd: None,
            history: None,
            snapshot_after_history: false,
        };
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
            Ok(_) if self.clients.len() >= MAX_CLIENTS => Some(format!(
                "too many clients: the agent serves at most {MAX_CLIENTS} at once"
            )),
            Ok(_) => None,
        };
        if let Some(reason) = refusal {
            client.queue(&AgentMsg::Refused { reason });
            client.closing = true;
            // Best effort, without blocking: the refused client gets one write.
            let _ = client.stream.write(&client.out);
            return;
        }
        self.clients.push(client);
    }

    fn read_all(&mut self) {
        let mut buf = [0u8; 4096];
        for i in 0..self.clients.len() {
            let mut eof = false;
            let mut read = 0;
            // Requests left over from a pause first.
            self.handle_frames(i);
            loop {
                let c = &mut self.clients[i];
                // Backpressure: a client that does not read its replies is not read either.
                if c.closing || c.paused() || read >= READ_PER_TURN {
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
                        self.handle_frames(i);
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
                self.clients[i].closing = true;
                self.clients[i].out.clear();
                self.clients[i].out_pos = 0;
            }
        }
    }

    fn handle_frames(&mut self, i: usize) {
        loop {
            let c = &mut self.clients[i];
            if c.closing || c.paused() {
                return;
            }
            let frame = match c.dec.next_frame() {
                Ok(Some(f)) => f,
                Ok(None) => return,
                Err(e) => {
                    // Cannot resynchronise after a bad length: say why and close.
                    let c = &mut self.clients[i];
                    c.queue_error(format!("protocol error: {e}"));
                    c.closing = true;
                    return;
                }
            };
            match wire::decode::<ClientMsg>(&frame) {
                Ok(msg) => self.handle(i, msg),
                Err(e) => {
                    let c = &mut self.clients[i];
                    if !c.greeted {
                        c.queue(&AgentMsg::Refused {
                            reason: format!("expected a leaktop hello: {e}"),
                        });
                        c.closing = true;
                        return;
                    }
                    c.queue_error(format!("unknown or malformed request: {e}"));
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
        if !self.clients[i].greeted {
            let reply = match msg {
                ClientMsg::Hello { protocol, .. } if protocol >= wire::MIN_PROTOCOL_VERSION => {
                    self.clients[i].greeted = true;
                    self.clients[i].protocol = protocol.min(wire::PROTOCOL_VERSION);
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
            if matches!(reply, AgentMsg::Refused { .. }) {
                c.closing = true;
            } else {
                c.queue(&AgentMsg::Modules(procinfo::exec_mappings()));
            }
            // Hello goes first: put it before the module map.
            let mut out = Vec::new();
            if let Ok(frame) = wire::encode_frame(&reply) {
                out.extend_from_slice(&frame);
            }
            out.extend_from_slice(&c.out[c.out_pos..]);
            c.out = out;
            c.out_pos = 0;
            return;
        }
        match msg {
            ClientMsg::Hello { .. } => self.clients[i].queue_error("already greeted".into()),
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
                let c = &mut self.clients[i];
                c.define_new_locations();
                c.queue(&AgentMsg::Tasks(wire::TaskList { site, group, tasks }));
            }
            ClientMsg::ExeFd => {
                let c = &mut self.clients[i];
                match std::fs::File::open("/proc/self/exe") {
                    Ok(f) if c.pending() == 0 => {
                        c.pending_fd = Some(f);
                        c.queue(&AgentMsg::ExeFd { ok: true });
                    }
                    _ => c.queue(&AgentMsg::ExeFd { ok: false }),
                }
            }
            ClientMsg::Ping => self.clients[i].queue(&AgentMsg::Pong),
            ClientMsg::TasksV2 { site, group, limit } => {
                let limit = (limit as usize).min(MAX_TASKS_PER_REQUEST);
                let tasks = registry().tasks_v2(site, group.as_ref(), limit);
                let c = &mut self.clients[i];
                c.define_new_locations();
                c.queue(&AgentMsg::TasksV2(wire::TaskListV2 { site, group, tasks }));
            }
            ClientMsg::TaskDump { .. } => {
                self.clients[i].queue(&AgentMsg::TaskDump(wire::TaskDump {
                    at_ms: clock::now_ms(),
                    notes: vec![
                        "task dumps need the `tokio-hooks` feature and a hooked runtime".into(),
                    ],
                    ..wire::TaskDump::default()
                }))
            }
        }
    }

    fn send_snapshot(&mut self, i: usize) {
        self.seq += 1;
        let snap = registry().snapshot_v2(self.seq);
        let c = &mut self.clients[i];
        c.define_new_locations();
        if c.protocol >= 2 {
            c.queue(&AgentMsg::SnapshotV2(snap));
        } else {
            c.queue(&AgentMsg::Snapshot(snap.to_v1()));
        }
    }

    /// Queues the next parts of history transfers for clients that have read the last.
    fn serve_history(&mut self) {
        if self.clients.iter().all(|c| c.history.is_none()) {
            return;
        }
        let shards = crate::shard::all();
        let by_loc: std::collections::HashMap<wire::LocId, &crate::registry::Site> =
            registry().sites().into_iter().map(|s| (s.loc, s)).collect();
        let lifetimes = |loc: wire::LocId| {
            by_loc
                .get(&loc)
                .map(|s| s.lifetimes(&shards))
                .unwrap_or_default()
        };
        for i in 0..self.clients.len() {
            loop {
                let c = &mut self.clients[i];
                if c.closing || c.pending() >= HISTORY_LOW_WATER {
                    break;
                }
                let Some(cursor) = c.history.as_mut() else {
                    break;
                };
                match self.rings.next_chunk(cursor, lifetimes) {
                    Some(part) => {
                        c.define_new_locations();
                        if c.protocol >= 2 {
                            c.queue(&AgentMsg::HistoryV2(part));
                        } else {
                            c.queue(&AgentMsg::History(part.to_v1()));
                        }
                    }
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
            // history) skips this one.
            if c.pending() > 0 || c.history.is_some() {
                continue;
            }
            self.send_snapshot(i);
        }
    }

    fn flush_all(&mut self) {
        for c in &mut self.clients {
            if let Some(fd) = c.pending_fd.take() {
                if send_with_fd(&c.stream, &c.out[c.out_pos..], &fd).is_ok() {
                    c.out.clear();
                    c.out_pos = 0;
                } else {
                    c.closing = true;
                }
                continue;
            }
            while c.pending() > 0 {
                match c.stream.write(&c.out[c.out_pos..]) {
                    Ok(0) => break,
                    Ok(n) => c.out_pos += n,
                    Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                    Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                    Err(_) => {
                        c.closing = true;
                        c.out.clear();
                        c.out_pos = 0;
                        break;
                    }
                }
            }
            if c.pending() == 0 {
                c.out.clear();
                c.out_pos = 0;
            } else if c.out_pos > 1024 * 1024 {
                c.out.drain(..c.out_pos);
                c.out_pos = 0;
            }
        }
    }

    fn reap(&mut self, now: Instant) {
        self.clients.retain(|c| {
            let timed_out = !c.greeted && now.duration_since(c.connected_at) > HELLO_TIMEOUT;
            !(timed_out || (c.closing && c.pending() == 0))
        });
    }
}

/// Writes `bytes` with `fd` attached as SCM_RIGHTS, in one blocking-ish attempt.
fn send_with_fd(stream: &UnixStream, bytes: &[u8], fd: &std::fs::File) -> nix::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd.as_raw_fd()];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(bytes)];
    let sent = sendmsg::<()>(stream.as_raw_fd(), &iov, &cmsg, MsgFlags::empty(), None)?;
    if sent < bytes.len() {
        // The descriptor went with the first bytes; finish the rest plainly.
        let mut rest = &bytes[sent..];
        let mut s = stream;
        while !rest.is_empty() {
            match s.write(rest) {
                Ok(n) => rest = &rest[n..],
                Err(e) if e.kind() == ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(1))
                }
                Err(_) => return Err(nix::Error::EIO),
            }
        }
    }
    Ok(())
}
