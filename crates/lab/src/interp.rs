//! Automated interpretability by word intrusion with embeddings (REFERENCE section 3): for a
//! feature, its top-5 activating contexts plus one intruder (a context where this feature is
//! low but another feature is high) are embedded; the item with the lowest mean cosine to the
//! others is predicted to be the intruder. Score = fraction of features whose intruder is found
//! (chance 1/6). DistRatio = mean distance member-intruder / mean distance member-member
//! (distance = 1 - cosine; > 1 when the members hang together). Both come with a bootstrap 95%
//! interval over features. The embedder is a parameter (MiniLM in the CLI).

use crate::report::activations::activations_at;
use crate::report::features::FeatureScan;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};
use serde::Serialize;
use sparsecode::data::tokens::TokenTable;
use sparsecode::data::RowSource;
use sparsecode::linalg::cosine;
use sparsecode::sae::Codes;
use sparsecode::{Error, Matrix, Result};

/// Members per task (plus one intruder).
pub const MEMBERS: usize = 5;

/// How tasks are built.
#[derive(Clone, Copy, Debug, Serialize)]
pub struct IntrusionConfig {
    /// Features scored per family (sampled among those with enough distinct contexts).
    pub features: usize,
    /// Tokens of left context in an item, the activating token included.
    pub window: usize,
    /// Seed of the feature and intruder sampling and of the bootstrap.
    pub seed: u64,
    /// Rows sampled to set each feature's "low" level (its median activation).
    pub median_rows: usize,
    /// Bootstrap resamples.
    pub bootstrap: usize,
}

impl Default for IntrusionConfig {
    fn default() -> Self {
        IntrusionConfig {
            features: 200,
            window: 12,
            seed: 0,
            median_rows: 2048,
            bootstrap: 2000,
        }
    }
}

/// One feature's task: five member rows and one intruder row.
#[derive(Clone, Debug, Serialize)]
pub struct Task {
    /// The feature.
    pub feature: usize,
    /// Its top rows, from distinct contexts.
    pub members: Vec<u32>,
    /// A row where it is at or below its median but another sampled feature peaks.
    pub intruder: u32,
}

/// The item text of a row: up to `window` tokens of its context ending at the row's token.
pub fn item_text(tokens: &TokenTable, row: usize, window: usize) -> String {
    let ctx = tokens.context_of(row);
    let lo = (row + 1).saturating_sub(window).max(ctx.start);
    (lo..=row).map(|i| tokens.text(i)).collect::<String>()
}

/// Top rows of a feature from distinct contexts and with distinct item texts, largest first
/// (repeated boilerplate would otherwise make five identical members and a trivial task).
fn distinct_top(scan: &FeatureScan, tokens: &TokenTable, f: usize, window: usize) -> Vec<u32> {
    let mut seen = Vec::new();
    let mut texts = Vec::new();
    let mut out = Vec::new();
    for &(_, r) in &scan.features[f].top {
        let c = r as usize / tokens.context;
        let text = item_text(tokens, r as usize, window);
        if !seen.contains(&c) && !texts.contains(&text) {
            seen.push(c);
            texts.push(text);
            out.push(r);
            if out.len() == MEMBERS {
                break;
            }
        }
    }
    out
}

/// Builds one task per sampled feature. `encode` gives the family's activations (for the
/// median level and the intruder check).
pub fn build_tasks(
    scan: &FeatureScan,
    tokens: &TokenTable,
    source: &dyn RowSource,
    encode: &(dyn Fn(&Matrix) -> Result<Codes> + Sync),
    cfg: &IntrusionConfig,
) -> Result<Vec<Task>> {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut eligible: Vec<(usize, Vec<u32>)> = (0..scan.features.len())
        .map(|f| (f, distinct_top(scan, tokens, f, cfg.window)))
        .filter(|(_, m)| m.len() == MEMBERS)
        .collect();
    if eligible.len() < 2 {
        return Err(Error::Empty {
            context: "word intrusion".into(),
            reason: format!(
                "{} features have {MEMBERS} activating contexts (at least 2 needed); scan more rows",
                eligible.len()
            ),
        });
    }
    eligible.shuffle(&mut rng);
    eligible.truncate(cfg.features);
    eligible.sort_by_key(|e| e.0);
    // Each feature's median level over a random sample of rows.
    let n_rows = source.rows();
    let sample: Vec<u32> = (0..cfg.median_rows.min(n_rows as usize))
        .map(|_| rng.random_range(0..n_rows) as u32)
        .collect();
    let x = crate::report::activations::read_rows(source, &sample)?;
    let codes = encode(&x)?;
    let dense = match codes {
        Codes::Dense(m) => m,
        Codes::Sparse(t) => t.to_dense(scan.features.len()),
    };
    let medians: Vec<f32> = eligible
        .iter()
        .map(|(f, _)| {
            let mut col: Vec<f32> = (0..dense.rows()).map(|r| dense.row(r)[*f]).collect();
            let mid = col.len() / 2;
            col.select_nth_unstable_by(mid, f32::total_cmp);
            col[mid]
        })
        .collect();
    // Intruder candidates: the top row of 8 other sampled features, checked on this feature.
    let candidates: Vec<Vec<u32>> = (0..eligible.len())
        .map(|i| {
            let mut c = Vec::new();
            for _ in 0..8 {
                let j = rng.random_range(0..eligible.len());
                if j != i {
                    c.push(eligible[j].1[0]);
                }
            }
            c
        })
        .collect();
    let pairs: Vec<(u32, u32)> = eligible
        .iter()
        .zip(&candidates)
        .flat_map(|((f, _), c)| c.iter().map(move |&r| (r, *f as u32)))
        .collect();
    let acts = activations_at(source, &pairs, encode)?;
    let mut tasks = Vec::new();
    for (((f, members), c), med) in eligible.into_iter().zip(&candidates).zip(&medians) {
        let member_ctx: Vec<usize> = members
            .iter()
            .map(|&r| r as usize / tokens.context)
            .collect();
        let member_text: Vec<String> = members
            .iter()
            .map(|&r| item_text(tokens, r as usize, cfg.window))
            .collect();
        let intruder = c.iter().copied().find(|&r| {
            acts[&(r, f as u32)] <= *med
                && !member_ctx.contains(&(r as usize / tokens.context))
                && !member_text.contains(&item_text(tokens, r as usize, cfg.window))
        });
        if let Some(intruder) = intruder {
            tasks.push(Task {
                feature: f,
                members,
                intruder,
            });
        }
    }
    Ok(tasks)
}

