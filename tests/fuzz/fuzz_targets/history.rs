//! A run folder whose stage-1 `history.jsonl` is the fuzzer's: parsed, and rendered into
//! `report.html` as `eatnas-cli report` does.
#![no_main]

use eatnas_fuzz::{scratch, write};
use eatnas_nas::report::write_report;
use eatnas_nas::runner::parse_history;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = parse_history(text);
    let dir = scratch("history");
    write(&dir.join("config.toml"), b"");
    write(&dir.join("stage1/history.jsonl"), data);
    let _ = write_report(&dir, false);
});
