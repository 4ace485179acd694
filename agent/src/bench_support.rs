//! Bench support for `tests/bench` (scripts/bench.sh): NOT part of the agent's API, hidden
//! from the docs, may change or vanish in any release.

use crate::registry::registry;
use crate::wire::{self, AgentMsg};

/// Builds one snapshot exactly as the agent thread does for a subscriber (the registry
/// walk, blocked groups, channel aggregates) and encodes it as the frame that would go on
/// the socket. Location and stack definitions, sent once per connection, are not
/// included. An encoding error yields an empty frame.
pub fn snapshot_frame() -> Vec<u8> {
    let snap = registry().snapshot(0);
    wire::encode_frame(&AgentMsg::Snapshot(snap)).unwrap_or_default()
}
