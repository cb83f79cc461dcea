//! Reduced-precision encoder products on AVX512_BF16: `C = X W^T` with `X` `[B, M]` and `W`
//! `[N, M]` rounded to bfloat16, products exact and accumulated in f32 (`vdpbf16ps`), together
//! with what a rigorous bound on their error needs (the norms below).
//!
//! No crate offers this product: `gemm` 0.19 has f16 (converted to f32, or AVX512-FP16 on Intel),
//! no bf16 dot-product kernel, and candle's CPU bf16 matmul goes through `gemm` the same way. So
//! the micro-kernel is written here, with a naive reference in the tests.
//!
//! # Rounding and its error
//!
//! Each value `v` is rounded to the nearest bfloat16 (ties to even) `v̂`, and a `v̂` that is
//! subnormal is replaced by 0, because `vdpbf16ps` reads subnormal inputs as zero. The residual
//! `e = v - v̂` is then exact in f32 (it is the low bits of `v`, or `v` itself when flushed). For a
//! latent row `w` and an input `x`, with `ŵ`, `x̂`, `e_w`, `e_x` so defined,
//!
//! ```text
//! ŵ·x̂ - w·x = -e_w·x - w·e_x + e_w·e_x,
//! |ŵ·x̂ - w·x| <= |e_w| |x| + |w| |e_x| + |e_w| |e_x|         (Cauchy-Schwarz)
//! ```
//!
//! The products `ŵ_i x̂_i` are exact in f32 (8-bit significands), so the kernel's only other
//! errors are its f32 additions, at most `γ_M Σ|ŵ_i x̂_i| <= γ_M |ŵ| |x̂|` for `M` terms in any
//! order (`γ_n = n u / (1 - n u)`, `u = 2^-24`), and flushes of subnormal sums and products, less
//! than `2^-126` each (at most `2M` of them). [`PackedRows`] keeps the largest `|w|`, `|ŵ|` and
//! `|e_w|` over its rows; [`pack_rows`] returns the same per input row.

use std::ops::Range;

/// Latents per micro-panel: two registers of 16 f32 lanes.
pub const NR: usize = 32;
/// Rows of `X` per micro-tile (24 accumulators, 2 panel registers and a broadcast: 27 of the 32
/// vector registers).
const MR: usize = 12;

/// Rows of `X` per block of the vector kernels (this one's and [`super::int16`]'s): their
/// reduced-precision inputs stay in L2 (288 KB at M = 768) while every panel streams past them.
/// Measured with the AVX-512 kernel at 768 x 16384 x batch 4096 on a 2-core AMD EPYC (Zen 4,
/// 1 MB of L2 a core), alternating runs: 1,152 rows (1.7 MB) 270-290 ms, 192 rows 251-273.
pub(super) const BLOCK_ROWS: usize = 192;
const _: () = assert!(BLOCK_ROWS.is_multiple_of(MR), "whole micro-tiles per block");

/// Whether this CPU runs [`matmul_bf16`].
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
            && std::arch::is_x86_feature_detected!("avx512bf16")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The Euclidean norms of a row, of its bfloat16 rounding and of the rounding's residual (upper
/// bounds: computed in f64 and rounded up).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RoundingNorms {
    /// `|v|`.
    pub value: f64,
    /// `|v̂|`.
    pub rounded: f64,
    /// `|v - v̂|`.
    pub residual: f64,
}

impl RoundingNorms {
    /// Each norm the larger of the two (infinite when either is NaN).
    pub(super) fn max(self, o: RoundingNorms) -> RoundingNorms {
        RoundingNorms {
            value: max_or_inf(self.value, o.value),
            rounded: max_or_inf(self.rounded, o.rounded),
            residual: max_or_inf(self.residual, o.residual),
        }
    }
}

/// The larger of two norms, infinite when either is NaN (`f64::max` would drop the NaN, and a
/// bound built on it would look finite).
pub fn max_or_inf(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::INFINITY
    } else {
        a.max(b)
    }
}

