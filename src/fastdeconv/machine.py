"""This machine's profile: the speeds the cost model (``method="auto"``) decides from.

``auto`` estimates every variant's time from a few rates of this machine (the BLAS GEMM rate by side and thread
count, a core's streaming bandwidth, the cost of a call into compiled code, and the per-element rates of the
numba kernels) times fixed within-family ratios that are facts of the kernels. The rates are measured here, by
micro-benchmarks, once per CPU model, numba pool size and BLAS kernel, and stored in ``profile.json`` in the
cache directory (``$FASTDECONV_CACHE_DIR``, default ``~/.cache/fastdeconv``). Before anything is stored, the
first choice measures a coarse profile (the BLAS and copy rates alone, about a tenth of a second) and stores
it, so every later process decides identically; ``python -m fastdeconv machine --measure`` (and ``warmup``)
measure the full one. The same profile gives the same choice, hence the same bits, in every thread and process.

Functions
---------
profile
    The profile in use.
measure
    Measure (and store) this machine's profile.
set_profile
    Use given rates instead (a synthetic or another machine's profile); None returns to the stored one.

``$FASTDECONV_PROFILE`` may name a JSON file of rates (as :func:`profile` returns them) used instead of the
stored profile.
"""

from __future__ import annotations

from collections.abc import Mapping

from . import _model, _profile
from ._caches import clear_caches

__all__ = ["profile", "measure", "set_profile", "FAMILIES"]

FAMILIES = _model.FAMILIES


def profile() -> dict:
    """The profile the cost model runs on (loaded, or measured coarse and stored, on first use).

    Returns
    -------
    dict
        ``rates`` (``{family: value}``: ``sgemm_peak``/``dgemm_peak`` FLOP/s of one core, ``gemm_half`` the (M,
        N, K) side at which BLAS reaches half its rate, ``gemm_threads`` its parallel efficiency, ``bandwidth``
        bytes/s of one core copying, ``call`` seconds per compiled call, ``direct_rate`` multiply-adds/s of the
        direct kernels, and seconds per element of ``col2im_element``, ``im2col_element``, ``plane_tap``,
        ``winograd_element``), ``kind`` (``"coarse"`` or ``"full"``), ``source`` (``"stored"``, ``"measured"``,
        ``"set_profile"`` or ``"$FASTDECONV_PROFILE"``), ``key`` (CPU, pool size, BLAS kernel) and ``seconds``
        (the measurement's time).

    Examples
    --------
    >>> import fastdeconv as fd
    >>> sorted(fd.machine.profile()["rates"]) == sorted(fd.machine.FAMILIES)
    True
    """
    return _profile.current()


def measure(full: bool = True) -> dict:
    """Measure this machine's profile now and store it (replacing the stored one when ``full``).

    The full profile times the numba kernels (compiling them first when numba's cache is cold; that time is not
    counted) in up to three passes until two agree, one to two seconds; the coarse one only the BLAS and copy
    rates. This process switches to the new profile (choices made before are forgotten: prepared calls choose
    again; operators keep their variants).

    Parameters
    ----------
    full : bool, default True
        Time the numba kernels too.

    Returns
    -------
    dict
        ``{"kind", "rates", "seconds"}``: what is stored now.
    """
    if not isinstance(full, bool):
        raise TypeError(f"full must be a bool, got {full!r}")
    record = _profile.measure(full=full)
    _reset(lambda: _profile.set_profile(None))
    return record


def set_profile(rates: Mapping | None) -> None:
    """Make the cost model decide from ``rates`` in this process (None: the stored profile again).

    Parameters
    ----------
    rates : mapping or None
        ``{family: value}`` (see :func:`profile`; or :func:`profile`'s whole dict); families left out take the
        reference rates the model's ratios were fitted against. Every value is checked: a finite positive number
        within a factor 100 of the reference (``gemm_half``: three numbers; ``gemm_threads`` in (0, 2]).

    Raises
    ------
    TypeError
        ``rates`` is not a mapping, or a value is not a number.
    ValueError
        An unknown family, or a value outside its range.

    Notes
    -----
    Choices made before are forgotten (prepared calls choose again on their next call); an operator keeps the
    variants it runs. Wisdom recorded by tuning still applies where it keeps one of a layer's close candidates.
    """
    if rates is not None and not isinstance(rates, Mapping):
        raise TypeError(f"rates must be a mapping of family rates or None, got {type(rates).__name__}")
    _reset(lambda: _profile.set_profile(rates))


def _reset(change) -> None:
    from . import _calibrate

    change()  # (validates first: a bad profile changes nothing)
    _calibrate.forget()
    clear_caches()  # (prepared calls hold their decision)
