//! A 2-D Gabor function fitted to an atom, to say whether it is localised, oriented and
//! band-pass like a simple cell's receptive field:
//!
//! `g(x, y) = A exp(-(u^2 / (2 sx^2) + v^2 / (2 sy^2))) cos(2 pi f u + phi)`,
//! `u = (x - x0) cos(theta) + (y - y0) sin(theta)`, `v = -(x - x0) sin(theta) + (y - y0) cos(theta)`,
//!
//! eight parameters, fitted by Levenberg-Marquardt on the squared error from a start read off
//! the atom (energy centroid and spread for the envelope, the peak of its zero-padded Fourier
//! transform for `theta` and `f`, the best of four phases). The fit's quality is
//! `R^2 = 1 - SSE / sum (a - mean a)^2`.
//!
//! Written here rather than taken from a crate: the Levenberg-Marquardt crates work on
//! nalgebra's types, a large dependency for an 8 x 8 damped Gauss-Newton step (solved by the
//! core's Cholesky factorisation).

use serde::Serialize;
use sparsecode::linalg::cholesky::{cholesky, cholesky_solve};

const PARAMS: usize = 8;

/// A fitted Gabor function.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct GaborFit {
    /// Fraction of the atom's variance the fit explains.
    pub r2: f64,
    /// Direction of the carrier's wave vector, in `[0, pi)` radians (the stripes run across it).
    pub orientation: f64,
    /// Carrier frequency, cycles per pixel.
    pub frequency: f64,
    /// Envelope centre (column, row) in pixels.
    pub center: (f64, f64),
    /// Envelope widths along and across the wave vector, pixels.
    pub sigma: (f64, f64),
}

fn model(p: &[f64; PARAMS], x: f64, y: f64) -> f64 {
    let [amp, x0, y0, theta, f, phi, sx, sy] = *p;
    let (c, s) = (theta.cos(), theta.sin());
    let (dx, dy) = (x - x0, y - y0);
    let (u, v) = (dx * c + dy * s, -dx * s + dy * c);
    let (sx, sy) = (sx.abs().max(1e-3), sy.abs().max(1e-3));
    let env = (-(u * u / (2.0 * sx * sx) + v * v / (2.0 * sy * sy))).exp();
    amp * env * (2.0 * std::f64::consts::PI * f.abs() * u + phi).cos()
}

fn sse(p: &[f64; PARAMS], atom: &[f64], size: usize) -> f64 {
    atom.iter()
        .enumerate()
        .map(|(i, a)| (model(p, (i % size) as f64, (i / size) as f64) - a).powi(2))
        .sum()
}

/// The start of the fit, read off the atom.
fn start(atom: &[f64], size: usize) -> [f64; PARAMS] {
    let energy: f64 = atom.iter().map(|a| a * a).sum::<f64>().max(1e-300);
    let (mut cx, mut cy) = (0.0, 0.0);
    for (i, a) in atom.iter().enumerate() {
        cx += a * a * (i % size) as f64;
        cy += a * a * (i / size) as f64;
    }
    let (cx, cy) = (cx / energy, cy / energy);
    let spread = atom
        .iter()
        .enumerate()
        .map(|(i, a)| a * a * (((i % size) as f64 - cx).powi(2) + ((i / size) as f64 - cy).powi(2)))
        .sum::<f64>()
        / energy;
    let sigma = (spread / 2.0).sqrt().clamp(0.7, size as f64);
    // The peak of the Fourier transform on a grid of 1/32 cycle per pixel, DC left out.
    let grid = 32i32;
    let (mut best, mut fx, mut fy) = (-1.0, 0.0, 0.0);
    for ky in 0..=grid / 2 {
        for kx in -grid / 2..grid / 2 {
            if ky == 0 && kx <= 0 {
                continue; // DC, and the mirror half of the ky = 0 line
            }
            let (gx, gy) = (kx as f64 / grid as f64, ky as f64 / grid as f64);
            let (mut re, mut im) = (0.0, 0.0);
            for (i, a) in atom.iter().enumerate() {
                let ph =
                    -2.0 * std::f64::consts::PI * (gx * (i % size) as f64 + gy * (i / size) as f64);
                re += a * ph.cos();
                im += a * ph.sin();
            }
            let mag = re * re + im * im;
            if mag > best {
                (best, fx, fy) = (mag, gx, gy);
            }
        }
    }
    let amp = atom.iter().fold(0.0f64, |m, a| m.max(a.abs()));
    let mut p = [
        amp,
        cx,
        cy,
        fy.atan2(fx),
        (fx * fx + fy * fy).sqrt(),
        0.0,
        sigma,
        sigma,
    ];
    let mut best_phase = (f64::INFINITY, 0.0);
    for k in 0..4 {
        p[5] = k as f64 * std::f64::consts::FRAC_PI_2;
        let e = sse(&p, atom, size);
        if e < best_phase.0 {
            best_phase = (e, p[5]);
        }
    }
    p[5] = best_phase.1;
    p
}

/// Solves the damped normal equations `a x = b` (`a` symmetric positive definite: `J^T J` plus
/// a positive diagonal) by the core's Cholesky factorisation; None when `a` is numerically
/// singular.
fn solve(a: &[[f64; PARAMS]; PARAMS], b: &[f64; PARAMS]) -> Option<[f64; PARAMS]> {
    let mut l: Vec<f64> = a.iter().flatten().copied().collect();
    if !cholesky(&mut l, PARAMS) {
        return None;
    }
    let mut x = *b;
    cholesky_solve(&l, PARAMS, &mut x);
    Some(x)
}

