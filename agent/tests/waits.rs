//! Where instrumented tasks wait, whatever they wait on: the sampling waker captures the
//! await chain down to the leaf future (a socket, a timer, a lock, another library's
//! channel, …). Each task below waits in one named async fn; the test finds its group in
//! a protocol-2 snapshot and symbolizes the chain in-process: it must name the task's own
//! function and the leaf. (`leaktop` names the *reason* from the same frames out of
//! process; see tests/waits.rs at the workspace root.)

use std::future::{pending, Future};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use leaktop_agent::bench_support::{location, snapshot_v2, stack};
use leaktop_agent::wire::{Op, SnapshotV2, WaitGroup};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn rt() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// The function names of stack `id`, innermost first (symbolized in this process).
fn functions(id: u32) -> Vec<String> {
    let mut out = Vec::new();
    for ip in stack(id).unwrap_or_default() {
        // Return addresses name the call (ip - 1); a root future's entry (stored + 1) is
        // found either way.
        for addr in [ip.saturating_sub(1), ip] {
            let before = out.len();
            backtrace::resolve(addr as usize as *mut std::ffi::c_void, |s| {
                if let Some(n) = s.name() {
                    out.push(format!("{n:#}"));
                }
            });
            if out.len() > before {
                break;
            }
        }
    }
    out
}

