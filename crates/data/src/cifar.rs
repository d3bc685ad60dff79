//! CIFAR-10 and CIFAR-100 binary batches.

use std::path::Path;

use crate::{Error, Result};

const IMAGE: usize = 3 * 32 * 32;

/// Reads CIFAR binary batch files. A CIFAR-10 record is one label byte then 3072 pixel bytes; a
/// CIFAR-100 record has a coarse and a fine label byte first (the fine one is used).
pub(crate) fn load(
    files: &[&Path],
    label_bytes: usize,
    classes: usize,
) -> Result<(Vec<u8>, Vec<u16>)> {
    let record = label_bytes + IMAGE;
    let (mut pixels, mut labels) = (Vec::new(), Vec::new());
    for &path in files {
        let bytes = std::fs::read(path).map_err(Error::io(path))?;
        if bytes.is_empty() || bytes.len() % record != 0 {
            return Err(Error::format(
                path,
                format!("{} bytes is not a whole number of {record}-byte CIFAR records ({label_bytes} label byte(s) + 3072 pixels)", bytes.len()),
            ));
        }
        for (i, rec) in bytes.chunks_exact(record).enumerate() {
            let label = rec[label_bytes - 1] as usize;
            if label >= classes {
                return Err(Error::format(
                    path,
                    format!("record {i}: label {label} is out of range: expected below {classes}"),
                ));
            }
            labels.push(label as u16);
            pixels.extend_from_slice(&rec[label_bytes..]);
        }
    }
    Ok((pixels, labels))
}
