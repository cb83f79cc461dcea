//! Activations streamed from the model straight into training, with no store on disk (as
//! sparsify trains): one forward pass per shard of contexts reads the residual stream after
//! every hooked block at once, and each hook is a [`RowSource`] the trainer reads like a store.
//!
//! The contexts are drawn from the corpus as a harvest draws them (seeded shuffle, token budget)
//! and split into shards of `shard_contexts` contexts. A shard's activations are computed when a
//! trainer first reads it and kept in a small cache shared by the hooks' trainers (the shards of
//! one shuffle window and two more), so trainers that run side by side share each forward pass;
//! a shard evicted before a slow trainer reads it is computed again, with the same values. Every
//! epoch runs the model again: nothing is written to disk.

use crate::corpus::{self, Context, InvalidUtf8};
use crate::models::Loaded;
use crate::{Error, ResidualModel, Result};
use serde::{Deserialize, Serialize};
use sparsecode::data::store::sha256_hex;
use sparsecode::data::RowSource;
use sparsecode::Matrix;
use std::path::PathBuf;
use std::sync::{Arc, Condvar, Mutex};

/// What is streamed: everything needed to rebuild the same stream (recorded in the run, so that
/// a resumed run streams the same rows).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSpec {
    /// `smollm2`, `minilm`, a .gguf file or a BERT folder.
    pub model: String,
    /// A text file or folder.
    pub corpus: PathBuf,
    /// The hooks: residual stream after these blocks.
    pub layers: Vec<usize>,
    /// Tokens per context (BOS on top, not streamed).
    pub context: usize,
    /// Tokens after BOS run but not streamed.
    pub exclude_positions: usize,
    /// Token budget (whole contexts); all of the corpus when `None`.
    pub max_tokens: Option<u64>,
    /// Seed of the context shuffle.
    pub seed: u64,
    /// Contexts per shard (the unit of computation and caching).
    pub shard_contexts: usize,
    /// Contexts per forward pass.
    pub batch: usize,
    /// Corpus files that are not UTF-8.
    pub invalid_utf8: InvalidUtf8,
    /// Rows per shuffle window of the trainers (sizes the cache).
    pub window_rows: u64,
}

enum Slot {
    Computing,
    Ready(Arc<Vec<Vec<f32>>>),
}

/// The model, the contexts and the cache of computed shards.
pub struct ModelStream {
    model: Loaded,
    spec: StreamSpec,
    contexts: Vec<Context>,
    fingerprint: String,
    capacity: usize,
    /// `(shard, slot)`, least recently used first.
    cache: Mutex<Vec<(usize, Slot)>>,
    ready: Condvar,
}

impl ModelStream {
    /// Loads the model and the corpus and draws the contexts; checks every field of `spec`.
    pub fn open(spec: StreamSpec) -> Result<Arc<Self>> {
        let (model, file) = Loaded::load(&spec.model)?;
        let m = model.residual_model();
        for &l in &spec.layers {
            crate::check_layer(m, l)?;
        }
        let bad = |field, reason: String| Err(Error::Param { field, reason });
        if spec.layers.is_empty() {
            return bad("layer", "give at least one layer".into());
        }
        crate::check_context(m, spec.context, spec.exclude_positions)?;
        if spec.shard_contexts == 0 || spec.batch == 0 {
            return bad("shard_contexts, batch", "at least 1 context each".into());
        }
        let (docs, _) = corpus::read_corpus(&spec.corpus, spec.invalid_utf8)?;
        let contexts = corpus::shuffled_contexts(
            (&spec.corpus, &docs),
            model.tokenizer(),
            spec.context,
            spec.max_tokens,
            spec.seed,
        )?;
        // The rows of a hook depend on neither the other hooks nor the cache's size.
        let same_rows = StreamSpec {
            layers: Vec::new(),
            window_rows: 0,
            ..spec.clone()
        };
        let mut identity = serde_json::to_string(&same_rows).unwrap_or_default();
        identity.push_str(&sparsecode::data::store::sha256_file(&file)?);
        for d in &docs {
            identity.push_str(&d.name);
            identity.push_str(&sha256_hex(d.text.as_bytes()));
        }
        let rows_per_shard = (spec.shard_contexts * (spec.context - spec.exclude_positions)) as u64;
        let capacity = spec.window_rows.div_ceil(rows_per_shard.max(1)) as usize + 2;
        let cached = [
            capacity,
            rows_per_shard as usize,
            m.d_model(),
            spec.layers.len(),
        ];
        sparsecode::memory::admit_array("model stream cache", &cached, 4)?;
        Ok(Arc::new(ModelStream {
            model,
            fingerprint: format!("stream:{}", sha256_hex(identity.as_bytes())),
            spec,
            contexts,
            capacity,
            cache: Mutex::new(Vec::new()),
            ready: Condvar::new(),
        }))
    }

    /// The spec it was opened with.
    pub fn spec(&self) -> &StreamSpec {
        &self.spec
    }

    /// The network.
    pub fn model(&self) -> &dyn ResidualModel {
        self.model.residual_model()
    }

    /// The rows of hook `index` as a source for training.
    pub fn hook(self: &Arc<Self>, index: usize) -> HookSource {
        HookSource {
            stream: Arc::clone(self),
            index,
        }
    }

