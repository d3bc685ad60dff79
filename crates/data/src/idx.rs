//! IDX files (MNIST, Fashion-MNIST), gzipped or raw.

use std::io::Read;
use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// The dimensions and unsigned-byte payload of one IDX file.
pub(crate) struct Idx {
    pub dims: Vec<usize>,
    pub data: Vec<u8>,
}

/// Gunzips `bytes` when they start with the gzip magic; `path` names them in errors.
fn maybe_gunzip(bytes: Vec<u8>, path: &Path) -> Result<Vec<u8>> {
    if bytes.starts_with(&[0x1f, 0x8b]) {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&bytes[..])
            .read_to_end(&mut out)
            .map_err(|e| Error::format(path, format!("not a readable gzip stream ({e})")))?;
        Ok(out)
    } else {
        Ok(bytes)
    }
}

/// Parses IDX bytes with `expected_dims` dimensions of unsigned bytes.
pub(crate) fn parse(bytes: Vec<u8>, path: &Path, expected_dims: usize) -> Result<Idx> {
    let bytes = maybe_gunzip(bytes, path)?;
    if bytes.len() < 4 || bytes[0] != 0 || bytes[1] != 0 {
        return Err(Error::format(path, "wrong magic: an IDX file starts with two zero bytes, a type byte and a dimension count"));
    }
    if bytes[2] != 0x08 {
        return Err(Error::format(
            path,
            format!(
                "IDX element type 0x{:02x}: expected 0x08 (unsigned bytes)",
                bytes[2]
            ),
        ));
    }
    let ndims = bytes[3] as usize;
    if ndims != expected_dims {
        return Err(Error::format(
            path,
            format!("IDX file with {ndims} dimensions: expected {expected_dims}"),
        ));
    }
    let header = 4 + 4 * ndims;
    if bytes.len() < header {
        return Err(Error::format(
            path,
            format!(
                "truncated: {} bytes, the header alone needs {header}",
                bytes.len()
            ),
        ));
    }
    let dims: Vec<usize> = (0..ndims)
        .map(|i| u32::from_be_bytes(bytes[4 + 4 * i..8 + 4 * i].try_into().unwrap()) as usize)
        .collect();
    let expected = dims.iter().product::<usize>();
    let payload = bytes.len() - header;
    if payload != expected {
        return Err(Error::format(
            path,
            format!("truncated or padded: dimensions {dims:?} need {expected} bytes of data, the file has {payload}"),
        ));
    }
    Ok(Idx {
        dims,
        data: bytes[header..].to_vec(),
    })
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
