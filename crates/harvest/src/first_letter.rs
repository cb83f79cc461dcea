//! The first-letter absorption task of Chanin et al. (arXiv 2409.14507) as SAEBench runs it, on
//! a causal language model with an SAE at one of its layers.
//!
//! 1. Words: the single tokens of the vocabulary made of ASCII letters (one leading space
//!    allowed), shuffled with the seed; 80% train, 20% test.
//! 2. Prompts: ten in-context examples `"{w} has the first letter: {W}"` (other words), then
//!    `"{word} has the first letter:"`; the activation is the residual after the SAE's layer at
//!    the word's token (six from the end). A prompt whose word does not stay one token there is
//!    dropped (counted).
//! 3. Ground truth: 26 one-vs-rest logistic probes on the residuals of the train words
//!    ([`MultiProbe`], SAEBench's settings); per letter its F1 on the test words. Letters whose
//!    probe F1 is at most 0.6 are left out, as SAEBench leaves them.
//! 4. Main latents: an L1-penalised multi-probe on the SAE's codes ranks latents per letter; for
//!    k = 1..10 a balanced logistic regression on the top k; k grows while the test F1 rises by
//!    more than 0.03 (feature splitting): the latents of the last such k are the letter's main
//!    latents.
//! 5. Absorption on the test words of each letter that its ground-truth probe calls positive:
//!    the absorption fraction and full absorption of [`word_absorption`].
//! 6. Ablation check (Chanin et al.): on a fully absorbed word, the top absorbing latent's
//!    contribution is removed from the residual at the word's token and the model is run on from
//!    there; the absorption is confirmed when the probability of the right answer (" W") falls.

use crate::tokenizer::TextTokenizer;
use crate::{CausalLm, Error, ResidualModel, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use sparsecode::eval::{
    f1, probe_alignment, word_absorption, BalancedLogistic, MultiProbe, MultiProbeParams,
    WordAbsorption, WordAbsorptionParams,
};
use sparsecode::sae::Sae;
use sparsecode::{Matrix, Parallelism};

/// Letters of the task.
pub const LETTERS: usize = 26;
/// Tokens after the word in the prompt: " has", " the", " first", " letter", ":".
const AFTER_WORD: usize = 5;

/// Settings of the task.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct FirstLetterConfig {
    /// The SAE's hook: the residual after this block.
    pub layer: usize,
    /// Words used (at most; all the vocabulary's alphabetic tokens when larger).
    pub max_words: usize,
    /// In-context examples per prompt.
    pub icl_examples: usize,
    /// Share of the words the probes train on.
    pub train_fraction: f64,
    /// Largest k of the k-sparse probes.
    pub max_k: usize,
    /// F1 gain that counts as feature splitting.
    pub f1_jump: f64,
    /// Letters whose ground-truth probe has at most this F1 are left out.
    pub min_probe_f1: f64,
    /// Fewest counted letters for a verdict (SAEBench refuses to score a model with fewer).
    pub min_letters: usize,
    /// L1 penalty of the latent-ranking probe.
    pub l1: f32,
    /// Fully absorbed words checked by ablation (at most).
    pub max_ablations: usize,
    /// Prompts per forward pass.
    pub batch: usize,
    /// Seed of the word order and the examples.
    pub seed: u64,
}

impl FirstLetterConfig {
    /// SAEBench's settings at `layer`.
    pub fn new(layer: usize) -> Self {
        FirstLetterConfig {
            layer,
            max_words: usize::MAX,
            icl_examples: 10,
            train_fraction: 0.8,
            max_k: 10,
            f1_jump: 0.03,
            min_probe_f1: 0.6,
            min_letters: 20,
            l1: 0.01,
            max_ablations: 200,
            batch: 16,
            seed: 42,
        }
    }
}

/// A one-token word and its first letter.
#[derive(Clone, Debug, PartialEq)]
pub struct Word {
    /// Its token.
    pub token: u32,
    /// How it reads (with its leading space, if any).
    pub text: String,
    /// Its first letter, `0..26`.
    pub letter: usize,
}

