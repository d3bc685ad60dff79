//! Elastic weight inheritance: a child network starts from a trained parent's weights wherever
//! its tensors correspond, whatever widths, depths, operations and kernels the two have.
//!
//! Correspondence is by parameter name (ARCH.md), with layer `l` of a block taking the parent's
//! layer `l`, or its last layer where the child's block is deeper. A tensor of the same shape is
//! copied. One of another shape takes the overlap: the leading output and input channels, and
//! the centre of a larger kernel. Where the child is larger, the parent's function is kept: the
//! weights from new input channels and the new kernel ring are zero, so what the parent computed
//! still flows through unchanged, while new output channels (and new batch-norm channels) keep the
//! child's fresh initialisation, so that training can use them. The classifier is inherited only
//! when the class counts agree.

use std::collections::BTreeMap;

use eatnas_tensor::{Device, Tensor};
use serde::{Deserialize, Serialize};

use crate::arch::Arch;
use crate::Result;

/// How a child's tensors were filled from a parent's.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inheritance {
    /// Tensors copied whole (same shape).
    pub copied: usize,
    /// Tensors cut or padded to the child's shape.
    pub reshaped: usize,
    /// Tensors with no counterpart in the parent, left at the child's initialisation.
    pub fresh: usize,
}

impl Inheritance {
    /// Every tensor copied whole: the child is the parent.
    pub fn exact(&self) -> bool {
        self.reshaped == 0 && self.fresh == 0
    }
}

/// The parent's name for the child's tensor `name`: block layers beyond the parent's depth take
/// its last layer. `None` where the parent has no such block.
fn counterpart(name: &str, parent: &Arch) -> Option<String> {
    let Some(rest) = name.strip_prefix("blocks.") else {
        return Some(name.to_string());
    };
    let mut parts = rest.splitn(3, '.');
    let block: usize = parts.next()?.parse().ok()?;
    let layer: usize = parts.next()?.parse().ok()?;
    let tail = parts.next()?;
    let depth = parent.blocks.get(block)?.layers;
    Some(format!("blocks.{block}.{}.{tail}", layer.min(depth - 1)))
}

/// `child`'s tensors (the child network's freshly initialised state) with every one that has a
/// counterpart in `parent` (the parent network's state, of architecture `parent_arch`) taken from
/// it as the module documentation says. The result is on the host.
pub fn inherit(
    parent_arch: &Arch,
    parent: &BTreeMap<String, Tensor>,
    child: &BTreeMap<String, Tensor>,
) -> Result<(BTreeMap<String, Tensor>, Inheritance)> {
    let mut inheritance = Inheritance::default();
    let mut out = BTreeMap::new();
    let classes =
        |state: &BTreeMap<String, Tensor>| state.get("classifier.bias").map(|b| b.shape().to_vec());
    let same_classes = classes(parent) == classes(child);
    for (name, fresh) in child {
        let source = counterpart(name, parent_arch)
            .filter(|_| same_classes || !name.starts_with("classifier."))
            .and_then(|n| parent.get(&n))
            .filter(|p| p.shape().len() == fresh.shape().len());
        let value = match source {
            Some(p) if p.shape() == fresh.shape() => {
                inheritance.copied += 1;
                p.to_device(Device::Cpu)?
            }
            Some(p) => {
                inheritance.reshaped += 1;
                let values = fit(&p.to_vec()?, p.shape(), &fresh.to_vec()?, fresh.shape());
                Tensor::from_vec(values, fresh.shape())?
            }
            None => {
                inheritance.fresh += 1;
                fresh.to_device(Device::Cpu)?
            }
        };
        out.insert(name.clone(), value);
    }
    Ok((out, inheritance))
}

