//! Adam (Kingma & Ba) with bias correction; its state is plain vectors so checkpoints can save and
//! restore it exactly.

use crate::sae::Grads;
use rayon::prelude::*;

/// First and second moment estimates for every parameter, and the step count.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamState {
    /// Steps taken.
    pub t: u64,
    /// First-moment estimates.
    pub m: Grads,
    /// Second-moment estimates.
    pub v: Grads,
}

/// The optimiser: hyper-parameters plus state.
#[derive(Clone, Debug, PartialEq)]
pub struct Adam {
    /// Decay of the first moment.
    pub beta1: f32,
    /// Decay of the second moment.
    pub beta2: f32,
    /// Added to the root of the second moment.
    pub eps: f32,
    /// Moment estimates and step count.
    pub state: AdamState,
}

impl Adam {
    /// Fresh state for a linear-encoder SAE of `d_sae` latents of width `d_in`.
    pub fn new(beta1: f32, beta2: f32, eps: f32, d_in: usize, d_sae: usize) -> Self {
        Self::with_zero_moments(beta1, beta2, eps, Grads::zeros(d_in, d_sae))
    }

    /// Fresh state shaped like every parameter of `sae`.
    pub fn for_sae(beta1: f32, beta2: f32, eps: f32, sae: &crate::sae::Sae) -> Self {
        Self::with_zero_moments(beta1, beta2, eps, Grads::like(sae))
    }

    fn with_zero_moments(beta1: f32, beta2: f32, eps: f32, zeros: Grads) -> Self {
        Adam {
            beta1,
            beta2,
            eps,
            state: AdamState {
                t: 0,
                m: zeros.clone(),
                v: zeros,
            },
        }
    }

    /// Advances the step count; call once per optimiser step, before [`Adam::update`].
    pub fn begin_step(&mut self) {
        self.state.t += 1;
    }

    /// `p -= lr * m_hat / (sqrt(v_hat) + eps)` for one parameter tensor, selected by `which`.
    pub fn update(
        &mut self,
        which: fn(&mut Grads) -> &mut Vec<f32>,
        param: &mut [f32],
        grad: &[f32],
        lr: f32,
    ) {
        let (b1, b2, eps) = (self.beta1, self.beta2, self.eps);
        let t = self.state.t as i32;
        let c1 = 1.0 - (b1 as f64).powi(t);
        let c2 = 1.0 - (b2 as f64).powi(t);
        let step = (lr as f64 / c1) as f32;
        let inv_c2 = (1.0 / c2) as f32;
        let m = which(&mut self.state.m);
        let v = which(&mut self.state.v);
        const CHUNK: usize = 4096;
        param
            .par_chunks_mut(CHUNK)
            .zip(grad.par_chunks(CHUNK))
            .zip(m.par_chunks_mut(CHUNK).zip(v.par_chunks_mut(CHUNK)))
            .for_each(|((p, g), (m, v))| {
                for i in 0..p.len() {
                    m[i] = b1 * m[i] + (1.0 - b1) * g[i];
                    v[i] = b2 * v[i] + (1.0 - b2) * g[i] * g[i];
                    p[i] -= step * m[i] / ((v[i] * inv_c2).sqrt() + eps);
                }
            });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_step_moves_by_lr_against_the_gradient_sign() {
        let mut a = Adam::new(0.9, 0.999, 1e-8, 2, 1);
        let mut p = vec![1.0f32, 1.0];
        a.begin_step();
        a.update(|g| &mut g.b_dec, &mut p, &[0.5, -3.0], 0.1);
        assert!(
            (p[0] - 0.9).abs() < 1e-6 && (p[1] - 1.1).abs() < 1e-6,
            "{p:?}"
        );
    }

    #[test]
    fn minimises_a_quadratic() {
        let mut a = Adam::new(0.9, 0.999, 1e-8, 3, 1);
        let mut p = vec![3.0f32, -2.0, 0.5];
        for _ in 0..2000 {
            let g: Vec<f32> = p.iter().map(|x| 2.0 * (x - 1.0)).collect();
            a.begin_step();
            a.update(|g| &mut g.b_dec, &mut p, &g, 0.01);
        }
        assert!(p.iter().all(|x| (x - 1.0).abs() < 1e-2), "{p:?}");
    }
}
