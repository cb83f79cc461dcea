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
//! own. Attention is in [`attention`].
//!

pub mod attention;
pub use attention::{attention, Heads, Keys};

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
pub(crate) mod tests {
    use super::*;
    use crate::tensor_ops;
    use candle_core::Device;

    pub(crate) fn random(n: usize, seed: u64) -> Vec<f32> {
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
    }

    pub(crate) fn close(a: &[f32], b: &[f32], tol: f32) {
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
