//! Reading a recording: frames in order, checked, with snapshots and history rebuilt into
//! the protocol messages the live source yielded. Whatever the bytes, the reader never
//! panics: it yields every whole, intact frame and then says how the file ended.

#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

use std::path::{Path, PathBuf};
use std::sync::Arc;

use std::collections::HashMap;

use leaktop_agent::wire::{AgentHello, AgentMsg, StackId};

use crate::frame::Frame;

use super::delta::{unpack_history, SnapshotDecoder};
use super::format::{
    self, Meta, Record, SymbolEntry, FILE_HEADER_LEN, FORMAT_VERSION, FRAME_HEADER_LEN, MAGIC,
};

/// A recording that cannot be read at all.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("cannot read recording {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is not a leaktop recording (it does not start with the .ltrec signature)")]
    NotARecording { path: PathBuf },
    #[error("{path} was recorded by a newer leaktop (recording format version {found}; this leaktop {ours} reads versions up to {supported}): upgrade leaktop to replay it")]
    NewerVersion {
        path: PathBuf,
        found: u32,
        supported: u32,
        ours: &'static str,
    },
    #[error("{path} is damaged: the checksum of its file header does not match")]
    DamagedHeader { path: PathBuf },
    #[error("{path} has an invalid recording format version 0")]
    BadVersion { path: PathBuf },
    #[error("{path} holds no session to replay: {detail}")]
    Empty { path: PathBuf, detail: String },
}

/// What a frame carried, once rebuilt.
#[derive(Debug, Clone, PartialEq)]
pub enum Item {
    Meta(Meta),
    /// A protocol message, snapshots and history rebuilt whole.
    Msg(AgentMsg),
    Symbols(Vec<SymbolEntry>),
    /// The source ended (process exited, connection lost).
    End(String),
    /// The recorder stopped while the source went on.
    Stop(String),
}

/// One frame of the file.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry {
    /// Byte offset of the frame in the file.
    pub offset: u64,
    /// Receive time: ms since the recording's time zero.
    pub t_ms: u64,
    pub item: Item,
}

/// What is wrong with the bytes at some offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Damage {
    /// The frame header's own checksum does not match (or its length is impossible).
    Header,
    /// The payload's checksum does not match.
    Payload,
}

/// How the readable part of a file ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Tail {
    /// At a frame boundary: the file is whole.
    Clean,
    /// In the middle of a frame (or of the file header): the recorder was killed, the
    /// disk filled up, or the file is still being written. `have` of `want` bytes.
    Truncated { offset: u64, have: u64, want: u64 },
    /// Damaged bytes: a checksum did not match.
    Corrupt { offset: u64, damage: Damage },
}

impl Tail {
    /// A sentence for the user, `None` for a whole file.
    pub fn describe(&self) -> Option<String> {
        match self {
            Tail::Clean => None,
            Tail::Truncated { offset, have, want } => Some(format!(
                "the recording is cut off at byte {offset} ({have} of the {want} bytes of its last frame; the recorder was stopped abruptly or the disk filled up)"
            )),
            Tail::Corrupt { offset, damage } => Some(format!(
                "the recording is damaged at byte {offset}: the {} checksum does not match",
                match damage {
                    Damage::Header => "frame header",
                    Damage::Payload => "frame",
                }
            )),
        }
    }
}

