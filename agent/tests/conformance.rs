//! Semantics: the same scenarios run on `tokio::sync` and on `leaktop_agent::sync` must
//! produce the same transcripts (values, ordering, errors, capacities, lag, watch
//! versions, closing). One macro instantiates every scenario for both module paths, so
//! a migrated program sees the same behaviour, only instrumented.

use std::fmt::Debug;

/// Renders anything `Debug` into a transcript line.
fn d<T: Debug>(v: T) -> String {
    format!("{v:?}")
}

/// Lets every runnable task run until it is Pending (current-thread runtime).
async fn settle() {
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
}

macro_rules! scenarios {
    ($module:ident, $($path:tt)+) => {
        mod $module {
            use super::{d, settle};
            use $($path)+::{broadcast, mpsc, oneshot, watch};

            pub async fn mpsc_capacity_order_and_close() -> Vec<String> {
                let mut t = Vec::new();
                let (tx, mut rx) = mpsc::channel::<u32>(2);
                t.push(d((tx.capacity(), tx.max_capacity(), rx.len(), rx.is_empty())));
                t.push(d(tx.try_send(1)));
                t.push(d(tx.try_send(2)));
                t.push(d(tx.try_send(3)));
                t.push(d((tx.capacity(), rx.len(), rx.capacity(), rx.max_capacity())));
                t.push(d(rx.recv().await));
                t.push(d(tx.send(4).await));
                t.push(d((rx.try_recv(), rx.try_recv(), rx.try_recv())));
                t.push(d((tx.strong_count(), tx.weak_count(), rx.sender_strong_count())));
                let tx2 = tx.clone();
                t.push(d((tx.same_channel(&tx2), tx.strong_count())));
                drop(tx2);
                t.push(d(tx.send(5).await));
                rx.close();
                t.push(d((rx.is_closed(), tx.is_closed())));
                t.push(d(tx.try_send(6)));
                t.push(d(tx.send(7).await));
                // Buffered messages survive close.
                t.push(d((rx.recv().await, rx.recv().await)));
                drop(tx);
                t.push(d(rx.try_recv()));
                t
            }

            pub async fn mpsc_blocked_senders_are_served_in_order() -> Vec<String> {
                let mut t = Vec::new();
                let (tx, mut rx) = mpsc::channel::<u32>(1);
                tx.send(0).await.unwrap();
                let mut handles = Vec::new();
                for v in [10, 20, 30] {
                    let tx = tx.clone();
                    handles.push(leaktop_agent::spawn(async move { tx.send(v).await }));
                    settle().await;
                }
                t.push(d(handles.iter().map(|h| h.is_finished()).collect::<Vec<_>>()));
                for _ in 0..4 {
                    t.push(d(rx.recv().await));
                    settle().await;
                }
                for h in handles {
                    t.push(d(h.await.unwrap()));
                }
                // A sender blocked when the receiver goes away gets its value back.
                let (tx, rx) = mpsc::channel::<u32>(1);
                tx.try_send(1).unwrap();
                let h = leaktop_agent::spawn(async move { tx.send(2).await });
                settle().await;
                drop(rx);
                t.push(d(h.await.unwrap()));
                t
            }

            pub async fn mpsc_permits() -> Vec<String> {
                let mut t = Vec::new();
                let (tx, mut rx) = mpsc::channel::<u32>(3);
                let p = tx.reserve().await.unwrap();
                t.push(d(tx.capacity()));
                p.send(1);
                let many = tx.reserve_many(2).await.unwrap();
                t.push(d((many.len(), tx.capacity())));
                for (i, p) in many.enumerate() {
                    p.send(10 + i as u32);
                }
                t.push(d(tx.try_reserve().map(|_| ())));
                t.push(d(tx.try_reserve_many(4).map(|_| ())));
                t.push(d(tx.reserve_many(4).await.map(|_| ())));
                t.push(d((rx.recv().await, rx.recv().await, rx.recv().await)));
                let owned = tx.clone().reserve_owned().await.unwrap();
                let back = owned.send(7);
                t.push(d((back.same_channel(&tx), rx.recv().await)));
                let owned = tx.clone().try_reserve_owned().unwrap();
                t.push(d(owned.same_channel_as_sender(&tx)));
                let released = owned.release();
                t.push(d((released.capacity(), tx.strong_count())));
                drop(released);
                // A dropped permit gives its slot back.
                let p = tx.try_reserve().unwrap();
                t.push(d(tx.capacity()));
                drop(p);
                t.push(d(tx.capacity()));
                drop(rx);
                t.push(d(tx.reserve().await.map(|_| ())));
                t.push(d(tx.clone().reserve_owned().await.map(|_| ())));
                t.push(d(tx.clone().try_reserve_owned().map(|_| ()).map_err(|e| e.to_string())));
                t
            }

            pub async fn mpsc_recv_many_and_weak() -> Vec<String> {
                let mut t = Vec::new();
                let (tx, mut rx) = mpsc::channel::<u32>(8);
                for i in 0..5 {
                    tx.send(i).await.unwrap();
                }
                let mut buf = Vec::new();
                t.push(d(rx.recv_many(&mut buf, 3).await));
                t.push(d(rx.recv_many(&mut buf, 10).await));
                t.push(d(&buf));
                let weak = tx.downgrade();
                t.push(d((weak.strong_count(), weak.weak_count())));
                t.push(d(weak.upgrade().map(|s| s.is_closed())));
                drop(tx);
                t.push(d(weak.upgrade().is_some()));
                t.push(d(rx.recv_many(&mut buf, 10).await));
                t.push(d(rx.recv().await));
                t
            }

            pub async fn mpsc_closed_future() -> Vec<String> {
                let mut t = Vec::new();
                let (tx, rx) = mpsc::channel::<u32>(1);
                let h = leaktop_agent::spawn(async move {
                    tx.closed().await;
                    tx.is_closed()
                });
                settle().await;
                t.push(d(h.is_finished()));
                drop(rx);
                t.push(d(h.await.unwrap()));
                let (tx, rx) = mpsc::unbounded_channel::<u32>();
                let h = leaktop_agent::spawn(async move {
                    tx.closed().await;
                    tx.send(1)
                });
                settle().await;
                drop(rx);
                t.push(d(h.await.unwrap()));
                t
            }

            pub async fn unbounded() -> Vec<String> {
                let mut t = Vec::new();
                let (tx, mut rx) = mpsc::unbounded_channel::<u32>();
                for i in 0..3 {
                    t.push(d(tx.send(i)));
                }
                t.push(d((rx.len(), rx.is_empty())));
                let h = leaktop_agent::spawn(async move {
                    let mut got = Vec::new();
                    while let Some(v) = rx.recv().await {
                        got.push(v);
                    }
                    got
                });
                settle().await;
                let weak = tx.downgrade();
                t.push(d(tx.send(3)));
                let tx2 = weak.upgrade().unwrap();
                t.push(d((tx.same_channel(&tx2), tx.strong_count(), tx.weak_count())));
                drop((tx, tx2));
                t.push(d(h.await.unwrap()));
                t.push(d(weak.upgrade().is_none()));
                t
            }

            pub async fn oneshot() -> Vec<String> {
                let mut t = Vec::new();
                let (tx, rx) = oneshot::channel::<u32>();
                t.push(d((tx.is_closed(), rx.is_empty(), rx.is_terminated())));
                t.push(d(tx.send(1)));
                t.push(d(rx.await));
                let (tx, mut rx) = oneshot::channel::<u32>();
                t.push(d(rx.try_recv()));
                drop(tx);
                t.push(d(rx.try_recv()));
                t.push(d(rx.is_terminated()));
                let (tx, mut rx) = oneshot::channel::<u32>();
                rx.close();
                t.push(d((tx.is_closed(), tx.send(2))));
                let (tx, rx) = oneshot::channel::<u32>();
                let h = leaktop_agent::spawn(rx);
                settle().await;
                t.push(d(h.is_finished()));
                t.push(d(tx.send(3)));
                t.push(d(h.await.unwrap()));
                let (mut tx, rx) = oneshot::channel::<u32>();
                let h = leaktop_agent::spawn(async move {
                    tx.closed().await;
                    tx.is_closed()
                });
                settle().await;
                t.push(d(h.is_finished()));
                drop(rx);
                t.push(d(h.await.unwrap()));
                t
            }

            pub async fn broadcast_lag_and_close() -> Vec<String> {
                let mut t = Vec::new();
                let (tx, mut rx) = broadcast::channel::<u32>(2);
                for i in 1..=3 {
                    t.push(d(tx.send(i)));
                }
                t.push(d((tx.len(), rx.len(), tx.receiver_count())));
                t.push(d(rx.recv().await));
                t.push(d(rx.recv().await));
                t.push(d(rx.recv().await));
                t.push(d(rx.try_recv()));
                let mut late = tx.subscribe();
                let mut re = rx.resubscribe();
                t.push(d((tx.receiver_count(), late.same_channel(&re))));
                tx.send(4).unwrap();
                t.push(d((late.recv().await, re.recv().await, rx.recv().await)));
                let h = leaktop_agent::spawn(async move { (rx.recv().await, rx.recv().await) });
                settle().await;
                tx.send(5).unwrap();
                let weak = tx.downgrade();
                t.push(d((weak.strong_count(), weak.weak_count())));
                drop(tx);
                t.push(d(h.await.unwrap()));
                t.push(d((late.recv().await, late.recv().await, late.is_closed())));
                t.push(d(weak.upgrade().is_none()));
                let tx = broadcast::Sender::<u32>::new(4);
                t.push(d((tx.send(1), tx.receiver_count(), tx.is_empty())));
                let rx = tx.subscribe();
                let tx2 = tx.clone();
                let h = leaktop_agent::spawn(async move {
                    tx2.closed().await;
                    tx2.receiver_count()
                });
                settle().await;
                t.push(d(h.is_finished()));
                drop(rx);
                t.push(d(h.await.unwrap()));
                t
            }

            pub async fn watch_versions() -> Vec<String> {
                let mut t = Vec::new();
                let (tx, mut rx) = watch::channel(0u32);
                t.push(d((*rx.borrow(), rx.has_changed())));
                t.push(d(tx.send(1)));
                t.push(d((rx.has_changed(), *rx.borrow(), rx.has_changed())));
                t.push(d(rx.changed().await));
                t.push(d((rx.has_changed(), *rx.borrow_and_update())));
                tx.send_modify(|v| *v += 10);
                t.push(d(rx.has_changed()));
                let r = rx.borrow_and_update();
                t.push(d((*r, r.has_changed())));
                drop(r);
                t.push(d(tx.send_if_modified(|_| false)));
                t.push(d(rx.has_changed()));
                t.push(d(tx.send_if_modified(|v| {
                    *v = 20;
                    true
                })));
                t.push(d((tx.send_replace(21), *tx.borrow())));
                rx.mark_unchanged();
                t.push(d(rx.has_changed()));
                rx.mark_changed();
                t.push(d(rx.has_changed()));
                t.push(d(rx.changed().await));
                let mut rx2 = rx.clone();
                let h = leaktop_agent::spawn(async move {
                    let v = *rx2.wait_for(|v| *v >= 30).await.unwrap();
                    (v, rx2.has_changed())
                });
                settle().await;
                tx.send(25).unwrap();
                settle().await;
                t.push(d(h.is_finished()));
                tx.send(30).unwrap();
                t.push(d(h.await.unwrap()));
                // wait_for checks the current value first, seen or not.
                t.push(d(rx.wait_for(|v| *v == 30).await.map(|r| *r)));
                let sub = tx.subscribe();
                t.push(d((sub.has_changed(), tx.receiver_count(), tx.sender_count())));
                let h = leaktop_agent::spawn(async move { rx.changed().await });
                settle().await;
                let tx2 = tx.clone();
                t.push(d((tx.same_channel(&tx2), h.is_finished())));
                drop((tx, tx2));
                t.push(d(h.await.unwrap()));
                t.push(d((sub.has_changed(), sub.is_closed())));
                let (tx, rx) = watch::channel(0u32);
                t.push(d(tx.send(5)));
                drop(rx);
                t.push(d((tx.send(6), tx.is_closed(), *tx.borrow())));
                let rx = tx.subscribe();
                let h = leaktop_agent::spawn(async move {
                    tx.closed().await;
                    tx.receiver_count()
                });
                settle().await;
                t.push(d(h.is_finished()));
                drop(rx);
                t.push(d(h.await.unwrap()));
                let tx = watch::Sender::new(1u8);
                t.push(d((tx.send(2), tx.receiver_count())));
                let def = watch::Sender::<u8>::default();
                t.push(d(*def.borrow()));
                t
            }

            pub async fn cancelled_waits_lose_nothing() -> Vec<String> {
                let mut t = Vec::new();
                let (tx, mut rx) = mpsc::channel::<u32>(1);
                // A recv dropped by select! takes no message.
                tokio::select! {
                    biased;
                    v = rx.recv() => t.push(d(v)),
                    _ = std::future::ready(()) => t.push("ready first".into()),
                }
                tx.send(1).await.unwrap();
                // A send dropped while waiting keeps its value out of the channel.
                tokio::select! {
                    biased;
                    r = tx.send(2) => t.push(d(r)),
                    _ = std::future::ready(()) => t.push("ready first".into()),
                }
                t.push(d((rx.recv().await, rx.try_recv())));
                let (btx, mut brx) = broadcast::channel::<u32>(4);
                tokio::select! {
                    biased;
                    v = brx.recv() => t.push(d(v)),
                    _ = std::future::ready(()) => t.push("ready first".into()),
                }
                btx.send(9).unwrap();
                t.push(d(brx.recv().await));
                let (wtx, mut wrx) = watch::channel(0u32);
                tokio::select! {
                    biased;
                    v = wrx.changed() => t.push(d(v)),
                    _ = std::future::ready(()) => t.push("ready first".into()),
                }
                wtx.send(1).unwrap();
                t.push(d((wrx.changed().await, wrx.has_changed())));
                t
            }
        }
    };
}

scenarios!(tk, tokio::sync);
scenarios!(lt, leaktop_agent::sync);

fn run<F: std::future::Future<Output = Vec<String>>>(f: F) -> Vec<String> {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
        .block_on(f)
}

macro_rules! compare {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let want = run(tk::$name());
                let got = run(lt::$name());
                if std::env::var_os("CONFORMANCE_PRINT").is_some() {
                    eprintln!("{}: {want:#?}", stringify!($name));
                }
                assert_eq!(got, want, "leaktop_agent::sync differs from tokio::sync");
            }
        )*
    };
}

compare!(
    mpsc_capacity_order_and_close,
    mpsc_blocked_senders_are_served_in_order,
    mpsc_permits,
    mpsc_recv_many_and_weak,
    mpsc_closed_future,
    unbounded,
    oneshot,
    broadcast_lag_and_close,
    watch_versions,
    cancelled_waits_lose_nothing,
);
