//! `leaktop export <pid> --format openmetrics` against a real child: the exposition obeys
//! the OpenMetrics text format (checked line by line below) and carries the exact
//! per-site counts.

mod common;

use std::collections::{HashMap, HashSet};

use common::*;

const SRC: &str = "tests/fixtures/src/bin/spawn_sites.rs";

/// Labels in order: (name, unescaped value).
type Labels = Vec<(String, String)>;
/// One parsed sample: name, labels, value.
type Sample = (String, Labels, f64);

fn is_name(s: &str, colon: bool) -> bool {
    let mut chars = s.chars();
    let ok_first = |c: char| c.is_ascii_alphabetic() || c == '_' || (colon && c == ':');
    let ok_rest = |c: char| c.is_ascii_alphanumeric() || c == '_' || (colon && c == ':');
    chars.next().is_some_and(ok_first) && chars.all(ok_rest)
}

/// Parses `{a="x",b="y"}` (after the name); returns the labels and the rest of the line.
fn parse_labels(s: &str) -> Result<(Labels, &str), String> {
    let Some(mut rest) = s.strip_prefix('{') else {
        return Ok((Vec::new(), s));
    };
    let mut labels = Vec::new();
    loop {
        if let Some(r) = rest.strip_prefix('}') {
            return Ok((labels, r));
        }
        if !labels.is_empty() {
            rest = rest
                .strip_prefix(',')
                .ok_or("labels not separated by ','")?;
        }
        let eq = rest.find('=').ok_or("label without '='")?;
        let name = &rest[..eq];
        if !is_name(name, false) {
            return Err(format!("bad label name {name:?}"));
        }
        rest = rest[eq + 1..]
            .strip_prefix('"')
            .ok_or("label value not quoted")?;
        let mut value = String::new();
        let mut chars = rest.char_indices();
        let end = loop {
            let (i, c) = chars.next().ok_or("unterminated label value")?;
            match c {
                '"' => break i,
                '\\' => match chars.next().map(|(_, c)| c) {
                    Some('\\') => value.push('\\'),
                    Some('"') => value.push('"'),
                    Some('n') => value.push('\n'),
                    other => return Err(format!("bad escape \\{other:?}")),
                },
                '\n' => return Err("raw line feed in label value".into()),
                c => value.push(c),
            }
        };
        if labels.iter().any(|(n, _)| n == name) {
            return Err(format!("duplicate label {name}"));
        }
        labels.push((name.to_string(), value));
        rest = &rest[end + 1..];
    }
}

fn parse_value(s: &str) -> Result<f64, String> {
    match s {
        "NaN" => Ok(f64::NAN),
        "+Inf" => Ok(f64::INFINITY),
        "-Inf" => Ok(f64::NEG_INFINITY),
        _ => s.parse().map_err(|_| format!("bad value {s:?}")),
    }
}

/// Checks `text` against the OpenMetrics text format rules leaktop's exposition uses
/// (families, TYPE/UNIT/HELP metadata, sample names per type, label syntax and escaping,
/// unique series, `# EOF`), and returns the samples.
fn check_openmetrics(text: &str) -> Result<Vec<Sample>, String> {
    let body = text
        .strip_suffix("# EOF\n")
        .or_else(|| text.strip_suffix("# EOF"))
        .ok_or("does not end with # EOF")?;
    if !body.ends_with('\n') && !body.is_empty() {
        return Err("# EOF is not on a line of its own".into());
    }
    let mut types: HashMap<String, String> = HashMap::new();
    let mut current: Option<(String, String, bool)> = None; // family, type, had samples
    let mut series: HashSet<(String, Labels)> = HashSet::new();
    let mut samples = Vec::new();
    for (n, line) in body.lines().enumerate() {
        let at = |e: String| format!("line {}: {e}: {line:?}", n + 1);
        if line.is_empty() {
            return Err(at("empty line".into()));
        }
        if let Some(meta) = line.strip_prefix("# ") {
            let mut parts = meta.splitn(3, ' ');
            let (kw, name, arg) = (parts.next(), parts.next(), parts.next());
            let (Some(kw), Some(name)) = (kw, name) else {
                return Err(at("bad metadata".into()));
            };
            if !is_name(name, true) {
                return Err(at(format!("bad family name {name}")));
            }
            match kw {
                "TYPE" => {
                    let t = arg.ok_or_else(|| at("TYPE without a type".into()))?;
                    let known = [
                        "counter",
                        "gauge",
                        "stateset",
                        "info",
                        "histogram",
                        "gaugehistogram",
                        "summary",
                        "unknown",
                    ];
                    if !known.contains(&t) {
                        return Err(at(format!("unknown type {t}")));
                    }
                    if types.insert(name.to_string(), t.to_string()).is_some() {
                        return Err(at(format!("family {name} declared twice")));
                    }
                    current = Some((name.to_string(), t.to_string(), false));
                }
                "UNIT" | "HELP" => {
                    match &current {
                        Some((f, _, false)) if f == name => {}
                        _ => return Err(at("metadata away from its family's TYPE".into())),
                    }
                    if kw == "HELP" {
                        let wrapped = format!("{{h=\"{}\"}}", arg.unwrap_or(""));
                        let (_, rest) =
                            parse_labels(&wrapped).map_err(|e| at(format!("HELP text: {e}")))?;
                        if !rest.is_empty() {
                            return Err(at("raw '\"' in HELP text".into()));
                        }
                    }
                    if kw == "UNIT" {
                        let unit = arg.unwrap_or("");
                        if !name.ends_with(&format!("_{unit}")) {
                            return Err(at("family name does not end with its unit".into()));
                        }
                    }
                }
                _ => return Err(at(format!("unknown metadata {kw}"))),
            }
            continue;
        }
        if line.starts_with('#') {
            return Err(at("comment that is not metadata".into()));
        }
        let name_end = line.find(['{', ' ']).ok_or_else(|| at("no value".into()))?;
        let name = &line[..name_end];
        let (labels, rest) = parse_labels(&line[name_end..]).map_err(at)?;
        let value = rest
            .strip_prefix(' ')
            .ok_or_else(|| at("no space before the value".into()))?;
        let value = parse_value(value.split(' ').next().unwrap_or("")).map_err(at)?;
        let Some((family, kind, seen)) = current.as_mut() else {
            return Err(at("sample before any TYPE".into()));
        };
        *seen = true;
        let ok_name = match kind.as_str() {
            "counter" => *name == format!("{family}_total") || *name == format!("{family}_created"),
            "info" => *name == format!("{family}_info"),
            _ => name == family,
        };
        if !ok_name {
            return Err(at(format!("sample {name} not of family {family} ({kind})")));
        }
        match kind.as_str() {
            "counter" if value < 0.0 => return Err(at("negative counter".into())),
            "info" if value != 1.0 => return Err(at("info value is not 1".into())),
            "stateset" => {
                if value != 0.0 && value != 1.0 {
                    return Err(at("stateset value is not 0 or 1".into()));
                }
                if !labels.iter().any(|(k, _)| k == family.as_str()) {
                    return Err(at("stateset sample without its state label".into()));
                }
            }
            _ => {}
        }
        let mut key_labels = labels.clone();
        key_labels.sort();
        if !series.insert((name.to_string(), key_labels)) {
            return Err(at("duplicate series".into()));
        }
        samples.push((name.to_string(), labels, value));
    }
    Ok(samples)
}

