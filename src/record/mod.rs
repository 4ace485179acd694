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
//!   [`Timeline`](crate::source::Timeline); [`session_at`] folds a file up to a time
//!   (`leaktop dump s.ltrec --at 5m`).

// Data from outside (agent bytes, recordings, /proc) must never panic leaktop.
#![cfg_attr(not(test), warn(clippy::unwrap_used, clippy::expect_used))]

pub mod delta;
pub mod format;
pub mod headless;
pub mod reader;
pub mod replay;
pub mod symbols;
pub mod tee;
pub mod writer;

use std::path::PathBuf;

pub use format::{Meta, SymFrame, SymbolEntry, FORMAT_VERSION};
pub use reader::{Entry, Item, OpenError, Reader, Summary, Tail};
pub use replay::{session_at, RecordingSource};
pub use tee::{RecordState, Resolver, Tee};
pub use writer::{RecordOptions, RecordStats, Recorder, WriteError};

/// File name extension of recordings.
pub const EXTENSION: &str = "ltrec";

/// What `dump` and `check` look at: a live process or a recording.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Pid(u32),
    Recording(PathBuf),
}

impl Target {
    /// A number is a pid; anything else is a path (write `./1234` for a file named
    /// `1234`).
    pub fn parse(s: &str) -> Result<Target, String> {
        if s.is_empty() {
            return Err("expected a pid or the path of a .ltrec recording".into());
        }
        if s.bytes().all(|b| b.is_ascii_digit()) {
            return s
                .parse()
                .map(Target::Pid)
                .map_err(|_| format!("{s} is not a valid pid"));
        }
        Ok(Target::Recording(PathBuf::from(s)))
    }
}

impl std::str::FromStr for Target {
    type Err = String;
    fn from_str(s: &str) -> Result<Target, String> {
        Target::parse(s)
    }
}

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

/// Reads `data` as a recording every way replay does, for the fuzz target
/// (`fuzz/fuzz_targets/read_recording.rs`) and the property tests. Never panics, whatever
/// the bytes. An odd first byte wraps the rest in a valid header and intact frames (each
/// chunk's length is its first byte), so the search reaches the record decoders past the
/// checksums; an even one takes the rest as a whole file.
#[doc(hidden)]
pub fn fuzz_one(data: &[u8]) {
    use crate::source::Timeline;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes: Vec<u8> = if mode % 2 == 1 {
        let mut v = format::file_header().to_vec();
        let mut rest = rest;
        while let Some((&len, tail)) = rest.split_first() {
            let n = (len as usize).min(tail.len());
            v.extend_from_slice(&format::frame_with_payload(&tail[..n]));
            rest = &tail[n..];
        }
        v
    } else {
        rest.to_vec()
    };
    let path = std::path::Path::new("fuzz.ltrec");
    let Ok(mut reader) = Reader::new(bytes.into(), path) else {
        return;
    };
    for entry in reader.by_ref() {
        std::hint::black_box(entry);
    }
    let _ = reader.tail().and_then(Tail::describe);
    if let Ok(mut src) = RecordingSource::from_reader(reader.rewound(), path) {
        let mut session = crate::model::Session::new();
        let end = src.duration_ms();
        src.seek(end / 2, &mut session);
        src.seek(end, &mut session);
        src.step(false, &mut session);
        let _ = crate::report::text(&session);
        let _ = src.warning();
    }
}

#[cfg(test)]
pub(crate) mod tests;

#[cfg(test)]
mod unit_tests {
    use super::*;

    #[test]
    fn targets_are_pids_or_paths() {
        assert_eq!(Target::parse("1234"), Ok(Target::Pid(1234)));
        assert_eq!(
            Target::parse("s.ltrec"),
            Ok(Target::Recording("s.ltrec".into()))
        );
        assert_eq!(
            Target::parse("./1234"),
            Ok(Target::Recording("./1234".into()))
        );
        assert!(Target::parse("99999999999").is_err());
        assert!(Target::parse("").is_err());
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
