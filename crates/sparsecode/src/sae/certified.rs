//! TopK selection from approximate pre-activations, certified exact.
//!
//! The reference is the plain one: every latent's pre-activation computed as
//! `v_j = fl(dot(W_enc[j], x_c) + b_j)` with [`simd::dot`]'s fixed order, then the `k` largest
//! (ties to the lower index, ReLU after). Computing all of them costs a dense f32 product; here
//! the product is computed approximately (bfloat16 inputs on AVX512_BF16, see
//! [`crate::linalg::bf16`]; 16-bit integers on AVX2, see [`crate::linalg::int16`]; the f32 GEMM
//! elsewhere), a per-sample bound `E` on the distance from
//! the approximation to the reference is derived, and only the latents that can still be in the
//! top `k` are computed exactly.
//!
//! # Why the result is the reference's
//!
//! Let `s_j` be the approximate value (`fl(a_j + b_j)` with `a_j` the approximate product) and
//! suppose `|s_j - v_j| <= E` for every `j`. Let `s_(k)` be the `k`-th largest `s` and
//! `t <= s_(k) - 2E`. The `k` latents with the largest `s` have `v >= s - E >= s_(k) - E`. A latent
//! with `s_j < t` has `v_j <= s_j + E < s_(k) - E`: at least `k` latents have strictly larger
//! reference values, so it is not in the reference's top `k`, whatever the tie-break. Hence the
//! candidates `C = {j : s_j >= t}` contain the reference's top `k` (and at least `k` latents), and
//! since every member of that top `k` outranks every latent outside it, the top `k` of `C` by the
//! reference's order (values computed exactly as the reference does, candidates kept in index
//! order so ties still go to the lower index) is the reference's top `k`: same indices, same
//! values, same slots. AuxK's selection over dead latents is the same argument on the subset.
//!
//! # BatchTopK
//!
//! The reference keeps every entry of the step with `v > 0` and `v >= t`, `t` the `K`-th largest
//! positive `v` of the step (`K = k * total`; `t = 0` when there are at most `K`). With
//! `l = s - E <= v` (rounded down), let `L` be the `K`-th largest of any set `S` of positive
//! lower bounds (0 when `S` has at most `K`): when `L > 0` there are more than `K` positive `v`,
//! and `L` is at most the `K`-th largest `l`, itself at most the `K`-th largest `v`, which is `t`.
//! Every kept entry has `v >= max(L, 0)`, so `s >= max(L, 0) - E`: the candidates
//! `C = {s >= max(L, 0) - E}` hold every kept entry. If `L > 0`, the `K`-th largest positive
//! exact value over `C` is `t` (C holds every entry at or above `t`, at least `K`); if `L <= 0`,
//! `C` holds every positive entry, so the same computation is the reference's own. The kept
//! entries, read from `C` in latent order with exactly computed values, are the reference's.
//! `S` only sets how tight `L` is: it is the lower bounds above a guess from every
//! [`SAMPLE_EVERY`]-th row, retried lower (and finally at 0) while `L` comes back 0.
//!
//! # The bound
//!
//! With `W = max_j |w_j|`, `X = |x_c|` and `γ = M u / (1 - M u)`, `u = 2^-24`, `M` the input width:
//! - the reference's dot product is within `γ W X` of the exact real `w·x` (any summation order);
//! - bfloat16: `|a - w·x| <= |e_w| X + W |e_x| + |e_w| |e_x| + γ_2M |ŵ| |x̂| + 4M 2^-126` with
//!   the largest residual and rounded norms over the latents ([`crate::linalg::bf16`]'s module
//!   docs; `γ_2M`, not `γ_M`, so that the bound holds whatever rounding `vdpbf16ps`'s additions
//!   use, up to 2u each);
//! - 16-bit integers: the same with `γ_2` (one rounding of the exact integer sum, by at most
//!   `2u` in any rounding mode) in place of `γ_2M` ([`crate::linalg::int16`]'s module docs);
//! - f32 GEMM: `|a - w·x| <= γ W X`;
//! - the bias additions round each side by at most `u` of a magnitude below
//!   `S = max|b| + W X (1 + γ) + E_dot`.
//!
//! So `E = E_dot + 2u S`, evaluated in f64 and rounded up (the f64 evaluation's own error is below
//! 2^-40 relative, covered by a factor 1 + 10^-6). Samples whose bound is not finite, or whose
//! candidates exceed an eighth of the latents, compute every latent exactly: counted as fallbacks.

use super::collective::Collective;
use crate::linalg::bf16::{self, PackedRows, RoundingNorms};
use crate::linalg::int16::{self, IntRows};
use crate::linalg::{simd, topk_row, BestK, TopK};
use crate::{Matrix, Parallelism};
use rayon::prelude::*;

/// How the approximate pre-activations are computed.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum EncoderPrecision {
    /// bfloat16 products where the CPU has AVX512_BF16; else 16-bit integer products where it
    /// has AVX2 but not AVX-512 (whose f32 GEMM is as fast, unmeasured); else the f32 GEMM.
    #[default]
    Auto,
    /// 16-bit integer products ([`crate::linalg::int16`]: AVX2, or a portable loop with the
    /// same result).
    Int16,
    /// The f32 GEMM (the certified selection still applies).
    F32,
}

/// The approximation [`Certified::approximate`] computes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Approximation {
    Bf16,
    Int16,
    F32,
}

impl EncoderPrecision {
    fn approximation(self) -> Approximation {
        match self {
            EncoderPrecision::Auto if bf16::available() => Approximation::Bf16,
            EncoderPrecision::Auto if int16::available() && !wide_vectors() => Approximation::Int16,
            EncoderPrecision::Int16 => Approximation::Int16,
            _ => Approximation::F32,
        }
    }
}

/// Whether the CPU has AVX-512 (then its f32 GEMM does 16 multiply-adds per instruction, as
/// the 256-bit integer kernel does).
fn wide_vectors() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

/// Candidate counts of the certified selections since the workspace was made.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct CertifiedStats {
    /// Rows selected.
    pub rows: u64,
    /// Latents computed exactly (candidates, or all latents of a fallback).
    pub exact: u64,
    /// Rows where the bound could not prune and every latent was computed exactly.
    pub fallbacks: u64,
}

impl CertifiedStats {
    fn add(self, o: CertifiedStats) -> CertifiedStats {
        CertifiedStats {
            rows: self.rows + o.rows,
            exact: self.exact + o.exact,
            fallbacks: self.fallbacks + o.fallbacks,
        }
    }
}

/// Buffers of the certified encoder: the rounded inputs and weights, the per-row bounds.
#[derive(Debug, Default)]
pub struct Certified {
    pub(crate) precision: EncoderPrecision,
    xb: Vec<u16>,
    xn: Vec<RoundingNorms>,
    w: PackedRows,
    xi: IntRows,
    wi: IntRows,
    /// Per row, the bound `E` on `|s_j - v_j|` over every latent.
    bound: Vec<f32>,
    pub(crate) stats: CertifiedStats,
}

/// `γ_n` for `n` terms in f32.
fn gamma(n: usize) -> f64 {
    let nu = n as f64 * 2f64.powi(-24);
    nu / (1.0 - nu)
}

/// The largest row norm of `w` (f64, rounded up).
fn max_row_norm(w: &Matrix) -> f64 {
    (0..w.rows())
        .into_par_iter()
        .map(|j| {
            w.row(j)
                .iter()
                .map(|&v| (v as f64) * (v as f64))
                .sum::<f64>()
        })
        .reduce(|| 0.0, bf16::max_or_inf)
        .sqrt()
        * (1.0 + 1e-6)
}

