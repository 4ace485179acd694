//! Plain `tokio::spawn` coverage: a child built with `--cfg tokio_unstable` and the agent's
//! `tokio-hooks` feature spawns through a library-like module that knows nothing of
//! leaktop; `leaktop dump --format json` counts those tasks per spawn site exactly, counts
//! the agent's own instrumented tasks once, and is not disturbed by `spawn_blocking`.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const SRC: &str = "tests/fixtures/src/bin/hooks.rs";

fn counts(v: &Value, marker: &str, call: &str) -> Option<(u64, u64, u64)> {
    let (file, line, column) = location_of(SRC, marker, call);
    let s = v["sites"].as_array()?.iter().find(|s| {
        s["site"]["file"] == file.as_str()
            && s["site"]["line"] == line
            && s["site"]["column"] == column
    })?;
    Some((
        s["live"].as_u64()?,
        s["spawned"].as_u64()?,
        s["completed"].as_u64()?,
    ))
}

#[test]
fn plain_tokio_spawn_tasks_are_counted_per_site_through_runtime_hooks() {
    let bin = fixture_bin_unstable("hooks", "hooks");
    let mut child = spawn_child(&bin, &["12", "30", "7"]);
    child.wait_ready();
    let pid = child.pid().to_string();
    let want = [
        ("// site: workers", "tokio::spawn", (12, 12, 0)),
        ("// site: jobs", "tokio::spawn", (0, 30, 30)),
        ("// site: supervisor", "tokio::spawn", (0, 1, 1)),
        ("// site: nested", "tokio::spawn", (7, 7, 0)),
        ("// site: instrumented", "leaktop_agent::spawn", (5, 5, 0)),
    ];
    let mut last = String::new();
    // A finished task's terminate hook runs just after its JoinHandle wakes: wait for
    // the counts to settle.
    let ok = eventually(Duration::from_secs(20), || {
        let out = leaktop(&child.socket_dir, &["dump", &pid, "--format", "json"]);
        if !out.status.success() {
            last = stderr(&out);
            return None;
        }
        let v: Value = serde_json::from_slice(&out.stdout).ok()?;
        last = format!("{v:#}");
        let got: Vec<_> = want.iter().map(|(m, c, _)| counts(&v, m, c)).collect();
        let all: Vec<_> = want.iter().map(|w| Some(w.2)).collect();
        (got == all).then_some(v)
    });
    let v = ok.unwrap_or_else(|| panic!("counts never matched {want:?}:\n{last}"));
    assert_eq!(v["totals"]["live"], 12 + 7 + 5, "{v:#}");
    // Hooked tasks have an age: the oldest worker is as old as the process's tasks.
    let (f, l, c) = location_of(SRC, "// site: workers", "tokio::spawn");
    let workers = v["sites"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| {
            s["site"]["file"] == f.as_str() && s["site"]["line"] == l && s["site"]["column"] == c
        })
        .unwrap();
    assert!(workers["oldest_live_age_ms"].is_u64(), "{workers:#}");
    // No row for spawn_blocking (no spawn hook) and nothing negative anywhere.
    for s in v["sites"].as_array().unwrap() {
        assert!(
            s["live"].is_u64() && s["spawned"].as_u64() >= s["completed"].as_u64(),
            "{s:#}"
        );
        assert!(
            s["spawned"].as_u64() > Some(0) || s["kind"] != "spawn",
            "{s:#}"
        );
    }
}

#[test]
fn leak_checks_see_plain_spawned_tasks_of_the_scope() {
    let bin = fixture_bin_unstable("hooks", "hooks");
    let out = std::process::Command::new(&bin)
        .arg("testing")
        .output()
        .expect("run the hooks fixture");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(text.contains("checked"), "{text}{}", stderr(&out));
    let (f, l, c) = location_of(SRC, "// site: workers", "tokio::spawn");
    let site = format!("{f}:{l}:{c}");
    assert!(text.contains("leaktop: 2 leaked tasks"), "{text}");
    assert_eq!(
        text.lines()
            .filter(|line| line.contains(&format!("spawned at {site}, state unknown")))
            .count(),
        2,
        "{text}"
    );
    assert!(text.contains("task tokio:"), "{text}");
}
