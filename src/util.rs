//! Small shared helpers of the attaching side.

// Data from outside (agent bytes, recordings, /proc) must never panic leaktop.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::time::Duration;

use leaktop_agent::wire::{AgentMsg, ClientMsg};

use crate::attach::{AttachError, Connection, RecvError};
use crate::model::Session;

/// Attaches to `pid`, takes one snapshot (with the history rings when `history`), and
/// returns the folded session.
pub fn snapshot_session(pid: u32, history: bool) -> Result<Session, AttachError> {
    let mut conn = Connection::attach(pid)?;
    snapshot_of(&mut conn, history)
}

/// One snapshot over an established connection.
pub fn snapshot_of(conn: &mut Connection, history: bool) -> Result<Session, AttachError> {
    let mut session = Session::new();
    session.apply(&AgentMsg::Hello(conn.hello.clone()));
    if history {
        conn.send(&ClientMsg::History)?;
    }
    conn.send(&ClientMsg::Snapshot)?;
    let timeout = Some(Duration::from_secs(10));
    loop {
        match conn.recv(timeout) {
            Ok(msg) => {
                let done = matches!(msg, AgentMsg::Snapshot(_));
                session.apply(&msg);
                if done {
                    return Ok(session);
                }
            }
            Err(RecvError::Timeout) => {
                return Err(AttachError::Timeout {
                    path: conn.path.clone(),
                })
            }
            Err(e) => {
                return Err(AttachError::Io {
                    path: conn.path.clone(),
                    source: std::io::Error::other(e.to_string()),
                })
            }
        }
    }
}
