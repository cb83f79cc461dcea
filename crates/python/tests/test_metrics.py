"""sparsecode.metrics against their definitions written in numpy."""

import numpy as np
import pytest

from sparsecode import metrics, synth


def test_fvu_and_l0_match_their_definitions():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((300, 16)).astype(np.float32)
    x_hat = x + 0.3 * rng.standard_normal((300, 16)).astype(np.float32)
    want = ((x - x_hat) ** 2).sum() / ((x - x.mean(axis=0)) ** 2).sum()
    assert metrics.fvu(x, x_hat) == pytest.approx(want, rel=1e-5)
    codes = np.where(rng.random((300, 40)) < 0.1, 1.0, 0.0).astype(np.float32)
    assert metrics.l0(codes) == pytest.approx((codes != 0).sum(axis=1).mean(), rel=1e-6)


def test_code_mcc_is_one_for_permuted_scaled_codes():
    rng = np.random.default_rng(2)
    z = np.abs(rng.standard_normal((500, 12))).astype(np.float32)
    perm = rng.permutation(12)
    assert metrics.code_mcc(z, 3.0 * z[:, perm]) == pytest.approx(1.0, abs=1e-5)
    assert metrics.code_mcc(z, rng.standard_normal((500, 12))) < 0.3


def test_metric_shapes_are_checked():
    with pytest.raises(ValueError, match="same shape"):
        metrics.fvu(np.zeros((3, 2)), np.zeros((3, 3)))


def test_dictionary_metrics_and_dead_fraction_match_their_definitions():
    rng = np.random.default_rng(3)
    d = rng.standard_normal((10, 6)).astype(np.float32)
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    perm = rng.permutation(10)
    assert metrics.dict_mcc(d, -2.0 * d[perm]) == pytest.approx(1.0, abs=1e-5)
    noisy = d + 0.3 * rng.standard_normal(d.shape).astype(np.float32)
    unit = noisy / np.linalg.norm(noisy, axis=1, keepdims=True)
    cos = np.abs(d @ unit.T)
    assert metrics.mmcs(d, noisy) == pytest.approx(cos.max(axis=1).mean(), rel=1e-5)
    assert metrics.recovered_at(d, noisy, 0.9) == pytest.approx((cos.max(axis=1) > 0.9).mean())
    with pytest.raises(ValueError, match="threshold"):
        metrics.recovered_at(d, noisy, 1.5)
    codes = np.zeros((5, 4), np.float32)
    codes[:, 1] = 1.0
    codes[2, 3] = -0.5
    assert metrics.dead_fraction(codes) == 0.5


def test_superposition_returns_data_and_its_truth():
    s = synth.superposition(n_latents=20, n_features=10, k=3, n_samples=300, n_test=50, seed=4)
    assert s.X.shape == (300, 10) and s.codes.shape == (300, 20) and s.dictionary.shape == (20, 10)
    assert s.X_test.shape == (50, 10) and s.noise_std == 0.0
    np.testing.assert_allclose(s.X, s.codes @ s.dictionary, atol=1e-5)
    assert ((s.codes != 0).sum(axis=1) == 3).all()
    again = synth.superposition(n_latents=20, n_features=10, k=3, n_samples=300, n_test=50, seed=4)
    np.testing.assert_array_equal(again.X, s.X)
    with pytest.raises(ValueError, match="magnitude 'cauchy'"):
        synth.superposition(magnitude="cauchy")
    with pytest.raises(ValueError, match="K = 5 must be in 1..=4"):
        synth.superposition(n_latents=4, k=5)


def test_superposition_plants_a_hierarchy_and_correlated_supports():
    s = synth.superposition(
        n_latents=20, n_features=10, p=0.1, n_samples=2000, parents=2, children=3, seed=1
    )
    on = s.codes != 0
    for parent in range(2):
        for child in range(2 + 3 * parent, 5 + 3 * parent):
            assert on[on[:, child], parent].all(), "a child implies its parent"
    c = synth.superposition(
        n_latents=20, n_features=10, p=0.2, n_samples=4000, correlation=0.8, correlation_block=5
    )
    on = (c.codes != 0).astype(float)
    assert np.corrcoef(on[:, 0], on[:, 1])[0, 1] > 0.2
    with pytest.raises(ValueError, match="hierarchy"):
        synth.superposition(n_latents=8, parents=4, children=4)
    with pytest.raises(ValueError, match="parents and children"):
        synth.superposition(parents=2)
