//! The structs kernels take by value, `#[repr(C)]` and field for field the same as in
//! `kernels/common.cuh` (and the headers of `depthwise.cu`, `mbconv.cu`). `usize` is the
//! kernels' `u64` (every supported host is 64-bit).

use cudarc::driver::DeviceRepr;

use crate::Conv2dShape;

// SAFETY: plain-old-data structs with the C layout the kernels declare.
unsafe impl DeviceRepr for Conv2dShape {}
unsafe impl DeviceRepr for PlaneShape {}
unsafe impl DeviceRepr for GemmShape {}
unsafe impl DeviceRepr for SgdParams {}
unsafe impl DeviceRepr for DepthwiseTile {}
unsafe impl DeviceRepr for MbconvShape {}

/// An NCHW tensor seen as (batch, channels, plane = H * W).
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct PlaneShape {
    pub batch: usize,
    pub channels: usize,
    pub plane: usize,
}

impl PlaneShape {
    pub(crate) fn of(dims: [usize; 4]) -> PlaneShape {
        PlaneShape {
            batch: dims[0],
            channels: dims[1],
            plane: dims[2] * dims[3],
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.batch * self.channels * self.plane
    }
}

/// `C = alpha op(A) op(B) + beta C` by element strides; see `GemmShape` in `common.cuh`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct GemmShape {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub batch: usize,
    pub a_m: isize,
    pub a_k: isize,
    pub a_batch: isize,
    pub b_k: isize,
    pub b_n: isize,
    pub b_batch: isize,
    pub c_m: isize,
    pub c_n: isize,
    pub c_batch: isize,
    pub alpha: f32,
    pub beta: f32,
    pub reduce_batch: i32,
    pub pad: i32,
}

impl GemmShape {
    /// One product `C (m x n) = A (m x k) B (k x n)`, all three row-major and contiguous,
    /// `alpha = 1`, `beta = 0`. The `with_*` methods below change one layout each.
    pub(crate) fn row_major(m: usize, n: usize, k: usize) -> GemmShape {
        GemmShape {
            m,
            n,
            k,
            batch: 1,
            a_m: k as isize,
            a_k: 1,
            b_k: n as isize,
            b_n: 1,
            c_m: n as isize,
            c_n: 1,
            alpha: 1.0,
            ..GemmShape::default()
        }
    }

    /// `A` is stored transposed: a row-major k x m matrix.
    pub(crate) fn with_a_transposed(self) -> GemmShape {
        GemmShape {
            a_m: 1,
            a_k: self.m as isize,
            ..self
        }
    }

    /// `B` is stored transposed: a row-major n x k matrix.
    pub(crate) fn with_b_transposed(self) -> GemmShape {
        GemmShape {
            b_k: 1,
            b_n: self.k as isize,
            ..self
        }
    }

    /// `batch` products over consecutive matrices of A, B and C (each steps by its own size).
    pub(crate) fn with_batch(self, batch: usize) -> GemmShape {
        GemmShape {
            batch,
            a_batch: (self.m * self.k) as isize,
            b_batch: (self.k * self.n) as isize,
            c_batch: (self.m * self.n) as isize,
            ..self
        }
    }

    /// Every product of the batch reads the same `A` (a weight against a batch of images).
    pub(crate) fn with_shared_a(self) -> GemmShape {
        GemmShape { a_batch: 0, ..self }
    }

    /// One `C`, the sum of the batch's products (a weight gradient over a batch of images).
    pub(crate) fn with_batch_summed(self) -> GemmShape {
        GemmShape {
            c_batch: 0,
            reduce_batch: 1,
            ..self
        }
    }

