//! Dictionary learning by alternating minimisation of
//! `sum_s 1/2 ||y_s - z_s D||^2 + lambda ||z_s||_1` over codes `Z` and unit-norm atoms `D`.
//! Each alternation codes the samples ([`InnerCoder`]: the working-set FISTA warm-started from
//! the previous codes, OMP, or thresholding with least squares on the kept atoms), then updates
//! the atoms ([`AtomUpdate`]):
//! - `Bcd`: one pass of block-coordinate descent on the sufficient statistics `A = Z^T Z`,
//!   `B = Z^T Y` (Mairal et al. 2009): `d_j <- d_j + (b_j - a_j D) / A_jj`, then unit norm;
//! - `Mod`: the method of optimal directions, `D = (A + eps I)^{-1} B`, then unit norm;
//! - `Ksvd`: approximate K-SVD (Rubinstein et al. 2008), per atom a rank-one refit of the
//!   residual of the samples that use it, codes of that atom included.
//!
//! With `batch_size` set the statistics come from mini-batches and decay between them (online
//! dictionary learning, Mairal et al. 2009): one alternation is one pass over the data.
//! An atom no sample uses, or one that duplicates an earlier atom (|cosine| > 0.97), is
//! re-seeded from the worst-reconstructed samples. Stops when the objective changes by less than
//! `tol` (relative) between alternations.

use super::fista::objective_per_sample;
use super::{fista, FistaParams};
use crate::error::{require_non_negative, require_positive_count};
use crate::linalg::{matmul, normalize_rows};
use crate::{Error, Matrix, Parallelism, Result};
use rand::seq::index::sample;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use serde::{Deserialize, Serialize};

/// Alternations after an atom swap: the other atoms are already converged, so a swap needs far
/// fewer than a fresh start.
const SWAP_ALTERNATIONS: usize = 50;

/// Atoms closer than this (|cosine|) to an earlier atom are re-seeded.
const DUPLICATE_COSINE: f32 = 0.97;

/// Parameters of [`learn_dictionary`].
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct DictLearnParams {
    /// Number of atoms N.
    pub atoms: usize,
    /// L1 weight while learning.
    pub lambda: f32,
    /// Non-negative codes.
    pub nonneg: bool,
    /// Most alternations (code, then update the atoms).
    pub max_iter: usize,
    /// Stop when the objective changes by less than this, relatively.
    pub tol: f64,
    /// Seed of the initial atoms.
    pub seed: u64,
    /// Independent starts (seeds `seed`, `seed + 1`, ...); the lowest final objective wins.
    /// Dictionary learning is non-convex: a few starts avoid most poor local minima.
    pub restarts: usize,
    /// How samples are coded inside the loop.
    #[serde(default)]
    pub coder: InnerCoder,
    /// How atoms are updated from the codes.
    #[serde(default)]
    pub update: AtomUpdate,
    /// Mini-batch size of online learning (`None`: every alternation sees all samples).
    #[serde(default)]
    pub batch_size: Option<usize>,
    /// Alternations after convergence that remove the L1 shrinkage bias: each sample's codes
    /// are refitted by least squares on the atoms the coder chose, and the atoms are set to the
    /// least-squares dictionary for those codes (MOD). The L1 penalty shapes the search; these
    /// steps make the end point exact on noiseless data.
    #[serde(default)]
    pub polish: usize,
    /// Tries of moving a little-used atom onto the worst-reconstructed sample after learning
    /// (each kept only when the objective ends lower).
    #[serde(default)]
    pub swaps: usize,
}

/// The sparse coder inside dictionary learning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum InnerCoder {
    /// L1 (the learning `lambda`) by the working-set FISTA.
    #[default]
    Fista,
    /// Orthogonal matching pursuit with `k` atoms per sample.
    Omp {
        /// Atoms per sample.
        k: usize,
    },
    /// The `k` atoms most correlated with the sample, then least squares on them.
    Threshold {
        /// Atoms per sample.
        k: usize,
    },
}

/// The atom update of dictionary learning.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AtomUpdate {
    /// Block-coordinate descent on `A = Z^T Z`, `B = Z^T Y` (Mairal et al. 2009).
    #[default]
    Bcd,
    /// Method of optimal directions: the least-squares dictionary for the codes.
    Mod,
    /// Approximate K-SVD: rank-one refit of each atom and its codes.
    Ksvd,
}

impl std::str::FromStr for InnerCoder {
    type Err = Error;
    /// `fista`, `omp:K` or `threshold:K`.
    fn from_str(s: &str) -> Result<Self> {
        let bad = || {
            Error::param(
                "coder",
                format!("unknown coder '{s}' (expected fista, omp:K or threshold:K)"),
            )
        };
        let (name, k) = match s.split_once(':') {
            Some((n, k)) => (n, Some(k.parse::<usize>().map_err(|_| bad())?)),
            None => (s, None),
        };
        match (name, k) {
            ("fista", None) => Ok(InnerCoder::Fista),
            ("omp", Some(k)) => Ok(InnerCoder::Omp { k }),
            ("threshold", Some(k)) => Ok(InnerCoder::Threshold { k }),
            _ => Err(bad()),
        }
    }
}

