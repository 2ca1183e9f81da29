"""divgen: train and evaluate generative models as divergence minimization.

    import divgen
    from divgen.train import train
    divgen.exact_divergence(p, q, "kl")                       # two known densities
    divgen.two_sample_test(a, b, "mmd")                       # two sample arrays
    result = train(divgen.Config(data="ring8"), "runs/a")    # a TrainResult

Names are imported on first use, so `import divgen` (and `divgen --help`) stays fast.
"""

from __future__ import annotations

import importlib

__version__ = "0.2.0"

# public name -> (module, attribute)
_EXPORTS = {
    "Config": ("divgen.config", "Config"),
    "load_run": ("divgen.results", "load_run"),
    "Divergence": ("divgen.divergences", "Divergence"),
    "get_divergence": ("divgen.divergences", "get"),
    "ExactResult": ("divgen.densities", "ExactResult"),
    "exact_divergence": ("divgen.densities", "exact_divergence"),
    "two_sample_test": ("divgen.two_sample", "two_sample_test"),
    "estimate": ("divgen.estimators", "estimate"),
    "evaluate_run": ("divgen.evaluate", "evaluate_run"),
    "InputError": ("divgen.errors", "InputError"),
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'divgen' has no attribute {name!r}")
    module, attr = _EXPORTS[name]
    value = getattr(importlib.import_module(module), attr)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(list(globals()) + __all__)
