//! Cost of the instrumented channels against tokio's own (run by `scripts/bench.sh`).
//!
//! - `pingpong`: two tasks bounce a message over two `mpsc(1)` channels; every receive
//!   waits, so each round trip is two messages and two Pending→Ready cycles.
//! - `message`: `try_send` + `try_recv` on one channel, no waiting: the per-message cost.
//!
//! Each variant runs several times, interleaved with the others; the best (minimum) ns per
//! unit is reported with the ratio instrumented/tokio: on a shared, noisy machine the
//! minimum is the stable estimate of the intrinsic cost (medians are printed too). Variants: tokio channels in `tokio::spawn` tasks (baseline), agent
//! channels in `leaktop_agent::spawn` tasks (what a migrated program runs), and tokio
//! channels in agent tasks (isolates the channels' own share).
//!
//! The agent is started (its socket in a private temporary directory), as in a program
//! that uses it: its thread ticks the cached clock the hot paths stamp with.
//!
//! Usage: `cargo bench -p leaktop-agent --bench channels [-- --quick] [--only NAME]`
//! (NAME: pingpong-current, pingpong-multi, message; for profiling one of them).

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

mod support;
use support::measure;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let only = args
        .iter()
        .position(|a| a == "--only")
        .and_then(|i| args.get(i + 1).cloned());
    let wanted = |name: &str| only.as_deref().is_none_or(|o| o == name);
    // `--variant pp_tokio|pp_agent|pp_mixed`: run only that ping-pong variant once on a
    // current-thread runtime, e.g. under `perf stat -e instructions:u` (instruction counts
    // do not care how busy the machine is).
    if let Some(v) = args
        .iter()
        .position(|a| a == "--variant")
        .and_then(|i| args.get(i + 1))
    {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("runtime");
        let _agent = leaktop_agent::start();
        let n = std::env::var("LEAKTOP_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let ns = match v.as_str() {
            "pp_tokio" => rt.block_on(pp_tokio(n)),
            "pp_agent" => rt.block_on(pp_agent(n)),
            _ => rt.block_on(pp_tokio_in_agent_tasks(n)),
        };
        println!("{v}: {ns:.1} ns per round trip ({n} round trips)");
        return;
    }
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
        let pp = measure(
            &rt,
            trials,
            &[
                &|| Box::pin(pp_tokio(rounds)),
                &|| Box::pin(pp_agent(rounds)),
                &|| Box::pin(pp_tokio_in_agent_tasks(rounds)),
            ],
        );
        println!(
            "pingpong mpsc(1) {label:15} round trip: tokio {:7.1} ns  agent {:7.1} ns  ratio {:.3}  channels alone {:.3}  (medians: {:.0} / {:.0} / {:.0} ns)",
            pp[0].min,
            pp[1].min,
            pp[1].min / pp[0].min,
            pp[1].min / pp[2].min,
            pp[0].median,
            pp[1].median,
            pp[2].median,
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
    let m = measure(
        &rt,
        trials,
        &[&|| Box::pin(msg_tokio(msgs)), &|| Box::pin(msg_agent(msgs))],
    );
    println!(
        "message try_send+try_recv       per message: tokio {:7.1} ns  agent {:7.1} ns  ratio {:.3}  (medians: {:.1} / {:.1} ns)",
        m[0].min,
        m[1].min,
        m[1].min / m[0].min,
        m[0].median,
        m[1].median,
    );
}
