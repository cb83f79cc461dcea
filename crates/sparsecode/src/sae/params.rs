//! The named parameter set of an SAE, and buffers of the same names and lengths.
//!
//! Every SAE has four tensors (`w_enc`, `b_enc`, `w_dec`, `b_dec`); its [`super::Encoder`] adds
//! its own (JumpReLU's `threshold`, the gated magnitude path's `b_mag` and `r_mag`, an MLP
//! encoder's `w_hidden` and `b_hidden`, a Switch SAE's router `w_router` and `b_router`). [`super::Sae::tensors`] lists them in one fixed order,
//! and [`Grads`] holds one buffer per listed tensor: the gradients, Adam's two moments, the
//! checkpoint and (later) the all-reduce all iterate over that one list. Adding a parameter to an
//! architecture means adding it to its encoder variant and to [`super::Encoder::tensors`].

use serde::{Deserialize, Serialize};

/// The name of one parameter tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ParamId {
    /// Encoder rows `[d_sae, d_in]` (`[d_sae, width]` behind an MLP encoder's hidden layer).
    WEnc,
    /// Encoder bias `[d_sae]` (SAELens' `b_gate` for a gated SAE).
    BEnc,
    /// Decoder rows `[d_sae, d_in]`.
    WDec,
    /// Decoder bias `[d_in]`.
    BDec,
    /// JumpReLU thresholds `[d_sae]` (trained in log space).
    Threshold,
    /// Gated magnitude-path bias `[d_sae]`.
    BMag,
    /// Gated magnitude-path log scale `[d_sae]`.
    RMag,
    /// MLP encoder hidden weights `[width, d_in]`.
    WHidden,
    /// MLP encoder hidden bias `[width]`.
    BHidden,
    /// Switch router rows `[experts, d_in]`.
    WRouter,
    /// Switch router input bias `[d_in]` (subtracted before routing).
    BRouter,
}

impl ParamId {
    /// The snake-case name used in checkpoints and records.
    pub fn name(self) -> &'static str {
        match self {
            ParamId::WEnc => "w_enc",
            ParamId::BEnc => "b_enc",
            ParamId::WDec => "w_dec",
            ParamId::BDec => "b_dec",
            ParamId::Threshold => "threshold",
            ParamId::BMag => "b_mag",
            ParamId::RMag => "r_mag",
            ParamId::WHidden => "w_hidden",
            ParamId::BHidden => "b_hidden",
            ParamId::WRouter => "w_router",
            ParamId::BRouter => "b_router",
        }
    }

    /// A bias (not learned when a run fixes its biases at their start values).
    pub fn is_bias(self) -> bool {
        matches!(
            self,
            ParamId::BEnc | ParamId::BDec | ParamId::BMag | ParamId::BHidden | ParamId::BRouter
        )
    }
}

impl std::fmt::Display for ParamId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// One `f32` buffer per parameter tensor of an SAE, found by name: gradients, and Adam's
/// moments. The four tensors every SAE has are fields (the losses write
/// them in place); the encoder's own follow by name.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Grads {
    /// Gradient of the encoder rows.
    pub w_enc: Vec<f32>,
    /// Gradient of the encoder bias.
    pub b_enc: Vec<f32>,
    /// Gradient of the decoder rows.
    pub w_dec: Vec<f32>,
    /// Gradient of the decoder bias.
    pub b_dec: Vec<f32>,
    /// The encoder's own tensors, by name.
    pub encoder: Vec<(ParamId, Vec<f32>)>,
}

impl Grads {
    /// Zeroed buffers shaped like every parameter of `sae`.
    pub fn like(sae: &super::Sae) -> Self {
        let mut g = Grads::default();
        for (id, t) in sae.tensors() {
            *g.get_mut(id) = vec![0.0; t.len()];
        }
        g
    }

    /// Every buffer with its name (the four every SAE has first).
    pub fn named(&self) -> Vec<(ParamId, &Vec<f32>)> {
        let mut v = vec![
            (ParamId::WEnc, &self.w_enc),
            (ParamId::BEnc, &self.b_enc),
            (ParamId::WDec, &self.w_dec),
            (ParamId::BDec, &self.b_dec),
        ];
        v.extend(self.encoder.iter().map(|(id, t)| (*id, t)));
        v
    }

    /// Every buffer with its name, mutably.
    pub fn named_mut(&mut self) -> Vec<(ParamId, &mut Vec<f32>)> {
        let mut v = vec![
            (ParamId::WEnc, &mut self.w_enc),
            (ParamId::BEnc, &mut self.b_enc),
            (ParamId::WDec, &mut self.w_dec),
            (ParamId::BDec, &mut self.b_dec),
        ];
        v.extend(self.encoder.iter_mut().map(|(id, t)| (*id, t)));
        v
    }

    /// The buffer of `id` (None when the model has no such tensor).
    pub fn get(&self, id: ParamId) -> Option<&Vec<f32>> {
        match id {
            ParamId::WEnc => Some(&self.w_enc),
            ParamId::BEnc => Some(&self.b_enc),
            ParamId::WDec => Some(&self.w_dec),
            ParamId::BDec => Some(&self.b_dec),
            _ => self.encoder.iter().find(|(p, _)| *p == id).map(|(_, t)| t),
        }
    }

    /// The buffer of `id`, added (empty) when missing.
    pub fn get_mut(&mut self, id: ParamId) -> &mut Vec<f32> {
        match id {
            ParamId::WEnc => &mut self.w_enc,
            ParamId::BEnc => &mut self.b_enc,
            ParamId::WDec => &mut self.w_dec,
            ParamId::BDec => &mut self.b_dec,
            _ => {
                let at = match self.encoder.iter().position(|(p, _)| *p == id) {
                    Some(i) => i,
                    None => {
                        self.encoder.push((id, Vec::new()));
                        self.encoder.len() - 1
                    }
                };
                &mut self.encoder[at].1
            }
        }
    }

    /// Takes the buffer of `id` out (leaving it empty), to be put back with [`Grads::get_mut`].
    pub fn take(&mut self, id: ParamId) -> Vec<f32> {
        std::mem::take(self.get_mut(id))
    }

    /// Adds `other` element by element, tensor by tensor of the same name (a tensor `other`
    /// lacks is left as it is).
    pub fn add(&mut self, other: &Grads) {
        for (id, a) in self.named_mut() {
            if let Some(b) = other.get(id) {
                a.iter_mut().zip(b).for_each(|(x, y)| *x += y);
            }
        }
    }
}
