//! A real image classifier: an MLP trained natively on Fashion-MNIST, its penultimate
//! activations written to activation stores in the run folder ([`super::activations`]), a TopK
//! SAE streamed from the training store, and the SAE's features measured against the network's
//! own neurons and random directions of the same activations.
//!
//! Class purity (the share of a feature's top images in their most common class) is circular on
//! a network trained on those very classes, so it is reported only beside sparse probing
//! (SAEBench's): for each class-against-the-rest task, the `k` features whose means differ most
//! between the two sides (training rows) feed a logistic regression, scored by balanced accuracy
//! on the held-out rows; `k = 1, 2, 5`.

use super::activations::{self, StoredSplit};
use super::identifiability::nets::{accuracy, train_net, NetSettings};
use super::identifiability::score::{rms_scale, train_topk, unit_rms};
use super::{Report, Table};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use serde_json::json;
use sparsecode::classify::Targets;
use sparsecode::data::clusters::unit_vectors;
use sparsecode::eval::{balanced_accuracy, top_mean_difference, BalancedLogistic};
use sparsecode::linalg::matmul;
use sparsecode::{Error, Matrix, Parallelism, Result};
use std::path::Path;

/// The classes of Fashion-MNIST.
pub const CLASSES: [&str; 10] = [
    "T-shirt/top",
    "trouser",
    "pullover",
    "dress",
    "coat",
    "sandal",
    "shirt",
    "sneaker",
    "bag",
    "ankle boot",
];

/// Parameters of the experiment.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FashionParams {
    /// Training images used (at most 60,000).
    pub train_samples: usize,
    /// Width of the penultimate layer.
    pub width: usize,
    /// The classifier's training.
    pub net: NetSettings,
    /// SAE latents.
    pub latents: usize,
    /// Active latents of the TopK SAE.
    pub k: usize,
    /// Steps of the SAE.
    pub sae_steps: u64,
    /// Features per probe.
    pub probe_ks: Vec<usize>,
    /// Top images per feature for class purity.
    pub top: usize,
    /// Features sampled for image intrusion.
    pub intrusion_features: usize,
    /// SAE latents shown on the dashboard (spread over firing frequency).
    pub dashboard_features: usize,
    /// Seed.
    pub seed: u64,
}

impl FashionParams {
    /// Minutes on 2 cores.
    pub fn quick() -> Self {
        FashionParams {
            train_samples: 60_000,
            width: 128,
            net: NetSettings {
                hidden: vec![256],
                steps: 4000,
                batch: 256,
                lr: 2e-3,
                temperature: 1.0,
            },
            latents: 512,
            k: 16,
            sae_steps: 3000,
            probe_ks: vec![1, 2, 5],
            top: 20,
            intrusion_features: 200,
            dashboard_features: 32,
            seed: 0,
        }
    }

    /// Longer training of both networks.
    pub fn full() -> Self {
        let mut p = Self::quick();
        p.net.steps = 20_000;
        p.sae_steps = 10_000;
        p.latents = 1024;
        p
    }
}

/// The four IDX files of Fashion-MNIST in `dir`: `(x_train, y_train, x_test, y_test)`.
pub fn load(dir: &Path) -> Result<(Matrix, Vec<usize>, Matrix, Vec<usize>)> {
    let f = |name: &str| dir.join(name);
    let x_train = crate::idx::read_images(&f("train-images-idx3-ubyte.gz"))?;
    let y_train = crate::idx::read_labels(&f("train-labels-idx1-ubyte.gz"))?;
    let x_test = crate::idx::read_images(&f("t10k-images-idx3-ubyte.gz"))?;
    let y_test = crate::idx::read_labels(&f("t10k-labels-idx1-ubyte.gz"))?;
    for (x, y, what) in [(&x_train, &y_train, "train"), (&x_test, &y_test, "t10k")] {
        if x.rows() != y.len() || y.iter().any(|c| *c >= CLASSES.len()) {
            return Err(Error::format(
                dir,
                format!(
                    "{what}: {} images but {} labels, or a label outside 0..10",
                    x.rows(),
                    y.len()
                ),
            ));
        }
    }
    Ok((x_train, y_train, x_test, y_test))
}

