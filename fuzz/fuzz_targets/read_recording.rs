//! Any bytes, read as a recording every way `leaktop replay` and `leaktop dump` do, must
//! never panic, hang or allocate without bound.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    leaktop::fuzz::recording(data);
});
