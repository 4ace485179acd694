//! Synthetic message streams: what an agent would send, built by hand so the screens
//! they produce are the same on every machine.

use leaktop_agent::wire::{
    AgentHello, AgentMsg, BlockedGroup, ChannelKind, ChannelSiteStats, ChannelStats, GroupKey,
    History, Location, Mapping, Op, Sample, SiteHistory, SiteKind, SiteStats, Snapshot,
};

use crate::source::Event;

pub const PID: u32 = 4242;
pub const EXE: &str = "/srv/orders/bin/orders-api";
/// Agent ms of the snapshot: the process has been up 5m12s.
pub const NOW: u64 = 312_000;

pub const LEAK_SEND: u32 = 1;
pub const HEALTHY: u32 = 4;
pub const LEAK_RECV: u32 = 5;
pub const IDLE_GROWING: u32 = 8;
pub const UNINSTRUMENTED: u32 = 9;

pub fn hello() -> AgentMsg {
    AgentMsg::Hello(AgentHello {
        protocol: 1,
        agent_version: "0.1.0".into(),
        pid: PID,
        start_time_ticks: 777,
        exe: EXE.into(),
        build_id: vec![0xab, 0xcd],
        uid: 1000,
        origin_unix_ms: 1_700_000_000_000,
        now_ms: 0,
        sample_interval_ms: 1000,
        history_len: 600,
        site_cap: 10_000,
    })
}

fn loc(id: u32, file: &str, line: u32, column: u32) -> AgentMsg {
    AgentMsg::Location {
        id,
        loc: Location {
            file: file.into(),
            line,
            column,
        },
    }
}

fn site(id: u32, live: u64, send: u64, recv: u64, spawned: u64, oldest: u64) -> SiteStats {
    SiteStats {
        site: id,
        kind: Some(SiteKind::Spawn),
        live,
        running: 0,
        blocked_send: send,
        blocked_recv: recv,
        spawned,
        completed: spawned - live,
        oldest_live_ms: Some(oldest),
    }
}

/// A process with nothing spawned yet.
pub fn empty() -> Vec<Event> {
    vec![
        Event::Msg(hello()),
        Event::Msg(AgentMsg::History(History {
            interval_ms: 1000,
            end_ms: 2000,
            sites: vec![],
        })),
        Event::Msg(AgentMsg::Snapshot(Snapshot {
            seq: 1,
            now_ms: 2000,
            ..Default::default()
        })),
    ]
}

/// Live count of the send leak at second `i` of its history: 13.5 new tasks a second.
fn ramp(i: u64) -> u32 {
    (i * 27 / 2) as u32
}

