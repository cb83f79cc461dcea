//! Runs real transformers on the CPU to collect activations for sparse dictionary learning.
//!
//! Two models that can be had offline (`scripts/fetch-assets`): all-MiniLM-L6-v2 (a 6-layer BERT
//! encoder, d = 384, safetensors + `tokenizer.json`) and SmolLM2-135M (a 30-layer Llama, d = 576,
//! one GGUF file with the tokenizer in its metadata). Both forwards are written here on candle
//! tensors so that the residual stream after any layer can be read (candle-transformers' models
//! return only their last layer or logits). Nothing here reaches a model hub.
//!
//! - [`llama`]: GGUF Llama forward (residual after any block, logits, greedy generation).
//! - [`gemma`]: GGUF Gemma 3 forward (sandwich norms, q/k norms, GeGLU, sliding-window and
//!   global layers; residual after any block, logits).
//! - [`bert`]: BERT forward (hidden states after any layer, mean-pooled sentence embeddings).
//! - [`tokenizer`]: `tokenizer.json`, or the byte-level BPE rebuilt from GGUF metadata.
//! - [`corpus`]: text files into documents, documents into fixed-length token contexts.
//! - [`first_letter`]: SAEBench's first-letter absorption task on a causal language model.
//! - [`harvest`]: the resumable loop that writes an activation store with token provenance.
//! - [`models`]: a model by name or path.
//! - [`assets`]: where the fetched models live and what to run when one is missing.

pub mod assets;
pub mod bert;
pub mod corpus;
pub mod decoder;
mod error;
pub mod first_letter;
mod fused;
pub mod gemma;
pub mod gguf;
pub mod harvest;
pub mod llama;
pub mod merge;
pub mod models;
pub mod splice;
pub mod steer;
pub mod stream;
mod tensor_ops;
pub mod tokenizer;

pub use error::{Error, Result};

/// A model whose residual stream can be read after any layer.
pub trait ResidualModel: Sync {
    /// Width of the residual stream.
    fn d_model(&self) -> usize;
    /// Number of layers (blocks); valid layer indices are `0..n_layers()`.
    fn n_layers(&self) -> usize;
    /// Longest sequence (in tokens, BOS included) the model takes.
    fn max_context(&self) -> usize;
    /// The residual stream after block `layer` for a batch of equally long token sequences,
    /// row-major `[batch * len, d_model]` (sequence by sequence).
    fn residual(&self, tokens: &[Vec<u32>], layer: usize) -> Result<Vec<f32>>;
    /// [`Self::residual`] after each block of `layers`; a model that can should read them all
    /// from one forward pass (the default runs one pass per layer).
    fn residuals(&self, tokens: &[Vec<u32>], layers: &[usize]) -> Result<Vec<Vec<f32>>> {
        layers.iter().map(|&l| self.residual(tokens, l)).collect()
    }
    /// Short model name for records (`smollm2-135m`, `all-minilm-l6-v2`).
    fn name(&self) -> &str;
    /// Multiply-adds x 2 of one forward pass through blocks `0..=layer` per token of a
    /// `t`-token sequence (projections, MLP and attention scores; for throughput ratios).
    fn flops_per_token(&self, layer: usize, t: usize) -> f64;
}

/// A causal language model: its residual stream, its logits from any block on (with the residual
/// edited or not), and its tokenizer. SmolLM2 ([`llama::Llama`]) and Gemma 3 ([`gemma::Gemma`]).
pub trait CausalLm: ResidualModel {
    /// The tokenizer from the model file.
    fn tokenizer(&self) -> &tokenizer::TextTokenizer;
    /// The model file.
    fn path(&self) -> &std::path::Path;
    /// Vocabulary size.
    fn vocab(&self) -> usize;
    /// Next-token logits of the model continued from `resid`, the residual after block `layer`
    /// of `b` sequences of `t` tokens (row-major `[b * t, d_model]`): `[b * t, vocab]`, or with
    /// `last_only` `[b, vocab]`.
    fn logits_from(
        &self,
        resid: &[f32],
        bt: (usize, usize),
        layer: usize,
        last_only: bool,
    ) -> Result<Vec<f32>>;
    /// Next-token logits after the last position of each sequence, `[b][vocab]`.
    fn last_logits(&self, tokens: &[Vec<u32>]) -> Result<Vec<Vec<f32>>>;
    /// For each row of `dirs` (`[n, d_model]`), the `k` tokens whose logits it raises and lowers
    /// most through the final norm's gain and the unembedding.
    fn logit_effects(&self, dirs: &[f32], k: usize) -> Result<Vec<llama::LogitEffects>>;
    /// Greedy continuation: `n` new token ids after `prompt`.
    fn greedy(&self, prompt: &[u32], n: usize) -> Result<Vec<u32>> {
        let mut seq = prompt.to_vec();
        for _ in 0..n {
            let logits = self.last_logits(std::slice::from_ref(&seq))?;
            seq.push(llama::argmax(&logits[0]) as u32);
        }
        Ok(seq[prompt.len()..].to_vec())
    }
}

/// Checks `layer` against a model's depth, naming the valid range.
pub fn check_layer(model: &dyn ResidualModel, layer: usize) -> Result<()> {
    if layer >= model.n_layers() {
        return Err(Error::Layer {
            model: model.name().to_string(),
            layer,
            n_layers: model.n_layers(),
        });
    }
    Ok(())
}

/// Checks a context length against a model (BOS comes on top) and the leading positions left
/// out of it (at least one must remain).
pub fn check_context(
    model: &dyn ResidualModel,
    context: usize,
    exclude_positions: usize,
) -> Result<()> {
    if context == 0 || context + 1 > model.max_context() {
        return Err(Error::Param {
            field: "context",
            reason: format!(
                "1..={} tokens for {}",
                model.max_context() - 1,
                model.name()
            ),
        });
    }
    if exclude_positions >= context {
        return Err(Error::Param {
            field: "exclude_positions",
            reason: format!("{exclude_positions} leaves no position of a {context}-token context"),
        });
    }
    Ok(())
}

/// Checks that `sae` reads vectors as wide as `model`'s residual stream.
pub fn check_sae_width(model: &dyn ResidualModel, sae: &sparsecode::sae::Sae) -> Result<()> {
    if sae.d_in() != model.d_model() {
        return Err(Error::Param {
            field: "sae",
            reason: format!(
                "the SAE reads vectors of width {} but {}'s residual stream has width {}",
                sae.d_in(),
                model.name(),
                model.d_model()
            ),
        });
    }
    Ok(())
}
