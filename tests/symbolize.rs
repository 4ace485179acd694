//! End-to-end symbolization: a real release child (opt-level 3, `debug = "limited"`) blocked
//! four async fns deep prints its raw return addresses; they are resolved from outside
//! through `/proc/<pid>/maps`, with the debug info embedded, split off (debuglink, build-id
//! dir), absent, and with the executable deleted or replaced under the running process.

mod common;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{fixture_bin, fixture_source, run_tool, ChildGuard, Profile};
use leaktop::symbolize::{
    build_id_of, flatten, fold, DebugSource, FoldMode, Folded, Frame, Note, Options, ProcessMaps,
    Symbolizer,
};
use leaktop_agent::wire::Mapping;

const FIXTURE: &str = "await_chain";
const CHAIN: [&str; 4] = ["chain_four", "chain_three", "chain_two", "chain_one"];
const WAIT: Duration = Duration::from_secs(30);

/// A running copy of the fixture and the raw stack it printed.
struct Blocked {
    child: ChildGuard,
    addrs: Vec<u64>,
}

fn start(bin: &Path) -> Blocked {
    let mut child = ChildGuard::spawn_path(bin);
    let line = child.read_line_starting("stack ", WAIT);
    let addrs = line
        .split_whitespace()
        .map(|s| {
            let hex = s.strip_prefix("0x").unwrap_or(s);
            u64::from_str_radix(hex, 16).unwrap_or_else(|e| panic!("bad address {s:?}: {e}"))
        })
        .collect::<Vec<_>>();
    assert!(addrs.len() > 5, "suspiciously short stack: {line}");
    Blocked { child, addrs }
}

/// `(fn name, line)` of each `// @chain_*` marker in the fixture's source.
fn expected_chain() -> Vec<(String, u32)> {
    let src = std::fs::read_to_string(fixture_source(FIXTURE)).unwrap();
    CHAIN
        .iter()
        .map(|name| {
            let marker = format!("// @{name}");
            let idx = src
                .lines()
                .position(|l| l.trim_end().ends_with(&marker))
                .unwrap_or_else(|| panic!("marker {marker} missing"));
            (name.to_string(), u32::try_from(idx + 1).unwrap())
        })
        .collect()
}

fn user_frames(frames: &[Frame]) -> Vec<&Frame> {
    fold(frames, FoldMode::UserOnly)
        .into_iter()
        .filter_map(|f| match f {
            Folded::Frame(f) => Some(f),
            Folded::Hidden { .. } => None,
        })
        .collect()
}

fn show(frames: &[Frame]) -> String {
    frames
        .iter()
        .map(|f| {
            format!(
                "{:?} {}{} {}\n",
                f.class,
                if f.inlined { "(inlined) " } else { "" },
                f.function,
                f.location().unwrap_or_default()
            )
        })
        .collect()
}

/// The folded (user-only) chain holds the four async fns, innermost first, consecutive, each
/// at the line of its `.await` in the fixture.
fn assert_await_chain(frames: &[Frame]) {
    let user = user_frames(frames);
    // Async fns demangle to their state machine's poll: `crate::fn_name::{{closure}}`.
    let chain_fn = |name: &str| format!("{FIXTURE}::{name}::{{{{closure}}}}");
    let start = user
        .iter()
        .position(|f| *f.function == chain_fn("chain_four"))
        .unwrap_or_else(|| panic!("chain_four not among the user frames:\n{}", show(frames)));
    let got: Vec<(String, Option<u32>, bool)> = user[start..]
        .iter()
        .take(4)
        .map(|f| {
            let file_ok = f
                .file
                .as_deref()
                .is_some_and(|p| p.ends_with(&format!("tests/fixtures/src/bin/{FIXTURE}.rs")));
            (f.function.to_string(), f.line, file_ok)
        })
        .collect();
    let want: Vec<(String, Option<u32>, bool)> = expected_chain()
        .into_iter()
        .map(|(name, line)| (chain_fn(&name), Some(line), true))
        .collect();
    assert_eq!(got, want, "await chain, all frames:\n{}", show(frames));
    // Folding hides the runtime between the chain and `main`, and reports how many.
    let folded = fold(frames, FoldMode::UserOnly);
    assert!(
        folded
            .iter()
            .any(|f| matches!(f, Folded::Hidden { count } if *count > 1)),
        "{folded:?}"
    );
}

