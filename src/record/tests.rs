//! Recording round trips, damage (cuts at every byte, flipped bits), seeking, the tee.
//! The end-to-end versions with real child processes are in `tests/record.rs`.

use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use leaktop_agent::wire::{
    AgentHello, AgentMsg, ClientMsg, History, Location, Mapping, Sample, SiteHistory, SiteKind,
    SiteStats, Snapshot,
};

use super::format::{self, SymbolEntry, FILE_HEADER_LEN, FORMAT_VERSION};
use super::reader::{summarize, Damage, Entry, Item, OpenError, Reader, Tail};
use super::replay::RecordingSource;
use super::tee::Tee;
use super::writer::{RecordOptions, Recorder, WriteError};
use crate::driver::session_of;
use crate::frame::{Frame, FrameClass};
use crate::model::Session;
use crate::source::{Event, Source};

pub(crate) fn hello(pid: u32) -> AgentHello {
    AgentHello {
        protocol: 1,
        agent_version: "0.1.0".into(),
        pid,
        start_time_ticks: 777,
        exe: "/srv/app".into(),
        build_id: vec![0xab, 0xcd],
        uid: 1000,
        origin_unix_ms: 1_700_000_000_000,
        now_ms: 10,
        sample_interval_ms: 1000,
        history_len: 600,
        site_cap: 10_000,
    }
}

/// Snapshot `i` of a program with `sites` spawn sites: site 0 leaks one task a snapshot,
/// every tenth site churns, the rest stay still.
pub(crate) fn snapshot(i: u64, sites: u32) -> Snapshot {
    Snapshot {
        seq: i + 1,
        now_ms: 1000 * (i + 1),
        sites: (0..sites)
            .map(|s| {
                let churn = s % 10 == 0;
                let spawned = 100 + if churn { i * (s as u64 % 7 + 1) } else { 0 };
                let live = if s == 0 {
                    i + 1
                } else {
                    3 + (churn as u64) * (i % 3)
                };
                SiteStats {
                    site: s,
                    kind: Some(SiteKind::Spawn),
                    live,
                    running: (churn && i % 2 == 0) as u64,
                    blocked_send: 0,
                    blocked_recv: if s == 0 { i + 1 } else { 0 },
                    spawned: spawned + live,
                    completed: spawned,
                    oldest_live_ms: Some(5),
                }
            })
            .collect(),
        groups: Vec::new(),
        channels: Vec::new(),
        sites_seen: sites as u64,
    }
}

fn history(sites: u32, len: u64) -> History {
    History {
        interval_ms: 1000,
        end_ms: 900,
        sites: (0..sites)
            .map(|s| SiteHistory {
                site: s,
                samples: (0..len)
                    .map(|k| {
                        // As in `snapshot`: a tenth of the sites churn, the rest stay still.
                        let churn = if s % 10 == 0 { k % 4 } else { 0 };
                        Sample {
                            live: (3 + churn) as u32,
                            spawned: 50 + k * (s % 10 == 0) as u64 + churn,
                            completed: 50 + k * (s % 10 == 0) as u64,
                            ..Default::default()
                        }
                    })
                    .collect(),
            })
            .collect(),
    }
}

/// The messages of a small session, with their times.
pub(crate) fn script(snapshots: u64, sites: u32) -> Vec<(u64, Event)> {
    let mut v = vec![
        (0, Event::Msg(AgentMsg::Hello(hello(4242)))),
        (
            1,
            Event::Msg(AgentMsg::Modules(vec![Mapping {
                start: 0x1000,
                end: 0x9000,
                offset: 0,
                path: "/srv/app".into(),
            }])),
        ),
    ];
    for s in 0..sites {
        v.push((
            2,
            Event::Msg(AgentMsg::Location {
                id: s,
                loc: Location {
                    file: format!("src/site{s}.rs"),
                    line: 10 + s,
                    column: 5,
                },
            }),
        ));
    }
    v.push((
        3,
        Event::Msg(AgentMsg::Stack {
            id: 1,
            frames: vec![0x1234, 0x5678],
        }),
    ));
    v.push((4, Event::Msg(AgentMsg::History(history(sites, 20)))));
    for i in 0..snapshots {
        v.push((
            1000 * (i + 1),
            Event::Msg(AgentMsg::Snapshot(snapshot(i, sites))),
        ));
    }
    v.push((
        1000 * snapshots + 500,
        Event::End("process 4242 exited".into()),
    ));
    v
}

