//! Self-symbolization: the test binary resolves its own addresses through its own maps.

use super::*;
use leaktop_agent::wire::Mapping;

/// Line (1-based) of the first line of this file containing `needle`.
fn line_of(needle: &str) -> u32 {
    let src = include_str!("tests.rs");
    let idx = src
        .lines()
        .position(|l| l.contains(needle) && !l.contains("line_of("))
        .unwrap_or_else(|| panic!("{needle:?} not in tests.rs"));
    u32::try_from(idx + 1).unwrap()
}

/// Captures every return address of the current stack.
#[inline(always)]
fn inlined_leaf() -> Vec<u64> {
    let mut ips = Vec::new();
    backtrace::trace(|f| {
        ips.push(f.ip() as u64); // @leaf-capture
        true
    }); // @leaf-call
    ips
}

#[inline(never)]
fn outer_frame() -> Vec<u64> {
    let ips = inlined_leaf(); // @outer-call
    std::hint::black_box(ips)
}

/// No system debug dirs: whether the machine has libc6-dbg must not change the tests (nor
/// their speed).
fn opts() -> Options {
    Options {
        debug_dirs: Vec::new(),
        ..Options::default()
    }
}

fn self_maps() -> ProcessMaps {
    ProcessMaps::read(std::process::id()).expect("own maps")
}

fn find<'a>(frames: &'a [Frame], function: &str) -> (usize, &'a Frame) {
    frames
        .iter()
        .enumerate()
        .find(|(_, f)| &*f.function == function)
        .unwrap_or_else(|| {
            let names: Vec<_> = frames.iter().map(|f| &f.function).collect();
            panic!("{function} not among {names:#?}")
        })
}

#[test]
fn self_symbolization_with_inlined_frame() {
    let ips = outer_frame();
    let maps = self_maps();
    let mut sym = Symbolizer::new(opts());
    let frames = flatten(&sym.resolve(&maps, &ips));

    let (i, leaf) = find(&frames, "leaktop::symbolize::tests::inlined_leaf");
    assert!(leaf.inlined, "{leaf:?}");
    assert!(
        leaf.file
            .as_deref()
            .unwrap()
            .ends_with("src/symbolize/tests.rs"),
        "{leaf:?}"
    );
    // `backtrace::trace(...)` spans two lines; the call may be attributed to either.
    let call = line_of("backtrace::trace(|f|");
    assert!(
        (call..=line_of("@leaf-call")).contains(&leaf.line.unwrap()),
        "{leaf:?}, call at {call}"
    );
    assert_eq!(leaf.class, FrameClass::User);

    let outer = &frames[i + 1];
    assert_eq!(&*outer.function, "leaktop::symbolize::tests::outer_frame");
    assert!(!outer.inlined);
    assert_eq!(outer.line, Some(line_of("@outer-call")), "{outer:?}");
    assert_eq!(outer.addr, leaf.addr, "same machine frame");
    assert!(outer.module.ends_with(
        &*std::env::current_exe()
            .unwrap()
            .file_name()
            .unwrap()
            .to_string_lossy()
    ));

    // The frames above are the test harness and std; below, backtrace's own.
    assert!(
        frames.iter().any(|f| f.class == FrameClass::Std),
        "{frames:#?}"
    );
    let folded = fold(&frames, FoldMode::UserOnly);
    assert!(folded.iter().any(|f| matches!(f, Folded::Hidden { .. })));

    // Resolving again hits the caches and gives the same answer.
    assert_eq!(flatten(&sym.resolve(&maps, &ips)), frames);
    let exe_modules = sym
        .modules()
        .filter(|m| m.debug == DebugSource::Embedded)
        .count();
    assert!(exe_modules >= 1);
}

#[test]
fn function_pointer_resolves_to_its_declaration() {
    let maps = self_maps();
    let mut sym = Symbolizer::new(opts());
    let addr = outer_frame as *const () as usize as u64;
    let resolved = sym.resolve_as(&maps, &[addr], AddrKind::Exact);
    let f = &resolved[0].frames[0];
    assert_eq!(&*f.function, "leaktop::symbolize::tests::outer_frame");
    let decl = line_of("fn outer_frame()");
    assert!(
        (decl..decl + 2).contains(&f.line.unwrap()),
        "{f:?} vs {decl}"
    );
    assert_eq!(resolved[0].frames.len(), 1);
}

