//! The upper triangle of a Gram matrix `Y · Yᵀ`, the bulk of the distance step.
//!
//! The rows are packed once, as they are centred, into panels of [`PANEL`] rows stored
//! dimension-major, so the kernel reads both operands with plain vector loads and broadcasts and
//! no packing pass runs per block. Each [`TILE_ROWS`] x [`TILE_COLS`] tile keeps its dot products
//! in registers: 16 AVX-512 accumulators, or four passes of 8 AVX2 ones, or plain Rust elsewhere.
//!
//! Every entry is a chain of fused multiply-adds over the dimensions in order, restarted every
//! [`K_BLOCK`] dimensions with the chains summed: the rounding of a blocked `sgemm` with
//! `k`-blocks of 256 (what `matrixmultiply` computes, and the test checks bit for bit), on every
//! instruction set. Profiles are therefore identical across machines.

use crate::embeddings::Embeddings;

/// Rows per packed panel (one AVX-512 register of `f32`).
pub(crate) const PANEL: usize = 16;

/// Rows of one tile (the broadcast side of the kernel).
const TILE_ROWS: usize = 8;

/// Columns of one tile: two panels.
const TILE_COLS: usize = 2 * PANEL;

/// Dimensions per chain of fused multiply-adds.
const K_BLOCK: usize = 256;

/// One tile of dot products.
type Tile = [[f32; TILE_COLS]; TILE_ROWS];

/// Rows of the packed matrix: `n` rounded up to whole tiles of columns.
fn padded_rows(n: usize) -> usize {
    n.next_multiple_of(TILE_COLS)
}

