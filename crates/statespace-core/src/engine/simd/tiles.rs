//! A weight matrix packed in row tiles of `R` outputs, the layout both batched step products read
//! ([`super::Panels`], `R` = 32: streams broadcast; [`super::LanePanels`], `R` = 6: streams in the
//! vector lanes):
//!
//! ```text
//! W [rows, cols] row-major  →  tiles [rowsᴿ / R][cols][R]   (rowsᴿ: rounded up, zero rows)
//! tile t, column k:  W[R·t … R·t + R − 1, k] side by side
//! y[b, R·t + i] = bias[R·t + i] + Σ_k x[b, k] · tile[t][k][i]
//! ```

/// `W [rows, cols]` in row tiles of `R` (see the module doc), for any element type.
#[derive(Debug, Clone)]
pub struct RowTiles<T, const R: usize> {
    pub(crate) raw: Vec<T>,
    pub(crate) rows: usize,
    pub(crate) cols: usize,
}

impl<T: Copy + Default, const R: usize> RowTiles<T, R> {
    /// Packs the row-major `w [rows, cols]`.
    pub fn new(w: &[T], rows: usize, cols: usize) -> Self {
        assert!(
            w.len() >= rows * cols,
            "row tiles: W [{rows}, {cols}] has {} values",
            w.len()
        );
        let mut raw = vec![T::default(); rows.div_ceil(R) * cols * R];
        for r in 0..rows {
            let (t, i) = (r / R, r % R);
            for k in 0..cols {
                raw[(t * cols + k) * R + i] = w[r * cols + k];
            }
        }
        RowTiles { raw, rows, cols }
    }

    /// Rows of `W` (outputs).
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Columns of `W` (inputs).
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The packed values, `[rowsᴿ / R][cols][R]`.
    pub fn data(&self) -> &[T] {
        &self.raw
    }

    /// The shape checks of a product `y [B, rows] = x [B, cols] Wᵀ + bias` named `what`.
    pub(crate) fn check(&self, what: &str, bias: Option<&[T]>, x: &[T], y: &[T]) {
        let (rows, cols) = (self.rows, self.cols);
        let batch = x.len().checked_div(cols).unwrap_or(0);
        assert!(
            cols > 0 && x.len() == batch * cols && y.len() == batch * rows,
            "{what}: x [B, {cols}] and y [B, {rows}], got {} and {} values",
            x.len(),
            y.len()
        );
        assert!(
            bias.is_none_or(|b| b.len() >= rows),
            "{what}: bias shorter than {rows}"
        );
    }
}

impl<T: num_traits::Float + Default, const R: usize> RowTiles<T, R> {
    /// `y [B, rows] = x [B, cols] Wᵀ + bias`, any element type (the portable loops).
    pub(crate) fn gemm_generic(&self, what: &str, bias: Option<&[T]>, x: &[T], y: &mut [T]) {
        self.check(what, bias, x, y);
        let (rows, cols) = (self.rows, self.cols);
        for (xb, yb) in x.chunks_exact(cols).zip(y.chunks_exact_mut(rows)) {
            for (r, yv) in yb.iter_mut().enumerate() {
                let (t, i) = (r / R, r % R);
                let mut acc = bias.map_or(T::zero(), |v| v[r]);
                for (k, xv) in xb.iter().enumerate() {
                    acc = acc + self.raw[(t * cols + k) * R + i] * *xv;
                }
                *yv = acc;
            }
        }
    }
}