#[test]
fn unmapped_and_garbage_addresses_stay_raw() {
    let maps = self_maps();
    let mut sym = Symbolizer::new(opts());
    let out = sym.resolve(&maps, &[0, 1, 0x10, u64::MAX]);
    assert_eq!(out.len(), 4);
    assert_eq!(&*out[2].frames[0].function, "0x10");
    assert!(out
        .iter()
        .all(|r| r.frames.len() == 1 && r.frames[0].file.is_none()));
}

fn exe_mappings() -> (String, Vec<Mapping>) {
    let maps = self_maps();
    let exe = maps.exe_path().unwrap().to_owned();
    let mappings = maps
        .regions()
        .iter()
        .filter(|r| r.path == exe)
        .map(|r| Mapping {
            start: r.start,
            end: r.end,
            offset: r.offset,
            path: r.path.clone(),
        })
        .collect();
    (exe, mappings)
}

#[test]
fn explicit_mappings_with_build_id_check() {
    let ips = outer_frame();
    let (exe, mappings) = exe_mappings();
    let build_id = build_id_of(Path::new(&exe))
        .unwrap()
        .expect("rustc emits a build id");

    let right =
        ProcessMaps::from_mappings(mappings.clone()).with_exe(exe.clone(), build_id.clone());
    let mut sym = Symbolizer::new(opts());
    let frames = flatten(&sym.resolve(&right, &ips));
    find(&frames, "leaktop::symbolize::tests::outer_frame");
    assert!(sym
        .take_notes()
        .iter()
        .all(|n| !matches!(n, Note::BuildIdMismatch { .. })));

    // A process that runs another build of this path: never resolved against this file.
    let mut wrong_id = build_id.clone();
    wrong_id[0] ^= 0xff;
    let wrong = ProcessMaps::from_mappings(mappings).with_exe(exe.clone(), wrong_id);
    let mut sym = Symbolizer::new(opts());
    let frames = flatten(&sym.resolve(&wrong, &ips));
    assert!(
        frames
            .iter()
            .all(|f| f.file.is_none() && !f.function.contains("outer_frame")),
        "{frames:#?}"
    );
    let notes = sym.take_notes();
    assert!(
        notes
            .iter()
            .any(|n| matches!(n, Note::BuildIdMismatch { module, .. } if *module == exe)),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n
        .to_string()
        .starts_with("binary replaced: build id mismatch")));
    assert!(sym.take_notes().is_empty(), "notes are reported once");
}

#[test]
fn exe_descriptor_is_used_and_checked() {
    let ips = outer_frame();
    let (exe, mappings) = exe_mappings();
    let build_id = build_id_of(Path::new(&exe)).unwrap().unwrap();
    // A path nobody can open: only the descriptor reaches the binary.
    let moved: Vec<Mapping> = mappings
        .into_iter()
        .map(|m| Mapping {
            path: "/nonexistent/leaktop-test-exe".into(),
            ..m
        })
        .collect();
    let maps = ProcessMaps::from_mappings(moved)
        .with_exe("/nonexistent/leaktop-test-exe", build_id)
        .with_exe_file(std::fs::File::open(&exe).unwrap());
    let mut sym = Symbolizer::new(opts());
    let frames = flatten(&sym.resolve(&maps, &ips));
    find(&frames, "leaktop::symbolize::tests::outer_frame");
    let info: Vec<_> = sym.modules().collect();
    assert_eq!(info[0].opened_via, "executable descriptor from the agent");
}

#[test]
fn missing_module_is_a_note_not_an_error() {
    let maps = ProcessMaps::from_mappings(vec![Mapping {
        start: 0x1000,
        end: 0x2000,
        offset: 0x3000,
        path: "/nonexistent/libgone.so".into(),
    }]);
    let mut sym = Symbolizer::new(opts());
    let out = sym.resolve(&maps, &[0x1801]);
    assert_eq!(&*out[0].frames[0].function, "libgone.so+0x3800");
    assert_eq!(&*out[0].frames[0].module, "/nonexistent/libgone.so");
    let notes = sym.take_notes();
    assert!(
        matches!(&notes[..], [Note::ModuleUnavailable { .. }]),
        "{notes:?}"
    );
    assert!(notes[0].to_string().contains("/nonexistent/libgone.so"));
}

