//! The pieces of the BERT and Llama forwards on plain row-major f32 buffers: projections through
//! the library's gemm with the bias folded in and residual updates accumulated in place, one
//! product for the queries, keys and values together, attention per (sequence, head) reading the
//! heads in place from that product, and norms, activations and rotary embeddings as one pass
//! each over buffers reused from block to block.
//!
//! Written here rather than composed from candle tensor ops because the harvest forward is
//! throughput-bound and, on MiniLM (8 x 129 tokens, 2 threads, `perf`), candle's gemm kernels
//! were under half of the time: every op allocated and page-faulted a fresh tensor (~12%),
//! transposes were copied, and bias adds, residual adds, masks and scaling were passes of their
//! own.
//!
//! Attention of one head of one sequence, queries `Q`, keys `K`, values `V` (`t x dh`):
//! `softmax(Q K^T / sqrt(dh)) V`, the softmax over the keys each query may see (all real tokens
//! for BERT, `j <= i` for a causal model); rows of `Q K^T` are scaled inside the softmax pass.

use candle_core::{DType, Tensor};
use rayon::prelude::*;
use sparsecode::linalg::{matmul, MatRef};
use sparsecode::Parallelism;

/// The parallelism of the pool this runs on (entry points install one).
fn par() -> Parallelism {
    Parallelism::threads(rayon::current_num_threads())
}

/// Rows handed to one task by the row-wise passes.
const ROW_CHUNK: usize = 16;

/// A projection `y = x W + b`, `W` kept `[in, out]` row-major.
pub struct Linear {
    wt: Vec<f32>,
    b: Option<Vec<f32>>,
    inp: usize,
    out: usize,
}

impl Linear {
    /// From a weight stored `[out, in]` (as PyTorch and GGUF keep it) and an optional bias `[out]`.
    pub fn new(w: &Tensor, b: Option<&Tensor>) -> candle_core::Result<Self> {
        let (out, inp) = w.dims2()?;
        let wt = w
            .to_dtype(DType::F32)?
            .t()?
            .contiguous()?
            .flatten_all()?
            .to_vec1()?;
        let b = b.map(|b| b.to_dtype(DType::F32)?.to_vec1()).transpose()?;
        Ok(Linear { wt, b, inp, out })
    }

    /// Projections of the same input side by side, outputs in the order given: one product
    /// instead of several (queries, keys and values; gate and up).
    pub fn concat(parts: Vec<Linear>) -> Self {
        let inp = parts[0].inp;
        assert!(parts.iter().all(|p| p.inp == inp), "concat: inputs differ");
        let out = parts.iter().map(|p| p.out).sum();
        let mut wt = Vec::with_capacity(inp * out);
        for r in 0..inp {
            for p in &parts {
                wt.extend_from_slice(&p.wt[r * p.out..(r + 1) * p.out]);
            }
        }
        let b = parts.iter().any(|p| p.b.is_some()).then(|| {
            parts
                .iter()
                .flat_map(|p| p.b.clone().unwrap_or_else(|| vec![0.0; p.out]))
                .collect()
        });
        Linear { wt, b, inp, out }
    }

    /// `dst = x W + b` for `x` `[rows, in]` into the first `rows * out` values of `dst`.
    pub fn forward(&self, x: &[f32], dst: &mut [f32]) {
        match &self.b {
            Some(b) => {
                let rows = x.len() / self.inp;
                fill_rows(&mut dst[..rows * self.out], b);
                self.product(x, dst, 1.0);
            }
            None => self.product(x, dst, 0.0),
        }
    }

    /// `dst += x W + b`: a residual update in place.
    pub fn accumulate(&self, x: &[f32], dst: &mut [f32]) {
        if let Some(b) = &self.b {
            let rows = x.len() / self.inp;
            dst[..rows * self.out]
                .par_chunks_mut(self.out * ROW_CHUNK)
                .for_each(|c| {
                    c.chunks_exact_mut(self.out)
                        .for_each(|r| r.iter_mut().zip(b).for_each(|(v, b)| *v += b))
                });
        }
        self.product(x, dst, 1.0);
    }

    fn product(&self, x: &[f32], dst: &mut [f32], beta: f32) {
        let rows = x.len() / self.inp;
        let (a, w) = (
            MatRef::new(x, rows, self.inp),
            MatRef::new(&self.wt, self.inp, self.out),
        );
        matmul(&mut dst[..rows * self.out], a, w, beta, par());
    }
}