    fn kept(&self) -> usize {
        self.spec.context - self.spec.exclude_positions
    }

    fn shards(&self) -> usize {
        self.contexts.len().div_ceil(self.spec.shard_contexts)
    }

    fn shard_contexts(&self, s: usize) -> &[Context] {
        let lo = s * self.spec.shard_contexts;
        &self.contexts[lo..(lo + self.spec.shard_contexts).min(self.contexts.len())]
    }

    /// Shard `s`'s rows for every hook, from the cache or computed (once, however many
    /// trainers ask at the same time).
    fn shard(&self, s: usize) -> Result<Arc<Vec<Vec<f32>>>> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        while let Some(i) = cache.iter().position(|(k, _)| *k == s) {
            match &cache[i].1 {
                Slot::Ready(rows) => {
                    let rows = Arc::clone(rows);
                    let entry = cache.remove(i);
                    cache.push(entry);
                    return Ok(rows);
                }
                Slot::Computing => {
                    cache = self.ready.wait(cache).unwrap_or_else(|e| e.into_inner());
                }
            }
        }
        cache.push((s, Slot::Computing));
        drop(cache);
        let computed = self.compute(s);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.retain(|(k, _)| *k != s);
        let out = computed.map(Arc::new);
        if let Ok(rows) = &out {
            cache.push((s, Slot::Ready(Arc::clone(rows))));
            while cache.len() > self.capacity {
                match cache
                    .iter()
                    .position(|(_, slot)| matches!(slot, Slot::Ready(_)))
                {
                    Some(i) => drop(cache.remove(i)),
                    None => break,
                }
            }
        }
        self.ready.notify_all();
        out
    }

    fn compute(&self, s: usize) -> Result<Vec<Vec<f32>>> {
        let m = self.model();
        let d = m.d_model();
        let bos = self.model.tokenizer().bos();
        let skip = (usize::from(bos.is_some()) + self.spec.exclude_positions) * d;
        let per_seq = (usize::from(bos.is_some()) + self.spec.context) * d;
        let layers = &self.spec.layers;
        let mut out = vec![Vec::new(); layers.len()];
        for batch in self.shard_contexts(s).chunks(self.spec.batch) {
            let seqs: Vec<Vec<u32>> = batch
                .iter()
                .map(|c| bos.into_iter().chain(c.tokens.iter().copied()).collect())
                .collect();
            let acts = m.residuals(&seqs, layers)?;
            for (dst, layer_acts) in out.iter_mut().zip(acts) {
                for seq in layer_acts.chunks_exact(per_seq) {
                    dst.extend_from_slice(&seq[skip..]);
                }
            }
        }
        Ok(out)
    }
}

/// One hook's rows of a [`ModelStream`].
pub struct HookSource {
    stream: Arc<ModelStream>,
    index: usize,
}

impl HookSource {
    /// The block this hook reads after.
    pub fn layer(&self) -> usize {
        self.stream.spec.layers[self.index]
    }

    /// The stream it reads.
    pub fn stream(&self) -> &Arc<ModelStream> {
        &self.stream
    }

    /// Identifies the rows: the model file, the corpus's content, every setting that changes
    /// the rows, and the layer.
    pub fn fingerprint(&self) -> String {
        format!("{}:layer{}", self.stream.fingerprint, self.layer())
    }
}

impl RowSource for HookSource {
    fn rows(&self) -> u64 {
        (self.stream.contexts.len() * self.stream.kept()) as u64
    }
    fn cols(&self) -> usize {
        self.stream.model().d_model()
    }
    fn shard_rows(&self) -> Vec<u64> {
        (0..self.stream.shards())
            .map(|s| (self.stream.shard_contexts(s).len() * self.stream.kept()) as u64)
            .collect()
    }
    fn read(&self, shard: usize, start: u64, out: &mut [f32]) -> sparsecode::Result<()> {
        let rows = self.stream.shard(shard).map_err(core_error)?;
        let src = &rows[self.index];
        let lo = start as usize * self.cols();
        let hi = lo + out.len();
        if hi > src.len() {
            return Err(sparsecode::Error::param(
                "shard",
                format!("rows {start}.. of shard {shard} run past its end"),
            ));
        }
        out.copy_from_slice(&src[lo..hi]);
        Ok(())
    }
    fn head(&self, n: u64) -> sparsecode::Result<Matrix> {
        let d = self.cols();
        let n = n.min(self.rows()) as usize;
        let mut values = Vec::with_capacity(n * d);
        for s in 0..self.stream.shards() {
            if values.len() >= n * d {
                break;
            }
            let rows = self.stream.shard(s).map_err(core_error)?;
            let take = (n * d - values.len()).min(rows[self.index].len());
            values.extend_from_slice(&rows[self.index][..take]);
        }
        Matrix::from_vec(n, d, values)
    }
    fn describe(&self) -> String {
        format!(
            "{} after block {} (streamed from the model)",
            self.stream.model().name(),
            self.layer()
        )
    }
}

/// A model error as the core's error (the trainer's sources speak the core's type).
fn core_error(e: Error) -> sparsecode::Error {
    match e {
        Error::Core(c) => c,
        other => sparsecode::Error::param("model stream", other.to_string()),
    }
}
