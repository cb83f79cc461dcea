"""Activation stores: sharded, checksummed float32/float16/bfloat16 rows on disk that training
streams (the format of ``sparsecode store`` and ``sparsecode harvest``)."""

import json
import os

from . import _native
from ._arrays import as_matrix


class ActivationStore:
    """A finished activation store, memory-mapped.

    Parameters
    ----------
    path : str or os.PathLike
        The store folder (``manifest.json`` and its shards).
    verify_reads : bool, default=True
        Check each chunk's hash the first time training reads it.

    Raises
    ------
    FileNotFoundError
        No store at ``path``.
    sparsecode.FormatError
        The manifest or a shard is corrupt.
    """

    def __init__(self, path, verify_reads=True):
        self.path = os.fspath(path)
        self.verify_reads = bool(verify_reads)
        self._core = _native.StoreCore(self.path)

    @classmethod
    def create(cls, path, d_in, dtype="float32", shard_rows=None, overwrite=False):
        """Starts a new store at ``path`` for rows of width ``d_in``: returns a
        :class:`StoreWriter` (``append`` arrays, then ``close``; or use it in a ``with`` block).

        ``dtype`` is how rows are kept on disk (``float32``, ``float16`` or ``bfloat16``);
        ``shard_rows`` rows go in each shard (default: 256 MiB shards). Nothing appears at
        ``path`` until ``close``; an existing ``path`` is refused unless ``overwrite``.
        """
        return StoreWriter(path, d_in, dtype, shard_rows, overwrite)

    @classmethod
    def from_files(cls, inputs, path, dtype="float32", tensor=None, shard_rows=None,
                   overwrite=False):
        """Builds a store at ``path`` from ``.npy`` and safetensors files of one width (as
        ``sparsecode store create``), streaming them; returns it opened. ``tensor`` names the
        tensor to take from safetensors files holding several."""
        if isinstance(inputs, (str, os.PathLike)):
            inputs = [inputs]
        _native.import_store(
            [os.fspath(p) for p in inputs],
            os.fspath(path),
            dtype,
            None if shard_rows is None else int(shard_rows),
            tensor,
            bool(overwrite),
        )
        return cls(path)

    @property
    def shape(self):
        """``(n_rows, d_in)``."""
        return self._core.shape()

    @property
    def dtype(self):
        """How the rows are kept on disk."""
        return self._core.dtype()

    def head(self, n):
        """The first ``n`` rows (fewer when the store is shorter) as float32."""
        return self._core.head(int(n))

    def verify(self):
        """Recomputes every shard's SHA-256; ``FormatError`` names the first that changed."""
        self._core.verify()

    @property
    def metadata(self):
        """The manifest's metadata (where the rows came from)."""
        return json.loads(self._core.metadata())

    def __len__(self):
        return self.shape[0]

    def __repr__(self):
        rows, d_in = self.shape
        return f"ActivationStore({self.path!r}, rows={rows}, d_in={d_in}, dtype={self.dtype!r})"


class StoreWriter:
    """Appends rows to a new activation store; made by :meth:`ActivationStore.create`."""

    def __init__(self, path, d_in, dtype="float32", shard_rows=None, overwrite=False):
        self.path = os.fspath(path)
        self.d_in = int(d_in)
        self._core = _native.StoreWriterCore(
            self.path,
            self.d_in,
            dtype,
            None if shard_rows is None else int(shard_rows),
            bool(overwrite),
        )

    def append(self, X):
        """Appends the rows of ``X`` (n_rows, d_in); anything numpy can read, a CPU torch
        tensor included. ``ValueError`` for a wrong width or a non-finite value (naming the
        row)."""
        X = as_matrix(X, "X")
        if X.shape[1] != self.d_in:
            raise ValueError(f"X has {X.shape[1]} columns but the store's rows have {self.d_in}")
        self._core.append(X)

    @property
    def n_rows(self):
        """Rows appended so far."""
        return self._core.rows()

    def close(self, metadata=None):
        """Writes the last shard and the manifest, moves the store into place and returns it
        opened. ``metadata`` (a JSON-serialisable dict) goes into the manifest."""
        meta = None if metadata is None else json.dumps(metadata)
        path = self._core.close(meta)
        return ActivationStore(path)

    def abort(self):
        """Drops what was written: nothing appears at ``path``."""
        self._core.abort()

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()
        return False
