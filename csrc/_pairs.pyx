# cython: boundscheck=False, wraparound=False, cdivision=True, initializedcheck=False, language_level=3
"""Pair kernels: Mahalanobis distances and weighted outer-product sums over index pairs.

Every kernel takes the data ``X`` (n x d, C-contiguous, float32 or float64),
two index arrays ``i`` and ``j`` naming the pairs ``(X[i[p]], X[j[p]])``, and
writes into float64 outputs the caller allocated.  ``X`` is read in its own
dtype; differences, parameters (``A``, ``K``, weights) and every sum are
float64, so a float32 data set defines its problem exactly and the solvers'
certificates hold for it (float32 sums of many pairs would not: their
rounding exceeds the optimality targets).  Pairs are processed in blocks of
at most ``BLOCK`` rows: the differences of one block are gathered into a
per-thread buffer and handed to BLAS level 3 (``dgemm`` for ``Delta A``,
``dsyrk`` for ``Delta^T W Delta``), so memory stays
O(threads x (BLOCK x d + d x d)) whatever the number of pairs.  Blocks are
spread over ``num_threads`` OpenMP threads in chunks: a fixed partition of
the blocks into at most ``MAX_CHUNKS`` runs (see :func:`_n_chunks`), each
summed in order into its own d x d buffer, the buffers added in chunk order at
the end.  The partition depends on the number of pairs and d only, so every
sum comes out the same, bit for bit, for any number of threads (a solver
takes the same path whatever ``n_jobs`` is).

This module does no validation: bounds checks are off, so the Python layer
must check shapes, dtypes, index ranges and finiteness before calling.
"""

from cython cimport floating
from cython.parallel cimport parallel, prange
from libc.math cimport sqrt
from libc.stdlib cimport free, malloc
from libc.string cimport memset
from scipy.linalg.cython_blas cimport dgemm, dsyrk

cdef Py_ssize_t BLOCK = 256
# Up to this many features the squared distances skip BLAS (see _block_sq_dists).
cdef int SMALL_D = 8
# Up to this width a block's outer-product sum is a gemm, not a syrk (_syrk_acc).
cdef int SYRK_AS_GEMM = 64
# A reduction's blocks are split into at most this many chunks (at least 4,
# when there are that many blocks) ...
cdef Py_ssize_t MAX_CHUNKS = 16
# ... while their accumulators take at most this many doubles (16 MB).
cdef Py_ssize_t CHUNK_DOUBLES = 2000000


cdef inline Py_ssize_t _n_chunks(Py_ssize_t n_blocks, Py_ssize_t size) noexcept nogil:
    """How many chunks a reduction over ``n_blocks`` blocks with accumulators of
    ``size`` doubles uses: independent of the thread count, so that the sums
    are too."""
    cdef Py_ssize_t c = CHUNK_DOUBLES // (size if size > 0 else 1)
    if c > MAX_CHUNKS:
        c = MAX_CHUNKS
    if c < 4:
        c = 4
    return c if c < n_blocks else n_blocks


cdef inline Py_ssize_t _chunk_start(Py_ssize_t c, Py_ssize_t n_chunks,
                                    Py_ssize_t n_blocks) noexcept nogil:
    """First block of chunk c (chunk c runs to the start of chunk c + 1)."""
    return c * n_blocks // n_chunks


cdef inline double _ordered_sum(const double *parts, Py_ssize_t n) noexcept nogil:
    cdef Py_ssize_t t
    cdef double s = 0.0
    for t in range(n):
        s = s + parts[t]
    return s


cdef inline void _gemm_nn(int m, int n, int k, double *a, int lda,
                          double *b, int ldb, double *c, int ldc) noexcept nogil:
    """Column-major ``c = a @ b`` with a (m x k), b (k x n)."""
    cdef char trans = b'N'
    cdef double one = 1.0
    cdef double zero = 0.0
    dgemm(&trans, &trans, &m, &n, &k, &one, a, &lda, b, &ldb, &zero, c, &ldc)


cdef inline void _syrk_acc(int n, int k, double *a, int lda,
                           double *c, int ldc) noexcept nogil:
    """Column-major ``c[upper] += a @ a.T`` with a (n x k).

    Up to ``SYRK_AS_GEMM`` rows the full product through ``dgemm`` (c's
    lower triangle is written too, and ignored): OpenBLAS's syrk is slower
    there than a gemm of twice the flops (measured on 256-column blocks,
    one thread: n=11 3.9 against 2.5 us, n=33 16 against 9 us, n=50 23
    against 17 us; n=100 63 against 84 us).
    """
    cdef char uplo = b'U'
    cdef char trans = b'N'
    cdef char trans_t = b'T'
    cdef double one = 1.0
    if n <= SYRK_AS_GEMM:
        dgemm(&trans, &trans_t, &n, &n, &k, &one, a, &lda, a, &lda, &one, c, &ldc)
    else:
        dsyrk(&uplo, &trans, &n, &k, &one, a, &lda, &one, c, &ldc)


cdef inline void _gather(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                         const Py_ssize_t[::1] j, Py_ssize_t start, Py_ssize_t stop,
                         double *buf) noexcept nogil:
    """Write rows ``X[i[p]] - X[j[p]]`` for p in [start, stop) into buf (row-major).

    The difference is taken in float64 (exact for float32 data).
    """
    cdef Py_ssize_t d = X.shape[1]
    cdef Py_ssize_t p, k, a, b
    for p in range(start, stop):
        a = i[p]
        b = j[p]
        row = buf + (p - start) * d
        for k in range(d):
            row[k] = <double> X[a, k] - <double> X[b, k]


cdef inline void _block_sq_dists(double *diff, double *tmp, const double *A,
                                 int nb, int d, double *out) noexcept nogil:
    """Squared distances ``out[p] = diff[p] @ A @ diff[p]`` for the nb rows of a block.

    Row-major diff (nb x d) is column-major diff.T; row-major A is column-major
    A.T, so gemm gives column-major (A.T @ diff.T) = row-major diff @ A.
    """
    cdef int p, k
    cdef double acc
    _gemm_nn(d, nb, d, <double *> A, d, diff, d, tmp, d)
    for p in range(nb):
        acc = 0
        for k in range(d):
            acc = acc + tmp[p * d + k] * diff[p * d + k]
        # A is PSD, so a negative value is rounding: clamp it to zero.
        out[p] = acc if acc > 0 else 0