impl std::str::FromStr for AtomUpdate {
    type Err = Error;
    /// `bcd`, `mod` or `ksvd`.
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "bcd" => Ok(AtomUpdate::Bcd),
            "mod" => Ok(AtomUpdate::Mod),
            "ksvd" | "k-svd" => Ok(AtomUpdate::Ksvd),
            other => Err(Error::param(
                "update",
                format!("unknown atom update '{other}' (expected bcd, mod or ksvd)"),
            )),
        }
    }
}

impl Default for DictLearnParams {
    /// No atoms (set them), lambda 0.05, signed codes, 500 alternations to a relative change of
    /// 1e-6, 3 starts, FISTA coder, block-coordinate updates over all samples.
    fn default() -> Self {
        DictLearnParams {
            atoms: 0,
            lambda: 0.05,
            nonneg: false,
            max_iter: 500,
            tol: 1e-6,
            seed: 0,
            restarts: 3,
            coder: InnerCoder::Fista,
            update: AtomUpdate::Bcd,
            batch_size: None,
            polish: 0,
            swaps: 0,
        }
    }
}

impl DictLearnParams {
    fn validate(&self, samples: usize) -> Result<()> {
        require_positive_count("atoms", self.atoms)?;
        if self.atoms > samples {
            return Err(Error::param(
                "atoms",
                format!(
                    "{} atoms need at least as many samples (got {samples}) to start from",
                    self.atoms
                ),
            ));
        }
        require_non_negative("lambda", self.lambda as f64)?;
        require_positive_count("max_iter", self.max_iter)?;
        require_positive_count("restarts", self.restarts)?;
        require_non_negative("tol", self.tol)?;
        if let InnerCoder::Omp { k } | InnerCoder::Threshold { k } = self.coder {
            if k == 0 || k > self.atoms {
                return Err(Error::param(
                    "coder",
                    format!("k = {k} atoms per sample must be in 1..={}", self.atoms),
                ));
            }
        }
        if let Some(b) = self.batch_size {
            if b == 0 || b > samples {
                return Err(Error::param(
                    "batch_size",
                    format!("{b} must be in 1..={samples} (the number of samples)"),
                ));
            }
            if self.update != AtomUpdate::Bcd {
                return Err(Error::param(
                    "batch_size",
                    "online (mini-batch) learning updates atoms by block-coordinate descent only (--update bcd)",
                ));
            }
        }
        Ok(())
    }
}

/// A learned dictionary with the codes of the training samples.
#[derive(Clone, Debug, PartialEq)]
pub struct DictLearnResult {
    /// `[atoms, d_in]`, unit-norm rows.
    pub dictionary: Matrix,
    /// `[samples, atoms]`.
    pub codes: Matrix,
    /// Objective after every alternation.
    pub objective: Vec<f64>,
}

/// Picks `n` samples far apart in angle (farthest-point seeding): the first at random, then
/// repeatedly the sample whose best |cosine| with the picks so far is smallest. Starting atoms
/// spread out this way rarely share a true atom, the usual local minimum of dictionary learning.
fn spread_samples(y: &Matrix, n: usize, seed: u64) -> Vec<usize> {
    let (s, m) = y.shape();
    let mut unit = y.clone();
    normalize_rows(unit.as_mut_slice(), m);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let first = sample(&mut rng, s, 1).index(0);
    let mut picks = vec![first];
    let mut best = vec![0.0f32; s]; // best |cos| of each sample with the picks
    let mut last = first;
    while picks.len() < n {
        for (i, b) in best.iter_mut().enumerate() {
            let c = crate::linalg::simd::dot(unit.row(i), unit.row(last)).abs();
            *b = b.max(c);
        }
        for &p in &picks {
            best[p] = f32::INFINITY;
        }
        last = (0..s)
            .min_by(|&i, &j| best[i].total_cmp(&best[j]).then(i.cmp(&j)))
            .unwrap_or(0);
        picks.push(last);
    }
    picks
}

/// Learns `p.atoms` unit-norm atoms from the rows of `y` (best of `p.restarts` starts).
pub fn learn_dictionary(
    y: &Matrix,
    p: &DictLearnParams,
    par: Parallelism,
) -> Result<DictLearnResult> {
    par.install(|| learn_on_pool(y, p, par))
}

fn learn_on_pool(y: &Matrix, p: &DictLearnParams, par: Parallelism) -> Result<DictLearnResult> {
    p.validate(y.rows())?;
    y.check_finite("data")?;
    let mut best: Option<DictLearnResult> = None;
    for r in 0..p.restarts {
        let seed = p.seed.wrapping_add(r as u64);
        let run = learn_once(y, p, initial_atoms(y, p.atoms, seed), seed, par)?;
        let better = match &best {
            None => true,
            Some(b) => run.objective.last() < b.objective.last(),
        };
        if better {
            best = Some(run);
        }
    }
    Ok(best.expect("restarts >= 1 was validated"))
}

