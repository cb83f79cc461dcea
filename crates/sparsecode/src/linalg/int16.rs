//! Integer encoder products for CPUs without bfloat16 dot products (AVX2's `vpmaddwd`): `C = X W^T`
//! with every row of `X` `[B, M]` and of `W` `[N, M]` scaled by a power of two and rounded to
//! 16-bit integers, the dot products summed exactly in 32-bit integers, each converted to f32 once
//! and scaled back. With the norms below this gives a rigorous bound on the error, for
//! [`crate::sae::certified`].
//!
//! No crate found offers this product: `gemm` 0.19 multiplies floats only, and the integer GEMM
//! found on crates.io (`gemmkit`'s `gemm_i8`, exact i32 sums) takes 8-bit inputs, whose rounding
//! would make the bound about 13 times looser (7 bits of magnitude against 11 at 768 columns) and
//! flood the exact pass with candidates. So the micro-kernel is written here, with a naive
//! reference in the tests. On the 2-core AMD EPYC (Zen 3, AVX2) of BENCHMARKS.md it computes the
//! 4096 x 16384 x 768 product in about 0.6x the time of the `gemm` crate's f32 product
//! (`vpmaddwd` does 16 multiply-adds where `vfmadd231ps` does 8, but needs a `vpaddd` to
//! accumulate).
//!
//! # Rounding and its error
//!
//! A row `v` gets the scale `s = 2^e`, the smallest power of two with `max|v_i| <= Q s`, and the
//! integers `q_i = round(v_i / s)` (ties to even), so `|q_i| <= Q`. With `v̂ = q s` and
//! `e = v - v̂` (both exact in f32: `v_i / s` is exact wherever it can round to a non-zero
//! integer, and Sterbenz's lemma covers `v_i - q_i s`),
//!
//! ```text
//! ŵ·x̂ - w·x = -e_w·x - w·e_x + e_w·e_x,
//! |ŵ·x̂ - w·x| <= |e_w| |x| + |w| |e_x| + |e_w| |e_x|         (Cauchy-Schwarz)
//! ```
//!
//! The integer sum `D = Σ q_x,i q_w,i` is exact: `Q` is chosen so that `M Q² < 2^31` (and
//! `2 Q² < 2^31` for the pairs `vpmaddwd` adds). Its conversion to f32 rounds by at most `2u|D|`
//! (`u = 2^-24`, any rounding mode), and the scales are kept within `[2^-40, 2^40]` so that
//! multiplying by `s_x s_w` is exact: the kernel returns `ŵ·x̂` within `2u |ŵ| |x̂|`. A row whose
//! scale would leave that range (or whose values are not finite) gets infinite norms, which make
//! the caller's bound infinite (it then computes that row exactly). Unlike a float product, the
//! result does not depend on the order of the sum: the AVX2 kernel and the portable loop return
//! the same bits.

use super::bf16::{rounding_norms, RoundingNorms, BLOCK_ROWS};
use std::ops::Range;

/// Latents per micro-panel: two registers of 8 32-bit lanes, each lane a pair of columns.
pub const NR: usize = 16;
/// Rows of `X` per micro-tile (12 accumulators, 2 panel registers and a broadcast: 15 of the 16
/// vector registers).
const MR: usize = 6;
const _: () = assert!(BLOCK_ROWS.is_multiple_of(MR), "whole micro-tiles per block");
/// `1.5 * 2^23`: adding and subtracting it rounds an f32 of magnitude below 2^22 to an integer.
const MAGIC: f32 = 12582912.0;
/// Scales are powers of two with exponents in this range (see the module docs).
const EXPONENTS: Range<i32> = -40..41;

/// Whether this CPU runs the AVX2 kernel (elsewhere [`matmul_int16`] runs a portable loop with
/// the same result).
pub fn available() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx2")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// The largest integer magnitude `Q` for rows of `cols` columns: `M Q² < 2^31` over the
/// columns padded to pairs, and at most `i16::MAX`.
pub fn limit(cols: usize) -> i32 {
    let terms = cols.next_multiple_of(2).max(2) as i64;
    let mut q = ((i32::MAX as i64 / terms) as f64).sqrt() as i64;
    while q * q * terms > i32::MAX as i64 {
        q -= 1;
    }
    q.min(i16::MAX as i64) as i32
}

