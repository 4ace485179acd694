//! The agent's time origin. Every `*_ms` value in the protocol is milliseconds since it.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::OnceLock;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

struct Origin {
    instant: Instant,
    unix_ms: u64,
    /// `CLOCK_MONOTONIC` at the origin, in ns (the clock `Instant` reads on Linux).
    mono_ns: u64,
}

static ORIGIN: OnceLock<Origin> = OnceLock::new();

fn origin() -> &'static Origin {
    // `instant` first, so the coarse clock (measured from the later `mono_ns`) never
    // runs ahead of `now_ms`.
    ORIGIN.get_or_init(|| Origin {
        instant: Instant::now(),
        mono_ns: clock_ns(libc::CLOCK_MONOTONIC),
        unix_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0),
    })
}

fn clock_ns(clock: libc::clockid_t) -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec; clock_gettime only writes it.
    let rc = unsafe { libc::clock_gettime(clock, &mut ts) };
    if rc != 0 {
        return 0;
    }
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// Milliseconds since the agent's origin (monotonic).
#[inline]
pub fn now_ms() -> u64 {
    origin().instant.elapsed().as_millis() as u64
}

/// Like [`now_ms`], from the kernel's coarse monotonic clock: a few ns instead of a few
/// tens, at the price of lagging by up to one scheduler tick (1-10 ms). For hot paths that
/// stamp "since" and "last send" times.
#[inline]
pub fn coarse_now_ms() -> u64 {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        let o = origin();
        clock_ns(libc::CLOCK_MONOTONIC_COARSE).saturating_sub(o.mono_ns) / 1_000_000
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    {
        now_ms()
    }
}

/// `now_ms() + 1` as of the agent thread's last tick; 0 while no agent thread ticks.
static TICK: AtomicU64 = AtomicU64::new(0);

/// Called by the agent thread on every turn of its loop (at least every
/// [`TICK_EVERY`](crate::server::TICK_EVERY)).
pub fn tick() {
    TICK.store(coarse_now_ms() + 1, Relaxed);
}

/// The agent thread stopped: [`cached_now_ms`] reads the clock again.
pub fn stop_ticking() {
    TICK.store(0, Relaxed);
}

/// The time as of the agent thread's last tick (at most ~100 ms old): one relaxed load,
/// for stamps on the message path. Reads the coarse clock when no agent thread runs.
#[inline]
pub fn cached_now_ms() -> u64 {
    match TICK.load(Relaxed) {
        0 => coarse_now_ms(),
        t => t - 1,
    }
}

/// The time as of the agent thread's last tick, or None when no agent thread runs (then
/// nobody can look, and hot paths skip their time stamps rather than read the clock).
#[inline]
pub fn ticked_now_ms() -> Option<u64> {
    TICK.load(Relaxed).checked_sub(1)
}

/// Wall clock at the origin, ms since the Unix epoch.
pub fn origin_unix_ms() -> u64 {
    origin().unix_ms
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn coarse_clock_tracks_the_precise_one() {
        let a = now_ms();
        std::thread::sleep(std::time::Duration::from_millis(30));
        let c = coarse_now_ms();
        let b = now_ms();
        // Coarse lags by at most a tick; it never runs ahead.
        assert!(c <= b, "coarse {c} ahead of precise {b}");
        assert!(c + 20 >= a + 30, "coarse {c} far behind {a}+30");
    }
}