fn initial_atoms(y: &Matrix, n: usize, seed: u64) -> Matrix {
    let m = y.cols();
    let mut d = y.select_rows(&spread_samples(y, n, seed));
    if normalize_rows(d.as_mut_slice(), m) > 0 {
        // Zero rows picked: replace them by unit basis vectors so every atom has a direction.
        for j in 0..n {
            if d.row(j).iter().all(|v| *v == 0.0) {
                d.row_mut(j)[j % m] = 1.0;
            }
        }
    }
    d
}

/// Codes `y` with `d` by the configured coder (`warm`: previous codes, used by FISTA).
fn code(
    y: &Matrix,
    d: &Matrix,
    warm: Option<&Matrix>,
    p: &DictLearnParams,
    par: Parallelism,
) -> Result<Matrix> {
    let mut z = match p.coder {
        InnerCoder::Fista => {
            let coder = FistaParams {
                lambda: p.lambda,
                nonneg: p.nonneg,
                max_iter: 2000,
                tol: 1e-4,
                accelerated: true,
            };
            return Ok(fista(y, d, warm, &coder, par)?.codes);
        }
        InnerCoder::Omp { k } => super::omp(
            y,
            d,
            &super::OmpParams {
                k: Some(k),
                tol: None,
            },
            par,
        )?,
        InnerCoder::Threshold { k } => threshold_code(y, d, k, p.nonneg, par),
    };
    if p.nonneg {
        z.as_mut_slice().iter_mut().for_each(|v| *v = v.max(0.0));
    }
    Ok(z)
}

/// Refits each sample's codes by least squares on its non-zero atoms (clamped at zero for
/// non-negative codes).
fn debias(y: &Matrix, d: &Matrix, z: &mut Matrix, nonneg: bool) {
    use rayon::prelude::*;
    let n = d.rows();
    z.as_mut_slice()
        .par_chunks_mut(n)
        .enumerate()
        .for_each(|(r, zr)| {
            let support: Vec<usize> = (0..n).filter(|&j| zr[j] != 0.0).collect();
            if support.is_empty() || support.len() > d.cols() {
                return;
            }
            if let Some(c) = crate::linalg::cholesky::least_squares_on(d, y.row(r), &support) {
                for (&j, v) in support.iter().zip(c) {
                    zr[j] = if nonneg {
                        (v as f32).max(0.0)
                    } else {
                        v as f32
                    };
                }
            }
        });
}

/// The `k` atoms with the largest correlation (absolute, or signed for non-negative codes) with
/// each sample, then least squares on them.
fn threshold_code(y: &Matrix, d: &Matrix, k: usize, nonneg: bool, par: Parallelism) -> Matrix {
    use rayon::prelude::*;
    let (s, n) = (y.rows(), d.rows());
    let mut corr = Matrix::zeros(s, n);
    matmul(corr.as_mut_slice(), y.view(), d.view().t(), 0.0, par);
    let mut z = Matrix::zeros(s, n);
    z.as_mut_slice()
        .par_chunks_mut(n)
        .zip(corr.as_slice().par_chunks(n))
        .enumerate()
        .for_each(|(r, (zr, cr))| {
            let mut order: Vec<usize> = (0..n).collect();
            let key = |j: usize| if nonneg { cr[j] } else { cr[j].abs() };
            order.sort_by(|&a, &b| key(b).total_cmp(&key(a)).then(a.cmp(&b)));
            order.truncate(k);
            order.sort_unstable();
            if let Some(c) = crate::linalg::cholesky::least_squares_on(d, y.row(r), &order) {
                for (&j, v) in order.iter().zip(c) {
                    zr[j] = v as f32;
                }
            }
        });
    z
}

/// Re-seeds atom `j` from the next worst-reconstructed sample.
fn reseed(d: &mut Matrix, j: usize, y: &Matrix, worst: &mut impl Iterator<Item = usize>) {
    let src = worst.next().unwrap_or(0);
    d.row_mut(j).copy_from_slice(y.row(src));
    normalize_rows(d.row_mut(j), y.cols());
}

/// One block-coordinate pass over the atoms on the statistics `a = Z^T Z`, `b = Z^T Y`.
fn bcd_pass(
    d: &mut Matrix,
    a: &Matrix,
    b: &Matrix,
    y: &Matrix,
    worst: &mut impl Iterator<Item = usize>,
) {
    let (n, m) = d.shape();
    let mut ad = vec![0.0f32; m];
    for j in 0..n {
        let ajj = a.get(j, j);
        if ajj <= 1e-10 {
            reseed(d, j, y, worst);
            continue;
        }
        // (A D)_j = sum_k A_jk d_k, with the atoms as updated so far.
        ad.iter_mut().for_each(|v| *v = 0.0);
        for k in 0..n {
            let ajk = a.get(j, k);
            if ajk != 0.0 {
                crate::linalg::simd::axpy(&mut ad, ajk, d.row(k));
            }
        }
        let bj = b.row(j);
        let row = d.row_mut(j);
        for i in 0..m {
            row[i] += (bj[i] - ad[i]) / ajj;
        }
        normalize_rows(d.row_mut(j), m);
    }
}

