"""divgen: train and evaluate generative models as divergence minimization.

The package imports nothing heavy: torch is loaded by the first use of a name
below (PEP 562), so that `divgen --help` is fast and an early Ctrl-C is clean.
"""

from divgen.errors import InputError

__all__ = ["Divergence", "ExactResult", "InputError", "exact_divergence", "get_divergence"]
__version__ = "0.1.0"

_LAZY = {
    "Divergence": ("divgen.divergences", "Divergence"),
    "get_divergence": ("divgen.divergences", "get"),
    "ExactResult": ("divgen.densities", "ExactResult"),
    "exact_divergence": ("divgen.densities", "exact_divergence"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        return getattr(importlib.import_module(module), attr)
    raise AttributeError(f"module 'divgen' has no attribute {name!r}")
