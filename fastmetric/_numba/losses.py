"""Numba kernels of the pair and triplet losses of :mod:`fastmetric.losses`.

Only ``@njit`` functions live here.  Each kernel reads the batch's distance
matrix ``D`` (float64, ``B x B``) and either the labels (every ordered pair /
every triplet of the batch) or explicit index lists (a miner's tuples), fills
``C = dL/dD`` for the *unreduced* sum of the loss terms (the front-end scales
the gradient by the reduction's weight, which is known only once the active
terms are counted) and returns or writes the sums and counts the reductions
need.  The contrastive kernels instead sum the gradient with respect to the
embeddings directly over the active pairs (few, as a rule).  No validation
happens here: indices are in range, arrays contiguous.

Nothing here allocates more than ``O(B^2 + n_tuples)``: the all-triplets loss
never visits a triplet (per anchor it sorts the positive distances once and
ranks every negative among them; prefix sums over the ranks give each
positive's active negatives and the sum of their terms), and the lifted
losses share one max-shifted log-sum-exp per row.
"""

import numpy as np
from numba import njit, prange

from .distances import n_blocks, row_from_gram

# ---------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _logaddexp(x, y):
    """``log(exp(x) + exp(y))`` for ``x, y`` finite or ``-inf`` (not both)."""
    if x == -np.inf:
        return y
    if y == -np.inf:
        return x
    if x >= y:
        return x + np.log1p(np.exp(y - x))
    return y + np.log1p(np.exp(x - y))


# ---------------------------------------------------------------------------
# Contrastive loss
# ---------------------------------------------------------------------------

@njit(nogil=True, cache=True)
def class_members(labels, members, class_ptr):
    """The rows grouped by label, and each row's slice of that grouping.

    Parameters
    ----------
    labels : ndarray of int64, shape (B,)
    members : ndarray of int64, shape (B,)
        Out: row indices sorted by label (stable).
    class_ptr : ndarray of int64, shape (B, 2)
        Out: row ``i``'s class (itself included) is
        ``members[class_ptr[i, 0]:class_ptr[i, 1]]``.
    """
    B = labels.shape[0]
    order = np.argsort(labels, kind="mergesort")
    start = 0
    for q in range(B + 1):
        if q == B or (q > start and labels[order[q]] != labels[order[start]]):
            for r in range(start, q):
                class_ptr[order[r], 0] = start
                class_ptr[order[r], 1] = q
            start = q
        if q < B:
            members[q] = order[q]


# Reassociation only (no nnan/ninf/nsz: every value here may be any float):
# lets the compiler vectorise the row's sums and counts.
_REASSOC = {"reassoc"}


@njit(nogil=True, cache=True, fastmath=_REASSOC)
def _contrastive_row_terms(i, d, labels, pos_margin, neg_margin, sums, counts):
    """Sums and counts of row ``i``'s contrastive terms (branch-free)."""
    B = d.shape[0]
    li = labels[i]
    p_sum = 0.0
    n_sum = 0.0
    p_act = 0
    p_all = 0
    n_act = 0
    n_all = 0
    for j in range(B):
        dj = d[j]
        same = labels[j] == li
        pos = same & (j != i)
        neg = ~same
        tp = dj - pos_margin
        tn = neg_margin - dj
        ap = pos & (tp > 0.0)
        an = neg & (tn > 0.0)
        p_sum += tp if ap else 0.0
        n_sum += tn if an else 0.0
        p_all += pos
        n_all += neg
        p_act += ap
        n_act += an
    sums[i, 0] = p_sum
    sums[i, 1] = n_sum
    counts[i, 0] = p_act
    counts[i, 1] = p_all
    counts[i, 2] = n_act
    counts[i, 3] = n_all
    return p_act + n_act


@njit(nogil=True, cache=True)
def _contrastive_positives(X, i, d, members, class_ptr, pos_margin, grad_pos):
    """Row ``i``'s positive-pair gradient, over its class members."""
    m = X.shape[1]
    for q in range(class_ptr[i, 0], class_ptr[i, 1]):
        j = members[q]
        dj = d[j]
        if j != i and dj > 0.0 and dj - pos_margin > 0.0:
            w = 2.0 / dj
            for k in range(m):
                grad_pos[i, k] += w * (X[i, k] - X[j, k])


