//! Exact scan kernels: one query against many rows (exact nearest-neighbour search, ground truth).

/// `Σ a[k]·b[k]` over 16 fixed `f32` lanes: vectorisable, and the summation order (hence the
/// result) is the same in every compiled copy.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let (ca, cb) = (a.chunks_exact(16), b.chunks_exact(16));
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(p, q)| p * q)
        .sum();
    for (p, q) in ca.zip(cb) {
        for l in 0..16 {
            acc[l] += p[l] * q[l];
        }
    }
    let mut half = [0.0f32; 8];
    for l in 0..8 {
        half[l] = acc[l] + acc[l + 8];
    }
    (half[0] + half[4]) + (half[1] + half[5]) + (half[2] + half[6]) + (half[3] + half[7]) + tail
}

#[inline(always)]
fn dot_rows_body(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let dim = query.len();
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        *o = dot_lanes(query, row);
    }
}

crate::simd::multiversion! {
    /// Writes `out[i] = query · row_i` for the rows of the row-major matrix `rows`
    /// (`rows.len() / query.len()` of them, `out` as long). `query` must not be empty.
    ///
    /// ```
    /// use pinnersage_core::scan::dot_rows;
    /// let rows = [1.0, 0.0, 0.5, 0.5, -1.0, 2.0];
    /// let mut out = [0.0; 3];
    /// dot_rows(&[2.0, 1.0], &rows, &mut out);
    /// assert_eq!(out, [2.0, 1.5, 0.0]);
    /// ```
    pub fn dot_rows(query: &[f32], rows: &[f32], out: &mut [f32]) => dot_rows_body;
}

/// `a · b` (same kernel as [`dot_rows`]).
///
/// ```
/// assert_eq!(pinnersage_core::scan::dot(&[1.0, 2.0, 3.0], &[4.0, 5.0, 6.0]), 32.0);
/// ```
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut out = [0.0];
    dot_rows(a, &b[..a.len()], &mut out);
    out[0]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_compiled_copy_agrees_with_f64() {
        let dim = 37;
        let rows: Vec<f32> = (0..dim * 5)
            .map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.0)
            .collect();
        let q: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut fast = vec![0.0; 5];
        dot_rows(&q, &rows, &mut fast);
        let mut base = vec![0.0; 5];
        dot_rows_body(&q, &rows, &mut base);
        assert_eq!(
            fast, base,
            "dispatched copy must be bit-identical to the baseline"
        );
        for (i, row) in rows.chunks_exact(dim).enumerate() {
            let exact: f64 = q.iter().zip(row).map(|(&a, &b)| a as f64 * b as f64).sum();
            assert!(
                (fast[i] as f64 - exact).abs() < 1e-4,
                "{} vs {exact}",
                fast[i]
            );
        }
    }
}
