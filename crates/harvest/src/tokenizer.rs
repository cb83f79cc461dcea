//! Text to token ids with the model's own tokenizer: BERT's `tokenizer.json` as it is, or a GGUF
//! model's rebuilt from its metadata: byte-level BPE from the vocabulary and merges (`gpt2`; the
//! GPT-2 style pre-tokenizer with single digits, which is what SmolLM2's `smollm` pre-tokenizer
//! type means), or SentencePiece BPE (`llama`, Gemma's), whose file lists no merges.
//!
//! SentencePiece BPE as transformers rebuilds it from a GGUF file (and Gemma's own
//! `tokenizer.json` spells it): spaces become `▁`; pieces are merged by BPE with the merges every
//! vocabulary piece implies (each split of a piece into two pieces of the vocabulary), ranked by
//! the merged piece's place in the file (Gemma's scores do not follow its merge order), earlier
//! first, and within one piece longer left parts first; characters outside the vocabulary fall
//! back to their UTF-8 bytes (`<0xAB>` pieces). A piece of two or more spaces is stored with real
//! spaces and is respelled with `▁` so that it can be reached. Control pieces are matched whole.

use crate::{Error, Result};
use candle_core::quantized::gguf_file::Content;
use std::path::Path;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::digits::Digits;
use tokenizers::pre_tokenizers::sequence::Sequence;
use tokenizers::{AddedToken, Tokenizer};

/// A tokenizer plus what the harvest needs to know about it.
pub struct TextTokenizer {
    inner: Tokenizer,
    /// Token prepended to every context (the model's BOS), if any.
    bos: Option<u32>,
    /// Whether `encode` adds the post-processor's special tokens (BERT's [CLS] ... [SEP]).
    add_special: bool,
}

fn tk_err(e: impl std::fmt::Display) -> Error {
    Error::Tokenizer(e.to_string())
}

impl TextTokenizer {
    /// A `tokenizer.json` file (padding and truncation turned off: the caller decides lengths).
    pub fn from_file(path: &Path, add_special: bool) -> Result<Self> {
        if !path.exists() {
            return Err(Error::model(path, "no such file"));
        }
        let mut inner = Tokenizer::from_file(path)
            .map_err(|e| Error::model(path, format!("not a readable tokenizer.json: {e}")))?;
        inner.with_padding(None);
        inner
            .with_truncation(None)
            .map_err(|e| Error::model(path, e.to_string()))?;
        // BERT-style models start every sequence with [CLS].
        let bos = if add_special {
            inner.token_to_id("[CLS]")
        } else {
            None
        };
        Ok(TextTokenizer {
            inner,
            bos,
            add_special,
        })
    }

    /// A tokenizer from `tokenizer.json` text (used by tests for tiny vocabularies).
    pub fn from_json(json: &str, bos: Option<u32>) -> Result<Self> {
        let inner: Tokenizer = json.parse().map_err(tk_err)?;
        Ok(TextTokenizer {
            inner,
            bos,
            add_special: false,
        })
    }

    /// Encodes `text` (no BOS; see [`TextTokenizer::bos`]).
    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode_fast(text, self.add_special)
            .map_err(tk_err)?
            .get_ids()
            .to_vec())
    }

    /// Encodes `text` without any special tokens (for cutting a document into contexts).
    pub fn encode_plain(&self, text: &str) -> Result<Vec<u32>> {
        Ok(self
            .inner
            .encode_fast(text, false)
            .map_err(tk_err)?
            .get_ids()
            .to_vec())
    }

    /// Decodes ids to text (special tokens kept).
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(tk_err)
    }

    /// How one token reads on its own (for dashboards): byte-level pieces decoded, partial UTF-8
    /// shown with replacement characters.
    pub fn token_text(&self, id: u32) -> String {
        self.inner
            .decode(&[id], false)
            .unwrap_or_else(|_| self.inner.id_to_token(id).unwrap_or_default())
    }

    /// Vocabulary size including added tokens.
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// The beginning-of-sequence token the model expects, if any.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The id of a token string, if it is in the vocabulary.
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}

/// Rebuilds the tokenizer of a GGUF model: byte-level BPE (`tokenizer.ggml.model = gpt2`) or
/// SentencePiece BPE (`llama`).
pub fn from_gguf(c: &Content, path: &Path) -> Result<TextTokenizer> {
    let kind = c
        .metadata
        .get("tokenizer.ggml.model")
        .ok_or_else(|| Error::model(path, "GGUF metadata has no `tokenizer.ggml.model`"))?
        .to_string()
        .map_err(|e| Error::model(path, e.to_string()))?;
    match kind.as_str() {
        "gpt2" => byte_level_from_gguf(c, path),
        "llama" => sentencepiece_from_gguf(c, path),
        _ => Err(Error::model(
            path,
            format!(
                "tokenizer model '{kind}' (byte-level BPE, 'gpt2', and SentencePiece BPE, 'llama', are supported)"
            ),
        )),
    }
}

/// The pieces of a GGUF vocabulary, their types (1 normal, 3 control, 4 user-defined, ...) and
/// the BOS id.
struct GgufVocab {
    tokens: Vec<String>,
    types: Vec<i32>,
    bos: Option<u32>,
}

