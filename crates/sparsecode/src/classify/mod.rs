//! A classifier trained by cross-entropy, for the identifiability step of the seed's argument:
//! an MLP `x -> h` (the representation, width `M`) and a linear head over `C` classes.
//!
//! ```text
//! a_0 = x,   a_l = act(a_{l-1} W_l^T + b_l)   (l = 1..L-1),   h = a_{L-1} W_L^T + b_L
//! normalised (Reizinger et al. 2024):  f = h / ||h||,  u_c = v_c / ||v_c||,  logit_c = e^t <f, u_c>
//! plain:                               logit_c = <h, v_c> + b_c
//! loss = mean_i [ logsumexp_c logit_ic - logit_{i, y_i} ]
//! regression control (plain head):    loss = mean_{i,c} (logit_ic - y_ic)^2
//! ```
//!
//! Backward, with `g = d loss / d logits = (softmax - onehot) / B` (regression:
//! `2 (logit - y) / (B C)`):
//! normalised: `dt = sum g * logit`, `df_i = e^t sum_c g_ic u_c`, `du_c = e^t sum_i g_ic f_i`, and
//! through a normalisation `y = v / ||v||`: `dv = (dy - y <y, dy>) / ||v||`; plain: `dh = g V`,
//! `dV = g^T h`, `db = sum_i g_i`; then the layers: `dW_l = dz_l^T a_{l-1}`, `db_l = sum dz_l`,
//! `da_{l-1} = dz_l W_l`, `dz_l = da_l * act'(z_l)`. Written by hand (as the SAEs are) and checked
//! against finite differences in the tests.

mod fit;
mod network;

pub use fit::{fit, FitParams, Targets};
pub use network::{Act, Classifier, ClassifierShape, Forward};
