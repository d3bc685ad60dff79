//! The whole MBConv block in inference mode as one op: expand 1x1 -> BN -> ReLU -> depthwise
//! KxK -> BN -> ReLU -> project 1x1 -> BN (+ the input). On a GPU it is one fused kernel whose
//! hidden activations never leave shared memory (kernels/mbconv.cu); on the CPU it is the
//! layers in sequence.

use crate::ops::batch_norm::{batch_norm2d_eval_act, BatchNormConfig};
use crate::ops::conv2d::{conv2d, Conv2dParams};
use crate::ops::elementwise::add;
use crate::tensor::common_device;
use crate::{Device, Error, Result, Tensor};

/// One batch norm in inference mode: `y = (x - running_mean) / sqrt(running_var + eps) * weight + bias`.
#[derive(Clone, Copy, Debug)]
pub struct BnInference<'a> {
    pub weight: &'a Tensor,
    pub bias: &'a Tensor,
    pub running_mean: &'a Tensor,
    pub running_var: &'a Tensor,
    pub eps: f32,
}

/// The weights of one MBConv block.
///
/// # Shapes
/// - `expand`: (hidden, Cin, 1, 1) and its BN over hidden channels
/// - `depthwise`: (hidden, 1, K, K), K odd, and its BN
/// - `project`: (Cout, hidden, 1, 1) and its BN over Cout
#[derive(Clone, Copy, Debug)]
pub struct MbconvWeights<'a> {
    pub expand: (&'a Tensor, BnInference<'a>),
    pub depthwise: (&'a Tensor, BnInference<'a>),
    pub project: (&'a Tensor, BnInference<'a>),
    pub stride: usize,
    /// Adds the input to the output (needs stride 1 and Cin = Cout).
    pub residual: bool,
}

/// The block's shape, checked once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct MbconvDims {
    pub batch: usize,
    pub in_channels: usize,
    pub hidden: usize,
    pub out_channels: usize,
    pub in_size: [usize; 2],
    pub out_size: [usize; 2],
    pub kernel: usize,
}

fn check(x: &Tensor, b: &MbconvWeights) -> Result<MbconvDims> {
    const OP: &str = "mbconv_inference";
    let [batch, cin, h, w] = x.dims4(OP, "input")?;
    let [hidden, e_in, e_kh, e_kw] = b.expand.0.dims4(OP, "expand weight")?;
    if e_in != cin || e_kh != 1 || e_kw != 1 {
        return Err(Error::shape(
            OP,
            "expand weight",
            format!("({hidden}, {cin}, 1, 1)"),
            format!("{:?}", b.expand.0.shape()),
        ));
    }
    let [d_out, d_in, k, k2] = b.depthwise.0.dims4(OP, "depthwise weight")?;
    if d_out != hidden || d_in != 1 || k != k2 || k % 2 == 0 {
        return Err(Error::shape(
            OP,
            "depthwise weight",
            format!("({hidden}, 1, K, K) with K odd"),
            format!("{:?}", b.depthwise.0.shape()),
        ));
    }
    let [cout, p_in, p_kh, p_kw] = b.project.0.dims4(OP, "project weight")?;
    if p_in != hidden || p_kh != 1 || p_kw != 1 {
        return Err(Error::shape(
            OP,
            "project weight",
            format!("(Cout, {hidden}, 1, 1)"),
            format!("{:?}", b.project.0.shape()),
        ));
    }
    for (what, bn, channels) in [
        ("expand", &b.expand.1, hidden),
        ("depthwise", &b.depthwise.1, hidden),
        ("project", &b.project.1, cout),
    ] {
        for (name, t) in [
            ("weight", bn.weight),
            ("bias", bn.bias),
            ("running_mean", bn.running_mean),
            ("running_var", bn.running_var),
        ] {
            t.expect_shape(OP, &format!("{what} BN {name}"), &[channels])?;
        }
    }
    if b.stride == 0 {
        return Err(Error::argument(OP, "stride must be at least 1, got 0"));
    }
    if b.residual && (b.stride != 1 || cin != cout) {
        return Err(Error::argument(OP, format!("a residual needs stride 1 and as many output as input channels, got stride {} and {cin} -> {cout}", b.stride)));
    }
    let out = |n: usize| (n + 2 * (k / 2) - k) / b.stride + 1;
    Ok(MbconvDims {
        batch,
        in_channels: cin,
        hidden,
        out_channels: cout,
        in_size: [h, w],
        out_size: [out(h), out(w)],
        kernel: k,
    })
}

/// Inference-mode MBConv block.
///
/// # Shapes
/// - `x`: (N, Cin, H, W); weights as [`MbconvWeights`]
/// - returns (N, Cout, (H - 1) / stride + 1, (W - 1) / stride + 1)
pub fn mbconv_inference(x: &Tensor, block: &MbconvWeights) -> Result<Tensor> {
    let dims = check(x, block)?;
    let b = block;
    let mut operands = vec![x, b.expand.0, b.depthwise.0, b.project.0];
    for bn in [&b.expand.1, &b.depthwise.1, &b.project.1] {
        operands.extend([bn.weight, bn.bias, bn.running_mean, bn.running_var]);
    }
    match common_device("mbconv_inference", &operands)? {
        Device::Cpu => layer_by_layer(x, block, &dims),
        Device::Cuda(_) => match cuda::fused(x, block, &dims)? {
            Some(y) => Ok(y),
            // Too wide for one block's shared memory: the layers one by one, on the GPU too.
            None => layer_by_layer(x, block, &dims),
        },
    }
}