@njit(nogil=True, cache=True)
def _contrastive_negatives(X, i, d, labels, neg_margin, grad_neg):
    """Row ``i``'s negative-pair gradient, pair by pair."""
    B, m = X.shape
    li = labels[i]
    for j in range(B):
        dj = d[j]
        if labels[j] != li and dj > 0.0 and neg_margin - dj > 0.0:
            w = 2.0 / dj
            for k in range(m):
                grad_neg[i, k] -= w * (X[i, k] - X[j, k])


@njit(nogil=True, cache=True)
def _contrastive_negative_weights(X, sq, near, i, d, labels, neg_margin, w_row,
                                  grad_neg):
    """Row ``i``'s negative-pair weights for a matrix product; returns their sum.

    ``w_row[j] = -2 / d_ij`` per active negative pair.  Near pairs (large
    weights, where ``rowsum(W) x_i - (W X)_i`` would cancel) are summed from
    their difference into ``grad_neg`` instead and get weight 0.
    """
    B, m = X.shape
    li = labels[i]
    total = 0.0
    n_near = 0
    for j in range(B):
        dj = d[j]
        active = (labels[j] != li) & (dj > 0.0) & (neg_margin - dj > 0.0)
        near_pair = active & (dj * dj < near * (sq[i] + sq[j]))
        w = -2.0 / dj if active & ~near_pair else 0.0
        n_near += near_pair
        w_row[j] = w
        total += np.float64(w_row[j])
    if n_near > 0:
        for j in range(B):
            dj = d[j]
            if (labels[j] != li and dj > 0.0 and neg_margin - dj > 0.0
                    and dj * dj < near * (sq[i] + sq[j])):
                w = 2.0 / dj
                for k in range(m):
                    grad_neg[i, k] -= w * (X[i, k] - X[j, k])
    return total


# A row whose active negative pairs exceed this share of the batch takes its
# negative gradient from a matrix product (BLAS: ~50x the flop rate of the
# pair-by-pair sum, which costs m flops per active pair either way).
_DENSE_SHARE = 1.0 / 16.0


@njit(parallel=True, nogil=True, cache=True)
def contrastive_all_pairs(X, Xp, sq, near, labels, members, class_ptr,
                          pos_margin, neg_margin, scratch, dists, products, sums,
                          counts, grad_pos, grad_neg):
    """Contrastive terms over all ordered pairs, and their gradients, in one pass.

    Positive terms ``relu(d - pos_margin)``, negative terms
    ``relu(neg_margin - d)``.  The gradient is linear in the reduction's two
    weights, so the gradients of the two unweighted sums are returned and the
    caller combines them.  No distance matrix is stored: each task multiplies
    a block of rows into its scratch block (one BLAS call), turns the rows
    into distances (``fastmetric._numba.distances.row_from_gram``) and scores
    them.  The pair ``(i, j)`` and its mirror ``(j, i)`` have the same
    distance, so row ``i``'s gradient takes ``2 (x_i - x_j) / d_ij`` per
    active pair (the two orders' computed distances can differ in the last
    bit; a pair exactly at a margin then counts as active in both orders, a
    valid subgradient of the loss, which is symmetric): summed pair by pair
    for the positives (found among the row's class members) and, in blocks
    where no row has many active negatives, for the negatives; a block with
    such a row takes its negatives through one matrix product (the scratch
    block reused for the weights), so the last bits of a gradient can depend
    on the blocking.  Zero-distance pairs contribute nothing (the
    subgradient of ``torch.cdist``).

    Parameters
    ----------
    X : ndarray of shape (B, m), float64
    Xp : ndarray of shape (B, m)
        ``X`` in the product's precision.
    sq : ndarray of shape (B,)
        Squared row norms.
    near : float
        Near-pair ratio (see ``fastmetric._numba.distances``).
    labels : ndarray of int64, shape (B,)
    members : ndarray of int64, shape (B,)
        The rows grouped by label.
    class_ptr : ndarray of int64, shape (B, 2)
        Row ``i``'s class is ``members[class_ptr[i, 0]:class_ptr[i, 1]]``.
    pos_margin, neg_margin : float
    scratch : ndarray of shape (n_tasks, rows_per_block, B), Xp's dtype
    dists : ndarray of shape (n_tasks, rows_per_block, B), float64
        Work: each block's distances.
    products : ndarray of shape (n_tasks, rows_per_block, m), Xp's dtype
        Work: each block's weights-times-rows product.
    sums : ndarray of shape (B, 2)
        Out: per row ``i``, the sum of the positive and of the negative terms
        of the pairs ``(i, j)``.
    counts : ndarray of int64, shape (B, 4)
        Out: per row, the number of positive terms > 0, of positive pairs, of
        negative terms > 0 and of negative pairs.
    grad_pos, grad_neg : ndarray of shape (B, m)
        Out: gradients with respect to ``X`` of the sums of the positive and
        of the negative terms.
    """
    B, m = X.shape
    n_tasks, rb, _ = scratch.shape
    nb = n_blocks(B, rb)
    single = Xp.itemsize == 4
    dense_min = int(_DENSE_SHARE * B)
    for t in prange(n_tasks):
        row_sum = np.empty(rb)
        for b in range(t, nb, n_tasks):
            i0 = b * rb
            i1 = min(B, i0 + rb)
            G = scratch[t, :i1 - i0]
            np.dot(Xp[i0:i1], Xp.T, G)
            n_dense = 0
            for i in range(i0, i1):
                d = dists[t, i - i0]
                row_from_gram(X, sq, G[i - i0], i, near, single, d)
                _contrastive_row_terms(i, d, labels, pos_margin, neg_margin, sums,
                                       counts)
                for k in range(m):
                    grad_pos[i, k] = 0.0
                    grad_neg[i, k] = 0.0
                if counts[i, 0] > 0:
                    _contrastive_positives(X, i, d, members, class_ptr, pos_margin,
                                           grad_pos)
                n_dense += counts[i, 2] > dense_min
            if n_dense == 0:
                for i in range(i0, i1):
                    if counts[i, 2] > 0:
                        _contrastive_negatives(X, i, dists[t, i - i0], labels,
                                               neg_margin, grad_neg)
                continue
            # the distances are out of G: reuse it for the weights
            for i in range(i0, i1):
                row_sum[i - i0] = _contrastive_negative_weights(
                    X, sq, near, i, dists[t, i - i0], labels, neg_margin, G[i - i0],
                    grad_neg)
            P = products[t, :i1 - i0]
            np.dot(G, Xp, P)
            for i in range(i0, i1):
                for k in range(m):
                    grad_neg[i, k] += (row_sum[i - i0] * X[i, k]
                                       - np.float64(P[i - i0, k]))


