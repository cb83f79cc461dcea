"""DictionaryLearning and MiniBatchDictionaryLearning against scikit-learn's on planted data,
scikit-learn's protocol, partial_fit, and errors."""

import os
import signal
import threading
import time

import numpy as np
import pytest
from sklearn import decomposition as sk
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV

from sparsecode import DictionaryLearning, MiniBatchDictionaryLearning, metrics


def test_at_least_as_good_as_scikit_learn(planted):
    # Speed is measured by benches/python/bench_python.py (BENCHMARKS.md), not here.
    x, z, d = planted(n_samples=1000, n_latents=24, n_features=12, k=2, seed=3)
    kw = dict(n_components=24, alpha=0.05, positive_code=True, random_state=0)
    ours = DictionaryLearning(max_iter=200, tol=1e-6, **kw)
    codes = ours.fit_transform(x)
    theirs = sk.DictionaryLearning(max_iter=200, tol=1e-6, fit_algorithm="cd", **kw)
    their_codes = theirs.fit_transform(x.astype(np.float64))
    ours_mcc, theirs_mcc = metrics.code_mcc(z, codes), metrics.code_mcc(z, their_codes)
    assert ours_mcc >= theirs_mcc - 0.01, (ours_mcc, theirs_mcc)
    assert metrics.dict_mcc(d, ours.components_) >= metrics.dict_mcc(d, theirs.components_) - 0.01
    assert ours.components_.shape == (24, 12) and ours.n_iter_ == len(ours.error_)
    assert ours.set_params(transform_algorithm="lasso_cd").transform(x).shape == (1000, 24)
    with pytest.raises(ValueError, match="positive=True is not supported"):
        ours.set_params(transform_algorithm="omp").transform(x)  # as scikit-learn refuses


def test_protocol_clone_and_grid_search(planted):
    x, _, _ = planted(n_samples=300, n_latents=12, n_features=8, k=2)
    dl = DictionaryLearning(12, alpha=0.1, max_iter=30, transform_algorithm="lasso_lars")
    c = clone(dl)
    assert c.get_params() == dl.get_params()
    grid = GridSearchCV(
        MiniBatchDictionaryLearning(12, max_iter=3, batch_size=64, transform_algorithm="omp"),
        {"transform_n_nonzero_coefs": [1, 2]},
        cv=2,
        scoring=lambda est, X: -np.mean((X - est.transform(X) @ est.components_) ** 2),
    )
    grid.fit(x)
    assert grid.best_params_["transform_n_nonzero_coefs"] == 2
    split = DictionaryLearning(12, alpha=0.1, max_iter=5, split_sign=True).fit(x).transform(x)
    assert split.shape == (300, 24) and (split >= 0).all()


@pytest.mark.parametrize("seed", [0, 1])
def test_partial_fit_over_a_stream_comes_near_what_fit_reaches(planted, seed):
    x, _, d = planted(n_samples=2000, n_latents=16, n_features=12, k=2, seed=5)
    kw = dict(n_components=16, alpha=0.05, positive_code=True, batch_size=100, random_state=seed)
    full = MiniBatchDictionaryLearning(max_iter=20, tol=0, **kw).fit(x)
    online = MiniBatchDictionaryLearning(**kw)
    rng = np.random.default_rng(seed)
    for _ in range(20):
        order = rng.permutation(2000)
        for start in range(0, 2000, 100):
            online.partial_fit(x[order[start:start + 100]])
    assert online.n_steps_ == 400
    # Measured over seeds 0-3: online 0.9993, 0.940, 0.964, 0.9999; fit 0.9999 each. The
    # stream starts its atoms from its first 100 rows (fit from all 2,000) and can keep a
    # blend of two true atoms: a local minimum, not a defect of the update.
    a, b = metrics.dict_mcc(d, online.components_), metrics.dict_mcc(d, full.components_)
    assert a > b - 0.07, (a, b)
    with pytest.raises(ValueError, match="12"):
        online.partial_fit(x[:10, :5])


def test_ctrl_c_stops_a_long_dictionary_learning_fit(planted):
    x, _, _ = planted(n_samples=3000, n_latents=64, n_features=32, k=3)
    # The stop is checked between alternations: it must come within a second or one
    # alternation, whichever is longer (timed here, so a loaded machine does not fail the test).
    start = time.monotonic()
    DictionaryLearning(64, alpha=1e-4, max_iter=2, tol=0.0).fit(x)
    alternation = (time.monotonic() - start) / 2
    dl = DictionaryLearning(64, alpha=1e-4, max_iter=1_000_000, tol=0.0)
    timer = threading.Timer(0.5, lambda: os.kill(os.getpid(), signal.SIGINT))
    start = time.monotonic()
    timer.start()
    with pytest.raises(KeyboardInterrupt):
        dl.fit(x)
    assert time.monotonic() - start < 0.5 + max(1.0, alternation) + 0.5
    assert not hasattr(dl, "components_")
    # The request is withdrawn: the next fit runs to the end.
    assert DictionaryLearning(64, alpha=0.05, max_iter=3).fit(x).n_iter_ == 3


def test_bad_parameters_raise_value_error(planted):
    x, _, _ = planted(n_samples=50, n_latents=8, n_features=6)
    with pytest.raises(ValueError, match="fit_algorithm 'sgd'"):
        DictionaryLearning(4, fit_algorithm="sgd").fit(x)
    with pytest.raises(ValueError, match="positive_dict"):
        DictionaryLearning(4, positive_dict=True).fit(x)
    with pytest.raises(ValueError, match="alpha"):
        DictionaryLearning(4, alpha=-1).fit(x)
    with pytest.raises(ValueError, match="atoms"):
        DictionaryLearning(80).fit(x)  # more atoms than samples to start from
    with pytest.raises(ValueError, match=r"\[4, 6\]"):
        DictionaryLearning(4, dict_init=np.ones((3, 6))).fit(x)
    with pytest.raises(ValueError, match="not fitted"):
        MiniBatchDictionaryLearning(4).transform(x)
