//! The committed PTX of `kernels/*.cu`, embedded in the binary, and every entry point the Rust
//! side launches. A module is loaded once per device. The PTX is for `compute_80`, and the
//! driver compiles it for the card it runs on (Ampere, Hopper and newer): the kernels use nothing
//! newer than sm_80 has, so PTX for `compute_90` was the same but for its `.target` line
//! (`docs/cuda-backend.md`).

/// One `.cu` file's PTX.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(crate) enum Module {
    BatchNorm,
    Conv2d,
    CrossEntropy,
    Depthwise,
    Elementwise,
    Gemm,
    Mbconv,
    Pool,
    Sgd,
}

macro_rules! ptx {
    ($stem:literal) => {
        include_str!(concat!("../../../../kernels/ptx/", $stem, ".ptx"))
    };
}

macro_rules! modules {
    ($($module:ident => $stem:literal),* $(,)?) => {
        impl Module {
            #[cfg_attr(not(test), allow(dead_code))]
            pub(crate) const ALL: &'static [Module] = &[$(Module::$module),*];

            /// The kernel file's stem: `kernels/{stem}.cu`.
            pub(crate) fn stem(self) -> &'static str {
                match self { $(Module::$module => $stem),* }
            }

            /// The module's PTX (`compute_80`).
            pub(crate) fn ptx(self) -> &'static str {
                match self { $(Module::$module => ptx!($stem)),* }
            }
        }
    };
}

modules! {
    BatchNorm => "batch_norm",
    Conv2d => "conv2d",
    CrossEntropy => "cross_entropy",
    Depthwise => "depthwise",
    Elementwise => "elementwise",
    Gemm => "gemm",
    Mbconv => "mbconv",
    Pool => "pool",
    Sgd => "sgd",
}

/// The enum of every entry point the Rust side launches, with its module and name: the one
/// table of kernel names. The launches name a `Kernel`, so a misspelt kernel does not compile,
/// and a CPU test checks that each is an entry point of its PTX.
macro_rules! kernels {
    ($($kernel:ident => $module:ident :: $name:literal),* $(,)?) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        pub(crate) enum Kernel {
            $($kernel),*
        }

        impl Kernel {
            #[cfg_attr(not(test), allow(dead_code))]
            pub(crate) const ALL: &'static [Kernel] = &[$(Kernel::$kernel),*];

            /// The `.cu` file that defines it.
            pub(crate) fn module(self) -> Module {
                match self { $(Kernel::$kernel => Module::$module),* }
            }

            /// Its entry-point name in the PTX.
            pub(crate) fn name(self) -> &'static str {
                match self { $(Kernel::$kernel => $name),* }
            }
        }
    };
}

kernels! {
    BatchNormPartialSums => BatchNorm::"batch_norm_partial_sums_f32",
    BatchNormFinalize => BatchNorm::"batch_norm_finalize_f32",
    BatchNormEvalAffine => BatchNorm::"batch_norm_eval_affine_f32",
    BatchNormApply => BatchNorm::"batch_norm_apply_f32",
    BatchNormBackwardPartialSums => BatchNorm::"batch_norm_backward_partial_sums_f32",
    BatchNormBackwardFinalize => BatchNorm::"batch_norm_backward_finalize_f32",
    BatchNormBackwardApply => BatchNorm::"batch_norm_backward_apply_f32",
    Conv2dForward => Conv2d::"conv2d_forward_f32",
    Conv2dBackwardInput => Conv2d::"conv2d_backward_input_f32",
    Conv2dBackwardWeight => Conv2d::"conv2d_backward_weight_f32",
    SoftmaxCrossEntropy => CrossEntropy::"softmax_cross_entropy_f32",
    DepthwiseK3s1Forward => Depthwise::"depthwise_k3s1_forward_f32",
    DepthwiseK3s2Forward => Depthwise::"depthwise_k3s2_forward_f32",
    DepthwiseK5s1Forward => Depthwise::"depthwise_k5s1_forward_f32",
    DepthwiseK5s2Forward => Depthwise::"depthwise_k5s2_forward_f32",
    DepthwiseK7s1Forward => Depthwise::"depthwise_k7s1_forward_f32",
    DepthwiseK7s2Forward => Depthwise::"depthwise_k7s2_forward_f32",
    DepthwiseK3s1BackwardInput => Depthwise::"depthwise_k3s1_backward_input_f32",
    DepthwiseK3s2BackwardInput => Depthwise::"depthwise_k3s2_backward_input_f32",
    DepthwiseK5s1BackwardInput => Depthwise::"depthwise_k5s1_backward_input_f32",
    DepthwiseK5s2BackwardInput => Depthwise::"depthwise_k5s2_backward_input_f32",
    DepthwiseK7s1BackwardInput => Depthwise::"depthwise_k7s1_backward_input_f32",
    DepthwiseK7s2BackwardInput => Depthwise::"depthwise_k7s2_backward_input_f32",
    DepthwiseK3s1BackwardWeight => Depthwise::"depthwise_k3s1_backward_weight_f32",
    DepthwiseK3s2BackwardWeight => Depthwise::"depthwise_k3s2_backward_weight_f32",
    DepthwiseK5s1BackwardWeight => Depthwise::"depthwise_k5s1_backward_weight_f32",
    DepthwiseK5s2BackwardWeight => Depthwise::"depthwise_k5s2_backward_weight_f32",
    DepthwiseK7s1BackwardWeight => Depthwise::"depthwise_k7s1_backward_weight_f32",
    DepthwiseK7s2BackwardWeight => Depthwise::"depthwise_k7s2_backward_weight_f32",
    Relu => Elementwise::"relu_f32",
    ReluBackward => Elementwise::"relu_backward_f32",
    Add => Elementwise::"add_f32",
    BroadcastRows => Elementwise::"broadcast_rows_f32",
    SumRows => Elementwise::"sum_rows_f32",
    GemmF32 => Gemm::"gemm_f32",
    GemmTf32 => Gemm::"gemm_tf32",
    SumSlices => Gemm::"sum_slices_f32",
    MbconvInference => Mbconv::"mbconv_inference_f32",
    GlobalAvgPoolForward => Pool::"global_avg_pool_forward_f32",
    GlobalAvgPoolBackward => Pool::"global_avg_pool_backward_f32",
    SgdStep => Sgd::"sgd_step_f32",
}

