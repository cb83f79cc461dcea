"""ActivationStore from Python: streaming rows in, reading them back, training from a store,
and the errors of bad input."""

import json

import numpy as np
import pytest

from sparsecode import ActivationStore, FormatError, SparseAutoencoder, io


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
    with pytest.raises(FileExistsError, match="overwrite=True"):
        ActivationStore.create(tmp_path / "s", 16)
    with pytest.raises(FileNotFoundError):
        ActivationStore(tmp_path / "missing")
    manifest = tmp_path / "s" / "manifest.json"
    m = json.loads(manifest.read_text())
    m["rows"] = 5
    manifest.write_text(json.dumps(m))
    with pytest.raises(FormatError, match="manifest"):
        ActivationStore(tmp_path / "s")


def test_npy_and_safetensors_files_round_trip_and_import_into_a_store(planted, tmp_path):
    x, _, _ = planted(n_samples=200)
    io.write_npy(tmp_path / "a.npy", x.astype(np.float64))
    np.testing.assert_array_equal(io.read_npy(tmp_path / "a.npy"), x)
    cube = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    io.write_safetensors(tmp_path / "t.safetensors", {"acts": x[:50], "cube": cube})
    back = io.read_safetensors(tmp_path / "t.safetensors")
    assert set(back) == {"acts", "cube"}
    np.testing.assert_array_equal(back["cube"], cube)
    store = ActivationStore.from_files(
        [tmp_path / "a.npy", tmp_path / "t.safetensors"], tmp_path / "s", tensor="acts"
    )
    assert store.shape == (250, 16)
    np.testing.assert_array_equal(store.head(250), np.vstack([x, x[:50]]))
    with pytest.raises(FileNotFoundError):
        io.read_npy(tmp_path / "missing.npy")
    (tmp_path / "bad.npy").write_bytes(b"\x93NUMPY garbage")
    with pytest.raises(FormatError, match="bad.npy"):
        io.read_npy(tmp_path / "bad.npy")
    with pytest.raises(FormatError, match="safetensors"):
        io.read_safetensors(tmp_path / "bad.npy")
    with pytest.raises(ValueError, match=r"tensor 'cube': expected 2-D \[rows, d_in\]"):
        ActivationStore.from_files([tmp_path / "a.npy", tmp_path / "t.safetensors"],
                                   tmp_path / "s2", tensor="cube")
