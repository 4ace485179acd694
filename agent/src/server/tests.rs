//! The agent thread's loop, stepped turn by turn in the test's own thread against real
//! Unix sockets: deterministic interleavings of clients that connect, read half a reply,
//! read slowly, send garbage, half-close or vanish.

use super::*;
use std::io::Write;

use proptest::prelude::*;

/// A server on a fresh socket whose turns never wait (the test steps it).
struct Harness {
    server: Server,
    path: std::path::PathBuf,
    _dir: tempfile::TempDir,
    _wake_tx: OwnedFd,
}

impl Harness {
    fn new(limits: Limits) -> Harness {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("agent.sock");
        let listener = UnixListener::bind(&path).expect("bind");
        let (rx, tx) =
            nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK)
                .expect("pipe");
        let server = Server::new(
            listener,
            rx,
            ServerConfig {
                sample_interval: Duration::from_millis(10),
                history_len: 64,
                history_budget: 1 << 20,
                limits,
            },
            Arc::new(Shared::default()),
        );
        Harness {
            server,
            path,
            _dir: dir,
            _wake_tx: tx,
        }
    }

    fn turns(&mut self, n: usize) {
        for _ in 0..n {
            self.server.turn();
        }
    }

    fn connect(&self) -> UnixStream {
        let s = UnixStream::connect(&self.path).expect("connect");
        s.set_nonblocking(true).unwrap();
        s
    }
}

fn tiny_limits() -> Limits {
    Limits {
        max_clients: 6,
        max_pending_out: 8 * 1024,
        read_pause_out: 2 * 1024,
        read_per_turn: 512,
        low_water: 1024,
        hello_timeout: Duration::from_millis(40),
        stall_timeout: Duration::from_millis(60),
        idle_timeout: Duration::from_millis(120),
        tick: Duration::ZERO,
        sndbuf: Some(4096),
    }
}

fn hello_frame() -> Vec<u8> {
    wire::encode_frame(&ClientMsg::Hello {
        protocol: wire::PROTOCOL_VERSION,
        client: "prop".into(),
    })
    .unwrap()
}

/// Reads whatever has arrived (at most `max` bytes) into `dec`; false on EOF or error.
fn read_some(s: &mut UnixStream, dec: &mut wire::FrameDecoder, max: usize) -> bool {
    let mut buf = vec![0u8; max.max(1)];
    match s.read(&mut buf) {
        Ok(0) => false,
        Ok(n) => {
            dec.push(&buf[..n]);
            true
        }
        Err(e) => e.kind() == ErrorKind::WouldBlock,
    }
}

/// Live instrumented tasks on a few sites and many long locations, so snapshots and
/// definitions are bigger than the tiny budgets.
fn populate() -> Vec<crate::Instrumented<std::future::Pending<()>>> {
    static FILE: &str = "src/a/rather/long/path/of/a/module/that/defines/many/call/sites.rs";
    for line in 0..300 {
        registry().intern_parts(FILE, line, 1);
    }
    (0..20)
        .map(|_| crate::instrument(std::future::pending::<()>()))
        .collect()
}

#[derive(Clone, Debug)]
enum Op {
    Connect,
    Hello(usize),
    Request(usize, ClientMsg),
    /// Read at most this many bytes.
    Read(usize, usize),
    /// Read everything there is.
    Drain(usize),
    Garbage(usize, Vec<u8>),
    /// A frame cut after `n` bytes.
    HalfFrame(usize, usize),
    HalfClose(usize),
    Disconnect(usize),
    /// Let the server's timeouts run.
    Sleep,
}

fn request() -> impl Strategy<Value = ClientMsg> {
    prop_oneof![
        Just(ClientMsg::Snapshot),
        (0u32..200).prop_map(|interval_ms| ClientMsg::Subscribe { interval_ms }),
        Just(ClientMsg::Unsubscribe),
        Just(ClientMsg::History),
        Just(ClientMsg::ExeFd),
        Just(ClientMsg::Ping),
        (0u32..400, 0u32..50).prop_map(|(site, limit)| ClientMsg::Tasks {
            site,
            group: None,
            limit
        }),
    ]
}

