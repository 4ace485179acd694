//! Where protocol messages come from: a live agent socket or a recording
//! ([`crate::record::RecordingSource`]). Everything after the source (model, report, tui) is
//! the same for both; a recording adds a [`Timeline`] to move through it.

#![cfg_attr(not(test), warn(clippy::indexing_slicing))]
// Data from outside (agent bytes, recordings, /proc) must never panic leaktop.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

use std::sync::mpsc;
use std::time::Duration;

use leaktop_agent::wire::{self, AgentHello, AgentMsg, ClientMsg};

use crate::attach::{AttachError, Connection, RecvError};
use crate::model::Session;

/// What a source yields.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// One protocol message.
    Msg(AgentMsg),
    /// The source is over: the process exited, the connection broke, the file ended.
    /// The reason is for the user.
    End(String),
}

/// A stream of protocol messages, live or recorded.
pub trait Source {
    /// The target's hello (the first message of every session).
    fn hello(&self) -> &AgentHello;
    /// The next event, waiting at most `timeout`; `None` when nothing came in time.
    fn next(&mut self, timeout: Duration) -> Option<Event>;
    /// Sends a request to the agent; recordings ignore requests they cannot answer.
    fn request(&mut self, msg: ClientMsg);
    /// Playback controls, for a source that is a recording; `None` for a live one.
    fn timeline(&mut self) -> Option<&mut dyn Timeline> {
        None
    }
    /// Fills `session.symbols` for its stacks that have none from what the source knows
    /// (a recording's stored symbols); false when the source cannot (a live process is
    /// symbolized by the caller, see `crate::resolve`).
    fn fill_symbols(&mut self, _session: &mut Session) -> bool {
        false
    }
    /// Recording controls, for a source that can record what it yields
    /// ([`crate::record::Tee`]); `None` otherwise.
    fn recorder(&mut self) -> Option<&mut dyn Recorder> {
        None
    }
}

/// Start and stop recording what a source yields (the TUI's `r` key, `--record`).
pub trait Recorder {
    /// Starts recording into a new file at `path` (refused if it exists).
    fn start_recording(&mut self, path: &std::path::Path) -> Result<(), String>;
    /// Stops recording; a sentence for the user (where it went, how big), `None` when
    /// nothing was being recorded.
    fn stop_recording(&mut self) -> Option<String>;
    fn is_recording(&self) -> bool;
    /// One line for the screen: the file and its size while recording, or how the last
    /// recording ended (an error says so); `None` before any recording.
    fn recording_status(&self) -> Option<String>;
}

/// Playback controls of a recorded source. Times are ms of recording time (receive time
/// since the recording started). A source with a timeline yields events only up to its
/// playback position, which moves while playing.
pub trait Timeline {
    /// Time of the recording's last frame.
    fn duration_ms(&self) -> u64;
    /// Playback position: everything up to here has been yielded.
    fn position_ms(&self) -> u64;
    fn playing(&self) -> bool;
    fn set_playing(&mut self, playing: bool);
    /// Playback speed (1.0: real time).
    fn speed(&self) -> f64;
    fn set_speed(&mut self, speed: f64);
    /// Wall clock (ms since the Unix epoch) at recording time zero.
    fn started_unix_ms(&self) -> u64;
    /// Receive times of the recorded snapshots, ascending: the steps of ←/→.
    fn snapshot_times(&self) -> &[u64];
    /// Moves the playback position to `t_ms` (clamped to the recording) and brings
    /// `session` to the state at that time. `session` must be the fold of exactly what this
    /// source yielded so far: going forward folds the frames in between into it, going
    /// back refolds it from the start.
    fn seek(&mut self, t_ms: u64, session: &mut Session);
    /// Moves to the next (or previous) snapshot and pauses there.
    fn step(&mut self, forward: bool, session: &mut Session) {
        let pos = self.position_ms();
        let times = self.snapshot_times();
        let target = if forward {
            times.iter().copied().find(|t| *t > pos)
        } else {
            times.iter().rev().copied().find(|t| *t < pos)
        };
        self.set_playing(false);
        match target {
            Some(t) => self.seek(t, session),
            None if forward => {
                let end = self.duration_ms();
                self.seek(end, session)
            }
            None => self.seek(0, session),
        }
    }
}

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

/// Folds every agent message framed in `data` into a [`Session`], as the live source does,
/// and renders every report of it: for the wire fuzz target (`fuzz/fuzz_targets/wire.rs`)
/// and the property tests. Never panics, whatever the bytes: a hostile or broken agent
/// cannot crash `leaktop`. Returns the number of messages folded.
#[doc(hidden)]
pub fn fuzz_fold(data: &[u8]) -> usize {
    let mut dec = wire::FrameDecoder::new(wire::MAX_FRAME);
    dec.push(data);
    let mut session = Session::new();
    let mut folded = 0;
    while let Ok(Some(payload)) = dec.next_frame() {
        if let Ok(msg) = wire::decode::<AgentMsg>(&payload) {
            session.apply(&msg);
            folded += 1;
        }
    }
    session.end("fuzz");
    let th = crate::model::Thresholds::default();
    let fail_on = crate::check::FailOn::Leak;
    let outcome = crate::check::decide(&session, &th, fail_on, crate::check::DataFrom::Live);
    std::hint::black_box(crate::check::text(&session, &th, fail_on, &outcome));
    std::hint::black_box(crate::check::json(&session, &th, fail_on, &outcome));
    std::hint::black_box(crate::report::text(&session));
    std::hint::black_box(crate::report::json(&session));
    std::hint::black_box(crate::export::openmetrics(&session, &th));
    folded
}

