//! The SAE's parameters, initialisation, and inference (encode / decode).

use super::ParamId;
use crate::linalg::{matmul, normalize_rows, MatRef, TopK};
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
    TopK {
        /// Active latents per sample.
        k: usize,
    },
    /// `pre * H(pre - threshold_j)` with per-latent thresholds ([`Sae::threshold`]); also the
    /// inference form of BatchTopK (one shared threshold).
    JumpRelu,
    /// Gated: the gate `xc W_enc^T + b_enc > 0` decides which latents fire, the magnitude path
    /// `exp(r_mag) * (xc W_enc^T) + b_mag` (then ReLU) decides how much ([`Sae::b_mag`],
    /// [`Sae::r_mag`]; `b_enc` is SAELens' `b_gate`).
    Gated,
    /// Switch (arXiv 2410.08201): a router sends each sample to one of `experts` equal blocks
    /// of latents, whose top `k` (then ReLU) are scaled by the router's probability.
    Switch {
        /// Active latents per sample.
        k: usize,
        /// Blocks of latents (each `d_sae / experts` wide).
        experts: usize,
    },
}

/// The first layer of an MLP encoder: `hidden = ReLU(xc W^T + b)`, then `W_enc` reads `hidden`.
#[derive(Clone, Debug, PartialEq)]
pub struct HiddenLayer {
    /// `[width, d_in]`.
    pub w: Matrix,
    /// `[width]`.
    pub b: Vec<f32>,
}

/// A Switch SAE's router: sample `x` goes to the expert with the largest logit of
/// `W (x - b)`, with probability the softmax of those logits.
#[derive(Clone, Debug, PartialEq)]
pub struct Router {
    /// `[experts, d_in]`.
    pub w: Matrix,
    /// `[d_in]`, subtracted from the input before routing.
    pub b: Vec<f32>,
}

impl Router {
    /// Number of experts.
    pub fn experts(&self) -> usize {
        self.w.rows()
    }
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

/// The encoder of an SAE with the parameters only that architecture has: the type says which
/// tensors exist, so no field is "empty unless".
#[derive(Clone, Debug, PartialEq)]
pub enum Encoder {
    /// `ReLU(x_c W_enc^T + b_enc)` (SAELens "standard").
    Relu,
    /// The `k` largest of `x_c W_enc^T + b_enc` per sample, then ReLU.
    TopK {
        /// Active latents per sample.
        k: usize,
    },
    /// `pre * H(pre - threshold_j)`; also the inference form of BatchTopK (one shared threshold).
    JumpRelu {
        /// Per-latent thresholds `[d_sae]`.
        threshold: Vec<f32>,
    },
    /// Gate `x_c W_enc^T + b_enc > 0`, magnitude `ReLU(exp(r_mag) * (x_c W_enc^T) + b_mag)`.
    Gated {
        /// Magnitude-path bias `[d_sae]`.
        b_mag: Vec<f32>,
        /// Magnitude-path log scale `[d_sae]`.
        r_mag: Vec<f32>,
    },
    /// Linear-ReLU-Linear-ReLU: `W_enc` (`[d_sae, width]`) reads `ReLU(x_c W_h^T + b_h)`.
    Mlp {
        /// The hidden layer.
        hidden: HiddenLayer,
    },
    /// Switch: the router picks one block of `d_sae / experts` latents per sample; the top `k`
    /// of that block's `x_c W_enc^T + b_enc`, then ReLU, times the router's probability.
    Switch {
        /// Active latents per sample.
        k: usize,
        /// The router.
        router: Router,
    },
}

impl Encoder {
    /// The linear encoder with `activation` for `d_sae` latents of inputs `d_in` wide, its own
    /// tensors zero.
    pub fn linear(activation: Activation, d_in: usize, d_sae: usize) -> Self {
        match activation {
            Activation::Relu => Encoder::Relu,
            Activation::TopK { k } => Encoder::TopK { k },
            Activation::JumpRelu => Encoder::JumpRelu {
                threshold: vec![0.0; d_sae],
            },
            Activation::Gated => Encoder::Gated {
                b_mag: vec![0.0; d_sae],
                r_mag: vec![0.0; d_sae],
            },
            Activation::Switch { k, experts } => Encoder::Switch {
                k,
                router: Router {
                    w: Matrix::zeros(experts, d_in),
                    b: vec![0.0; d_in],
                },
            },
        }
    }

