//! MAdds and parameter counts, as `shared/spec/ARCH.md` defines them: multiply-accumulates of
//! every convolution and the classifier; every learnable parameter (BN buffers excluded).

use eatnas_tensor::conv_output_size;
use serde::Serialize;

use crate::arch::{Arch, Op};
use crate::{Error, Result};

/// The counts of one row of the network (the stem, one block, or the head).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct PartCount {
    pub name: String,
    /// Output (C, H, W) of the part; for the head, (classes, 1, 1).
    pub output: [usize; 3],
    pub madds: u64,
    pub params: u64,
}

/// The counts of a whole network at one resolution.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Counts {
    pub parts: Vec<PartCount>,
    pub madds: u64,
    pub params: u64,
}

/// Counts a convolution + BN: returns (madds, params, output height, output width).
fn conv_bn(
    cin: usize,
    cout: usize,
    groups: usize,
    kernel: usize,
    stride: usize,
    h: usize,
    w: usize,
) -> (u64, u64, usize, usize) {
    let oh = conv_output_size(h, kernel, stride, kernel / 2).unwrap_or(0);
    let ow = conv_output_size(w, kernel, stride, kernel / 2).unwrap_or(0);
    let weights = (cout * (cin / groups) * kernel * kernel) as u64;
    (
        weights * (oh * ow) as u64,
        weights + 2 * cout as u64,
        oh,
        ow,
    )
}

impl Counts {
    /// Counts `arch` on `in_channels` x `resolution` x `resolution` inputs with `classes` outputs.
    pub fn new(
        arch: &Arch,
        in_channels: usize,
        resolution: usize,
        classes: usize,
    ) -> Result<Counts> {
        if in_channels == 0 || resolution == 0 || classes == 0 {
            return Err(Error::Network(format!(
                "counting needs positive input channels, resolution and classes; got {in_channels}, {resolution}, {classes}"
            )));
        }
        let mut parts = Vec::new();
        let (mut h, mut w) = (resolution, resolution);
        let stem = &arch.stem;
        let (madds, params, oh, ow) = conv_bn(
            in_channels,
            stem.channels,
            1,
            stem.kernel,
            stem.stride,
            h,
            w,
        );
        (h, w) = (oh, ow);
        parts.push(PartCount {
            name: "stem".into(),
            output: [stem.channels, h, w],
            madds,
            params,
        });

        for (b, (block, layers)) in arch.blocks.iter().zip(arch.layers()).enumerate() {
            let (mut madds, mut params) = (0u64, 0u64);
            for layer in &layers {
                let mut add = |(m, p, oh, ow): (u64, u64, usize, usize)| {
                    madds += m;
                    params += p;
                    (oh, ow)
                };
                let (cin, cout, k, s) = (
                    layer.in_channels,
                    layer.out_channels,
                    layer.kernel,
                    layer.stride,
                );
                (h, w) = match layer.op.expansion() {
                    Some(t) => {
                        let hidden = cin * t;
                        let (eh, ew) = add(conv_bn(cin, hidden, 1, 1, 1, h, w));
                        let (dh, dw) = add(conv_bn(hidden, hidden, hidden, k, s, eh, ew));
                        add(conv_bn(hidden, cout, 1, 1, 1, dh, dw))
                    }
                    None => {
                        debug_assert_eq!(layer.op, Op::Sep);
                        let (dh, dw) = add(conv_bn(cin, cin, cin, k, s, h, w));
                        add(conv_bn(cin, cout, 1, 1, 1, dh, dw))
                    }
                };
            }
            parts.push(PartCount {
                name: format!(
                    "blocks.{b} {} k{} x{} w{:?}",
                    block.op.name(),
                    block.kernel,
                    block.layers,
                    block.width
                ),
                output: [block.out_channels(), h, w],
                madds,
                params,
            });
        }

        let head = arch.head.channels;
        let (conv_madds, conv_params, _, _) = conv_bn(arch.last_channels(), head, 1, 1, 1, h, w);
        let classifier = (head * classes) as u64;
        parts.push(PartCount {
            name: "head".into(),
            output: [classes, 1, 1],
            madds: conv_madds + classifier,
            params: conv_params + classifier + classes as u64,
        });
        let madds = parts.iter().map(|p| p.madds).sum();
        let params = parts.iter().map(|p| p.params).sum();
        Ok(Counts {
            parts,
            madds,
            params,
        })
    }
}

/// An estimate of the memory one training step of `arch` takes at `batch` images of
/// `in_channels` x `resolution` x `resolution`, in bytes: every convolution's output kept for
/// the backward pass and the activation read from it (two float32 tensors per layer of the
/// network, an upper bound since some activations are applied as the next layer reads), plus
/// the parameters with their gradients and momenta. It is checked before training starts, so
/// that a network that cannot fit is refused with the numbers instead of failing to allocate.
pub fn training_bytes(
    arch: &Arch,
    in_channels: usize,
    resolution: usize,
    classes: usize,
    batch: usize,
) -> Result<u64> {
    let counts = Counts::new(arch, in_channels, resolution, classes)?;
    // A convolution with padding kernel / 2 gives ceil(h / stride).
    let side = |h: usize, stride: usize| h.div_ceil(stride);
    let mut h = side(resolution, arch.stem.stride);
    // Elements per image of every convolution's output.
    let mut elements = (arch.stem.channels * h * h) as u64;
    for layer in arch.layers().iter().flatten() {
        let out = side(h, layer.stride);
        elements += match layer.op.expansion() {
            Some(t) => {
                let hidden = (layer.in_channels * t) as u64;
                hidden * (h * h) as u64 + hidden * (out * out) as u64
            }
            None => (layer.in_channels * out * out) as u64,
        } + (layer.out_channels * out * out) as u64;
        h = out;
    }
    elements += (arch.head.channels * h * h) as u64;
    let activations = 2 * 4 * elements * batch as u64;
    Ok(activations + 3 * 4 * counts.params)
}

#[cfg(test)]
mod tests {
    use super::training_bytes;
    use crate::Arch;

    #[test]
    fn training_memory_counts_each_layers_outputs_per_image() {
        // Stem 4 channels at 8x8 (stride 1), one sep layer 4 -> 8 at stride 2, head 16 at 4x4.
        let arch = Arch::from_json(
            r#"{"format":"eatnas-arch/1","name":"t","stem":{"channels":4,"kernel":3,"stride":1},
            "blocks":[{"op":"sep","kernel":3,"skip":false,"layers":1,"width":1.0,"base_channels":8,"stride":2}],
            "head":{"channels":16}}"#,
            "t",
        )
        .unwrap();
        let per_image = 4 * 8 * 8 + (4 * 4 * 4 + 8 * 4 * 4) + 16 * 4 * 4;
        let params = crate::Counts::new(&arch, 1, 8, 10).unwrap().params;
        for batch in [1, 32] {
            assert_eq!(
                training_bytes(&arch, 1, 8, 10, batch).unwrap(),
                2 * 4 * per_image * batch as u64 + 3 * 4 * params,
                "batch {batch}"
            );
        }
    }
}