@njit(nogil=True, cache=True)
def contrastive_pairs(X, D, a1, p, a2, n, pos_margin, neg_margin, sums, counts,
                      grad_pos, grad_neg):
    """Contrastive terms over explicit pair lists, and their gradients.

    As :func:`contrastive_all_pairs`, in ``O(n_pairs m)``; a pair listed
    twice counts twice.

    Parameters
    ----------
    X : ndarray of shape (B, m)
    D : ndarray of shape (B, B)
    a1, p : ndarray of int64, shape (n_pos,)
        Positive pairs ``(a1[k], p[k])``.
    a2, n : ndarray of int64, shape (n_neg,)
        Negative pairs ``(a2[k], n[k])``.
    pos_margin, neg_margin : float
    sums : ndarray of shape (2,)
        Out: sum of the positive terms, sum of the negative terms.
    counts : ndarray of int64, shape (2,)
        Out: number of positive terms > 0, of negative terms > 0.
    grad_pos, grad_neg : ndarray of shape (B, m)
        Zero on entry; receive the gradients of the two sums.
    """
    m = X.shape[1]
    sums[0] = 0.0
    sums[1] = 0.0
    counts[0] = 0
    counts[1] = 0
    for t in range(a1.shape[0]):
        i = a1[t]
        j = p[t]
        d = D[i, j]
        v = d - pos_margin
        if v > 0.0:
            sums[0] += v
            counts[0] += 1
            if d > 0.0 and i != j:
                w = 1.0 / d
                for k in range(m):
                    g = w * (X[i, k] - X[j, k])
                    grad_pos[i, k] += g
                    grad_pos[j, k] -= g
    for t in range(a2.shape[0]):
        i = a2[t]
        j = n[t]
        d = D[i, j]
        v = neg_margin - d
        if v > 0.0:
            sums[1] += v
            counts[1] += 1
            if d > 0.0 and i != j:
                w = 1.0 / d
                for k in range(m):
                    g = w * (X[i, k] - X[j, k])
                    grad_neg[i, k] -= g
                    grad_neg[j, k] += g


