"""Build similarity side information (pairs) from class labels.

Everything is index-based and vectorised: pairs come back as arrays of row
indices into the labelled data, ready for the pair kernels, and no formed
``(n_pairs, 2, n_features)`` array is ever built here.
"""

import warnings

import numpy as np
from sklearn.utils import check_random_state

__all__ = ["Constraints", "wrap_pairs"]


class Constraints:
    """Similar and dissimilar pairs drawn from (partial) class labels.

    Parameters
    ----------
    partial_labels : array-like of int, shape (n_samples,)
        Class labels; negative values mark unlabelled points, which never enter
        a pair.

    Attributes
    ----------
    partial_labels : ndarray of int, shape (n_samples,)

    Examples
    --------
    >>> import numpy as np
    >>> from fastmetric import Constraints
    >>> a, b, c, d = Constraints([0, 0, 1, 1, 1]).positive_negative_pairs(
    ...     4, random_state=0)
    >>> bool(np.all(np.array([0, 0, 1, 1, 1])[a] == np.array([0, 0, 1, 1, 1])[b]))
    True
    """

    def __init__(self, partial_labels):
        labels = np.asarray(partial_labels)
        if labels.ndim != 1:
            raise ValueError(f"partial_labels must be 1D, got shape {labels.shape}")
        if labels.dtype.kind not in "biu":
            if labels.dtype.kind == "f" and np.all(labels == np.round(labels)):
                labels = labels.astype(np.int64)
            else:
                # Arbitrary hashable labels: encode them as integers.
                _, labels = np.unique(labels, return_inverse=True)
        self.partial_labels = labels.astype(np.int64)

    def _groups(self):
        known = np.flatnonzero(self.partial_labels >= 0)
        labels = self.partial_labels[known]
        order = np.argsort(labels, kind="stable")
        sorted_idx = known[order]
        sorted_lab = labels[order]
        uniq, start, size = np.unique(sorted_lab, return_index=True, return_counts=True)
        return sorted_idx, sorted_lab, uniq, start, size

    def _draw(self, n, same_label, rng):
        """Draw ``n`` ordered pairs (positions in the class-sorted order)."""
        sorted_idx, sorted_lab, uniq, start, size = self._groups()
        n_known = sorted_idx.size
        cls = np.searchsorted(uniq, sorted_lab)
        if same_label:
            eligible = np.flatnonzero(size[cls] >= 2)
        else:
            eligible = np.flatnonzero(size[cls] < n_known)
        if eligible.size == 0 or n == 0:
            return np.empty((0, 2), dtype=np.intp)
        a = eligible[rng.integers(0, eligible.size, size=n)]
        c = cls[a]
        if same_label:
            r = rng.integers(0, size[c] - 1)
            pos_in_class = a - start[c]
            r = r + (r >= pos_in_class)
            b = start[c] + r
        else:
            r = rng.integers(0, n_known - size[c])
            b = np.where(r < start[c], r, r + size[c])
        return np.stack([sorted_idx[a], sorted_idx[b]], axis=1)

    def _all_candidates(self, same_label):
        """Every eligible ordered pair (class-sorted positions) and its probability.

        The probability is the one :meth:`_draw` gives the pair: an anchor
        uniform over the eligible points, then a partner uniform over its
        candidates.  Only called when there are at most about twice as many
        candidates as pairs requested, so memory stays O(n_constraints).
        """
        _, sorted_lab, uniq, start, size = self._groups()
        n_known = sorted_lab.size
        cls = np.searchsorted(uniq, sorted_lab)
        if same_label:
            n_partners = size[cls] - 1
        else:
            n_partners = n_known - size[cls]
        anchors = np.flatnonzero(n_partners > 0)
        a = np.repeat(anchors, n_partners[anchors])
        # Partner rank among the anchor's candidates, 0 .. n_partners - 1.
        first = np.cumsum(n_partners[anchors]) - n_partners[anchors]
        r = np.arange(a.size) - np.repeat(first, n_partners[anchors])
        c = cls[a]
        if same_label:
            b = start[c] + r + (r >= a - start[c])
        else:
            b = np.where(r < start[c], r, r + size[c])
        prob = 1.0 / (anchors.size * n_partners[a])
        return np.stack([a, b], axis=1), prob / prob.sum()

    def _pairs(self, n_constraints, same_label, rng, max_rounds=64):
        sorted_idx, sorted_lab, uniq, start, size = self._groups()
        if same_label:
            n_available = int(np.sum(size * (size - 1)))
        else:
            n_available = int(sorted_lab.size**2 - np.sum(size**2))
        if 2 * n_constraints >= n_available:
            # Few candidates: rejection sampling would keep redrawing pairs it
            # already has (and could stop short), so enumerate them all and
            # draw without replacement, weighting each pair as _draw would.
            cand, prob = self._all_candidates(same_label)
            take = min(n_constraints, n_available)
            pick = rng.choice(n_available, size=take, replace=False, p=prob) \
                if take else np.empty(0, dtype=np.intp)
            found = sorted_idx[cand[pick]].reshape(-1, 2)
        else:
            # At least half of all candidates are still unused in every round,
            # so each round keeps at least half its draws on average and
            # max_rounds is never reached in practice.
            found = np.empty((0, 2), dtype=np.intp)
            for _ in range(max_rounds):
                need = n_constraints - found.shape[0]
                if need <= 0:
                    break
                drawn = self._draw(need, same_label, rng)
                allp = np.concatenate([found, drawn])
                _, first = np.unique(allp, axis=0, return_index=True)
                found = allp[np.sort(first)]
            found = found[:n_constraints]
        if found.shape[0] < n_constraints:
            kind = "positive" if same_label else "negative"
            warnings.warn(
                f"Only generated {found.shape[0]} {kind} constraints "
                f"(requested {n_constraints})",
                stacklevel=3,
            )
        return found[:, 0].copy(), found[:, 1].copy()

    def positive_negative_pairs(self, n_constraints, same_length=False,
                                random_state=None, num_constraints="deprecated"):
        """Draw similar (same label) and dissimilar (different label) pairs.

        Pairs are distinct ordered pairs of distinct points, drawn uniformly over
        anchors and then over partners.  When fewer distinct pairs exist than
        requested, the ones found are returned with a warning.

        Parameters
        ----------
        n_constraints : int
            Number of pairs of each kind.
        same_length : bool, default=False
            Truncate so both kinds have the same number of pairs.
        random_state : None, int or RandomState or Generator
        num_constraints : deprecated alias of ``n_constraints``.

        Returns
        -------
        a, b : ndarray of intp
            Indices of the similar pairs ``(a[k], b[k])``.
        c, d : ndarray of intp
            Indices of the dissimilar pairs ``(c[k], d[k])``.
        """
        if num_constraints != "deprecated":
            warnings.warn('"num_constraints" has been renamed to "n_constraints"',
                          FutureWarning, stacklevel=2)
            n_constraints = num_constraints
        if (isinstance(n_constraints, bool)
                or not isinstance(n_constraints, int | np.integer)
                or n_constraints < 1):
            raise ValueError(f"n_constraints must be a positive int, got "
                             f"{n_constraints!r}")
        rng = _generator(random_state)
        a, b = self._pairs(int(n_constraints), True, rng)
        c, d = self._pairs(int(n_constraints), False, rng)
        if same_length and a.size != c.size:
            n = min(a.size, c.size)
            return a[:n], b[:n], c[:n], d[:n]
        return a, b, c, d

    def all_pairs(self):
        """Every unordered pair of labelled points: similar if same label, else not.

        Returns
        -------
        a, b, c, d : ndarray of intp
            Similar pairs ``(a, b)`` and dissimilar pairs ``(c, d)`` ("D is all
            pairs not in S"), each with ``a < b`` and ``c < d``.
        """
        known = np.flatnonzero(self.partial_labels >= 0)
        iu, ju = np.triu_indices(known.size, k=1)
        left, right = known[iu], known[ju]
        same = self.partial_labels[left] == self.partial_labels[right]
        return left[same], right[same], left[~same], right[~same]


def _generator(random_state):
    """A NumPy Generator from None, an int, a RandomState or a Generator."""
    if isinstance(random_state, np.random.Generator):
        return random_state
    rs = check_random_state(random_state)
    return np.random.default_rng(rs.randint(np.iinfo(np.int32).max))


def wrap_pairs(X, constraints):
    """Formed pairs and labels from ``(a, b, c, d)`` index arrays.

    Parameters
    ----------
    X : ndarray of shape (n_samples, n_features)
    constraints : tuple of 4 arrays
        Similar pairs ``(a, b)`` and dissimilar pairs ``(c, d)``.

    Returns
    -------
    pairs : ndarray of shape (n_pairs, 2, n_features)
    y : ndarray of shape (n_pairs,)
        +1 for the similar pairs (first), -1 for the dissimilar ones.
    """
    a, b, c, d = (np.asarray(v) for v in constraints)
    idx = np.vstack([np.column_stack([a, b]), np.column_stack([c, d])])
    y = np.concatenate([np.ones(a.size, dtype=int), -np.ones(c.size, dtype=int)])
    return np.asarray(X)[idx], y