cdef inline void _gather_t(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                           const Py_ssize_t[::1] j, Py_ssize_t start, Py_ssize_t stop,
                           double *D) noexcept nogil:
    """Feature-major :func:`_gather`: ``D[k * nb + p] = X[i[start + p], k] - X[j[start + p], k]``."""
    cdef Py_ssize_t d = X.shape[1]
    cdef Py_ssize_t nb = stop - start
    cdef Py_ssize_t p, k, a, b
    for p in range(nb):
        a = i[start + p]
        b = j[start + p]
        for k in range(d):
            D[k * nb + p] = <double> X[a, k] - <double> X[b, k]


cdef inline void _block_sq_dists_small(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                                       const Py_ssize_t[::1] j, Py_ssize_t start,
                                       Py_ssize_t stop, double *D, const double *A,
                                       double *out) noexcept nogil:
    """Squared distances of pairs [start, stop) for few features (d <= SMALL_D).

    With k = d this small a gemm runs far below its peak, and a per-pair
    quadratic form is a chain of dependent additions; instead the block's
    differences are gathered feature by feature (``D``: d x nb, left there
    for the caller) and ``out = sum_k A_kk D_k^2 + sum_{k<l} (A_kl + A_lk) D_k D_l``
    runs along the pairs.
    """
    cdef Py_ssize_t d = X.shape[1]
    cdef Py_ssize_t nb = stop - start
    cdef Py_ssize_t p, k, l
    cdef double akl, acc
    cdef double *dk
    cdef double *dl
    _gather_t(X, i, j, start, stop, D)
    for p in range(nb):
        out[p] = 0
    for k in range(d):
        dk = D + k * nb
        akl = A[k * d + k]
        for p in range(nb):
            out[p] = out[p] + akl * dk[p] * dk[p]
        for l in range(k + 1, d):
            dl = D + l * nb
            # (A_kl + A_lk: the quadratic form of a non-symmetric A too)
            akl = A[k * d + l] + A[l * d + k]
            for p in range(nb):
                out[p] = out[p] + akl * dk[p] * dl[p]
    for p in range(nb):
        # A is PSD, so a negative value is rounding: clamp it to zero.
        acc = out[p]
        out[p] = acc if acc > 0 else 0


cdef inline void _small_outer_acc(const double *D, const double *w, Py_ssize_t nb,
                                  int d, double *acc) noexcept nogil:
    """``acc[c * d + r] += sum_p w_p D_r[p] D_c[p]`` for r <= c (d <= SMALL_D).

    The column-major upper triangle that :func:`_syrk_acc` would add for the
    rows ``sqrt(w_p) D_p``, from the feature-major block ``D`` (d x nb) as
    d (d + 1) / 2 dot products along the pairs, each with eight interleaved
    partial sums (a single one is a chain of dependent additions): a
    ``syrk`` this narrow runs far below its peak.  ``w`` NULL means all ones.
    """
    cdef Py_ssize_t p, q, n8 = nb - nb % 8
    cdef int r, c
    cdef double s[8]
    cdef const double *dr
    cdef const double *dc
    for c in range(d):
        dc = D + c * nb
        for r in range(c + 1):
            dr = D + r * nb
            for q in range(8):
                s[q] = 0
            if w == NULL:
                for p in range(0, n8, 8):
                    for q in range(8):
                        s[q] = s[q] + dr[p + q] * dc[p + q]
                for p in range(n8, nb):
                    s[0] = s[0] + dr[p] * dc[p]
            else:
                for p in range(0, n8, 8):
                    for q in range(8):
                        s[q] = s[q] + w[p + q] * dr[p + q] * dc[p + q]
                for p in range(n8, nb):
                    s[0] = s[0] + w[p] * dr[p] * dc[p]
            acc[c * d + r] = acc[c * d + r] + (((s[0] + s[1]) + (s[2] + s[3]))
                                               + ((s[4] + s[5]) + (s[6] + s[7])))


cdef inline void _small_factor_block(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                                     const Py_ssize_t[::1] j, Py_ssize_t start,
                                     Py_ssize_t stop, const double *K, int r, double eps,
                                     bint want_grad, double *D, double *w,
                                     double *dist) noexcept nogil:
    """Distances ``||K^T D_p||`` of pairs [start, stop) for few features (d <= SMALL_D).

    Gathers the block feature-major into ``D`` (d x nb, left there), writes
    the distances to ``dist`` and, with ``want_grad``, the gradient weights
    ``0.5 / (dist + eps)`` (0 where that is 0 / 0) to ``w``.  Row-major K is
    (d x r); the projections run along the pairs, like
    :func:`_block_sq_dists_small`.
    """
    cdef Py_ssize_t d = X.shape[1]
    cdef Py_ssize_t nb = stop - start
    cdef Py_ssize_t p, k, l
    cdef double klk, z, dd
    cdef double *dl
    _gather_t(X, i, j, start, stop, D)
    for p in range(nb):
        dist[p] = 0
    for k in range(r):
        # w holds the k-th projection while it is summed
        for p in range(nb):
            w[p] = 0
        for l in range(d):
            dl = D + l * nb
            klk = K[l * r + k]
            for p in range(nb):
                w[p] = w[p] + klk * dl[p]
        for p in range(nb):
            z = w[p]
            dist[p] = dist[p] + z * z
    for p in range(nb):
        dd = sqrt(dist[p])
        dist[p] = dd
        if want_grad:
            w[p] = 0.5 / (dd + eps) if dd + eps > 0 else 0.0


cdef inline void _symmetrize_sum(double *acc, Py_ssize_t n_acc, int d,
                                 double[:, ::1] out) noexcept nogil:
    """out = sum of the n_acc column-major upper triangles in acc, made symmetric."""
    cdef Py_ssize_t t, r, c
    cdef double s
    for c in range(d):
        for r in range(c + 1):
            s = 0
            for t in range(n_acc):
                s = s + acc[t * d * d + c * d + r]
            out[r, c] = s
            out[c, r] = s


