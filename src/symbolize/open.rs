//! Finding the right file for a mapping (never a rebuilt one) and its separate debug file.

pub(crate) use crate::text::hex;
use std::fs::File;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::elf::{self, ElfProbe};
use super::maps::{ProcessMaps, Region};
use super::module::DebugSource;

/// A module file that is known to be the one the process mapped (as far as can be checked).
pub(crate) struct OpenedModule {
    pub file: File,
    pub probe: ElfProbe,
    /// Which candidate it was, for diagnostics.
    pub via: String,
}

/// Why no candidate could be used.
#[derive(Debug, Default)]
pub(crate) struct OpenFailure {
    /// One line per candidate tried.
    pub reasons: Vec<String>,
    /// A candidate was found but has another build id: `(file, expected, found)`.
    pub mismatch: Option<(String, Vec<u8>, Vec<u8>)>,
}

enum Source {
    Path(PathBuf),
    Fd(Arc<File>),
}

struct Candidate {
    label: String,
    source: Source,
    /// The candidate is the mapped file itself (fd, map_files, /proc/pid/exe), so no inode
    /// comparison is needed; a path may have been replaced since.
    exact: bool,
}

fn candidates(maps: &ProcessMaps, region: &Region) -> Vec<Candidate> {
    let is_exe = maps.is_exe(region);
    let mut out = Vec::new();
    if is_exe {
        if let Some(f) = maps.exe_file() {
            out.push(Candidate {
                label: "executable descriptor from the agent".into(),
                source: Source::Fd(f.clone()),
                exact: true,
            });
        }
    }
    if let Some(pid) = maps.pid() {
        if is_exe {
            let p = crate::proc::pid_path(pid, "exe");
            out.push(Candidate {
                label: p.display().to_string(),
                source: Source::Path(p),
                exact: true,
            });
        }
        let p = crate::proc::pid_path(
            pid,
            &format!("map_files/{:x}-{:x}", region.start, region.end),
        );
        out.push(Candidate {
            label: p.display().to_string(),
            source: Source::Path(p),
            exact: true,
        });
        if !region.deleted && region.path.starts_with('/') {
            let p = crate::proc::pid_path(pid, &format!("root{}", region.path));
            out.push(Candidate {
                label: p.display().to_string(),
                source: Source::Path(p),
                exact: false,
            });
        }
    }
    // A deleted mapping's path now names another file (or none): never use it.
    if !region.deleted && region.path.starts_with('/') {
        out.push(Candidate {
            label: region.path.clone(),
            source: Source::Path(region.path.clone().into()),
            exact: false,
        });
    }
    out
}

/// Opens the file behind `region`, trying the process's own view first. A file whose build
/// id differs from the expected one (or, for a plain path, whose inode differs from the
/// mapped one) is rejected, never used.
pub(crate) fn open_module(
    maps: &ProcessMaps,
    region: &Region,
) -> Result<OpenedModule, OpenFailure> {
    let expected = if maps.is_exe(region) {
        maps.exe_build_id()
    } else {
        None
    };
    let mut failure = OpenFailure::default();
    if region.deleted && maps.pid().is_none() && !(maps.is_exe(region) && maps.exe_file().is_some())
    {
        failure.reasons.push(format!(
            "{} was deleted after the process mapped it and no pid or descriptor is known to reach the mapped copy",
            region.path
        ));
    }
    for cand in candidates(maps, region) {
        let file = match &cand.source {
            Source::Path(p) => File::open(p),
            Source::Fd(f) => f.try_clone(),
        };
        let file = match file {
            Ok(f) => f,
            Err(e) => {
                failure.reasons.push(format!("{}: {e}", cand.label));
                continue;
            }
        };
        if !cand.exact {
            if let (Some(want), Ok(meta)) = (region.inode, file.metadata()) {
                if meta.ino() != want {
                    failure.reasons.push(format!(
                        "{}: replaced since the process mapped it (inode {} now, {want} mapped)",
                        cand.label,
                        meta.ino()
                    ));
                    continue;
                }
            }
        }
        let probe = match elf::probe(&file) {
            Ok(p) => p,
            Err(e) => {
                failure
                    .reasons
                    .push(format!("{}: not a readable ELF file: {e}", cand.label));
                continue;
            }
        };
        if let Some(want) = expected {
            if probe.build_id.as_deref() != Some(want) {
                let found = probe.build_id.clone().unwrap_or_default();
                failure.reasons.push(format!(
                    "{}: build id {} differs from the process's {}",
                    cand.label,
                    hex_or_none(&found),
                    hex(want)
                ));
                failure.mismatch = Some((cand.label.clone(), want.to_vec(), found));
                continue;
            }
        }
        return Ok(OpenedModule {
            file,
            probe,
            via: cand.label,
        });
    }
    Err(failure)
}