/// Reads the whole file (recordings are small: see docs/recording.md for sizes).
pub fn read_file(path: &Path) -> Result<Arc<[u8]>, OpenError> {
    std::fs::read(path)
        .map(Arc::from)
        .map_err(|source| OpenError::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Frames of a recording in order. Iterate, then ask [`Reader::tail`] how it ended.
#[derive(Debug, Clone)]
pub struct Reader {
    bytes: Arc<[u8]>,
    pos: usize,
    last_t: u64,
    snapshots: SnapshotDecoder,
    tail: Option<Tail>,
    /// Intact frames this build could not use (newer record kinds, undecodable deltas).
    skipped: u64,
}

impl Reader {
    /// Checks the file header. A file cut off inside its header reads as an empty
    /// recording with a [`Tail::Truncated`]; `path` is only for messages.
    pub fn new(bytes: Arc<[u8]>, path: &Path) -> Result<Reader, OpenError> {
        let head = bytes.get(..FILE_HEADER_LEN).unwrap_or(&bytes);
        // A file cut off inside the magic still counts as a (truncated) recording.
        if !MAGIC.starts_with(head.get(..MAGIC.len()).unwrap_or(head)) {
            return Err(OpenError::NotARecording {
                path: path.to_path_buf(),
            });
        }
        let mut reader = Reader {
            bytes: bytes.clone(),
            pos: FILE_HEADER_LEN,
            last_t: 0,
            snapshots: SnapshotDecoder::new(),
            tail: None,
            skipped: 0,
        };
        if head.len() < FILE_HEADER_LEN {
            reader.pos = head.len();
            reader.tail = Some(Tail::Truncated {
                offset: 0,
                have: head.len() as u64,
                want: FILE_HEADER_LEN as u64,
            });
            return Ok(reader);
        }
        let mut h = [0u8; FILE_HEADER_LEN];
        h.copy_from_slice(head);
        let Some(version) = format::parse_file_header(&h) else {
            return Err(OpenError::DamagedHeader {
                path: path.to_path_buf(),
            });
        };
        if version == 0 {
            return Err(OpenError::BadVersion {
                path: path.to_path_buf(),
            });
        }
        if version > FORMAT_VERSION {
            return Err(OpenError::NewerVersion {
                path: path.to_path_buf(),
                found: version,
                supported: FORMAT_VERSION,
                ours: env!("CARGO_PKG_VERSION"),
            });
        }
        Ok(reader)
    }

    /// Opens and reads `path`.
    pub fn open(path: &Path) -> Result<Reader, OpenError> {
        Reader::new(read_file(path)?, path)
    }

    /// How the file ended; `None` until the iterator has returned `None`.
    pub fn tail(&self) -> Option<&Tail> {
        self.tail.as_ref()
    }

    /// Intact frames skipped so far because this build could not use them.
    pub fn skipped(&self) -> u64 {
        self.skipped
    }

    /// Byte offset of the next frame.
    pub fn offset(&self) -> u64 {
        self.pos as u64
    }

    /// The bytes this reader reads.
    pub fn bytes(&self) -> &Arc<[u8]> {
        &self.bytes
    }

    /// A reader of the same bytes from the first frame.
    pub fn rewound(&self) -> Reader {
        Reader {
            bytes: self.bytes.clone(),
            pos: FILE_HEADER_LEN.min(self.bytes.len()),
            last_t: 0,
            snapshots: SnapshotDecoder::new(),
            tail: if self.bytes.len() < FILE_HEADER_LEN {
                self.tail.clone()
            } else {
                None
            },
            skipped: 0,
        }
    }

    fn end(&mut self, tail: Tail) -> Option<Entry> {
        self.tail = Some(tail);
        None
    }

    fn item(&mut self, record: Record) -> Option<Item> {
        Some(match record {
            Record::Meta(m) => Item::Meta(m),
            Record::Msg(m) => Item::Msg(m),
            Record::Snapshot(d) => Item::Msg(AgentMsg::Snapshot(self.snapshots.decode(&d).ok()?)),
            Record::History(h) => Item::Msg(AgentMsg::History(unpack_history(&h).ok()?)),
            Record::Symbols(mut s) => {
                for e in &mut s {
                    e.frames.iter_mut().for_each(|f| f.addr = e.addr);
                }
                Item::Symbols(s)
            }
            Record::End { reason } => Item::End(reason),
            Record::Stop { reason } => Item::Stop(reason),
        })
    }
}

impl Iterator for Reader {
    type Item = Entry;

    fn next(&mut self) -> Option<Entry> {
        loop {
            if self.tail.is_some() {
                return None;
            }
            let offset = self.pos;
            let Some(rest) = self.bytes.get(offset..) else {
                return self.end(Tail::Clean);
            };
            if rest.is_empty() {
                return self.end(Tail::Clean);
            }
            let Some(header) = rest.get(..FRAME_HEADER_LEN) else {
                return self.end(Tail::Truncated {
                    offset: offset as u64,
                    have: rest.len() as u64,
                    want: FRAME_HEADER_LEN as u64,
                });
            };
            let mut h = [0u8; FRAME_HEADER_LEN];
            h.copy_from_slice(header);
            let Some(fh) = format::parse_frame_header(&h) else {
                return self.end(Tail::Corrupt {
                    offset: offset as u64,
                    damage: Damage::Header,
                });
            };
            let want = FRAME_HEADER_LEN + fh.len;
            let Some(payload) = rest.get(FRAME_HEADER_LEN..want) else {
                return self.end(Tail::Truncated {
                    offset: offset as u64,
                    have: rest.len() as u64,
                    want: want as u64,
                });
            };
            if format::crc(payload) != fh.payload_crc {
                return self.end(Tail::Corrupt {
                    offset: offset as u64,
                    damage: Damage::Payload,
                });
            }
            self.pos = offset + want;
            let (t, record) = format::decode_payload(payload);
            // Time never runs backwards, whatever a file says.
            let t_ms = t.unwrap_or(self.last_t).max(self.last_t);
            self.last_t = t_ms;
            match record.ok().and_then(|r| self.item(r)) {
                Some(item) => {
                    return Some(Entry {
                        offset: offset as u64,
                        t_ms,
                        item,
                    })
                }
                None => self.skipped += 1,
            }
        }
    }
}

/// The whole of a recording in one pass: what replay and `dump` need to know up front.
#[derive(Debug, Clone)]
pub struct Summary {
    pub meta: Option<Meta>,
    /// The first hello: the process the recording is of.
    pub hello: Option<AgentHello>,
    /// Every resolved symbol in the file (symbols do not change over time).
    pub symbols: HashMap<u64, Vec<Frame>>,
    /// Every raw stack defined in the file (ids are stable for the agent's life).
    pub stacks: HashMap<StackId, Vec<u64>>,
    /// Time of the last frame.
    pub duration_ms: u64,
    pub frames: u64,
    /// Receive times of the snapshots, ascending.
    pub snapshot_times: Vec<u64>,
    /// Why the recording ended, when it says so (source end or recorder stop).
    pub end: Option<String>,
    /// True when the end is the source ending (the process exited), not a stop.
    pub source_ended: bool,
    pub tail: Tail,
    pub skipped: u64,
    pub bytes: u64,
}

/// Reads every frame of `reader` (from where it is) and sums them up.
pub fn summarize(reader: &mut Reader) -> Summary {
    let mut s = Summary {
        meta: None,
        hello: None,
        symbols: HashMap::new(),
        stacks: HashMap::new(),
        duration_ms: 0,
        frames: 0,
        snapshot_times: Vec::new(),
        end: None,
        source_ended: false,
        tail: Tail::Clean,
        skipped: 0,
        bytes: reader.bytes().len() as u64,
    };
    for e in reader.by_ref() {
        s.frames += 1;
        s.duration_ms = e.t_ms;
        match e.item {
            Item::Meta(m) if s.meta.is_none() => s.meta = Some(m),
            Item::Msg(AgentMsg::Snapshot(_)) => s.snapshot_times.push(e.t_ms),
            Item::Msg(AgentMsg::Hello(h)) if s.hello.is_none() => s.hello = Some(h),
            Item::Msg(AgentMsg::Stack { id, frames }) => {
                s.stacks.insert(id, frames);
            }
            Item::Symbols(entries) => {
                for entry in entries {
                    s.symbols.insert(entry.addr, entry.frames);
                }
            }
            Item::End(r) => {
                s.end = Some(r);
                s.source_ended = true;
            }
            Item::Stop(r) => s.end = Some(r),
            _ => {}
        }
    }
    s.tail = reader.tail().cloned().unwrap_or(Tail::Clean);
    s.skipped = reader.skipped();
    s
}
