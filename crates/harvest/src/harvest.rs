//! The harvest loop: corpus -> contexts -> model forward to a layer -> activation store with
//! token provenance. Resumable: shards are written atomically into the destination and listed
//! in `harvest-progress.json` only once complete; a restarted harvest with the same settings
//! continues after the last listed shard (no row is duplicated or lost), and the store's
//! `manifest.json` appears only at the very end, so a partial harvest is never read as a store.

use crate::corpus::{self, Context, InvalidUtf8, Utf8Report};
use crate::tokenizer::TextTokenizer;
use crate::{Error, ResidualModel, Result};
use serde::{Deserialize, Serialize};
use serde_json::json;
use sparsecode::data::store::{self, Manifest, ShardInfo, StoreDType, MANIFEST};
use sparsecode::data::tokens::{token_shard_name, write_token_shard, TokenRow};
use sparsecode::io::{read_json, write_json_atomic};
use std::path::{Path, PathBuf};

/// Progress file of a harvest in flight.
pub const PROGRESS: &str = "harvest-progress.json";

/// What to harvest.
#[derive(Clone, Debug, Serialize)]
pub struct HarvestConfig {
    /// Read the residual stream after this block (0-based).
    pub layer: usize,
    /// Tokens per context (the BOS token, when the model has one, comes on top and is not stored).
    pub context: usize,
    /// Tokens at the start of each context (after BOS) that are run but not stored: the first
    /// positions' residuals have outsized norms (an attention sink) that SAEs learn as features.
    pub exclude_positions: usize,
    /// What to do with corpus files that are not UTF-8.
    pub invalid_utf8: InvalidUtf8,
    /// Contexts per forward pass.
    pub batch: usize,
    /// Contexts per shard.
    pub shard_contexts: usize,
    /// On-disk value type.
    pub dtype: StoreDType,
    /// Stop after this many tokens (rounded down to whole contexts); all of the corpus if `None`.
    pub max_tokens: Option<u64>,
    /// Seed of the context shuffle (which contexts a token budget takes, and their order).
    pub seed: u64,
    /// Harvest only this part of the shards (a job array's task, or an MPI rank): joined with
    /// the other parts by [`crate::merge::merge_parts`], the rows of a whole harvest.
    pub part: Option<Part>,
    /// Threads of the forward passes (the run's own pool; candle's kernels run on it). Not part
    /// of the harvest's identity: a resume may use another count.
    #[serde(skip)]
    pub threads: usize,
}

/// Part `index` of `count` (0-based): shards `⌊index S/count⌋..⌊(index+1) S/count⌋` of a
/// harvest of `S` shards.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Part {
    /// Which part, `0..count`.
    pub index: usize,
    /// Parts in all.
    pub count: usize,
}

impl std::str::FromStr for Part {
    type Err = String;
    /// `i/P`, e.g. `0/4` for the first of four parts.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let bad = || format!("`{s}`: expected i/P with 0 <= i < P, e.g. 0/4");
        let (i, p) = s.split_once('/').ok_or_else(bad)?;
        let (index, count) = (
            i.trim().parse().map_err(|_| bad())?,
            p.trim().parse().map_err(|_| bad())?,
        );
        if index >= count {
            return Err(bad());
        }
        Ok(Part { index, count })
    }
}

impl HarvestConfig {
    fn validate(&self, model: &dyn ResidualModel) -> Result<()> {
        crate::check_layer(model, self.layer)?;
        let p = |field, reason: String| Err(Error::Param { field, reason });
        crate::check_context(model, self.context, self.exclude_positions)?;
        if self.batch == 0 {
            return p("batch", "at least 1 context".into());
        }
        if self.shard_contexts == 0 {
            return p("shard_contexts", "at least 1 context".into());
        }
        Ok(())
    }
}

/// The model, its tokenizer and where they came from.
pub struct Source<'a> {
    /// The network.
    pub model: &'a dyn ResidualModel,
    /// Its tokenizer.
    pub tokenizer: &'a TextTokenizer,
    /// The weights file (its SHA-256 identifies the model in the manifest).
    pub model_file: &'a Path,
    /// A text file or folder.
    pub corpus: &'a Path,
}

