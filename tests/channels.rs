//! End to end: a real child blocks tasks in every blocking operation of every instrumented
//! channel kind; `leaktop dump --format json` shows them in exact groups (op, blocking call
//! site, channel creation site, count), and unblocking, cancelling (select! drops the
//! future) and aborting each clear exactly their share.

mod common;

use std::time::Duration;

use common::*;
use serde_json::Value;

const SRC: &str = "tests/fixtures/src/bin/channels.rs";
/// Tasks per mode per scenario in the fixture.
const N: u64 = 2;

struct Scenario {
    name: &'static str,
    /// The call expression the blocking call site points into (the method name, as
    /// `#[track_caller]` reports a method call).
    call: &'static str,
    op: &'static str,
    kind: &'static str,
    send_like: bool,
}

const fn sc(
    name: &'static str,
    call: &'static str,
    op: &'static str,
    kind: &'static str,
    send_like: bool,
) -> Scenario {
    Scenario {
        name,
        call,
        op,
        kind,
        send_like,
    }
}

const SCENARIOS: &[Scenario] = &[
    sc("mpsc_send", "send(", "send", "mpsc", true),
    sc("mpsc_reserve", "reserve(", "reserve", "mpsc", true),
    sc(
        "reserve_many_mpsc",
        "reserve_many(",
        "reserve",
        "mpsc",
        true,
    ),
    sc(
        "reserve_owned_mpsc",
        "reserve_owned(",
        "reserve",
        "mpsc",
        true,
    ),
    sc("send_timeout_mpsc", "send_timeout(", "send", "mpsc", true),
    sc("recv_many_mpsc", "recv_many(", "recv", "mpsc", false),
    sc(
        "poll_recv_mpsc",
        "poll_recv(",
        "recv",
        "unbounded mpsc",
        false,
    ),
    sc("mpsc_recv", "recv(", "recv", "mpsc", false),
    sc("mpsc_closed", "closed(", "closed", "mpsc", false),
    sc("unbounded_recv", "recv(", "recv", "unbounded mpsc", false),
    sc(
        "unbounded_closed",
        "closed(",
        "closed",
        "unbounded mpsc",
        false,
    ),
    sc("oneshot_recv", "tokio::select!", "recv", "oneshot", false),
    sc("oneshot_closed", "closed(", "closed", "oneshot", false),
    sc("broadcast_recv", "recv(", "recv", "broadcast", false),
    sc("broadcast_closed", "closed(", "closed", "broadcast", false),
    sc("watch_changed", "changed(", "changed", "watch", false),
    sc("watch_wait_for", "wait_for(", "changed", "watch", false),
    sc("watch_closed", "closed(", "closed", "watch", false),
    sc("uninstrumented_recv", "recv(", "recv", "mpsc", false),
];

fn loc_json(l: &(String, u32, u32)) -> Value {
    serde_json::json!({ "file": l.0, "line": l.1, "column": l.2 })
}

fn channel_ctor(s: &Scenario) -> &'static str {
    match s.kind {
        _ if s.name == "poll_recv_mpsc" => "mpsc::unbounded_channel",
        "unbounded mpsc" => "mpsc::unbounded_channel",
        "mpsc" => "mpsc::channel",
        "oneshot" => "oneshot::channel",
        "broadcast" => "broadcast::channel",
        _ => "watch::channel",
    }
}

/// The row of scenario `s` in a dump.
fn site_of<'a>(dump: &'a Value, s: &Scenario) -> Option<&'a Value> {
    let sites = dump["sites"].as_array()?;
    if s.name == "uninstrumented_recv" {
        return sites.iter().find(|x| x["kind"] == "uninstrumented");
    }
    let spawn = loc_json(&location_of(
        SRC,
        &format!("// site: {}", s.name),
        "leaktop_agent::spawn",
    ));
    sites.iter().find(|x| x["site"] == spawn)
}

