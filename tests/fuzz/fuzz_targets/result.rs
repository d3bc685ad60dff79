//! A worker's `result.json` and `error.json`, read as the coordinator reads them.
#![no_main]

use eatnas_fuzz::{scratch, write};
use eatnas_nas::job::{read_failure, read_result};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = scratch("result");
    write(&dir.join("result.json"), data);
    write(&dir.join("error.json"), data);
    let _ = read_result(&dir, 0);
    let _ = read_failure(&dir);
});