fn symbols() -> Vec<SymbolEntry> {
    vec![SymbolEntry {
        addr: 0x1234,
        frames: vec![Frame {
            function: "app::worker::{{closure}}".into(),
            file: Some("src/worker.rs".into()),
            line: Some(42),
            column: Some(9),
            inlined: true,
            module: "/srv/app".into(),
            class: FrameClass::User,
            addr: 0x1234,
        }],
    }]
}

/// A replay clock that moves only when the replay waits on it.
struct ManualClock(std::sync::Mutex<std::time::Instant>);

impl Default for ManualClock {
    fn default() -> Self {
        ManualClock(std::sync::Mutex::new(std::time::Instant::now()))
    }
}

impl super::replay::Clock for ManualClock {
    fn now(&self) -> std::time::Instant {
        *self.0.lock().unwrap()
    }

    fn sleep(&self, d: Duration) {
        *self.0.lock().unwrap() += d;
    }
}

fn temp_path(dir: &tempfile::TempDir, name: &str) -> PathBuf {
    dir.path().join(name)
}

pub(crate) fn write(path: &Path, script: &[(u64, Event)]) -> Vec<u8> {
    let mut rec = Recorder::create(path, &RecordOptions::default()).unwrap();
    for (t, ev) in script {
        rec.write_event_at(*t, ev).unwrap();
        if matches!(ev, Event::Msg(AgentMsg::Stack { .. })) {
            rec.write_symbols(symbols()).unwrap();
        }
    }
    rec.close().unwrap();
    std::fs::read(path).unwrap()
}

fn read_all(bytes: &[u8]) -> (Vec<Entry>, Tail) {
    let mut r = Reader::new(Arc::from(bytes), Path::new("test.ltrec")).unwrap();
    let entries: Vec<Entry> = r.by_ref().collect();
    (entries, r.tail().cloned().unwrap())
}

fn events(entries: &[Entry]) -> Vec<(u64, Event)> {
    entries
        .iter()
        .filter_map(|e| match &e.item {
            Item::Msg(m) => Some((e.t_ms, Event::Msg(m.clone()))),
            Item::End(r) => Some((e.t_ms, Event::End(r.clone()))),
            _ => None,
        })
        .collect()
}

/// What a session looks like, in a form that compares (HashMap order aside).
fn fingerprint(s: &Session) -> String {
    let series: Vec<_> = s.sites.iter().map(|(id, st)| (id, &st.series)).collect();
    format!(
        "{}\n{:?}\n{:?}\n{:?}",
        crate::report::json(s),
        series,
        s.groups,
        s.ended
    )
}

fn fold(script: &[(u64, Event)], until: u64) -> Session {
    let mut s = Session::new();
    for (t, ev) in script {
        if *t > until {
            break;
        }
        s.apply(ev);
    }
    s
}

#[test]
fn round_trip_rebuilds_every_message_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_path(&dir, "a.ltrec");
    let script = script(30, 50);
    let bytes = write(&path, &script);
    let (entries, tail) = read_all(&bytes);
    assert_eq!(tail, Tail::Clean);
    assert_eq!(events(&entries), script);
    assert!(matches!(entries[0].item, Item::Meta(_)));
    let summary = summarize(&mut Reader::open(&path).unwrap());
    assert_eq!(summary.snapshot_times.len(), 30);
    assert_eq!(summary.duration_ms, 30_500);
    assert_eq!(summary.symbols.get(&0x1234), Some(&symbols()[0].frames));
    assert_eq!(summary.hello.as_ref().map(|h| h.pid), Some(4242));
    assert!(summary.source_ended);
}

