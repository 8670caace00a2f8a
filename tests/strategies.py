"""Hypothesis strategies shared by the test modules: one random transposed-convolution geometry."""

from hypothesis import assume
from hypothesis import strategies as st

GEOMETRY_KEYS = ("stride", "padding", "output_padding", "groups", "dilation")


@st.composite
def geometries(draw, channels=(3, 2), max_in=(9, 6, 4), kernel=5, stride=4, dilation=3, int_padding=3,
               pair_padding=4, kinds=("int", "pairs", "same", "valid")):
    """A valid geometry (output >= 1 on every axis), as a flat dict with ``geometry_kwargs`` ready keys.

    ``channels`` bounds C_in and C_out per group, ``max_in`` the input size per rank (1, 2, 3), ``kinds`` the
    padding forms drawn (an int, (before, after) pairs, "same", "valid").
    """
    rank = draw(st.integers(1, 3))
    groups = draw(st.integers(1, 3))
    c_in, c_out = groups * draw(st.integers(1, channels[0])), groups * draw(st.integers(1, channels[1]))
    spatial = draw(st.lists(st.integers(1, max_in[rank - 1]), min_size=rank, max_size=rank))
    kernel = draw(st.lists(st.integers(1, kernel), min_size=rank, max_size=rank))
    stride = draw(st.lists(st.integers(1, stride), min_size=rank, max_size=rank))
    dilation = draw(st.lists(st.integers(1, dilation), min_size=rank, max_size=rank))
    out_pad = [draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)]
    kind = draw(st.sampled_from(kinds))
    full = [(i - 1) * s + (k - 1) * d + 1 for i, k, s, d in zip(spatial, kernel, stride, dilation)]
    if kind == "same":
        padding, out_pad = "same", [0] * rank
    elif kind == "valid":
        padding = "valid"
    elif kind == "int":
        padding = draw(st.integers(0, int_padding))
        assume(all(f + o - 2 * padding >= 1 for f, o in zip(full, out_pad)))
    else:
        padding = [(draw(st.integers(0, pair_padding)), draw(st.integers(0, pair_padding))) for _ in range(rank)]
        assume(all(f + o - b - a >= 1 for f, o, (b, a) in zip(full, out_pad, padding)))
    return dict(rank=rank, groups=groups, c_in=c_in, c_out=c_out, spatial=spatial, kernel=kernel,
                stride=stride, dilation=dilation, output_padding=out_pad, padding=padding)


def geometry_kwargs(g: dict) -> dict:
    """The conv_transpose keyword arguments of a drawn geometry."""
    return {k: g[k] for k in GEOMETRY_KEYS}
