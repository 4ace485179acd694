//! Text formatting shared by the widgets: counts, rates, ages, paths, sparklines.

pub use crate::report::age;

/// A refresh interval: `250ms`, `1s`, `1.5s`.
pub fn interval(d: std::time::Duration) -> String {
    let ms = d.as_millis();
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms % 1000 == 0 {
        format!("{}s", ms / 1000)
    } else {
        format!("{:.1}s", ms as f64 / 1000.0)
    }
}

/// `4211` → `4,211`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// A count in at most `width` columns: `4,211`, then `42.1k`, `4.21M`, `4.21G`.
pub fn count(n: u64, width: usize) -> String {
    let full = thousands(n);
    if full.chars().count() <= width {
        return full;
    }
    let units = [(1e9, "G"), (1e6, "M"), (1e3, "k")];
    for (scale, unit) in units {
        let v = n as f64 / scale;
        if v >= 1.0 {
            for prec in [2usize, 1, 0] {
                let s = format!("{v:.prec$}{unit}");
                if s.chars().count() <= width {
                    return s;
                }
            }
        }
    }
    full
}

/// A signed change: `+120`, `-3`, `0`, `+1.2k`.
pub fn signed(v: i64, width: usize) -> String {
    let sign = match v.cmp(&0) {
        std::cmp::Ordering::Greater => "+",
        std::cmp::Ordering::Less => "-",
        std::cmp::Ordering::Equal => return "0".into(),
    };
    format!(
        "{sign}{}",
        count(v.unsigned_abs(), width.saturating_sub(1).max(1))
    )
}

/// A rate per minute: `+12`, `-0.5`, `0`, `+1.2k`.
pub fn rate(v: f64, width: usize) -> String {
    if !v.is_finite() {
        return "?".into();
    }
    if v.abs() < 0.05 {
        return "0".into();
    }
    if v.abs() < 10.0 {
        return format!("{v:+.1}");
    }
    signed(v.round() as i64, width)
}

/// Drops the prefix of a path that says where a dependency's source was unpacked:
/// `/home/u/.cargo/registry/src/index.crates.io-6f17d22bba15001f/hyper-1.4.1/src/x.rs`
/// becomes `hyper-1.4.1/src/x.rs`; `/rustc/<hash>/library/std/src/x.rs` becomes
/// `library/std/src/x.rs`.
pub fn short_path(path: &str) -> &str {
    for marker in ["/.cargo/registry/src/", "/.cargo/git/checkouts/"] {
        if let Some(i) = path.find(marker) {
            let rest = &path[i + marker.len()..];
            // Skip the index (or checkout) directory.
            if let Some(j) = rest.find('/') {
                return &rest[j + 1..];
            }
        }
    }
    if let Some(rest) = path.strip_prefix("/rustc/") {
        if let Some(j) = rest.find('/') {
            return &rest[j + 1..];
        }
    }
    path
}

/// Word-wraps `text` into lines of at most `width` columns (a word longer than a line is
/// cut into pieces).
pub fn wrap(text: &str, width: usize) -> Vec<String> {
    let width = width.max(1);
    let mut lines = Vec::new();
    let mut line = String::new();
    let mut len = 0usize;
    for word in text.split_whitespace() {
        let mut word: Vec<char> = word.chars().collect();
        loop {
            let wl = word.len();
            let need = if len == 0 { wl } else { len + 1 + wl };
            if need <= width {
                if len > 0 {
                    line.push(' ');
                }
                line.extend(word.iter());
                len = need;
                break;
            }
            if len > 0 {
                lines.push(std::mem::take(&mut line));
                len = 0;
                continue;
            }
            // A word longer than the line.
            let rest = word.split_off(width);
            lines.push(word.iter().collect());
            word = rest;
        }
    }
    if len > 0 {
        lines.push(line);
    }
    lines
}

/// Cuts `s` to `width` columns, keeping its end (`…/handler.rs:12:5`): the end of a path
/// is the part that tells sites apart.
pub fn keep_end(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let tail: String = s.chars().skip(n - (width - 1)).collect();
    format!("…{tail}")
}

/// Cuts `s` to `width` columns, keeping its start.
pub fn keep_start(s: &str, width: usize) -> String {
    let n = s.chars().count();
    if n <= width {
        return s.to_string();
    }
    if width == 0 {
        return String::new();
    }
    let head: String = s.chars().take(width - 1).collect();
    format!("{head}…")
}

const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];