# ---------------------------------------------------------------------------
# Triplet margin loss
# ---------------------------------------------------------------------------

# Up to this many positives per anchor, a negative's rank is counted with one
# branch-free (vectorised) sweep over the positives; beyond it, binary search
# wins.  Measured here: 63 positives, sweep 8 ns vs search 23 ns (the search's
# branches are unpredictable).
_LINEAR_RANK_MAX = 128


@njit(nogil=True, cache=True)
def _rank_among(q_sorted, n_pos, x, margin):
    """Number of positives ``q`` (sorted) whose term ``(q - x) + margin`` is not > 0.

    The test is the term's own floating-point expression, which is monotone in
    ``q``, so the active positives of a negative at distance ``x`` are exactly
    the ranks from the returned one on.
    """
    if (q_sorted[n_pos - 1] - x) + margin <= 0.0:
        return n_pos
    if (q_sorted[0] - x) + margin > 0.0:
        return 0
    if n_pos <= _LINEAR_RANK_MAX:
        count = 0
        for r in range(n_pos):
            count += (q_sorted[r] - x) + margin <= 0.0
        return count
    lo = 0
    hi = n_pos
    while lo < hi:
        mid = (lo + hi) >> 1
        if (q_sorted[mid] - x) + margin > 0.0:
            hi = mid
        else:
            lo = mid + 1
    return lo


@njit(nogil=True, cache=True)
def _book_negative(a, k, s, n_pos, D, C, at_rank, dist_at_rank):
    """Book negative ``k`` of anchor ``a`` at rank ``s`` among the positives."""
    C[a, k] -= n_pos - s
    at_rank[s] += 1
    dist_at_rank[s] += D[a, k]


@njit(nogil=True, cache=True)
def _sum_over_positives(a, pos, order, q_sorted, n_pos, margin, C, at_rank,
                        dist_at_rank):
    """Prefix sums over the ranks: each positive's active negatives and terms.

    Positive of rank ``r`` is active with the negatives of rank ``s <= r``:
    their count ``c`` is its entry of ``dL/dD`` and their terms sum to
    ``c (d_ap + margin) - sum d_an``.

    Returns
    -------
    total : float
    n_active : int
    """
    total = 0.0
    n_active = 0
    count = 0
    dist_sum = 0.0
    for r in range(n_pos):
        count += at_rank[r]
        dist_sum += dist_at_rank[r]
        if count > 0:
            total += count * (q_sorted[r] + margin) - dist_sum
            n_active += count
            C[a, pos[order[r]]] += count
    return total, n_active


@njit(nogil=True, cache=True)
def _sorted_positives(a, pos, n_pos, D):
    """The anchor's positive distances, sorted, and the sorting order."""
    q = np.empty(n_pos)
    for r in range(n_pos):
        q[r] = D[a, pos[r]]
    order = np.argsort(q)
    q_sorted = np.empty(n_pos)
    for r in range(n_pos):
        q_sorted[r] = q[order[r]]
    return q_sorted, order


@njit(parallel=True, nogil=True, cache=True)
def triplet_all(D, labels, margin, C, sums, counts):
    """The triplet margin loss over every valid triplet of the batch.

    A triplet ``(a, p, n)`` has ``p != a`` with ``a``'s label and ``n`` with
    another label; its term is ``relu(d_ap - d_an + margin)``.  No triplet is
    visited: per anchor the positive distances are sorted once and every
    negative gets its rank among them (how many of its triplets are
    inactive); prefix sums over the ranks then give each positive's active
    negatives and the sum of their terms.  ``O(B^2 min(P, log P))`` time for
    ``P`` positives per anchor, ``O(B)`` extra memory per thread.

    Parameters
    ----------
    D : ndarray of shape (B, B)
    labels : ndarray of int64, shape (B,)
    margin : float
    C : ndarray of shape (B, B)
        Zero on entry; receives ``dL/dD`` of the unreduced sum of the terms (a
        positive's entry: its number of active negatives; a negative's: minus
        its number of active positives).
    sums : ndarray of shape (B,)
        Out: per anchor, the sum of its terms.
    counts : ndarray of int64, shape (B, 2)
        Out: per anchor, the number of terms > 0 and the number of triplets.
    """
    B = D.shape[0]
    for a in prange(B):
        la = labels[a]
        pos = np.empty(B, dtype=np.int64)
        n_pos = 0
        for j in range(B):
            if j != a and labels[j] == la:
                pos[n_pos] = j
                n_pos += 1
        n_neg = B - 1 - n_pos
        sums[a] = 0.0
        counts[a, 0] = 0
        counts[a, 1] = n_pos * n_neg
        if n_pos == 0 or n_neg == 0:
            continue
        q_sorted, order = _sorted_positives(a, pos, n_pos, D)
        # Ranks first, bookkeeping second: in one loop the indexed stores keep
        # the rank sweep from vectorising (4x slower, measured).
        rank = np.empty(B, dtype=np.int64)
        for k in range(B):
            if labels[k] != la:
                rank[k] = _rank_among(q_sorted, n_pos, D[a, k], margin)
        at_rank = np.zeros(n_pos + 1, dtype=np.int64)
        dist_at_rank = np.zeros(n_pos + 1)
        for k in range(B):
            if labels[k] != la:
                _book_negative(a, k, rank[k], n_pos, D, C, at_rank, dist_at_rank)
        total, n_active = _sum_over_positives(a, pos, order, q_sorted, n_pos,
                                              margin, C, at_rank, dist_at_rank)
        sums[a] = total
        counts[a, 0] = n_active


