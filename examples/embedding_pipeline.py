"""A nonlinear metric from a scikit-learn pipeline: basis functions + EmbeddingDML.

EmbeddingDML learns a linear map ``x -> L x``.  Putting a kernel
approximation in front of it (here ``Nystroem`` with an RBF kernel, i.e.
random basis functions ``phi(x)``) gives the nonlinear metric
``d(x, y) = ||L (phi(x) - phi(y))||``, learned with the same minibatch
losses.  On the handwritten digits, the script compares nearest-neighbour
retrieval and k-means clustering of held-out digits in the pixel space, in a
learned linear embedding and in the learned nonlinear one.

Run it with ``python examples/embedding_pipeline.py`` (a few seconds).
"""

import time

from sklearn.datasets import load_digits
from sklearn.kernel_approximation import Nystroem
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from fastmetric.embedding import EmbeddingDML
from fastmetric.evaluation import mean_average_precision_at_r, nmi_kmeans, recall_at_k


def scores(E, y):
    """Recall@1, MAP@R and k-means NMI of embedded held-out points."""
    return (recall_at_k(E, y, k=1), mean_average_precision_at_r(E, y),
            nmi_kmeans(E, y, random_state=0))


def main():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(
        X, y, test_size=0.5, stratify=y, random_state=0)

    models = {
        "linear EmbeddingDML": make_pipeline(
            StandardScaler(),
            EmbeddingDML(loss="triplet", n_components=32, max_iter=500,
                         random_state=0),
        ),
        "Nystroem + EmbeddingDML": make_pipeline(
            StandardScaler(),
            Nystroem(kernel="rbf", gamma=0.01, n_components=400, random_state=0),
            # Centre the basis functions: the losses L2-normalise embeddings,
            # which only makes sense around the data's mean.
            StandardScaler(),
            EmbeddingDML(loss="triplet", n_components=32, max_iter=500,
                         random_state=0),
        ),
    }

    print(f"digits: {X_train.shape[0]} training and {X_test.shape[0]} held-out "
          "images, scores on the held-out ones\n")
    print(f"{'embedding':<26}{'Recall@1':>9}{'MAP@R':>8}{'NMI':>8}{'fit (s)':>9}")
    r1, mapr, nmi = scores(X_test, y_test)
    print(f"{'pixels (before)':<26}{r1:>9.3f}{mapr:>8.3f}{nmi:>8.3f}{'':>9}")
    for name, model in models.items():
        start = time.perf_counter()
        model.fit(X_train, y_train)
        seconds = time.perf_counter() - start
        r1, mapr, nmi = scores(model.transform(X_test), y_test)
        print(f"{name:<26}{r1:>9.3f}{mapr:>8.3f}{nmi:>8.3f}{seconds:>9.2f}")


if __name__ == "__main__":
    main()
