//! A policy-test cases file as `converge policy test` reads it.
#![no_main]

use converge_policy_test::CaseFile;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let _ = CaseFile::from_json(text);
});
