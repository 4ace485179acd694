//! In-process tests of the blocked-state bookkeeping: exact counts in groups and site
//! counters, cleared by Ready, by dropping the future and by aborting the task; snapshot
//! size independent of the number of blocked tasks.

use std::collections::HashSet;
use std::time::Duration;

use super::{mpsc, oneshot};
use crate::registry::registry;
use crate::wire::{self, LocId, Op};

pub(super) fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Lets every runnable task of a current-thread runtime run until it is Pending.
pub(super) async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Yields until `done()` holds (the current-thread scheduler polls ~61 tasks per tick, so
/// many tasks take many yields). Panics after a generous bound rather than hang.
async fn settle_until(mut done: impl FnMut() -> bool) {
    for i in 0u64.. {
        tokio::task::yield_now().await;
        if i % 64 == 0 && done() {
            return;
        }
        assert!(i < 2_000_000, "state never settled: {:#?}", {
            let s = registry().snapshot(0);
            s.groups
                .iter()
                .map(|g| (g.key.clone(), g.count))
                .collect::<Vec<_>>()
        });
    }
}

/// Groups whose channel was created at `chan_site`.
fn groups_on(chan_site: LocId) -> Vec<wire::BlockedGroup> {
    registry()
        .snapshot(0)
        .groups
        .into_iter()
        .filter(|g| g.key.channel_site == chan_site)
        .collect()
}

fn site_stats(site: LocId) -> wire::SiteStats {
    registry()
        .snapshot(0)
        .sites
        .into_iter()
        .find(|s| s.site == site)
        .expect("site in snapshot")
}

fn one_group(chan_site: LocId) -> Option<(wire::BlockedGroup, u64)> {
    let g = groups_on(chan_site);
    assert!(g.len() <= 1, "{g:#?}");
    g.into_iter().next().map(|g| {
        let c = g.count;
        (g, c)
    })
}

#[test]
fn blocked_send_is_counted_exactly_and_cleared_by_ready_drop_and_abort() {
    rt().block_on(async {
        let (tx, mut rx) = mpsc::channel::<u32>(1);
        tx.try_send(0).unwrap();
        let chan_site = tx.meta().site.loc;
        let line = line!() + 4;
        let mut handles = Vec::new();
        for i in 0..6 {
            let tx = tx.clone();
            handles.push(crate::spawn(async move {
                let (cancel_tx, cancel_rx) = tokio::sync::oneshot::channel::<()>();
                std::mem::forget(cancel_tx);
                tokio::select! {
                    r = tx.send(i) => r.unwrap(),
                    _ = cancel_rx => {}
                }
                std::future::pending::<()>().await;
            }));
        }
        settle().await;
        let (g, count) = one_group(chan_site).expect("a group");
        assert_eq!(count, 6);
        assert_eq!(g.key.op, Op::Send);
        assert_eq!(g.kind, wire::ChannelKind::Mpsc);
        let call = registry().location(g.key.call_site).unwrap();
        assert!(call.file.ends_with("sync/tests.rs"), "{call:?}");
        assert_eq!(call.line, line + 4, "{call:?}");
        assert!(g.key.stack.is_some());
        let ch = g.channel.clone().expect("channel of the oldest");
        assert_eq!(
            (ch.capacity, ch.len, ch.senders, ch.receivers, ch.closed),
            (Some(1), Some(1), 7, 1, false)
        );
        let site = g.key.site;
        let st = site_stats(site);
        assert_eq!((st.live, st.blocked_send, st.blocked_recv), (6, 6, 0));

        // Ready: two receives let two senders through (one at a time: capacity 1).
        assert_eq!(rx.recv().await, Some(0));
        settle().await;
        assert!(rx.recv().await.is_some());
        settle().await;
        assert_eq!(one_group(chan_site).map(|g| g.1), Some(4));
        assert_eq!(site_stats(site).blocked_send, 4);

        // Abort two.
        let mut blocked = std::mem::take(&mut handles);
        let mut aborted = 0;
        for h in &blocked {
            if aborted < 2 && !h.is_finished() {
                h.abort();
                aborted += 1;
            }
        }
        settle().await;
        // Aborting a task that already passed its send changes nothing; count what's left.
        let left = one_group(chan_site).map(|g| g.1).unwrap_or(0);
        assert!(left == 2 || left == 3 || left == 4, "{left}");
        blocked.retain(|h| !h.is_finished());
        for h in &blocked {
            h.abort();
        }
        settle().await;
        assert_eq!(one_group(chan_site), None);
        let st = site_stats(site);
        assert_eq!((st.blocked_send, st.blocked_recv), (0, 0));
        drop(tx);
    });
}

#[test]
fn dropping_the_future_in_select_clears_the_wait() {
    rt().block_on(async {
        let (tx, _rx) = mpsc::channel::<u32>(4);
        let chan_site = tx.meta().site.loc;
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let mut handles = Vec::new();
        for _ in 0..3 {
            let mut stop = stop_rx.clone();
            let (_keep, mut my_rx) = mpsc::channel::<u32>(1);
            handles.push(crate::spawn(async move {
                tokio::select! {
                    _ = my_rx.recv() => {}
                    _ = stop.changed() => {}
                }
                drop(_keep);
                std::future::pending::<()>().await;
            }));
        }
        settle().await;
        // Those wait on their own channels (created on one line): one group of 3.
        let g: Vec<_> = registry()
            .snapshot(0)
            .groups
            .into_iter()
            .filter(|g| g.key.op == Op::Recv && g.count == 3)
            .collect();
        assert_eq!(g.len(), 1, "{g:#?}");
        let their_site = g[0].key.channel_site;
        let site = g[0].key.site;
        assert_eq!(site_stats(site).blocked_recv, 3);
        stop_tx.send(true).unwrap();
        settle().await;
        assert_eq!(one_group(their_site), None);
        let st = site_stats(site);
        assert_eq!((st.live, st.blocked_recv), (3, 0));
        assert_eq!(one_group(chan_site), None);
        for h in handles {
            h.abort();
        }
    });
}

#[test]
fn timeout_drops_the_wait_and_uninstrumented_ops_are_counted_apart() {
    rt().block_on(async {
        let (tx, rx) = oneshot::channel::<u32>();
        let chan_site = {
            // The oneshot's creation site: find it through a blocked receive.
            let h = tokio::spawn(async move {
                let _ = tokio::time::timeout(Duration::from_millis(200), rx).await;
            });
            settle().await;
            let g: Vec<_> = registry()
                .snapshot(0)
                .groups
                .into_iter()
                .filter(|g| g.kind == wire::ChannelKind::Oneshot)
                .collect();
            assert_eq!(g.len(), 1, "{g:#?}");
            let site = registry()
                .sites()
                .into_iter()
                .find(|s| s.loc == g[0].key.site)
                .unwrap();
            assert_eq!(site.kind, wire::SiteKind::Uninstrumented);
            assert_eq!(site_stats(site.loc).blocked_recv, 1);
            h.await.unwrap();
            assert_eq!(site_stats(site.loc).blocked_recv, 0);
            g[0].key.channel_site
        };
        assert_eq!(one_group(chan_site), None);
        drop(tx);
    });
}

#[test]
fn task_list_of_a_group_is_oldest_first_with_since() {
    rt().block_on(async {
        let (tx, _rx) = mpsc::channel::<u32>(1);
        tx.try_send(0).unwrap();
        let chan_site = tx.meta().site.loc;
        let mut handles = Vec::new();
        for i in 0..5 {
            let tx = tx.clone();
            handles.push(crate::spawn(async move {
                let _ = tx.send(i).await;
            }));
            settle().await;
        }
        let (g, _) = one_group(chan_site).unwrap();
        let tasks = registry().oldest_tasks(g.key.site, Some(&g.key), 3);
        assert_eq!(tasks.len(), 3);
        let ids: Vec<u64> = tasks.iter().map(|t| t.id).collect();
        let mut sorted = ids.clone();
        sorted.sort();
        assert_eq!(ids, sorted, "oldest first");
        assert!(tasks
            .iter()
            .all(|t| t.state == wire::TaskState::Blocked && t.group.as_ref() == Some(&g.key)));
        assert_eq!(tasks[0].blocked_since_ms, Some(g.oldest_since_ms));
        // The site's task list fills the blocked fields too.
        let all = registry().oldest_tasks(g.key.site, None, 10);
        assert_eq!(all.len(), 5);
        assert!(all.iter().all(|t| t.group.as_ref() == Some(&g.key)));
        for h in handles {
            h.abort();
        }
        settle().await;
    });
}

/// The snapshot is O(sites + groups): 100 000 blocked tasks in 3 groups encode to about
/// the same size as 100 (3 x 33 334 vs 3 x 34).
#[test]
fn snapshot_size_does_not_grow_with_blocked_tasks() {
    fn blocked_snapshot_len(per_group: usize) -> usize {
        rt().block_on(async move {
            let mut chan_sites = HashSet::new();
            let mut keep = Vec::new();
            let mut handles = Vec::new();
            for k in 0..3 {
                let (tx, rx) = mpsc::channel::<u32>(1);
                tx.try_send(0).unwrap();
                chan_sites.insert(tx.meta().site.loc);
                for _ in 0..per_group {
                    let tx = tx.clone();
                    let fut = async move {
                        let _ = tx.send(1).await;
                    };
                    // Three spawn sites: three groups.
                    handles.push(match k {
                        0 => crate::spawn(fut),
                        1 => crate::spawn(fut),
                        _ => crate::spawn(fut),
                    });
                }
                keep.push((tx, rx));
            }
            let expected = per_group as u64;
            settle_until(|| {
                registry()
                    .snapshot(0)
                    .groups
                    .iter()
                    .filter(|g| chan_sites.contains(&g.key.channel_site) && g.count == expected)
                    .count()
                    == 3
            })
            .await;
            let snap = registry().snapshot(0);
            let groups: Vec<_> = snap
                .groups
                .into_iter()
                .filter(|g| chan_sites.contains(&g.key.channel_site))
                .collect();
            let sites: HashSet<LocId> = groups.iter().map(|g| g.key.site).collect();
            assert_eq!(
                groups.len(),
                3,
                "{:#?}",
                groups.iter().map(|g| (&g.key, g.count)).collect::<Vec<_>>()
            );
            assert!(groups.iter().all(|g| g.count == per_group as u64));
            let ours = wire::Snapshot {
                groups,
                sites: snap
                    .sites
                    .into_iter()
                    .filter(|s| sites.contains(&s.site))
                    .collect(),
                ..Default::default()
            };
            let len = wire::encode_frame(&wire::AgentMsg::Snapshot(ours))
                .unwrap()
                .len();
            for h in handles {
                h.abort();
            }
            settle_until(|| {
                registry()
                    .snapshot(0)
                    .groups
                    .iter()
                    .all(|g| !chan_sites.contains(&g.key.channel_site))
            })
            .await;
            len
        })
    }
    let small = blocked_snapshot_len(34);
    let big = blocked_snapshot_len(33_334);
    // Only the varint widths of the counters differ (1 byte vs 3, a few per site/group).
    assert!(
        big <= small + 64,
        "100 blocked: {small} bytes, 100 000: {big}"
    );
}

/// Waits outside instrumented tasks go to tables sharded by thread (no lock shared by
/// every thread that waits outside a task); a snapshot merges them into one group with
/// the exact count, the oldest wait's age, and lists the waiters of every shard.
#[test]
fn waits_outside_tasks_on_many_threads_merge_into_one_exact_group() {
    const THREADS: usize = 24;
    let (tx, rx) = mpsc::channel::<u32>(1);
    tx.try_send(0).unwrap();
    let chan_site = tx.meta().site.loc;
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let go_rx = std::sync::Arc::new(std::sync::Mutex::new(go_rx));
    let threads: Vec<_> = (0..THREADS)
        .map(|i| {
            let tx = tx.clone();
            let go = go_rx.clone();
            std::thread::spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap();
                rt.block_on(async move {
                    let send = tx.send(i as u32);
                    tokio::pin!(send);
                    // Pending once (the channel is full), then parked until told to go.
                    assert!(futures_poll_once(send.as_mut()).await.is_pending());
                    let _ = go.lock().unwrap().recv();
                });
            })
        })
        .collect();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (g, count) = loop {
        if let Some(found) = one_group(chan_site).filter(|(_, c)| *c == THREADS as u64) {
            break found;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{:#?}",
            one_group(chan_site)
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    assert_eq!(count, THREADS as u64);
    let site = registry().site_by_loc(g.key.site).unwrap();
    assert_eq!(site.kind, wire::SiteKind::Uninstrumented);
    assert_eq!(site_stats(site.loc).blocked_send, THREADS as u64);
    let listed = registry().oldest_tasks(g.key.site, Some(&g.key), 100);
    assert_eq!(listed.len(), THREADS);
    assert!(listed
        .windows(2)
        .all(|w| w[0].blocked_since_ms <= w[1].blocked_since_ms));
    for _ in 0..THREADS {
        go_tx.send(()).unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(one_group(chan_site), None);
    assert_eq!(site_stats(site.loc).blocked_send, 0);
    drop(rx);
}

/// Polls `fut` once and returns what it said (the wait stays registered while pending).
async fn futures_poll_once<F: std::future::Future + Unpin>(fut: F) -> std::task::Poll<F::Output> {
    let mut fut = fut;
    std::future::poll_fn(|cx| std::task::Poll::Ready(std::pin::Pin::new(&mut fut).poll(cx))).await
}
