"""Two sample arrays, checked before any estimator, test or sample metric looks at them.

Sample arrays are (N, d) float tensors or arrays; A plays P (the data) and B
plays Q (the model) throughout.
"""

from __future__ import annotations

import numpy as np
import torch

from divgen.errors import InputError

MIN_SAMPLES = 20


def as_samples(a, b) -> tuple[torch.Tensor, torch.Tensor]:
    """Validate two sample sets, (N, d) and (M, d), as float32 tensors; InputError otherwise."""
    out = []
    for name, x in (("A", a), ("B", b)):
        x = torch.as_tensor(np.asarray(x, dtype=np.float32))
        if x.ndim == 1:
            x = x[:, None]
        if x.ndim != 2 or x.shape[1] == 0:
            raise InputError(f"samples {name} must be a 2-D array (samples × features), got shape {tuple(x.shape)}")
        if x.shape[0] < MIN_SAMPLES:
            raise InputError(f"samples {name} has {x.shape[0]} rows; at least {MIN_SAMPLES} are needed")
        if not torch.isfinite(x).all():
            raise InputError(f"samples {name} contain NaN or infinite values")
        out.append(x.contiguous())
    if out[0].shape[1] != out[1].shape[1]:
        raise InputError(f"A has dimension {out[0].shape[1]} but B has dimension {out[1].shape[1]}")
    _check_span(*out)
    if (out[0] == out[0][:1]).all() and (out[1] == out[0][:1]).all():
        raise InputError("samples A and B are one and the same point repeated: there is nothing to test or estimate")
    return out[0], out[1]


# The largest squared distance between two samples that float32 arithmetic holds with room for sums of
# them (kernels, energy distances, covariances): float32's maximum is 3.4e38.
MAX_SQUARED_DISTANCE = 1e36


def _check_span(a: torch.Tensor, b: torch.Tensor) -> None:
    """InputError if points of A and B lie so far apart that their squared distances overflow float32."""
    both = torch.cat([a, b]).double()
    reach = float((both - both.mean(0)).abs().max())  # the farthest coordinate from the pooled mean
    if (2 * reach) ** 2 * both.shape[1] > MAX_SQUARED_DISTANCE:
        raise InputError(f"samples A and B spread over {reach:.3g} from their mean: squared distances between them "
                         "would overflow float32 (3.4e38); divide both files by a common factor (f-divergences and "
                         "test p-values do not change; W1 scales with it)")


def duplicate_rows(x, y=None) -> int:
    """Rows of x (N, d) that repeat an earlier row of x, or, with y (M, d), rows of x that also occur in y."""
    x = np.asarray(x)
    if y is None:
        return len(x) - len(np.unique(x, axis=0))
    y = np.unique(np.asarray(y), axis=0)
    both = np.concatenate([np.unique(x, axis=0), y])
    shared = len(both) - len(np.unique(both, axis=0))  # distinct rows of x that are rows of y
    if not shared:
        return 0
    in_y = {row.tobytes() for row in y}
    return sum(row.tobytes() in in_y for row in x)
