"""One registry of caches, one clear: ``fastdeconv.clear_caches`` empties every cache the package keeps."""

import importlib
import pkgutil
import threading

import numpy as np
import pytest

import fastdeconv as fd
from fastdeconv import _caches

# process constants (the machine's memory size, its CPU's fields): never stale, not derived from a call
CONSTANTS = {"fastdeconv._geometry._physical_memory", "fastdeconv._store.cpu_info"}


def _modules():
    import fastdeconv

    for info in pkgutil.walk_packages(fastdeconv.__path__, "fastdeconv."):
        if ".tools" in info.name or info.name.endswith("__main__"):
            continue
        yield importlib.import_module(info.name)


def _caches_in_package():
    """Every memoised function and dict-like cache object at module level, by qualified name."""
    found = {}
    for module in _modules():
        for name, value in vars(module).items():
            if isinstance(value, _caches.Table):
                found[f"{module.__name__}.{name}"] = lambda v=value: len(v)
            elif hasattr(value, "cache_info") and value.__module__ == module.__name__:  # (not an imported one)
                found[f"{module.__name__}.{name}"] = lambda v=value: v.cache_info().currsize
    return found


def test_clear_caches_empties_every_cache():
    rng = np.random.default_rng(0)
    x, w = rng.standard_normal((1, 4, 5, 5)), rng.standard_normal((4, 3, 3, 3))
    for method in ["auto", *fd.variants.names()]:
        for data_format in ("channels_first", "channels_last"):
            xx = np.moveaxis(x, 1, -1).copy() if data_format == "channels_last" else x
            try:
                fd.conv_transpose(xx, w, stride=2, padding=1, method=method, data_format=data_format)
            except ValueError:
                pass  # (a pinned variant that does not apply)
    caches = _caches_in_package()
    assert "fastdeconv._api._FAST" in caches and "fastdeconv._cost._choose" in caches
    filled = {name for name, size in caches.items() if size()}
    assert len(filled) > 10, filled
    fd.clear_caches()
    left = {name for name, size in caches.items() if size() and name not in CONSTANTS}
    assert not left, f"caches clear_caches does not empty: {sorted(left)}"


def test_calibration_clear_empties_the_caches():
    x, w = np.ones((1, 2, 3, 3)), np.ones((2, 2, 3, 3))
    fd.conv_transpose(x, w, stride=2)
    from fastdeconv import _api

    assert len(_api._FAST)
    fd.calibration.clear()
    assert not len(_api._FAST)


def test_table_is_bounded_and_keeps_the_first_entry():
    table = _caches.Table(4)
    assert table.put("a", 1) == 1 and table.put("a", 2) == 1  # (another thread's entry, put first, stays)
    for i in range(10):
        table.put(i, i)
    assert len(table) == 4 and list(table) == [6, 7, 8, 9]  # the oldest entries dropped
    _caches.clear_caches()
    assert not table


def test_table_under_concurrent_puts():
    table = _caches.Table(64)
    errors = []

    def work(seed: int) -> None:
        try:
            for i in range(2000):
                key = (seed * 7 + i) % 200
                assert table.put(key, key) == key
                assert len(table) <= 64
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(s,)) for s in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(table) <= 64


@pytest.mark.parametrize("maxsize", [0, -1, 1.5, None])
def test_bad_sizes_are_refused(maxsize):
    with pytest.raises(ValueError, match="maxsize"):
        _caches.memo(maxsize)
    with pytest.raises(ValueError, match="maxsize"):
        _caches.Table(maxsize)
