//! Out-of-process symbolization of raw return addresses captured by the agent.
//!
//! Addresses are mapped to a module through the process's maps ([`ProcessMaps`]), then to
//! the ELF's virtual address through the PT_LOAD segment that holds their file offset
//! (`file_off = ip - vm_start + vm_pgoff; svma = file_off - p_offset + p_vaddr`), and looked
//! up in DWARF (with every inlined frame) or, failing that, the symbol table. Modules are
//! cached by build id and every resolved address in an LRU, so a stack seen again costs a
//! few hash lookups. Anything worth telling the user (no debug info, a rebuilt binary) is
//! queued as a [`Note`], once per module.

mod classify;
mod elf;
mod error;
mod maps;
mod module;
mod open;

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::num::NonZeroUsize;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use lru::LruCache;
use serde::{Deserialize, Serialize};

pub use crate::frame::{display_name, fold, FoldMode, Folded, Frame, FrameClass};
pub use classify::{crate_of, Classifier};
pub use error::SymbolizeError;
pub use maps::{ProcessMaps, Region};
pub use module::{DebugSource, ModuleInfo};

use module::{Module, RawFrame};
use open::hex;

/// The frames of one raw address.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct ResolvedAddr {
    pub addr: u64,
    /// At least one frame; innermost first.
    pub frames: Vec<Frame>,
}

/// All frames of a resolved stack, innermost first (the order of the raw stack, with each
/// address's inlined frames expanded in place).
pub fn flatten(resolved: &[ResolvedAddr]) -> Vec<Frame> {
    resolved
        .iter()
        .flat_map(|r| r.frames.iter().cloned())
        .collect()
}

/// Something the user should know about the quality of the resolved frames.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Hash)]
pub enum Note {
    /// The module and every debug file candidate lack DWARF.
    NoDebugInfo { module: String },
    /// Not even a symbol table: addresses stay raw.
    NoSymbols { module: String },
    /// The file found for the module was built again since the process started.
    BuildIdMismatch {
        module: String,
        file: String,
        expected: String,
        found: String,
    },
    /// No usable file for the module; `reason` lists what was tried.
    ModuleUnavailable { module: String, reason: String },
    /// A `.gnu_debuglink` target exists but its CRC does not match.
    DebugLinkCrcMismatch { module: String, debug_file: String },
    /// The module's DWARF could not be parsed; symbols are used instead.
    BadDebugInfo { module: String, message: String },
}

impl fmt::Display for Note {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Note::NoDebugInfo { module } => write!(
                f,
                "no debug info in {module}: lines missing, function names from the symbol table \
                 and inlined async fns not shown (build with debug = \"limited\" or \
                 \"line-tables-only\" in [profile.release], or install its separate debug file)"
            ),
            Note::NoSymbols { module } => write!(
                f,
                "no symbols in {module}: its frames stay raw addresses (the binary is fully \
                 stripped; keep debug info or a .debug file)"
            ),
            Note::BuildIdMismatch {
                module,
                file,
                expected,
                found,
            } => write!(
                f,
                "binary replaced: build id mismatch for {module}: {file} has {found}, the process \
                 runs {expected}; its frames stay unresolved rather than resolved against the \
                 wrong build (attach as root so /proc/<pid>/map_files is readable, or let the \
                 agent send its executable descriptor)"
            ),
            Note::ModuleUnavailable { module, reason } => {
                write!(f, "cannot open {module}, its frames stay unresolved: {reason}")
            }
            Note::DebugLinkCrcMismatch { module, debug_file } => write!(
                f,
                "{debug_file} is named by the .gnu_debuglink of {module} but its CRC differs \
                 (a debug file of another build); ignored"
            ),
            Note::BadDebugInfo { module, message } => write!(
                f,
                "unreadable debug info in {module} ({message}): function names from the symbol table"
            ),
        }
    }
}

/// Settings of a [`Symbolizer`].
#[derive(Clone, Debug)]
pub struct Options {
    /// Roots searched for separate debug files: `<root>/.build-id/xx/rest.debug` and
    /// `<root>/<module dir>/<debuglink name>`. Default: `/usr/lib/debug`.
    pub debug_dirs: Vec<PathBuf>,
    /// Resolved addresses kept in the LRU cache.
    pub cache_capacity: usize,
    pub classifier: Classifier,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            debug_dirs: vec![PathBuf::from("/usr/lib/debug")],
            cache_capacity: 65_536,
            classifier: Classifier::default(),
        }
    }
}

/// How the raw addresses were captured.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AddrKind {
    /// Return addresses (from an unwinder): looked up at `addr - 1`, inside the call.
    Return,
    /// Exact instruction addresses (a function pointer, a signal's faulting pc).
    Exact,
}

