//! Smoke test of the benchmarks behind scripts/bench.sh: every workload of tests/bench
//! (spawn storm, ping-pong, fan-in, park, scale, attach) runs once at tiny size, plain and
//! with the agent, through the whole suite (child processes, table, JSON). Nothing is
//! timed here: speed goals live in scripts/bench.sh. The console-subscriber variant is
//! left to bench.sh (its build is too slow for the suite).

mod common;

use std::process::Command;

use common::workspace_root;

/// Builds the bench binary (debug) in the fixtures' target dir, so the build never waits
/// on the lock of the build that runs the tests.
fn bench_bin() -> std::path::PathBuf {
    let target = workspace_root().join("target/fixtures");
    let status = Command::new(env!("CARGO"))
        .current_dir(workspace_root())
        .args([
            "build",
            "--quiet",
            "-p",
            "leaktop-bench",
            "--bin",
            "leaktop-bench",
        ])
        .env("CARGO_TARGET_DIR", &target)
        .status()
        .expect("run cargo build for leaktop-bench");
    assert!(status.success(), "building leaktop-bench failed");
    target.join("debug/leaktop-bench")
}

#[test]
fn every_bench_workload_runs_once_at_tiny_size() {
    let bin = bench_bin();
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("overhead.json");
    let out = Command::new(&bin)
        .args(["suite", "--quick", "--variants", "plain,agent", "--leaktop"])
        .arg(env!("CARGO_BIN_EXE_leaktop"))
        .arg("--out")
        .arg(&json)
        .output()
        .expect("run leaktop-bench");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    // 0: goals met, 1: goals missed (expected of a debug build at tiny sizes), 2: error.
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "leaktop-bench suite failed ({}):\n{stdout}\n{stderr}",
        out.status
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).expect("results JSON written"))
            .expect("results JSON parses");
    let rows = doc["rows"].as_array().expect("rows");
    let has = |workload: &str, metric: &str, variant: &str| {
        rows.iter()
            .any(|r| r["workload"] == workload && r["metric"] == metric && r["variant"] == variant)
    };
    for (workload, metric) in [
        ("spawn", "ns_per_task"),
        ("ping-pong", "ns_per_round_trip"),
        ("fan-in", "ns_per_message"),
        ("park", "ns_per_task"),
        ("park", "rss_bytes_per_task"),
        ("scale", "rss_bytes_per_task"),
    ] {
        for variant in ["plain", "agent"] {
            assert!(
                has(workload, metric, variant),
                "no {workload}/{metric}/{variant} row:\n{stdout}"
            );
        }
    }
    for metric in ["snapshot_ms", "update_bytes", "blocked_groups"] {
        assert!(
            has("scale", metric, "agent"),
            "no scale/{metric}:\n{stdout}"
        );
    }
    assert!(
        has("attach", "dump_ms", "agent"),
        "no attach row:\n{stdout}"
    );
    // The scale workload's tasks come from 50 spawn sites: 50 blocked groups.
    let groups = rows
        .iter()
        .find(|r| r["workload"] == "scale" && r["metric"] == "blocked_groups")
        .and_then(|r| r["median"].as_f64());
    assert_eq!(groups, Some(50.0), "{stdout}");
    // The ratio column is computed against plain tokio from the same run.
    assert!(
        rows.iter()
            .any(|r| r["variant"] == "agent" && r["ratio_to_plain"].is_number()),
        "{stdout}"
    );
    assert!(stdout.contains("leaktop-agent"), "no table:\n{stdout}");
}
