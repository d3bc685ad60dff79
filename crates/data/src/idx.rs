//! IDX files (MNIST, Fashion-MNIST), gzipped or raw.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The dimensions and unsigned-byte payload of one IDX file.
pub(crate) struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// The most a DEFLATE stream can expand (about 1032:1): a gzipped file whose header claims more
/// data than this times its size is refused before anything is allocated for it.
const MAX_DEFLATE_RATIO: usize = 1032;

/// Parses IDX bytes, gzipped (by their magic) or raw, with `expected_dims` dimensions of unsigned
/// bytes; `path` names them in errors. The header is checked against the file's size before the
/// payload is allocated.
pub(crate) fn parse(bytes: Vec<u8>, path: &Path, expected_dims: usize) -> Result<Idx> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let unreadable =
            |e: std::io::Error| Error::format(path, format!("not a readable gzip stream ({e})"));
        let mut stream = flate2::read::GzDecoder::new(&bytes[..]);
        let dims = read_header(&mut stream, path, expected_dims)?;
        let size = payload_size(&dims, path)?;
        if size / MAX_DEFLATE_RATIO > bytes.len() {
            return Err(Error::format(
                path,
                format!(
                    "dimensions {dims:?} claim {size} bytes, more than a {}-byte gzip file can hold",
                    bytes.len()
                ),
            ));
        }
        let mut data = Vec::with_capacity(size);
        stream
            .take(size as u64 + 1)
            .read_to_end(&mut data)
            .map_err(unreadable)?;
        check_payload(&dims, size, data.len(), path)?;
        Ok(Idx { dims, data })
    } else {
        let mut reader = &bytes[..];
        let dims = read_header(&mut reader, path, expected_dims)?;
        let size = payload_size(&dims, path)?;
        check_payload(&dims, size, reader.len(), path)?;
        Ok(Idx {
            dims,
            data: reader.to_vec(),
        })
    }
}

/// Reads the magic (two zero bytes, the type byte 0x08, the dimension count) and the dimensions.
fn read_header(stream: &mut impl Read, path: &Path, expected_dims: usize) -> Result<Vec<usize>> {
    let truncated = |e: std::io::Error| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => {
            Error::format(path, "truncated: the file ends inside its header")
        }
        _ => Error::format(path, format!("not a readable gzip stream ({e})")),
    };
    let mut magic = [0u8; 4];
    stream.read_exact(&mut magic).map_err(truncated)?;
    if magic[0] != 0 || magic[1] != 0 {
        return Err(Error::format(path, "wrong magic: an IDX file starts with two zero bytes, a type byte and a dimension count"));
    }
    if magic[2] != 0x08 {
        return Err(Error::format(
            path,
            format!(
                "IDX element type 0x{:02x}: expected 0x08 (unsigned bytes)",
                magic[2]
            ),
        ));
    }
    let ndims = magic[3] as usize;
    if ndims != expected_dims {
        return Err(Error::format(
            path,
            format!("IDX file with {ndims} dimensions: expected {expected_dims}"),
        ));
    }
    (0..ndims)
        .map(|_| {
            let mut dim = [0u8; 4];
            stream.read_exact(&mut dim).map_err(truncated)?;
            Ok(u32::from_be_bytes(dim) as usize)
        })
        .collect()
}

/// The payload's size in bytes, the product of the dimensions.
fn payload_size(dims: &[usize], path: &Path) -> Result<usize> {
    dims.iter()
        .try_fold(1usize, |n, &d| n.checked_mul(d))
        .ok_or_else(|| Error::format(path, format!("dimensions {dims:?} overflow a size")))
}

fn check_payload(dims: &[usize], expected: usize, held: usize, path: &Path) -> Result<()> {
    if held != expected {
        return Err(Error::format(
            path,
            format!("truncated or padded: dimensions {dims:?} need {expected} bytes of data, the file has {}", if held > expected { "more".to_string() } else { held.to_string() }),
        ));
    }
    Ok(())
}

/// Finds `DIR/{stem}` or `DIR/{stem}.gz` (also with `.` in place of the last `-`, as some
/// mirrors name them).
pub(crate) fn find(dir: &Path, stem: &str) -> Result<PathBuf> {
    let dotted = stem.rsplitn(2, '-').collect::<Vec<_>>();
    let mut candidates = vec![stem.to_string(), format!("{stem}.gz")];
    if dotted.len() == 2 {
        let alt = format!("{}.{}", dotted[1], dotted[0]);
        candidates.push(alt.clone());
        candidates.push(format!("{alt}.gz"));
    }
    candidates
        .iter()
        .map(|name| dir.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Spec(format!(
                "{}: no IDX file {stem} (or {stem}.gz) in this folder",
                dir.display()
            ))
        })
}

/// One split: its pixels, labels, and image height and width.
pub(crate) type Split = (Vec<u8>, Vec<u16>, usize, usize);

/// Parses the images (N x H x W) and labels (N) of one split from their bytes; the paths name
/// them in errors.
pub(crate) fn parse_split(images: (Vec<u8>, &Path), labels: (Vec<u8>, &Path)) -> Result<Split> {
    let img = parse(images.0, images.1, 3)?;
    let lab = parse(labels.0, labels.1, 1)?;
    if img.dims[0] != lab.dims[0] {
        return Err(Error::format(
            labels.1,
            format!(
                "{} labels for {} images in {}",
                lab.dims[0],
                img.dims[0],
                images.1.display()
            ),
        ));
    }
    Ok((
        img.data,
        lab.data.into_iter().map(u16::from).collect(),
        img.dims[1],
        img.dims[2],
    ))
}

/// Reads and parses the IDX files of one split.
pub(crate) fn load_split(images: &Path, labels: &Path) -> Result<Split> {
    let read = |p: &Path| std::fs::read(p).map_err(Error::io(p));
    parse_split((read(images)?, images), (read(labels)?, labels))
}
