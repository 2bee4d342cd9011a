//! One safe door to the `gemm` crate's f32 matrix product (the one burn-flex calls), so the
//! convolutions multiply straight into their own buffers: burn-flex's `float_matmul` allocates
//! and zero-fills its output, wants its operands as tensors (the patches copied into one) and
//! returns a batch the weight gradient then sums over, where here each image adds onto one
//! accumulator.

/// A matrix in a slice: `rows x cols`, element `(r, c)` at `r * row_stride + c * col_stride`.
#[derive(Clone, Copy, Debug)]
pub struct Mat<'a> {
    data: &'a [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a> Mat<'a> {
    /// `data` holds the matrix row after row.
    pub fn rows(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, row_stride: cols, col_stride: 1 }
    }

    /// `data` holds the matrix's transpose row after row (`cols x rows`): a transposed view,
    /// nothing copied.
    pub fn transposed(data: &'a [f32], rows: usize, cols: usize) -> Self {
        Mat { data, rows, cols, row_stride: 1, col_stride: rows }
    }

    /// Whether every element lies inside `data`.
    fn fits(&self) -> bool {
        self.rows == 0
            || self.cols == 0
            || (self.rows - 1) * self.row_stride + (self.cols - 1) * self.col_stride < self.data.len()
    }
}

/// `dst = a * b`, or `dst += a * b` when `accumulate`; `dst` is `a.rows x b.cols`, row after
/// row. `parallel` spreads the product over rayon's threads (for callers not already running
/// one product per thread).
///
/// # Panics
/// When the shapes do not chain or a matrix does not fit its slice.
pub fn matmul(dst: &mut [f32], a: Mat<'_>, b: Mat<'_>, accumulate: bool, parallel: bool) {
    assert!(
        a.cols == b.rows && dst.len() == a.rows * b.cols && a.fits() && b.fits(),
        "matmul of {}x{} by {}x{} into {} values",
        a.rows,
        a.cols,
        b.rows,
        b.cols,
        dst.len()
    );
    if dst.is_empty() {
        return;
    }
    if a.cols == 0 {
        if !accumulate {
            dst.fill(0.0);
        }
        return;
    }
    let parallelism = if parallel { gemm::Parallelism::Rayon(0) } else { gemm::Parallelism::None };
    let stride = |s: usize| s as isize;
    #[allow(unsafe_code)]
    // SAFETY: the assert above keeps every element gemm reads inside `a.data` and `b.data` and
    // every one it writes inside `dst` (rows of `b.cols`, unit column stride); `dst` is borrowed
    // mutably, so it aliases neither operand. With `read_dst` false gemm only writes `dst`.
    unsafe {
        gemm::gemm(
            a.rows,
            b.cols,
            a.cols,
            dst.as_mut_ptr(),
            1,
            stride(b.cols),
            accumulate,
            a.data.as_ptr(),
            stride(a.col_stride),
            stride(a.row_stride),
            b.data.as_ptr(),
            stride(b.col_stride),
            stride(b.row_stride),
            1.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naive(a: &[f32], b: &[f32], m: usize, k: usize, n: usize) -> Vec<f32> {
        (0..m * n).map(|i| (0..k).map(|j| a[i / n * k + j] * b[j * n + i % n]).sum()).collect()
    }

    fn transpose(x: &[f32], rows: usize, cols: usize) -> Vec<f32> {
        (0..rows * cols).map(|i| x[i % rows * cols + i / rows]).collect()
    }

    #[test]
    fn products_views_and_accumulation_match_the_definition() {
        let (m, k, n) = (5, 7, 3);
        let a: Vec<f32> = (0..m * k).map(|i| (i % 5) as f32 - 2.0).collect();
        let b: Vec<f32> = (0..k * n).map(|i| (i % 3) as f32 * 0.5).collect();
        let want = naive(&a, &b, m, k, n);
        for parallel in [false, true] {
            let mut dst = vec![9.0; m * n];
            matmul(&mut dst, Mat::rows(&a, m, k), Mat::rows(&b, k, n), false, parallel);
            assert_eq!(dst, want);
            let (at, bt) = (transpose(&a, m, k), transpose(&b, k, n));
            matmul(&mut dst, Mat::transposed(&at, m, k), Mat::transposed(&bt, k, n), true, parallel);
            assert_eq!(dst, want.iter().map(|v| 2.0 * v).collect::<Vec<_>>());
        }
        let mut empty_k = vec![1.0; 4];
        matmul(&mut empty_k, Mat::rows(&[], 2, 0), Mat::rows(&[], 0, 2), false, false);
        assert_eq!(empty_k, [0.0; 4]);
    }

    #[test]
    #[should_panic(expected = "matmul of 2x3 by 2x2")]
    fn shapes_that_do_not_chain_panic() {
        matmul(&mut [0.0; 4], Mat::rows(&[0.0; 6], 2, 3), Mat::rows(&[0.0; 4], 2, 2), false, false);
    }

    #[test]
    #[should_panic(expected = "matmul of 2x3 by 3x2")]
    fn a_matrix_larger_than_its_slice_panics() {
        matmul(&mut [0.0; 4], Mat::rows(&[0.0; 5], 2, 3), Mat::rows(&[0.0; 6], 3, 2), false, false);
    }
}