/// The vocabulary's tokens made of ASCII letters (one leading space allowed), in id order.
pub fn alpha_words(tok: &TextTokenizer) -> Vec<Word> {
    (0..tok.vocab_size() as u32)
        .filter_map(|id| {
            let text = tok.token_text(id);
            let bare = text.strip_prefix(' ').unwrap_or(&text);
            let first = bare.bytes().next()?;
            bare.bytes().all(|b| b.is_ascii_alphabetic()).then(|| Word {
                token: id,
                letter: (first.to_ascii_lowercase() - b'a') as usize,
                text,
            })
        })
        .collect()
}

/// The answer's text for letter `l`: `" W"`.
fn answer(l: usize) -> String {
    format!(" {}", (b'A' + l as u8) as char)
}

/// A prompt's tokens (BOS first) with the word's position.
#[derive(Clone, Debug)]
pub struct Prompt {
    /// Token ids.
    pub tokens: Vec<u32>,
    /// Index of the word's token.
    pub word_pos: usize,
}

/// The prompt for `words[i]` with `icl` other words as examples (chosen by `rng`); None when the
/// word is not one token at its place.
fn prompt(
    tok: &TextTokenizer,
    words: &[Word],
    i: usize,
    icl: usize,
    rng: &mut rand_chacha::ChaCha8Rng,
) -> Result<Option<Prompt>> {
    let mut text = String::new();
    let mut picked = 0;
    while picked < icl && words.len() > 1 {
        let j = rand::Rng::random_range(rng, 0..words.len());
        if j == i {
            continue;
        }
        let w = &words[j];
        text.push_str(&format!(
            "\n{} has the first letter:{}",
            w.text,
            answer(w.letter)
        ));
        picked += 1;
    }
    text.push_str(&format!("\n{} has the first letter:", words[i].text));
    let mut tokens: Vec<u32> = tok.bos().into_iter().collect();
    tokens.extend(tok.encode_plain(&text)?);
    let Some(word_pos) = tokens.len().checked_sub(AFTER_WORD + 1) else {
        return Ok(None);
    };
    Ok((tokens[word_pos] == words[i].token).then_some(Prompt { tokens, word_pos }))
}

/// The residual after `layer` at each prompt's word, `[prompts, d_model]`; prompts of equal
/// length run together, `batch` at a time.
fn word_residuals(
    model: &dyn ResidualModel,
    prompts: &[Prompt],
    layer: usize,
    batch: usize,
    progress: &mut dyn FnMut(usize),
) -> Result<Matrix> {
    let d = model.d_model();
    let mut out = Matrix::zeros(prompts.len(), d);
    let mut order: Vec<usize> = (0..prompts.len()).collect();
    order.sort_by_key(|&i| (prompts[i].tokens.len(), i));
    let mut done = 0;
    for group in order.chunk_by(|&a, &b| prompts[a].tokens.len() == prompts[b].tokens.len()) {
        for chunk in group.chunks(batch.max(1)) {
            let tokens: Vec<Vec<u32>> = chunk.iter().map(|&i| prompts[i].tokens.clone()).collect();
            let t = tokens[0].len();
            let resid = model.residual(&tokens, layer)?;
            for (b, &i) in chunk.iter().enumerate() {
                let at = (b * t + prompts[i].word_pos) * d;
                out.row_mut(i).copy_from_slice(&resid[at..at + d]);
            }
            done += chunk.len();
            progress(done);
        }
    }
    Ok(out)
}

/// What the task measured for one letter.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LetterResult {
    /// The letter.
    pub letter: char,
    /// Test F1 of its ground-truth probe.
    pub probe_f1: f64,
    /// Test F1 of the k-sparse SAE probes, k = 1..max_k.
    pub sparse_f1: Vec<f64>,
    /// Its main latents (feature splits).
    pub main_latents: Vec<usize>,
    /// Test words of the letter the probe calls positive.
    pub probe_true_positives: usize,
    /// Mean absorption fraction over them.
    pub mean_absorption_fraction: f64,
    /// Fully absorbed words among them.
    pub full_absorptions: usize,
    /// Of the fully absorbed words checked by ablation, those where removing the absorbing
    /// latent lowered the right answer's probability; and how many were checked.
    pub ablation_confirmed: (usize, usize),
    /// Whether the letter counts (probe F1 above the minimum).
    pub counted: bool,
    /// Up to five fully absorbed words, with their absorbing latent.
    pub examples: Vec<(String, usize)>,
}