fn value(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| {
            n == name
                && l.len() == labels.len()
                && labels
                    .iter()
                    .all(|(k, v)| l.iter().any(|(lk, lv)| lk == k && lv == v))
        })
        .map(|s| s.2)
}

#[test]
fn the_checker_rejects_what_the_format_forbids() {
    let ok = "# TYPE a gauge\n# HELP a x\na{s=\"q\\\"\\n\"} 1\n# EOF\n";
    assert!(check_openmetrics(ok).is_ok());
    for bad in [
        "# TYPE a gauge\na 1\n",                         // no EOF
        "# TYPE a gauge\na 1\na 2\n# EOF\n",             // duplicate series
        "# TYPE a counter\na 1\n# EOF\n",                // counter sample without _total
        "a 1\n# EOF\n",                                  // no TYPE
        "# TYPE a gauge\na{s=\"x\\q\"} 1\n# EOF\n",      // bad escape
        "# TYPE a gauge\n# TYPE a gauge\n# EOF\n",       // family twice
        "# TYPE a_s gauge\n# UNIT a_s seconds\n# EOF\n", // unit not a suffix
        "# TYPE a stateset\na{a=\"x\"} 2\n# EOF\n",      // stateset value
        "# TYPE a gauge\n# HELP a say \"hi\"\n# EOF\n",  // raw quote in HELP
    ] {
        assert!(check_openmetrics(bad).is_err(), "accepted {bad:?}");
    }
}

#[test]
fn export_prints_a_valid_openmetrics_exposition_with_exact_counts() {
    let bin = fixture_bin("spawn_sites", Profile::Debug);
    let mut child = spawn_child(&bin, &["30", "20", "10"]);
    child.wait_ready();
    let pid = child.pid().to_string();

    let out = leaktop(
        &child.socket_dir,
        &["export", &pid, "--format", "openmetrics"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let samples = check_openmetrics(&text).unwrap_or_else(|e| panic!("{e}\n{text}"));

    let site = |marker: &str| {
        let (f, l, c) = location_of(SRC, marker, "leaktop_agent::spawn");
        format!("{f}:{l}:{c}")
    };
    let (a, b, f) = (
        site("// site: never_a"),
        site("// site: never_b"),
        site("// site: finishing"),
    );
    for (s, live, spawned, completed) in [(&a, 30, 30, 0), (&b, 20, 20, 0), (&f, 0, 10, 10)] {
        let l = [("site", s.as_str())];
        assert_eq!(
            value(&samples, "leaktop_site_live", &l),
            Some(live as f64),
            "{s}\n{text}"
        );
        assert_eq!(
            value(&samples, "leaktop_site_spawned_total", &l),
            Some(spawned as f64)
        );
        assert_eq!(
            value(&samples, "leaktop_site_completed_total", &l),
            Some(completed as f64)
        );
        assert_eq!(
            value(
                &samples,
                "leaktop_site_verdict",
                &[("site", s.as_str()), ("leaktop_site_verdict", "none")]
            ),
            Some(1.0),
            "a fresh process has no findings"
        );
        assert_eq!(
            value(
                &samples,
                "leaktop_site_blocked",
                &[("site", s.as_str()), ("op", "send")]
            ),
            Some(0.0)
        );
    }
    assert_eq!(
        value(
            &samples,
            "leaktop_target_info",
            &[
                ("pid", pid.as_str()),
                ("exe", bin.to_str().unwrap()),
                ("agent_version", env!("CARGO_PKG_VERSION")),
                (
                    "build_id",
                    samples
                        .iter()
                        .find(|s| s.0 == "leaktop_target_info")
                        .and_then(|s| s.1.iter().find(|l| l.0 == "build_id"))
                        .map(|l| l.1.as_str())
                        .unwrap_or("")
                ),
            ]
        ),
        Some(1.0),
        "{text}"
    );

    // A bad pid is a clear error, not an empty exposition.
    let out = leaktop(&child.socket_dir, &["export", "999999999"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("999999999"), "{}", stderr(&out));
}
