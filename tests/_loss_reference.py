"""Plain NumPy float64 references for the losses of :mod:`fastmetric.losses`.

Written straight from the formulas, for small batches only: distances from
the differences, every pair and every triplet listed explicitly, one Python
loop per term.  They return the loss value; the tests check the gradients by
finite differences.  Semantics follow pytorch-metric-learning 2.9.0 (see the
docstrings of :mod:`fastmetric.losses`).
"""

import numpy as np


def normalize(E):
    """Rows divided by ``max(||row||, 1e-12)``."""
    norms = np.sqrt((E * E).sum(axis=1))
    return E / np.maximum(norms, 1e-12)[:, None]


def distances(X):
    """Euclidean distances from the differences (exact for duplicates)."""
    diff = X[:, None, :] - X[None, :, :]
    return np.sqrt((diff * diff).sum(axis=-1))


def all_pairs(labels):
    """Ordered pairs ``(i, j)``, ``i != j``: positives then negatives."""
    B = len(labels)
    a1, p, a2, n = [], [], [], []
    for i in range(B):
        for j in range(B):
            if i == j:
                continue
            if labels[i] == labels[j]:
                a1.append(i)
                p.append(j)
            else:
                a2.append(i)
                n.append(j)
    return a1, p, a2, n


def all_triplets(labels):
    B = len(labels)
    out = []
    for a in range(B):
        for p in range(B):
            if p == a or labels[p] != labels[a]:
                continue
            for n in range(B):
                if labels[n] != labels[a]:
                    out.append((a, p, n))
    return out


def pairs_of(labels, indices_tuple):
    """PML's ``convert_to_pairs``."""
    if indices_tuple is None:
        return all_pairs(labels)
    if len(indices_tuple) == 3:
        a, p, n = (list(np.asarray(x)) for x in indices_tuple)
        return a, p, a, n
    return tuple(list(np.asarray(x)) for x in indices_tuple)


def triplets_of(labels, indices_tuple):
    """PML's ``convert_to_triplets`` (``triplets_per_anchor="all"``)."""
    if indices_tuple is None:
        return all_triplets(labels)
    if len(indices_tuple) == 3:
        return list(zip(*(np.asarray(x) for x in indices_tuple), strict=True))
    a1, p, a2, n = (np.asarray(x) for x in indices_tuple)
    return [(a1[k], p[k], n[l]) for k in range(len(a1)) for l in range(len(a2))
            if a1[k] == a2[l]]


def reduce(terms, reduction):
    terms = np.asarray(terms, dtype=np.float64)
    if reduction == "sum":
        return float(terms.sum())
    if reduction == "avg_nonzero":
        terms = terms[terms > 0]
    return float(terms.mean()) if terms.size else 0.0


def logsumexp(values):
    """Max-shifted; an empty list gives 0 (PML's masked log-sum-exp)."""
    if len(values) == 0:
        return 0.0
    v = np.asarray(values, dtype=np.float64)
    m = v.max()
    return float(m + np.log(np.exp(v - m).sum()))


def _distances(E, normalize_):
    E = np.asarray(E, dtype=np.float64)
    return distances(normalize(E) if normalize_ else E)


def contrastive(E, labels, pos_margin=0.0, neg_margin=1.0, normalize=True,
                reduction="avg_nonzero", indices_tuple=None):
    D = _distances(E, normalize)
    a1, p, a2, n = pairs_of(labels, indices_tuple)
    pos = [max(D[i, j] - pos_margin, 0.0) for i, j in zip(a1, p, strict=True)]
    neg = [max(neg_margin - D[i, j], 0.0) for i, j in zip(a2, n, strict=True)]
    return reduce(pos, reduction) + reduce(neg, reduction)


def triplet(E, labels, margin=0.05, normalize=True, reduction="avg_nonzero",
            indices_tuple=None):
    D = _distances(E, normalize)
    terms = [max((D[a, p] - D[a, n]) + margin, 0.0)
             for a, p, n in triplets_of(labels, indices_tuple)]
    return reduce(terms, reduction)


def lifted(E, labels, pos_margin=0.0, neg_margin=1.0, normalize=True,
           reduction="mean", indices_tuple=None):
    D = _distances(E, normalize)
    a1, p, a2, n = pairs_of(labels, indices_tuple)
    if len(a1) == 0 or len(a2) == 0:
        return 0.0
    terms = []
    for i, j in zip(a1, p, strict=True):
        negs = [neg_margin - D[u, v] for u, v in zip(a2, n, strict=True)
                if u == i or u == j]
        J = logsumexp(negs)
        terms.append(max(J + D[i, j] - pos_margin, 0.0) ** 2 / 2)
    return reduce(terms, reduction)


def generalized_lifted(E, labels, pos_margin=0.0, neg_margin=1.0, normalize=True,
                       reduction="mean", indices_tuple=None):
    D = _distances(E, normalize)
    B = D.shape[0]
    a1, p, a2, n = pairs_of(labels, indices_tuple)
    pos = set(zip(a1, p, strict=True))
    neg = set(zip(a2, n, strict=True))
    terms = []
    for i in range(B):
        pos_lse = logsumexp([D[i, j] - pos_margin for j in range(B) if (i, j) in pos])
        neg_lse = logsumexp([neg_margin - D[i, j] for j in range(B) if (i, j) in neg])
        terms.append(max(pos_lse + neg_lse, 0.0))
    return reduce(terms, reduction)
