//! A stage's saved `state.json`, loaded as `resume` loads it. The fingerprint it must carry is
//! taken from the input itself, so that inputs get past that check to what follows.
#![no_main]

use eatnas_fuzz::{scratch, write};
use eatnas_nas::runner::SavedStage;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = scratch("search_state");
    write(&dir.join("state.json"), data);
    let fingerprint = serde_json::from_slice::<serde_json::Value>(data)
        .ok()
        .and_then(|v| v["config_fingerprint"].as_str().map(str::to_string))
        .unwrap_or_default();
    let _ = SavedStage::load(&dir, &fingerprint);
});
