//! Verdicts on synthetic message streams: a simulated agent emits the hello, locations,
//! history and snapshots a real one would, the session folds them, and the verdicts must
//! single out exactly the leaking sites.

use leaktop_agent::wire::{
    AgentHello, AgentMsg, BlockedGroup, ChannelKind, ChannelStats, GroupKey, History, LocId,
    Location, Op, Sample, SiteHistory, SiteKind, SiteStats, Snapshot,
};

use super::*;

const SEC: u64 = 1000;
const MIN: u64 = 60 * SEC;

/// What one site looks like at agent time `t`.
type Gen = Box<dyn Fn(u64) -> (SiteStats, Vec<BlockedGroup>)>;

struct Sim {
    session: Session,
    sites: Vec<(LocId, Gen)>,
    seq: u64,
}

fn hello(pid: u32, start_time_ticks: u64, now_ms: u64) -> AgentMsg {
    AgentMsg::Hello(AgentHello {
        protocol: 1,
        agent_version: "0.1.0".into(),
        pid,
        start_time_ticks,
        exe: "/bin/app".into(),
        build_id: vec![],
        uid: 1000,
        origin_unix_ms: 1_700_000_000_000,
        now_ms,
        sample_interval_ms: 1000,
        history_len: 600,
        site_cap: 10_000,
    })
}

impl Sim {
    fn new() -> Sim {
        let mut session = Session::new();
        session.apply_msg(&hello(42, 1000, 0));
        Sim {
            session,
            sites: Vec::new(),
            seq: 0,
        }
    }

    fn site(&mut self, id: LocId, gen: impl Fn(u64) -> (SiteStats, Vec<BlockedGroup>) + 'static) {
        self.session.apply_msg(&AgentMsg::Location {
            id,
            loc: Location {
                file: format!("src/site{id}.rs"),
                line: id,
                column: 5,
            },
        });
        self.sites.push((id, Box::new(gen)));
    }

    fn snapshot_at(&mut self, t: u64) -> AgentMsg {
        self.seq += 1;
        let mut snap = Snapshot {
            seq: self.seq,
            now_ms: t,
            ..Default::default()
        };
        for (_, gen) in &self.sites {
            let (st, groups) = gen(t);
            snap.sites.push(st);
            snap.groups.extend(groups);
        }
        snap.sites_seen = snap.sites.len() as u64;
        AgentMsg::Snapshot(snap)
    }

    /// Snapshots every `step` from `from` to `to` inclusive.
    fn run(&mut self, from: u64, to: u64, step: u64) {
        let mut t = from;
        while t <= to {
            let msg = self.snapshot_at(t);
            self.session.apply_msg(&msg);
            t += step;
        }
    }

    /// The agent's history rings (1 s samples from `from` to `end`), then one snapshot
    /// at `end`: what a client attaching at `end` receives.
    fn attach_at(&mut self, from: u64, end: u64) {
        let mut sites = Vec::new();
        for (id, gen) in &self.sites {
            let samples = (from / SEC..=end / SEC)
                .map(|s| sample_of(&gen(s * SEC).0))
                .collect();
            sites.push(SiteHistory { site: *id, samples });
        }
        self.session.apply_msg(&AgentMsg::History(History {
            interval_ms: 1000,
            end_ms: end,
            sites,
        }));
        let msg = self.snapshot_at(end);
        self.session.apply_msg(&msg);
    }

    fn verdict(&self, id: LocId, th: &Thresholds) -> SiteVerdict {
        verdict::assess_site(&self.session, id, th).expect("site in snapshot")
    }

    fn flagged(&self, th: &Thresholds) -> Vec<(LocId, Verdict)> {
        assess(&self.session, th)
            .into_iter()
            .filter(|v| v.is_finding())
            .map(|v| (v.site, v.verdict))
            .collect()
    }
}

