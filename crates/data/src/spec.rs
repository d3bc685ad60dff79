//! Naming a dataset on the command line: `fashion-mnist` (embedded demo), `idx:DIR`,
//! `cifar10:DIR`, `cifar100:DIR`, `folder:DIR`.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;

use crate::{cifar, idx, Dataset, Error, ImageFolder, ImageShape, InMemory, Result};

/// Where a dataset comes from.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum DataSpec {
    /// The embedded Fashion-MNIST subset (10,000 training and 2,000 test images, 28x28).
    Demo,
    /// `DIR/{train,t10k}-{images-idx3,labels-idx1}-ubyte[.gz]`.
    Idx(PathBuf),
    /// `DIR/data_batch_{1..5}.bin` and `DIR/test_batch.bin`.
    Cifar10(PathBuf),
    /// `DIR/train.bin` and `DIR/test.bin`.
    Cifar100(PathBuf),
    /// `DIR/train/CLASS/*` and `DIR/val/CLASS/*` (JPEG or PNG).
    Folder(PathBuf),
}

const FORMS: &str =
    "fashion-mnist (the embedded demo), idx:DIR, cifar10:DIR, cifar100:DIR or folder:DIR";

impl FromStr for DataSpec {
    type Err = Error;

    fn from_str(text: &str) -> Result<DataSpec> {
        if matches!(text, "fashion-mnist" | "demo") {
            return Ok(DataSpec::Demo);
        }
        let Some((kind, dir)) = text.split_once(':') else {
            return Err(Error::Spec(format!(
                "unknown dataset `{text}`: expected {FORMS}"
            )));
        };
        let dir = PathBuf::from(dir);
        match kind {
            "idx" => Ok(DataSpec::Idx(dir)),
            "cifar10" => Ok(DataSpec::Cifar10(dir)),
            "cifar100" => Ok(DataSpec::Cifar100(dir)),
            "folder" => Ok(DataSpec::Folder(dir)),
            _ => Err(Error::Spec(format!(
                "unknown dataset kind `{kind}` in `{text}`: expected {FORMS}"
            ))),
        }
    }
}

impl fmt::Display for DataSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataSpec::Demo => write!(f, "fashion-mnist"),
            DataSpec::Idx(d) => write!(f, "idx:{}", d.display()),
            DataSpec::Cifar10(d) => write!(f, "cifar10:{}", d.display()),
            DataSpec::Cifar100(d) => write!(f, "cifar100:{}", d.display()),
            DataSpec::Folder(d) => write!(f, "folder:{}", d.display()),
        }
    }
}

/// The training and test sets of a dataset (the validation split is cut from `train`).
pub struct Splits {
    pub train: Arc<dyn Dataset>,
    pub test: Arc<dyn Dataset>,
    /// Image files left out for not decoding (`skip_bad_images`), each "PATH: why".
    pub skipped_images: Vec<String>,
}

impl Splits {
    pub fn shape(&self) -> ImageShape {
        self.train.shape()
    }

    pub fn classes(&self) -> usize {
        self.train.classes()
    }
}

const DEMO: [(&str, &[u8]); 4] = [
    (
        "train-images-idx3-ubyte.gz",
        include_bytes!("../../../data/fashion-mnist-demo/train-images-idx3-ubyte.gz"),
    ),
    (
        "train-labels-idx1-ubyte.gz",
        include_bytes!("../../../data/fashion-mnist-demo/train-labels-idx1-ubyte.gz"),
    ),
    (
        "t10k-images-idx3-ubyte.gz",
        include_bytes!("../../../data/fashion-mnist-demo/t10k-images-idx3-ubyte.gz"),
    ),
    (
        "t10k-labels-idx1-ubyte.gz",
        include_bytes!("../../../data/fashion-mnist-demo/t10k-labels-idx1-ubyte.gz"),
    ),
];

/// Builds train and test sets from IDX splits; classes are the largest training label + 1.
fn idx_splits(
    name: &str,
    train: idx::Split,
    test: idx::Split,
    resolution: Option<usize>,
) -> Result<Splits> {
    let classes = train.1.iter().copied().max().map_or(0, |m| m as usize + 1);
    if classes < 2 {
        return Err(Error::Spec(format!(
            "{name}: the training labels name {classes} class(es); expected at least 2"
        )));
    }
    let size = resolution.unwrap_or(train.2.max(train.3));
    let split = |part: &str, (pixels, labels, h, w): idx::Split| {
        InMemory::new(
            format!("{name} {part}"),
            pixels,
            labels,
            (1, h, w),
            size,
            classes,
        )
    };
    let (train, test) = (split("train", train)?, split("test", test)?);
    Ok(Splits {
        train: Arc::new(train),
        test: Arc::new(test),
        skipped_images: Vec::new(),
    })
}

