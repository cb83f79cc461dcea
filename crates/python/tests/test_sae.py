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

from sparsecode import SparseAutoencoder, metrics


def planted(n_samples=4000, n_latents=32, n_features=16, k=3, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n_latents, n_features))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    z = np.zeros((n_samples, n_latents))
    for r in range(n_samples):
        z[r, rng.choice(n_latents, k, replace=False)] = np.abs(rng.standard_normal(k))
    return (z @ d).astype(np.float32), z.astype(np.float32)


def test_clone_pipeline_and_grid_search_work():
    x, _ = planted(n_samples=600)
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


def test_fit_recovers_planted_codes_and_is_deterministic():
    x, z = planted()
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


def test_partial_fit_over_batches_reaches_what_fit_reaches():
    x, _ = planted()
    full = SparseAutoencoder(n_latents=32, k=3, n_steps=2000, seed=4).fit(x)
    inc = SparseAutoencoder(n_latents=32, k=3, batch_size=256, seed=4)
    for epoch in range(5):
        for start in range(0, 4000, 1000):
            inc.partial_fit(x[start:start + 1000], n_steps=100)
    assert inc.n_steps_ == 2000
    assert inc.score(x) > full.score(x) - 0.05, (inc.score(x), full.score(x))


def test_ctrl_c_stops_a_long_fit_within_a_second():
    x, _ = planted(n_samples=2000)
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


def test_bad_input_raises_value_error():
    x, _ = planted(n_samples=100)
    with pytest.raises(ValueError, match="not fitted"):
        SparseAutoencoder().transform(x)
    with pytest.raises(ValueError, match="unknown arch 'gated'"):
        SparseAutoencoder(arch="gated").fit(x)
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