def pair_sq_dists(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                  const Py_ssize_t[::1] j, const double[:, ::1] A,
                  double[::1] out, int num_threads=1):
    """Squared Mahalanobis distances of index pairs.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32 or float64
    i, j : ndarray of intp, shape (n_pairs,)
        Row indices of the two points of each pair.
    A : ndarray of shape (n_features, n_features), float64
        The Mahalanobis matrix; assumed PSD (negative rounding is clamped to 0).
    out : ndarray of shape (n_pairs,), float64
        Receives ``(X[i] - X[j]) @ A @ (X[i] - X[j])`` for every pair.
    num_threads : int
    """
    cdef Py_ssize_t n_pairs = i.shape[0]
    cdef int d = <int> X.shape[1]
    cdef Py_ssize_t n_blocks = (n_pairs + BLOCK - 1) // BLOCK
    cdef Py_ssize_t blk, start, stop
    cdef double *diff
    cdef double *tmp
    if n_pairs == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        diff = <double *> malloc(2 * BLOCK * d * sizeof(double))
        tmp = diff + BLOCK * d
        for blk in prange(n_blocks, schedule='static'):
            start = blk * BLOCK
            stop = start + BLOCK
            if stop > n_pairs:
                stop = n_pairs
            if d <= SMALL_D:
                _block_sq_dists_small(X, i, j, start, stop, diff, &A[0, 0], &out[start])
            else:
                _gather(X, i, j, start, stop, diff)
                _block_sq_dists(diff, tmp, &A[0, 0], <int> (stop - start), d,
                                &out[start])
        free(diff)


def pair_sq_dists_diag(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                       const Py_ssize_t[::1] j, const double[::1] w,
                       double[::1] out, int num_threads=1):
    """Squared weighted Euclidean distances ``sum_k w[k] (X[i,k] - X[j,k])**2``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32 or float64
    i, j : ndarray of intp, shape (n_pairs,)
    w : ndarray of shape (n_features,), float64
        Non-negative feature weights (the diagonal of A).
    out : ndarray of shape (n_pairs,), float64
    num_threads : int
    """
    cdef Py_ssize_t n_pairs = i.shape[0]
    cdef Py_ssize_t d = X.shape[1]
    cdef Py_ssize_t p, k, a, b
    cdef double acc, diff
    with nogil:
        for p in prange(n_pairs, schedule='static', num_threads=num_threads):
            a = i[p]
            b = j[p]
            acc = 0
            for k in range(d):
                diff = <double> X[a, k] - <double> X[b, k]
                acc = acc + w[k] * diff * diff
            out[p] = acc


def weighted_outer_sum(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                       const Py_ssize_t[::1] j, const double[::1] weights,
                       double[:, ::1] out, int num_threads=1):
    """Weighted sum of difference outer products ``sum_p w_p D_p D_p^T``.

    With ``D_p = X[i[p]] - X[j[p]]``.  Each block is scaled by ``sqrt(w_p)`` and
    accumulated with ``syrk``, so the weights must be non-negative.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32 or float64
    i, j : ndarray of intp, shape (n_pairs,)
    weights : ndarray of shape (n_pairs,) or (0,), float64
        Non-negative pair weights; an empty array means all ones.
    out : ndarray of shape (n_features, n_features), float64
        Overwritten with the (symmetric) sum.
    num_threads : int
    """
    cdef Py_ssize_t n_pairs = i.shape[0]
    cdef int d = <int> X.shape[1]
    cdef Py_ssize_t n_blocks = (n_pairs + BLOCK - 1) // BLOCK
    cdef Py_ssize_t dd = <Py_ssize_t> d * d
    cdef Py_ssize_t n_chunks = _n_chunks(n_blocks, dd)
    cdef Py_ssize_t c, blk, start, stop, p, k
    cdef int nt = num_threads if num_threads > 0 else 1
    cdef bint unweighted = weights.shape[0] == 0
    cdef double s
    cdef double *diff
    cdef double *acc = <double *> malloc((n_chunks * dd + 1) * sizeof(double))
    if acc == NULL:
        raise MemoryError()
    memset(acc, 0, n_chunks * dd * sizeof(double))
    with nogil, parallel(num_threads=nt):
        diff = <double *> malloc(BLOCK * d * sizeof(double))
        for c in prange(n_chunks, schedule='static'):
            for blk in range(_chunk_start(c, n_chunks, n_blocks),
                             _chunk_start(c + 1, n_chunks, n_blocks)):
                start = blk * BLOCK
                stop = start + BLOCK
                if stop > n_pairs:
                    stop = n_pairs
                if d <= SMALL_D:
                    _gather_t(X, i, j, start, stop, diff)
                    _small_outer_acc(diff, NULL if unweighted else &weights[start],
                                     stop - start, d, acc + c * dd)
                    continue
                _gather(X, i, j, start, stop, diff)
                if not unweighted:
                    for p in range(start, stop):
                        s = sqrt(weights[p])
                        for k in range(d):
                            diff[(p - start) * d + k] = diff[(p - start) * d + k] * s
                _syrk_acc(d, <int> (stop - start), diff, d, acc + c * dd, d)
        free(diff)
    _symmetrize_sum(acc, n_chunks, d, out)
    free(acc)


