//! Lock holders and waits (`holders::lock_states`): the deadlock of two tasks taking two
//! mutexes in opposite order shows as a cycle naming both tasks' spawn and acquire sites;
//! uncontended locks stay out; waits end on acquire, abort and cancel; readers and permits
//! are counted; `const fn` locks know their creation site.

use std::sync::Arc;

use super::holders::lock_states;
use super::tests::{rt, settle};
use super::{Mutex, RwLock, Semaphore};
use crate::registry::registry;
use crate::wire::{self, ChannelKind, LockState};

/// The states of the locks created at `line` of this file (tests run in parallel: other
/// tests' locks are in the table too).
fn locks_at(lines: &[u32]) -> Vec<LockState> {
    lock_states()
        .into_iter()
        .filter(|l| {
            let loc = registry().location(l.site).expect("interned");
            loc.file.ends_with("sync/lock_tests.rs") && lines.contains(&loc.line)
        })
        .collect()
}

fn line_of(id: wire::LocId) -> u32 {
    registry().location(id).expect("interned").line
}

#[test]
fn two_tasks_taking_two_mutexes_in_opposite_order_show_a_wait_cycle() {
    rt().block_on(async {
        let l1 = line!() + 1;
        let a = Arc::new(Mutex::new(0u32));
        let l2 = line!() + 1;
        let b = Arc::new(Mutex::new(0u32));
        let gate = Arc::new(tokio::sync::Barrier::new(2));
        let (a1, b1, g1) = (a.clone(), b.clone(), gate.clone());
        let spawn1 = line!() + 1;
        let t1 = crate::spawn(async move {
            let _ga = a1.lock().await; // holds a
            g1.wait().await;
            let _gb = b1.lock().await; // waits for b
        });
        let (a2, b2, g2) = (a.clone(), b.clone(), gate.clone());
        let spawn2 = line!() + 1;
        let t2 = crate::spawn(async move {
            let _gb = b2.lock().await; // holds b
            g2.wait().await;
            let _ga = a2.lock().await; // waits for a
        });
        settle().await;
        let locks = locks_at(&[l1, l2]);
        assert_eq!(locks.len(), 2, "{locks:#?}");
        let (sa, sb) = if line_of(locks[0].site) == l1 {
            (&locks[0], &locks[1])
        } else {
            (&locks[1], &locks[0])
        };
        for (state, spawn, waits_on) in [(sa, spawn1, sb.id), (sb, spawn2, sa.id)] {
            assert_eq!(state.kind, ChannelKind::Mutex);
            assert_eq!((state.waiters, state.holders_total), (1, 1), "{state:#?}");
            let h = &state.holders[0];
            assert_ne!(h.task, 0);
            assert_eq!(h.site.map(line_of), Some(spawn));
            // Acquired on the line after `spawn` (`.lock()` in the task).
            assert_eq!(line_of(h.acquired_at), spawn + 1);
            assert_eq!(h.waits_on_lock, Some(waits_on));
            let w = h.waits.as_ref().expect("what the holder waits on");
            assert_eq!(w.op, wire::Op::Lock);
            assert_eq!(w.site, h.site.expect("site"));
            assert_eq!(w.call_site.map(line_of), Some(spawn + 3));
            let r = w.resource.expect("resource");
            assert_eq!(r.kind, ChannelKind::Mutex);
        }
        let mut want = vec![sa.id, sb.id];
        want.sort();
        assert_eq!(wire::lock_cycles(&locks), vec![want]);
        // The blocked groups name the op and the lock's creation site too.
        let groups = registry().snapshot_v2(0).groups;
        let on_a: Vec<_> = groups
            .iter()
            .filter(|g| {
                g.key.op == wire::Op::Lock && g.key.resource.is_some_and(|r| line_of(r.site) == l1)
            })
            .collect();
        assert_eq!(on_a.len(), 1, "{groups:#?}");
        assert_eq!(
            on_a[0].key.resource.map(|r| r.kind),
            Some(ChannelKind::Mutex)
        );
        assert_eq!(on_a[0].lock, Some(sa.id));
        // Breaking the deadlock (abort one) clears both.
        t1.abort();
        settle().await;
        assert!(t2.is_finished());
        assert!(locks_at(&[l1, l2]).is_empty(), "{:#?}", locks_at(&[l1, l2]));
    });
}

