"""How the output is cut into tasks for the parallel kernels (pure Python, no numba)."""

from __future__ import annotations

import numba
import numpy as np

from . import _geometry as geo
from ._kernels._blocks import CHANNEL_BLOCK

# Shortest piece of an output row given to one task (shorter pieces cost more to schedule than they save).
_MIN_ROW_SEGMENT = 2048


def tile_for(plan: geo.Plan) -> np.ndarray:
    """Output tile per task: whole planes when there are enough of them, else slabs, rows, row segments.

    Tiles only split the work; every output element sums its terms in the same order whatever the tile, so
    the result does not depend on the thread count.
    """
    out = [a.size_out for a in plan.axes]
    wanted = 8 * numba.get_num_threads()  # enough tasks that the last one to finish leaves little idle time
    # the direct kernels give each task a block of up to CHANNEL_BLOCK output channels of one group
    tasks = plan.batch * plan.groups * geo.ceil_div(plan.c_out // plan.groups, CHANNEL_BLOCK)
    tile = list(out)
    for axis in range(geo.MAX_RANK):  # split the outermost axes first, keeping rows contiguous
        if tasks >= wanted:
            break
        size = geo.ceil_div(out[axis], geo.ceil_div(wanted, tasks))
        tile[axis] = min(out[axis], max(size, 1 if axis < geo.MAX_RANK - 1 else _MIN_ROW_SEGMENT))
        tasks *= geo.ceil_div(out[axis], tile[axis])
    return np.array(tile, dtype=np.int64)
