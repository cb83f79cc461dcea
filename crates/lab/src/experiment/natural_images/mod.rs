//! Olshausen & Field on natural images (REFERENCE E10): sparse codes of whitened photograph
//! patches learn localised, oriented, band-pass atoms. Compared here: dictionary learning, a
//! TopK SAE and a ReLU SAE, complete and overcomplete, each atom judged by a fitted Gabor
//! ([`gabor`]).
//!
//! The data: each photograph in grey levels, halved in size (2 x 2 means: JPEG's 8-pixel block
//! grid becomes a 4-pixel one, which the whitening filter's roll-off then suppresses; without
//! it the grid, amplified by whitening, shows up as grid-shaped atoms), whitened
//! ([`crate::images::whiten`]), and cut into random square patches; held-out patches from
//! another seed measure reconstruction.

pub mod gabor;
mod report;

pub use report::report;

use crate::images::{downsample2, load_gray, sample_patches, whiten, Gray};
use gabor::GaborFit;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use sparsecode::coding::{
    fista, learn_dictionary, AtomUpdate, DictLearnParams, FistaParams, InnerCoder,
};
use sparsecode::eval::{evaluate, evaluate_sae};
use sparsecode::linalg::synthesize;
use sparsecode::train::{train, ArchKind, NoObserver, TrainRequest};
use sparsecode::{Error, Matrix, Parallelism, Result};
use std::path::PathBuf;

/// An R^2 at least this high counts an atom as Gabor-like.
pub const GABOR_R2: f64 = 0.8;

/// Parameters of the experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NaturalImagesParams {
    /// Patch side in pixels.
    pub patch: usize,
    /// Training patches.
    pub train_patches: usize,
    /// Held-out patches.
    pub test_patches: usize,
    /// Halve the photographs before whitening.
    pub downsample: bool,
    /// Roll-off frequency of the whitening filter, as a fraction of Nyquist.
    pub f0: f32,
    /// Atoms as multiples of the patch's pixels (1: complete).
    pub overcomplete: Vec<f64>,
    /// L1 weight of dictionary learning and of its held-out codes.
    pub lambda: f32,
    /// Passes of online dictionary learning over the training patches.
    pub dl_passes: usize,
    /// Mini-batch of online dictionary learning.
    pub dl_batch: usize,
    /// Active latents of the TopK SAE.
    pub k: usize,
    /// L1 coefficient of the ReLU SAE (on normalised inputs).
    pub l1: f32,
    /// Training steps of each SAE.
    pub sae_steps: u64,
    /// Seed of patches, initialisations and batches.
    pub seed: u64,
}

impl NaturalImagesParams {
    /// Minutes on 2 cores: 12 x 12 patches, complete dictionaries.
    pub fn quick() -> Self {
        NaturalImagesParams {
            patch: 12,
            train_patches: 20_000,
            test_patches: 4_000,
            downsample: true,
            f0: 0.8,
            overcomplete: vec![1.0],
            lambda: 0.4,
            dl_passes: 8,
            dl_batch: 256,
            k: 8,
            l1: 3.0,
            sae_steps: 3_000,
            seed: 0,
        }
    }

    /// The published size: 16 x 16 patches, complete to 4x overcomplete.
    pub fn full() -> Self {
        NaturalImagesParams {
            patch: 16,
            train_patches: 50_000,
            test_patches: 10_000,
            overcomplete: vec![1.0, 2.0, 4.0],
            dl_passes: 10,
            k: 12,
            sae_steps: 10_000,
            ..Self::quick()
        }
    }

    fn validate(&self) -> Result<()> {
        if self.patch < 4 {
            return Err(Error::param(
                "patch",
                format!("{} must be at least 4 pixels", self.patch),
            ));
        }
        if self.train_patches == 0 || self.test_patches == 0 {
            return Err(Error::param(
                "patches",
                "need training and held-out patches",
            ));
        }
        if self.overcomplete.is_empty()
            || self
                .overcomplete
                .iter()
                .any(|c| !(c.is_finite() && *c > 0.0))
        {
            return Err(Error::param(
                "overcomplete",
                "give one or more positive multiples of the patch's pixels",
            ));
        }
        let most = self.overcomplete.iter().fold(0.0f64, |m, c| m.max(*c));
        let atoms = (most * (self.patch * self.patch) as f64).round() as usize;
        if atoms > self.train_patches {
            return Err(Error::param(
                "overcomplete",
                format!(
                    "{atoms} atoms need at least as many training patches ({})",
                    self.train_patches
                ),
            ));
        }
        if self.k == 0 || self.dl_passes == 0 || self.dl_batch == 0 || self.sae_steps == 0 {
            return Err(Error::param(
                "k, dl_passes, dl_batch, sae_steps",
                "must be at least 1",
            ));
        }
        Ok(())
    }
}

/// What one method learned, and how its atoms look.
#[derive(Clone, Debug, Serialize)]
pub struct MethodResult {
    /// "dictionary learning", "TopK SAE" or "ReLU SAE".
    pub method: String,
    /// Atoms learned.
    pub atoms: usize,
    /// Held-out fraction of variance unexplained.
    pub fvu: f64,
    /// Held-out mean active codes per patch.
    pub l0: f64,
    /// Fraction of atoms never used on the held-out patches.
    pub dead_fraction: f64,
    /// The Gabor fit of every atom.
    pub fits: Vec<GaborFit>,
    /// The atoms, `[atoms, patch * patch]`.
    #[serde(skip)]
    pub dictionary: Matrix,
}