#[test]
fn session_at_any_time_equals_the_live_fold_up_to_then() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_path(&dir, "a.ltrec");
    let script = script(20, 30);
    write(&path, &script);
    for t in [0, 999, 1000, 5500, 12_000, 20_000, 20_500, 99_999] {
        let (session, _) = session_of(RecordingSource::open(&path).unwrap(), Some(t));
        let mut want = fold(&script, t);
        if t >= 20_500 {
            want.end("process 4242 exited");
        }
        assert_eq!(fingerprint(&session), fingerprint(&want), "at {t}");
    }
}

/// Going back starts from the nearest checkpoint, not the start; the state it lands on is
/// the fold from the start all the same, wherever the seeks go (back, forth, between two
/// checkpoints, onto one, before the first).
#[test]
fn seeks_from_checkpoints_match_a_fresh_fold() {
    use crate::source::Timeline;
    let dir = tempfile::tempdir().unwrap();
    let path = temp_path(&dir, "long.ltrec");
    let script = script(95, 12);
    write(&path, &script);
    let mut src = RecordingSource::open(&path).unwrap();
    let mut session = Session::new();
    src.seek(u64::MAX, &mut session);
    assert!(
        src.checkpoints() >= 8,
        "95 s at one per 10 s: {}",
        src.checkpoints()
    );
    let mut seed = 7u64;
    let mut times: Vec<u64> = vec![94_000, 50_000, 10_000, 9_999, 0, 4, 30_000, 29_000];
    times.extend((0..40).map(|_| rng(&mut seed) % 97_000));
    for t in times {
        src.seek(t, &mut session);
        let mut want = fold(&script, t);
        if t >= 95_500 {
            want.end("process 4242 exited");
        }
        assert_eq!(fingerprint(&session), fingerprint(&want), "at {t}");
    }
}

#[test]
fn seeking_back_and_forth_matches_a_fresh_fold() {
    use crate::source::Timeline;
    let dir = tempfile::tempdir().unwrap();
    let path = temp_path(&dir, "a.ltrec");
    let script = script(20, 30);
    write(&path, &script);
    let mut src = RecordingSource::open(&path)
        .unwrap()
        .with_clock(Box::new(ManualClock::default()));
    let mut session = Session::new();
    for t in [15_000, 3_000, 3_000, 7_250, 20_500, 0, 11_000] {
        src.seek(t, &mut session);
        assert_eq!(src.position_ms(), t);
        let mut want = fold(&script, t);
        if t >= 20_500 {
            want.end("process 4242 exited");
        }
        assert_eq!(fingerprint(&session), fingerprint(&want), "at {t}");
    }
    // Steps land on snapshots and pause.
    src.set_playing(true);
    src.step(true, &mut session);
    assert_eq!((src.position_ms(), src.playing()), (12_000, false));
    src.step(false, &mut session);
    src.step(false, &mut session);
    assert_eq!(src.position_ms(), 10_000);
    assert_eq!(fingerprint(&session), fingerprint(&fold(&script, 10_000)));
    // After a seek, what `next` yields continues exactly from there, in real time by
    // the replay's clock (which here moves as fast as the replay waits on it).
    let mut tail = Vec::new();
    src.set_playing(true);
    while let Some(ev) = src.next(Duration::from_secs(60)) {
        tail.push(ev.clone());
        session.apply(&ev);
        if matches!(ev, Event::End(_)) {
            break;
        }
    }
    let want: Vec<Event> = script
        .iter()
        .filter(|(t, _)| *t > 10_000)
        .map(|(_, e)| e.clone())
        .collect();
    assert_eq!(tail, want);
    assert_eq!(fingerprint(&session), fingerprint(&fold(&script, u64::MAX)));
}

