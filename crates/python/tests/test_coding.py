"""sparse_encode against scikit-learn's on the same inputs, and the errors of bad input."""

import numpy as np
import pytest
from sklearn.decomposition import sparse_encode as sk_encode

from sparsecode import sparse_encode


def problem(n_samples=200, n_atoms=48, n_features=24, k=3, seed=0):
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n_atoms, n_features))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    z = np.zeros((n_samples, n_atoms))
    for r in range(n_samples):
        z[r, rng.choice(n_atoms, k, replace=False)] = np.abs(rng.standard_normal(k)) + 0.5
    x = z @ d + 0.01 * rng.standard_normal((n_samples, n_features))
    return x.astype(np.float32), d.astype(np.float32)


def lasso_objective(x, d, z, alpha):
    r = x.astype(np.float64) - z.astype(np.float64) @ d.astype(np.float64)
    return 0.5 * (r * r).sum() + alpha * np.abs(z).sum()


@pytest.mark.parametrize("algorithm", ["lasso_lars", "lasso_cd"])
@pytest.mark.parametrize("positive", [False, True])
def test_lasso_reaches_scikit_learns_objective(algorithm, positive):
    x, d = problem()
    alpha = 0.05
    ours = sparse_encode(x, d, algorithm=algorithm, alpha=alpha, positive=positive)
    theirs = sk_encode(
        x.astype(np.float64), d.astype(np.float64), algorithm=algorithm, alpha=alpha,
        positive=positive, max_iter=5000,
    )
    a, b = lasso_objective(x, d, ours, alpha), lasso_objective(x, d, theirs, alpha)
    assert a <= b * (1 + 1e-3), (a, b)


def test_omp_chooses_scikit_learns_supports():
    x, d = problem()
    ours = sparse_encode(x, d, algorithm="omp", n_nonzero_coefs=3)
    theirs = sk_encode(
        x.astype(np.float64), d.astype(np.float64), algorithm="omp", n_nonzero_coefs=3
    )
    assert ours.dtype == np.float32 and ours.shape == (200, 48)
    np.testing.assert_array_equal(ours != 0, theirs != 0)
    np.testing.assert_allclose(ours, theirs, atol=1e-4)


def test_threshold_is_scikit_learns():
    x, d = problem()
    ours = sparse_encode(x, d, algorithm="threshold", alpha=0.1)
    theirs = sk_encode(x, d, algorithm="threshold", alpha=0.1)
    np.testing.assert_allclose(ours, theirs, atol=1e-5)


def test_other_dtypes_and_layouts_are_converted():
    x, d = problem()
    a = sparse_encode(x, d, algorithm="omp", n_nonzero_coefs=3)
    b = sparse_encode(np.asfortranarray(x.astype(np.float64)), d, algorithm="omp", n_nonzero_coefs=3)
    np.testing.assert_array_equal(a, b)


def test_bad_input_raises_value_error_naming_what():
    x, d = problem()
    bad = x.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="row 7, column 2"):
        sparse_encode(bad, d)
    with pytest.raises(ValueError, match="atoms have 24"):
        sparse_encode(x[:, :10], d)
    with pytest.raises(ValueError, match="2-D"):
        sparse_encode(x[0], d)
    with pytest.raises(ValueError, match="unknown algorithm 'lassso'"):
        sparse_encode(x, d, algorithm="lassso")
    with pytest.raises(ValueError, match="alpha"):
        sparse_encode(x, d, alpha=-1.0)
    with pytest.raises(ValueError, match="n_nonzero_coefs"):
        sparse_encode(x, d, algorithm="omp", n_nonzero_coefs=0)

    with pytest.raises(ValueError, match="positive=True is not supported by algorithm 'omp'"):
        sparse_encode(x, d, algorithm="omp", positive=True)