/// A parent tensor of shape `ps` fitted to shape `cs` (same rank): output rows (dim 0) the
/// parent has take its values over the overlap, with zeros where the child's input channels
/// (dim 1) or kernel (dims 2, 3; centred) extend beyond the parent's; rows beyond the parent's
/// keep `fresh`.
fn fit(parent: &[f32], ps: &[usize], fresh: &[f32], cs: &[usize]) -> Vec<f32> {
    let rank = cs.len();
    let strides = |shape: &[usize]| {
        let mut s = vec![1; shape.len()];
        for d in (0..shape.len().saturating_sub(1)).rev() {
            s[d] = s[d + 1] * shape[d + 1];
        }
        s
    };
    let (pstride, cstride) = (strides(ps), strides(cs));
    let mut out = fresh.to_vec();
    let mut index = vec![0usize; rank];
    for (flat, value) in out.iter_mut().enumerate() {
        let mut rem = flat;
        for d in 0..rank {
            index[d] = rem / cstride[d];
            rem %= cstride[d];
        }
        if index[0] >= ps[0] {
            continue; // A new output row: fresh.
        }
        let mut source = Some(index[0] * pstride[0]);
        for d in 1..rank {
            // Kernel dimensions align centres; channel dimensions align their starts.
            let offset = if d >= 2 {
                (ps[d] as isize - cs[d] as isize) / 2
            } else {
                0
            };
            let p = index[d] as isize + offset;
            source = source.filter(|_| p >= 0 && (p as usize) < ps[d]);
            source = source.map(|s| s + p.max(0) as usize * pstride[d]);
        }
        *value = source.map_or(0.0, |s| parent[s]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::{fit, inherit};
    use crate::{Arch, Mode, Network};
    use eatnas_tensor::Tensor;

    /// A three-block network: sep, mb3 (two layers), mb6, at 8 channels and up.
    fn arch(json_blocks: &str) -> Arch {
        let text = format!(
            r#"{{"format": "eatnas-arch/1", "name": "t", "stem": {{"channels": 8, "kernel": 3, "stride": 1}},
               "blocks": [{json_blocks}], "head": {{"channels": 32}}}}"#
        );
        Arch::from_json(&text, "test").unwrap()
    }

    const PARENT: &str = r#"
        {"op": "sep", "kernel": 3, "skip": false, "layers": 1, "width": 1.0, "base_channels": 8, "stride": 1},
        {"op": "mb3", "kernel": 3, "skip": true, "layers": 2, "width": 1.0, "base_channels": 16, "stride": 2},
        {"op": "mb6", "kernel": 5, "skip": false, "layers": 1, "width": 1.0, "base_channels": 24, "stride": 2}"#;

    /// Logits of `net` in inference mode on a fixed batch.
    fn logits(net: &mut Network) -> Vec<f32> {
        let x: Vec<f32> = (0..2 * 3 * 12 * 12)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let x = Tensor::from_vec(x, &[2, 3, 12, 12]).unwrap();
        net.forward(&x, Mode::Eval).unwrap().to_vec().unwrap()
    }

    /// A parent with non-trivial batch-norm statistics: a few training-mode passes.
    fn parent() -> Network {
        let mut net = Network::new(&arch(PARENT), 3, 10, 1).unwrap();
        for _ in 0..3 {
            logits(&mut net);
            let x: Vec<f32> = (0..4 * 3 * 12 * 12)
                .map(|i| ((i * 13 % 97) as f32 / 40.0) - 1.2)
                .collect();
            net.forward(&Tensor::from_vec(x, &[4, 3, 12, 12]).unwrap(), Mode::Train)
                .unwrap();
        }
        net
    }

    fn child_of(parent: &mut Network, blocks: &str) -> (Network, super::Inheritance) {
        let mut child = Network::new(&arch(blocks), 3, 10, 99).unwrap();
        let parent_state = parent.state();
        let (values, inheritance) = inherit(parent.arch(), &parent_state, &child.state()).unwrap();
        child.load(&values).unwrap();
        (child, inheritance)
    }

    fn max_difference(a: &[f32], b: &[f32]) -> f32 {
        a.iter()
            .zip(b)
            .map(|(x, y)| (x - y).abs())
            .fold(0.0, f32::max)
    }

    #[test]
    fn an_identical_child_is_the_parent() {
        let mut parent = parent();
        let (mut child, inheritance) = child_of(&mut parent, PARENT);
        assert!(inheritance.exact(), "{inheritance:?}");
        assert_eq!(logits(&mut child), logits(&mut parent));
    }

    #[test]
    fn wider_blocks_more_expansion_and_larger_kernels_keep_the_parents_function() {
        let mut parent = parent();
        // Block 0 wider (8 -> 12 channels, no skip either way); block 1 mb3 -> mb6 and its
        // kernel 3 -> 7; block 2 wider (24 -> 36, and so the head's input).
        let grown = r#"
            {"op": "sep", "kernel": 3, "skip": false, "layers": 1, "width": 1.5, "base_channels": 8, "stride": 1},
            {"op": "mb6", "kernel": 7, "skip": true, "layers": 2, "width": 1.0, "base_channels": 16, "stride": 2},
            {"op": "mb6", "kernel": 5, "skip": false, "layers": 1, "width": 1.5, "base_channels": 24, "stride": 2}"#;
        let (mut child, inheritance) = child_of(&mut parent, grown);
        assert_eq!(inheritance.fresh, 0, "{inheritance:?}");
        assert!(inheritance.reshaped > 0, "{inheritance:?}");
        let difference = max_difference(&logits(&mut child), &logits(&mut parent));
        assert!(
            difference < 1e-4,
            "the grown child's logits differ by {difference}"
        );
    }

    #[test]
    fn deeper_narrower_and_other_operations_inherit_what_corresponds() {
        let mut parent = parent();
        // Block 1 three layers deep (layer 2 repeats layer 1), block 2 a sep (its depthwise
        // corresponds, its pointwise has no counterpart), block 0 narrower.
        let other = r#"
            {"op": "sep", "kernel": 3, "skip": false, "layers": 1, "width": 0.5, "base_channels": 8, "stride": 1},
            {"op": "mb3", "kernel": 3, "skip": true, "layers": 3, "width": 1.0, "base_channels": 16, "stride": 2},
            {"op": "sep", "kernel": 5, "skip": false, "layers": 1, "width": 1.0, "base_channels": 24, "stride": 2}"#;
        let (mut child, inheritance) = child_of(&mut parent, other);
        let state = child.state();
        let parent_state = parent.state();
        // The repeated layer is the parent's last layer of that block.
        let repeat = state["blocks.1.2.project.conv.weight"].to_vec().unwrap();
        let last = parent_state["blocks.1.1.project.conv.weight"]
            .to_vec()
            .unwrap();
        assert_eq!(repeat, last);
        // sep pointwise: conv weight and the four batch-norm tensors are fresh.
        assert_eq!(inheritance.fresh, 5, "{inheritance:?}");
        let fresh = Network::new(child.arch(), 3, 10, 99).unwrap().state();
        assert_eq!(
            state["blocks.2.0.pointwise.conv.weight"].to_vec().unwrap(),
            fresh["blocks.2.0.pointwise.conv.weight"].to_vec().unwrap()
        );
        assert!(logits(&mut child).iter().all(|v| v.is_finite()));
    }

    #[test]
    fn another_class_count_leaves_the_classifier_fresh() {
        let mut parent = parent();
        let mut child = Network::new(parent.arch(), 3, 7, 99).unwrap();
        let fresh = child.state();
        let parent_state = parent.state();
        let (values, inheritance) = inherit(parent.arch(), &parent_state, &fresh).unwrap();
        assert_eq!(
            inheritance.fresh, 2,
            "classifier weight and bias: {inheritance:?}"
        );
        assert_eq!(
            values["classifier.weight"].to_vec().unwrap(),
            fresh["classifier.weight"].to_vec().unwrap()
        );
        child.load(&values).unwrap();
    }

    #[test]
    fn a_smaller_kernel_takes_the_centre_and_a_larger_one_is_zero_padded() {
        let parent: Vec<f32> = (1..=9).map(|v| v as f32).collect(); // [1, 1, 3, 3]
        assert_eq!(
            fit(&parent, &[1, 1, 3, 3], &[7.0], &[1, 1, 1, 1]),
            vec![5.0]
        );
        let grown = fit(&parent, &[1, 1, 3, 3], &[9.0; 25], &[1, 1, 5, 5]);
        #[rustfmt::skip]
        let expected = vec![
            0.0, 0.0, 0.0, 0.0, 0.0,
            0.0, 1.0, 2.0, 3.0, 0.0,
            0.0, 4.0, 5.0, 6.0, 0.0,
            0.0, 7.0, 8.0, 9.0, 0.0,
            0.0, 0.0, 0.0, 0.0, 0.0,
        ];
        assert_eq!(grown, expected);
    }

    #[test]
    fn channels_take_the_leading_ones_new_inputs_are_zero_and_new_outputs_fresh() {
        // Parent [2 out, 2 in]; child [3 out, 3 in] and [1 out, 1 in].
        let parent = [1.0, 2.0, 3.0, 4.0];
        let grown = fit(&parent, &[2, 2], &[9.0; 9], &[3, 3]);
        assert_eq!(grown, vec![1.0, 2.0, 0.0, 3.0, 4.0, 0.0, 9.0, 9.0, 9.0]);
        assert_eq!(fit(&parent, &[2, 2], &[9.0], &[1, 1]), vec![1.0]);
        // A vector (batch norm): the leading channels, then fresh ones.
        assert_eq!(fit(&[1.0, 2.0], &[2], &[5.0; 3], &[3]), vec![1.0, 2.0, 5.0]);
    }
}
