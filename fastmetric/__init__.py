"""fastmetric: fast, correct distance metric learning.

Estimators follow scikit-learn's conventions; the hot loops live in compiled
kernels (Cython in ``fastmetric._pairs`` / ``fastmetric._linalg`` and Numba in
``fastmetric._numba``).  The embedding losses are plain functions in
:mod:`fastmetric.losses` and :mod:`fastmetric.magnet`; their PyTorch modules
live in :mod:`fastmetric.torch`, which is not imported here (torch is
optional).
"""

__version__ = "0.1.0.dev0"

from . import evaluation, losses, magnet
from .base import components_from_metric
from .constraints import Constraints, wrap_pairs
from .embedding import EmbeddingDML
from .mmc import MMC, MMC_Supervised

__all__ = [
    "MMC",
    "MMC_Supervised",
    "EmbeddingDML",
    "evaluation",
    "losses",
    "magnet",
    "Constraints",
    "wrap_pairs",
    "components_from_metric",
    "__version__",
]