fn resolve(sym: &mut Symbolizer, maps: &ProcessMaps, addrs: &[u64]) -> Vec<Frame> {
    flatten(&sym.resolve(maps, addrs))
}

/// A private copy of the fixture in a temp dir, so it can be stripped, deleted or replaced.
fn copy_fixture(dir: &Path, name: &str) -> PathBuf {
    let src = fixture_bin(FIXTURE, Profile::Release);
    let dst = dir.join(name);
    std::fs::copy(&src, &dst).unwrap();
    dst
}

fn os(s: &Path) -> &OsStr {
    s.as_os_str()
}

fn no_debug_dirs() -> Options {
    Options {
        debug_dirs: Vec::new(),
        ..Options::default()
    }
}

fn exe_debug_source(sym: &Symbolizer, exe: &Path) -> DebugSource {
    let exe = exe.to_string_lossy();
    sym.modules()
        .find(|m| m.path == exe)
        .unwrap_or_else(|| panic!("{exe} not loaded"))
        .debug
        .clone()
}

#[test]
fn release_child_await_chain_resolves_through_proc_maps() {
    let bin = fixture_bin(FIXTURE, Profile::Release);
    let blocked = start(&bin);
    let maps = ProcessMaps::read(blocked.child.pid()).unwrap();
    let mut sym = Symbolizer::new(Options::default());
    let frames = resolve(&mut sym, &maps, &blocked.addrs);
    assert_await_chain(&frames);
    // The four async fns are one machine frame: inlined into the outermost one's poll.
    let chain: Vec<&Frame> = frames
        .iter()
        .filter(|f| {
            CHAIN
                .iter()
                .any(|c| f.function.contains(&format!("::{c}::")))
        })
        .collect();
    assert!(chain.iter().all(|f| f.inlined), "{}", show(&frames));
    assert!(chain.windows(2).all(|w| w[0].addr == w[1].addr));
    assert_eq!(exe_debug_source(&sym, &bin), DebugSource::Embedded);
    let notes = sym.take_notes();
    assert!(
        !notes
            .iter()
            .any(|n| matches!(n, Note::NoDebugInfo { module } if module.ends_with(FIXTURE))),
        "{notes:?}"
    );
}

#[test]
fn stripped_child_finds_debug_file_through_gnu_debuglink() {
    let dir = tempfile::tempdir().unwrap();
    let bin = copy_fixture(dir.path(), "chain-linked");
    let debug = dir.path().join("chain-linked.debug");
    run_tool(
        "objcopy",
        &[os("--only-keep-debug".as_ref()), os(&bin), os(&debug)],
    );
    run_tool("objcopy", &[os("--strip-debug".as_ref()), os(&bin)]);
    // `--add-gnu-debuglink` records the base name and the CRC of the file it reads.
    run_tool(
        "objcopy",
        &[OsStr::new("--add-gnu-debuglink"), os(&debug), os(&bin)],
    );
    let blocked = start(&bin);
    let maps = ProcessMaps::read(blocked.child.pid()).unwrap();
    let mut sym = Symbolizer::new(no_debug_dirs());
    let frames = resolve(&mut sym, &maps, &blocked.addrs);
    assert_await_chain(&frames);
    assert_eq!(
        exe_debug_source(&sym, &bin),
        DebugSource::DebugLink(debug.clone())
    );
}

