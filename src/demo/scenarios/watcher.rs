//! Scenario 4 — a watcher never cancelled (seed 003, `LeakyAsync` vs `ContextAsync`).
//!
//! Each job starts a helper task that waits for the parent's shutdown signal so it can
//! clean up. The parent lives on and never signals, and nothing tells the helper that
//! the job is over, so one helper per job waits forever. The fix: a cancellation token
//! for the job (Go's `context.WithCancel` + `defer cancel()`), cancelled when it returns.

use tokio_util::sync::CancellationToken;

use super::super::chan::watch;
use super::Pace;

pub async fn run(fixed: bool, pace: Pace) {
    // The service's shutdown signal: owned by the supervisor for the life of the process.
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let mut tick = tokio::time::interval(pace.tick);
    for job in 0u64.. {
        tick.tick().await;
        if fixed {
            context_async(shutdown_rx.clone(), job).await;
        } else {
            leaky_async(shutdown_rx.clone(), job).await;
        }
    }
    drop(shutdown_tx);
}

/// `LeakyAsync`: the cleanup helper waits on the parent alone.
async fn leaky_async(parent: watch::Receiver<bool>, job: u64) {
    leaktop_agent::spawn(cleanup_on_shutdown(parent, None)); // leak-site: watcher
    crunch(job).await;
}

/// `ContextAsync`: the helper also waits on the job's own token, cancelled on return.
async fn context_async(parent: watch::Receiver<bool>, job: u64) {
    let job_done = CancellationToken::new();
    let _cancel_on_return = job_done.clone().drop_guard();
    leaktop_agent::spawn(cleanup_on_shutdown(parent, Some(job_done)));
    crunch(job).await;
}

async fn cleanup_on_shutdown(parent: watch::Receiver<bool>, job_done: Option<CancellationToken>) {
    match job_done {
        Some(token) => {
            tokio::select! {
                _ = wait_for_parent(parent) => {}
                _ = token.cancelled() => {}
            }
        }
        None => wait_for_parent(parent).await,
    }
}

async fn wait_for_parent(mut parent: watch::Receiver<bool>) {
    let _ = parent.changed().await; // block-site: watcher
}

/// The job's own work, which ends (as the seed's loop does at MaxInt32).
async fn crunch(job: u64) -> u64 {
    let mut acc = job;
    for i in 0..10_000u64 {
        acc = acc.wrapping_mul(6364136223846793005).wrapping_add(i);
    }
    tokio::task::yield_now().await;
    acc
}