/// Method of optimal directions: `D = (A + eps I)^{-1} B`, unit rows; unused atoms re-seeded.
fn mod_update(
    d: &mut Matrix,
    a: &Matrix,
    b: &Matrix,
    y: &Matrix,
    worst: &mut impl Iterator<Item = usize>,
) {
    let (n, m) = d.shape();
    let ridge = 1e-6
        * (0..n)
            .map(|j| a.get(j, j) as f64)
            .fold(0.0, f64::max)
            .max(1e-12);
    let mut g: Vec<f64> = a.as_slice().iter().map(|v| *v as f64).collect();
    for j in 0..n {
        g[j * n + j] += ridge;
    }
    if !crate::linalg::cholesky::cholesky(&mut g, n) {
        // Numerically singular even with the ridge: fall back to coordinate steps.
        return bcd_pass(d, a, b, y, worst);
    }
    let mut col = vec![0.0f64; n];
    for i in 0..m {
        for j in 0..n {
            col[j] = b.get(j, i) as f64;
        }
        crate::linalg::cholesky::cholesky_solve(&g, n, &mut col);
        for j in 0..n {
            d.row_mut(j)[i] = col[j] as f32;
        }
    }
    for j in 0..n {
        if a.get(j, j) <= 1e-10 {
            reseed(d, j, y, worst);
        } else {
            normalize_rows(d.row_mut(j), m);
        }
    }
}

/// Approximate K-SVD: for each atom, the residual of the samples that use it (its own
/// contribution added back) gives the new atom `E^T z_j / ||.||` and the new codes `E d_j`.
fn ksvd_update(
    d: &mut Matrix,
    z: &mut Matrix,
    y: &Matrix,
    nonneg: bool,
    worst: &mut impl Iterator<Item = usize>,
    par: Parallelism,
) {
    let (n, m) = d.shape();
    let s = y.rows();
    let mut resid = y.clone();
    let mut zd = Matrix::zeros(s, m);
    matmul(zd.as_mut_slice(), z.view(), d.view(), 0.0, par);
    resid
        .as_mut_slice()
        .iter_mut()
        .zip(zd.as_slice())
        .for_each(|(r, v)| *r -= v);
    let mut atom = vec![0.0f32; m];
    for j in 0..n {
        let users: Vec<usize> = (0..s).filter(|&r| z.get(r, j) != 0.0).collect();
        if users.is_empty() {
            reseed(d, j, y, worst);
            continue;
        }
        // E = R + z_j d_j on the users; new atom along E^T z_j.
        atom.iter_mut().for_each(|v| *v = 0.0);
        for &r in &users {
            let zj = z.get(r, j);
            let dj = d.row(j).to_vec();
            crate::linalg::simd::axpy(resid.row_mut(r), zj, &dj);
            crate::linalg::simd::axpy(&mut atom, zj, resid.row(r));
        }
        let norm = atom.iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
        if norm > 1e-12 {
            d.row_mut(j)
                .iter_mut()
                .zip(&atom)
                .for_each(|(dv, a)| *dv = (*a as f64 / norm) as f32);
        }
        for &r in &users {
            let mut v = crate::linalg::simd::dot(resid.row(r), d.row(j));
            if nonneg {
                v = v.max(0.0);
            }
            z.row_mut(r)[j] = v;
            let dj = d.row(j).to_vec();
            crate::linalg::simd::axpy(resid.row_mut(r), -v, &dj);
        }
    }
}

/// Re-seeds every atom within |cosine| 0.97 of an earlier one.
fn reseed_duplicates(
    d: &mut Matrix,
    y: &Matrix,
    worst: &mut impl Iterator<Item = usize>,
    par: Parallelism,
) {
    let n = d.rows();
    let mut gram = Matrix::zeros(n, n);
    matmul(gram.as_mut_slice(), d.view(), d.view().t(), 0.0, par);
    for j in 1..n {
        if (0..j).any(|k| gram.get(j, k).abs() > DUPLICATE_COSINE) {
            reseed(d, j, y, worst);
        }
    }
}

/// Samples in decreasing order of their objective term.
fn worst_first(y: &Matrix, d: &Matrix, z: &Matrix, lambda: f32, par: Parallelism) -> Vec<usize> {
    let (_, per_sample) = objective_per_sample(y, d, z, lambda, par);
    let mut worst: Vec<usize> = (0..y.rows()).collect();
    worst.sort_by(|&i, &j| per_sample[j].total_cmp(&per_sample[i]).then(i.cmp(&j)));
    worst
}

/// The state of one run: atoms, last codes, objective history.
struct Run {
    d: Matrix,
    z: Option<Matrix>,
    history: Vec<f64>,
}

/// Learns from given starting atoms `init` (`[atoms, d_in]`, e.g. a trained SAE's decoder:
/// SAE-initialised dictionary learning); `p.restarts` is ignored, the rows are scaled to unit norm.
pub fn learn_dictionary_from(
    y: &Matrix,
    init: &Matrix,
    p: &DictLearnParams,
    par: Parallelism,
) -> Result<DictLearnResult> {
    par.install(|| learn_from_on_pool(y, init, p, par))
}

fn learn_from_on_pool(
    y: &Matrix,
    init: &Matrix,
    p: &DictLearnParams,
    par: Parallelism,
) -> Result<DictLearnResult> {
    p.validate(y.rows())?;
    y.check_finite("data")?;
    let d = given_atoms(init, p.atoms, y.cols())?;
    learn_once(y, p, d, p.seed, par)
}

