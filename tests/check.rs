//! End to end: `leaktop check` and the verdicts of `leaktop dump` on a real child that
//! leaks one idle task per 100 ms (`growth`), and on its fixed twin. The agent samples
//! every 100 ms and the thresholds are short, so each test takes a few seconds.

mod common;

use std::time::Duration;

use common::*;

const SRC: &str = "tests/fixtures/src/bin/growth.rs";

/// Short thresholds: growth over 3 s, tasks older than 1 s count.
const FAST: &[&str] = &["--window", "3s", "--min-age", "1s"];

fn start(fixed: bool) -> ChildGuard {
    let bin = fixture_bin("growth", Profile::Debug);
    let args: &[&str] = if fixed { &["--fixed"] } else { &[] };
    let mut child = spawn_child_env(&bin, args, &[("LEAKTOP_SAMPLE_MS", "100")]);
    child.wait_ready();
    child
}

fn json(out: &std::process::Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{}", stdout(out), stderr(out)))
}

fn run(child: &ChildGuard, args: &[&str]) -> std::process::Output {
    let pid = child.pid().to_string();
    // "_" stands for the child's pid.
    let all: Vec<&str> = args
        .iter()
        .map(|a| if *a == "_" { pid.as_str() } else { a })
        .collect();
    leaktop(&child.socket_dir, &all)
}

