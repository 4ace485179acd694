//! Filling a recording's symbol frames from the symbolizer while the target is alive, so
//! a replay shows await chains with no binary: the one place the record format meets
//! [`crate::symbolize`].

use std::collections::HashMap;

use leaktop_agent::wire::{AgentHello, Mapping};

use super::format::{SymFrame, SymbolEntry};
use super::tee::Resolver;
use crate::symbolize::{FrameClass, ProcessMaps, ResolvedAddr, SharedSymbolizer};

/// A recorded frame of a resolved one.
pub fn sym_frame(f: &crate::symbolize::Frame) -> SymFrame {
    SymFrame {
        function: Some(f.function.to_string()),
        file: f.file.as_deref().map(str::to_string),
        line: f.line,
        column: f.column,
        inlined: f.inlined,
        module: (!f.module.is_empty()).then(|| f.module.to_string()),
        class: Some(class_name(f.class).to_string()),
    }
}

/// The stable name of a frame class in recordings.
pub fn class_name(c: FrameClass) -> &'static str {
    match c {
        FrameClass::User => "user",
        FrameClass::Runtime => "runtime",
        FrameClass::Std => "std",
        FrameClass::Agent => "agent",
    }
}

fn entries(resolved: Vec<ResolvedAddr>) -> Vec<SymbolEntry> {
    resolved
        .into_iter()
        .map(|r| SymbolEntry {
            addr: r.addr,
            frames: r.frames.iter().map(sym_frame).collect(),
        })
        .collect()
}

/// A [`Resolver`] for a live target: the process's maps as `/proc` shows them (read
/// again when an address falls outside every known module, e.g. after a `dlopen`), or the
/// agent's module list when `/proc/<pid>` cannot be read, checked against the hello's
/// build id.
pub fn live_resolver() -> Resolver {
    live_resolver_with(crate::symbolize::shared())
}

/// The same over a symbolizer shared with the live view, so the target's debug info is
/// loaded once.
pub fn live_resolver_with(symbolizer: SharedSymbolizer) -> Resolver {
    let mut maps: HashMap<u32, ProcessMaps> = HashMap::new();
    Box::new(
        move |hello: &AgentHello, modules: &[Mapping], addrs: &[u64]| {
            let stale = maps
                .get(&hello.pid)
                .is_none_or(|m| addrs.iter().any(|a| m.find(*a).is_none()));
            if stale {
                let fresh = match ProcessMaps::read(hello.pid) {
                    Ok(m) => m.with_exe(hello.exe.clone(), hello.build_id.clone()),
                    Err(_) => ProcessMaps::from_mappings(modules.to_vec())
                        .with_exe(hello.exe.clone(), hello.build_id.clone()),
                };
                maps.clear();
                maps.insert(hello.pid, fresh);
            }
            let Some(m) = maps.get(&hello.pid) else {
                return Vec::new();
            };
            let mut symbolizer = symbolizer
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            entries(symbolizer.resolve(m, addrs))
        },
    )
}