/// The evidence as the reports word it (the sentences are part of what these pin).
fn words(sim: &Sim, v: &SiteVerdict) -> Vec<String> {
    crate::report::evidence::sentences(&sim.session, v)
}

fn sample_of(st: &SiteStats) -> Sample {
    Sample {
        live: st.live as u32,
        blocked_send: st.blocked_send as u32,
        blocked_recv: st.blocked_recv as u32,
        spawned: st.spawned,
        completed: st.completed,
    }
}

fn stats(site: LocId, live: u64, oldest_live_ms: Option<u64>) -> SiteStats {
    SiteStats {
        site,
        kind: Some(SiteKind::Spawn),
        live,
        spawned: live,
        oldest_live_ms,
        ..Default::default()
    }
}

fn chan(kind: ChannelKind, senders: u64, receivers: u64) -> ChannelStats {
    ChannelStats {
        id: 1,
        kind,
        site: 900,
        capacity: None,
        len: None,
        senders,
        receivers,
        closed: false,
        last_send_ms: None,
        last_recv_ms: None,
    }
}

fn group(
    site: LocId,
    op: Op,
    count: u64,
    oldest_since_ms: u64,
    channel: ChannelStats,
) -> BlockedGroup {
    BlockedGroup {
        key: GroupKey {
            site,
            op,
            channel_site: 900,
            call_site: 901,
            stack: None,
        },
        kind: channel.kind,
        count,
        oldest_since_ms,
        channel: Some(channel),
    }
}

/// `n` tasks blocked on `op` in one group.
fn blocked(site: LocId, op: Op, n: u64, since: u64, spawned: u64, c: ChannelStats) -> Gen {
    Box::new(move |_t| {
        let mut st = stats(site, n, Some(since));
        st.spawned = spawned.max(n);
        if op.is_send() {
            st.blocked_send = n;
        } else {
            st.blocked_recv = n;
        }
        let groups = if n > 0 {
            vec![group(site, op, n, since, c.clone())]
        } else {
            vec![]
        };
        (st, groups)
    })
}

/// 5 000 tasks waiting on a broadcast that sends every 30 s: each wait is at most 30 s old.
fn healthy_waiters(site: LocId) -> impl Fn(u64) -> (SiteStats, Vec<BlockedGroup>) {
    move |t| {
        let last_send = t - t % (30 * SEC);
        let mut c = chan(ChannelKind::Broadcast, 1, 5000);
        c.last_send_ms = Some(last_send);
        c.last_recv_ms = Some(last_send);
        blocked(site, Op::Recv, 5000, last_send, 5000, c)(t)
    }
}

/// A busy mpsc: 200 producers blocked on send, but the consumer drains it all the time;
/// the live count jitters with churn, spawned keeps rising.
fn busy_channel(site: LocId) -> impl Fn(u64) -> (SiteStats, Vec<BlockedGroup>) {
    move |t| {
        let jitter = (t / SEC * 7919) % 11;
        let n = 195 + jitter;
        let mut c = chan(ChannelKind::Mpsc, n, 1);
        c.capacity = Some(16);
        c.len = Some(16);
        c.last_send_ms = Some(t.saturating_sub(3));
        c.last_recv_ms = Some(t.saturating_sub(5));
        // Adversarial: the oldest producer has waited since the start (unfair wakeups).
        let (mut st, g) = blocked(site, Op::Send, n, 0, 0, c)(t);
        st.spawned = n + t / 10;
        st.completed = st.spawned - n;
        (st, g)
    }
}

/// Leak from `start`: one task every `every` ms, each blocked on a oneshot recv whose
/// sender is alive in a map but never sends.
fn oneshot_leak(
    site: LocId,
    start: u64,
    every: u64,
) -> impl Fn(u64) -> (SiteStats, Vec<BlockedGroup>) {
    move |t| {
        let n = if t < start {
            0
        } else {
            (t - start) / every + 1
        };
        blocked(
            site,
            Op::Recv,
            n,
            start,
            n,
            chan(ChannelKind::Oneshot, 1, 1),
        )(t)
    }
}

