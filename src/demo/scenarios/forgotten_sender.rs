//! Scenario 1 — the forgotten sender (seed 000, "Goroutine Leaks - The Forgotten Sender").
//!
//! A search endpoint answers within 100 ms or gives up. Each request starts a search task
//! that reports a progress event and then the record on a per-request channel. When the
//! handler gives up, it parks the receiver in a result store "for when the client comes
//! back", which it never does. Nobody reads, so the search task waits forever on its second
//! send. The fix the seed describes: a channel buffered for every value the task will ever
//! send, so it can finish whether anybody receives or not.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use super::super::chan::mpsc;
use super::Pace;

/// What a search reports.
#[derive(Debug)]
pub enum SearchEvent {
    /// The query is done; the record follows.
    Found,
    Record(String),
}

/// Receivers of requests whose client may come back later; the oldest are evicted.
#[derive(Default)]
struct ResultStore {
    parked: Mutex<VecDeque<mpsc::Receiver<SearchEvent>>>,
}

impl ResultStore {
    const CAPACITY: usize = 100_000;

    fn park(&self, rx: mpsc::Receiver<SearchEvent>) {
        let mut parked = self.parked.lock().unwrap_or_else(|p| p.into_inner());
        if parked.len() == Self::CAPACITY {
            parked.pop_front();
        }
        parked.push_back(rx);
    }
}

pub async fn run(fixed: bool, pace: Pace) {
    let store = Arc::new(ResultStore::default());
    let mut tick = tokio::time::interval(pace.tick);
    for request in 0u64.. {
        tick.tick().await;
        leaktop_agent::spawn(handle_search(store.clone(), request, fixed, pace));
    }
}

/// The HTTP-handler stand-in: start the search, wait at most the deadline.
async fn handle_search(
    store: Arc<ResultStore>,
    request: u64,
    fixed: bool,
    pace: Pace,
) -> Option<String> {
    // The fix: room for every event the search will ever send.
    let capacity = if fixed { 2 } else { 1 };
    let (tx, mut rx) = mpsc::channel(capacity);
    let term = format!("user-{request}");
    leaktop_agent::spawn(search_worker(term, tx, pace)); // leak-site: forgotten-sender
    match tokio::time::timeout(pace.deadline, rx.recv()).await {
        Ok(Some(SearchEvent::Record(record))) => Some(record),
        // Too slow (or only progress so far): answer "try again later" and keep the
        // receiver for the follow-up request.
        _ => {
            store.park(rx);
            None
        }
    }
}

async fn search_worker(term: String, tx: mpsc::Sender<SearchEvent>, pace: Pace) {
    let record = search(&term, pace).await;
    publish_result(&tx, record).await;
}

async fn search(term: &str, pace: Pace) -> String {
    // The database query: slower than the handler's deadline.
    tokio::time::sleep(pace.deadline * 2).await;
    format!("record of {term}")
}

async fn publish_result(tx: &mpsc::Sender<SearchEvent>, record: String) {
    report_event(tx, SearchEvent::Found).await;
    report_event(tx, SearchEvent::Record(record)).await;
}

async fn report_event(tx: &mpsc::Sender<SearchEvent>, event: SearchEvent) {
    let _ = tx.send(event).await; // block-site: forgotten-sender
}