/// Integer rows with their scales and norms, for [`matmul_int16`]: the rows of `X` as
/// `[rows][cols rounded up to even]`, or the rows of `W` packed in panels of [`NR`] rows stored
/// pair of columns by pair of columns (`[panel][M/2][NR][2]`), zero-padded to whole panels.
#[derive(Clone, Debug, Default)]
pub struct IntRows {
    pub(super) data: Vec<i16>,
    /// Per row, the power of two `s` with `v̂ = q s` (0 for padding rows).
    pub(super) scales: Vec<f32>,
    rows: usize,
    cols: usize,
    /// Per row: `|v|`, `|v̂|`, `|v - v̂|`.
    pub norms: Vec<RoundingNorms>,
}

impl IntRows {
    /// The largest of each norm over the rows (infinite when any is NaN).
    pub fn largest_norms(&self) -> RoundingNorms {
        self.norms
            .iter()
            .fold(RoundingNorms::default(), |a, &b| a.max(b))
    }
}

/// The scale of a row whose largest magnitude is `most`, or `None` outside the admitted range.
fn scale_for(most: f32, q: i32) -> Option<f32> {
    if !most.is_finite() {
        return None;
    }
    if most == 0.0 {
        return Some(1.0);
    }
    let mut e = ((most as f64) / q as f64).log2().ceil() as i32;
    // log2 of a float may be off by an ulp: settle on the smallest e with most <= q 2^e.
    while (most as f64) > q as f64 * 2f64.powi(e) {
        e += 1;
    }
    while (most as f64) <= q as f64 * 2f64.powi(e - 1) {
        e -= 1;
    }
    EXPONENTS.contains(&e).then(|| 2f32.powi(e))
}

/// Rounds `row` to integers of magnitude at most `q` into `out` (zero-padded to its length) and
/// returns the scale and the row's norms. Inlined into [`super::simd::run`] so that it compiles
/// for the CPU's vector unit.
#[inline(always)]
fn round_row(row: &[f32], q: i32, out: &mut [i16]) -> (f32, RoundingNorms) {
    let most = row.iter().fold(0.0f32, |m, &v| {
        if v.abs() > m || v.is_nan() {
            v.abs()
        } else {
            m
        }
    });
    let Some(s) = scale_for(most, q) else {
        out.fill(0);
        let inf = f64::INFINITY;
        return (
            0.0,
            RoundingNorms {
                value: inf,
                rounded: inf,
                residual: inf,
            },
        );
    };
    // Exact: a power of two in range.
    let inv = 1.0 / s;
    // Round to nearest even by adding and removing 1.5 * 2^23 (exact for |y| <= 2^22, and
    // |v / s| <= Q < 2^15 here): `round_ties_even` compiled to a call of libm's rintf. The
    // residual v - n s is exact (module docs).
    let to_int = |v: f32| {
        let n = ((v * inv) + MAGIC) - MAGIC;
        (n as i16, n * s)
    };
    (s, rounding_norms(row, out, to_int))
}

/// Rounds the rows of `x` (`[rows, cols]`) into `out` (row by row, each row's norms kept).
pub fn pack_rows(x: &[f32], cols: usize, out: &mut IntRows) {
    use rayon::prelude::*;
    let stride = cols.next_multiple_of(2);
    let rows = x.len().checked_div(cols).unwrap_or(0);
    let q = limit(cols);
    out.rows = rows;
    out.cols = cols;
    out.data.resize(rows * stride, 0);
    out.scales.resize(rows, 0.0);
    out.norms.resize(rows, RoundingNorms::default());
    out.data
        .par_chunks_mut(stride.max(1))
        .zip(x.par_chunks(cols.max(1)))
        .zip(out.scales.par_iter_mut().zip(out.norms.par_iter_mut()))
        .for_each(|((o, r), (s, n))| {
            (*s, *n) = super::simd::run(
                #[inline(always)]
                || round_row(r, q, o),
            )
        });
}