impl Certified {
    /// Writes approximate pre-activations (without bias) of the centred rows `xc` against `w_enc`
    /// into `pre` (`[rows, d_sae]`) and each row's bound.
    pub(crate) fn approximate(
        &mut self,
        w_enc: &Matrix,
        b_enc: &[f32],
        xc: &[f32],
        pre: &mut [f32],
        par: Parallelism,
    ) {
        let (n, m) = w_enc.shape();
        let rows = xc.len() / m.max(1);
        let g = gamma(m);
        // The bfloat16 instruction's additions are taken to round by up to 2u each (any
        // rounding mode, or a fused pair of products rounded once): γ_2M for its sums.
        let g2 = gamma(2 * m);
        let tiny = 4.0 * m as f64 * 2f64.powi(-126);
        let max_b = b_enc
            .iter()
            .fold(0.0f64, |a, &b| bf16::max_or_inf(a, (b as f64).abs()));
        let kind = self.precision.approximation();
        par.install(|| {
            // The largest rounding norms of the weights, each row's, and the error of the sums
            // of the rounded products `ŵ·x̂`: γ_2M of |ŵ||x̂| for bfloat16's f32 additions, one
            // conversion of the exact integer sum for int16 (None: the f32 GEMM).
            let (w, xn, sum_error) = match kind {
                Approximation::Bf16 => {
                    bf16::pack_panels(w_enc.as_slice(), n, m, &mut self.w);
                    bf16::pack_rows(xc, m, &mut self.xb, &mut self.xn);
                    bf16::matmul_bf16(&mut pre[..rows * n], &self.xb, &self.w);
                    (self.w.norms, &self.xn[..], Some(g2))
                }
                Approximation::Int16 => {
                    int16::pack_panels(w_enc.as_slice(), n, m, &mut self.wi);
                    int16::pack_rows(xc, m, &mut self.xi);
                    int16::matmul_int16(&mut pre[..rows * n], &self.xi, &self.wi);
                    (self.wi.largest_norms(), &self.xi.norms[..], Some(gamma(2)))
                }
                Approximation::F32 => {
                    let (a, b) = (crate::linalg::MatRef::new(xc, rows, m), w_enc.view().t());
                    crate::linalg::matmul(pre, a, b, 0.0, par);
                    let value = max_row_norm(w_enc);
                    (
                        RoundingNorms {
                            value,
                            ..Default::default()
                        },
                        &[][..],
                        None,
                    )
                }
            };
            let wn = w.value;
            self.bound.resize(rows, 0.0);
            self.bound
                .par_iter_mut()
                .zip(xc.par_chunks(m.max(1)))
                .enumerate()
                .for_each(|(r, (e, x))| {
                    // |x|: the packer's where it rounded the row, else summed here.
                    let xnorm = match sum_error {
                        Some(_) => xn[r].value,
                        None => {
                            x.iter()
                                .map(|&v| (v as f64) * (v as f64))
                                .sum::<f64>()
                                .sqrt()
                                * (1.0 + 1e-6)
                        }
                    };
                    let reference = g * wn * xnorm;
                    let approx = match sum_error {
                        None => g * wn * xnorm,
                        Some(sum_error) => {
                            let xr = xn[r];
                            w.residual * xr.value
                                + wn * xr.residual
                                + w.residual * xr.residual
                                + sum_error * w.rounded * xr.rounded
                        }
                    };
                    let e_dot = reference + approx + tiny;
                    let s = max_b + wn * xnorm * (1.0 + g) + e_dot;
                    let bound = (e_dot + 2.0 * 2f64.powi(-24) * s) * (1.0 + 1e-6);
                    // Rounded to f32 and up by one more relative 1e-6 (> 2^-24).
                    *e = (bound * (1.0 + 1e-6)) as f32;
                });
        });
    }

    /// The top `k` of every row of the reference pre-activations (restricted to `mask` where
    /// given) into `out`, from the approximations `pre` left by [`Certified::approximate`].
    ///
    /// Three passes: each row's candidates (one pass over its approximations); their exact
    /// values in latent order, so that each encoder row is read once for all the rows that
    /// need it (in row order a random 3 KB row per candidate cost 13% of a step at
    /// 768 x 16384); each row's top `k` of its candidates.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn select(
        &mut self,
        w_enc: &Matrix,
        b_enc: &[f32],
        xc: &[f32],
        pre: &[f32],
        k: usize,
        mask: Option<&[bool]>,
        out: &mut TopK,
    ) {
        let (n, m) = w_enc.shape();
        let rows = pre.len() / n;
        let lists: Vec<(Vec<u32>, bool)> = pre
            .par_chunks(n)
            .zip(&self.bound[..rows])
            .map_init(Default::default, |scratch, (approx, &e)| {
                candidates(approx, b_enc, k, e, mask, scratch)
            })
            .collect();
        let values = exact_values(w_enc, b_enc, xc, &lists, m);
        out.k = k;
        out.indices.resize(rows * k, 0);
        out.values.resize(rows * k, 0.0);
        let mut offsets = Vec::with_capacity(rows + 1);
        offsets.push(0usize);
        for (l, _) in &lists {
            offsets.push(offsets.last().copied().unwrap_or(0) + l.len());
        }
        out.indices
            .par_chunks_mut(k)
            .zip(out.values.par_chunks_mut(k))
            .zip(lists.par_iter().zip(offsets.par_windows(2)))
            .for_each_init(Vec::new, |heap, ((idx, val), ((latents, _), w))| {
                topk_row(&values[w[0]..w[1]], k, heap, idx, val);
                idx.iter_mut().for_each(|i| *i = latents[*i as usize]);
            });
        let fallbacks = lists.iter().filter(|(_, f)| *f).count() as u64;
        self.stats = self.stats.add(CertifiedStats {
            rows: rows as u64,
            exact: values.len() as u64,
            fallbacks,
        });
    }
}

