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