#[test]
fn uncontended_locks_are_not_listed_and_waits_end_on_acquire_and_cancel() {
    rt().block_on(async {
        let line = line!() + 1;
        let m = Arc::new(Mutex::new(()));
        drop(m.lock().await);
        let g = m.try_lock().expect("free");
        assert!(locks_at(&[line]).is_empty());
        drop(g);
        // A waiter that acquires leaves the table.
        let held = m.clone().lock_owned().await;
        let m2 = m.clone();
        let waiter = crate::spawn(async move {
            let _g = m2.lock().await;
        });
        settle().await;
        let s = locks_at(&[line]);
        assert_eq!((s.len(), s[0].waiters), (1, 1), "{s:#?}");
        drop(held);
        settle().await;
        assert!(waiter.is_finished());
        assert!(locks_at(&[line]).is_empty());
        // A lock future dropped by select! leaves it too.
        let held = m.lock().await;
        tokio::select! {
            biased;
            _ = m.lock() => unreachable!("held"),
            _ = std::future::ready(()) => {}
        }
        assert!(locks_at(&[line]).is_empty());
        drop(held);
    });
}

#[test]
fn readers_and_permits_are_counted_and_holders_named() {
    rt().block_on(async {
        let rw_line = line!() + 1;
        let rw = Arc::new(RwLock::new(0u32));
        let sem_line = line!() + 1;
        let sem = Arc::new(Semaphore::new(10));
        let mut readers = Vec::new();
        for _ in 0..6 {
            readers.push(rw.clone().read_owned().await);
        }
        let permits: Vec<_> = [3u32, 4, 1]
            .into_iter()
            .map(|n| sem.try_acquire_many(n).expect("permits"))
            .collect();
        let (rw2, sem2) = (rw.clone(), sem.clone());
        let w = crate::spawn(async move {
            *rw2.write().await += 1;
        });
        let s = crate::spawn(async move {
            let _p = sem2.acquire_many(5).await;
        });
        settle().await;
        let states = locks_at(&[rw_line, sem_line]);
        assert_eq!(states.len(), 2, "{states:#?}");
        for st in &states {
            match st.kind {
                ChannelKind::RwLock => {
                    assert_eq!((st.holders_total, st.waiters), (6, 1));
                    assert_eq!(st.holders.len(), super::holders::SHARED_SLOTS);
                }
                ChannelKind::Semaphore => {
                    assert_eq!((st.holders_total, st.waiters), (8, 1));
                    assert_eq!(st.holders.len(), 3);
                    // Outside instrumented tasks: task 0, no spawn site.
                    assert!(st.holders.iter().all(|h| h.task == 0 && h.site.is_none()));
                }
                k => panic!("unexpected {k:?}"),
            }
        }
        drop(readers);
        drop(permits);
        settle().await;
        assert!(w.is_finished() && s.is_finished());
        assert!(locks_at(&[rw_line, sem_line]).is_empty());
    });
}

static STATIC_LOCK: Mutex<u32> = Mutex::const_new(0);
const STATIC_LINE: u32 = line!() - 1;

#[test]
fn a_const_mutex_records_its_creation_site_on_first_use() {
    rt().block_on(async {
        let held = STATIC_LOCK.lock().await;
        let waiter = crate::spawn(async {
            *STATIC_LOCK.lock().await += 1;
        });
        settle().await;
        let s = locks_at(&[STATIC_LINE]);
        assert_eq!(s.len(), 1, "{:#?}", lock_states());
        assert_eq!(s[0].holders.len(), 1);
        drop(held);
        settle().await;
        assert!(waiter.is_finished());
    });
}
