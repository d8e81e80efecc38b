"""Numba kernels of the magnet loss (Rippel et al., 2016): forward and backward.

Only ``@njit`` functions live here; :mod:`fastmetric.magnet` validates the
batch, maps cluster ids to ``0 .. M-1`` and calls these.  All float arrays are
C-contiguous float64, all index arrays int64; no checks are made.

A batch of ``B`` rows ``x_i`` falls into ``M`` clusters (``cid[i]``), each of
one class (``cclass[c]``).  The kernels work on the ``B x M`` matrix of
squared distances from every row to every cluster mean, so time is
``O(B M m)`` and memory ``O(B M)``; no ``B x B`` matrix is formed.

Distances to the means are taken from the differences, never from a Gram
matrix, and the means are accumulated relative to one member of the cluster:
a cluster whose members are bit-identical gets a mean equal to them and a
within-cluster distance of exactly 0.  That keeps the degenerate batches
(all members at their means, all rows equal) exact instead of dividing
rounding noise by rounding noise.
"""

import numpy as np
from numba import njit, prange


@njit(nogil=True, cache=True)
def shifted_means(X, cid, ref, counts, mu):
    """Cluster means accumulated relative to a reference member.

    ``mu[c] = X[ref[c]] + mean_{i in c}(X[i] - X[ref[c]])``: equal to the plain
    mean in exact arithmetic, and exactly ``X[ref[c]]`` when every member
    equals it bit for bit.

    Parameters
    ----------
    X : ndarray of shape (B, m)
    cid : ndarray of int64, shape (B,)
        Cluster of each row, in ``0 .. M-1``.
    ref : ndarray of int64, shape (M,)
        One member row of each cluster.
    counts : ndarray of int64, shape (M,)
        Cluster sizes (all > 0).
    mu : ndarray of shape (M, m)
        Output.
    """
    M, m = mu.shape
    for c in range(M):
        for k in range(m):
            mu[c, k] = 0.0
    for i in range(X.shape[0]):
        c = cid[i]
        r = ref[c]
        for k in range(m):
            mu[c, k] += X[i, k] - X[r, k]
    for c in range(M):
        r = ref[c]
        inv = 1.0 / counts[c]
        for k in range(m):
            mu[c, k] = X[r, k] + mu[c, k] * inv


@njit(parallel=True, nogil=True, cache=True)
def squared_distances(X, mu, rbar, dist, to_mean):
    """Squared distances of every row to every cluster mean and to the batch mean.

    Parameters
    ----------
    X : ndarray of shape (B, m)
    mu : ndarray of shape (M, m)
    rbar : ndarray of shape (m,)
        The batch mean.
    dist : ndarray of shape (B, M)
        Output: ``||x_i - mu_c||^2``.
    to_mean : ndarray of shape (B,)
        Output: ``||x_i - rbar||^2``.
    """
    B, m = X.shape
    M = mu.shape[0]
    for i in prange(B):
        for c in range(M):
            s = 0.0
            for k in range(m):
                t = X[i, k] - mu[c, k]
                s += t * t
            dist[i, c] = s
        s = 0.0
        for k in range(m):
            t = X[i, k] - rbar[k]
            s += t * t
        to_mean[i] = s


@njit(parallel=True, nogil=True, cache=True)
def example_losses(dist, cid, cclass, alpha, var, prob, losses):
    """Per-example magnet loss, in log space, and the impostor soft-max.

    ``l_i = relu(d_i,own / (2 var) + alpha + LSE_c(-d_ic / (2 var)))`` with the
    log-sum-exp over the clusters ``c`` of other classes, shifted by its
    maximum.  A row with no impostor cluster has loss 0.

    Parameters
    ----------
    dist : ndarray of shape (B, M)
        Squared distances to the cluster means.
    cid : ndarray of int64, shape (B,)
    cclass : ndarray of int64, shape (M,)
        Class of each cluster.
    alpha : float
    var : float
        The (floored) shared variance, > 0.
    prob : ndarray of shape (B, M)
        Output: soft-max weight of each impostor cluster in the row's
        log-sum-exp (0 for the row's own class).
    losses : ndarray of shape (B,)
        Output: ``l_i``.
    """
    B, M = dist.shape
    scale = 0.5 / var
    for i in prange(B):
        own = cid[i]
        k_own = cclass[own]
        top = -np.inf
        found = False
        for c in range(M):
            prob[i, c] = 0.0
            if cclass[c] != k_own:
                found = True
                e = -dist[i, c] * scale
                if e > top:
                    top = e
        if not found:
            losses[i] = 0.0
            continue
        s = 0.0
        for c in range(M):
            if cclass[c] != k_own:
                w = np.exp(-dist[i, c] * scale - top)
                prob[i, c] = w
                s += w
        inv = 1.0 / s
        for c in range(M):
            prob[i, c] *= inv
        a = dist[i, own] * scale + alpha + top + np.log(s)
        losses[i] = a if a > 0.0 else 0.0


