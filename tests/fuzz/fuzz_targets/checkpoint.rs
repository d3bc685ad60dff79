//! A `model.safetensors`: loaded as `eval` and `export` load it (its description from the
//! metadata, every tensor checked against the network); what loads is exported to ONNX.
#![no_main]

use eatnas_fuzz::{scratch, write};
use eatnas_train::export::onnx_model;
use eatnas_train::load_model;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = scratch("checkpoint").join("model.safetensors");
    write(&path, data);
    if let Ok((mut net, info)) = load_model(&path, None) {
        let _ = onnx_model(&info, &net.state());
    }
});
