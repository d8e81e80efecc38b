"""Thread counts: resolve ``n_jobs`` once and keep BLAS from oversubscribing.

The pair kernels spread blocks over OpenMP threads and call BLAS inside each
thread, so while they run BLAS must be single-threaded; and tiny calls should
not wake threads at all.  This module owns both rules; estimators call
:func:`resolve_n_jobs` and :func:`kernel_threads`, front-ends
:func:`threads_for`.
"""

import os
import threading
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


_BLAS_LIBRARIES = None


def _blas_libraries():
    """threadpoolctl's controllers of the BLAS libraries loaded at first use."""
    global _BLAS_LIBRARIES
    if _BLAS_LIBRARIES is None:
        _BLAS_LIBRARIES = [lib for lib in _controller().lib_controllers
                           if lib.user_api == "blas"]
    return _BLAS_LIBRARIES


_DEPTH = threading.local()

# Below this much work per extra thread, waking OpenMP threads costs more than
# it saves (and on a loaded machine a barrier can wait a whole scheduler slice).
_FLOPS_PER_THREAD = 1e7


def threads_for(n_threads, flops, flops_per_thread=None):
    """How many kernel threads a call with ``flops`` of work should use.

    Parameters
    ----------
    n_threads : int
        The resolved ``n_jobs``.
    flops : float
        Estimated floating-point operations of the call.
    flops_per_thread : float, optional
        A lower work threshold for kernels measured to pay for a thread
        sooner (never above the module's ``_FLOPS_PER_THREAD``, so lowering
        that forces threads everywhere).

    Returns
    -------
    int
        Between 1 and ``n_threads``.
    """
    per_thread = _FLOPS_PER_THREAD
    if flops_per_thread is not None:
        per_thread = min(per_thread, flops_per_thread)
    if flops < per_thread:
        return 1
    return int(max(1, min(n_threads, flops // max(per_thread, 1.0))))


# A fit or a lone pass with fewer than this many pairs x d^2 runs on one
# thread: its few passes of tens of microseconds each cannot repay waking a
# second thread, which after the machine has idled costs about 1 ms a
# parallel region, and now and then 10 ms on these VMs (measured: exact MMC,
# d=5 with 1e4 pairs and a 0.25 s pause before each fit, 10 fits of 3.1-3.7
# ms on one thread against 3.4-13.9 ms on two; d=8 with 1e4 pairs 4.4
# against 5.3 ms, best of 8).
_SMALL_WORK = 1e6
# ... and so does one with at most this many pairs x d: with many features
# but few pairs a fit's time goes to d x d dense steps (eigenproblems,
# subspace bases) that one thread runs anyway, between passes too short to
# share (measured, 0.25 s pause before each fit, median of 8 on one against
# two threads: d=50 with 1e3 pairs 10.1-10.7 against 11.4-11.5 ms, d=100
# with 1e3 pairs 14.5-14.7 against 15.4-15.9 ms; d=20 with 1e3 pairs a tie;
# d=20 and d=50 with 1e4 pairs, above the line, gain 8% from two).
_SMALL_PAIR_FEATURES = 1e5


def threads_for_small(n_threads, n_pairs, n_features):
    """``n_threads``, or 1 for work too small to wake a second thread for.

    Parameters
    ----------
    n_threads : int
        The resolved ``n_jobs``.
    n_pairs, n_features : int
        Size of the fit or pass: ``n_pairs * n_features**2`` below
        ``_SMALL_WORK``, or ``n_pairs * n_features`` at most
        ``_SMALL_PAIR_FEATURES``, runs on one thread.

    Returns
    -------
    int
    """
    if (float(n_pairs) * n_features * n_features < _SMALL_WORK
            or float(n_pairs) * n_features <= _SMALL_PAIR_FEATURES):
        return 1
    return n_threads


@contextmanager
def kernel_threads(num_threads=1):
    """Context in which the compiled kernels run: BLAS limited to one thread.

    The pair kernels call BLAS on small blocks from inside their own OpenMP
    threads; a multi-threaded BLAS there oversubscribes the cores and, on small
    blocks, costs far more than it gains.  Estimators enter this once around a
    whole fit; nested entries (the kernel front-ends) are free.

    Parameters
    ----------
    num_threads : int
        Kept for symmetry with the kernels' ``num_threads``; the limit applies
        whatever its value.
    """
    depth = getattr(_DEPTH, "value", 0)
    if depth:
        _DEPTH.value = depth + 1
        try:
            yield
        finally:
            _DEPTH.value = depth
        return
    # set the BLAS libraries' thread counts directly: the same calls
    # threadpoolctl's ``limit`` makes, without its ~40 us of bookkeeping per
    # entry (loss calls on small batches take 0.1-0.3 ms in all)
    libs = []
    saved = []
    try:
        _DEPTH.value = 1
        libs = _blas_libraries()
        saved = [lib.num_threads for lib in libs]
        for lib in libs:
            lib.set_num_threads(1)
        yield
    finally:
        _DEPTH.value = 0
        try:
            for lib, n in zip(libs, saved, strict=False):
                lib.set_num_threads(n)
        finally:
            _release_blas_control(libs)


def _release_blas_control(libs):
    """Let other Python threads set OpenBLAS's (process-wide) thread count again.

    threadpoolctl >= 3.6 lets only one thread at a time change it: the first
    to call ``set_num_threads``, until it gives control back (``limit()`` does
    so on exit).  Without this, the first thread to run a kernel would keep
    control for good and ``kernel_threads`` would do nothing in any other
    thread (BLAS oversubscribed inside the kernels' threads).
    """
    for cls in {type(lib) for lib in libs}:
        clear = getattr(cls, "clear_controlling_thread", None)
        if clear is not None:
            clear()  # only releases if this thread holds control


@contextmanager
def numba_threads(num_threads):
    """Run Numba ``parallel=True`` kernels with ``num_threads`` threads.

    Numba's setting is per calling thread; it is restored on exit.  Asking for
    more threads than Numba's pool holds gives the whole pool.

    Parameters
    ----------
    num_threads : int
    """
    import numba

    old = numba.get_num_threads()
    numba.set_num_threads(max(1, min(int(num_threads), numba.config.NUMBA_NUM_THREADS)))
    try:
        yield
    finally:
        numba.set_num_threads(old)
