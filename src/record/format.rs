//! The bytes of a `.ltrec` file: header, frames, records. See `docs/recording.md` for the
//! layout in prose; this module is its one definition.

#![cfg_attr(not(test), warn(clippy::indexing_slicing))]

use serde::{Deserialize, Serialize};

use leaktop_agent::wire::AgentMsg;

use crate::frame::Frame;

use super::delta::{PackedHistory, SnapshotDelta};

/// First bytes of every recording. The high byte and the CR LF catch a file that went
/// through a text-mode transfer, like PNG's signature.
pub const MAGIC: [u8; 8] = *b"\x89LTREC\r\n";
/// Format version this build writes and the newest it reads. Bumped only for changes an
/// older reader cannot skip; new record kinds are appended to [`Record`] without a bump
/// (older readers skip frames they cannot decode).
pub const FORMAT_VERSION: u32 = 1;
/// Bytes of the file header: magic, version, header checksum. This layout is fixed for
/// every version, so any reader can tell a newer file from a damaged one.
pub const FILE_HEADER_LEN: usize = 16;
/// Bytes of a frame header: payload length, payload CRC, header CRC.
pub const FRAME_HEADER_LEN: usize = 12;
/// Largest payload a frame may carry: a wire frame (`wire::MAX_FRAME`) plus room for the
/// record around it. A longer length field is corruption, never an allocation.
pub const MAX_PAYLOAD: usize = leaktop_agent::wire::MAX_FRAME + 1024 * 1024;

/// The 16-byte file header of `version`.
pub fn file_header_of(version: u32) -> [u8; FILE_HEADER_LEN] {
    let mut h = [0u8; FILE_HEADER_LEN];
    h[..8].copy_from_slice(&MAGIC);
    h[8..12].copy_from_slice(&version.to_le_bytes());
    let check = crc(&h[..12]);
    h[12..16].copy_from_slice(&check.to_le_bytes());
    h
}

/// The file header this build writes.
pub fn file_header() -> [u8; FILE_HEADER_LEN] {
    file_header_of(FORMAT_VERSION)
}

/// The version in a whole file header, `None` when its checksum does not match.
pub fn parse_file_header(h: &[u8; FILE_HEADER_LEN]) -> Option<u32> {
    let stored = u32::from_le_bytes([h[12], h[13], h[14], h[15]]);
    (crc(&h[..12]) == stored).then(|| u32::from_le_bytes([h[8], h[9], h[10], h[11]]))
}

/// What the first frame of every recording says about it.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq, Default)]
pub struct Meta {
    /// `leaktop` version that wrote the file.
    pub leaktop_version: String,
    /// Wall clock (ms since the Unix epoch) at the recording's time zero: every frame's
    /// time is ms since then.
    pub started_unix_ms: u64,
    /// Snapshot interval asked of the agent.
    pub interval_ms: u32,
    /// Host the recording was made on (`/proc/sys/kernel/hostname`).
    pub hostname: String,
    /// How it was made (`leaktop record`, the TUI's `r` key, …).
    pub recorded_by: String,
}

/// The resolved frames of one raw address, innermost first.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct SymbolEntry {
    pub addr: u64,
    /// As the symbolizer resolved them while the target was alive (their `addr` is this
    /// entry's).
    pub frames: Vec<Frame>,
}

impl SymbolEntry {
    /// The frames of a resolved stack as a recording stores them: under each raw address
    /// (an address's inlined frames are consecutive and carry it).
    pub fn of_frames(frames: &[Frame]) -> impl Iterator<Item = SymbolEntry> + '_ {
        frames
            .chunk_by(|a, b| a.addr == b.addr)
            .map(|run| SymbolEntry {
                addr: run.first().map_or(0, |f| f.addr),
                frames: run.to_vec(),
            })
    }
}

/// What a frame holds. postcard encodes the variant index first, so variants are only
/// ever appended; a reader skips a frame whose record it cannot decode.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq)]
pub enum Record {
    /// Always the first frame.
    Meta(Meta),
    /// A protocol message exactly as the source yielded it.
    Msg(AgentMsg),
    /// An `AgentMsg::Snapshot`, as a delta against the previous snapshot in the file.
    Snapshot(SnapshotDelta),
    /// An `AgentMsg::History`, delta- and run-length-coded.
    History(PackedHistory),
    /// Resolved symbols of raw addresses seen in `Stack` messages.
    Symbols(Vec<SymbolEntry>),
    /// The source ended (the process exited, the connection broke): its reason.
    End { reason: String },
    /// The recorder stopped while the source was still going (user, `--duration`).
    Stop { reason: String },
}

