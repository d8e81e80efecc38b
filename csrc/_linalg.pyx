# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""Dense linear algebra for the solvers: symmetric eigendecomposition and PSD projection.

LAPACK (``syevr``) and BLAS (``gemm``/``syrk``) come from ``scipy.linalg.cython_lapack``
and ``cython_blas``.  Thin ``def`` shims over ``gemm`` and ``syrk`` exist so the
tests can compare each routine with NumPy.  One eigendecomposition per projection;
no validation here (the Python layer checks shapes and finiteness).
"""

from cython cimport floating
from cython.parallel cimport parallel, prange, threadid

import numpy as np
from libc.math cimport INFINITY, fabs, log, pow, sqrt
from libc.stdlib cimport free, malloc
from scipy.linalg.cython_blas cimport dgemm, dgemv, dsyrk, sgemm, ssyrk
from scipy.linalg.cython_lapack cimport (
    dormtr,
    dpotrf,
    dstemr,
    dsyevr,
    dsytrd,
    sormtr,
    sstemr,
    ssyevr,
    ssytrd,
)

cdef double DBL_EPS = 2.220446049250313e-16
cdef double DBL_TINY = 2.2250738585072014e-308


cdef int _syevr(int n, floating *a, floating *w, floating *z) noexcept nogil:
    """Eigendecomposition of the column-major symmetric ``a`` (lower triangle used).

    ``a`` is destroyed; ``w`` gets ascending eigenvalues and ``z`` (column-major)
    the orthonormal eigenvectors as columns.  Returns LAPACK's ``info``.
    """
    return _syevr_top(n, n, a, w, z)


cdef int _syevr_top(int n, int k, floating *a, floating *w,
                    floating *z) noexcept nogil:
    """The k largest eigenpairs of the column-major symmetric ``a`` (lower triangle).

    ``a`` is destroyed; ``w`` (k) gets the eigenvalues in ascending order and
    ``z`` (n x k, column-major) the eigenvectors, or nothing when ``z`` is
    NULL (eigenvalues only).  Returns LAPACK's ``info``.  LAPACK's W argument
    has n entries whatever the range (its bisection may find and write more
    than k eigenvalues in a cluster), so for k < n the eigenvalues go through
    a buffer of n.
    """
    cdef char jobz = b'V' if z != NULL else b'N'
    cdef char rng = b'A' if k == n else b'I'
    cdef char uplo = b'L'
    cdef floating vl = 0, vu = 0, abstol = 0
    cdef int il = n - k + 1, iu = n, m = 0, info = 0, lwork = -1, liwork = -1
    cdef int i
    cdef floating z_dummy = 0
    if z == NULL:
        z = &z_dummy
    cdef floating work_query
    cdef int iwork_query
    cdef int *isuppz = <int *> malloc(2 * n * sizeof(int))
    cdef floating *wall = w if k == n else <floating *> malloc(n * sizeof(floating))
    cdef floating *work
    cdef int *iwork
    if isuppz == NULL or wall == NULL:
        free(isuppz)
        if k != n:
            free(wall)
        return -1000
    if floating is double:
        dsyevr(&jobz, &rng, &uplo, &n, a, &n, &vl, &vu, &il, &iu, &abstol, &m,
               wall, z, &n, isuppz, &work_query, &lwork, &iwork_query, &liwork,
               &info)
    else:
        ssyevr(&jobz, &rng, &uplo, &n, a, &n, &vl, &vu, &il, &iu, &abstol, &m,
               wall, z, &n, isuppz, &work_query, &lwork, &iwork_query, &liwork,
               &info)
    work = NULL
    iwork = NULL
    if info == 0:
        lwork = <int> work_query + 1
        liwork = iwork_query
        work = <floating *> malloc(lwork * sizeof(floating))
        iwork = <int *> malloc(liwork * sizeof(int))
        if work == NULL or iwork == NULL:
            info = -1000
    if info == 0:
        if floating is double:
            dsyevr(&jobz, &rng, &uplo, &n, a, &n, &vl, &vu, &il, &iu, &abstol, &m,
                   wall, z, &n, isuppz, work, &lwork, iwork, &liwork, &info)
        else:
            ssyevr(&jobz, &rng, &uplo, &n, a, &n, &vl, &vu, &il, &iu, &abstol, &m,
                   wall, z, &n, isuppz, work, &lwork, iwork, &liwork, &info)
        if info == 0 and k < n and m != k:
            info = -1001
        if info == 0 and k < n:
            for i in range(k):
                w[i] = wall[i]
    free(isuppz)
    free(work)
    free(iwork)
    if k != n:
        free(wall)
    return info


cdef int _stemr_top(int n, int k, floating *a, floating *w,
                    floating *z) noexcept nogil:
    """The k largest eigenpairs by ``sytrd`` + ``stemr`` (MRRR) + ``ormtr``.

    What ``syevr`` does for the whole spectrum; for an index range ``syevr``
    switches to bisection and inverse iteration (``stebz`` + ``stein``),
    which at d = 100 costs twice the tridiagonal reduction for 8 pairs and
    more when the top eigenvalues cluster, as they do near MMC's optimum.
    ``a`` (column-major, lower triangle) is destroyed; ``z`` may be NULL for
    eigenvalues only.  Returns LAPACK's ``info`` (nonzero: use ``syevr``).
    """
    cdef char uplo = b'L'
    cdef char jobz = b'V' if z != NULL else b'N'
    cdef char rng = b'I'
    cdef char side = b'L'
    cdef char trans = b'N'
    cdef int il = n - k + 1, iu = n, m = 0, nzc = k, info = 0
    cdef bint tryrac = 0
    cdef int lwork = -1, liwork = -1, lwork_trd = -1, lwork_orm = -1
    cdef floating vl = 0, vu = 0, query = 0, z_dummy = 0
    cdef int iquery = 0
    cdef int *isuppz = <int *> malloc(2 * k * sizeof(int))
    # stemr uses all of W (n entries) as workspace, and E (n entries) too
    cdef floating *diag = <floating *> malloc(4 * n * sizeof(floating))
    cdef floating *off
    cdef floating *tau
    cdef floating *wall
    cdef int i
    cdef floating *work = NULL
    cdef int *iwork = NULL
    cdef int ldz = n
    if isuppz == NULL or diag == NULL:
        free(isuppz)
        free(diag)
        return -1000
    off = diag + n
    tau = off + n
    wall = tau + n
    if z == NULL:
        z = &z_dummy
        ldz = 1
    # workspace: the largest of the three queries
    if floating is double:
        dsytrd(&uplo, &n, a, &n, diag, off, tau, &query, &lwork_trd, &info)
    else:
        ssytrd(&uplo, &n, a, &n, diag, off, tau, &query, &lwork_trd, &info)
    lwork_trd = <int> query + 1
    if floating is double:
        dstemr(&jobz, &rng, &n, diag, off, &vl, &vu, &il, &iu, &m, wall, z, &ldz,
               &nzc, isuppz, &tryrac, &query, &lwork, &iquery, &liwork, &info)
    else:
        sstemr(&jobz, &rng, &n, diag, off, &vl, &vu, &il, &iu, &m, wall, z, &ldz,
               &nzc, isuppz, &tryrac, &query, &lwork, &iquery, &liwork, &info)
    lwork = <int> query + 1
    liwork = iquery + 1
    if jobz == b'V':
        if floating is double:
            dormtr(&side, &uplo, &trans, &n, &k, a, &n, tau, z, &n, &query,
                   &lwork_orm, &info)
        else:
            sormtr(&side, &uplo, &trans, &n, &k, a, &n, tau, z, &n, &query,
                   &lwork_orm, &info)
        lwork_orm = <int> query + 1
    if lwork_trd > lwork:
        lwork = lwork_trd
    if lwork_orm > lwork:
        lwork = lwork_orm
    work = <floating *> malloc(lwork * sizeof(floating))
    iwork = <int *> malloc(liwork * sizeof(int))
    if work == NULL or iwork == NULL:
        info = -1000
    else:
        info = 0
        if floating is double:
            dsytrd(&uplo, &n, a, &n, diag, off, tau, work, &lwork, &info)
        else:
            ssytrd(&uplo, &n, a, &n, diag, off, tau, work, &lwork, &info)
    if info == 0:
        if floating is double:
            dstemr(&jobz, &rng, &n, diag, off, &vl, &vu, &il, &iu, &m, wall, z, &ldz,
                   &nzc, isuppz, &tryrac, work, &lwork, iwork, &liwork, &info)
        else:
            sstemr(&jobz, &rng, &n, diag, off, &vl, &vu, &il, &iu, &m, wall, z, &ldz,
                   &nzc, isuppz, &tryrac, work, &lwork, iwork, &liwork, &info)
        if info == 0 and m != k:
            info = -1001
        if info == 0:
            for i in range(k):
                w[i] = wall[i]
    if info == 0 and jobz == b'V':
        if floating is double:
            dormtr(&side, &uplo, &trans, &n, &k, a, &n, tau, z, &n, work, &lwork,
                   &info)
        else:
            sormtr(&side, &uplo, &trans, &n, &k, a, &n, tau, z, &n, work, &lwork,
                   &info)
    free(isuppz)
    free(diag)
    free(work)
    free(iwork)
    return info


def eigh_top(const floating[:, ::1] A, floating[::1] w, floating[:, ::1] V):
    """The ``k = w.shape[0]`` largest eigenpairs of a symmetric matrix.

    For k < d, the tridiagonal reduction (``sytrd``), MRRR for the index range
    (``stemr``) and the back-transformation of the k vectors (``ormtr``);
    ``syevr`` when that fails, for all pairs, or for entries beyond 1e30 or
    below 1e-30 in size (``syevr`` rescales those).  The reduction costs as
    much as a full decomposition, but only k eigenvectors are computed and
    transformed back.

    Parameters
    ----------
    A : ndarray of shape (d, d)
        Symmetric input; only its upper triangle (row-major) is read.  Unchanged.
    w : ndarray of shape (k,), 1 <= k <= d
        Receives the k largest eigenvalues in ascending order.
    V : ndarray of shape (d, k) or (d, 0)
        Receives the eigenvectors as columns; with no columns, only the
        eigenvalues are computed.
    """
    cdef int n = <int> A.shape[0]
    cdef int k = <int> w.shape[0]
    cdef bint vectors = V.shape[1] > 0
    cdef Py_ssize_t r, c
    cdef int info
    if A.shape[1] != n or not 1 <= k <= n or (
            vectors and (V.shape[0] != n or V.shape[1] != k)):
        raise ValueError(f"eigh_top: need A (d, d), w (k,) with 1 <= k <= d and V "
                         f"(d, k) or (d, 0); got {A.shape[0]}x{A.shape[1]}, k={k}, "
                         f"V {V.shape[0]}x{V.shape[1]}")
    cdef floating *a = <floating *> malloc((n * n + (n * k if vectors else 0))
                                           * sizeof(floating))
    cdef floating *z = NULL
    if a == NULL:
        raise MemoryError()
    if vectors:
        z = a + n * n
    cdef floating amax = 0
    with nogil:
        for r in range(n):
            for c in range(n):
                a[r * n + c] = A[r, c]
                if fabs(A[r, c]) > amax:
                    amax = fabs(A[r, c])
        info = -1
        # MRRR for an index range, except where syevr's own scaling matters
        # (entries near the ends of the exponent range) or for all pairs.
        if k < n and 1e-30 < amax < 1e30:
            info = _stemr_top(n, k, a, &w[0], z)
            if info != 0:  # a was destroyed: copy again for syevr
                for r in range(n):
                    for c in range(n):
                        a[r * n + c] = A[r, c]
        if info != 0:
            info = _syevr_top(n, k, a, &w[0], z)
        if vectors and info == 0:
            for r in range(n):
                for c in range(k):
                    V[r, c] = z[c * n + r]
    free(a)
    if info != 0:
        raise ArithmeticError(f"LAPACK syevr failed (info={info})")


def eigh(const floating[:, ::1] A, floating[::1] w, floating[:, ::1] V):
    """Eigendecomposition of a symmetric matrix, ``A = V @ diag(w) @ V.T``.

    :func:`eigh_top` for all ``d`` pairs (one ``syevr`` call).

    Parameters
    ----------
    A : ndarray of shape (d, d)
        Symmetric input; only its upper triangle (row-major) is read.  Unchanged.
    w : ndarray of shape (d,)
        Receives the eigenvalues in ascending order.
    V : ndarray of shape (d, d)
        Receives the eigenvectors as columns.
    """
    eigh_top(A, w, V)


def psd_project(const floating[:, ::1] A, floating[:, ::1] out, floating[::1] w):
    """Nearest PSD matrix in Frobenius norm: clip negative eigenvalues to zero.

    Symmetrises ``A`` as ``(A + A.T) / 2``, takes one eigendecomposition and
    rebuilds ``V @ diag(max(w, 0)) @ V.T`` with ``syrk``.

    Parameters
    ----------
    A : ndarray of shape (d, d)
    out : ndarray of shape (d, d)
        Receives the projection (may not alias ``A``).
    w : ndarray of shape (d,)
        Receives the eigenvalues of the symmetrised ``A`` (before clipping).
    """
    cdef int n = <int> A.shape[0]
    cdef Py_ssize_t r, c
    cdef int info
    cdef char uplo = b'U'
    cdef char trans = b'N'
    cdef floating one = 1.0, zero = 0.0, s
    cdef floating *a = <floating *> malloc(2 * n * n * sizeof(floating))
    cdef floating *z
    if a == NULL:
        raise MemoryError()
    z = a + n * n
    with nogil:
        for r in range(n):
            for c in range(n):
                a[r * n + c] = (A[r, c] + A[c, r]) * 0.5
        info = _syevr(n, a, &w[0], z)
        if info == 0:
            # Scale eigenvector columns by sqrt(max(w, 0)); then out = Z Z^T.
            for c in range(n):
                s = <floating> sqrt(w[c]) if w[c] > 0 else 0
                for r in range(n):
                    z[c * n + r] = z[c * n + r] * s
            if floating is double:
                dsyrk(&uplo, &trans, &n, &n, &one, z, &n, &zero, a, &n)
            else:
                ssyrk(&uplo, &trans, &n, &n, &one, z, &n, &zero, a, &n)
            # Column-major upper triangle: a[c * n + r] with r <= c.
            for c in range(n):
                for r in range(c + 1):
                    out[r, c] = a[c * n + r]
                    out[c, r] = a[c * n + r]
    free(a)
    if info != 0:
        raise ArithmeticError(f"LAPACK syevr failed (info={info})")


def gemm(const floating[:, ::1] a, const floating[:, ::1] b, floating[:, ::1] out):
    """``out = a @ b`` through BLAS gemm (a test shim for the row/column-major mapping).

    Parameters
    ----------
    a : ndarray of shape (m, k)
    b : ndarray of shape (k, n)
    out : ndarray of shape (m, n)
    """
    cdef int m = <int> a.shape[0], k = <int> a.shape[1], n = <int> b.shape[1]
    cdef char trans = b'N'
    cdef floating one = 1.0, zero = 0.0
    # Row-major (a @ b) is column-major (b.T @ a.T).
    with nogil:
        if floating is double:
            dgemm(&trans, &trans, &n, &m, &k, &one, <double *> &b[0, 0], &n,
                  <double *> &a[0, 0], &k, &zero, &out[0, 0], &n)
        else:
            sgemm(&trans, &trans, &n, &m, &k, &one, <float *> &b[0, 0], &n,
                  <float *> &a[0, 0], &k, &zero, &out[0, 0], &n)


def syrk(const floating[:, ::1] a, floating[:, ::1] out):
    """``out = a.T @ a`` through BLAS syrk, both triangles filled (a test shim).

    Parameters
    ----------
    a : ndarray of shape (k, n)
    out : ndarray of shape (n, n)
    """
    cdef int k = <int> a.shape[0], n = <int> a.shape[1]
    cdef char uplo = b'U'
    cdef char trans = b'N'
    cdef floating one = 1.0, zero = 0.0
    cdef Py_ssize_t r, c
    # Row-major a (k x n) is column-major a.T (n x k): syrk 'N' gives a.T @ a.
    with nogil:
        if floating is double:
            dsyrk(&uplo, &trans, &n, &k, &one, <double *> &a[0, 0], &n, &zero,
                  &out[0, 0], &n)
        else:
            ssyrk(&uplo, &trans, &n, &k, &one, <float *> &a[0, 0], &n, &zero,
                  &out[0, 0], &n)
        # Column-major upper triangle is the row-major lower one; mirror it.
        for r in range(n):
            for c in range(r + 1, n):
                out[r, c] = out[c, r]


cdef int _rebuild_from_eigenpairs(int n, int m, const double *weights, double *z,
                                  double *tmp, double *out) noexcept nogil:
    """``out = sum_{c: weights[c] > 0} weights[c] z_c z_c^T`` (n x n, both triangles).

    ``z`` (column-major, m eigenvectors) is overwritten: the kept vectors,
    scaled by sqrt(weight), are packed to the front for one ``syrk`` into
    ``tmp``.  Returns how many were kept.
    """
    cdef int c, r, kept = 0
    cdef double s
    cdef char uplo = b'U'
    cdef char trans = b'N'
    cdef double one = 1.0, zero = 0.0
    for c in range(m):
        if weights[c] > 0:
            s = sqrt(weights[c])
            for r in range(n):
                z[kept * n + r] = z[c * n + r] * s
            kept += 1
    if kept == 0:
        for r in range(n * n):
            out[r] = 0
        return 0
    dsyrk(&uplo, &trans, &n, &kept, &one, z, &n, &zero, tmp, &n)
    for c in range(n):
        for r in range(c + 1):
            out[r * n + c] = tmp[c * n + r]
            out[c * n + r] = tmp[c * n + r]
    return kept


cdef int _psd_clip_rank_bounded(int n, int k, const double *A, double *a,
                                double *w, double *z, double *out,
                                int *rank) noexcept nogil:
    """``out = P_PSD(A)`` (row-major n x n) from the top ``k`` eigenpairs.

    Valid when A has at most ``k - 1`` positive eigenvalues, which the caller
    knows from Weyl's inequality; the k-th largest is computed as a check and,
    when it is positive beyond rounding (``n eps lambda_max``), the full
    decomposition is taken instead.  ``rank`` receives the number of positive
    eigenvalues kept.  Returns LAPACK's ``info``.
    """
    cdef int r, c, info = -1, m
    cdef double top
    if k < n:
        for r in range(n):
            for c in range(n):
                a[c * n + r] = (A[r * n + c] + A[c * n + r]) * 0.5
        info = _stemr_top(n, k, a, w, z)
        if info == 0:
            top = fabs(w[k - 1])
            if w[0] > n * 2.220446049250313e-16 * top:
                info = -1  # more positive eigenvalues than the bound allows
        m = k
    if info != 0:
        for r in range(n):
            for c in range(n):
                a[c * n + r] = (A[r * n + c] + A[c * n + r]) * 0.5
        info = _syevr(n, a, w, z)
        m = n
    if info != 0:
        return info
    # a is free again: the syrk's scratch
    rank[0] = _rebuild_from_eigenpairs(n, m, w, z, a, out)
    return 0


# ---------------------------------------------------------------------------
# ga-ip projections in the S-matrix's eigenbasis
# ---------------------------------------------------------------------------
#
# After a PSD projection A = U U^T has rank r (a handful), and the next C1 step
# subtracts beta W.  In the eigenbasis of W = Q diag(omega) Q^T the matrix to
# project is  M = Ut Ut^T - beta diag(omega)  (Ut = Q^T U, d x r), whose
# positive eigenpairs -- at most r of them (Weyl) -- come from an r x r problem:
# for lam > 0, M - lam I = Ut Ut^T - K(lam) with K(lam) = lam I + beta diag(omega)
# positive definite, so by Sylvester's law of inertia the number of eigenvalues
# of M above lam is the number of eigenvalues of
#     F(lam) = Ut^T K(lam)^{-1} Ut        (r x r, O(d r^2) to form)
# above 1, and lam is an eigenvalue of M exactly when F(lam) has the
# eigenvalue 1, with eigenvector K(lam)^{-1} Ut c for F's eigenvector c.
# Each positive eigenpair is found by Rayleigh functional iteration on
# (F(lam) - I) c = 0 (a scalar secular equation for lam given c, then one
# step of inverse iteration for c; cubic convergence) from Ut's own columns,
# which are the eigenvectors when beta = 0; the count comes from Weyl's
# bounds or one F.  The vectors are then orthonormalised and polished by
# Rayleigh-Ritz on M, and every Ritz pair's residual is checked.  A round
# costs O(d r^2) instead of a d x d eigendecomposition; the dense round
# takes over whenever a check fails (well under 1% of rounds on the
# benchmark data).

cdef int _jacobi_desc(int n, double *a, double *v, double *w) noexcept nogil:
    """Eigendecomposition of the symmetric n x n ``a`` (full storage, destroyed).

    Cyclic Jacobi: ``v`` (n x n, column c at ``v + c n``) receives the
    eigenvectors, sorted by descending eigenvalue in ``w``.  For the r x r
    problems of the eigenbasis projections, where LAPACK's call overhead
    exceeds the work.  Returns 0, or 1 if 60 sweeps did not converge.
    """
    cdef int p, q, k, sweep, best
    cdef double apq, tau, t, c, s, akp, akq, off, frob, x
    for p in range(n * n):
        v[p] = 0
    for p in range(n):
        v[p * n + p] = 1
    frob = 0
    for p in range(n * n):
        frob = frob + a[p] * a[p]
    for sweep in range(60):
        off = 0
        for p in range(n):
            for q in range(p + 1, n):
                off = off + a[p * n + q] * a[p * n + q]
        if off <= 1e-2 * DBL_EPS * DBL_EPS * frob:
            break
        for p in range(n - 1):
            for q in range(p + 1, n):
                apq = a[p * n + q]
                if fabs(apq) <= 1e-3 * DBL_EPS * sqrt(fabs(a[p * n + p] * a[q * n + q])):
                    # negligible (relative to its diagonal): no rotation
                    a[p * n + q] = 0
                    a[q * n + p] = 0
                    continue
                tau = (a[q * n + q] - a[p * n + p]) / (2 * apq)
                if fabs(tau) > 1e150:
                    t = 0.5 / tau
                elif tau >= 0:
                    t = 1 / (tau + sqrt(1 + tau * tau))
                else:
                    t = -1 / (-tau + sqrt(1 + tau * tau))
                c = 1 / sqrt(1 + t * t)
                s = t * c
                for k in range(n):
                    if k != p and k != q:
                        akp = a[k * n + p]
                        akq = a[k * n + q]
                        a[k * n + p] = c * akp - s * akq
                        a[p * n + k] = a[k * n + p]
                        a[k * n + q] = s * akp + c * akq
                        a[q * n + k] = a[k * n + q]
                a[p * n + p] = a[p * n + p] - t * apq
                a[q * n + q] = a[q * n + q] + t * apq
                a[p * n + q] = 0
                a[q * n + p] = 0
                for k in range(n):
                    akp = v[p * n + k]
                    akq = v[q * n + k]
                    v[p * n + k] = c * akp - s * akq
                    v[q * n + k] = s * akp + c * akq
    else:
        return 1
    for p in range(n):
        w[p] = a[p * n + p]
    for p in range(n):  # selection sort, descending, columns of v along
        best = p
        for q in range(p + 1, n):
            if w[q] > w[best]:
                best = q
        if best != p:
            x = w[p]
            w[p] = w[best]
            w[best] = x
            for k in range(n):
                x = v[p * n + k]
                v[p * n + k] = v[best * n + k]
                v[best * n + k] = x
    return 0


def jacobi_eigh(const double[:, ::1] A, double[::1] w, double[:, ::1] V):
    """Eigenpairs of a small symmetric matrix by cyclic Jacobi (descending).

    A test shim for the r x r solver of the eigenbasis projections: ``w``
    gets the eigenvalues in descending order and the columns of ``V`` the
    eigenvectors.  Returns 0, or 1 if it did not converge.
    """
    cdef int n = <int> A.shape[0]
    cdef int r, c, info
    cdef double *buf = <double *> malloc(2 * n * n * sizeof(double) + 8)
    if buf == NULL:
        raise MemoryError()
    for r in range(n):
        for c in range(n):
            buf[r * n + c] = A[r, c]
    with nogil:
        info = _jacobi_desc(n, buf, buf + n * n, &w[0])
    for r in range(n):
        for c in range(n):
            V[r, c] = buf[n * n + c * n + r]
    free(buf)
    return info


cdef inline double _dot4(int n, const double *x, const double *y) noexcept nogil:
    """``x . y`` with four partial sums (no chain of dependent additions)."""
    cdef double s0 = 0, s1 = 0, s2 = 0, s3 = 0
    cdef int i = 0
    while i + 4 <= n:
        s0 = s0 + x[i] * y[i]
        s1 = s1 + x[i + 1] * y[i + 1]
        s2 = s2 + x[i + 2] * y[i + 2]
        s3 = s3 + x[i + 3] * y[i + 3]
        i += 4
    while i < n:
        s0 = s0 + x[i] * y[i]
        i += 1
    return (s0 + s1) + (s2 + s3)


cdef inline int _pq(int r, int j, int k) noexcept nogil:
    """Index of (j, k), j <= k, among the packed products of :func:`_pack_outer`."""
    return j * r - j * (j - 1) // 2 + k - j


cdef inline void _pack_outer(int d, int r, const double *U,
                             double *P) noexcept nogil:
    """Column q = (j, k), j <= k, of ``P`` (d x r(r+1)/2, column-major): the
    products ``U_ij U_ik`` of U's columns j and k (U: d x r, column-major)."""
    cdef int i, j, k
    cdef const double *uj
    cdef const double *uk
    cdef double *pq = P
    for j in range(r):
        uj = U + j * d
        for k in range(j, r):
            uk = U + k * d
            for i in range(d):
                pq[i] = uj[i] * uk[i]
            pq = pq + d