def sqrt_dist_sum_grad(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                       const Py_ssize_t[::1] j, const double[:, ::1] A,
                       double[:, ::1] grad, double eps=0.0, int num_threads=1):
    """Sum of Mahalanobis distances and its gradient with respect to A, in one pass.

    Computes ``f = sum_p sqrt(q_p)`` with ``q_p = D_p^T A D_p`` and
    ``grad = sum_p 0.5 / (sqrt(q_p) + eps) * D_p D_p^T``.  With ``eps == 0`` a
    pair at zero distance contributes 0 to the gradient (the square root has no
    derivative there), so the result is always finite.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32 or float64
    i, j : ndarray of intp, shape (n_pairs,)
    A : ndarray of shape (n_features, n_features), float64, PSD
    grad : ndarray of shape (n_features, n_features), float64
        Overwritten with the gradient.
    eps : float
        Added to each distance in the gradient's denominator.
    num_threads : int

    Returns
    -------
    f : float
        ``sum_p sqrt(q_p)``.
    """
    cdef Py_ssize_t n_pairs = i.shape[0]
    cdef int d = <int> X.shape[1]
    cdef Py_ssize_t n_blocks = (n_pairs + BLOCK - 1) // BLOCK
    cdef Py_ssize_t dd = <Py_ssize_t> d * d
    cdef Py_ssize_t n_chunks = _n_chunks(n_blocks, dd + 1)
    cdef Py_ssize_t c, blk, start, stop, p, k
    cdef int nb
    cdef int nt = num_threads if num_threads > 0 else 1
    cdef double dist, total, sub
    cdef double s
    cdef double *diff
    cdef double *tmp
    cdef double *q
    cdef double *acc = <double *> malloc((n_chunks * (dd + 1) + 1) * sizeof(double))
    cdef double *parts
    if acc == NULL:
        raise MemoryError()
    parts = acc + n_chunks * dd
    memset(acc, 0, n_chunks * (dd + 1) * sizeof(double))
    with nogil, parallel(num_threads=nt):
        diff = <double *> malloc((2 * BLOCK * d + BLOCK) * sizeof(double))
        tmp = diff + BLOCK * d
        q = tmp + BLOCK * d
        for c in prange(n_chunks, schedule='static'):
            sub = 0.0
            for blk in range(_chunk_start(c, n_chunks, n_blocks),
                             _chunk_start(c + 1, n_chunks, n_blocks)):
                start = blk * BLOCK
                stop = start + BLOCK
                if stop > n_pairs:
                    stop = n_pairs
                nb = <int> (stop - start)
                if d <= SMALL_D:
                    # diff: the block's differences, feature-major; tmp: weights
                    _block_sq_dists_small(X, i, j, start, stop, diff, &A[0, 0], q)
                    for p in range(nb):
                        dist = sqrt(q[p])
                        sub = sub + dist
                        tmp[p] = 0.5 / (dist + eps) if dist + eps > 0 else 0.0
                    _small_outer_acc(diff, tmp, nb, d, acc + c * dd)
                    continue
                _gather(X, i, j, start, stop, diff)
                _block_sq_dists(diff, tmp, &A[0, 0], nb, d, q)
                for p in range(nb):
                    dist = sqrt(q[p])
                    sub = sub + dist
                    if dist + eps > 0:
                        s = sqrt(0.5 / (dist + eps))
                    else:
                        s = 0
                    for k in range(d):
                        diff[p * d + k] = diff[p * d + k] * s
                _syrk_acc(d, nb, diff, d, acc + c * dd, d)
            parts[c] = sub
        free(diff)
    _symmetrize_sum(acc, n_chunks, d, grad)
    total = _ordered_sum(parts, n_chunks)
    free(acc)
    return total


def diag_sqrt_dist_derivs(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                          const Py_ssize_t[::1] j, const double[::1] w,
                          double[::1] grad, double[:, ::1] hess,
                          int num_threads=1):
    """Sum of weighted Euclidean distances with first and second derivatives.

    For ``u_p = (X[i[p]] - X[j[p]])**2`` and ``dist_p = sqrt(u_p . w)`` computes
    ``f = sum_p dist_p``, ``grad = sum_p u_p / (2 dist_p)`` and
    ``hess = sum_p u_p u_p^T / (4 dist_p**3)`` (the negated Hessian of ``f``, which
    is PSD).  Pairs at zero distance contribute nothing to the derivatives.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32 or float64
    i, j : ndarray of intp, shape (n_pairs,)
    w : ndarray of shape (n_features,), float64, non-negative
    grad : ndarray of shape (n_features,), float64
        Overwritten with the gradient of f.
    hess : ndarray of shape (n_features, n_features), float64
        Overwritten with minus the Hessian of f.
    num_threads : int

    Returns
    -------
    f : float
    """
    cdef Py_ssize_t n_pairs = i.shape[0]
    cdef int d = <int> X.shape[1]
    cdef Py_ssize_t n_blocks = (n_pairs + BLOCK - 1) // BLOCK
    cdef Py_ssize_t dd = <Py_ssize_t> d * d
    cdef Py_ssize_t n_chunks = _n_chunks(n_blocks, dd + d + 1)
    cdef Py_ssize_t c, blk, start, stop, p, k, t
    cdef int nb
    cdef int nt = num_threads if num_threads > 0 else 1
    cdef double dist, total, sub
    cdef double q
    cdef double s, g
    cdef double *u
    cdef double *gacc = <double *> malloc(
        (n_chunks * (dd + d + 1) + 1) * sizeof(double))
    cdef double *hacc
    cdef double *parts
    if gacc == NULL:
        raise MemoryError()
    hacc = gacc + n_chunks * d
    parts = hacc + n_chunks * dd
    memset(gacc, 0, n_chunks * (dd + d + 1) * sizeof(double))
    with nogil, parallel(num_threads=nt):
        u = <double *> malloc(BLOCK * d * sizeof(double))
        for c in prange(n_chunks, schedule='static'):
            sub = 0.0
            for blk in range(_chunk_start(c, n_chunks, n_blocks),
                             _chunk_start(c + 1, n_chunks, n_blocks)):
                start = blk * BLOCK
                stop = start + BLOCK
                if stop > n_pairs:
                    stop = n_pairs
                nb = <int> (stop - start)
                _gather(X, i, j, start, stop, u)
                for p in range(nb):
                    q = 0
                    for k in range(d):
                        u[p * d + k] = u[p * d + k] * u[p * d + k]
                        q = q + w[k] * u[p * d + k]
                    dist = sqrt(q)
                    sub = sub + dist
                    if dist > 0:
                        g = 0.5 / dist
                        # rows u / (2 dist^1.5) as (u / dist) * (0.5 /
                        # sqrt(dist)): dist^1.5 and dist^3 underflow for tiny
                        # distances, u / dist does not (u_k <= dist^2 / w_k)
                        s = 0.5 / sqrt(dist)
                    else:
                        g = 0
                        s = 0
                    for k in range(d):
                        gacc[c * d + k] = gacc[c * d + k] + g * u[p * d + k]
                        u[p * d + k] = (u[p * d + k] * (2.0 * g)) * s
                _syrk_acc(d, nb, u, d, hacc + c * dd, d)
            parts[c] = sub
        free(u)
    for k in range(d):
        g = 0
        for t in range(n_chunks):
            g = g + gacc[t * d + k]
        grad[k] = g
    _symmetrize_sum(hacc, n_chunks, d, hess)
    total = _ordered_sum(parts, n_chunks)
    free(gacc)
    return total


