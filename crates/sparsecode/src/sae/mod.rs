//! Sparse autoencoders: the model ([`Sae`]), and per architecture its loss with a hand-written
//! backward pass (no autograd tape), checked against finite differences in the tests.
//!
//! Objective (`B` samples, `x_c = x - b_dec` when `apply_b_dec_to_input`):
//! - ReLU-L1 ("standard"): `z = ReLU(x_c W_enc^T + b_enc)`, `x_hat = z W_dec + b_dec`,
//!   `L = 1/B sum_b ||x_hat_b - x_b||^2 + l1/B sum_bj z_bj ||W_dec_j||`.
//! - TopK: `z` keeps the k largest pre-activations of each sample (then ReLU);
//!   `L = 1/B sum_b ||x_hat_b - x_b||^2 + aux_coef * scale * 1/B sum_b ||e_aux_b - (x_b - x_hat_b)||^2`
//!   where `e_aux` reconstructs the residual from the top `k_aux` pre-activations among dead
//!   latents and `scale = min(1, dead / k_aux)` (AuxK, arXiv 2406.04093).
//! - Matryoshka BatchTopK: BatchTopK codes, one reconstruction loss per nested prefix of the
//!   latents (see [`matryoshka_loss_grad`]).
//! - Switch: a router picks one block of latents per sample, TopK within it, codes scaled by
//!   the router's probability, plus a load-balancing term (see [`switch_loss_grad`]).

mod certified;
mod collective;
mod format;
mod gated;
mod grads;
mod jumprelu;
mod matryoshka;
mod mlp;
mod model;
mod params;
mod relu;
pub mod saelens;
mod sharded;
pub mod sparsify;
mod switch;
mod topk;

pub use certified::{CertifiedStats, EncoderPrecision};
pub(crate) use collective::kth_largest_local;
pub use collective::{Collective, LatentShard, SingleProcess, StepStats};
pub use format::{detect, hook_layer, layer_of, load, save, SaeFormat};
pub use gated::{gated_loss_grad, Magnitude};
pub use grads::{LossParts, Workspace};
pub use jumprelu::jumprelu_loss_grad;
pub use matryoshka::matryoshka_loss_grad;
pub use mlp::mlp_loss_grad;
pub(crate) use model::check_experts;
pub use model::{Activation, Codes, Encoder, EncoderInit, HiddenLayer, Router, Sae};
pub use params::{Grads, ParamId};
pub use relu::relu_loss_grad;
pub use sharded::{keep_global_top, sharded_topk_loss_grad};
pub use switch::switch_loss_grad;
pub use topk::{sparse_loss_grad, topk_loss_grad, AuxK, Selection};

#[cfg(test)]
mod gradcheck;