/// Checks that every scenario has `blocked` tasks in one exact group and `live` tasks.
fn check(dump: &Value, blocked: u64, live: u64) -> Result<(), String> {
    for s in SCENARIOS {
        let site = site_of(dump, s).ok_or_else(|| format!("{}: no site row", s.name))?;
        // Method calls are reported at the method name, path calls at the path.
        let call = location_of(SRC, &format!("// call: {}", s.name), s.call);
        let chan = location_of(SRC, &format!("// chan: {}", s.name), channel_ctor(s));
        // Outside instrumented tasks only the waits themselves are known.
        let live = if s.name == "uninstrumented_recv" {
            blocked
        } else {
            live
        };
        let (want_send, want_recv) = if s.send_like {
            (blocked, 0)
        } else {
            (0, blocked)
        };
        let got = (
            site["live"].as_u64(),
            site["blocked_send"].as_u64(),
            site["blocked_recv"].as_u64(),
        );
        if got != (Some(live), Some(want_send), Some(want_recv)) {
            return Err(format!(
                "{}: live/blocked_send/blocked_recv {got:?}, want ({live}, {want_send}, {want_recv})",
                s.name
            ));
        }
        let groups = site["groups"].as_array().cloned().unwrap_or_default();
        if blocked == 0 {
            if !groups.is_empty() {
                return Err(format!("{}: groups left: {groups:#?}", s.name));
            }
            continue;
        }
        let [g] = groups.as_slice() else {
            return Err(format!("{}: want one group, got {groups:#?}", s.name));
        };
        let want = (
            Some(blocked),
            s.op,
            s.kind,
            loc_json(&call),
            loc_json(&chan),
        );
        let got = (
            g["count"].as_u64(),
            g["op"].as_str().unwrap_or_default(),
            g["channel_kind"].as_str().unwrap_or_default(),
            g["call_site"].clone(),
            g["channel_site"].clone(),
        );
        if got != want {
            return Err(format!("{}: group {got:?}, want {want:?}", s.name));
        }
        if g["stack"]["frames"].as_array().is_none_or(|f| f.len() <= 2) {
            return Err(format!("{}: no await chain: {g:#?}", s.name));
        }
    }
    Ok(())
}

fn dump_json(child: &ChildGuard) -> Value {
    let pid = child.pid().to_string();
    let out = leaktop(&child.socket_dir, &["dump", &pid, "--format", "json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    serde_json::from_slice(&out.stdout).expect("dump is json")
}

/// Waits until every scenario shows `blocked` tasks in its group and `live` tasks.
fn expect(child: &ChildGuard, step: &str, blocked: u64, live: u64) -> Value {
    let mut last = String::new();
    let ok = eventually(Duration::from_secs(10), || {
        let dump = dump_json(child);
        match check(&dump, blocked, live) {
            Ok(()) => Some(dump),
            Err(e) => {
                last = e;
                None
            }
        }
    });
    ok.unwrap_or_else(|| panic!("after {step}: {last}"))
}

#[test]
fn blocked_tasks_show_in_exact_groups_and_each_way_out_clears_them() {
    let bin = fixture_bin("channels", Profile::Debug);
    let mut child = spawn_child_with_stdin(&bin, &[]);
    child.wait_ready();

    let dump = expect(&child, "start", 3 * N, 3 * N);
    // The channel of the oldest waiter, for one kind of each.
    let mpsc_send = &site_of(&dump, &SCENARIOS[0]).unwrap()["groups"][0]["channel"];
    assert_eq!(
        (
            mpsc_send["capacity"].as_u64(),
            mpsc_send["len"].as_u64(),
            mpsc_send["senders"].as_u64(),
            mpsc_send["receivers"].as_u64(),
            mpsc_send["closed"].as_bool(),
        ),
        (Some(1), Some(1), Some(1), Some(1), Some(false)),
        "{mpsc_send:#}"
    );
    assert!(mpsc_send["last_send_age_ms"].is_u64());
    assert!(mpsc_send["last_recv_age_ms"].is_null());

    // The text report: a Go debug=2-style group line under the site.
    let pid = child.pid().to_string();
    let text = stdout(&leaktop(&child.socket_dir, &["dump", &pid]));
    let (f, l, c) = location_of(SRC, "// call: mpsc_send", "send(");
    let (cf, cl, cc) = location_of(SRC, "// chan: mpsc_send", "mpsc::channel");
    let want = format!("{} tasks [chan send, ", 3 * N);
    let line = text
        .lines()
        .find(|x| x.contains(&want) && x.contains(&format!("at {f}:{l}:{c} ")))
        .unwrap_or_else(|| panic!("no group line for mpsc_send in:\n{text}"));
    assert!(
        line.contains("on mpsc(cap 1, len 1, 1 sender, 1 receiver")
            && line.ends_with(&format!("created at {cf}:{cl}:{cc}")),
        "{line}"
    );

    child.command("unblock");
    expect(&child, "unblock", 2 * N, 3 * N);
    child.command("cancel");
    expect(&child, "cancel", N, 3 * N);
    child.command("abort");
    // Aborted tasks are gone; unblocked and cancelled ones live on, idle.
    let dump = expect(&child, "abort", 0, 2 * N);
    let idle = site_of(&dump, &SCENARIOS[0]).unwrap()["idle"].as_u64();
    assert_eq!(idle, Some(2 * N));
}
