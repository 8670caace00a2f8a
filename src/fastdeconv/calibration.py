"""Inspect, re-measure, clear, export and import fastdeconv's wisdom: the measured choices (like FFTW's).

``method="auto"`` decides from the cost model on this machine's profile (:mod:`fastdeconv.machine`); nothing
is timed unless asked. Measuring is a request, FFTW's MEASURE: an operator made with
``ConvTranspose(..., tune=True)``, ``python -m fastdeconv tune --workload NAME`` or :func:`remeasure` time the
variants the model rates within 1.6x of each other, in interleaved rounds, and keep the fastest only when the
measurement is consistent (it wins most rounds and beats the model's pick by 5%; anything less keeps the
model's pick). The verdict is recorded in ``calibration.json`` in the cache directory
(``$FASTDECONV_CACHE_DIR``, default ``~/.cache/fastdeconv``), keyed by the geometry, dtype, method, numba's
thread pool size and the CPU; every process follows recorded (or imported) wisdom, and nothing else. Within a
process a decision never changes once made, so results stay bitwise reproducible.

Functions
---------
show
    The recorded decisions.
remeasure
    Time the candidates of one layer again and replace its record.
clear
    Forget every decision (this process and the cache file).
export / import_
    Copy the records to a file, merge a file's records into the cache.

The same from the command line: ``python -m fastdeconv calibrate [--show | --clear | --export FILE |
--import FILE]``.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from . import _calibrate, _store
from . import _geometry as geo
from ._caches import clear_caches

__all__ = ["show", "remeasure", "clear", "export", "import_", "cache_file"]


def cache_file() -> Path:
    """The calibration file: ``calibration.json`` in ``$FASTDECONV_CACHE_DIR`` (default ``~/.cache/fastdeconv``).

    Returns
    -------
    pathlib.Path
    """
    return _calibrate.cache_file()


def show() -> dict[str, dict]:
    """The recorded decisions: the cache file's valid records, with this process's measured ones.

    Returns
    -------
    dict
        ``{key: record}``. A key is ``"<CPU> xN|threads=T|<dtype>|<method>|n=..|cin=..|cout=..|g=..|<axes>"``
        (per spatial axis ``size_in,kernel,stride,dilation,start,size_out``). A record is ``{"variant": kept,
        "seconds": {variant: median seconds}, "wins": {variant: rounds won}, "rounds": n, "model": the cost
        model's pick}``; one measured in this process without every candidate (some not compiled yet) is not
        on disk and lists them under ``"skipped"``.

    Examples
    --------
    >>> import fastdeconv.calibration as cal
    >>> isinstance(cal.show(), dict)
    True
    """
    records = {k: r for k, (_, r) in _calibrate.decisions().items() if r is not None}
    records.update(_store.read_records(cache_file(), _calibrate.valid_record))
    return {k: json.loads(json.dumps(r)) for k, r in sorted(records.items())}  # (copies)


def clear() -> None:
    """Forget every decision: this process's and the cache file's (other processes keep theirs until they exit).

    Later calls decide again, from the cost model (until something is tuned again).
    """
    _calibrate.forget()
    clear_caches()  # (prepared calls hold their decision)
    path = cache_file()
    if os.path.lexists(path):
        _store.remove_records(path, _calibrate.valid_record)


def remeasure(x_shape: Sequence[int], w_shape: Sequence[int], *, stride=1, padding=0, output_padding=0,
              groups: int = 1, dilation=1, output_size: Sequence[int] | None = None, method: str = "auto",
              dtype=np.float32) -> dict | None:
    """Time the candidates of one layer again (on random data) and replace its record in the cache file.

    Every candidate runs once before the timing (compiling it if needed: this is an explicit request). The new
    record decides processes started afterwards; a process that already decided these shapes keeps its
    decision (results never change within a process), except this one when it had not decided them yet.

    Parameters
    ----------
    x_shape, w_shape : sequence of int
        Input (N, C_in, *spatial) or (C_in, *spatial) and weight (C_in, C_out // groups, *kernel) shapes.
    stride, padding, output_padding, groups, dilation, output_size, method
        The geometry and form, exactly as for :func:`fastdeconv.conv_transpose`.
    dtype : numpy dtype, default float32
        float32, or anything else meaning float64.

    Returns
    -------
    dict or None
        The new record (see :func:`show`), or None when the layer has nothing to measure (the cost model is
        sure, the layer is tiny, or calibration is off with ``FASTDECONV_CALIBRATE=0``).

    Raises
    ------
    TypeError, ValueError
        For shapes or geometry ``conv_transpose`` would refuse, with the same messages.
    """
    from . import _api, _cost

    x_shape = _cost.check_shape(x_shape, "x_shape")
    w_shape = _cost.check_shape(w_shape, "w_shape")
    try:
        requested = np.dtype(dtype)
    except TypeError:
        raise TypeError(f"dtype must be a NumPy dtype (e.g. numpy.float32), got {dtype!r}") from None
    dt = np.dtype(np.float32) if requested == np.float32 else np.dtype(np.float64)
    request = geo.make_request(method)
    plan = geo.make_plan(x_shape, w_shape, dt, dt, stride, padding, output_padding, groups, dilation, output_size)
    names = _calibrate.candidates(plan, _cost.choose(plan, request).estimates, request)
    if len(names) < 2:
        return None
    geo.check_memory(x_shape, dt, "x")
    geo.check_memory(plan.out_shape, dt, "the output")
    rng = np.random.default_rng(0)
    prepared = _api.Prepared(plan, request)
    x5 = rng.standard_normal(prepared.x5_shape).astype(dt)
    w5 = rng.standard_normal(prepared.w5_shape).astype(dt)
    y5 = np.empty(prepared.y5_shape, dt)
    probes = {}
    for name in names:  # compile (or load) every candidate before timing any
        probes[name] = prepared.probe(name)
        probes[name].execute(x5, w5, prepared.zero_bias, y5)
    record = _calibrate.measure(plan, names, lambda name: probes[name].execute(x5, w5, prepared.zero_bias, y5))
    _calibrate.store(_calibrate.key(plan, request), record, replace=True)
    return record


def export(path: str | os.PathLike) -> int:
    """Write the recorded decisions (:func:`show`'s, without this process's partial ones) to a JSON file.

    At most what :func:`import_` reads back: when the records would exceed a calibration file's size (about
    2,000 of them), the oldest are left out, with a warning.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (replaced atomically): a regular file, a symbolic link to one, or a new name.

    Returns
    -------
    int
        The number of records written.

    Raises
    ------
    TypeError
        ``path`` is not a path.
    ValueError
        ``path`` is a directory, a FIFO, a device, a socket, a symbolic link to one of them, or a dangling
        symbolic link (nothing is written).
    OSError
        The file cannot be written.
    """
    path = _path(path)
    problem = _store.output_problem(path)
    if problem is not None:
        raise ValueError(f"path {str(path)!r} {problem}")
    disk = _store.read_records(cache_file(), _calibrate.valid_record)  # oldest first
    mine = {k: r for k, (_, r) in _calibrate.decisions().items()
            if r is not None and "skipped" not in r and k not in disk}  # decided here, not on disk: newer
    records, dropped = _store.write_bounded(path, json.loads(json.dumps({**disk, **mine})))
    if dropped:
        warnings.warn(f"fastdeconv: exported the {len(records)} newest records to {path}; the {dropped} oldest do "
                      "not fit a calibration file", RuntimeWarning, stacklevel=2)
    return len(records)


def import_(path: str | os.PathLike) -> int:
    """Merge the records of a file written by :func:`export` into the cache file.

    The file is read as the cache is (a regular file of at most 1 MiB, every record checked: known variant
    names, finite positive times); invalid records are skipped with one warning. A key already recorded keeps
    its record (the first recorded decision wins); the cache keeps its newest records when they would not all
    fit.

    Parameters
    ----------
    path : str or os.PathLike
        The file to read.

    Returns
    -------
    int
        The number of records added to the cache.

    Raises
    ------
    TypeError
        ``path`` is not a path.
    FileNotFoundError
        ``path`` does not exist.
    ValueError
        ``path`` is not a calibration file (not a regular file, too large, not a JSON object of records).
    """
    path = _path(path)
    records, problem = _store.read_file(path, _calibrate.valid_record)
    if problem is not None and not records:
        raise ValueError(f"path {str(path)!r} is not a calibration file: {problem}")
    if problem is not None:
        warnings.warn(f"fastdeconv: skipped {problem} of {path}", RuntimeWarning, stacklevel=2)
    before = _store.read_records(cache_file(), _calibrate.valid_record)
    after = _store.merge_records(cache_file(), records, _calibrate.valid_record, keep_existing=True)
    return len(set(after) - set(before))


def _path(path) -> Path:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    return Path(path)