fn op() -> impl Strategy<Value = Op> {
    let c = 0usize..8;
    prop_oneof![
        3 => Just(Op::Connect),
        3 => c.clone().prop_map(Op::Hello),
        6 => (c.clone(), request()).prop_map(|(c, r)| Op::Request(c, r)),
        4 => (c.clone(), 1usize..3000).prop_map(|(c, n)| Op::Read(c, n)),
        2 => c.clone().prop_map(Op::Drain),
        1 => (c.clone(), proptest::collection::vec(any::<u8>(), 1..64))
            .prop_map(|(c, b)| Op::Garbage(c, b)),
        1 => (c.clone(), 1usize..8).prop_map(|(c, n)| Op::HalfFrame(c, n)),
        1 => c.clone().prop_map(Op::HalfClose),
        2 => c.prop_map(Op::Disconnect),
        1 => Just(Op::Sleep),
    ]
}

struct TestClient {
    stream: UnixStream,
    dec: wire::FrameDecoder,
}

fn apply(h: &Harness, clients: &mut Vec<TestClient>, op: &Op) {
    let pick = |clients: &mut Vec<TestClient>, i: usize| {
        let n = clients.len();
        (n > 0).then(|| i % n)
    };
    match op {
        Op::Connect => clients.push(TestClient {
            stream: h.connect(),
            dec: wire::FrameDecoder::new(wire::MAX_FRAME),
        }),
        Op::Hello(i) => {
            if let Some(i) = pick(clients, *i) {
                let _ = clients[i].stream.write(&hello_frame());
            }
        }
        Op::Request(i, msg) => {
            if let Some(i) = pick(clients, *i) {
                let _ = clients[i].stream.write(&wire::encode_frame(msg).unwrap());
            }
        }
        Op::Read(i, n) => {
            if let Some(i) = pick(clients, *i) {
                let c = &mut clients[i];
                read_some(&mut c.stream, &mut c.dec, *n);
                // Keep the test's own memory bounded too.
                while let Ok(Some(_)) = c.dec.next_frame() {}
            }
        }
        Op::Drain(i) => {
            if let Some(i) = pick(clients, *i) {
                let c = &mut clients[i];
                for _ in 0..64 {
                    let before = c.dec.buffered();
                    if !read_some(&mut c.stream, &mut c.dec, 64 * 1024) {
                        break;
                    }
                    while let Ok(Some(_)) = c.dec.next_frame() {}
                    if c.dec.buffered() == before {
                        break;
                    }
                }
            }
        }
        Op::Garbage(i, bytes) => {
            if let Some(i) = pick(clients, *i) {
                let _ = clients[i].stream.write(bytes);
            }
        }
        Op::HalfFrame(i, n) => {
            if let Some(i) = pick(clients, *i) {
                let f = wire::encode_frame(&ClientMsg::Snapshot).unwrap();
                let _ = clients[i].stream.write(&f[..(*n).min(f.len() - 1)]);
            }
        }
        Op::HalfClose(i) => {
            if let Some(i) = pick(clients, *i) {
                let _ = clients[i].stream.shutdown(std::net::Shutdown::Write);
            }
        }
        Op::Disconnect(i) => {
            if let Some(i) = pick(clients, *i) {
                clients.remove(i);
            }
        }
        Op::Sleep => std::thread::sleep(Duration::from_millis(25)),
    }
}

/// Bytes the server holds for its clients, and the most any one may hold.
fn assert_bounded(server: &Server) {
    let l = &server.config.limits;
    assert!(
        server.clients.len() <= l.max_clients,
        "{} clients",
        server.clients.len()
    );
    // One frame past the cap at most: the last one, saying why the client was dropped.
    let slack = 256;
    for c in &server.clients {
        assert!(
            c.pending() <= l.max_pending_out + slack,
            "unsent output {} over the cap {}",
            c.pending(),
            l.max_pending_out
        );
        assert!(
            c.out.len() <= l.max_pending_out + slack + (1 << 20),
            "{}",
            c.out.len()
        );
        assert!(
            c.after_defs.len() <= l.max_pending_out,
            "{}",
            c.after_defs.len()
        );
        assert!(
            c.dec.buffered() <= wire::MAX_CLIENT_FRAME + wire::HEADER_LEN + l.read_per_turn + 4096,
            "{} request bytes buffered",
            c.dec.buffered()
        );
    }
}