#[test]
fn check_without_for_sees_the_growth_from_before_it_attached_and_names_the_site() {
    let leaky = start(false);
    let fixed = start(true);
    // Let both grow (or not) for a while before anything attaches.
    for c in [&leaky, &fixed] {
        wait_for_uptime(&c.socket_dir, c.pid(), Duration::from_millis(3500));
    }

    let out = run(
        &leaky,
        &[&["check", "_", "--format", "json"], FAST].concat()[..],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let v = json(&out);
    assert_eq!(
        (v["schema"].as_str(), v["result"].as_str()),
        (Some("leaktop.check"), Some("leak"))
    );
    // One attach, one snapshot: seconds of data can only have come from the history.
    assert!(v["observed_ms"].as_u64().unwrap() >= 3000, "{v:#}");
    let findings = v["findings"].as_array().unwrap();
    assert_eq!(findings.len(), 1, "only the request site: {v:#}");
    let f = &findings[0];
    let (file, line, col) = location_of(SRC, "// site: request", "leaktop_agent::spawn");
    assert_eq!(f["verdict"], "leak");
    assert_eq!(
        (
            f["site"]["file"].as_str(),
            f["site"]["line"].as_u64(),
            f["site"]["column"].as_u64()
        ),
        (Some(file.as_str()), Some(line as u64), Some(col as u64)),
        "{f:#}"
    );
    let rate = f["rate_per_min"].as_f64().unwrap();
    assert!(rate > 100.0, "~600/min expected: {f:#}");
    let evidence = f["evidence"].to_string();
    assert!(evidence.contains("live tasks rose from"), "{evidence}");
    assert!(evidence.contains("tasks are idle"), "{evidence}");

    // The text form names the site the same way.
    let text = run(&leaky, &[&["check", "_"], FAST].concat()[..]);
    assert_eq!(text.status.code(), Some(1));
    let text = stdout(&text);
    assert!(text.starts_with("LEAK in 1 site of pid"), "{text}");
    assert!(
        text.contains(&format!("LEAK {file}:{line}:{col}: ")),
        "{text}"
    );

    // The fixed twin: same program, same thresholds, nothing to report.
    let out = run(
        &fixed,
        &[&["check", "_", "--format", "json"], FAST].concat()[..],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let v = json(&out);
    assert_eq!(v["result"], "ok");
    assert_eq!(v["findings"].as_array().map(Vec::len), Some(0), "{v:#}");
}

#[test]
fn check_for_watches_live_and_dump_shows_verdicts_and_deltas() {
    let leaky = start(false);

    let out = run(
        &leaky,
        &[
            "check",
            "_",
            "--for",
            "2s",
            "--window",
            "2s",
            "--min-age",
            "500ms",
        ],
    );
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let (file, line, col) = location_of(SRC, "// site: request", "leaktop_agent::spawn");
    assert!(
        stdout(&out).contains(&format!("LEAK {file}:{line}:{col}: ")),
        "{}",
        stdout(&out)
    );

    let out = run(
        &leaky,
        &[&["dump", "_", "--format", "json", "--baseline", "1s"], FAST].concat()[..],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let v = json(&out);
    let site = v["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"]["line"] == line && s["site"]["file"] == file.as_str())
        .unwrap_or_else(|| panic!("request site missing: {v:#}"))
        .clone();
    assert_eq!(site["verdict"], "leak", "{site:#}");
    assert!(site["rate_per_min"].as_f64().unwrap() > 100.0, "{site:#}");
    let delta = site["delta"]["live"].as_i64().unwrap();
    // ~10 a second (a starved child catches up in bursts, hence the slack).
    assert!((1..=30).contains(&delta), "{site:#}");
    assert_eq!(v["baseline"]["ago_ms"], 1000);
    // Healthy neighbours: no verdict.
    let workers = location_of(SRC, "// site: workers", "leaktop_agent::spawn");
    let w = v["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["site"]["line"] == workers.1)
        .unwrap();
    assert_eq!(
        (w["live"].as_u64(), w["verdict"].as_str()),
        (Some(5), Some("none"))
    );

    let text = stdout(&run(&leaky, &[&["dump", "_"], FAST].concat()[..]));
    assert!(
        text.contains("verdicts: 1 leak, 0 stuck, 0 growing"),
        "{text}"
    );
    assert!(
        text.contains(&format!("@ {file}:{line}:{col}  [LEAK, +")),
        "{text}"
    );
}

#[test]
fn check_is_inconclusive_without_enough_data_or_without_an_agent() {
    let leaky = start(false);
    // Asking for growth over ten minutes of a process up for a second.
    let out = run(&leaky, &["check", "_", "--window", "10m"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    assert!(text.contains("could not check: only"), "{text}");
    assert!(text.contains("run with --for"), "{text}");

    let me = std::process::id().to_string();
    let out = leaktop(&socket_dir(), &["check", &me]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("has no leaktop agent socket"),
        "{}",
        stderr(&out)
    );

    let out = leaktop(&socket_dir(), &["check", &me, "--for", "5 parsecs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid duration"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn blocked_channel_leak_is_flagged_with_the_channel_as_evidence_and_its_fixed_twin_is_not() {
    let bin = fixture_bin("growth", Profile::Debug);
    let env = &[("LEAKTOP_SAMPLE_MS", "100")];
    let mut leaky = spawn_child_env(&bin, &["--chan"], env);
    let mut fixed = spawn_child_env(&bin, &["--chan", "--fixed"], env);
    // One request at start, then none: a fixed set of stuck tasks, not a growing one.
    let mut once = spawn_child_env(&bin, &["--chan", "--tick-ms", "3600000"], env);
    for c in [&mut leaky, &mut fixed, &mut once] {
        c.wait_ready();
    }
    for c in [&leaky, &fixed, &once] {
        wait_for_uptime(&c.socket_dir, c.pid(), Duration::from_millis(3500));
    }

    let out = run(&leaky, &[&["check", "_"], FAST].concat()[..]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let text = stdout(&out);
    let (file, line, col) = location_of(SRC, "// site: chan_request", "leaktop_agent::spawn");
    let chan = location_of(
        SRC,
        "// site: reply_channel",
        "leaktop_agent::sync::oneshot::channel",
    );
    assert!(
        text.contains(&format!("LEAK {file}:{line}:{col}: ")),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "tasks blocked in chan recv at {file}:{}:",
            location_of(SRC, "// site: reply_wait", "rx").1
        )),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "on a oneshot channel created at {}:{}:{}",
            chan.0, chan.1, chan.2
        )),
        "{text}"
    );
    assert!(
        text.contains("its sender is alive but has never sent"),
        "{text}"
    );

    let out = run(
        &fixed,
        &[&["check", "_", "--fail-on", "growing"], FAST].concat()[..],
    );
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );

    // The lone stuck task is reported, but fails the check only with --fail-on stuck.
    let stuck = &[&["check", "_", "--stuck-age", "2s"], FAST].concat()[..];
    let out = run(&once, stuck);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains("(not failing the check)"),
        "{}",
        stdout(&out)
    );
    let out = run(&once, &[stuck, &["--fail-on", "stuck"]].concat()[..]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    assert!(
        stdout(&out).contains(&format!("STUCK {file}:{line}:{col}: 1 live")),
        "{}",
        stdout(&out)
    );
}
