//! A search configuration (TOML), parsed and validated.
#![no_main]

use eatnas_nas::SearchConfig;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = SearchConfig::from_toml(text, "fuzz");
    }
});
