//! The attached client of each instrumented variant: a thread of the bench process that
//! connects to the variant's own endpoint and streams updates every second, decoding each
//! one, as a live `leaktop <pid>` or `tokio-console` would. Measurements start once the
//! first update has arrived.

use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use leaktop_agent::wire::{self, AgentMsg, ClientMsg};

/// How long the first update may take.
const FIRST_UPDATE: Duration = Duration::from_secs(30);

fn send(stream: &mut UnixStream, msg: &ClientMsg) -> Result<(), String> {
    use std::io::Write;
    let frame = wire::encode_frame(msg).map_err(|e| e.to_string())?;
    stream.write_all(&frame).map_err(|e| e.to_string())
}

/// Connects to the agent at `socket`, subscribes at 1 s (after asking for the history, as
/// the live TUI does), and returns once the first snapshot has arrived. The thread keeps
/// reading and decoding until the process exits.
pub fn attach_agent(socket: &Path) -> Result<(), String> {
    let mut stream = UnixStream::connect(socket)
        .map_err(|e| format!("cannot connect to the agent at {}: {e}", socket.display()))?;
    send(
        &mut stream,
        &ClientMsg::Hello {
            protocol: wire::PROTOCOL_VERSION,
            client: "leaktop-bench".into(),
        },
    )?;
    // As the live source does (src/source.rs): history, one snapshot right after it, then
    // the subscription (whose first tick would otherwise be skipped while history flows).
    send(&mut stream, &ClientMsg::History)?;
    send(&mut stream, &ClientMsg::Snapshot)?;
    send(&mut stream, &ClientMsg::Subscribe { interval_ms: 1000 })?;
    let (tx, rx) = std_mpsc::channel();
    std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            let mut tx = Some(tx);
            loop {
                let frame = match wire::read_frame(&mut stream, wire::MAX_FRAME) {
                    Ok(Some(f)) => f,
                    Ok(None) | Err(_) => return,
                };
                match wire::decode::<AgentMsg>(&frame) {
                    Ok(AgentMsg::SnapshotV2(s)) => {
                        std::hint::black_box(&s);
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(());
                        }
                    }
                    Ok(AgentMsg::Refused { reason }) => {
                        eprintln!("agent refused the bench client: {reason}");
                        return;
                    }
                    Ok(other) => {
                        std::hint::black_box(other);
                    }
                    Err(e) => {
                        eprintln!("bench client: undecodable frame: {e}");
                        return;
                    }
                }
            }
        })
        .map_err(|e| format!("cannot start the client thread: {e}"))?;
    rx.recv_timeout(FIRST_UPDATE)
        .map_err(|_| "no snapshot from the agent within 30 s".to_string())
}

/// Connects a tokio-console gRPC client to the console-subscriber server on
/// `127.0.0.1:port` and watches updates (console-subscriber publishes every second by
/// default); returns once the first update has arrived.
#[cfg(feature = "console")]
pub fn attach_console(port: u16) -> Result<(), String> {
    use console_api::instrument::{instrument_client::InstrumentClient, InstrumentRequest};

    let (tx, rx) = std_mpsc::channel();
    std::thread::Builder::new()
        .name("bench-client".into())
        .spawn(move || {
            let rt = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("bench client runtime: {e}");
                    return;
                }
            };
            rt.block_on(async move {
                let target = format!("http://127.0.0.1:{port}");
                let mut client = None;
                for _ in 0..300 {
                    match InstrumentClient::connect(target.clone()).await {
                        Ok(c) => {
                            client = Some(c);
                            break;
                        }
                        Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
                    }
                }
                let Some(mut client) = client else {
                    eprintln!("cannot connect to console-subscriber at {target}");
                    return;
                };
                let mut stream = match client.watch_updates(InstrumentRequest {}).await {
                    Ok(r) => r.into_inner(),
                    Err(e) => {
                        eprintln!("console watch_updates: {e}");
                        return;
                    }
                };
                let mut tx = Some(tx);
                while let Ok(Some(update)) = stream.message().await {
                    std::hint::black_box(&update);
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(());
                    }
                }
            });
        })
        .map_err(|e| format!("cannot start the client thread: {e}"))?;
    rx.recv_timeout(FIRST_UPDATE)
        .map_err(|_| "no update from console-subscriber within 30 s".to_string())
}
