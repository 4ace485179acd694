//! The agent's time origin. Every `*_ms` value in the protocol is milliseconds since it.

use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

struct Origin {
    instant: Instant,
    unix_ms: u64,
}

static ORIGIN: OnceLock<Origin> = OnceLock::new();

fn origin() -> &'static Origin {
    ORIGIN.get_or_init(|| Origin {
        instant: Instant::now(),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    })
}

/// Milliseconds since the agent's origin (monotonic).
#[inline]
pub fn now_ms() -> u64 {
    origin().instant.elapsed().as_millis() as u64
}

/// Wall clock at the origin, ms since the Unix epoch.
pub fn origin_unix_ms() -> u64 {
    origin().unix_ms
}