#[test]
fn a_cut_at_every_byte_replays_up_to_the_last_whole_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_path(&dir, "small.ltrec");
    let bytes = write(&path, &script(4, 3));
    let (full, _) = read_all(&bytes);
    let ends: Vec<usize> = full
        .iter()
        .skip(1)
        .map(|e| e.offset as usize)
        .chain([bytes.len()])
        .collect();
    for cut in 0..=bytes.len() {
        let part = &bytes[..cut];
        let (entries, tail) = read_all(part);
        let whole = ends.iter().filter(|e| **e <= cut).count();
        assert_eq!(entries, full[..whole], "cut at {cut}");
        let at_boundary = cut == FILE_HEADER_LEN || ends.contains(&cut);
        if at_boundary {
            assert_eq!(tail, Tail::Clean, "cut at {cut}");
        } else {
            let frame_start = if cut < FILE_HEADER_LEN {
                0
            } else {
                full[whole].offset
            };
            assert!(
                matches!(tail, Tail::Truncated { offset, .. } if offset == frame_start),
                "cut at {cut}: {tail:?}"
            );
        }
        // Replaying it never panics: either a session or a clear "nothing to replay".
        match RecordingSource::from_reader(
            Reader::new(Arc::from(part), Path::new("cut.ltrec")).unwrap(),
            Path::new("cut.ltrec"),
        ) {
            Ok(src) => {
                let (session, src) = session_of(src, None);
                assert!(session.hello.is_some());
                assert!(session.ended.is_some());
                assert_eq!(src.warning().is_some(), !at_boundary, "cut at {cut}");
            }
            Err(e) => {
                assert!(matches!(e, OpenError::Empty { .. }), "{e}");
                assert!(whole <= 1, "cut at {cut}: {e}");
            }
        }
    }
}

/// xorshift64*: deterministic offsets without a dependency.
fn rng(seed: &mut u64) -> u64 {
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

#[test]
fn random_cuts_of_a_large_recording_replay_up_to_the_last_whole_frame() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_path(&dir, "large.ltrec");
    let bytes = write(&path, &script(120, 1000));
    assert!(bytes.len() > 100_000, "{} bytes", bytes.len());
    let (full, _) = read_all(&bytes);
    let mut seed = 0x5eed_u64;
    for _ in 0..24 {
        let cut = (rng(&mut seed) % bytes.len() as u64) as usize;
        let (entries, tail) = read_all(&bytes[..cut]);
        let whole = full
            .iter()
            .skip(1)
            .map(|e| e.offset as usize)
            .chain([bytes.len()])
            .filter(|end| *end <= cut)
            .count();
        assert_eq!(entries.len(), whole, "cut at {cut}");
        assert_eq!(entries.last(), full[..whole].last(), "cut at {cut}");
        assert!(
            matches!(tail, Tail::Truncated { .. } | Tail::Clean),
            "{tail:?}"
        );
    }
}

#[test]
fn every_flipped_bit_is_caught_with_its_offset() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_path(&dir, "small.ltrec");
    let bytes = write(&path, &script(3, 2));
    let (full, _) = read_all(&bytes);
    for bit in 0..bytes.len() * 8 {
        let mut bad = bytes.clone();
        bad[bit / 8] ^= 1 << (bit % 8);
        let byte = bit / 8;
        let reader = Reader::new(Arc::from(&bad[..]), Path::new("bad.ltrec"));
        if byte < FILE_HEADER_LEN {
            let err = reader.expect_err("header damage is an open error");
            assert!(
                matches!(
                    err,
                    OpenError::NotARecording { .. } | OpenError::DamagedHeader { .. }
                ),
                "bit {bit}: {err}"
            );
            continue;
        }
        let mut reader = reader.unwrap();
        let entries: Vec<Entry> = reader.by_ref().collect();
        // The frame holding the byte, and the damage reported at its start.
        let frame = full
            .iter()
            .rposition(|e| e.offset as usize <= byte)
            .unwrap();
        assert_eq!(entries, full[..frame], "bit {bit}");
        let in_header = byte < full[frame].offset as usize + format::FRAME_HEADER_LEN;
        let damage = if in_header {
            Damage::Header
        } else {
            Damage::Payload
        };
        assert_eq!(
            reader.tail(),
            Some(&Tail::Corrupt {
                offset: full[frame].offset,
                damage
            }),
            "bit {bit}"
        );
        let text = reader.tail().unwrap().describe().unwrap();
        assert!(
            text.contains(&format!("byte {}", full[frame].offset)),
            "{text}"
        );
    }
}