/// Rounds and packs the rows of `w` (`[rows, cols]`) in panels (padding rows: scale and norms 0).
pub fn pack_panels(w: &[f32], rows: usize, cols: usize, out: &mut IntRows) {
    use rayon::prelude::*;
    let pairs = cols.div_ceil(2);
    let panels = rows.div_ceil(NR);
    let q = limit(cols);
    out.rows = rows;
    out.cols = cols;
    out.data.resize(panels * pairs * NR * 2, 0);
    out.scales.resize(panels * NR, 0.0);
    out.norms.resize(panels * NR, RoundingNorms::default());
    out.data
        .par_chunks_mut((pairs * NR * 2).max(1))
        .zip(out.scales.par_chunks_mut(NR))
        .zip(out.norms.par_chunks_mut(NR))
        .enumerate()
        .for_each_init(
            || vec![0i16; pairs * 2],
            |row, (p, ((panel, scales), norms))| {
                for (l, (scale, norm)) in scales.iter_mut().zip(norms).enumerate() {
                    let r = p * NR + l;
                    (*scale, *norm) = match r < rows {
                        true => {
                            let src = &w[r * cols..(r + 1) * cols];
                            super::simd::run(
                                #[inline(always)]
                                || round_row(src, q, row),
                            )
                        }
                        false => {
                            row.fill(0);
                            (0.0, RoundingNorms::default())
                        }
                    };
                    super::bf16::interleave_pairs(row, panel, l, NR);
                }
            },
        );
}

/// `c[r][j] = ŵ_j·x̂_r` for every row `r` of `x` (packed by [`pack_rows`]) and every row `j` of `w`
/// (packed by [`pack_panels`] from as many columns), into the row-major `c` `[rows, rows of w]`.
/// Rows of `c` are split among the current rayon pool's threads; the integer sums are exact, so
/// the result depends neither on the thread count nor on the CPU.
///
/// Panics when the shapes disagree.
pub fn matmul_int16(c: &mut [f32], x: &IntRows, w: &IntRows) {
    use rayon::prelude::*;
    let (n, pairs, rows) = (w.rows, w.cols.div_ceil(2), x.rows);
    assert!(x.cols == w.cols && c.len() >= rows * n && x.data.len() == rows * pairs * 2);
    if rows == 0 || n == 0 {
        return;
    }
    let fast = available();
    let block = BLOCK_ROWS.min(rows.next_multiple_of(MR));
    c[..rows * n]
        .par_chunks_mut(block * n)
        .zip(x.data.par_chunks(block * pairs * 2))
        .zip(x.scales.par_chunks(block))
        .for_each(|((c, xq), xs)| {
            let b = Block { xq, xs, pairs, n };
            if fast {
                // SAFETY: the CPU has AVX2 (checked above).
                #[cfg(target_arch = "x86_64")]
                unsafe {
                    b.run_avx2(c, w)
                }
            } else {
                b.run_portable(c, w)
            }
        });
}

/// A block of rows of `X`: integers, scales, and the product's sizes.
struct Block<'a> {
    xq: &'a [i16],
    xs: &'a [f32],
    pairs: usize,
    n: usize,
}

