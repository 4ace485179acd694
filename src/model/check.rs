//! `leaktop check`'s decision: which findings fail the check, and when there is too
//! little data to decide. Pure, like the rest of the model.

use super::{Session, SiteVerdict, Thresholds, Verdict};
use crate::duration::age;

/// Which verdicts make `check` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailOn {
    /// Only leaks (growing, with stuck or long-idle tasks).
    Leak,
    /// Leaks and stuck tasks (a fixed set blocked for good: deadlocks).
    Stuck,
    /// Any finding, growth included.
    Growing,
}

impl FailOn {
    pub fn fails(self, v: Verdict) -> bool {
        match self {
            FailOn::Leak => v == Verdict::Leak,
            FailOn::Stuck => matches!(v, Verdict::Leak | Verdict::Stuck),
            FailOn::Growing => v != Verdict::None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            FailOn::Leak => "leak",
            FailOn::Stuck => "stuck",
            FailOn::Growing => "growing",
        }
    }
}

/// What `check` concluded.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Every site with a verdict other than none, worst first.
    pub findings: Vec<SiteVerdict>,
    /// 0 no leak, 1 leak found, 2 could not check.
    pub exit_code: u8,
    /// Why the check is inconclusive (exit code 2).
    pub reason: Option<String>,
}

/// Where the data came from: it decides what to advise when there is too little of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataFrom {
    /// A live process: watching longer (`--for`) gets more.
    Live,
    /// A recording: only a later `--at` (or a longer recording) has more.
    Recording,
}

/// Decides on a gathered session. Pure.
pub fn decide(session: &Session, th: &Thresholds, fail_on: FailOn, from: DataFrom) -> Outcome {
    let findings: Vec<SiteVerdict> = super::assess(session, th)
        .into_iter()
        .filter(SiteVerdict::is_finding)
        .collect();
    let fails = findings.iter().any(|f| fail_on.fails(f.verdict));
    if fails {
        return Outcome {
            findings,
            exit_code: 1,
            reason: None,
        };
    }
    let observed = session.observed_ms();
    let reason = if session.hello.is_none() || session.seq == 0 {
        Some("no snapshot was received from the agent".to_string())
    } else if observed < th.min_span_ms() {
        let enough = age(th.min_span_ms().max(1000));
        let advice = match from {
            DataFrom::Live => format!("wait, or run with --for {enough}"),
            DataFrom::Recording => {
                format!("pick a later --at, a shorter --window, or record for at least {enough}")
            }
        };
        Some(format!(
            "only {} of data, and growth needs {} (half the {} window): {advice}",
            age(observed),
            age(th.min_span_ms()),
            age(th.window_ms),
        ))
    } else {
        session
            .ended
            .as_ref()
            .map(|e| format!("{e} before the check finished"))
    };
    Outcome {
        findings,
        exit_code: if reason.is_some() { 2 } else { 0 },
        reason,
    }
}