#[test]
fn a_newer_format_version_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_path(&dir, "new.ltrec");
    let mut bytes = write(&path, &script(1, 1));
    bytes[..FILE_HEADER_LEN].copy_from_slice(&format::file_header_of(FORMAT_VERSION + 1));
    std::fs::write(&path, &bytes).unwrap();
    let err = RecordingSource::open(&path).unwrap_err();
    assert!(matches!(err, OpenError::NewerVersion { found, .. } if found == FORMAT_VERSION + 1));
    let text = err.to_string();
    assert!(text.contains("recorded by a newer leaktop"), "{text}");
    assert!(text.contains(&path.display().to_string()), "{text}");
}

#[test]
fn unknown_record_kinds_are_skipped() {
    // A frame from a newer leaktop: intact, but of a kind this build does not know.
    let dir = tempfile::tempdir().unwrap();
    let path = temp_path(&dir, "a.ltrec");
    let mut bytes = write(&path, &script(2, 2));
    let mut payload = postcard::to_allocvec(&5u64).unwrap();
    payload.extend_from_slice(&[200, 1, 2, 3]); // variant 200
    let frame = format::frame_with_payload(&payload);
    let (full, _) = read_all(&bytes);
    let at = full[3].offset as usize;
    bytes.splice(at..at, frame);
    let mut r = Reader::new(Arc::from(&bytes[..]), &path).unwrap();
    let entries: Vec<Entry> = r.by_ref().collect();
    assert_eq!(entries.len(), full.len());
    assert_eq!((r.tail(), r.skipped()), (Some(&Tail::Clean), 1));
}