/// `W` `[N, M]` rounded to bfloat16 and packed for the micro-kernel: panels of [`NR`] rows, each
/// stored pair of columns by pair of columns (`[panel][M/2][NR][2]`), zero-padded to whole panels
/// and an even number of columns.
#[derive(Clone, Debug, Default)]
pub struct PackedRows {
    pub(super) data: Vec<u16>,
    pub(super) rows: usize,
    cols: usize,
    /// The largest norms over the rows.
    pub norms: RoundingNorms,
}

/// Rounds `v` to the nearest bfloat16 (ties to even), subnormal results flushed to zero; returns
/// the bits. Non-finite values are not special-cased: callers check the norms for infinity.
#[inline(always)]
pub fn round(v: f32) -> u16 {
    let bits = v.to_bits();
    let r = (bits.wrapping_add(0x7FFF + ((bits >> 16) & 1)) >> 16) as u16;
    if r & 0x7F80 == 0 {
        r & 0x8000
    } else {
        r
    }
}

/// The f32 value of bfloat16 bits.
#[inline(always)]
pub fn widen(h: u16) -> f32 {
    f32::from_bits((h as u32) << 16)
}

/// Rounds `row` into `out` (zero-padded to its length) and returns the row's norms. Inlined
/// into the callers' SIMD dispatch ([`super::simd::run`]), so that it compiles for AVX-512.
#[inline(always)]
fn round_row(row: &[f32], out: &mut [u16]) -> RoundingNorms {
    let h = |v: f32| {
        let h = round(v);
        (h, widen(h))
    };
    rounding_norms(row, out, h)
}

/// Writes `round(v)`'s stored form for every `v` of `row` into `out` (zero-padded to its length)
/// and returns the norms of the row, of the rounded values and of the residuals `v - v̂` (each
/// residual exact in f32 for the roundings used here). `round` returns the stored form and `v̂`.
#[inline(always)]
pub(super) fn rounding_norms<T: Copy + Default>(
    row: &[f32],
    out: &mut [T],
    round: impl Fn(f32) -> (T, f32),
) -> RoundingNorms {
    // Eight independent f64 accumulators per sum, so that the sums vectorize (one chain of f64
    // additions made this pass 19 ms of a 768 x 16384 step).
    const L: usize = 8;
    let (mut v2, mut r2, mut e2) = ([0.0f64; L], [0.0f64; L], [0.0f64; L]);
    for (o, v) in out.chunks_mut(L).zip(row.chunks(L)) {
        for (i, (o, &v)) in o.iter_mut().zip(v).enumerate() {
            let (h, r) = round(v);
            *o = h;
            let e = v - r;
            v2[i] += (v as f64) * (v as f64);
            r2[i] += (r as f64) * (r as f64);
            e2[i] += (e as f64) * (e as f64);
        }
    }
    out[row.len()..].fill(T::default());
    // f64 sums of at most 2^32 squares are within 2^-20 relative: round up by that much.
    let up = |s: [f64; L]| s.iter().sum::<f64>().sqrt() * (1.0 + 1e-6);
    RoundingNorms {
        value: up(v2),
        rounded: up(r2),
        residual: up(e2),
    }
}

/// Rounds the rows of `x` (`[rows, cols]`) into `out` as `[rows][cols rounded up to even]`
/// bfloat16 (one 32-bit pair per two columns) and writes each row's norms into `norms`.
pub fn pack_rows(x: &[f32], cols: usize, out: &mut Vec<u16>, norms: &mut Vec<RoundingNorms>) {
    use rayon::prelude::*;
    let stride = cols.next_multiple_of(2);
    let rows = x.len().checked_div(cols).unwrap_or(0);
    out.resize(rows * stride, 0);
    norms.resize(rows, RoundingNorms::default());
    out.par_chunks_mut(stride.max(1))
        .zip(x.par_chunks(cols.max(1)))
        .zip(norms.par_iter_mut())
        .for_each(|((o, r), n)| {
            *n = super::simd::run(
                #[inline(always)]
                || round_row(r, o),
            )
        });
}

