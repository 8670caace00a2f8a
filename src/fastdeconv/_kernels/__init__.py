"""Numba kernels, one family per data-flow form.

Every kernel works on canonical C-contiguous 5-D arrays: x (N, C_in, D, H, W), weight (C_in, C_out // groups,
kD, kH, kW) and y (N, C_out, oD, oH, oW). Rank 1 and 2 are padded with leading unit axes, so each kernel has
at most one compiled signature per dtype. Per-axis geometry comes as int64 arrays of length 3.
"""
