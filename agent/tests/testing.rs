//! `leaktop_agent::testing` as a test author meets it. The failing cases run as child
//! processes of this same test binary (the `child_*` tests, ignored in normal runs), so the
//! outer tests can assert on the failure text and the exit status.

use std::future::pending;
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Barrier, OnceLock};
use std::time::{Duration, Instant};

use leaktop_agent::sync::{mpsc, oneshot};
use leaktop_agent::testing::{self, Options, TaskState};

/// A runtime shared by the tests of this binary; it never shuts down, so a task leaked on
/// it stays alive for the rest of the process.
fn rt() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Runs the ignored tests of this binary that match `filter` in a child process.
fn run_children(filter: &str, exact: bool, threads: usize) -> Output {
    let mut cmd = Command::new(std::env::current_exe().expect("current exe"));
    cmd.args([
        "--ignored",
        "--nocapture",
        "--test-threads",
        &threads.to_string(),
    ]);
    if exact {
        cmd.arg("--exact");
    }
    cmd.arg(filter);
    cmd.output().expect("run the test binary")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `file:line:column` of `call` on the line of this file that carries `marker`, or on
/// the line above it (for a marker comment on the first line of a block).
fn site_of(marker: &str, call: &str) -> String {
    let src: Vec<&str> = include_str!("testing.rs").lines().collect();
    let tag = format!("// marker: {marker}");
    let at = src
        .iter()
        .position(|l| l.ends_with(&tag))
        .unwrap_or_else(|| panic!("marker {marker} not found"));
    let (i, col) = [at, at.saturating_sub(1)]
        .into_iter()
        .find_map(|i| src[i].find(call).map(|c| (i, c + 1)))
        .unwrap_or_else(|| panic!("{call} not at marker {marker}"));
    format!("{}:{}:{}", file!(), i + 1, col)
}

// ---------------------------------------------------------------------------------------
// Child tests: run only by the outer tests below.

#[inline(never)]
fn forgotten_sender() {
    let (tx, rx) = mpsc::channel::<u32>(1); // marker: chan of the forgotten sender
    leaktop_agent::spawn(async move {
        // marker: spawn of the forgotten sender
        // Fills the channel, then blocks: nobody ever receives.
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap(); // marker: blocking send
    });
    // The receiver lives on, unread, for the rest of the process.
    std::mem::forget(rx);
}

#[test]
#[ignore = "child: leaks on purpose; run by leaked_task_fails_the_test_naming_sites"]
fn child_leaks() {
    let _enter = rt().enter();
    let _guard = Options::new().deadline(Duration::from_millis(200)).guard();
    forgotten_sender();
    leaktop_agent::spawn(pending::<()>()); // marker: idle leak
    let (done_tx, done_rx) = oneshot::channel::<()>();
    leaktop_agent::spawn(async move {
        // marker: finishes in time
        let _ = done_rx.await;
    });
    std::thread::sleep(Duration::from_millis(20));
    let _ = done_tx.send(());
}

#[test]
#[ignore = "child: leaks on a current-thread runtime; run by leaked_task_fails_the_test_naming_sites"]
fn child_current_thread_drop() {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(async {
            let _guard = testing::guard();
            leaktop_agent::spawn(pending::<()>()); // marker: current-thread leak
        });
}

static BARRIER: OnceLock<Barrier> = OnceLock::new();
static LEAKY_CHECKED: AtomicBool = AtomicBool::new(false);

fn barrier() -> &'static Barrier {
    BARRIER.get_or_init(|| Barrier::new(2))
}

#[test]
#[ignore = "child: runs beside child_parallel_clean; run by parallel_tests_see_only_their_own_tasks"]
fn child_parallel_leaky() {
    let _enter = rt().enter();
    let guard = Options::new().deadline(Duration::from_millis(300)).guard();
    leaktop_agent::spawn(pending::<()>()); // marker: parallel leak
    barrier().wait();
    let result = guard.verify();
    LEAKY_CHECKED.store(true, Ordering::SeqCst);
    if let Err(leaks) = result {
        panic!("{leaks}");
    }
}