/// Rounds and packs the rows of `w` (`[rows, cols]`) for [`matmul_bf16`].
pub fn pack_panels(w: &[f32], rows: usize, cols: usize, out: &mut PackedRows) {
    use rayon::prelude::*;
    let pairs = cols.div_ceil(2);
    let panels = rows.div_ceil(NR);
    out.rows = rows;
    out.cols = cols;
    out.data.resize(panels * pairs * NR * 2, 0);
    let norms: Vec<RoundingNorms> = out
        .data
        .par_chunks_mut((pairs * NR * 2).max(1))
        .enumerate()
        .map(|(p, panel)| {
            let mut row = vec![0u16; pairs * 2];
            let mut most = RoundingNorms::default();
            for l in 0..NR {
                let r = p * NR + l;
                if r < rows {
                    let src = &w[r * cols..(r + 1) * cols];
                    most = most.max(super::simd::run(
                        #[inline(always)]
                        || round_row(src, &mut row),
                    ));
                } else {
                    row.fill(0);
                }
                interleave_pairs(&row, panel, l, NR);
            }
            most
        })
        .collect();
    out.norms = norms
        .into_iter()
        .fold(RoundingNorms::default(), RoundingNorms::max);
}

/// Writes `row` as lane `lane` of a panel of `lanes` rows stored pair of columns by pair of
/// columns (`[pairs][lanes][2]`): the layout of the bfloat16 and integer micro-kernels.
pub(super) fn interleave_pairs<T: Copy>(row: &[T], panel: &mut [T], lane: usize, lanes: usize) {
    for (q, pair) in row.chunks_exact(2).enumerate() {
        let at = (q * lanes + lane) * 2;
        panel[at..at + 2].copy_from_slice(pair);
    }
}

/// `c[r][j] = Σ x̂[r] ŵ[j]` for every row `r` of `x` (packed by [`pack_rows`] from `cols` columns)
/// and every row `j` of `w`, into the row-major `c` `[rows, rows of w]`. Rows of `c` are split
/// among the current rayon pool's threads; each entry is summed in one fixed order, so the result
/// does not depend on the thread count.
///
/// Panics when the CPU lacks AVX512_BF16 (check [`available`]) or the shapes disagree.
pub fn matmul_bf16(c: &mut [f32], x: &[u16], w: &PackedRows) {
    use rayon::prelude::*;
    assert!(available(), "matmul_bf16 needs AVX512_BF16");
    let (n, pairs) = (w.rows, w.cols.div_ceil(2));
    let rows = x.len().checked_div(pairs * 2).unwrap_or(0);
    assert!(c.len() >= rows * n && x.len() == rows * pairs * 2);
    if rows == 0 || n == 0 {
        return;
    }
    let amx = super::amx::fits(pairs) && super::amx::available();
    // The AMX tiles keep the 1,152-row blocks they were measured with (on Intel).
    let block = if amx { 96 * MR } else { BLOCK_ROWS }.min(rows.next_multiple_of(MR));
    c[..rows * n]
        .par_chunks_mut(block * n)
        .zip(x.par_chunks(block * pairs * 2))
        .for_each(|(c, x)| {
            // AMX tiles take the whole 32-row groups where the CPU has them.
            let done = if amx {
                super::amx::block(c, x, w, pairs)
            } else {
                0
            };
            if done * pairs * 2 < x.len() {
                // SAFETY: the CPU has AVX512F and AVX512_BF16 (asserted above).
                unsafe { block_kernel(&mut c[done * n..], &x[done * pairs * 2..], w, pairs) }
            }
        });
}

/// One block of rows against every panel.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn block_kernel(c: &mut [f32], x: &[u16], w: &PackedRows, pairs: usize) {
    let n = w.rows;
    let rows = x.len() / (pairs * 2);
    for p in 0..n.div_ceil(NR) {
        let panel = &w.data[p * pairs * NR * 2..(p + 1) * pairs * NR * 2];
        let cols = p * NR..(p * NR + NR).min(n);
        let mut r = 0;
        while r < rows {
            let h = (rows - r).min(MR);
            let xs = &x[r * pairs * 2..(r + h) * pairs * 2];
            let out = &mut c[r * n..];
            // SAFETY: the feature is enabled on this function; the slices cover the tile.
            unsafe {
                match h {
                    MR => tile::<MR>(xs, panel, pairs, out, n, cols.clone()),
                    _ => tile_rest(h, xs, panel, pairs, out, n, cols.clone()),
                }
            }
            r += h;
        }
    }
}