/// A well-behaved client is served: hello, then a snapshot.
fn assert_serves(h: &mut Harness) {
    let mut s = h.connect();
    s.write_all(&hello_frame()).unwrap();
    s.write_all(&wire::encode_frame(&ClientMsg::Snapshot).unwrap())
        .unwrap();
    let mut dec = wire::FrameDecoder::new(wire::MAX_FRAME);
    let (mut hello, mut snapshot) = (false, false);
    for _ in 0..2000 {
        h.turns(1);
        assert!(
            read_some(&mut s, &mut dec, 64 * 1024),
            "the server closed a good client"
        );
        while let Ok(Some(f)) = dec.next_frame() {
            match wire::decode::<AgentMsg>(&f).expect("agent frame") {
                AgentMsg::Hello(_) => hello = true,
                AgentMsg::Snapshot(_) => snapshot = true,
                AgentMsg::Refused { reason } => panic!("a good client was refused: {reason}"),
                _ => {}
            }
        }
        if hello && snapshot {
            return;
        }
    }
    panic!("a good client got no hello and snapshot in 2000 turns (hello {hello})");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    /// Any interleaving of connects, hellos, requests, partial and slow reads, garbage,
    /// half-closes and disconnects under a tiny buffer budget: every turn returns (no
    /// wedge), the server never holds more than its caps per client (no growth), once the
    /// clients are gone so are their slots, and a normal client is still served.
    #[test]
    fn interleavings_of_hostile_clients_never_wedge_or_grow(ops in proptest::collection::vec(op(), 1..60)) {
        let _tasks = populate();
        let mut h = Harness::new(tiny_limits());
        let mut clients = Vec::new();
        for op in &ops {
            apply(&h, &mut clients, op);
            h.turns(2);
            assert_bounded(&h.server);
        }
        drop(clients);
        let mut turns = 0;
        while !h.server.clients.is_empty() {
            h.turns(1);
            turns += 1;
            assert!(turns < 1000, "{} clients left after their peers closed", h.server.clients.len());
        }
        assert_serves(&mut h);
    }
}

/// Regression: every location and stack definition a client had not seen was queued at
/// once, so a process whose definitions pass the 16 MiB output cap dropped every client
/// on its first snapshot and could not be attached at all. Definitions now go out as the
/// client reads.
#[test]
fn definitions_past_the_output_cap_are_streamed_and_the_snapshot_follows() {
    static FILE: &str = "src/generated/a/very/deep/module/tree/of/generated/code/with/a/long/path/that/repeats/a/very/deep/module/tree/of/generated/code/with/a/long/path/that/repeats/a/very/deep/module/tree/mod.rs";
    let first = registry().location_count();
    for line in 0..100_000 {
        registry().intern_parts(FILE, line, 7);
    }
    let total = registry().location_count();
    let def_bytes: usize = (first..total)
        .map(|id| {
            let loc = registry().location(id as u32).unwrap();
            wire::encode_frame(&AgentMsg::Location { id: id as u32, loc })
                .unwrap()
                .len()
        })
        .sum();
    assert!(
        def_bytes > MAX_PENDING_OUT,
        "{def_bytes} bytes of definitions"
    );
    let mut h = Harness::new(Limits {
        tick: Duration::ZERO,
        ..Limits::default()
    });
    let mut s = h.connect();
    s.write_all(&hello_frame()).unwrap();
    s.write_all(&wire::encode_frame(&ClientMsg::Snapshot).unwrap())
        .unwrap();
    let mut dec = wire::FrameDecoder::new(wire::MAX_FRAME);
    let mut defined = 0usize;
    let mut most_unsent = 0;
    for _ in 0..200_000 {
        h.turns(1);
        most_unsent = most_unsent.max(h.server.clients.first().map_or(0, |c| c.pending()));
        assert!(
            read_some(&mut s, &mut dec, 1 << 20),
            "the agent dropped the client after {defined} definitions"
        );
        while let Ok(Some(f)) = dec.next_frame() {
            match wire::decode::<AgentMsg>(&f).unwrap() {
                AgentMsg::Location { id, .. } => {
                    assert_eq!(id as usize, defined, "definitions in order");
                    defined += 1;
                }
                AgentMsg::Snapshot(_) => {
                    assert_eq!(defined, total, "every definition precedes the snapshot");
                    println!("{defined} definitions ({def_bytes} bytes), most unsent at once {most_unsent}");
                    assert!(most_unsent <= LOW_WATER + 64 * 1024, "{most_unsent}");
                    return;
                }
                AgentMsg::Error { message } => panic!("{message}"),
                _ => {}
            }
        }
    }
    panic!("no snapshot after {defined} of {total} definitions");
}

