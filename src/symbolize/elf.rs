//! ELF facts the symbolizer needs: a cheap header probe (build id, `.gnu_debuglink`,
//! PT_LOAD segments, presence of DWARF), and the full load of DWARF sections and symbols.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use object::read::ReadCache;
use object::{Object, ObjectSection, ObjectSegment, ObjectSymbol, SymbolKind};

/// DWARF reader over a shared, immutable copy of a file (or of a decompressed section).
pub(crate) type Reader = gimli::EndianArcSlice<gimli::RunTimeEndian>;

/// A PT_LOAD segment: where a file range lands in the ELF's virtual address space.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Load {
    pub offset: u64,
    pub vaddr: u64,
    pub filesz: u64,
}

/// `file_off -> svma` through the PT_LOAD that holds the file offset:
/// `svma = file_off - p_offset + p_vaddr`.
pub(crate) fn file_offset_to_svma(loads: &[Load], file_off: u64) -> Option<u64> {
    loads
        .iter()
        .find(|l| file_off >= l.offset && file_off - l.offset < l.filesz)
        .map(|l| (file_off - l.offset).wrapping_add(l.vaddr))
}

/// What the headers of an ELF file say, read without loading the whole file.
#[derive(Clone, Debug, Default)]
pub(crate) struct ElfProbe {
    pub build_id: Option<Vec<u8>>,
    /// `.gnu_debuglink`: file name and CRC-32 of the separate debug file.
    pub debuglink: Option<(String, u32)>,
    pub loads: Vec<Load>,
    /// The file carries DWARF line information of its own.
    pub has_dwarf: bool,
}

/// Reads headers, notes and section table only.
pub(crate) fn probe(file: &File) -> Result<ElfProbe, String> {
    let cache = ReadCache::new(file);
    let obj = object::File::parse(&cache).map_err(|e| e.to_string())?;
    let build_id = obj
        .build_id()
        .map_err(|e| format!("bad build id note: {e}"))?
        .filter(|id| !id.is_empty())
        .map(<[u8]>::to_vec);
    let debuglink = obj.gnu_debuglink().ok().flatten().and_then(|(name, crc)| {
        let name = std::str::from_utf8(name).ok()?;
        // A link names a file in a directory, never a path.
        (!name.is_empty() && !name.contains('/') && name != "." && name != "..")
            .then(|| (name.to_owned(), crc))
    });
    let loads = obj
        .segments()
        .map(|s| {
            let (offset, filesz) = s.file_range();
            Load {
                offset,
                vaddr: s.address(),
                filesz,
            }
        })
        .collect();
    Ok(ElfProbe {
        build_id,
        debuglink,
        loads,
        has_dwarf: has_section_data(&obj, ".debug_info") && has_section_data(&obj, ".debug_line"),
    })
}

fn has_section_data<'data, O: Object<'data>>(obj: &O, name: &str) -> bool {
    obj.section_by_name(name)
        .and_then(|s| s.compressed_file_range().ok())
        .is_some_and(|r| r.uncompressed_size > 0 && r.compressed_size > 0)
}

/// Largest module or debug file read (the biggest real binaries are a few GB).
const MAX_FILE_BYTES: u64 = 8 << 30;

/// The whole file, from its start, whatever the descriptor's position. Read straight into
/// the shared buffer (no second copy: for a 50 MB binary the page faults of a copy cost as
/// much as the read).
pub(crate) fn read_all(file: &File) -> std::io::Result<Arc<[u8]>> {
    let mut f = file;
    let len = f.seek(SeekFrom::End(0))?;
    if len > MAX_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "{len} bytes is larger than the {MAX_FILE_BYTES} bytes a module may have"
        )));
    }
    let len = usize::try_from(len).map_err(std::io::Error::other)?;
    f.seek(SeekFrom::Start(0))?;
    let mut buf = Arc::<[u8]>::new_uninit_slice(len);
    let Some(uninit) = Arc::get_mut(&mut buf) else {
        return Err(std::io::Error::other("fresh buffer is shared"));
    };
    uninit.fill(std::mem::MaybeUninit::new(0));
    // SAFETY: every element was initialised by the fill above.
    let mut buf = unsafe { buf.assume_init() };
    let Some(bytes) = Arc::get_mut(&mut buf) else {
        return Err(std::io::Error::other("fresh buffer is shared"));
    };
    // A file that shrank since the seek is an error (read_exact); one that grew is cut.
    f.read_exact(bytes)?;
    Ok(buf)
}

/// A function symbol from `.symtab` or `.dynsym`.
#[derive(Clone, Debug)]
pub(crate) struct Symbol {
    pub addr: u64,
    pub size: u64,
    pub name: Box<str>,
}

/// Parsed contents of one ELF file (the module or its separate debug file).
pub(crate) struct Loaded {
    /// `Ok(None)`: no line information; `Err`: there is some, but it is unreadable.
    pub dwarf: Result<Option<gimli::Dwarf<Reader>>, String>,
    pub symbols: Vec<Symbol>,
}

