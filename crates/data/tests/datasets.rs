//! Datasets: the embedded demo, the file formats' errors, splits and the loader's determinism.

use eatnas_testkit::TestDir;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use eatnas_data::*;

fn temp_dir(name: &str) -> TestDir {
    TestDir::new(&format!("data-{name}"))
}

fn idx_bytes(dims: &[u32], payload: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0, 0, 8, dims.len() as u8];
    for d in dims {
        bytes.extend_from_slice(&d.to_be_bytes());
    }
    bytes.extend_from_slice(payload);
    bytes
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(bytes).unwrap();
    encoder.finish().unwrap()
}

/// Writes a small IDX dataset (raw train files, gzipped test files).
fn write_idx(dir: &Path, train_images: Vec<u8>, train_labels: Vec<u8>) {
    std::fs::write(dir.join("train-images-idx3-ubyte"), train_images).unwrap();
    std::fs::write(dir.join("train-labels-idx1-ubyte"), train_labels).unwrap();
    let pixels: Vec<u8> = (0..4 * 16).map(|i| i as u8).collect();
    std::fs::write(
        dir.join("t10k-images-idx3-ubyte.gz"),
        gzip(&idx_bytes(&[4, 4, 4], &pixels)),
    )
    .unwrap();
    std::fs::write(
        dir.join("t10k-labels-idx1-ubyte.gz"),
        gzip(&idx_bytes(&[4], &[0, 1, 2, 1])),
    )
    .unwrap();
}

