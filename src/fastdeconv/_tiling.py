"""How the output is cut into tasks for the parallel kernels (pure Python, no numba)."""

from __future__ import annotations

import numba
import numpy as np

from . import _geometry as geo

# Shortest piece of an output row given to one task (shorter pieces cost more to schedule than they save).
_MIN_ROW_SEGMENT = 2048


def tile_for(plan: geo.Plan) -> np.ndarray:
    """Output tile per task: whole planes when there are enough of them, else slabs, rows, row segments.

    Tiles only split the work; every output element sums its terms in the same order whatever the tile, so
    the result does not depend on the thread count.
    """
    out = [a.size_out for a in plan.axes]
    wanted = 4 * numba.get_num_threads()
    tile, tasks = list(out), plan.batch * plan.c_out
    for axis in range(geo.MAX_RANK):  # split the outermost axes first, keeping rows contiguous
        if tasks >= wanted:
            break
        size = -(-out[axis] // -(-wanted // tasks))
        tile[axis] = min(out[axis], max(size, 1 if axis < geo.MAX_RANK - 1 else _MIN_ROW_SEGMENT))
        tasks *= -(-out[axis] // tile[axis])
    return np.array(tile, dtype=np.int64)