cdef inline void _form_F(int d, int r, const double *P, const double *om,
                         double beta, double lam, double *g, double *Fp,
                         double *F) noexcept nogil:
    """``g = 1 / (lam + beta om)`` and ``F = U^T diag(g) U`` (r x r, full)
    from U's packed column products ``P`` (:func:`_pack_outer`): one
    matrix-vector product (BLAS) instead of r^2 / 2 dot products;
    ``Fp``: r(r+1)/2 scratch."""
    cdef int i, j, k, q, inc = 1
    cdef int nq = r * (r + 1) // 2
    cdef char tt = b'T'
    cdef double one = 1.0, zero = 0.0
    for i in range(d):
        g[i] = 1.0 / (lam + beta * om[i])
    dgemv(&tt, &d, &nq, &one, <double *> P, &d, g, &inc, &zero, Fp, &inc)
    q = 0
    for j in range(r):
        for k in range(j, r):
            F[j * r + k] = Fp[q]
            F[k * r + j] = Fp[q]
            q += 1


cdef inline void _secular_sums(int d, const double *z, const double *om, double beta,
                               double rho, double *q, double *phi,
                               double *dphi) noexcept nogil:
    """``phi = sum_i z_i^2 q_i`` and ``dphi = sum_i z_i^2 q_i^2`` with
    ``q_i = 1 / (rho + beta om_i)`` (into ``q``): the divisions in a loop of
    their own, which the compiler vectorises."""
    cdef int i = 0
    cdef double p0 = 0, p1 = 0, e0 = 0, e1 = 0, u0, u1
    for i in range(d):
        q[i] = 1.0 / (rho + beta * om[i])
    i = 0
    while i + 2 <= d:
        u0 = z[i] * q[i]
        u1 = z[i + 1] * q[i + 1]
        p0 = p0 + z[i] * u0
        p1 = p1 + z[i + 1] * u1
        e0 = e0 + u0 * u0
        e1 = e1 + u1 * u1
        i += 2
    if i < d:
        u0 = z[i] * q[i]
        p0 = p0 + z[i] * u0
        e0 = e0 + u0 * u0
    phi[0] = p0 + p1
    dphi[0] = e0 + e1


