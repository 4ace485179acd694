//! The verdicts' evidence in words: the sentences `dump`, `check` and the live view show
//! under a finding. The model gives the facts ([`Evidence`]); this is their one wording.

use leaktop_agent::wire::Op;

use super::age;
use crate::model::verdict::{Evidence, Progress, Side, SiteVerdict, Stall};
use crate::model::Session;

/// The evidence of a verdict, one sentence each, most important first.
pub fn sentences(session: &Session, v: &SiteVerdict) -> Vec<String> {
    v.evidence.iter().map(|e| sentence(session, e)).collect()
}

/// One piece of evidence as a sentence a user can check.
pub fn sentence(session: &Session, e: &Evidence) -> String {
    match e {
        Evidence::Growth(g) => format!(
            "live tasks rose from {} to {} over the last {} (+{:.1}/min; {:.0}% of sample pairs rising)",
            g.from_live,
            g.to_live,
            age(g.span_ms),
            g.rate_per_min,
            g.rising_share * 100.0
        ),
        Evidence::Stalled(s) => format!(
            "{} blocked in {} at {} on a {} channel created at {}, {} without progress: {}",
            crate::plural::count(s.count, "task"),
            s.key.op.name(),
            session.location(s.key.call_site),
            s.kind.name(),
            session.location(s.key.channel_site),
            age(s.stalled_ms),
            why(s)
        ),
        Evidence::PilingUp(s) => format!(
            "{} waiting in {} at {} on a {} channel created at {}, the oldest for {}, while the channel keeps moving (last progress {} ago): they arrive faster than it drains",
            crate::plural::count(s.count, "task"),
            s.key.op.name(),
            session.location(s.key.call_site),
            s.kind.name(),
            session.location(s.key.channel_site),
            age(s.waiting_ms),
            age(s.stalled_ms),
        ),
        Evidence::Idle {
            tasks,
            oldest_live_ms,
        } => {
            let (are, they_wait) = if *tasks == 1 {
                ("is", "it waits")
            } else {
                ("are", "they wait")
            };
            format!(
                "{} {are} idle, not waiting on any instrumented channel, and the oldest live task is {} old: {they_wait} on something leaktop does not see (a socket read without a timeout, a lock, a future that is never woken)",
                crate::plural::count(*tasks, "task"),
                age(*oldest_live_ms)
            )
        }
        Evidence::NotStuckYet => {
            "no task of this site has waited without progress long enough to call it leaked yet"
                .to_string()
        }
    }
}

/// The other side of a stalled group's channel, in words ("its receiver is alive but
/// has not received for 5m12s (queue 1/1)").
pub fn why(s: &Stall) -> String {
    let Some(p) = &s.peer else {
        return "leaktop has no state of its channel, so the wait alone counts".to_string();
    };
    let (peer, verb) = match p.side {
        Side::Receiver => ("receiver", "received"),
        Side::Sender => ("sender", "sent"),
        Side::Peer => ("peer", "sent or received"),
    };
    let queue = match p.queue {
        Some((len, Some(cap))) => format!(" (queue {len}/{cap})"),
        Some((len, None)) => format!(" (queue {len})"),
        None => String::new(),
    };
    if p.alive == 0 && s.key.op != Op::Closed {
        return format!("every {peer} is gone, so nothing can wake it{queue}");
    }
    let alive = if p.alive == 1 {
        format!("its {peer} is alive")
    } else {
        format!("{} {peer}s are alive", p.alive)
    };
    match p.progress {
        Progress::Never => format!("{alive} but has never {verb}{queue}"),
        Progress::NotSinceTheWait => {
            format!("{alive} but has not {verb} since the wait began{queue}")
        }
        Progress::Ago(ms) => format!("{alive}; last {verb} {} ago{queue}", age(ms)),
    }
}
