//! Composition: the one place that attaches, stacks the stages of a stream (live socket →
//! symbolizer → recorder), and drains a source into the model. `main`, the live view,
//! `check`, `record` and `demo` all go through here; below it, `tui` and `report` only
//! render what the model holds.
//!
//! - [`drain`]: fold what a source yields until a condition, the one loop of its kind;
//! - [`snapshot`], [`watch`], [`session_of`]: the sessions one-off reports are made of;
//! - [`record`]: `leaktop record` without a screen;
//! - [`view`]: the live view and replay: the event loop between a source, the terminal and
//!   the TUI's state;
//! - [`demo`]: `leaktop demo`, the scenarios as a child process and leaktop on it.

pub mod demo;
pub mod record;
pub mod view;

#[cfg(test)]
mod tests;

use std::time::{Duration, Instant};

use leaktop_agent::wire::{AgentMsg, ClientMsg};

use crate::attach::{AttachError, Connection};
use crate::model::Session;
use crate::record::{RecordingSource, Tee};
use crate::source::{Event, LiveSource, Refold, Saved, Source, Symbolize, Timeline};

/// Where drained events go: the model's session, or a view's state around it.
pub trait Fold {
    fn fold(&mut self, ev: &Event);
    /// The session folded so far.
    fn session(&self) -> &Session;
}

impl Fold for Session {
    fn fold(&mut self, ev: &Event) {
        self.apply(ev);
    }

    fn session(&self) -> &Session {
        self
    }
}

impl Refold for Session {
    fn fold(&mut self, ev: &Event) {
        self.apply(ev);
    }

    fn save(&self) -> Saved {
        std::sync::Arc::new(self.clone())
    }

    fn restore(&mut self, saved: Option<&Saved>) {
        *self = saved
            .and_then(|s| s.downcast_ref::<Session>())
            .cloned()
            .unwrap_or_default();
    }
}

/// Folds an opened recording up to `at_ms` (the end when `None`): what `leaktop dump` and
/// `leaktop check` show of a recording.
pub fn session_of(mut src: RecordingSource, at_ms: Option<u64>) -> (Session, RecordingSource) {
    let mut session = Session::new();
    let t = at_ms.unwrap_or(u64::MAX);
    src.seek(t, &mut session);
    (session, src)
}

/// When a [`drain`] stops (besides the source ending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Until {
    /// When nothing more is ready now, or after `max` events (a view between two looks
    /// at its keyboard).
    Idle { max: usize },
    /// At this time (a headless recorder between two progress lines).
    Time(Instant),
    /// The first snapshot after this time (at once when it passed already), then the
    /// symbols of what it showed: a one-off report. Gives up `patience` after the time
    /// when no snapshot comes.
    Snapshot { after: Instant, patience: Duration },
    /// Once the data reaches `ms` back (history and snapshots, see
    /// `Session::observed_ms`), then the symbols: a report that judges over that span.
    /// Gives up after `patience`.
    Observed { ms: u64, patience: Duration },
}

/// What a drain folded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Drained {
    pub events: usize,
    pub snapshots: u64,
    /// The source ended (its `End` was folded).
    pub ended: bool,
    /// A [`Until::Snapshot`] drain gave up waiting for a snapshot.
    pub timed_out: bool,
}

/// Longest wait on the source in one go: deadlines are looked at this often.
const SLICE: Duration = Duration::from_millis(200);