impl MethodResult {
    /// Fraction of atoms with a Gabor fit of `R^2 >= GABOR_R2`.
    pub fn gabor_fraction(&self) -> f64 {
        let good = self.fits.iter().filter(|f| f.r2 >= GABOR_R2).count();
        good as f64 / self.fits.len().max(1) as f64
    }
}

/// The experiment's numbers.
#[derive(Clone, Debug, Serialize)]
pub struct NaturalImagesResults {
    /// The photographs used, with their sizes after halving.
    pub images: Vec<(String, usize, usize)>,
    /// One entry per method and size.
    pub methods: Vec<MethodResult>,
}

/// Whitened photographs, ready for patches.
pub fn prepare(paths: &[PathBuf], p: &NaturalImagesParams) -> Result<Vec<Gray>> {
    if paths.is_empty() {
        return Err(Error::param("images", "no photograph to learn from"));
    }
    paths
        .iter()
        .map(|path| {
            let g = load_gray(path)?;
            let g = if p.downsample { downsample2(&g) } else { g };
            if g.width < p.patch || g.height < p.patch {
                return Err(Error::param(
                    "patch",
                    format!(
                        "{0} x {0} patches do not fit in {1} ({2} x {3} pixels{4})",
                        p.patch,
                        path.display(),
                        g.width,
                        g.height,
                        if p.downsample { " after halving" } else { "" }
                    ),
                ));
            }
            whiten(&g, p.f0)
        })
        .collect()
}

/// Runs every method at every size on patches of the photographs at `paths`.
pub fn run(
    paths: &[PathBuf],
    p: &NaturalImagesParams,
    par: Parallelism,
    progress: &mut dyn FnMut(f64),
) -> Result<NaturalImagesResults> {
    p.validate()?;
    let images = prepare(paths, p)?;
    let train_x = sample_patches(&images, p.patch, p.train_patches, p.seed)?;
    let test_x = sample_patches(&images, p.patch, p.test_patches, p.seed ^ 0x7e57)?;
    let pixels = p.patch * p.patch;
    let mut methods = Vec::new();
    let total = (3 * p.overcomplete.len()) as f64;
    for c in &p.overcomplete {
        let atoms = (c * pixels as f64).round().max(1.0) as usize;
        for method in ["dictionary learning", "TopK SAE", "ReLU SAE"] {
            let (dictionary, fvu, l0, dead) = match method {
                "dictionary learning" => learn_dl(&train_x, &test_x, atoms, p, par)?,
                "TopK SAE" => learn_sae(&train_x, &test_x, atoms, ArchKind::Topk, p, par)?,
                _ => learn_sae(&train_x, &test_x, atoms, ArchKind::Relu, p, par)?,
            };
            let fits = par.install(|| {
                dictionary
                    .as_slice()
                    .par_chunks(pixels)
                    .map(|a| gabor::fit(a, p.patch))
                    .collect()
            });
            methods.push(MethodResult {
                method: method.to_string(),
                atoms,
                fvu,
                l0,
                dead_fraction: dead,
                fits,
                dictionary,
            });
            progress(methods.len() as f64 / total);
        }
    }
    let names = paths
        .iter()
        .zip(&images)
        .map(|(path, g)| (path.display().to_string(), g.width, g.height))
        .collect();
    Ok(NaturalImagesResults {
        images: names,
        methods,
    })
}

type Learned = (Matrix, f64, f64, f64);

fn learn_dl(
    train_x: &Matrix,
    test_x: &Matrix,
    atoms: usize,
    p: &NaturalImagesParams,
    par: Parallelism,
) -> Result<Learned> {
    let params = DictLearnParams {
        atoms,
        lambda: p.lambda,
        nonneg: false,
        max_iter: p.dl_passes,
        tol: 1e-5,
        seed: p.seed,
        restarts: 1,
        coder: InnerCoder::Fista,
        update: AtomUpdate::Bcd,
        batch_size: Some(p.dl_batch.min(train_x.rows())),
        polish: 0,
        swaps: 0,
    };
    let d = learn_dictionary(train_x, &params, par)?.dictionary;
    let coder = FistaParams {
        lambda: p.lambda,
        nonneg: false,
        max_iter: 1000,
        tol: 1e-4,
        accelerated: true,
    };
    let codes = fista(test_x, &d, None, &coder, par)?.codes;
    let recon = synthesize(&codes, &d, None, par);
    let m = evaluate(test_x, &recon, &codes);
    Ok((d, m.fvu, m.l0, m.dead_fraction))
}

fn learn_sae(
    train_x: &Matrix,
    test_x: &Matrix,
    atoms: usize,
    arch: ArchKind,
    p: &NaturalImagesParams,
    par: Parallelism,
) -> Result<Learned> {
    let mut req = TrainRequest::new(arch, atoms);
    match arch {
        ArchKind::Topk => req.k = Some(p.k),
        _ => req.l1 = Some(p.l1),
    }
    req.steps = Some(p.sae_steps);
    req.batch_size = Some(1024.min(train_x.rows()));
    req.seed = p.seed;
    req.threads = par.count();
    let cfg = req.resolve(train_x)?;
    let sae = train(&cfg, train_x, None, None, &mut NoObserver)?.model();
    let m = evaluate_sae(&sae, test_x, par);
    Ok((sae.w_dec.clone(), m.fvu, m.l0, m.dead_fraction))
}