/// A service with a forgotten-sender leak (site 1), a per-connection writer stuck on
/// `recv` (site 5), a growing site whose tasks are all young (8), a healthy pool (4) and the
/// uninstrumented row.
pub fn leaky() -> Vec<Event> {
    let mut m = vec![
        hello(),
        loc(LEAK_SEND, "src/server/handler.rs", 42, 9),
        loc(2, "src/server/handler.rs", 38, 23),
        loc(3, "src/server/search.rs", 17, 13),
        loc(HEALTHY, "src/worker/pool.rs", 10, 5),
        loc(LEAK_RECV, "src/ws/session.rs", 88, 17),
        loc(6, "src/ws/registry.rs", 30, 19),
        loc(7, "src/ws/session.rs", 91, 25),
        loc(
            IDLE_GROWING,
            "/home/dev/.cargo/registry/src/index.crates.io-6f17d22bba15001f/hyper-1.4.1/src/client/pool.rs",
            212,
            13,
        ),
        loc(UNINSTRUMENTED, "<uninstrumented>", 0, 0),
        AgentMsg::Modules(vec![Mapping {
            start: 0x5555_5555_0000,
            end: 0x5555_5600_0000,
            offset: 0,
            path: EXE.into(),
        }]),
        AgentMsg::Stack {
            id: 11,
            frames: (0..16u64).map(|i| 0x5555_5555_a000 + i * 0x1f3).collect(),
        },
    ];
    let n = 300u64;
    let end = NOW - 1000;
    let mut hist = Vec::new();
    for (id, f) in [
        (LEAK_SEND, Box::new(ramp) as Box<dyn Fn(u64) -> u32>),
        (HEALTHY, Box::new(|i| 8 + (i % 3) as u32)),
        (LEAK_RECV, Box::new(|i| (i / 20) as u32)),
        (IDLE_GROWING, Box::new(|i| (i / 20) as u32 + 2)),
    ] {
        hist.push(SiteHistory {
            site: id,
            samples: (0..n)
                .map(|i| Sample {
                    live: f(i),
                    ..Default::default()
                })
                .collect(),
        });
    }
    m.push(AgentMsg::History(History {
        interval_ms: 1000,
        end_ms: end,
        sites: hist,
    }));
    let send_group = BlockedGroup {
        key: GroupKey {
            site: LEAK_SEND,
            op: Op::Send,
            channel_site: 2,
            call_site: 3,
            stack: Some(11),
        },
        kind: ChannelKind::Mpsc,
        count: 4_211,
        oldest_since_ms: 0,
        channel: Some(ChannelStats {
            id: 1,
            kind: ChannelKind::Mpsc,
            site: 2,
            capacity: Some(1),
            len: Some(1),
            senders: 1,
            receivers: 1,
            closed: false,
            last_send_ms: Some(0),
            last_recv_ms: None,
        }),
    };
    let recv_group = BlockedGroup {
        key: GroupKey {
            site: LEAK_RECV,
            op: Op::Recv,
            channel_site: 6,
            call_site: 7,
            stack: None,
        },
        kind: ChannelKind::UnboundedMpsc,
        count: 15,
        oldest_since_ms: 12_000,
        channel: Some(ChannelStats {
            id: 9,
            kind: ChannelKind::UnboundedMpsc,
            site: 6,
            capacity: None,
            len: Some(0),
            senders: 1,
            receivers: 1,
            closed: false,
            last_send_ms: Some(100_000),
            last_recv_ms: Some(100_000),
        }),
    };
    let small_send = BlockedGroup {
        key: GroupKey {
            site: LEAK_SEND,
            op: Op::Reserve,
            channel_site: 2,
            call_site: 3,
            stack: None,
        },
        kind: ChannelKind::Mpsc,
        count: 1,
        oldest_since_ms: 300_000,
        channel: None,
    };
    let mut uninstrumented = site(UNINSTRUMENTED, 3, 0, 0, 3, 1000);
    uninstrumented.kind = Some(SiteKind::Uninstrumented);
    uninstrumented.oldest_live_ms = None;
    m.push(AgentMsg::Snapshot(Snapshot {
        seq: 7,
        now_ms: NOW,
        sites: vec![
            site(LEAK_SEND, 4_212, 4_212, 0, 4_300, 0),
            site(HEALTHY, 8, 0, 0, 90_210, 311_000),
            site(LEAK_RECV, 15, 0, 15, 15, 12_000),
            site(IDLE_GROWING, 17, 0, 0, 240, NOW - 20_000),
            uninstrumented,
        ],
        groups: vec![send_group, recv_group, small_send],
        channels: vec![ChannelSiteStats {
            site: 2,
            kind: ChannelKind::Mpsc,
            live: 4_211,
            created: 4_300,
            sends: 4_389,
            recvs: 0,
            last_send_ms: Some(311_900),
            last_recv_ms: None,
        }],
        sites_seen: 5,
    }));
    m.into_iter().map(Event::Msg).collect()
}

/// One more snapshot after [`leaky`]: every site one second older, the send leak up by
/// 13 tasks.
pub fn leaky_next() -> Event {
    let Some(Event::Msg(AgentMsg::Snapshot(mut s))) = leaky().pop() else {
        unreachable!("leaky() ends with a snapshot")
    };
    s.seq += 1;
    s.now_ms += 1000;
    for st in &mut s.sites {
        if st.site == LEAK_SEND {
            st.live += 13;
            st.blocked_send += 13;
            st.spawned += 13;
        }
    }
    Event::Msg(AgentMsg::Snapshot(s))
}
