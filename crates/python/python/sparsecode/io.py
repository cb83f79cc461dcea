"""Files as sparsecode reads and writes them: ``.npy`` and safetensors through the core's
readers, with the CLI's detection and errors (``FileNotFoundError``, ``sparsecode.FormatError``
for a corrupt file). Arrays come back as float32 (f64, f16 and bf16 files are converted)."""

import os

import numpy as np

from . import _native


def read_npy(path):
    """A ``.npy`` file of any rank as a float32 array."""
    return _native.read_npy(os.fspath(path))


def write_npy(path, array):
    """Writes ``array`` (converted to float32) as a ``.npy`` file, atomically."""
    a = np.ascontiguousarray(array, dtype=np.float32)
    _native.write_npy(os.fspath(path), a)


def read_safetensors(path):
    """Every tensor of a safetensors file: a dict of name to float32 array."""
    return dict(_native.read_safetensors(os.fspath(path)))


def write_safetensors(path, tensors):
    """Writes a dict of name to array (converted to float32) as a safetensors file,
    atomically."""
    arrays = {str(k): np.ascontiguousarray(v, dtype=np.float32) for k, v in tensors.items()}
    _native.write_safetensors(os.fspath(path), arrays)
