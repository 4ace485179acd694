//! A count and its noun agree in every output (dump, check, list, the TUI, record
//! summaries): "1 site", "2 sites", never "1 sites".

/// `singular` agreeing with `n`: as given for 1, with an `s` otherwise (every noun
/// leaktop counts takes a plain `s`; for a phrase, the last word does: "live task").
pub fn noun(n: u64, singular: &str) -> String {
    if n == 1 {
        singular.to_string()
    } else {
        format!("{singular}s")
    }
}

/// `n` and its noun: `count(1, "spawn site")` is "1 spawn site", `count(3, "task")`
/// "3 tasks".
pub fn count(n: u64, singular: &str) -> String {
    format!("{n} {}", noun(n, singular))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_is_singular_and_every_other_count_plural() {
        assert_eq!(count(1, "site"), "1 site");
        assert_eq!(count(0, "site"), "0 sites");
        assert_eq!(count(2, "live task"), "2 live tasks");
        assert_eq!(noun(1, "snapshot"), "snapshot");
        assert_eq!(noun(4211, "frame"), "frames");
    }
}
