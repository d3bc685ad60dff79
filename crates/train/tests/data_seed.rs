//! Which images a run trains and validates on: drawn by the data seed, not the training seed.

use eatnas_data::{DataSpec, Dataset};
use eatnas_train::{PreparedData, TrainConfig};

fn labels(d: &dyn Dataset) -> Vec<usize> {
    (0..d.len()).map(|i| d.label(i)).collect()
}

/// The labels of the training and validation images, in order: which images a run sees.
fn images(seed: u64, data_seed: Option<u64>) -> (Vec<usize>, Vec<usize>) {
    let config = TrainConfig {
        data_fraction: 0.5,
        val_fraction: 0.2,
        resolution: Some(8),
        seed,
        data_seed,
        ..TrainConfig::default()
    };
    let data = PreparedData::open(&DataSpec::Demo, &config).unwrap();
    let val = data.val.expect("a validation split");
    (labels(data.train.as_ref()), labels(val.as_ref()))
}

#[test]
fn runs_sharing_a_data_seed_see_the_same_images_whatever_their_seed() {
    let first = images(1, None);
    assert_eq!(
        (first.0.len(), first.1.len()),
        (4000, 1000),
        "half of 10,000 images, a fifth of it held out"
    );
    assert_eq!(
        images(2, Some(1)),
        first,
        "seed 2 with data seed 1 trains and validates on seed 1's images"
    );
    assert_eq!(images(1, Some(1)), first, "a data seed equal to the seed");
    let moved = images(2, None);
    assert_ne!(
        moved.1, first.1,
        "without a data seed the split moves with the seed"
    );
    assert_ne!(moved.0, first.0, "and so does the data fraction");
}
