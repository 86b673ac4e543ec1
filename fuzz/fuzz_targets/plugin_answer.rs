//! A plugin's merged answer as the host reads it: the fields (JSON text) and the notice.
#![no_main]

use converge_wasm::fuzzing::merged_answer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let (fields, notice) = text.split_once('\n').unwrap_or((&text, ""));
    let _ = merged_answer(fields, notice.to_owned());
});
