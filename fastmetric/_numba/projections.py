"""Numba kernels for the MMC projections that are not BLAS-shaped.

Only ``@njit`` functions live here; the ga-ip solver in ``fastmetric._mmc_gaip``
call them.  No validation: callers pass contiguous float arrays of matching shape.
"""

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def c1_project(A, w_unit, t, t_unit):
    """Project ``A`` onto the half-space ``<W, A> <= t`` in place (Frobenius norm).

    The similarity constraint of MMC, ``sum_S ||x - y||_A^2 <= t``, is linear in
    ``A``: ``<W, A> <= t`` with ``W`` the S-matrix.  If it is violated, ``A``
    moves along ``W`` onto the hyperplane, as in Xing et al. (2002).

    Parameters
    ----------
    A : ndarray of shape (d, d)
        Updated in place.
    w_unit : ndarray of shape (d, d)
        ``W / ||W||_F``.
    t : float
        The bound on ``<W, A>``.
    t_unit : float
        ``t / ||W||_F``.

    Returns
    -------
    float
        ``<w_unit, A>`` before the projection.
    """
    a = A.ravel()
    w = w_unit.ravel()
    dot = 0.0
    for k in range(a.shape[0]):
        dot += w[k] * a[k]
    # <W, A> <= t  <=>  <w_unit, A> <= t_unit (||W|| > 0).
    if dot > t_unit:
        step = t_unit - dot
        for k in range(a.shape[0]):
            a[k] += step * w[k]
    return dot


@njit(cache=True, nogil=True)
def frobenius_dot(a, b):
    """``sum(a * b)`` over two arrays of the same shape, accumulated in float64.

    Parameters
    ----------
    a, b : ndarray

    Returns
    -------
    float
    """
    x = a.ravel()
    y = b.ravel()
    acc = 0.0
    for k in range(x.shape[0]):
        acc += np.float64(x[k]) * np.float64(y[k])
    return acc
