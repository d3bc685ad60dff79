//! Benchmarks of the input pipeline on ImageNet-like JPEG folders (`cargo bench --bench data`);
//! `cargo xtask bench data` runs them beside PyTorch's (PIL decoding in a `DataLoader`, what
//! torchvision's `ImageFolder` does) and prints the table.
//!
//! The images: `target/bench-data/jpeg/CLASS/*.jpg`, written once by this binary: 10 classes of
//! 16 JPEGs (quality 90) at ImageNet's common sizes (500x375, 375x500, 500x333, 400x400), with
//! smooth gradients, shapes and noise, 70-150 KB each, as photographs are. Modes:
//! - plain (criterion): times every row;
//! - `EATNAS_BENCH_DATA_DIR=1`: writes the images if missing and prints their folder.
//!
//! Rows (`RAYON_NUM_THREADS` threads, default one per core):
//! - `data_decode`: one JPEG decoded to RGB, nothing more: the part of a read no resize can
//!   save, its floor here; one thread;
//! - `data_read_224`: one image read as training reads it: decoded, resized (shorter side to
//!   224) and centre-cropped to 224x224, planar; one thread;
//! - `data_batch64_224`: one training batch of 64 such images, randomly cropped (padding 14),
//!   flipped and normalised, from the loader's worker threads.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use criterion::Criterion;
use eatnas_data::{Augment, Dataset, ImageFolder, Loader, Normalize};
use image::{ImageEncoder, Rgb, RgbImage};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CLASSES: usize = 10;
const PER_CLASS: usize = 16;
const SIZE: usize = 224;
const BATCH: usize = 64;
/// ImageNet's most common sizes, width x height.
const SHAPES: [(u32, u32); 4] = [(500, 375), (375, 500), (500, 333), (400, 400)];

/// A photograph-like picture: a colour gradient, a few filled shapes and pixel noise.
fn picture(width: u32, height: u32, rng: &mut ChaCha8Rng) -> RgbImage {
    let corners: [[f32; 3]; 2] = [
        [rng.gen(), rng.gen(), rng.gen()],
        [rng.gen(), rng.gen(), rng.gen()],
    ];
    let shapes: Vec<(f32, f32, f32, [u8; 3])> = (0..6)
        .map(|_| {
            (
                rng.gen_range(0.0..width as f32),
                rng.gen_range(0.0..height as f32),
                rng.gen_range(20.0..120.0),
                [rng.gen(), rng.gen(), rng.gen()],
            )
        })
        .collect();
    let mut image = RgbImage::new(width, height);
    for (x, y, pixel) in image.enumerate_pixels_mut() {
        let t = (x + y) as f32 / (width + height) as f32;
        let mut rgb = [0u8; 3];
        for c in 0..3 {
            let v = 255.0 * (corners[0][c] * (1.0 - t) + corners[1][c] * t);
            rgb[c] = (v + rng.gen_range(-12.0..12.0)).clamp(0.0, 255.0) as u8;
        }
        for &(cx, cy, r, colour) in &shapes {
            let (dx, dy) = (x as f32 - cx, y as f32 - cy);
            if dx * dx + dy * dy < r * r {
                for c in 0..3 {
                    rgb[c] = colour[c].saturating_add(rng.gen_range(0..16));
                }
            }
        }
        *pixel = Rgb(rgb);
    }
    image
}

/// The benchmark's image folder, written on first use (a marker file says it is complete).
fn image_folder() -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/bench-data/jpeg");
    let done = root.join("complete");
    if done.is_file() {
        return root;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(224);
    for class in 0..CLASSES {
        let dir = root.join(format!("c{class:02}"));
        std::fs::create_dir_all(&dir).expect("create the benchmark's image folder");
        for i in 0..PER_CLASS {
            let (w, h) = SHAPES[(class + i) % SHAPES.len()];
            let image = picture(w, h, &mut rng);
            let file = std::fs::File::create(dir.join(format!("{i:03}.jpg"))).expect("create");
            image::codecs::jpeg::JpegEncoder::new_with_quality(std::io::BufWriter::new(file), 90)
                .write_image(image.as_raw(), w, h, image::ExtendedColorType::Rgb8)
                .expect("encode a JPEG");
        }
    }
    std::fs::write(&done, b"").expect("mark the folder complete");
    root
}

fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn main() {
    if std::env::var_os("EATNAS_BENCH_DATA_DIR").is_some() {
        println!("{}", image_folder().display());
        return;
    }
    let root = image_folder();
    let folder = Arc::new(ImageFolder::open(&root, None, Some(SIZE), false).expect("open"));
    let mut c = Criterion::default().configure_from_args();

    let files: Vec<PathBuf> = (0..CLASSES)
        .flat_map(|class| {
            let root = root.clone();
            (0..PER_CLASS).map(move |i| root.join(format!("c{class:02}/{i:03}.jpg")))
        })
        .collect();
    let mut next = 0;
    c.bench_function("data_decode", |b| {
        b.iter(|| {
            let path = &files[next % files.len()];
            let image = image::ImageReader::open(path)
                .and_then(|r| r.with_guessed_format())
                .expect("open")
                .decode()
                .expect("decode");
            criterion::black_box(image.into_rgb8());
            next += 1;
        })
    });

    let image = folder.shape().bytes();
    let mut out = vec![0u8; image];
    c.bench_function("data_read_224", |b| {
        b.iter(|| {
            folder.read(next % folder.len(), &mut out).expect("read");
            next += 1;
        })
    });

    let loader = Loader::new(
        folder.clone(),
        BATCH,
        true,
        true,
        Some(Augment {
            crop_padding: SIZE / 16,
            horizontal_flip: true,
        }),
        Normalize {
            mean: vec![0.485, 0.456, 0.406],
            std: vec![0.229, 0.224, 0.225],
        },
        0,
        threads(),
    )
    .expect("a loader");
    // Batches in steady state: the loader prepares one ahead while the last one is taken.
    let mut epoch = 0;
    let mut batches = loader.epoch(epoch, 0);
    c.bench_function("data_batch64_224", |b| {
        b.iter(|| {
            let batch = match batches.next() {
                Some(batch) => batch,
                None => {
                    epoch += 1;
                    batches = loader.epoch(epoch, 0);
                    batches.next().expect("an epoch has a batch")
                }
            };
            criterion::black_box(batch.expect("a batch"));
        })
    });
    c.final_summary();
}
