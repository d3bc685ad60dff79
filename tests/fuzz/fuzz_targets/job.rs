//! A worker's `job.json` (what to train), read as the worker reads it, and its architecture built.
#![no_main]

use eatnas_fuzz::{scratch, write};
use eatnas_nas::Job;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = scratch("job");
    write(&dir.join("job.json"), data);
    if let Ok(job) = Job::read(&dir) {
        let _ = job.arch();
    }
});
