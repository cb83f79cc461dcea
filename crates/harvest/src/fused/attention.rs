//! Attention of one head of one sequence, queries `Q`, keys `K`, values `V` (`t x dh`):
//! `softmax(Q K^T / sqrt(dh)) V`, the softmax over the keys each query may see (all real tokens
//! for BERT, `j <= i` for a causal model), for every (sequence, head) of a batch, reading the
//! heads in place from the fused query/key/value product; rows of `Q K^T` are scaled inside the
//! softmax pass.

use super::{exp_fast, lanes, ROW_CHUNK};
use rayon::prelude::*;
use sparsecode::linalg::{matmul, MatRef};
use sparsecode::Parallelism;

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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fused::tests::{close, random};

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
}
