"""Shared test data: a planted sparse problem with its true codes."""

import numpy as np
import pytest


def make_planted(n_samples=4000, n_latents=32, n_features=16, k=3, seed=0):
    """Rows ``z @ d`` of ``k`` non-negative latents out of ``n_latents`` per sample."""
    rng = np.random.default_rng(seed)
    d = rng.standard_normal((n_latents, n_features))
    d /= np.linalg.norm(d, axis=1, keepdims=True)
    z = np.zeros((n_samples, n_latents))
    for r in range(n_samples):
        z[r, rng.choice(n_latents, k, replace=False)] = np.abs(rng.standard_normal(k))
    return (z @ d).astype(np.float32), z.astype(np.float32), d.astype(np.float32)


@pytest.fixture
def planted():
    """The planted-problem maker (call it with the sizes a test needs)."""
    return make_planted
