//! A CIFAR-10 folder whose batch file chosen by the first byte is the fuzzer's: opened, then
//! every image read. The valid batches hold one record each.
#![no_main]

use std::str::FromStr;

use eatnas_data::DataSpec;
use eatnas_fuzz::{read_every_image, scratch, write};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let dir = scratch("cifar");
    let record = [vec![3u8], vec![100u8; 3072]].concat();
    let names: Vec<String> = (1..=5)
        .map(|i| format!("data_batch_{i}.bin"))
        .chain(["test_batch.bin".to_string()])
        .collect();
    for (i, name) in names.iter().enumerate() {
        let content = if i == which as usize % names.len() { bytes } else { &record[..] };
        write(&dir.join(name), content);
    }
    let spec = DataSpec::from_str(&format!("cifar10:{}", dir.display())).unwrap();
    if let Ok(splits) = spec.open(None) {
        read_every_image(&splits);
    }
});