/// The groups of the spawn site on `line` of this file, once one shows up.
fn groups_at(line: u32) -> (SnapshotV2, Vec<WaitGroup>) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let s = snapshot_v2();
        let site = s.sites.iter().find(|st| {
            location(st.site).is_some_and(|l| l.file.ends_with("waits.rs") && l.line == line)
        });
        if let Some(site) = site {
            let groups: Vec<WaitGroup> = s
                .groups
                .iter()
                .filter(|g| g.key.site == site.site)
                .cloned()
                .collect();
            if !groups.is_empty() {
                return (s, groups);
            }
        }
        assert!(
            Instant::now() < deadline,
            "no group for the site on line {line}"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The one group at `line`: its op and chains, each as function names.
fn wait_at(line: u32) -> (Op, Vec<Vec<String>>) {
    let (_, groups) = groups_at(line);
    assert_eq!(groups.len(), 1, "{groups:#?}");
    let g = &groups[0];
    let chains = g.key.stacks.iter().map(|s| functions(*s)).collect();
    (g.key.op, chains)
}

fn assert_chain(chain: &[String], user_fn: &str, leaf: &str) {
    let has = |p: &str| chain.iter().any(|f| f.contains(p));
    assert!(has(user_fn), "no {user_fn} in {chain:#?}");
    assert!(has(leaf), "no {leaf} in {chain:#?}");
}

/// Spawns `fut` and returns the line of the spawn.
macro_rules! spawn_here {
    ($fut:expr) => {{
        let line = line!();
        let _h = rt().spawn_blocking(|| ()); // keeps the runtime warm
        let _g = rt().enter();
        drop(leaktop_agent::spawn($fut));
        line
    }};
}

async fn reads_a_socket(mut s: tokio::net::TcpStream) {
    let mut buf = [0u8; 16];
    let _ = s.read(&mut buf).await;
}

async fn accepts(l: tokio::net::TcpListener) {
    let _ = l.accept().await;
}

async fn writes_a_full_pipe(mut w: tokio::io::DuplexStream) {
    let chunk = vec![0u8; 4096];
    loop {
        if w.write_all(&chunk).await.is_err() {
            return;
        }
    }
}

#[test]
fn socket_reads_accepts_and_writes_are_captured_to_the_leaf() {
    let (listener, client, _server) = rt().block_on(async {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let c = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        let l2 = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        (l2, c, s)
    });
    let read = spawn_here!(reads_a_socket(client));
    let accept = spawn_here!(accepts(listener));
    let (w, _r) = tokio::io::duplex(64);
    let write = spawn_here!(writes_a_full_pipe(w));
    let (op, chains) = wait_at(read);
    assert_eq!(op, Op::Wait);
    assert_chain(&chains[0], "reads_a_socket", "tokio::net::tcp::stream");
    let (op, chains) = wait_at(accept);
    assert_eq!(op, Op::Wait);
    assert_chain(&chains[0], "accepts", "TcpListener::accept");
    let (op, chains) = wait_at(write);
    assert_eq!(op, Op::Wait);
    assert_chain(&chains[0], "writes_a_full_pipe", "DuplexStream");
}

async fn sleeps() {
    tokio::time::sleep(Duration::from_secs(3600)).await;
}

async fn ticks() {
    let mut i = tokio::time::interval(Duration::from_secs(3600));
    i.tick().await;
    i.tick().await;
}

async fn times_out() {
    let _ = tokio::time::timeout(Duration::from_secs(3600), pending::<()>()).await;
}

#[test]
fn timers_are_captured() {
    let sleep = spawn_here!(sleeps());
    let tick = spawn_here!(ticks());
    let timeout = spawn_here!(times_out());
    let (_, chains) = wait_at(sleep);
    assert_chain(&chains[0], "sleeps", "tokio::time::sleep");
    let (_, chains) = wait_at(tick);
    assert_chain(&chains[0], "ticks", "Interval::tick");
    let (_, chains) = wait_at(timeout);
    assert!(
        chains
            .iter()
            .any(|c| c.iter().any(|f| f.contains("Timeout"))),
        "{chains:#?}"
    );
}

async fn notified(n: Arc<tokio::sync::Notify>) {
    n.notified().await;
}

async fn acquires(s: Arc<tokio::sync::Semaphore>) {
    let _p = s.acquire().await;
}

async fn locks(m: Arc<tokio::sync::Mutex<()>>) {
    let _g = m.lock().await;
}

async fn reads_a_rwlock(m: Arc<tokio::sync::RwLock<()>>) {
    let _g = m.read().await;
}

async fn writes_a_rwlock(m: Arc<tokio::sync::RwLock<()>>) {
    let _g = m.write().await;
}

#[test]
fn tokio_sync_primitives_are_captured() {
    let n = Arc::new(tokio::sync::Notify::new());
    let s = Arc::new(tokio::sync::Semaphore::new(0));
    let m = Arc::new(tokio::sync::Mutex::new(()));
    let held = m.clone().try_lock_owned().unwrap();
    let rw = Arc::new(tokio::sync::RwLock::new(()));
    let w_held = rw.clone().try_write_owned().unwrap();
    let a = spawn_here!(notified(n.clone()));
    let b = spawn_here!(acquires(s.clone()));
    let c = spawn_here!(locks(m.clone()));
    let d = spawn_here!(reads_a_rwlock(rw.clone()));
    let (_, chains) = wait_at(a);
    assert_chain(&chains[0], "notified", "Notified");
    let (_, chains) = wait_at(b);
    assert_chain(&chains[0], "acquires", "Semaphore");
    let (_, chains) = wait_at(c);
    assert_chain(&chains[0], "locks", "Mutex");
    let (_, chains) = wait_at(d);
    assert_chain(&chains[0], "reads_a_rwlock", "RwLock");
    drop(w_held);
    let r_held = rw.clone().try_read_owned().unwrap();
    let e = spawn_here!(writes_a_rwlock(rw.clone()));
    let (_, chains) = wait_at(e);
    assert_chain(&chains[0], "writes_a_rwlock", "RwLock");
    drop((held, r_held));
}

async fn joins(h: tokio::task::JoinHandle<()>) {
    let _ = h.await;
}

async fn joins_a_set(mut set: tokio::task::JoinSet<()>) {
    let _ = set.join_next().await;
}

#[test]
fn join_handles_and_join_sets_are_captured() {
    let _g = rt().enter();
    let h = tokio::spawn(pending::<()>());
    let mut set = tokio::task::JoinSet::new();
    set.spawn(pending::<()>());
    let a = spawn_here!(joins(h));
    let b = spawn_here!(joins_a_set(set));
    let (_, chains) = wait_at(a);
    assert_chain(&chains[0], "joins", "JoinHandle");
    let (_, chains) = wait_at(b);
    assert_chain(&chains[0], "joins_a_set", "JoinSet");
}

async fn receives_from_tokio(mut rx: tokio::sync::mpsc::Receiver<u8>) {
    let _ = rx.recv().await;
}

async fn receives_a_tokio_oneshot(rx: tokio::sync::oneshot::Receiver<u8>) {
    let _ = rx.await;
}

async fn receives_from_futures(mut rx: futures_channel::mpsc::Receiver<u8>) {
    use futures_util::StreamExt;
    let _ = rx.next().await;
}

#[test]
fn other_libraries_channels_are_captured() {
    let (_tx, rx) = tokio::sync::mpsc::channel::<u8>(1);
    let (_otx, orx) = tokio::sync::oneshot::channel::<u8>();
    let (_ftx, frx) = futures_channel::mpsc::channel::<u8>(1);
    let a = spawn_here!(receives_from_tokio(rx));
    let b = spawn_here!(receives_a_tokio_oneshot(orx));
    let c = spawn_here!(receives_from_futures(frx));
    let (op, chains) = wait_at(a);
    assert_eq!(op, Op::Wait);
    assert_chain(&chains[0], "receives_from_tokio", "tokio::sync::mpsc");
    let (_, chains) = wait_at(b);
    assert_chain(&chains[0], "receives_a_tokio_oneshot", "oneshot");
    let (_, chains) = wait_at(c);
    assert_chain(&chains[0], "receives_from_futures", "futures_channel::mpsc");
}

async fn waits_forever() {
    pending::<()>().await;
}

#[test]
fn a_future_that_registers_no_waker_is_pending_forever_in_its_root_function() {
    let a = spawn_here!(waits_forever());
    let (op, chains) = wait_at(a);
    assert_eq!(op, Op::Pending);
    assert!(
        chains[0].iter().any(|f| f.contains("waits_forever")),
        "{chains:#?}"
    );
}

async fn selects(n: Arc<tokio::sync::Notify>) {
    tokio::select! {
        _ = n.notified() => {}
        _ = tokio::time::sleep(Duration::from_secs(3600)) => {}
    }
}

#[test]
fn a_select_of_two_leaves_keeps_both_chains() {
    let n = Arc::new(tokio::sync::Notify::new());
    let a = spawn_here!(selects(n.clone()));
    let (op, chains) = wait_at(a);
    assert_eq!(op, Op::Wait);
    assert_eq!(chains.len(), 2, "{chains:#?}");
    assert!(chains
        .iter()
        .any(|c| c.iter().any(|f| f.contains("Notified"))));
    assert!(chains.iter().any(|c| c.iter().any(|f| f.contains("sleep"))));
    assert!(chains
        .iter()
        .all(|c| c.iter().any(|f| f.contains("selects"))));
}

/// A leaf that registers by reference: `AtomicWaker::register(&Waker)` clones only when
/// the waker differs (`will_wake`), the pattern of most hand-written leaves.
struct ByRef(Arc<futures_util::task::AtomicWaker>);

impl Future for ByRef {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        self.0.register(cx.waker());
        Poll::Pending
    }
}

