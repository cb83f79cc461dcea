//! Every committed corpus file and every regression (a crash the fuzzer found, now fixed) runs
//! through its target without a panic; the seeds `make-seeds` wrote are accepted all the way.

use sparsecode_fuzz::TARGETS;
use std::path::Path;

fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.expect("a folder entry").path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn corpora_and_regressions_run_without_panics() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in TARGETS {
        let corpus = files(&root.join("corpus").join(name));
        assert!(!corpus.is_empty(), "no corpus for {name}");
        for f in corpus
            .iter()
            .chain(&files(&root.join("regressions").join(name)))
        {
            target(&std::fs::read(f).expect("a corpus file"));
        }
    }
}

#[test]
fn seeds_are_accepted_to_the_end() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in TARGETS {
        let seeds: Vec<_> = files(&root.join("corpus").join(name))
            .into_iter()
            .filter(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("seed-"))
            })
            .collect();
        assert!(!seeds.is_empty(), "no seeds for {name}");
        for s in seeds {
            assert!(
                target(&std::fs::read(&s).expect("a seed")),
                "{} is refused by its target",
                s.display()
            );
        }
    }
}