/// CRC-32 (IEEE) of `bytes`.
pub fn crc(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

/// A whole frame: header and payload. The payload is `t_ms` (postcard varint, ms since
/// the recording's time zero) followed by the postcard of `record`.
pub fn encode_frame(t_ms: u64, record: &Record) -> Result<Vec<u8>, postcard::Error> {
    let out = vec![0u8; FRAME_HEADER_LEN];
    let out = postcard::to_extend(&t_ms, out)?;
    let mut out = postcard::to_extend(record, out)?;
    let len = out.len() - FRAME_HEADER_LEN;
    if len > MAX_PAYLOAD {
        return Err(postcard::Error::SerializeBufferFull);
    }
    let (header, payload) = out.split_at_mut(FRAME_HEADER_LEN);
    let payload_crc = crc(payload);
    let mut h = [0u8; FRAME_HEADER_LEN];
    h[0..4].copy_from_slice(&(len as u32).to_le_bytes());
    h[4..8].copy_from_slice(&payload_crc.to_le_bytes());
    let header_crc = crc(&h[0..8]);
    h[8..12].copy_from_slice(&header_crc.to_le_bytes());
    header.copy_from_slice(&h);
    Ok(out)
}

/// A frame around `payload` as it is (for tools and fuzzing: intact checksums around any
/// bytes).
pub fn frame_with_payload(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(FRAME_HEADER_LEN + payload.len());
    let mut h = [0u8; 8];
    h[0..4].copy_from_slice(&(payload.len() as u32).to_le_bytes());
    h[4..8].copy_from_slice(&crc(payload).to_le_bytes());
    out.extend_from_slice(&h);
    out.extend_from_slice(&crc(&h).to_le_bytes());
    out.extend_from_slice(payload);
    out
}

/// A frame header that passed its own checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub len: usize,
    pub payload_crc: u32,
}

/// Checks a frame header. `None`: its checksum does not match or its length is over the
/// limit, i.e. the bytes are damaged.
pub fn parse_frame_header(h: &[u8; FRAME_HEADER_LEN]) -> Option<FrameHeader> {
    let [l0, l1, l2, l3, c0, c1, c2, c3, h0, h1, h2, h3] = *h;
    let (len, payload_crc, header_crc) = (
        u32::from_le_bytes([l0, l1, l2, l3]),
        u32::from_le_bytes([c0, c1, c2, c3]),
        u32::from_le_bytes([h0, h1, h2, h3]),
    );
    if crc(&[l0, l1, l2, l3, c0, c1, c2, c3]) != header_crc {
        return None;
    }
    let len = len as usize;
    (len <= MAX_PAYLOAD).then_some(FrameHeader { len, payload_crc })
}

/// Splits a checked payload into its time and record. `Err` when the record is of a kind
/// this build does not know (written by a newer leaktop) or does not decode; the time is
/// still returned when it could be read.
pub fn decode_payload(payload: &[u8]) -> (Option<u64>, Result<Record, postcard::Error>) {
    match postcard::take_from_bytes::<u64>(payload) {
        Ok((t, rest)) => (Some(t), postcard::from_bytes::<Record>(rest)),
        Err(e) => (None, Err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_header_checks_itself() {
        let f = encode_frame(7, &Record::End { reason: "x".into() }).unwrap();
        let mut h = [0u8; FRAME_HEADER_LEN];
        h.copy_from_slice(&f[..FRAME_HEADER_LEN]);
        let parsed = parse_frame_header(&h).unwrap();
        assert_eq!(parsed.len, f.len() - FRAME_HEADER_LEN);
        assert_eq!(parsed.payload_crc, crc(&f[FRAME_HEADER_LEN..]));
        for bit in 0..FRAME_HEADER_LEN * 8 {
            let mut bad = h;
            bad[bit / 8] ^= 1 << (bit % 8);
            assert_eq!(parse_frame_header(&bad), None, "bit {bit}");
        }
        let (t, rec) = decode_payload(&f[FRAME_HEADER_LEN..]);
        assert_eq!(t, Some(7));
        assert_eq!(rec.unwrap(), Record::End { reason: "x".into() });
    }
}
