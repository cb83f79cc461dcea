//! How one representation of planted sparse latents is scored: how linear it is in the latents,
//! both ways, and how well an SAE and dictionary learning lift the latents back out of it.

use crate::experiment::sae_runs::Recipe;
use serde::Serialize;
use sparsecode::coding::{fista, learn_dictionary, DictLearnParams, FistaParams};
use sparsecode::data::RowSource;
use sparsecode::eval::{code_mcc, linear_r2, HUNGARIAN_MAX};
use sparsecode::sae::Sae;
use sparsecode::train::ArchConfig;
use sparsecode::{Matrix, Parallelism, Result};

/// The scores of one representation (`None`: not measured for this one).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct ReprScore {
    /// Held-out R^2 of the representation from the latents (`h ~ A z + c`; defined for any
    /// width, `M < N` included).
    pub linear_r2: f64,
    /// Held-out R^2 of the latents from the representation (`z ~ B h + d`; can be 1 only when
    /// `M >= N`).
    pub inverse_r2: f64,
    /// [`Self::linear_r2`] of the unit-normalised features `h / ||h||`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_linear_r2: Option<f64>,
    /// [`Self::inverse_r2`] of the unit-normalised features.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub unit_inverse_r2: Option<f64>,
    /// Code MCC of a TopK SAE (N latents, k = K) trained on the representation.
    pub code_mcc: f64,
    /// Code MCC of dictionary learning (N + 1 atoms: one absorbs the offset `c`) + FISTA.
    pub dict_code_mcc: f64,
    /// Held-out accuracy of the classifier (networks trained by cross-entropy).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub accuracy: Option<f64>,
}

/// What the sparse coders on a representation are run with.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
pub struct CoderSettings {
    /// Steps of the TopK SAE.
    pub sae_steps: u64,
    /// Training rows given to dictionary learning (its cost grows with them).
    pub dl_rows: usize,
    /// L1 weight of dictionary learning and of its final FISTA codes (rows scaled to unit RMS).
    pub dl_lambda: f32,
}

/// A representation's training and held-out rows.
pub struct Repr<'a> {
    /// Training rows.
    pub train: &'a Matrix,
    /// Held-out rows.
    pub test: &'a Matrix,
}

/// Scores `rep` against the latents `z` (K active of N), training the coders with `seed`.
pub fn score(
    rep: Repr<'_>,
    z: (&Matrix, &Matrix),
    k: usize,
    s: &CoderSettings,
    seed: u64,
    par: Parallelism,
) -> Result<ReprScore> {
    let (train, test) = unit_rms(rep.train, rep.test);
    let sae = train_topk(&train, 1.0, z.1.cols(), k, s.sae_steps, seed, par)?;
    let sae_codes = sae.encode_dense(&test, par);
    score_scaled(
        Repr {
            train: &train,
            test: &test,
        },
        &sae_codes,
        z,
        s,
        seed,
        par,
    )
}

/// [`score`] of a representation also kept as an activation store: the SAE streams its
/// training rows from `train_store` (scaled on the way in as [`unit_rms`] scales, the scale
/// folded into the SAE), the rest reads `rep`, the same rows in memory.
pub fn score_stored(
    rep: Repr<'_>,
    train_store: &dyn RowSource,
    z: (&Matrix, &Matrix),
    k: usize,
    s: &CoderSettings,
    seed: u64,
    par: Parallelism,
) -> Result<ReprScore> {
    let scale = rms_scale(rep.train);
    let sae = train_topk(train_store, scale, z.1.cols(), k, s.sae_steps, seed, par)?;
    let sae_codes = sae.encode_dense(rep.test, par);
    let (train, test) = unit_rms(rep.train, rep.test);
    score_scaled(
        Repr {
            train: &train,
            test: &test,
        },
        &sae_codes,
        z,
        s,
        seed,
        par,
    )
}

