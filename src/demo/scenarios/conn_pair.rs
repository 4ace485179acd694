//! Scenario 7 — a per-connection reader/writer pair (seed 004, scenario 4 "WebSocket
//! Connection Handler").
//!
//! A push server over loopback TCP runs a reader and a writer task per connection; the
//! writer sends what arrives on the connection's outbound queue, whose sender sits in a
//! registry so other parts of the server can push to that client. When a peer leaves, the
//! reader ends, but the registry entry stays: the writer waits on its queue forever. The
//! fix: the reader removes the connection from the registry on its way out, which closes
//! the queue and ends the writer.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};

use super::super::chan::mpsc;
use super::Pace;

type Registry = Arc<Mutex<HashMap<u64, mpsc::Sender<String>>>>;

/// Peers connected at once are capped so a long demo keeps its file descriptors.
const MAX_PEERS: usize = 1500;

pub async fn run(fixed: bool, pace: Pace) {
    let registry: Registry = Arc::new(Mutex::new(HashMap::new()));
    let listener = match TcpListener::bind("127.0.0.1:0").await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("conn-pair scenario: cannot listen on loopback: {e}");
            return;
        }
    };
    let addr = match listener.local_addr() {
        Ok(a) => a,
        Err(_) => return,
    };
    leaktop_agent::spawn(accept_loop(listener, registry.clone(), fixed));
    let mut tick = tokio::time::interval(pace.tick);
    loop {
        tick.tick().await;
        if registry.lock().unwrap_or_else(|p| p.into_inner()).len() < MAX_PEERS {
            // Remote peers are other processes in real life: plain tokio tasks.
            tokio::spawn(visit(addr));
        }
    }
}

async fn accept_loop(listener: TcpListener, registry: Registry, fixed: bool) {
    let mut next_id = 0u64;
    while let Ok((conn, _)) = listener.accept().await {
        next_id += 1;
        handle_connection(conn, next_id, &registry, fixed);
    }
}

/// `handleConnection`: a reader and a writer per connection.
fn handle_connection(conn: TcpStream, id: u64, registry: &Registry, fixed: bool) {
    let (read, write) = conn.into_split();
    let (outbound, queue) = mpsc::channel::<String>(32);
    registry
        .lock()
        .unwrap_or_else(|p| p.into_inner())
        .insert(id, outbound.clone());
    leaktop_agent::spawn(read_messages(read, id, outbound, registry.clone(), fixed));
    leaktop_agent::spawn(write_messages(write, queue)); // leak-site: conn-pair
}

async fn read_messages(
    read: OwnedReadHalf,
    id: u64,
    outbound: mpsc::Sender<String>,
    registry: Registry,
    fixed: bool,
) {
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let _ = outbound.send(format!("echo {line}\n")).await;
    }
    drop(outbound);
    if fixed {
        // The fix: forget the connection, closing its queue.
        registry
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&id);
    }
}

async fn write_messages(mut write: OwnedWriteHalf, mut queue: mpsc::Receiver<String>) {
    while let Some(msg) = next_outbound(&mut queue).await {
        if write.write_all(msg.as_bytes()).await.is_err() {
            return;
        }
    }
}

async fn next_outbound(queue: &mut mpsc::Receiver<String>) -> Option<String> {
    queue.recv().await // block-site: conn-pair
}

/// A client: says hello, reads the echo, leaves.
async fn visit(addr: SocketAddr) {
    let Ok(mut conn) = TcpStream::connect(addr).await else {
        return;
    };
    if conn.write_all(b"hello\n").await.is_err() {
        return;
    }
    let mut buf = [0u8; 64];
    let _ = conn.read(&mut buf).await;
}
