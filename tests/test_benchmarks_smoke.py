"""The asv suites still run: every benchmark once, at its smallest parameters.

Speed is not checked here (benchmarks are for that); this only keeps the
suites from rotting as the code under them changes.
"""

import importlib.util
import inspect
import pathlib

import pytest

SUITE = pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "benchmarks"
MODULES = sorted(SUITE.glob("bench_*.py")) if SUITE.is_dir() else []
PREFIXES = ("time_", "peakmem_", "mem_", "track_")


def _load(path):
    spec = importlib.util.spec_from_file_location(f"_asv_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _cases():
    for path in MODULES:
        module = _load(path)
        for name, cls in inspect.getmembers(module, inspect.isclass):
            if cls.__module__ != module.__name__:
                continue
            if any(m.startswith(PREFIXES) for m in dir(cls)):
                yield pytest.param(cls, id=f"{path.stem}.{name}")


@pytest.mark.skipif(not MODULES, reason="benchmarks/ is not next to tests/")
@pytest.mark.parametrize("cls", list(_cases()))
def test_benchmark_runs_at_smallest_parameters(cls):
    params = getattr(cls, "params", ())
    if params and not isinstance(params[0], list | tuple):
        params = (params,)
    args = tuple(min(values) for values in params)
    bench = cls()
    if hasattr(bench, "setup"):
        bench.setup(*args)
    methods = [m for m in dir(bench) if m.startswith(PREFIXES)]
    assert methods
    for method in methods:
        result = getattr(bench, method)(*args)
        if method.startswith("track_"):
            assert result is not None and result == result  # a number, not NaN
