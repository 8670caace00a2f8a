"""The kernels of variant ``scatter-gemm-phases`` (``variants/scatter_gemm_phases.py``, which describes the
scheme): a task's outputs (one residue group of a 1-D wide-stride layer) set to the bias or activated, and a tap
block's GEMM result added to them."""

from __future__ import annotations

from .._compiled import njit
from ..config import NJIT_FLAGS
from .epilogue import activate


@njit(**NJIT_FLAGS)
def owned_fill(y, n, c, value, r0, r1, stride, start, ep_code, ep_params, activate_only):
    """Set the outputs of residues ``[r0, r1)`` (``(o + start) mod stride``) of ``y[n, c]`` to ``value``, or
    (``activate_only``) apply the activation ``ep_code`` to them (a code below 0: none)."""
    yr = y[n, c, 0, 0]
    o_len = yr.shape[0]
    a, b, one = ep_params[0], ep_params[1], ep_params[2]
    j = (start - r1) // stride  # the last block of these residues ending at or before output 0
    while True:
        lo = j * stride + r0 - start
        if lo >= o_len:
            break
        for o in range(max(0, lo), min(o_len, lo + r1 - r0)):
            if activate_only:
                yr[o] = activate(yr[o], ep_code, a, b, one)
            else:
                yr[o] = value
        j += 1


@njit(**NJIT_FLAGS)
def block_add(cols, y, n, c, first, stride):
    """Add ``cols[i, t]``, the term of input pixel ``i`` and the block's tap ``t``, to ``y[n, c]`` at
    ``i * stride + first + t`` (``first``: where the block's first tap sends pixel 0), within the output: one
    contiguous run per pixel."""
    yr = y[n, c, 0, 0]
    o_len = yr.shape[0]
    width = cols.shape[1]
    for i in range(cols.shape[0]):
        base = i * stride + first
        t_lo, t_hi = max(0, -base), min(width, o_len - base)
        for t in range(t_lo, t_hi):
            yr[base + t] += cols[i, t]
