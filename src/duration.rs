//! Durations on the command line (`30s`, `5m`, `1h30m`, `250ms`, `1.5s`) and in reports
//! (`5m12s`). One parser for every command, so `--for`, `--window` and `--baseline` all
//! read the same way.
//!
//! Hand-written rather than a crate: the grammar is five units and a number, and the
//! output format (`5m12s`, like Go's goroutine dumps) is our own.

use std::time::Duration;

/// Why a duration did not parse; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: {why} (write e.g. 30s, 5m, 1h30m, 250ms or 1.5s)")]
pub struct ParseDurationError {
    pub input: String,
    pub why: &'static str,
}

/// Parses `30s`, `5m`, `2h`, `1d`, `250ms`, `1.5s`, `1h30m`, `1m 30s`. A bare number is
/// seconds. Whitespace between parts is allowed.
pub fn parse(input: &str) -> Result<Duration, ParseDurationError> {
    let err = |why| ParseDurationError {
        input: input.to_string(),
        why,
    };
    let s = input.trim();
    if s.is_empty() {
        return Err(err("it is empty"));
    }
    if let Ok(secs) = s.parse::<f64>() {
        return secs_to_duration(secs).ok_or_else(|| err("it is negative or too large"));
    }
    let mut total = 0f64;
    let mut rest = s;
    while !rest.is_empty() {
        rest = rest.trim_start();
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        if num_len == 0 {
            return Err(err("a unit must follow a number"));
        }
        let value: f64 = rest[..num_len]
            .parse()
            .map_err(|_| err("it has a malformed number"))?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| !c.is_ascii_alphabetic())
            .unwrap_or(rest.len());
        let unit = &rest[..unit_len];
        rest = &rest[unit_len..];
        let scale = match unit {
            "ms" => 0.001,
            "s" | "sec" | "secs" => 1.0,
            "m" | "min" | "mins" => 60.0,
            "h" | "hr" | "hrs" => 3600.0,
            "d" => 86_400.0,
            "" => return Err(err("every number but a lone one needs a unit")),
            _ => return Err(err("unknown unit (use ms, s, m, h or d)")),
        };
        total += value * scale;
    }
    secs_to_duration(total).ok_or_else(|| err("it is too large"))
}

fn secs_to_duration(secs: f64) -> Option<Duration> {
    // Ten years is plenty for any watch or window.
    (secs.is_finite() && (0.0..=315_360_000.0).contains(&secs))
        .then(|| Duration::from_secs_f64(secs))
}

/// Parser for clap's `value_parser`.
pub fn parse_arg(s: &str) -> Result<Duration, String> {
    parse(s).map_err(|e| e.to_string())
}

/// `1.5s`, `42s`, `5m12s`, `3h01m`, `2d00h`: short, exact enough to act on.
pub fn age(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 if ms < 10_000 => format!("{:.1}s", ms as f64 / 1000.0),
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        _ => format!("{}d{:02}h", s / 86_400, (s % 86_400) / 3600),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_people_type() {
        let d = |s| parse(s).unwrap();
        assert_eq!(d("30s"), Duration::from_secs(30));
        assert_eq!(d("5m"), Duration::from_secs(300));
        assert_eq!(d("1h30m"), Duration::from_secs(5400));
        assert_eq!(d("1m 30s"), Duration::from_secs(90));
        assert_eq!(d("250ms"), Duration::from_millis(250));
        assert_eq!(d("1.5s"), Duration::from_millis(1500));
        assert_eq!(d("2"), Duration::from_secs(2));
        assert_eq!(d(" 1d "), Duration::from_secs(86_400));
    }

    #[test]
    fn rejects_nonsense_with_a_hint() {
        for bad in [
            "", "abc", "5x", "s", "-3s", "1e400", "5 m s", "1.2.3s", "-1",
        ] {
            let e = parse(bad).unwrap_err().to_string();
            assert!(e.contains("write e.g. 30s"), "{bad}: {e}");
        }
    }

    #[test]
    fn ages_read_like_go() {
        assert_eq!(age(1500), "1.5s");
        assert_eq!(age(42_000), "42s");
        assert_eq!(age(312_000), "5m12s");
        assert_eq!(age(3 * 3600 * 1000 + 60_000), "3h01m");
        assert_eq!(age(2 * 86_400_000), "2d00h");
    }
}
