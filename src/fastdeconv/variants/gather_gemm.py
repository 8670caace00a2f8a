"""gather-gemm: per output phase, im2col of the undilated input and one GEMM per block of output channels
(``_kernels/gather_gemm.py``)."""

from __future__ import annotations

from .. import _geometry as geo
from .._kernels import gather_gemm as _gg
from .._kernels import scan as _scan
from .._model import (
    IM2COL_ELEMENT,
    IM2COL_ROW,
    LAUNCH_GEMM,
    LAUNCH_PARALLEL,
    PHASE_RELAYOUT_ELEMENT,
    PHASE_STORE_ELEMENT,
)
from . import Variant
from ._terms import gemm_applies, gemm_time, same, sizes


def cost(plan: geo.Plan, threads: int) -> float:
    """Weight relayout; per phase and output-channel block, im2col (C_in_g*T, cols), GEMM (cb, cols, cin_g*T),
    store."""
    s = sizes(plan)
    g = plan.groups
    table = _gg.phase_table(plan)
    rows, cb = _gg.chunks(plan)
    c_blocks = -(-s.cout_g // cb)
    total = s.w_elems * PHASE_RELAYOUT_ELEMENT
    n_chunks = 0
    for _phase, m_shape, counts, _taps, _bases in table:
        n_t = int(counts[0] * counts[1] * counts[2])
        m_rows = plan.batch * int(m_shape[0] * m_shape[1])
        m_w = int(m_shape[2])
        if n_t == 0 or m_rows * m_w == 0:
            continue
        width = m_rows * m_w
        phase_macs = s.cin_g * n_t * s.cout_g * width * g
        chunks = g * c_blocks * -(-m_rows // rows)
        total += g * gemm_time(2.0 * phase_macs / g, cb, min(rows, m_rows) * m_w, s.cin_g * n_t, 1, s.scale)
        total += c_blocks * plan.c_in * n_t * (width * IM2COL_ELEMENT + m_rows * IM2COL_ROW)
        total += plan.c_out * width * PHASE_STORE_ELEMENT + chunks * LAUNCH_GEMM
        n_chunks += chunks
    if _gg.bias_phases(plan):  # the bias stored first into every output (some phases have no tap)
        total += s.y_elems * PHASE_STORE_ELEMENT
    return total / max(1, min(threads, n_chunks)) + LAUNCH_PARALLEL


VARIANT = Variant(
    name="gather-gemm", form="gather", applies=gemm_applies, cost=cost, scratch=_gg.scratch_elements, pack=_gg.pack,
    run=_gg.gather_gemm, serial=lambda plan: False, reason="channel contraction on BLAS",
    kernels=lambda: (_gg.phase_weights, _gg.im2col, _gg.phase_store), exact=False, call_pack=same,
    pack_input=_gg.pack_input, check=_scan.finite_weights,
)