def sq_diff_sum(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                const Py_ssize_t[::1] j, double[::1] out):
    """Per-feature sum of squared differences ``sum_p (X[i[p]] - X[j[p]])**2``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32 or float64
    i, j : ndarray of intp, shape (n_pairs,)
    out : ndarray of shape (n_features,), float64
        Overwritten with the sums.
    """
    cdef Py_ssize_t n_pairs = i.shape[0]
    cdef Py_ssize_t d = X.shape[1]
    cdef Py_ssize_t p, k
    cdef double diff
    with nogil:
        for k in range(d):
            out[k] = 0
        for p in range(n_pairs):
            for k in range(d):
                diff = <double> X[i[p], k] - <double> X[j[p], k]
                out[k] += diff * diff


def sqrt_dist_sum_grad_factor(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                              const Py_ssize_t[::1] j, const double[:, ::1] K,
                              double[:, ::1] grad, double[::1] dists,
                              int num_threads=1, double eps=0.0):
    """:func:`sqrt_dist_sum_grad` for ``A = K K^T``, with the per-pair distances.

    Distances come from ``||K^T D_p||`` (a block gemm of width r, so 2 n d r
    flops instead of 2 n d^2): a low-rank metric -- MMC's optimum usually has
    rank far below d -- makes the distance half of the pass nearly free and
    leaves the gradient's ``syrk`` (n d^2 flops).  Zero distances (exactly 0,
    no clamping needed: a sum of squares is never negative) contribute nothing
    to the gradient.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features), float32 or float64
    i, j : ndarray of intp, shape (n_pairs,)
    K : ndarray of shape (n_features, rank), float64
        The factor of the Mahalanobis matrix, ``A = K @ K.T``; rank >= 1.
    grad : ndarray of shape (n_features, n_features) or (0, 0), float64
        Overwritten with ``sum_p D_p D_p^T / (2 ||K^T D_p||)``; an empty array
        skips the gradient (a value-only pass, 2 n d r flops).
    dists : ndarray of shape (n_pairs,) or (0,), float64
        Receives ``||K^T D_p||`` for every pair; an empty array skips that.
    num_threads : int
    eps : float
        Added to each distance in the gradient's denominator, as in
        :func:`sqrt_dist_sum_grad` (with ``eps > 0`` pairs at zero distance
        contribute ``D_p D_p^T / (2 eps)``).

    Returns
    -------
    f : float
        ``sum_p ||K^T D_p||``.
    """
    cdef Py_ssize_t n_pairs = i.shape[0]
    cdef int d = <int> X.shape[1]
    cdef int r = <int> K.shape[1]
    cdef Py_ssize_t n_blocks = (n_pairs + BLOCK - 1) // BLOCK
    cdef bint keep = dists.shape[0] > 0
    cdef bint want_grad = grad.shape[0] > 0
    cdef Py_ssize_t dd = <Py_ssize_t> d * d if want_grad else 0
    cdef Py_ssize_t n_chunks = _n_chunks(n_blocks, dd + 1)
    cdef Py_ssize_t c, blk, start, stop, p, k
    cdef int nb
    cdef int nt = num_threads if num_threads > 0 else 1
    cdef double dist, total, sub
    cdef double s, acc_q
    cdef double *diff
    cdef double *tmp
    cdef double *q
    cdef double *acc = <double *> malloc((n_chunks * (dd + 1) + 1) * sizeof(double))
    cdef double *parts
    if acc == NULL:
        raise MemoryError()
    parts = acc + n_chunks * dd
    memset(acc, 0, n_chunks * (dd + 1) * sizeof(double))
    with nogil, parallel(num_threads=nt):
        diff = <double *> malloc((BLOCK * d + BLOCK * r + 2 * BLOCK) * sizeof(double))
        tmp = diff + BLOCK * d
        q = tmp + BLOCK * r
        for c in prange(n_chunks, schedule='static'):
            sub = 0.0
            for blk in range(_chunk_start(c, n_chunks, n_blocks),
                             _chunk_start(c + 1, n_chunks, n_blocks)):
                start = blk * BLOCK
                stop = start + BLOCK
                if stop > n_pairs:
                    stop = n_pairs
                nb = <int> (stop - start)
                if d <= SMALL_D:
                    _small_factor_block(X, i, j, start, stop, &K[0, 0], r, eps,
                                        want_grad, diff, tmp, q)
                    for p in range(nb):
                        sub = sub + q[p]
                        if keep:
                            dists[start + p] = q[p]
                    if want_grad:
                        _small_outer_acc(diff, tmp, nb, d, acc + c * dd)
                    continue
                _gather(X, i, j, start, stop, diff)
                # Row-major K (d x r) is column-major K^T (r x d, leading
                # dimension r): column-major K^T diff^T is row-major diff K.
                _gemm_nn(r, nb, d, <double *> &K[0, 0], r, diff, d, tmp, r)
                for p in range(nb):
                    acc_q = 0
                    for k in range(r):
                        acc_q = acc_q + tmp[p * r + k] * tmp[p * r + k]
                    dist = sqrt(acc_q)
                    sub = sub + dist
                    if keep:
                        dists[start + p] = dist
                    if want_grad:
                        if dist + eps > 0:
                            s = sqrt(0.5 / (dist + eps))
                        else:
                            s = 0
                        for k in range(d):
                            diff[p * d + k] = diff[p * d + k] * s
                if want_grad:
                    _syrk_acc(d, nb, diff, d, acc + c * dd, d)
            parts[c] = sub
        free(diff)
    if want_grad:
        _symmetrize_sum(acc, n_chunks, d, grad)
    total = _ordered_sum(parts, n_chunks)
    free(acc)
    return total


