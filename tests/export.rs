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

// ---------------------------------------------------------------------------------------
// The fleet examples under docs/fleet/

/// Series name -> its label names.
type Known = HashMap<String, HashSet<String>>;

/// Labels Prometheus adds to every scraped series.
const TARGET_LABELS: [&str; 2] = ["job", "instance"];

/// `promtool` if it is on PATH or where .ci/run unpacks it.
fn promtool() -> Option<std::path::PathBuf> {
    let unpacked = workspace_root().join("target/tools/promtool");
    if unpacked.is_file() {
        return Some(unpacked);
    }
    std::env::var_os("PATH").and_then(|path| {
        std::env::split_paths(&path)
            .map(|d| d.join("promtool"))
            .find(|p| p.is_file())
    })
}

fn run_promtool(promtool: &std::path::Path, args: &[&str], stdin: Option<&str>) {
    use std::io::Write as _;
    let mut child = std::process::Command::new(promtool)
        .args(args)
        .current_dir(workspace_root())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut input = child.stdin.take().unwrap();
    input.write_all(stdin.unwrap_or("").as_bytes()).unwrap();
    drop(input);
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool {args:?}:\n{}{}",
        stdout(&out),
        stderr(&out)
    );
}

/// The words of a PromQL expression outside its string literals, with their positions.
fn promql_words(expr: &str) -> Vec<(usize, &str)> {
    let bytes = expr.as_bytes();
    let mut words = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        if c == b'"' || c == b'\'' || c == b'`' {
            i += 1;
            while i < bytes.len() && bytes[i] != c {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            i += 1;
        } else if c.is_ascii_alphabetic() || c == b'_' || c == b':' {
            let start = i;
            while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || b"_:".contains(&bytes[i]))
            {
                i += 1;
            }
            words.push((start, &expr[start..i]));
        } else {
            i += 1;
        }
    }
    words
}

/// Checks that `expr` names only series in `known`, and in its selectors and its
/// `by`/`without` clauses only labels those series have (or the scrape's).
fn check_promql(expr: &str, known: &Known) -> Result<(), String> {
    let words = promql_words(expr);
    let mut labels: HashSet<&str> = TARGET_LABELS.into_iter().collect();
    for (_, w) in &words {
        if w.starts_with("leaktop_") {
            let have = known
                .get(*w)
                .ok_or_else(|| format!("{w} is not a series leaktop exports: {expr}"))?;
            labels.extend(have.iter().map(String::as_str));
        }
    }
    for (at, w) in &words {
        let rest = expr[at + w.len()..].trim_start();
        if w.starts_with("leaktop_") && rest.starts_with('{') {
            // Matchers: `name op "value"`, the label names are the words before an operator.
            let inner = &rest[1..rest.find('}').unwrap_or(rest.len())];
            for (_, label) in promql_words(inner) {
                let own = &known[*w];
                if !own.contains(label) && !TARGET_LABELS.contains(&label) {
                    return Err(format!("{w} has no label {label}: {expr}"));
                }
            }
        }
        if (*w == "by" || *w == "without") && rest.starts_with('(') {
            let end = rest.find(')').unwrap_or(rest.len());
            for (_, label) in promql_words(&rest[1..end]) {
                if !labels.contains(label) {
                    return Err(format!("no series here has the label {label}: {expr}"));
                }
            }
        }
    }
    Ok(())
}

/// Labels an alert's annotation templates read (`$labels.site`).
fn template_labels(text: &str) -> Vec<&str> {
    text.match_indices("$labels.")
        .map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            &rest[..end]
        })
        .collect()
}

/// Every string value under a key named `key`, at any depth.
fn json_strings<'a>(v: &'a serde_json::Value, key: &str, out: &mut Vec<&'a str>) {
    match v {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                match v {
                    serde_json::Value::String(s) if k == key => out.push(s),
                    _ => json_strings(v, key, out),
                }
            }
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| json_strings(v, key, out)),
        _ => {}
    }
}

/// The series leaktop exports, from the code that exports them: `leaktop export` of a real
/// child (both formats, which must carry the same samples) and the agent's `metrics`
/// feature (`leaktop_agent::series::AGENT`, which agent/tests/metrics.rs holds equal to
/// what it publishes).
fn exported_series(promtool: Option<&std::path::Path>) -> Known {
    let bin = fixture_bin("spawn_sites", Profile::Debug);
    let mut child = spawn_child(&bin, &["3", "2", "1"]);
    child.wait_ready();
    let pid = child.pid().to_string();
    let run = |format: &str| {
        let out = leaktop(&child.socket_dir, &["export", &pid, "--format", format]);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let om = run("openmetrics");
    let samples = check_openmetrics(&om).unwrap_or_else(|e| panic!("{e}\n{om}"));
    let text = run("prometheus");
    // The same series (values move between the two runs: uptime, ages).
    let series = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| !l.starts_with('#'))
            .map(|l| l.rsplit_once(' ').map_or(l, |(s, _)| s).to_string())
            .collect()
    };
    assert_eq!(series(&text), series(&om), "{text}");
    if let Some(p) = promtool {
        // The parser of node_exporter's textfile collector and the Pushgateway.
        run_promtool(p, &["check", "metrics"], Some(&text));
    }
    let mut known = Known::new();
    for (name, labels, _) in samples {
        let entry = known.entry(name).or_default();
        entry.extend(labels.into_iter().map(|(k, _)| k));
    }
    for s in leaktop_agent::series::AGENT {
        let entry = known.entry(s.name.to_string()).or_default();
        entry.extend(s.labels.iter().map(|l| l.to_string()));
    }
    known
}