@njit(parallel=True, nogil=True, cache=True)
def triplet_grouped(D, anchors, pos_ptr, pos_idx, neg_ptr, neg_idx, margin, C,
                    sums, counts):
    """The triplets implied by pair lists: per anchor, its positives x negatives.

    For mined pairs ``(a1, p, a2, n)`` every positive pair ``(a, p)`` meets
    every negative pair ``(a, n)`` with the same anchor; with the lists
    grouped by anchor (CSR) the sweep of :func:`triplet_all` runs on them, so
    the triplets are never formed.

    Parameters
    ----------
    D : ndarray of shape (B, B)
    anchors : ndarray of int64, shape (n_anchors,)
        Distinct anchors with at least one positive and one negative.
    pos_ptr, neg_ptr : ndarray of int64, shape (B + 1,)
        Anchor ``a``'s positives are ``pos_idx[pos_ptr[a]:pos_ptr[a + 1]]``
        (repeats allowed and counted), likewise its negatives.
    pos_idx, neg_idx : ndarray of int64
    margin : float
    C : ndarray of shape (B, B)
        Zero on entry; receives ``dL/dD`` of the unreduced sum of the terms.
    sums : ndarray of shape (n_anchors,)
    counts : ndarray of int64, shape (n_anchors, 2)
        As in :func:`triplet_all`, per entry of ``anchors``.
    """
    for t in prange(anchors.shape[0]):
        a = anchors[t]
        p0 = pos_ptr[a]
        n_pos = pos_ptr[a + 1] - p0
        n0 = neg_ptr[a]
        n_neg = neg_ptr[a + 1] - n0
        pos = pos_idx[p0:p0 + n_pos]
        q_sorted, order = _sorted_positives(a, pos, n_pos, D)
        rank = np.empty(n_neg, dtype=np.int64)
        for u in range(n_neg):
            rank[u] = _rank_among(q_sorted, n_pos, D[a, neg_idx[n0 + u]], margin)
        at_rank = np.zeros(n_pos + 1, dtype=np.int64)
        dist_at_rank = np.zeros(n_pos + 1)
        for u in range(n_neg):
            _book_negative(a, neg_idx[n0 + u], rank[u], n_pos, D, C, at_rank,
                           dist_at_rank)
        total, n_active = _sum_over_positives(a, pos, order, q_sorted, n_pos,
                                              margin, C, at_rank, dist_at_rank)
        sums[t] = total
        counts[t, 0] = n_active
        counts[t, 1] = n_pos * n_neg


@njit(nogil=True, cache=True)
def triplet_list(D, a, p, n, margin, C):
    """The triplet margin loss over an explicit list of triplets.

    Parameters
    ----------
    D : ndarray of shape (B, B)
    a, p, n : ndarray of int64, shape (n_triplets,)
    margin : float
    C : ndarray of shape (B, B)
        Zero on entry; receives ``dL/dD`` of the unreduced sum of the terms.

    Returns
    -------
    total : float
    n_active : int
        Number of terms > 0.
    """
    total = 0.0
    n_active = 0
    for k in range(a.shape[0]):
        i = a[k]
        t = (D[i, p[k]] - D[i, n[k]]) + margin
        if t > 0.0:
            total += t
            n_active += 1
            C[i, p[k]] += 1.0
            C[i, n[k]] -= 1.0
    return total, n_active