/// The definition: the three layers, each a separate op.
fn layer_by_layer(x: &Tensor, b: &MbconvWeights, dims: &MbconvDims) -> Result<Tensor> {
    let bn = |t: &Tensor, p: &BnInference, relu: bool| -> Result<Tensor> {
        Ok(batch_norm2d_eval_act(
            t,
            p.weight,
            p.bias,
            p.running_mean,
            p.running_var,
            BatchNormConfig {
                eps: p.eps,
                ..BatchNormConfig::default()
            },
            relu,
        )?
        .0)
    };
    let h = conv2d(x, b.expand.0, Conv2dParams::same(1, 1))?;
    let h = bn(&h, &b.expand.1, true)?;
    let h = conv2d(
        &h,
        b.depthwise.0,
        Conv2dParams::depthwise(dims.hidden, dims.kernel, b.stride),
    )?;
    let h = bn(&h, &b.depthwise.1, true)?;
    let h = conv2d(&h, b.project.0, Conv2dParams::same(1, 1))?;
    let y = bn(&h, &b.project.1, false)?;
    if b.residual {
        add(&y, x)
    } else {
        Ok(y)
    }
}

mod cuda {
    use super::{BnInference, MbconvDims, MbconvWeights};
    use crate::cuda::abi::MbconvShape;
    use crate::cuda::kernels::Kernel;
    use crate::cuda::launch;
    use crate::ops::batch_norm::cuda::eval_affine;
    use crate::{Result, Tensor};
    use cudarc::driver::{CudaSlice, LaunchConfig};

    /// Static shared memory a block may use without opting in to more.
    const SHARED_LIMIT: usize = 48 * 1024;

    /// scale and shift of one inference BN.
    fn affine(bn: &BnInference) -> Result<(CudaSlice<f32>, CudaSlice<f32>)> {
        let a = eval_affine(
            "mbconv_inference",
            bn.weight,
            bn.bias,
            bn.running_mean,
            bn.running_var,
            bn.eps,
        )?;
        Ok((a.scale, a.shift))
    }

    /// The fused kernel, or None when even the smallest tiling does not fit in shared memory.
    pub(super) fn fused(x: &Tensor, b: &MbconvWeights, d: &MbconvDims) -> Result<Option<Tensor>> {
        const OP: &str = "mbconv_inference";
        let xs = x.cuda(OP)?;
        let dev = xs.device.clone();
        let tile = 4usize.min(d.out_size[0].max(d.out_size[1]));
        let halo = (tile - 1) * b.stride + d.kernel;
        let floats =
            |chunk: usize| chunk * halo * halo + chunk * tile * tile + d.out_channels * tile * tile;
        let Some(chunk) = [32usize, 16, 8, 4]
            .into_iter()
            .find(|&c| floats(c) * 4 <= SHARED_LIMIT)
        else {
            return Ok(None);
        };
        let (es, esh) = affine(&b.expand.1)?;
        let (ds, dsh) = affine(&b.depthwise.1)?;
        let (ps, psh) = affine(&b.project.1)?;
        let shape = MbconvShape {
            batch: d.batch,
            in_channels: d.in_channels,
            hidden: d.hidden,
            out_channels: d.out_channels,
            in_height: d.in_size[0],
            in_width: d.in_size[1],
            out_height: d.out_size[0],
            out_width: d.out_size[1],
            kernel: d.kernel,
            stride: b.stride,
            padding: d.kernel / 2,
            tile,
            chunk,
            tiles_y: d.out_size[0].div_ceil(tile),
            tiles_x: d.out_size[1].div_ceil(tile),
            expand: 1,
            residual: b.residual as i32,
        };
        let out_dims = [d.batch, d.out_channels, d.out_size[0], d.out_size[1]];
        let mut y = dev.alloc(out_dims.iter().product())?;
        let cfg = LaunchConfig {
            grid_dim: ((d.batch * shape.tiles_y * shape.tiles_x) as u32, 1, 1),
            block_dim: (256, 1, 1),
            shared_mem_bytes: (floats(chunk) * 4) as u32,
        };
        launch!(
            dev,
            OP,
            Kernel::MbconvInference,
            cfg,
            [
                &shape,
                &xs.slice,
                &b.expand.0.cuda(OP)?.slice,
                &es,
                &esh,
                &b.depthwise.0.cuda(OP)?.slice,
                &ds,
                &dsh,
                &b.project.0.cuda(OP)?.slice,
                &ps,
                &psh,
                &mut y,
            ]
        )?;
        Ok(Some(Tensor::from_cuda(y, dev, &out_dims)))
    }
}
