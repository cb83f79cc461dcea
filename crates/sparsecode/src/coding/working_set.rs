//! Working-set solver for the same L1 problem as [`super::fista`], for dictionaries small enough
//! for a Gram matrix (`N <= 4096`): each sample solves the problem restricted to a small set of
//! atoms with FISTA, then checks the optimality (KKT) conditions of every atom
//! (`|(z G - y D^T)_j| <= lambda`, one-sided when non-negative) and adds the worst violators,
//! until none is left. Sparse solutions mean small sets, so an inner iteration costs `|W|^2`
//! instead of `N M`; the answer is the full problem's optimum (the KKT check is exact).

use super::FistaParams;
use crate::linalg::{matmul, simd};
use crate::{Matrix, Parallelism};
use rayon::prelude::*;

/// Atoms first put in the working set (by |correlation|), and added per KKT round at most.
const GROW: usize = 16;
/// KKT rounds per sample before giving up (each round adds atoms, so this is generous).
const MAX_ROUNDS: usize = 64;

/// Per-sample scratch, reused across the samples one thread handles.
#[derive(Default)]
struct Scratch {
    set: Vec<usize>,
    in_set: Vec<bool>,
    g_sub: Vec<f32>,
    c_sub: Vec<f32>,
    z_sub: Vec<f32>,
    z_start: Vec<f32>,
    v: Vec<f32>,
    grad: Vec<f32>,
    full: Vec<f32>,
    order: Vec<(f32, usize)>,
}

/// Solves every row; returns (codes, largest inner iteration count, fraction converged).
pub(crate) fn solve(
    y: &Matrix,
    d: &Matrix,
    init: Option<&Matrix>,
    p: &FistaParams,
    par: Parallelism,
) -> (Matrix, usize, f64) {
    let (s, n) = (y.rows(), d.rows());
    let mut g = Matrix::zeros(n, n);
    matmul(g.as_mut_slice(), d.view(), d.view().t(), 0.0, par);
    let mut c = Matrix::zeros(s, n);
    matmul(c.as_mut_slice(), y.view(), d.view().t(), 0.0, par);
    let mut codes = Matrix::zeros(s, n);
    let stats: Vec<(usize, bool)> = codes
        .as_mut_slice()
        .par_chunks_mut(n)
        .zip(c.as_slice().par_chunks(n))
        .enumerate()
        .map_init(Scratch::default, |sc, (r, (z, cr))| {
            if let Some(z0) = init {
                z.copy_from_slice(z0.row(r));
            }
            simd::run(
                #[inline(always)]
                || solve_row(z, cr, &g, p, sc),
            )
        })
        .collect();
    let iters = stats.iter().map(|s| s.0).max().unwrap_or(0);
    let conv = stats.iter().filter(|s| s.1).count() as f64 / s.max(1) as f64;
    (codes, iters, conv)
}

/// `full = z G - c` (the gradient of the smooth part) from the non-zeros of `z`.
#[inline(always)]
fn gradient(z: &[f32], c: &[f32], g: &Matrix, full: &mut Vec<f32>) {
    full.clear();
    full.extend(c.iter().map(|v| -v));
    for (j, &zj) in z.iter().enumerate() {
        if zj != 0.0 {
            simd::axpy_inline(full, zj, g.row(j));
        }
    }
}

/// An estimate of the largest eigenvalue of the small symmetric PSD matrix `a` (`k x k`) and the
/// Gershgorin bound (never below it): power iteration (from below) with a 10% margin, capped by
/// the bound. Near-duplicate atoms make the power iteration slow, hence the margin; a start
/// orthogonal to the top eigenvector still underestimates, which the caller detects.
#[inline(always)]
fn lipschitz(a: &[f32], k: usize, v: &mut Vec<f32>, w: &mut Vec<f32>) -> (f32, f32) {
    let gershgorin = (0..k)
        .map(|i| a[i * k..(i + 1) * k].iter().map(|x| x.abs()).sum::<f32>())
        .fold(0.0f32, f32::max);
    v.clear();
    v.extend((0..k).map(|i| 1.0 + 0.1 * ((i * 7) % 5) as f32));
    w.resize(k, 0.0);
    let mut est = 0.0f32;
    for _ in 0..300 {
        let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        if norm == 0.0 || !norm.is_finite() {
            return (gershgorin, gershgorin);
        }
        v.iter_mut().for_each(|x| *x /= norm);
        for i in 0..k {
            w[i] = simd::dot_inline(&a[i * k..(i + 1) * k], v);
        }
        let new: f32 = w.iter().zip(v.iter()).map(|(a, b)| a * b).sum();
        std::mem::swap(v, w);
        let settled = (new - est).abs() <= 1e-6 * new.abs();
        est = new;
        if settled {
            break;
        }
    }
    ((est * 1.1).min(gershgorin), gershgorin)
}

