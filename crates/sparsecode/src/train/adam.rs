//! Adam (Kingma & Ba) with bias correction; its state is plain vectors so checkpoints can save and
//! restore it exactly.

use crate::sae::{Grads, ParamId, Sae};
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

/// How the optimiser treats one parameter tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Update {
    /// Not stepped (frozen, or set by something other than its gradient).
    Skip,
    /// `p -= lr * m_hat / (sqrt(v_hat) + eps)`.
    Plain,
    /// The same step on `ln p` (positive parameters such as JumpReLU's thresholds, whose
    /// gradient is taken with respect to the logarithm).
    LogSpace,
}

impl Adam {
    /// Fresh state shaped like every parameter of `sae`.
    pub fn for_sae(beta1: f32, beta2: f32, eps: f32, sae: &Sae) -> Self {
        let mut adam = Adam::new(beta1, beta2, eps);
        adam.state.m = Grads::like(sae);
        adam.state.v = Grads::like(sae);
        adam
    }

    /// One optimiser step over every parameter tensor of `sae`, each as `update` says, with the
    /// gradients `g` (the same names, see [`Grads`]).
    pub fn step(&mut self, sae: &mut Sae, g: &Grads, lr: f32, update: &dyn Fn(ParamId) -> Update) {
        self.state.t += 1;
        let coef = self.coefficients(lr);
        for (id, p) in sae.tensors_mut() {
            let how = update(id);
            let Some(gr) = g.get(id).filter(|_| how != Update::Skip) else {
                continue;
            };
            let (m, v) = (self.state.m.get_mut(id), self.state.v.get_mut(id));
            m.resize(p.len(), 0.0);
            v.resize(p.len(), 0.0);
            assert_eq!(gr.len(), p.len(), "the gradient of {id} is shaped like it");
            match how {
                Update::Skip => {}
                Update::Plain => adam_kernel(p, gr, m, v, coef),
                Update::LogSpace => {
                    p.iter_mut().for_each(|x| *x = x.ln());
                    adam_kernel(p, gr, m, v, coef);
                    p.iter_mut().for_each(|x| *x = x.exp());
                }
            }
        }
    }

    /// Fresh state with no tensors yet: for models other than an SAE, stepped tensor by tensor
    /// with [`Adam::begin_step`] and [`Adam::update_tensor`].
    pub fn new(beta1: f32, beta2: f32, eps: f32) -> Self {
        Adam {
            beta1,
            beta2,
            eps,
            state: AdamState {
                t: 0,
                m: Grads::default(),
                v: Grads::default(),
            },
        }
    }

    /// Advances the step count (once per step, before [`Adam::update_tensor`]).
    pub fn begin_step(&mut self) {
        self.state.t += 1;
    }

    /// Steps one tensor, whose moments are kept under `id` (created at the first call).
    pub fn update_tensor(&mut self, id: ParamId, param: &mut [f32], grad: &[f32], lr: f32) {
        let coef = self.coefficients(lr);
        let (mut m, mut v) = (self.state.m.take(id), self.state.v.take(id));
        m.resize(param.len(), 0.0);
        v.resize(param.len(), 0.0);
        adam_kernel(param, grad, &mut m, &mut v, coef);
        *self.state.m.get_mut(id) = m;
        *self.state.v.get_mut(id) = v;
    }

    fn coefficients(&self, lr: f32) -> Coefficients {
        let (b1, b2) = (self.beta1, self.beta2);
        let t = self.state.t as i32;
        let c1 = 1.0 - (b1 as f64).powi(t);
        let c2 = 1.0 - (b2 as f64).powi(t);
        Coefficients {
            b1,
            b2,
            eps: self.eps,
            step: (lr as f64 / c1) as f32,
            inv_c2: (1.0 / c2) as f32,
        }
    }
}

/// Per-step constants of the Adam update (bias corrections folded in).
#[derive(Clone, Copy)]
struct Coefficients {
    b1: f32,
    b2: f32,
    eps: f32,
    step: f32,
    inv_c2: f32,
}

/// `m = b1 m + (1-b1) g; v = b2 v + (1-b2) g^2; p -= step * m / (sqrt(v / c2) + eps)`, in
/// parallel over fixed chunks (element-wise, so identical for any thread count).
fn adam_kernel(param: &mut [f32], grad: &[f32], m: &mut [f32], v: &mut [f32], c: Coefficients) {
    const CHUNK: usize = 4096;
    let Coefficients {
        b1,
        b2,
        eps,
        step,
        inv_c2,
    } = c;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sae::{Activation, EncoderInit};
    use rand::SeedableRng;

    fn one_latent(d_in: usize, b_dec: &[f32]) -> Sae {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(0);
        let mut sae = Sae::init(d_in, 1, Activation::Relu, EncoderInit::Tied, &mut rng);
        sae.b_dec = b_dec.to_vec();
        sae
    }

    fn only_b_dec(id: ParamId) -> Update {
        if id == ParamId::BDec {
            Update::Plain
        } else {
            Update::Skip
        }
    }

    #[test]
    fn first_step_moves_by_lr_against_the_gradient_sign() {
        let mut sae = one_latent(2, &[1.0, 1.0]);
        let mut a = Adam::for_sae(0.9, 0.999, 1e-8, &sae);
        let mut g = Grads::like(&sae);
        g.b_dec = vec![0.5, -3.0];
        let w_enc = sae.w_enc.clone();
        a.step(&mut sae, &g, 0.1, &only_b_dec);
        let p = &sae.b_dec;
        assert!(
            (p[0] - 0.9).abs() < 1e-6 && (p[1] - 1.1).abs() < 1e-6,
            "{p:?}"
        );
        assert_eq!(sae.w_enc, w_enc, "a skipped tensor stays put");
    }

    #[test]
    fn minimises_a_quadratic_and_steps_in_log_space() {
        let mut sae = one_latent(3, &[3.0, -2.0, 0.5]);
        let mut a = Adam::for_sae(0.9, 0.999, 1e-8, &sae);
        let mut g = Grads::like(&sae);
        for _ in 0..2000 {
            g.b_dec = sae.b_dec.iter().map(|x| 2.0 * (x - 1.0)).collect();
            a.step(&mut sae, &g, 0.01, &only_b_dec);
        }
        assert!(
            sae.b_dec.iter().all(|x| (x - 1.0).abs() < 1e-2),
            "{:?}",
            sae.b_dec
        );
        // In log space a positive parameter stays positive: minimise (ln p - ln 2)^2.
        let mut sae = one_latent(1, &[0.5]);
        let mut a = Adam::for_sae(0.9, 0.999, 1e-8, &sae);
        let log_b_dec = |id| {
            if id == ParamId::BDec {
                Update::LogSpace
            } else {
                Update::Skip
            }
        };
        for _ in 0..2000 {
            g.b_dec = vec![2.0 * (sae.b_dec[0].ln() - 2f32.ln())];
            a.step(&mut sae, &g, 0.01, &log_b_dec);
            assert!(sae.b_dec[0] > 0.0);
        }
        assert!((sae.b_dec[0] - 2.0).abs() < 2e-2, "{:?}", sae.b_dec);
    }
}
