//! The executable mappings of one process: read from `/proc/<pid>/maps`, or given explicitly
//! (the agent's `wire::Mapping` list), plus what is known about its main executable.

use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use leaktop_agent::wire::Mapping;

use super::error::SymbolizeError;

/// Suffix the kernel appends to the path of a mapping whose file was unlinked.
const DELETED_SUFFIX: &str = " (deleted)";

/// Every `ProcessMaps` gets its own id, so per-process caches never mix two processes.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// One executable, file-backed (or `[vdso]`) mapping.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Region {
    pub start: u64,
    pub end: u64,
    /// File offset of `start` (`vm_pgoff` in bytes).
    pub offset: u64,
    /// Path as the process sees it, without the kernel's `" (deleted)"` suffix.
    pub path: String,
    /// The kernel marked the file as unlinked: whatever is at `path` now is another file.
    pub deleted: bool,
    /// Inode of the mapped file, when known (from `/proc/<pid>/maps`).
    pub inode: Option<u64>,
}

impl Region {
    /// `[vdso]` and friends: mapped by the kernel, no file to open.
    pub fn is_pseudo(&self) -> bool {
        self.path.starts_with('[')
    }
}

/// The code mappings of one process and how to reach its files.
///
/// Build it with [`ProcessMaps::read`] when the process is visible in our `/proc`, or with
/// [`ProcessMaps::from_mappings`] from the agent's `Modules` message (which works across pid
/// namespaces and for recordings), then add what else is known with the `with_*` methods.
#[derive(Debug)]
pub struct ProcessMaps {
    pub(super) id: u64,
    pid: Option<u32>,
    regions: Vec<Region>,
    exe_path: Option<String>,
    exe_build_id: Option<Vec<u8>>,
    exe_file: Option<Arc<File>>,
}

impl ProcessMaps {
    /// Reads `/proc/<pid>/maps` and `/proc/<pid>/exe`.
    pub fn read(pid: u32) -> Result<Self, SymbolizeError> {
        let text = crate::proc::maps(pid).map_err(|source| SymbolizeError::Maps {
            pid,
            path: crate::proc::pid_path(pid, "maps"),
            source,
        })?;
        let mut maps = Self::parse(&text).with_pid(pid);
        if let Some(exe) = crate::proc::exe(pid) {
            let exe = exe.to_string_lossy();
            let exe = exe.strip_suffix(DELETED_SUFFIX).unwrap_or(&exe);
            maps.exe_path = Some(exe.to_owned());
        }
        Ok(maps)
    }

    /// Parses the text of a maps file, keeping executable mappings of files and `[vdso]`.
    /// Malformed lines are skipped.
    pub fn parse(text: &str) -> Self {
        let regions = text.lines().filter_map(parse_line).collect();
        Self::from_regions(regions)
    }

    /// Takes the mapping list the agent sends (`AgentMsg::Modules`). Paths may carry the
    /// kernel's `" (deleted)"` suffix. No inode is known, so files found at a mapping's path
    /// are trusted unless a build id says otherwise (see [`ProcessMaps::with_exe`]).
    pub fn from_mappings(mappings: Vec<Mapping>) -> Self {
        let regions = mappings
            .into_iter()
            .filter(|m| m.start < m.end)
            .map(|m| {
                let (path, deleted) = split_deleted(&m.path);
                Region {
                    start: m.start,
                    end: m.end,
                    offset: m.offset,
                    path: path.to_owned(),
                    deleted,
                    inode: None,
                }
            })
            .collect();
        Self::from_regions(regions)
    }

    /// Builds the maps from regions (any order; overlapping ones are dropped).
    pub fn from_regions(mut regions: Vec<Region>) -> Self {
        regions.sort_by_key(|r| (r.start, r.end));
        regions.dedup_by(|later, earlier| later.start < earlier.end);
        ProcessMaps {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            pid: None,
            regions,
            exe_path: None,
            exe_build_id: None,
            exe_file: None,
        }
    }

    /// The process is visible in our `/proc` under this pid: modules may then be opened
    /// through `/proc/<pid>/map_files/…`, `/proc/<pid>/exe` and `/proc/<pid>/root/…`.
    pub fn with_pid(mut self, pid: u32) -> Self {
        self.pid = Some(pid);
        self
    }

    /// Names the main executable (the agent hello's `exe`) and its GNU build id (the
    /// hello's `build_id`; pass an empty vector when unknown). A file whose build id differs
    /// is never used to resolve this process.
    pub fn with_exe(mut self, path: impl Into<String>, build_id: Vec<u8>) -> Self {
        let path = path.into();
        let (path, _) = split_deleted(&path);
        self.exe_path = Some(path.to_owned());
        self.exe_build_id = (!build_id.is_empty()).then_some(build_id);
        self
    }

    /// An open descriptor of the main executable (e.g. received from the agent over
    /// SCM_RIGHTS). Tried first for the executable's mappings; still checked against the
    /// expected build id when one is known.
    pub fn with_exe_file(mut self, file: File) -> Self {
        self.exe_file = Some(Arc::new(file));
        self
    }

    pub fn pid(&self) -> Option<u32> {
        self.pid
    }

    pub fn regions(&self) -> &[Region] {
        &self.regions
    }

