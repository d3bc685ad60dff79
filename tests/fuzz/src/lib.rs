//! What the fuzz targets share: a scratch folder per process (in memory where /dev/shm exists)
//! where a target lays out the files eatnas reads, the fuzzer's bytes as one of them, so that
//! each target runs eatnas's own reading code from the file on.

use std::path::{Path, PathBuf};

/// An empty folder `name` of this process's scratch space: under `$EATNAS_FUZZ_SCRATCH` when set
/// (`cargo xtask fuzz` sets it to a folder it removes after the target's run), else under
/// /dev/shm, else under the system's temporary folder.
pub fn scratch(name: &str) -> PathBuf {
    let base = match std::env::var_os("EATNAS_FUZZ_SCRATCH") {
        Some(dir) => PathBuf::from(dir),
        None if Path::new("/dev/shm").is_dir() => PathBuf::from("/dev/shm"),
        None => std::env::temp_dir(),
    };
    let dir = base
        .join(format!("eatnas-fuzz-{}", std::process::id()))
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch folder");
    dir
}

/// Writes `bytes` to `path`, creating its folder.
pub fn write(path: &Path, bytes: &[u8]) {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("scratch folder");
    }
    std::fs::write(path, bytes).expect("scratch file");
}

/// Reads every image and label of both splits, as training and evaluation would.
pub fn read_every_image(splits: &eatnas_data::Splits) {
    let mut image = vec![0u8; splits.shape().bytes()];
    for set in [&splits.train, &splits.test] {
        for i in 0..set.len() {
            let _ = set.read(i, &mut image);
            let _ = set.label(i);
        }
    }
}

/// An IDX file of unsigned bytes with dimensions `dims`, every value `fill`.
pub fn idx(dims: &[u32], fill: u8) -> Vec<u8> {
    let mut bytes = vec![0, 0, 0x08, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    let n: u32 = dims.iter().product();
    bytes.extend(std::iter::repeat(fill).take(n as usize));
    bytes
}

/// A valid 4x4 greyscale PNG.
pub fn png() -> Vec<u8> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::GrayImage::from_pixel(4, 4, image::Luma([128]))
        .write_to(&mut out, image::ImageFormat::Png)
        .expect("png");
    out.into_inner()
}
