//! Any bytes from a peer, framed and decoded every way the agent and `leaktop` do, then
//! folded into a session and rendered, must never panic, hang or allocate without bound;
//! whatever decodes must re-encode unchanged.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    leaktop_agent::wire::fuzz_one(data);
    leaktop::fuzz::wire(data);
});
