"""The ``fastmetric`` command line.

``fastmetric demo`` fits MMC on a data set that ships with scikit-learn and
prints the learned metric and how much it improves K-means clustering.  The
command only parses arguments and prints; the work is the library's.
"""

import argparse
import sys
import time

import numpy as np

DATASETS = ("wine", "iris", "breast_cancer")


def _load(name, standardize=False):
    from sklearn import datasets

    loader = getattr(datasets, f"load_{name}")
    X, y = loader(return_X_y=True)
    if standardize:
        X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X, y


def _kmeans_ari(X, y, random_state):
    from sklearn.cluster import KMeans
    from sklearn.metrics import adjusted_rand_score

    k = np.unique(y).size
    labels = KMeans(n_clusters=k, n_init=10, random_state=random_state).fit_predict(X)
    return adjusted_rand_score(y, labels)


def demo(args):
    """Fit MMC on a built-in data set and report the metric and clustering quality.

    Parameters
    ----------
    args : argparse.Namespace
        ``dataset``, ``n_constraints``, ``shrinkage``, ``diagonal``, ``seed``,
        ``standardize``.  The features stay in their own units unless
        ``standardize``: learning the metric from the pairs then also learns
        how to weigh them, which is what Euclidean K-means cannot.

    Returns
    -------
    int
        Exit status.
    """
    from . import MMC_Supervised

    X, y = _load(args.dataset, args.standardize)
    model = MMC_Supervised(n_constraints=args.n_constraints, diagonal=args.diagonal,
                           shrinkage=args.shrinkage, random_state=args.seed)
    start = time.perf_counter()
    model.fit(X, y)
    elapsed = time.perf_counter() - start
    A = model.get_mahalanobis_matrix()
    kind = "diagonal" if args.diagonal else "full"
    units = "standardised" if args.standardize else "raw units"
    print(f"MMC ({kind}) on {args.dataset}: {X.shape[0]} points, {X.shape[1]} "
          f"features ({units}), {args.n_constraints} similar and "
          f"{args.n_constraints} dissimilar pairs")
    print(f"fitted in {elapsed:.3f} s, {model.n_iter_} iterations, "
          f"converged={model.converged_}")
    print("learned Mahalanobis matrix A (scaled to max |A| = 1):")
    # Local print options: the demo must not change NumPy's global state.
    with np.printoptions(precision=3, suppress=True, linewidth=120):
        print(A / np.abs(A).max())
    ari_euclid = _kmeans_ari(X, y, args.seed)
    ari_learned = _kmeans_ari(model.transform(X), y, args.seed)
    print(f"K-means adjusted Rand index: Euclidean {ari_euclid:.3f}, "
          f"learned metric {ari_learned:.3f}")
    return 0


def main(argv=None):
    """Entry point of the ``fastmetric`` command.

    Parameters
    ----------
    argv : list of str or None
        Arguments (default: ``sys.argv[1:]``).

    Returns
    -------
    int
        Exit status.
    """
    parser = argparse.ArgumentParser(prog="fastmetric",
                                     description="Fast distance metric learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("demo", help="fit MMC on a built-in data set")
    p.add_argument("--dataset", choices=DATASETS, default="wine")
    p.add_argument("--n-constraints", type=int, default=200)
    p.add_argument("--shrinkage", type=float, default=0.0,
                   help="blend the S-matrix with a multiple of the identity "
                        "(in the features' units: use with --standardize)")
    p.add_argument("--standardize", action="store_true",
                   help="scale every feature to unit variance first")
    p.add_argument("--diagonal", action="store_true")
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "demo":
        return demo(args)
    return 2  # pragma: no cover - argparse rejects unknown commands


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