# ---------------------------------------------------------------------------
# Lifted structured loss (Song et al., 2016; PML's formulation)
# ---------------------------------------------------------------------------


@njit(parallel=True, nogil=True, cache=True)
def lifted_shifted_negatives(D, labels, neg_margin, C, row_max):
    """First step of :func:`lifted_all_pairs`: shifted exponents of the negatives.

    Writes ``C[i, k] = neg_margin - d_ik - max_i`` for the negatives ``k`` of
    row ``i`` (``max_i`` their largest ``neg_margin - d``) and ``-inf``
    elsewhere, so that one vectorised ``exp`` (NumPy's, several times faster
    than a scalar loop) turns ``C`` into the shifted exponentials.

    Parameters
    ----------
    D : ndarray of shape (B, B)
    labels : ndarray of int64, shape (B,)
    neg_margin : float
    C : ndarray of shape (B, B)
        Out.
    row_max : ndarray of shape (B,)
        Out: ``max_i`` (``-inf`` for a row without negatives).
    """
    B = D.shape[0]
    for i in prange(B):
        li = labels[i]
        mx = -np.inf
        for k in range(B):
            if labels[k] != li:
                v = neg_margin - D[i, k]
                if v > mx:
                    mx = v
        row_max[i] = mx
        for k in range(B):
            C[i, k] = (neg_margin - D[i, k]) - mx if labels[k] != li else -np.inf


@njit(nogil=True, cache=True)
def _pair_lse(s_i, mx_i, s_j, mx_j):
    """``J = log(e^{mx_i} s_i + e^{mx_j} s_j)`` and ``share_i = e^{mx_i - J}``.

    ``s`` are a row's shifted sums of exponentials (``s = 0``: no negatives,
    ``mx`` then unused).  One ``exp`` and one ``log`` per pair, shifted by the
    larger maximum so nothing overflows; two empty rows give ``J = 0``.
    """
    if s_i == 0.0 and s_j == 0.0:
        return 0.0, 0.0
    if s_j == 0.0 or (s_i > 0.0 and mx_i >= mx_j):
        u = np.exp(mx_j - mx_i) if s_j > 0.0 else 0.0
        total = s_i + s_j * u
        return mx_i + np.log(total), 1.0 / total
    u = np.exp(mx_i - mx_j) if s_i > 0.0 else 0.0
    total = s_j + s_i * u
    return mx_j + np.log(total), u / total


@njit(parallel=True, nogil=True, cache=True)
def lifted_all_pairs(D, labels, pos_margin, C, row_max, row_sum, sums, counts):
    """Lifted structured loss over all ordered positive pairs of the batch.

    Pair ``(i, j)`` has ``J_ij = log(sum_{k neg of i} e^{m - d_ik} +
    sum_{k neg of j} e^{m - d_jk})`` (``m = neg_margin``), a log-add-exp of
    the two rows' negative sums, and the term
    ``relu(J_ij + d_ij - pos_margin)^2 / 2``.  A row without negatives
    contributes an empty sum (two such rows give ``J = 0``); PML's loss is 0
    for a batch of one class, which the front-end handles.

    Parameters
    ----------
    D : ndarray of shape (B, B)
    labels : ndarray of int64, shape (B,)
    pos_margin : float
    C : ndarray of shape (B, B)
        In: ``exp`` of :func:`lifted_shifted_negatives`' output (0 off the
        negatives).  Out (every entry written): ``dL/dD`` of the unreduced
        sum of the terms.
    row_max : ndarray of shape (B,)
        From :func:`lifted_shifted_negatives`.
    row_sum : ndarray of shape (B,)
        Work: each row's shifted sum of negative exponentials.
    sums : ndarray of shape (B,)
        Out: per row ``i``, the sum of the terms of the pairs ``(i, j)``.
    counts : ndarray of int64, shape (B, 2)
        Out: per row, the number of those terms > 0 and of positive pairs.
    """
    B = D.shape[0]
    for i in prange(B):
        s = 0.0
        for k in range(B):
            s += C[i, k]
        row_sum[i] = s
    # Per row i: its positive pairs, then the weight r_i that every negative
    # exponential of row i carries, r_i = sum over the pairs that contain i,
    # (i, j) and (j, i), of relu(z) e^{max_i - J}.
    for i in prange(B):
        li = labels[i]
        s_i = row_sum[i]
        mx_i = row_max[i]
        pos = np.empty(B, dtype=np.int64)
        slope = np.empty(B)
        n_pos = 0
        total = 0.0
        n_active = 0
        r = 0.0
        for j in range(B):
            if j == i or labels[j] != li:
                continue
            J, share = _pair_lse(s_i, mx_i, row_sum[j], row_max[j])
            z = J + D[i, j] - pos_margin
            g = z if z > 0.0 else 0.0
            term = 0.5 * g * g
            total += term
            if term > 0.0:
                n_active += 1
            z_t = J + D[j, i] - pos_margin
            r += (g + (z_t if z_t > 0.0 else 0.0)) * share
            pos[n_pos] = j
            slope[n_pos] = g
            n_pos += 1
        sums[i] = total
        counts[i, 0] = n_active
        counts[i, 1] = n_pos
        # negatives: -r e^{m - d - max_i}; positives: relu(z_ij); diagonal 0
        for k in range(B):
            C[i, k] *= -r
        for t in range(n_pos):
            C[i, pos[t]] = slope[t]
        C[i, i] = 0.0