#[inline(always)]
fn solve_row(
    z: &mut [f32],
    c: &[f32],
    g: &Matrix,
    p: &FistaParams,
    sc: &mut Scratch,
) -> (usize, bool) {
    let n = z.len();
    let lam = p.lambda;
    sc.in_set.clear();
    sc.in_set.resize(n, false);
    sc.set.clear();
    // Start from the support of the initial codes (empty from zero).
    for (j, &zj) in z.iter().enumerate() {
        if zj != 0.0 {
            sc.set.push(j);
            sc.in_set[j] = true;
        }
    }
    let mut max_inner = 0;
    // Each round: solve on the set (a warm start may not be optimal even on its own support),
    // then check every atom and grow the set by the worst violators, or stop.
    for _ in 0..MAX_ROUNDS {
        if !sc.set.is_empty() {
            max_inner = max_inner.max(solve_on_set(z, c, g, p, sc));
        }
        // KKT check over all atoms: violators are outside the set with |grad| > lambda.
        gradient(z, c, g, &mut sc.full);
        sc.order.clear();
        for j in 0..n {
            if sc.in_set[j] {
                continue;
            }
            let gj = sc.full[j];
            let viol = if p.nonneg { -gj - lam } else { gj.abs() - lam };
            // Violations under 0.1% of lambda change the objective only to second order.
            if viol > 1e-3 * lam + 1e-7 {
                sc.order.push((viol, j));
            }
        }
        if sc.order.is_empty() {
            return (max_inner, true);
        }
        let grow = GROW.max(sc.set.len() / 2).min(sc.order.len());
        if grow < sc.order.len() {
            sc.order
                .select_nth_unstable_by(grow - 1, |a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        }
        let mut added: Vec<usize> = sc.order[..grow].iter().map(|o| o.1).collect();
        added.sort_unstable();
        for j in added {
            sc.set.push(j);
            sc.in_set[j] = true;
        }
    }
    (max_inner, false)
}

/// FISTA on `sc.g_sub`, `sc.c_sub` from `sc.z_sub` with step `1 / lip`; returns the iterations.
fn fista_on_set(
    sc: &mut Scratch,
    (v, grad): (&mut Vec<f32>, &mut Vec<f32>),
    lip: f32,
    p: &FistaParams,
) -> usize {
    let k = sc.z_sub.len();
    let (step, thr) = (1.0 / lip, p.lambda / lip);
    v.clear();
    v.extend_from_slice(&sc.z_sub);
    grad.resize(k, 0.0);
    let mut t = 1.0f32;
    let mut inner = 0;
    for it in 1..=p.max_iter {
        inner = it;
        for a in 0..k {
            grad[a] = simd::dot_inline(&sc.g_sub[a * k..(a + 1) * k], v) - sc.c_sub[a];
        }
        if super::fista::prox_momentum_step(&mut sc.z_sub, v, grad, &mut t, step, thr, p) {
            break;
        }
    }
    inner
}

/// FISTA on the atoms of `sc.set` (warm-started from `z`), writing the result into `z` and
/// dropping atoms that ended at zero. Returns the iterations used.
#[inline(always)]
fn solve_on_set(z: &mut [f32], c: &[f32], g: &Matrix, p: &FistaParams, sc: &mut Scratch) -> usize {
    let k = sc.set.len();
    sc.g_sub.resize(k * k, 0.0);
    for (a, &i) in sc.set.iter().enumerate() {
        let row = g.row(i);
        for (b, &j) in sc.set.iter().enumerate() {
            sc.g_sub[a * k + b] = row[j];
        }
    }
    sc.c_sub.clear();
    sc.c_sub.extend(sc.set.iter().map(|&j| c[j]));
    sc.z_sub.clear();
    sc.z_sub.extend(sc.set.iter().map(|&j| z[j]));
    let (mut v, mut grad) = (std::mem::take(&mut sc.v), std::mem::take(&mut sc.grad));
    let (lip, bound) = lipschitz(&sc.g_sub, k, &mut v, &mut grad);
    if lip <= 0.0 {
        sc.v = v;
        sc.grad = grad;
        return 0;
    }
    // The warm start is kept only when a fallback is possible (the estimate is below the bound).
    if lip < bound {
        sc.z_start.clone_from(&sc.z_sub);
    }
    let mut inner = fista_on_set(sc, (&mut v, &mut grad), lip, p);
    if lip < bound && !sc.z_sub.iter().all(|x| x.is_finite()) {
        // The power iteration underestimated (its start can be orthogonal to the top
        // eigenvector) and FISTA diverged: again from the start with the Gershgorin bound,
        // which is never below the largest eigenvalue.
        sc.z_sub.copy_from_slice(&sc.z_start);
        inner += fista_on_set(sc, (&mut v, &mut grad), bound, p);
    }

    for (a, &j) in sc.set.iter().enumerate() {
        z[j] = sc.z_sub[a];
    }
    sc.v = v;
    sc.grad = grad;
    // Drop atoms that went to zero, so the set stays small.
    let mut keep = Vec::with_capacity(sc.set.len());
    for &j in &sc.set {
        if z[j] != 0.0 {
            keep.push(j);
        } else {
            sc.in_set[j] = false;
        }
    }
    sc.set = keep;
    inner
}
