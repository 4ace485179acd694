//! Scenario 2 — sent twice, received once (seed 001, `fetchAll`).
//!
//! A session asks two replicas for the same answer and takes the first; both replicas
//! report on the session's result channel, which lives as long as the session. Every
//! request leaves one more answer than it reads, so once the channel's one slot is full,
//! every losing replica waits on its send for good. The fix: select the send against the
//! request's cancellation, so a loser gives up when the request is answered.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;

use super::super::chan::mpsc;
use super::Pace;

/// One client session: its result channel outlives each request.
struct Session {
    results_tx: mpsc::Sender<u64>,
    results_rx: tokio::sync::Mutex<mpsc::Receiver<u64>>,
}

pub async fn run(fixed: bool, pace: Pace) {
    let (results_tx, results_rx) = mpsc::channel(1);
    let session = Arc::new(Session {
        results_tx,
        results_rx: tokio::sync::Mutex::new(results_rx),
    });
    let mut tick = tokio::time::interval(pace.tick);
    loop {
        tick.tick().await;
        let _answer = fetch_all(&session, fixed, pace).await;
    }
}

/// Queries every replica, returns the first answer.
async fn fetch_all(session: &Session, fixed: bool, pace: Pace) -> Option<u64> {
    let request_done = CancellationToken::new();
    for replica in 0..2u64 {
        let tx = session.results_tx.clone();
        let done = request_done.clone();
        leaktop_agent::spawn(query_replica(tx, replica, done, fixed, pace)); // leak-site: sent-twice
    }
    let first = session.results_rx.lock().await.recv().await;
    request_done.cancel();
    first
}

async fn query_replica(
    tx: mpsc::Sender<u64>,
    replica: u64,
    done: CancellationToken,
    fixed: bool,
    pace: Pace,
) {
    let answer = query(replica, pace).await;
    deliver_answer(&tx, answer, &done, fixed).await;
}

async fn query(replica: u64, pace: Pace) -> u64 {
    tokio::time::sleep(pace.tick / 4 * (replica as u32 + 1)).await;
    replica
}

async fn deliver_answer(
    tx: &mpsc::Sender<u64>,
    answer: u64,
    done: &CancellationToken,
    fixed: bool,
) {
    if fixed {
        tokio::select! {
            _ = tx.send(answer) => {}
            _ = done.cancelled() => {}
        }
    } else {
        let _ = tx.send(answer).await; // block-site: sent-twice
    }
}