/// The task's result.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct FirstLetterReport {
    /// The settings.
    pub config: FirstLetterConfig,
    /// Words scored (train + test), and prompts dropped because the word did not stay one token.
    pub words: usize,
    /// Prompts dropped.
    pub dropped: usize,
    /// Per letter.
    pub letters: Vec<LetterResult>,
    /// Letters counted.
    pub counted_letters: usize,
    /// Whether at least `min_letters` letters count: SAEBench does not score a model whose
    /// residual carries fewer first letters linearly (its numbers are still given here).
    pub enough_letters: bool,
    /// Mean over counted letters of the mean absorption fraction.
    pub mean_absorption_fraction: f64,
    /// Mean over counted letters of full absorptions / probe true positives.
    pub mean_full_absorption: f64,
    /// The same counting only ablation-confirmed full absorptions (unchecked ones left out of
    /// numerator and denominator).
    pub confirmed_full_absorption: f64,
    /// Mean number of main latents minus one over counted letters (SAEBench's split features).
    pub mean_split_features: f64,
}

/// Runs the task for `sae` at `cfg.layer` of `model`; `progress(stage, done, total)`.
pub fn evaluate(
    model: &dyn CausalLm,
    sae: &Sae,
    cfg: &FirstLetterConfig,
    par: Parallelism,
    progress: &mut dyn FnMut(&str, usize, usize),
) -> Result<FirstLetterReport> {
    crate::check_layer(model, cfg.layer)?;
    crate::check_sae_width(model, sae)?;
    check(cfg)?;
    let tok = model.tokenizer();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed);
    let mut words = alpha_words(tok);
    words.shuffle(&mut rng);
    words.truncate(cfg.max_words);
    let mut prompts = Vec::new();
    let mut kept = Vec::new();
    for i in 0..words.len() {
        if let Some(p) = prompt(tok, &words, i, cfg.icl_examples, &mut rng)? {
            prompts.push(p);
            kept.push(words[i].clone());
        }
    }
    let dropped = words.len() - kept.len();
    let n = kept.len();
    if n < 2 * LETTERS {
        return Err(Error::Param {
            field: "words",
            reason: format!("{n} usable words; the task needs at least {}", 2 * LETTERS),
        });
    }
    let n_train = ((n as f64 * cfg.train_fraction) as usize).clamp(1, n - 1);
    // The words' residuals and their dense codes are held whole.
    let width = model.d_model().saturating_add(sae.d_sae());
    sparsecode::memory::admit_array("the words' residuals and SAE codes", &[n, width], 4)?;
    let x = word_residuals(model, &prompts, cfg.layer, cfg.batch, &mut |d| {
        progress("forward", d, n)
    })?;
    let labels: Vec<usize> = kept.iter().map(|w| w.letter).collect();
    let split = Split::new(&x, &labels, n_train);
    progress("probes", 0, 1);
    let gt = MultiProbe::fit(
        &split.x_train,
        &split.y_train,
        LETTERS,
        &probe_params(cfg),
        par,
    )?;
    let gt_scores = gt.scores(&split.x_test, par);
    let codes = sae.encode_dense(&x, par);
    let (z_train, z_test) = (codes.slice_rows(0, n_train), codes.slice_rows(n_train, n));
    let ranking = MultiProbe::fit(
        &z_train,
        &split.y_train,
        LETTERS,
        &MultiProbeParams {
            l1: cfg.l1,
            l2: 1e-6,
            ..probe_params(cfg)
        },
        par,
    )?;
    let ctx = LetterContext {
        model,
        sae,
        cfg,
        split: &split,
        z_train: &z_train,
        z_test: &z_test,
        gt: &gt,
        gt_scores: &gt_scores,
        ranking: &ranking,
        prompts: &prompts[n_train..],
        words: &kept[n_train..],
    };
    let mut letters = Vec::new();
    for l in 0..LETTERS {
        progress("letters", l, LETTERS);
        letters.push(ctx.letter(l)?);
    }
    Ok(aggregate(cfg.clone(), n, dropped, letters))
}

fn check(cfg: &FirstLetterConfig) -> Result<()> {
    let bad = |field, reason: String| Err(Error::Param { field, reason });
    if !(cfg.train_fraction > 0.0 && cfg.train_fraction < 1.0) {
        return bad(
            "train_fraction",
            format!("{} must be in (0, 1)", cfg.train_fraction),
        );
    }
    if cfg.max_k == 0 || cfg.icl_examples == 0 {
        return bad("max_k", "max_k and icl_examples must be at least 1".into());
    }
    Ok(())
}