#[test]
fn an_existing_file_is_never_overwritten_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_path(&dir, "a.ltrec");
    std::fs::write(&path, b"precious").unwrap();
    let err = Recorder::create(&path, &RecordOptions::default()).unwrap_err();
    assert!(matches!(err, WriteError::Exists { .. }), "{err}");
    assert!(err.to_string().contains("--force"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");

    // A file being recorded is not replaced even with --force.
    let force = RecordOptions {
        force: true,
        ..Default::default()
    };
    let busy = temp_path(&dir, "busy.ltrec");
    let mut live = Recorder::create(&busy, &RecordOptions::default()).unwrap();
    let err = Recorder::create(&busy, &force).unwrap_err();
    assert!(matches!(err, WriteError::Busy { .. }), "{err}");
    live.write_msg(&AgentMsg::Hello(hello(1))).unwrap();
    let stats = live.close().unwrap();
    assert_eq!(std::fs::metadata(&busy).unwrap().len(), stats.bytes);

    // Once it is closed, --force replaces it.
    let rec = Recorder::create(&path, &force).unwrap();
    rec.close().unwrap();
    let (entries, tail) = read_all(&std::fs::read(&path).unwrap());
    assert_eq!((entries.len(), tail), (1, Tail::Clean));
}

/// A source that plays a script, as the live source would, without pacing.
struct Scripted {
    hello: AgentHello,
    events: VecDeque<Event>,
    requests: Vec<ClientMsg>,
}

impl Source for Scripted {
    fn hello(&self) -> &AgentHello {
        &self.hello
    }
    fn next(&mut self, _timeout: Duration) -> Option<Event> {
        let ev = self.events.pop_front()?;
        // As the symbolizing stage would: the symbols of a stack follow it.
        if let Event::Msg(AgentMsg::Stack { id, frames }) = &ev {
            let frames = frames
                .iter()
                .map(|a| Frame::unknown(format!("f{a:x}"), FrameClass::User, "", *a))
                .collect();
            self.events
                .push_front(Event::Symbols { stack: *id, frames });
        }
        Some(ev)
    }
    fn request(&mut self, msg: ClientMsg) {
        // The agent answers a history request with its rings.
        if msg == ClientMsg::History {
            self.events
                .push_front(Event::Msg(AgentMsg::History(history(5, 20))));
        }
        self.requests.push(msg);
    }
}

#[test]
fn a_tee_started_mid_session_writes_a_self_contained_recording() {
    let dir = tempfile::tempdir().unwrap();
    let path = temp_path(&dir, "mid.ltrec");
    let script = script(10, 5);
    let mut tee = Tee::new(Scripted {
        hello: hello(4242),
        events: script.iter().map(|(_, e)| e.clone()).collect(),
        requests: Vec::new(),
    });
    let mut live = Session::new();
    let pump = |tee: &mut Tee<Scripted>, n: usize, live: &mut Session| {
        for _ in 0..n {
            match tee.next(Duration::ZERO) {
                Some(ev) => live.apply(&ev),
                None => break,
            }
        }
    };
    // Hello, modules, 5 locations, stack and its symbols, history, 4 snapshots; then
    // record.
    pump(&mut tee, 10 + 4, &mut live);
    tee.start(&path, &RecordOptions::default()).unwrap();
    assert!(tee.is_recording());
    assert_eq!(tee.inner().requests, vec![ClientMsg::History]);
    pump(&mut tee, 100, &mut live);
    assert!(!tee.is_recording(), "the end of the source closes the file");

    let (replayed, src) = session_at_path(&path);
    // The latest state is all there; the series has the history the agent resent on
    // request, then the snapshots from the start of the recording.
    let latest = |s: &Session| -> Vec<(u32, SiteStats)> {
        s.sites_by_live()
            .into_iter()
            .map(|(id, st)| (id, st.clone()))
            .collect()
    };
    assert_eq!(latest(&replayed), latest(&live));
    assert_eq!(replayed.hello, live.hello);
    assert_eq!(replayed.locations, live.locations);
    assert_eq!(replayed.ended, live.ended);
    let times: Vec<u64> = replayed.sites[&0].series.iter().map(|p| p.t_ms).collect();
    let live_times: Vec<u64> = live.sites[&0].series.iter().map(|p| p.t_ms).collect();
    let want: Vec<u64> = live_times
        .iter()
        .copied()
        .filter(|t| *t < 1000 || *t >= 4000)
        .collect();
    assert_eq!(times, want);
    assert_eq!(
        src.symbols()
            .get(&0x5678)
            .map(|f| f[0].function.to_string()),
        Some("f5678".into())
    );
}

fn session_at_path(path: &Path) -> (Session, RecordingSource) {
    session_of(RecordingSource::open(path).unwrap(), None)
}

#[test]
fn ten_minutes_of_a_thousand_sites_stay_small() {
    // 1 s snapshots of 1000 sites, a tenth of them changing every second, plus a
    // ten-minute history ring of all of them at the start.
    let dir = tempfile::tempdir().unwrap();
    let path = temp_path(&dir, "big.ltrec");
    let mut rec = Recorder::create(&path, &RecordOptions::default()).unwrap();
    rec.write_msg_at(0, &AgentMsg::Hello(hello(1))).unwrap();
    rec.write_msg_at(0, &AgentMsg::History(history(1000, 600)))
        .unwrap();
    let after_history = rec.stats().bytes;
    for i in 0..600 {
        rec.write_msg_at(1000 * i, &AgentMsg::Snapshot(snapshot(i, 1000)))
            .unwrap();
    }
    let stats = rec.close().unwrap();
    let per_minute = (stats.bytes - after_history) / 10;
    eprintln!(
        "1000 sites, 10% changing/s: history {} bytes, {} bytes per minute of snapshots",
        after_history, per_minute
    );
    assert!(per_minute < 200_000, "{per_minute} bytes per minute");
    assert!(after_history < 200_000, "{after_history} bytes of history");
}

mod properties {
    //! Bounded property runs (the open-ended search is the cargo-fuzz target in `fuzz/`).

    use super::*;
    use leaktop_agent::wire::{BlockedGroup, ChannelKind, GroupKey, Op};
    use proptest::prelude::*;

    use crate::record::delta::{SnapshotDecoder, SnapshotEncoder};

    fn replay_never_panics(bytes: &[u8]) {
        let path = Path::new("prop.ltrec");
        let Ok(mut reader) = Reader::new(Arc::from(bytes), path) else {
            return;
        };
        let _ = reader.by_ref().count();
        let reader = reader.rewound();
        if let Ok(src) = RecordingSource::from_reader(reader, path) {
            let d = src.summary().duration_ms;
            let (_, mut src) = session_of(src, Some(d / 2));
            let mut s = Session::new();
            crate::source::Timeline::seek(&mut src, d, &mut s);
            let _ = src.warning();
        }
    }

    fn small_recording() -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        write(&dir.path().join("p.ltrec"), &script(6, 4))
    }

    fn site_strategy() -> impl Strategy<Value = SiteStats> {
        (
            0u32..40,
            prop::option::of(prop_oneof![
                Just(SiteKind::Spawn),
                Just(SiteKind::Uninstrumented),
                Just(SiteKind::Other)
            ]),
            prop::array::uniform6(any::<u64>()),
            prop::option::of(any::<u64>()),
        )
            .prop_map(|(site, kind, c, oldest)| SiteStats {
                site,
                kind,
                live: c[0],
                running: c[1] % 5,
                blocked_send: c[2] % 3,
                blocked_recv: c[3],
                spawned: c[4],
                completed: c[5],
                oldest_live_ms: oldest,
            })
    }

    fn group_strategy() -> impl Strategy<Value = BlockedGroup> {
        (0u32..5, 0u64..4, any::<u64>()).prop_map(|(site, count, since)| BlockedGroup {
            key: GroupKey {
                site,
                op: Op::Recv,
                channel_site: 1,
                call_site: 2,
                stack: None,
            },
            kind: ChannelKind::Mpsc,
            count,
            oldest_since_ms: since,
            channel: None,
        })
    }

    fn snapshot_strategy() -> impl Strategy<Value = Snapshot> {
        (
            any::<u64>(),
            any::<u64>(),
            prop::collection::vec(site_strategy(), 0..12),
            prop::collection::vec(group_strategy(), 0..4),
            any::<u64>(),
        )
            .prop_map(|(seq, now_ms, sites, groups, sites_seen)| Snapshot {
                seq,
                now_ms,
                sites,
                groups,
                channels: Vec::new(),
                sites_seen,
            })
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn any_bytes_after_a_valid_header_never_panic(tail in prop::collection::vec(any::<u8>(), 0..2048)) {
            let mut bytes = format::file_header().to_vec();
            bytes.extend_from_slice(&tail);
            replay_never_panics(&bytes);
        }

        #[test]
        fn any_payloads_in_intact_frames_never_panic(
            payloads in prop::collection::vec(prop::collection::vec(any::<u8>(), 0..300), 0..12),
        ) {
            // Valid checksums, so the bytes reach the record decoder and the deltas.
            let mut bytes = small_recording();
            for p in &payloads {
                bytes.extend_from_slice(&crate::record::format::frame_with_payload(p));
            }
            replay_never_panics(&bytes);
        }

        #[test]
        fn the_fuzz_entry_point_never_panics(data in prop::collection::vec(any::<u8>(), 0..1024)) {
            crate::fuzz::recording(&data);
        }

        #[test]
        fn edits_of_a_real_recording_never_panic_and_keep_what_is_before_them(
            edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        ) {
            let good = small_recording();
            let (full, _) = read_all(&good);
            let mut bad = good.clone();
            let mut first = usize::MAX;
            for (i, b) in &edits {
                let at = i.index(bad.len());
                if bad[at] != *b {
                    first = first.min(at);
                }
                bad[at] = *b;
            }
            replay_never_panics(&bad);
            if first >= FILE_HEADER_LEN && first != usize::MAX {
                let (entries, _) = read_all(&bad);
                let intact = full.iter().filter(|e| {
                    let next = full.iter().find(|n| n.offset > e.offset).map_or(good.len() as u64, |n| n.offset);
                    next as usize <= first
                }).count();
                prop_assert_eq!(&entries[..intact], &full[..intact]);
            }
        }

        #[test]
        fn snapshot_deltas_rebuild_any_sequence(snaps in prop::collection::vec(snapshot_strategy(), 1..12)) {
            let mut enc = SnapshotEncoder::new();
            let mut dec = SnapshotDecoder::new();
            for s in &snaps {
                let d = enc.encode(s);
                let bytes = postcard::to_allocvec(&d).unwrap();
                let d: crate::record::delta::SnapshotDelta = postcard::from_bytes(&bytes).unwrap();
                prop_assert_eq!(&dec.decode(&d).unwrap(), s);
            }
        }

        #[test]
        fn history_packing_rebuilds_any_rings(rings in prop::collection::vec(
            (0u32..100, prop::collection::vec((any::<u32>(), any::<u32>(), any::<u64>(), any::<u64>()), 0..40)), 0..8)
        ) {
            let h = History {
                interval_ms: 1000,
                end_ms: 77,
                sites: rings.into_iter().map(|(site, samples)| SiteHistory {
                    site,
                    samples: samples.into_iter().map(|(live, br, sp, co)| Sample {
                        live, blocked_send: live / 2, blocked_recv: br, spawned: sp, completed: co,
                    }).collect(),
                }).collect(),
            };
            let p = crate::record::delta::pack_history(&h);
            prop_assert_eq!(crate::record::delta::unpack_history(&p).unwrap(), h);
        }
    }
}