/// Leak from `start`: one idle task (a socket read without timeout) every `every` ms.
fn idle_leak(
    site: LocId,
    start: u64,
    every: u64,
) -> impl Fn(u64) -> (SiteStats, Vec<BlockedGroup>) {
    move |t| {
        let n = if t < start {
            0
        } else {
            (t - start) / every + 1
        };
        (stats(site, n, (n > 0).then_some(start)), vec![])
    }
}

#[test]
fn steady_busy_channel_is_never_flagged() {
    let mut sim = Sim::new();
    sim.site(1, busy_channel(1));
    sim.run(0, 15 * MIN, SEC);
    let th = Thresholds::default();
    let v = sim.verdict(1, &th);
    assert_eq!(v.verdict, Verdict::None, "{v:#?}");
    assert_eq!(v.stuck_tasks, 0);
    assert!(v.evidence.is_empty());
    // Even with hair-trigger ages: progress on the channel is what counts.
    let twitchy = Thresholds {
        min_age_ms: 10,
        stuck_age_ms: 10,
        ..Thresholds::default()
    };
    assert!(
        sim.flagged(&twitchy).is_empty(),
        "{:#?}",
        sim.flagged(&twitchy)
    );
}

#[test]
fn slow_leak_among_5000_healthy_waiters_flags_that_site_alone() {
    let mut sim = Sim::new();
    sim.site(1, healthy_waiters(1));
    sim.site(2, busy_channel(2));
    sim.site(3, oneshot_leak(3, 2 * MIN, 2 * SEC));
    sim.site(4, |_| (stats(4, 3, Some(0)), vec![])); // long-lived idle workers
    sim.run(0, 2 * MIN, SEC);
    let th = Thresholds::default();
    assert!(sim.flagged(&th).is_empty(), "{:#?}", sim.flagged(&th));
    sim.run(2 * MIN + SEC, 5 * MIN, SEC);
    assert_eq!(sim.flagged(&th), vec![(3, Verdict::Leak)]);
    let v = sim.verdict(3, &th);
    assert!((v.rate_per_min - 30.0).abs() < 1.0, "{}", v.rate_per_min);
    assert_eq!(v.stuck_tasks, 91);
    assert_eq!(v.oldest_stuck_age_ms, Some(3 * MIN));
    let text = words(&sim, &v).join("\n");
    assert!(
        text.contains("rose from 31 to 91 over the last 2m00s (+29."),
        "{text}"
    );
    assert!(
        text.contains("91 tasks blocked in chan recv at <location 901> on a oneshot channel"),
        "{text}"
    );
    assert!(
        text.contains("its sender is alive but has never sent"),
        "{text}"
    );
    // The healthy sites get a clean bill, with their own numbers.
    let healthy = sim.verdict(1, &th);
    assert_eq!((healthy.verdict, healthy.live), (Verdict::None, 5000));
    assert_eq!(healthy.rate_per_min, 0.0);
}

