//! A Llama-family causal language model read from one GGUF file (SmolLM2-135M here), with a
//! forward pass that can stop after any block and return the residual stream.
//!
//! Weights are dequantised to f32 once at load (135M parameters: ~0.5 GB) so that every product
//! is a dense gemm on a batch of contexts: much faster on a CPU than quantised matrix-vector
//! products, and the activations are those of the same quantised weights. llama.cpp's converter
//! permutes the query/key rows for its "interleaved pairs" rotary embedding, so RoPE here rotates
//! adjacent pairs (x[2i], x[2i+1]).

use crate::decoder::{self, check_residual, check_tokens, GgufFile};
use crate::error::CandleContext;
use crate::fused::{self, attention, Heads, Keys, Linear};
use crate::tokenizer::{self, TextTokenizer};
use crate::{Error, ResidualModel, Result};
use candle_core::{Device, Tensor};
use std::path::{Path, PathBuf};

/// Shape of the network, read from the GGUF metadata (`llama.*`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct LlamaConfig {
    /// Residual width.
    pub d_model: usize,
    /// Number of blocks.
    pub n_layers: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads (grouped-query attention).
    pub n_kv_heads: usize,
    /// MLP width.
    pub d_ff: usize,
    /// RMSNorm epsilon.
    pub rms_eps: f64,
    /// RoPE base frequency.
    pub rope_base: f64,
    /// Vocabulary size.
    pub vocab: usize,
    /// Longest context the model was trained for.
    pub max_context: usize,
}

struct Block {
    attn_norm: Vec<f32>,
    /// Queries, keys and values in one product.
    qkv: Linear,
    wo: Linear,
    ffn_norm: Vec<f32>,
    /// Gate and up projections in one product.
    gate_up: Linear,
    down: Linear,
}

/// The loaded model: f32 weights (projections stored transposed, `[in, out]`) and its tokenizer.
pub struct Llama {
    path: PathBuf,
    name: String,
    cfg: LlamaConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    out_norm: Tensor,
    /// Separate output matrix `[vocab, d]`; `None` when tied to the embedding.
    output: Option<Tensor>,
    tokenizer: TextTokenizer,
    device: Device,
}

impl Llama {
    /// Loads a GGUF Llama model (architecture `llama`). Errors name the file: not GGUF, truncated
    /// (a tensor runs past the end), missing tensors, or shapes that contradict the metadata.
    pub fn load(path: &Path) -> Result<Self> {
        Self::from_gguf(&GgufFile::open(path)?)
    }

    /// The model in an opened GGUF file of architecture `llama`.
    pub fn from_gguf(file: &GgufFile) -> Result<Self> {
        file.expect("llama")?;
        let path = file.path();
        let cfg = LlamaConfig {
            d_model: file.usize("llama.embedding_length")?,
            n_layers: file.block_count("llama.block_count")?,
            n_heads: file.usize("llama.attention.head_count")?,
            n_kv_heads: file.usize("llama.attention.head_count_kv")?,
            d_ff: file.usize("llama.feed_forward_length")?,
            rms_eps: file.f64("llama.attention.layer_norm_rms_epsilon", 1e-5)?,
            rope_base: file.f64("llama.rope.freq_base", 10000.0)?,
            vocab: 0,
            max_context: file.usize("llama.context_length")?,
        };
        if cfg.n_heads == 0
            || cfg.n_kv_heads == 0
            || !cfg.n_heads.is_multiple_of(cfg.n_kv_heads)
            || !cfg.d_model.is_multiple_of(cfg.n_heads)
        {
            return Err(Error::model(
                path,
                format!(
                    "inconsistent heads: {} query heads, {} key/value heads, width {}",
                    cfg.n_heads, cfg.n_kv_heads, cfg.d_model
                ),
            ));
        }
        let device = Device::Cpu;
        let tokenizer = tokenizer::from_gguf(file.content(), path)?;
        let mut w = file.weights(&device);
        let d = cfg.d_model;
        let dh = d / cfg.n_heads;
        let kv = cfg.n_kv_heads * dh;
        let vocab = tokenizer.vocab_size();
        let embed = w.load("token_embd.weight", &[vocab, d])?;
        let mut blocks = Vec::with_capacity(cfg.n_layers);
        for i in 0..cfg.n_layers {
            let p = |s: &str| format!("blk.{i}.{s}.weight");
            let lin = |w: Tensor| Linear::new(&w, None).ctx("reading a weight");
            let vec = |w: Tensor| w.to_vec1::<f32>().ctx("reading a norm");
            blocks.push(Block {
                attn_norm: vec(w.load(&p("attn_norm"), &[d])?)?,
                qkv: Linear::concat(vec![
                    lin(w.load(&p("attn_q"), &[d, d])?)?,
                    lin(w.load(&p("attn_k"), &[kv, d])?)?,
                    lin(w.load(&p("attn_v"), &[kv, d])?)?,
                ]),
                wo: lin(w.load(&p("attn_output"), &[d, d])?)?,
                ffn_norm: vec(w.load(&p("ffn_norm"), &[d])?)?,
                gate_up: Linear::concat(vec![
                    lin(w.load(&p("ffn_gate"), &[cfg.d_ff, d])?)?,
                    lin(w.load(&p("ffn_up"), &[cfg.d_ff, d])?)?,
                ]),
                down: lin(w.load(&p("ffn_down"), &[d, cfg.d_ff])?)?,
            });
        }
        let out_norm = w.load("output_norm.weight", &[d])?;
        let output = w.optional("output.weight", &[vocab, d])?;
        Ok(Llama {
            path: path.to_path_buf(),
            name: file.stem(),
            cfg: LlamaConfig { vocab, ..cfg },
            embed,
            blocks,
            out_norm,
            output,
            tokenizer,
            device,
        })
    }