/// A separate debug file, read and verified.
pub(crate) struct DebugFile {
    pub data: Arc<[u8]>,
    pub source: DebugSource,
}

/// What the search for a separate debug file found besides the file itself.
#[derive(Debug, Default)]
pub(crate) struct DebugSearchNotes {
    /// Files named by `.gnu_debuglink` whose CRC did not match.
    pub crc_mismatch: Vec<PathBuf>,
}

/// Looks for the debug file of a module that has no DWARF of its own: first
/// `<dir>/.build-id/xx/rest.debug`, then the `.gnu_debuglink` name next to the module, in
/// its `.debug/` subdirectory and under each debug dir — on the host and, when the pid is
/// known, inside the process's root.
pub(crate) fn find_debug_file(
    module_path: &str,
    pid: Option<u32>,
    probe: &ElfProbe,
    debug_dirs: &[PathBuf],
    notes: &mut DebugSearchNotes,
) -> Option<DebugFile> {
    let in_root = |p: &Path| -> Vec<PathBuf> {
        let mut v = vec![p.to_path_buf()];
        if let (Some(pid), true) = (pid, p.is_absolute()) {
            v.push(crate::proc::pid_path(pid, &format!("root{}", p.display())));
        }
        v
    };
    if let Some(id) = probe.build_id.as_deref().filter(|id| id.len() >= 2) {
        let hexid = hex(id);
        let rel = format!(".build-id/{}/{}.debug", &hexid[..2], &hexid[2..]);
        for dir in debug_dirs {
            for path in in_root(&dir.join(&rel)) {
                if let Some(data) = read_verified(&path, probe, None, notes) {
                    return Some(DebugFile {
                        data,
                        source: DebugSource::BuildIdDir(path),
                    });
                }
            }
        }
    }
    let (name, crc) = probe.debuglink.as_ref()?;
    let module_dir = Path::new(module_path).parent()?;
    let mut dirs = vec![module_dir.to_path_buf(), module_dir.join(".debug")];
    for d in debug_dirs {
        dirs.push(d.join(module_dir.strip_prefix("/").unwrap_or(module_dir)));
    }
    for dir in dirs {
        for path in in_root(&dir.join(name)) {
            if path == Path::new(module_path) {
                continue;
            }
            if let Some(data) = read_verified(&path, probe, Some(*crc), notes) {
                return Some(DebugFile {
                    data,
                    source: DebugSource::DebugLink(path),
                });
            }
        }
    }
    None
}

/// Reads a debug file candidate; keeps it only if its CRC (for debuglinks) and build id
/// match and it carries DWARF.
fn read_verified(
    path: &Path,
    module: &ElfProbe,
    crc: Option<u32>,
    notes: &mut DebugSearchNotes,
) -> Option<Arc<[u8]>> {
    let file = File::open(path).ok()?;
    let probe = elf::probe(&file).ok()?;
    if !probe.has_dwarf {
        return None;
    }
    if let (Some(want), Some(got)) = (&module.build_id, &probe.build_id) {
        if want != got {
            return None;
        }
    }
    let data = elf::read_all(&file).ok()?;
    if let Some(crc) = crc {
        if elf::crc32(&data) != crc {
            notes.crc_mismatch.push(path.to_path_buf());
            return None;
        }
    }
    Some(data)
}

fn hex_or_none(bytes: &[u8]) -> String {
    if bytes.is_empty() {
        "(none)".into()
    } else {
        hex(bytes)
    }
}