/// Linear R^2 both ways and dictionary learning on the unit-RMS representation, beside the
/// SAE's held-out codes.
fn score_scaled(
    rep: Repr<'_>,
    sae_codes: &Matrix,
    (z_train, z_test): (&Matrix, &Matrix),
    s: &CoderSettings,
    seed: u64,
    par: Parallelism,
) -> Result<ReprScore> {
    let (train, test) = (rep.train, rep.test);
    Ok(ReprScore {
        linear_r2: linear_r2(z_train, train, z_test, test)?,
        inverse_r2: linear_r2(train, z_train, test, z_test)?,
        code_mcc: code_mcc(z_test, sae_codes, HUNGARIAN_MAX, par)?.0,
        dict_code_mcc: dictionary_mcc(train, test, z_test, s, seed, par)?,
        ..ReprScore::default()
    })
}

/// Adds the unit-normalised features' R^2 both ways to `score`.
pub fn with_unit_features(
    mut score: ReprScore,
    rep: Repr<'_>,
    z: (&Matrix, &Matrix),
) -> Result<ReprScore> {
    let (mut train, mut test) = (rep.train.clone(), rep.test.clone());
    let w = train.cols();
    sparsecode::linalg::normalize_rows(train.as_mut_slice(), w);
    sparsecode::linalg::normalize_rows(test.as_mut_slice(), w);
    score.unit_linear_r2 = Some(linear_r2(z.0, &train, z.1, &test)?);
    score.unit_inverse_r2 = Some(linear_r2(&train, z.0, &test, z.1)?);
    Ok(score)
}

/// Both splits divided by the training rows' RMS norm (one scalar: R^2 and MCC do not change;
/// the coders' step sizes and L1 weights mean the same on every representation).
pub(crate) fn unit_rms(train: &Matrix, test: &Matrix) -> (Matrix, Matrix) {
    let s = rms_scale(train);
    let scale = |m: &Matrix| {
        let mut m = m.clone();
        m.as_mut_slice().iter_mut().for_each(|v| *v *= s);
        m
    };
    (scale(train), scale(test))
}

/// `1 / sqrt(mean ||row||^2)` of `train` (1 when every row is zero).
pub(crate) fn rms_scale(train: &Matrix) -> f32 {
    let ss: f64 = train.as_slice().iter().map(|v| (*v as f64).powi(2)).sum();
    let rms = (ss / train.rows().max(1) as f64).sqrt();
    if rms > 0.0 {
        (1.0 / rms) as f32
    } else {
        1.0
    }
}

/// A TopK SAE (AuxK on) of `latents` latents trained on `rows` (multiplied by `input_scale` on
/// the way in; the SAE reads them unscaled) for `steps` steps.
pub fn train_topk(
    rows: &dyn RowSource,
    input_scale: f32,
    latents: usize,
    k: usize,
    steps: u64,
    seed: u64,
    par: Parallelism,
) -> Result<Sae> {
    let recipe = Recipe {
        latents,
        steps,
        batch_size: 256,
        lr: 2e-3,
    };
    let arch = ArchConfig::TopK {
        k: k.clamp(1, latents),
        aux_k: (rows.cols() / 2).clamp(1, latents),
        aux_coef: 1.0 / 32.0,
    };
    recipe.train_on(arch, rows, input_scale, seed, par)
}

fn dictionary_mcc(
    train: &Matrix,
    test: &Matrix,
    z_test: &Matrix,
    s: &CoderSettings,
    seed: u64,
    par: Parallelism,
) -> Result<f64> {
    let rows = train.rows().min(s.dl_rows.max(1));
    let p = DictLearnParams {
        atoms: z_test.cols() + 1,
        lambda: s.dl_lambda,
        nonneg: true,
        max_iter: 200,
        tol: 1e-4,
        seed,
        restarts: 1,
        polish: 5,
        ..DictLearnParams::default()
    };
    let learned = learn_dictionary(&train.slice_rows(0, rows), &p, par)?;
    let fp = FistaParams {
        lambda: s.dl_lambda,
        nonneg: true,
        ..FistaParams::default()
    };
    let codes = fista(test, &learned.dictionary, None, &fp, par)?.codes;
    Ok(code_mcc(z_test, &codes, HUNGARIAN_MAX, par)?.0)
}
