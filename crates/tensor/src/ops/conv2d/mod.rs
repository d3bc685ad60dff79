//! 2-D convolution without bias: standard, grouped, depthwise and 1x1, forward and backward.

mod cpu;
mod cuda;

use crate::tensor::common_device;
use crate::{Device, Error, Normalized, Result, Tensor};

/// How a convolution slides: the same stride and zero padding on both axes, and the group count.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dParams {
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl Conv2dParams {
    /// Stride `stride`, padding `kernel / 2` ("same" for odd kernels), one group.
    pub fn same(kernel: usize, stride: usize) -> Self {
        Conv2dParams {
            stride,
            padding: kernel / 2,
            groups: 1,
        }
    }

    /// Depthwise over `channels`: one group per channel.
    pub fn depthwise(channels: usize, kernel: usize, stride: usize) -> Self {
        Conv2dParams {
            stride,
            padding: kernel / 2,
            groups: channels,
        }
    }
}

/// Output size of one axis: `(input + 2 padding - kernel) / stride + 1`.
pub fn conv_output_size(
    input: usize,
    kernel: usize,
    stride: usize,
    padding: usize,
) -> Option<usize> {
    let padded = input + 2 * padding;
    if stride == 0 || padded < kernel {
        return None;
    }
    Some((padded - kernel) / stride + 1)
}

/// Every size one convolution needs, checked once. `#[repr(C)]` so that a GPU kernel can take
/// the same struct by value.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Conv2dShape {
    pub batch: usize,
    pub in_channels: usize,
    pub in_height: usize,
    pub in_width: usize,
    pub out_channels: usize,
    pub out_height: usize,
    pub out_width: usize,
    pub kernel_height: usize,
    pub kernel_width: usize,
    pub stride: usize,
    pub padding: usize,
    pub groups: usize,
}

impl Conv2dShape {
    /// Checks `x` (N, Cin, H, W) against `weight` (Cout, Cin/groups, KH, KW) and `params`.
    pub fn new(x: &Tensor, weight: &Tensor, params: Conv2dParams) -> Result<Conv2dShape> {
        const OP: &str = "conv2d";
        let [batch, in_channels, in_height, in_width] = x.dims4(OP, "input")?;
        let [out_channels, group_in, kernel_height, kernel_width] = weight.dims4(OP, "weight")?;
        let Conv2dParams {
            stride,
            padding,
            groups,
        } = params;
        if stride == 0 {
            return Err(Error::argument(OP, "stride must be at least 1, got 0"));
        }
        if groups == 0 || in_channels % groups != 0 || out_channels % groups != 0 {
            return Err(Error::argument(
                OP,
                format!("groups {groups} must divide input channels {in_channels} and output channels {out_channels}"),
            ));
        }
        if group_in != in_channels / groups {
            return Err(Error::shape(
                OP,
                "weight input channels (dim 1) = input channels / groups",
                in_channels / groups,
                group_in,
            ));
        }
        let out_height = conv_output_size(in_height, kernel_height, stride, padding);
        let out_width = conv_output_size(in_width, kernel_width, stride, padding);
        let (Some(out_height), Some(out_width)) = (out_height, out_width) else {
            return Err(Error::shape(
                OP,
                format!("padded input (padding {padding}) at least the kernel"),
                format!("{kernel_height}x{kernel_width}"),
                format!("{in_height}x{in_width}"),
            ));
        };
        Ok(Conv2dShape {
            batch,
            in_channels,
            in_height,
            in_width,
            out_channels,
            out_height,
            out_width,
            kernel_height,
            kernel_width,
            stride,
            padding,
            groups,
        })
    }

    pub fn input_dims(&self) -> [usize; 4] {
        [self.batch, self.in_channels, self.in_height, self.in_width]
    }

    pub fn output_dims(&self) -> [usize; 4] {
        [
            self.batch,
            self.out_channels,
            self.out_height,
            self.out_width,
        ]
    }

    pub fn weight_dims(&self) -> [usize; 4] {
        [
            self.out_channels,
            self.in_channels / self.groups,
            self.kernel_height,
            self.kernel_width,
        ]
    }

    /// One group per channel, one output channel per input channel.
    pub fn is_depthwise(&self) -> bool {
        self.groups == self.in_channels && self.out_channels == self.in_channels && self.groups > 1
    }

    /// A 1x1, stride-1, unpadded, ungrouped convolution: a matrix product per image.
    pub fn is_pointwise(&self) -> bool {
        self.kernel_height == 1
            && self.kernel_width == 1
            && self.stride == 1
            && self.padding == 0
            && self.groups == 1
    }

    /// Multiply-accumulates of the forward pass.
    pub fn madds(&self) -> usize {
        self.batch
            * self.out_channels
            * self.out_height
            * self.out_width
            * (self.in_channels / self.groups)
            * self.kernel_height
            * self.kernel_width
    }
}