    /// The network's shape.
    pub fn config(&self) -> &LlamaConfig {
        &self.cfg
    }

    fn heads(&self) -> Heads {
        let c = &self.cfg;
        Heads {
            q: c.n_heads,
            kv: c.n_kv_heads,
            dh: c.d_model / c.n_heads,
        }
    }

    /// The blocks numbered `blocks`, in order, on the residual `x` `[b * t, d]` of `b` sequences
    /// of `t` tokens, updated in place; `after(i, x)` sees the residual after block `i`.
    fn blocks_from(
        &self,
        x: &mut [f32],
        (b, t): (usize, usize),
        blocks: std::ops::Range<usize>,
        mut after: impl FnMut(usize, &[f32]),
    ) {
        let (rows, d, heads) = (b * t, self.cfg.d_model, self.heads());
        let rope = fused::rope_tables(t, heads.dh, self.cfg.rope_base);
        let eps = self.cfg.rms_eps as f32;
        let mut h = vec![0.0f32; rows * d];
        let mut qkv = vec![0.0f32; rows * heads.width()];
        let mut y = vec![0.0f32; rows * d];
        let mut gate_up = vec![0.0f32; rows * 2 * self.cfg.d_ff];
        let mut f = vec![0.0f32; rows * self.cfg.d_ff];
        let mut scratch = Vec::new();
        for i in blocks {
            let blk = &self.blocks[i];
            fused::rms_norm(&mut h, x, &blk.attn_norm, eps);
            blk.qkv.forward(&h, &mut qkv);
            fused::rope(&mut qkv, t, heads, (&rope.0, &rope.1));
            attention(&qkv, (b, t), heads, Keys::Causal, &mut y, &mut scratch);
            blk.wo.accumulate(&y, x);
            fused::rms_norm(&mut h, x, &blk.ffn_norm, eps);
            blk.gate_up.forward(&h, &mut gate_up);
            fused::swiglu(&mut f, &gate_up, self.cfg.d_ff);
            blk.down.accumulate(&f, x);
            after(i, x);
        }
    }

    /// Runs blocks `0..=last` on equally long sequences; returns the residual `[b * t, d]`.
    fn run(&self, tokens: &[Vec<u32>], last: usize) -> Result<Vec<f32>> {
        Ok(self
            .run_capturing(tokens, &[last])?
            .pop()
            .expect("one layer asked, one returned"))
    }

    /// One pass through blocks `0..=max(layers)` that keeps the residual `[b * t, d]` after each
    /// block of `layers`, in the order asked.
    fn run_capturing(&self, tokens: &[Vec<u32>], layers: &[usize]) -> Result<Vec<Vec<f32>>> {
        let (b, t) = check_tokens(tokens, self.cfg.vocab)?;
        let ids: Vec<u32> = tokens.iter().flatten().copied().collect();
        let mut x: Vec<f32> = Tensor::from_vec(ids, b * t, &self.device)
            .and_then(|ids| self.embed.index_select(&ids, 0)?.flatten_all()?.to_vec1())
            .ctx("llama embedding")?;
        let last = layers.iter().copied().max().unwrap_or(0);
        let mut kept: Vec<Vec<f32>> = vec![Vec::new(); layers.len()];
        self.blocks_from(&mut x, (b, t), 0..last + 1, |i, x| {
            for (slot, _) in kept.iter_mut().zip(layers).filter(|(_, l)| **l == i) {
                *slot = x.to_vec();
            }
        });
        Ok(kept)
    }

    /// The final norm and the unembedding of `x` `[b, t, d]` ([`decoder::head`]).
    fn head(&self, x: &Tensor, last_only: bool) -> candle_core::Result<Tensor> {
        let norm = (&self.out_norm, self.cfg.rms_eps);
        decoder::head(x, norm, self.unembedding(), last_only)
    }

