"""sparsecode: lift features out of superposition (a Rust core, numpy in and out).

- :class:`SparseAutoencoder`: TopK, BatchTopK, ReLU, JumpReLU, Gated and MLP-encoder SAEs
  trained natively, with scikit-learn's estimator protocol; SAELens and sparsify folders.
- :class:`DictionaryLearning`, :class:`MiniBatchDictionaryLearning`, :func:`sparse_encode`:
  scikit-learn's signatures, so changing the import is the whole migration.
- :class:`ActivationStore`: activations larger than memory, streamed into training.
- :mod:`sparsecode.metrics`, :mod:`sparsecode.synth`: the CLI's metrics and planted data.

Errors: ``ValueError`` for shapes, non-finite values and impossible parameters,
``FileNotFoundError`` for missing files, :class:`FormatError` for corrupt ones,
``MemoryError`` when an allocation would exceed the memory limit.
"""

from ._native import FormatError, set_memory_limit
from ._coding import sparse_encode
from ._dictionary import DictionaryLearning, MiniBatchDictionaryLearning
from ._sae import SparseAutoencoder
from ._store import ActivationStore, StoreWriter
from . import io, metrics, synth

__all__ = [
    "ActivationStore",
    "DictionaryLearning",
    "FormatError",
    "io",
    "MiniBatchDictionaryLearning",
    "SparseAutoencoder",
    "StoreWriter",
    "metrics",
    "set_memory_limit",
    "sparse_encode",
    "synth",
]