@njit(nogil=True, cache=True)
def lifted_pairs(D, a1, p, a2, n, pos_margin, neg_margin, C, row_max, row_lse,
                 row_weight):
    """Lifted structured loss over explicit pair lists (PML's mined form).

    Positive pair ``k`` takes the log-sum-exp over the listed negative pairs
    whose first index is ``a1[k]`` or ``p[k]`` (each listed pair once per
    listing); with none it is 0.  The caller handles an empty negative list
    (the loss is then 0).

    Parameters
    ----------
    D : ndarray of shape (B, B)
    a1, p, a2, n : ndarray of int64
        Positive pairs ``(a1[k], p[k])``, negative pairs ``(a2[k], n[k])``.
    pos_margin, neg_margin : float
    C : ndarray of shape (B, B)
        Zero on entry; receives ``dL/dD`` of the unreduced sum of the terms.
    row_max, row_lse, row_weight : ndarray of shape (B,)
        Work arrays.

    Returns
    -------
    total : float
    n_active : int
        Number of terms > 0.
    """
    B = D.shape[0]
    for i in range(B):
        row_max[i] = -np.inf
        row_lse[i] = 0.0  # the sum of exponentials, until turned into its log
        row_weight[i] = 0.0
    for k in range(a2.shape[0]):
        i = a2[k]
        v = neg_margin - D[i, n[k]]
        if v > row_max[i]:
            row_max[i] = v
    for k in range(a2.shape[0]):
        i = a2[k]
        row_lse[i] += np.exp(neg_margin - D[i, n[k]] - row_max[i])
    for i in range(B):
        if row_max[i] == -np.inf:
            row_lse[i] = -np.inf
        else:
            row_lse[i] = row_max[i] + np.log(row_lse[i])
    total = 0.0
    n_active = 0
    for k in range(a1.shape[0]):
        i = a1[k]
        j = p[k]
        lse_i = row_lse[i]
        lse_j = row_lse[j] if j != i else -np.inf
        if lse_i == -np.inf and lse_j == -np.inf:
            J = 0.0
        else:
            J = _logaddexp(lse_i, lse_j)
        z = J + D[i, j] - pos_margin
        if z <= 0.0:
            continue
        term = 0.5 * z * z
        total += term
        if term > 0.0:
            n_active += 1
        C[i, j] += z
        if lse_i != -np.inf:
            row_weight[i] += z * np.exp(row_max[i] - J)
        if lse_j != -np.inf:
            row_weight[j] += z * np.exp(row_max[j] - J)
    for k in range(a2.shape[0]):
        i = a2[k]
        if row_weight[i] != 0.0:
            C[i, n[k]] -= row_weight[i] * np.exp(neg_margin - D[i, n[k]] - row_max[i])
    return total, n_active


# ---------------------------------------------------------------------------
# Generalized lifted structured loss (Hermans et al., 2017; PML's form)
# ---------------------------------------------------------------------------


