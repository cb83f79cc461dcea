//! The dashboard's data in Neuronpedia's upload layout (the one its `neuronpedia-utils`
//! converters write), so that features found here can be published there:
//!
//! ```text
//! MODEL_ID/SOURCE_ID/release.jsonl, model.jsonl, sourceset.jsonl, source.jsonl
//! MODEL_ID/SOURCE_ID/features/batch-N.jsonl.gz      one feature per line
//! MODEL_ID/SOURCE_ID/activations/batch-N.jsonl.gz   one shown context per line
//! ```
//!
//! with `SOURCE_ID = LAYER-SOURCE_SET`. A feature line carries its decoder row as the steering
//! vector, the promoted and suppressed tokens (`pos_str` / `neg_str`, when the unembedding is
//! known), the nearest features by decoder cosine, its firing fraction and a histogram of its
//! positive activations; an activation line carries a context's tokens and the feature's value
//! on each, with the quantile band it was drawn from. Fields this tool does not compute (neuron
//! alignment, correlations, logit histograms) are written empty, as the converters write them
//! when their inputs lack them.

use super::{shown_all, DashboardInput, FeatureRow, Selected};
use flate2::write::GzEncoder;
use serde::Serialize;
use serde_json::{json, Value};
use sparsecode::io::write_atomic;
use sparsecode::{Error, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::Path;

/// Features per batch file.
const BATCH: usize = 128;
/// Bars of the activation histogram.
const BARS: usize = 20;

/// Who publishes what: the identifiers Neuronpedia files the features under.
#[derive(Clone, Debug, Serialize)]
pub struct NeuronpediaMeta {
    /// Neuronpedia's model id (e.g. `smollm2-135m`).
    pub model_id: String,
    /// The source set (e.g. `sparsecode-res-4k`); the source is `LAYER-SOURCE_SET`.
    pub source_set: String,
    /// The hooked block.
    pub layer: usize,
    /// The hook (`blocks.L.hook_resid_post`).
    pub hook_name: String,
    /// Creator name shown with the release.
    pub creator: String,
    /// The text the activations were read on.
    pub dataset: String,
    /// Tokens per context of the harvest.
    pub tokens_per_prompt: usize,
    /// ISO 8601 time stamp written into every record.
    pub created_at: String,
}

impl NeuronpediaMeta {
    fn source_id(&self) -> String {
        format!("{}-{}", self.layer, self.source_set)
    }
}

/// What the export wrote.
#[derive(Clone, Debug, Serialize)]
pub struct NeuronpediaSummary {
    /// Feature lines.
    pub features: usize,
    /// Activation lines.
    pub activations: usize,
    /// Batch files of each kind.
    pub batches: usize,
}

/// Writes the export under `dir` (inside the dashboard's output folder).
pub(super) fn export(
    dir: &Path,
    meta: &NeuronpediaMeta,
    input: &DashboardInput,
    selected: &[Selected],
    (acts, rows, near): (
        &HashMap<(u32, u32), f32>,
        &[FeatureRow],
        &[Vec<(usize, f32)>],
    ),
) -> Result<NeuronpediaSummary> {
    let base = dir.join(&meta.model_id).join(meta.source_id());
    for sub in ["features", "activations"] {
        let d = base.join(sub);
        std::fs::create_dir_all(&d).map_err(|e| Error::io(&d, e))?;
    }
    write_descriptions(&base, meta, input)?;
    let mut summary = NeuronpediaSummary {
        features: 0,
        activations: 0,
        batches: 0,
    };
    for (b, chunk) in selected.chunks(BATCH).enumerate() {
        let mut features = Vec::with_capacity(chunk.len());
        let mut contexts = Vec::new();
        for sel in chunk {
            features.push(feature_line(meta, input, sel.feature, rows, near));
            contexts.extend(activation_lines(meta, input, sel, acts));
        }
        summary.features += features.len();
        summary.activations += contexts.len();
        let name = format!("batch-{b}.jsonl.gz");
        write_gzip_lines(&base.join("features").join(&name), &features)?;
        write_gzip_lines(&base.join("activations").join(&name), &contexts)?;
        summary.batches += 1;
    }
    Ok(summary)
}

/// The release, model, source set and source, one line each.
fn write_descriptions(base: &Path, meta: &NeuronpediaMeta, input: &DashboardInput) -> Result<()> {
    let n = input.scan.features.len();
    let creator = &meta.creator;
    let at = &meta.created_at;
    let files = [
        (
            "release.jsonl",
            json!({"name": meta.source_set, "description": input.title, "descriptionShort": input.title,
                "creatorName": creator, "creatorNameShort": creator, "creatorId": creator, "visibility": "PUBLIC",
                "isNewUi": false, "featured": false, "urls": [], "createdAt": at}),
        ),
        (
            "model.jsonl",
            json!({"id": meta.model_id, "instruct": meta.model_id.contains("instruct"), "creatorId": creator,
                "displayNameShort": meta.model_id, "displayName": meta.model_id, "dimension": input.decoder.cols(),
                "visibility": "PUBLIC", "inferenceEnabled": false, "createdAt": at, "updatedAt": at}),
        ),
        (
            "sourceset.jsonl",
            json!({"modelId": meta.model_id, "name": meta.source_set, "creatorId": creator, "creatorName": creator,
                "hasDashboards": true, "visibility": "PUBLIC", "releaseName": meta.source_set,
                "description": format!("{} - {n} features", meta.hook_name), "createdAt": at}),
        ),
        (
            "source.jsonl",
            json!({"id": meta.source_id(), "modelId": meta.model_id, "setName": meta.source_set, "creatorId": creator,
                "hasDashboards": true, "inferenceEnabled": false, "visibility": "PUBLIC", "dataset": meta.dataset,
                "num_prompts": null, "num_tokens_in_prompt": meta.tokens_per_prompt, "createdAt": at}),
        ),
    ];
    for (file, line) in files {
        write_atomic(&base.join(file), format!("{line}\n").as_bytes())?;
    }
    Ok(())
}

/// One feature's line.
fn feature_line(
    meta: &NeuronpediaMeta,
    input: &DashboardInput,
    j: usize,
    rows: &[FeatureRow],
    near: &[Vec<(usize, f32)>],
) -> Value {
    let (pos, neg) = input.logits.get(j).cloned().unwrap_or_default();
    let (heights, values) = histogram(&input.scan.features[j].sample);
    // The largest activation over every scanned row, not only over the contexts shown.
    let max = rows[j].max;
    json!({
        "modelId": meta.model_id,
        "layer": meta.source_id(),
        "index": j.to_string(),
        "creatorId": meta.creator,
        "createdAt": meta.created_at,
        "maxActApprox": max,
        "hasVector": true,
        "vector": input.decoder.row(j),
        "vectorLabel": null,
        "vectorDefaultSteerStrength": max,
        "hookName": meta.hook_name,
        "topkCosSimIndices": near[j].iter().map(|n| n.0).collect::<Vec<_>>(),
        "topkCosSimValues": near[j].iter().map(|n| n.1).collect::<Vec<_>>(),
        "neuron_alignment_indices": [], "neuron_alignment_values": [], "neuron_alignment_l1": [],
        "correlated_neurons_indices": [], "correlated_neurons_pearson": [], "correlated_neurons_l1": [],
        "correlated_features_indices": [], "correlated_features_pearson": [], "correlated_features_l1": [],
        "pos_str": pos.iter().map(|t| &t.0).collect::<Vec<_>>(),
        "pos_values": pos.iter().map(|t| t.1).collect::<Vec<_>>(),
        "neg_str": neg.iter().map(|t| &t.0).collect::<Vec<_>>(),
        "neg_values": neg.iter().map(|t| t.1).collect::<Vec<_>>(),
        "frac_nonzero": rows[j].density,
        "freq_hist_data_bar_heights": heights,
        "freq_hist_data_bar_values": values,
        "logits_hist_data_bar_heights": [], "logits_hist_data_bar_values": [],
        "decoder_weights_dist": [],
    })
}

/// `BARS` bars over `(0, max]` of the sampled positive activations: (heights, bar centres).
fn histogram(sample: &[(f32, u32)]) -> (Vec<u64>, Vec<f64>) {
    let max = sample.iter().map(|s| s.0 as f64).fold(0.0, f64::max);
    if max <= 0.0 {
        return (Vec::new(), Vec::new());
    }
    let width = max / BARS as f64;
    let mut heights = vec![0u64; BARS];
    for (v, _) in sample {
        let i = ((*v as f64 / width) as usize).min(BARS - 1);
        heights[i] += 1;
    }
    let centres = (0..BARS).map(|i| (i as f64 + 0.5) * width).collect();
    (heights, centres)
}

/// One line per context the feature's page shows: its top contexts, then those drawn from each
/// quantile band (with the band's bounds and share).
fn activation_lines(
    meta: &NeuronpediaMeta,
    input: &DashboardInput,
    sel: &Selected,
    acts: &HashMap<(u32, u32), f32>,
) -> Vec<Value> {
    let sample = &input.scan.features[sel.feature].sample;
    let band_bounds = |b: usize| {
        let n = sample.len();
        let (lo, hi) = (b * n / 4, ((b + 1) * n / 4).clamp(1, n));
        (sample[lo.min(n - 1)].0, sample[hi - 1].0)
    };
    let mut groups = vec![(None, &sel.top)];
    groups.extend(sel.bands.iter().map(|(b, r)| (Some(band_bounds(*b)), r)));
    let mut lines = Vec::new();
    for (band, rows) in groups {
        for (k, shown) in shown_all(input.tokens, acts, sel.feature, rows)
            .into_iter()
            .enumerate()
        {
            let values: Vec<f32> = shown.tokens.iter().map(|t| t.1).collect();
            let (arg, max) = values
                .iter()
                .enumerate()
                .fold(
                    (0, f32::NEG_INFINITY),
                    |m, (i, v)| if *v > m.1 { (i, *v) } else { m },
                );
            let min = values.iter().copied().fold(f32::INFINITY, f32::min);
            let kind = if band.is_some() { "q" } else { "top" };
            lines.push(json!({
                "id": format!("{}-{}-{}-{kind}{}-{k}", meta.model_id, meta.source_id(), sel.feature, lines.len()),
                "tokens": shown.tokens.iter().map(|t| &t.0).collect::<Vec<_>>(),
                "index": sel.feature.to_string(),
                "layer": meta.source_id(),
                "modelId": meta.model_id,
                "maxValue": max,
                "maxValueTokenIndex": arg,
                "minValue": min,
                "values": values,
                "creatorId": meta.creator,
                "dataSource": shown.doc,
                "dataIndex": shown.pos.to_string(),
                "dfaValues": [], "dfaTargetIndex": null, "dfaMaxValue": null,
                "createdAt": meta.created_at,
                "lossValues": [], "logitContributions": null,
                "binMin": band.map(|b| b.0), "binMax": band.map(|b| b.1),
                "binContains": band.map(|_| 0.25),
                "qualifyingTokenIndex": shown.focus,
            }));
        }
    }
    lines
}

/// `lines` as JSON Lines, gzip-compressed, written atomically.
fn write_gzip_lines(path: &Path, lines: &[Value]) -> Result<()> {
    let mut gz = GzEncoder::new(Vec::new(), flate2::Compression::new(5));
    for line in lines {
        let io = |e| Error::io(path, e);
        serde_json::to_writer(&mut gz, line).map_err(|e| io(e.into()))?;
        gz.write_all(b"\n").map_err(io)?;
    }
    let bytes = gz.finish().map_err(|e| Error::io(path, e))?;
    write_atomic(path, &bytes)
}
