//! Semantics: the same scenarios run on `tokio::sync` and on `leaktop_agent::sync` must
//! produce the same transcripts (values, ordering, errors, capacities, lag, watch
//! versions, closing). One macro instantiates every scenario for both module paths, so
//! a migrated program sees the same behaviour, only instrumented.

// `|v| Some(v)` rather than `Some`: the guards' `try_map` need a closure generic over the
// borrow's lifetime, which a function item is not.
#![allow(clippy::redundant_closure)]

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

// ---------------------------------------------------------------------------------------
// Locks, semaphores, Notify, Barrier, cells, tasks and stream adapters (issue 17): the same
// scenarios through tokio (tokio::sync, tokio::task, tokio-stream, tokio-util) and through
// their leaktop_agent mirrors.

macro_rules! more_scenarios {
    (
        $module:ident, sync = $sync:path, task = $task:path, wrappers = $wrappers:path,
        util = $util:path
    ) => {
        mod $module {
            use std::sync::{Arc, Mutex as StdMutex};

            use futures_util::{SinkExt, Stream, StreamExt};

            use super::{d, settle};
            use sync::{
                broadcast, mpsc, watch, Barrier, Mutex, MutexGuard, Notify, OnceCell,
                OwnedMutexGuard, OwnedRwLockReadGuard, OwnedRwLockWriteGuard, RwLock,
                RwLockReadGuard, RwLockWriteGuard, Semaphore, SetOnce, TryAcquireError,
            };
            use task::JoinSet;
            use $sync as sync;
            use $task as task;
            use $util as util;
            use $wrappers as wrappers;

            /// Order of events seen by concurrent tasks.
            type Log = Arc<StdMutex<Vec<String>>>;

            fn log() -> Log {
                Arc::new(StdMutex::new(Vec::new()))
            }

            fn taken(l: &Log) -> Vec<String> {
                std::mem::take(&mut *l.lock().unwrap())
            }

            static STATIC_MUTEX: Mutex<u32> = Mutex::const_new(3);
            static STATIC_RWLOCK: RwLock<u32> = RwLock::const_new(4);
            static STATIC_SEM: Semaphore = Semaphore::const_new(2);
            static STATIC_NOTIFY: Notify = Notify::const_new();
            static STATIC_CELL: OnceCell<u32> = OnceCell::const_new();
            static STATIC_CELL_WITH: OnceCell<u32> = OnceCell::const_new_with(9);
            static STATIC_SET_ONCE: SetOnce<u32> = SetOnce::const_new();
            static STATIC_SET_ONCE_WITH: SetOnce<u32> = SetOnce::const_new_with(8);

            pub async fn mutex_api() -> Vec<String> {
                let mut t = Vec::new();
                let m = Mutex::new(1u32);
                t.push(d(&m));
                {
                    let mut g = m.lock().await;
                    *g += 1;
                    t.push(d((&*g, format!("{g}"), format!("{g:?}"))));
                    t.push(d(&m));
                    t.push(d(m.try_lock().map(|_| ())));
                    t.push(d(std::ptr::eq(MutexGuard::mutex(&g), &m)));
                }
                let g = m.try_lock().unwrap();
                let mapped = MutexGuard::map(g, |v| v);
                let mapped = sync::MappedMutexGuard::map(mapped, |v| v);
                t.push(d(*mapped));
                let mapped = sync::MappedMutexGuard::try_map(mapped, |_| None::<&mut u32>);
                let mapped = mapped.err().unwrap();
                let again = sync::MappedMutexGuard::try_map(mapped, |v| Some(v));
                t.push(d(again.map(|g| *g)));
                let g = m.lock().await;
                let g = MutexGuard::try_map(g, |_| None::<&mut u8>).err().unwrap();
                let g = MutexGuard::try_map(g, |v| Some(v)).map(|g| *g);
                t.push(d(g));
                let mut m = m;
                *m.get_mut() += 10;
                t.push(d(m.into_inner()));
                t.push(d(Mutex::<u8>::default().into_inner()));
                t.push(d(Mutex::from(5u8).into_inner()));
                t.push(d(*STATIC_MUTEX.lock().await));
                let dynm: &Mutex<dyn std::fmt::Debug> = &Mutex::new(7u8);
                t.push(d(format!("{:?}", &*dynm.lock().await)));
                // blocking_lock from a thread outside the runtime.
                let shared = Arc::new(Mutex::new(0u32));
                let s = shared.clone();
                std::thread::spawn(move || {
                    *s.blocking_lock() += 1;
                    let g = s.blocking_lock_owned();
                    OwnedMutexGuard::mutex(&g)
                        .try_lock()
                        .map(|_| 0)
                        .unwrap_or(1)
                })
                .join()
                .map(|v| t.push(d(v)))
                .unwrap();
                t.push(d(*shared.lock().await));
                t
            }

            pub async fn mutex_owned_fairness_and_cancel() -> Vec<String> {
                let mut t = Vec::new();
                let l = log();
                let m = Arc::new(Mutex::new(Vec::<u32>::new()));
                let held = m.clone().lock_owned().await;
                t.push(d(m.clone().try_lock_owned().map(|_| ())));
                let mut handles = Vec::new();
                for i in 0..4u32 {
                    let m = m.clone();
                    let l = l.clone();
                    handles.push(task::spawn(async move {
                        let mut g = m.lock().await;
                        g.push(i);
                        l.lock().unwrap().push(format!("got {i}"));
                        settle().await;
                    }));
                    settle().await;
                }
                // A waiter that gives up (abort) loses its place, takes nothing.
                handles[1].abort();
                settle().await;
                t.push(d(taken(&l)));
                drop(held);
                for h in handles {
                    t.push(d(h.await.map_err(|e| e.is_cancelled())));
                }
                t.push(d(taken(&l)));
                let g = m.clone().lock_owned().await;
                t.push(d((&*g, Arc::ptr_eq(OwnedMutexGuard::mutex(&g), &m))));
                let mapped = OwnedMutexGuard::map(g, |v| &mut v[0]);
                t.push(d(*mapped));
                let mapped = sync::OwnedMappedMutexGuard::map(mapped, |v| v);
                let mapped = sync::OwnedMappedMutexGuard::try_map(mapped, |_| None::<&mut u8>);
                t.push(d(mapped.map(|_| ()).map_err(|g| *g)));
                let g = m.clone().try_lock_owned().unwrap();
                t.push(d(OwnedMutexGuard::try_map(g, |v| v.get_mut(9))
                    .map(|_| ())
                    .map_err(|g| g.len())));
                // select! drops a pending lock: the next one still gets it.
                let g = m.lock().await;
                tokio::select! {
                    biased;
                    _ = m.lock() => t.push("locked twice".into()),
                    _ = std::future::ready(()) => t.push("lock cancelled".into()),
                }
                drop(g);
                t.push(d(m.try_lock().map(|g| g.len())));
                t
            }

            pub async fn rwlock_api() -> Vec<String> {
                let mut t = Vec::new();
                let l = log();
                let lock = Arc::new(RwLock::with_max_readers(1u32, 2));
                t.push(d(&*lock));
                let (a, b) = (lock.read().await, lock.read().await);
                t.push(d((*a, *b, format!("{a} {b:?}"))));
                t.push(d(lock.try_read().map(|_| ())));
                t.push(d(lock.try_write().map(|_| ())));
                // A third reader waits (max 2), a writer queues behind it, a later reader
                // behind the writer.
                for (i, write) in [(0, false), (1, true), (2, false)] {
                    let lock = lock.clone();
                    let l = l.clone();
                    task::spawn(async move {
                        if write {
                            let mut g = lock.write().await;
                            *g += 1;
                            l.lock().unwrap().push(format!("{i} wrote {}", *g));
                        } else {
                            let g = lock.read().await;
                            l.lock().unwrap().push(format!("{i} read {}", *g));
                        }
                    });
                    settle().await;
                }
                t.push(d(taken(&l)));
                drop(a);
                settle().await;
                t.push(d(taken(&l)));
                drop(b);
                settle().await;
                t.push(d(taken(&l)));
                let w = lock.write().await;
                t.push(d((&*w, format!("{w}"))));
                let r = RwLockWriteGuard::downgrade(w);
                t.push(d((
                    *r,
                    lock.try_read().map(|g| *g),
                    lock.try_write().map(|_| ()),
                )));
                drop(r);
                let w = lock.write().await;
                let r = RwLockWriteGuard::downgrade_map(w, |v| v);
                t.push(d(*r));
                drop(r);
                let w = lock.write().await;
                let w = RwLockWriteGuard::try_downgrade_map(w, |_| None::<&u8>)
                    .err()
                    .unwrap();
                let r = RwLockWriteGuard::try_downgrade_map(w, |v| Some(v)).map(|g| *g);
                t.push(d(r));
                let w = lock.write().await;
                let mut m = RwLockWriteGuard::into_mapped(w);
                *m += 1;
                let m = sync::RwLockMappedWriteGuard::map(m, |v| v);
                let m = sync::RwLockMappedWriteGuard::try_map(m, |_| None::<&mut u8>)
                    .err()
                    .unwrap();
                t.push(d(*m));
                drop(m);
                let w = lock.write().await;
                let m = RwLockWriteGuard::map(w, |v| v);
                t.push(d(*m));
                drop(m);
                let w = lock.try_write().unwrap();
                t.push(d(RwLockWriteGuard::try_map(w, |_| None::<&mut u8>)
                    .map(|_| ())
                    .map_err(|g| *g)));
                let r = lock.read().await;
                let r = RwLockReadGuard::map(r, |v| v);
                let r = RwLockReadGuard::try_map(r, |_| None::<&u8>).err().unwrap();
                t.push(d(RwLockReadGuard::try_map(r, |v| Some(v)).map(|g| *g)));
                // Owned variants.
                let r = lock.clone().read_owned().await;
                t.push(d((
                    *r,
                    Arc::ptr_eq(OwnedRwLockReadGuard::rwlock(&r), &lock),
                )));
                let r = OwnedRwLockReadGuard::map(r, |v| v);
                let r = OwnedRwLockReadGuard::try_map(r, |_| None::<&u8>)
                    .err()
                    .unwrap();
                t.push(d(*r));
                drop(r);
                let w = lock.clone().write_owned().await;
                t.push(d(Arc::ptr_eq(OwnedRwLockWriteGuard::rwlock(&w), &lock)));
                let r = OwnedRwLockWriteGuard::downgrade(w);
                t.push(d((*r, lock.clone().try_read_owned().map(|g| *g))));
                drop(r);
                let w = lock.clone().try_write_owned().unwrap();
                let w = OwnedRwLockWriteGuard::try_map(w, |_| None::<&mut u8>)
                    .err()
                    .unwrap();
                let m = OwnedRwLockWriteGuard::into_mapped(w);
                let m = sync::OwnedRwLockMappedWriteGuard::map(m, |v| v);
                t.push(d((
                    *m,
                    Arc::ptr_eq(sync::OwnedRwLockMappedWriteGuard::rwlock(&m), &lock),
                )));
                let m = sync::OwnedRwLockMappedWriteGuard::try_map(m, |_| None::<&mut u8>);
                drop(m);
                let w = lock.clone().write_owned().await;
                let r = OwnedRwLockWriteGuard::downgrade_map(w, |v| v);
                t.push(d(*r));
                drop(r);
                let w = lock.clone().write_owned().await;
                let w = OwnedRwLockWriteGuard::try_downgrade_map(w, |_| None::<&u8>)
                    .err()
                    .unwrap();
                let m = OwnedRwLockWriteGuard::map(w, |v| v);
                t.push(d(*m));
                drop(m);
                let w = lock.clone().write_owned().await;
                t.push(d(OwnedRwLockWriteGuard::try_map(w, |v| Some(v)).map(|g| *g)));
                let mut own = RwLock::new(String::from("x"));
                own.get_mut().push('y');
                t.push(d((own.into_inner(), RwLock::<u8>::default().into_inner())));
                t.push(d(RwLock::from(2u8).into_inner()));
                t.push(d(*STATIC_RWLOCK.read().await));
                t.push(d(*RwLock::const_with_max_readers(5u8, 3).read().await));
                let b = Arc::new(RwLock::new(0u32));
                let b2 = b.clone();
                t.push(d(std::thread::spawn(move || {
                    *b2.blocking_write() += 1;
                    let r = b2.blocking_read();
                    *r
                })
                .join()
                .unwrap()));
                // A pending read dropped by select! gives way.
                let w = b.write().await;
                tokio::select! {
                    biased;
                    _ = b.read() => t.push("read under a writer".into()),
                    _ = std::future::ready(()) => t.push("read cancelled".into()),
                }
                drop(w);
                t.push(d(b.try_write().map(|g| *g)));
                t
            }

            pub async fn semaphore_api() -> Vec<String> {
                let mut t = Vec::new();
                let l = log();
                let sem = Arc::new(Semaphore::new(3));
                t.push(d((&*sem, Semaphore::MAX_PERMITS)));
                let mut a = sem.acquire().await.unwrap();
                let b = sem.acquire_many(2).await.unwrap();
                t.push(d((
                    a.num_permits(),
                    b.num_permits(),
                    sem.available_permits(),
                )));
                t.push(d((format!("{a:?}"), std::ptr::eq(a.semaphore(), &*sem))));
                t.push(d(sem.try_acquire().map(|_| ())));
                a.merge(b);
                t.push(d(a.num_permits()));
                let c = a.split(2).unwrap();
                t.push(d((a.num_permits(), c.num_permits(), a.split(5).is_some())));
                c.forget();
                t.push(d(sem.available_permits()));
                sem.add_permits(2);
                t.push(d(sem.available_permits()));
                drop(a);
                t.push(d((
                    sem.available_permits(),
                    sem.forget_permits(1),
                    sem.available_permits(),
                )));
                // acquire_many(3) queued first keeps later smaller requests waiting (FIFO).
                let hold = sem.try_acquire_many(2).unwrap();
                for (i, n) in [(0u32, 3u32), (1, 1)] {
                    let sem = sem.clone();
                    let l = l.clone();
                    task::spawn(async move {
                        let p = sem.acquire_many(n).await.unwrap();
                        l.lock()
                            .unwrap()
                            .push(format!("{i} got {}", p.num_permits()));
                        p.forget();
                    });
                    settle().await;
                }
                t.push(d((taken(&l), sem.available_permits())));
                drop(hold);
                settle().await;
                t.push(d((taken(&l), sem.available_permits())));
                sem.add_permits(6);
                let o = sem.clone().acquire_owned().await.unwrap();
                let mut o2 = sem.clone().acquire_many_owned(2).await.unwrap();
                t.push(d((
                    o.num_permits(),
                    o2.num_permits(),
                    Arc::ptr_eq(o.semaphore(), &sem),
                )));
                o2.merge(o);
                let o3 = o2.split(1).unwrap();
                t.push(d((o2.num_permits(), o3.num_permits(), format!("{o3:?}"))));
                o3.forget();
                t.push(d((
                    sem.clone().try_acquire_owned().map(|p| p.num_permits()),
                    sem.available_permits(),
                )));
                t.push(d(sem.clone().try_acquire_many_owned(5).map(|_| ())));
                drop(o2);
                // Closing wakes waiters with an error; try_* say Closed.
                let waiter = {
                    let sem = sem.clone();
                    task::spawn(async move { sem.acquire_many(50).await.map(|_| ()) })
                };
                settle().await;
                sem.close();
                t.push(d((waiter.await.unwrap(), sem.is_closed())));
                t.push(d((
                    sem.try_acquire().map(|_| ()),
                    sem.acquire().await.map(|_| ()),
                )));
                t.push(d(sem.clone().acquire_owned().await.map(|_| ())));
                t.push(d(sem.try_acquire().err() == Some(TryAcquireError::Closed)));
                t.push(d(STATIC_SEM.acquire_many(2).await.map(|p| p.num_permits())));
                let s2 = Arc::new(Semaphore::new(1));
                let s3 = s2.clone();
                t.push(d(std::thread::spawn(move || {
                    let p = s3.blocking_acquire().unwrap();
                    let q = s3.clone().try_acquire_owned().map(|_| ());
                    drop(p);
                    let many = s3.blocking_acquire_many(1).map(|p| p.num_permits());
                    let owned = s3.clone().blocking_acquire_owned().map(|p| p.num_permits());
                    let owned_many = s3.blocking_acquire_many_owned(1).map(|p| p.num_permits());
                    (q, many, owned, owned_many)
                })
                .join()
                .unwrap()));
                // A cancelled acquire gives its place up.
                let p = s2.acquire().await.unwrap();
                tokio::select! {
                    biased;
                    _ = s2.acquire() => t.push("acquired twice".into()),
                    _ = std::future::ready(()) => t.push("acquire cancelled".into()),
                }
                drop(p);
                t.push(d(s2.available_permits()));
                t
            }

            pub async fn notify_and_barrier() -> Vec<String> {
                let mut t = Vec::new();
                let l = log();
                let n = Arc::new(Notify::new());
                // A permit stored by notify_one before anyone waits.
                n.notify_one();
                n.notified().await;
                t.push("stored permit consumed".into());
                for i in 0..3 {
                    let n = n.clone();
                    let l = l.clone();
                    task::spawn(async move {
                        n.notified().await;
                        l.lock().unwrap().push(format!("woke {i}"));
                    });
                    settle().await;
                }
                n.notify_one();
                settle().await;
                t.push(d(taken(&l)));
                n.notify_last();
                settle().await;
                t.push(d(taken(&l)));
                // notify_waiters wakes the futures that exist, stores no permit.
                let mut early = std::pin::pin!(n.notified());
                t.push(d(early.as_mut().enable()));
                n.notify_waiters();
                settle().await;
                t.push(d(taken(&l)));
                early.await;
                let late = tokio::time::timeout(std::time::Duration::from_millis(1), n.notified());
                t.push(d(late.await.is_err()));
                let owned = n.clone().notified_owned();
                n.notify_one();
                owned.await;
                let mut owned = std::pin::pin!(n.clone().notified_owned());
                t.push(d(owned.as_mut().enable()));
                n.notify_waiters();
                owned.await;
                STATIC_NOTIFY.notify_one();
                STATIC_NOTIFY.notified().await;
                let _ = format!("{:?}", Notify::default());
                // Barrier: exactly one leader per round, everyone released together.
                let b = Arc::new(Barrier::new(3));
                let mut hs = Vec::new();
                for _ in 0..2 {
                    let b = b.clone();
                    hs.push(task::spawn(async move { b.wait().await.is_leader() }));
                }
                settle().await;
                t.push(d(hs.iter().map(|h| h.is_finished()).collect::<Vec<_>>()));
                let me = b.wait().await.is_leader();
                let mut leaders = vec![me];
                for h in hs {
                    leaders.push(h.await.unwrap());
                }
                t.push(d(leaders.iter().filter(|l| **l).count()));
                t.push(d(Barrier::new(1).wait().await.is_leader()));
                t.push(d(format!("{:?}", Barrier::new(0)).contains("Barrier")));
                t
            }

            pub async fn cells() -> Vec<String> {
                let mut t = Vec::new();
                let cell = Arc::new(OnceCell::<u32>::new());
                t.push(d((&*cell, cell.initialized(), cell.get())));
                // Two tasks race: the first initialises, the second waits for it.
                let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
                let first = {
                    let cell = cell.clone();
                    task::spawn(
                        async move { *cell.get_or_init(|| async { rx.await.unwrap() }).await },
                    )
                };
                settle().await;
                let second = {
                    let cell = cell.clone();
                    task::spawn(async move { *cell.get_or_init(|| async { 99 }).await })
                };
                settle().await;
                t.push(d((first.is_finished(), second.is_finished())));
                t.push(d(cell.set(1).map_err(|e| {
                    (e.is_already_init_err(), e.is_initializing_err())
                })));
                tx.send(5).unwrap();
                t.push(d((first.await.unwrap(), second.await.unwrap())));
                t.push(d(cell.set(2).map_err(|e| {
                    (e.is_already_init_err(), e.is_initializing_err())
                })));
                let tried = OnceCell::<u32>::new();
                t.push(d(tried
                    .get_or_try_init(|| async { Err::<u32, _>("no") })
                    .await));
                t.push(d(tried.get_or_try_init(|| async { Ok::<_, ()>(4) }).await));
                let mut c = OnceCell::new_with(Some(3u8));
                t.push(d((
                    c.clone() == c,
                    format!("{:?}", c.clone()),
                    c.get_mut().copied(),
                )));
                t.push(d((c.take(), c.take(), c.initialized())));
                t.push(d((
                    OnceCell::from(1u8).into_inner(),
                    OnceCell::<u8>::default().into_inner(),
                )));
                t.push(d((
                    *STATIC_CELL.get_or_init(|| async { 6 }).await,
                    STATIC_CELL_WITH.get(),
                )));
                // SetOnce
                let s = Arc::new(SetOnce::<u32>::new());
                let waiter = {
                    let s = s.clone();
                    task::spawn(async move { *s.wait().await })
                };
                settle().await;
                t.push(d((waiter.is_finished(), s.initialized(), s.get())));
                t.push(d(s.set(7)));
                t.push(d((waiter.await.unwrap(), s.set(8), &*s)));
                let s2 = SetOnce::new_with(Some(1u8));
                t.push(d((s2.clone() == s2, *s2.wait().await, s2.into_inner())));
                t.push(d((
                    SetOnce::from(2u8).get().copied(),
                    SetOnce::<u8>::default().into_inner(),
                )));
                t.push(d((STATIC_SET_ONCE.set(3), STATIC_SET_ONCE_WITH.get())));
                t.push(d(*STATIC_SET_ONCE.wait().await));
                t
            }

            pub async fn tasks() -> Vec<String> {
                let mut t = Vec::new();
                let h = task::spawn(async { 1u32 });
                t.push(d(h.await));
                let h = task::spawn(std::future::pending::<()>());
                let ah = h.abort_handle();
                t.push(d((h.id() == ah.id(), ah.is_finished())));
                ah.clone().abort();
                let r = h.await;
                t.push(d((
                    r.as_ref().map_err(|e| e.is_cancelled()),
                    ah.is_finished(),
                )));
                let h = task::spawn(std::future::pending::<()>());
                h.abort();
                t.push(d(h.await.map_err(|e| (e.is_cancelled(), e.is_panic()))));
                let h = task::spawn(async { panic!("boom") });
                let e = h.await.unwrap_err();
                t.push(d((
                    e.is_panic(),
                    e.is_cancelled(),
                    e.to_string().contains("panicked"),
                )));
                let b = task::spawn_blocking(|| 6 * 7);
                t.push(d(b.await));
                task::yield_now().await;
                // JoinSet
                let mut set = JoinSet::new();
                t.push(d((
                    set.len(),
                    set.is_empty(),
                    set.try_join_next().is_none(),
                )));
                let (tx, rx) = tokio::sync::oneshot::channel::<u32>();
                let slow = set.spawn(async move { rx.await.unwrap() });
                set.spawn(async { 1 });
                set.spawn_blocking(|| 2);
                t.push(d(set.len()));
                let mut got = Vec::new();
                for _ in 0..2 {
                    got.push(set.join_next().await.unwrap().unwrap());
                }
                got.sort();
                t.push(d(got));
                t.push(d(set.try_join_next().is_none()));
                tx.send(3).unwrap();
                let (id, v) = set.join_next_with_id().await.unwrap().unwrap();
                t.push(d((id == slow.id(), v, set.join_next().await.is_none())));
                let a = set.spawn(std::future::pending());
                set.spawn(std::future::pending());
                a.abort();
                let r = set.join_next().await.unwrap();
                t.push(d(r.map_err(|e| e.is_cancelled())));
                set.abort_all();
                let r = set.join_next().await.unwrap();
                t.push(d((r.map_err(|e| e.is_cancelled()), set.len())));
                set.spawn(std::future::pending());
                set.shutdown().await;
                t.push(d(set.len()));
                set.spawn(async { 5 });
                set.detach_all();
                t.push(d(set.len()));
                let set: JoinSet<u32> = (1..=3).map(|i| async move { i }).collect();
                let mut all = set.join_all().await;
                all.sort();
                t.push(d(all));
                let mut set = JoinSet::<u32>::default();
                set.extend((4..=5).map(|i| async move { i }));
                settle().await;
                let mut polled = Vec::new();
                while let Some(r) = std::future::poll_fn(|cx| set.poll_join_next(cx)).await {
                    polled.push(r.unwrap());
                }
                polled.sort();
                t.push(d(polled));
                t.push(d(format!("{:?}", JoinSet::<u8>::new())));
                let mut set = JoinSet::new();
                set.spawn(async { 1u8 });
                let r = std::future::poll_fn(|cx| set.poll_join_next_with_id(cx)).await;
                t.push(d(r.map(|r| r.map(|(_, v)| v))));
                // LocalSet and spawn_local
                let local = task::LocalSet::new();
                let rc = std::rc::Rc::new(4u32);
                let r2 = rc.clone();
                let v = local
                    .run_until(async move {
                        let h = task::spawn_local(async move { *r2 + 1 });
                        let mut set = JoinSet::new();
                        set.spawn_local(async { 2u32 });
                        (h.await.unwrap(), set.join_next().await.unwrap().unwrap())
                    })
                    .await;
                t.push(d(v));
                let h = local.spawn_local(async move { *rc * 2 });
                local.await;
                t.push(d(h.await));
                let handle = tokio::runtime::Handle::current();
                let mut set = JoinSet::new();
                set.spawn_on(async { 7u8 }, &handle);
                set.spawn_blocking_on(|| 8u8, &handle);
                let mut v = vec![
                    set.join_next().await.unwrap().unwrap(),
                    set.join_next().await.unwrap().unwrap(),
                ];
                v.sort();
                t.push(d(v));
                t
            }

            pub async fn streams_and_sinks() -> Vec<String> {
                let mut t = Vec::new();
                let (tx, rx) = mpsc::channel::<u32>(4);
                let mut s = wrappers::ReceiverStream::new(rx);
                t.push(d(s.size_hint()));
                tx.send(1).await.unwrap();
                tx.send(2).await.unwrap();
                t.push(d((s.next().await, s.size_hint())));
                s.close();
                t.push(d((s.size_hint(), tx.try_send(3).is_err())));
                t.push(d((s.next().await, s.next().await, s.as_ref().is_closed())));
                let rx = s.into_inner();
                t.push(d(rx.is_closed()));
                let (tx, rx) = mpsc::unbounded_channel::<u32>();
                let mut s = wrappers::UnboundedReceiverStream::from(rx);
                tx.send(5).unwrap();
                t.push(d(s.size_hint()));
                drop(tx);
                t.push(d((s.size_hint(), s.next().await, s.next().await)));
                let _ = s.as_mut().try_recv();
                // Broadcast: a lagging receiver gets an error item, then the rest.
                let (tx, rx) = broadcast::channel::<u32>(2);
                let mut s = wrappers::BroadcastStream::new(rx);
                for i in 0..4 {
                    tx.send(i).unwrap();
                }
                t.push(d(s.next().await));
                t.push(d((s.next().await, s.next().await)));
                let h = task::spawn(async move { s.next().await });
                settle().await;
                tx.send(9).unwrap();
                t.push(d(h.await.unwrap()));
                let mut s = wrappers::BroadcastStream::from(tx.subscribe());
                drop(tx);
                t.push(d(s.next().await));
                let e = wrappers::errors::BroadcastStreamRecvError::Lagged(3);
                t.push(d((e.to_string(), e.clone() == e)));
                // Watch: `new` yields the current value first; `from_changes` does not.
                let (tx, rx) = watch::channel(0u32);
                let mut all = wrappers::WatchStream::new(rx.clone());
                let mut changes = wrappers::WatchStream::from_changes(rx);
                t.push(d(all.next().await));
                tx.send(1).unwrap();
                t.push(d((all.next().await, changes.next().await)));
                let h = task::spawn(async move { (changes.next().await, changes.next().await) });
                settle().await;
                tx.send(2).unwrap();
                settle().await;
                drop(tx);
                t.push(d((h.await.unwrap(), all.next().await, all.next().await)));
                // PollSender
                let (tx, mut rx) = mpsc::channel::<u32>(1);
                let mut ps = util::PollSender::new(tx);
                t.push(d((ps.is_closed(), ps.get_ref().is_some())));
                t.push(d(std::future::poll_fn(|cx| ps.poll_reserve(cx)).await));
                t.push(d(ps.send_item(1)));
                let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
                t.push(d(ps.poll_reserve(&mut cx)));
                t.push(d(ps.abort_send()));
                t.push(d((rx.recv().await, ps.abort_send())));
                ps.send(2).await.unwrap();
                t.push(d(rx.recv().await));
                let mut other = ps.clone();
                t.push(d(std::future::poll_fn(|cx| other.poll_reserve(cx)).await));
                other.close();
                t.push(d((
                    other.is_closed(),
                    other.send_item(3).map_err(|e| e.into_inner()),
                )));
                t.push(d((rx.recv().await, ps.is_closed())));
                ps.close();
                t.push(d(std::future::poll_fn(|cx| ps.poll_reserve(cx))
                    .await
                    .map_err(|e| e.to_string())));
                let (tx, rx) = mpsc::channel::<u32>(1);
                let mut ps = util::PollSender::new(tx);
                drop(rx);
                t.push(d(std::future::poll_fn(|cx| ps.poll_reserve(cx))
                    .await
                    .map_err(|e| e.into_inner())));
                t.push(d(ps.send(4).await.map_err(|e| e.into_inner())));
                // JoinSetStream
                let mut set = JoinSet::new();
                set.spawn(async { 1u8 });
                let mut s = wrappers::JoinSetStream::new(set);
                t.push(d(s.size_hint()));
                t.push(d(s.next().await.map(|r| r.unwrap())));
                t.push(d((
                    s.next().await.is_none(),
                    s.as_ref().len(),
                    s.into_inner().len(),
                )));
                t
            }
        }
    };
}

