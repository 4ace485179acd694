//! Small text helpers every layer shares.

/// Lower-case hex of bytes (a build id).
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