async fn registers_by_reference(w: Arc<futures_util::task::AtomicWaker>) {
    ByRef(w).await
}

#[test]
fn a_leaf_that_registers_by_reference_is_captured_again_when_resampled() {
    let w = Arc::new(futures_util::task::AtomicWaker::new());
    let a = spawn_here!(registers_by_reference(w.clone()));
    let (op, chains) = wait_at(a);
    assert_eq!(op, Op::Wait);
    assert_chain(&chains[0], "registers_by_reference", "AtomicWaker");
    // Woken: it re-registers the same (runtime's) waker, which `will_wake` would skip;
    // it is still counted there, the chain assumed from its sampled poll.
    w.wake();
    std::thread::sleep(Duration::from_millis(50));
    let (op, chains) = wait_at(a);
    assert_eq!(op, Op::Wait);
    assert_chain(&chains[0], "registers_by_reference", "AtomicWaker");
}

async fn yields_forever() {
    loop {
        tokio::task::yield_now().await;
    }
}

#[test]
fn a_task_that_wakes_itself_is_runnable_not_waiting() {
    let a = spawn_here!(yields_forever());
    let (_, groups) = groups_at(a);
    // yield_now defers its own wake: the chain names it, or the agent saw the self-wake.
    assert!(
        groups.iter().all(|g| g.key.op == Op::Yield
            || g.key
                .stacks
                .iter()
                .any(|s| functions(*s).iter().any(|f| f.contains("yield_now")))),
        "{groups:#?}"
    );
}