#[test]
#[ignore = "child: runs beside child_parallel_leaky; run by parallel_tests_see_only_their_own_tasks"]
fn child_parallel_clean() {
    let _enter = rt().enter();
    let guard = Options::new().deadline(Duration::from_millis(300)).guard();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let task = leaktop_agent::spawn(async move {
        // marker: parallel clean task
        let _ = stop_rx.await;
    });
    barrier().wait();
    // Alive through the whole check of the leaky test.
    let start = Instant::now();
    while !LEAKY_CHECKED.load(Ordering::SeqCst) {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "leaky test never checked"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    stop_tx.send(()).unwrap();
    rt().block_on(task).unwrap();
    // The leaky test's task is still alive in this process: not ours.
    guard
        .verify()
        .expect("the clean test sees only its own tasks");
}

#[test]
#[ignore = "child: process-wide check; run by all_tasks_with_ignore_current"]
fn child_all_tasks() {
    let _enter = rt().enter();
    // A task from "before the test", spawned outside any scope.
    leaktop_agent::spawn(pending::<()>()); // marker: before the guard
    let guard = Options::new()
        .all_tasks()
        .ignore_current()
        .deadline(Duration::from_millis(200))
        .guard();
    let (tx, rx) = oneshot::channel::<()>();
    let t = leaktop_agent::spawn(async move {
        let _ = rx.await;
    });
    tx.send(()).unwrap();
    rt().block_on(t).unwrap();
    guard
        .verify()
        .expect("the task from before the guard is ignored");

    // Without ignore_current, a process-wide check sees it.
    let leaks = Options::new()
        .all_tasks()
        .deadline(Duration::from_millis(100))
        .verify()
        .expect_err("the task from before the guard is seen");
    println!("ALL-TASKS: {leaks}");
}

// ---------------------------------------------------------------------------------------
// Outer tests.

#[test]
fn leaked_task_fails_the_test_naming_sites() {
    let out = run_children("child_leaks", true, 1);
    let t = text(&out);
    assert!(!out.status.success(), "the leaky test passed:\n{t}");
    assert!(t.contains("leaktop: 2 leaked tasks"), "{t}");
    let spawn = site_of("spawn of the forgotten sender", "leaktop_agent::spawn");
    let send = site_of("blocking send", "send(");
    let chan = site_of("chan of the forgotten sender", "mpsc::channel");
    let blocked = t
        .lines()
        .find(|l| l.contains(&spawn))
        .unwrap_or_else(|| panic!("spawn site {spawn} missing:\n{t}"));
    assert!(
        blocked.contains(&format!(
            "blocked in chan send at {send} on a mpsc channel created at {chan}"
        )),
        "{blocked}"
    );
    assert!(t.contains("spawned by testing::forgotten_sender"), "{t}");
    let idle = site_of("idle leak", "leaktop_agent::spawn");
    let idle_line = t
        .lines()
        .find(|l| l.contains(&idle))
        .unwrap_or_else(|| panic!("idle site {idle} missing:\n{t}"));
    // `pending()` registers no waker: the agent knows nothing can wake it.
    assert!(
        idle_line.contains(", pending forever (no waker registered), age "),
        "{idle_line}"
    );
    let fine = site_of("finishes in time", "leaktop_agent::spawn");
    assert!(!t.contains(&fine), "a finished task was listed:\n{t}");

    // In a current-thread runtime the guard checks at once and says why.
    let out = run_children("child_current_thread_drop", true, 1);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains(&site_of("current-thread leak", "leaktop_agent::spawn")),
        "{t}"
    );
    assert!(t.contains("guard.finish().await"), "{t}");
}

#[test]
fn parallel_tests_see_only_their_own_tasks() {
    let out = run_children("child_parallel_", false, 2);
    let t = text(&out);
    assert!(t.contains("test child_parallel_clean ... ok"), "{t}");
    assert!(t.contains("test child_parallel_leaky ... FAILED"), "{t}");
    assert!(t.contains("leaktop: 1 leaked task "), "{t}");
    assert!(
        t.contains(&site_of("parallel leak", "leaktop_agent::spawn")),
        "{t}"
    );
    assert!(
        !t.contains(&site_of("parallel clean task", "leaktop_agent::spawn")),
        "the leaky test listed the clean test's task:\n{t}"
    );
}

#[test]
fn all_tasks_with_ignore_current() {
    let out = run_children("child_all_tasks", true, 1);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains(&site_of("before the guard", "leaktop_agent::spawn")),
        "{t}"
    );
}

#[test]
fn clean_test_passes_and_waits_for_finishing_tasks() {
    let _enter = rt().enter();
    let guard = testing::guard();
    let (tx, mut rx) = mpsc::channel::<u32>(1);
    for i in 0..10 {
        let tx = tx.clone();
        leaktop_agent::spawn(async move {
            tokio::time::sleep(Duration::from_millis(20)).await;
            tx.send(i).await.unwrap();
        });
    }
    drop(tx);
    // Still running when the check starts: it waits for them.
    let drain = std::thread::spawn(move || while rx.blocking_recv().is_some() {});
    guard
        .verify()
        .expect("every task finishes within the deadline");
    drain.join().unwrap();
}

#[tokio::test]
async fn finish_on_a_current_thread_runtime_lets_tasks_run() {
    let guard = testing::guard();
    let (tx, rx) = oneshot::channel::<u32>();
    leaktop_agent::spawn(async move {
        for _ in 0..3 {
            tokio::task::yield_now().await;
        }
        tx.send(7).unwrap();
    });
    // The task has not run yet; finish() yields to it.
    guard.finish().await;
    assert_eq!(rx.await.unwrap(), 7);
}

