//! Facts about the agent's own process, read once from /proc and the loaded ELF headers.

use crate::wire::Mapping;

/// Field 22 (`starttime`) of `/proc/<pid>/stat`: clock ticks after boot at which the
/// process started. With the pid it identifies a process across pid reuse.
pub fn start_time_ticks(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_start_time(&stat)
}

/// Parses `starttime` out of a `/proc/<pid>/stat` line. The command name (field 2) may
/// hold spaces and parentheses, so fields are counted after its last `)`.
pub fn parse_start_time(stat: &str) -> Option<u64> {
    crate::paths::parse_start_time(stat)
}

/// `/proc/self/exe` as a string (lossy), or empty.
pub fn exe_path() -> String {
    std::fs::read_link("/proc/self/exe")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

/// The executable mappings of this process, from `/proc/self/maps`.
pub fn exec_mappings() -> Vec<Mapping> {
    std::fs::read_to_string("/proc/self/maps")
        .map(|s| parse_maps(&s))
        .unwrap_or_default()
}

/// Parses the executable, file-backed lines of a maps file.
pub fn parse_maps(maps: &str) -> Vec<Mapping> {
    maps.lines()
        .filter_map(|line| {
            let mut it = line.split_whitespace();
            let range = it.next()?;
            let perms = it.next()?;
            let offset = u64::from_str_radix(it.next()?, 16).ok()?;
            let _dev = it.next()?;
            let _inode = it.next()?;
            let path = it.collect::<Vec<_>>().join(" ");
            if !perms.contains('x') || !path.starts_with('/') {
                return None;
            }
            let (start, end) = range.split_once('-')?;
            Some(Mapping {
                start: u64::from_str_radix(start, 16).ok()?,
                end: u64::from_str_radix(end, 16).ok()?,
                offset,
                path,
            })
        })
        .collect()
}

/// GNU build id of the main executable, read from its loaded `PT_NOTE` segments (no file
/// IO). Empty when the binary has none.
pub fn build_id() -> Vec<u8> {
    let mut out: Vec<u8> = Vec::new();
    // SAFETY: dl_iterate_phdr calls back with valid `dl_phdr_info` for each loaded object;
    // the first one is the main program. `callback` reads only notes that lie inside one
    // of its PT_LOAD segments (mapped by the loader).
    unsafe {
        libc::dl_iterate_phdr(
            Some(callback),
            &mut out as *mut Vec<u8> as *mut libc::c_void,
        );
    }
    out
}

unsafe extern "C" fn callback(
    info: *mut libc::dl_phdr_info,
    _size: libc::size_t,
    data: *mut libc::c_void,
) -> libc::c_int {
    let out = &mut *(data as *mut Vec<u8>);
    let info = &*info;
    if info.dlpi_phdr.is_null() {
        return 1;
    }
    let phdrs = std::slice::from_raw_parts(info.dlpi_phdr, info.dlpi_phnum as usize);
    for ph in phdrs {
        if ph.p_type != libc::PT_NOTE || !mapped_by_a_load_segment(phdrs, ph) {
            continue;
        }
        let start = (info.dlpi_addr as usize).wrapping_add(ph.p_vaddr as usize) as *const u8;
        let notes = std::slice::from_raw_parts(start, ph.p_memsz as usize);
        if let Some(id) = find_build_id(notes) {
            *out = id.to_vec();
            break;
        }
    }
    1 // stop after the main program
}

/// True when the bytes of `note` lie inside a `PT_LOAD` segment of the same object: only
/// those are mapped. A `PT_NOTE` is usually inside one, but nothing in ELF says it must
/// (regression: reading a note the loader never mapped would fault in the host).
fn mapped_by_a_load_segment(phdrs: &[libc::Elf64_Phdr], note: &libc::Elf64_Phdr) -> bool {
    let Some(note_end) = note.p_vaddr.checked_add(note.p_memsz) else {
        return false;
    };
    phdrs.iter().any(|load| {
        load.p_type == libc::PT_LOAD
            && load.p_vaddr <= note.p_vaddr
            && load
                .p_vaddr
                .checked_add(load.p_memsz)
                .is_some_and(|end| note_end <= end)
    })
}

/// Finds the `NT_GNU_BUILD_ID` descriptor in a block of ELF notes.
pub fn find_build_id(mut notes: &[u8]) -> Option<&[u8]> {
    const NT_GNU_BUILD_ID: u32 = 3;
    let align4 = |n: usize| (n + 3) & !3;
    while notes.len() >= 12 {
        let word =
            |i: usize| u32::from_ne_bytes([notes[i], notes[i + 1], notes[i + 2], notes[i + 3]]);
        let (namesz, descsz, kind) = (word(0) as usize, word(4) as usize, word(8));
        let name_end = 12usize.checked_add(align4(namesz))?;
        let desc_end = name_end.checked_add(align4(descsz))?;
        let name = notes.get(12..12 + namesz)?;
        if kind == NT_GNU_BUILD_ID && name == b"GNU\0" {
            return notes.get(name_end..name_end + descsz);
        }
        notes = notes.get(desc_end..)?;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_time_survives_odd_command_names() {
        let stat =
            "123 (a) b) (c) S 1 123 123 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10";
        assert_eq!(parse_start_time(stat), Some(987654));
        assert!(start_time_ticks(std::process::id()).is_some());
        assert!(!build_id().is_empty(), "the test binary has a build id");
        assert_eq!(parse_start_time("garbage"), None);
    }

    #[test]
    fn maps_keep_executable_file_mappings() {
        let maps = "5555-6666 r-xp 00001000 08:01 42 /usr/bin/my prog\n\
                    7777-8888 rw-p 00000000 00:00 0 \n\
                    9999-aaaa r-xp 00000000 00:00 0 [vdso]\n";
        let m = parse_maps(maps);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].path, "/usr/bin/my prog");
        assert_eq!(
            (m[0].start, m[0].end, m[0].offset),
            (0x5555, 0x6666, 0x1000)
        );
        assert!(!exec_mappings().is_empty());
    }

    #[test]
    fn build_id_notes() {
        let mut note = Vec::new();
        note.extend_from_slice(&4u32.to_ne_bytes());
        note.extend_from_slice(&3u32.to_ne_bytes());
        note.extend_from_slice(&3u32.to_ne_bytes());
        note.extend_from_slice(b"GNU\0");
        note.extend_from_slice(&[0xaa, 0xbb, 0xcc, 0]);
        assert_eq!(find_build_id(&note), Some(&[0xaa, 0xbb, 0xcc][..]));
        assert_eq!(find_build_id(&note[..7]), None);
        assert_eq!(find_build_id(&[0xff; 40]), None);
    }

    fn phdr(p_type: u32, vaddr: u64, memsz: u64) -> libc::Elf64_Phdr {
        libc::Elf64_Phdr {
            p_type,
            p_flags: 0,
            p_offset: 0,
            p_vaddr: vaddr,
            p_paddr: vaddr,
            p_filesz: memsz,
            p_memsz: memsz,
            p_align: 4,
        }
    }

    /// Regression: a PT_NOTE outside every PT_LOAD segment (so never mapped) was read
    /// anyway, faulting in the host. Here it points at page zero, which is never mapped:
    /// before the check this test died of SIGSEGV.
    #[test]
    fn a_note_segment_outside_every_load_segment_is_not_read() {
        let phdrs = [
            phdr(libc::PT_LOAD, 0x1000, 0x1000),
            phdr(libc::PT_NOTE, 0x10, 0x40),
            // Straddles the end of the load segment.
            phdr(libc::PT_NOTE, 0x1ff0, 0x40),
            phdr(libc::PT_NOTE, u64::MAX - 4, 0x40),
        ];
        let mut info: libc::dl_phdr_info = unsafe { std::mem::zeroed() };
        info.dlpi_addr = 0;
        info.dlpi_phdr = phdrs.as_ptr();
        info.dlpi_phnum = phdrs.len() as u16;
        let mut out = vec![1u8];
        let stop = unsafe {
            callback(
                &mut info,
                std::mem::size_of::<libc::dl_phdr_info>(),
                &mut out as *mut Vec<u8> as *mut libc::c_void,
            )
        };
        assert_eq!(stop, 1);
        assert_eq!(out, vec![1u8], "nothing was read");
        assert!(mapped_by_a_load_segment(
            &phdrs,
            &phdr(libc::PT_NOTE, 0x1800, 0x20)
        ));
    }
}
