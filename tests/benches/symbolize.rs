//! Symbolization benchmark (run by `scripts/bench.sh symbolize`; a plain `harness = false`
//! bench, no timing assertions).
//!
//! Usage: `cargo bench --bench symbolize -- [ELF file]` (default `target/debug/leaktop`).
//! The file's executable PT_LOAD is "mapped" at a fake base through an explicit mapping
//! list, the way the agent reports a live process, and addresses are taken from the middle
//! of its function symbols. Measures:
//! - cold load: a fresh `Symbolizer` resolving one address (open, read, parse DWARF);
//! - a first pass over all sample addresses (compilation units parsed on first use);
//! - warm, uncached addresses (units parsed; DWARF lookup, inline frames, demangling);
//! - cache hits (every address seen before).

use std::path::PathBuf;
use std::time::{Duration, Instant};

use leaktop::symbolize::{Options, ProcessMaps, Symbolizer};
use leaktop_agent::wire::Mapping;
use object::{Object, ObjectSegment, ObjectSymbol, SegmentFlags, SymbolKind};

const BASE: u64 = 0x5555_0000_0000;
const MAX_ADDRS: usize = 20_000;
const PF_X: u32 = 1;

fn main() {
    // `cargo bench` passes `--bench`; the first other argument is the file.
    let path = std::env::args()
        .skip(1)
        .find(|a| !a.starts_with("--"))
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target/debug/leaktop"));
    let data = match std::fs::read(&path) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("bench symbolize: cannot read {}: {e}", path.display());
            std::process::exit(2);
        }
    };
    let obj = match object::File::parse(&*data) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("bench symbolize: {} is not ELF: {e}", path.display());
            std::process::exit(2);
        }
    };
    let abs = std::fs::canonicalize(&path).unwrap_or(path.clone());
    let mut mappings = Vec::new();
    for seg in obj.segments() {
        let SegmentFlags::Elf { p_flags } = seg.flags() else {
            continue;
        };
        if p_flags & PF_X == 0 {
            continue;
        }
        let (off, filesz) = seg.file_range();
        let va = seg.address();
        mappings.push(Mapping {
            start: BASE + (va & !0xfff),
            end: BASE + ((va + filesz + 0xfff) & !0xfff),
            offset: off & !0xfff,
            path: abs.to_string_lossy().into_owned(),
        });
    }
    let mut funcs: Vec<u64> = obj
        .symbols()
        .filter(|s| s.kind() == SymbolKind::Text && s.size() > 2)
        .map(|s| BASE + s.address() + s.size() / 2)
        .collect();
    funcs.sort_unstable();
    funcs.dedup();
    let stride = (funcs.len() / MAX_ADDRS).max(1);
    let addrs: Vec<u64> = funcs
        .iter()
        .step_by(stride)
        .copied()
        .take(MAX_ADDRS)
        .collect();
    let mb = data.len() as f64 / 1e6;
    drop(obj);
    drop(data);
    if addrs.is_empty() || mappings.is_empty() {
        eprintln!(
            "bench symbolize: {} has no executable code symbols",
            path.display()
        );
        std::process::exit(2);
    }
    let maps = || ProcessMaps::from_mappings(mappings.clone());

    println!(
        "symbolize: file {} ({mb:.1} MB), {} sample addresses",
        abs.display(),
        addrs.len()
    );

    let mut colds = Vec::new();
    for _ in 0..3 {
        let (t, c) = (Instant::now(), cpu_now());
        let mut sym = Symbolizer::new(Options::default());
        let r = sym.resolve(&maps(), &addrs[..1]);
        colds.push((t.elapsed(), cpu_now().saturating_sub(c)));
        assert!(!r[0].frames.is_empty());
    }
    colds.sort();
    println!(
        "symbolize: cold load + first address: {} wall, {} cpu (runs: {})",
        ms(colds[colds.len() / 2].0),
        ms(colds[colds.len() / 2].1),
        colds.iter().map(|d| ms(d.0)).collect::<Vec<_>>().join(", ")
    );

    let maps = maps();
    let mut sym = Symbolizer::new(Options {
        cache_capacity: addrs.len() * 2,
        ..Options::default()
    });
    sym.resolve(&maps, &addrs[..1]);
    // Stacks as the agent sends them: a few dozen addresses each.
    let stacks: Vec<&[u64]> = addrs.chunks(32).collect();
    let pass = |sym: &mut Symbolizer| {
        let (t, c) = (Instant::now(), cpu_now());
        let frames: usize = stacks
            .iter()
            .map(|s| {
                sym.resolve(&maps, s)
                    .iter()
                    .map(|r| r.frames.len())
                    .sum::<usize>()
            })
            .sum();
        (frames, t.elapsed(), cpu_now().saturating_sub(c))
    };
    let report = |what: &str, (frames, took, cpu): (usize, Duration, Duration), n: usize| {
        println!(
            "symbolize: {what}: {n} addrs -> {frames} frames in {} wall = {:.0} frames/s; \
             {} cpu = {:.0} frames/s ({:.2} µs cpu per address)",
            ms(took),
            frames as f64 / took.as_secs_f64(),
            ms(cpu),
            frames as f64 / cpu.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / n as f64
        );
    };
    // First pass: each compilation unit's line program and functions are parsed on first use.
    report(
        "first pass over the binary (units parsed on demand)",
        pass(&mut sym),
        addrs.len(),
    );
    // Warm: units parsed, addresses not cached: DWARF lookup + inline frames + demangling.
    sym.clear_address_cache();
    report("warm, uncached addresses", pass(&mut sym), addrs.len());
    let rounds: usize = std::env::var("ROUNDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut total = (0, Duration::ZERO, Duration::ZERO);
    for _ in 0..rounds {
        let (f, t, c) = pass(&mut sym);
        total = (total.0 + f, total.1 + t, total.2 + c);
    }
    report("cache hits", total, rounds * addrs.len());
}

/// CPU time of this thread: on a shared machine wall time also counts waiting for a core.
fn cpu_now() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec into the valid pointer it is given.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1e3)
}