#[test]
fn ignore_current_in_a_scope_and_children_of_scoped_tasks() {
    let _enter = rt().enter();
    let outer = Options::new().deadline(Duration::from_millis(100)).guard();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (spawned_tx, spawned_rx) = std::sync::mpsc::channel::<()>();
    let long = leaktop_agent::spawn(async move {
        // A grandchild, spawned by a task of the scope: also in the scope.
        let child = leaktop_agent::spawn(async move {
            // marker: grandchild
            let _ = stop_rx.await;
        });
        spawned_tx.send(()).unwrap();
        child.await.unwrap();
    });
    spawned_rx.recv().unwrap();

    let inner = Options::new()
        .ignore_current()
        .deadline(Duration::from_millis(100))
        .guard();
    leaktop_agent::spawn(async {});
    inner
        .verify()
        .expect("tasks alive at the inner guard are ignored");

    let leaks = Options::new()
        .deadline(Duration::from_millis(50))
        .verify()
        .expect_err("the scope's tasks are seen");
    assert_eq!(leaks.tasks.len(), 2, "{leaks}");
    let grandchild = site_of("grandchild", "leaktop_agent::spawn");
    let g = leaks
        .tasks
        .iter()
        .find(|t| t.spawn_site == grandchild)
        .unwrap_or_else(|| panic!("grandchild missing: {leaks}"));
    assert_eq!(g.state, TaskState::Blocked, "{leaks}");
    let b = g.blocked.as_ref().expect("blocked on the oneshot");
    assert_eq!((b.op, b.channel), ("chan recv", "oneshot"));

    stop_tx.send(()).unwrap();
    rt().block_on(long).unwrap();
    outer.verify().expect("all done");
}

#[inline(never)]
fn spawn_from_a_vendored_helper() -> oneshot::Sender<()> {
    let (tx, rx) = oneshot::channel::<()>();
    leaktop_agent::spawn(async move {
        // marker: vendored
        let _ = rx.await;
    });
    tx
}

#[test]
fn ignore_by_site_and_by_function() {
    let _enter = rt().enter();
    let guard = Options::new().deadline(Duration::from_millis(50)).guard();
    let stop_a = spawn_from_a_vendored_helper();
    let (stop_b, rx) = oneshot::channel::<()>();
    leaktop_agent::spawn(async move {
        // marker: ignored by site
        let _ = rx.await;
    });
    let b_site = site_of("ignored by site", "leaktop_agent::spawn");
    let a_site = site_of("vendored", "leaktop_agent::spawn");

    let leaks = Options::new()
        .deadline(Duration::from_millis(50))
        .verify()
        .expect_err("two leaks");
    assert_eq!(leaks.tasks.len(), 2, "{leaks}");

    // By spawn site (a substring of file:line:column).
    let line_of_b = b_site.rsplit_once(':').unwrap().0.to_string();
    let leaks = Options::new()
        .deadline(Duration::from_millis(50))
        .ignore_site(line_of_b)
        .verify()
        .expect_err("one leak left");
    assert_eq!(leaks.tasks.len(), 1, "{leaks}");
    assert_eq!(leaks.tasks[0].spawn_site, a_site);

    // By a function that spawned it, and then both.
    let leaks = Options::new()
        .deadline(Duration::from_millis(50))
        .ignore_function("spawn_from_a_vendored_helper")
        .verify()
        .expect_err("one leak left");
    assert_eq!(leaks.tasks.len(), 1, "{leaks}");
    assert_eq!(leaks.tasks[0].spawn_site, b_site);
    Options::new()
        .deadline(Duration::from_millis(50))
        .ignore_function("spawn_from_a_vendored_helper")
        .ignore_site(b_site.clone())
        .verify()
        .expect("both ignored");

    // A function of the await chain (known for a task blocked on a channel).
    let (stop_c, rx) = oneshot::channel::<()>();
    leaktop_agent::spawn(awaits_in_a_named_fn(rx));
    let only_c = || {
        Options::new()
            .deadline(Duration::from_millis(200))
            .ignore_site(b_site.clone())
            .ignore_site(a_site.clone())
    };
    let leaks = only_c().verify().expect_err("the third task");
    assert_eq!(leaks.tasks.len(), 1, "{leaks}");
    assert!(
        leaks.tasks[0]
            .await_chain
            .iter()
            .any(|f| f.name.contains("awaits_in_a_named_fn")),
        "{leaks}"
    );
    let ignored = only_c().ignore_function("awaits_in_a_named_fn").verify();
    assert!(ignored.is_ok(), "{ignored:?}");

    for stop in [stop_a, stop_b, stop_c] {
        stop.send(()).unwrap();
    }
    guard.verify().expect("all stopped");
}

async fn awaits_in_a_named_fn(rx: oneshot::Receiver<()>) {
    let _ = rx.await;
}
