"""sparsecode.metrics against their definitions written in numpy."""

import numpy as np
import pytest

from sparsecode import metrics


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