#[test]
fn frames_serialize() {
    let ips = outer_frame();
    let mut sym = Symbolizer::new(opts());
    let resolved = sym.resolve(&self_maps(), &ips);
    let bytes = postcard::to_allocvec(&resolved).unwrap();
    let mut back: Vec<ResolvedAddr> = postcard::from_bytes(&bytes).unwrap();
    // A frame's address is stored once, under its entry (as in a recording).
    for r in &mut back {
        r.frames.iter_mut().for_each(|f| f.addr = r.addr);
    }
    assert_eq!(back, resolved);
}

#[test]
fn symbolizer_can_move_to_another_thread() {
    fn assert_send<T: Send>() {}
    assert_send::<Symbolizer>();
    assert_send::<ProcessMaps>();
}

#[test]
fn maps_of_a_missing_process_is_a_clear_error() {
    // Pids are below 2^22 on Linux.
    let err = ProcessMaps::read(u32::MAX - 1).unwrap_err();
    let text = err.to_string();
    assert!(
        text.contains("/proc/4294967294/maps") && text.contains("still running"),
        "{text}"
    );
}

#[test]
fn hostile_mapping_offsets_do_not_panic() {
    // A small real ELF, so the module does load and its PT_LOADs are consulted.
    let exe = "/bin/sh".to_owned();
    let maps = ProcessMaps::from_mappings(vec![Mapping {
        start: 0x1000,
        end: 0x2000,
        offset: u64::MAX - 0x10,
        path: exe,
    }]);
    let mut sym = Symbolizer::new(opts());
    let out = sym.resolve(&maps, &[0x1800, 0x1001, 0x2000]);
    assert_eq!(out.len(), 3);
    assert!(out.iter().all(|r| r.frames[0].file.is_none()));
}

/// The symbolizing stage resolves a stack the agent defines into an `Event::Symbols`
/// on its worker thread, with the one resolver's rules (this process's maps, its exe and
/// build id), and a recording made after it stores those frames.
#[test]
fn the_stage_answers_a_stack_with_its_symbols() {
    use crate::source::{Event, Source, Symbolize};
    use leaktop_agent::wire::{AgentHello, AgentMsg, ClientMsg};
    use std::collections::VecDeque;
    use std::time::{Duration, Instant};

    struct Once(AgentHello, VecDeque<Event>);
    impl Source for Once {
        fn hello(&self) -> &AgentHello {
            &self.0
        }
        fn next(&mut self, timeout: Duration) -> Option<Event> {
            let ev = self.1.pop_front();
            if ev.is_none() {
                std::thread::sleep(timeout);
            }
            ev
        }
        fn request(&mut self, _msg: ClientMsg) {}
    }

    let exe = std::env::current_exe().expect("own exe");
    let hello = AgentHello {
        protocol: leaktop_agent::wire::PROTOCOL_VERSION,
        agent_version: "test".into(),
        pid: std::process::id(),
        start_time_ticks: 0,
        exe: exe.display().to_string(),
        build_id: super::build_id_of(&exe).ok().flatten().unwrap_or_default(),
        uid: 0,
        origin_unix_ms: 0,
        now_ms: 0,
        sample_interval_ms: 1000,
        history_len: 120,
        site_cap: 1000,
    };
    let stack = AgentMsg::Stack {
        id: 1,
        frames: outer_frame(),
    };
    let mut stage = Symbolize::new(Once(hello, VecDeque::from([Event::Msg(stack.clone())])));
    assert_eq!(stage.next(Duration::ZERO), Some(Event::Msg(stack)));
    let mut session = crate::model::Session::new();
    let until = Instant::now() + Duration::from_secs(60);
    while session.symbols.is_empty() && Instant::now() < until {
        if let Some(ev) = stage.next(Duration::from_millis(100)) {
            session.apply(&ev);
        }
    }
    let frames = session.symbols.get(&1).expect("the stack resolved");
    find(frames, "leaktop::symbolize::tests::outer_frame");
    assert!(!stage.busy(), "every stack asked was answered");
}
