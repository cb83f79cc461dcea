//! Text in: a file or a folder of files becomes documents (UTF-8 checked, names kept), and
//! documents become fixed-length token contexts that remember where they came from.

use crate::tokenizer::TextTokenizer;
use crate::{Error, Result};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// One text file.
#[derive(Clone, Debug)]
pub struct Document {
    /// Name relative to the corpus root (the file name for a single file).
    pub name: String,
    /// Its text.
    pub text: String,
}

/// `context` consecutive tokens of one document, starting at token `start`.
#[derive(Clone, Debug, PartialEq)]
pub struct Context {
    /// Index of the document in the corpus.
    pub doc: u32,
    /// Position of the first token in the document's token sequence.
    pub start: u32,
    /// The token ids.
    pub tokens: Vec<u32>,
}

fn list_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    let entries = std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| Error::io(dir, e))?;
        let path = entry.path();
        let hidden = entry.file_name().to_string_lossy().starts_with('.');
        if hidden {
            continue;
        }
        if path.is_dir() {
            list_files(&path, out)?;
        } else if path.is_file() {
            out.push(path);
        }
    }
    Ok(())
}

/// What reading a corpus does with a file that is not valid UTF-8.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum InvalidUtf8 {
    /// Stop, naming the file and the byte offset.
    Error,
    /// Leave the file out.
    Skip,
    /// Read it with each invalid sequence replaced by U+FFFD (the rest of its text kept).
    #[default]
    Replace,
}

/// The files a corpus read skipped or repaired (names relative to the corpus root).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Utf8Report {
    /// Files left out ([`InvalidUtf8::Skip`]).
    pub skipped: Vec<String>,
    /// Files read with replacement characters ([`InvalidUtf8::Replace`]).
    pub replaced: Vec<String>,
}

/// Reads a text file, or every (non-hidden) file under a folder in name order. Refuses a file
/// that is not UTF-8 (naming the byte offset) and a corpus without any non-blank text.
pub fn read_documents(path: &Path) -> Result<Vec<Document>> {
    Ok(read_corpus(path, InvalidUtf8::Error)?.0)
}

/// [`read_documents`] with a choice for files that are not UTF-8, and the list of those files.
pub fn read_corpus(path: &Path, invalid: InvalidUtf8) -> Result<(Vec<Document>, Utf8Report)> {
    if !path.exists() {
        return Err(Error::Corpus {
            path: path.to_path_buf(),
            reason: "no such file or folder".into(),
        });
    }
    let mut files = Vec::new();
    if path.is_dir() {
        list_files(path, &mut files)?;
        files.sort();
    } else {
        files.push(path.to_path_buf());
    }
    let mut docs = Vec::with_capacity(files.len());
    let mut report = Utf8Report::default();
    for f in files {
        let name = if path.is_dir() {
            f.strip_prefix(path).unwrap_or(&f).display().to_string()
        } else {
            f.file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default()
        };
        let bytes = std::fs::read(&f).map_err(|e| Error::io(&f, e))?;
        let text = match String::from_utf8(bytes) {
            Ok(text) => text,
            Err(e) => match invalid {
                InvalidUtf8::Error => {
                    return Err(Error::Corpus {
                        path: f.clone(),
                        reason: format!(
                            "not UTF-8 text (invalid byte at offset {}); convert it (e.g. with iconv), or choose --invalid-utf8 skip or replace",
                            e.utf8_error().valid_up_to()
                        ),
                    })
                }
                InvalidUtf8::Skip => {
                    report.skipped.push(name);
                    continue;
                }
                InvalidUtf8::Replace => {
                    report.replaced.push(name.clone());
                    String::from_utf8_lossy(e.as_bytes()).into_owned()
                }
            },
        };
        if text.trim().is_empty() {
            continue;
        }
        docs.push(Document { name, text });
    }
    if docs.is_empty() {
        return Err(Error::Corpus {
            path: path.to_path_buf(),
            reason: if report.skipped.is_empty() {
                "empty corpus: no file with any text".into()
            } else {
                format!(
                    "empty corpus: no file with any text ({} not UTF-8, skipped)",
                    report.skipped.len()
                )
            },
        });
    }
    Ok((docs, report))
}

/// Splits every document's tokens into non-overlapping contexts of `len` tokens (a shorter tail
/// is dropped, so every row has a full left context). Tokenises documents in parallel.
pub fn contexts(docs: &[Document], tok: &TextTokenizer, len: usize) -> Result<Vec<Context>> {
    if len == 0 {
        return Err(Error::Param {
            field: "context",
            reason: "must be at least 1 token".into(),
        });
    }
    let per_doc: Vec<Vec<u32>> = docs
        .par_iter()
        .map(|d| tok.encode_plain(&d.text))
        .collect::<Result<_>>()?;
    let mut out = Vec::new();
    for (i, ids) in per_doc.iter().enumerate() {
        for (c, chunk) in ids.chunks_exact(len).enumerate() {
            out.push(Context {
                doc: i as u32,
                start: (c * len) as u32,
                tokens: chunk.to_vec(),
            });
        }
    }
    Ok(out)
}