fn fill_rows(dst: &mut [f32], row: &[f32]) {
    dst.par_chunks_mut(row.len() * ROW_CHUNK).for_each(|c| {
        c.chunks_exact_mut(row.len())
            .for_each(|r| r.copy_from_slice(row))
    });
}

/// Head layout of a fused query/key/value product: each row holds `q` query heads, then `kv` key
/// heads, then `kv` value heads, `dh` values each; query head `h` reads key/value head
/// `h / (q / kv)` (grouped-query attention; `kv == q` is plain multi-head attention).
#[derive(Clone, Copy, Debug)]
pub struct Heads {
    /// Query heads.
    pub q: usize,
    /// Key/value heads (divides `q`).
    pub kv: usize,
    /// Width of one head.
    pub dh: usize,
}

impl Heads {
    /// Width of a row of the fused product.
    pub fn width(&self) -> usize {
        (self.q + 2 * self.kv) * self.dh
    }
}

/// Which keys each query sees.
#[derive(Clone, Copy, Debug)]
pub enum Keys<'a> {
    /// Sequence `s` has `valid[s]` real tokens, the rest padding: every query sees those.
    Valid(&'a [usize]),
    /// Query `i` sees keys `0..=i`.
    Causal,
}

/// Attention of `b` sequences of `t` tokens from a fused product `qkv` `[b * t, heads.width()]`
/// into `out` `[b * t, heads.q * dh]` (heads side by side, as the output projection reads them).
/// `scratch` holds the heads' outputs before they are put side by side; it is resized here.
pub fn attention(
    qkv: &[f32],
    (b, t): (usize, usize),
    heads: Heads,
    keys: Keys<'_>,
    out: &mut [f32],
    scratch: &mut Vec<f32>,
) {
    let (dh, w) = (heads.dh, heads.width());
    let group = heads.q / heads.kv;
    scratch.resize(b * heads.q * t * dh, 0.0);
    scratch.par_chunks_mut(t * dh).enumerate().for_each_init(
        || HeadScratch::new(t, dh),
        |hs, (task, head_out)| {
            let (s, h) = (task / heads.q, task % heads.q);
            let seq = &qkv[s * t * w..(s + 1) * t * w];
            let g = h / group;
            let seen = |i: usize| match keys {
                Keys::Valid(valid) => valid[s],
                Keys::Causal => i + 1,
            };
            let view = HeadView {
                q: &seq[h * dh..],
                k: &seq[(heads.q + g) * dh..],
                v: &seq[(heads.q + heads.kv + g) * dh..],
                stride: w,
                t,
                dh,
            };
            one_head(&view, &seen, hs, head_out);
        },
    );
    let qw = heads.q * dh;
    out[..b * t * qw]
        .par_chunks_mut(qw * ROW_CHUNK)
        .enumerate()
        .for_each(|(c, rows)| {
            for (j, row) in rows.chunks_exact_mut(qw).enumerate() {
                let r = c * ROW_CHUNK + j;
                let (s, i) = (r / t, r % t);
                for (h, dst) in row.chunks_exact_mut(dh).enumerate() {
                    let src = ((s * heads.q + h) * t + i) * dh;
                    dst.copy_from_slice(&scratch[src..src + dh]);
                }
            }
        });
}

/// One head of one sequence: rows of queries, keys and values `stride` apart in the fused
/// product, `t` tokens, `dh` values each.
struct HeadView<'a> {
    q: &'a [f32],
    k: &'a [f32],
    v: &'a [f32],
    stride: usize,
    t: usize,
    dh: usize,
}

/// Per-task buffers of the attention of one head: keys transposed `[dh, tp]` and values
/// `[t, dhp]`, both zero-padded to whole vector blocks, and the scores `[t, tp]`.
struct HeadScratch {
    kt: Vec<f32>,
    v: Vec<f32>,
    scores: Vec<f32>,
    tp: usize,
    dhp: usize,
}

impl HeadScratch {
    fn new(t: usize, dh: usize) -> Self {
        let (tp, dhp) = (t.next_multiple_of(16), dh.next_multiple_of(32));
        HeadScratch {
            kt: vec![0.0; dh * tp],
            v: vec![0.0; t * dhp],
            scores: vec![0.0; t * tp],
            tp,
            dhp,
        }
    }
}

/// `out` `[t, dh]` = softmax(Q K^T / sqrt(dh)) V of one head, each query `i` over the keys
/// `0..seen(i)`: by the AVX-512 kernels where the CPU has them, else by two general products.
fn one_head(
    view: &HeadView<'_>,
    seen: &dyn Fn(usize) -> usize,
    hs: &mut HeadScratch,
    out: &mut [f32],
) {
    #[cfg(target_arch = "x86_64")]
    if avx512::available() {
        // SAFETY: the CPU has AVX-512F (checked just above).
        unsafe { avx512::one_head(view, seen, hs, out) };
        return;
    }
    one_head_portable(view, seen, hs, out)
}