impl Certified {
    /// BatchTopK: every entry of the reference pre-activations with `v > 0` and `v >= t`, `t`
    /// the `k * total`-th largest positive one of the whole step (which `collective` finds
    /// across processes), into `out` (each row's entries in latent order, as many slots as the
    /// fullest row has, padded with zeros), from the approximations `pre`; returns `t`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn select_batch(
        &mut self,
        w_enc: &Matrix,
        b_enc: &[f32],
        xc: &[f32],
        pre: &[f32],
        (k, total): (usize, usize),
        collective: &mut dyn Collective,
        out: &mut TopK,
    ) -> f32 {
        let (n, m) = w_enc.shape();
        let rows = pre.len() / n;
        let count = k.saturating_mul(total);
        let bound = &self.bound[..rows];
        let mut lower = 0.0f32;
        for slack in GUESS_SLACK.iter().map(Some).chain([None]) {
            let guess = slack.map_or(0.0, |&c| sampled_guess(pre, b_enc, bound, k, c));
            let mut lows = lower_bounds_above(pre, b_enc, bound, guess);
            lower = collective.kth_largest(&mut lows, count);
            if lower > 0.0 {
                break;
            }
        }
        let lists: Vec<(Vec<u32>, bool)> = pre
            .par_chunks(n)
            .zip(bound)
            .map(|(approx, &e)| match below(lower.max(0.0), e as f64) {
                Some(c) => {
                    let mut list = Vec::new();
                    scan_at_least(approx, b_enc, None, c, |j| list.push(j as u32));
                    (list, false)
                }
                None => ((0..n as u32).collect(), true),
            })
            .collect();
        let values = exact_values(w_enc, b_enc, xc, &lists, m);
        let mut positive: Vec<f32> = values.iter().copied().filter(|&v| v > 0.0).collect();
        if lower > 0.0 {
            // More than `count` entries are positive: a value below every kept one makes the
            // `count`-th largest of the candidates come back even if they are exactly `count`.
            positive.push(f32::NEG_INFINITY);
        }
        let t = collective.kth_largest(&mut positive, count);
        self.keep_where(&lists, &values, |_, v| v > 0.0 && v >= t, out);
        t
    }

    /// JumpReLU: every entry of the reference pre-activations with `v > theta_j` into `out`
    /// (each row's entries in latent order, as many slots as the fullest row has, padded with
    /// zeros), and the entries in the straight-through window, `|fl(v - theta_j)| < eps / 2`, as
    /// (row, latent, v) in row-major order into `window`; from the approximations `pre`.
    ///
    /// Both sets lie in `v > theta - eps` (an entry with `v - theta <= -eps` has
    /// `fl(v - theta) <= -eps`, rounding being monotone). With `lo_j <= theta_j - eps` an f32,
    /// `v >= lo_j` gives `s + E >= lo_j`, hence `fl(s + E) >= lo_j`: that f32 test, vectorised,
    /// finds the candidates, whose values are then computed exactly.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn select_threshold(
        &mut self,
        w_enc: &Matrix,
        b_enc: &[f32],
        xc: &[f32],
        pre: &[f32],
        (theta, eps): (&[f32], f32),
        out: &mut TopK,
        window: &mut Vec<(u32, u32, f32)>,
    ) {
        let m = w_enc.cols();
        // Two steps down from the rounded difference: at most theta - eps whatever the rounding.
        let lo: Vec<f32> = theta
            .iter()
            .map(|&t| (t - eps).next_down().next_down())
            .collect();
        let lists = self.reaching(pre, b_enc, &lo);
        let values = exact_values(w_enc, b_enc, xc, &lists, m);
        let half = 0.5 * eps;
        window.clear();
        let mut at = 0usize;
        for (r, (latents, _)) in lists.iter().enumerate() {
            for (&j, &v) in latents.iter().zip(&values[at..]) {
                if (v - theta[j as usize]).abs() < half {
                    window.push((r as u32, j, v));
                }
            }
            at += latents.len();
        }
        self.keep_where(&lists, &values, |j, v| v > theta[j as usize], out);
    }

    /// Gated: the open gates, `fl(u + b_gate) > 0` with `u` the reference's bias-free
    /// `dot(W_enc[j], x_c)`, from the approximations `pre`: each row's in latent order as slots
    /// of `gates` (values `fl(u + b_gate)`, padded with zeros to the fullest row) and their `u`
    /// (same slots). None when more than `max_open` entries are candidates (`fl(s + E) >= 0`,
    /// which every open gate meets: `s + E >= fl(u + b) > 0`); the caller then goes dense.
    pub(crate) fn open_gates(
        &mut self,
        w_enc: &Matrix,
        b_gate: &[f32],
        xc: &[f32],
        pre: &[f32],
        max_open: usize,
        gates: &mut TopK,
    ) -> Option<Vec<f32>> {
        let (n, m) = w_enc.shape();
        let lo = vec![0.0f32; n];
        let lists = self.reaching(pre, b_gate, &lo);
        if lists.iter().map(|(l, _)| l.len()).sum::<usize>() > max_open {
            return None;
        }
        let u = exact_values(w_enc, &vec![0.0; n], xc, &lists, m);
        let mut open: Vec<Vec<(u32, f32, f32)>> = Vec::with_capacity(lists.len());
        let mut at = 0usize;
        for (latents, _) in &lists {
            let row = latents.iter().zip(&u[at..]).filter_map(|(&j, &u)| {
                let gate = u + b_gate[j as usize];
                (gate > 0.0).then_some((j, gate, u))
            });
            open.push(row.collect());
            at += latents.len();
        }
        let width = open.iter().map(Vec::len).max().unwrap_or(0).max(1);
        *gates = TopK::with_rows(open.len(), width);
        let mut u_slot = vec![0.0f32; open.len() * width];
        for (r, row) in open.iter().enumerate() {
            for (s, &(j, gate, u)) in row.iter().enumerate() {
                gates.indices[r * width + s] = j;
                gates.values[r * width + s] = gate;
                u_slot[r * width + s] = u;
            }
        }
        self.stats = self.stats.add(CertifiedStats {
            rows: lists.len() as u64,
            exact: u.len() as u64,
            fallbacks: lists.iter().filter(|(_, f)| *f).count() as u64,
        });
        Some(u_slot)
    }

    /// Per row of the approximations `pre`, the latents with `fl(fl(s) + E) >= lo_j` (the
    /// candidates of a threshold-like selection), or every latent where the row's bound is not
    /// finite (a fallback).
    fn reaching(&self, pre: &[f32], bias: &[f32], lo: &[f32]) -> Vec<(Vec<u32>, bool)> {
        let n = bias.len();
        pre.par_chunks(n)
            .zip(&self.bound[..pre.len() / n])
            .map(|(approx, &e)| {
                if !e.is_finite() {
                    return ((0..n as u32).collect(), true);
                }
                let mut list = Vec::new();
                scan_reaching(approx, bias, e, lo, |j| list.push(j as u32));
                (list, false)
            })
            .collect()
    }

    /// The entries of the candidates `lists` (exact `values`, flattened) that `keep` keeps into
    /// `out`, each row's in latent order, padded with zeros to the fullest row; counts the
    /// selection.
    fn keep_where(
        &mut self,
        lists: &[(Vec<u32>, bool)],
        values: &[f32],
        keep: impl Fn(u32, f32) -> bool + Sync,
        out: &mut TopK,
    ) {
        let mut offsets = Vec::with_capacity(lists.len() + 1);
        offsets.push(0usize);
        for (l, _) in lists {
            offsets.push(offsets.last().copied().unwrap_or(0) + l.len());
        }
        let kept_in = |latents: &[u32], w: &[usize]| {
            let row = latents.iter().zip(&values[w[0]..w[1]]);
            row.filter(|(&j, &v)| keep(j, v)).count()
        };
        let width = lists
            .iter()
            .zip(offsets.windows(2))
            .map(|((latents, _), w)| kept_in(latents, w))
            .max()
            .unwrap_or(0)
            .max(1);
        out.k = width;
        out.indices.clear();
        out.indices.resize(lists.len() * width, 0);
        out.values.clear();
        out.values.resize(lists.len() * width, 0.0);
        out.indices
            .par_chunks_mut(width)
            .zip(out.values.par_chunks_mut(width))
            .zip(lists.par_iter().zip(offsets.par_windows(2)))
            .for_each(|((idx, val), ((latents, _), w))| {
                let kept = latents
                    .iter()
                    .zip(&values[w[0]..w[1]])
                    .filter(|(&j, &v)| keep(j, v));
                for ((i, v), (&j, &value)) in idx.iter_mut().zip(val.iter_mut()).zip(kept) {
                    (*i, *v) = (j, value);
                }
            });
        self.stats = self.stats.add(CertifiedStats {
            rows: lists.len() as u64,
            exact: values.len() as u64,
            fallbacks: lists.iter().filter(|(_, f)| *f).count() as u64,
        });
    }
}

/// BatchTopK's guesses sample every this many rows.
const SAMPLE_EVERY: usize = 16;

/// A guess at the step's threshold is the lower bound ranked `slack * k` per sampled row among
/// the sampled rows' (whose `k` largest are expected above the threshold): first a little below
/// the expected rank, then well below; the last round takes every positive lower bound.
const GUESS_SLACK: [f64; 2] = [1.25, 4.0];

/// The lower bound `s - E` ranked `slack * k` per sampled row among every [`SAMPLE_EVERY`]-th
/// row's (0 when there are fewer positive ones). Only a guess: f32 arithmetic, no rounding care.
fn sampled_guess(pre: &[f32], b_enc: &[f32], bound: &[f32], k: usize, slack: f64) -> f32 {
    let n = b_enc.len();
    let mut lows: Vec<f32> = Vec::new();
    let sampled = pre.chunks(n).zip(bound).step_by(SAMPLE_EVERY);
    let mut rows = 0usize;
    for (approx, &e) in sampled {
        rows += 1;
        let low = approx.iter().zip(b_enc).map(|(a, b)| a + b - e);
        lows.extend(low.filter(|&l| l > 0.0));
    }
    let rank = (slack * (k * rows) as f64).ceil() as usize;
    if rank == 0 || rank > lows.len() {
        return 0.0;
    }
    let at = lows.len() - rank;
    *lows.select_nth_unstable_by(at, f32::total_cmp).1
}