@njit(nogil=True, cache=True)
def _row_kinds(i, labels, pos_mask, neg_mask, use_masks, kinds):
    """Row ``i``'s pair kinds: 1 positive, -1 negative, 0 neither."""
    B = kinds.shape[0]
    if use_masks:
        for j in range(B):
            kinds[j] = 1 if pos_mask[i, j] else (-1 if neg_mask[i, j] else 0)
    else:
        li = labels[i]
        for j in range(B):
            kinds[j] = 1 if labels[j] == li else -1
        kinds[i] = 0


@njit(parallel=True, nogil=True, cache=True)
def generalized_lifted_shifted(D, labels, pos_mask, neg_mask, use_masks, pos_margin,
                               neg_margin, C, p_max, n_max):
    """First step of :func:`generalized_lifted`: the shifted exponents.

    Writes ``C[i, j] = d_ij - pos_margin - p_max_i`` for positives,
    ``neg_margin - d_ij - n_max_i`` for negatives and ``-inf`` elsewhere, so
    that one vectorised ``exp`` turns ``C`` into the shifted exponentials.

    Parameters
    ----------
    D : ndarray of shape (B, B)
    labels : ndarray of int64, shape (B,)
        Used when ``use_masks`` is false: positives share the row's label
        (diagonal excluded), negatives do not.
    pos_mask, neg_mask : ndarray of bool, shape (B, B) (or any, unused)
        Used when ``use_masks`` is true.
    use_masks : bool
    pos_margin, neg_margin : float
    C : ndarray of shape (B, B)
        Out.
    p_max, n_max : ndarray of shape (B,)
        Out: per row, the largest positive and negative exponent (``-inf``
        if none).
    """
    B = D.shape[0]
    for i in prange(B):
        kinds = np.empty(B, dtype=np.int8)
        _row_kinds(i, labels, pos_mask, neg_mask, use_masks, kinds)
        pm = -np.inf
        nm = -np.inf
        for j in range(B):
            k = kinds[j]
            if k == 1:
                v = D[i, j] - pos_margin
                if v > pm:
                    pm = v
            elif k == -1:
                v = neg_margin - D[i, j]
                if v > nm:
                    nm = v
        p_max[i] = pm
        n_max[i] = nm
        for j in range(B):
            k = kinds[j]
            if k == 1:
                C[i, j] = (D[i, j] - pos_margin) - pm
            elif k == -1:
                C[i, j] = (neg_margin - D[i, j]) - nm
            else:
                C[i, j] = -np.inf


@njit(parallel=True, nogil=True, cache=True)
def generalized_lifted(labels, pos_mask, neg_mask, use_masks, C, p_max, n_max,
                       row_loss):
    """Generalized lifted structured loss, one term per row.

    Row ``i``: ``relu(LSE_{j pos}(d_ij - pos_margin) + LSE_{k neg}(neg_margin -
    d_ik))``, an empty log-sum-exp counting 0.

    Parameters
    ----------
    labels, pos_mask, neg_mask, use_masks
        As for :func:`generalized_lifted_shifted`.
    C : ndarray of shape (B, B)
        In: ``exp`` of :func:`generalized_lifted_shifted`'s output.  Out:
        ``dL/dD`` of the unreduced sum of the terms (softmax weights of each
        active row, the negatives' with a minus sign).
    p_max, n_max : ndarray of shape (B,)
        From :func:`generalized_lifted_shifted`.
    row_loss : ndarray of shape (B,)
        Out: each row's term.
    """
    B = C.shape[0]
    for i in prange(B):
        kinds = np.empty(B, dtype=np.int8)
        _row_kinds(i, labels, pos_mask, neg_mask, use_masks, kinds)
        p_sum = 0.0
        n_sum = 0.0
        for j in range(B):
            k = kinds[j]
            if k == 1:
                p_sum += C[i, j]
            elif k == -1:
                n_sum += C[i, j]
        p_lse = p_max[i] + np.log(p_sum) if p_sum > 0.0 else 0.0
        n_lse = n_max[i] + np.log(n_sum) if n_sum > 0.0 else 0.0
        z = p_lse + n_lse
        if z > 0.0:
            row_loss[i] = z
            p_scale = 1.0 / p_sum if p_sum > 0.0 else 0.0
            n_scale = -1.0 / n_sum if n_sum > 0.0 else 0.0
            for j in range(B):
                C[i, j] *= p_scale if kinds[j] == 1 else n_scale
        else:
            row_loss[i] = 0.0
            for j in range(B):
                C[i, j] = 0.0