    /// The output matrix `[vocab, d]` (the embedding when they are tied).
    fn unembedding(&self) -> &Tensor {
        self.output.as_ref().unwrap_or(&self.embed)
    }
}

impl crate::CausalLm for Llama {
    fn tokenizer(&self) -> &TextTokenizer {
        &self.tokenizer
    }
    fn path(&self) -> &Path {
        &self.path
    }
    fn vocab(&self) -> usize {
        self.cfg.vocab
    }
    /// Next-token logits of the model continued from `resid`, the residual stream after block
    /// `layer` of `b` sequences of `t` tokens (row-major `[b * t, d_model]`, as
    /// [`ResidualModel::residual`] returns it): row-major `[b * t, vocab]`, or with `last_only`
    /// `[b, vocab]` of each sequence's last position. Run on the residual as read, it gives the
    /// model's own logits; edited, the model's with the edit spliced in after that block.
    fn logits_from(
        &self,
        resid: &[f32],
        (b, t): (usize, usize),
        layer: usize,
        last_only: bool,
    ) -> Result<Vec<f32>> {
        crate::check_layer(self, layer)?;
        let d = self.cfg.d_model;
        check_residual(resid, (b, t), d)?;
        let mut x = resid.to_vec();
        self.blocks_from(&mut x, (b, t), layer + 1..self.cfg.n_layers, |_, _| {});
        let go = || -> candle_core::Result<Vec<f32>> {
            let x = Tensor::from_vec(x, (b, t, d), &self.device)?;
            self.head(&x, last_only)?.flatten_all()?.to_vec1()
        };
        go().ctx("llama logits from a residual")
    }
    /// Next-token logits after the last position of each sequence, `[b][vocab]`.
    fn last_logits(&self, tokens: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        let (b, t) = check_tokens(tokens, self.cfg.vocab)?;
        let x = self.run(tokens, self.cfg.n_layers - 1)?;
        Tensor::from_vec(x, (b, t, self.cfg.d_model), &self.device)
            .and_then(|x| self.head(&x, true))
            .and_then(|l| l.to_vec2())
            .ctx("llama logits")
    }
    fn logit_effects(&self, dirs: &[f32], k: usize) -> Result<Vec<LogitEffects>> {
        decoder::logit_effects(dirs, k, &self.out_norm, self.unembedding())
    }
}

/// Tokens a direction promotes (`up`, largest first) and suppresses (`down`, most negative first).
#[derive(Clone, Debug)]
pub struct LogitEffects {
    /// (token id, logit effect), largest first.
    pub up: Vec<(u32, f32)>,
    /// (token id, logit effect), most negative first.
    pub down: Vec<(u32, f32)>,
}

/// Index of the largest value (first on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

impl ResidualModel for Llama {
    fn d_model(&self) -> usize {
        self.cfg.d_model
    }
    fn n_layers(&self) -> usize {
        self.cfg.n_layers
    }
    fn max_context(&self) -> usize {
        self.cfg.max_context
    }
    fn residual(&self, tokens: &[Vec<u32>], layer: usize) -> Result<Vec<f32>> {
        crate::check_layer(self, layer)?;
        self.run(tokens, layer)
    }

    /// One forward pass for every layer.
    fn residuals(&self, tokens: &[Vec<u32>], layers: &[usize]) -> Result<Vec<Vec<f32>>> {
        for &l in layers {
            crate::check_layer(self, l)?;
        }
        self.run_capturing(tokens, layers)
    }

    fn name(&self) -> &str {
        &self.name
    }
    fn flops_per_token(&self, layer: usize, t: usize) -> f64 {
        let c = &self.cfg;
        let d = c.d_model as f64;
        let kv = (c.n_kv_heads * c.d_model / c.n_heads) as f64;
        let per_block =
            2.0 * (2.0 * d * d + 2.0 * d * kv + 3.0 * d * c.d_ff as f64) + 2.0 * 2.0 * t as f64 * d;
        per_block * (layer + 1) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::CausalLm;

    #[test]
    fn argmax_takes_the_first_maximum() {
        assert_eq!(argmax(&[0.0, 3.0, 1.0, 3.0]), 1);
    }

    #[test]
    fn a_missing_or_corrupt_file_is_refused_with_its_name() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("nope.gguf");
        let e = Llama::load(&missing).err().unwrap().to_string();
        assert!(e.contains("nope.gguf") && e.contains("no such file"), "{e}");
        let junk = dir.path().join("junk.gguf");
        std::fs::write(&junk, b"this is not a gguf file at all").unwrap();
        let e = Llama::load(&junk).err().unwrap().to_string();
        assert!(e.contains("junk.gguf") && e.contains("GGUF"), "{e}");
    }