#[test]
fn defaults_flag_a_leak_growing_90s_with_tasks_stuck_60s() {
    let th = Thresholds::default();
    // Blocked flavour: tasks spawned from 5 min on, each blocked 30 s after its spawn,
    // so at 6m30s the leak has grown for 90 s and its oldest tasks have been stuck 60 s.
    let mut sim = Sim::new();
    sim.site(1, |t| {
        let start = 5 * MIN;
        let n = if t < start { 0 } else { (t - start) / SEC + 1 };
        let stuck_since = start + 30 * SEC;
        let b = if t < stuck_since {
            0
        } else {
            (t - stuck_since) / SEC + 1
        };
        let mut st = stats(1, n, (n > 0).then_some(start));
        st.blocked_send = b;
        let mut c = chan(ChannelKind::Mpsc, 100, 1);
        c.capacity = Some(1);
        c.len = Some(1);
        c.last_recv_ms = Some(stuck_since - 5 * SEC);
        let groups = (b > 0)
            .then(|| group(1, Op::Send, b, stuck_since, c))
            .into_iter()
            .collect();
        (st, groups)
    });
    sim.attach_at(0, 6 * MIN + 30 * SEC);
    let v = sim.verdict(1, &th);
    assert_eq!(v.verdict, Verdict::Leak, "{v:#?}");
    assert_eq!(v.oldest_stuck_age_ms, Some(60 * SEC));
    assert!(
        words(&sim, &v)[1].contains(
            "its receiver is alive but has not received since the wait began (queue 1/1)"
        ),
        "{:#?}",
        words(&sim, &v)
    );

    // Idle flavour: same growth, nothing instrumented to wait on.
    let mut sim = Sim::new();
    sim.site(1, idle_leak(1, 5 * MIN, SEC));
    sim.attach_at(0, 6 * MIN + 30 * SEC);
    let v = sim.verdict(1, &th);
    assert_eq!(v.verdict, Verdict::Leak, "{v:#?}");
    assert!(
        words(&sim, &v)[1].contains("91 tasks are idle"),
        "{:#?}",
        words(&sim, &v)
    );
    assert!(
        words(&sim, &v)[1].contains("oldest live task is 1m30s old"),
        "{:#?}",
        words(&sim, &v)
    );
}

#[test]
fn growth_then_plateau_then_growth() {
    let th = Thresholds::default();
    let mut sim = Sim::new();
    // +1/s for 2 min, flat for 5 min, then +1/s again.
    sim.site(1, |t| {
        let n = match t {
            t if t < 2 * MIN => t / SEC,
            t if t < 7 * MIN => 120,
            t => 120 + (t - 7 * MIN) / SEC,
        };
        (stats(1, n, Some(0)), vec![])
    });
    sim.run(0, 2 * MIN, SEC);
    assert_eq!(sim.flagged(&th), vec![(1, Verdict::Leak)]);
    // Halfway through the window into the plateau the fit still rises; once the window
    // is all plateau, it is not growing any more.
    sim.run(2 * MIN + SEC, 4 * MIN + 10 * SEC, SEC);
    let v = sim.verdict(1, &th);
    assert_eq!(v.verdict, Verdict::None, "{v:#?}");
    assert_eq!(v.rate_per_min, 0.0);
    sim.run(4 * MIN + 11 * SEC, 7 * MIN, SEC);
    assert!(sim.flagged(&th).is_empty());
    sim.run(7 * MIN + SEC, 8 * MIN + 30 * SEC, SEC);
    let v = sim.verdict(1, &th);
    assert_eq!(v.verdict, Verdict::Leak, "{v:#?}");
    assert!((v.rate_per_min - 60.0).abs() < 2.0, "{}", v.rate_per_min);
}

#[test]
fn a_site_that_leaks_and_then_recovers_is_cleared() {
    let th = Thresholds::default();
    let mut sim = Sim::new();
    // Stuck senders pile up for 3 min, then the receiver wakes up and drains them all.
    sim.site(1, |t| {
        if t <= 3 * MIN {
            let n = t / (2 * SEC) + 1;
            let mut c = chan(ChannelKind::Mpsc, n, 1);
            c.last_recv_ms = None;
            blocked(1, Op::Send, n, 0, n, c)(t)
        } else {
            let mut st = stats(1, 0, None);
            st.spawned = 91;
            st.completed = 91;
            (st, vec![])
        }
    });
    sim.run(0, 3 * MIN, SEC);
    assert_eq!(sim.flagged(&th), vec![(1, Verdict::Leak)]);
    sim.run(3 * MIN + SEC, 3 * MIN + 5 * SEC, SEC);
    let v = sim.verdict(1, &th);
    assert_eq!(v.verdict, Verdict::None, "{v:#?}");
    assert!(v.evidence.is_empty());
}

