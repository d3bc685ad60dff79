//! An architecture file (eatnas-arch/1 JSON): parsed and validated; what is accepted is counted
//! and survives a round trip through its own JSON.
#![no_main]

use eatnas_nn::{Arch, Counts};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(arch) = Arch::from_json(text, "fuzz") else {
        return;
    };
    let _ = arch.layers();
    let _ = Counts::new(&arch, 3, 32, 10);
    let again = serde_json::to_string(&arch).expect("an accepted architecture serialises");
    let back = Arch::from_json(&again, "round trip").expect("its own JSON is accepted");
    assert_eq!(back, arch, "the round trip changed the architecture");
});
