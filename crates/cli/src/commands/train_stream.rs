//! `sparsecode train --model M --layer L[,L...]`: the hooks' activations streamed from the
//! model's forward passes into training (library `sparsecode_harvest::stream`), and the same
//! stream rebuilt from a run's record when it is resumed.

use anyhow::{Context, Result};
use serde_json::{json, Value};
use sparsecode::train::TrainingData;
use sparsecode_harvest::corpus::InvalidUtf8;
use sparsecode_harvest::harvest::hook_name;
use sparsecode_harvest::stream::{HookSource, ModelStream, StreamSpec};
use std::path::PathBuf;

/// Training straight from a model's forward passes.
#[derive(clap::Args)]
pub struct StreamArgs {
    /// Stream activations from this model into training, with no store on disk: `smollm2`,
    /// `gemma3`, `minilm`, a .gguf file or a BERT folder.
    #[arg(long)]
    pub model: Option<String>,
    /// Text for --model (default: the fetched State of the Union texts).
    #[arg(long, requires = "model")]
    pub corpus: Option<PathBuf>,
    /// Blocks whose residual stream is trained on, comma-separated: one SAE each, all fed by
    /// the same forward passes (several layers: one run folder per hook inside --out).
    #[arg(long, requires = "model", value_delimiter = ',')]
    pub layer: Vec<usize>,
    /// Token budget drawn from the corpus (whole contexts; default: all of it).
    #[arg(long, requires = "model")]
    pub tokens: Option<u64>,
    /// Tokens per context (BOS on top, not trained on).
    #[arg(long, default_value_t = 128)]
    pub context: usize,
    /// Tokens after BOS that are run but not trained on.
    #[arg(long, default_value_t = 0)]
    pub exclude_positions: usize,
    /// Contexts per forward pass.
    #[arg(long, default_value_t = 8)]
    pub model_batch: usize,
    /// Contexts computed (and cached) together.
    #[arg(long, default_value_t = 64)]
    pub shard_contexts: usize,
    /// Seed of the context draw.
    #[arg(long, default_value_t = 0)]
    pub corpus_seed: u64,
}

/// The stream the flags describe, one training source per layer: `(data, corpus, hook name)`.
pub fn open(a: &StreamArgs, window_rows: u64) -> Result<Vec<(TrainingData, PathBuf, String)>> {
    let model = a.model.clone().context("missing --model")?;
    if a.layer.is_empty() {
        anyhow::bail!("--model needs --layer L (or L1,L2,...: one SAE per layer)");
    }
    if let Some((i, l)) = a
        .layer
        .iter()
        .enumerate()
        .find(|(i, l)| a.layer[..*i].contains(l))
    {
        anyhow::bail!(
            "--layer: {l} is given twice (position {}); one SAE per layer",
            i + 1
        );
    }
    let corpus = super::corpus_or_default(&a.corpus)?;
    let spec = StreamSpec {
        model,
        corpus: corpus.clone(),
        layers: a.layer.clone(),
        context: a.context,
        exclude_positions: a.exclude_positions,
        max_tokens: a.tokens,
        seed: a.corpus_seed,
        shard_contexts: a.shard_contexts,
        batch: a.model_batch,
        invalid_utf8: InvalidUtf8::default(),
        window_rows,
    };
    let stream = ModelStream::open(spec)?;
    Ok((0..a.layer.len())
        .map(|i| {
            let hook = stream.hook(i);
            let name = hook_name(hook.layer());
            (training_data(hook), corpus.clone(), name)
        })
        .collect())
}

/// The data of a run that was streamed, from the `source` its record keeps.
pub fn reopen(source: &Value) -> Result<TrainingData> {
    let spec: StreamSpec = serde_json::from_value(source["stream"].clone()).context(
        "the run's record describes its model stream in a form this version cannot read",
    )?;
    let stream = ModelStream::open(spec)?;
    Ok(training_data(stream.hook(0)))
}

fn training_data(hook: HookSource) -> TrainingData {
    let layer = hook.layer();
    let stream = hook.stream();
    let spec = StreamSpec {
        layers: vec![layer],
        ..stream.spec().clone()
    };
    let metadata = json!({
        "model_name": stream.model().name(),
        "hook_name": hook_name(layer),
        "hook_layer": layer,
        "context_size": spec.context,
        "streamed": true,
    });
    TrainingData::Streamed {
        fingerprint: hook.fingerprint(),
        rows: Box::new(hook),
        metadata,
        source: json!({ "stream": spec }),
    }
}
