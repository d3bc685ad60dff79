//! A `train_state.safetensors` (a training run's position, momenta and recipe), read and checked
//! as `train --resume` does before it opens the run's dataset.
#![no_main]

use eatnas_fuzz::{scratch, write};
use eatnas_train::Trainer;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let dir = scratch("train_state");
    write(&dir.join("train_state.safetensors"), data);
    let _ = Trainer::read_saved(&dir);
});