#[test]
fn debuglink_with_wrong_crc_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let bin = copy_fixture(dir.path(), "chain-badcrc");
    let debug = dir.path().join("chain-badcrc.debug");
    run_tool(
        "objcopy",
        &[os("--only-keep-debug".as_ref()), os(&bin), os(&debug)],
    );
    run_tool("objcopy", &[os("--strip-debug".as_ref()), os(&bin)]);
    run_tool(
        "objcopy",
        &[OsStr::new("--add-gnu-debuglink"), os(&debug), os(&bin)],
    );
    // Another debug file under the linked name: same build, different bytes.
    run_tool(
        "objcopy",
        &[
            OsStr::new("--add-section"),
            OsStr::new(".comment2=/dev/null"),
            os(&debug),
        ],
    );
    let blocked = start(&bin);
    let maps = ProcessMaps::read(blocked.child.pid()).unwrap();
    let mut sym = Symbolizer::new(no_debug_dirs());
    let frames = resolve(&mut sym, &maps, &blocked.addrs);
    assert!(frames
        .iter()
        .all(|f| *f.module != *bin.to_string_lossy() || f.file.is_none()));
    let notes = sym.take_notes();
    assert!(
        notes.iter().any(|n| matches!(n, Note::DebugLinkCrcMismatch { debug_file, .. } if Path::new(debug_file) == debug)),
        "{notes:?}"
    );
}

#[test]
fn stripped_child_finds_debug_file_in_build_id_dir() {
    let dir = tempfile::tempdir().unwrap();
    let bin = copy_fixture(dir.path(), "chain-buildid");
    let id = build_id_of(&bin).unwrap().expect("rustc emits a build id");
    let hex: String = id.iter().map(|b| format!("{b:02x}")).collect();
    let root = dir.path().join("debug-root");
    let debug = root
        .join(".build-id")
        .join(&hex[..2])
        .join(format!("{}.debug", &hex[2..]));
    std::fs::create_dir_all(debug.parent().unwrap()).unwrap();
    run_tool(
        "objcopy",
        &[os("--only-keep-debug".as_ref()), os(&bin), os(&debug)],
    );
    run_tool("objcopy", &[os("--strip-debug".as_ref()), os(&bin)]);
    let blocked = start(&bin);
    let maps = ProcessMaps::read(blocked.child.pid()).unwrap();
    let mut sym = Symbolizer::new(Options {
        debug_dirs: vec![root],
        ..Options::default()
    });
    let frames = resolve(&mut sym, &maps, &blocked.addrs);
    assert_await_chain(&frames);
    assert_eq!(exe_debug_source(&sym, &bin), DebugSource::BuildIdDir(debug));
}

#[test]
fn no_debug_info_gives_symbol_names_and_a_note() {
    let dir = tempfile::tempdir().unwrap();
    let bin = copy_fixture(dir.path(), "chain-nodebug");
    run_tool("objcopy", &[os("--strip-debug".as_ref()), os(&bin)]);
    let blocked = start(&bin);
    let maps = ProcessMaps::read(blocked.child.pid()).unwrap();
    let mut sym = Symbolizer::new(no_debug_dirs());
    let frames = resolve(&mut sym, &maps, &blocked.addrs);
    let module = bin.to_string_lossy().into_owned();
    let own: Vec<&Frame> = frames.iter().filter(|f| *f.module == *module).collect();
    assert!(own
        .iter()
        .all(|f| f.file.is_none() && f.line.is_none() && !f.inlined));
    // Names come from .symtab: the non-inlined functions are there, the inlined async fns
    // are not (they exist only as DWARF inline frames).
    let names: Vec<&str> = own.iter().map(|f| &*f.function).collect();
    assert!(names.contains(&"await_chain::capture_stack"), "{names:?}");
    assert!(names.contains(&"await_chain::main"), "{names:?}");
    let notes = sym.take_notes();
    let note = notes
        .iter()
        .find(|n| matches!(n, Note::NoDebugInfo { module: m } if *m == module))
        .unwrap_or_else(|| panic!("no NoDebugInfo note for {module}: {notes:?}"));
    let text = note.to_string();
    assert!(
        text.contains("no debug info in") && text.contains("lines missing"),
        "{text}"
    );
    assert_eq!(exe_debug_source(&sym, &bin), DebugSource::SymbolsOnly);
}

/// The agent's view: the exec mappings of the process, as `wire::Mapping`s.
fn agent_mappings(pid: u32) -> Vec<Mapping> {
    ProcessMaps::read(pid)
        .unwrap()
        .regions()
        .iter()
        .filter(|r| !r.is_pseudo())
        .map(|r| Mapping {
            start: r.start,
            end: r.end,
            offset: r.offset,
            path: if r.deleted {
                format!("{} (deleted)", r.path)
            } else {
                r.path.clone()
            },
        })
        .collect()
}