/// The positive lower bounds `s - E` (rounded down) of the entries with `s >= guess + E`: the set
/// `S` of the module docs, a subset of every positive lower bound whatever the guess.
fn lower_bounds_above(pre: &[f32], b_enc: &[f32], bound: &[f32], guess: f32) -> Vec<f32> {
    let n = b_enc.len();
    pre.par_chunks(n)
        .zip(bound)
        .fold(Vec::new, |mut lows, (approx, &e)| {
            if e.is_finite() {
                scan_at_least(approx, b_enc, None, guess + e, |j| {
                    let low = round_down(approx[j] as f64 + b_enc[j] as f64 - e as f64);
                    if low > 0.0 {
                        lows.push(low)
                    }
                });
            }
            lows
        })
        .reduce(Vec::new, |mut a, b| {
            a.extend(b);
            a
        })
}

/// Calls `f` with every eligible latent of one row whose `approx + b_enc` is at or above `bar`,
/// in increasing order; blocks of [`BLOCK`] whose values are all below are skipped with one
/// vector compare.
#[inline(always)]
fn scan_at_least(
    approx: &[f32],
    b_enc: &[f32],
    mask: Option<&[bool]>,
    bar: f32,
    mut f: impl FnMut(usize),
) {
    let eligible = |j: usize| mask.is_none_or(|m| m[j]);
    simd::run(
        #[inline(always)]
        || {
            for j0 in (0..b_enc.len()).step_by(BLOCK) {
                let end = (j0 + BLOCK).min(b_enc.len());
                if block_clears(approx, b_enc, mask, j0..end, bar, true) {
                    (j0..end)
                        .filter(|&j| eligible(j) && approx[j] + b_enc[j] >= bar)
                        .for_each(&mut f);
                }
            }
        },
    );
}

/// Calls `f` with every latent of one row whose `fl(fl(approx + b_enc) + bound)` is at or above
/// its `lo`, in increasing order, a block of [`BLOCK`] at a time (fixed-size arrays: one vector
/// compare per block; a shorter last block is checked one by one).
#[inline(always)]
fn scan_reaching(approx: &[f32], b_enc: &[f32], bound: f32, lo: &[f32], mut f: impl FnMut(usize)) {
    let reaches = |j: usize| (approx[j] + b_enc[j]) + bound >= lo[j];
    simd::run(
        #[inline(always)]
        || {
            for j0 in (0..b_enc.len()).step_by(BLOCK) {
                let end = (j0 + BLOCK).min(b_enc.len());
                let r = j0..end;
                let any = match (
                    <&[f32; BLOCK]>::try_from(&approx[r.clone()]),
                    <&[f32; BLOCK]>::try_from(&b_enc[r.clone()]),
                    <&[f32; BLOCK]>::try_from(&lo[r]),
                ) {
                    (Ok(a), Ok(b), Ok(l)) => {
                        let mut hit = [false; BLOCK];
                        for i in 0..BLOCK {
                            hit[i] = (a[i] + b[i]) + bound >= l[i];
                        }
                        hit.iter().fold(false, |h, &x| h | x)
                    }
                    _ => true,
                };
                if any {
                    (j0..end).filter(|&j| reaches(j)).for_each(&mut f);
                }
            }
        },
    );
}

/// The latents of one row that can be in its reference top `k` (in increasing order), and
/// whether the bound failed to prune (then every eligible latent). Two passes over the row: a
/// value `t0` at most the k-th best approximate value (the k-th largest of the maxima of
/// disjoint groups of at most 16 latents, [`group_maxima`]: k groups hold a value at or above
/// it), then the latents within twice the bound below `t0`, in blocks of 16, each block skipped
/// unless one of its values clears the bar (one vector compare). The proof in the module docs
/// needs only `t <= s_(k) - 2E`. (The exact k-th value by a heap cost 21% of a 384 x 6144 step,
/// the maxima about 5%; one branchy pass with a running bar cost 5.6 ns a value, 190 ms of a
/// 768 x 16384 step.)
fn candidates(
    approx: &[f32],
    b_enc: &[f32],
    k: usize,
    bound: f32,
    mask: Option<&[bool]>,
    (heap, maxima): &mut (Vec<(f32, u32)>, Vec<f32>),
) -> (Vec<u32>, bool) {
    let n = b_enc.len();
    let eligible = |j: usize| mask.is_none_or(|m| m[j]);
    let value = |j: usize| approx[j] + b_enc[j];
    let mut list = Vec::new();
    let kth = kth_group_maximum(approx, b_enc, k, mask, maxima);
    let kth = kth.or_else(|| {
        simd::run(
            #[inline(always)]
            || {
                let mut best = BestK::new(heap, k);
                for j0 in (0..n).step_by(BLOCK) {
                    let end = (j0 + BLOCK).min(n);
                    let bar = best.bar().unwrap_or(f32::NEG_INFINITY);
                    if best.bar().is_none()
                        || block_clears(approx, b_enc, mask, j0..end, bar, false)
                    {
                        for j in (j0..end).filter(|&j| eligible(j)) {
                            best.offer(value(j), j as u32);
                        }
                    }
                }
                best.bar()
            },
        )
    });
    if let Some(t) = kth.and_then(|b| below(b, 2.0 * bound as f64)) {
        scan_at_least(approx, b_enc, mask, t, |j| list.push(j as u32));
        if list.len() * 8 <= n {
            return (list, false);
        }
    }
    let all = (0..n as u32).filter(|&j| eligible(j as usize)).collect();
    (all, true)
}

/// The k-th largest of the maxima of the eligible `approx + b_enc` over the row's groups (see
/// [`group_maxima`]; a lower bound on the row's k-th largest value: k disjoint groups hold a
/// value at or above it), or None when fewer than `k` groups have a finite maximum.
fn kth_group_maximum(
    approx: &[f32],
    b_enc: &[f32],
    k: usize,
    mask: Option<&[bool]>,
    maxima: &mut Vec<f32>,
) -> Option<f32> {
    simd::run(
        #[inline(always)]
        || group_maxima(approx, b_enc, mask, maxima),
    );
    maxima.retain(|v| v.is_finite());
    if k == 0 || maxima.len() < k {
        return None;
    }
    let at = maxima.len() - k;
    Some(*maxima.select_nth_unstable_by(at, f32::total_cmp).1)
}

/// The maxima of the eligible `approx + b_enc` (-inf where none) over disjoint groups of the
/// row: the row's whole vectors of [`BLOCK`] lanes go in chunks of [`BLOCK`] vectors, each chunk
/// with one group per lane (its strided latents), and the last `n % BLOCK` latents form one
/// chunk more; so a chunk's maxima are a running vector maximum, with no horizontal reduction
/// per block (maxima of 16 consecutive latents each: the candidates phase of a 384 x 6144 step
/// took 24 ms with them, 16 with these groups).
#[inline(always)]
fn group_maxima(approx: &[f32], b_enc: &[f32], mask: Option<&[bool]>, out: &mut Vec<f32>) {
    const EVERY: [bool; BLOCK] = [true; BLOCK];
    let n = b_enc.len();
    out.clear();
    let (av, at) = approx[..n].as_chunks::<BLOCK>();
    let (bv, bt) = b_enc.as_chunks::<BLOCK>();
    match mask {
        // The constant mask folds away: the same loop as one written without it.
        None => chunk_maxima(av, bv, std::iter::repeat(&EVERY), out),
        Some(m) => chunk_maxima(av, bv, m.as_chunks::<BLOCK>().0.iter(), out),
    }
    if !at.is_empty() {
        let tail = n - at.len();
        let eligible = |j: usize| mask.is_none_or(|m| m[j]);
        let mut g = [f32::NEG_INFINITY; BLOCK];
        for ((i, a), b) in at.iter().enumerate().zip(bt) {
            if eligible(tail + i) {
                g[i] = a + b;
            }
        }
        out.extend_from_slice(&g);
    }
}

