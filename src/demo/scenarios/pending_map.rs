//! Scenario 6 — the pending-request map (seed 004, scenario 3 "Microservice with RPC
//! Calls").
//!
//! An RPC client multiplexes calls over one loopback TCP connection: each call parks a
//! oneshot sender in a map keyed by request id and awaits the reply. The server hangs up
//! every few requests (an idle timeout, a restart), and the client reconnects, but the
//! calls that were in flight stay in the map forever: their senders are alive, nobody
//! will ever send. The fix: when a connection's reader ends, drain the map of that
//! connection's calls so every caller gets an error.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};

use super::super::chan::oneshot;
use super::Pace;

/// The remote service hangs up after this many requests per connection.
const REQUESTS_PER_CONNECTION: u64 = 4;

/// Calls waiting for their reply, with the connection generation they were sent on.
#[derive(Default)]
struct PendingCalls {
    calls: HashMap<u64, (u64, oneshot::Sender<String>)>,
    /// The newest connection generation whose reader has ended.
    closed_generation: u64,
}

type Pending = Arc<Mutex<PendingCalls>>;

pub async fn run(fixed: bool, pace: Pace) {
    let addr = match start_flaky_service().await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("pending-map scenario: cannot listen on loopback: {e}");
            return;
        }
    };
    let client = Arc::new(RpcClient {
        addr,
        fixed,
        pending: Arc::new(Mutex::new(PendingCalls::default())),
        conn: tokio::sync::Mutex::new(None),
        next_id: AtomicU64::new(1),
        generation: AtomicU64::new(0),
    });
    let mut tick = tokio::time::interval(pace.tick);
    for user in 0u64.. {
        tick.tick().await;
        leaktop_agent::spawn(fetch_profile(client.clone(), user)); // leak-site: pending-map
    }
}

/// A request handler of the service that owns the RPC client.
async fn fetch_profile(client: Arc<RpcClient>, user: u64) -> Option<String> {
    client.call(format!("profile {user}")).await.ok()
}

struct RpcClient {
    addr: SocketAddr,
    fixed: bool,
    pending: Pending,
    conn: tokio::sync::Mutex<Option<OwnedWriteHalf>>,
    next_id: AtomicU64,
    generation: AtomicU64,
}

impl RpcClient {
    async fn call(&self, request: String) -> Result<String, String> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = oneshot::channel();
        self.send_request(id, &request, tx).await?;
        await_reply(rx).await
    }

    /// Registers the call and writes the request, (re)connecting when there is no
    /// connection. The call is in the map before the request leaves, so no reply can
    /// arrive for an id nobody waits on.
    async fn send_request(
        &self,
        id: u64,
        request: &str,
        reply: oneshot::Sender<String>,
    ) -> Result<(), String> {
        let mut conn = self.conn.lock().await;
        let current = self.generation.load(Ordering::Relaxed);
        let closed = self.lock_pending().closed_generation == current;
        if conn.is_none() || closed {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| e.to_string())?;
            let (read, write) = stream.into_split();
            let generation = self.generation.fetch_add(1, Ordering::Relaxed) + 1;
            leaktop_agent::spawn(read_replies(
                BufReader::new(read),
                self.pending.clone(),
                generation,
                self.fixed,
            ));
            *conn = Some(write);
        }
        let generation = self.generation.load(Ordering::Relaxed);
        {
            let mut pending = self.lock_pending();
            if pending.closed_generation == generation {
                *conn = None;
                return Err("connection lost".into());
            }
            pending.calls.insert(id, (generation, reply));
        }
        let line = format!("{id} {request}\n");
        let ok = match conn.as_mut() {
            Some(w) => w.write_all(line.as_bytes()).await.is_ok(),
            None => false,
        };
        if !ok {
            *conn = None;
            self.lock_pending().calls.remove(&id);
            return Err("connection lost".into());
        }
        Ok(())
    }

    fn lock_pending(&self) -> std::sync::MutexGuard<'_, PendingCalls> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }
}

async fn await_reply(rx: oneshot::Receiver<String>) -> Result<String, String> {
    let reply = rx.await; // block-site: pending-map
    reply.map_err(|_| "connection closed before the reply".to_string())
}

/// Delivers replies to their callers until the connection ends.
async fn read_replies(
    mut read: BufReader<tokio::net::tcp::OwnedReadHalf>,
    pending: Pending,
    generation: u64,
    fixed: bool,
) {
    let mut line = String::new();
    loop {
        line.clear();
        match read.read_line(&mut line).await {
            Ok(n) if n > 0 => {}
            _ => break,
        }
        let Some((id, reply)) = line.trim_end().split_once(' ') else {
            continue;
        };
        let Ok(id) = id.parse::<u64>() else { continue };
        let waiter = pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .calls
            .remove(&id);
        if let Some((_, tx)) = waiter {
            let _ = tx.send(reply.to_string());
        }
    }
    let mut pending = pending.lock().unwrap_or_else(|p| p.into_inner());
    pending.closed_generation = generation;
    if fixed {
        // The fix: fail every call of this connection instead of forgetting it.
        pending.calls.retain(|_, (g, _)| *g != generation);
    }
}

/// The remote service stand-in (another process in real life: plain tokio tasks). It
/// answers requests, but hangs up on every connection after a few, mid-request.
async fn start_flaky_service() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = conn.into_split();
                let mut lines = BufReader::new(read).lines();
                let mut served = 0;
                while let Ok(Some(line)) = lines.next_line().await {
                    served += 1;
                    if served > REQUESTS_PER_CONNECTION {
                        return; // hang up without answering
                    }
                    let id = line.split(' ').next().unwrap_or("0");
                    if write
                        .write_all(format!("{id} ok\n").as_bytes())
                        .await
                        .is_err()
                    {
                        return;
                    }
                }
            });
        }
    });
    Ok(addr)
}