/// A one-line sparkline of `values` (one per column; `None` = no data, blank), scaled from
/// 0 to the largest value so equal counts in two rows look alike within a row only.
pub fn sparkline(values: &[Option<u64>]) -> String {
    let max = values.iter().flatten().copied().max().unwrap_or(0);
    values
        .iter()
        .map(|v| match v {
            None => ' ',
            Some(_) if max == 0 => BARS[0],
            Some(v) => {
                let i = ((*v as u128 * 7 + max as u128 / 2) / max as u128) as usize;
                BARS[i.min(7)]
            }
        })
        .collect()
}

/// Samples of a time series into `width` buckets covering `(end - window, end]`: each
/// bucket takes the last sample at or before its end (the live count is a level, not a
/// flow). Buckets before the first sample are `None`.
pub fn buckets(
    points: &[(u64, u64)],
    end_ms: u64,
    window_ms: u64,
    width: usize,
) -> Vec<Option<u64>> {
    let mut out = vec![None; width];
    if width == 0 || points.is_empty() || window_ms == 0 {
        return out;
    }
    let start = end_ms as i128 - window_ms as i128;
    let mut j = 0usize;
    let mut last: Option<u64> = None;
    for (i, slot) in out.iter_mut().enumerate() {
        let bucket_end = start + window_ms as i128 * (i as i128 + 1) / width as i128;
        while j < points.len() && (points[j].0 as i128) <= bucket_end {
            last = Some(points[j].1);
            j += 1;
        }
        *slot = last;
    }
    out
}

/// Playback speed: `1x`, `4x`, `0.5x`, `1/64x`.
pub fn speed(v: f64) -> String {
    if v >= 1.0 || v <= 0.0 {
        format!("{}x", (v * 100.0).round() / 100.0)
    } else if (1.0 / v).fract().abs() < 1e-9 {
        format!("1/{}x", (1.0 / v).round())
    } else {
        format!("{:.2}x", v)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_fit_their_column() {
        assert_eq!(thousands(4211), "4,211");
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(count(1_234_567, 7), "1.23M");
        assert_eq!(count(123_456, 7), "123,456");
        assert_eq!(count(123_456, 5), "123k");
        assert_eq!(signed(-1500, 5), "-1.5k");
        assert_eq!(signed(42, 5), "+42");
        assert_eq!(rate(0.01, 6), "0");
        assert_eq!(rate(2.5, 6), "+2.5");
        assert_eq!(rate(600.0, 6), "+600");
    }

    #[test]
    fn paths_keep_their_tail() {
        assert_eq!(keep_end("src/server/handler.rs:12:5", 12), "…ler.rs:12:5");
        assert_eq!(keep_end("abc", 5), "abc");
        assert_eq!(keep_end("abcdef", 4), "…def");
        assert_eq!(keep_end("abcdef", 0), "");
        assert_eq!(keep_start("abcdef", 4), "abc…");
        assert_eq!(
            short_path("/h/.cargo/registry/src/index.crates.io-6f1/hyper-1.4.1/src/a.rs:2:3"),
            "hyper-1.4.1/src/a.rs:2:3"
        );
        assert_eq!(
            short_path("/rustc/59807616e1fa/library/std/src/x.rs"),
            "library/std/src/x.rs"
        );
        assert_eq!(short_path("src/main.rs:1:1"), "src/main.rs:1:1");
    }

    #[test]
    fn wrap_breaks_at_words_and_cuts_long_ones() {
        assert_eq!(wrap("one two three", 7), vec!["one two", "three"]);
        assert_eq!(wrap("abcdefghij", 4), vec!["abcd", "efgh", "ij"]);
        assert_eq!(wrap("", 4), Vec::<String>::new());
        assert_eq!(wrap("a b", 0), vec!["a", "b"]);
    }

    #[test]
    fn sparkline_scales_to_the_row_max() {
        assert_eq!(sparkline(&[None, Some(0), Some(4), Some(8)]), " ▁▅█");
        assert_eq!(sparkline(&[Some(0), Some(0)]), "▁▁");
    }

    #[test]
    fn buckets_hold_the_level_at_their_end() {
        let pts = [(1000, 1), (2000, 2), (3000, 3), (4000, 4)];
        assert_eq!(
            buckets(&pts, 4000, 4000, 4),
            vec![Some(1), Some(2), Some(3), Some(4)]
        );
        assert_eq!(
            buckets(&pts, 4000, 8000, 4),
            vec![None, None, Some(2), Some(4)]
        );
        assert_eq!(buckets(&[], 4000, 8000, 2), vec![None, None]);
        // A window longer than the agent's uptime: the early buckets stay empty.
        assert_eq!(
            buckets(&pts, 4000, 16000, 4),
            vec![None, None, None, Some(4)]
        );
    }
}