/// Loads DWARF (if the file has line information) and the function symbols. Fails only
/// when the file is not ELF at all.
pub(crate) fn load(data: &Arc<[u8]>) -> Result<Loaded, String> {
    let obj = object::File::parse(&data[..]).map_err(|e| e.to_string())?;
    let endian = if obj.is_little_endian() {
        gimli::RunTimeEndian::Little
    } else {
        gimli::RunTimeEndian::Big
    };
    let dwarf = if has_section_data(&obj, ".debug_info") && has_section_data(&obj, ".debug_line") {
        load_dwarf(&obj, data, endian).map(Some)
    } else {
        Ok(None)
    };
    Ok(Loaded {
        dwarf,
        symbols: load_symbols(&obj),
    })
}

fn load_dwarf(
    obj: &object::File<'_>,
    data: &Arc<[u8]>,
    endian: gimli::RunTimeEndian,
) -> Result<gimli::Dwarf<Reader>, String> {
    let whole = Reader::new(data.clone(), endian);
    let empty = Reader::new(Arc::from(&[][..]), endian);
    gimli::Dwarf::load(|id| -> Result<Reader, String> {
        let Some(section) = obj.section_by_name(id.name()) else {
            return Ok(empty.clone());
        };
        let range = section
            .compressed_file_range()
            .map_err(|e| format!("section {}: {e}", id.name()))?;
        if range.format == object::CompressionFormat::None {
            let start = usize::try_from(range.offset).map_err(|e| e.to_string())?;
            let len = usize::try_from(range.compressed_size).map_err(|e| e.to_string())?;
            match start.checked_add(len) {
                Some(end) if end <= data.len() => Ok(whole.range(start..end)),
                _ => Err(format!("section {} lies outside the file", id.name())),
            }
        } else {
            let bytes = section
                .uncompressed_data()
                .map_err(|e| format!("section {}: {e}", id.name()))?;
            Ok(Reader::new(Arc::from(&bytes[..]), endian))
        }
    })
}

fn load_symbols(obj: &object::File<'_>) -> Vec<Symbol> {
    let collect = |syms: &mut dyn Iterator<Item = object::Symbol<'_, '_>>| -> Vec<Symbol> {
        syms.filter(|s| s.kind() == SymbolKind::Text && s.is_definition() && s.address() != 0)
            .filter_map(|s| {
                Some(Symbol {
                    addr: s.address(),
                    size: s.size(),
                    name: s.name().ok()?.into(),
                })
            })
            .collect()
    };
    let mut symbols = collect(&mut obj.symbols());
    if symbols.is_empty() {
        symbols = collect(&mut obj.dynamic_symbols());
    }
    // Sized symbols first among equals, so an alias without size never hides one with it.
    symbols.sort_by(|a, b| a.addr.cmp(&b.addr).then(b.size.cmp(&a.size)));
    symbols.dedup_by_key(|s| s.addr);
    symbols
}

/// The symbol covering `svma`: the last one starting at or below it, if its size (or, for
/// symbols without size, the next symbol) says it still covers the address.
pub(crate) fn find_symbol(symbols: &[Symbol], svma: u64) -> Option<&Symbol> {
    let idx = symbols.partition_point(|s| s.addr <= svma).checked_sub(1)?;
    let sym = symbols.get(idx)?;
    if sym.size > 0 {
        (svma - sym.addr < sym.size).then_some(sym)
    } else {
        // Unsized (hand-written assembly): trust it up to the next symbol.
        Some(sym)
    }
}

/// CRC-32 as `.gnu_debuglink` defines it (the zlib polynomial) of a whole file.
pub(crate) fn crc32(data: &[u8]) -> u32 {
    crc32fast::hash(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svma_goes_through_the_load_that_holds_the_offset() {
        // LLD layout: text PT_LOAD has p_offset != p_vaddr.
        let loads = [
            Load {
                offset: 0,
                vaddr: 0,
                filesz: 0x3a000,
            },
            Load {
                offset: 0x3a000,
                vaddr: 0x3b000,
                filesz: 0x1c5000,
            },
        ];
        assert_eq!(file_offset_to_svma(&loads, 0x100), Some(0x100));
        assert_eq!(file_offset_to_svma(&loads, 0x3a010), Some(0x3b010));
        assert_eq!(file_offset_to_svma(&loads, 0x3a000 + 0x1c5000), None);
    }

    #[test]
    fn symbol_lookup_respects_sizes() {
        let syms = vec![
            Symbol {
                addr: 0x100,
                size: 0x10,
                name: "a".into(),
            },
            Symbol {
                addr: 0x200,
                size: 0,
                name: "b".into(),
            },
        ];
        assert!(find_symbol(&syms, 0xff).is_none());
        assert_eq!(find_symbol(&syms, 0x10f).map(|s| &*s.name), Some("a"));
        assert!(find_symbol(&syms, 0x110).is_none());
        assert_eq!(find_symbol(&syms, 0x5000).map(|s| &*s.name), Some("b"));
    }

    #[test]
    fn crc_matches_the_gnu_debuglink_polynomial() {
        // Known CRC-32 of "123456789".
        assert_eq!(crc32(b"123456789"), 0xcbf4_3926);
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let data: Arc<[u8]> = Arc::from(&b"\x7fELF\x02\x01\x01garbage"[..]);
        assert!(load(&data).is_err());
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("junk");
        std::fs::write(&path, b"\x7fELF not really").unwrap();
        assert!(probe(&File::open(&path).unwrap()).is_err());
    }
}