more_scenarios!(
    tk2,
    sync = tokio::sync,
    task = tokio::task,
    wrappers = tokio_stream::wrappers,
    util = tokio_util::sync
);
more_scenarios!(
    lt2,
    sync = leaktop_agent::sync,
    task = leaktop_agent::task,
    wrappers = leaktop_agent::stream::wrappers,
    util = leaktop_agent::util::sync
);

/// Runs a scenario on a current-thread runtime with timers; a scenario that hangs fails
/// after 60 s instead of stalling the suite.
fn run_timed<F: std::future::Future<Output = Vec<String>>>(f: F) -> Vec<String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .expect("runtime")
        .block_on(async { tokio::time::timeout(std::time::Duration::from_secs(60), f).await })
        .expect("the scenario hung")
}

macro_rules! compare_more {
    ($($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                let want = run_timed(tk2::$name());
                let got = run_timed(lt2::$name());
                if std::env::var_os("CONFORMANCE_PRINT").is_some() {
                    eprintln!("{}: {want:#?}", stringify!($name));
                }
                assert_eq!(got, want, "leaktop_agent differs from tokio");
            }
        )*
    };
}

compare_more!(
    mutex_api,
    mutex_owned_fairness_and_cancel,
    rwlock_api,
    semaphore_api,
    notify_and_barrier,
    cells,
    tasks,
    streams_and_sinks,
);