@njit(parallel=True, nogil=True, cache=True)
def distance_weights(dist, cid, var, g, prob, row_dvar):
    """Turn the soft-max into ``W = dL/d dist``, in place, with each row's ``dL/dvar``.

    ``W[i, own] = g_i / (2 var)``, ``W[i, c] = -g_i p_ic / (2 var)`` for the
    impostors, 0 elsewhere; ``row_dvar[i] = -g_i (q_own - sum_c p_ic q_ic) / var``
    with ``q = dist / (2 var)``: the part of ``dL/dvar`` coming from row ``i``.

    Parameters
    ----------
    dist : ndarray of shape (B, M)
    cid : ndarray of int64, shape (B,)
    var : float
    g : ndarray of shape (B,)
        ``dL/dl_i`` (0 where the hinge is inactive).
    prob : ndarray of shape (B, M)
        Impostor soft-max from :func:`example_losses`; overwritten with ``W``.
    row_dvar : ndarray of shape (B,)
        Output.
    """
    B, M = dist.shape
    scale = 0.5 / var
    for i in prange(B):
        gi = g[i]
        if gi == 0.0:
            for c in range(M):
                prob[i, c] = 0.0
            row_dvar[i] = 0.0
            continue
        own = cid[i]
        expect = 0.0
        for c in range(M):
            expect += prob[i, c] * dist[i, c]
        row_dvar[i] = -gi * (dist[i, own] - expect) * scale / var
        for c in range(M):
            prob[i, c] *= -gi * scale
        prob[i, own] = gi * scale


@njit(parallel=True, nogil=True, cache=True)
def mean_gradients(X, mu, W, g_mu):
    """``g_mu[c] = dL/dmu_c = -2 sum_i W[i, c] (x_i - mu_c)`` (explicit part only).

    Parallel over clusters, so every cluster sums its rows in the same order
    whatever the thread count.
    """
    B, m = X.shape
    M = mu.shape[0]
    for c in prange(M):
        for k in range(m):
            g_mu[c, k] = 0.0
        for i in range(B):
            w = W[i, c]
            if w != 0.0:
                for k in range(m):
                    g_mu[c, k] -= 2.0 * w * (X[i, k] - mu[c, k])


@njit(parallel=True, nogil=True, cache=True)
def row_gradients(X, cid, counts, mu, rbar, W, g_mu, c_var, c_total, grad):
    """Gradient with respect to the rows, through the distances, means and variances.

    ``grad_i = 2 sum_c W[i, c] (x_i - mu_c) + g_mu[cid_i] / n_cid_i
    + 2 c_var (x_i - mu_cid_i) + 2 c_total (x_i - rbar)``, where ``c_var`` and
    ``c_total`` are ``dL/dvar / (B - 1)`` and ``dL/dtotal_var / (B - 1)``
    (the variances' dependence through the means cancels: the deviations of a
    cluster sum to zero).
    """
    B, m = X.shape
    M = mu.shape[0]
    for i in prange(B):
        own = cid[i]
        inv_n = 1.0 / counts[own]
        for k in range(m):
            xk = X[i, k]
            grad[i, k] = (g_mu[own, k] * inv_n + 2.0 * c_var * (xk - mu[own, k])
                          + 2.0 * c_total * (xk - rbar[k]))
        for c in range(M):
            w = W[i, c]
            if w != 0.0:
                w2 = 2.0 * w
                for k in range(m):
                    grad[i, k] += w2 * (X[i, k] - mu[c, k])
