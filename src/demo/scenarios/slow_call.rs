//! Scenario 3 — slow call without a timeout (seed 001 `http.Get`, seed 004 scenario 1).
//!
//! Every request fires an analytics call to a loopback service that accepts the
//! connection and never answers. The call has no timeout, so each task waits forever in a
//! TCP read: idle, not on any channel. The fix: a timeout around the call.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::Pace;

/// Calls in flight are capped so a long demo does not run out of file descriptors.
const MAX_IN_FLIGHT: usize = 1500;

pub async fn run(fixed: bool, pace: Pace) {
    let addr = match start_unresponsive_service().await {
        Ok(a) => a,
        Err(e) => {
            eprintln!("slow-call scenario: cannot listen on loopback: {e}");
            return;
        }
    };
    let in_flight = Arc::new(AtomicUsize::new(0));
    let mut tick = tokio::time::interval(pace.tick);
    loop {
        tick.tick().await;
        if in_flight.load(Ordering::Relaxed) >= MAX_IN_FLIGHT {
            continue;
        }
        in_flight.fetch_add(1, Ordering::Relaxed);
        let in_flight = in_flight.clone();
        leaktop_agent::spawn(track_call(addr, fixed, pace, in_flight)); // leak-site: slow-call
    }
}

/// One analytics call, counted while in flight.
async fn track_call(addr: SocketAddr, fixed: bool, pace: Pace, in_flight: Arc<AtomicUsize>) {
    send_analytics(addr, fixed, pace).await;
    in_flight.fetch_sub(1, Ordering::Relaxed);
}

/// The remote analytics service stand-in: another process in real life, so its tasks are
/// plain `tokio::spawn` and not part of the picture.
async fn start_unresponsive_service() -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((mut conn, _)) = listener.accept().await {
            tokio::spawn(async move {
                // Read the request, never answer, hang up when the client does.
                let mut buf = [0u8; 512];
                while matches!(conn.read(&mut buf).await, Ok(n) if n > 0) {}
            });
        }
    });
    Ok(addr)
}

async fn send_analytics(addr: SocketAddr, fixed: bool, pace: Pace) {
    if fixed {
        let _ = tokio::time::timeout(pace.deadline * 5, post_event(addr)).await;
    } else {
        let _ = post_event(addr).await;
    }
}

async fn post_event(addr: SocketAddr) -> std::io::Result<Vec<u8>> {
    let mut conn = TcpStream::connect(addr).await?;
    conn.write_all(b"POST /analytics HTTP/1.1\r\nhost: analytics\r\n\r\n")
        .await?;
    read_response(&mut conn).await
}

async fn read_response(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let mut response = Vec::new();
    conn.read_to_end(&mut response).await?;
    Ok(response)
}