/// Residuals and their Jacobian (central differences) at `p`.
fn linearise(p: &[f64; PARAMS], atom: &[f64], size: usize) -> (Vec<f64>, Vec<[f64; PARAMS]>) {
    let at = |q: &[f64; PARAMS], i: usize| model(q, (i % size) as f64, (i / size) as f64);
    let r: Vec<f64> = (0..atom.len()).map(|i| at(p, i) - atom[i]).collect();
    let mut jac = vec![[0.0; PARAMS]; atom.len()];
    for k in 0..PARAMS {
        let h = 1e-6 * p[k].abs().max(1e-2);
        let (mut hi, mut lo) = (*p, *p);
        hi[k] += h;
        lo[k] -= h;
        for (i, row) in jac.iter_mut().enumerate() {
            row[k] = (at(&hi, i) - at(&lo, i)) / (2.0 * h);
        }
    }
    (r, jac)
}

/// Fits a Gabor function to the `size x size` atom (row-major).
pub fn fit(atom: &[f32], size: usize) -> GaborFit {
    let a: Vec<f64> = atom.iter().map(|v| *v as f64).collect();
    let mean = a.iter().sum::<f64>() / a.len().max(1) as f64;
    let total: f64 = a.iter().map(|v| (v - mean).powi(2)).sum();
    let mut p = start(&a, size);
    let mut err = sse(&p, &a, size);
    let mut lambda = 1e-3;
    for _ in 0..200 {
        let (r, jac) = linearise(&p, &a, size);
        let mut jtj = [[0.0; PARAMS]; PARAMS];
        let mut jtr = [0.0; PARAMS];
        for (ri, row) in r.iter().zip(&jac) {
            for i in 0..PARAMS {
                jtr[i] -= row[i] * ri;
                for j in 0..PARAMS {
                    jtj[i][j] += row[i] * row[j];
                }
            }
        }
        let mut improved = false;
        while lambda < 1e12 {
            let mut damped = jtj;
            for i in 0..PARAMS {
                damped[i][i] += lambda * jtj[i][i].max(1e-12);
            }
            let Some(step) = solve(&damped, &jtr) else {
                lambda *= 10.0;
                continue;
            };
            let mut q = p;
            q.iter_mut().zip(step).for_each(|(v, s)| *v += s);
            let e = sse(&q, &a, size);
            if e < err {
                let settled = err - e <= 1e-10 * err;
                (p, err, lambda) = (q, e, (lambda / 3.0).max(1e-9));
                improved = !settled;
                break;
            }
            lambda *= 4.0;
        }
        if !improved {
            break;
        }
    }
    let pi = std::f64::consts::PI;
    // A negative frequency is the same carrier turned by pi.
    let theta = if p[4] < 0.0 { p[3] + pi } else { p[3] };
    GaborFit {
        r2: if total > 0.0 { 1.0 - err / total } else { 0.0 },
        orientation: theta.rem_euclid(pi),
        frequency: p[4].abs(),
        center: (p[1], p[2]),
        sigma: (p[6].abs(), p[7].abs()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn gabor(size: usize, p: [f64; PARAMS], noise: f64, seed: u64) -> Vec<f32> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..size * size)
            .map(|i| {
                let v = model(&p, (i % size) as f64, (i / size) as f64);
                (v + noise * (rng.random::<f64>() - 0.5)) as f32
            })
            .collect()
    }

    #[test]
    fn recovers_the_parameters_of_a_noisy_gabor() {
        for (theta, f, phi) in [(0.3, 0.15, 0.4), (2.0, 0.25, 2.5), (1.2, 0.1, -1.0)] {
            let atom = gabor(16, [1.0, 7.3, 8.6, theta, f, phi, 2.5, 3.5], 0.05, 1);
            let g = fit(&atom, 16);
            assert!(g.r2 > 0.97, "{g:?}");
            assert!((g.frequency - f).abs() < 0.01, "{g:?}");
            let d = (g.orientation - theta.rem_euclid(std::f64::consts::PI)).abs();
            assert!(d.min(std::f64::consts::PI - d) < 0.05, "{theta}: {g:?}");
            assert!(
                (g.center.0 - 7.3).abs() < 0.3 && (g.center.1 - 8.6).abs() < 0.3,
                "{g:?}"
            );
        }
    }

    #[test]
    fn noise_and_two_blobs_are_not_gabor_like() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let noise: Vec<f32> = (0..256).map(|_| rng.random::<f32>() - 0.5).collect();
        assert!(fit(&noise, 16).r2 < 0.5, "{:?}", fit(&noise, 16));
        // Two separate blobs: one Gabor cannot explain both.
        let mut two = gabor(16, [1.0, 3.0, 3.0, 0.0, 0.2, 0.0, 1.5, 1.5], 0.0, 0);
        let other = gabor(16, [1.0, 12.0, 12.0, 1.5, 0.2, 0.0, 1.5, 1.5], 0.0, 0);
        two.iter_mut().zip(&other).for_each(|(a, b)| *a += b);
        assert!(fit(&two, 16).r2 < 0.7, "{:?}", fit(&two, 16));
    }
}