impl GgufVocab {
    fn read(c: &Content, path: &Path) -> Result<Self> {
        let tokens = meta_strings(c, path, "tokenizer.ggml.tokens")?;
        let types = match c.metadata.get("tokenizer.ggml.token_type") {
            Some(v) => v
                .to_vec()
                .map_err(|e| Error::model(path, e.to_string()))?
                .iter()
                .map(|t| t.to_i32().unwrap_or(1))
                .collect(),
            None => vec![1; tokens.len()],
        };
        let bos = c
            .metadata
            .get("tokenizer.ggml.bos_token_id")
            .and_then(|v| v.to_u32().ok());
        Ok(GgufVocab { tokens, types, bos })
    }

    /// Piece to id.
    fn ids(&self) -> Vocab {
        self.tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), i as u32))
            .collect()
    }

    /// The pieces of type `kind`, as added tokens matched whole (never normalised or split).
    fn added(&self, kind: i32, special: bool) -> Vec<AddedToken> {
        self.tokens
            .iter()
            .zip(&self.types)
            .filter(|(_, &t)| t == kind)
            .map(|(s, _)| AddedToken::from(s.clone(), special).normalized(false))
            .collect()
    }

    /// The tokenizer around `inner`, with the control pieces (type 3) as special tokens.
    fn finish(&self, mut inner: Tokenizer) -> TextTokenizer {
        inner.add_special_tokens(&self.added(3, true));
        TextTokenizer {
            inner,
            bos: self.bos,
            add_special: false,
        }
    }
}

/// Byte-level BPE from the vocabulary and merges in the metadata.
fn byte_level_from_gguf(c: &Content, path: &Path) -> Result<TextTokenizer> {
    let v = GgufVocab::read(c, path)?;
    let merges: Vec<(String, String)> = meta_strings(c, path, "tokenizer.ggml.merges")?
        .into_iter()
        .map(|m| match m.split_once(' ') {
            Some((a, b)) => Ok((a.to_string(), b.to_string())),
            None => Err(Error::model(path, format!("malformed merge '{m}'"))),
        })
        .collect::<Result<_>>()?;
    let bpe = BPE::builder()
        .vocab_and_merges(v.ids(), merges)
        .build()
        .map_err(|e| Error::model(path, format!("BPE from metadata: {e}")))?;
    let mut inner = Tokenizer::new(bpe);
    inner.with_pre_tokenizer(Some(Sequence::new(vec![
        Digits::new(true).into(),
        ByteLevel::new(false, true, true).into(),
    ])));
    inner.with_decoder(Some(ByteLevelDecoder::default()));
    Ok(v.finish(inner))
}

/// The string array `key` of the metadata.
fn meta_strings(c: &Content, path: &Path, key: &str) -> Result<Vec<String>> {
    c.metadata
        .get(key)
        .ok_or_else(|| Error::model(path, format!("GGUF metadata has no `{key}`")))?
        .to_vec()
        .map_err(|e| Error::model(path, format!("`{key}`: {e}")))?
        .iter()
        .map(|v| {
            v.to_string()
                .cloned()
                .map_err(|e| Error::model(path, format!("`{key}`: {e}")))
        })
        .collect()
}

/// SentencePiece BPE (`tokenizer.ggml.model = llama`), rebuilt as the module docs say.
fn sentencepiece_from_gguf(c: &Content, path: &Path) -> Result<TextTokenizer> {
    use tokenizers::decoders::{
        byte_fallback::ByteFallback, fuse::Fuse, sequence::Sequence as Decoders,
    };
    use tokenizers::normalizers::replace::Replace;
    let mut v = GgufVocab::read(c, path)?;
    for t in &mut v.tokens {
        if t.len() >= 2 && t.chars().all(|ch| ch == ' ') {
            *t = "\u{2581}".repeat(t.len());
        }
    }
    let vocab = v.ids();
    let merges = implied_merges(&v.tokens, &vocab);
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .byte_fallback(true)
        .fuse_unk(true);
    if v.tokens.iter().any(|t| t == "<unk>") {
        builder = builder.unk_token("<unk>".to_string());
    }
    let bpe = builder
        .build()
        .map_err(|e| Error::model(path, format!("BPE from metadata: {e}")))?;
    let mut inner = Tokenizer::new(bpe);
    inner.with_normalizer(Some(Replace::new(" ", "\u{2581}").map_err(tk_err)?));
    let space = Replace::new("\u{2581}", " ").map_err(tk_err)?;
    inner.with_decoder(Some(Decoders::new(vec![
        space.into(),
        ByteFallback::default().into(),
        Fuse::default().into(),
    ])));
    // User-defined pieces (type 4, Gemma's runs of newlines and tabs) are matched whole as plain
    // added tokens.
    inner.add_tokens(&v.added(4, false));
    Ok(v.finish(inner))
}