fn probe_params(cfg: &FirstLetterConfig) -> MultiProbeParams {
    MultiProbeParams {
        seed: cfg.seed,
        ..MultiProbeParams::default()
    }
}

/// The words' residuals and letters, train rows first.
struct Split {
    x_train: Matrix,
    x_test: Matrix,
    y_train: Vec<usize>,
    y_test: Vec<usize>,
}

impl Split {
    fn new(x: &Matrix, labels: &[usize], n_train: usize) -> Self {
        Split {
            x_train: x.slice_rows(0, n_train),
            x_test: x.slice_rows(n_train, x.rows()),
            y_train: labels[..n_train].to_vec(),
            y_test: labels[n_train..].to_vec(),
        }
    }
}

/// Everything one letter's measurement reads.
struct LetterContext<'a> {
    model: &'a dyn CausalLm,
    sae: &'a Sae,
    cfg: &'a FirstLetterConfig,
    split: &'a Split,
    z_train: &'a Matrix,
    z_test: &'a Matrix,
    gt: &'a MultiProbe,
    gt_scores: &'a Matrix,
    ranking: &'a MultiProbe,
    prompts: &'a [Prompt],
    words: &'a [Word],
}

impl LetterContext<'_> {
    fn letter(&self, l: usize) -> Result<LetterResult> {
        let pos_test: Vec<bool> = self.split.y_test.iter().map(|&y| y == l).collect();
        let said: Vec<bool> = (0..pos_test.len())
            .map(|r| self.gt_scores.get(r, l) > 0.0)
            .collect();
        let probe_f1 = f1(&said, &pos_test);
        let (sparse_f1, main_latents) = self.main_latents(l);
        let direction = self.gt.weights.row(l);
        let norm = direction
            .iter()
            .map(|v| v * v)
            .sum::<f32>()
            .sqrt()
            .max(f32::MIN_POSITIVE);
        let (dots, cos) = probe_alignment(&self.sae.w_dec, direction);
        let mut scored: Vec<(usize, WordAbsorption)> = Vec::new();
        for (r, _) in pos_test
            .iter()
            .zip(&said)
            .enumerate()
            .filter(|(_, (p, s))| **p && **s)
        {
            let x = self.split.x_test.row(r);
            let proj = x.iter().zip(direction).map(|(a, b)| a * b).sum::<f32>() / norm;
            let a = self.z_test.row(r);
            let w = word_absorption(
                proj,
                a,
                (&dots, &cos),
                &main_latents,
                &WordAbsorptionParams::default(),
            );
            scored.push((r, w));
        }
        let full: Vec<&(usize, WordAbsorption)> = scored.iter().filter(|(_, w)| w.full).collect();
        // The answer " W" must be one token to be scored; otherwise nothing is checked (and
        // nothing counted as checked).
        let answer_ids = self.model.tokenizer().encode_plain(&answer(l))?;
        let mut confirmed = (0, 0);
        if let [answer] = answer_ids[..] {
            for (r, w) in full.iter().take(self.cfg.max_ablations) {
                confirmed.1 += 1;
                confirmed.0 += self.ablation_lowers(*r, w.top_latent.0, answer)? as usize;
            }
        }
        let tp = scored.len();
        // Folded from +0 (a float sum of nothing is -0).
        let fractions = scored.iter().fold(0.0, |a, (_, w)| a + w.fraction as f64);
        Ok(LetterResult {
            letter: (b'a' + l as u8) as char,
            probe_f1,
            sparse_f1,
            main_latents,
            probe_true_positives: tp,
            mean_absorption_fraction: fractions / tp.max(1) as f64,
            full_absorptions: full.len(),
            ablation_confirmed: confirmed,
            counted: probe_f1 > self.cfg.min_probe_f1,
            examples: full
                .iter()
                .take(5)
                .map(|(r, w)| (self.words[*r].text.clone(), w.top_latent.0))
                .collect(),
        })
    }

    /// The k-sparse probes' test F1 for k = 1..max_k and the main latents (feature splits).
    fn main_latents(&self, l: usize) -> (Vec<f64>, Vec<usize>) {
        let w = self.ranking.weights.row(l);
        let mut order: Vec<usize> = (0..w.len()).collect();
        order.sort_by(|&a, &b| w[b].total_cmp(&w[a]).then(a.cmp(&b)));
        let pos_train: Vec<bool> = self.split.y_train.iter().map(|&y| y == l).collect();
        let pos_test: Vec<bool> = self.split.y_test.iter().map(|&y| y == l).collect();
        let mut scores = Vec::new();
        let (mut best, mut main) = (f64::NEG_INFINITY, Vec::new());
        let mut splitting = true;
        for k in 1..=self.cfg.max_k.min(w.len()) {
            let feats = &order[..k];
            let model = BalancedLogistic::fit(&self.z_train.select_columns(feats), &pos_train);
            let said: Vec<bool> = model
                .decision(&self.z_test.select_columns(feats))
                .iter()
                .map(|v| *v > 0.0)
                .collect();
            let score = f1(&said, &pos_test);
            scores.push(score);
            if splitting && score > best + self.cfg.f1_jump {
                best = score;
                main = feats.to_vec();
            } else {
                splitting = false;
            }
        }
        (scores, main)
    }

    /// Whether removing `latent`'s contribution at the word of test word `r` lowers the
    /// model's probability of the answer token `answer`.
    fn ablation_lowers(&self, r: usize, latent: usize, answer: u32) -> Result<bool> {
        let p = &self.prompts[r];
        let d = self.model.d_model();
        let t = p.tokens.len();
        let mut resid = self
            .model
            .residual(std::slice::from_ref(&p.tokens), self.cfg.layer)?;
        let log_p = |resid: &[f32]| -> Result<f32> {
            let logits = self
                .model
                .logits_from(resid, (1, t), self.cfg.layer, true)?;
            Ok(log_softmax_at(&logits, answer as usize))
        };
        let clean = log_p(&resid)?;
        let a = self.z_test.get(r, latent);
        let row = &mut resid[p.word_pos * d..(p.word_pos + 1) * d];
        row.iter_mut()
            .zip(self.sae.w_dec.row(latent))
            .for_each(|(v, w)| *v -= a * w);
        Ok(log_p(&resid)? < clean)
    }
}