    /// `C += A B`: `beta = 1`.
    pub(crate) fn accumulating(self) -> GemmShape {
        GemmShape { beta: 1.0, ..self }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct SgdParams {
    pub len: usize,
    pub lr: f32,
    pub momentum: f32,
    pub weight_decay: f32,
    pub nesterov: i32,
}

/// How a depthwise launch tiles the planes: `planes` planes of `tile_h x tile_w` outputs (or
/// input-gradient positions) per block.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct DepthwiseTile {
    pub tile_h: usize,
    pub tile_w: usize,
    pub planes: usize,
    pub tiles_y: usize,
    pub tiles_x: usize,
}

/// The fused MBConv inference kernel's shape and tiling.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub(crate) struct MbconvShape {
    pub batch: usize,
    pub in_channels: usize,
    pub hidden: usize,
    pub out_channels: usize,
    pub in_height: usize,
    pub in_width: usize,
    pub out_height: usize,
    pub out_width: usize,
    pub kernel: usize,
    pub stride: usize,
    pub padding: usize,
    pub tile: usize,
    pub chunk: usize,
    pub tiles_y: usize,
    pub tiles_x: usize,
    pub expand: i32,
    pub residual: i32,
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// The fields of C struct `name` as declared in `kernels/*.cu` and `*.cuh`, with the offsets
    /// the C ABI gives them, and the struct's size. The declarations are the kernels' plain
    /// form: `TYPE a, b, c;` with TYPE one of u64, i64, float, int.
    fn c_layout(name: &str) -> (Vec<(String, usize)>, usize) {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../kernels");
        let mut text = String::new();
        for entry in std::fs::read_dir(&dir).expect("kernels/") {
            let path = entry.expect("kernels/ entry").path();
            if path.extension().is_some_and(|e| e == "cu" || e == "cuh") {
                text += &std::fs::read_to_string(&path).expect("kernel source");
            }
        }
        let head = format!("struct {name} {{");
        let start = text
            .find(&head)
            .unwrap_or_else(|| panic!("no `{head}` in kernels/"))
            + head.len();
        let body = &text[start..start + text[start..].find("};").expect("end of struct")];
        let (mut fields, mut offset, mut align) = (Vec::new(), 0usize, 1usize);
        for declaration in body.split(';').map(str::trim).filter(|d| !d.is_empty()) {
            let (ty, names) = declaration.split_once(' ').expect("TYPE names");
            let size = match ty {
                "u64" | "i64" => 8,
                "float" | "int" => 4,
                other => panic!("{name}: field type `{other}` is not one the test knows"),
            };
            align = align.max(size);
            for field in names.split(',').map(str::trim) {
                offset = offset.next_multiple_of(size);
                fields.push((field.trim_end_matches('_').to_string(), offset));
                offset += size;
            }
        }
        (fields, offset.next_multiple_of(align))
    }

    /// Rust's (field, offset) list of a struct, and its size.
    macro_rules! rust_layout {
        ($ty:ty: $($field:ident),* $(,)?) => {
            (vec![$((stringify!($field).to_string(), offset_of!($ty, $field))),*], size_of::<$ty>())
        };
    }

    /// Every struct the kernels take by value: the same fields, in the same order, at the same
    /// offsets, and the same size, on both sides.
    #[test]
    fn layouts_match_the_kernel_sources_field_by_field() {
        let cases = [
            (
                "Conv2dShape",
                rust_layout!(Conv2dShape: batch, in_channels, in_height, in_width,
                out_channels, out_height, out_width, kernel_height, kernel_width, stride, padding,
                groups),
            ),
            (
                "PlaneShape",
                rust_layout!(PlaneShape: batch, channels, plane),
            ),
            (
                "GemmShape",
                rust_layout!(GemmShape: m, n, k, batch, a_m, a_k, a_batch, b_k, b_n,
                b_batch, c_m, c_n, c_batch, alpha, beta, reduce_batch, pad),
            ),
            (
                "SgdParams",
                rust_layout!(SgdParams: len, lr, momentum, weight_decay, nesterov),
            ),
            (
                "DepthwiseTile",
                rust_layout!(DepthwiseTile: tile_h, tile_w, planes, tiles_y, tiles_x),
            ),
            (
                "MbconvShape",
                rust_layout!(MbconvShape: batch, in_channels, hidden, out_channels,
                in_height, in_width, out_height, out_width, kernel, stride, padding, tile, chunk,
                tiles_y, tiles_x, expand, residual),
            ),
        ];
        for (name, (rust_fields, rust_size)) in cases {
            let (c_fields, c_size) = c_layout(name);
            assert_eq!(
                rust_fields, c_fields,
                "{name}: fields and offsets, Rust (left) against the .cu side (right)"
            );
            assert_eq!(
                rust_size, c_size,
                "{name}: size, Rust (left) against the .cu side (right)"
            );
        }
    }