/// Probing and purity of one set of features.
#[derive(Clone, Debug, Serialize)]
pub struct FeatureScores {
    /// "SAE latents", "neurons" or "random directions".
    pub features: String,
    /// How many.
    pub count: usize,
    /// Mean balanced accuracy over the 10 tasks, per probe size (`probe_ks` order).
    pub probing: Vec<f64>,
    /// Mean class purity of the live features' top images.
    pub purity: f64,
    /// Image intrusion: fraction of intruders found by pixel-space cosine (chance 1/6).
    pub intrusion_pixels: f64,
    /// Image intrusion by cosine of the network's penultimate activations.
    pub intrusion_features: f64,
    /// Intrusion tasks built (features with a valid intruder, of at most `intrusion_features`).
    pub intrusion_tasks: usize,
}

/// The experiment's numbers.
#[derive(Clone, Debug, Serialize)]
pub struct FashionResults {
    /// Held-out accuracy of the classifier.
    pub accuracy: f64,
    /// SAE held-out explained variance of the activations.
    pub sae_explained_variance: f64,
    /// One entry per feature set.
    pub features: Vec<FeatureScores>,
    /// The dashboard of SAE latents: `(page, [(file, png)])` (not in the JSON).
    #[serde(skip)]
    pub dashboard: (String, Vec<(String, Vec<u8>)>),
}

/// Trains the classifier, stores its activations under `run_dir`, trains the SAE on them, then
/// probes every feature set.
pub fn run(
    dir: &Path,
    run_dir: &Path,
    p: &FashionParams,
    par: Parallelism,
) -> Result<FashionResults> {
    let (x_train, y_train, x_test, y_test) = load(dir)?;
    let n = p.train_samples.clamp(1, x_train.rows());
    let (x_train, y_train) = (x_train.slice_rows(0, n), &y_train[..n]);
    let net = train_net(
        &x_train,
        Targets::Labels(y_train),
        (p.width, CLASSES.len(), false),
        &p.net,
        p.seed,
        par,
    )?
    .trained;
    let acc = accuracy(&net, &x_test, &y_test, par);
    let (raw_train, raw_test) = (
        net.features(&x_train, false, par),
        net.features(&x_test, false, par),
    );
    let meta = json!({"experiment": "fashion-mnist", "model_name": "fashion-mnist MLP", "hook_name": "penultimate", "seed": p.seed});
    let stored = StoredSplit::write(run_dir, "trained", (&raw_train, &raw_test), &meta)?;
    let scale = rms_scale(&raw_train);
    let sae = train_topk(
        &stored.train,
        scale,
        p.latents,
        p.k,
        p.sae_steps,
        p.seed,
        par,
    )?;
    let ev = 1.0 - sparsecode::eval::evaluate_sae(&sae, &raw_test, par).fvu;
    let (h_train, h_test) = unit_rms(&raw_train, &raw_test);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(p.seed ^ 0x4a4d);
    let dirs = unit_vectors(p.latents, p.width, &mut rng);
    let project = |h: &Matrix| {
        let mut out = Matrix::zeros(h.rows(), dirs.rows());
        matmul(out.as_mut_slice(), h.view(), dirs.view().t(), 0.0, par);
        out
    };
    let sets = [
        (
            "SAE latents",
            sae.encode_dense(&raw_train, par),
            sae.encode_dense(&raw_test, par),
        ),
        ("neurons", h_train.clone(), h_test.clone()),
        ("random directions", project(&h_train), project(&h_test)),
    ];
    let mut features = Vec::new();
    for (i, (name, tr, te)) in sets.iter().enumerate() {
        let tasks = intrusion_tasks(te, p.intrusion_features, p.seed ^ i as u64);
        features.push(FeatureScores {
            features: name.to_string(),
            count: tr.cols(),
            probing: p
                .probe_ks
                .iter()
                .map(|&k| mean_probe(tr, y_train, te, &y_test, k))
                .collect(),
            purity: purity(te, &y_test, p.top),
            intrusion_pixels: intrusion_score(&tasks, &x_test),
            intrusion_features: intrusion_score(&tasks, &h_test),
            intrusion_tasks: tasks.len(),
        });
    }
    let dashboard = dashboard(&sets[0].2, &x_test, &y_test, p.dashboard_features)?;
    Ok(FashionResults {
        accuracy: acc,
        sae_explained_variance: ev,
        features,
        dashboard,
    })
}