def factor_hessian(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                   const Py_ssize_t[::1] j, const double[:, ::1] P,
                   const double[:, ::1] L, double[:, ::1] H, int num_threads=1):
    """``sum_p psi_p psi_p^T / s_p^3``: the pair part of the factor Hessian.

    With ``z_p = P^T (X[i[p]] - X[j[p]])`` (or the difference itself when P
    is empty), ``y_p = L^T z_p`` and ``s_p = ||y_p||``, ``psi_p`` is
    ``vec(z_p y_p^T)`` in column-major order: entry ``c k + a`` is
    ``z_pa y_pc``.  This is the second-order part of the Hessian of
    ``f(L) = sum_p ||L^T z_p||`` (see ``fastmetric._mmc_exact``); pairs with
    ``s_p = 0`` contribute nothing.  Each block of rows is whitened (gemm),
    projected (gemm), scaled into ``psi_p / s_p^1.5`` and accumulated with
    ``syrk`` in per-chunk buffers, so memory stays O(threads x BLOCK x m +
    chunks x m^2) with ``m = k r``.

    Parameters
    ----------
    X : ndarray of shape (n_samples, d), float32 or float64
    i, j : ndarray of intp, shape (n_pairs,)
    P : ndarray of shape (d, k) or (0, 0), float64
    L : ndarray of shape (k, r), float64 (k = d when P is empty)
    H : ndarray of shape (k r, k r), float64
        Overwritten with the (symmetric) sum.
    num_threads : int

    Returns
    -------
    f : float
        ``sum_p s_p``.
    """
    cdef Py_ssize_t n_pairs = i.shape[0]
    cdef int dx = <int> X.shape[1]
    cdef bint whiten = P.shape[0] > 0
    cdef int k = <int> (P.shape[1] if whiten else dx)
    cdef int r = <int> L.shape[1]
    cdef int m = k * r
    if (whiten and P.shape[0] != dx) or L.shape[0] != k or r < 1 or \
            H.shape[0] != m or H.shape[1] != m:
        raise ValueError("factor_hessian: need P (d, k) or (0, 0), L (k, r), "
                         "H (k r, k r)")
    cdef Py_ssize_t n_blocks = (n_pairs + BLOCK - 1) // BLOCK
    cdef Py_ssize_t mm = <Py_ssize_t> m * m
    cdef Py_ssize_t n_chunks = _n_chunks(n_blocks, mm + 1)
    cdef Py_ssize_t ch, blk, start, stop, p, a, c
    cdef int nb
    cdef int nt = num_threads if num_threads > 0 else 1
    cdef double s, t, u, total, sub
    cdef double *buf
    cdef double *Zb
    cdef double *Yb
    cdef double *Psi
    cdef double *acc = <double *> malloc((n_chunks * (mm + 1) + 1) * sizeof(double))
    cdef double *parts
    if acc == NULL:
        raise MemoryError()
    parts = acc + n_chunks * mm
    memset(acc, 0, n_chunks * (mm + 1) * sizeof(double))
    with nogil, parallel(num_threads=nt):
        buf = <double *> malloc(BLOCK * (dx + k + r + m) * sizeof(double))
        Zb = buf + BLOCK * dx if whiten else buf
        Yb = buf + BLOCK * (dx + k)
        Psi = Yb + BLOCK * r
        for ch in prange(n_chunks, schedule='static'):
            sub = 0.0
            for blk in range(_chunk_start(ch, n_chunks, n_blocks),
                             _chunk_start(ch + 1, n_chunks, n_blocks)):
                start = blk * BLOCK
                stop = start + BLOCK
                if stop > n_pairs:
                    stop = n_pairs
                nb = <int> (stop - start)
                _gather(X, i, j, start, stop, buf)
                if whiten:
                    # row-major Zb = diff P: column-major P^T diff^T
                    _gemm_nn(k, nb, dx, <double *> &P[0, 0], k, buf, dx, Zb, k)
                _gemm_nn(r, nb, k, <double *> &L[0, 0], r, Zb, k, Yb, r)
                for p in range(nb):
                    s = 0
                    for c in range(r):
                        s = s + Yb[p * r + c] * Yb[p * r + c]
                    s = sqrt(s)
                    sub = sub + s
                    # psi / s^1.5 as z (y / s) / sqrt(s): no s^1.5 to underflow
                    t = 1.0 / sqrt(s) if s > 0 else 0.0
                    for c in range(r):
                        u = Yb[p * r + c] / s * t if s > 0 else 0.0
                        for a in range(k):
                            Psi[p * m + c * k + a] = Zb[p * k + a] * u
                _syrk_acc(m, nb, Psi, m, acc + ch * mm, m)
            parts[ch] = sub
        free(buf)
    _symmetrize_sum(acc, n_chunks, m, H)
    total = _ordered_sum(parts, n_chunks)
    free(acc)
    return total


def pair_project(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                 const Py_ssize_t[::1] j, const double[:, ::1] W,
                 double[:, ::1] out, int num_threads=1):
    """Projected differences ``out[p] = (X[i[p]] - X[j[p]]) @ W``, blockwise.

    Parameters
    ----------
    X : ndarray of shape (n_samples, d), float32 or float64
    i, j : ndarray of intp, shape (n_pairs,)
    W : ndarray of shape (d, k), float64
    out : ndarray of shape (n_pairs, k), float64
        Overwritten (extra rows beyond n_pairs are left alone).
    num_threads : int
    """
    cdef Py_ssize_t n_pairs = i.shape[0]
    cdef int d = <int> X.shape[1]
    cdef int k = <int> W.shape[1]
    if W.shape[0] != d or out.shape[1] != k or out.shape[0] < n_pairs:
        raise ValueError("pair_project: need W (d, k) and out (>= n_pairs, k)")
    cdef Py_ssize_t n_blocks = (n_pairs + BLOCK - 1) // BLOCK
    cdef Py_ssize_t blk, start, stop
    cdef double *diff
    if n_pairs == 0 or k == 0:
        return
    with nogil, parallel(num_threads=num_threads):
        diff = <double *> malloc(BLOCK * d * sizeof(double))
        for blk in prange(n_blocks, schedule='static'):
            start = blk * BLOCK
            stop = start + BLOCK
            if stop > n_pairs:
                stop = n_pairs
            _gather(X, i, j, start, stop, diff)
            # row-major out_block = diff W: column-major W^T diff^T
            _gemm_nn(k, <int> (stop - start), d, <double *> &W[0, 0], k, diff, d,
                     &out[start, 0], k)
        free(diff)


