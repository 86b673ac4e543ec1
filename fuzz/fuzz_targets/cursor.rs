//! A cursor as a pull or an event stream reads it: whatever parses writes back the same text.
#![no_main]

use converge_core::wire::parse_cursor;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Some((seq, horizon)) = parse_cursor(text) {
        let written = if horizon == 0 { format!("c{seq}") } else { format!("c{seq}.{horizon}") };
        assert_eq!(written, text);
    }
});
