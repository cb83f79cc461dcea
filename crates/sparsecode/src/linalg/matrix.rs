//! A plain row-major `f32` matrix: the currency of the library.

use crate::{Error, Result};

/// Row-major `rows x cols` matrix of `f32`.
#[derive(Clone, Debug, PartialEq, Default)]
pub struct Matrix {
    rows: usize,
    cols: usize,
    data: Vec<f32>,
}

impl Matrix {
    /// A matrix of zeros.
    pub fn zeros(rows: usize, cols: usize) -> Self {
        Matrix {
            rows,
            cols,
            data: vec![0.0; rows * cols],
        }
    }

    /// Wraps `data` (row-major); fails when its length is not `rows * cols`.
    pub fn from_vec(rows: usize, cols: usize, data: Vec<f32>) -> Result<Self> {
        if rows.checked_mul(cols) != Some(data.len()) {
            return Err(Error::shape(
                "matrix data",
                format!("{rows} x {cols} = {} values", rows.saturating_mul(cols)),
                format!("{} values", data.len()),
            ));
        }
        Ok(Matrix { rows, cols, data })
    }

    /// Builds a matrix from a function of (row, col).
    pub fn from_fn(rows: usize, cols: usize, mut f: impl FnMut(usize, usize) -> f32) -> Self {
        let mut data = Vec::with_capacity(rows * cols);
        for r in 0..rows {
            for c in 0..cols {
                data.push(f(r, c));
            }
        }
        Matrix { rows, cols, data }
    }

    /// Independent standard-normal entries from a ChaCha8 stream seeded by `seed` (test and
    /// benchmark data).
    pub fn standard_normal(rows: usize, cols: usize, seed: u64) -> Self {
        use rand::SeedableRng;
        use rand_distr::Distribution;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        Matrix::from_fn(rows, cols, |_, _| {
            rand_distr::StandardNormal.sample(&mut rng)
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// `(rows, cols)`.
    pub fn shape(&self) -> (usize, usize) {
        (self.rows, self.cols)
    }

    /// All values, row-major.
    pub fn as_slice(&self) -> &[f32] {
        &self.data
    }

    /// All values, row-major, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [f32] {
        &mut self.data
    }

    /// Consumes the matrix, returning its row-major values.
    pub fn into_vec(self) -> Vec<f32> {
        self.data
    }

    /// Row `r`.
    pub fn row(&self, r: usize) -> &[f32] {
        &self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Row `r`, mutable.
    pub fn row_mut(&mut self, r: usize) -> &mut [f32] {
        &mut self.data[r * self.cols..(r + 1) * self.cols]
    }

    /// Value at (r, c).
    pub fn get(&self, r: usize, c: usize) -> f32 {
        self.data[r * self.cols + c]
    }

    /// A borrowed view for [`crate::linalg::matmul`].
    pub fn view(&self) -> super::MatRef<'_> {
        super::MatRef::new(&self.data, self.rows, self.cols)
    }

    /// The transpose, as a new matrix.
    pub fn transpose(&self) -> Matrix {
        Matrix::from_fn(self.cols, self.rows, |r, c| self.get(c, r))
    }

    /// Copies the rows at `indices` into a new matrix.
    pub fn select_rows(&self, indices: &[usize]) -> Matrix {
        let mut data = Vec::with_capacity(indices.len() * self.cols);
        for &i in indices {
            data.extend_from_slice(self.row(i));
        }
        Matrix {
            rows: indices.len(),
            cols: self.cols,
            data,
        }
    }

    /// The columns `indices`, in that order.
    pub fn select_columns(&self, indices: &[usize]) -> Matrix {
        Matrix::from_fn(self.rows, indices.len(), |r, c| self.get(r, indices[c]))
    }

    /// Rows `start..end` as a new matrix.
    pub fn slice_rows(&self, start: usize, end: usize) -> Matrix {
        Matrix {
            rows: end - start,
            cols: self.cols,
            data: self.data[start * self.cols..end * self.cols].to_vec(),
        }
    }

    /// Adds `scale * v` to every row (`v` has `cols` values): adding or removing a bias.
    pub fn add_to_rows(&mut self, v: &[f32], scale: f32) {
        assert_eq!(
            v.len(),
            self.cols,
            "add_to_rows: vector length differs from the row width"
        );
        for row in self.data.chunks_mut(self.cols.max(1)) {
            row.iter_mut().zip(v).for_each(|(a, b)| *a += scale * b);
        }
    }

    /// The first non-finite value as (row, col, value), if any.
    pub fn first_non_finite(&self) -> Option<(usize, usize, f32)> {
        let pos = self.data.iter().position(|v| !v.is_finite())?;
        let cols = self.cols.max(1);
        Some((pos / cols, pos % cols, self.data[pos]))
    }

    /// Fails with [`Error::NonFinite`] naming `context` when a NaN or infinity is present.
    pub fn check_finite(&self, context: &str) -> Result<()> {
        match self.first_non_finite() {
            None => Ok(()),
            Some((row, col, value)) => Err(Error::NonFinite {
                context: context.to_string(),
                row,
                col,
                value,
            }),
        }
    }
}