#[test]
fn a_fixed_set_of_stuck_tasks_is_stuck_not_leaking() {
    let th = Thresholds::default();
    let mut sim = Sim::new();
    // 4 workers wait on a receiver whose senders live on but never send.
    sim.site(
        1,
        blocked(1, Op::Recv, 4, 10 * SEC, 4, chan(ChannelKind::Mpsc, 2, 1)),
    );
    // 3 tasks wait to send into a channel whose every receiver is gone.
    sim.site(
        2,
        blocked(2, Op::Send, 3, 10 * SEC, 3, chan(ChannelKind::Mpsc, 3, 0)),
    );
    sim.run(0, 4 * MIN, SEC);
    assert!(sim.flagged(&th).is_empty(), "{:#?}", sim.flagged(&th));
    sim.run(4 * MIN + SEC, 6 * MIN, SEC);
    assert_eq!(
        sim.flagged(&th),
        vec![(1, Verdict::Stuck), (2, Verdict::Stuck)]
    );
    let one = words(&sim, &sim.verdict(1, &th)).join("\n");
    assert!(one.contains("4 tasks blocked in chan recv"), "{one}");
    assert!(one.contains("5m50s without progress"), "{one}");
    assert!(
        one.contains("2 senders are alive but has never sent"),
        "{one}"
    );
    let two = words(&sim, &sim.verdict(2, &th)).join("\n");
    assert!(two.contains("every receiver is gone"), "{two}");
}

#[test]
fn waiters_that_get_a_message_every_30s_are_never_stuck_even_when_they_grow() {
    let th = Thresholds::default();
    let mut sim = Sim::new();
    // Subscribers keep joining; each receives every 30 s.
    sim.site(1, |t| {
        let n = 10 + t / (2 * SEC);
        let last_send = t - t % (30 * SEC);
        let mut c = chan(ChannelKind::Broadcast, 1, n);
        c.last_send_ms = Some(last_send);
        blocked(1, Op::Recv, n, last_send, n, c)(t)
    });
    sim.run(0, 10 * MIN, SEC);
    let v = sim.verdict(1, &th);
    assert_eq!(v.verdict, Verdict::Growing, "{v:#?}");
    assert_eq!(v.stuck_tasks, 0);
    assert!(
        words(&sim, &v)[1].contains("no task of this site has waited"),
        "{v:#?}"
    );
}

#[test]
fn history_received_at_attach_shows_growth_that_came_before() {
    let th = Thresholds::default();
    let mut sim = Sim::new();
    sim.site(1, idle_leak(1, MIN, 2 * SEC));
    sim.site(2, |_| (stats(2, 1, Some(0)), vec![]));
    // Nothing but the history and one snapshot.
    sim.attach_at(0, 4 * MIN);
    assert_eq!(sim.flagged(&th), vec![(1, Verdict::Leak)]);
    assert_eq!(sim.session.observed_ms(), 4 * MIN);
    // A first snapshot alone cannot decide growth.
    let mut fresh = Sim::new();
    fresh.site(1, idle_leak(1, MIN, 2 * SEC));
    fresh.run(4 * MIN, 4 * MIN, SEC);
    let v = fresh.verdict(1, &th);
    assert!(!v.growth.enough_data);
    assert_eq!(v.verdict, Verdict::None);
}

#[test]
fn agent_restart_under_a_reused_pid_starts_a_new_session() {
    let th = Thresholds::default();
    let mut sim = Sim::new();
    sim.site(1, idle_leak(1, 0, SEC));
    sim.run(0, 3 * MIN, SEC);
    assert_eq!(sim.flagged(&th), vec![(1, Verdict::Leak)]);
    sim.session.mark_baseline();
    // The same process again (a reconnect): nothing is lost.
    sim.session.apply_msg(&hello(42, 1000, 3 * MIN));
    assert_eq!(sim.flagged(&th), vec![(1, Verdict::Leak)]);
    assert!(sim.session.baseline.is_some());
    // Same pid, another start time: another process; its clock starts again at 0.
    sim.session.apply_msg(&hello(42, 5000, 100));
    assert!(sim.session.sites.is_empty());
    assert!(sim.session.baseline.is_none());
    sim.sites.clear();
    sim.site(1, |_| (stats(1, 2, Some(0)), vec![]));
    sim.run(SEC, 3 * MIN, SEC);
    assert!(sim.flagged(&th).is_empty(), "{:#?}", sim.flagged(&th));
    assert_eq!(sim.session.sites[&1].series.start_ms(), Some(SEC));
}