/// [`one_head`] by two general products, on any CPU.
fn one_head_portable(
    view: &HeadView<'_>,
    seen: &dyn Fn(usize) -> usize,
    hs: &mut HeadScratch,
    out: &mut [f32],
) {
    let (t, dh) = (view.t, view.dh);
    let q = MatRef::strided(view.q, t, dh, view.stride);
    let k = MatRef::strided(view.k, t, dh, view.stride);
    let v = MatRef::strided(view.v, t, dh, view.stride);
    let scores = &mut hs.scores[..t * t];
    matmul(scores, q, k.t(), 0.0, Parallelism::Serial);
    let scale = 1.0 / (dh as f32).sqrt();
    for (i, row) in scores.chunks_exact_mut(t).enumerate() {
        softmax_prefix(row, seen(i), scale);
    }
    matmul(out, MatRef::new(scores, t, t), v, 0.0, Parallelism::Serial);
}

/// The attention of one head with AVX-512 register blocking. The general gemm ran the
/// 129 x 32 x 129 products of MiniLM's heads at 49 GFLOP/s (packing and edge handling for
/// shapes this small); here blocks of 8 queries keep their 16-key score blocks (scores) or
/// 32-value output blocks (weighted sums) in registers, the causal blocks stop at the last key
/// any of their queries sees, and every sum runs in index order with fused multiply-adds.
#[cfg(target_arch = "x86_64")]
mod avx512 {
    use super::{softmax_prefix, HeadScratch, HeadView};
    use std::arch::x86_64::*;

    /// Query rows per block: 8 x (one 16-key or two 16-value vectors) of accumulators.
    const R: usize = 8;

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("avx512f")
    }

    /// See [`super::one_head`].
    #[target_feature(enable = "avx512f")]
    pub(super) unsafe fn one_head(
        view: &HeadView<'_>,
        seen: &dyn Fn(usize) -> usize,
        hs: &mut HeadScratch,
        out: &mut [f32],
    ) {
        let (t, dh, tp, dhp) = (view.t, view.dh, hs.tp, hs.dhp);
        assert!(hs.kt.len() >= dh * tp && hs.v.len() >= t * dhp && hs.scores.len() >= t * tp);
        assert!(out.len() >= t * dh && tp >= t && tp % 16 == 0 && dhp % 32 == 0 && dhp >= dh);
        for j in 0..t {
            let k = &view.k[j * view.stride..j * view.stride + dh];
            for (c, &x) in k.iter().enumerate() {
                hs.kt[c * tp + j] = x;
            }
            let v = &view.v[j * view.stride..j * view.stride + dh];
            hs.v[j * dhp..j * dhp + dh].copy_from_slice(v);
        }
        let scale = 1.0 / (dh as f32).sqrt();
        let mut i0 = 0;
        while i0 < t {
            let rows = R.min(t - i0);
            // The keys any row of the block sees: scores and sums stop there.
            let keys = (i0..i0 + rows).map(seen).max().unwrap_or(0).min(t);
            let q = |r: usize| &view.q[(i0 + r.min(rows - 1)) * view.stride..][..dh];
            if rows == R {
                scores::<R>(std::array::from_fn(q), hs, i0, keys);
            } else {
                for r in 0..rows {
                    scores::<1>([q(r)], hs, i0 + r, keys);
                }
            }
            for r in i0..i0 + rows {
                softmax_prefix(&mut hs.scores[r * tp..r * tp + keys], seen(r), scale);
            }
            if rows == R {
                weighted::<R>(hs, i0, keys, out, dh);
            } else {
                for r in i0..i0 + rows {
                    weighted::<1>(hs, r, keys, out, dh);
                }
            }
            i0 += rows;
        }
    }

    /// `scores[i0 + r][j] = q[r] . k_j` for keys `j < keys` rounded up to 16 (the padding keys
    /// are zero).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn scores<const N: usize>(q: [&[f32]; N], hs: &mut HeadScratch, i0: usize, keys: usize) {
        let tp = hs.tp;
        let dh = q[0].len();
        assert!(keys <= tp && hs.scores.len() >= (i0 + N) * tp && hs.kt.len() >= dh * tp);
        assert!(q.iter().all(|r| r.len() == dh));
        let (kt, sc) = (hs.kt.as_ptr(), hs.scores.as_mut_ptr());
        for jb in (0..keys).step_by(16) {
            let mut acc = [_mm512_setzero_ps(); N];
            for c in 0..dh {
                // SAFETY: c * tp + jb + 16 <= dh * tp (jb + 16 <= tp: tp is a multiple of 16).
                let kv = unsafe { _mm512_loadu_ps(kt.add(c * tp + jb)) };
                for (a, q) in acc.iter_mut().zip(&q) {
                    *a = _mm512_fmadd_ps(_mm512_set1_ps(q[c]), kv, *a);
                }
            }
            for (r, a) in acc.iter().enumerate() {
                // SAFETY: (i0 + r) * tp + jb + 16 <= (i0 + N) * tp.
                unsafe { _mm512_storeu_ps(sc.add((i0 + r) * tp + jb), *a) };
            }
        }
    }

    /// `out[i0 + r] = sum_{j < keys} p[i0 + r][j] v_j` (values zero-padded to whole 32-blocks).
    #[inline]
    #[target_feature(enable = "avx512f")]
    unsafe fn weighted<const N: usize>(
        hs: &HeadScratch,
        i0: usize,
        keys: usize,
        out: &mut [f32],
        dh: usize,
    ) {
        let (tp, dhp) = (hs.tp, hs.dhp);
        assert!(keys <= tp && hs.scores.len() >= (i0 + N) * tp);
        assert!(hs.v.len() >= keys * dhp && out.len() >= (i0 + N) * dh);
        let v = hs.v.as_ptr();
        for cb in (0..dhp).step_by(32) {
            let mut acc = [[_mm512_setzero_ps(); 2]; N];
            for j in 0..keys {
                // SAFETY: j * dhp + cb + 32 <= keys * dhp (cb + 32 <= dhp: a multiple of 32).
                let (v0, v1) = unsafe {
                    let p = v.add(j * dhp + cb);
                    (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16)))
                };
                for (r, a) in acc.iter_mut().enumerate() {
                    let p = _mm512_set1_ps(hs.scores[(i0 + r) * tp + j]);
                    a[0] = _mm512_fmadd_ps(p, v0, a[0]);
                    a[1] = _mm512_fmadd_ps(p, v1, a[1]);
                }
            }
            let n = (dh - cb).min(32);
            for (r, a) in acc.iter().enumerate() {
                let mut lanes = [0.0f32; 32];
                // SAFETY: `lanes` holds 32 values.
                unsafe {
                    _mm512_storeu_ps(lanes.as_mut_ptr(), a[0]);
                    _mm512_storeu_ps(lanes.as_mut_ptr().add(16), a[1]);
                }
                out[(i0 + r) * dh + cb..][..n].copy_from_slice(&lanes[..n]);
            }
        }
    }
}

