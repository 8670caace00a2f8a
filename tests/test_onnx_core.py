"""ONNX's own ConvTranspose test cases, expressed with conv_transpose's arguments (no compat layer)."""

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import METHODS

import fastdeconv as fd

CASES = json.loads((Path(__file__).parent / "data" / "onnx_convtranspose.json").read_text())


def core_arguments(case):
    """Map one case's ONNX attributes onto conv_transpose arguments."""
    attrs = case["attrs"]
    w = np.asarray(case["w"], np.float32)
    rank = w.ndim - 2
    kw = {"stride": attrs.get("strides", [1] * rank), "dilation": attrs.get("dilations", [1] * rank),
          "groups": attrs.get("group", 1)}
    if attrs.get("auto_pad", "NOTSET") == "SAME_UPPER":
        kw["padding"] = "same"  # equal to TF SAME whenever (k-1)*d+1 >= stride, true in these cases
    elif "output_shape" in attrs:
        kw["output_size"] = attrs["output_shape"]  # NOTSET with pads 0: reachable through output padding
    else:
        pads = attrs.get("pads", [0] * 2 * rank)
        kw["padding"] = list(zip(pads[:rank], pads[rank:]))
        kw["output_padding"] = attrs.get("output_padding", [0] * rank)
    return kw


@pytest.mark.parametrize("case", CASES, ids=[c["name"] for c in CASES])
@pytest.mark.parametrize("method", METHODS)
def test_onnx_case(case, method):
    x = np.asarray(case["x"], np.float32)
    w = np.asarray(case["w"], np.float32)
    b = None if case.get("b") is None else np.asarray(case["b"], np.float32)
    y = fd.conv_transpose(x, w, b, method=method, **core_arguments(case))
    assert list(y.shape) == case["expected_shape"]
    np.testing.assert_allclose(y, np.asarray(case["expected"], np.float32).reshape(y.shape), rtol=1e-5, atol=1e-5)
