"""asv benchmarks of the deep-metric losses, forward plus backward.

Each benchmark times one ``(loss, grad)`` call of a :mod:`fastmetric.losses`
function (or :func:`fastmetric.magnet.magnet_loss`) with its defaults on a
seeded float32 batch of ``B`` embeddings of dimension ``m`` in 32 balanced,
shuffled classes -- the grid of ``benchmarks/compare_pml.py``.  ``setup``
builds the batch and makes one warm-up call per loss so that Numba's
compilation (or cache loading) stays out of the timings.  ``peakmem_*``
records the process's peak memory for the two losses whose peers need
``B^3`` or positive-pairs x negative-pairs memory; ``track_*`` records the
loss values so a change of semantics shows up next to a change of speed.
"""

import numpy as np

from fastmetric import losses

BATCH_SIZES = [128, 512, 2048]
DIMS = [64, 128]
N_CLASSES = 32
MAGNET_D = 16  # examples per cluster in a magnet batch


def make_batch(B, m, seed=0, dtype=np.float32):
    """Embeddings near 32 class centres with balanced, shuffled labels."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(B) % N_CLASSES).astype(np.int64)
    centres = rng.normal(size=(N_CLASSES, m)) / np.sqrt(m) * 0.5
    E = centres[labels] + rng.normal(size=(B, m)) / np.sqrt(m)
    return np.ascontiguousarray(E, dtype=dtype), labels


class PairLosses:
    """Contrastive, all-triplets, lifted and generalized lifted losses."""

    params = (BATCH_SIZES, DIMS)
    param_names = ["B", "m"]
    timeout = 300

    def setup(self, B, m):
        self.E, self.labels = make_batch(B, m)
        for fn in (losses.contrastive_loss, losses.triplet_margin_loss,
                   losses.lifted_structure_loss,
                   losses.generalized_lifted_structure_loss):
            fn(self.E[:64], self.labels[:64])
            fn(self.E, self.labels)

    def time_contrastive(self, B, m):
        losses.contrastive_loss(self.E, self.labels)

    def time_triplet_all(self, B, m):
        losses.triplet_margin_loss(self.E, self.labels)

    def time_lifted(self, B, m):
        losses.lifted_structure_loss(self.E, self.labels)

    def time_generalized_lifted(self, B, m):
        losses.generalized_lifted_structure_loss(self.E, self.labels)

    def peakmem_triplet_all(self, B, m):
        losses.triplet_margin_loss(self.E, self.labels)

    def peakmem_lifted(self, B, m):
        losses.lifted_structure_loss(self.E, self.labels)

    def track_triplet_loss(self, B, m):
        return losses.triplet_margin_loss(self.E, self.labels)[0]

    track_triplet_loss.unit = "loss"

    def track_lifted_loss(self, B, m):
        return losses.lifted_structure_loss(self.E, self.labels)[0]

    track_lifted_loss.unit = "loss"


class MagnetLoss:
    """The magnet loss on a batch of ``B / 16`` clusters of 16 examples."""

    params = (BATCH_SIZES, DIMS)
    param_names = ["B", "m"]

    def setup(self, B, m):
        from fastmetric.magnet import magnet_loss

        self.magnet_loss = magnet_loss
        rng = np.random.default_rng(0)
        n_clusters = B // MAGNET_D
        self.clusters = np.repeat(np.arange(n_clusters), MAGNET_D).astype(np.int64)
        self.labels = self.clusters % N_CLASSES
        E = rng.normal(size=(n_clusters, m))[self.clusters] * 1.5
        self.E = (E + rng.normal(size=(B, m))).astype(np.float32)
        self.magnet_loss(self.E, self.labels, self.clusters)

    def time_magnet(self, B, m):
        self.magnet_loss(self.E, self.labels, self.clusters)
