"""What a fresh process pays before fastmetric is fast: imports and first fits.

Run from the repository root with fastmetric built::

    python benchmarks/startup.py

Every figure comes from its own fresh Python process:

* ``import`` -- wall time of ``import sklearn``, ``import numba`` and
  ``import fastmetric`` (which imports both), each alone in a new process;
* ``first fit, empty cache`` -- the first ``MMC`` fit (iris, 200 pairs)
  after ``import fastmetric``, with Numba's on-disk cache pointed at an empty
  directory: it includes compiling the Numba kernels that fit needs;
* ``first fit, warm cache`` -- the same in a new process once that cache is
  filled: loading the cached kernels;
* ``later fits`` -- the best of five more fits in that process.

The Cython kernels are compiled at install time and cost nothing here.
"""

import os
import subprocess
import sys
import tempfile

FIT = """
import time
t0 = time.perf_counter()
import numpy as np
from sklearn.datasets import load_iris
from fastmetric import MMC, Constraints
t_import = time.perf_counter() - t0
X, y = load_iris(return_X_y=True)
a, b, c, d = Constraints(y).positive_negative_pairs(100, random_state=0)
pairs = np.r_[np.c_[a, b], np.c_[c, d]]
labels = np.r_[np.ones(len(a)), -np.ones(len(c))]
kw = {kw}
t0 = time.perf_counter()
MMC(preprocessor=X, **kw).fit(pairs, labels)
first = time.perf_counter() - t0
later = []
for _ in range(5):
    t0 = time.perf_counter()
    MMC(preprocessor=X, **kw).fit(pairs, labels)
    later.append(time.perf_counter() - t0)
print(t_import, first, min(later))
"""

IMPORT = """
import time
t0 = time.perf_counter()
import {module}
print(time.perf_counter() - t0)
"""


def _run(code, cache_dir):
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True,
                         capture_output=True, text=True).stdout
    return [float(v) for v in out.split()]


def main():
    with tempfile.TemporaryDirectory() as cache:
        print("import (each in a fresh process, best of 3):")
        for module in ("sklearn", "numba", "fastmetric"):
            best = min(_run(IMPORT.format(module=module), cache)[0] for _ in range(3))
            print(f"  import {module:<11} {best:6.2f} s")
        print("MMC on iris, 100 similar + 100 dissimilar pairs:")
        print(f"  {'solver':<10} {'first fit, empty cache':>23} "
              f"{'first fit, warm cache':>22} {'later fits':>11}")
        for name, kw in (("exact", {}), ("ga-ip", {"solver": "ga-ip"}),
                         ("diagonal", {"diagonal": True})):
            with tempfile.TemporaryDirectory() as empty:
                _, cold, _ = _run(FIT.format(kw=kw), empty)
                _run(FIT.format(kw=kw), empty)  # (fills what the first run missed)
                _, warm, later = _run(FIT.format(kw=kw), empty)
            print(f"  {name:<10} {cold:>21.3f} s {warm:>20.3f} s {later:>9.4f} s")


if __name__ == "__main__":
    main()