crate::simd::multiversion! {
    /// Fills `packed` with the rows of `x` minus their mean, in panels of [`PANEL`] rows stored
    /// dimension-major (`packed[(p·d + k)·PANEL + l]` is dimension `k` of row `p·PANEL + l`),
    /// zero rows up to a whole tile; and `norms` with the centred rows' squared norms (summed in
    /// `f64`, stored as `f32`: the precision of the Gram form they enter).
    pub(crate) fn pack_centred(x: Embeddings<'_>, packed: &mut Vec<f32>, norms: &mut Vec<f32>) => pack_centred_impl;
}

#[inline(always)]
fn pack_centred_impl(x: Embeddings<'_>, packed: &mut Vec<f32>, norms: &mut Vec<f32>) {
    let (n, d) = (x.rows(), x.dim());
    let mut mean = vec![0.0f64; d];
    for i in 0..n {
        for (m, &v) in mean.iter_mut().zip(x.row(i)) {
            *m += f64::from(v);
        }
    }
    let mean: Vec<f32> = mean.iter().map(|m| (m / n as f64) as f32).collect();
    // Every value is written below (padding rows as zeros), so only grown space is zeroed here.
    packed.resize(padded_rows(n) * d, 0.0);
    norms.clear();
    // One panel's rows centred, row-major, then transposed into the panel.
    let mut rows = vec![0.0f32; PANEL * d];
    for (p, panel) in packed.chunks_exact_mut(PANEL * d).enumerate() {
        for (l, centred) in rows.chunks_exact_mut(d).enumerate() {
            let i = p * PANEL + l;
            if i < n {
                for ((c, &v), &m) in centred.iter_mut().zip(x.row(i)).zip(&mean) {
                    *c = v - m;
                }
                norms.push(crate::simd::sum_sq(centred, centred, |v, _| f64::from(v)) as f32);
            } else {
                centred.fill(0.0);
            }
        }
        transpose_panel(&rows, d, panel);
    }
}

/// Writes the `PANEL x d` row-major `rows` dimension-major into `panel` (`d x PANEL`).
fn transpose_panel(rows: &[f32], d: usize, panel: &mut [f32]) {
    assert!(rows.len() == PANEL * d && panel.len() == PANEL * d);
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if crate::simd::level() == crate::simd::Level::V4 {
        // SAFETY: the CPU has AVX-512F; the lengths are checked above.
        done = unsafe { transpose_blocks_avx512(rows, d, panel) };
    }
    for k in done..d {
        for l in 0..PANEL {
            panel[k * PANEL + l] = rows[l * d + k];
        }
    }
}

/// Transposes the whole 16 x 16 blocks of [`transpose_panel`] in registers; returns the number of
/// dimensions done (the rest is left to the caller).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f")]
unsafe fn transpose_blocks_avx512(rows: &[f32], d: usize, panel: &mut [f32]) -> usize {
    use std::arch::x86_64::*;
    const _: () = assert!(PANEL == 16);
    let blocks = d / PANEL;
    for b in 0..blocks {
        let k0 = b * PANEL;
        // SAFETY: row l's dimensions k0..k0 + 16 lie inside `rows` (k0 + 16 <= d).
        let r: [__m512; 16] =
            std::array::from_fn(|l| unsafe { _mm512_loadu_ps(rows[l * d + k0..].as_ptr()) });
        // Interleave 32-bit, then 64-bit elements of row pairs, then 128-bit lanes twice.
        let t: [__m512; 16] = std::array::from_fn(|i| {
            let (a, b) = (r[i / 2 * 2], r[i / 2 * 2 + 1]);
            if i % 2 == 0 {
                _mm512_unpacklo_ps(a, b)
            } else {
                _mm512_unpackhi_ps(a, b)
            }
        });
        let u: [__m512; 16] = std::array::from_fn(|i| {
            let base = i / 4 * 4;
            let (a, b) = (
                _mm512_castps_pd(t[base + i % 2]),
                _mm512_castps_pd(t[base + 2 + i % 2]),
            );
            _mm512_castpd_ps(if i % 4 < 2 {
                _mm512_unpacklo_pd(a, b)
            } else {
                _mm512_unpackhi_pd(a, b)
            })
        });
        let v: [__m512; 16] = std::array::from_fn(|i| {
            let base = i / 8 * 8;
            let (a, b) = (u[base + i % 4], u[base + 4 + i % 4]);
            if i % 8 < 4 {
                _mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_f32x4::<0xdd>(a, b)
            }
        });
        let w: [__m512; 16] = std::array::from_fn(|i| {
            let (a, b) = (v[i % 8], v[8 + i % 8]);
            if i < 8 {
                _mm512_shuffle_f32x4::<0x88>(a, b)
            } else {
                _mm512_shuffle_f32x4::<0xdd>(a, b)
            }
        });
        for (k, w) in w.iter().enumerate() {
            // SAFETY: dimension k0 + k's 16 values lie inside `panel`.
            unsafe { _mm512_storeu_ps(panel[(k0 + TRANSPOSED[k]) * PANEL..].as_mut_ptr(), *w) };
        }
    }
    blocks * PANEL
}

/// Which dimension of a 16 x 16 block each output register of the shuffles above holds.
#[cfg(target_arch = "x86_64")]
const TRANSPOSED: [usize; 16] = [0, 2, 1, 3, 4, 6, 5, 7, 8, 10, 9, 11, 12, 14, 13, 15];

/// The upper triangle (`j > i`) of the Gram matrix of the `n` rows of dimension `d` packed by
/// [`pack_centred`], handed out piece by piece: `emit(i, j, values)` receives the dot products of
/// row `i` with rows `j..j + values.len()` (all right of the diagonal). Every such entry comes
/// exactly once; `emit` runs inside the kernel's instruction set, so its loops vectorise with it.
pub(crate) fn gram_upper(
    packed: &[f32],
    n: usize,
    d: usize,
    emit: impl FnMut(usize, usize, &[f32]),
) {
    assert!(packed.len() >= padded_rows(n) * d);
    #[cfg(target_arch = "x86_64")]
    match crate::simd::level() {
        // SAFETY: the CPU has the features each kernel is compiled for.
        crate::simd::Level::V4 => return unsafe { gram_upper_avx512(packed, n, d, emit) },
        crate::simd::Level::V3 => return unsafe { gram_upper_avx2(packed, n, d, emit) },
        crate::simd::Level::Baseline => {}
    }
    tiles(packed, n, d, emit, tile_portable);
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512vl,avx2,fma")]
unsafe fn gram_upper_avx512(
    packed: &[f32],
    n: usize,
    d: usize,
    emit: impl FnMut(usize, usize, &[f32]),
) {
    // SAFETY (of the closure): this function runs only where AVX-512F is available.
    tiles(packed, n, d, emit, |a, o, b, d, t| unsafe {
        tile_avx512(a, o, b, d, t)
    });
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn gram_upper_avx2(
    packed: &[f32],
    n: usize,
    d: usize,
    emit: impl FnMut(usize, usize, &[f32]),
) {
    // SAFETY (of the closure): this function runs only where AVX2 and FMA are available.
    tiles(packed, n, d, emit, |a, o, b, d, t| unsafe {
        tile_avx2(a, o, b, d, t)
    });
}

/// Walks the tiles that reach right of the diagonal, column block by column block, and emits each
/// tile row's part right of the diagonal. `tile(rows, offset, cols, d, out)` computes the dot
/// products of rows `offset..offset + TILE_ROWS` of the panel `rows` with the `TILE_COLS` rows of
/// the two panels in `cols`.
#[inline(always)]
fn tiles(
    packed: &[f32],
    n: usize,
    d: usize,
    mut emit: impl FnMut(usize, usize, &[f32]),
    tile: impl Fn(&[f32], usize, &[f32], usize, &mut Tile),
) {
    let panel_len = PANEL * d;
    let mut values: Tile = [[0.0; TILE_COLS]; TILE_ROWS];
    // Column blocks outside: a block's two panels (32 KiB at d = 256) stay in cache while the
    // row blocks above and left of its end stream past.
    for j0 in (0..n).step_by(TILE_COLS) {
        let cols = &packed[j0 * d..(j0 + TILE_COLS) * d];
        for i0 in (0..(j0 + TILE_COLS).min(n)).step_by(TILE_ROWS) {
            let (panel, offset) = (i0 / PANEL, i0 % PANEL);
            let rows = &packed[panel * panel_len..(panel + 1) * panel_len];
            tile(rows, offset, cols, d, &mut values);
            for (r, row) in values.iter().enumerate() {
                let i = i0 + r;
                if i >= n {
                    break;
                }
                let (from, to) = ((i + 1).max(j0), (j0 + TILE_COLS).min(n));
                if from < to {
                    emit(i, from, &row[from - j0..to - j0]);
                }
            }
        }
    }
}

/// Checks the slice lengths every kernel relies on.
#[inline(always)]
fn check_tile_args(rows: &[f32], offset: usize, cols: &[f32], d: usize) {
    assert!(rows.len() >= PANEL * d && offset + TILE_ROWS <= PANEL && cols.len() >= 2 * PANEL * d);
}

/// The tile kernel in plain Rust (`mul_add` is one rounding, as the SIMD kernels' FMAs).
fn tile_portable(rows: &[f32], offset: usize, cols: &[f32], d: usize, out: &mut Tile) {
    check_tile_args(rows, offset, cols, d);
    for k0 in (0..d).step_by(K_BLOCK) {
        let mut acc: Tile = [[0.0; TILE_COLS]; TILE_ROWS];
        for k in k0..(k0 + K_BLOCK).min(d) {
            for (r, acc) in acc.iter_mut().enumerate() {
                let a = rows[k * PANEL + offset + r];
                for (c, acc) in acc.iter_mut().enumerate() {
                    let b = cols[(c / PANEL * d + k) * PANEL + c % PANEL];
                    *acc = a.mul_add(b, *acc);
                }
            }
        }
        for (o, acc) in out.iter_mut().zip(&acc) {
            for (o, &a) in o.iter_mut().zip(acc) {
                *o = if k0 == 0 { a } else { a + *o };
            }
        }
    }
}

/// The tile kernel with 16 AVX-512 accumulators (8 rows x 2 registers).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
#[inline]
unsafe fn tile_avx512(rows: &[f32], offset: usize, cols: &[f32], d: usize, out: &mut Tile) {
    use std::arch::x86_64::*;
    check_tile_args(rows, offset, cols, d);
    let (a, b0, b1) = (
        rows[offset..].as_ptr(),
        cols.as_ptr(),
        cols[PANEL * d..].as_ptr(),
    );
    for k0 in (0..d).step_by(K_BLOCK) {
        let mut acc = [[_mm512_setzero_ps(); 2]; TILE_ROWS];
        for k in k0..(k0 + K_BLOCK).min(d) {
            // SAFETY: k < d, so every read stays inside the panels checked above.
            let (lo, hi) = unsafe {
                (
                    _mm512_loadu_ps(b0.add(k * PANEL)),
                    _mm512_loadu_ps(b1.add(k * PANEL)),
                )
            };
            for (r, acc) in acc.iter_mut().enumerate() {
                let x = _mm512_set1_ps(unsafe { *a.add(k * PANEL + r) });
                acc[0] = _mm512_fmadd_ps(x, lo, acc[0]);
                acc[1] = _mm512_fmadd_ps(x, hi, acc[1]);
            }
        }
        for (o, acc) in out.iter_mut().zip(&acc) {
            for (h, &acc) in acc.iter().enumerate() {
                let o = o[h * PANEL..].as_mut_ptr();
                // SAFETY: `o` points at PANEL values of the tile row.
                unsafe {
                    let sum = if k0 == 0 {
                        acc
                    } else {
                        _mm512_add_ps(acc, _mm512_loadu_ps(o))
                    };
                    _mm512_storeu_ps(o, sum);
                }
            }
        }
    }
}

/// The tile kernel with AVX2: the tile in four quarters of 4 rows x 16 columns, 8 accumulators
/// each.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
unsafe fn tile_avx2(rows: &[f32], offset: usize, cols: &[f32], d: usize, out: &mut Tile) {
    use std::arch::x86_64::*;
    const QUARTER_ROWS: usize = TILE_ROWS / 2;
    check_tile_args(rows, offset, cols, d);
    for (half, cols) in [&cols[..PANEL * d], &cols[PANEL * d..]]
        .into_iter()
        .enumerate()
    {
        for r0 in (0..TILE_ROWS).step_by(QUARTER_ROWS) {
            let (a, b) = (rows[offset + r0..].as_ptr(), cols.as_ptr());
            for k0 in (0..d).step_by(K_BLOCK) {
                let mut acc = [[_mm256_setzero_ps(); 2]; QUARTER_ROWS];
                for k in k0..(k0 + K_BLOCK).min(d) {
                    // SAFETY: k < d, so every read stays inside the panels checked above.
                    let (lo, hi) = unsafe {
                        (
                            _mm256_loadu_ps(b.add(k * PANEL)),
                            _mm256_loadu_ps(b.add(k * PANEL + 8)),
                        )
                    };
                    for (r, acc) in acc.iter_mut().enumerate() {
                        let x = _mm256_set1_ps(unsafe { *a.add(k * PANEL + r) });
                        acc[0] = _mm256_fmadd_ps(x, lo, acc[0]);
                        acc[1] = _mm256_fmadd_ps(x, hi, acc[1]);
                    }
                }
                for (r, acc) in acc.iter().enumerate() {
                    for (e, &acc) in acc.iter().enumerate() {
                        let o = out[r0 + r][half * PANEL + e * 8..].as_mut_ptr();
                        // SAFETY: `o` points at 8 values of the tile row.
                        unsafe {
                            let sum = if k0 == 0 {
                                acc
                            } else {
                                _mm256_add_ps(acc, _mm256_loadu_ps(o))
                            };
                            _mm256_storeu_ps(o, sum);
                        }
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sample::uniform_rows;

    type TileFn = fn(&[f32], usize, &[f32], usize, &mut Tile);

    /// The upper triangle of the Gram matrix of `x` from tiles of `tile` (the dispatched kernel
    /// if `None`), NaN elsewhere, and the packed rows.
    fn upper(x: &[f32], m: usize, d: usize, tile: Option<TileFn>) -> (Vec<f32>, Vec<f32>) {
        let emb = Embeddings::new(x, d).unwrap();
        let (mut packed, mut norms) = (Vec::new(), Vec::new());
        pack_centred(emb, &mut packed, &mut norms);
        let mut gram = vec![f32::NAN; m * m];
        let emit = |i: usize, j: usize, values: &[f32]| {
            for (k, &v) in values.iter().enumerate() {
                assert!(
                    gram[i * m + j + k].is_nan(),
                    "({i}, {}) emitted twice",
                    j + k
                );
                gram[i * m + j + k] = v;
            }
        };
        match tile {
            Some(tile) => tiles(&packed, m, d, emit, tile),
            None => gram_upper(&packed, m, d, emit),
        }
        (gram, packed)
    }

    /// Every kernel gives the bits of `matrixmultiply`'s `sgemm` (the previous path, and the
    /// reference), for sizes off the tile grid and for more dimensions than one `k`-block.
    #[test]
    fn kernels_match_sgemm_bit_for_bit() {
        for (m, d) in [(1, 3), (7, 5), (33, 40), (130, 256), (75, 300), (41, 600)] {
            let x: Vec<f32> = uniform_rows(m as u64, m, d)
                .iter()
                .map(|v| v - 0.3)
                .collect();
            let (gram, packed) = upper(&x, m, d, None);
            let centred: Vec<f32> = (0..m)
                .flat_map(|i| (0..d).map(move |k| (i, k)))
                .map(|(i, k)| packed[(i / PANEL * d + k) * PANEL + i % PANEL])
                .collect();
            let mut reference = vec![0.0f32; m * m];
            // SAFETY: `centred` is m x d row-major, read as A (m x d) and as B = Aᵀ (d x m);
            // `reference` is m x m row-major. No overlap.
            unsafe {
                matrixmultiply::sgemm(
                    m,
                    d,
                    m,
                    1.0,
                    centred.as_ptr(),
                    d as isize,
                    1,
                    centred.as_ptr(),
                    1,
                    d as isize,
                    0.0,
                    reference.as_mut_ptr(),
                    m as isize,
                    1,
                );
            }
            let mut kernels: Vec<(&str, Vec<f32>)> = vec![
                ("dispatched", gram),
                ("portable", upper(&x, m, d, Some(tile_portable)).0),
            ];
            #[cfg(target_arch = "x86_64")]
            {
                use crate::simd::{Level, level};
                if level() != Level::Baseline {
                    let avx2: TileFn = |a, o, b, d, t| unsafe { tile_avx2(a, o, b, d, t) };
                    kernels.push(("avx2", upper(&x, m, d, Some(avx2)).0));
                }
                if level() == Level::V4 {
                    let avx512: TileFn = |a, o, b, d, t| unsafe { tile_avx512(a, o, b, d, t) };
                    kernels.push(("avx512", upper(&x, m, d, Some(avx512)).0));
                }
            }
            for (name, gram) in &kernels {
                for i in 0..m {
                    assert!(
                        gram[i * m..i * m + i + 1].iter().all(|v| v.is_nan()),
                        "{name} wrote left of the diagonal"
                    );
                    for j in i + 1..m {
                        let (got, want) = (gram[i * m + j], reference[i * m + j]);
                        assert_eq!(
                            got.to_bits(),
                            want.to_bits(),
                            "{name}: m {m} d {d} ({i}, {j})"
                        );
                    }
                }
            }
        }
    }

    /// Packing puts every centred value where the layout says, zeros in the padding, and the
    /// dispatched and baseline copies agree bit for bit.
    #[test]
    fn packing_follows_the_layout() {
        for (m, d) in [(37, 19), (40, 256), (3, 32)] {
            let x = uniform_rows(3, m, d);
            let emb = Embeddings::new(&x, d).unwrap();
            let (mut packed, mut norms) = (vec![f32::NAN; 7], Vec::new());
            pack_centred(emb, &mut packed, &mut norms);
            let mean: Vec<f32> = (0..d)
                .map(|k| ((0..m).map(|i| f64::from(x[i * d + k])).sum::<f64>() / m as f64) as f32)
                .collect();
            assert_eq!(packed.len(), padded_rows(m) * d);
            for i in 0..padded_rows(m) {
                for k in 0..d {
                    let want = if i < m { x[i * d + k] - mean[k] } else { 0.0 };
                    let got = packed[(i / PANEL * d + k) * PANEL + i % PANEL];
                    assert_eq!(got.to_bits(), want.to_bits(), "m {m} d {d} row {i} dim {k}");
                }
            }
            let (mut packed_base, mut norms_base) = (Vec::new(), Vec::new());
            pack_centred_impl(emb, &mut packed_base, &mut norms_base);
            assert_eq!((packed, norms), (packed_base, norms_base));
        }
    }

    /// The register transposition moves every value where the plain loop puts it.
    #[test]
    fn register_transpose_matches_the_plain_loop() {
        for d in [16, 37, 256] {
            let rows: Vec<f32> = (0..PANEL * d).map(|v| v as f32).collect();
            let mut panel = vec![f32::NAN; PANEL * d];
            transpose_panel(&rows, d, &mut panel);
            for k in 0..d {
                for l in 0..PANEL {
                    assert_eq!(
                        panel[k * PANEL + l],
                        rows[l * d + k],
                        "d {d}, dimension {k}, row {l}"
                    );
                }
            }
        }
    }
}
