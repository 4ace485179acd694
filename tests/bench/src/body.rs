// The workloads, written once and compiled twice (see `flavors.rs`): the including module
// supplies `spawn` and `mpsc` (tokio's own, or leaktop-agent's drop-ins). `include!` keeps
// this file's real line numbers, so every `spawn(` below is its own spawn site for the
// agent, as it would be in a real program.

use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};

/// Workload 1, spawn storm: `n` short tasks spawned, then all joined.
pub async fn spawn_storm(n: usize) {
    let mut handles = Vec::with_capacity(n);
    for i in 0..n {
        handles.push(spawn(async move { black_box(i) }));
    }
    for h in handles {
        black_box(h.await.expect("storm task"));
    }
}

/// Workload 2, ping-pong: `n` round trips between this task and an echo task over two
/// mpsc(1) channels.
pub async fn ping_pong(n: usize) {
    let (ping_tx, mut ping_rx) = mpsc::channel::<u64>(1);
    let (pong_tx, mut pong_rx) = mpsc::channel::<u64>(1);
    let echo = spawn(async move {
        while let Some(v) = ping_rx.recv().await {
            if pong_tx.send(v).await.is_err() {
                break;
            }
        }
    });
    for i in 0..n as u64 {
        ping_tx.send(i).await.expect("ping");
        let v = pong_rx.recv().await.expect("pong");
        black_box(v);
    }
    drop(ping_tx);
    echo.await.expect("echo task");
}

/// Workload 3, fan-in: `producers` tasks send `per` messages each into one bounded channel of
/// `capacity`; this task receives them all.
pub async fn fan_in(producers: usize, per: usize, capacity: usize) {
    let (tx, mut rx) = mpsc::channel::<u64>(capacity);
    for p in 0..producers {
        let tx = tx.clone();
        spawn(async move {
            for i in 0..per {
                tx.send((p * per + i) as u64).await.expect("fan-in send");
            }
        });
    }
    drop(tx);
    let mut count = 0usize;
    while let Some(v) = rx.recv().await {
        black_box(v);
        count += 1;
    }
    assert_eq!(count, producers * per, "fan-in lost messages");
}

/// Tasks of `park` that have been polled once (they block right after counting).
pub static PARKED: AtomicUsize = AtomicUsize::new(0);

async fn parked(mut rx: mpsc::Receiver<()>) {
    PARKED.fetch_add(1, Ordering::Release);
    black_box(rx.recv().await);
}

/// Workloads 4 and 5, park: `n` tasks, each blocked receiving on its own mpsc(1) channel,
/// spawned from `groups` different spawn sites (1..=50). Returns the senders that keep
/// them blocked, once every task has been polled.
pub async fn park(n: usize, groups: usize) -> Vec<mpsc::Sender<()>> {
    PARKED.store(0, Ordering::Relaxed);
    let groups = groups.clamp(1, 50);
    let mut senders = Vec::with_capacity(n);
    for i in 0..n {
        let (tx, rx) = mpsc::channel::<()>(1);
        spawn_in_group(i % groups, parked(rx));
        senders.push(tx);
    }
    while PARKED.load(Ordering::Acquire) < n {
        tokio::task::yield_now().await;
    }
    senders
}

/// Spawns `fut` from one of 50 distinct source lines: 50 spawn sites, so 50 blocked groups.
#[rustfmt::skip]
fn spawn_in_group<F>(g: usize, fut: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    match g {
        0 => drop(spawn(fut)),
        1 => drop(spawn(fut)),
        2 => drop(spawn(fut)),
        3 => drop(spawn(fut)),
        4 => drop(spawn(fut)),
        5 => drop(spawn(fut)),
        6 => drop(spawn(fut)),
        7 => drop(spawn(fut)),
        8 => drop(spawn(fut)),
        9 => drop(spawn(fut)),
        10 => drop(spawn(fut)),
        11 => drop(spawn(fut)),
        12 => drop(spawn(fut)),
        13 => drop(spawn(fut)),
        14 => drop(spawn(fut)),
        15 => drop(spawn(fut)),
        16 => drop(spawn(fut)),
        17 => drop(spawn(fut)),
        18 => drop(spawn(fut)),
        19 => drop(spawn(fut)),
        20 => drop(spawn(fut)),
        21 => drop(spawn(fut)),
        22 => drop(spawn(fut)),
        23 => drop(spawn(fut)),
        24 => drop(spawn(fut)),
        25 => drop(spawn(fut)),
        26 => drop(spawn(fut)),
        27 => drop(spawn(fut)),
        28 => drop(spawn(fut)),
        29 => drop(spawn(fut)),
        30 => drop(spawn(fut)),
        31 => drop(spawn(fut)),
        32 => drop(spawn(fut)),
        33 => drop(spawn(fut)),
        34 => drop(spawn(fut)),
        35 => drop(spawn(fut)),
        36 => drop(spawn(fut)),
        37 => drop(spawn(fut)),
        38 => drop(spawn(fut)),
        39 => drop(spawn(fut)),
        40 => drop(spawn(fut)),
        41 => drop(spawn(fut)),
        42 => drop(spawn(fut)),
        43 => drop(spawn(fut)),
        44 => drop(spawn(fut)),
        45 => drop(spawn(fut)),
        46 => drop(spawn(fut)),
        47 => drop(spawn(fut)),
        48 => drop(spawn(fut)),
        _ => drop(spawn(fut)),
    }
}

/// Workload 6, contention: `clients` tasks at once (on 8 workers), each making `per`
/// requests. A request spawns its handler from one of four spawn sites in turn, hands it a
/// oneshot for the reply, and waits for the reply in a `select!` beside a oneshot receiver
/// the client holds for its whole life (one that never fires, as a shutdown signal does):
/// spawns and completions of the same sites from every worker at once, one channel per
/// request, and a `select!` over a held receiver. Returns the requests made.
pub async fn contention(clients: usize, per: usize) -> usize {
    let mut all = Vec::with_capacity(clients);
    let mut stops = Vec::with_capacity(clients);
    for c in 0..clients {
        let (stop_tx, mut stop_rx) = oneshot::channel::<()>();
        stops.push(stop_tx);
        all.push(spawn(async move {
            for i in 0..per {
                let (tx, mut rx) = oneshot::channel::<u64>();
                let v = (c * per + i) as u64;
                match i % 4 {
                    0 => drop(spawn(async move { let _ = tx.send(v); })),
                    1 => drop(spawn(async move { let _ = tx.send(v + 1); })),
                    2 => drop(spawn(async move { let _ = tx.send(v + 2); })),
                    _ => drop(spawn(async move { let _ = tx.send(v + 3); })),
                }
                tokio::select! {
                    r = &mut rx => { black_box(r.expect("contention reply")); }
                    _ = &mut stop_rx => unreachable!("the stop signal never fires"),
                }
            }
        }));
    }
    for h in all {
        h.await.expect("contention client");
    }
    drop(stops);
    clients * per
}
