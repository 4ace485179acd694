//! Typed errors of the symbolizer. Only reading a process's maps can fail outright; a module
//! that cannot be opened or parsed becomes a [`Note`](super::Note) and unresolved frames.

use std::path::PathBuf;

/// What can go wrong before any address is looked at.
#[derive(Debug, thiserror::Error)]
pub enum SymbolizeError {
    /// `/proc/<pid>/maps` could not be read.
    #[error(
        "cannot read {path}: {source} (is process {pid} still running, and are you its user or root?)"
    )]
    Maps {
        pid: u32,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not an ELF object this symbolizer understands.
    #[error("{path} is not a readable ELF file: {message}")]
    Elf { path: PathBuf, message: String },
}
