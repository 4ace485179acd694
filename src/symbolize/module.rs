//! One loaded module (executable or shared library): its PT_LOAD layout, DWARF context and
//! symbol table, and the lookup of one address into (possibly inlined) frames.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::elf::{self, Load, Reader, Symbol};

/// Where a module's line information came from.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub enum DebugSource {
    /// DWARF inside the module itself.
    Embedded,
    /// A separate file named by `.gnu_debuglink` (CRC checked).
    DebugLink(PathBuf),
    /// A separate file under `<debug dir>/.build-id/xx/rest.debug`.
    BuildIdDir(PathBuf),
    /// No DWARF anywhere: function names from the symbol table, no file:line.
    SymbolsOnly,
    /// Neither DWARF nor symbols.
    Nothing,
}

/// Public facts about a loaded module, for diagnostics (`leaktop dump` header, TUI help).
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ModuleInfo {
    /// Path of the module as first seen in a process's maps.
    pub path: String,
    /// Hex GNU build id, if the module has one.
    pub build_id: Option<String>,
    /// Which file was actually read (`/proc/<pid>/map_files/…`, a path, `exe fd`, …).
    pub opened_via: String,
    pub debug: DebugSource,
}

/// One function frame at an address, before classification.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct RawFrame {
    pub function: Option<String>,
    pub file: Option<String>,
    pub line: Option<u32>,
    pub column: Option<u32>,
}

pub(crate) struct Module {
    pub info: ModuleInfo,
    pub loads: Vec<Load>,
    ctx: Option<addr2line::Context<Reader>>,
    symbols: Vec<Symbol>,
}

impl Module {
    pub fn new(
        info: ModuleInfo,
        loads: Vec<Load>,
        ctx: Option<addr2line::Context<Reader>>,
        symbols: Vec<Symbol>,
    ) -> Self {
        Module {
            info,
            loads,
            ctx,
            symbols,
        }
    }

    pub fn svma(&self, file_off: u64) -> Option<u64> {
        elf::file_offset_to_svma(&self.loads, file_off)
    }

    /// Frames at `svma`, innermost (most deeply inlined) first. Empty when nothing is known.
    ///
    /// With `debug = "line-tables-only"` DWARF carries no linkage names, only bare ones
    /// (`poll`, `{async_fn#0}`) outside any namespace: the outermost frame then takes its
    /// name from the symbol table, inlined frames keep the bare name (their file:line is
    /// still exact).
    pub fn lookup(&self, svma: u64) -> Vec<RawFrame> {
        let mut frames = self.dwarf_frames(svma).unwrap_or_default();
        let symbol = || elf::find_symbol(&self.symbols, svma).map(|s| demangle(&s.name));
        match frames.last_mut() {
            // The outermost frame is the real (non-inlined) function, which the symbol table
            // names exactly: use it when DWARF has no name or only a bare one.
            Some(outer) if outer.function.as_deref().is_none_or(|n| !is_qualified(n)) => {
                if let Some(name) = symbol() {
                    outer.function = Some(name);
                }
            }
            Some(_) => {}
            None => {
                if let Some(name) = symbol() {
                    frames.push(RawFrame {
                        function: Some(name),
                        ..RawFrame::default()
                    });
                }
            }
        }
        frames
    }

    fn dwarf_frames(&self, svma: u64) -> Option<Vec<RawFrame>> {
        let ctx = self.ctx.as_ref()?;
        let mut iter = ctx.find_frames(svma).skip_all_loads().ok()?;
        let mut out = Vec::new();
        // A corrupt DIE tree could loop; no real stack inlines this deep.
        while out.len() < 256 {
            let Ok(Some(frame)) = iter.next() else { break };
            let function = frame
                .function
                .as_ref()
                .and_then(|f| f.raw_name().ok())
                .map(|n| demangle(&n));
            let (file, line, column) = match frame.location {
                Some(loc) => (
                    loc.file.map(str::to_owned),
                    loc.line.filter(|l| *l != 0),
                    loc.column.filter(|c| *c != 0),
                ),
                None => (None, None, None),
            };
            out.push(RawFrame {
                function,
                file,
                line,
                column,
            });
        }
        Some(out)
    }
}

/// A Rust path that already names its crate: `a::b`, `<T as a::Tr>::f`, `a::f<T>`.
fn is_qualified(name: &str) -> bool {
    if name.starts_with('<') {
        return true;
    }
    let head = name.split('<').next().unwrap_or(name);
    head.contains("::")
}

/// Rust names in the `{:#}` form (no hash); anything else as it is.
pub(crate) fn demangle(name: &str) -> String {
    match rustc_demangle::try_demangle(name) {
        Ok(d) => format!("{d:#}"),
        Err(_) => name.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn demangles_legacy_and_v0_without_hash() {
        assert_eq!(
            demangle("_ZN4core3ptr13drop_in_place17h0123456789abcdefE"),
            "core::ptr::drop_in_place"
        );
        assert_eq!(demangle("_RNvCs1234_7mycrate3foo"), "mycrate::foo");
        assert_eq!(demangle("memcpy"), "memcpy");
    }

    #[test]
    fn qualified_names() {
        assert!(is_qualified("app::f"));
        assert!(is_qualified("<app::Leaf as core::future::Future>::poll"));
        assert!(is_qualified("app::f<u8>"));
        assert!(!is_qualified("poll"));
        assert!(!is_qualified("{async_fn#0}"));
        assert!(!is_qualified("try_with<tokio::runtime::context::Context>"));
    }
}
