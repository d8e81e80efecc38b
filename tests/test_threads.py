"""kernel_threads: BLAS held at one thread inside, restored after, from any thread."""

import threading

import numpy as np
import pytest
from threadpoolctl import threadpool_info

import fastmetric._threads as ft
from fastmetric import losses


def _blas_threads():
    return [lib["num_threads"] for lib in threadpool_info()
            if lib["user_api"] == "blas"]


def test_kernel_threads_limits_blas_in_a_second_python_thread():
    """threadpoolctl lets one Python thread at a time set OpenBLAS's count;
    kernel_threads must hand control back so another thread can limit it."""
    before = _blas_threads()
    E = np.random.default_rng(0).standard_normal((64, 8))
    losses.contrastive_loss(E, np.arange(64) % 4)  # main thread uses it first
    seen = []

    def worker():
        with ft.kernel_threads():
            seen.append(_blas_threads())
        seen.append(_blas_threads())

    thread = threading.Thread(target=worker)
    thread.start()
    thread.join()
    assert all(n == 1 for n in seen[0])
    assert seen[1] == before
    assert _blas_threads() == before


def test_kernel_threads_recovers_from_a_failure_on_entry(monkeypatch):
    def broken():
        raise OSError("no controller")

    monkeypatch.setattr(ft, "_blas_libraries", broken)
    with pytest.raises(OSError):
        with ft.kernel_threads():
            pass
    monkeypatch.undo()
    before = _blas_threads()
    with ft.kernel_threads():  # not mistaken for a nested entry
        assert all(n == 1 for n in _blas_threads())
    assert _blas_threads() == before


def test_small_work_runs_on_one_thread():
    # below pairs x d^2 = _SMALL_WORK one thread, from there the given count
    small = int(ft._SMALL_WORK // 25) - 1
    assert ft.threads_for_small(4, small, 5) == 1
    assert ft.threads_for_small(4, small + 2, 5) == 4
    assert ft.threads_for_small(1, 10**9, 100) == 1
    # many features, few pairs: one thread up to pairs x d = _SMALL_PAIR_FEATURES
    few = int(ft._SMALL_PAIR_FEATURES // 100)
    assert ft._SMALL_WORK < few * 100**2
    assert ft.threads_for_small(4, few, 100) == 1
    assert ft.threads_for_small(4, few + 1, 100) == 4


def test_small_exact_fit_uses_one_thread_and_a_large_one_more(monkeypatch):
    # solve_exact takes the one-thread rule for small fits; a large fit keeps
    # n_jobs (checked through the thread count its S-matrix pass receives)
    import fastmetric._mmc_exact as ex
    from fastmetric import MMC

    seen = []
    real = ex.s_matrix

    def spy(pairs, n_threads=1):
        seen.append(n_threads)
        return real(pairs, n_threads)

    monkeypatch.setattr(ex, "s_matrix", spy)
    rng = np.random.default_rng(0)
    for n_pairs, d in ((400, 5), (int(ft._SMALL_WORK // 25), 5)):
        X = rng.normal(size=(300, d))
        idx = rng.integers(0, 300, size=(n_pairs, 2))
        y = np.where(np.arange(n_pairs) % 2 == 0, 1, -1)
        MMC(preprocessor=X, n_jobs=2, max_iter=2).fit(idx, y)
    assert seen == [1, 2]