    /// Needs `scripts/fetch-assets smollm2`; skipped (with a message) without it.
    fn model() -> Option<Llama> {
        let p = crate::assets::path(crate::assets::Asset::SmolLm2);
        if !p.exists() {
            eprintln!(
                "skipped: {} absent (scripts/fetch-assets smollm2)",
                p.display()
            );
            return None;
        }
        Some(Llama::load(&p).unwrap())
    }

    #[test]
    fn smollm2_continues_a_prompt_sensibly_and_deterministically() {
        let Some(m) = model() else { return };
        assert_eq!(m.config().d_model, 576);
        assert_eq!(m.config().n_layers, 30);
        let tok = m.tokenizer();
        let prompt = tok.encode("The capital of France is").unwrap();
        let a = m.greedy(&prompt, 4).unwrap();
        let b = m.greedy(&prompt, 4).unwrap();
        assert_eq!(a, b, "greedy decoding must be deterministic");
        let text = tok.decode(&a).unwrap();
        eprintln!("The capital of France is -> {text:?}");
        assert!(text.contains("Paris"), "continuation: {text:?}");
    }

    #[test]
    fn logit_effects_match_a_naive_unembedding_of_the_whole_vocabulary() {
        let Some(m) = model() else { return };
        let d = m.d_model();
        let dirs: Vec<f32> = (0..2 * d)
            .map(|i| ((i * 37 % 101) as f32 - 50.0) / 50.0)
            .collect();
        let fx = m.logit_effects(&dirs, 3).unwrap();
        assert_eq!(fx.len(), 2);
        // effect[t] = sum_k W_U[t, k] g[k] dir[k], by a plain loop over every token.
        let g: Vec<f32> = m.out_norm.to_vec1().unwrap();
        let w: Vec<Vec<f32>> = m.embed.to_vec2().unwrap();
        for (r, e) in fx.iter().enumerate() {
            let dir = &dirs[r * d..(r + 1) * d];
            let mut naive: Vec<(u32, f32)> = w
                .iter()
                .enumerate()
                .map(|(t, row)| (t as u32, (0..d).map(|k| row[k] * g[k] * dir[k]).sum()))
                .collect();
            naive.sort_by(|a, b| b.1.total_cmp(&a.1));
            let close = |a: &[(u32, f32)], b: &[(u32, f32)]| {
                a.iter()
                    .zip(b)
                    .all(|(x, y)| (x.1 - y.1).abs() < 1e-3 * (1.0 + y.1.abs()))
            };
            assert!(close(&e.up, &naive[..3]), "{:?} vs {:?}", e.up, &naive[..3]);
            let bottom: Vec<(u32, f32)> = naive.iter().rev().take(3).copied().collect();
            assert!(close(&e.down, &bottom), "{:?} vs {bottom:?}", e.down);
            assert_eq!(e.up[0].0, naive[0].0);
        }
    }

    #[test]
    fn truncated_model_is_refused() {
        let Some(m) = model() else { return };
        let dir = tempfile::tempdir().unwrap();
        let cut = dir.path().join("cut.gguf");
        let bytes = std::fs::read(m.path()).unwrap();
        std::fs::write(&cut, &bytes[..bytes.len() / 2]).unwrap();
        let e = Llama::load(&cut).err().unwrap().to_string();
        assert!(
            e.contains("cut.gguf") && e.contains("runs past the end of the file"),
            "{e}"
        );
    }

    #[test]
    fn residual_rows_match_a_longer_run_causally_and_layers_are_checked() {
        let Some(m) = model() else { return };
        let tok = m.tokenizer();
        let long = tok.encode("Call me Ishmael. Some years ago").unwrap();
        let short = long[..4].to_vec();
        let r_long = m.residual(std::slice::from_ref(&long), 3).unwrap();
        let r_short = m.residual(std::slice::from_ref(&short), 3).unwrap();
        let d = m.d_model();
        // Causal attention: the first 4 positions do not see what follows.
        for (a, b) in r_short.iter().zip(&r_long[..4 * d]) {
            assert!((a - b).abs() < 1e-3 * (1.0 + a.abs()), "{a} vs {b}");
        }
        // A batch gives the same rows as one sequence at a time.
        let both = m
            .residual(&[short.clone(), long[1..5].to_vec()], 3)
            .unwrap();
        for (a, b) in both[..4 * d].iter().zip(&r_short) {
            assert!((a - b).abs() < 1e-4 * (1.0 + a.abs()));
        }
        let e = m.residual(&[short], 30).err().unwrap().to_string();
        assert!(e.contains("layer 30") && e.contains("30 layers"), "{e}");
    }
}