#[cfg(test)]
mod tests {
    use super::*;
    use leaktop_agent::wire::{
        AgentHello, BlockedGroup, ChannelKind, GroupKey, History, Location, Op, Sample,
        SiteHistory, SiteKind, SiteStats, Snapshot, TaskInfo, TaskList, TaskState,
    };
    use proptest::prelude::*;

    /// Small ids, so messages refer to each other (and to ids never defined).
    fn id() -> impl Strategy<Value = u32> {
        0u32..6
    }

    /// Counters at the edges too: overflow must not panic the fold or the reports.
    fn count() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..50, Just(u64::MAX), any::<u64>()]
    }

    fn key() -> impl Strategy<Value = GroupKey> {
        (id(), id(), id(), prop::option::of(id())).prop_map(
            |(site, channel_site, call_site, stack)| GroupKey {
                site,
                op: Op::Recv,
                channel_site,
                call_site,
                stack,
            },
        )
    }

    fn site() -> impl Strategy<Value = SiteStats> {
        (
            id(),
            count(),
            count(),
            count(),
            count(),
            count(),
            prop::option::of(count()),
        )
            .prop_map(
                |(site, live, running, blocked, spawned, completed, oldest)| SiteStats {
                    site,
                    kind: Some(if site == 5 {
                        SiteKind::Other
                    } else {
                        SiteKind::Spawn
                    }),
                    live,
                    running,
                    blocked_send: blocked,
                    blocked_recv: blocked / 2,
                    spawned,
                    completed,
                    oldest_live_ms: oldest,
                },
            )
    }

    fn msg() -> impl Strategy<Value = AgentMsg> {
        prop_oneof![
            (id(), "[a-z/.]{0,12}", any::<u32>(), any::<u32>()).prop_map(
                |(id, file, line, column)| {
                    AgentMsg::Location {
                        id,
                        loc: Location { file, line, column },
                    }
                }
            ),
            (id(), prop::collection::vec(any::<u64>(), 0..4))
                .prop_map(|(id, frames)| AgentMsg::Stack { id, frames }),
            (
                count(),
                count(),
                prop::collection::vec(site(), 0..4),
                prop::collection::vec((key(), count(), count()), 0..3),
            )
                .prop_map(|(seq, now_ms, sites, groups)| {
                    AgentMsg::Snapshot(Snapshot {
                        seq,
                        now_ms,
                        sites,
                        groups: groups
                            .into_iter()
                            .map(|(key, count, oldest_since_ms)| BlockedGroup {
                                key,
                                kind: ChannelKind::Mpsc,
                                count,
                                oldest_since_ms,
                                channel: None,
                            })
                            .collect(),
                        channels: Vec::new(),
                        sites_seen: seq,
                    })
                }),
            (
                any::<u32>(),
                count(),
                prop::collection::vec((id(), prop::collection::vec(any::<u32>(), 0..5)), 0..3)
            )
                .prop_map(|(interval_ms, end_ms, sites)| {
                    AgentMsg::History(History {
                        interval_ms,
                        end_ms,
                        sites: sites
                            .into_iter()
                            .map(|(site, lives)| SiteHistory {
                                site,
                                samples: lives
                                    .into_iter()
                                    .map(|live| Sample {
                                        live,
                                        blocked_send: live / 3,
                                        blocked_recv: 0,
                                        spawned: u64::from(live) * 2,
                                        completed: u64::from(live),
                                    })
                                    .collect(),
                            })
                            .collect(),
                    })
                }),
            (
                id(),
                prop::option::of(key()),
                prop::collection::vec((count(), count()), 0..3)
            )
                .prop_map(|(site, group, tasks)| {
                    AgentMsg::Tasks(TaskList {
                        site,
                        group: group.clone(),
                        tasks: tasks
                            .into_iter()
                            .map(|(id, spawned_ms)| TaskInfo {
                                id,
                                spawned_ms,
                                state: TaskState::Blocked,
                                blocked_since_ms: Some(spawned_ms),
                                group: group.clone(),
                            })
                            .collect(),
                    })
                }),
            (any::<u32>(), count(), count(), count(), any::<u32>()).prop_map(
                |(pid, origin_unix_ms, now_ms, start, interval)| {
                    AgentMsg::Hello(AgentHello {
                        protocol: 1,
                        agent_version: "0.1.0".into(),
                        pid,
                        start_time_ticks: start,
                        exe: "/x".into(),
                        build_id: Vec::new(),
                        uid: 0,
                        origin_unix_ms,
                        now_ms,
                        sample_interval_ms: interval,
                        history_len: interval,
                        site_cap: 3,
                    })
                }
            ),
            "[ -~]{0,20}".prop_map(|reason| AgentMsg::Refused { reason }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Bounded twin of the `wire` fuzz target: any sequence of well-formed agent
        /// messages (ids that are never defined, counters at u64::MAX, time going
        /// backwards), framed, with a byte flipped now and then, folds and renders without
        /// a panic.
        #[test]
        fn folding_any_agent_messages_never_panics(
            msgs in prop::collection::vec(msg(), 0..12),
            flip in prop::option::of((any::<prop::sample::Index>(), 0u8..8)),
        ) {
            let mut bytes = Vec::new();
            for m in &msgs {
                bytes.extend(wire::encode_frame(m).unwrap());
            }
            if let (Some((i, bit)), false) = (flip, bytes.is_empty()) {
                let i = i.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            fuzz_fold(&bytes);
            leaktop_agent::wire::fuzz_one(&[7].iter().chain(&bytes).copied().collect::<Vec<_>>());
        }
    }
}