/// Folds what `source` yields into `into` until `until` says so or the source ends.
pub fn drain<S: Source + ?Sized>(source: &mut S, into: &mut dyn Fold, until: Until) -> Drained {
    let mut d = Drained::default();
    let started = Instant::now();
    loop {
        let wait = match until {
            Until::Observed { ms, patience } => {
                let seen = d.snapshots > 0 && into.session().observed_ms() >= ms;
                if seen && !source.busy() {
                    return d;
                }
                if started.elapsed() >= patience {
                    d.timed_out = true;
                    return d;
                }
                SLICE
            }
            Until::Idle { max } if d.events >= max => return d,
            Until::Idle { .. } => Duration::ZERO,
            Until::Time(t) => match t.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left.min(SLICE),
                _ => return d,
            },
            Until::Snapshot { after, patience } => {
                let now = Instant::now();
                let settled = d.snapshots > 0 && now >= after && !source.busy();
                if settled {
                    return d;
                }
                if d.snapshots == 0 && now >= after + patience {
                    d.timed_out = true;
                    return d;
                }
                after
                    .saturating_duration_since(now)
                    .clamp(Duration::from_millis(10), SLICE)
            }
        };
        let Some(ev) = source.next(wait) else {
            if matches!(until, Until::Idle { .. }) {
                return d;
            }
            continue;
        };
        d.events += 1;
        match &ev {
            Event::Msg(AgentMsg::Snapshot(_)) => d.snapshots += 1,
            Event::End(_) => d.ended = true,
            _ => {}
        }
        into.fold(&ev);
        if d.ended {
            return d;
        }
    }
}

/// How long a one-off report waits for the agent's snapshot.
pub const SNAPSHOT_PATIENCE: Duration = Duration::from_secs(10);

/// One snapshot of a connected agent (with its history rings when `history`, and the
/// symbols of its stacks when `symbols`), folded into a session.
pub fn snapshot(conn: Connection, history: bool, symbols: bool) -> Result<Session, AttachError> {
    let path = conn.path.clone();
    let requests: &[ClientMsg] = if history {
        &[ClientMsg::History, ClientMsg::Snapshot]
    } else {
        &[ClientMsg::Snapshot]
    };
    let live = LiveSource::open(conn, requests)?;
    let mut session = Session::new();
    let until = Until::Snapshot {
        after: Instant::now(),
        patience: SNAPSHOT_PATIENCE,
    };
    let d = if symbols {
        let mut source = Symbolize::new(live);
        session.apply(&AgentMsg::Hello(source.hello().clone()).into());
        drain(&mut source, &mut session, until)
    } else {
        let mut source = live;
        session.apply(&AgentMsg::Hello(source.hello().clone()).into());
        drain(&mut source, &mut session, until)
    };
    match (d.snapshots, &session.ended) {
        (0, Some(reason)) => Err(AttachError::Io {
            path,
            source: std::io::Error::other(reason.clone()),
        }),
        (0, None) => Err(AttachError::Timeout { path }),
        _ => Ok(session),
    }
}

/// Attaches to `pid` and takes one symbolized snapshot with the agent's history: what
/// `dump`, `export` and `check` decide on.
pub fn snapshot_of(pid: u32) -> Result<Session, AttachError> {
    snapshot(Connection::attach(pid)?, true, true)
}

/// Watches `pid` for `watch` (history first, then snapshots), symbolized: `check --for`.
/// A process that exits while watched ends the watch early (the session says so in
/// `ended`); an agent that sends nothing for [`SNAPSHOT_PATIENCE`] past the watch too.
pub fn watch(pid: u32, watch: Duration) -> Result<Session, AttachError> {
    let interval = (watch / 20).clamp(Duration::from_millis(50), Duration::from_secs(1));
    let mut source = Symbolize::new(LiveSource::attach(pid, interval)?);
    let mut session = Session::new();
    session.apply(&AgentMsg::Hello(source.hello().clone()).into());
    let d = drain(
        &mut source,
        &mut session,
        Until::Snapshot {
            after: Instant::now() + watch,
            patience: SNAPSHOT_PATIENCE,
        },
    );
    if d.timed_out {
        session.end("the agent sent no snapshot for 10 s");
    }
    Ok(session)
}

/// A live stream of `pid` every `interval`, symbolized, ready to record: what the live
/// view and `leaktop record` read.
pub fn live(pid: u32, interval: Duration) -> Result<Tee<Symbolize<LiveSource>>, AttachError> {
    let source = Symbolize::new(LiveSource::attach(pid, interval)?);
    Ok(Tee::new(source).with_interval(interval))
}
