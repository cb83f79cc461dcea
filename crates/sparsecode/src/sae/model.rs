//! The SAE's parameters, initialisation, and inference (encode / decode).

use crate::linalg::{matmul, normalize_rows, topk_row_shifted, MatRef, TopK};
use crate::{Error, Matrix, Parallelism, Result};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

/// The encoder non-linearity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Activation {
    /// `ReLU(pre)`: SAELens "standard".
    Relu,
    /// Keep the `k` largest pre-activations per sample, then ReLU.
    /// Keep the `k` largest pre-activations per sample, then ReLU.
    TopK {
        /// Active latents per sample.
        k: usize,
    },
}

/// How the encoder is initialised from the (random, unit-row) decoder.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderInit {
    /// `W_enc = W_dec^T` (tied): every latent starts reading along its own decoder direction.
    #[default]
    Tied,
    /// Uniform in `±1/sqrt(d_in)`, independent of the decoder (PyTorch's `nn.Linear` default; the
    /// setting of arXiv 2411.13117).
    FanInUniform,
}

/// Codes produced by [`Sae::encode`].
#[derive(Clone, Debug, PartialEq)]
pub enum Codes {
    /// One value per latent.
    Dense(Matrix),
    /// `k` (index, value) slots per sample.
    Sparse(TopK),
}

/// A sparse autoencoder. Every latent `j` owns row `j` of `w_enc` and of `w_dec` (both
/// `[d_sae, d_in]`); the SAELens file layout stores `W_enc` transposed, see [`crate::io::saelens`].
#[derive(Clone, Debug, PartialEq)]
pub struct Sae {
    /// The encoder non-linearity.
    pub activation: Activation,
    /// Encoder rows `[d_sae, d_in]`.
    pub w_enc: Matrix,
    /// Encoder bias `[d_sae]`.
    pub b_enc: Vec<f32>,
    /// Decoder rows (dictionary atoms) `[d_sae, d_in]`.
    pub w_dec: Matrix,
    /// Decoder bias `[d_in]`, also subtracted from the input when `apply_b_dec_to_input`.
    pub b_dec: Vec<f32>,
    /// Subtract `b_dec` before encoding (SAELens `apply_b_dec_to_input`).
    pub apply_b_dec_to_input: bool,
}

impl Sae {
    /// A fresh SAE: Gaussian decoder rows scaled to unit norm, encoder per `init`, zero biases.
    pub fn init<R: Rng>(
        d_in: usize,
        d_sae: usize,
        activation: Activation,
        init: EncoderInit,
        rng: &mut R,
    ) -> Self {
        let mut w_dec = Matrix::from_fn(d_sae, d_in, |_, _| StandardNormal.sample(rng));
        normalize_rows(w_dec.as_mut_slice(), d_in);
        let w_enc = match init {
            EncoderInit::Tied => w_dec.clone(),
            EncoderInit::FanInUniform => {
                let bound = 1.0 / (d_in as f32).sqrt();
                Matrix::from_fn(d_sae, d_in, |_, _| rng.random_range(-bound..=bound))
            }
        };
        Sae {
            activation,
            w_enc,
            b_enc: vec![0.0; d_sae],
            w_dec,
            b_dec: vec![0.0; d_in],
            apply_b_dec_to_input: true,
        }
    }

    /// Input width.
    pub fn d_in(&self) -> usize {
        self.w_dec.cols()
    }

    /// Number of latents.
    pub fn d_sae(&self) -> usize {
        self.w_dec.rows()
    }

