"""SparseAutoencoder: scikit-learn's protocol, recovery of planted features, partial_fit,
Ctrl-C, and errors."""

import os
import signal
import threading
import time

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import StandardScaler

from sparsecode import FormatError, SparseAutoencoder, metrics, set_memory_limit


def test_clone_pipeline_and_grid_search_work(planted):
    x, _, _ = planted(n_samples=600)
    sae = SparseAutoencoder(n_latents=32, k=3, n_steps=200, seed=1)
    c = clone(sae)
    assert c.get_params() == sae.get_params() and c is not sae
    pipe = Pipeline([("scale", StandardScaler()), ("sae", SparseAutoencoder(n_latents=32, k=3, n_steps=100))])
    codes = pipe.fit_transform(x)
    assert codes.shape == (600, 32)
    grid = GridSearchCV(SparseAutoencoder(n_latents=32, n_steps=150), {"k": [1, 3]}, cv=2)
    grid.fit(x)
    assert grid.best_params_["k"] == 3  # more latents per sample explain more variance
    with pytest.raises(ValueError, match="(?i)invalid parameter 'kk'"):
        sae.set_params(kk=3)


def test_fit_recovers_planted_codes_and_is_deterministic(planted):
    x, z, _ = planted()
    a = SparseAutoencoder(n_latents=32, k=3, n_steps=3000, seed=3, n_threads=2).fit(x)
    b = SparseAutoencoder(n_latents=32, k=3, n_steps=3000, seed=3, n_threads=2).fit(x)
    np.testing.assert_array_equal(a.components_, b.components_)
    assert a.components_.shape == (32, 16) and a.n_steps_ == 3000
    codes = a.transform(x)
    assert metrics.l0(codes) <= 3.0
    assert metrics.code_mcc(z, codes) > 0.75  # measured 0.86
    assert a.score(x) > 0.85  # measured 0.93
    sparse = a.set_params(sparse_output=True).transform(x)
    np.testing.assert_array_equal(sparse.toarray(), codes)
    np.testing.assert_allclose(a.inverse_transform(sparse), a.inverse_transform(codes))


def test_partial_fit_over_batches_reaches_what_fit_reaches(planted):
    x, _, _ = planted()
    full = SparseAutoencoder(n_latents=32, k=3, n_steps=2000, seed=4).fit(x)
    inc = SparseAutoencoder(n_latents=32, k=3, batch_size=256, seed=4)
    for epoch in range(5):
        for start in range(0, 4000, 1000):
            inc.partial_fit(x[start:start + 1000], n_steps=100)
    assert inc.n_steps_ == 2000
    assert inc.score(x) > full.score(x) - 0.05, (inc.score(x), full.score(x))


def test_ctrl_c_stops_a_long_fit_within_a_second(planted):
    x, _, _ = planted(n_samples=2000)
    sae = SparseAutoencoder(n_latents=64, k=3, n_steps=10_000_000)
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        sae.fit(x)
    elapsed = time.monotonic() - start
    assert elapsed < 1.5, elapsed
    # What it learned before the interrupt is kept.
    assert 0 < sae.n_steps_ < 10_000_000
    assert sae.transform(x).shape == (2000, 64)


def test_bad_input_raises_value_error(planted):
    x, _, _ = planted(n_samples=100)
    with pytest.raises(ValueError, match="not fitted"):
        SparseAutoencoder().transform(x)
    with pytest.raises(ValueError, match="arch 'vanilla': expected one of topk"):
        SparseAutoencoder(arch="vanilla").fit(x)
    with pytest.raises(ValueError, match="n_latents must be an integer >= 1"):
        SparseAutoencoder(n_latents=0).fit(x)
    with pytest.raises(ValueError, match="lr must be finite"):
        SparseAutoencoder(lr=float("nan")).fit(x)
    with pytest.raises(ValueError, match="epochs"):
        SparseAutoencoder(n_steps=10, epochs=2.0).fit(x)
    with pytest.raises(ValueError, match="k"):
        SparseAutoencoder(n_latents=8, k=9, n_steps=1).fit(x)
    bad = x.copy()
    bad[3, 1] = np.inf
    with pytest.raises(ValueError, match="row 3, column 1"):
        SparseAutoencoder(n_steps=1).fit(bad)
    fitted = SparseAutoencoder(n_latents=8, k=2, n_steps=5).fit(x)
    with pytest.raises(ValueError, match="16"):
        fitted.transform(x[:, :5])
    with pytest.raises(ValueError, match="latents"):
        fitted.inverse_transform(np.zeros((2, 3), np.float32))
    inc = SparseAutoencoder(n_latents=8, k=2).partial_fit(x, n_steps=3)
    with pytest.raises(ValueError, match="5 features but the SparseAutoencoder was started on 16"):
        inc.partial_fit(x[:, :5])
    inc.partial_fit(x, n_steps=2)  # a refused batch leaves the model as it was
    assert inc.n_steps_ == 5