/// One scored task.
#[derive(Clone, Debug, Serialize)]
pub struct TaskScore {
    /// The feature.
    pub id: usize,
    /// 1 if the intruder was found, else 0.
    pub correct: f64,
    /// Mean member-intruder distance over mean member-member distance.
    pub dist_ratio: f64,
    /// The member texts.
    pub members: Vec<String>,
    /// The intruder text.
    pub intruder: String,
    /// Which item (0..=5; 5 is the intruder) was predicted.
    pub predicted: usize,
}

/// A family's result.
#[derive(Clone, Debug, Serialize)]
pub struct FamilyScore {
    /// Tasks scored.
    pub n: usize,
    /// Fraction of intruders found.
    pub accuracy: f64,
    /// Bootstrap 95% interval of the accuracy.
    pub accuracy_ci: (f64, f64),
    /// Median DistRatio over features (robust: near-identical members make single ratios huge).
    pub dist_ratio: f64,
    /// Bootstrap 95% interval of the median DistRatio.
    pub dist_ratio_ci: (f64, f64),
    /// Every task.
    pub features: Vec<TaskScore>,
}

/// Scores six embeddings (members first, intruder last): (predicted index, DistRatio).
pub fn judge(emb: &[Vec<f32>]) -> (usize, f64) {
    let n = emb.len();
    let mean_cos: Vec<f64> = (0..n)
        .map(|i| {
            (0..n)
                .filter(|&j| j != i)
                .map(|j| cosine(&emb[i], &emb[j]))
                .sum::<f64>()
                / (n - 1) as f64
        })
        .collect();
    let predicted = (0..n)
        .min_by(|&a, &b| mean_cos[a].total_cmp(&mean_cos[b]))
        .unwrap_or(0);
    let m = n - 1;
    let inter: f64 = (0..m).map(|i| 1.0 - cosine(&emb[i], &emb[m])).sum::<f64>() / m as f64;
    let mut intra = 0.0;
    let mut pairs = 0.0;
    for i in 0..m {
        for j in i + 1..m {
            intra += 1.0 - cosine(&emb[i], &emb[j]);
            pairs += 1.0;
        }
    }
    (predicted, inter / (intra / pairs).max(1e-9))
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    let n = s.len();
    if n % 2 == 1 {
        s[n / 2]
    } else {
        0.5 * (s[n / 2 - 1] + s[n / 2])
    }
}

/// Mean and bootstrap 95% percentile interval of `v`.
pub fn bootstrap_ci(v: &[f64], reps: usize, seed: u64) -> (f64, (f64, f64)) {
    bootstrap_stat(v, reps, seed, |v| crate::experiment::mean_sd(v).0)
}

/// `stat(v)` and the bootstrap 95% percentile interval of `stat`.
pub fn bootstrap_stat(
    v: &[f64],
    reps: usize,
    seed: u64,
    stat: fn(&[f64]) -> f64,
) -> (f64, (f64, f64)) {
    if v.is_empty() {
        return (f64::NAN, (f64::NAN, f64::NAN));
    }
    let value = stat(v);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut buf = vec![0.0; v.len()];
    let mut means: Vec<f64> = (0..reps.max(1))
        .map(|_| {
            buf.iter_mut()
                .for_each(|b| *b = v[rng.random_range(0..v.len())]);
            stat(&buf)
        })
        .collect();
    means.sort_by(f64::total_cmp);
    let q = |p: f64| means[((p * (means.len() - 1) as f64).round() as usize).min(means.len() - 1)];
    (value, (q(0.025), q(0.975)))
}

