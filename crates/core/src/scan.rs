//! Exact scan kernels: one query against many rows (exact nearest-neighbour search, ground truth).

/// Lanes of the dot product: element `k` is summed into lane `k % LANES` (the order every
/// compiled copy keeps).
const LANES: usize = 16;

/// The products of the elements past the last whole chunk of `LANES`, summed in order.
#[inline(always)]
fn tail(a: &[f32], b: &[f32]) -> f32 {
    let from = a.len() / LANES * LANES;
    a[from..].iter().zip(&b[from..]).map(|(p, q)| p * q).sum()
}

/// The lanes folded in a fixed order, then the tail added.
#[inline(always)]
fn reduce(acc: &[f32; LANES], tail: f32) -> f32 {
    let mut half = [0.0f32; 8];
    for l in 0..8 {
        half[l] = acc[l] + acc[l + 8];
    }
    (half[0] + half[4]) + (half[1] + half[5]) + (half[2] + half[6]) + (half[3] + half[7]) + tail
}

/// `Σ a[k]·b[k]` over 16 fixed `f32` lanes, products rounded before they are added (no fused
/// multiply-add): the reference every compiled copy below reproduces bit for bit.
#[inline(always)]
fn dot_lanes(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    for (p, q) in a.chunks_exact(LANES).zip(b.chunks_exact(LANES)) {
        for l in 0..LANES {
            acc[l] += p[l] * q[l];
        }
    }
    reduce(&acc, tail(a, b))
}

fn dot_rows_body(query: &[f32], rows: &[f32], out: &mut [f32]) {
    let dim = query.len();
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        *o = dot_lanes(query, row);
    }
}

/// [`dot_lanes`] with the 16 lanes in one AVX-512 register (LLVM does not vectorise the lane
/// loop well: 21 ns a row of 128 against 9 here).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
fn dot_rows_avx512(query: &[f32], rows: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let dim = query.len();
    let chunks = dim / LANES;
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        let mut acc = _mm512_setzero_ps();
        for c in 0..chunks {
            let at = c * LANES;
            // SAFETY: at + 16 <= dim, the length of both `query` and `row`.
            let (p, q) = unsafe {
                (
                    _mm512_loadu_ps(query.as_ptr().add(at)),
                    _mm512_loadu_ps(row.as_ptr().add(at)),
                )
            };
            acc = _mm512_add_ps(acc, _mm512_mul_ps(p, q));
        }
        let mut lanes = [0.0f32; LANES];
        // SAFETY: `lanes` holds 16 floats.
        unsafe { _mm512_storeu_ps(lanes.as_mut_ptr(), acc) };
        *o = reduce(&lanes, tail(query, row));
    }
}

/// [`dot_lanes`] with the 16 lanes in two AVX registers.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx")]
fn dot_rows_avx(query: &[f32], rows: &[f32], out: &mut [f32]) {
    use std::arch::x86_64::*;
    let dim = query.len();
    let chunks = dim / LANES;
    for (o, row) in out.iter_mut().zip(rows.chunks_exact(dim)) {
        let (mut low, mut high) = (_mm256_setzero_ps(), _mm256_setzero_ps());
        for c in 0..chunks {
            let at = c * LANES;
            // SAFETY: at + 16 <= dim, the length of both `query` and `row`.
            unsafe {
                let (p, q) = (query.as_ptr().add(at), row.as_ptr().add(at));
                low = _mm256_add_ps(low, _mm256_mul_ps(_mm256_loadu_ps(p), _mm256_loadu_ps(q)));
                high = _mm256_add_ps(
                    high,
                    _mm256_mul_ps(_mm256_loadu_ps(p.add(8)), _mm256_loadu_ps(q.add(8))),
                );
            }
        }
        let mut lanes = [0.0f32; LANES];
        // SAFETY: `lanes` holds 16 floats, 8 from each register.
        unsafe {
            _mm256_storeu_ps(lanes.as_mut_ptr(), low);
            _mm256_storeu_ps(lanes.as_mut_ptr().add(8), high);
        }
        *o = reduce(&lanes, tail(query, row));
    }
}

/// Writes `out[i] = query · row_i` for the rows of the row-major matrix `rows`
/// (`rows.len() / query.len()` of them, `out` as long). `query` must not be empty. Every
/// instruction set gives the same bits.
///
/// ```
/// use pinnersage_core::scan::dot_rows;
/// let rows = [1.0, 0.0, 0.5, 0.5, -1.0, 2.0];
/// let mut out = [0.0; 3];
/// dot_rows(&[2.0, 1.0], &rows, &mut out);
/// assert_eq!(out, [2.0, 1.5, 0.0]);
/// ```
pub fn dot_rows(query: &[f32], rows: &[f32], out: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    match crate::simd::level() {
        // SAFETY: the CPU has AVX-512F (V4) or AVX (V3).
        crate::simd::Level::V4 => return unsafe { dot_rows_avx512(query, rows, out) },
        crate::simd::Level::V3 => return unsafe { dot_rows_avx(query, rows, out) },
        crate::simd::Level::Baseline => {}
    }
    dot_rows_body(query, rows, out)
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
        for dim in [1, 5, 16, 37, 128, 133] {
            agrees_with_f64(dim);
        }
    }

    fn agrees_with_f64(dim: usize) {
        let rows: Vec<f32> = (0..dim * 5)
            .map(|i| ((i * 7919) % 113) as f32 / 50.0 - 1.0)
            .collect();
        let q: Vec<f32> = (0..dim).map(|i| (i as f32 * 0.37).sin()).collect();
        let mut fast = vec![0.0; 5];
        dot_rows(&q, &rows, &mut fast);
        let mut base = vec![0.0; 5];
        dot_rows_body(&q, &rows, &mut base);
        #[cfg(target_arch = "x86_64")]
        {
            let mut copy = vec![0.0; 5];
            if std::arch::is_x86_feature_detected!("avx") {
                // SAFETY: the CPU has AVX.
                unsafe { dot_rows_avx(&q, &rows, &mut copy) };
                assert_eq!(copy, base, "the AVX copy (dim {dim})");
            }
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU has AVX-512F.
                unsafe { dot_rows_avx512(&q, &rows, &mut copy) };
                assert_eq!(copy, base, "the AVX-512 copy (dim {dim})");
            }
        }
        assert_eq!(
            fast, base,
            "dispatched copy must be bit-identical to the baseline (dim {dim})"
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
