//! Migrating a tokio program to leaktop_agent is a change of `use` lines (issue 17): the
//! fixture `migrate_tokio` (written against tokio::sync, tokio::task, tokio::runtime,
//! tokio-stream's wrappers and tokio-util's PollSender) runs as it is, then `sed` rewrites
//! its `use` lines and nothing else; the result compiles, runs in a real child process, and
//! `leaktop dump` shows every one of its waits: op, resource kind and the waiting line.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use serde_json::Value;

const SRC: &str = "tests/fixtures/src/bin/migrate_tokio.rs";

/// What a user runs: one `sed` over the `use` lines.
const SED: &[&str] = &[
    "-E",
    "-e",
    r"s/^use tokio::(sync|task|runtime)::/use leaktop_agent::\1::/",
    "-e",
    r"s/^use tokio_stream::wrappers::/use leaktop_agent::stream::wrappers::/",
    "-e",
    r"s/^use tokio_util::sync::/use leaktop_agent::util::sync::/",
];

/// `(line, op, kind)` of every `// wait: OP KIND` marker in `text`.
fn expected_waits(text: &str) -> Vec<(u64, String, String)> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim_start().starts_with("//"))
        .filter_map(|(i, l)| {
            let m = l.split("// wait: ").nth(1)?;
            let mut w = m.split_whitespace();
            Some((i as u64 + 1, w.next()?.to_owned(), w.next()?.to_owned()))
        })
        .collect()
}

/// Builds the migrated program as a crate of its own (outside the workspace), with the
/// workspace's lockfile and the fixtures' target dir, so only the program itself compiles.
fn build_migrated(source: &str) -> PathBuf {
    let root = workspace_root();
    let dir = root.join("target").join("migrated-program");
    std::fs::create_dir_all(dir.join("src")).expect("mkdir");
    std::fs::write(dir.join("src/main.rs"), source).expect("write source");
    let path = |p: &str| root.join(p).display().to_string();
    let manifest = format!(
        r#"[package]
name = "migrated"
version = "0.0.0"
edition = "2021"
publish = false

[workspace]

[dependencies]
leaktop-agent = {{ path = {agent:?}, features = ["stream"] }}
leaktop-fixtures = {{ path = {fixtures:?} }}
tokio = {{ version = "1.47", features = ["rt-multi-thread", "time", "macros", "sync"] }}
futures-util = {{ version = "0.3", default-features = false, features = ["sink"] }}
"#,
        agent = path("agent"),
        fixtures = path("tests/fixtures"),
    );
    std::fs::write(dir.join("Cargo.toml"), manifest).expect("write manifest");
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).expect("copy lockfile");
    let target = fixtures_target_dir();
    let out = Command::new(env!("CARGO"))
        .current_dir(&dir)
        .args(["build", "--quiet", "--offline"])
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run cargo build");
    assert!(
        out.status.success(),
        "the migrated program does not compile:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target.join("debug").join("migrated")
}

fn dump(child: &ChildGuard) -> Value {
    let pid = child.pid().to_string();
    let out = leaktop(&child.socket_dir, &["dump", &pid, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("dump is json")
}

fn groups(dump: &Value) -> Vec<Value> {
    dump["sites"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["groups"].as_array().cloned().unwrap_or_default())
        .collect()
}

/// The expected waits that no group of `dump` shows.
fn missing(dump: &Value, want: &[(u64, String, String)]) -> Vec<(u64, String, String)> {
    let groups = groups(dump);
    want.iter()
        .filter(|(line, op, kind)| {
            !groups.iter().any(|g| {
                g["op"] == op.as_str()
                    && g["channel_kind"] == kind.as_str()
                    && g["call_site"]["line"].as_u64() == Some(*line)
            })
        })
        .cloned()
        .collect()
}

fn run_until_ready(bin: &Path) -> ChildGuard {
    let mut child = spawn_child(bin, &[]);
    child.wait_ready();
    child
}

#[test]
#[ignore = "until leaktop folds protocol 2 (issue 16, branch waits): its protocol-1 view has no sync waits"]
fn a_tokio_program_moved_over_by_sed_on_its_use_lines_compiles_runs_and_shows_its_waits() {
    let original = std::fs::read_to_string(workspace_root().join(SRC)).expect("read");
    let want = expected_waits(&original);
    assert!(want.len() >= 16, "markers: {want:?}");

    // As written for tokio: it runs, and its waits are invisible.
    let tokio_bin = fixture_bin("migrate_tokio", Profile::Debug);
    let child = run_until_ready(&tokio_bin);
    let before = dump(&child);
    assert_eq!(missing(&before, &want), want, "{before:#}");
    drop(child);

    // sed on the use lines, and nothing else changes.
    let out = Command::new("sed")
        .args(SED)
        .arg(workspace_root().join(SRC))
        .output()
        .expect("run sed");
    assert!(out.status.success(), "sed: {}", stderr(&out));
    let migrated = String::from_utf8(out.stdout).expect("utf-8");
    let changed: Vec<(&str, &str)> = original
        .lines()
        .zip(migrated.lines())
        .filter(|(a, b)| a != b)
        .collect();
    assert!(changed.len() >= 5, "{changed:#?}");
    assert!(
        changed
            .iter()
            .all(|(a, b)| a.starts_with("use ") && b.starts_with("use ")),
        "{changed:#?}"
    );
    assert_eq!(original.lines().count(), migrated.lines().count());

    let bin = build_migrated(&migrated);
    let child = run_until_ready(&bin);
    let mut last = Value::Null;
    let ok = eventually(Duration::from_secs(20), || {
        last = dump(&child);
        missing(&last, &want).is_empty().then_some(())
    });
    assert!(
        ok.is_some(),
        "waits not shown after the migration: {:?}\ngroups: {:#}",
        missing(&last, &want),
        Value::Array(groups(&last))
    );
}
