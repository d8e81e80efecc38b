"""Thread counts: resolve ``n_jobs`` once and keep BLAS from oversubscribing.

The pair kernels spread blocks over OpenMP threads and call BLAS inside each
thread, so while they run BLAS must be single-threaded.  This module owns that
rule; estimators only call :func:`resolve_n_jobs` and :func:`kernel_threads`.
"""

import os
from contextlib import contextmanager

_CONTROLLER = None


def _cpu_count():
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def resolve_n_jobs(n_jobs):
    """Turn an ``n_jobs`` argument into a positive thread count.

    Parameters
    ----------
    n_jobs : int or None
        ``None`` or ``-1`` means all cores; ``-k`` means all but ``k - 1``;
        a positive value is used as given.  ``0`` is an error.

    Returns
    -------
    int
        The number of threads, at least 1.
    """
    if n_jobs is None:
        return _cpu_count()
    if isinstance(n_jobs, bool) or not isinstance(n_jobs, int | _np_integer()):
        raise TypeError(f"n_jobs must be an int or None, got {type(n_jobs).__name__}")
    n_jobs = int(n_jobs)
    if n_jobs == 0:
        raise ValueError("n_jobs == 0 is not allowed: use None, -1 or a positive int")
    if n_jobs < 0:
        return max(1, _cpu_count() + 1 + n_jobs)
    return n_jobs


def _np_integer():
    import numpy as np

    return np.integer


def _controller():
    global _CONTROLLER
    if _CONTROLLER is None:
        from threadpoolctl import ThreadpoolController

        _CONTROLLER = ThreadpoolController()
    return _CONTROLLER


@contextmanager
def kernel_threads(num_threads):
    """Context in which the compiled kernels may use ``num_threads`` threads.

    With more than one kernel thread, BLAS is limited to one thread so that
    the kernels' per-thread BLAS calls do not oversubscribe the cores.

    Parameters
    ----------
    num_threads : int
    """
    if num_threads <= 1:
        yield
        return
    with _controller().limit(limits=1, user_api="blas"):
        yield
