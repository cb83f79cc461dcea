"""ActivationStore from Python: streaming rows in, reading them back, training from a store,
and the errors of bad input."""

import json

import numpy as np
import pytest

from sparsecode import ActivationStore, FormatError, SparseAutoencoder


def test_appended_rows_read_back_and_train_an_sae(planted, tmp_path):
    x, _, _ = planted(n_samples=3000)
    with ActivationStore.create(tmp_path / "acts", d_in=16, shard_rows=700) as w:
        for start in range(0, 3000, 256):  # as a forward hook would, batch by batch
            w.append(x[start:start + 256].astype(np.float64))
        assert w.n_rows == 3000
        assert not (tmp_path / "acts").exists()  # nothing appears before close
    store = ActivationStore(tmp_path / "acts")
    assert store.shape == (3000, 16) and len(store) == 3000 and store.dtype == "float32"
    np.testing.assert_array_equal(store.head(5000), x)
    store.verify()
    streamed = SparseAutoencoder(n_latents=32, k=3, n_steps=1500, n_threads=2, seed=2).fit(store)
    memory = SparseAutoencoder(n_latents=32, k=3, n_steps=1500, n_threads=2, seed=2).fit(x)
    assert streamed.n_steps_ == 1500
    assert streamed.score(x) > memory.score(x) - 0.03, (streamed.score(x), memory.score(x))


def test_half_precision_store_and_metadata(planted, tmp_path):
    x, _, _ = planted(n_samples=100)
    w = ActivationStore.create(tmp_path / "h", 16, dtype="bfloat16")
    w.append(x)
    store = w.close(metadata={"model": "numpy", "hook": "none"})
    assert store.dtype == "bfloat16" and store.metadata == {"model": "numpy", "hook": "none"}
    np.testing.assert_allclose(store.head(100), x, rtol=1e-2, atol=1e-2)


def test_an_exception_in_the_with_block_leaves_nothing(planted, tmp_path):
    x, _, _ = planted(n_samples=100)
    with pytest.raises(RuntimeError):
        with ActivationStore.create(tmp_path / "s", 16) as w:
            w.append(x)
            raise RuntimeError("the model failed")
    assert list(tmp_path.iterdir()) == []


def test_bad_rows_and_paths_raise_by_kind(planted, tmp_path):
    x, _, _ = planted(n_samples=100)
    w = ActivationStore.create(tmp_path / "s", 16)
    with pytest.raises(ValueError, match="15 columns"):
        w.append(x[:, :15])
    bad = x.copy()
    bad[7, 2] = np.nan
    with pytest.raises(ValueError, match="row 7, column 2"):
        w.append(bad)
    with pytest.raises(ValueError, match="dtype 'int8'"):
        ActivationStore.create(tmp_path / "t", 16, dtype="int8")
    with pytest.raises(ValueError, match="(?i)no rows"):
        w.close()
    with pytest.raises(ValueError, match="already closed"):
        w.append(x)
    done = ActivationStore.create(tmp_path / "s", 16)
    done.append(x)
    done.close()
    with pytest.raises(OSError, match="exists"):
        ActivationStore.create(tmp_path / "s", 16)
    with pytest.raises(FileNotFoundError):
        ActivationStore(tmp_path / "missing")
    manifest = tmp_path / "s" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["rows"] = 5
    manifest.write_text(json.dumps(m))
    with pytest.raises(FormatError, match="manifest"):
        ActivationStore(tmp_path / "s")