    /// The encoder's own tensors, by name, in a fixed order (see [`super::params`]).
    pub fn tensors(&self) -> Vec<(ParamId, &[f32])> {
        match self {
            Encoder::Relu | Encoder::TopK { .. } => Vec::new(),
            Encoder::JumpRelu { threshold } => vec![(ParamId::Threshold, threshold)],
            Encoder::Gated { b_mag, r_mag } => vec![(ParamId::BMag, b_mag), (ParamId::RMag, r_mag)],
            Encoder::Mlp { hidden } => vec![
                (ParamId::WHidden, hidden.w.as_slice()),
                (ParamId::BHidden, &hidden.b),
            ],
            Encoder::Switch { router, .. } => vec![
                (ParamId::WRouter, router.w.as_slice()),
                (ParamId::BRouter, &router.b),
            ],
        }
    }

    /// The encoder's own tensors, mutably, in the order of [`Encoder::tensors`].
    pub fn tensors_mut(&mut self) -> Vec<(ParamId, &mut [f32])> {
        match self {
            Encoder::Relu | Encoder::TopK { .. } => Vec::new(),
            Encoder::JumpRelu { threshold } => vec![(ParamId::Threshold, threshold)],
            Encoder::Gated { b_mag, r_mag } => {
                vec![(ParamId::BMag, b_mag), (ParamId::RMag, r_mag)]
            }
            Encoder::Mlp { hidden } => vec![
                (ParamId::WHidden, hidden.w.as_mut_slice()),
                (ParamId::BHidden, &mut hidden.b),
            ],
            Encoder::Switch { router, .. } => vec![
                (ParamId::WRouter, router.w.as_mut_slice()),
                (ParamId::BRouter, &mut router.b),
            ],
        }
    }

    /// The inference non-linearity (an MLP encoder ends in a ReLU).
    pub fn activation(&self) -> Activation {
        match self {
            Encoder::Relu | Encoder::Mlp { .. } => Activation::Relu,
            Encoder::TopK { k } => Activation::TopK { k: *k },
            Encoder::JumpRelu { .. } => Activation::JumpRelu,
            Encoder::Gated { .. } => Activation::Gated,
            Encoder::Switch { k, router } => Activation::Switch {
                k: *k,
                experts: router.experts(),
            },
        }
    }

    /// The hidden layer of an MLP encoder.
    pub fn hidden(&self) -> Option<&HiddenLayer> {
        match self {
            Encoder::Mlp { hidden } => Some(hidden),
            _ => None,
        }
    }
}

/// A sparse autoencoder. Every latent `j` owns row `j` of `w_enc` and of `w_dec` (both
/// `[d_sae, d_in]`, or `w_enc` `[d_sae, width]` behind an MLP encoder's hidden layer); the
/// SAELens file layout stores `W_enc` transposed, see [`crate::sae::saelens`].
#[derive(Clone, Debug, PartialEq)]
pub struct Sae {
    /// The encoder and the parameters only it has.
    pub encoder: Encoder,
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
    /// A fresh SAE: Gaussian decoder rows scaled to unit norm, encoder per `init`, zero biases
    /// (and zero thresholds, magnitude biases and log scales where the activation has them).
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
        let mut encoder = Encoder::linear(activation, d_in, d_sae);
        if let Encoder::Switch { router, .. } = &mut encoder {
            // PyTorch's nn.Linear default, as arXiv 2410.08201's router.
            let bound = 1.0 / (d_in as f32).sqrt();
            let e = router.experts();
            router.w = Matrix::from_fn(e, d_in, |_, _| rng.random_range(-bound..=bound));
        }
        Sae {
            encoder,
            w_enc,
            b_enc: vec![0.0; d_sae],
            w_dec,
            b_dec: vec![0.0; d_in],
            apply_b_dec_to_input: true,
        }
    }