type ModuleId = usize;

/// Identity of a module file: its build id, or without one, the file's identity on disk.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum ModuleKey {
    BuildId(Vec<u8>),
    File {
        dev: u64,
        ino: u64,
        mtime: i64,
        size: u64,
    },
}

#[derive(Clone)]
enum RegionSlot {
    /// The module and the region's path as frames show it.
    Module(ModuleId, Arc<str>),
    Unavailable,
}

/// A symbol of an address, ready to become a [`Frame`] (cached per module and address).
struct Sym {
    function: Arc<str>,
    file: Option<Arc<str>>,
    line: Option<u32>,
    column: Option<u32>,
    inlined: bool,
    class: FrameClass,
}

/// Region cache entries kept before it is cleared (maps read again get new ids).
const REGION_CACHE_MAX: usize = 4096;

/// One symbolizer used from two threads (the live view and its recorder's symbol
/// thread), so a target's debug info is loaded and cached once.
pub type SharedSymbolizer = Arc<std::sync::Mutex<Symbolizer>>;

/// A new [`SharedSymbolizer`] with default options.
pub fn shared() -> SharedSymbolizer {
    Arc::new(std::sync::Mutex::new(Symbolizer::new(Options::default())))
}

/// Resolves raw addresses of other processes to demangled, classified frames.
pub struct Symbolizer {
    opts: Options,
    modules: Vec<Module>,
    by_key: HashMap<ModuleKey, ModuleId>,
    regions: HashMap<(u64, u64), RegionSlot>,
    addrs: LruCache<(ModuleId, u64), Arc<[Sym]>>,
    notes: Vec<Note>,
    noted: HashSet<Note>,
}

impl std::fmt::Debug for Symbolizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Symbolizer")
            .field("modules", &self.modules.len())
            .field("cached_addrs", &self.addrs.len())
            .finish_non_exhaustive()
    }
}

impl Symbolizer {
    pub fn new(opts: Options) -> Self {
        let cap = NonZeroUsize::new(opts.cache_capacity).unwrap_or(NonZeroUsize::MIN);
        Symbolizer {
            opts,
            modules: Vec::new(),
            by_key: HashMap::new(),
            regions: HashMap::new(),
            addrs: LruCache::new(cap),
            notes: Vec::new(),
            noted: HashSet::new(),
        }
    }

    /// Resolves return addresses (what unwinders and the agent capture).
    pub fn resolve(&mut self, maps: &ProcessMaps, addrs: &[u64]) -> Vec<ResolvedAddr> {
        self.resolve_as(maps, addrs, AddrKind::Return)
    }

    /// Resolves addresses of the given kind, one [`ResolvedAddr`] per address, in order.
    pub fn resolve_as(
        &mut self,
        maps: &ProcessMaps,
        addrs: &[u64],
        kind: AddrKind,
    ) -> Vec<ResolvedAddr> {
        addrs
            .iter()
            .map(|&addr| ResolvedAddr {
                addr,
                frames: self.resolve_one(maps, addr, kind),
            })
            .collect()
    }

    /// Notes queued since the last call (each distinct note is reported once).
    pub fn take_notes(&mut self) -> Vec<Note> {
        std::mem::take(&mut self.notes)
    }

    /// Forgets resolved addresses (modules stay loaded).
    pub fn clear_address_cache(&mut self) {
        self.addrs.clear();
    }

    /// The modules loaded so far.
    pub fn modules(&self) -> impl Iterator<Item = &ModuleInfo> {
        self.modules.iter().map(|m| &m.info)
    }

    fn note(&mut self, note: Note) {
        if self.noted.insert(note.clone()) {
            self.notes.push(note);
        }
    }