/// Starting atoms given by the caller: finite, `[atoms, d_in]`, rows scaled to unit norm.
fn given_atoms(init: &Matrix, atoms: usize, d_in: usize) -> Result<Matrix> {
    init.check_finite("initial dictionary")?;
    if init.shape() != (atoms, d_in) {
        return Err(Error::shape(
            "initial dictionary",
            format!("[{atoms}, {d_in}] (atoms x data width)"),
            format!("{:?}", init.shape()),
        ));
    }
    let mut d = init.clone();
    normalize_rows(d.as_mut_slice(), d_in);
    Ok(d)
}

fn learn_once(
    y: &Matrix,
    p: &DictLearnParams,
    start: Matrix,
    seed: u64,
    par: Parallelism,
) -> Result<DictLearnResult> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ 0x0D1C);
    let mut run = Run {
        d: start,
        z: None,
        history: Vec::new(),
    };
    alternate(y, p, p.max_iter, &mut run, &mut rng, par)?;
    polish(y, p, &mut run, par)?;
    if p.swaps > 0 {
        swap_atoms(y, p, &mut run, &mut rng, par)?;
    }
    let codes = code(y, &run.d, run.z.as_ref(), p, par)?;
    Ok(DictLearnResult {
        dictionary: run.d,
        codes,
        objective: run.history,
    })
}

/// Up to `iters` alternations (code, update atoms) until the objective settles.
fn alternate(
    y: &Matrix,
    p: &DictLearnParams,
    iters: usize,
    run: &mut Run,
    rng: &mut ChaCha8Rng,
    par: Parallelism,
) -> Result<()> {
    let (s, m) = y.shape();
    let n = p.atoms;
    let mut a = Matrix::zeros(n, n);
    let mut b = Matrix::zeros(n, m);
    let start = run.history.len();
    let (d, z) = (&mut run.d, &mut run.z);
    for _ in 0..iters {
        crate::interrupt::check("dictionary learning")?;
        match p.batch_size {
            Some(bs) if bs < s => {
                // One pass of online learning: decaying statistics over shuffled mini-batches.
                let order = sample(rng, s, s).into_vec();
                let batches = order.chunks(bs);
                for (t, rows) in batches.enumerate() {
                    crate::interrupt::check("dictionary learning")?;
                    let yb = y.select_rows(rows);
                    online_step(d, &mut a, &mut b, &yb, t as u64, p, par)?;
                }
                let codes = code(y, d, z.as_ref(), p, par)?;
                let mut worst = worst_first(y, d, &codes, p.lambda, par).into_iter();
                reseed_duplicates(d, y, &mut worst, par);
                *z = Some(codes);
            }
            _ => {
                let mut codes = code(y, d, z.as_ref(), p, par)?;
                let mut worst = worst_first(y, d, &codes, p.lambda, par).into_iter();
                match p.update {
                    AtomUpdate::Ksvd => ksvd_update(d, &mut codes, y, p.nonneg, &mut worst, par),
                    update => {
                        // Sufficient statistics: A = Z^T Z, B = Z^T Y.
                        matmul(a.as_mut_slice(), codes.view().t(), codes.view(), 0.0, par);
                        matmul(b.as_mut_slice(), codes.view().t(), y.view(), 0.0, par);
                        if update == AtomUpdate::Mod {
                            mod_update(d, &a, &b, y, &mut worst);
                        } else {
                            bcd_pass(d, &a, &b, y, &mut worst);
                        }
                    }
                }
                reseed_duplicates(d, y, &mut worst, par);
                *z = Some(codes);
            }
        }
        let codes = z.as_ref().expect("set above");
        let (obj, _) = objective_per_sample(y, d, codes, p.lambda, par);
        let done = run.history[start..]
            .last()
            .is_some_and(|prev: &f64| (prev - obj).abs() <= p.tol * prev.abs());
        run.history.push(obj);
        if done {
            break;
        }
    }
    Ok(())
}

/// One mini-batch of online learning: code `yb`, fold its statistics into `a`, `b` with the
/// forgetting factor `1 - 1/(t + 2)` (statistics taken with older atoms fade as newer batches
/// arrive; Mairal et al. 2009, 3.4), then one block-coordinate pass over the atoms, re-seeding
/// unused atoms from the batch's worst-reconstructed rows. Returns the rows (of `yb`, worst
/// first) not used for re-seeding.
fn online_step(
    d: &mut Matrix,
    a: &mut Matrix,
    b: &mut Matrix,
    yb: &Matrix,
    t: u64,
    p: &DictLearnParams,
    par: Parallelism,
) -> Result<Vec<usize>> {
    let (n, m) = d.shape();
    let zb = code(yb, d, None, p, par)?;
    let mut ab = Matrix::zeros(n, n);
    let mut bb = Matrix::zeros(n, m);
    matmul(ab.as_mut_slice(), zb.view().t(), zb.view(), 0.0, par);
    matmul(bb.as_mut_slice(), zb.view().t(), yb.view(), 0.0, par);
    let beta = 1.0 - 1.0 / (t as f32 + 2.0);
    for (dst, src) in a.as_mut_slice().iter_mut().zip(ab.as_slice()) {
        *dst = beta * *dst + src;
    }
    for (dst, src) in b.as_mut_slice().iter_mut().zip(bb.as_slice()) {
        *dst = beta * *dst + src;
    }
    let mut worst = worst_first(yb, d, &zb, p.lambda, par).into_iter();
    bcd_pass(d, a, b, yb, &mut worst);
    Ok(worst.collect())
}

