//! A run stopped at a checkpoint and resumed ends with exactly the bytes of an uninterrupted run.

use super::*;
use crate::data::{generate, SynthConfig};
use crate::sae::Sae;
use serde_json::json;

struct StopAt(u64);
impl Observer for StopAt {
    fn on_step(&mut self, step: u64) -> Control {
        if step == self.0 {
            Control::Stop
        } else {
            Control::Continue
        }
    }
}

struct Both<'a>(&'a mut RunDir, StopAt);
impl Observer for Both<'_> {
    fn on_step(&mut self, s: u64) -> Control {
        self.1.on_step(s)
    }
    fn on_log(&mut self, r: &StepRecord) -> crate::Result<()> {
        self.0.on_log(r)
    }
    fn on_checkpoint(&mut self, s: &TrainState) -> crate::Result<()> {
        self.0.on_checkpoint(s)
    }
}

fn job(arch: ArchConfig, x: &crate::Matrix) -> RunJob {
    let mut config = TrainConfig::new(arch, 24, 60, 32, 3e-3, 7);
    config.checkpoint_every = 10;
    config.log_every = 5;
    config.dead_window = 200;
    config.threads = 2;
    config.lr_warmup_steps = 5;
    config.lr_decay_steps = 20;
    RunJob {
        config,
        data: "mem".into(),
        data_shape: [x.rows(), x.cols()],
        data_fingerprint: crate::io::record::fingerprint(x.as_slice()),
        dictionary: None,
        metadata: json!({}),
        format: crate::sae::SaeFormat::Saelens,
        source: None,
    }
}

#[test]
fn killed_and_resumed_equals_uninterrupted() {
    let data = generate(
        &SynthConfig {
            latents: 20,
            dims: 10,
            samples: 300,
            test_samples: 0,
            ..SynthConfig::e2(1)
        },
        None,
    )
    .unwrap();
    let x = &data.train.activations;
    for arch in [
        ArchConfig::TopK {
            k: 3,
            aux_k: 4,
            aux_coef: 0.1,
        },
        ArchConfig::Relu {
            l1: 0.01,
            l1_warmup_steps: 10,
        },
        ArchConfig::Matryoshka {
            k: 3,
            aux_k: 4,
            aux_coef: 0.1,
            prefixes: vec![5, 10, 24],
        },
    ] {
        let t = tempfile::tempdir().unwrap();
        let mut j = job(arch.clone(), x);
        // Inputs scaled as `Normalize::ExpectedAverageOnlyIn` does: the scale is part of the
        // config, so a resumed run scales the same way.
        j.config.input_scale = 0.37;
        let cfg = j.config.clone().check(x.rows(), x.cols()).unwrap();
        // Uninterrupted.
        let a_path = t.path().join("a");
        let mut a = RunDir::create(&a_path, false, &j).unwrap();
        let full = train(&cfg, x, None, None, &mut a).unwrap();
        a.finish(&full.model(), j.format, json!({}), &json!({}))
            .unwrap();
        // Stopped at step 37 (checkpoint written at 30 and at the stop), then resumed twice.
        let b_path = t.path().join("b");
        let mut b = RunDir::create(&b_path, false, &j).unwrap();
        let part = train(&cfg, x, None, None, &mut Both(&mut b, StopAt(37))).unwrap();
        assert!(part.stopped_early);
        drop(b);
        let (mut b, j2, state) = RunDir::resume(&b_path).unwrap();
        assert_eq!(j2, j);
        assert_eq!(state.as_ref().unwrap().step, 37);
        assert_eq!(
            state.as_ref().unwrap(),
            &part.state,
            "checkpoint round-trips the whole state"
        );
        let rest = train(&cfg, x, None, state, &mut b).unwrap();
        b.finish(&rest.model(), j.format, json!({}), &json!({}))
            .unwrap();
        assert_eq!(
            rest.state, full.state,
            "{arch:?}: resumed run must end with identical bytes"
        );
        let (sa, sb): (Sae, Sae) = (
            crate::sae::saelens::load(&a_path).unwrap(),
            crate::sae::saelens::load(&b_path).unwrap(),
        );
        assert_eq!(sa, sb);
        let lines = |p: &std::path::Path| -> Vec<u64> {
            std::fs::read_to_string(p.join("metrics.jsonl"))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str::<StepRecord>(l).unwrap().step)
                .collect()
        };
        assert_eq!(lines(&a_path), lines(&b_path));
        assert!(!b_path.join("checkpoint").exists());
        assert!(RunDir::resume(&b_path)
            .unwrap_err()
            .to_string()
            .contains("already finished"));
    }
}

#[test]
fn store_streaming_equals_memory_and_resumes_exactly() {
    use crate::data::store::{Store, StoreDType, StoreWriter};
    let data = generate(
        &SynthConfig {
            latents: 20,
            dims: 10,
            samples: 300,
            test_samples: 0,
            ..SynthConfig::e2(2)
        },
        None,
    )
    .unwrap();
    let x = &data.train.activations;
    let t = tempfile::tempdir().unwrap();
    let write_store = |name: &str, shard_rows: usize| {
        let dir = t.path().join(name);
        let mut w = StoreWriter::create(&dir, 10, StoreDType::F32, shard_rows, false).unwrap();
        w.push(x.as_slice(), "x").unwrap();
        w.finish(json!({})).unwrap();
        Store::open(&dir).unwrap()
    };
    let mut cfg = TrainConfig::new(
        ArchConfig::TopK {
            k: 3,
            aux_k: 4,
            aux_coef: 0.1,
        },
        24,
        50,
        32,
        3e-3,
        3,
    );
    cfg.threads = 2;
    cfg.dead_window = 200;
    let checked = |c: &TrainConfig| c.clone().check(x.rows(), x.cols()).unwrap();
    // One shard and a window holding everything: the very same batches as in memory.
    let single = write_store("single", 1000);
    let mem = train(&checked(&cfg), x, None, None, &mut NoObserver).unwrap();
    let streamed = train(&checked(&cfg), &single, None, None, &mut NoObserver).unwrap();
    assert!(
        mem.state == streamed.state,
        "one-shard store differs from memory"
    );
    // Many shards and small windows: stopped and resumed equals uninterrupted.
    let sharded = write_store("sharded", 37);
    let cfg = TrainConfig {
        shuffle_rows: 64,
        ..cfg
    };
    let cfg = checked(&cfg);
    let full = train(&cfg, &sharded, None, None, &mut NoObserver).unwrap();
    let part = train(&cfg, &sharded, None, None, &mut StopAt(23)).unwrap();
    assert!(part.stopped_early);
    let rest = train(&cfg, &sharded, None, Some(part.state), &mut NoObserver).unwrap();
    assert!(rest.state == full.state, "resumed store run differs");
    assert!(
        full.state != mem.state,
        "windowed shuffling is a different order"
    );
}
