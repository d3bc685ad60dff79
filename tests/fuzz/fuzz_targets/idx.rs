//! An IDX dataset folder (`idx:DIR`) where one of the four files (chosen by the first byte) is
//! the fuzzer's, raw or gzipped as its bytes are: opened, then every image read.
#![no_main]

use std::str::FromStr;

use eatnas_data::DataSpec;
use eatnas_fuzz::{read_every_image, idx, scratch, write};
use libfuzzer_sys::fuzz_target;

const FILES: [&str; 4] = [
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
];

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let dir = scratch("idx");
    for (i, name) in FILES.iter().enumerate() {
        let valid = if i % 2 == 0 { idx(&[3, 4, 4], 7) } else { idx(&[3], 1) };
        let content = if i == which as usize % 4 { bytes.to_vec() } else { valid };
        write(&dir.join(name), &content);
    }
    let spec = DataSpec::from_str(&format!("idx:{}", dir.display())).unwrap();
    if let Ok(splits) = spec.open(None) {
        read_every_image(&splits);
    }
});