/// `log softmax(logits)[i]`.
fn log_softmax_at(logits: &[f32], i: usize) -> f32 {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f64 = logits.iter().map(|v| ((v - max) as f64).exp()).sum();
    logits[i] - max - sum.ln() as f32
}

fn aggregate(
    config: FirstLetterConfig,
    words: usize,
    dropped: usize,
    letters: Vec<LetterResult>,
) -> FirstLetterReport {
    let counted: Vec<&LetterResult> = letters.iter().filter(|l| l.counted).collect();
    let min_letters = config.min_letters;
    let mean = |f: &dyn Fn(&LetterResult) -> Option<f64>| {
        let v: Vec<f64> = counted.iter().filter_map(|l| f(l)).collect();
        v.iter().fold(0.0, |a, b| a + b) / v.len().max(1) as f64
    };
    let rate = |a: usize, b: usize| (b > 0).then(|| a as f64 / b as f64);
    FirstLetterReport {
        config,
        words,
        dropped,
        counted_letters: counted.len(),
        enough_letters: counted.len() >= min_letters,
        mean_absorption_fraction: mean(&|l| Some(l.mean_absorption_fraction)),
        mean_full_absorption: mean(&|l| rate(l.full_absorptions, l.probe_true_positives)),
        confirmed_full_absorption: mean(&|l| {
            // Unchecked full absorptions are neither counted nor in the denominator.
            let unchecked = l.full_absorptions - l.ablation_confirmed.1;
            rate(l.ablation_confirmed.0, l.probe_true_positives - unchecked)
        }),
        mean_split_features: mean(&|l| Some(l.main_latents.len().saturating_sub(1) as f64)),
        letters,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_log_softmax() {
        assert_eq!(answer(0), " A");
        assert_eq!(answer(25), " Z");
        let lp = log_softmax_at(&[1.0, 2.0, 3.0], 2);
        let want = 3.0 - (1f64.exp() + 2f64.exp() + 3f64.exp()).ln();
        assert!((lp as f64 - want).abs() < 1e-6);
    }
}
