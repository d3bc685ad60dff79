//! Fully connected layer with bias.

use crate::cpu::gemm::{matmul, threads_for, Mat};
use crate::tensor::common_device;
use crate::{Device, Error, Result, Tensor};

fn check(op: &'static str, x: &Tensor, weight: &Tensor) -> Result<(usize, usize, usize)> {
    let [batch, inputs] = x.dims2(op, "input")?;
    let [outputs, weight_inputs] = weight.dims2(op, "weight")?;
    if weight_inputs != inputs {
        return Err(Error::shape(
            op,
            "weight input features (dim 1)",
            inputs,
            weight_inputs,
        ));
    }
    Ok((batch, inputs, outputs))
}

/// `y = x W^T + b`.
///
/// # Shapes
/// - `x`: (N, In); `weight`: (Out, In); `bias`: (Out,)
/// - returns (N, Out)
pub fn linear(x: &Tensor, weight: &Tensor, bias: &Tensor) -> Result<Tensor> {
    const OP: &str = "linear";
    let (batch, inputs, outputs) = check(OP, x, weight)?;
    bias.expect_shape(OP, "bias", &[outputs])?;
    match common_device(OP, &[x, weight, bias])? {
        Device::Cpu => {
            let mut y: Vec<f32> = bias.cpu_data()?.repeat(batch);
            let threads = threads_for(batch * inputs * outputs);
            matmul(
                &mut y,
                Mat::row_major(x.cpu_data()?, batch, inputs),
                Mat::transposed(weight.cpu_data()?, inputs, outputs),
                true,
                threads,
            );
            Tensor::from_vec(y, &[batch, outputs])
        }
        Device::Cuda(_) => cuda::forward(x, weight, bias, batch, inputs, outputs),
    }
}

/// Gradients of [`linear`]: `dx = dy W`, `dW = dy^T x`, `db = sum over the batch of dy`.
///
/// # Shapes
/// - `x`: (N, In); `weight`: (Out, In); `dy`: (N, Out)
/// - returns (`dx` (N, In), `dweight` (Out, In), `dbias` (Out,))
pub fn linear_backward(
    x: &Tensor,
    weight: &Tensor,
    dy: &Tensor,
) -> Result<(Tensor, Tensor, Tensor)> {
    const OP: &str = "linear_backward";
    let (batch, inputs, outputs) = check(OP, x, weight)?;
    dy.expect_shape(OP, "output gradient", &[batch, outputs])?;
    match common_device(OP, &[x, weight, dy])? {
        Device::Cpu => {
            let (x, w, g) = (x.cpu_data()?, weight.cpu_data()?, dy.cpu_data()?);
            let threads = threads_for(batch * inputs * outputs);
            let mut dx = vec![0.0f32; batch * inputs];
            matmul(
                &mut dx,
                Mat::row_major(g, batch, outputs),
                Mat::row_major(w, outputs, inputs),
                false,
                threads,
            );
            let mut dw = vec![0.0f32; outputs * inputs];
            matmul(
                &mut dw,
                Mat::transposed(g, outputs, batch),
                Mat::row_major(x, batch, inputs),
                false,
                threads,
            );
            let mut db = vec![0.0f64; outputs];
            for row in g.chunks(outputs) {
                for (d, &v) in db.iter_mut().zip(row) {
                    *d += v as f64;
                }
            }
            let db: Vec<f32> = db.into_iter().map(|v| v as f32).collect();
            Ok((
                Tensor::from_vec(dx, &[batch, inputs])?,
                Tensor::from_vec(dw, &[outputs, inputs])?,
                Tensor::from_vec(db, &[outputs])?,
            ))
        }
        Device::Cuda(_) => cuda::backward(x, weight, dy, batch, inputs, outputs),
    }
}

mod cuda {
    use crate::cuda::abi::GemmShape;
    use crate::cuda::gemm::gemm;
    use crate::cuda::kernels::Kernel;
    use crate::cuda::{grid_1d, launch};
    use crate::{Result, Tensor};

    /// `y = bias` broadcast over the rows, then `y += x W^T`.
    pub(super) fn forward(
        x: &Tensor,
        w: &Tensor,
        b: &Tensor,
        batch: usize,
        inputs: usize,
        outputs: usize,
    ) -> Result<Tensor> {
        const OP: &str = "linear";
        let (xs, ws, bs) = (x.cuda(OP)?, w.cuda(OP)?, b.cuda(OP)?);
        let dev = &xs.device;
        let mut y = dev.alloc(batch * outputs)?;
        launch!(
            dev,
            OP,
            Kernel::BroadcastRows,
            grid_1d(batch * outputs),
            [&bs.slice, &mut y, &batch, &outputs]
        )?;
        // y (batch x outputs) += x (batch x inputs) . W^T, W stored outputs x inputs
        let shape = GemmShape::row_major(batch, outputs, inputs)
            .with_b_transposed()
            .accumulating();
        gemm(dev, shape, &xs.slice, &ws.slice, &mut y)?;
        Ok(Tensor::from_cuda(y, dev.clone(), &[batch, outputs]))
    }

    /// `dx = dy W`, `dW = dy^T x`, `db` = column sums of `dy`.
    pub(super) fn backward(
        x: &Tensor,
        w: &Tensor,
        dy: &Tensor,
        batch: usize,
        inputs: usize,
        outputs: usize,
    ) -> Result<(Tensor, Tensor, Tensor)> {
        const OP: &str = "linear_backward";
        let (xs, ws, gs) = (x.cuda(OP)?, w.cuda(OP)?, dy.cuda(OP)?);
        let dev = &xs.device;
        let mut dx = dev.alloc(batch * inputs)?;
        // dx (batch x inputs) = dy (batch x outputs) . W (outputs x inputs)
        let dx_shape = GemmShape::row_major(batch, inputs, outputs);
        gemm(dev, dx_shape, &gs.slice, &ws.slice, &mut dx)?;
        let mut dw = dev.alloc(outputs * inputs)?;
        // dW (outputs x inputs) = dy^T (outputs x batch) . x (batch x inputs)
        let dw_shape = GemmShape::row_major(outputs, inputs, batch).with_a_transposed();
        gemm(dev, dw_shape, &gs.slice, &xs.slice, &mut dw)?;
        let mut db = dev.alloc(outputs)?;
        launch!(
            dev,
            OP,
            Kernel::SumRows,
            grid_1d(outputs),
            [&gs.slice, &mut db, &batch, &outputs]
        )?;
        Ok((
            Tensor::from_cuda(dx, dev.clone(), &[batch, inputs]),
            Tensor::from_cuda(dw, dev.clone(), &[outputs, inputs]),
            Tensor::from_cuda(db, dev.clone(), &[outputs]),
        ))
    }
}