/// `row[..seen] = softmax(scale * row[..seen])`, zeros after (keys the query does not see).
/// Inlined so that it is compiled for the attention kernel's instruction set.
#[inline(always)]
fn softmax_prefix(row: &mut [f32], seen: usize, scale: f32) {
    let (live, dead) = row.split_at_mut(seen.min(row.len()));
    dead.fill(0.0);
    // scale > 0, so the largest scaled value is the scaled largest value.
    let m = lanes(live, f32::NEG_INFINITY, f32::max) * scale;
    if m == f32::NEG_INFINITY {
        live.fill(0.0);
        return;
    }
    // The exponentials in a pass of their own: with the running sum in the same loop they do
    // not vectorise.
    live.iter_mut().for_each(|v| *v = exp_fast(*v * scale - m));
    let inv = 1.0 / lanes(live, 0.0, |a, b| a + b);
    live.iter_mut().for_each(|v| *v *= inv);
}

/// `op` folded over `v` in 16 interleaved lanes, then the lanes pairwise: a fixed order that
/// vectorises (a plain fold is one serial chain, which was most of the softmax's time).
#[inline(always)]
fn lanes(v: &[f32], init: f32, op: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [init; 16];
    let mut blocks = v.chunks_exact(16);
    for b in &mut blocks {
        for (a, x) in acc.iter_mut().zip(b) {
            *a = op(*a, *x);
        }
    }
    for (a, x) in acc.iter_mut().zip(blocks.remainder()) {
        *a = op(*a, *x);
    }
    let mut w = 16;
    while w > 1 {
        w /= 2;
        for i in 0..w {
            acc[i] = op(acc[i], acc[i + w]);
        }
    }
    acc[0]
}

