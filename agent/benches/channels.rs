//! Cost of the instrumented channels against tokio's own (run by `scripts/bench.sh`).
//!
//! - `pingpong`: two tasks bounce a message over two `mpsc(1)` channels; every receive
//!   waits, so each round trip is two messages and two Pending→Ready cycles.
//! - `message`: `try_send` + `try_recv` on one channel, no waiting: the per-message cost.
//!
//! Each variant runs `TRIALS` times; the median ns per unit is reported, with the ratio
//! instrumented/tokio. Variants: tokio channels in `tokio::spawn` tasks (baseline), agent
//! channels in `leaktop_agent::spawn` tasks (what a migrated program runs), and tokio
//! channels in agent tasks (isolates the channels' own share).
//!
//! The agent is started (its socket in a private temporary directory), as in a program
//! that uses it: its thread ticks the cached clock the hot paths stamp with.
//!
//! Usage: `cargo bench -p leaktop-agent --bench channels [-- --quick] [--only NAME]`
//! (NAME: pingpong-current, pingpong-multi, message; for profiling one of them).

use std::future::Future;
use std::time::Instant;

macro_rules! pingpong {
    ($name:ident, $mpsc:path, $spawn:path) => {
        async fn $name(rounds: u64) -> f64 {
            use $mpsc as mpsc;
            let (a_tx, mut a_rx) = mpsc::channel::<u64>(1);
            let (b_tx, mut b_rx) = mpsc::channel::<u64>(1);
            let echo = $spawn(async move {
                while let Some(v) = a_rx.recv().await {
                    if b_tx.send(v + 1).await.is_err() {
                        break;
                    }
                }
            });
            let start = Instant::now();
            let driver = $spawn(async move {
                let mut v = 0;
                for _ in 0..rounds {
                    a_tx.send(v).await.expect("send");
                    v = b_rx.recv().await.expect("recv");
                }
                v
            });
            let v = driver.await.expect("driver");
            let ns = start.elapsed().as_nanos() as f64 / rounds as f64;
            assert_eq!(v, rounds);
            echo.await.expect("echo");
            ns
        }
    };
}

macro_rules! message {
    ($name:ident, $mpsc:path) => {
        async fn $name(n: u64) -> f64 {
            use $mpsc as mpsc;
            let (tx, mut rx) = mpsc::channel::<u64>(64);
            let start = Instant::now();
            let mut sum = 0u64;
            for i in 0..n {
                tx.try_send(i).expect("send");
                sum = sum.wrapping_add(rx.try_recv().expect("recv"));
            }
            let ns = start.elapsed().as_nanos() as f64 / n as f64;
            assert_eq!(sum, n * (n - 1) / 2);
            ns
        }
    };
}

pingpong!(pp_tokio, tokio::sync::mpsc, tokio::spawn);
pingpong!(pp_agent, leaktop_agent::sync::mpsc, leaktop_agent::spawn);
pingpong!(
    pp_tokio_in_agent_tasks,
    tokio::sync::mpsc,
    leaktop_agent::spawn
);
message!(msg_tokio, tokio::sync::mpsc);
message!(msg_agent, leaktop_agent::sync::mpsc);

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

/// Runs the variants interleaved (so drift of a shared machine hits all alike) and
/// returns the median of each.
fn measure<F: Future<Output = f64>>(
    rt: &tokio::runtime::Runtime,
    trials: usize,
    variants: &[&dyn Fn() -> std::pin::Pin<Box<dyn Future<Output = f64>>>],
) -> Vec<f64> {
    let _ = std::marker::PhantomData::<F>;
    let mut samples = vec![Vec::new(); variants.len()];
    for _ in 0..trials {
        for (i, v) in variants.iter().enumerate() {
            samples[i].push(rt.block_on(v()));
        }
    }
    samples.into_iter().map(median).collect()
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let dir = std::env::temp_dir().join(format!("leaktop-bench-{}", std::process::id()));
    let _ = std::fs::create_dir(&dir);
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    let agent = leaktop_agent::Builder::new()
        .socket_dir(&dir)
        .start()
        .expect("start the agent");
    let (trials, rounds, msgs) = if quick {
        (5, 20_000, 200_000)
    } else {
        (15, 100_000, 2_000_000)
    };
    for (name, label, rt) in [
        (
            "pingpong-current",
            "current_thread",
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("runtime"),
        ),
        (
            "pingpong-multi",
            "multi_thread(2)",
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .build()
                .expect("runtime"),
        ),
    ] {
        if !wanted(name) {
            continue;
        }
        let pp = measure::<std::future::Ready<f64>>(
            &rt,
            trials,
            &[
                &|| Box::pin(pp_tokio(rounds)),
                &|| Box::pin(pp_agent(rounds)),
                &|| Box::pin(pp_tokio_in_agent_tasks(rounds)),
            ],
        );
        println!(
            "pingpong mpsc(1) {label:16} round trip: tokio {:7.1} ns  agent {:7.1} ns  ratio {:.3}  (channels alone: {:.3})",
            pp[0],
            pp[1],
            pp[1] / pp[0],
            pp[1] / pp[2]
        );
    }
    if wanted("message") {
        message_bench(trials, msgs);
    }
    agent.shutdown();
    let _ = std::fs::remove_dir(&dir);
}

fn message_bench(trials: usize, msgs: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let m = measure::<std::future::Ready<f64>>(
        &rt,
        trials,
        &[&|| Box::pin(msg_tokio(msgs)), &|| Box::pin(msg_agent(msgs))],
    );
    println!(
        "message try_send+try_recv                  per message: tokio {:7.1} ns  agent {:7.1} ns  ratio {:.3}",
        m[0],
        m[1],
        m[1] / m[0]
    );
}