    fn resolve_one(&mut self, maps: &ProcessMaps, addr: u64, kind: AddrKind) -> Vec<Frame> {
        let probe = match kind {
            AddrKind::Return => addr.saturating_sub(1),
            AddrKind::Exact => addr,
        };
        let Some(region) = maps.find(probe) else {
            // Outside every mapping: the end-of-stack 0, a corrupt unwind, JIT code. Not the
            // user's known code, so folded by default.
            return vec![Frame::unknown(
                format!("{addr:#x}"),
                FrameClass::Std,
                "",
                addr,
            )];
        };
        if region.is_pseudo() {
            let class = self.opts.classifier.classify("", None, &region.path);
            return vec![Frame::unknown(
                region.path.clone(),
                class,
                &region.path,
                addr,
            )];
        }
        // The offset comes from outside (the agent's list): never let it overflow.
        let Some(file_off) = (probe - region.start).checked_add(region.offset) else {
            let class = self.opts.classifier.classify("", None, &region.path);
            return vec![Frame::unknown(
                format!("{addr:#x}"),
                class,
                &region.path,
                addr,
            )];
        };
        let slot = self.region_slot(maps, region);
        let basename = region.path.rsplit('/').next().unwrap_or(&region.path);
        let RegionSlot::Module(mid, module) = slot else {
            let name = format!("{basename}+{file_off:#x}");
            let class = self.opts.classifier.classify(&name, None, &region.path);
            return vec![Frame::unknown(name, class, &region.path, addr)];
        };
        let Some(svma) = self.modules[mid].svma(file_off) else {
            let name = format!("{basename}+{file_off:#x}");
            let class = self.opts.classifier.classify(&name, None, &region.path);
            return vec![Frame::unknown(name, class, &region.path, addr)];
        };
        let syms = match self.addrs.get(&(mid, svma)) {
            Some(s) => s.clone(),
            None => {
                let syms = self.symbolize(mid, svma, basename);
                self.addrs.put((mid, svma), syms.clone());
                syms
            }
        };
        syms.iter()
            .map(|s| Frame {
                function: s.function.clone(),
                file: s.file.clone(),
                line: s.line,
                column: s.column,
                inlined: s.inlined,
                class: s.class,
                module: module.clone(),
                addr,
            })
            .collect()
    }

    fn symbolize(&self, mid: ModuleId, svma: u64, basename: &str) -> Arc<[Sym]> {
        let module = &self.modules[mid];
        let raw = module.lookup(svma);
        let n = raw.len();
        if n == 0 {
            let function = format!("{basename}+{svma:#x}");
            let class = self
                .opts
                .classifier
                .classify(&function, None, &module.info.path);
            return Arc::from(vec![Sym {
                function: function.into(),
                file: None,
                line: None,
                column: None,
                inlined: false,
                class,
            }]);
        }
        raw.into_iter()
            .enumerate()
            .map(|(i, f)| {
                let RawFrame {
                    function,
                    file,
                    line,
                    column,
                } = f;
                let function = function.unwrap_or_else(|| format!("{basename}+{svma:#x}"));
                let class =
                    self.opts
                        .classifier
                        .classify(&function, file.as_deref(), &module.info.path);
                Sym {
                    function: function.into(),
                    file: file.map(Arc::from),
                    line,
                    column,
                    inlined: i + 1 < n,
                    class,
                }
            })
            .collect()
    }

    fn region_slot(&mut self, maps: &ProcessMaps, region: &Region) -> RegionSlot {
        let key = (maps.id, region.start);
        if let Some(slot) = self.regions.get(&key) {
            return slot.clone();
        }
        let slot = match self.open_region(maps, region) {
            Some(mid) => RegionSlot::Module(mid, Arc::from(region.path.as_str())),
            None => RegionSlot::Unavailable,
        };
        if self.regions.len() >= REGION_CACHE_MAX {
            self.regions.clear();
        }
        self.regions.insert(key, slot.clone());
        slot
    }

    fn open_region(&mut self, maps: &ProcessMaps, region: &Region) -> Option<ModuleId> {
        let opened = match open::open_module(maps, region) {
            Ok(o) => o,
            Err(failure) => {
                if let Some((file, expected, found)) = failure.mismatch {
                    self.note(Note::BuildIdMismatch {
                        module: region.path.clone(),
                        file,
                        expected: hex(&expected),
                        found: if found.is_empty() {
                            "no build id".into()
                        } else {
                            hex(&found)
                        },
                    });
                } else {
                    self.note(Note::ModuleUnavailable {
                        module: region.path.clone(),
                        reason: failure.reasons.join("; "),
                    });
                }
                return None;
            }
        };
        let key = match &opened.probe.build_id {
            Some(id) => ModuleKey::BuildId(id.clone()),
            None => match opened.file.metadata() {
                Ok(m) => ModuleKey::File {
                    dev: m.dev(),
                    ino: m.ino(),
                    mtime: m.mtime(),
                    size: m.size(),
                },
                Err(e) => {
                    self.note(Note::ModuleUnavailable {
                        module: region.path.clone(),
                        reason: format!("{}: {e}", opened.via),
                    });
                    return None;
                }
            },
        };
        if let Some(&mid) = self.by_key.get(&key) {
            return Some(mid);
        }
        let module = self.load_module(maps, region, opened)?;
        let mid = self.modules.len();
        self.modules.push(module);
        self.by_key.insert(key, mid);
        Some(mid)
    }

