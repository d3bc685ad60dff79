//! Bad operands get an error that names the problem; no op panics.

use eatnas_tensor::*;

fn zeros(shape: &[usize]) -> Tensor {
    Tensor::zeros(shape, Device::Cpu).unwrap()
}

fn message<T: std::fmt::Debug>(result: Result<T>) -> String {
    result.expect_err("expected an error").to_string()
}

#[test]
fn shape_and_argument_errors_name_the_problem() {
    let p = Conv2dParams {
        stride: 1,
        padding: 1,
        groups: 1,
    };
    let cases = [
        (
            message(conv2d(&zeros(&[2, 3, 8, 8]), &zeros(&[4, 5, 3, 3]), p)),
            "weight input channels (dim 1) = input channels / groups: expected 3, got 5",
        ),
        (
            message(conv2d(&zeros(&[3, 8, 8]), &zeros(&[4, 3, 3, 3]), p)),
            "input rank: expected 4 (N, C, H, W), got [3, 8, 8]",
        ),
        (
            message(conv2d(
                &zeros(&[1, 6, 8, 8]),
                &zeros(&[4, 2, 3, 3]),
                Conv2dParams { groups: 4, ..p },
            )),
            "groups 4 must divide input channels 6",
        ),
        (
            message(conv2d(
                &zeros(&[1, 3, 8, 8]),
                &zeros(&[4, 3, 3, 3]),
                Conv2dParams { stride: 0, ..p },
            )),
            "stride must be at least 1",
        ),
        (
            message(conv2d(&zeros(&[1, 3, 2, 2]), &zeros(&[4, 3, 7, 7]), p)),
            "padded input (padding 1) at least the kernel",
        ),
        (
            message(conv2d_backward(
                &zeros(&[1, 3, 8, 8]),
                &zeros(&[4, 3, 3, 3]),
                &zeros(&[1, 4, 7, 8]),
                p,
            )),
            "output gradient shape: expected [1, 4, 8, 8], got [1, 4, 7, 8]",
        ),
        (
            message(batch_norm2d_train(
                &zeros(&[2, 3, 4, 4]),
                &zeros(&[4]),
                &zeros(&[3]),
                &mut zeros(&[3]),
                &mut zeros(&[3]),
                BatchNormConfig::default(),
            )),
            "weight shape: expected [3], got [4]",
        ),
        (
            message(batch_norm2d_train(
                &zeros(&[1, 3, 1, 1]),
                &zeros(&[3]),
                &zeros(&[3]),
                &mut zeros(&[3]),
                &mut zeros(&[3]),
                BatchNormConfig::default(),
            )),
            "more than one value per channel",
        ),
        (
            message(linear(&zeros(&[2, 5]), &zeros(&[3, 4]), &zeros(&[3]))),
            "weight input features (dim 1): expected 5, got 4",
        ),
        (
            message(linear(&zeros(&[2, 4]), &zeros(&[3, 4]), &zeros(&[2]))),
            "bias shape: expected [3], got [2]",
        ),
        (
            message(softmax_cross_entropy(&zeros(&[2, 3]), &[0, 3], 0.0)),
            "label 3 of row 1 is out of range: expected below 3 classes",
        ),
        (
            message(softmax_cross_entropy(&zeros(&[2, 3]), &[0], 0.0)),
            "label count (one per row of logits): expected 2, got 1",
        ),
        (
            message(softmax_cross_entropy(&zeros(&[2, 3]), &[0, 1], 1.5)),
            "label smoothing 1.5 must lie in [0, 1)",
        ),
        (
            message(add(&zeros(&[1, 2, 3, 3]), &zeros(&[1, 2, 3, 4]))),
            "second operand shape",
        ),
        (
            message(relu_backward(&zeros(&[4]), &zeros(&[5]))),
            "output gradient shape",
        ),
        (
            message(global_avg_pool_backward(&zeros(&[2, 3]), [2, 4, 5, 5])),
            "output gradient shape: expected [2, 4], got [2, 3]",
        ),
        (
            message(Tensor::from_vec(vec![0.0; 5], &[2, 3])),
            "element count for shape [2, 3]: expected 6, got 5",
        ),
        (message(zeros(&[2, 3]).reshape(&[4, 2])), "element count"),
        (
            message(Device::parse("gpu0")),
            "unknown device `gpu0`; expected one of cpu, cuda, cuda:N, auto",
        ),
    ];
    for (got, want) in cases {
        assert!(got.contains(want), "expected `{want}` in `{got}`");
    }
}

#[test]
fn a_missing_cuda_device_is_an_error_not_a_panic() {
    match Device::cuda(0) {
        Ok(device) => assert_eq!(device, Device::Cuda(0)),
        Err(e) => assert!(e.to_string().starts_with("device cuda:0:"), "{e}"),
    }
    assert_eq!(Device::parse("cpu").unwrap(), Device::Cpu);
    assert!(matches!(
        Device::parse("auto").unwrap(),
        Device::Cpu | Device::Cuda(0)
    ));
}
