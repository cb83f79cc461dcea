"""The Python package and the CLI agree: the same training gives the same bytes, and a folder
saved from Python is measured by `sparsecode eval` as `sparsecode.metrics` measures it."""

import json
import os
import pathlib
import subprocess

import numpy as np
import pytest

from sparsecode import SparseAutoencoder, metrics

ROOT = pathlib.Path(__file__).resolve().parents[3]


def cli():
    """The release binary: SPARSECODE_BIN (set by scripts/test.sh, which builds it; then it must
    be there), else this checkout's target/release/sparsecode when built."""
    named = os.environ.get("SPARSECODE_BIN")
    path = pathlib.Path(named or ROOT / "target" / "release" / "sparsecode")
    if not path.is_file():
        if named:
            pytest.fail(f"SPARSECODE_BIN={named} is not a file")
        pytest.skip(f"no sparsecode binary at {path} (scripts/test.sh builds it)")
    return str(path)


def run(*args):
    out = subprocess.run([cli(), *map(str, args)], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    return out.stdout


def test_python_training_is_the_cli_training(planted, tmp_path):
    x, _, _ = planted(n_samples=2000)
    np.save(tmp_path / "x.npy", x)
    run("train", "--data", tmp_path / "x.npy", "--arch", "topk", "--latents", 32, "--k", 3,
        "--steps", 300, "--seed", 5, "--threads", 2, "--out", tmp_path / "run")
    ours = SparseAutoencoder(n_latents=32, k=3, n_steps=300, seed=5, n_threads=2).fit(x)
    theirs = SparseAutoencoder.load(tmp_path / "run")
    np.testing.assert_array_equal(ours.components_, theirs.components_)
    np.testing.assert_array_equal(ours.transform(x), theirs.transform(x))


def test_cli_eval_of_a_python_folder_matches_sparsecode_metrics(planted, tmp_path):
    x, _, _ = planted(n_samples=1500)
    sae = SparseAutoencoder(arch="relu", n_latents=48, n_steps=200, n_threads=2).fit(x)
    sae.save(tmp_path / "sae")
    np.save(tmp_path / "x.npy", x)
    report = json.loads(run("eval", "--sae", tmp_path / "sae", "--data", tmp_path / "x.npy",
                            "--threads", 2, "--json"))
    codes = sae.transform(x)
    assert report["fvu"] == pytest.approx(metrics.fvu(x, sae.inverse_transform(codes)), rel=1e-6)
    assert report["l0"] == pytest.approx(metrics.l0(codes), rel=1e-9)
    assert report["dead_fraction"] == pytest.approx(metrics.dead_fraction(codes), rel=1e-9)
    assert report["latents"] == 48 and report["samples"] == 1500