/// Embeds every task's items with `embed` and scores them.
pub fn score(
    tasks: &[Task],
    tokens: &TokenTable,
    cfg: &IntrusionConfig,
    embed: &mut dyn FnMut(&[String]) -> Result<Vec<Vec<f32>>>,
) -> Result<FamilyScore> {
    let texts: Vec<String> = tasks
        .iter()
        .flat_map(|t| {
            t.members
                .iter()
                .chain(std::iter::once(&t.intruder))
                .map(|&r| item_text(tokens, r as usize, cfg.window))
                .collect::<Vec<_>>()
        })
        .collect();
    let emb = embed(&texts)?;
    if emb.len() != texts.len() {
        return Err(Error::shape(
            "embedder output",
            format!("{} embeddings", texts.len()),
            format!("{}", emb.len()),
        ));
    }
    let per = MEMBERS + 1;
    let features: Vec<TaskScore> = tasks
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let (predicted, dist_ratio) = judge(&emb[i * per..(i + 1) * per]);
            TaskScore {
                id: t.feature,
                correct: if predicted == MEMBERS { 1.0 } else { 0.0 },
                dist_ratio,
                members: texts[i * per..i * per + MEMBERS].to_vec(),
                intruder: texts[i * per + MEMBERS].clone(),
                predicted,
            }
        })
        .collect();
    let acc: Vec<f64> = features.iter().map(|f| f.correct).collect();
    let dr: Vec<f64> = features.iter().map(|f| f.dist_ratio).collect();
    let (accuracy, accuracy_ci) = bootstrap_ci(&acc, cfg.bootstrap, cfg.seed);
    let (dist_ratio, dist_ratio_ci) = bootstrap_stat(&dr, cfg.bootstrap, cfg.seed + 1, median);
    Ok(FamilyScore {
        n: features.len(),
        accuracy,
        accuracy_ci,
        dist_ratio,
        dist_ratio_ci,
        features,
    })
}

/// `n` random unit directions in `d` dimensions (rows of an `[n, d]` matrix): the baseline
/// family that any feature family must beat.
pub fn random_directions(n: usize, d: usize, seed: u64) -> Result<Matrix> {
    use rand_distr::{Distribution, StandardNormal};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x5eed);
    let len = n.checked_mul(d).ok_or_else(|| {
        Error::param(
            "features",
            format!("{n} directions of {d} dimensions overflow"),
        )
    })?;
    let mut dirs: Vec<f32> = (0..len).map(|_| StandardNormal.sample(&mut rng)).collect();
    sparsecode::linalg::normalize_rows(&mut dirs, d);
    Matrix::from_vec(n, d, dirs)
}

/// The scores of every family as a Markdown document (`results.md`).
pub fn results_markdown(results: &[(&str, FamilyScore)]) -> String {
    let mut md = String::from(
        "# Word intrusion (MiniLM embeddings; chance = 1/6)\n\n| features | scored | intruder found (95% CI) | median DistRatio (95% CI) |\n|---|---|---|---|\n",
    );
    for (name, s) in results {
        md.push_str(&format!(
            "| {name} | {} | {:.3} [{:.3}, {:.3}] | {:.3} [{:.3}, {:.3}] |\n",
            s.n,
            s.accuracy,
            s.accuracy_ci.0,
            s.accuracy_ci.1,
            s.dist_ratio,
            s.dist_ratio_ci.0,
            s.dist_ratio_ci.1
        ));
    }
    md
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn judge_finds_the_odd_one_out_and_measures_the_ratio() {
        let members: Vec<Vec<f32>> = (0..5).map(|i| vec![1.0, 0.1 * i as f32, 0.0]).collect();
        let mut items = members.clone();
        items.push(vec![0.0, 0.0, 1.0]);
        let (p, r) = judge(&items);
        assert_eq!(p, 5);
        assert!(r > 10.0, "{r}");
        // When the "intruder" is one of the crowd, the ratio is near 1 and the pick arbitrary.
        let mut same = members;
        same.push(vec![1.0, 0.2, 0.0]);
        let (_, r) = judge(&same);
        assert!(r < 1.5, "{r}");
    }

    #[test]
    fn bootstrap_interval_contains_the_mean_and_shrinks_with_n() {
        let small: Vec<f64> = (0..20).map(|i| (i % 2) as f64).collect();
        let large: Vec<f64> = (0..2000).map(|i| (i % 2) as f64).collect();
        let (m, (lo, hi)) = bootstrap_ci(&small, 2000, 1);
        assert!((m - 0.5).abs() < 1e-12 && lo < m && m < hi);
        let (_, (lo2, hi2)) = bootstrap_ci(&large, 2000, 1);
        assert!(hi2 - lo2 < (hi - lo) / 5.0);
        assert!((hi - lo) > 0.25 && (hi - lo) < 0.6, "{lo} {hi}");
    }
}
