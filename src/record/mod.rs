//! Recording and replay: sessions to `.ltrec` files and back.
//!
//! A recording is the stream of protocol messages a live [`Source`](crate::source::Source)
//! yielded, each with its receive time, plus the resolved symbols of the raw stack
//! addresses, so it replays anywhere without the recorded binary. `docs/recording.md`
//! describes the bytes; in short:
//!
//! ```text
//! file    = header frame*
//! header  = "\x89LTREC\r\n" | u32 LE format version | u32 LE crc32(previous 12 bytes)
//! frame   = u32 LE len | u32 LE crc32(payload) | u32 LE crc32(previous 8 bytes) | payload
//! payload = varint t_ms (receive time since the recording started) | postcard(Record)
//! ```
//!
//! Snapshots are stored as deltas against the previous snapshot of the file (only the
//! sites whose counters changed, as field differences; a whole snapshot every
//! [`delta::KEYFRAME_EVERY`]), the history rings as runs of equal differences. The reader
//! rebuilds the exact messages.
//!
//! - [`Recorder`] writes a file, frame by frame, flushed as it goes: a file cut off by a
//!   crash or a full disk replays up to its last whole frame.
//! - [`Tee`] records what a live source yields (`leaktop record`, `--record`, the TUI's
//!   `r` key).
//! - [`Reader`] reads frames back, never panicking on any bytes; [`RecordingSource`] is
//!   the replay [`Source`](crate::source::Source) with a
//!   [`Timeline`](crate::source::Timeline); `driver::session_of` folds a file up to a time
//!   (`leaktop dump s.ltrec --at 5m`).

// Data from outside (agent bytes, recordings, /proc) must never panic leaktop.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod delta;
pub mod format;
pub mod reader;
pub mod replay;
pub mod tee;
pub mod writer;

use std::path::PathBuf;

pub use format::{Meta, SymbolEntry, FORMAT_VERSION};
pub use reader::{Entry, Item, OpenError, Reader, Summary, Tail};
pub use replay::RecordingSource;
pub use tee::{RecordState, Tee};
pub use writer::{RecordOptions, RecordStats, Recorder, WriteError};

/// File name extension of recordings.
pub const EXTENSION: &str = "ltrec";

/// Parses a time in a recording of `duration_ms`: `5m`, `1m30s`, `90` (seconds), `500ms`,
/// `50%`, `-30s` (before the end), `start`, `end`. Times past the end clamp to it.
pub fn parse_at(s: &str, duration_ms: u64) -> Result<u64, String> {
    let s = s.trim();
    let bad = || {
        format!(
            "invalid time {s:?}: use a duration like 5m, 1m30s, 90 (seconds) or 500ms, a percentage like 50%, -30s for 30s before the end, start or end"
        )
    };
    let t = match s {
        "start" | "begin" => 0,
        "end" | "" => duration_ms,
        _ => {
            if let Some(p) = s.strip_suffix('%') {
                let p: f64 = p.trim().parse().map_err(|_| bad())?;
                if !(0.0..=100.0).contains(&p) {
                    return Err(bad());
                }
                (duration_ms as f64 * p / 100.0).round() as u64
            } else if let Some(back) = s.strip_prefix('-') {
                duration_ms.saturating_sub(parse_duration_ms(back).ok_or_else(bad)?)
            } else {
                parse_duration_ms(s).ok_or_else(bad)?
            }
        }
    };
    Ok(t.min(duration_ms))
}

/// `5m`, `1m30s`, `1.5s`, `90` (seconds), `500ms` as milliseconds (the one duration
/// grammar of the command line, [`crate::duration::parse`]).
pub fn parse_duration_ms(s: &str) -> Option<u64> {
    crate::duration::parse(s)
        .ok()
        .map(|d| d.as_millis().min(u64::MAX as u128) as u64)
}

/// `YYYYMMDDTHHMMSS` (UTC) of a Unix time in seconds.
fn utc_stamp(unix_s: u64) -> String {
    let days = (unix_s / 86_400) as i64;
    let secs = unix_s % 86_400;
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + (month <= 2) as i64;
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}",
        secs / 3600,
        (secs % 3600) / 60,
        secs % 60
    )
}

/// A fresh file name for a recording of `pid` started now, in the current directory:
/// `leaktop-<pid>-<UTC date>T<time>.ltrec`.
pub fn auto_name(pid: u32) -> PathBuf {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    PathBuf::from(format!("leaktop-{pid}-{}.{EXTENSION}", utc_stamp(now)))
}

/// `1.5 KB`-style size.
pub fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["KB", "MB", "GB", "TB"];
    if n < 1000 {
        return format!("{n} B");
    }
    let mut v = n as f64 / 1000.0;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn sizes_read_like_ls_h() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1_500), "1.5 KB");
        assert_eq!(human_bytes(52_000_000), "52.0 MB");
    }

    #[test]
    fn times_in_a_recording() {
        let d = 600_000;
        assert_eq!(parse_at("5m", d), Ok(300_000));
        assert_eq!(parse_at("1m30s", d), Ok(90_000));
        assert_eq!(parse_at("90", d), Ok(90_000));
        assert_eq!(parse_at("1.5", d), Ok(1_500));
        assert_eq!(parse_at("500ms", d), Ok(500));
        assert_eq!(parse_at("50%", d), Ok(300_000));
        assert_eq!(parse_at("-30s", d), Ok(570_000));
        assert_eq!(parse_at("end", d), Ok(d));
        assert_eq!(parse_at("start", d), Ok(0));
        assert_eq!(parse_at("2h", d), Ok(d));
        for bad in ["soon", "150%", "-x", "NaN"] {
            assert!(parse_at(bad, d).is_err(), "{bad}");
        }
    }

    #[test]
    fn utc_stamps_are_civil_dates() {
        assert_eq!(utc_stamp(0), "19700101T000000");
        assert_eq!(utc_stamp(951_782_400 + 3661), "20000229T010101");
        assert_eq!(utc_stamp(1_700_000_000), "20231114T221320");
    }

    #[test]
    fn auto_names_carry_pid_and_time() {
        let n = auto_name(42).display().to_string();
        assert!(n.starts_with("leaktop-42-20"), "{n}");
        assert!(n.ends_with(".ltrec") && !n.contains(':'), "{n}");
    }
}