    /// Checks that all tensors agree in shape and hold finite values; `context` names the source.
    pub fn validate(&self, context: &str) -> Result<()> {
        let (n, m) = self.w_dec.shape();
        if n == 0 || m == 0 {
            return Err(Error::shape(
                format!("{context}: W_dec"),
                "at least one latent and one input dimension",
                format!("{n} x {m}"),
            ));
        }
        let checks = [
            (
                "W_enc",
                self.w_enc.shape() == (n, m),
                format!("{n} x {m}"),
                format!("{:?}", self.w_enc.shape()),
            ),
            (
                "b_enc",
                self.b_enc.len() == n,
                format!("{n}"),
                format!("{}", self.b_enc.len()),
            ),
            (
                "b_dec",
                self.b_dec.len() == m,
                format!("{m}"),
                format!("{}", self.b_dec.len()),
            ),
        ];
        for (name, ok, want, got) in checks {
            if !ok {
                return Err(Error::shape(format!("{context}: {name}"), want, got));
            }
        }
        if let Activation::TopK { k } = self.activation {
            if k == 0 || k > n {
                return Err(Error::param(
                    "k",
                    format!("{context}: k = {k} must be in 1..={n} (the number of latents)"),
                ));
            }
        }
        self.w_enc.check_finite(&format!("{context}: W_enc"))?;
        self.w_dec.check_finite(&format!("{context}: W_dec"))?;
        for (name, v) in [("b_enc", &self.b_enc), ("b_dec", &self.b_dec)] {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::NonFinite {
                    context: format!("{context}: {name}"),
                    row: i,
                    col: 0,
                    value: v[i],
                });
            }
        }
        Ok(())
    }

    /// Fails unless `x` has `d_in` columns.
    pub fn check_input(&self, x: &Matrix, context: &str) -> Result<()> {
        if x.cols() != self.d_in() {
            return Err(Error::shape(
                context,
                format!("{} columns (the SAE's d_in)", self.d_in()),
                format!("{} columns", x.cols()),
            ));
        }
        Ok(())
    }

    /// Pre-activations `(x - b_dec) W_enc^T (+ b_enc when `with_bias`)` into `pre`
    /// (`[rows, d_sae]`); `xc` receives the centred input. TopK leaves the bias out and adds it
    /// while selecting, saving a pass over `pre`.
    pub(crate) fn pre_activations(
        &self,
        x: &[f32],
        xc: &mut [f32],
        pre: &mut [f32],
        with_bias: bool,
        par: Parallelism,
    ) {
        let (n, m) = self.w_dec.shape();
        let rows = x.len() / m.max(1);
        xc[..x.len()].copy_from_slice(x);
        if self.apply_b_dec_to_input {
            xc[..x.len()]
                .par_chunks_mut(m.max(1))
                .for_each(|r| r.iter_mut().zip(&self.b_dec).for_each(|(v, b)| *v -= b));
        }
        matmul(
            pre,
            MatRef::new(xc, rows, m),
            self.w_enc.view().t(),
            0.0,
            par,
        );
        if with_bias {
            pre[..rows * n]
                .par_chunks_mut(n.max(1))
                .for_each(|r| r.iter_mut().zip(&self.b_enc).for_each(|(v, b)| *v += b));
        }
    }

    /// Encodes `x` (`[rows, d_in]`, checked by [`Sae::check_input`]).
    pub fn encode(&self, x: &Matrix, par: Parallelism) -> Codes {
        let n = self.d_sae();
        let mut xc = vec![0.0; x.as_slice().len()];
        let mut pre = vec![0.0; x.rows() * n];
        let with_bias = self.activation == Activation::Relu;
        self.pre_activations(x.as_slice(), &mut xc, &mut pre, with_bias, par);
        match self.activation {
            Activation::Relu => {
                pre.iter_mut().for_each(|v| *v = v.max(0.0));
                Codes::Dense(Matrix::from_vec(x.rows(), n, pre).expect("pre has rows*d_sae values"))
            }
            Activation::TopK { k } => {
                let mut t = TopK::with_rows(x.rows(), k);
                pre.par_chunks(n)
                    .zip(t.indices.par_chunks_mut(k).zip(t.values.par_chunks_mut(k)))
                    .for_each_init(Vec::new, |scratch, (row, (idx, val))| {
                        topk_row_shifted(row, &self.b_enc, k, scratch, idx, val)
                    });
                Codes::Sparse(t)
            }
        }
    }

    /// Encodes to a dense `[rows, d_sae]` matrix.
    pub fn encode_dense(&self, x: &Matrix, par: Parallelism) -> Matrix {
        match self.encode(x, par) {
            Codes::Dense(m) => m,
            Codes::Sparse(t) => t.to_dense(self.d_sae()),
        }
    }

    /// `z W_dec + b_dec` for dense codes `z` (`[rows, d_sae]`).
    pub fn decode(&self, z: &Matrix, par: Parallelism) -> Matrix {
        crate::linalg::synthesize(z, &self.w_dec, Some(&self.b_dec), par)
    }

    /// Encodes then decodes: the reconstruction of `x`.
    pub fn reconstruct(&self, x: &Matrix, par: Parallelism) -> Matrix {
        self.decode(&self.encode_dense(x, par), par)
    }
}
