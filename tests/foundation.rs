//! End to end: a real child links the agent; the real `leaktop` binary lists it and
//! dumps its task table with exact sites and counts; after the child dies, both say so.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use common::*;

const SRC: &str = "tests/fixtures/src/bin/spawn_sites.rs";

fn site(v: &serde_json::Value, loc: &(String, u32, u32)) -> serde_json::Value {
    v["sites"]
        .as_array()
        .expect("sites")
        .iter()
        .find(|s| {
            s["site"]["file"] == loc.0.as_str()
                && s["site"]["line"] == loc.1
                && s["site"]["column"] == loc.2
        })
        .unwrap_or_else(|| panic!("site {loc:?} missing in {v:#}"))
        .clone()
}

#[test]
fn list_and_dump_show_exact_sites_and_counts_then_report_the_exit() {
    let bin = fixture_bin("spawn_sites", Profile::Debug);
    let mut child = spawn_child(&bin, &["30", "20", "10"]);
    child.wait_ready();
    let pid = child.pid().to_string();

    // Socket and directory modes.
    let sock = agent_socket(&child.socket_dir, child.pid());
    let dir_mode = std::fs::metadata(&child.socket_dir)
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    let sock_mode = std::fs::metadata(&sock).unwrap().permissions().mode() & 0o777;
    assert_eq!((dir_mode, sock_mode), (0o700, 0o600));

    let list = leaktop(&child.socket_dir, &["list"]);
    assert!(list.status.success(), "{}", stderr(&list));
    let row = stdout(&list)
        .lines()
        .find(|l| l.split_whitespace().next() == Some(pid.as_str()))
        .unwrap_or_else(|| panic!("pid {pid} not listed:\n{}", stdout(&list)))
        .to_string();
    assert!(row.contains("spawn_sites"), "{row}");
    assert_eq!(row.split_whitespace().nth(2), Some("50"), "{row}");

    let dump = leaktop(&child.socket_dir, &["dump", &pid, "--format", "json"]);
    assert!(dump.status.success(), "{}", stderr(&dump));
    let v: serde_json::Value = serde_json::from_slice(&dump.stdout).expect("json");
    assert_eq!(v["schema"], "leaktop.dump");
    assert_eq!(v["version"], 1);
    assert_eq!(v["process"]["pid"], child.pid());
    let a = site(
        &v,
        &location_of(SRC, "// site: never_a", "leaktop_agent::spawn"),
    );
    let b = site(
        &v,
        &location_of(SRC, "// site: never_b", "leaktop_agent::spawn"),
    );
    let f = site(
        &v,
        &location_of(SRC, "// site: finishing", "leaktop_agent::spawn"),
    );
    assert_eq!(
        (
            a["live"].as_u64(),
            a["spawned"].as_u64(),
            a["completed"].as_u64()
        ),
        (Some(30), Some(30), Some(0))
    );
    assert_eq!(
        (
            b["live"].as_u64(),
            b["spawned"].as_u64(),
            b["completed"].as_u64()
        ),
        (Some(20), Some(20), Some(0))
    );
    assert_eq!(
        (
            f["live"].as_u64(),
            f["spawned"].as_u64(),
            f["completed"].as_u64()
        ),
        (Some(0), Some(10), Some(10))
    );
    assert_eq!(v["totals"]["live"], 50);

    let text = leaktop(&child.socket_dir, &["dump", &pid]);
    let text = stdout(&text);
    let (file, line, col) = location_of(SRC, "// site: never_a", "leaktop_agent::spawn");
    assert!(
        text.contains(&format!(
            "30 live (30 spawned, 0 done) @ {file}:{line}:{col}"
        )),
        "{text}"
    );
    // Most live first.
    let pos_a = text.find("30 live").unwrap();
    let pos_b = text.find("20 live").unwrap();
    assert!(pos_a < pos_b, "{text}");

    child.kill();
    let gone = eventually(Duration::from_secs(5), || {
        let l = leaktop(&child.socket_dir, &["list"]);
        (!stdout(&l)
            .lines()
            .any(|r| r.split_whitespace().next() == Some(pid.as_str())))
        .then_some(())
    });
    assert!(gone.is_some(), "killed child still listed");
    let dump = leaktop(&child.socket_dir, &["dump", &pid]);
    assert_eq!(dump.status.code(), Some(2));
    let err = stderr(&dump);
    assert!(
        err.contains(&format!("process {pid} does not exist")),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn dump_of_a_process_without_agent_says_what_to_do() {
    let me = std::process::id().to_string();
    let dir = socket_dir();
    let out = leaktop(&dir, &["dump", &me]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains(&format!("process {me} has no leaktop agent socket")),
        "{err}"
    );
    assert!(err.contains("leaktop_agent::start()"), "{err}");
}

#[test]
fn stale_socket_is_skipped_by_list_and_explained_with_verbose() {
    let dir = socket_dir();
    // A socket file of a pid that cannot exist.
    let stale = dir.join("4194304.sock");
    let l = std::os::unix::net::UnixListener::bind(&stale).unwrap();
    drop(l);
    let out = leaktop(&dir, &["list", "-v"]);
    assert!(out.status.success());
    assert!(!stdout(&out).contains("4194304"));
    assert!(stderr(&out).contains("stale socket"), "{}", stderr(&out));
}

#[test]
fn demo_once_runs_and_exits_zero() {
    let dir = socket_dir();
    let out = leaktop(&dir, &["demo", "--once", "--warmup", "0.5"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stdout(&out).contains("live ("), "{}", stdout(&out));
}