/// The first path among `dir/name` and `dir/sub/name` that exists.
fn in_dir_or_sub(dir: &Path, sub: &str, name: &str) -> PathBuf {
    let direct = dir.join(name);
    if direct.exists() {
        direct
    } else if dir.join(sub).join(name).exists() {
        dir.join(sub).join(name)
    } else {
        direct
    }
}

impl DataSpec {
    /// Opens the training and test sets, resized to `resolution` (default: the dataset's own
    /// size; for image folders the shorter side of the first image, at most 224).
    pub fn open(&self, resolution: Option<usize>) -> Result<Splits> {
        self.open_with(resolution, false)
    }

    /// [`DataSpec::open`], leaving out the images of an image folder that do not decode when
    /// `skip_bad_images` (listed in [`Splits::skipped_images`], counted in a warning on stderr;
    /// see [`ImageFolder::open`]).
    pub fn open_with(&self, resolution: Option<usize>, skip_bad_images: bool) -> Result<Splits> {
        if resolution == Some(0) {
            return Err(Error::Spec("resolution must be positive".into()));
        }
        match self {
            DataSpec::Demo => {
                let file = |i: usize| (DEMO[i].1.to_vec(), Path::new(DEMO[i].0));
                let train = idx::parse_split(file(0), file(1))?;
                let test = idx::parse_split(file(2), file(3))?;
                idx_splits("fashion-mnist demo", train, test, resolution)
            }
            DataSpec::Idx(dir) => {
                let path = |stem: &str| idx::find(dir, stem);
                let train = idx::load_split(
                    &path("train-images-idx3-ubyte")?,
                    &path("train-labels-idx1-ubyte")?,
                )?;
                let test = idx::load_split(
                    &path("t10k-images-idx3-ubyte")?,
                    &path("t10k-labels-idx1-ubyte")?,
                )?;
                idx_splits(&format!("idx:{}", dir.display()), train, test, resolution)
            }
            DataSpec::Cifar10(dir) => {
                let train_files: Vec<PathBuf> = (1..=5)
                    .map(|i| {
                        in_dir_or_sub(dir, "cifar-10-batches-bin", &format!("data_batch_{i}.bin"))
                    })
                    .collect();
                let test_file = in_dir_or_sub(dir, "cifar-10-batches-bin", "test_batch.bin");
                self.cifar(&train_files, &test_file, 1, 10, resolution)
            }
            DataSpec::Cifar100(dir) => {
                let train_file = in_dir_or_sub(dir, "cifar-100-binary", "train.bin");
                let test_file = in_dir_or_sub(dir, "cifar-100-binary", "test.bin");
                self.cifar(&[train_file], &test_file, 2, 100, resolution)
            }
            DataSpec::Folder(dir) => {
                let train =
                    ImageFolder::open(&dir.join("train"), None, resolution, skip_bad_images)?;
                let size = Some(train.shape().size);
                let test = ImageFolder::open(
                    &dir.join("val"),
                    Some(train.class_names()),
                    size,
                    skip_bad_images,
                )?;
                if test.shape() != train.shape() {
                    // One greyscale split and one colour split: read both in colour.
                    return Err(Error::Spec(format!(
                        "{}: train images have {} channel(s) and val images {}; convert one split",
                        dir.display(),
                        train.shape().channels,
                        test.shape().channels
                    )));
                }
                let skipped_images = [train.skipped(), test.skipped()].concat();
                if let Some(first) = skipped_images.first() {
                    eprintln!(
                        "warning: {self}: skipped {} image(s) that do not decode (skip_bad_images); the first: {first}",
                        skipped_images.len()
                    );
                }
                Ok(Splits {
                    train: Arc::new(train),
                    test: Arc::new(test),
                    skipped_images,
                })
            }
        }
    }

    fn cifar(
        &self,
        train: &[PathBuf],
        test: &Path,
        label_bytes: usize,
        classes: usize,
        resolution: Option<usize>,
    ) -> Result<Splits> {
        let name = self.to_string();
        let train_refs: Vec<&Path> = train.iter().map(PathBuf::as_path).collect();
        let (pixels, labels) = cifar::load(&train_refs, label_bytes, classes)?;
        let (test_pixels, test_labels) = cifar::load(&[test], label_bytes, classes)?;
        let size = resolution.unwrap_or(32);
        let train = InMemory::new(
            format!("{name} train"),
            pixels,
            labels,
            (3, 32, 32),
            size,
            classes,
        )?;
        let test = InMemory::new(
            format!("{name} test"),
            test_pixels,
            test_labels,
            (3, 32, 32),
            size,
            classes,
        )?;
        Ok(Splits {
            train: Arc::new(train),
            test: Arc::new(test),
            skipped_images: Vec::new(),
        })
    }
}
