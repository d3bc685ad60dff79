//! An image resized to a training resolution: the shorter side to `size` with a triangle
//! (bilinear, antialiased) filter, then the centre crop, one channel plane at a time.
//!
//! The arithmetic is `image::imageops::resize` with `FilterType::Triangle` to the bit (its
//! weights, its float32 sums in its order, its rounding), so every dataset reads exactly as it did
//! when that function resized it; but it filters one channel where that one filters four, reads
//! rows contiguously, and computes only the rows and columns the crop keeps. On a 500x375 JPEG to
//! 224 that is the difference between the resize costing four times the decode and a fraction of
//! it (`cargo xtask bench data`).

use std::ops::Range;

/// One axis's filter: for each output index kept, the first input index it reads and the
/// normalised weights of the inputs from there on.
struct Taps {
    first: Vec<usize>,
    weights: Vec<Vec<f32>>,
}

fn triangle(x: f32) -> f32 {
    if x.abs() < 1.0 {
        1.0 - x.abs()
    } else {
        0.0
    }
}

impl Taps {
    /// The taps of output indices `kept` when `input` samples are resized to `output`.
    fn new(input: usize, output: usize, kept: Range<usize>) -> Taps {
        let ratio = input as f32 / output as f32;
        let sratio = if ratio < 1.0 { 1.0 } else { ratio };
        let support = sratio; // the triangle's support, 1, scaled when shrinking
        let (mut first, mut weights) = (Vec::new(), Vec::new());
        for out in kept {
            let centre = (out as f32 + 0.5) * ratio;
            let left = ((centre - support).floor() as i64).clamp(0, input as i64 - 1);
            let right = ((centre + support).ceil() as i64).clamp(left + 1, input as i64);
            let centre = centre - 0.5;
            let mut ws: Vec<f32> = (left..right)
                .map(|i| triangle((i as f32 - centre) / sratio))
                .collect();
            let sum = ws.iter().fold(0.0f32, |s, w| s + w);
            for w in &mut ws {
                *w /= sum;
            }
            first.push(left as usize);
            weights.push(ws);
        }
        Taps { first, weights }
    }
}

/// The height and width of a `height x width` image with its shorter side resized to `size`
/// (the other in proportion, rounded, at least `size`).
fn resized_shape(height: usize, width: usize, size: usize) -> (usize, usize) {
    let longer = |long: usize, short: usize| {
        ((long * size) as f64 / short as f64)
            .round()
            .max(size as f64) as usize
    };
    if height <= width {
        (size, longer(width, height))
    } else {
        (longer(height, width), size)
    }
}

/// Resizes one `channels x height x width` image (planar bytes) to `size x size`: the shorter
/// side to `size`, then the centre crop. Returns `channels x size x size` bytes.
pub(crate) fn resize_center_crop(
    pixels: &[u8],
    channels: usize,
    height: usize,
    width: usize,
    size: usize,
) -> Vec<u8> {
    if height == size && width == size {
        return pixels.to_vec();
    }
    let mut out = vec![0u8; channels * size * size];
    if height == 0 || width == 0 {
        return out;
    }
    let (new_h, new_w) = resized_shape(height, width, size);
    let (top, left) = ((new_h - size) / 2, (new_w - size) / 2);
    if (new_h, new_w) == (height, width) {
        // Nothing to filter (as `image` copies): the crop alone.
        for c in 0..channels {
            for y in 0..size {
                let from = (c * height + top + y) * width + left;
                out[(c * size + y) * size..][..size].copy_from_slice(&pixels[from..][..size]);
            }
        }
        return out;
    }
    let rows = Taps::new(height, new_h, top..top + size);
    let columns = Taps::new(width, new_w, left..left + size);
    // The rows the crop keeps, every column, filtered vertically (unrounded, as `image` keeps them).
    let mut vertical = vec![0.0f32; size * width];
    for c in 0..channels {
        let plane = &pixels[c * height * width..][..height * width];
        vertical.fill(0.0);
        for (y, (&first, ws)) in rows.first.iter().zip(&rows.weights).enumerate() {
            let row = &mut vertical[y * width..][..width];
            // Tap by tap over the whole row: each pixel still sums its taps in their order.
            for (k, &w) in ws.iter().enumerate() {
                let source = &plane[(first + k) * width..][..width];
                for (t, &p) in row.iter_mut().zip(source) {
                    *t += p as f32 * w;
                }
            }
        }
        let out = &mut out[c * size * size..][..size * size];
        for y in 0..size {
            let row = &vertical[y * width..][..width];
            for (x, (&first, ws)) in columns.first.iter().zip(&columns.weights).enumerate() {
                let t = ws
                    .iter()
                    .zip(&row[first..])
                    .fold(0.0f32, |t, (&w, &v)| t + v * w);
                out[y * size + x] = t.clamp(0.0, 255.0).round() as u8;
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};
    use rand_chacha::ChaCha8Rng;

    /// What the datasets did before: `image`'s resize of each plane, then the crop.
    fn with_image_crate(
        pixels: &[u8],
        channels: usize,
        height: usize,
        width: usize,
        size: usize,
    ) -> Vec<u8> {
        let (new_h, new_w) = resized_shape(height, width, size);
        let (top, left) = ((new_h - size) / 2, (new_w - size) / 2);
        let mut out = vec![0u8; channels * size * size];
        for c in 0..channels {
            let plane = &pixels[c * height * width..][..height * width];
            let image = image::GrayImage::from_raw(width as u32, height as u32, plane.to_vec())
                .expect("plane length matches");
            let resized = image::imageops::resize(
                &image,
                new_w as u32,
                new_h as u32,
                image::imageops::FilterType::Triangle,
            );
            for y in 0..size {
                for x in 0..size {
                    out[(c * size + y) * size + x] =
                        resized.get_pixel((left + x) as u32, (top + y) as u32)[0];
                }
            }
        }
        out
    }

    #[test]
    fn resizes_to_the_bit_as_the_image_crate_did() {
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        // Shrinking (ImageNet photographs to 224, MNIST to 14 or 10), growing (CIFAR to 40),
        // odd sizes, portrait and landscape, one and three channels, a side already at size.
        let cases = [
            (3, 375, 500, 224),
            (3, 500, 333, 224),
            (3, 400, 400, 224),
            (1, 28, 28, 14),
            (1, 28, 28, 10),
            (3, 32, 32, 40),
            (1, 8, 8, 12),
            (3, 37, 61, 16),
            (1, 61, 37, 23),
            (3, 224, 300, 224),
            (1, 1, 9, 3),
        ];
        for (channels, height, width, size) in cases {
            // Noise on a gradient: every tap's weight shows.
            let pixels: Vec<u8> = (0..channels * height * width)
                .map(|i| ((i % width) * 200 / width) as u8 + rng.gen_range(0..50))
                .collect();
            let ours = resize_center_crop(&pixels, channels, height, width, size);
            let theirs = with_image_crate(&pixels, channels, height, width, size);
            let differ = ours.iter().zip(&theirs).filter(|(a, b)| a != b).count();
            assert_eq!(
                differ,
                0,
                "{channels}x{height}x{width} to {size}: {differ} of {} bytes differ",
                ours.len()
            );
        }
    }
}