/// The merges a SentencePiece vocabulary implies: every split of a piece into two pieces of the
/// vocabulary, ranked by the piece's place in the file (earlier first), then longer left part,
/// then longer right part, then the parts' ids.
fn implied_merges(tokens: &[String], vocab: &Vocab) -> Vec<(String, String)> {
    let mut merges: Vec<(usize, usize, usize, u32, u32, String, String)> = Vec::new();
    for (rank, piece) in tokens.iter().enumerate() {
        let bounds: Vec<usize> = piece.char_indices().map(|(i, _)| i).skip(1).collect();
        for at in bounds {
            let (l, r) = piece.split_at(at);
            if let (Some(&il), Some(&ir)) = (vocab.get(l), vocab.get(r)) {
                let (nl, nr) = (l.chars().count(), r.chars().count());
                merges.push((rank, nl, nr, il, ir, l.to_string(), r.to_string()));
            }
        }
    }
    merges.sort_by(|a, b| {
        a.0.cmp(&b.0)
            .then(b.1.cmp(&a.1))
            .then(b.2.cmp(&a.2))
            .then(a.3.cmp(&b.3))
            .then(a.4.cmp(&b.4))
    });
    merges.into_iter().map(|m| (m.5, m.6)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::assets::{path, Asset};

    #[test]
    fn minilm_tokenizer_gives_the_known_bert_ids() {
        let p = path(Asset::MiniLmTokenizer);
        if !p.exists() {
            eprintln!(
                "skipped: {} absent (scripts/fetch-assets minilm)",
                p.display()
            );
            return;
        }
        let t = TextTokenizer::from_file(&p, true).unwrap();
        // bert-base-uncased's vocabulary: [CLS] 101, hello 7592, world 2088, [SEP] 102.
        assert_eq!(t.encode("Hello world").unwrap(), vec![101, 7592, 2088, 102]);
        assert_eq!(
            t.encode("The cat.").unwrap(),
            vec![101, 1996, 4937, 1012, 102]
        );
        // No padding to 128: the file's padding setting is turned off.
        assert_eq!(t.encode("a").unwrap().len(), 3);
        assert_eq!(t.vocab_size(), 30522);
    }

    /// Gemma 3's SentencePiece tokenizer rebuilt from its GGUF gives transformers' ids (the
    /// fixture: transformers 5.24 loading the same file, scripts/gemma3-tokens.py).
    #[test]
    fn gemma3_tokenizer_from_gguf_matches_transformers() {
        let p = path(Asset::Gemma3);
        if !p.exists() {
            eprintln!(
                "skipped: {} absent (scripts/fetch-assets gemma3)",
                p.display()
            );
            return;
        }
        let map = sparsecode::io::map_file(&p, "a GGUF model file").unwrap();
        let c = crate::gguf::read(&p, &map).unwrap();
        let t = from_gguf(&c, &p).unwrap();
        assert_eq!(t.bos(), Some(2));
        let fixture: serde_json::Value =
            serde_json::from_str(include_str!("../tests/fixtures/gemma3_tokens.json")).unwrap();
        for case in fixture["texts"].as_array().unwrap() {
            let text = case["text"].as_str().unwrap();
            let want: Vec<u32> = case["ids"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect();
            assert_eq!(t.encode(text).unwrap(), want, "{text:?}");
            assert_eq!(t.decode(&want).unwrap(), text, "{text:?}");
        }
    }

    #[test]
    fn smollm2_tokenizer_from_gguf_metadata_round_trips_and_splits_like_gpt2() {
        let p = path(Asset::SmolLm2);
        if !p.exists() {
            eprintln!(
                "skipped: {} absent (scripts/fetch-assets smollm2)",
                p.display()
            );
            return;
        }
        let mut f = std::io::BufReader::new(std::fs::File::open(&p).unwrap());
        let c = Content::read(&mut f).unwrap();
        let t = from_gguf(&c, &p).unwrap();
        assert_eq!(t.vocab_size(), 49152);
        // Whole words with their leading space are single tokens (Ġ marks the space).
        let ids = t.encode("Hello world").unwrap();
        assert_eq!(
            ids,
            vec![t.token_id("Hello").unwrap(), t.token_id("Ġworld").unwrap()]
        );
        // Digits are split one by one (the `smollm` pre-tokenizer).
        let ids = t.encode("2024").unwrap();
        assert_eq!(ids.len(), 4);
        assert_eq!(t.decode(&ids).unwrap(), "2024");
        // Control tokens are kept whole.
        let im = t.token_id("<|im_start|>").unwrap();
        assert_eq!(t.encode("<|im_start|>user").unwrap()[0], im);
        // Byte-level BPE is lossless on any text, accents and emoji included.
        for s in [
            "Call me Ishmael.",
            "naïve café – 東京 🚀",
            "  two  spaces\nnewline",
        ] {
            let ids = t.encode(s).unwrap();
            assert_eq!(t.decode(&ids).unwrap(), s);
        }
        // Known ids of SmolLM2's vocabulary: <|endoftext|> 0, <|im_start|> 1, <|im_end|> 2.
        assert_eq!(t.token_id("<|endoftext|>"), Some(0));
        assert_eq!(im, 1);
        assert_eq!(t.token_id("<|im_end|>"), Some(2));
    }
}
