//! Scenario 5 — unbounded fan-out (seed 004, scenario 2 "Event Processing Pipeline").
//!
//! The pipeline spawns a task per incoming message; each forwards its result to a
//! downstream stage that drains four times slower than messages arrive. The downstream
//! channel stays busy, yet tasks pile up waiting on it without bound. The fix: a fixed
//! pool of workers, so backpressure reaches the source instead of piling up tasks.

use std::sync::Arc;

use super::super::chan::mpsc;
use super::Pace;

#[derive(Debug)]
pub struct Message(u64);

pub async fn run(fixed: bool, pace: Pace) {
    let (source_tx, messages) = mpsc::channel::<Message>(64);
    let (downstream, sink) = mpsc::channel::<u64>(16);
    leaktop_agent::spawn(slow_sink(sink, pace));
    if fixed {
        leaktop_agent::spawn(start_worker_pool(messages, downstream, 4));
    } else {
        leaktop_agent::spawn(start_workers(messages, downstream));
    }
    let mut tick = tokio::time::interval(pace.tick / 4);
    for n in 0u64.. {
        tick.tick().await;
        if source_tx.send(Message(n)).await.is_err() {
            return;
        }
    }
}

/// `startWorkers`: one task per message.
async fn start_workers(mut messages: mpsc::Receiver<Message>, downstream: mpsc::Sender<u64>) {
    while let Some(msg) = messages.recv().await {
        leaktop_agent::spawn(process_message(msg, downstream.clone())); // leak-site: fan-out
    }
}

/// The fix: `n` long-lived workers share the input.
async fn start_worker_pool(
    messages: mpsc::Receiver<Message>,
    downstream: mpsc::Sender<u64>,
    n: usize,
) {
    let messages = Arc::new(tokio::sync::Mutex::new(messages));
    for _ in 0..n {
        let messages = messages.clone();
        let downstream = downstream.clone();
        leaktop_agent::spawn(async move {
            loop {
                let next = messages.lock().await.recv().await;
                match next {
                    Some(msg) => process_message(msg, downstream.clone()).await,
                    None => return,
                }
            }
        });
    }
}

async fn process_message(msg: Message, downstream: mpsc::Sender<u64>) {
    let enriched = enrich(msg).await;
    forward(&downstream, enriched).await;
}

async fn enrich(msg: Message) -> u64 {
    tokio::task::yield_now().await;
    msg.0 * 2
}

async fn forward(downstream: &mpsc::Sender<u64>, value: u64) {
    let _ = downstream.send(value).await; // block-site: fan-out
}

/// The slow downstream stage: one item per tick.
async fn slow_sink(mut sink: mpsc::Receiver<u64>, pace: Pace) {
    let mut tick = tokio::time::interval(pace.tick);
    while sink.recv().await.is_some() {
        tick.tick().await;
    }
}