/// [`group_maxima`]'s whole chunks: per chunk of [`BLOCK`] vectors, the lanes' maxima of the
/// `a + b` that `masks` (one array per vector) keeps. The update is one compare under the mask
/// and a blend per vector (checked with `rustc --emit asm`): `f32::max` was vectorised across
/// the vectors, with gathers (45 ms for the 384 x 6144 step's candidates against 16), and a
/// value replaced by -inf where masked out compiled the masked loop to scalar code (AuxK's
/// candidates at 768 x 16384 with a tenth of the latents dead: 74 ms a step, 54 with this).
#[inline(always)]
fn chunk_maxima<'a>(
    av: &[[f32; BLOCK]],
    bv: &[[f32; BLOCK]],
    mut masks: impl Iterator<Item = &'a [bool; BLOCK]>,
    out: &mut Vec<f32>,
) {
    for (ca, cb) in av.chunks(BLOCK).zip(bv.chunks(BLOCK)) {
        let mut g = [f32::NEG_INFINITY; BLOCK];
        for ((a, b), m) in ca.iter().zip(cb).zip(&mut masks) {
            for i in 0..BLOCK {
                let v = a[i] + b[i];
                // A NaN `v` never replaces `g`.
                g[i] = if m[i] & (v > g[i]) { v } else { g[i] };
            }
        }
        out.extend_from_slice(&g);
    }
}

/// Values per block of [`candidates`]' passes: one AVX-512 register.
const BLOCK: usize = 16;

/// Whether some eligible latent of `range` has `approx + b_enc` above `bar` (at or above with
/// `or_equal`). A whole block is read as fixed-size arrays, branch-free, so that it compiles to
/// one vector compare (over a slice of unknown length the loop ran in the vectorizer's scalar
/// remainder); a shorter last block always counts as clearing.
#[inline(always)]
fn block_clears(
    approx: &[f32],
    b_enc: &[f32],
    mask: Option<&[bool]>,
    range: std::ops::Range<usize>,
    bar: f32,
    or_equal: bool,
) -> bool {
    let (Ok(a), Ok(b)) = (
        <&[f32; BLOCK]>::try_from(&approx[range.clone()]),
        <&[f32; BLOCK]>::try_from(&b_enc[range.clone()]),
    ) else {
        return true;
    };
    let mut hit = [false; BLOCK];
    for i in 0..BLOCK {
        let v = a[i] + b[i];
        hit[i] = (v > bar) | (or_equal & (v == bar));
    }
    if let Some(m) = mask {
        let Ok(m) = <&[bool; BLOCK]>::try_from(&m[range]) else {
            return true;
        };
        for i in 0..BLOCK {
            hit[i] &= m[i];
        }
    }
    hit.iter().fold(false, |h, &x| h | x)
}

/// The reference values of every row's candidates, flattened in row order: computed in latent
/// order (a counting sort of the (row, latent) pairs), then put back.
fn exact_values(
    w_enc: &Matrix,
    b_enc: &[f32],
    xc: &[f32],
    lists: &[(Vec<u32>, bool)],
    m: usize,
) -> Vec<f32> {
    let n = b_enc.len();
    let total: usize = lists.iter().map(|(l, _)| l.len()).sum();
    let mut start = vec![0usize; n + 1];
    for (l, _) in lists {
        for &j in l {
            start[j as usize + 1] += 1;
        }
    }
    for j in 0..n {
        start[j + 1] += start[j];
    }
    // (latent, row, flat position) of every candidate, sorted by latent.
    let mut sorted = vec![(0u32, 0u32, 0usize); total];
    let mut pos = 0usize;
    for (r, (l, _)) in lists.iter().enumerate() {
        for &j in l {
            let at = &mut start[j as usize];
            sorted[*at] = (j, r as u32, pos);
            *at += 1;
            pos += 1;
        }
    }
    let mut by_latent = vec![0.0f32; total];
    by_latent
        .par_chunks_mut(4096)
        .zip(sorted.par_chunks(4096))
        .for_each(|(v, s)| {
            simd::run(
                #[inline(always)]
                || {
                    for (v, &(j, r, _)) in v.iter_mut().zip(s) {
                        let x = &xc[r as usize * m..(r as usize + 1) * m];
                        *v = simd::dot_inline(w_enc.row(j as usize), x) + b_enc[j as usize];
                    }
                },
            )
        });
    let mut values = vec![0.0f32; total];
    for (&(_, _, p), &v) in sorted.iter().zip(&by_latent) {
        values[p] = v;
    }
    values
}

/// The largest f32 at most `value - margin` (computed in f64), or None when it is not finite.
fn below(value: f32, margin: f64) -> Option<f32> {
    let t64 = value as f64 - margin;
    if !t64.is_finite() {
        return None;
    }
    let t = round_down(t64);
    t.is_finite().then_some(t)
}

