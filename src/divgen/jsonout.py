"""Strict JSON for everything divgen prints or writes (--json, config.json, metrics.jsonl, eval.json, ...).

Python's json module writes NaN and Infinity, which are not JSON and which
other parsers refuse. Here every non-finite number becomes null, NumPy and
torch scalars become plain numbers, and tuples become lists.
"""

from __future__ import annotations

import json
import math


def strict(obj):
    """`obj` with non-finite floats replaced by None, recursively."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: strict(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict(v) for v in obj]
    if hasattr(obj, "item") and getattr(obj, "ndim", None) == 0:  # NumPy or torch scalar
        return strict(obj.item())
    return obj


def dumps(obj, **kwargs) -> str:
    """json.dumps of strict(obj); raises rather than write NaN or Infinity."""
    return json.dumps(strict(obj), allow_nan=False, **kwargs)
