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