/// Regression: a client that asked for the executable's descriptor and then stopped
/// reading wedged the thread: the rest of the reply was retried, 1 ms at a time, until
/// the peer read. Now it goes out like any other reply, and everyone else is served.
#[test]
fn a_client_that_asks_for_the_exe_fd_and_stops_reading_wedges_nothing() {
    let _tasks = populate();
    let mut h = Harness::new(Limits {
        tick: Duration::ZERO,
        sndbuf: Some(4096),
        ..Limits::default()
    });
    let mut s = h.connect();
    s.write_all(&hello_frame()).unwrap();
    h.turns(3);
    let mut dec = wire::FrameDecoder::new(wire::MAX_FRAME);
    while read_some(&mut s, &mut dec, 1 << 20) && dec.buffered() > 0 {
        while let Ok(Some(_)) = dec.next_frame() {}
        h.turns(1);
        if h.server.clients[0].pending() == 0 && outq(&h.server.clients[0].stream) == 0 {
            break;
        }
    }
    // The descriptor, then far more than the socket holds, in one batch.
    let mut batch = wire::encode_frame(&ClientMsg::ExeFd).unwrap();
    for _ in 0..50 {
        batch.extend(wire::encode_frame(&ClientMsg::Snapshot).unwrap());
    }
    s.write_all(&batch).unwrap();
    h.turns(5); // before the fix, the first of these never returned
    let c = &h.server.clients[0];
    assert!(
        c.pending_fd.is_none(),
        "the descriptor went with the first bytes"
    );
    assert!(c.pending() > 0, "the rest waits for the client");
    assert_serves(&mut h);
}

/// Regression: after an overflow the client's queue was cleared mid-frame and later
/// replies still went out, so a dropped client read a torn frame or a snapshot whose
/// definitions were missing. Now it gets whole frames, an error saying why, and EOF.
#[test]
fn an_overflowing_client_gets_whole_frames_then_the_reason_then_eof() {
    let _tasks = populate();
    let limits = Limits {
        max_pending_out: 16 * 1024,
        read_pause_out: 64 * 1024,
        low_water: 4 * 1024,
        tick: Duration::ZERO,
        sndbuf: Some(4096),
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    let mut s = h.connect();
    let mut batch = hello_frame();
    for _ in 0..2000 {
        batch.extend(wire::encode_frame(&ClientMsg::Snapshot).unwrap());
    }
    s.write_all(&batch).unwrap();
    let mut dec = wire::FrameDecoder::new(wire::MAX_FRAME);
    let mut got = Vec::new();
    let mut open = true;
    for _ in 0..5000 {
        h.turns(1);
        // A slow reader: a few bytes per turn.
        open = read_some(&mut s, &mut dec, 700);
        while let Some(f) = dec.next_frame().expect("whole frames only") {
            got.push(wire::decode::<AgentMsg>(&f).expect("no torn frame"));
        }
        if !open {
            break;
        }
    }
    assert!(!open, "the overflowing client was not closed");
    assert_eq!(dec.buffered(), 0, "a torn frame at the end");
    match got.last() {
        Some(AgentMsg::Error { message }) => {
            assert!(message.contains("fell more than"), "{message}")
        }
        other => panic!("last message {other:?}"),
    }
    let snapshots = got
        .iter()
        .filter(|m| matches!(m, AgentMsg::Snapshot(_)))
        .count();
    assert!((1..2000).contains(&snapshots), "{snapshots}");
    assert!(h.server.clients.is_empty());
}

/// Regression: a client that said hello and never read held its slot for ever; with all
/// slots so held, nobody could attach.
#[test]
fn clients_that_never_read_are_dropped_after_the_client_timeout() {
    let limits = Limits {
        max_clients: 4,
        stall_timeout: Duration::from_millis(100),
        tick: Duration::ZERO,
        ..Limits::default()
    };
    let mut h = Harness::new(limits);
    let hogs: Vec<UnixStream> = (0..4)
        .map(|_| {
            let mut s = h.connect();
            s.write_all(&hello_frame()).unwrap();
            s
        })
        .collect();
    h.turns(3);
    assert_eq!(h.server.clients.len(), 4);
    let start = Instant::now();
    while !h.server.clients.is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "never-reading clients kept"
        );
        h.turns(1);
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(start.elapsed() >= Duration::from_millis(100));
    assert_serves(&mut h);
    drop(hogs);
}

