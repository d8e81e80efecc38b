"""Build the Cython kernels in ``csrc/`` as extensions of the ``fastmetric`` package.

OpenMP is used when the compiler accepts ``-fopenmp``; without it the kernels
build and run single-threaded.  BLAS and LAPACK come from
``scipy.linalg.cython_blas`` / ``cython_lapack``, so no system headers are needed.
"""

import os
import subprocess
import sys
import sysconfig
import tempfile

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup

KERNELS = ["_pairs", "_linalg"]


def _openmp_flags():
    """Return (compile, link) flags for OpenMP, or empty lists if unsupported."""
    if os.environ.get("FASTMETRIC_NO_OPENMP"):
        return [], []
    cc = sysconfig.get_config_var("CC") or "cc"
    cc = cc.split()[0]
    src = "#include <omp.h>\nint main(void){return omp_get_max_threads() < 1;}\n"
    with tempfile.TemporaryDirectory() as tmp:
        c_file = os.path.join(tmp, "t.c")
        with open(c_file, "w") as fh:
            fh.write(src)
        try:
            res = subprocess.run(
                [cc, "-fopenmp", c_file, "-o", os.path.join(tmp, "t")],
                capture_output=True,
                check=False,
            )
        except OSError:
            return [], []
    if res.returncode != 0:
        sys.stderr.write("fastmetric: compiler lacks OpenMP; kernels run serially\n")
        return [], []
    return ["-fopenmp"], ["-fopenmp"]


omp_compile, omp_link = _openmp_flags()
# Keep IEEE inf/NaN semantics: no -ffast-math anywhere.
common_compile = ["-O3", "-fno-finite-math-only"]

extensions = [
    Extension(
        f"fastmetric.{name}",
        [os.path.join("csrc", f"{name}.pyx")],
        include_dirs=[np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=common_compile + omp_compile,
        extra_link_args=omp_link,
    )
    for name in KERNELS
]

setup(
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3},
    ),
)