/// Bytes per minute for 1000 sites at 1 s snapshots, by the share of sites whose
/// counters change each second (`cargo test --lib size_table -- --ignored --nocapture`;
/// the numbers in docs/recording.md come from here).
#[test]
#[ignore = "prints a table; run by hand"]
fn size_table() {
    let dir = tempfile::tempdir().unwrap();
    for every in [100u32, 10, 1] {
        let path = dir.path().join(format!("t{every}.ltrec"));
        let mut rec = Recorder::create(&path, &RecordOptions::default()).unwrap();
        rec.write_msg_at(0, &AgentMsg::Hello(hello(1))).unwrap();
        let start = rec.stats().bytes;
        for i in 0..600u64 {
            let mut s = snapshot(0, 1000);
            s.seq = i + 1;
            s.now_ms = 1000 * (i + 1);
            for st in s.sites.iter_mut().filter(|st| st.site % every == 0) {
                st.spawned += i * 3;
                st.completed += i * 3 - i % 2;
                st.live = 3 + i % 2;
            }
            rec.write_msg_at(1000 * i, &AgentMsg::Snapshot(s)).unwrap();
        }
        let stats = rec.close().unwrap();
        let t = std::time::Instant::now();
        let n = Reader::open(&path).unwrap().count();
        eprintln!("  decode only: {} ms ({n} frames)", t.elapsed().as_millis());
        let t = std::time::Instant::now();
        let (session, _) = session_of(RecordingSource::open(&path).unwrap(), None);
        eprintln!(
            "1000 sites, 1 in {every} changing each second: {} bytes/minute; open + fold 10 min: {} ms ({} sites)",
            (stats.bytes - start) / 10,
            t.elapsed().as_millis(),
            session.sites.len()
        );
    }
}