# Rows of the points route are split into this many fixed runs (whatever the
# thread count, so its sums are too).
cdef Py_ssize_t POINT_CHUNKS = 4

cdef void _centre_and_map(const floating[:, ::1] X, const double[:, ::1] K,
                          Py_ssize_t n_chunks, int nt, double *msum, double *m,
                          double *C, double *T, double *tnorm) noexcept nogil:
    """The points routes' first steps: ``m`` = the points' mean, ``C = X - m``,
    ``T = C K`` (n x r, row-major) and T's squared row norms, in ``n_chunks``
    fixed runs of rows (so the same for any thread count).  ``msum`` holds
    n_chunks x d doubles of scratch.
    """
    cdef int n = <int> X.shape[0]
    cdef int d = <int> X.shape[1]
    cdef int r = <int> K.shape[1]
    cdef Py_ssize_t c, q, k, r0, r1
    cdef int rows
    cdef double s
    cdef char tn = b'N'
    cdef double one = 1.0, zero = 0.0
    # The mean: per-run sums in parallel, added in run order.
    for c in prange(n_chunks, num_threads=nt, schedule='static'):
        for k in range(d):
            msum[c * d + k] = 0.0
        for q in range(c * n // n_chunks, (c + 1) * n // n_chunks):
            for k in range(d):
                msum[c * d + k] = msum[c * d + k] + <double> X[q, k]
    for k in range(d):
        s = 0.0
        for c in range(n_chunks):
            s = s + msum[c * d + k]
        m[k] = s / n if n > 0 else 0.0
    # Centre, T = C K and T's row norms, run by run.
    for c in prange(n_chunks, num_threads=nt, schedule='static'):
        r0 = c * n // n_chunks
        r1 = (c + 1) * n // n_chunks
        rows = <int> (r1 - r0)
        for q in range(r0, r1):
            for k in range(d):
                C[q * d + k] = <double> X[q, k] - m[k]
        if rows > 0:
            # column-major T_c^T (r x rows) = K^T (r x d) C_c^T (d x rows)
            dgemm(&tn, &tn, &r, &rows, &d, &one, <double *> &K[0, 0], &r,
                  C + r0 * d, &d, &zero, T + r0 * r, &r)
        for q in range(r0, r1):
            s = 0.0
            for k in range(r):
                s = s + T[q * r + k] * T[q * r + k]
            tnorm[q] = s


def points_project(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                   const Py_ssize_t[::1] j, const double[:, ::1] W,
                   double[:, ::1] out, int num_threads=1):
    """:func:`pair_project` through the points: ``out[p] = T[i[p]] - T[j[p]]``.

    ``T = (X - m) W`` costs 2 n d k flops for the n points (m their mean,
    which keeps the rounding relative to the data's spread, not its offset)
    and each pair then k subtractions, against 2 d k flops and a d-wide
    gather per pair by the pairs.  A projected difference below 1e-5 of its
    points' norms in T would carry a large relative error, so it is
    recomputed from the exact difference; identical points give exactly 0.
    Each row of ``out`` depends on its pair alone, so the result is the same
    for any number of threads.  Memory: n x (d + k + 1) doubles.

    Parameters
    ----------
    X, i, j, W, out, num_threads
        As :func:`pair_project`.
    """
    cdef Py_ssize_t n_pairs = i.shape[0]
    cdef int n = <int> X.shape[0]
    cdef int d = <int> X.shape[1]
    cdef int k = <int> W.shape[1]
    if W.shape[0] != d or out.shape[1] != k or out.shape[0] < n_pairs:
        raise ValueError("points_project: need W (d, k) and out (>= n_pairs, k)")
    if n_pairs == 0 or k == 0:
        return
    cdef Py_ssize_t n_chunks = POINT_CHUNKS if n >= POINT_CHUNKS else 1
    cdef int nt = num_threads if num_threads > 0 else 1
    cdef Py_ssize_t p, a, b, t, q
    cdef double s, u
    cdef double *C = <double *> malloc((<Py_ssize_t> n * (d + k + 1)
                                        + n_chunks * d + d) * sizeof(double))
    if C == NULL:
        raise MemoryError()
    cdef double *T = C + <Py_ssize_t> n * d
    cdef double *tnorm = T + <Py_ssize_t> n * k
    cdef double *msum = tnorm + n
    cdef double *m = msum + n_chunks * d
    with nogil:
        _centre_and_map(X, W, n_chunks, nt, msum, m, C, T, tnorm)
        for p in prange(n_pairs, num_threads=nt, schedule='static'):
            a = i[p]
            b = j[p]
            s = 0.0
            for t in range(k):
                u = T[a * k + t] - T[b * k + t]
                out[p, t] = u
                s = s + u * u
            if s <= 1e-10 * (tnorm[a] + tnorm[b]):
                for t in range(k):
                    u = 0.0
                    for q in range(d):
                        u = u + (<double> X[a, q] - <double> X[b, q]) * W[q, t]
                    out[p, t] = u
    free(C)



def sqrt_dist_sum_grad_points(const floating[:, ::1] X, const Py_ssize_t[::1] i,
                              const Py_ssize_t[::1] j, const double[:, ::1] K,
                              double[:, ::1] grad, double[::1] dists,
                              int num_threads=1, double eps=0.0):
    """:func:`sqrt_dist_sum_grad_factor` through the points instead of the pairs.

    With more pairs than points the same sums cost less per point than per
    pair.  ``T = (X - m) K`` gives every distance as ``||T_a - T_b||`` (2 n d r
    flops for the points, r per pair), and the gradient ``sum_p w_p D_p D_p^T``
    equals ``(X - m)^T Y`` with ``Y = Lap(w) X`` for the weighted graph
    Laplacian of the pairs: Y is scattered pair by pair from the exact
    differences (2 d per pair), then one matrix product of 2 n d^2 flops.
    ``m`` is the points' mean; ``Lap(w)`` annihilates constants, so centring
    changes only the rounding, which it keeps relative to the spread of the
    data rather than to its offset.  A distance below 1e-5 of its points' norms
    in T would carry a large relative error, so it is recomputed from the exact
    difference, ``||K^T D_p||``; identical points give exactly 0.

    Every step has a fixed split -- rows in ``POINT_CHUNKS`` runs, the scatter
    by rows (each row adds its terms in pair order), pairs independent -- so the result
    is the same, bit for bit, for any number of threads.  Memory: n x (2 d + r +
    1) doubles, plus n_pairs when ``dists`` is not kept.

    Parameters
    ----------
    X, i, j, K, dists, num_threads, eps
        As :func:`sqrt_dist_sum_grad_factor`.
    grad : ndarray of shape (n_features, n_features) or (0, 0), float64
        As there: overwritten with the gradient, or an empty array for a
        value-only pass (which skips the scatter and the d x d product).

    Returns
    -------
    f : float
        ``sum_p ||K^T D_p||``.
    """
    cdef Py_ssize_t n_pairs = i.shape[0]
    cdef int n = <int> X.shape[0]
    cdef int d = <int> X.shape[1]
    cdef int r = <int> K.shape[1]
    cdef bint want_grad = grad.shape[0] > 0
    if K.shape[0] != d or r < 1 or (want_grad and (grad.shape[0] != d
                                                   or grad.shape[1] != d)):
        raise ValueError("sqrt_dist_sum_grad_points: need K (d, r >= 1) and "
                         "grad (d, d) or (0, 0)")
    if dists.shape[0] not in (0, n_pairs):
        raise ValueError("sqrt_dist_sum_grad_points: dists must have n_pairs "
                         "entries or none")
    cdef Py_ssize_t dd = <Py_ssize_t> d * d
    cdef Py_ssize_t n_chunks = POINT_CHUNKS if n >= POINT_CHUNKS else 1
    cdef int nt = num_threads if num_threads > 0 else 1
    cdef Py_ssize_t p, a, b, q, c, k, r0, r1
    cdef int rows
    cdef double s, dist, w, total, diff
    cdef char tn = b'N'
    cdef char tt = b'T'
    cdef double one = 1.0, zero = 0.0
    cdef bint keep = dists.shape[0] > 0
    cdef Py_ssize_t n_buf = (<Py_ssize_t> n * (d + r + 1) + (0 if keep else n_pairs)
                             + (<Py_ssize_t> n * d + n_chunks * dd if want_grad else 0)
                             + n_chunks * d + d + 1)
    cdef double *C = <double *> malloc(n_buf * sizeof(double))
    cdef double *T
    cdef double *tnorm
    cdef double *dist_of
    cdef double *msum
    cdef double *m
    cdef double *Y = NULL
    cdef double *acc = NULL
    if C == NULL:
        raise MemoryError()
    T = C + <Py_ssize_t> n * d
    tnorm = T + <Py_ssize_t> n * r
    # The distances go straight into ``dists`` when the caller keeps them.
    msum = tnorm + n
    m = msum + n_chunks * d
    dist_of = &dists[0] if keep else m + d
    if want_grad:
        Y = m + d + (0 if keep else n_pairs)
        acc = Y + <Py_ssize_t> n * d
    with nogil:
        _centre_and_map(X, K, n_chunks, nt, msum, m, C, T, tnorm)
        # Every pair's distance and weight (pairs are independent).
        for p in prange(n_pairs, num_threads=nt, schedule='static'):
            a = i[p]
            b = j[p]
            s = 0.0
            for k in range(r):
                diff = T[a * r + k] - T[b * r + k]
                s = s + diff * diff
            if s <= 1e-10 * (tnorm[a] + tnorm[b]):
                s = _exact_sq_dist(X, a, b, K, d, r)
            dist_of[p] = sqrt(s)
        total = _ordered_sum(dist_of, n_pairs)
        if want_grad:
            # Y = Lap(w) X: each thread owns a run of rows and scans all the
            # pairs for its own, so every row adds its terms in pair order.
            for c in prange(nt, num_threads=nt, schedule='static'):
                r0 = c * n // nt
                r1 = (c + 1) * n // nt
                for q in range(r0 * d, r1 * d):
                    Y[q] = 0.0
                for p in range(n_pairs):
                    a = i[p]
                    b = j[p]
                    dist = dist_of[p] + eps
                    if dist > 0 and ((a >= r0 and a < r1) or (b >= r0 and b < r1)):
                        w = 0.5 / dist
                        if a >= r0 and a < r1:
                            for k in range(d):
                                Y[a * d + k] = Y[a * d + k] + w * (
                                    <double> X[a, k] - <double> X[b, k])
                        if b >= r0 and b < r1:
                            for k in range(d):
                                Y[b * d + k] = Y[b * d + k] - w * (
                                    <double> X[a, k] - <double> X[b, k])
            # acc_c = C_c^T Y_c (column-major d x d) for each run of rows.
            for c in prange(n_chunks, num_threads=nt, schedule='static'):
                r0 = c * n // n_chunks
                rows = <int> ((c + 1) * n // n_chunks - r0)
                if rows > 0:
                    dgemm(&tn, &tt, &d, &d, &rows, &one, C + r0 * d, &d,
                          Y + r0 * d, &d, &zero, acc + c * dd, &d)
                else:
                    memset(acc + c * dd, 0, dd * sizeof(double))
            # The exact product is symmetric: average its two triangles.
            for a in range(d):
                for b in range(a + 1):
                    s = 0.0
                    diff = 0.0
                    for c in range(n_chunks):
                        s = s + acc[c * dd + b * d + a]
                        diff = diff + acc[c * dd + a * d + b]
                    grad[a, b] = 0.5 * (s + diff)
                    grad[b, a] = grad[a, b]
    free(C)
    return total


cdef inline double _exact_sq_dist(const floating[:, ::1] X, Py_ssize_t a,
                                  Py_ssize_t b, const double[:, ::1] K, int d,
                                  int r) noexcept nogil:
    """``||K^T (X[a] - X[b])||^2`` from the exact difference."""
    cdef Py_ssize_t k, t
    cdef double s = 0.0, u
    for t in range(r):
        u = 0.0
        for k in range(d):
            u = u + (<double> X[a, k] - <double> X[b, k]) * K[k, t]
        s = s + u * u
    return s