/// Mean over the class-against-the-rest tasks of the held-out balanced accuracy of a logistic
/// regression on the `k` features whose means differ most between the sides.
fn mean_probe(tr: &Matrix, y_tr: &[usize], te: &Matrix, y_te: &[usize], k: usize) -> f64 {
    let tasks: Vec<f64> = (0..CLASSES.len())
        .map(|c| {
            let pos_tr: Vec<bool> = y_tr.iter().map(|y| *y == c).collect();
            let pos_te: Vec<bool> = y_te.iter().map(|y| *y == c).collect();
            let chosen = top_mean_difference(tr, &pos_tr, k);
            let (xa, xb) = (tr.select_columns(&chosen), te.select_columns(&chosen));
            let said: Vec<bool> = BalancedLogistic::fit(&xa, &pos_tr)
                .decision(&xb)
                .iter()
                .map(|v| *v > 0.0)
                .collect();
            balanced_accuracy(&said, &pos_te)
        })
        .collect();
    tasks.iter().sum::<f64>() / tasks.len() as f64
}

/// Mean over the features that fire on some held-out row of the share of their `top` highest
/// rows that fall in those rows' most common class.
fn purity(x: &Matrix, labels: &[usize], top: usize) -> f64 {
    let mut scores = Vec::new();
    for j in 0..x.cols() {
        let mut rows: Vec<usize> = (0..x.rows()).filter(|r| x.get(*r, j) > 0.0).collect();
        if rows.is_empty() {
            continue;
        }
        rows.sort_by(|a, b| x.get(*b, j).total_cmp(&x.get(*a, j)).then(a.cmp(b)));
        rows.truncate(top);
        let mut counts = [0usize; CLASSES.len()];
        rows.iter().for_each(|r| counts[labels[*r]] += 1);
        let most = counts.iter().max().copied().unwrap_or(0);
        scores.push(most as f64 / rows.len() as f64);
    }
    scores.iter().sum::<f64>() / scores.len().max(1) as f64
}

/// The dashboard of up to `count` SAE latents spread over firing frequency (among those firing
/// on at least 20 held-out images): a page and a PNG strip per feature; the class histogram
/// counts the top activations where the feature fires.
fn dashboard(
    acts: &Matrix,
    x: &Matrix,
    labels: &[usize],
    count: usize,
) -> Result<(String, Vec<(String, Vec<u8>)>)> {
    use crate::report::image_features::{
        feature_rows, page, tiles_png, FeaturePanel, HISTOGRAM_TOP,
    };
    let freq = |j: usize| (0..acts.rows()).filter(|r| acts.get(*r, j) > 0.0).count();
    // Features that fire on at least two strips' worth of images, so both rows mean something.
    let mut live: Vec<(usize, usize)> = (0..acts.cols())
        .map(|j| (freq(j), j))
        .filter(|f| f.0 >= 2 * crate::report::image_features::TILES)
        .collect();
    live.sort();
    let step = (live.len() as f64 / count.max(1) as f64).max(1.0);
    let chosen: Vec<(usize, usize)> = (0..count.min(live.len()))
        .map(|i| live[((i as f64 * step) as usize).min(live.len() - 1)])
        .collect();
    let side = (x.cols() as f64).sqrt() as usize;
    let (mut panels, mut files) = (Vec::new(), Vec::new());
    for (fired, j) in chosen {
        let Some((top, quantiles)) = feature_rows(acts, j) else {
            continue;
        };
        let png = format!("features/feature-{j:05}.png");
        files.push((png.clone(), tiles_png(x, &[top, quantiles], side, 2)?));
        let mut rows: Vec<usize> = (0..acts.rows()).collect();
        rows.sort_by(|a, b| acts.get(*b, j).total_cmp(&acts.get(*a, j)).then(a.cmp(b)));
        let mut counts = [0usize; CLASSES.len()];
        rows.iter()
            .take(HISTOGRAM_TOP)
            .filter(|r| acts.get(**r, j) > 0.0)
            .for_each(|r| counts[labels[*r]] += 1);
        panels.push(FeaturePanel {
            index: j,
            frequency: fired as f64 / acts.rows().max(1) as f64,
            png,
            histogram: CLASSES
                .iter()
                .zip(counts)
                .map(|(c, n)| (c.to_string(), n))
                .collect(),
        });
    }
    Ok((
        page(
            "Fashion-MNIST: TopK SAE latents on the classifier's penultimate layer",
            &panels,
        ),
        files,
    ))
}