/// The contexts of `len` tokens of the documents `docs` read from `path`, in an order shuffled
/// by `seed`, as many as fit in `max_tokens` (all when `None`). Refuses a budget of less than
/// one context (before tokenising) and a corpus in which no document has one whole context.
pub fn shuffled_contexts(
    (path, docs): (&Path, &[Document]),
    tok: &TextTokenizer,
    len: usize,
    max_tokens: Option<u64>,
    seed: u64,
) -> Result<Vec<Context>> {
    if let Some(t) = max_tokens.filter(|t| *t < len as u64) {
        return Err(Error::Param {
            field: "max_tokens",
            reason: format!("{t} tokens are fewer than one context of {len}"),
        });
    }
    let mut all = contexts(docs, tok, len)?;
    if all.is_empty() {
        return Err(Error::Corpus {
            path: path.to_path_buf(),
            reason: format!("no document has {len} tokens (one context)"),
        });
    }
    all.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
    if let Some(t) = max_tokens {
        all.truncate((t / len as u64) as usize);
    }
    Ok(all)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn folders_are_read_in_name_order_and_bad_text_is_refused() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("b.txt"), "second").unwrap();
        std::fs::write(t.path().join("a.txt"), "first").unwrap();
        std::fs::write(t.path().join("blank.txt"), "  \n").unwrap();
        std::fs::write(t.path().join(".hidden"), "skip").unwrap();
        let docs = read_documents(t.path()).unwrap();
        let names: Vec<_> = docs.iter().map(|d| d.name.as_str()).collect();
        assert_eq!(names, ["a.txt", "b.txt"]);

        let bad = t.path().join("latin1.txt");
        std::fs::write(&bad, b"caf\xe9 au lait").unwrap();
        let e = read_documents(t.path()).unwrap_err().to_string();
        assert!(
            e.contains("latin1.txt") && e.contains("UTF-8") && e.contains("offset 3"),
            "{e}"
        );

        let empty = tempfile::tempdir().unwrap();
        std::fs::write(empty.path().join("x.txt"), "").unwrap();
        let e = read_documents(empty.path()).unwrap_err().to_string();
        assert!(e.contains("empty corpus"), "{e}");
        let e = read_documents(&t.path().join("nope"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope") && e.contains("no such"), "{e}");
    }

    #[test]
    fn a_file_that_is_not_utf8_is_refused_skipped_or_repaired_as_chosen() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("a.txt"), "clean text").unwrap();
        std::fs::write(t.path().join("b.txt"), b"caf\xe9 au lait").unwrap();
        let e = read_corpus(t.path(), InvalidUtf8::Error)
            .unwrap_err()
            .to_string();
        assert!(e.contains("b.txt") && e.contains("--invalid-utf8"), "{e}");
        let (docs, r) = read_corpus(t.path(), InvalidUtf8::Skip).unwrap();
        assert_eq!(
            (docs.len(), r.skipped.as_slice()),
            (1, ["b.txt".to_string()].as_slice())
        );
        let (docs, r) = read_corpus(t.path(), InvalidUtf8::Replace).unwrap();
        assert_eq!(docs[1].text, "caf\u{fffd} au lait");
        assert_eq!(r.replaced, ["b.txt"]);
        assert!(r.skipped.is_empty());
        // A corpus of nothing but bad files is empty once they are skipped, and says why.
        std::fs::remove_file(t.path().join("a.txt")).unwrap();
        let e = read_corpus(t.path(), InvalidUtf8::Skip)
            .unwrap_err()
            .to_string();
        assert!(e.contains("1 not UTF-8, skipped"), "{e}");
    }

    #[test]
    fn contexts_are_full_windows_with_their_provenance() {
        let p = crate::assets::path(crate::assets::Asset::MiniLmTokenizer);
        if !p.exists() {
            eprintln!(
                "skipped: {} absent (scripts/fetch-assets minilm)",
                p.display()
            );
            return;
        }
        let tok = TextTokenizer::from_file(&p, true).unwrap();
        let docs = vec![
            Document {
                name: "a".into(),
                text: "one two three four five six seven".into(),
            },
            Document {
                name: "b".into(),
                text: "eight nine".into(),
            },
        ];
        let c = contexts(&docs, &tok, 3).unwrap();
        // 7 word tokens -> two windows of 3 (the tail "seven" dropped); "b" too short.
        assert_eq!(c.len(), 2);
        assert_eq!((c[0].doc, c[0].start, c[1].start), (0, 0, 3));
        assert_eq!(tok.decode(&c[1].tokens).unwrap(), "four five six");
    }
}