@pytest.mark.parametrize(
    "arch", ["topk", "batchtopk", "matryoshka", "relu", "jumprelu", "gated", "mlp"]
)
def test_every_architecture_trains_saves_and_loads_back(planted, tmp_path, arch):
    x, _, _ = planted(n_samples=1000)
    sae = SparseAutoencoder(arch=arch, n_latents=32, k=3, n_steps=300, n_threads=2).fit(x)
    assert sae.score(x) > 0.3, (arch, sae.score(x))  # 300 steps; mlp measured 0.38
    assert sae.config_["steps"] == 300 and sae.n_steps_ == 300
    sae.save(tmp_path / "sae")
    back = SparseAutoencoder.load(tmp_path / "sae", n_threads=2)
    np.testing.assert_array_equal(back.components_, sae.components_)
    np.testing.assert_array_equal(back.transform(x), sae.transform(x))
    assert back.n_features_in_ == 16 and back.n_latents == 32
    csr = back.set_params(sparse_output=True).transform(x)
    assert csr.has_sorted_indices and (csr.data != 0).all()
    np.testing.assert_array_equal(csr.toarray(), sae.transform(x))


def test_switch_routes_among_experts_and_round_trips(planted, tmp_path):
    x, _, _ = planted(n_samples=1000)
    sae = SparseAutoencoder(arch="switch", n_latents=32, k=3, n_experts=2, n_steps=300, n_threads=2)
    sae.fit(x)
    arch = sae.config_["arch"]
    assert (arch["type"], arch["k"], arch["experts"], arch["lb_coef"]) == ("switch", 3, 2, 0.01)
    assert arch["aux_k"] == 0  # AuxK off unless asked, as the paper trains
    assert sae.score(x) > 0.3, sae.score(x)
    codes = sae.transform(x)
    # Each sample's active latents lie in one expert's block of 16.
    for row in codes[:50]:
        blocks = {j // 16 for j in np.flatnonzero(row)}
        assert len(blocks) <= 1, blocks
    sae.save(tmp_path / "sw")
    back = SparseAutoencoder.load(tmp_path / "sw", n_threads=2)
    np.testing.assert_array_equal(back.transform(x), codes)
    assert back.get_params()["n_experts"] == 2 and back.k == 3
    with pytest.raises(ValueError, match="experts"):
        SparseAutoencoder(arch="switch", n_latents=32, k=3, n_experts=5, n_steps=5).fit(x)
    with pytest.raises(ValueError, match="n_experts"):
        SparseAutoencoder(arch="switch", n_latents=32, k=3, n_experts=0, n_steps=5).fit(x)


def test_matryoshka_prefixes_are_resolved_and_checked(planted):
    x, _, _ = planted(n_samples=500)
    sae = SparseAutoencoder(arch="matryoshka", n_latents=32, k=3, prefixes=[4, 16], n_steps=20)
    sae.fit(x)
    assert sae.config_["arch"]["prefixes"] == [4, 16, 32]
    with pytest.raises(ValueError, match="prefixes"):
        SparseAutoencoder(arch="matryoshka", n_latents=32, k=3, prefixes=[16, 4], n_steps=5).fit(x)
    with pytest.raises(ValueError, match="matryoshka"):
        SparseAutoencoder(arch="topk", n_latents=32, k=3, prefixes=[4], n_steps=5).fit(x)
    with pytest.raises(ValueError, match="prefixes"):
        SparseAutoencoder(arch="matryoshka", n_latents=32, k=3, prefixes=4).fit(x)


def test_sparsify_folder_round_trips_and_refuses_other_archs(planted, tmp_path):
    x, _, _ = planted(n_samples=1000)
    sae = SparseAutoencoder(n_latents=32, k=3, n_steps=200, n_threads=2).fit(x)
    sae.save(tmp_path / "sp", format="sparsify")
    assert (tmp_path / "sp" / "sae.safetensors").is_file()
    back = SparseAutoencoder.load(tmp_path / "sp")
    assert (back.arch, back.k) == ("topk", 3)
    np.testing.assert_array_equal(back.components_, sae.components_)
    np.testing.assert_array_equal(back.intercept_, sae.intercept_)
    np.testing.assert_array_equal(back.transform(x), sae.transform(x))
    relu = SparseAutoencoder(arch="relu", n_latents=8, n_steps=5).fit(x)
    with pytest.raises(ValueError, match="(?i)topk"):
        relu.save(tmp_path / "relu", format="sparsify")
    assert not (tmp_path / "relu").exists()
    with pytest.raises(ValueError, match="format 'onnx'"):
        sae.save(tmp_path / "o", format="onnx")
    with pytest.raises(FileExistsError, match=r"already exists \(pass overwrite=True"):
        sae.save(tmp_path / "sp")
    sae.save(tmp_path / "sp", overwrite=True)  # now SAELens, in place of the sparsify folder
    assert (tmp_path / "sp" / "sae_weights.safetensors").is_file()


def test_loading_bad_folders_raises_by_kind(tmp_path, planted):
    with pytest.raises(FileNotFoundError, match="no such SAE folder"):
        SparseAutoencoder.load(tmp_path / "missing")
    x, _, _ = planted(n_samples=300)
    sae = SparseAutoencoder(n_latents=8, k=2, n_steps=5).fit(x)
    sae.save(tmp_path / "s")
    weights = tmp_path / "s" / "sae_weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(FormatError):
        SparseAutoencoder.load(tmp_path / "s")
    (tmp_path / "s" / "cfg.json").write_text("{not json")
    with pytest.raises(FormatError, match="cfg.json"):
        SparseAutoencoder.load(tmp_path / "s")
    with pytest.raises(FormatError, match="not a folder"):
        SparseAutoencoder.load(weights)


def test_loaded_model_refuses_partial_fit(planted, tmp_path):
    x, _, _ = planted(n_samples=300)
    SparseAutoencoder(n_latents=8, k=2, n_steps=5).fit(x).save(tmp_path / "s")
    back = SparseAutoencoder.load(tmp_path / "s")
    with pytest.raises(ValueError, match="no optimiser state"):
        back.partial_fit(x)
    assert back.fit(x).n_steps_ > 0  # fit trains a new model with its parameters


def test_callback_sees_every_logged_step_and_can_stop_training(planted, capsys):
    x, _, _ = planted(n_samples=500)
    seen = []
    SparseAutoencoder(n_latents=16, k=2, n_steps=250, log_every=50, callback=seen.append).fit(x)
    assert [r["step"] for r in seen] == [50, 100, 150, 200, 250]
    assert all(0 <= r["fvu"] and r["l0"] <= 2 for r in seen)

    class Enough(Exception):
        pass

    def stop(record):
        raise Enough(record["step"])

    sae = SparseAutoencoder(n_latents=16, k=2, n_steps=1_000_000, log_every=10, callback=stop)
    with pytest.raises(Enough):
        sae.fit(x)
    assert 10 <= sae.n_steps_ < 1_000_000
    SparseAutoencoder(n_latents=16, k=2, n_steps=20, log_every=10, verbose=True).fit(x)
    err = capsys.readouterr().err
    assert "[sparsecode] step 10" in err and "step 20" in err


def test_an_allocation_past_the_memory_limit_raises_memory_error(planted):
    x, _, _ = planted(n_samples=100)
    set_memory_limit(64 << 20)
    try:
        with pytest.raises(MemoryError, match="needs .* but 64.0 MiB is available"):
            SparseAutoencoder(n_latents=1_000_000, n_steps=1).fit(x)
        assert SparseAutoencoder(n_latents=8, k=2, n_steps=2).fit(x).n_steps_ == 2
    finally:
        set_memory_limit(None)