/// Convolution forward.
///
/// # Shapes
/// - `x`: (N, Cin, H, W); `weight`: (Cout, Cin / groups, KH, KW)
/// - returns (N, Cout, (H + 2p - KH) / s + 1, (W + 2p - KW) / s + 1)
pub fn conv2d(x: &Tensor, weight: &Tensor, params: Conv2dParams) -> Result<Tensor> {
    let shape = Conv2dShape::new(x, weight, params)?;
    match common_device("conv2d", &[x, weight])? {
        Device::Cpu => {
            let y = cpu::forward(x.cpu_data()?, weight.cpu_data()?, &shape);
            Tensor::from_vec(y, &shape.output_dims())
        }
        Device::Cuda(_) => cuda::forward(x, weight, &shape),
    }
}

/// Convolution backward: the gradients of the input and of the weight.
///
/// # Shapes
/// - `x`, `weight` as in [`conv2d`]; `dy`: the output's shape
/// - returns (`dx` shaped as `x`, `dweight` shaped as `weight`)
pub fn conv2d_backward(
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    params: Conv2dParams,
) -> Result<(Tensor, Tensor)> {
    let shape = Conv2dShape::new(x, weight, params)?;
    dy.expect_shape("conv2d_backward", "output gradient", &shape.output_dims())?;
    match common_device("conv2d_backward", &[x, weight, dy])? {
        Device::Cpu => {
            let (dx, dw) = cpu::backward(x.cpu_data()?, weight.cpu_data()?, dy.cpu_data()?, &shape);
            Ok((
                Tensor::from_vec(dx, &shape.input_dims())?,
                Tensor::from_vec(dw, &shape.weight_dims())?,
            ))
        }
        Device::Cuda(_) => Ok((
            cuda::backward_input(weight, dy, &shape)?,
            cuda::backward_weight(x, dy, &shape)?,
        )),
    }
}

/// Convolution backward for the weight only (the first layer of a network needs no `dx`).
///
/// # Shapes
/// as [`conv2d_backward`]; returns `dweight` shaped as `weight`
pub fn conv2d_backward_weight(
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
    params: Conv2dParams,
) -> Result<Tensor> {
    let shape = Conv2dShape::new(x, weight, params)?;
    dy.expect_shape(
        "conv2d_backward_weight",
        "output gradient",
        &shape.output_dims(),
    )?;
    match common_device("conv2d_backward_weight", &[x, weight, dy])? {
        Device::Cpu => {
            let dw = cpu::backward_weight(x.cpu_data()?, dy.cpu_data()?, &shape);
            Tensor::from_vec(dw, &shape.weight_dims())
        }
        Device::Cuda(_) => cuda::backward_weight(x, dy, &shape),
    }
}

/// The map of a host [`Normalized`], as the CPU kernels read it.
fn host_map(input: &Normalized) -> Result<cpu::InputMap<'_>> {
    Ok(cpu::InputMap {
        scale: input.scale.cpu_data()?,
        shift: input.shift.cpu_data()?,
        relu: input.relu,
    })
}

/// [`conv2d`] of a batch norm's output that was never written out: on the CPU a depthwise
/// convolution applies the map as it reads its input (the MBConv block's depthwise layer reads
/// its expansion's batch norm this way), and so does a 1x1 convolution on AVX-512 with planes of
/// 16+ pixels (the projection reads the depthwise batch norm); otherwise the map is written out
/// first.
///
/// # Shapes
/// as [`conv2d`], with `input.x` as `x`
pub fn conv2d_normalized(
    input: &Normalized,
    weight: &Tensor,
    params: Conv2dParams,
) -> Result<Tensor> {
    let shape = Conv2dShape::new(&input.x, weight, params)?;
    match common_device("conv2d", &[&input.x, weight, &input.scale, &input.shift])? {
        Device::Cpu if cpu::reads_mapped(&shape) => {
            let y = cpu::forward_mapped(
                input.x.cpu_data()?,
                host_map(input)?,
                weight.cpu_data()?,
                &shape,
            );
            Tensor::from_vec(y, &shape.output_dims())
        }
        _ => conv2d(&input.materialize()?, weight, params),
    }
}

/// [`conv2d_backward`] of [`conv2d_normalized`]: `dx` is the gradient of the normalised input
/// (what the batch norm's backward takes as its output gradient).
///
/// # Shapes
/// as [`conv2d_backward`], with `input.x` as `x`
pub fn conv2d_normalized_backward(
    input: &Normalized,
    weight: &Tensor,
    dy: &Tensor,
    params: Conv2dParams,
) -> Result<(Tensor, Tensor)> {
    let shape = Conv2dShape::new(&input.x, weight, params)?;
    dy.expect_shape("conv2d_backward", "output gradient", &shape.output_dims())?;
    match common_device(
        "conv2d_backward",
        &[&input.x, weight, dy, &input.scale, &input.shift],
    )? {
        Device::Cpu if cpu::reads_mapped(&shape) => {
            let (dx, dw) = cpu::backward_mapped(
                input.x.cpu_data()?,
                host_map(input)?,
                weight.cpu_data()?,
                dy.cpu_data()?,
                &shape,
            );
            Ok((
                Tensor::from_vec(dx, &shape.input_dims())?,
                Tensor::from_vec(dw, &shape.weight_dims())?,
            ))
        }
        _ => conv2d_backward(&input.materialize()?, weight, dy, params),
    }
}