cdef double _secular_root(int d, const double *z, const double *om, double beta,
                          double start, double floor, double *q) noexcept nogil:
    """The rho > floor with ``sum_i z_i^2 / (rho + beta om_i) = 1``, or -1 if
    none: safeguarded Newton on ``1 / phi - 1`` (linear when beta = 0).
    ``q``: d doubles of scratch."""
    cdef double a = floor, b, rho, phi = 0, dphi = 0, new
    cdef int it
    b = _dot4(d, z, z)
    # phi(rho) <= |z|^2 / rho, so phi(|z|^2) <= 1; phi decreases
    if not b > a:
        return -1.0
    _secular_sums(d, z, om, beta, a, q, &phi, &dphi)
    if not phi > 1.0:
        return -1.0
    rho = start if (start > a and start < b) else 0.5 * (a + b)
    for it in range(100):
        _secular_sums(d, z, om, beta, rho, q, &phi, &dphi)
        if phi > 1.0:
            a = rho
        elif phi < 1.0:
            b = rho
        else:
            return rho
        # Newton on 1 / phi - 1: step (1 / phi - 1) phi^2 / dphi
        new = rho - (1.0 / phi - 1.0) * phi * phi / dphi if dphi > 0 else 0.5 * (a + b)
        if not (new > a and new < b):
            new = 0.5 * (a + b)
        if fabs(new - rho) <= 2.0 * DBL_EPS * rho or b - a <= 2.0 * DBL_EPS * b:
            return new
        rho = new
    return rho