#[test]
fn deleted_executable_still_resolves_or_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let bin = copy_fixture(dir.path(), "chain-deleted");
    let blocked = start(&bin);
    let pid = blocked.child.pid();
    std::fs::remove_file(&bin).unwrap();

    // With the pid: through /proc/<pid>/exe (or map_files).
    let maps = ProcessMaps::read(pid).unwrap();
    assert!(
        maps.regions().iter().any(|r| r.deleted),
        "{:?}",
        maps.regions()
    );
    let mut sym = Symbolizer::new(no_debug_dirs());
    assert_await_chain(&resolve(&mut sym, &maps, &blocked.addrs));

    // Without a pid (another pid namespace, say): nothing reaches the mapped copy, and the
    // note says so.
    let module = bin.to_string_lossy().into_owned();
    let maps = ProcessMaps::from_mappings(agent_mappings(pid)).with_exe(module.clone(), Vec::new());
    let mut sym = Symbolizer::new(no_debug_dirs());
    let frames = resolve(&mut sym, &maps, &blocked.addrs);
    assert!(frames
        .iter()
        .filter(|f| *f.module == *module)
        .all(|f| f.file.is_none()));
    let notes = sym.take_notes();
    assert!(
        notes.iter().any(|n| matches!(n, Note::ModuleUnavailable { module: m, reason } if *m == module && reason.contains("deleted"))),
        "{notes:?}"
    );
}

#[test]
fn replaced_executable_is_never_used_for_the_old_process() {
    let dir = tempfile::tempdir().unwrap();
    let bin = copy_fixture(dir.path(), "chain-replaced");
    let old_id = build_id_of(&bin).unwrap().unwrap();
    let blocked = start(&bin);
    let pid = blocked.child.pid();
    // What the agent sent when we attached, before the binary was replaced: its mapping
    // list (no " (deleted)" yet) and a descriptor of its executable.
    let listed = agent_mappings(pid);
    let exe_fd = std::fs::File::open(&bin).unwrap();
    // "Rebuild": a different ELF renamed over the path, as linkers and cargo do.
    let other = dir.path().join("new-build");
    std::fs::copy(std::env::current_exe().unwrap(), &other).unwrap();
    std::fs::rename(&other, &bin).unwrap();
    assert_ne!(build_id_of(&bin).unwrap(), Some(old_id.clone()));
    let module = bin.to_string_lossy().into_owned();

    // With the pid: /proc/<pid>/exe is the running build.
    let maps = ProcessMaps::read(pid).unwrap();
    let mut sym = Symbolizer::new(no_debug_dirs());
    assert_await_chain(&resolve(&mut sym, &maps, &blocked.addrs));

    // From the agent's mapping list alone: the file at the path has another build id, so
    // its frames stay unresolved and the note says why.
    let agent =
        || ProcessMaps::from_mappings(listed.clone()).with_exe(module.clone(), old_id.clone());
    let mut sym = Symbolizer::new(no_debug_dirs());
    let frames = resolve(&mut sym, &agent(), &blocked.addrs);
    let own: Vec<&Frame> = frames.iter().filter(|f| *f.module == *module).collect();
    assert!(!own.is_empty());
    assert!(
        own.iter()
            .all(|f| f.file.is_none() && f.function.starts_with("chain-replaced+0x")),
        "{}",
        show(&frames)
    );
    let notes = sym.take_notes();
    assert!(
        notes
            .iter()
            .any(|n| matches!(n, Note::BuildIdMismatch { module: m, .. } if *m == module)),
        "{notes:?}"
    );
    assert!(notes.iter().any(|n| n
        .to_string()
        .starts_with("binary replaced: build id mismatch")));

    // With the descriptor the agent sends: resolved against the running build.
    let mut sym = Symbolizer::new(no_debug_dirs());
    assert_await_chain(&resolve(
        &mut sym,
        &agent().with_exe_file(exe_fd),
        &blocked.addrs,
    ));
}
