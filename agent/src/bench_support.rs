//! Bench support for `tests/bench` (scripts/bench.sh): NOT part of the agent's API, hidden
//! from the docs, may change or vanish in any release.

use crate::registry::registry;
use crate::wire::{self, AgentMsg};

/// Builds one snapshot exactly as the agent thread does for a subscriber (the registry
/// walk, blocked groups, channel aggregates) and encodes it as the frame that would go on
/// the socket. Location and stack definitions, sent once per connection, are not
/// included. An encoding error yields an empty frame.
pub fn snapshot_frame() -> Vec<u8> {
    let snap = registry().snapshot_v2(0);
    wire::encode_frame(&AgentMsg::SnapshotV2(snap)).unwrap_or_default()
}

/// The protocol-2 snapshot the agent would send now (tests and benches).
pub fn snapshot_v2() -> wire::SnapshotV2 {
    registry().snapshot_v2(0)
}

/// The raw return addresses of interned stack `id`.
pub fn stack(id: wire::StackId) -> Option<Vec<u64>> {
    registry().stacks().get(id)
}

/// The definition of location `id`.
pub fn location(id: wire::LocId) -> Option<wire::Location> {
    registry().location(id)
}
