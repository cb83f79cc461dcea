"""Input checking shared by the public functions: float32 C-contiguous 2-D arrays."""

import numpy as np


def as_matrix(a, name):
    """``a`` as a float32 C-contiguous 2-D array (no copy when it already is one).

    Raises ``ValueError`` naming ``name`` for anything that is not 2-D or holds NaN/Inf (with
    the first bad row).
    """
    arr = np.asarray(a)
    if arr.ndim != 2:
        raise ValueError(f"{name}: expected a 2-D array, got {arr.ndim}-D with shape {arr.shape}")
    if arr.dtype != np.float32 or not arr.flags.c_contiguous:
        arr = np.ascontiguousarray(arr, dtype=np.float32)
    bad = ~np.isfinite(arr)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ValueError(
            f"{name}: non-finite value {arr[row, col]} at row {row}, column {col}"
        )
    return arr