/// Online dictionary learning driven by the caller, one mini-batch at a time (a stream that
/// never sits in memory whole: scikit-learn's `MiniBatchDictionaryLearning.partial_fit`). Each
/// [`OnlineDictionary::update`] is one step of the online pass of [`learn_dictionary`] with
/// `batch_size` set, its statistics' forgetting continued across calls.
#[derive(Clone, Debug, PartialEq)]
pub struct OnlineDictionary {
    params: DictLearnParams,
    d: Matrix,
    a: Matrix,
    b: Matrix,
    batches: u64,
}

impl OnlineDictionary {
    /// Starts from `p.atoms` atoms spread over the rows of the first batch `y` (as
    /// [`learn_dictionary`] starts), or from `init` (`[atoms, d_in]`, rows scaled to unit norm).
    pub fn new(y: &Matrix, init: Option<&Matrix>, p: &DictLearnParams) -> Result<Self> {
        y.check_finite("first batch")?;
        let d = match init {
            Some(init) => {
                // Given atoms need no samples to start from.
                p.validate(usize::MAX)?;
                given_atoms(init, p.atoms, y.cols())?
            }
            None => {
                p.validate(y.rows())?;
                initial_atoms(y, p.atoms, p.seed)
            }
        };
        let (n, m) = d.shape();
        Ok(OnlineDictionary {
            params: *p,
            d,
            a: Matrix::zeros(n, n),
            b: Matrix::zeros(n, m),
            batches: 0,
        })
    }

    /// Learns from one more mini-batch `y` (`[rows, d_in]`).
    pub fn update(&mut self, y: &Matrix, par: Parallelism) -> Result<()> {
        if y.cols() != self.d.cols() || y.rows() == 0 {
            return Err(Error::shape(
                "mini-batch",
                format!("at least one row of width {}", self.d.cols()),
                format!("{:?}", y.shape()),
            ));
        }
        y.check_finite("mini-batch")?;
        let (d, a, b, p) = (&mut self.d, &mut self.a, &mut self.b, &self.params);
        par.install(|| {
            // Unlike a pass of `learn_dictionary`, a stream has no end of pass at which to
            // separate atoms that converged onto one direction: check after every batch.
            let rest = online_step(d, a, b, y, self.batches, p, par)?;
            reseed_duplicates(d, y, &mut rest.into_iter(), par);
            Ok::<_, Error>(())
        })?;
        self.batches += 1;
        Ok(())
    }

    /// The atoms, `[atoms, d_in]`, unit rows.
    pub fn dictionary(&self) -> &Matrix {
        &self.d
    }

    /// Mini-batches learned from so far.
    pub fn batches(&self) -> u64 {
        self.batches
    }
}

/// The debiasing alternations of [`DictLearnParams::polish`].
fn polish(y: &Matrix, p: &DictLearnParams, run: &mut Run, par: Parallelism) -> Result<()> {
    let (n, m) = (p.atoms, y.cols());
    let mut a = Matrix::zeros(n, n);
    let mut b = Matrix::zeros(n, m);
    for _ in 0..p.polish {
        crate::interrupt::check("dictionary learning")?;
        let mut codes = code(y, &run.d, run.z.as_ref(), p, par)?;
        debias(y, &run.d, &mut codes, p.nonneg);
        matmul(a.as_mut_slice(), codes.view().t(), codes.view(), 0.0, par);
        matmul(b.as_mut_slice(), codes.view().t(), y.view(), 0.0, par);
        let mut worst = worst_first(y, &run.d, &codes, p.lambda, par).into_iter();
        mod_update(&mut run.d, &a, &b, y, &mut worst);
        run.z = Some(codes);
    }
    if p.polish > 0 {
        // The objective of the polished dictionary (on the coder's own, undebiased codes).
        let codes = code(y, &run.d, run.z.as_ref(), p, par)?;
        run.history
            .push(objective_per_sample(y, &run.d, &codes, p.lambda, par).0);
        run.z = Some(codes);
    }
    Ok(())
}

