"""conv_transpose against torch.nn.functional.conv_transpose{1,2,3}d (skipped when torch is missing)."""

import numpy as np
import pytest
from conftest import METHODS
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import fastdeconv as fd

torch = pytest.importorskip("torch")
F = torch.nn.functional
TORCH_FN = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@settings(max_examples=60)
@given(rank=st.integers(1, 3), groups=st.integers(1, 2), cin=st.integers(1, 3), cout=st.integers(1, 3),
       batch=st.integers(1, 2), data=st.data())
def test_matches_torch(rank, groups, cin, cout, batch, data):
    ints = lambda lo, hi: data.draw(st.lists(st.integers(lo, hi), min_size=rank, max_size=rank))  # noqa: E731
    spatial, kernel, stride, dilation = ints(1, 5), ints(1, 4), ints(1, 3), ints(1, 2)
    padding = ints(0, 2)
    out_pad = [data.draw(st.integers(0, max(s, d) - 1)) for s, d in zip(stride, dilation)]
    full = [(i - 1) * s + (k - 1) * d + 1 for i, k, s, d in zip(spatial, kernel, stride, dilation)]
    assume(all(f - 2 * p + o >= 1 for f, p, o in zip(full, padding, out_pad)))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    x = rng.standard_normal((batch, cin * groups, *spatial)).astype(np.float32)
    w = rng.standard_normal((cin * groups, cout, *kernel)).astype(np.float32)
    b = rng.standard_normal(cout * groups).astype(np.float32)
    kw = dict(stride=stride, padding=padding, output_padding=out_pad, groups=groups, dilation=dilation)
    expected = TORCH_FN[rank](torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), **kw).numpy()
    for method in METHODS:
        y = fd.conv_transpose(x, w, b, method=method, **kw)
        np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-4, err_msg=method)


def test_output_size_like_module():
    rng = np.random.default_rng(0)
    layer = torch.nn.ConvTranspose2d(3, 2, 3, stride=2, padding=1)
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    w, b = layer.weight.detach().numpy(), layer.bias.detach().numpy()
    with torch.no_grad():
        for size in [(9, 9), (10, 9), (10, 10)]:
            expected = layer(torch.from_numpy(x), output_size=size).numpy()
            y = fd.conv_transpose(x, w, b, stride=2, padding=1, output_size=size)
            np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="output_size"):
        fd.conv_transpose(x, w, stride=2, padding=1, output_size=(11, 9))
