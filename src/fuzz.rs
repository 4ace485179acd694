//! Entry points for the cargo-fuzz targets (`fuzz/fuzz_targets/`) and their bounded twins
//! in the property tests: hostile bytes through every path that reads them. Never panics,
//! whatever the bytes: a hostile or broken agent, or a damaged recording, cannot crash
//! `leaktop`.

use leaktop_agent::wire::{self, AgentMsg};

use crate::model::Session;

/// Folds every agent message framed in `data` into a [`Session`], as the live source does,
/// and renders every report of it: for the wire fuzz target (`fuzz/fuzz_targets/wire.rs`)
/// and the property tests. Never panics, whatever the bytes: a hostile or broken agent
/// cannot crash `leaktop`. Returns the number of messages folded.
pub fn wire(data: &[u8]) -> usize {
    let mut dec = wire::FrameDecoder::new(wire::MAX_FRAME);
    dec.push(data);
    let mut session = Session::new();
    let mut folded = 0;
    while let Ok(Some(payload)) = dec.next_frame() {
        if let Ok(msg) = wire::decode::<AgentMsg>(&payload) {
            session.apply_msg(&msg);
            folded += 1;
        }
    }
    session.end("fuzz");
    let th = crate::model::Thresholds::default();
    let fail_on = crate::model::check::FailOn::Leak;
    let from = crate::model::check::DataFrom::Live;
    let outcome = crate::model::check::decide(&session, &th, fail_on, from);
    std::hint::black_box(crate::report::check::text(&session, &th, fail_on, &outcome));
    std::hint::black_box(crate::report::check::json(&session, &th, fail_on, &outcome));
    std::hint::black_box(crate::report::text(&session));
    std::hint::black_box(crate::report::json(&session));
    std::hint::black_box(crate::export::openmetrics(&session, &th));
    folded
}