    /// A model of this shape with every parameter zero (to be filled by name, as a checkpoint
    /// is read); `hidden` is an MLP encoder's width.
    pub fn zeros(d_in: usize, d_sae: usize, activation: Activation, hidden: Option<usize>) -> Self {
        let encoder = match hidden {
            Some(width) => Encoder::Mlp {
                hidden: HiddenLayer {
                    w: Matrix::zeros(width, d_in),
                    b: vec![0.0; width],
                },
            },
            None => Encoder::linear(activation, d_in, d_sae),
        };
        Sae {
            encoder,
            w_enc: Matrix::zeros(d_sae, hidden.unwrap_or(d_in)),
            b_enc: vec![0.0; d_sae],
            w_dec: Matrix::zeros(d_sae, d_in),
            b_dec: vec![0.0; d_in],
            apply_b_dec_to_input: true,
        }
    }

    /// Folds an input scale into the weights: an SAE trained on `s x` becomes the same SAE for
    /// raw `x` (the encoder's first layer times `s`, the decoder and its bias over `s`; biases
    /// inside the encoder, thresholds and the gated magnitude path are unchanged). SAELens folds
    /// its `expected_average_only_in` factor the same way.
    pub fn fold_input_scale(&mut self, s: f32) {
        if s == 1.0 {
            return;
        }
        let first_layer = match &mut self.encoder {
            Encoder::Mlp { hidden } => hidden.w.as_mut_slice(),
            _ => self.w_enc.as_mut_slice(),
        };
        first_layer.iter_mut().for_each(|v| *v *= s);
        if let Encoder::Switch { router, .. } = &mut self.encoder {
            // W_r (s x - b_r) = (s W_r) (x - b_r / s).
            router.w.as_mut_slice().iter_mut().for_each(|v| *v *= s);
            router.b.iter_mut().for_each(|v| *v /= s);
        }
        self.w_dec.as_mut_slice().iter_mut().for_each(|v| *v /= s);
        self.b_dec.iter_mut().for_each(|v| *v /= s);
    }

    /// The inference non-linearity.
    pub fn activation(&self) -> Activation {
        self.encoder.activation()
    }

    /// Every parameter tensor by name: the four every SAE has, then the encoder's own.
    pub fn tensors(&self) -> Vec<(ParamId, &[f32])> {
        let mut v: Vec<(ParamId, &[f32])> = vec![
            (ParamId::WEnc, self.w_enc.as_slice()),
            (ParamId::BEnc, &self.b_enc),
            (ParamId::WDec, self.w_dec.as_slice()),
            (ParamId::BDec, &self.b_dec),
        ];
        v.extend(self.encoder.tensors());
        v
    }

    /// Every parameter tensor by name, mutably, in the order of [`Sae::tensors`].
    pub fn tensors_mut(&mut self) -> Vec<(ParamId, &mut [f32])> {
        let mut v: Vec<(ParamId, &mut [f32])> = vec![
            (ParamId::WEnc, self.w_enc.as_mut_slice()),
            (ParamId::BEnc, &mut self.b_enc),
            (ParamId::WDec, self.w_dec.as_mut_slice()),
            (ParamId::BDec, &mut self.b_dec),
        ];
        v.extend(self.encoder.tensors_mut());
        v
    }

    /// Puts an MLP encoder of hidden width `width` in front: `W_hidden`, and `W_enc` now
    /// `[d_sae, width]`, uniform in `±1/sqrt(fan_in)`, biases zero.
    pub fn with_hidden_layer<R: Rng>(mut self, width: usize, rng: &mut R) -> Self {
        let (n, m) = self.w_dec.shape();
        let b1 = 1.0 / (m as f32).sqrt();
        let b2 = 1.0 / (width.max(1) as f32).sqrt();
        self.encoder = Encoder::Mlp {
            hidden: HiddenLayer {
                w: Matrix::from_fn(width, m, |_, _| rng.random_range(-b1..=b1)),
                b: vec![0.0; width],
            },
        };
        self.w_enc = Matrix::from_fn(n, width, |_, _| rng.random_range(-b2..=b2));
        self
    }

