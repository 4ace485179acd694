//! The live source: a reader thread turns the agent's socket frames into events.

use std::sync::mpsc;
use std::time::Duration;

use leaktop_agent::wire::{self, AgentHello, AgentMsg, ClientMsg};

use super::{Event, Source};
use crate::attach::{AttachError, Connection, RecvError};

/// A live agent: a reader thread turns socket frames into events.
pub struct LiveSource {
    hello: AgentHello,
    rx: mpsc::Receiver<Event>,
    writer: std::os::unix::net::UnixStream,
    ended: bool,
}

impl LiveSource {
    /// Attaches to `pid`, asks for history and a snapshot stream every `interval`.
    pub fn attach(pid: u32, interval: Duration) -> Result<LiveSource, AttachError> {
        let mut conn = Connection::attach(pid)?;
        conn.send(&ClientMsg::History)?;
        // The agent skips a subscription's first snapshot while the history is still on
        // its way; a Snapshot asked for now follows the history's last part at once, so
        // the first complete view does not wait a whole interval.
        conn.send(&ClientMsg::Snapshot)?;
        conn.send(&ClientMsg::Subscribe {
            interval_ms: interval.as_millis().min(u32::MAX as u128) as u32,
        })?;
        Self::from_connection(conn)
    }

    /// Sends `requests` over an established connection, then reads it.
    pub fn open(mut conn: Connection, requests: &[ClientMsg]) -> Result<LiveSource, AttachError> {
        for r in requests {
            conn.send(r)?;
        }
        Self::from_connection(conn)
    }

    /// Wraps an established connection.
    pub fn from_connection(conn: Connection) -> Result<LiveSource, AttachError> {
        let hello = conn.hello.clone();
        let path = conn.path.clone();
        let (tx, rx) = mpsc::channel();
        // Messages that already arrived with the hello stay in order.
        let writer = {
            let (reader, writer) = conn.split().map_err(|source| AttachError::Io {
                path: path.clone(),
                source,
            })?;
            let pid = hello.pid;
            std::thread::Builder::new()
                .name("leaktop-reader".into())
                .spawn(move || read_loop(reader, pid, tx))
                .map_err(|source| AttachError::Io { path, source })?;
            writer
        };
        Ok(LiveSource {
            hello,
            rx,
            writer,
            ended: false,
        })
    }
}

fn read_loop(mut reader: std::os::unix::net::UnixStream, pid: u32, tx: mpsc::Sender<Event>) {
    loop {
        let event = match wire::read_frame(&mut reader, wire::MAX_FRAME) {
            Ok(Some(payload)) => match wire::decode::<AgentMsg>(&payload) {
                Ok(msg) => Event::Msg(msg),
                // Additive evolution: a message kind we do not know is skipped.
                Err(_) => continue,
            },
            Ok(None) => Event::End(format!(
                "process {pid} exited (its agent closed the connection)"
            )),
            Err(e) => Event::End(format!(
                "connection to process {pid} lost: {}",
                recv_text(e)
            )),
        };
        let end = matches!(event, Event::End(_));
        if tx.send(event).is_err() || end {
            return;
        }
    }
}

fn recv_text(e: wire::WireError) -> String {
    RecvError::Wire(e).to_string()
}

impl Source for LiveSource {
    fn hello(&self) -> &AgentHello {
        &self.hello
    }

    fn next(&mut self, timeout: Duration) -> Option<Event> {
        if self.ended {
            std::thread::sleep(timeout);
            return None;
        }
        match self.rx.recv_timeout(timeout) {
            Ok(ev) => {
                if matches!(ev, Event::End(_)) {
                    self.ended = true;
                }
                Some(ev)
            }
            Err(mpsc::RecvTimeoutError::Timeout) => None,
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                self.ended = true;
                Some(Event::End(format!("process {} exited", self.hello.pid)))
            }
        }
    }

    fn request(&mut self, msg: ClientMsg) {
        use std::io::Write;
        if let Ok(frame) = wire::encode_frame(&msg) {
            let _ = self.writer.write_all(&frame);
        }
    }
}