#[test]
fn counters_that_wrap_give_sane_deltas_and_no_panic() {
    let th = Thresholds::default();
    let mut sim = Sim::new();
    sim.site(1, |t| {
        let mut st = stats(1, 5, Some(0));
        st.spawned = (u64::MAX - 100).wrapping_add(t / SEC * 10);
        st.completed = st.spawned.wrapping_sub(5);
        (st, vec![])
    });
    sim.run(0, 5 * SEC, SEC);
    sim.session.mark_baseline();
    sim.run(6 * SEC, 30 * SEC, SEC);
    let d = sim.session.delta(1).expect("delta");
    assert_eq!((d.live, d.spawned, d.completed), (0, 250, 250));
    assert_eq!(d.elapsed_ms, 25 * SEC);
    assert!(sim.flagged(&th).is_empty());
    // Live counts past u32 saturate in samples instead of wrapping.
    sim.site(2, |_| (stats(2, u64::MAX, Some(0)), vec![]));
    sim.run(31 * SEC, 31 * SEC, SEC);
    assert_eq!(sim.session.sites[&2].series[0].sample.live, u32::MAX);
}

#[test]
fn baseline_in_the_past_comes_from_history() {
    let mut sim = Sim::new();
    sim.site(1, idle_leak(1, 0, SEC));
    sim.attach_at(0, 2 * MIN);
    sim.session.mark_baseline_at(2 * MIN - 30 * SEC);
    let d = sim.session.delta(1).unwrap();
    assert_eq!((d.live, d.spawned, d.elapsed_ms), (30, 30, 30 * SEC));
    assert!((d.live_per_min() - 60.0).abs() < 1e-9);
    // A site born after the mark counts from zero.
    sim.site(2, |_| (stats(2, 7, Some(0)), vec![]));
    sim.run(2 * MIN + SEC, 2 * MIN + SEC, SEC);
    assert_eq!(sim.session.delta(2).unwrap().live, 7);
    sim.session.clear_baseline();
    assert_eq!(sim.session.delta(1), None);
}

/// Seed 004 scenario 2: a task per message, each waiting on a downstream channel that
/// keeps draining, only slower than messages arrive. No stall (the channel moves), but
/// the queue of waiters grows and its oldest has waited for minutes: a leak.
#[test]
fn a_growing_queue_on_a_busy_channel_is_a_leak() {
    let th = Thresholds::default();
    let mut sim = Sim::new();
    sim.site(1, |t| {
        // 4 arrive per second, 1 leaves: the oldest waiter is 3/4 of the run old.
        let n = 1 + 3 * t / SEC;
        let mut c = chan(ChannelKind::Mpsc, n, 1);
        c.capacity = Some(16);
        c.len = Some(16);
        c.last_send_ms = Some(t.saturating_sub(200));
        c.last_recv_ms = Some(t.saturating_sub(200));
        let (mut st, g) = blocked(1, Op::Send, n, t / 4, 0, c)(t);
        st.spawned = 4 * t / SEC + 1;
        st.completed = st.spawned - n;
        (st, g)
    });
    sim.run(0, 3 * MIN, SEC);
    let v = sim.verdict(1, &th);
    assert_eq!(v.verdict, Verdict::Leak, "{v:#?}");
    let evidence = words(&sim, &v).join("\n");
    assert!(
        evidence.contains("while the channel keeps moving"),
        "{evidence}"
    );
}
