"""divgen: train and evaluate generative models as divergence minimization."""

from divgen.divergences import Divergence, get as get_divergence
from divgen.densities import ExactResult, exact_divergence
from divgen.errors import InputError

__all__ = ["Divergence", "ExactResult", "InputError", "exact_divergence", "get_divergence"]
__version__ = "0.1.0"