#[cfg(not(target_arch = "x86_64"))]
unsafe fn block_kernel(_: &mut [f32], _: &[u16], _: &PackedRows, _: usize) {
    unreachable!("matmul_bf16 asserts the CPU feature")
}

/// The last, shorter tile of a block.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile_rest(
    h: usize,
    x: &[u16],
    panel: &[u16],
    pairs: usize,
    c: &mut [f32],
    n: usize,
    cols: Range<usize>,
) {
    // SAFETY: as the caller's.
    unsafe {
        match h {
            1 => tile::<1>(x, panel, pairs, c, n, cols),
            2 => tile::<2>(x, panel, pairs, c, n, cols),
            3 => tile::<3>(x, panel, pairs, c, n, cols),
            4 => tile::<4>(x, panel, pairs, c, n, cols),
            5 => tile::<5>(x, panel, pairs, c, n, cols),
            6 => tile::<6>(x, panel, pairs, c, n, cols),
            7 => tile::<7>(x, panel, pairs, c, n, cols),
            8 => tile::<8>(x, panel, pairs, c, n, cols),
            9 => tile::<9>(x, panel, pairs, c, n, cols),
            10 => tile::<10>(x, panel, pairs, c, n, cols),
            _ => tile::<11>(x, panel, pairs, c, n, cols),
        }
    }
}

/// The micro-kernel: `H` rows of `x` against one panel, into the columns `cols` of `c`'s first
/// `H` rows (row stride `n`). Per pair of columns: two panel loads, `H` broadcasts of the rows'
/// pairs, `2H` `vdpbf16ps`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx512bf16")]
unsafe fn tile<const H: usize>(
    x: &[u16],
    panel: &[u16],
    pairs: usize,
    c: &mut [f32],
    n: usize,
    cols: Range<usize>,
) {
    use std::arch::x86_64::*;
    debug_assert!(x.len() >= H * pairs * 2 && panel.len() >= pairs * NR * 2);
    debug_assert!(c.len() >= (H - 1) * n + cols.end);
    let mut acc = [[_mm512_setzero_ps(); 2]; H];
    let xp = x.as_ptr() as *const i32;
    let wp = panel.as_ptr() as *const __m512i;
    for q in 0..pairs {
        // SAFETY: q < pairs and the panel holds pairs * NR * 2 values (two registers per pair);
        // row r's pair q is at r * pairs + q < H * pairs 32-bit words of x.
        unsafe {
            let w0: __m512bh = std::mem::transmute(_mm512_loadu_si512(wp.add(2 * q)));
            let w1: __m512bh = std::mem::transmute(_mm512_loadu_si512(wp.add(2 * q + 1)));
            for (r, a) in acc.iter_mut().enumerate() {
                let xb: __m512bh = std::mem::transmute(_mm512_set1_epi32(*xp.add(r * pairs + q)));
                a[0] = _mm512_dpbf16_ps(a[0], w0, xb);
                a[1] = _mm512_dpbf16_ps(a[1], w1, xb);
            }
        }
    }
    let width = cols.len();
    let (m0, m1) = (
        lane_mask(width.min(16)),
        lane_mask(width.saturating_sub(16)),
    );
    for (r, a) in acc.iter().enumerate() {
        // SAFETY: row r's columns cols.start..cols.end lie inside c (debug-asserted above; the
        // caller passes c from row r0 on with n columns per row); masked lanes are not written.
        unsafe {
            let dst = c.as_mut_ptr().add(r * n + cols.start);
            _mm512_mask_storeu_ps(dst, m0, a[0]);
            _mm512_mask_storeu_ps(dst.add(16), m1, a[1]);
        }
    }
}