/// `sum v_i^2` in the fixed lane order of [`lanes`].
#[inline(always)]
fn lanes_of_squares(v: &[f32]) -> f32 {
    let mut acc = [0.0f32; 16];
    let mut blocks = v.chunks_exact(16);
    for b in &mut blocks {
        for (a, x) in acc.iter_mut().zip(b) {
            *a += x * x;
        }
    }
    for (a, x) in acc.iter_mut().zip(blocks.remainder()) {
        *a += x * x;
    }
    lanes(&acc, 0.0, |a, b| a + b)
}

/// e^x to within 3 ulp for x in [-87, 88] (clamped there: ~1.6e-38 below, ~1.7e38 above; NaN
/// stays NaN). Written here because libm's scalar `expf` was 29% of MiniLM's attention once its
/// products were fast, and this form vectorises: x = k ln 2 + r with k = round(x log2 e) (by
/// the 1.5 * 2^23 trick, which SSE2 has) and |r| <= ln 2 / 2, e^r by its Taylor polynomial of
/// degree 7 (remainder below 6e-9 relative), times 2^k built from its exponent bits.
#[inline(always)]
pub fn exp_fast(x: f32) -> f32 {
    const ROUND: f32 = 12_582_912.0; // 1.5 * 2^23
    let x = x.clamp(-87.0, 88.0);
    let shifted = x * std::f32::consts::LOG2_E + ROUND;
    let k = shifted - ROUND;
    // ln 2 split so that k * 0.693_145_75 is exact for |k| < 2^9.
    let r = x - k * 0.693_145_75 - k * 1.428_606_8e-6;
    let mut p = r * (1.0 / 5040.0) + 1.0 / 720.0;
    p = r * p + 1.0 / 120.0;
    p = r * p + 1.0 / 24.0;
    p = r * p + 1.0 / 6.0;
    p = r * p + 0.5;
    p = r * p + 1.0;
    p = r * p + 1.0;
    // 2^k from k's bits in `shifted` (ROUND + k): integer ops, which vectorise where the
    // saturating `k as i32` does not.
    let biased = shifted
        .to_bits()
        .wrapping_sub(ROUND.to_bits())
        .wrapping_add(127);
    p * f32::from_bits(biased << 23)
}

/// `x = (x - mean) / sqrt(var + eps) * w + b` on every row of width `w.len()`, in place.
pub fn layer_norm(x: &mut [f32], w: &[f32], b: &[f32], eps: f32) {
    let d = w.len();
    x.par_chunks_mut(d * ROW_CHUNK).for_each(|c| {
        for r in c.chunks_exact_mut(d) {
            let n = d as f32;
            let mean = lanes(r, 0.0, |a, b| a + b) / n;
            r.iter_mut().for_each(|v| *v -= mean);
            let var = lanes_of_squares(r) / n;
            let s = 1.0 / (var + eps).sqrt();
            for ((v, g), c) in r.iter_mut().zip(w).zip(b) {
                *v = *v * s * g + c;
            }
        }
    });
}

/// `dst = x / sqrt(mean(x^2) + eps) * w` row by row (width `w.len()`).
pub fn rms_norm(dst: &mut [f32], x: &[f32], w: &[f32], eps: f32) {
    let d = w.len();
    dst[..x.len()]
        .par_chunks_mut(d * ROW_CHUNK)
        .zip(x.par_chunks(d * ROW_CHUNK))
        .for_each(|(dc, xc)| {
            for (o, r) in dc.chunks_exact_mut(d).zip(xc.chunks_exact(d)) {
                let ms = lanes_of_squares(r) / d as f32;
                let s = 1.0 / (ms + eps).sqrt();
                for ((o, v), g) in o.iter_mut().zip(r).zip(w) {
                    *o = v * s * g;
                }
            }
        });
}

/// Exact (erf) GELU, `x * (1 + erf(x / sqrt 2)) / 2`, in place.
pub fn gelu_erf(x: &mut [f32]) {
    x.par_chunks_mut(4096).for_each(|c| {
        for y in c.iter_mut() {
            *y = 0.5
                * *y
                * (1.0 + crate::tensor_ops::erf_fast(*y * std::f32::consts::FRAC_1_SQRT_2));
        }
    });
}

/// SwiGLU: from rows `[gate | up]` of width `2 ff` (a concatenated product), `dst` rows of width
/// `ff` with `silu(gate) * up`, `silu(x) = x / (1 + e^-x)`.
pub fn swiglu(dst: &mut [f32], gate_up: &[f32], ff: usize) {
    dst[..gate_up.len() / 2]
        .par_chunks_mut(ff * ROW_CHUNK)
        .zip(gate_up.par_chunks(2 * ff * ROW_CHUNK))
        .for_each(|(dc, gc)| {
            for (o, r) in dc.chunks_exact_mut(ff).zip(gc.chunks_exact(2 * ff)) {
                let (gate, up) = r.split_at(ff);
                for ((o, g), u) in o.iter_mut().zip(gate).zip(up) {
                    *o = g / (1.0 + (-g).exp()) * u;
                }
            }
        });
}