/// Where a harvest stands (reported after every shard).
#[derive(Clone, Debug)]
pub struct Progress {
    /// Contexts finished (including those from before a resume).
    pub contexts_done: usize,
    /// Contexts in this harvest.
    pub contexts_total: usize,
    /// Contexts that were already on disk when this run started.
    pub resumed_from: usize,
    /// Tokens per context.
    pub context: usize,
}

/// What a finished harvest produced.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// The store folder.
    pub store: PathBuf,
    /// Rows (= tokens) in the store.
    pub rows: u64,
    /// Contexts resumed from disk rather than computed.
    pub resumed_contexts: usize,
    /// Seconds of model time in this run.
    pub seconds: f64,
    /// Tokens computed per second in this run.
    pub tokens_per_second: f64,
    /// Corpus files that were not UTF-8, and what was done with them.
    pub invalid_utf8: Utf8Report,
}

#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
struct ProgressFile {
    identity: serde_json::Value,
    shards: Vec<ShardInfo>,
    token_shards: Vec<ShardInfo>,
}

/// SAELens-style hook name of the residual stream after block `layer`.
pub fn hook_name(layer: usize) -> String {
    format!("blocks.{layer}.hook_resid_post")
}

/// Runs the harvest into `dest`, resuming a harvest in progress there if its settings match.
pub fn harvest(
    src: &Source,
    cfg: &HarvestConfig,
    dest: &Path,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Summary> {
    sparsecode::Parallelism::threads(cfg.threads)
        .install(|| harvest_on_pool(src, cfg, dest, on_progress))
}

fn harvest_on_pool(
    src: &Source,
    cfg: &HarvestConfig,
    dest: &Path,
    on_progress: &mut (dyn FnMut(&Progress) + Send),
) -> Result<Summary> {
    cfg.validate(src.model)?;
    // One harvest per output, held to the end; checked before any work.
    let _lock = sparsecode::io::OutputLock::acquire(dest)?;
    if dest.exists() && !dest.is_dir() {
        return Err(Error::Resume {
            path: dest.to_path_buf(),
            reason: "exists and is not a folder; choose another output".into(),
        });
    }
    if dest.join(MANIFEST).exists() {
        return Err(Error::Resume {
            path: dest.to_path_buf(),
            reason: "already holds a finished store; remove it or choose another output".into(),
        });
    }
    let (docs, utf8) = corpus::read_corpus(src.corpus, cfg.invalid_utf8)?;
    let contexts = corpus::shuffled_contexts(
        (src.corpus, &docs),
        src.tokenizer,
        cfg.context,
        cfg.max_tokens,
        cfg.seed,
    )?;
    let corpus_hash = {
        let mut h = String::new();
        for d in &docs {
            h.push_str(&d.name);
            h.push('\0');
            h.push_str(&store::sha256_hex(d.text.as_bytes()));
        }
        store::sha256_hex(h.as_bytes())
    };
    let mut identity = json!({
        "model": src.model.name(),
        "model_sha256": store::sha256_file(src.model_file)?,
        "layer": cfg.layer,
        "context_size": cfg.context,
        "exclude_positions": cfg.exclude_positions,
        "dtype": cfg.dtype,
        "seed": cfg.seed,
        "contexts": contexts.len(),
        "shard_contexts": cfg.shard_contexts,
        "corpus_sha256": corpus_hash,
    });
    let n_shards = contexts.len().div_ceil(cfg.shard_contexts);
    let shards = match cfg.part {
        Some(p) => {
            identity["part"] = json!(p);
            sparsecode::distributed::part_of(n_shards, p.index, p.count)
        }
        None => 0..n_shards,
    };
    // The contexts of these shards.
    let first = shards.start * cfg.shard_contexts;
    let end = (shards.end * cfg.shard_contexts).min(contexts.len());
    let mut progress = start_or_resume(dest, &identity)?;
    let resumed = (progress.shards.len() * cfg.shard_contexts).min(end - first);
    on_progress(&Progress {
        contexts_done: resumed,
        contexts_total: end - first,
        resumed_from: resumed,
        context: cfg.context,
    });
    let started = std::time::Instant::now();
    let d = src.model.d_model();
    for s in shards.start + progress.shards.len()..shards.end {
        let lo = s * cfg.shard_contexts;
        let hi = (lo + cfg.shard_contexts).min(contexts.len());
        let mut acts = Vec::with_capacity((hi - lo) * cfg.context * d);
        let mut rows = Vec::with_capacity((hi - lo) * cfg.context);
        for batch in contexts[lo..hi].chunks(cfg.batch) {
            forward(src, cfg, batch, &mut acts)?;
            for c in batch {
                let kept = c.tokens.iter().enumerate().skip(cfg.exclude_positions);
                rows.extend(kept.map(|(i, &token)| TokenRow {
                    token,
                    doc: c.doc,
                    pos: c.start + i as u32,
                }));
            }
        }
        let shard = store::write_shard(dest, &store::shard_name(s), &acts, d, cfg.dtype)?;
        let tokens = write_token_shard(dest, &token_shard_name(s), &rows)?;
        progress.shards.push(shard);
        progress.token_shards.push(tokens);
        write_json_atomic(&dest.join(PROGRESS), &progress)?;
        on_progress(&Progress {
            contexts_done: hi - first,
            contexts_total: end - first,
            resumed_from: resumed,
            context: cfg.context,
        });
    }
    let seconds = started.elapsed().as_secs_f64();
    // The vocabulary as text, so the store can be read without the model.
    let vocab: Vec<String> = (0..src.tokenizer.vocab_size() as u32)
        .map(|i| src.tokenizer.token_text(i))
        .collect();
    write_json_atomic(&dest.join("vocab.json"), &vocab)?;
    let mut metadata = identity.clone();
    let extra = json!({
        "source": "harvest",
        "model_name": src.model.name(),
        "hook_name": hook_name(cfg.layer),
        "model_file": src.model_file.file_name().map(|f| f.to_string_lossy().into_owned()),
        "corpus": src.corpus.display().to_string(),
        "documents": docs.iter().map(|d| d.name.as_str()).collect::<Vec<_>>(),
        "token_shards": progress.token_shards,
        "vocab_file": "vocab.json",
        "bos_token": src.tokenizer.bos(),
    });
    if let Some(p) = cfg.part {
        metadata["part"] = json!({ "index": p.index, "count": p.count, "shards": n_shards });
    }
    if let (Some(m), Some(e)) = (metadata.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    let manifest = Manifest::new(d, cfg.dtype, progress.shards.clone(), metadata);
    let rows = manifest.rows;
    write_json_atomic(&dest.join(MANIFEST), &manifest)?;
    let _ = std::fs::remove_file(dest.join(PROGRESS));
    let computed = (end - first - resumed) * cfg.context;
    Ok(Summary {
        store: dest.to_path_buf(),
        rows,
        resumed_contexts: resumed,
        seconds,
        tokens_per_second: computed as f64 / seconds.max(1e-9),
        invalid_utf8: utf8,
    })
}

/// One forward pass over a batch of contexts, its rows appended to `acts` (BOS rows and the
/// excluded positions dropped): `batch * (context - exclude_positions)` rows of `d`.
fn forward(
    src: &Source,
    cfg: &HarvestConfig,
    batch: &[Context],
    acts: &mut Vec<f32>,
) -> Result<()> {
    let bos = src.tokenizer.bos();
    let seqs: Vec<Vec<u32>> = batch
        .iter()
        .map(|c| bos.into_iter().chain(c.tokens.iter().copied()).collect())
        .collect();
    let out = src.model.residual(&seqs, cfg.layer)?;
    let d = src.model.d_model();
    let skip = (usize::from(bos.is_some()) + cfg.exclude_positions) * d;
    let per_seq = (usize::from(bos.is_some()) + cfg.context) * d;
    for seq in out.chunks_exact(per_seq) {
        acts.extend_from_slice(&seq[skip..]);
    }
    Ok(())
}

/// Opens `dest` for a new harvest or checks a harvest in progress there against `identity`.
fn start_or_resume(dest: &Path, identity: &serde_json::Value) -> Result<ProgressFile> {
    let ppath = dest.join(PROGRESS);
    if ppath.exists() {
        let p: ProgressFile = read_json(&ppath)?;
        if let (Some(was), Some(now)) = (p.identity.as_object(), identity.as_object()) {
            for (k, v) in now {
                if was.get(k) != Some(v) {
                    return Err(Error::Resume {
                        path: dest.to_path_buf(),
                        reason: format!(
                            "a harvest with other settings is in progress here: `{k}` was {} and is now {v}; use the same settings to resume, or another output",
                            was.get(k).cloned().unwrap_or(serde_json::Value::Null)
                        ),
                    });
                }
            }
        }
        if p.shards.len() != p.token_shards.len() {
            return Err(Error::Resume {
                path: ppath,
                reason: "lists different numbers of activation and token shards".into(),
            });
        }
        let names = p
            .shards
            .iter()
            .chain(&p.token_shards)
            .map(|s| s.file.as_str());
        store::check_file_names(&ppath, "shards", names)?;
        // Every listed shard must be there, whole; anything else (a shard written but not yet
        // listed when the run stopped, temporary files) is dropped and recomputed.
        for s in p.shards.iter().chain(&p.token_shards) {
            let f = dest.join(&s.file);
            if store::sha256_file(&f).ok().as_deref() != Some(s.sha256.as_str()) {
                return Err(Error::Resume {
                    path: f,
                    reason: "listed as complete in the harvest progress but missing or changed"
                        .into(),
                });
            }
        }
        let keep: std::collections::HashSet<&str> = p
            .shards
            .iter()
            .chain(&p.token_shards)
            .map(|s| s.file.as_str())
            .chain([PROGRESS])
            .collect();
        for entry in std::fs::read_dir(dest).map_err(|e| Error::io(dest, e))? {
            let entry = entry.map_err(|e| Error::io(dest, e))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if !keep.contains(name.as_str()) && entry.path().is_file() {
                std::fs::remove_file(entry.path()).map_err(|e| Error::io(entry.path(), e))?;
            }
        }
        return Ok(p);
    }
    if dest.exists() {
        let non_empty = std::fs::read_dir(dest)
            .map_err(|e| Error::io(dest, e))?
            .next()
            .is_some();
        if non_empty {
            return Err(Error::Resume {
                path: dest.to_path_buf(),
                reason:
                    "exists, is not empty and holds no harvest in progress; choose another output"
                        .into(),
            });
        }
    }
    std::fs::create_dir_all(dest).map_err(|e| Error::io(dest, e))?;
    let p = ProgressFile {
        identity: identity.clone(),
        shards: Vec::new(),
        token_shards: Vec::new(),
    };
    write_json_atomic(&ppath, &p)?;
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use sparsecode::data::store::Store;
    use sparsecode::data::tokens::TokenTable;
    use std::sync::atomic::{AtomicUsize, Ordering};

    /// A word-level vocabulary of eight words plus <bos>.
    fn tiny_tokenizer() -> TextTokenizer {
        let json = r#"{"version":"1.0","truncation":null,"padding":null,"added_tokens":[],
          "normalizer":null,"pre_tokenizer":{"type":"Whitespace"},"post_processor":null,
          "decoder":null,"model":{"type":"WordLevel","vocab":{"<bos>":0,"<unk>":1,"the":2,
          "whale":3,"sea":4,"ship":5,"captain":6,"white":7,"deep":8},"unk_token":"<unk>"}}"#;
        TextTokenizer::from_json(json, Some(0)).unwrap()
    }

    /// Row = (token, position, layer, sum of earlier tokens) padded with zeros: causal and
    /// deterministic. Fails on call number `fail_at` to simulate an interrupted run.
    struct Fake {
        calls: AtomicUsize,
        fail_at: usize,
    }

    impl ResidualModel for Fake {
        fn d_model(&self) -> usize {
            5
        }
        fn n_layers(&self) -> usize {
            3
        }
        fn max_context(&self) -> usize {
            64
        }
        fn residual(&self, tokens: &[Vec<u32>], layer: usize) -> Result<Vec<f32>> {
            if self.calls.fetch_add(1, Ordering::SeqCst) + 1 == self.fail_at {
                return Err(Error::Param {
                    field: "test",
                    reason: "simulated crash".into(),
                });
            }
            let mut out = Vec::new();
            for s in tokens {
                let mut sum = 0.0;
                for (i, &t) in s.iter().enumerate() {
                    out.extend([t as f32, i as f32, layer as f32, sum, 0.0]);
                    sum += t as f32;
                }
            }
            Ok(out)
        }
        fn name(&self) -> &str {
            "fake"
        }
        fn flops_per_token(&self, _: usize, _: usize) -> f64 {
            0.0
        }
    }

    fn corpus(dir: &Path) -> PathBuf {
        let c = dir.join("corpus");
        std::fs::create_dir_all(&c).unwrap();
        std::fs::write(
            c.join("a.txt"),
            "the white whale the deep sea the ship ".repeat(5),
        )
        .unwrap();
        std::fs::write(c.join("b.txt"), "the captain the ship the sea ".repeat(4)).unwrap();
        c
    }

    /// A corpus, a weights file, the tiny tokenizer and a model that never fails.
    fn fixture(dir: &Path) -> (PathBuf, PathBuf, TextTokenizer, Fake) {
        let model_file = dir.join("weights.bin");
        std::fs::write(&model_file, b"fake weights").unwrap();
        let m = Fake {
            calls: AtomicUsize::new(0),
            fail_at: usize::MAX,
        };
        (corpus(dir), model_file, tiny_tokenizer(), m)
    }

    fn cfg() -> HarvestConfig {
        HarvestConfig {
            layer: 1,
            context: 4,
            exclude_positions: 0,
            invalid_utf8: InvalidUtf8::Error,
            batch: 2,
            shard_contexts: 3,
            dtype: StoreDType::F32,
            max_tokens: None,
            seed: 7,
            threads: 2,
            part: None,
        }
    }

    #[test]
    fn harvest_writes_rows_with_provenance_and_resumes_without_duplicates() {
        let t = tempfile::tempdir().unwrap();
        let (c, model_file, tok, m) = fixture(t.path());
        let src = Source {
            model: &m,
            tokenizer: &tok,
            model_file: &model_file,
            corpus: &c,
        };
        let whole = t.path().join("whole");
        let s = harvest(&src, &cfg(), &whole, &mut |_| {}).unwrap();
        // a: 40 words -> 10 contexts; b: 24 words -> 6 contexts; 16 x 4 rows.
        assert_eq!(s.rows, 64);
        let store = Store::open(&whole).unwrap();
        store.verify().unwrap();
        assert_eq!(
            store.manifest().metadata["hook_name"],
            "blocks.1.hook_resid_post"
        );
        let table = TokenTable::open(&store).unwrap();
        assert_eq!(table.documents, ["a.txt", "b.txt"]);
        let m = store.head(64).unwrap();
        for r in 0..64 {
            let row = m.row(r);
            // The stored token is the one the model saw, at position pos % 4 + 1 (after BOS).
            assert_eq!(row[0] as u32, table.rows[r].token);
            assert_eq!(row[1] as u32, table.rows[r].pos % 4 + 1);
            assert_eq!(row[2], 1.0);
        }
        assert_eq!(table.text(0), table.vocab[table.rows[0].token as usize]);

        // Interrupted after the first shard (the forward fails on its 3rd batch), then resumed.
        let part = t.path().join("part");
        let bad = Fake {
            calls: AtomicUsize::new(0),
            fail_at: 3,
        };
        let src_bad = Source { model: &bad, ..src };
        let e = harvest(&src_bad, &cfg(), &part, &mut |_| {}).unwrap_err();
        assert!(e.to_string().contains("simulated crash"));
        assert!(part.join(PROGRESS).exists() && !part.join(MANIFEST).exists());
        let e = Store::open(&part).unwrap_err().to_string();
        assert!(e.contains("not an activation store"), "{e}");
        // A resume with other settings is refused, naming the setting.
        let other = HarvestConfig { layer: 2, ..cfg() };
        let e = harvest(&src, &other, &part, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("`layer` was 1 and is now 2"), "{e}");
        let mut resumed_from = None;
        let s = harvest(&src, &cfg(), &part, &mut |p| {
            resumed_from.get_or_insert(p.resumed_from);
        })
        .unwrap();
        assert_eq!(resumed_from, Some(3));
        assert_eq!(s.resumed_contexts, 3);
        let a = Store::open(&whole).unwrap();
        let b = Store::open(&part).unwrap();
        assert_eq!(
            a.manifest().shards,
            b.manifest().shards,
            "byte-identical shards"
        );
        assert_eq!(
            a.manifest().metadata["token_shards"],
            b.manifest().metadata["token_shards"]
        );
        // A finished store is not harvested into again.
        let e = harvest(&src, &cfg(), &part, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("finished store"), "{e}");
    }

    #[test]
    fn bad_harvest_inputs_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let (c, model_file, tok, m) = fixture(t.path());
        let src = Source {
            model: &m,
            tokenizer: &tok,
            model_file: &model_file,
            corpus: &c,
        };
        let out = t.path().join("o");
        let e = harvest(
            &src,
            &HarvestConfig { layer: 3, ..cfg() },
            &out,
            &mut |_| {},
        );
        assert!(e.unwrap_err().to_string().contains("layer 3"));
        let e = harvest(
            &src,
            &HarvestConfig {
                context: 64,
                ..cfg()
            },
            &out,
            &mut |_| {},
        );
        assert!(e.unwrap_err().to_string().contains("context"));
        let e = harvest(
            &src,
            &HarvestConfig {
                context: 50,
                ..cfg()
            },
            &out,
            &mut |_| {},
        );
        assert!(e
            .unwrap_err()
            .to_string()
            .contains("no document has 50 tokens"));
        let e = harvest(
            &src,
            &HarvestConfig {
                max_tokens: Some(2),
                ..cfg()
            },
            &out,
            &mut |_| {},
        );
        assert!(e.unwrap_err().to_string().contains("max_tokens"));
        // A token budget takes whole contexts.
        let s = harvest(
            &src,
            &HarvestConfig {
                max_tokens: Some(10),
                ..cfg()
            },
            &out,
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(s.rows, 8);
        // A non-empty folder that is not a harvest is not written into.
        let e = harvest(&src, &cfg(), &c, &mut |_| {})
            .unwrap_err()
            .to_string();
        assert!(e.contains("not empty"), "{e}");
    }

    #[test]
    fn parts_join_to_the_one_process_store() {
        let t = tempfile::tempdir().unwrap();
        let (c, model_file, tok, m) = fixture(t.path());
        let src = Source {
            model: &m,
            tokenizer: &tok,
            model_file: &model_file,
            corpus: &c,
        };
        let whole = t.path().join("whole");
        harvest(&src, &cfg(), &whole, &mut |_| {}).unwrap();
        // 16 contexts in shards of 3: 6 shards, in 4 parts of 1 or 2.
        let parts: Vec<PathBuf> = (0..4)
            .map(|i| {
                let dir = t.path().join(format!("part{i}"));
                let part = Some(Part { index: i, count: 4 });
                harvest(&src, &HarvestConfig { part, ..cfg() }, &dir, &mut |_| {}).unwrap();
                dir
            })
            .collect();
        let joined = t.path().join("joined");
        // Every part is needed, once.
        let e = crate::merge::merge_parts(&parts[..3], &joined)
            .unwrap_err()
            .to_string();
        assert!(e.contains("has 4 parts; given parts [0, 1, 2]"), "{e}");
        let twice = [
            parts[0].clone(),
            parts[0].clone(),
            parts[2].clone(),
            parts[3].clone(),
        ];
        assert!(crate::merge::merge_parts(&twice, &joined).is_err());
        assert!(!joined.exists());
        // Given in any order.
        let shuffled = [
            parts[2].clone(),
            parts[0].clone(),
            parts[3].clone(),
            parts[1].clone(),
        ];
        let rows = crate::merge::merge_parts(&shuffled, &joined).unwrap();
        assert_eq!(rows, 64);
        let read = |dir: &Path| -> serde_json::Value { read_json(&dir.join(MANIFEST)).unwrap() };
        assert_eq!(
            read(&joined),
            read(&whole),
            "the joined manifest is the whole harvest's"
        );
        Store::open(&joined).unwrap().verify().unwrap();
        for s in Store::open(&whole).unwrap().manifest().shards.iter() {
            let a = std::fs::read(whole.join(&s.file)).unwrap();
            assert_eq!(
                a,
                std::fs::read(joined.join(&s.file)).unwrap(),
                "{}",
                s.file
            );
        }
        // A part of another harvest is refused.
        let other = t.path().join("other");
        let cfg_other = HarvestConfig {
            seed: 8,
            part: Some(Part { index: 3, count: 4 }),
            ..cfg()
        };
        harvest(&src, &cfg_other, &other, &mut |_| {}).unwrap();
        let mixed = [parts[0].clone(), parts[1].clone(), parts[2].clone(), other];
        let e = crate::merge::merge_parts(&mixed, &t.path().join("mixed"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("another harvest"), "{e}");
        assert!("3/4".parse::<Part>().is_ok() && "4/4".parse::<Part>().is_err());
        assert!("x".parse::<Part>().is_err() && "1/0".parse::<Part>().is_err());
    }
}
