//! Where the chain breaks (the seed's break conditions), each a variation of one baseline at
//! width `M`: too few classes, label noise, a planted shortcut that predicts the training
//! label, short training, dense latents (K towards M), and, the other way, a softer posterior
//! (a smaller prototype contrast: classes overlap more, the loss weighs every latent's value).
//! Circular latents are their own part ([`super::circular`]).

use super::chain::{run_variation, ChainParams, ChainResult, Variation};
use sparsecode::data::prototypes::PrototypeConfig;
use sparsecode::{Parallelism, Result};

/// The variations, baseline first.
pub fn variations(p: &ChainParams, width: usize) -> Vec<Variation> {
    let base = Variation {
        label: "baseline".into(),
        process: p.process.clone(),
        width,
        label_noise: 0.0,
        shortcut_dims: 0,
        steps: p.net.steps,
        controls: false,
    };
    let few = 3.min(p.process.classes);
    let dense_k = (width / 2).clamp(p.process.k, p.process.latents - 1);
    vec![
        base.clone(),
        Variation {
            label: format!("few classes (C = {few})"),
            process: PrototypeConfig {
                classes: few,
                ..p.process.clone()
            },
            ..base.clone()
        },
        Variation {
            label: "label noise 50%".into(),
            label_noise: 0.5,
            ..base.clone()
        },
        Variation {
            label: "shortcut (8 label-coding inputs)".into(),
            shortcut_dims: 8,
            ..base.clone()
        },
        Variation {
            label: format!("short training ({} steps)", (p.net.steps / 50).max(1)),
            steps: (p.net.steps / 50).max(1),
            ..base.clone()
        },
        Variation {
            label: "soft posterior (contrast 5)".into(),
            process: PrototypeConfig {
                contrast: 5.0_f64.min(p.process.contrast),
                ..p.process.clone()
            },
            ..base.clone()
        },
        Variation {
            label: format!("dense latents (K = {dense_k})"),
            process: PrototypeConfig {
                k: dense_k,
                ..p.process.clone()
            },
            ..base
        },
    ]
}

/// Runs every variation at `width`.
pub fn run(p: &ChainParams, width: usize, seed: u64, par: Parallelism) -> Result<Vec<ChainResult>> {
    variations(p, width)
        .iter()
        .map(|v| run_variation(v, p, seed, par))
        .collect()
}