    pub fn exe_path(&self) -> Option<&str> {
        self.exe_path.as_deref()
    }

    pub fn exe_build_id(&self) -> Option<&[u8]> {
        self.exe_build_id.as_deref()
    }

    pub(super) fn exe_file(&self) -> Option<&Arc<File>> {
        self.exe_file.as_ref()
    }

    /// Whether this region maps the main executable.
    pub fn is_exe(&self, region: &Region) -> bool {
        self.exe_path.as_deref() == Some(region.path.as_str())
    }

    /// The region holding `addr`, if any.
    pub fn find(&self, addr: u64) -> Option<&Region> {
        let idx = self.regions.partition_point(|r| r.start <= addr);
        let region = self.regions.get(idx.checked_sub(1)?)?;
        (addr < region.end).then_some(region)
    }
}

fn split_deleted(path: &str) -> (&str, bool) {
    match path.strip_suffix(DELETED_SUFFIX) {
        Some(p) => (p, true),
        None => (path, false),
    }
}

/// `start-end perms offset dev inode path`; the path may contain spaces.
fn parse_line(line: &str) -> Option<Region> {
    let mut rest = line;
    let mut field = || -> Option<&str> {
        let trimmed = rest.trim_start();
        let end = trimmed.find(' ').unwrap_or(trimmed.len());
        let (f, r) = trimmed.split_at(end);
        rest = r;
        (!f.is_empty()).then_some(f)
    };
    let range = field()?;
    let perms = field()?;
    let offset = u64::from_str_radix(field()?, 16).ok()?;
    let _dev = field()?;
    let inode: u64 = field()?.parse().ok()?;
    let path = rest.trim_start();
    if !perms.contains('x') || !(path.starts_with('/') || path == "[vdso]") {
        return None;
    }
    let (start, end) = range.split_once('-')?;
    let start = u64::from_str_radix(start, 16).ok()?;
    let end = u64::from_str_radix(end, 16).ok()?;
    if start >= end {
        return None;
    }
    let (path, deleted) = split_deleted(path);
    Some(Region {
        start,
        end,
        offset,
        path: path.to_owned(),
        deleted,
        inode: (inode != 0).then_some(inode),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAPS: &str = "\
55d0c0a00000-55d0c0a3b000 r--p 00000000 fd:01 1234567                    /usr/bin/my prog
55d0c0a3b000-55d0c0c00000 r-xp 0003a000 fd:01 1234567                    /usr/bin/my prog
7f1e2a000000-7f1e2a028000 r--p 00000000 fd:01 42                         /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2a028000-7f1e2a1bd000 r-xp 00028000 fd:01 42                         /usr/lib/x86_64-linux-gnu/libc.so.6
7f1e2b000000-7f1e2b100000 r-xp 00001000 fd:01 77                         /tmp/old.so (deleted)
7ffd5e5f1000-7ffd5e612000 rw-p 00000000 00:00 0                          [stack]
7ffd5e7f6000-7ffd5e7f8000 r-xp 00000000 00:00 0                          [vdso]
garbage line
ffffffffff600000-ffffffffff601000 --xp 00000000 00:00 0                  [vsyscall]
";

    #[test]
    fn parse_keeps_exec_file_mappings_and_vdso() {
        let maps = ProcessMaps::parse(MAPS);
        let r = maps.regions();
        assert_eq!(r.len(), 4, "{r:#?}");
        assert_eq!(r[0].path, "/usr/bin/my prog");
        assert_eq!(r[0].offset, 0x3a000);
        assert_eq!(r[0].inode, Some(1234567));
        assert_eq!(r[2].path, "/tmp/old.so");
        assert!(r[2].deleted);
        assert!(r[3].is_pseudo());
    }

    #[test]
    fn find_uses_half_open_ranges() {
        let maps = ProcessMaps::parse(MAPS);
        assert_eq!(maps.find(0x55d0c0a3b000).map(|r| r.offset), Some(0x3a000));
        assert_eq!(maps.find(0x55d0c0bfffff).map(|r| r.offset), Some(0x3a000));
        assert!(maps.find(0x55d0c0c00000).is_none());
        assert!(maps.find(0x55d0c0a00000).is_none(), "not executable");
        assert!(maps.find(0).is_none());
        assert!(maps.find(u64::MAX).is_none());
    }

    #[test]
    fn from_mappings_strips_deleted_and_drops_empty() {
        let maps = ProcessMaps::from_mappings(vec![
            Mapping {
                start: 0x2000,
                end: 0x3000,
                offset: 0x1000,
                path: "/bin/x (deleted)".into(),
            },
            Mapping {
                start: 0x5000,
                end: 0x5000,
                offset: 0,
                path: "/bin/empty".into(),
            },
        ])
        .with_exe("/bin/x (deleted)", vec![]);
        assert_eq!(maps.regions().len(), 1);
        assert!(maps.regions()[0].deleted);
        assert!(maps.is_exe(&maps.regions()[0]));
        assert_eq!(maps.exe_build_id(), None);
    }

    #[test]
    fn ids_are_unique() {
        assert_ne!(ProcessMaps::parse("").id, ProcessMaps::parse("").id);
    }
}
