//! An image folder (`folder:DIR`) whose first training image is the fuzzer's (its extension
//! chosen by the first byte; the format is guessed from the content): opened, then every image
//! read (decoded, resized, cropped).
#![no_main]

use std::str::FromStr;

use eatnas_data::DataSpec;
use eatnas_fuzz::{read_every_image, png, scratch, write};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&which, bytes)) = data.split_first() else {
        return;
    };
    let dir = scratch("image");
    let extension = ["png", "jpg", "jpeg"][which as usize % 3];
    write(&dir.join(format!("train/a/0.{extension}")), bytes);
    write(&dir.join("train/b/0.png"), &png());
    write(&dir.join("val/a/0.png"), &png());
    write(&dir.join("val/b/0.png"), &png());
    let spec = DataSpec::from_str(&format!("folder:{}", dir.display())).unwrap();
    if let Ok(splits) = spec.open(None) {
        read_every_image(&splits);
    }
});