/// Reads `data` as a recording every way replay does, for the fuzz target
/// (`fuzz/fuzz_targets/read_recording.rs`) and the property tests. Never panics, whatever
/// the bytes. An odd first byte wraps the rest in a valid header and intact frames (each
/// chunk's length is its first byte), so the search reaches the record decoders past the
/// checksums; an even one takes the rest as a whole file.
pub fn recording(data: &[u8]) {
    use crate::record::{format, Reader, RecordingSource, Tail};
    use crate::source::Timeline;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let bytes: Vec<u8> = if mode % 2 == 1 {
        let mut v = format::file_header().to_vec();
        let mut rest = rest;
        while let Some((&len, tail)) = rest.split_first() {
            let n = (len as usize).min(tail.len());
            v.extend_from_slice(&format::frame_with_payload(&tail[..n]));
            rest = &tail[n..];
        }
        v
    } else {
        rest.to_vec()
    };
    let path = std::path::Path::new("fuzz.ltrec");
    let Ok(mut reader) = Reader::new(bytes.into(), path) else {
        return;
    };
    for entry in reader.by_ref() {
        std::hint::black_box(entry);
    }
    let _ = reader.tail().and_then(Tail::describe);
    if let Ok(mut src) = RecordingSource::from_reader(reader.rewound(), path) {
        let mut session = crate::model::Session::new();
        let end = src.duration_ms();
        src.seek(end / 2, &mut session);
        src.seek(end, &mut session);
        src.step(false, &mut session);
        let _ = crate::report::text(&session);
        let _ = src.warning();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use leaktop_agent::wire::{
        AgentHello, BlockedGroup, ChannelKind, GroupKey, History, Location, Op, Sample,
        SiteHistory, SiteKind, SiteStats, Snapshot, TaskInfo, TaskList, TaskState,
    };
    use proptest::prelude::*;

    /// Small ids, so messages refer to each other (and to ids never defined).
    fn id() -> impl Strategy<Value = u32> {
        0u32..6
    }

    /// Counters at the edges too: overflow must not panic the fold or the reports.
    fn count() -> impl Strategy<Value = u64> {
        prop_oneof![0u64..50, Just(u64::MAX), any::<u64>()]
    }

    fn key() -> impl Strategy<Value = GroupKey> {
        (id(), id(), id(), prop::option::of(id())).prop_map(
            |(site, channel_site, call_site, stack)| GroupKey {
                site,
                op: Op::Recv,
                channel_site,
                call_site,
                stack,
            },
        )
    }

    fn site() -> impl Strategy<Value = SiteStats> {
        (
            id(),
            count(),
            count(),
            count(),
            count(),
            count(),
            prop::option::of(count()),
        )
            .prop_map(
                |(site, live, running, blocked, spawned, completed, oldest)| SiteStats {
                    site,
                    kind: Some(if site == 5 {
                        SiteKind::Other
                    } else {
                        SiteKind::Spawn
                    }),
                    live,
                    running,
                    blocked_send: blocked,
                    blocked_recv: blocked / 2,
                    spawned,
                    completed,
                    oldest_live_ms: oldest,
                },
            )
    }

    fn msg() -> impl Strategy<Value = AgentMsg> {
        prop_oneof![
            (id(), "[a-z/.]{0,12}", any::<u32>(), any::<u32>()).prop_map(
                |(id, file, line, column)| {
                    AgentMsg::Location {
                        id,
                        loc: Location { file, line, column },
                    }
                }
            ),
            (id(), prop::collection::vec(any::<u64>(), 0..4))
                .prop_map(|(id, frames)| AgentMsg::Stack { id, frames }),
            (
                count(),
                count(),
                prop::collection::vec(site(), 0..4),
                prop::collection::vec((key(), count(), count()), 0..3),
            )
                .prop_map(|(seq, now_ms, sites, groups)| {
                    AgentMsg::Snapshot(Snapshot {
                        seq,
                        now_ms,
                        sites,
                        groups: groups
                            .into_iter()
                            .map(|(key, count, oldest_since_ms)| BlockedGroup {
                                key,
                                kind: ChannelKind::Mpsc,
                                count,
                                oldest_since_ms,
                                channel: None,
                            })
                            .collect(),
                        channels: Vec::new(),
                        sites_seen: seq,
                    })
                }),
            (
                any::<u32>(),
                count(),
                prop::collection::vec((id(), prop::collection::vec(any::<u32>(), 0..5)), 0..3)
            )
                .prop_map(|(interval_ms, end_ms, sites)| {
                    AgentMsg::History(History {
                        interval_ms,
                        end_ms,
                        sites: sites
                            .into_iter()
                            .map(|(site, lives)| SiteHistory {
                                site,
                                samples: lives
                                    .into_iter()
                                    .map(|live| Sample {
                                        live,
                                        blocked_send: live / 3,
                                        blocked_recv: 0,
                                        spawned: u64::from(live) * 2,
                                        completed: u64::from(live),
                                    })
                                    .collect(),
                            })
                            .collect(),
                    })
                }),
            (
                id(),
                prop::option::of(key()),
                prop::collection::vec((count(), count()), 0..3)
            )
                .prop_map(|(site, group, tasks)| {
                    AgentMsg::Tasks(TaskList {
                        site,
                        group: group.clone(),
                        tasks: tasks
                            .into_iter()
                            .map(|(id, spawned_ms)| TaskInfo {
                                id,
                                spawned_ms,
                                state: TaskState::Blocked,
                                blocked_since_ms: Some(spawned_ms),
                                group: group.clone(),
                            })
                            .collect(),
                    })
                }),
            (any::<u32>(), count(), count(), count(), any::<u32>()).prop_map(
                |(pid, origin_unix_ms, now_ms, start, interval)| {
                    AgentMsg::Hello(AgentHello {
                        protocol: 1,
                        agent_version: "0.1.0".into(),
                        pid,
                        start_time_ticks: start,
                        exe: "/x".into(),
                        build_id: Vec::new(),
                        uid: 0,
                        origin_unix_ms,
                        now_ms,
                        sample_interval_ms: interval,
                        history_len: interval,
                        site_cap: 3,
                    })
                }
            ),
            "[ -~]{0,20}".prop_map(|reason| AgentMsg::Refused { reason }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

        /// Bounded twin of the `wire` fuzz target: any sequence of well-formed agent
        /// messages (ids that are never defined, counters at u64::MAX, time going
        /// backwards), framed, with a byte flipped now and then, folds and renders without
        /// a panic.
        #[test]
        fn folding_any_agent_messages_never_panics(
            msgs in prop::collection::vec(msg(), 0..12),
            flip in prop::option::of((any::<prop::sample::Index>(), 0u8..8)),
        ) {
            let mut bytes = Vec::new();
            for m in &msgs {
                bytes.extend(wire::encode_frame(m).unwrap());
            }
            if let (Some((i, bit)), false) = (flip, bytes.is_empty()) {
                let i = i.index(bytes.len());
                bytes[i] ^= 1 << bit;
            }
            wire(&bytes);
            leaktop_agent::wire::fuzz_one(&[7].iter().chain(&bytes).copied().collect::<Vec<_>>());
        }
    }
}