fn open_err(spec: &str) -> String {
    match spec.parse::<DataSpec>().and_then(|s| s.open(None)) {
        Ok(_) => panic!("{spec}: expected an error"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn the_embedded_demo_is_class_balanced_fashion_mnist() {
    let splits = DataSpec::Demo.open(None).unwrap();
    assert_eq!(
        (splits.train.len(), splits.test.len(), splits.classes()),
        (10_000, 2_000, 10)
    );
    assert_eq!(
        splits.shape(),
        ImageShape {
            channels: 1,
            size: 28
        }
    );
    let mut per_class = [0usize; 10];
    for i in 0..splits.train.len() {
        per_class[splits.train.label(i)] += 1;
    }
    assert_eq!(per_class, [1000; 10]);
    let small = DataSpec::Demo.open(Some(14)).unwrap();
    assert_eq!(
        small.shape(),
        ImageShape {
            channels: 1,
            size: 14
        }
    );
    let mut pixels = vec![0u8; 14 * 14];
    small.train.read(0, &mut pixels).unwrap();
    assert!(
        pixels.iter().any(|&p| p > 0),
        "a resized image is not blank"
    );
}

#[test]
fn idx_files_raw_or_gzipped_load_and_bad_ones_are_named() {
    let dir = temp_dir("idx");
    let pixels: Vec<u8> = (0..6 * 16).map(|i| (i * 3) as u8).collect();
    write_idx(
        &dir,
        idx_bytes(&[6, 4, 4], &pixels),
        idx_bytes(&[6], &[0, 1, 2, 0, 1, 2]),
    );
    let spec = format!("idx:{}", dir.display());
    let splits = spec.parse::<DataSpec>().unwrap().open(None).unwrap();
    assert_eq!(
        (splits.train.len(), splits.test.len(), splits.classes()),
        (6, 4, 3)
    );
    let mut image = vec![0u8; 16];
    splits.train.read(1, &mut image).unwrap();
    assert_eq!(image, pixels[16..32]);

    write_idx(
        &dir,
        idx_bytes(&[6, 4, 4], &pixels[..50]),
        idx_bytes(&[6], &[0, 1, 2, 0, 1, 2]),
    );
    let e = open_err(&spec);
    assert!(
        e.contains("train-images-idx3-ubyte") && e.contains("truncated"),
        "{e}"
    );

    let mut wrong_magic = idx_bytes(&[6, 4, 4], &pixels);
    wrong_magic[0] = 7;
    write_idx(&dir, wrong_magic, idx_bytes(&[6], &[0, 1, 2, 0, 1, 2]));
    assert!(open_err(&spec).contains("wrong magic"));

    write_idx(
        &dir,
        idx_bytes(&[6, 4, 4], &pixels),
        idx_bytes(&[5], &[0, 1, 2, 0, 1]),
    );
    assert!(open_err(&spec).contains("5 labels for 6 images"));

    // A test label beyond the classes the training labels name.
    write_idx(
        &dir,
        idx_bytes(&[6, 4, 4], &pixels),
        idx_bytes(&[6], &[0, 1, 0, 0, 1, 1]),
    );
    let e = open_err(&spec);
    assert!(
        e.contains("label 2 of image 2 is out of range: expected below 2"),
        "{e}"
    );

    // Headers that claim more than the file holds are refused before anything is allocated:
    // 10^12 images, a product of dimensions that overflows, and a small gzip stream claiming
    // more than DEFLATE can expand to.
    for (dims, needle) in [
        (
            vec![1_000_000, 1_000_000, 1],
            "need 1000000000000 bytes of data",
        ),
        (vec![u32::MAX, u32::MAX, u32::MAX], "overflow a size"),
    ] {
        write_idx(&dir, idx_bytes(&dims, &pixels), idx_bytes(&[6], &[0; 6]));
        let e = open_err(&spec);
        assert!(
            e.contains("train-images-idx3-ubyte") && e.contains(needle),
            "{dims:?}: {e}"
        );
    }
    write_idx(
        &dir,
        gzip(&idx_bytes(&[100_000, 1000, 1000], &pixels)),
        idx_bytes(&[6], &[0; 6]),
    );
    let e = open_err(&spec);
    assert!(
        e.contains("more than a") && e.contains("gzip file can hold"),
        "{e}"
    );

    // Images of zero width (found by the idx fuzz target: the reader then indexed an empty
    // buffer).
    write_idx(
        &dir,
        idx_bytes(&[3, 0, 21], &[]),
        idx_bytes(&[3], &[0, 1, 0]),
    );
    let e = open_err(&spec);
    assert!(
        e.contains("images of 1 x 0 x 21: expected positive dimensions"),
        "{e}"
    );

    let e = open_err("idx:/no/such/folder");
    assert!(e.contains("no IDX file train-images-idx3-ubyte"), "{e}");
    assert!(open_err("mnist:/x").contains("unknown dataset kind `mnist`"));
}

#[test]
fn cifar_batches_of_the_wrong_size_or_label_are_named() {
    let dir = temp_dir("cifar");
    let record = |label: u8| {
        let mut r = vec![label];
        r.extend((0..3072).map(|i| (i % 251) as u8));
        r
    };
    for i in 1..=5 {
        std::fs::write(
            dir.join(format!("data_batch_{i}.bin")),
            [record(1), record(9)].concat(),
        )
        .unwrap();
    }
    std::fs::write(dir.join("test_batch.bin"), record(3)).unwrap();
    let spec = format!("cifar10:{}", dir.display());
    let splits = spec.parse::<DataSpec>().unwrap().open(Some(16)).unwrap();
    assert_eq!(
        (splits.train.len(), splits.test.len(), splits.classes()),
        (10, 1, 10)
    );
    assert_eq!(
        splits.shape(),
        ImageShape {
            channels: 3,
            size: 16
        }
    );

    std::fs::write(dir.join("test_batch.bin"), &record(3)[..3000]).unwrap();
    let e = open_err(&spec);
    assert!(
        e.contains("test_batch.bin") && e.contains("not a whole number of 3073-byte CIFAR records"),
        "{e}"
    );
    std::fs::write(dir.join("test_batch.bin"), record(12)).unwrap();
    assert!(open_err(&spec).contains("label 12 is out of range: expected below 10"));
}

fn write_png(path: &Path, size: u32, shade: u8) {
    image::GrayImage::from_fn(size, size + 2, |x, y| {
        image::Luma([shade.wrapping_add((x * y) as u8)])
    })
    .save(path)
    .unwrap();
}

#[test]
fn image_folders_stream_and_bad_images_are_named() {
    let dir = temp_dir("folder");
    for split in ["train", "val"] {
        for (c, class) in ["cat", "dog"].iter().enumerate() {
            std::fs::create_dir_all(dir.join(split).join(class)).unwrap();
            for i in 0..3 {
                write_png(
                    &dir.join(split).join(class).join(format!("{i}.png")),
                    10,
                    (c * 100 + i) as u8,
                );
            }
        }
    }
    let spec: DataSpec = format!("folder:{}", dir.display()).parse().unwrap();
    let splits = spec.open(Some(8)).unwrap();
    assert_eq!(
        (splits.train.len(), splits.test.len(), splits.classes()),
        (6, 6, 2)
    );
    assert_eq!(
        splits.shape(),
        ImageShape {
            channels: 1,
            size: 8
        }
    );
    assert_eq!(splits.train.label(4), 1);
    // Default resolution: the first image's shorter side.
    assert_eq!(spec.open(None).unwrap().shape().size, 10);

    std::fs::write(dir.join("train/dog/2.png"), b"not a png").unwrap();
    let mut pixels = vec![0u8; 64];
    let e = splits.train.read(5, &mut pixels).unwrap_err().to_string();
    assert!(
        e.contains("train/dog/2.png") && e.contains("does not decode"),
        "{e}"
    );

    // A 107-byte PNG claiming 6 x 67108869 pixels (found by the image fuzz target): refused
    // without decoding 400 MB.
    std::fs::copy(
        concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/claims-6x67108869.png"
        ),
        dir.join("train/dog/2.png"),
    )
    .unwrap();
    let e = splits.train.read(5, &mut pixels).unwrap_err().to_string();
    assert!(
        e.contains("train/dog/2.png") && e.contains("larger than eatnas reads"),
        "{e}"
    );

    // Left out when asked: each file decoded once at open, the bad ones named.
    let skipping = spec.open_with(Some(8), true).unwrap();
    assert_eq!(skipping.train.len(), splits.train.len() - 1);
    assert_eq!(
        skipping.skipped_images.len(),
        1,
        "{:?}",
        skipping.skipped_images
    );
    assert!(
        skipping.skipped_images[0].contains("train/dog/2.png"),
        "{:?}",
        skipping.skipped_images
    );
    for i in 0..skipping.train.len() {
        skipping.train.read(i, &mut pixels).unwrap();
    }
    // A truncated file among good ones, the same way.
    let good = std::fs::read(dir.join("train/dog/0.png")).unwrap();
    std::fs::write(dir.join("train/dog/2.png"), &good[..good.len() / 2]).unwrap();
    let e = splits.train.read(5, &mut pixels).unwrap_err().to_string();
    assert!(
        e.contains("train/dog/2.png") && e.contains("does not decode"),
        "{e}"
    );
    let skipping = spec.open_with(Some(8), true).unwrap();
    assert_eq!(
        skipping.skipped_images.len(),
        1,
        "{:?}",
        skipping.skipped_images
    );

    std::fs::create_dir_all(dir.join("train/empty")).unwrap();
    let e = spec.open(Some(8)).err().unwrap().to_string();
    assert!(
        e.contains("empty") && e.contains("holds no .jpg, .jpeg or .png image"),
        "{e}"
    );
    assert!(open_err("folder:/no/such/dir").contains("not a folder"));
}

#[test]
fn validation_split_is_disjoint_and_fixed_by_the_seed() {
    let train = DataSpec::Demo.open(Some(8)).unwrap().train;
    let (rest, val) = split_validation(train.clone(), 0.1, 7).unwrap();
    assert_eq!((rest.len(), val.len()), (9000, 1000));
    let (_, again) = split_validation(train.clone(), 0.1, 7).unwrap();
    let (_, other) = split_validation(train.clone(), 0.1, 8).unwrap();
    let labels = |d: &Subset| (0..d.len()).map(|i| d.label(i)).collect::<Vec<_>>();
    assert_eq!(labels(&val), labels(&again));
    assert_ne!(labels(&val), labels(&other));
    assert!(split_validation(train, 1.5, 0).is_err());
}

#[test]
fn an_epoch_started_at_batch_k_repeats_the_whole_epochs_batches() {
    let train: Arc<dyn Dataset> =
        Arc::new(Subset::fraction(DataSpec::Demo.open(Some(12)).unwrap().train, 0.05, 1).unwrap());
    let normalize = Normalize::estimate(train.as_ref(), 1000).unwrap();
    assert!(normalize.std[0] > 0.1 && normalize.mean[0] > 0.1);
    let augment = Augment {
        crop_padding: 2,
        horizontal_flip: true,
    };
    let loader = Loader::new(train, 32, true, true, Some(augment), normalize, 3, 2).unwrap();
    let all: Vec<Batch> = loader.epoch(1, 0).map(Result::unwrap).collect();
    assert_eq!(all.len(), loader.batches_per_epoch());
    let tail: Vec<Batch> = loader.epoch(1, 4).map(Result::unwrap).collect();
    assert_eq!(tail.len(), all.len() - 4);
    for (a, b) in all[4..].iter().zip(&tail) {
        assert_eq!(a.labels, b.labels);
        assert_eq!(a.images.to_vec().unwrap(), b.images.to_vec().unwrap());
    }
    let next_epoch: Vec<Batch> = loader.epoch(2, 0).map(Result::unwrap).collect();
    assert_ne!(
        all[0].labels, next_epoch[0].labels,
        "each epoch has its own order"
    );
}

#[test]
fn the_chance_level_is_what_answering_the_commonest_class_scores() {
    // Labels 0, 0, 0, 1, 2 of 4 classes: always answering 0 is right 3 times in 5.
    let images = InMemory::new(
        "five".into(),
        vec![0; 5 * 4],
        vec![0, 0, 0, 1, 2],
        (1, 2, 2),
        2,
        4,
    )
    .unwrap();
    assert_eq!(
        ChanceLevel::of(&images),
        ChanceLevel {
            images: 5,
            majority_top1: 0.6
        }
    );
    let empty = InMemory::new("none".into(), vec![], vec![], (1, 2, 2), 2, 4).unwrap();
    assert_eq!(ChanceLevel::of(&empty).majority_top1, 0.0, "an empty set");
    let demo = DataSpec::Demo.open(None).unwrap();
    let demo = ChanceLevel::of(demo.test.as_ref());
    assert_eq!(demo.images, 2000);
    assert!(
        (demo.majority_top1 - 0.1).abs() < 1e-12,
        "the demo's test set is class-balanced over 10 classes: {demo:?}"
    );
}

#[test]
fn at_chance_means_within_three_standard_errors_of_the_majority_share() {
    let set = |images, majority_top1| ChanceLevel {
        images,
        majority_top1,
    };
    // 12,000 images of 10 balanced classes: 0.1 + 3 * sqrt(0.09 / 12,000) = 0.1082.
    assert!(set(12_000, 0.1).at_chance(0.102));
    assert!(set(12_000, 0.1).at_chance(0.108));
    assert!(!set(12_000, 0.1).at_chance(0.109));
    // Fewer images, a wider margin: 1,000 images, up to 0.1285.
    assert!(set(1_000, 0.1).at_chance(0.125));
    assert!(!set(1_000, 0.1).at_chance(0.13));
    // An unbalanced set: always answering the commonest class scores its share.
    assert!(set(1_000, 0.6).at_chance(0.6));
    assert!(!set(1_000, 0.6).at_chance(0.7));
    assert!(!set(0, 0.0).at_chance(0.0), "no images: nothing to judge");
}
