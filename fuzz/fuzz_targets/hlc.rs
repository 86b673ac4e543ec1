//! An HLC as a mutation carries it: whatever parses writes back the same text.
#![no_main]

use converge_core::Hlc;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(hlc) = text.parse::<Hlc>() {
        assert_eq!(hlc.to_string(), text);
    }
});