/// Which of the three depthwise kernels of one (kernel size, stride).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum DepthwisePass {
    Forward,
    BackwardInput,
    BackwardWeight,
}

impl Kernel {
    /// The depthwise kernel of a square `kernel` x `kernel` filter at `stride`, for `pass`;
    /// `None` where no specialised kernel exists (the convolution then takes the general path).
    pub(crate) fn depthwise(kernel: usize, stride: usize, pass: DepthwisePass) -> Option<Kernel> {
        use DepthwisePass::*;
        use Kernel::*;
        Some(match (kernel, stride, pass) {
            (3, 1, Forward) => DepthwiseK3s1Forward,
            (3, 2, Forward) => DepthwiseK3s2Forward,
            (5, 1, Forward) => DepthwiseK5s1Forward,
            (5, 2, Forward) => DepthwiseK5s2Forward,
            (7, 1, Forward) => DepthwiseK7s1Forward,
            (7, 2, Forward) => DepthwiseK7s2Forward,
            (3, 1, BackwardInput) => DepthwiseK3s1BackwardInput,
            (3, 2, BackwardInput) => DepthwiseK3s2BackwardInput,
            (5, 1, BackwardInput) => DepthwiseK5s1BackwardInput,
            (5, 2, BackwardInput) => DepthwiseK5s2BackwardInput,
            (7, 1, BackwardInput) => DepthwiseK7s1BackwardInput,
            (7, 2, BackwardInput) => DepthwiseK7s2BackwardInput,
            (3, 1, BackwardWeight) => DepthwiseK3s1BackwardWeight,
            (3, 2, BackwardWeight) => DepthwiseK3s2BackwardWeight,
            (5, 1, BackwardWeight) => DepthwiseK5s1BackwardWeight,
            (5, 2, BackwardWeight) => DepthwiseK5s2BackwardWeight,
            (7, 1, BackwardWeight) => DepthwiseK7s1BackwardWeight,
            (7, 2, BackwardWeight) => DepthwiseK7s2BackwardWeight,
            _ => return None,
        })
    }
}

/// The sha256 of the kernel sources the committed PTX was built from (first line of
/// `kernels/ptx/SOURCES.sha256`, written by `cargo xtask build-kernels`).
#[cfg(test)]
const RECORDED_SOURCES: &str = include_str!("../../../../kernels/ptx/SOURCES.sha256");

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};
    use std::path::Path;

    fn kernels_dir() -> std::path::PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels")
    }

    #[test]
    fn every_launched_entry_point_is_in_the_ptx() {
        for &kernel in Kernel::ALL {
            let (module, name) = (kernel.module(), kernel.name());
            let needle = format!(".entry {name}(");
            assert!(
                module.ptx().contains(&needle),
                "{kernel:?}: {name} is not an entry point of kernels/ptx/{}.ptx; run `cargo xtask build-kernels`",
                module.stem()
            );
        }
        for &module in Module::ALL {
            assert!(
                module.ptx().contains(".target sm_80"),
                "{} PTX is not for compute_80",
                module.stem()
            );
            // Driver 580 (the lent GPUs) loads PTX up to ISA 9.0.
            assert!(
                module.ptx().contains(".version 9.0"),
                "{} PTX is not ISA 9.0",
                module.stem()
            );
        }
    }

    #[test]
    fn committed_ptx_is_current_with_the_kernel_sources() {
        let dir = kernels_dir();
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "cu" || e == "cuh"))
            .collect();
        files.sort();
        let mut hasher = Sha256::new();
        for path in &files {
            hasher.update(path.file_name().unwrap().to_string_lossy().as_bytes());
            hasher.update(b"\n");
            hasher.update(std::fs::read(path).unwrap());
            hasher.update(b"\n");
        }
        let digest: String = hasher
            .finalize()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let recorded = RECORDED_SOURCES.lines().next().unwrap_or("").trim();
        assert_eq!(
            digest, recorded,
            "kernels/*.cu changed since the PTX was built: run `cargo xtask build-kernels` and commit kernels/ptx"
        );
        // Every .cu has its PTX module here, and no module is left without a source.
        let stems: Vec<String> = files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "cu"))
            .map(|p| p.file_stem().unwrap().to_string_lossy().to_string())
            .collect();
        let modules: Vec<String> = Module::ALL.iter().map(|m| m.stem().to_string()).collect();
        assert_eq!(stems, modules);
    }
}