cdef int _solve_small(int n, double *a, const double *rhs, double *x,
                      double tiny_rel) noexcept nogil:
    """Solve ``a x = rhs`` (n x n, destroyed) by Gaussian elimination with
    partial pivoting; a pivot below ``tiny_rel`` times the largest entry is
    raised to it (inverse iteration: a singular ``a`` means rhs is already
    the null vector), and a zero ``a`` leaves ``x = rhs``.  Returns 0, or 1
    if ``a`` is not finite."""
    cdef int i, j, k, p
    cdef double big = 0, piv, f, t, amax
    cdef double *ak
    cdef double *ai
    for i in range(n * n):
        if fabs(a[i]) > big:
            big = fabs(a[i])
    for i in range(n):
        x[i] = rhs[i]
    if big == 0:
        return 0  # every vector is a null vector: keep rhs
    if not big < INFINITY:
        return 1
    for k in range(n):
        p = k
        amax = fabs(a[k * n + k])
        for i in range(k + 1, n):
            t = fabs(a[i * n + k])
            if t > amax:
                amax = t
                p = i
        ak = a + k * n
        if p != k:
            # (columns left of k are eliminated and never read again)
            ai = a + p * n
            for j in range(k, n):
                t = ak[j]
                ak[j] = ai[j]
                ai[j] = t
            t = x[k]
            x[k] = x[p]
            x[p] = t
        piv = ak[k]
        if fabs(piv) < tiny_rel * big:
            piv = tiny_rel * big if piv >= 0 else -tiny_rel * big
        # the diagonal keeps 1 / pivot for the back substitution
        piv = 1.0 / piv
        ak[k] = piv
        for i in range(k + 1, n):
            ai = a + i * n
            f = ai[k] * piv
            for j in range(k + 1, n):
                ai[j] = ai[j] - f * ak[j]
            x[i] = x[i] - f * x[k]
    for k in range(n - 1, -1, -1):
        ak = a + k * n
        t = x[k]
        for j in range(k + 1, n):
            t = t - ak[j] * x[j]
        x[k] = t * ak[k]
    return 0