    /// `C = alpha A B + beta C` by the shape's strides, as `kernels/gemm.cu` reads them.
    fn strided_gemm(s: &GemmShape, a: &[f32], b: &[f32], c: &mut [f32]) {
        let at = |base: isize, i: usize, di: isize, j: usize, dj: isize| {
            (base + i as isize * di + j as isize * dj) as usize
        };
        for batch in 0..s.batch {
            let (ab, bb, cb) = (
                batch as isize * s.a_batch,
                batch as isize * s.b_batch,
                batch as isize * s.c_batch,
            );
            for i in 0..s.m {
                for j in 0..s.n {
                    let dot: f32 = (0..s.k)
                        .map(|p| a[at(ab, i, s.a_m, p, s.a_k)] * b[at(bb, p, s.b_k, j, s.b_n)])
                        .sum();
                    let out = &mut c[at(cb, i, s.c_m, j, s.c_n)];
                    // Summed batches: the first product applies beta, the others add.
                    let beta = if s.reduce_batch != 0 && batch > 0 {
                        1.0
                    } else {
                        s.beta
                    };
                    *out = s.alpha * dot + beta * *out;
                }
            }
        }
    }

    /// The plain product of row-major `a` (m x k) and `b` (k x n).
    fn matmul(a: &[f32], b: &[f32], m: usize, n: usize, k: usize) -> Vec<f32> {
        (0..m * n)
            .map(|ij| (0..k).map(|p| a[ij / n * k + p] * b[p * n + ij % n]).sum())
            .collect()
    }

    fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols)
            .map(|ij| x[ij % rows * cols + ij / rows])
            .collect()
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7 + seed * 13) % 11) as f32 - 5.0)
            .collect()
    }

    /// Each constructor's strides compute the product it says, on a strided reference.
    #[test]
    fn gemm_shape_constructors_describe_their_layouts() {
        let (m, n, k, batch) = (3, 4, 5, 2);
        let (a, b) = (values(m * k, 1), values(k * n, 2));
        let product = matmul(&a, &b, m, n, k);
        let check = |what: &str, s: GemmShape, a: &[f32], b: &[f32], c0: &[f32], want: &[f32]| {
            let mut c = c0.to_vec();
            strided_gemm(&s, a, b, &mut c);
            assert_eq!(c, want, "{what}: {s:?}");
        };
        let zeros = vec![0.0; m * n];
        check(
            "row_major",
            GemmShape::row_major(m, n, k),
            &a,
            &b,
            &zeros,
            &product,
        );
        check(
            "with_a_transposed",
            GemmShape::row_major(m, n, k).with_a_transposed(),
            &transpose(&a, m, k),
            &b,
            &zeros,
            &product,
        );
        check(
            "with_b_transposed",
            GemmShape::row_major(m, n, k).with_b_transposed(),
            &a,
            &transpose(&b, k, n),
            &zeros,
            &product,
        );
        let ones = vec![1.0; m * n];
        let plus_one: Vec<f32> = product.iter().map(|v| v + 1.0).collect();
        check(
            "accumulating",
            GemmShape::row_major(m, n, k).accumulating(),
            &a,
            &b,
            &ones,
            &plus_one,
        );
        // A batch of B's against one A, and the sum over a batch of both.
        let b2 = [b.clone(), values(k * n, 3)].concat();
        let batched: Vec<f32> = [product.clone(), matmul(&a, &b2[k * n..], m, n, k)].concat();
        check(
            "with_batch + with_shared_a",
            GemmShape::row_major(m, n, k)
                .with_batch(batch)
                .with_shared_a(),
            &a,
            &b2,
            &vec![0.0; batch * m * n],
            &batched,
        );
        let a2 = [a.clone(), values(m * k, 4)].concat();
        let summed: Vec<f32> = product
            .iter()
            .zip(matmul(&a2[m * k..], &b2[k * n..], m, n, k))
            .map(|(x, y)| x + y)
            .collect();
        check(
            "with_batch + with_batch_summed",
            GemmShape::row_major(m, n, k)
                .with_batch(batch)
                .with_batch_summed(),
            &a2,
            &b2,
            &zeros,
            &summed,
        );
    }
}