    fn load_module(
        &mut self,
        maps: &ProcessMaps,
        region: &Region,
        opened: open::OpenedModule,
    ) -> Option<Module> {
        let name = region.path.clone();
        let own = self.load_own(&name, &opened)?;
        let mut bad_dwarf = None;
        let own_dwarf = own.dwarf.unwrap_or_else(|e| {
            bad_dwarf = Some(e);
            None
        });
        let (dwarf, mut symbols, debug) = if own_dwarf.is_some() {
            (own_dwarf, own.symbols, DebugSource::Embedded)
        } else {
            self.separate_debug(maps, region, &opened, own.symbols, &mut bad_dwarf)
        };
        let ctx = match dwarf.map(addr2line::Context::from_dwarf) {
            Some(Ok(ctx)) => Some(ctx),
            Some(Err(e)) => {
                bad_dwarf = Some(e.to_string());
                None
            }
            None => None,
        };
        let debug = if ctx.is_some() {
            debug
        } else if symbols.is_empty() {
            DebugSource::Nothing
        } else {
            DebugSource::SymbolsOnly
        };
        self.note_quality(&name, &debug, bad_dwarf);
        symbols.shrink_to_fit();
        let info = ModuleInfo {
            path: name,
            build_id: opened.probe.build_id.as_deref().map(hex),
            opened_via: opened.via,
            debug,
        };
        Some(Module::new(info, opened.probe.loads, ctx, symbols))
    }

    /// The module file itself, read and parsed; `None` (with a note) when it cannot be.
    fn load_own(&mut self, name: &str, opened: &open::OpenedModule) -> Option<elf::Loaded> {
        let loaded = elf::read_all(&opened.file)
            .map_err(|e| e.to_string())
            .and_then(|data| elf::load(&data));
        loaded
            .map_err(|e| {
                self.note(Note::ModuleUnavailable {
                    module: name.to_string(),
                    reason: format!("{}: {e}", opened.via),
                })
            })
            .ok()
    }

    /// DWARF (and better symbols) from a separate debug file, when the module has none
    /// of its own: `.gnu_debuglink` and build-id files.
    fn separate_debug(
        &mut self,
        maps: &ProcessMaps,
        region: &Region,
        opened: &open::OpenedModule,
        own_symbols: Vec<elf::Symbol>,
        bad_dwarf: &mut Option<String>,
    ) -> (
        Option<gimli::Dwarf<elf::Reader>>,
        Vec<elf::Symbol>,
        DebugSource,
    ) {
        let mut search = open::DebugSearchNotes::default();
        let found = open::find_debug_file(
            &region.path,
            maps.pid(),
            &opened.probe,
            &self.opts.debug_dirs,
            &mut search,
        );
        for path in search.crc_mismatch {
            self.note(Note::DebugLinkCrcMismatch {
                module: region.path.clone(),
                debug_file: path.display().to_string(),
            });
        }
        match found.map(|d| (elf::load(&d.data), d.source)) {
            Some((Ok(dbg), source)) => {
                let symbols = if dbg.symbols.is_empty() {
                    own_symbols
                } else {
                    dbg.symbols
                };
                match dbg.dwarf {
                    Ok(dwarf) => (dwarf, symbols, source),
                    Err(e) => {
                        *bad_dwarf = Some(e);
                        (None, symbols, DebugSource::SymbolsOnly)
                    }
                }
            }
            Some((Err(e), _)) => {
                *bad_dwarf = Some(e);
                (None, own_symbols, DebugSource::SymbolsOnly)
            }
            None => (None, own_symbols, DebugSource::SymbolsOnly),
        }
    }

    /// Notes what the user should know about a module's debug info.
    fn note_quality(&mut self, name: &str, debug: &DebugSource, bad_dwarf: Option<String>) {
        if let Some(message) = bad_dwarf {
            self.note(Note::BadDebugInfo {
                module: name.to_string(),
                message,
            });
        }
        match debug {
            DebugSource::Nothing => self.note(Note::NoSymbols {
                module: name.to_string(),
            }),
            DebugSource::SymbolsOnly => self.note(Note::NoDebugInfo {
                module: name.to_string(),
            }),
            _ => {}
        }
    }
}

/// The GNU build id of an ELF file (`None` when it has none).
pub fn build_id_of(path: &Path) -> Result<Option<Vec<u8>>, SymbolizeError> {
    let file = std::fs::File::open(path).map_err(|source| SymbolizeError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    elf::probe(&file)
        .map(|p| p.build_id)
        .map_err(|message| SymbolizeError::Elf {
            path: path.to_path_buf(),
            message,
        })
}

#[cfg(test)]
mod tests;