cdef int _basis_positive_part(int d, int r, const double *U0, const double *om,
                              double beta, double om_min, double om_max,
                              double *Unew, int *m_out,
                              double *work) noexcept nogil:
    """``Unew`` (d x m) with ``Unew Unew^T`` the PSD part of
    ``M = U0 U0^T - beta diag(om)`` (see the comment above).

    ``U0``, ``Unew``: d x r, column-major.  ``work``: at least
    ``_basis_work(d, r)`` doubles.  Returns 0, or nonzero when a root search
    or a check fails (the caller then takes the dense path).
    """
    cdef int i, j, k, it, m, got, inc = 1
    cdef char nn = b'N'
    cdef char tt = b'T'
    cdef double one = 1.0, zero = 0.0
    cdef double scale, eps_c, lam, h, hp, x, nrm, nrm0, tol, hd, e
    cdef double *cv
    cdef const double *U = U0               # U0 with orthogonal columns
    cdef double *Uw = work                  # d x r: U0 rotated to orthogonal columns
    cdef double *V = Uw + d * r              # d x r: eigenvectors
    cdef double *g = V + d * r              # d
    cdef double *y = g + d                  # d
    cdef double *F = y + d                  # r x r
    cdef double *C = F + r * r              # r x r
    cdef double *R = C + r * r              # r x r
    cdef double *tmp = R + r * r            # r x r
    cdef double *mu = tmp + r * r           # r
    cdef double *s2 = mu + r                # r
    cdef double *lo = s2 + r                # r
    cdef double *hi = lo + r                # r
    cdef double *P = hi + r                 # d x r(r+1)/2: U's row products
    cdef double *Fp = P + d * (r * (r + 1) // 2)  # r(r+1)/2
    cdef double *Gp = Fp + r * (r + 1) // 2  # r(r+1)/2
    cdef int nq = r * (r + 1) // 2
    m_out[0] = 0
    # Gram matrix and rotation to orthogonal columns (norms^2 = s2, descending)
    # (from U0's packed column products: Gram = P^T 1)
    _pack_outer(d, r, U0, P)
    for i in range(d):
        y[i] = 1.0
    dgemv(&tt, &d, &nq, &one, P, &d, y, &inc, &zero, Fp, &inc)
    i = 0
    for j in range(r):
        for k in range(j, r):
            F[j * r + k] = Fp[i]
            F[k * r + j] = Fp[i]
            i += 1
    # U0's columns are orthogonal and in descending order whenever it comes
    # from the previous eigenbasis round (its Ritz vectors) or from a dense
    # eigendecomposition: then U = U0, with no rotation to compute
    got = 1
    for j in range(r):
        if j + 1 < r and F[(j + 1) * r + j + 1] > F[j * r + j]:
            got = 0
        for k in range(j + 1, r):
            if not fabs(F[j * r + k]) <= 1e-13 * sqrt(F[j * r + j] * F[k * r + k]):
                got = 0
    if got:
        for j in range(r):
            s2[j] = F[j * r + j]
        U = U0
    else:
        if _jacobi_desc(r, F, R, s2) != 0:
            return 1
        # U = U0 R (both column-major)
        dgemm(&nn, &nn, &d, &r, &r, &one, <double *> U0, &d, R, &r, &zero, Uw, &d)
        U = Uw
        _pack_outer(d, r, U, P)
    # Gp = P^T om: the packed U^T diag(om) U
    dgemv(&tt, &d, &nq, &one, P, &d, <double *> om, &inc, &zero, Gp, &inc)
    scale = s2[0] if s2[0] > beta * om_max else beta * om_max
    if not scale > 0:
        return 0  # U0 = 0: nothing positive
    eps_c = 4.0 * d * DBL_EPS * scale
    for j in range(r):
        lo[j] = s2[j] - beta * om_max
        hi[j] = s2[j] - beta * om_min
    m = r
    for j in range(r):
        if not lo[j] > eps_c:
            m = -1
    if m < 0:
        # count the eigenvalues above eps_c (those below are rounding)
        _form_F(d, r, P, om, beta, eps_c, g, Fp, F)
        if _jacobi_desc(r, F, C, mu) != 0:
            return 1
        m = 0
        for j in range(r):
            if mu[j] > 1.0:
                m += 1
    for j in range(r):
        if lo[j] < eps_c:
            lo[j] = eps_c
        if hi[j] < lo[j]:
            hi[j] = lo[j]
    for j in range(m):
        # Rayleigh functional iteration: rho(c) solves c^T F(rho) c = 1, then
        # one step of inverse iteration (F(rho) - I) x = c; cubic convergence,
        # from c = e_j (U's columns are the eigenvectors when beta = 0).
        cv = C + j * r
        for k in range(r):
            cv[k] = 0.0
        if s2[j] > 0:
            # start from first-order perturbation theory in U's span,
            # H = diag(s2) - beta G with G_jk = u_j^T diag(om) u_k / (|u_j| |u_k|)
            # (u_j: U's orthogonal columns): v ~ sum_k chat_k u_k / |u_k|, so
            # c = U^T v has c_k = chat_k |u_k|; lam to second order
            hd = s2[j] - beta * Gp[_pq(r, j, j)] / s2[j]
            lam = hd
            cv[j] = sqrt(s2[j])
            for k in range(r):
                if k == j or not s2[k] > 0:
                    continue
                e = -beta * Gp[_pq(r, j, k) if j < k else _pq(r, k, j)] / sqrt(s2[j] * s2[k])
                h = hd - (s2[k] - beta * Gp[_pq(r, k, k)] / s2[k])
                if e != 0 and fabs(e) <= 0.3 * fabs(h):
                    cv[k] = e / h * sqrt(s2[k])
                    lam = lam + e * e / h
            nrm = 0
            for k in range(r):
                nrm = nrm + cv[k] * cv[k]
            nrm = sqrt(nrm)
            for k in range(r):
                cv[k] = cv[k] / nrm
        else:
            cv[j] = 1.0
            lam = lo[j]
        if not lam >= lo[j]:
            lam = lo[j]
        if not lam <= hi[j]:
            lam = hi[j]
        for it in range(30):
            dgemv(&nn, &d, &r, &one, <double *> U, &d, cv, &inc, &zero, y, &inc)  # y = U c
            lam = _secular_root(d, y, om, beta, lam, eps_c, g)
            if not lam > 0:
                return 5  # c sees no positive eigenvalue
            _form_F(d, r, P, om, beta, lam, g, Fp, F)
            for k in range(r):
                F[k * r + k] = F[k * r + k] - 1.0
            if _solve_small(r, F, cv, mu, 16.0 * DBL_EPS * (1.0 + s2[0] / lam)) != 0:
                return 6
            # mu: the new direction; normalise, same sign as cv
            nrm = 0
            h = 0
            for k in range(r):
                nrm = nrm + mu[k] * mu[k]
                h = h + mu[k] * cv[k]
            nrm = sqrt(nrm)
            if not nrm > 0:
                return 6
            if h < 0:
                nrm = -nrm
            hp = 0
            for k in range(r):
                x = mu[k] / nrm
                hp = hp + (x - cv[k]) * (x - cv[k])
                cv[k] = x
            if hp <= 1e-10:
                break
        else:
            return 2
        # the final vector's Rayleigh functional and eigenvector K^{-1} U c
        dgemv(&nn, &d, &r, &one, <double *> U, &d, cv, &inc, &zero, y, &inc)
        lam = _secular_root(d, y, om, beta, lam, eps_c, g)
        if not (lam > 0 and lam >= lo[j] * (1 - 1e-12) and lam <= hi[j] * (1 + 1e-12)):
            return 7  # outside Weyl's bracket of root j: another root
        for i in range(d):
            V[j * d + i] = y[i] / (lam + beta * om[i])
    if m == 0:
        return 0
    # orthonormalise (modified Gram-Schmidt, twice)
    for j in range(m):
        nrm0 = 0
        for i in range(d):
            nrm0 = nrm0 + V[j * d + i] * V[j * d + i]
        nrm0 = sqrt(nrm0)
        for got in range(2):
            for k in range(j):
                x = _dot4(d, V + k * d, V + j * d)
                for i in range(d):
                    V[j * d + i] = V[j * d + i] - x * V[k * d + i]
        nrm = 0
        for i in range(d):
            nrm = nrm + V[j * d + i] * V[j * d + i]
        nrm = sqrt(nrm)
        if not nrm > 1e-6 * nrm0:
            return 3  # two roots gave the same vector
        for i in range(d):
            V[j * d + i] = V[j * d + i] / nrm
    # Rayleigh-Ritz: H = (V^T U)(V^T U)^T - beta V^T diag(om) V  (m x m)
    dgemm(&tt, &nn, &m, &r, &d, &one, V, &d, <double *> U, &d, &zero, R, &m)  # R = V^T U
    # tmp = V^T diag(om) V, with diag(om) V in Unew (free until the end)
    for j in range(m):
        for i in range(d):
            Unew[j * d + i] = om[i] * V[j * d + i]
    dgemm(&tt, &nn, &m, &m, &d, &one, V, &d, Unew, &d, &zero, tmp, &m)
    for j in range(m):
        for k in range(j, m):
            x = 0
            for i in range(r):
                x = x + R[i * m + j] * R[i * m + k]
            F[j * m + k] = x - beta * tmp[k * m + j]
            F[k * m + j] = F[j * m + k]
    if _jacobi_desc(m, F, C, mu) != 0:
        return 1
    # Ritz vectors into Unew, each checked: ||M v - theta v|| <= tol
    tol = 64.0 * d * DBL_EPS * scale
    got = 0
    for j in range(m):
        dgemv(&nn, &d, &m, &one, V, &d, C + j * m, &inc, &zero, y, &inc)  # y = V c_j
        # residual: U (U^T y) - beta om y - theta y
        dgemv(&tt, &d, &r, &one, <double *> U, &d, y, &inc, &zero, tmp, &inc)
        dgemv(&nn, &d, &r, &one, <double *> U, &d, tmp, &inc, &zero, g, &inc)
        nrm = 0
        for i in range(d):
            x = g[i] - beta * om[i] * y[i] - mu[j] * y[i]
            nrm = nrm + x * x
        if not sqrt(nrm) <= tol:
            return 4
        if mu[j] > 0:
            x = sqrt(mu[j])
            for i in range(d):
                Unew[got * d + i] = y[i] * x
            got += 1
    m_out[0] = got
    return 0


cdef inline Py_ssize_t _basis_work(int d, int r) noexcept nogil:
    return 2 * d * r + 2 * d + 4 * r * r + 4 * r + (d + 2) * (r * (r + 1) // 2) + 8


def basis_positive_part(const double[:, ::1] U0, const double[::1] omega, double beta):
    """The PSD part of ``U0 U0^T - beta diag(omega)`` as a factor (test shim).

    The eigenbasis round of :func:`gaip_projections` on its own: returns
    ``(info, Unew)`` with ``Unew Unew^T`` the PSD part (``Unew``: d x m, m at
    most r) when ``info`` is 0; nonzero ``info`` means the round would fall
    back to the dense path.  ``U0``: d x r (its columns need not be orthogonal).
    """
    cdef int d = <int> U0.shape[0], r = <int> U0.shape[1], m = 0, info, i, j
    cdef double om_min, om_max
    if omega.shape[0] != d or d == 0 or r == 0:
        raise ValueError("basis_positive_part: need U0 (d, r) and omega (d,), d, r >= 1")
    cdef double *buf = <double *> malloc((_basis_work(d, r) + 2 * d * r) * sizeof(double))
    if buf == NULL:
        raise MemoryError()
    cdef double *u0 = buf + _basis_work(d, r)
    cdef double *un = u0 + d * r
    om_min = omega[0]
    om_max = omega[0]
    for i in range(d):
        om_min = min(om_min, omega[i])
        om_max = max(om_max, omega[i])
        for j in range(r):
            u0[j * d + i] = U0[i, j]
    with nogil:
        info = _basis_positive_part(d, r, u0, &omega[0], beta, om_min, om_max,
                                    un, &m, buf)
    out = np.empty((d, m if info == 0 else 0))
    if info == 0:
        for i in range(d):
            for j in range(m):
                out[i, j] = un[j * d + i]
    free(buf)
    return info, out


cdef void _factor_to_dense(int n, int r, const double *Q, const double *Ub,
                           double *Y, double *tmp, double *A) noexcept nogil:
    """``A = (Q Ub)(Q Ub)^T`` (row-major n x n, both triangles); Y: n x r scratch,
    tmp: n x n scratch.  Row-major Q is column-major Q^T, hence the transpose."""
    cdef char tr_n = b'N'
    cdef char tr_t = b'T'
    cdef char uplo = b'U'
    cdef double one = 1.0, zero = 0.0
    cdef int rr, c
    if r == 0:
        for rr in range(n * n):
            A[rr] = 0
        return
    dgemm(&tr_t, &tr_n, &n, &r, &n, &one, <double *> Q, &n, <double *> Ub, &n,
          &zero, Y, &n)
    dsyrk(&uplo, &tr_n, &n, &r, &one, Y, &n, &zero, tmp, &n)
    for c in range(n):
        for rr in range(c + 1):
            A[rr * n + c] = tmp[c * n + rr]
            A[c * n + rr] = tmp[c * n + rr]


ctypedef double (*c1_fn_t)(double *, const double *, double,
                          Py_ssize_t) noexcept nogil


def gaip_projections(double[:, ::1] A, const double[:, ::1] W,
                     const double[:, ::1] W_unit, double t, double t_unit,
                     int max_proj, double eps, size_t c1_address,
                     const double[:, ::1] Q=None, const double[::1] omega=None,
                     int max_basis_rank=16, double[:, ::1] factor=None,
                     long[::1] counts=None):
    """MMC's projection loop: alternate C1 and C2 until the S-constraint holds.

    Each round projects ``A`` onto the half-space ``<W, A> <= t`` (along
    ``W_unit = W / ||W||``, ``t_unit = t / ||W||``; the Numba C1 kernel,
    called through its C address), then onto the PSD cone
    (clipping negative eigenvalues), and stops once
    ``(<W, A> - t) / t < eps`` -- Xing et al.'s iterative projections as
    metric-learn 0.7.0 runs them.  After a PSD projection of rank r, the next
    C1 step subtracts a PSD matrix, so (Weyl) at most r eigenvalues stay
    positive: later rounds compute only the top r + 1 eigenpairs (MRRR) --
    or, given W's eigendecomposition ``W = Q diag(omega) Q^T`` and while r is
    at most ``max_basis_rank``, run in W's eigenbasis on the factor of A at
    O(d r^2) a round (see ``_basis_positive_part``), falling back to the dense
    round whenever one of its checks fails.

    Parameters
    ----------
    A : ndarray of shape (d, d), float64
        Updated in place.
    W, W_unit : ndarray of shape (d, d), float64
    t, t_unit : float
    max_proj : int
    eps : float
    c1_address : int
        Address of the C1 step, ``double c1(double *A, const double *W_unit,
        double t_unit, Py_ssize_t size)`` (the Numba kernel
        ``fastmetric._numba.projections.c1_project_cfunc.address``).
    Q : ndarray of shape (d, d), float64, optional
        Orthonormal eigenvectors of W (columns).
    omega : ndarray of shape (d,), float64, optional
        W's eigenvalues, non-negative.  Without Q and omega every round is dense.
    max_basis_rank : int
        Largest rank of A for the eigenbasis rounds.
    factor : ndarray of shape (d, d), float64, optional
        Receives in its first ``rank`` columns a factor U of the result,
        ``A = U U^T`` (when at least one round ran).
    counts : ndarray of shape (3,), int64, optional
        Receives the numbers of dense and of eigenbasis rounds and the rank
        of the result (-1 if no round ran).

    Returns
    -------
    satisfied : bool
    rounds : int
    """
    cdef c1_fn_t c1 = <c1_fn_t> <void *> c1_address
    cdef int n = <int> A.shape[0]
    cdef Py_ssize_t nn = <Py_ssize_t> n * n, idx
    cdef int rnd, info = 0, k = n, rank = -1, i, j, r_new
    cdef long n_dense = 0, n_basis = 0
    cdef int r_cap = max_basis_rank if max_basis_rank < n else n
    cdef double dot, om_min = 0, om_max = 0, beta
    cdef double w_norm = t / t_unit if t_unit != 0 else 0
    cdef bint satisfied = False, basis = False
    cdef bint use_basis = Q is not None and omega is not None and r_cap > 0
    cdef double *buf = <double *> malloc((3 * nn + n) * sizeof(double))
    cdef double *bwork = NULL
    cdef double *Ub = NULL
    cdef double *Un = NULL
    cdef double *a
    cdef double *z
    cdef double *out
    cdef double *w
    cdef double *swap
    cdef double *Ap = &A[0, 0]
    cdef const double *Wp = &W[0, 0]
    cdef const double *W1p = &W_unit[0, 0]
    cdef const double *Qp = NULL
    cdef const double *omp = NULL
    cdef char tr_n = b'N'
    cdef double one = 1.0, zero = 0.0
    if use_basis:
        if Q.shape[0] != n or Q.shape[1] != n or omega.shape[0] != n:
            raise ValueError("gaip_projections: need Q (d, d) and omega (d,)")
        if not w_norm > 0:
            use_basis = False
    if use_basis:
        Qp = &Q[0, 0]
        omp = &omega[0]
        om_min = omega[0]
        om_max = omega[0]
        for i in range(n):
            if omega[i] < om_min:
                om_min = omega[i]
            if omega[i] > om_max:
                om_max = omega[i]
        bwork = <double *> malloc((_basis_work(n, r_cap) + 2 * n * r_cap)
                                  * sizeof(double))
        if bwork == NULL:
            free(buf)
            raise MemoryError()
        Ub = bwork + _basis_work(n, r_cap)
        Un = Ub + n * r_cap
    if buf == NULL:
        free(bwork)
        raise MemoryError()
    if factor is not None and (factor.shape[0] != n or factor.shape[1] != n):
        free(buf)
        free(bwork)
        raise ValueError("gaip_projections: factor must be (d, d)")
    if counts is not None and counts.shape[0] < 3:
        free(buf)
        free(bwork)
        raise ValueError("gaip_projections: counts needs 3 entries")
    a = buf
    z = buf + nn
    out = buf + 2 * nn
    w = buf + 3 * nn
    rnd = 0
    with nogil:
        while rnd < max_proj:
            rnd += 1
            if basis:
                # C1 and C2 on the factor: A = Q Ub Ub^T Q^T, <W, A> from omega
                dot = 0
                for i in range(n):
                    beta = 0
                    for j in range(rank):
                        beta = beta + Ub[j * n + i] * Ub[j * n + i]
                    dot = dot + omp[i] * beta
                if dot / w_norm > t_unit:
                    beta = (dot / w_norm - t_unit) / w_norm
                    if _basis_positive_part(n, rank, Ub, omp, beta, om_min, om_max,
                                            Un, &r_new, bwork) != 0:
                        # back to the dense round (this one again)
                        basis = False
                        rnd -= 1
                        _factor_to_dense(n, rank, Qp, Ub, Un, a, Ap)
                        k = rank + 1 if rank < n else n
                        continue
                    n_basis += 1
                    swap = Ub
                    Ub = Un
                    Un = swap
                    rank = r_new
                    dot = 0
                    for i in range(n):
                        beta = 0
                        for j in range(rank):
                            beta = beta + Ub[j * n + i] * Ub[j * n + i]
                        dot = dot + omp[i] * beta
                else:
                    n_basis += 1  # C1 holds: A stays as it is
                if (dot - t) / t < eps:
                    satisfied = True
                    break
                continue
            c1(Ap, W1p, t_unit, nn)
            info = _psd_clip_rank_bounded(n, k, Ap, a, w, z, out, &rank)
            if info != 0:
                break
            n_dense += 1
            for idx in range(nn):
                Ap[idx] = out[idx]
            k = rank + 1 if rank < n else n
            dot = 0
            for idx in range(nn):
                dot += Wp[idx] * Ap[idx]
            if (dot - t) / t < eps:
                satisfied = True
                break
            if use_basis and rank <= r_cap:
                # z holds the factor (A = U U^T, d x rank): Ub = Q^T U
                if rank > 0:
                    dgemm(&tr_n, &tr_n, &n, &rank, &n, &one, <double *> Qp, &n,
                          z, &n, &zero, Ub, &n)
                basis = True
        if basis:
            # (Un = Q Ub afterwards: the factor of A)
            _factor_to_dense(n, rank, Qp, Ub, Un, a, Ap)
            z = Un
        if factor is not None and rank > 0:
            # z: column-major n x rank factor (dense round or Q Ub)
            for i in range(n):
                for j in range(rank):
                    factor[i, j] = z[j * n + i]
    if counts is not None:
        counts[0] = n_dense
        counts[1] = n_basis
        counts[2] = rank
    free(buf)
    free(bwork)
    if info != 0:
        raise ArithmeticError(f"LAPACK eigendecomposition failed (info={info})")
    return bool(satisfied), rnd


# ---------------------------------------------------------------------------
# Spectral projected gradient for small exact-MMC problems
# ---------------------------------------------------------------------------

cdef enum:
    SPG_ROWS = 512


cdef double _spg_block(int d, int m, const double *Zb, const double *B,
                       double *G, double *dists, double *Y) noexcept nogil:
    """One block of :func:`_spg_value_grad` (``m`` rows): its gradient into
    ``G`` (overwritten), its distances into ``dists``; returns its value."""
    cdef int p, k
    cdef char nn = b'N'
    cdef char tt = b'T'
    cdef double one = 1.0, zero = 0.0
    cdef double s, dist, w, total = 0.0
    # column-major view: Zb is d x m; Y = B Zb (B symmetric)
    dgemm(&nn, &nn, &d, &m, &d, &one, <double *> B, &d, <double *> Zb, &d,
          &zero, Y, &d)
    for p in range(m):
        s = 0.0
        for k in range(d):
            s = s + Y[p * d + k] * Zb[p * d + k]
        dist = sqrt(s) if s > 0 else 0.0
        dists[p] = dist
        total += dist
        w = 0.5 / dist if dist > 0 else 0.0
        for k in range(d):
            Y[p * d + k] = Zb[p * d + k] * w
    # G = Y Zb^T in column-major terms: sum_p y_p z_p^T
    dgemm(&nn, &tt, &d, &d, &m, &one, Y, &d, <double *> Zb, &d, &zero, G, &d)
    return total


cdef inline Py_ssize_t _spg_acc_size(Py_ssize_t n, int d) noexcept nogil:
    """Doubles of the per-block partial sums :func:`_spg_value_grad` needs."""
    return ((n + SPG_ROWS - 1) // SPG_ROWS) * (<Py_ssize_t> d * d + 1)


cdef double _spg_value_grad(int n, int d, const double *Z, const double *B,
                            double *G, double *dists, double *Y, double *acc,
                            int nt) noexcept nogil:
    """``f(B) = sum_p sqrt(z_p^T B z_p)``; ``G`` (d x d) gets its gradient.

    ``Z`` row-major (n x d).  Blocks of SPG_ROWS rows are spread over ``nt``
    OpenMP threads; ``Y`` is scratch of ``nt * SPG_ROWS * d`` and ``acc`` of
    :func:`_spg_acc_size` doubles.  Every block's value and gradient go to
    its own slot and the slots are added in block order, so the result is
    the same, bit for bit, for any number of threads.  Pairs at distance 0
    contribute nothing to ``G``.  ``G`` is symmetrised.
    """
    cdef Py_ssize_t n_blocks = (n + SPG_ROWS - 1) // SPG_ROWS
    cdef Py_ssize_t blk, start, k, dd = <Py_ssize_t> d * d
    cdef int m, l, tid
    cdef double f = 0.0, g
    cdef double *fpart = acc + n_blocks * dd
    if n == 0:
        for k in range(dd):
            G[k] = 0.0
        return 0.0
    if nt > n_blocks:
        nt = <int> n_blocks
    if nt < 1:
        nt = 1
    with parallel(num_threads=nt):
        tid = threadid()
        for blk in prange(n_blocks, schedule='static'):
            start = blk * SPG_ROWS
            m = <int> (n - start if n - start < SPG_ROWS else SPG_ROWS)
            fpart[blk] = _spg_block(d, m, Z + start * d, B, acc + blk * dd,
                                    dists + start, Y + tid * SPG_ROWS * d)
    for k in range(dd):
        G[k] = acc[k]
    f = fpart[0]
    for blk in range(1, n_blocks):
        for k in range(dd):
            G[k] = G[k] + acc[blk * dd + k]
        f = f + fpart[blk]
    for k in range(d):
        for l in range(k + 1, d):
            g = 0.5 * (G[k * d + l] + G[l * d + k])
            G[k * d + l] = g
            G[l * d + k] = g
    return f


cdef double _spg_block_packed(int nq, int m, const double *Qb, const double *bq,
                              double *gq, double *dists, double *w) noexcept nogil:
    """One block of :func:`_spg_value_grad_packed`: ``m`` rows stored column by
    column (``Qb[q * m + p]``, so both products run down long columns); its
    packed gradient into ``gq`` (overwritten), its distances into ``dists``,
    ``w`` (m) scratch; returns its value."""
    cdef int p, inc = 1
    cdef char nn = b'N'
    cdef char tt = b'T'
    cdef double one = 1.0, zero = 0.0
    cdef double s, dist, total = 0.0
    # Qb is m x nq column-major: w = Qb bq holds z_p^T B z_p
    dgemv(&nn, &m, &nq, &one, <double *> Qb, &m, <double *> bq, &inc, &zero,
          w, &inc)
    for p in range(m):
        s = w[p]
        dist = sqrt(s) if s > 0 else 0.0
        dists[p] = dist
        total += dist
        w[p] = 0.5 / dist if dist > 0 else 0.0
    dgemv(&tt, &m, &nq, &one, <double *> Qb, &m, w, &inc, &zero, gq, &inc)
    return total


cdef inline Py_ssize_t _spg_packed_acc_size(Py_ssize_t n, int nq) noexcept nogil:
    """Doubles of the per-block partial sums :func:`_spg_value_grad_packed` needs."""
    return ((n + SPG_ROWS - 1) // SPG_ROWS) * (<Py_ssize_t> nq + 1)


cdef void _spg_pack_rows(int n, int d, const double *Z, double *Qz) noexcept nogil:
    """The packed quadratic rows of ``Z``: for row p, ``z_k z_l`` for ``k <= l``
    (the upper triangle row by row), doubled off the diagonal, so that their
    dot product with ``pack(B)`` is ``z_p^T B z_p`` for symmetric B.  Stored
    by blocks of SPG_ROWS rows, each block column by column (entry q of row
    ``start + p`` at ``Qz[start * nq + q * m + p]``, m the block's rows)."""
    cdef Py_ssize_t start, p, blk_i
    cdef int k, l, m, q
    cdef int nq = d * (d + 1) // 2
    cdef const double *z
    cdef double *blk
    for blk_i in range((n + SPG_ROWS - 1) // SPG_ROWS):
        start = blk_i * SPG_ROWS
        m = <int> (n - start if n - start < SPG_ROWS else SPG_ROWS)
        blk = Qz + start * nq
        for p in range(m):
            z = Z + (start + p) * d
            q = 0
            for k in range(d):
                blk[q * m + p] = z[k] * z[k]
                q += 1
                for l in range(k + 1, d):
                    blk[q * m + p] = 2.0 * (z[k] * z[l])
                    q += 1


cdef void _spg_pack(int d, const double *B, double *bq) noexcept nogil:
    """The upper triangle of symmetric ``B`` row by row (see _spg_pack_rows)."""
    cdef int k, l, q = 0
    for k in range(d):
        for l in range(k, d):
            bq[q] = B[k * d + l]
            q += 1


cdef double _spg_value_grad_packed(int n, int d, const double *Qz, const double *B,
                                   double *G, double *dists, double *W,
                                   double *acc, int nt) noexcept nogil:
    """:func:`_spg_value_grad` through the packed quadratic rows of
    :func:`_spg_pack_rows`: two matrix-vector products per block, ``4 n nq``
    flops with ``nq = d(d+1)/2`` instead of ``4 n d^2`` in matrix products on
    blocks d wide, which BLAS runs slowly for small d.  ``W`` is scratch of
    ``d(d+1)/2 + nt * SPG_ROWS`` doubles and ``acc`` of
    :func:`_spg_packed_acc_size`; per-block slots added in block order, so
    the result is the same, bit for bit, for any number of threads.
    """
    cdef int nq = d * (d + 1) // 2
    cdef Py_ssize_t n_blocks = (n + SPG_ROWS - 1) // SPG_ROWS
    cdef Py_ssize_t blk, start, k
    cdef int m, l, q, tid
    cdef double f = 0.0
    cdef double *fpart = acc + n_blocks * nq
    cdef double *bq = W
    cdef double *gq
    if n == 0:
        for k in range(<Py_ssize_t> d * d):
            G[k] = 0.0
        return 0.0
    if nt > n_blocks:
        nt = <int> n_blocks
    if nt < 1:
        nt = 1
    _spg_pack(d, B, bq)
    with parallel(num_threads=nt):
        tid = threadid()
        for blk in prange(n_blocks, schedule='static'):
            start = blk * SPG_ROWS
            m = <int> (n - start if n - start < SPG_ROWS else SPG_ROWS)
            fpart[blk] = _spg_block_packed(nq, m, Qz + start * nq, bq,
                                           acc + blk * nq, dists + start,
                                           W + nq + tid * SPG_ROWS)
    gq = acc
    for blk in range(1, n_blocks):
        for q in range(nq):
            gq[q] = gq[q] + acc[blk * nq + q]
    f = fpart[0]
    for blk in range(1, n_blocks):
        f = f + fpart[blk]
    q = 0
    for k in range(d):
        G[k * d + k] = gq[q]
        q += 1
        for l in range(<int> k + 1, d):
            G[k * d + l] = 0.5 * gq[q]
            G[l * d + k] = 0.5 * gq[q]
            q += 1
    return f


cdef double _spg_fw_gap(int n, int d, double f, const double *G,
                        const double *dists, Py_ssize_t n_identical,
                        double *a, double *w, int *info) noexcept nogil:
    """Relative Frank-Wolfe gap ``(lambda_max(G) - f / 2) / f``, certified.

    ``inf`` when a pair other than the ``n_identical`` pairs of identical
    points sits at distance 0 (its term has no gradient there).
    """
    cdef Py_ssize_t zeros = 0, p
    cdef int k
    cdef double top
    for p in range(n):
        if dists[p] == 0.0:
            zeros += 1
    if zeros > n_identical:
        return INFINITY
    for k in range(d * d):
        a[k] = G[k]
    info[0] = _syevr_top(d, 1, a, w, <double *> NULL)
    if info[0] != 0:
        return INFINITY
    top = w[0] - 0.5 * f
    if top < 0:
        top = 0.0
    return top / (f if f > DBL_TINY else DBL_TINY)


cdef void _capped_simplex(int d, const double *lam, double *out,
                          double *u) noexcept nogil:
    """Euclidean projection of ``lam`` onto ``{x >= 0, sum(x) <= 1}``."""
    cdef int k, q
    cdef double total = 0.0, css = 0.0, theta, cand, v
    for k in range(d):
        out[k] = lam[k] if lam[k] > 0 else 0.0
        total += out[k]
    if total <= 1.0:
        return
    # u: lam sorted in decreasing order (insertion sort; d is small here)
    for k in range(d):
        v = lam[k]
        q = k
        while q > 0 and u[q - 1] < v:
            u[q] = u[q - 1]
            q -= 1
        u[q] = v
    theta = u[0] - 1.0
    for k in range(d):
        css += u[k]
        cand = (css - 1.0) / (k + 1)
        if u[k] - cand > 0:
            theta = cand
    for k in range(d):
        v = lam[k] - theta
        out[k] = v if v > 0 else 0.0


cdef enum:
    # The packed pass (see _spg_value_grad_packed) up to this many features
    # (measured per iteration, 5000 rows, one thread: d=5 72 against 93 us,
    # d=6 74 against 78, d=7 a tie, d=8 115 against 92, d=11 247 against 207:
    # the blocked pass's small gemms run fast on current OpenBLAS) ...
    SPG_PACKED_MAX_D = 6
    # ... while its rows take at most this many doubles (32 MB)
    SPG_PACKED_MAX_ELEMS = 4000000


cdef struct SpgPass:
    # One of the two ways of evaluating f and its gradient over the rows Z.
    int n
    int d
    int nt
    bint packed
    const double *Z
    double *Qz        # packed quadratic rows (n x d(d+1)/2), or NULL
    double *scratch
    double *acc


cdef bint _spg_packed_pays(int n, int d) noexcept nogil:
    return d <= SPG_PACKED_MAX_D and \
        <Py_ssize_t> n * (d * (d + 1) // 2) <= SPG_PACKED_MAX_ELEMS


cdef int _spg_pass_init(SpgPass *ps, int n, int d, const double *Z, int nt,
                        bint packed) noexcept nogil:
    """Allocate the pass's buffers (and pack the rows); -1 when out of memory."""
    cdef int nq = d * (d + 1) // 2
    ps.n = n
    ps.d = d
    ps.nt = nt if nt > 1 else 1
    ps.packed = packed
    ps.Z = Z
    ps.Qz = NULL
    if packed:
        ps.scratch = <double *> malloc(
            (<Py_ssize_t> n * nq + nq + ps.nt * SPG_ROWS
             + _spg_packed_acc_size(n, nq)) * sizeof(double))
        if ps.scratch == NULL:
            return -1
        ps.Qz = ps.scratch
        ps.scratch = ps.Qz + <Py_ssize_t> n * nq
        ps.acc = ps.scratch + nq + ps.nt * SPG_ROWS
        _spg_pack_rows(n, d, Z, ps.Qz)
    else:
        ps.scratch = <double *> malloc(
            (ps.nt * SPG_ROWS * d + _spg_acc_size(n, d)) * sizeof(double))
        if ps.scratch == NULL:
            return -1
        ps.acc = ps.scratch + ps.nt * SPG_ROWS * d
    return 0


cdef void _spg_pass_free(SpgPass *ps) noexcept nogil:
    free(ps.Qz if ps.packed else ps.scratch)


cdef double _spg_eval(SpgPass *ps, const double *B, double *G,
                      double *dists) noexcept nogil:
    if ps.packed:
        return _spg_value_grad_packed(ps.n, ps.d, ps.Qz, B, G, dists, ps.scratch,
                                      ps.acc, ps.nt)
    return _spg_value_grad(ps.n, ps.d, ps.Z, B, G, dists, ps.scratch, ps.acc,
                           ps.nt)


def spg_value_grad(const double[:, ::1] Z, const double[:, ::1] B,
                   double[:, ::1] G, double[::1] dists, int num_threads=1,
                   packed=None):
    """``f(B) = sum_p sqrt(z_p^T B z_p)``, its gradient into ``G`` and the distances.

    Parameters
    ----------
    Z : ndarray of shape (n, d), float64
        One difference per row.
    B : ndarray of shape (d, d), symmetric PSD
    G : ndarray of shape (d, d)
        Receives ``sum_p z_p z_p^T / (2 dist_p)`` over pairs with
        ``dist_p > 0`` (symmetric).
    dists : ndarray of shape (n,)
    num_threads : int
        OpenMP threads over blocks of rows (BLAS must be single-threaded).
    packed : bool or None
        Evaluate through the packed quadratic rows (two matrix-vector
        products per block) or by matrix products on the rows; None chooses
        as :func:`spg_spectraplex` does.

    Returns
    -------
    f : float
    """
    cdef int n = <int> Z.shape[0], d = <int> Z.shape[1]
    cdef double f
    cdef SpgPass ps
    cdef bint use_packed = _spg_packed_pays(n, d) if packed is None else bool(packed)
    if _spg_pass_init(&ps, n, d, &Z[0, 0] if n > 0 else NULL, num_threads,
                      use_packed) != 0:
        raise MemoryError()
    with nogil:
        f = _spg_eval(&ps, &B[0, 0], &G[0, 0], &dists[0] if n > 0 else NULL)
    _spg_pass_free(&ps)
    return f


def spg_spectraplex(const double[:, ::1] Z, double[:, ::1] B, int max_iter,
                    double target, Py_ssize_t n_identical, int patience,
                    double[::1] history, double[::1] gaps, int num_threads=1,
                    packed=None):
    """Maximise ``f(B) = sum_p sqrt(z_p^T B z_p)`` over ``{B PSD, trace B <= 1}``.

    Spectral projected gradient, as the Python loop of
    :func:`fastmetric._mmc_exact.solve_exact` runs it: Barzilai-Borwein
    steps, projection by one eigendecomposition and a capped-simplex
    projection of the eigenvalues, non-monotone Armijo backtracking over the
    last 10 values, the Frank-Wolfe gap as the certificate.  For small
    problems, where Python's per-iteration overhead would dominate.

    Parameters
    ----------
    Z : ndarray of shape (n, d), float64
        Whitened dissimilar differences.
    B : ndarray of shape (d, d)
        Start, on the spectraplex; overwritten with the last iterate.
    max_iter : int
    target : float
        Stop once the certified relative gap is at most this.
    n_identical : int
        Pairs with ``z_p = 0``, which never invalidate the certificate.
    patience : int (>= 8)
        After this many iterations, stop when the linear rate of the gaps
        predicts more than ``patience`` further iterations (the caller then
        switches to Newton).
    history, gaps : ndarray of shape (max_iter,)
        Receive f and the gap after each iteration.
    num_threads : int
        OpenMP threads for the passes over the rows (BLAS must be
        single-threaded); any number gives the same iterates, bit for bit.
    packed : bool or None
        Evaluate through the packed quadratic rows ``z_k z_l`` (two
        matrix-vector products per block of rows, ``2 n d (d+1)`` flops a pass)
        rather than matrix products on d-wide blocks, which BLAS runs slowly
        for small d; None: packed up to 6 features while the packed rows
        take at most 32 MB.

    Returns
    -------
    n_iter : int
    f : float
    gap : float
    G : ndarray of shape (d, d)
        The gradient at the returned B.
    status : int
        0 certified, 1 out of iterations or patience, 2 stalled (no step of
        at least 2^-20 of the projection passes the line search), 3 every
        distance is 0 at the start (nothing done).
    """
    cdef int n = <int> Z.shape[0], d = <int> Z.shape[1]
    cdef Py_ssize_t dd = <Py_ssize_t> d * d
    cdef int n_iter = 0, status = 1, info = 0, k, q, slot
    cdef double f, f_new, gap, alpha, gnorm, slope, ref, slack, step, sy, ss
    cdef double diff, earlier, latest, rate
    cdef const double *Zp = &Z[0, 0]
    cdef double *Bp = &B[0, 0]
    G_out = np.empty((d, d))
    cdef double[:, ::1] G_view = G_out
    cdef double *G = &G_view[0, 0]
    cdef int nt = num_threads if num_threads > 1 else 1
    cdef SpgPass ps
    cdef bint use_packed = _spg_packed_pays(n, d) if packed is None else bool(packed)
    cdef double *mem = <double *> malloc((7 * dd + 4 * d + n + 10) * sizeof(double))
    cdef double *G_new
    cdef double *B_new
    cdef double *direction
    cdef double *a
    cdef double *z
    cdef double *trial
    cdef double *lam
    cdef double *proj
    cdef double *u
    cdef double *wtop
    cdef double *dists
    cdef double *recent
    if mem == NULL:
        raise MemoryError()
    if _spg_pass_init(&ps, n, d, Zp, nt, use_packed) != 0:
        free(mem)
        raise MemoryError()
    G_new = mem
    B_new = G_new + dd
    direction = B_new + dd
    a = direction + dd
    z = a + dd
    trial = z + dd
    # (one more dd block spare for the full eigendecomposition's workspace)
    lam = trial + 2 * dd
    proj = lam + d
    u = proj + d
    wtop = u + d
    dists = wtop + d
    recent = dists + n
    with nogil:
        f = _spg_eval(&ps, Bp, G, dists)
        if not f > 0:
            gap = INFINITY
            status = 3
        else:
            gap = _spg_fw_gap(n, d, f, G, dists, n_identical, a, wtop, &info)
            for k in range(10):
                recent[k] = f
            gnorm = 0.0
            for k in range(dd):
                gnorm += G[k] * G[k]
            gnorm = sqrt(gnorm)
            alpha = 1.0 / (gnorm if gnorm > DBL_TINY else DBL_TINY)
            status = 0 if gap <= target else 1
        while status == 1 and gap < INFINITY and n_iter < max_iter and info == 0:
            # trial = projection of B + alpha G onto the spectraplex
            for k in range(d):
                for q in range(d):
                    a[q * d + k] = 0.5 * ((Bp[k * d + q] + alpha * G[k * d + q])
                                          + (Bp[q * d + k] + alpha * G[q * d + k]))
            info = _syevr(d, a, lam, z)
            if info != 0:
                break
            _capped_simplex(d, lam, proj, u)
            _rebuild_from_eigenpairs(d, d, proj, z, a, trial)
            slope = 0.0
            for k in range(dd):
                direction[k] = trial[k] - Bp[k]
                slope += G[k] * direction[k]
            ref = recent[0]
            for k in range(1, 10):
                if recent[k] > ref:
                    ref = recent[k]
            # f's rounding (as _mmc_exact._rounding_slack)
            slack = 8.0 * DBL_EPS * sqrt(<double> (n if n > 1 else 1)) * fabs(ref)
            step = 1.0
            while True:
                for k in range(dd):
                    B_new[k] = Bp[k] + step * direction[k] if step != 1.0 else trial[k]
                f_new = _spg_eval(&ps, B_new, G_new, dists)
                if f_new >= ref + 1e-4 * step * slope - slack:
                    break
                step *= 0.5
                if step < 9.5367431640625e-07:  # 2^-20
                    status = 2
                    break
            if status == 2:
                _spg_eval(&ps, Bp, G, dists)  # B's distances back
                break
            sy = 0.0
            ss = 0.0
            for k in range(dd):
                diff = B_new[k] - Bp[k]
                sy -= diff * (G_new[k] - G[k])
                ss += diff * diff
            alpha = ss / sy if sy > 0 else 1e3 * alpha
            gnorm = 0.0
            for k in range(dd):
                gnorm += G_new[k] * G_new[k]
            gnorm = sqrt(gnorm)
            if gnorm < 1e-300:
                gnorm = 1e-300
            if alpha < 1e-12 / gnorm:
                alpha = 1e-12 / gnorm
            if alpha > 1e12 / gnorm:
                alpha = 1e12 / gnorm
            for k in range(dd):
                Bp[k] = B_new[k]
                G[k] = G_new[k]
            f = f_new
            slot = n_iter % 10
            recent[slot] = f
            gap = _spg_fw_gap(n, d, f, G, dists, n_identical, a, wtop, &info)
            history[n_iter] = f
            gaps[n_iter] = gap
            n_iter += 1
            if gap <= target:
                status = 0
                break
            if gap == INFINITY:
                # a moving pair at distance 0: the floored certificate and
                # Newton of the Python loop take over
                break
            if n_iter >= patience:
                earlier = gaps[n_iter - 8]
                for k in range(n_iter - 7, n_iter - 5):
                    if gaps[k] < earlier:
                        earlier = gaps[k]
                latest = gaps[n_iter - 3]
                for k in range(n_iter - 2, n_iter):
                    if gaps[k] < latest:
                        latest = gaps[k]
                if earlier > 0 and latest > 0:
                    rate = pow(latest / earlier, 0.2)
                    if rate >= 0.95 or log(target / gap) / log(rate) > patience:
                        break
    free(mem)
    _spg_pass_free(&ps)
    if info != 0:
        raise ArithmeticError(f"LAPACK syevr failed (info={info})")
    return n_iter, f, gap, G_out, status


def capped_simplex(const double[::1] lam):
    """Euclidean projection of ``lam`` onto ``{x >= 0, sum(x) <= 1}`` (test shim).

    Parameters
    ----------
    lam : ndarray of shape (d,)

    Returns
    -------
    ndarray of shape (d,)
    """
    cdef int d = <int> lam.shape[0]
    out = np.empty(d)
    cdef double[::1] o = out
    cdef double *u = <double *> malloc((d + 1) * sizeof(double))
    if u == NULL:
        raise MemoryError()
    if d > 0:
        _capped_simplex(d, &lam[0], &o[0], u)
    free(u)
    return out


def certified_below(const double[:, ::1] M, double mu):
    """True only if every eigenvalue of the symmetric M is at most ``mu``.

    One Cholesky factorisation (``potrf``) of ``mu' I - M``, d^3 / 3 flops
    against 4 d^3 / 3 for the tridiagonal reduction an eigenvalue needs.  A
    successful factorisation is exact for a matrix within its backward error
    of ``mu' I - M`` -- at most about ``(d + 1)^2 eps`` times the largest
    diagonal entry in norm -- and ``mu'`` lies twice that below ``mu``, so
    success proves ``lambda_max(M) <= mu``.  False means "not shown" (also
    for non-finite entries), not "above".

    Parameters
    ----------
    M : ndarray of shape (d, d), float64
        Symmetric; only its upper triangle (row-major) is read.
    mu : float

    Returns
    -------
    bool
    """
    cdef int n = <int> M.shape[0]
    cdef int info = 0
    cdef Py_ssize_t r, c
    cdef double big = fabs(mu), delta, v
    cdef char uplo = b'L'
    if M.shape[1] != n:
        raise ValueError(f"certified_below: M must be square, got {M.shape[0]}x{M.shape[1]}")
    if n == 0:
        return True
    cdef double *a = <double *> malloc(<Py_ssize_t> n * n * sizeof(double))
    if a == NULL:
        raise MemoryError()
    with nogil:
        for r in range(n):
            if fabs(M[r, r]) > big:
                big = fabs(M[r, r])
        delta = 2.0 * (n + 2.0) * (n + 2.0) * DBL_EPS * big
        # row-major upper triangle = column-major lower triangle
        for r in range(n):
            for c in range(r, n):
                v = -M[r, c]
                if c == r:
                    v = v + (mu - delta)
                if not fabs(v) <= 1.7976931348623157e308:  # inf or NaN
                    info = -1
                a[r * n + c] = v
        if info == 0:
            dpotrf(&uplo, &n, a, &n, &info)
    free(a)
    return info == 0