/// Escapes the commonest local minimum: one atom sitting between two true directions while
/// another is wasted on a mixture. The least-used atom (not tried since the last accepted move)
/// is moved onto the worst-reconstructed sample, learning continues, and the move is kept only
/// if the objective ends lower.
fn swap_atoms(
    y: &Matrix,
    p: &DictLearnParams,
    run: &mut Run,
    rng: &mut ChaCha8Rng,
    par: Parallelism,
) -> Result<()> {
    let m = y.cols();
    let mut best = *run.history.last().unwrap_or(&f64::INFINITY);
    let mut tried = vec![false; p.atoms];
    for _ in 0..p.swaps {
        let codes = code(y, &run.d, run.z.as_ref(), p, par)?;
        let usage: Vec<f64> = (0..p.atoms)
            .map(|j| {
                (0..y.rows())
                    .map(|r| (codes.get(r, j) as f64).powi(2))
                    .sum()
            })
            .collect();
        let Some(j) = (0..p.atoms)
            .filter(|&j| !tried[j])
            .min_by(|&a, &b| usage[a].total_cmp(&usage[b]))
        else {
            break;
        };
        tried[j] = true;
        let src = worst_first(y, &run.d, &codes, p.lambda, par)[0];
        let mut trial = Run {
            d: run.d.clone(),
            z: None,
            history: Vec::new(),
        };
        trial.d.row_mut(j).copy_from_slice(y.row(src));
        normalize_rows(trial.d.row_mut(j), m);
        alternate(
            y,
            p,
            p.max_iter.min(SWAP_ALTERNATIONS),
            &mut trial,
            rng,
            par,
        )?;
        polish(y, p, &mut trial, par)?;
        let obj = *trial.history.last().unwrap_or(&f64::INFINITY);
        if obj < best * (1.0 - 1e-6) {
            best = obj;
            run.history.extend(trial.history);
            run.d = trial.d;
            run.z = trial.z;
            tried.fill(false);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::{generate, SynthConfig};
    use crate::eval::{code_mcc, dictionary_metrics};

    #[test]
    fn recovers_a_planted_dictionary() {
        let data = generate(
            &SynthConfig {
                latents: 16,
                dims: 8,
                samples: 1024,
                test_samples: 0,
                ..SynthConfig::e2(1)
            },
            None,
        )
        .unwrap();
        let y = &data.train.activations;
        let p = DictLearnParams {
            atoms: 16,
            lambda: 0.05,
            nonneg: true,
            max_iter: 300,
            tol: 1e-7,
            seed: 0,
            restarts: 2,
            coder: InnerCoder::Fista,
            update: AtomUpdate::Bcd,
            batch_size: None,
            polish: 0,
            swaps: 0,
        };
        let r = learn_dictionary(y, &p, Parallelism::Serial).unwrap();
        let w = r
            .objective
            .windows(2)
            .filter(|w| w[1] > w[0] * (1.0 + 1e-3))
            .count();
        assert_eq!(w, 0, "the objective must not rise: {:?}", r.objective);
        let dm =
            dictionary_metrics(&data.dictionary, &r.dictionary, 64, Parallelism::Serial).unwrap();
        assert!(dm.dict_mcc > 0.98, "{dm:?}");
        let codes = fista(
            y,
            &r.dictionary,
            None,
            &FistaParams {
                lambda: 0.01,
                nonneg: true,
                max_iter: 2000,
                tol: 1e-6,
                accelerated: true,
            },
            Parallelism::Serial,
        )
        .unwrap()
        .codes;
        let (mcc, _) = code_mcc(&data.train.codes, &codes, 64, Parallelism::Serial).unwrap();
        assert!(mcc > 0.95, "{mcc}");
    }

    #[test]
    fn rejects_impossible_parameters() {
        let y = Matrix::zeros(4, 3);
        let p = DictLearnParams {
            atoms: 5,
            lambda: 0.1,
            nonneg: false,
            max_iter: 3,
            tol: 0.0,
            seed: 0,
            restarts: 1,
            coder: InnerCoder::Fista,
            update: AtomUpdate::Bcd,
            batch_size: None,
            polish: 0,
            swaps: 0,
        };
        assert!(learn_dictionary(&y, &p, Parallelism::Serial)
            .unwrap_err()
            .to_string()
            .contains("`atoms`"));
    }
}

#[cfg(test)]
mod variant_tests {
    use super::*;
    use crate::data::{generate, SynthConfig};
    use crate::eval::dictionary_metrics;

    fn planted(n: usize, m: usize, k: usize, seed: u64) -> crate::data::SynthData {
        generate(
            &SynthConfig {
                latents: n,
                dims: m,
                support: crate::data::Support::Exact { k },
                samples: 1024,
                test_samples: 0,
                ..SynthConfig::e2(seed)
            },
            None,
        )
        .unwrap()
    }

    fn dict_mcc(p: &DictLearnParams, data: &crate::data::SynthData) -> f64 {
        let r = learn_dictionary(&data.train.activations, p, Parallelism::Serial).unwrap();
        dictionary_metrics(&data.dictionary, &r.dictionary, 4096, Parallelism::Serial)
            .unwrap()
            .dict_mcc
    }

    #[test]
    fn every_coder_and_update_recovers_a_planted_dictionary() {
        let data = planted(16, 8, 2, 3);
        let base = DictLearnParams {
            atoms: 16,
            nonneg: true,
            max_iter: 200,
            restarts: 2,
            ..DictLearnParams::default()
        };
        for (coder, update, batch) in [
            (InnerCoder::Fista, AtomUpdate::Mod, None),
            (InnerCoder::Omp { k: 2 }, AtomUpdate::Ksvd, None),
            (InnerCoder::Threshold { k: 2 }, AtomUpdate::Bcd, None),
            (InnerCoder::Fista, AtomUpdate::Bcd, Some(128)),
        ] {
            let p = DictLearnParams {
                coder,
                update,
                batch_size: batch,
                ..base
            };
            let mcc = dict_mcc(&p, &data);
            assert!(mcc > 0.9, "{coder:?} {update:?} {batch:?}: dict MCC {mcc}");
        }
    }

    #[test]
    fn polishing_and_swaps_reach_the_exact_dictionary() {
        // N=64, M=16, K=3: plain learning typically leaves an atom between two true ones.
        let data = planted(64, 16, 3, 5);
        let p = DictLearnParams {
            atoms: 64,
            nonneg: true,
            tol: 1e-4,
            restarts: 1,
            ..DictLearnParams::default()
        };
        let plain = dict_mcc(&p, &data);
        let refined = dict_mcc(
            &DictLearnParams {
                polish: 10,
                swaps: 4,
                ..p
            },
            &data,
        );
        // Measured: plain 0.978, refined 0.992.
        assert!(refined > plain + 0.01, "refined {refined} vs plain {plain}");
        assert!(refined > 0.99, "refined dict MCC {refined} (plain {plain})");
    }

    #[test]
    fn starts_from_a_given_dictionary() {
        let data = planted(16, 8, 2, 7);
        let p = DictLearnParams {
            atoms: 16,
            nonneg: true,
            ..DictLearnParams::default()
        };
        // A noisy copy of the truth (as an SAE's decoder would be) ends at the truth.
        let mut start = data.dictionary.clone();
        start
            .as_mut_slice()
            .iter_mut()
            .enumerate()
            .for_each(|(i, v)| *v += 0.15 * ((i % 7) as f32 - 3.0) / 3.0);
        let r = learn_dictionary_from(&data.train.activations, &start, &p, Parallelism::Serial)
            .unwrap();
        let dm =
            dictionary_metrics(&data.dictionary, &r.dictionary, 64, Parallelism::Serial).unwrap();
        assert!(dm.dict_mcc > 0.99, "{dm:?}");
        let wrong = Matrix::zeros(15, 8);
        assert!(
            learn_dictionary_from(&data.train.activations, &wrong, &p, Parallelism::Serial)
                .unwrap_err()
                .to_string()
                .contains("[16, 8]")
        );
    }

    #[test]
    fn online_updates_one_batch_at_a_time_recover_a_planted_dictionary() {
        let data = planted(16, 8, 2, 11);
        let y = &data.train.activations;
        let p = DictLearnParams {
            atoms: 16,
            nonneg: true,
            ..DictLearnParams::default()
        };
        let first = y.slice_rows(0, 64);
        let mut online = OnlineDictionary::new(&first, None, &p).unwrap();
        for _pass in 0..30 {
            for start in (0..y.rows()).step_by(64) {
                let batch = y.slice_rows(start, (start + 64).min(y.rows()));
                online.update(&batch, Parallelism::Serial).unwrap();
            }
        }
        let dm = dictionary_metrics(
            &data.dictionary,
            online.dictionary(),
            64,
            Parallelism::Serial,
        )
        .unwrap();
        // The bar of the online pass of `learn_dictionary` above; measured 0.925 (14 of 16
        // atoms within cosine 0.9) from one start.
        assert!(dm.dict_mcc > 0.9, "{dm:?}");
        assert_eq!(online.batches(), 30 * y.rows().div_ceil(64) as u64);
        let narrow = Matrix::zeros(4, 7);
        let e = online.update(&narrow, Parallelism::Serial).unwrap_err();
        assert!(e.to_string().contains("width 8"), "{e}");
        let mut nan = first.clone();
        nan.row_mut(3)[1] = f32::NAN;
        assert!(online.update(&nan, Parallelism::Serial).is_err());
        let wrong = Matrix::zeros(15, 8);
        assert!(OnlineDictionary::new(&first, Some(&wrong), &p).is_err());
    }

    #[test]
    fn parses_names_and_refuses_bad_variants() {
        assert_eq!(
            "omp:3".parse::<InnerCoder>().unwrap(),
            InnerCoder::Omp { k: 3 }
        );
        assert_eq!("ksvd".parse::<AtomUpdate>().unwrap(), AtomUpdate::Ksvd);
        assert!("omp"
            .parse::<InnerCoder>()
            .unwrap_err()
            .to_string()
            .contains("omp:K"));
        assert!("svd".parse::<AtomUpdate>().is_err());
        let y = Matrix::zeros(10, 3);
        let bad = |p: DictLearnParams| {
            learn_dictionary(&y, &p, Parallelism::Serial)
                .unwrap_err()
                .to_string()
        };
        let p = DictLearnParams {
            atoms: 4,
            ..DictLearnParams::default()
        };
        assert!(bad(DictLearnParams {
            coder: InnerCoder::Omp { k: 5 },
            ..p
        })
        .contains("k = 5"));
        assert!(bad(DictLearnParams {
            batch_size: Some(11),
            ..p
        })
        .contains("batch_size"));
        assert!(bad(DictLearnParams {
            batch_size: Some(4),
            update: AtomUpdate::Ksvd,
            ..p
        })
        .contains("bcd"));
    }
}
