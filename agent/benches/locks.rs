//! Cost of the instrumented locks against tokio's own (run by `scripts/bench.sh locks`):
//! an uncontended `Mutex` lock/unlock and a `Semaphore` acquire/release, each inside a
//! task (tokio's locks in a `tokio::spawn` task, the agent's in a `leaktop_agent::spawn`
//! task: what a migrated program runs; and the agent's locks in a plain tokio task, which
//! isolates the locks' own share). The holder record (task, spawn site, acquire site,
//! since) is written on every acquisition: this is its price. Goal: ratio <= 1.10.
//!
//! The best (minimum) ns per operation of interleaved trials is reported, medians too.
//! `--variant NAME` runs one variant once (for callgrind: `scripts/bench.sh locks` counts
//! instructions per operation with it when valgrind is installed). Usage:
//! `cargo bench -p leaktop-agent --bench locks [-- --quick]`.

use std::hint::black_box;
use std::time::Instant;

macro_rules! lock_loop {
    ($name:ident, $sync:path, $spawn:path) => {
        async fn $name(n: u64) -> f64 {
            use $sync as sync;
            $spawn(async move {
                let m = sync::Mutex::new(0u64);
                let start = Instant::now();
                for _ in 0..n {
                    let mut g = m.lock().await;
                    *g = black_box(*g + 1);
                }
                let ns = start.elapsed().as_nanos() as f64 / n as f64;
                assert_eq!(*m.lock().await, n);
                ns
            })
            .await
            .expect("bench task")
        }
    };
}

macro_rules! acquire_loop {
    ($name:ident, $sync:path, $spawn:path) => {
        async fn $name(n: u64) -> f64 {
            use $sync as sync;
            $spawn(async move {
                let s = sync::Semaphore::new(4);
                let start = Instant::now();
                for _ in 0..n {
                    let p = s.acquire().await.expect("open");
                    black_box(&p);
                }
                let ns = start.elapsed().as_nanos() as f64 / n as f64;
                assert_eq!(s.available_permits(), 4);
                ns
            })
            .await
            .expect("bench task")
        }
    };
}

lock_loop!(mutex_tokio, tokio::sync, tokio::spawn);
lock_loop!(mutex_agent, leaktop_agent::sync, leaktop_agent::spawn);
lock_loop!(mutex_mixed, leaktop_agent::sync, tokio::spawn);
acquire_loop!(sem_tokio, tokio::sync, tokio::spawn);
acquire_loop!(sem_agent, leaktop_agent::sync, leaktop_agent::spawn);
acquire_loop!(sem_mixed, leaktop_agent::sync, tokio::spawn);

mod support;
use support::measure;

fn report(what: &str, s: &[support::Stat]) {
    println!(
        "{what:34} per op: tokio {:6.1} ns  agent {:6.1} ns  ratio {:.3}  locks alone {:.3}  (medians {:.1} / {:.1} / {:.1} ns)",
        s[0].min,
        s[1].min,
        s[1].min / s[0].min,
        s[2].min / s[0].min,
        s[0].median,
        s[1].median,
        s[2].median,
    );
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let dir = std::env::temp_dir().join(format!("leaktop-bench-locks-{}", std::process::id()));
    let _ = std::fs::create_dir(&dir);
    {
        use std::os::unix::fs::PermissionsExt;
        let _ = std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700));
    }
    let agent = leaktop_agent::Builder::new()
        .socket_dir(&dir)
        .start()
        .expect("start the agent");
    if let Some(v) = args
        .iter()
        .position(|a| a == "--variant")
        .and_then(|i| args.get(i + 1))
    {
        let n = std::env::var("LEAKTOP_BENCH_ROUNDS")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(1_000_000);
        let ns = match v.as_str() {
            "mutex_tokio" => rt.block_on(mutex_tokio(n)),
            "mutex_agent" => rt.block_on(mutex_agent(n)),
            "sem_tokio" => rt.block_on(sem_tokio(n)),
            _ => rt.block_on(sem_agent(n)),
        };
        println!("{v}: {ns:.1} ns per op ({n} ops)");
    } else {
        let (trials, n) = if quick { (5, 200_000) } else { (15, 2_000_000) };
        let m = measure(
            &rt,
            trials,
            &[
                &|| Box::pin(mutex_tokio(n)),
                &|| Box::pin(mutex_agent(n)),
                &|| Box::pin(mutex_mixed(n)),
            ],
        );
        report("Mutex lock+unlock, uncontended", &m);
        let s = measure(
            &rt,
            trials,
            &[
                &|| Box::pin(sem_tokio(n)),
                &|| Box::pin(sem_agent(n)),
                &|| Box::pin(sem_mixed(n)),
            ],
        );
        report("Semaphore acquire+release", &s);
    }
    agent.shutdown();
    let _ = std::fs::remove_dir(&dir);
}