#[test]
fn fleet_examples_parse_and_name_only_series_leaktop_exports() {
    let promtool = promtool();
    let known = exported_series(promtool.as_deref());

    // The alerting rules: YAML, each rule's expression and annotations checked.
    let rules_path = workspace_root().join("docs/fleet/leaktop-alerts.yml");
    let rules_text = std::fs::read_to_string(&rules_path).unwrap();
    let docs = yaml_rust2::YamlLoader::load_from_str(&rules_text)
        .unwrap_or_else(|e| panic!("{}: {e}", rules_path.display()));
    let mut alerts = HashMap::new();
    for group in docs[0]["groups"].as_vec().expect("groups") {
        for rule in group["rules"].as_vec().expect("rules") {
            let name = rule["alert"].as_str().expect("an alert name").to_string();
            let expr = rule["expr"].as_str().expect("an expr");
            check_promql(expr, &known).unwrap_or_else(|e| panic!("{name}: {e}"));
            let series: HashSet<&str> = promql_words(expr)
                .into_iter()
                .map(|(_, w)| w)
                .filter(|w| w.starts_with("leaktop_"))
                .collect();
            let labels: HashSet<&str> = series
                .iter()
                .flat_map(|s| known[*s].iter().map(String::as_str))
                .chain(TARGET_LABELS)
                .collect();
            let annotations = rule["annotations"].as_hash().expect("annotations");
            for text in annotations.values().filter_map(|v| v.as_str()) {
                for label in template_labels(text) {
                    assert!(labels.contains(label), "{name} reads $labels.{label}");
                }
            }
            let wait = rule["for"].as_str().unwrap_or("0m").to_string();
            alerts.insert(name, (expr.to_string(), wait));
        }
    }
    // The two the fleet needs: steady growth for 30 minutes (the agent's series) and any
    // leak verdict (`leaktop export`'s).
    let (expr, wait) = &alerts["LeaktopSiteGrowing"];
    assert!(
        expr.contains("leaktop_site_live") && wait == "30m",
        "{expr} for {wait}"
    );
    let (expr, _) = &alerts["LeaktopLeak"];
    assert!(
        expr.contains("leaktop_site_verdict") && expr.contains(r#"leaktop_site_verdict="leak""#),
        "{expr}"
    );

    // The dashboard: JSON, every query checked.
    let dash_path = workspace_root().join("docs/fleet/leaktop-dashboard.json");
    let dash: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&dash_path).unwrap())
            .unwrap_or_else(|e| panic!("{}: {e}", dash_path.display()));
    let mut exprs = Vec::new();
    json_strings(&dash["panels"], "expr", &mut exprs);
    assert!(exprs.len() >= 8, "{exprs:?}");
    let mut variables = Vec::new();
    json_strings(&dash["templating"], "definition", &mut variables);
    for expr in exprs.iter().chain(&variables) {
        check_promql(expr, &known).unwrap_or_else(|e| panic!("dashboard: {e}"));
    }
    for name in [
        "leaktop_site_live",
        "leaktop_site_blocked",
        "leaktop_site_verdict",
    ] {
        assert!(
            exprs.iter().any(|e| e.contains(name)),
            "no panel shows {name}"
        );
    }

    // With promtool: the PromQL parses, and the rules fire when they should (their unit
    // tests feed them a leak, a busy healthy site, a stall and a verdict).
    let Some(promtool) = promtool else {
        println!("skipped promtool's checks: no promtool here (.ci/run unpacks it)");
        return;
    };
    run_promtool(
        &promtool,
        &["check", "rules", "docs/fleet/leaktop-alerts.yml"],
        None,
    );
    run_promtool(
        &promtool,
        &["test", "rules", "tests/fleet/leaktop-alerts-test.yml"],
        None,
    );
    let as_rules: String = exprs
        .iter()
        .enumerate()
        .map(|(i, e)| format!("      - record: panel_{i}\n        expr: {e:?}\n"))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-queries.yml");
    std::fs::write(
        &file,
        format!("groups:\n  - name: dashboard\n    rules:\n{as_rules}"),
    )
    .unwrap();
    run_promtool(&promtool, &["check", "rules", file.to_str().unwrap()], None);
}

#[test]
fn the_promql_checker_catches_unknown_series_and_labels() {
    let known: Known = [("leaktop_site_live", vec!["site"])]
        .into_iter()
        .map(|(n, l)| (n.to_string(), l.into_iter().map(String::from).collect()))
        .collect();
    assert!(check_promql(
        r#"sum by (site, job) (leaktop_site_live{site=~"a.*"})"#,
        &known
    )
    .is_ok());
    assert!(check_promql("leaktop_site_liv > 1", &known).is_err());
    assert!(check_promql(r#"leaktop_site_live{op="send"}"#, &known).is_err());
    assert!(check_promql("sum by (op) (leaktop_site_live)", &known).is_err());
    // Words inside strings are values, not names.
    assert!(check_promql(r#"leaktop_site_live{site="leaktop_nothing"}"#, &known).is_ok());
    assert_eq!(
        template_labels("{{ $labels.site }} on {{ $labels.instance }}"),
        ["site", "instance"]
    );
}
