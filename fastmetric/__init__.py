"""fastmetric: fast, correct distance metric learning.

Estimators follow scikit-learn's conventions; the hot loops live in compiled
kernels (Cython in ``fastmetric._pairs`` / ``fastmetric._linalg`` and Numba in
``fastmetric._numba``).
"""

__version__ = "0.1.0.dev0"

from .base import components_from_metric
from .constraints import Constraints, wrap_pairs
from .mmc import MMC, MMC_Supervised

__all__ = [
    "MMC",
    "MMC_Supervised",
    "Constraints",
    "wrap_pairs",
    "components_from_metric",
    "__version__",
]