impl Block<'_> {
    fn rows(&self) -> usize {
        self.xs.len()
    }

    /// The panels and micro-tiles of this block, each handed to `tile(first row, rows, panel)`.
    fn for_each_tile(&self, mut tile: impl FnMut(usize, usize, usize)) {
        for p in 0..self.n.div_ceil(NR) {
            let mut r = 0;
            while r < self.rows() {
                let h = (self.rows() - r).min(MR);
                tile(r, h, p);
                r += h;
            }
        }
    }

    /// The reference: one entry at a time, in i64 (equal to the kernel's exact i32 sums).
    fn run_portable(&self, c: &mut [f32], w: &IntRows) {
        let (pairs, n) = (self.pairs, self.n);
        let len = pairs * NR * 2;
        for r in 0..self.rows() {
            let x = &self.xq[r * pairs * 2..(r + 1) * pairs * 2];
            for j in 0..n {
                let (p, l) = (j / NR, j % NR);
                let panel = &w.data[p * len..(p + 1) * len];
                let d: i64 = (0..pairs * 2)
                    .map(|i| x[i] as i64 * panel[((i / 2) * NR + l) * 2 + i % 2] as i64)
                    .sum();
                c[r * n + j] = d as i32 as f32 * (self.xs[r] * w.scales[j]);
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run_avx2(&self, c: &mut [f32], w: &IntRows) {
        let (pairs, n) = (self.pairs, self.n);
        let len = pairs * NR * 2;
        self.for_each_tile(|r, h, p| {
            let panel = &w.data[p * len..(p + 1) * len];
            let t = Tile {
                x: &self.xq[r * pairs * 2..(r + h) * pairs * 2],
                xs: &self.xs[r..r + h],
                panel,
                ws: &w.scales[p * NR..(p + 1) * NR],
                pairs,
                cols: p * NR..(p * NR + NR).min(n),
            };
            let out = &mut c[r * n..];
            // SAFETY: AVX2 is enabled on this function; the slices cover the tile.
            unsafe {
                match h {
                    MR => t.run::<MR>(out, n),
                    5 => t.run::<5>(out, n),
                    4 => t.run::<4>(out, n),
                    3 => t.run::<3>(out, n),
                    2 => t.run::<2>(out, n),
                    _ => t.run::<1>(out, n),
                }
            }
        });
    }
}

/// `H` rows of `X` against one panel of `W`.
struct Tile<'a> {
    x: &'a [i16],
    xs: &'a [f32],
    panel: &'a [i16],
    ws: &'a [f32],
    pairs: usize,
    cols: Range<usize>,
}

impl Tile<'_> {
    /// The micro-kernel, into the columns `cols` of `c`'s first `H` rows (row stride `n`). Per
    /// pair of columns: two panel loads, `H` broadcasts of the rows' pairs, `2H` `vpmaddwd` and
    /// `2H` `vpaddd`.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    unsafe fn run<const H: usize>(&self, c: &mut [f32], n: usize) {
        use std::arch::x86_64::*;
        let pairs = self.pairs;
        assert!(self.x.len() >= H * pairs * 2 && self.panel.len() >= pairs * NR * 2);
        assert!(self.xs.len() >= H && self.ws.len() >= NR);
        assert!(c.len() >= (H - 1) * n + self.cols.end);
        let mut acc = [[_mm256_setzero_si256(); 2]; H];
        let xp = self.x.as_ptr() as *const i32;
        let wp = self.panel.as_ptr() as *const __m256i;
        for q in 0..pairs {
            // SAFETY: q < pairs and the panel holds pairs * NR * 2 values (two registers per
            // pair); row r's pair q is the 32-bit word r * pairs + q < H * pairs of x (asserted).
            unsafe {
                let w0 = _mm256_loadu_si256(wp.add(2 * q));
                let w1 = _mm256_loadu_si256(wp.add(2 * q + 1));
                for (r, a) in acc.iter_mut().enumerate() {
                    let xb = _mm256_set1_epi32(xp.add(r * pairs + q).read_unaligned());
                    a[0] = _mm256_add_epi32(a[0], _mm256_madd_epi16(w0, xb));
                    a[1] = _mm256_add_epi32(a[1], _mm256_madd_epi16(w1, xb));
                }
            }
        }
        let width = self.cols.len();
        // SAFETY: ws holds NR scales (asserted).
        let (s0, s1) = unsafe {
            (
                _mm256_loadu_ps(self.ws.as_ptr()),
                _mm256_loadu_ps(self.ws.as_ptr().add(8)),
            )
        };
        for (r, a) in acc.iter().enumerate() {
            let sx = _mm256_set1_ps(self.xs[r]);
            // fl(D) · (s_x s_w): both products exact (module docs).
            let v0 = _mm256_mul_ps(_mm256_cvtepi32_ps(a[0]), _mm256_mul_ps(s0, sx));
            let v1 = _mm256_mul_ps(_mm256_cvtepi32_ps(a[1]), _mm256_mul_ps(s1, sx));
            let dst = &mut c[r * n + self.cols.start..r * n + self.cols.end];
            if width == NR {
                // SAFETY: dst holds NR values.
                unsafe {
                    _mm256_storeu_ps(dst.as_mut_ptr(), v0);
                    _mm256_storeu_ps(dst.as_mut_ptr().add(8), v1);
                }
            } else {
                let mut edge = [0.0f32; NR];
                // SAFETY: edge holds NR values.
                unsafe {
                    _mm256_storeu_ps(edge.as_mut_ptr(), v0);
                    _mm256_storeu_ps(edge.as_mut_ptr().add(8), v1);
                }
                dst.copy_from_slice(&edge[..width]);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Each rounded value, computed independently of the kernel: `round(v / s) s` with the scale
    /// found by search.
    fn rounded(row: &[f32], cols: usize) -> Vec<f64> {
        let q = limit(cols) as f64;
        let most = row.iter().fold(0.0f64, |m, &v| m.max((v as f64).abs()));
        let mut s = 2f64.powi(-40);
        while most > q * s {
            s *= 2.0;
        }
        row.iter()
            .map(|&v| ((v as f64) / s).round_ties_even() * s)
            .collect()
    }

    #[test]
    fn limit_keeps_the_sums_in_i32() {
        for cols in [1, 2, 7, 384, 768, 769, 2304, 1 << 20] {
            let q = limit(cols) as i64;
            let terms = cols.next_multiple_of(2) as i64;
            assert!(q * q * terms <= i32::MAX as i64, "{cols}");
            assert!(
                (q + 1) * (q + 1) * terms > i32::MAX as i64 || q == 32767,
                "{cols}"
            );
        }
        assert_eq!(limit(768), 1672);
    }

    #[test]
    fn matches_naive_at_odd_sizes() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for &(rows, n, m) in &[
            (1, 1, 1),
            (13, 33, 7),
            (12, 32, 64),
            (29, 70, 129),
            (100, 5, 2),
            (200, 17, 96),
            (7, 48, 768),
        ] {
            let x: Vec<f32> = (0..rows * m).map(|_| rng.random_range(-2.0..2.0)).collect();
            let w: Vec<f32> = (0..n * m)
                .map(|i| rng.random_range(-1.0..1.0) * (1 + i / m % 5) as f32)
                .collect();
            let (mut xq, mut wq) = (IntRows::default(), IntRows::default());
            pack_rows(&x, m, &mut xq);
            pack_panels(&w, n, m, &mut wq);
            let mut c = vec![f32::NAN; rows * n];
            matmul_int16(&mut c, &xq, &wq);
            let xr: Vec<Vec<f64>> = x.chunks(m).map(|r| rounded(r, m)).collect();
            let wr: Vec<Vec<f64>> = w.chunks(m).map(|r| rounded(r, m)).collect();
            for r in 0..rows {
                for j in 0..n {
                    // Exact in f64 (integers times powers of two), then rounded once to f32.
                    let want: f64 = xr[r].iter().zip(&wr[j]).map(|(a, b)| a * b).sum();
                    assert_eq!(c[r * n + j], want as f32, "{rows}x{n}x{m} at {r},{j}");
                }
            }
            if available() {
                // The portable loop gives the same bits.
                let mut d = vec![f32::NAN; rows * n];
                let b = Block {
                    xq: &xq.data,
                    xs: &xq.scales,
                    pairs: m.div_ceil(2),
                    n,
                };
                b.run_portable(&mut d, &wq);
                assert_eq!(
                    c.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                    d.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
                );
            }
        }
    }

    #[test]
    fn norms_bound_the_rounding() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(2);
        let m = 50;
        let mut x: Vec<f32> = (0..3 * m).map(|_| rng.random_range(-3.0..3.0)).collect();
        x[m] = 1e-30; // a tiny value in a row of ordinary ones: rounds to 0, residual itself
        let mut xq = IntRows::default();
        pack_rows(&x, m, &mut xq);
        for r in 0..3 {
            let row = &x[r * m..(r + 1) * m];
            let want = rounded(row, m);
            let e: f64 = row
                .iter()
                .zip(&want)
                .map(|(&v, &h)| (v as f64 - h).powi(2))
                .sum();
            let n = xq.norms[r];
            assert!(
                n.residual >= e.sqrt() && n.residual <= e.sqrt() * 1.00001,
                "row {r}"
            );
            for (i, &h) in want.iter().enumerate() {
                assert_eq!(
                    xq.data[r * m + i] as f64 * xq.scales[r] as f64,
                    h,
                    "{r},{i}"
                );
            }
        }
    }

    #[test]
    fn rows_out_of_range_get_infinite_norms() {
        let m = 4;
        let x = [
            1.0,
            2.0,
            3.0,
            4.0,
            f32::NAN,
            1.0,
            0.0,
            0.0,
            1e30,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
            0.0,
        ];
        let mut xq = IntRows::default();
        pack_rows(&x, m, &mut xq);
        assert!(xq.norms[0].value.is_finite());
        assert!(xq.norms[1].value.is_infinite() && xq.norms[2].value.is_infinite());
        assert_eq!(xq.norms[3].value, 0.0);
        assert_eq!(xq.scales[3], 1.0);
    }
}