/// Regression: `now + sample_interval` overflowed with a huge interval and panicked the
/// agent thread. The interval is clamped.
#[test]
fn a_huge_sample_interval_is_clamped() {
    let dir = tempfile::tempdir().unwrap();
    let listener = UnixListener::bind(dir.path().join("s")).unwrap();
    let (rx, _tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK).unwrap();
    let mut server = Server::new(
        listener,
        rx,
        ServerConfig {
            sample_interval: Duration::MAX,
            history_len: 4,
            history_budget: 1 << 16,
            limits: Limits {
                tick: Duration::ZERO,
                ..Limits::default()
            },
        },
        Arc::new(Shared::default()),
    );
    server.turn();
    server.turn();
    assert_eq!(server.config.sample_interval, MAX_SAMPLE_INTERVAL);
}

/// A `metrics` recorder that panics, but only on threads named `panicky-agent` (the
/// other tests of this process share the global recorder).
struct PanickyRecorder;

impl metrics::Recorder for PanickyRecorder {
    fn describe_counter(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_gauge(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn describe_histogram(
        &self,
        _: metrics::KeyName,
        _: Option<metrics::Unit>,
        _: metrics::SharedString,
    ) {
    }
    fn register_counter(&self, _: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Counter {
        metrics::Counter::noop()
    }
    fn register_gauge(&self, key: &metrics::Key, _: &metrics::Metadata<'_>) -> metrics::Gauge {
        if std::thread::current().name() == Some("panicky-agent") {
            panic!("the host's recorder exploded on {}", key.name());
        }
        metrics::Gauge::noop()
    }
    fn register_histogram(
        &self,
        _: &metrics::Key,
        _: &metrics::Metadata<'_>,
    ) -> metrics::Histogram {
        metrics::Histogram::noop()
    }
}

/// Regression: a panic on the agent thread (here a user's `metrics` recorder) ended the
/// thread silently: the cached clock froze and clients met a dead socket. Now it is
/// caught, the clock is released, and every later client is told why.
#[test]
fn a_panic_on_the_agent_thread_is_caught_and_told_to_the_next_client() {
    let _ = metrics::set_global_recorder(PanickyRecorder);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("s");
    let listener = UnixListener::bind(&path).unwrap();
    let (rx, tx) =
        nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC | nix::fcntl::OFlag::O_NONBLOCK).unwrap();
    let shared = Arc::new(Shared::default());
    let server = Server::new(
        listener,
        rx,
        ServerConfig {
            sample_interval: Duration::from_secs(1),
            history_len: 4,
            history_budget: 1 << 16,
            limits: Limits::default(),
        },
        shared.clone(),
    );
    let thread = std::thread::Builder::new()
        .name("panicky-agent".into())
        .spawn(move || server.run())
        .unwrap();
    let mut s = UnixStream::connect(&path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = s.write_all(&hello_frame());
    let reply = wire::read_frame(&mut s, wire::MAX_FRAME).unwrap().unwrap();
    match wire::decode::<AgentMsg>(&reply).unwrap() {
        AgentMsg::Refused { reason } => {
            assert!(reason.starts_with(wire::AGENT_STOPPED), "{reason}");
            assert!(reason.contains("the host's recorder exploded"), "{reason}");
        }
        other => panic!("{other:?}"),
    }
    assert!(shared.failed.get().is_some());
    assert_eq!(clock::ticked_now_ms(), None, "the cached clock is released");
    shared.stop.store(true, Ordering::Relaxed);
    nix::unistd::write(&tx, &[1]).unwrap();
    thread.join().expect("the thread ends cleanly on shutdown");
}
