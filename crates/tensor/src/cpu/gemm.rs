//! A safe face on the `gemm` crate's strided matrix product.

use gemm::Parallelism;

/// A read-only matrix view: `rows x cols` elements of `data` at `row_stride`/`col_stride`.
#[derive(Clone, Copy)]
pub(crate) struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// `data` holds the matrix row after row.
    pub(crate) fn row_major(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::checked(data, rows, cols, cols, 1)
    }

    pub(crate) fn rows(&self) -> usize {
        self.rows
    }

    pub(crate) fn cols(&self) -> usize {
        self.cols
    }

    /// The first element (for kernels that walk the view with its strides).
    pub(crate) fn as_ptr(&self) -> *const f32 {
        self.data.as_ptr()
    }

    pub(crate) fn row_stride(&self) -> usize {
        self.row_stride
    }

    pub(crate) fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// The elements row after row, when the view is exactly that (row-major, contiguous).
    pub(crate) fn row_major_data(&self) -> Option<&'a [f32]> {
        (self.col_stride == 1 && (self.row_stride == self.cols || self.rows <= 1))
            .then(|| &self.data[..self.rows * self.cols])
    }

    /// The transposed view (no copy).
    pub(crate) fn transpose(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// `data` holds the *transpose* row after row (`cols x rows`); the view is the matrix itself.
    pub(crate) fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Self::checked(data, rows, cols, 1, rows)
    }

    fn checked(
        data: &'a [f32],
        rows: usize,
        cols: usize,
        row_stride: usize,
        col_stride: usize,
    ) -> Self {
        // Invariant checked once here so that the unsafe call below stays in bounds.
        let last = if rows == 0 || cols == 0 {
            0
        } else {
            (rows - 1) * row_stride + (cols - 1) * col_stride + 1
        };
        assert!(
            data.len() >= last,
            "matrix view of {rows}x{cols} over {} elements",
            data.len()
        );
        Mat {
            data,
            rows,
            cols,
            row_stride,
            col_stride,
        }
    }
}

/// `out (m x n, row-major) = [out +] a (m x k) * b (k x n)`; `accumulate` keeps what `out` held.
///
/// `threads` > 1 lets the product use that many rayon threads; pass 1 inside a parallel loop.
pub(crate) fn matmul(out: &mut [f32], a: Mat<'_>, b: Mat<'_>, accumulate: bool, threads: usize) {
    let (m, k, n) = (a.rows, a.cols, b.cols);
    assert_eq!(b.rows, k, "inner dimensions of a matrix product");
    assert!(
        out.len() >= m * n,
        "product of {m}x{n} into {} elements",
        out.len()
    );
    if m == 0 || n == 0 {
        return;
    }
    if k == 0 {
        if !accumulate {
            out[..m * n].fill(0.0);
        }
        return;
    }
    let parallelism = if threads > 1 {
        Parallelism::Rayon(threads)
    } else {
        Parallelism::None
    };
    // SAFETY: the views were bounds-checked by `Mat::checked` and `out` holds m*n row-major
    // elements; the three slices are distinct borrows, so the output aliases no input.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            out.as_mut_ptr(),
            1,
            n as isize,
            accumulate,
            a.data.as_ptr(),
            a.col_stride as isize,
            a.row_stride as isize,
            b.data.as_ptr(),
            b.col_stride as isize,
            b.row_stride as isize,
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// The rayon thread count for one large product outside any parallel loop.
pub(crate) fn threads_for(flops: usize) -> usize {
    if flops < 1 << 20 {
        1
    } else {
        rayon::current_num_threads()
    }
}
