//! A push body as the server reads it: JSON into a batch, then the batch's checks; a batch that
//! passes survives a round trip through JSON unchanged.
#![no_main]

use converge_core::wire::{Limits, PushBatch};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(batch) = serde_json::from_slice::<PushBatch>(data) else { return };
    if batch.validate(&Limits::default()).is_err() {
        return;
    }
    let again: PushBatch = serde_json::from_str(&serde_json::to_string(&batch).unwrap()).unwrap();
    assert_eq!(again, batch);
});