/// A mask of the first `w` (<= 16) lanes.
fn lane_mask(w: usize) -> u16 {
    if w >= 16 {
        u16::MAX
    } else {
        (1u16 << w) - 1
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// f64 sums of the exact products of the rounded values, and of their magnitudes: the
    /// kernel must be within its f32 accumulation error `γ_M Σ|x̂_i ŵ_i|` of these.
    fn naive(x: &[f32], w: &[f32], rows: usize, n: usize, m: usize) -> Vec<(f64, f64)> {
        let mut c = vec![(0.0, 0.0); rows * n];
        for r in 0..rows {
            for j in 0..n {
                let p = (0..m)
                    .map(|i| widen(round(x[r * m + i])) as f64 * widen(round(w[j * m + i])) as f64);
                c[r * n + j] = p.fold((0.0, 0.0), |(s, a), v| (s + v, a + v.abs()));
            }
        }
        c
    }

    #[test]
    fn rounding_is_to_nearest_even_with_subnormals_flushed() {
        assert_eq!(round(1.0), 0x3F80);
        // 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties to the even significand (1).
        assert_eq!(round(1.0 + 2f32.powi(-8)), 0x3F80);
        assert_eq!(round(1.0 + 3.0 * 2f32.powi(-8)), 0x3F82);
        assert_eq!(round(-2.5), half::bf16::from_f32(-2.5).to_bits());
        assert_eq!(round(1e-39), 0);
        assert_eq!(round(-1e-39), 0x8000);
        for v in [0.1f32, -3.7, 1234.5, 6.1e-5, 1e30] {
            assert_eq!(round(v), half::bf16::from_f32(v).to_bits(), "{v}");
        }
    }

    #[test]
    fn matches_naive_at_odd_sizes() {
        if !available() {
            return;
        }
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for &(rows, n, m) in &[
            (1, 1, 1),
            (13, 33, 7),
            (12, 32, 64),
            (29, 70, 129),
            (100, 5, 2),
            // Whole tile depths (pairs a multiple of 16): AMX tiles where the CPU has them, with
            // row groups past the last 32 and a partial last panel left to the edges.
            (32, 32, 32),
            (70, 70, 64),
            (1200, 40, 96),
        ] {
            let x: Vec<f32> = (0..rows * m).map(|_| rng.random_range(-2.0..2.0)).collect();
            let w: Vec<f32> = (0..n * m).map(|_| rng.random_range(-1.0..1.0)).collect();
            let (mut xb, mut xn, mut wp) = (Vec::new(), Vec::new(), PackedRows::default());
            pack_rows(&x, m, &mut xb, &mut xn);
            pack_panels(&w, n, m, &mut wp);
            let mut c = vec![f32::NAN; rows * n];
            matmul_bf16(&mut c, &xb, &wp);
            let want = naive(&x, &w, rows, n, m);
            for (i, (&a, &(b, mag))) in c.iter().zip(&want).enumerate() {
                let tol = m as f64 * 2f64.powi(-24) * mag;
                assert!(
                    (a as f64 - b).abs() <= tol,
                    "{rows}x{n}x{m} at {i}: {a} vs {b}"
                );
            }
        }
    }

    #[test]
    fn norms_bound_the_rounding() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let x: Vec<f32> = (0..3 * 50).map(|_| rng.random_range(-3.0..3.0)).collect();
        let (mut xb, mut xn) = (Vec::new(), Vec::new());
        pack_rows(&x, 50, &mut xb, &mut xn);
        for r in 0..3 {
            let row = &x[r * 50..(r + 1) * 50];
            let e: f64 = row
                .iter()
                .map(|&v| (v - widen(round(v))) as f64)
                .map(|e| e * e)
                .sum();
            assert!(xn[r].residual >= e.sqrt() && xn[r].residual <= e.sqrt() * 1.00001);
            assert!(xn[r].residual <= xn[r].value * 2f64.powi(-8));
        }
    }
}