/// Cosines and sines of rotary embeddings, `[t, dh / 2]` each: position `p`, pair `i` turns by
/// `p * base^(-2i / dh)`.
pub fn rope_tables(t: usize, dh: usize, base: f64) -> (Vec<f32>, Vec<f32>) {
    let half = dh / 2;
    let mut cos = Vec::with_capacity(t * half);
    let mut sin = Vec::with_capacity(t * half);
    for pos in 0..t {
        for i in 0..half {
            let a = pos as f64 * base.powf(-(2.0 * i as f64) / (2 * half) as f64);
            cos.push(a.cos() as f32);
            sin.push(a.sin() as f32);
        }
    }
    (cos, sin)
}

/// Rotates adjacent pairs `(x[2i], x[2i+1])` of every query and key head of a fused product
/// `[b * t, heads.width()]` by position (row `r` is position `r % t`), in place.
pub fn rope(qkv: &mut [f32], t: usize, heads: Heads, (cos, sin): (&[f32], &[f32])) {
    let (w, dh) = (heads.width(), heads.dh);
    let half = dh / 2;
    qkv.par_chunks_mut(w * ROW_CHUNK)
        .enumerate()
        .for_each(|(c, rows)| {
            for (j, row) in rows.chunks_exact_mut(w).enumerate() {
                let pos = (c * ROW_CHUNK + j) % t;
                let (cs, sn) = (
                    &cos[pos * half..(pos + 1) * half],
                    &sin[pos * half..(pos + 1) * half],
                );
                for head in row[..(heads.q + heads.kv) * dh].chunks_exact_mut(dh) {
                    for ((p, c), s) in head.chunks_exact_mut(2).zip(cs).zip(sn) {
                        let (x0, x1) = (p[0], p[1]);
                        p[0] = x0 * c - x1 * s;
                        p[1] = x0 * s + x1 * c;
                    }
                }
            }
        });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tensor_ops;
    use candle_core::Device;

    fn random(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    fn close(a: &[f32], b: &[f32], tol: f32) {
        assert_eq!(a.len(), b.len());
        for (i, (x, y)) in a.iter().zip(b).enumerate() {
            assert!((x - y).abs() <= tol * (1.0 + y.abs()), "[{i}] {x} vs {y}");
        }
    }

    #[test]
    fn concatenated_projections_with_bias_match_separate_naive_ones() {
        let (rows, inp) = (5, 7);
        let dev = Device::Cpu;
        let w1 = Tensor::from_vec(random(3 * inp, 1), (3, inp), &dev).unwrap();
        let w2 = Tensor::from_vec(random(4 * inp, 2), (4, inp), &dev).unwrap();
        let b1 = Tensor::from_vec(random(3, 3), 3, &dev).unwrap();
        let l = Linear::concat(vec![
            Linear::new(&w1, Some(&b1)).unwrap(),
            Linear::new(&w2, None).unwrap(),
        ]);
        let x = random(rows * inp, 4);
        let mut y = vec![f32::NAN; rows * 7];
        l.forward(&x, &mut y);
        let (w1, w2, b1): (Vec<f32>, Vec<f32>, Vec<f32>) = (
            w1.flatten_all().unwrap().to_vec1().unwrap(),
            w2.flatten_all().unwrap().to_vec1().unwrap(),
            b1.to_vec1().unwrap(),
        );
        let mut want = Vec::new();
        for r in 0..rows {
            let xr = &x[r * inp..(r + 1) * inp];
            let dot =
                |w: &[f32], o: usize| -> f32 { (0..inp).map(|i| w[o * inp + i] * xr[i]).sum() };
            want.extend((0..3).map(|o| dot(&w1, o) + b1[o]));
            want.extend((0..4).map(|o| dot(&w2, o)));
        }
        close(&y, &want, 1e-5);
        // Accumulating adds the same on top.
        let mut acc = want.clone();
        l.accumulate(&x, &mut acc);
        let twice: Vec<f32> = want.iter().map(|v| 2.0 * v).collect();
        close(&acc, &twice, 1e-5);
    }

    /// Attention written the plain way: every (sequence, head) with explicit loops.
    fn naive_attention(
        qkv: &[f32],
        (b, t): (usize, usize),
        h: Heads,
        causal: bool,
        valid: &[usize],
    ) -> Vec<f32> {
        let (w, dh) = (h.width(), h.dh);
        let mut out = vec![0.0f32; b * t * h.q * dh];
        for s in 0..b {
            for head in 0..h.q {
                let g = head / (h.q / h.kv);
                let at = |i: usize, off: usize, c: usize| qkv[(s * t + i) * w + off * dh + c];
                for i in 0..t {
                    let seen = if causal { i + 1 } else { valid[s] };
                    let sc: Vec<f64> = (0..seen)
                        .map(|j| {
                            (0..dh)
                                .map(|c| at(i, head, c) as f64 * at(j, h.q + g, c) as f64)
                                .sum::<f64>()
                                / (dh as f64).sqrt()
                        })
                        .collect();
                    let m = sc.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                    let z: f64 = sc.iter().map(|v| (v - m).exp()).sum();
                    for c in 0..dh {
                        let y: f64 = (0..seen)
                            .map(|j| (sc[j] - m).exp() / z * at(j, h.q + h.kv + g, c) as f64)
                            .sum();
                        out[(s * t + i) * h.q * dh + head * dh + c] = y as f32;
                    }
                }
            }
        }
        out
    }

    #[test]
    fn attention_matches_a_naive_loop_causal_grouped_and_padded() {
        let mut scratch = Vec::new();
        for (b, t, heads) in [
            (2, 5, Heads { q: 4, kv: 2, dh: 6 }),
            (3, 7, Heads { q: 3, kv: 3, dh: 4 }),
            (1, 1, Heads { q: 2, kv: 1, dh: 2 }),
            (
                2,
                21,
                Heads {
                    q: 2,
                    kv: 1,
                    dh: 40,
                },
            ),
            (
                1,
                35,
                Heads {
                    q: 3,
                    kv: 3,
                    dh: 64,
                },
            ),
        ] {
            let qkv: Vec<f32> = random(b * t * heads.width(), 9)
                .iter()
                .map(|v| 3.0 * v)
                .collect();
            let mut out = vec![f32::NAN; b * t * heads.q * heads.dh];
            attention(&qkv, (b, t), heads, Keys::Causal, &mut out, &mut scratch);
            close(&out, &naive_attention(&qkv, (b, t), heads, true, &[]), 1e-5);
            let valid: Vec<usize> = (0..b).map(|s| t - s.min(t - 1)).collect();
            attention(
                &qkv,
                (b, t),
                heads,
                Keys::Valid(&valid),
                &mut out,
                &mut scratch,
            );
            close(
                &out,
                &naive_attention(&qkv, (b, t), heads, false, &valid),
                1e-5,
            );
        }
    }

    #[test]
    fn the_portable_head_matches_the_naive_loop_too() {
        // `attention` takes the AVX-512 kernels where the CPU has them; this covers the path
        // other CPUs take, one head at a time.
        let heads = Heads { q: 2, kv: 1, dh: 5 };
        let (b, t) = (2, 19);
        let qkv = random(b * t * heads.width(), 13);
        let want = naive_attention(&qkv, (b, t), heads, true, &[]);
        let w = heads.width();
        for s in 0..b {
            for h in 0..heads.q {
                let seq = &qkv[s * t * w..(s + 1) * t * w];
                let view = HeadView {
                    q: &seq[h * heads.dh..],
                    k: &seq[heads.q * heads.dh..],
                    v: &seq[(heads.q + 1) * heads.dh..],
                    stride: w,
                    t,
                    dh: heads.dh,
                };
                let mut out = vec![f32::NAN; t * heads.dh];
                let mut hs = HeadScratch::new(t, heads.dh);
                one_head_portable(&view, &|i| i + 1, &mut hs, &mut out);
                for i in 0..t {
                    let row = (s * t + i) * heads.q * heads.dh + h * heads.dh;
                    close(
                        &out[i * heads.dh..(i + 1) * heads.dh],
                        &want[row..row + heads.dh],
                        1e-5,
                    );
                }
            }
        }
    }

    #[test]
    fn products_and_attention_are_identical_at_any_thread_count() {
        let heads = Heads { q: 4, kv: 2, dh: 8 };
        let (b, t) = (3, 33);
        let dev = Device::Cpu;
        let w =
            Tensor::from_vec(random(heads.width() * 40, 11), (heads.width(), 40), &dev).unwrap();
        let l = Linear::new(&w, None).unwrap();
        let x = random(b * t * 40, 12);
        let run = |threads: usize| {
            Parallelism::threads(threads).install(|| {
                let mut qkv = vec![0.0; b * t * heads.width()];
                l.forward(&x, &mut qkv);
                let mut out = vec![0.0; b * t * heads.q * heads.dh];
                attention(&qkv, (b, t), heads, Keys::Causal, &mut out, &mut Vec::new());
                (qkv, out)
            })
        };
        let one = run(1);
        for threads in [2, 3] {
            assert_eq!(run(threads), one, "{threads} threads");
        }
    }

    #[test]
    fn norms_and_activations_match_the_tensor_versions() {
        let dev = Device::Cpu;
        let (rows, d) = (37, 12);
        let x = random(rows * d, 5);
        let (w, b) = (random(d, 6), random(d, 7));
        let xt = Tensor::from_vec(x.clone(), (rows, d), &dev).unwrap();
        let wt = Tensor::from_vec(w.clone(), d, &dev).unwrap();
        let flat = |t: Tensor| -> Vec<f32> { t.flatten_all().unwrap().to_vec1().unwrap() };
        let mut ln = x.clone();
        layer_norm(&mut ln, &w, &b, 1e-5);
        for (r, row) in x.chunks_exact(d).enumerate() {
            let n = d as f64;
            let mean = row.iter().map(|&v| v as f64).sum::<f64>() / n;
            let var = row.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
            for c in 0..d {
                let want = (row[c] as f64 - mean) / (var + 1e-5).sqrt() * w[c] as f64 + b[c] as f64;
                assert!((ln[r * d + c] as f64 - want).abs() < 1e-5);
            }
        }
        let mut rms = vec![0.0; rows * d];
        rms_norm(&mut rms, &x, &w, 1e-5);
        close(
            &rms,
            &flat(tensor_ops::rms_norm(&xt, &wt, 1e-5).unwrap()),
            1e-5,
        );
        let mut g = x.clone();
        gelu_erf(&mut g);
        close(&g, &flat(xt.gelu_erf().unwrap()), 1e-5);
        let mut sw = vec![0.0; rows * d / 2];
        swiglu(&mut sw, &x, d / 2);
        for (r, o) in sw.chunks_exact(d / 2).enumerate() {
            for (i, v) in o.iter().enumerate() {
                let (gate, up) = (x[r * d + i] as f64, x[r * d + d / 2 + i] as f64);
                let want = gate / (1.0 + (-gate).exp()) * up;
                assert!((*v as f64 - want).abs() < 1e-6);
            }
        }
    }

    #[test]
    fn fast_exp_is_within_three_ulp_of_exp() {
        let mut worst = 0.0f64;
        for i in -87_000..88_000 {
            let x = i as f32 * 1e-3 + 1e-4;
            let want = (x as f64).exp();
            worst = worst.max((exp_fast(x) as f64 - want).abs() / want);
        }
        assert!(
            worst < 3.0 * f32::EPSILON as f64,
            "max relative error {worst}"
        );
        assert_eq!(exp_fast(0.0), 1.0);
        assert!(exp_fast(-1000.0) < 2e-38 && exp_fast(-1000.0) >= 0.0);
        assert!(exp_fast(f32::NAN).is_nan());
    }

    #[test]
    fn rope_turns_query_and_key_pairs_by_position_and_leaves_values() {
        let heads = Heads { q: 2, kv: 1, dh: 4 };
        let t = 3;
        let base = 10000.0;
        let x = random(2 * t * heads.width(), 8);
        let mut y = x.clone();
        let (cos, sin) = rope_tables(t, heads.dh, base);
        rope(&mut y, t, heads, (&cos, &sin));
        let w = heads.width();
        for r in 0..2 * t {
            let pos = (r % t) as f64;
            for c in 0..w {
                let (got, v) = (y[r * w + c] as f64, x[r * w + c] as f64);
                if c >= 3 * heads.dh {
                    assert_eq!(got, v, "values are not turned");
                    continue;
                }
                let i = (c % heads.dh) / 2;
                let a = pos * f64::powf(base, -(2.0 * i as f64) / heads.dh as f64);
                let (x0, x1) = (x[r * w + c - c % 2] as f64, x[r * w + c - c % 2 + 1] as f64);
                let want = if c % 2 == 0 {
                    x0 * a.cos() - x1 * a.sin()
                } else {
                    x0 * a.sin() + x1 * a.cos()
                };
                assert!(
                    (got - want).abs() < 1e-5,
                    "row {r} col {c}: {got} vs {want}"
                );
            }
        }
    }
}
