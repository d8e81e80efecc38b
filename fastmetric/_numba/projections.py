"""Numba kernels for the MMC projections that are not BLAS-shaped.

Only compiled functions live here: ``c1_project`` for NumPy callers and its
C entry point ``c1_project_cfunc``, which the ga-ip projection loop
(:func:`fastmetric._linalg.gaip_projections`) calls once per round without
returning to Python.  No validation: callers pass contiguous float arrays of
matching shape.
"""

from numba import carray, cfunc, njit, types


@njit(cache=True, nogil=True)
def _c1_flat(a, w, t_unit):
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
def c1_project(A, w_unit, t, t_unit):
    """Project ``A`` onto the half-space ``<W, A> <= t`` in place (Frobenius norm).

    The similarity constraint of MMC, ``sum_S ||x - y||_A^2 <= t``, is linear in
    ``A``: ``<W, A> <= t`` with ``W`` the S-matrix.  If it is violated, ``A``
    moves along ``W`` onto the hyperplane, as in Xing et al. (2002).

    Parameters
    ----------
    A : ndarray of shape (d, d), C-contiguous
        Updated in place.
    w_unit : ndarray of shape (d, d), C-contiguous
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
    return _c1_flat(A.ravel(), w_unit.ravel(), t_unit)


@cfunc(types.float64(types.CPointer(types.float64), types.CPointer(types.float64),
                     types.float64, types.intp), cache=True)
def c1_project_cfunc(a_ptr, w_ptr, t_unit, size):
    """C entry point of :func:`c1_project` on flat buffers of ``size`` float64.

    ``double c1(double *A, const double *w_unit, double t_unit, Py_ssize_t size)``;
    its ``address`` is passed to the compiled projection loop.
    """
    return _c1_flat(carray(a_ptr, (size,)), carray(w_ptr, (size,)), t_unit)