    /// Width of what `W_enc` reads: `d_in`, or the hidden width of an MLP encoder.
    pub fn encoder_input_width(&self) -> usize {
        self.encoder.hidden().map_or(self.d_in(), |h| h.w.rows())
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
        let width = self.encoder_input_width();
        if self.w_enc.shape() != (n, width) {
            return Err(Error::shape(
                format!("{context}: W_enc"),
                format!("[{n}, {width}]"),
                format!("{:?}", self.w_enc.shape()),
            ));
        }
        if let Encoder::Mlp { hidden } = &self.encoder {
            if hidden.w.cols() != m || hidden.w.rows() == 0 {
                return Err(Error::shape(
                    format!("{context}: W_hidden"),
                    format!("[width, {m}]"),
                    format!("{:?}", hidden.w.shape()),
                ));
            }
        }
        if let Encoder::TopK { k } = self.encoder {
            if k == 0 || k > n {
                return Err(Error::param(
                    "k",
                    format!("{context}: k = {k} must be in 1..={n} (the number of latents)"),
                ));
            }
        }
        if let Encoder::Switch { k, router } = &self.encoder {
            check_experts(context, n, *k, router.experts())?;
        }
        let experts = match &self.encoder {
            Encoder::Switch { router, .. } => router.experts(),
            _ => 0,
        };
        for (id, t) in self.tensors() {
            let want = match id {
                ParamId::WEnc => n * width,
                ParamId::WDec => n * m,
                ParamId::BDec => m,
                ParamId::WHidden => width * m,
                ParamId::BHidden => width,
                ParamId::WRouter => experts * m,
                ParamId::BRouter => m,
                ParamId::BEnc | ParamId::Threshold | ParamId::BMag | ParamId::RMag => n,
            };
            if t.len() != want {
                return Err(Error::shape(
                    format!("{context}: {}", id.name()),
                    format!("{want} values ({n} latents of width {m})"),
                    format!("{} values", t.len()),
                ));
            }
            if let Some(i) = t.iter().position(|x| !x.is_finite()) {
                let cols = match id {
                    ParamId::WEnc => width,
                    ParamId::WDec | ParamId::WHidden | ParamId::WRouter => m,
                    _ => 1,
                };
                return Err(Error::NonFinite {
                    context: format!("{context}: {}", id.name()),
                    row: i / cols,
                    col: i % cols,
                    value: t[i],
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
    /// while selecting, saving a pass over `pre`. An MLP encoder's hidden layer is applied first.
    /// The encoder's input: `x`, less `b_dec` when `apply_b_dec_to_input`, into `xc`.
    pub(crate) fn center(&self, x: &[f32], xc: &mut [f32]) {
        let m = self.d_in().max(1);
        xc[..x.len()].copy_from_slice(x);
        if self.apply_b_dec_to_input {
            xc[..x.len()]
                .par_chunks_mut(m)
                .for_each(|r| r.iter_mut().zip(&self.b_dec).for_each(|(v, b)| *v -= b));
        }
    }

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
        self.center(x, xc);
        match self.encoder.hidden() {
            None => matmul(
                pre,
                MatRef::new(xc, rows, m),
                self.w_enc.view().t(),
                0.0,
                par,
            ),
            Some(h) => {
                let width = h.w.rows();
                let mut hid = vec![0.0f32; rows * width];
                matmul(&mut hid, MatRef::new(xc, rows, m), h.w.view().t(), 0.0, par);
                hid.par_chunks_mut(width).for_each(|r| {
                    r.iter_mut()
                        .zip(&h.b)
                        .for_each(|(v, b)| *v = (*v + b).max(0.0))
                });
                matmul(
                    pre,
                    MatRef::new(&hid, rows, width),
                    self.w_enc.view().t(),
                    0.0,
                    par,
                );
            }
        }
        if with_bias {
            pre[..rows * n]
                .par_chunks_mut(n.max(1))
                .for_each(|r| r.iter_mut().zip(&self.b_enc).for_each(|(v, b)| *v += b));
        }
    }

    /// Encodes `x` (`[rows, d_in]`, checked by [`Sae::check_input`]) on `par`'s threads.
    pub fn encode(&self, x: &Matrix, par: Parallelism) -> Codes {
        par.install(|| self.encode_on_pool(x.as_slice(), x.rows(), par))
    }

    /// Encodes row-major rows of width `d_in` borrowed from elsewhere (a numpy array), without
    /// copying them into a [`Matrix`] first.
    pub fn encode_rows(&self, x: &[f32], par: Parallelism) -> Result<Codes> {
        let m = self.d_in();
        if m == 0 || !x.len().is_multiple_of(m) {
            return Err(Error::shape(
                "rows to encode",
                format!("rows of width {m} (the SAE's d_in)"),
                format!("{} values", x.len()),
            ));
        }
        Ok(par.install(|| self.encode_on_pool(x, x.len() / m, par)))
    }

    fn encode_on_pool(&self, x: &[f32], rows: usize, par: Parallelism) -> Codes {
        if let Encoder::Switch { k, router } = &self.encoder {
            // Only the routed experts' pre-activations: no [rows, d_sae] buffer.
            return Codes::Sparse(super::switch::encode_codes(self, router, *k, x, par));
        }
        let n = self.d_sae();
        let mut xc = vec![0.0; x.len()];
        let mut pre = vec![0.0; rows * n];
        if let &Encoder::TopK { k } = &self.encoder {
            // The selection training makes: certified from approximate products.
            let mut cert = super::certified::Certified::default();
            let mut t = TopK::default();
            self.center(x, &mut xc);
            cert.approximate(&self.w_enc, &self.b_enc, &xc, &mut pre, par);
            cert.select(&self.w_enc, &self.b_enc, &xc, &pre, k, None, &mut t);
            return Codes::Sparse(t);
        }
        let with_bias = !matches!(self.encoder, Encoder::Gated { .. });
        self.pre_activations(x, &mut xc, &mut pre, with_bias, par);
        match &self.encoder {
            Encoder::JumpRelu { threshold } => {
                pre.par_chunks_mut(n).for_each(|r| {
                    r.iter_mut()
                        .zip(threshold)
                        .for_each(|(v, t)| *v = if *v > *t { *v } else { 0.0 })
                });
            }
            Encoder::Gated { b_mag, r_mag } => {
                let scale: Vec<f32> = r_mag.iter().map(|r| r.exp()).collect();
                pre.par_chunks_mut(n).for_each(|r| {
                    for (j, u) in r.iter_mut().enumerate() {
                        let gate = *u + self.b_enc[j];
                        *u = if gate > 0.0 {
                            (scale[j] * *u + b_mag[j]).max(0.0)
                        } else {
                            0.0
                        };
                    }
                });
            }
            // ReLU and MLP (TopK returned above).
            _ => pre.par_iter_mut().for_each(|v| *v = v.max(0.0)),
        }
        Codes::Dense(Matrix::from_vec(rows, n, pre).expect("pre has rows*d_sae values"))
    }

    /// Moves every latent's firing point so that it fires on a fraction `rate` (in (0, 1]) of
    /// the rows `x` (`[rows, d_in]`): the encoder bias of ReLU and MLP encoders (after the bias a
    /// latent fires above 0), the gate bias of Gated, the threshold of JumpReLU (at least
    /// `f32::MIN_POSITIVE`). For a start at a chosen L0, such as benchmarks at a trained SAE's
    /// sparsity. TopK fixes its L0 by `k`: refused.
    pub fn set_firing_rate(&mut self, x: &Matrix, rate: f64, par: Parallelism) -> Result<()> {
        if !(rate > 0.0 && rate <= 1.0) {
            return Err(Error::param(
                "rate",
                format!("a fraction in (0, 1], got {rate}"),
            ));
        }
        if let Encoder::TopK { .. } | Encoder::Switch { .. } = self.encoder {
            return Err(Error::param(
                "rate",
                "TopK and Switch set how many latents fire by k",
            ));
        }
        self.check_input(x, "rows for the firing rate")?;
        let (rows, n) = (x.rows(), self.d_sae());
        crate::memory::admit_array("pre-activations [rows, d_sae]", &[rows, n], 4)?;
        let mut xc = vec![0.0; x.as_slice().len()];
        let mut pre = vec![0.0; rows * n];
        par.install(|| self.pre_activations(x.as_slice(), &mut xc, &mut pre, false, par));
        // The value a fraction `rate` of the rows exceed, per latent.
        let above = ((rate * rows as f64).round() as usize).clamp(1, rows);
        let point: Vec<f32> = par.install(|| {
            (0..n)
                .into_par_iter()
                .map(|j| {
                    let mut col: Vec<f32> = pre.iter().skip(j).step_by(n).copied().collect();
                    if above == rows {
                        return col
                            .iter()
                            .copied()
                            .fold(f32::INFINITY, f32::min)
                            .next_down();
                    }
                    *col.select_nth_unstable_by(rows - above - 1, f32::total_cmp)
                        .1
                })
                .collect()
        });
        match &mut self.encoder {
            Encoder::JumpRelu { threshold } => {
                for ((t, p), b) in threshold.iter_mut().zip(&point).zip(&self.b_enc) {
                    *t = (p + b).max(f32::MIN_POSITIVE);
                }
            }
            _ => self.b_enc.iter_mut().zip(&point).for_each(|(b, p)| *b = -p),
        }
        Ok(())
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

/// A Switch SAE's shape: `experts` divides the latents, `k` at most an expert's latents.
pub(crate) fn check_experts(context: &str, latents: usize, k: usize, experts: usize) -> Result<()> {
    if experts == 0 || !latents.is_multiple_of(experts) {
        return Err(Error::param(
            "experts",
            format!(
                "{context}: {experts} experts must divide the {latents} latents into equal blocks"
            ),
        ));
    }
    let width = latents / experts;
    if k == 0 || k > width {
        return Err(Error::param(
            "k",
            format!("{context}: k = {k} must be in 1..={width} (the latents of one expert)"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn a_set_firing_rate_is_the_fraction_of_rows_each_latent_fires_on() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(4);
        let x = Matrix::standard_normal(200, 12, 5);
        let par = Parallelism::threads(2);
        for act in [Activation::Relu, Activation::Gated, Activation::JumpRelu] {
            let mut sae = Sae::init(12, 40, act, EncoderInit::FanInUniform, &mut rng);
            sae.set_firing_rate(&x, 0.05, par).unwrap();
            let Codes::Dense(z) = sae.encode(&x, par) else {
                panic!("{act:?}: dense codes")
            };
            for j in 0..40 {
                let fired = (0..200).filter(|&r| z.get(r, j) > 0.0).count();
                assert_eq!(fired, 10, "{act:?} latent {j}");
            }
        }
        let mut topk = Sae::init(
            12,
            40,
            Activation::TopK { k: 3 },
            EncoderInit::Tied,
            &mut rng,
        );
        let err = topk.set_firing_rate(&x, 0.05, par).unwrap_err();
        assert!(err.to_string().contains("rate"), "{err}");
        let mut relu = Sae::init(12, 40, Activation::Relu, EncoderInit::Tied, &mut rng);
        for bad in [0.0, -0.1, 1.5, f64::NAN] {
            assert!(relu.set_firing_rate(&x, bad, par).is_err(), "{bad}");
        }
        assert!(relu
            .set_firing_rate(&Matrix::zeros(3, 11), 0.5, par)
            .is_err());
    }

    #[test]
    fn a_folded_input_scale_routes_and_encodes_raw_inputs_as_the_scaled_ones() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(12);
        let act = Activation::Switch { k: 2, experts: 3 };
        let mut sae = Sae::init(5, 12, act, EncoderInit::FanInUniform, &mut rng);
        let s = 0.05f32;
        if let Encoder::Switch { router, .. } = &mut sae.encoder {
            router.b = vec![0.02, -0.01, 0.03, 0.0, 0.01];
        }
        sae.b_dec = vec![0.01, 0.0, -0.02, 0.01, 0.005];
        let x = Matrix::standard_normal(40, 5, 13);
        let mut scaled = x.clone();
        scaled.as_mut_slice().iter_mut().for_each(|v| *v *= s);
        let mut folded = sae.clone();
        folded.fold_input_scale(s);
        let par = Parallelism::Serial;
        let (Codes::Sparse(a), Codes::Sparse(b)) =
            (folded.encode(&x, par), sae.encode(&scaled, par))
        else {
            panic!("sparse codes")
        };
        assert_eq!(a.indices, b.indices, "the same experts and latents");
        for (u, v) in a.values.iter().zip(&b.values) {
            assert!((u - v).abs() <= 1e-5 * (1.0 + v.abs()), "{u} vs {v}");
        }
    }

    #[test]
    fn encoding_borrowed_rows_equals_encoding_a_matrix() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
        let x = Matrix::standard_normal(9, 5, 3);
        for act in [
            Activation::Relu,
            Activation::TopK { k: 2 },
            Activation::Gated,
        ] {
            let sae = Sae::init(5, 12, act, EncoderInit::Tied, &mut rng);
            let want = sae.encode_dense(&x, Parallelism::Serial);
            let got = match sae.encode_rows(x.as_slice(), Parallelism::Serial).unwrap() {
                Codes::Dense(m) => m,
                Codes::Sparse(t) => t.to_dense(12),
            };
            assert_eq!(got, want, "{act:?}");
        }
        let sae = Sae::init(5, 12, Activation::Relu, EncoderInit::Tied, &mut rng);
        let e = sae
            .encode_rows(&x.as_slice()[..7], Parallelism::Serial)
            .unwrap_err();
        assert!(e.to_string().contains("width 5"), "{e}");
    }

    #[test]
    fn a_folded_input_scale_gives_the_same_codes_on_raw_inputs() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
        let s = 0.03f32;
        let x = Matrix::standard_normal(7, 5, 9);
        let mut scaled = x.clone();
        scaled.as_mut_slice().iter_mut().for_each(|v| *v *= s);
        let kinds = [
            (Activation::Relu, false),
            (Activation::TopK { k: 3 }, false),
            (Activation::JumpRelu, false),
            (Activation::Gated, false),
            (Activation::Relu, true),
        ];
        for (act, mlp) in kinds {
            let mut sae = Sae::init(5, 11, act, EncoderInit::FanInUniform, &mut rng);
            if mlp {
                sae = sae.with_hidden_layer(6, &mut rng);
            }
            // Training-space inputs are small: give the biases that scale too.
            sae.b_dec
                .iter_mut()
                .enumerate()
                .for_each(|(i, v)| *v = 0.01 * i as f32);
            sae.b_enc.iter_mut().for_each(|v| *v = 0.001);
            for (_, t) in sae.encoder.tensors_mut() {
                if t.len() == 11 {
                    t.iter_mut()
                        .enumerate()
                        .for_each(|(i, v)| *v = 0.0005 * i as f32);
                }
            }
            let mut folded = sae.clone();
            folded.fold_input_scale(s);
            let par = Parallelism::Serial;
            let (a, b) = (folded.encode_dense(&x, par), sae.encode_dense(&scaled, par));
            assert!(
                b.as_slice().iter().any(|v| *v > 0.0),
                "{act:?}: something fires"
            );
            for (u, v) in a.as_slice().iter().zip(b.as_slice()) {
                assert!(
                    (u - v).abs() <= 1e-5 * (1.0 + v.abs()),
                    "{act:?} {mlp}: {u} vs {v}"
                );
            }
        }
    }
}