/// Image intrusion tasks on held-out activations `a` (`[rows, features]`): for up to `count`
/// sampled features, the 5 highest rows and one intruder, the highest row of another sampled
/// feature that sits at or below this feature's median.
fn intrusion_tasks(a: &Matrix, count: usize, seed: u64) -> Vec<([usize; 5], usize)> {
    use rand::seq::SliceRandom;
    use rand::Rng;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut picked: Vec<usize> = (0..a.cols()).collect();
    picked.shuffle(&mut rng);
    picked.truncate(count);
    let column = |j: usize| -> Vec<f32> { (0..a.rows()).map(|r| a.get(r, j)).collect() };
    let top5 = |col: &[f32]| -> [usize; 5] {
        let mut order: Vec<usize> = (0..col.len()).collect();
        order.sort_by(|x, y| col[*y].total_cmp(&col[*x]).then(x.cmp(y)));
        [order[0], order[1], order[2], order[3], order[4]]
    };
    let tops: Vec<[usize; 5]> = picked.iter().map(|&j| top5(&column(j))).collect();
    let mut tasks = Vec::new();
    for (i, &j) in picked.iter().enumerate() {
        let col = column(j);
        if col[tops[i][4]] <= 0.0 || picked.len() < 2 {
            continue; // fewer than 5 rows where the feature fires
        }
        let mut sorted = col.clone();
        let mid = sorted.len() / 2;
        sorted.select_nth_unstable_by(mid, f32::total_cmp);
        let median = sorted[mid];
        let intruder = (0..8)
            .map(|_| rng.random_range(0..picked.len()))
            .filter(|&o| o != i)
            .map(|o| tops[o][0])
            .find(|&r| col[r] <= median && !tops[i].contains(&r));
        if let Some(r) = intruder {
            tasks.push((tops[i], r));
        }
    }
    tasks
}

/// Fraction of tasks whose intruder has the lowest mean cosine to the rest in `space`.
fn intrusion_score(tasks: &[([usize; 5], usize)], space: &Matrix) -> f64 {
    let found = tasks
        .iter()
        .filter(|(members, intruder)| {
            let emb: Vec<Vec<f32>> = members
                .iter()
                .chain(std::iter::once(intruder))
                .map(|&r| space.row(r).to_vec())
                .collect();
            crate::interp::judge(&emb).0 == 5
        })
        .count();
    found as f64 / tasks.len().max(1) as f64
}

/// The classifier's accuracy, then one row per feature set.
pub fn report(p: &FashionParams, r: &FashionResults) -> Report {
    let mut header = vec!["features".to_string(), "count".to_string()];
    header.extend(p.probe_ks.iter().map(|k| format!("sparse probing k = {k}")));
    header.push(format!("class purity of top {}", p.top));
    header.push("image intrusion (pixels)".to_string());
    header.push("image intrusion (activations)".to_string());
    let refs: Vec<&str> = header.iter().map(String::as_str).collect();
    let mut t = Table::new(
        "Sparse probing (balanced accuracy, 10 one-vs-rest tasks) and class purity",
        &refs,
    );
    for f in &r.features {
        let mut row = vec![f.features.clone(), f.count.to_string()];
        row.extend(f.probing.iter().map(|v| format!("{v:.3}")));
        row.push(format!("{:.3}", f.purity));
        row.push(format!("{:.3}", f.intrusion_pixels));
        row.push(format!("{:.3}", f.intrusion_features));
        t.push(row);
    }
    let summary = format!(
        "Fashion-MNIST ({} training images, 10,000 held out): a tanh MLP (hidden {:?}, penultimate width {}) trained natively for {} steps reaches held-out accuracy {:.3}. A TopK SAE ({} latents, k = {}, {} steps) on its penultimate activations explains {:.3} of their held-out variance. Its latents, the {} neurons and {} random directions are probed alike.",
        p.train_samples, p.net.hidden, p.width, p.net.steps, r.accuracy, p.latents, p.k, p.sae_steps,
        r.sae_explained_variance, p.width, p.latents,
    );
    Report {
        name: "fashion-mnist".into(),
        summary,
        tables: vec![t],
        notes: vec![
            "Class purity is circular here (the network was trained on these classes): read it beside sparse probing, not alone.".into(),
            "Image intrusion: per feature its 5 top held-out images and one intruder (another feature's top image, at or below this feature's median); the image with the lowest mean cosine to the other five is guessed; chance 1/6.".into(),
            activations::note("trained"),
        ],
        json: serde_json::to_value(r).unwrap_or_default(),
        plots: Vec::new(),
        images: std::iter::once(("features.html".to_string(), r.dashboard.0.clone().into_bytes()))
            .chain(r.dashboard.1.iter().cloned())
            .collect(),
    }
}
