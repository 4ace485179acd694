//! The deadlock fixture (two tasks, two mutexes, opposite order) in a real child process:
//! `leaktop dump` shows each task waiting in `mutex lock` at its second `lock()` on the
//! mutex the other holds, both creation sites named. (The cycle itself travels in
//! protocol 2's `SnapshotV2::locks`, checked on the agent side by
//! `sync::lock_tests::two_tasks_taking_two_mutexes_in_opposite_order_show_a_wait_cycle`.)

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const SRC: &str = "tests/fixtures/src/bin/deadlock.rs";

fn line(marker: &str) -> u64 {
    let text = std::fs::read_to_string(workspace_root().join(SRC)).expect("read");
    text.lines()
        .position(|l| l.contains(marker))
        .map(|i| i as u64 + 1)
        .unwrap_or_else(|| panic!("no {marker} in {SRC}"))
}

/// `(call line, mutex creation line)` of every `lock` group in the dump.
fn lock_waits(dump: &Value) -> Vec<(u64, u64)> {
    let mut v: Vec<(u64, u64)> = dump["sites"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|s| s["groups"].as_array().cloned().unwrap_or_default())
        .filter(|g| g["op"] == "lock" && g["channel_kind"] == "Mutex")
        .filter_map(|g| {
            Some((
                g["call_site"]["line"].as_u64()?,
                g["channel_site"]["line"].as_u64()?,
            ))
        })
        .collect();
    v.sort();
    v
}

#[test]
#[ignore = "until leaktop folds protocol 2 (issue 16, branch waits): its protocol-1 view has no lock waits"]
fn deadlocked_tasks_show_waiting_on_each_others_mutex() {
    let bin = fixture_bin("deadlock", Profile::Debug);
    let mut child = spawn_child(&bin, &[]);
    child.wait_ready();
    let mut want = vec![
        (line("// waits: a"), line("// lock: second")),
        (line("// waits: b"), line("// lock: first")),
    ];
    want.sort();
    let pid = child.pid().to_string();
    let mut last = Vec::new();
    let ok = eventually(Duration::from_secs(20), || {
        let out = leaktop(&child.socket_dir, &["dump", &pid, "--format", "json"]);
        assert!(out.status.success(), "{}", stderr(&out));
        let dump: Value = serde_json::from_slice(&out.stdout).expect("json");
        last = lock_waits(&dump);
        (last == want).then_some(())
    });
    assert!(ok.is_some(), "lock waits {last:?}, want {want:?}");
}
