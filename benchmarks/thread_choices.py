"""A/B timings behind kernel choices of the MMC solvers: threads, the points route.

Each pair of settings runs alternately in one process on the data of
``compare_metric_learn.py`` (Gaussian classes, half similar pairs), best of
``--rounds`` calls each, so machine drift falls on both alike:

* the exact solver's compiled projected-gradient loop (d=5) on one thread
  and on the threads ``_COMPILED_FLOPS_PER_THREAD`` gives it;
* ``MMC(solver="ga-ip")`` (d=5, 1e4 pairs, 100 iterations) with the low-rank
  pair pass choosing its threads from flops alone and with the per-pair cost
  ``_FACTOR_PAIR_OVERHEAD``;
* exact and ga-ip MMC at d=50 with 1e4 and 1e5 pairs, the low-rank pass
  through the pairs only and with the points route where its cost model
  takes it (``_POINTS_MIN_FEATURES``).

Run from an environment where fastmetric is built::

    python benchmarks/thread_choices.py
"""

import argparse
import os
import sys
import time
import warnings

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from compare_metric_learn import _fitter, make_data  # noqa: E402


def alternate(fit, settings, rounds):
    """Best time of ``fit()`` under each setting (a callable applying it)."""
    best = dict.fromkeys(settings, float("inf"))
    for _ in range(rounds):
        for name, apply in settings.items():
            apply()
            t0 = time.perf_counter()
            fit()
            best[name] = min(best[name], time.perf_counter() - t0)
    return best


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args(argv)
    warnings.simplefilter("ignore")
    import fastmetric._mmc_common as common
    import fastmetric._mmc_exact as exact

    default_compiled = exact._COMPILED_FLOPS_PER_THREAD
    default_overhead = common._FACTOR_PAIR_OVERHEAD
    for n_pairs in (10_000, 100_000):
        X, pairs, labels = make_data({"kind": "gaussian", "d": 5, "n_pairs": n_pairs})
        fit = _fitter("fastmetric-solver", "exact", X, pairs, labels, None)
        fit()
        best = alternate(fit, {
            "one thread": lambda: setattr(exact, "_COMPILED_FLOPS_PER_THREAD",
                                          float("inf")),
            "default": lambda: setattr(exact, "_COMPILED_FLOPS_PER_THREAD",
                                       default_compiled),
        }, args.rounds)
        exact._COMPILED_FLOPS_PER_THREAD = default_compiled
        print(f"exact solver, compiled loop, d=5, {n_pairs:.0e} pairs: "
              f"one thread {best['one thread'] * 1e3:.2f} ms, default "
              f"{best['default'] * 1e3:.2f} ms "
              f"({best['one thread'] / best['default']:.2f}x)")
    X, pairs, labels = make_data({"kind": "gaussian", "d": 5, "n_pairs": 10_000})
    fit = _fitter("fastmetric", "ga-ip", X, pairs, labels, 100)
    fit()
    best = alternate(fit, {
        "flops only": lambda: setattr(common, "_FACTOR_PAIR_OVERHEAD", 0.0),
        "default": lambda: setattr(common, "_FACTOR_PAIR_OVERHEAD",
                                   default_overhead),
    }, args.rounds)
    common._FACTOR_PAIR_OVERHEAD = default_overhead
    print(f"ga-ip, d=5, 1e4 pairs, 100 iterations: flops only "
          f"{best['flops only'] * 1e3:.1f} ms, default "
          f"{best['default'] * 1e3:.1f} ms "
          f"({best['flops only'] / best['default']:.2f}x)")
    default_min = common._POINTS_MIN_FEATURES
    for solver, n_pairs, max_iter in (("exact", 10_000, None),
                                      ("exact", 100_000, None),
                                      ("ga-ip", 10_000, 30), ("ga-ip", 100_000, 3)):
        X, pairs, labels = make_data({"kind": "gaussian", "d": 50,
                                      "n_pairs": n_pairs})
        fit = _fitter("fastmetric", solver, X, pairs, labels, max_iter)
        fit()
        best = alternate(fit, {
            "pairs only": lambda: setattr(common, "_POINTS_MIN_FEATURES",
                                          float("inf")),
            "default": lambda: setattr(common, "_POINTS_MIN_FEATURES",
                                       default_min),
        }, args.rounds)
        common._POINTS_MIN_FEATURES = default_min
        print(f"{solver}, d=50, {n_pairs:.0e} pairs: pairs only "
              f"{best['pairs only'] * 1e3:.1f} ms, default "
              f"{best['default'] * 1e3:.1f} ms "
              f"({best['pairs only'] / best['default']:.2f}x)")


if __name__ == "__main__":
    main()