/// The largest f32 at most `v`.
fn round_down(v: f64) -> f32 {
    let t = v as f32;
    if t as f64 > v {
        t.next_down()
    } else {
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PRECISIONS: [EncoderPrecision; 3] = [
        EncoderPrecision::Auto,
        EncoderPrecision::Int16,
        EncoderPrecision::F32,
    ];
    use crate::sae::{Activation, EncoderInit, Sae};
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use rand_distr::{Distribution, Normal, StandardNormal};

    /// Every latent computed exactly, then the plain top-k: what the certified path must equal.
    fn reference(sae: &Sae, xc: &[f32], k: usize, mask: Option<&[bool]>) -> TopK {
        let (n, m) = sae.w_enc.shape();
        let rows = xc.len() / m;
        let mut out = TopK::with_rows(rows, k);
        for (r, x) in xc.chunks(m).enumerate() {
            let latents: Vec<usize> = (0..n).filter(|&j| mask.is_none_or(|m| m[j])).collect();
            let v: Vec<f32> = latents
                .iter()
                .map(|&j| simd::dot(sae.w_enc.row(j), x) + sae.b_enc[j])
                .collect();
            let (idx, val) = (
                &mut out.indices[r * k..(r + 1) * k],
                &mut out.values[r * k..(r + 1) * k],
            );
            topk_row(&v, k, &mut Vec::new(), idx, val);
            idx.iter_mut()
                .for_each(|i| *i = latents[*i as usize] as u32);
        }
        out
    }

    fn certified(
        sae: &Sae,
        xc: &[f32],
        k: usize,
        mask: Option<&[bool]>,
        precision: EncoderPrecision,
        threads: usize,
    ) -> (TopK, CertifiedStats) {
        let par = Parallelism::threads(threads);
        let mut c = Certified {
            precision,
            ..Default::default()
        };
        let mut pre = vec![0.0; xc.len() / sae.d_in() * sae.d_sae()];
        let mut out = TopK::default();
        c.approximate(&sae.w_enc, &sae.b_enc, xc, &mut pre, par);
        par.install(|| c.select(&sae.w_enc, &sae.b_enc, xc, &pre, k, mask, &mut out));
        (out, c.stats)
    }

    fn random_sae(d_in: usize, d_sae: usize, seed: u64) -> Sae {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let mut sae = Sae::init(
            d_in,
            d_sae,
            Activation::TopK { k: 8 },
            EncoderInit::FanInUniform,
            &mut rng,
        );
        let noise = Normal::new(0.0f32, 0.05).unwrap();
        sae.b_enc
            .iter_mut()
            .for_each(|b| *b = noise.sample(&mut rng));
        sae
    }

    fn inputs(rows: usize, d: usize, seed: u64) -> Vec<f32> {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        (0..rows * d)
            .map(|_| StandardNormal.sample(&mut rng))
            .collect()
    }

    fn assert_same(a: &TopK, b: &TopK, what: &str) {
        assert_eq!(a.indices, b.indices, "{what}: indices");
        let bits = |t: &TopK| t.values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(a), bits(b), "{what}: values");
    }

    /// Every latent computed exactly, then BatchTopK's plain selection (`k * rows` largest
    /// positive entries, ties at the threshold kept), and its threshold.
    fn batch_reference(sae: &Sae, xc: &[f32], k: usize) -> (TopK, f32) {
        let (n, m) = sae.w_enc.shape();
        let v: Vec<Vec<f32>> = xc
            .chunks(m)
            .map(|x| {
                let dot = |j: usize| simd::dot(sae.w_enc.row(j), x) + sae.b_enc[j];
                (0..n).map(dot).collect()
            })
            .collect();
        let mut positive: Vec<f32> = v.iter().flatten().copied().filter(|&v| v > 0.0).collect();
        let t = crate::sae::SingleProcess.kth_largest(&mut positive, k * v.len());
        let kept: Vec<Vec<(u32, f32)>> = v
            .iter()
            .map(|row| {
                let keep = |(j, &v): (usize, &f32)| (v > 0.0 && v >= t).then_some((j as u32, v));
                row.iter().enumerate().filter_map(keep).collect()
            })
            .collect();
        let width = kept.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut out = TopK::with_rows(v.len(), width);
        for (r, row) in kept.iter().enumerate() {
            for (s, &(j, v)) in row.iter().enumerate() {
                out.indices[r * width + s] = j;
                out.values[r * width + s] = v;
            }
        }
        (out, t)
    }

    fn certified_batch(
        sae: &Sae,
        xc: &[f32],
        k: usize,
        precision: EncoderPrecision,
        threads: usize,
    ) -> (TopK, f32, CertifiedStats) {
        let par = Parallelism::threads(threads);
        let mut c = Certified {
            precision,
            ..Default::default()
        };
        let rows = xc.len() / sae.d_in();
        let mut pre = vec![0.0; rows * sae.d_sae()];
        let mut out = TopK::default();
        c.approximate(&sae.w_enc, &sae.b_enc, xc, &mut pre, par);
        let (w, b) = (&sae.w_enc, &sae.b_enc);
        let mut one = crate::sae::SingleProcess;
        let t = par.install(|| c.select_batch(w, b, xc, &pre, (k, rows), &mut one, &mut out));
        (out, t, c.stats)
    }

    #[test]
    fn batch_selection_is_the_reference_at_every_thread_count() {
        for &(m, n, rows, k) in &[
            (64, 512, 37, 8),
            (33, 300, 20, 5),
            (96, 1000, 13, 32),
            (7, 9, 5, 3),
        ] {
            let sae = random_sae(m, n, m as u64);
            let xc = inputs(rows, m, n as u64);
            let (want, want_t) = batch_reference(&sae, &xc, k);
            for precision in PRECISIONS {
                for threads in [1, 2, 3] {
                    let what = format!("{m}x{n} k {k} {precision:?} {threads} threads");
                    let (got, t, stats) = certified_batch(&sae, &xc, k, precision, threads);
                    assert_same(&got, &want, &what);
                    assert_eq!((got.k, t.to_bits()), (want.k, want_t.to_bits()), "{what}");
                    assert_eq!(stats.fallbacks, 0, "{what}");
                }
            }
            if n >= 512 {
                let (_, _, stats) = certified_batch(&sae, &xc, k, EncoderPrecision::Auto, 2);
                assert!(stats.exact * 4 < (rows * n) as u64, "{m}x{n}: {stats:?}");
            }
        }
    }

    #[test]
    fn batch_selection_with_few_positive_entries_keeps_them_all() {
        // Biases far below zero: fewer than k * rows entries are positive, the threshold is 0.
        let mut sae = random_sae(48, 600, 13);
        sae.b_enc.iter_mut().for_each(|b| *b -= 1.6);
        let xc = inputs(20, 48, 14);
        let (want, want_t) = batch_reference(&sae, &xc, 16);
        assert_eq!(want_t, 0.0);
        assert!(want.values.iter().any(|&v| v > 0.0));
        for precision in PRECISIONS {
            let (got, t, _) = certified_batch(&sae, &xc, 16, precision, 2);
            assert_same(&got, &want, &format!("{precision:?}"));
            assert_eq!(t, 0.0);
        }
    }

    #[test]
    fn batch_selection_keeps_ties_and_falls_back_on_non_finite_rows() {
        let mut sae = random_sae(40, 400, 15);
        for j in 0..400 {
            let src = sae.w_enc.row(j - j % 4).to_vec();
            sae.w_enc.row_mut(j).copy_from_slice(&src);
            sae.b_enc[j] = sae.b_enc[j - j % 4];
        }
        let mut xc = inputs(30, 40, 16);
        for k in [1, 3, 7] {
            let (want, want_t) = batch_reference(&sae, &xc, k);
            let (got, t, _) = certified_batch(&sae, &xc, k, EncoderPrecision::Auto, 2);
            assert_same(&got, &want, &format!("ties, k {k}"));
            assert_eq!(t.to_bits(), want_t.to_bits());
        }
        xc[7 * 40 + 2] = f32::INFINITY;
        let (want, _) = batch_reference(&sae, &xc, 3);
        let (got, _, stats) = certified_batch(&sae, &xc, 3, EncoderPrecision::Auto, 2);
        assert_same(&got, &want, "row with an infinity");
        assert_eq!(stats.fallbacks, 1);
    }

    #[test]
    fn selects_what_the_reference_selects_at_every_thread_count() {
        for &(m, n, rows, k) in &[
            (64, 512, 37, 8),
            (33, 300, 20, 5),
            (96, 1000, 13, 32),
            (7, 9, 5, 9),
        ] {
            let sae = random_sae(m, n, m as u64);
            let xc = inputs(rows, m, n as u64);
            let want = reference(&sae, &xc, k, None);
            for precision in PRECISIONS {
                for threads in [1, 2, 3] {
                    let (got, _) = certified(&sae, &xc, k, None, precision, threads);
                    assert_same(
                        &got,
                        &want,
                        &format!("{m}x{n} k {k} {precision:?} {threads} threads"),
                    );
                }
            }
        }
    }

    #[test]
    fn masked_selection_is_the_reference_over_the_mask() {
        let sae = random_sae(48, 700, 3);
        let xc = inputs(25, 48, 4);
        let mask: Vec<bool> = (0..700).map(|j| j % 3 != 1 && j < 650).collect();
        let want = reference(&sae, &xc, 16, Some(&mask));
        for precision in PRECISIONS {
            let (got, _) = certified(&sae, &xc, 16, Some(&mask), precision, 2);
            assert_same(&got, &want, &format!("{precision:?}"));
        }
    }

    #[test]
    fn ties_go_to_the_lower_index_as_in_the_reference() {
        // Latents in groups of four with identical encoder rows and biases: every value is tied
        // four ways, and the top k cuts through groups.
        let mut sae = random_sae(40, 400, 5);
        for j in 0..400 {
            let src = sae.w_enc.row(j - j % 4).to_vec();
            sae.w_enc.row_mut(j).copy_from_slice(&src);
            sae.b_enc[j] = sae.b_enc[j - j % 4];
        }
        let xc = inputs(30, 40, 6);
        for k in [1, 2, 6, 13] {
            let want = reference(&sae, &xc, k, None);
            for precision in PRECISIONS {
                let (got, _) = certified(&sae, &xc, k, None, precision, 2);
                assert_same(&got, &want, &format!("k {k} {precision:?}"));
            }
        }
    }

    #[test]
    fn the_bound_prunes_and_non_finite_rows_fall_back() {
        let sae = random_sae(256, 4096, 7);
        for precision in [EncoderPrecision::Auto, EncoderPrecision::Int16] {
            let mut xc = inputs(64, 256, 8);
            let (_, stats) = certified(&sae, &xc, 32, None, precision, 2);
            assert_eq!((stats.rows, stats.fallbacks), (64, 0), "{precision:?}");
            // On random directions a few hundred latents of 4,096 stay candidates, not all.
            assert!(stats.exact < 64 * 4096 / 8, "{precision:?} {stats:?}");
            xc[5 * 256 + 3] = f32::INFINITY;
            let want = reference(&sae, &xc, 32, None);
            let (got, stats) = certified(&sae, &xc, 32, None, precision, 2);
            assert_same(&got, &want, "row with an infinity");
            assert_eq!(stats.fallbacks, 1, "{precision:?}");
        }
    }

    /// Every approximate value lies within its row's bound of the reference, for every
    /// approximation, on random rows and on rows built to make the 16-bit rounding's error as
    /// large as Cauchy-Schwarz allows (weights of equal magnitude, every input half a step from
    /// an integer on the weights' side), where the error reaches ~0.98 of the bound's `|w| |e_x|`
    /// term: leaving that term out fails this test.
    #[test]
    fn approximations_lie_within_the_bound() {
        let (m, n, rows) = (96, 40, 24);
        let mut sae = random_sae(m, n, 21);
        let sign = |j: usize, i: usize| {
            if (i * 7 + j * 3) % 5 < 2 {
                -1.0f32
            } else {
                1.0
            }
        };
        for j in 0..n / 2 {
            for i in 0..m {
                sae.w_enc.row_mut(j)[i] = 0.25 * sign(j, i);
            }
        }
        let mut xc = inputs(rows, m, 22);
        // Rows 0..n/2 against latent r: integer steps of s = 2^-11 (the row's largest value,
        // 1.5, needs 2^-11 at Q = 4729 for 96 columns), each input at +-0.49 s off its integer.
        let s = 2f32.powi(-11);
        assert_eq!(int16::limit(m), 4729);
        for r in 0..n / 2 {
            let x = &mut xc[r * m..(r + 1) * m];
            for (i, v) in x.iter_mut().enumerate() {
                let q = ((i * 37 + r) % 1001) as f32 + 300.0;
                *v = s * (q + 0.49 * sign(r, i));
            }
            x[0] = 1.5;
        }
        for precision in PRECISIONS {
            let mut c = Certified {
                precision,
                ..Default::default()
            };
            let mut pre = vec![0.0; rows * n];
            c.approximate(
                &sae.w_enc,
                &sae.b_enc,
                &xc,
                &mut pre,
                Parallelism::threads(2),
            );
            let mut worst = 0.0f64;
            for r in 0..rows {
                let x = &xc[r * m..(r + 1) * m];
                for j in 0..n {
                    let v = simd::dot(sae.w_enc.row(j), x) + sae.b_enc[j];
                    let approx = pre[r * n + j] + sae.b_enc[j];
                    let e = c.bound[r];
                    assert!(
                        (approx - v).abs() <= e,
                        "{precision:?} row {r} latent {j}: {approx} vs {v}, bound {e}"
                    );
                    worst = worst.max(((approx - v).abs() / e) as f64);
                }
            }
            if precision == EncoderPrecision::Int16 {
                assert!(
                    worst > 0.9,
                    "the adversarial rows reach {worst} of the bound"
                );
            }
        }
    }

    /// A trained SAE: the runs with bfloat16 (where the CPU has it) and 16-bit integer
    /// approximations are bit-identical to the run with f32 ones (the selection is the same, so is everything after it), and its selection on held-out
    /// rows is the reference's.
    #[test]
    fn trained_runs_are_identical_whatever_the_approximation() {
        use crate::data::{generate, Magnitude, Support, SynthConfig};
        use crate::train::{train, ArchConfig, NoObserver, TrainConfig};
        let synth = SynthConfig {
            latents: 512,
            dims: 64,
            support: Support::Exact { k: 6 },
            magnitude: Magnitude::SignedNormal,
            samples: 4096,
            test_samples: 256,
            snr_db: None,
            seed: 9,
            hierarchy: None,
            correlation: None,
        };
        let data = generate(&synth, None).unwrap();
        let x = &data.train.activations;
        let top_k = ArchConfig::TopK {
            k: 8,
            aux_k: 32,
            aux_coef: 1.0 / 32.0,
        };
        let run = |precision, arch| {
            let mut cfg = TrainConfig::new(arch, 1024, 150, 256, 1e-3, 3);
            cfg.threads = 2;
            cfg.dead_window = 512;
            cfg.encoder_precision = precision;
            train(&cfg.check_for(x).unwrap(), x, None, None, &mut NoObserver).unwrap()
        };
        let (auto, f32) = (
            run(EncoderPrecision::Auto, top_k.clone()),
            run(EncoderPrecision::F32, top_k.clone()),
        );
        assert_eq!(auto.state.sae, f32.state.sae);
        let int16 = run(EncoderPrecision::Int16, top_k);
        assert_eq!(int16.state.sae, f32.state.sae, "int16");
        assert!(int16.certified.exact < int16.certified.rows * 1024 / 8);
        let batch = ArchConfig::BatchTopK {
            k: 8,
            aux_k: 32,
            aux_coef: 1.0 / 32.0,
        };
        let (batch_auto, batch_f32) = (
            run(EncoderPrecision::Auto, batch.clone()),
            run(EncoderPrecision::F32, batch.clone()),
        );
        assert_eq!(batch_auto.state, batch_f32.state, "BatchTopK");
        let batch_int16 = run(EncoderPrecision::Int16, batch);
        assert_eq!(batch_int16.state, batch_f32.state, "BatchTopK int16");
        let c = batch_auto.certified;
        assert!(c.rows >= 150 * 256 && c.exact < c.rows * 1024 / 4, "{c:?}");
        assert!(
            auto.certified.rows >= 150 * 256 && auto.certified.fallbacks == 0,
            "{:?}",
            auto.certified
        );
        assert!(
            auto.certified.exact < auto.certified.rows * 1024 / 8,
            "{:?}",
            auto.certified
        );
        let sae = auto.model();
        let test = data.test.unwrap().activations;
        let mut xc = test.as_slice().to_vec();
        sae.center(test.as_slice(), &mut xc);
        let want = reference(&sae, &xc, 8, None);
        let (got, _) = certified(&sae, &xc, 8, None, EncoderPrecision::Auto, 2);
        assert_same(&got, &want, "trained SAE, held-out rows");
    }

    /// Every latent computed exactly, then JumpReLU's selection and straight-through window.
    fn threshold_reference(
        sae: &Sae,
        xc: &[f32],
        theta: &[f32],
        eps: f32,
    ) -> (TopK, Vec<(u32, u32, f32)>) {
        let (n, m) = sae.w_enc.shape();
        let (mut kept, mut window) = (Vec::new(), Vec::new());
        for (r, x) in xc.chunks(m).enumerate() {
            let mut row = Vec::new();
            for j in 0..n {
                let v = simd::dot(sae.w_enc.row(j), x) + sae.b_enc[j];
                if v > theta[j] {
                    row.push((j as u32, v));
                }
                if (v - theta[j]).abs() < 0.5 * eps {
                    window.push((r as u32, j as u32, v));
                }
            }
            kept.push(row);
        }
        let width = kept.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let mut out = TopK::with_rows(kept.len(), width);
        for (r, row) in kept.iter().enumerate() {
            for (s, &(j, v)) in row.iter().enumerate() {
                out.indices[r * width + s] = j;
                out.values[r * width + s] = v;
            }
        }
        (out, window)
    }

    #[test]
    fn threshold_selection_and_window_are_the_reference() {
        for &(m, n, rows) in &[(64, 512, 37), (33, 300, 20), (7, 9, 5)] {
            let sae = random_sae(m, n, 19 + m as u64);
            let mut xc = inputs(rows, m, 20 + n as u64);
            // Thresholds near the top of each latent's values, a wide window to hit some.
            let theta: Vec<f32> = (0..n).map(|j| 0.5 + 0.2 * (j % 5) as f32).collect();
            for eps in [0.05f32, 0.4] {
                let (want, want_window) = threshold_reference(&sae, &xc, &theta, eps);
                assert!(!want_window.is_empty() || n < 100);
                for precision in PRECISIONS {
                    for threads in [1, 3] {
                        let what = format!("{m}x{n} eps {eps} {precision:?} {threads} threads");
                        let par = Parallelism::threads(threads);
                        let mut c = Certified {
                            precision,
                            ..Default::default()
                        };
                        let mut pre = vec![0.0; rows * n];
                        let (mut got, mut window) = (TopK::default(), Vec::new());
                        c.approximate(&sae.w_enc, &sae.b_enc, &xc, &mut pre, par);
                        let (w, b) = (&sae.w_enc, &sae.b_enc);
                        par.install(|| {
                            let sel = (&theta[..], eps);
                            c.select_threshold(w, b, &xc, &pre, sel, &mut got, &mut window)
                        });
                        assert_same(&got, &want, &what);
                        assert_eq!(window, want_window, "{what}");
                        if n >= 300 {
                            assert!(
                                c.stats.exact * 4 < (rows * n) as u64,
                                "{what} {:?}",
                                c.stats
                            );
                        }
                    }
                }
            }
            xc[2 * m] = f32::NAN;
            let (want, want_window) = threshold_reference(&sae, &xc, &theta, 0.1);
            let mut c = Certified::default();
            let mut pre = vec![0.0; rows * n];
            let (mut got, mut window) = (TopK::default(), Vec::new());
            let par = Parallelism::threads(2);
            c.approximate(&sae.w_enc, &sae.b_enc, &xc, &mut pre, par);
            let (w, b) = (&sae.w_enc, &sae.b_enc);
            c.select_threshold(w, b, &xc, &pre, (&theta, 0.1), &mut got, &mut window);
            assert_same(&got, &want, "a NaN row");
            assert_eq!(window, want_window);
            assert_eq!(c.stats.fallbacks, 1);
        }
    }

    #[test]
    fn open_gates_are_the_reference_and_too_many_refuse() {
        let (m, n, rows) = (40, 500, 30);
        let mut sae = random_sae(m, n, 23);
        sae.b_enc.iter_mut().for_each(|b| *b -= 0.7);
        let xc = inputs(rows, m, 24);
        // The reference: u by the fixed-order dot, a gate open where fl(u + b) > 0.
        let want: Vec<Vec<(u32, f32, f32)>> = xc
            .chunks(m)
            .map(|x| {
                let entry = |j: usize| {
                    let u = simd::dot(sae.w_enc.row(j), x);
                    let gate = u + sae.b_enc[j];
                    (gate > 0.0).then_some((j as u32, gate, u))
                };
                (0..n).filter_map(entry).collect()
            })
            .collect();
        let open: usize = want.iter().map(Vec::len).sum();
        assert!(open > rows && open * 4 < rows * n, "{open}");
        for precision in PRECISIONS {
            let mut c = Certified {
                precision,
                ..Default::default()
            };
            let mut pre = vec![0.0; rows * n];
            let par = Parallelism::threads(2);
            c.approximate(&sae.w_enc, &sae.b_enc, &xc, &mut pre, par);
            let (w, b) = (&sae.w_enc, &sae.b_enc);
            let mut gates = TopK::default();
            let u = c
                .open_gates(w, b, &xc, &pre, usize::MAX, &mut gates)
                .unwrap();
            let width = gates.k;
            for (r, row) in want.iter().enumerate() {
                for s in 0..width {
                    let got = (gates.indices[r * width + s], gates.values[r * width + s]);
                    let got = (got.0, got.1.to_bits(), u[r * width + s].to_bits());
                    let expect = row
                        .get(s)
                        .map_or((0, 0, 0), |&(j, g, u)| (j, g.to_bits(), u.to_bits()));
                    assert_eq!(got, expect, "{precision:?} row {r} slot {s}");
                }
            }
            assert!(c
                .open_gates(w, b, &xc, &pre, open / 2, &mut gates)
                .is_none());
        }
    }

    /// Approximations as wrong as the bound allows, in the worst direction: each value at or
    /// above the row's (or the batch's) threshold lowered by nearly `E`, each one below raised.
    /// Only the selection logic is tested here (the kernel's bound is tested above).
    #[test]
    fn adversarial_approximations_within_the_bound_still_select_the_reference() {
        let (m, n, rows) = (32, 400, 24);
        let sae = random_sae(m, n, 17);
        let xc = inputs(rows, m, 18);
        let exact: Vec<f32> = xc
            .chunks(m)
            .flat_map(|x| (0..n).map(|j| simd::dot(sae.w_enc.row(j), x) + sae.b_enc[j]))
            .collect();
        let spread = (exact.iter().map(|v| v * v).sum::<f32>() / exact.len() as f32).sqrt();
        let e = 0.3 * spread;
        let skewed = |above: &dyn Fn(usize, f32) -> bool| -> Vec<f32> {
            let shift = |(i, &v): (usize, &f32)| {
                let d = if above(i / n, v) { -0.9 * e } else { 0.9 * e };
                v + d - sae.b_enc[i % n]
            };
            exact.iter().enumerate().map(shift).collect()
        };
        let mut c = Certified {
            bound: vec![e; rows],
            ..Default::default()
        };
        let k = 6;
        let want = reference(&sae, &xc, k, None);
        let kth: Vec<f32> = (0..rows).map(|r| want.values[r * k + k - 1]).collect();
        let pre = skewed(&|r, v| v >= kth[r]);
        let mut got = TopK::default();
        c.select(&sae.w_enc, &sae.b_enc, &xc, &pre, k, None, &mut got);
        assert_same(&got, &want, "TopK");
        let (want, t) = batch_reference(&sae, &xc, k);
        let pre = skewed(&|_, v| v >= t);
        let mut one = crate::sae::SingleProcess;
        let (w, b) = (&sae.w_enc, &sae.b_enc);
        let got_t = c.select_batch(w, b, &xc, &pre, (k, rows), &mut one, &mut got);
        assert_same(&got, &want, "BatchTopK");
        assert_eq!(got_t.to_bits(), t.to_bits());
        // JumpReLU: values in the window or above the threshold lowered, the rest raised.
        let theta: Vec<f32> = (0..n).map(|j| t + 0.01 * (j % 3) as f32).collect();
        let eps = 0.2 * spread;
        let (want, want_window) = threshold_reference(&sae, &xc, &theta, eps);
        let pre = skewed(&|_, _| false);
        let pre: Vec<f32> = pre
            .iter()
            .zip(&exact)
            .enumerate()
            .map(|(i, (&p, &v))| {
                let lowered = v > theta[i % n] - 0.5 * eps;
                if lowered {
                    p - 1.8 * e
                } else {
                    p
                }
            })
            .collect();
        let mut window = Vec::new();
        c.select_threshold(w, b, &xc, &pre, (&theta, eps), &mut got, &mut window);
        assert_same(&got, &want, "JumpReLU");
        assert_eq!(window, want_window, "JumpReLU window");
    }

    #[test]
    fn a_nan_in_the_weights_or_biases_falls_back_to_the_reference() {
        for (which, at) in [("bias", 17), ("weight", 40 * 33 + 5)] {
            let mut sae = random_sae(40, 300, 11);
            match which {
                "bias" => sae.b_enc[at] = f32::NAN,
                _ => sae.w_enc.as_mut_slice()[at] = f32::NAN,
            }
            let xc = inputs(9, 40, 12);
            let want = reference(&sae, &xc, 6, None);
            for precision in PRECISIONS {
                let (got, stats) = certified(&sae, &xc, 6, None, precision, 2);
                assert_same(&got, &want, &format!("NaN {which} {precision:?}"));
                assert_eq!(stats.fallbacks, 9, "{which} {precision:?}");
            }
        }
    }
}
