"""Cross-checks of fastdeconv.compat against the real engines: TensorFlow, onnxruntime (+onnx) and PyTorch.

Each engine's tests are skipped when it is not importable (``pytest.importorskip``). The cases are drawn at
random from fixed seeds; for every case the adapter and the engine must either both refuse the call (the
engine raises, the adapter raises ValueError) or both answer, with the same shape and values. The output
sizes are drawn around the valid range on purpose, so that which ``output_shape`` values are refused is
checked as much as the values.
"""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import fastdeconv as fd
from fastdeconv import compat

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

N_ORT, N_TF, N_TORCH = 40, 60, 12


def _close(y, expected):
    scale = max(1.0, float(np.max(np.abs(expected), initial=0.0)))
    np.testing.assert_allclose(y, expected, rtol=1e-4, atol=1e-5 * scale)


def _agree(ours, theirs, *args, **kwargs):
    """Call both with the same arguments: both refuse, or both answer the same."""
    try:
        expected = np.asarray(theirs(*args, **kwargs))
    except Exception as exc:  # the engine refuses: so must we (with a ValueError)
        with pytest.raises(ValueError):
            ours(*args, **kwargs)
        return f"refused: {type(exc).__name__}"
    y = ours(*args, **kwargs)
    assert y.shape == expected.shape, (args[2:], kwargs)
    _close(y, expected)
    return "answered"


# --------------------------------------------------------------------------------------------- onnxruntime


@pytest.fixture(scope="module")
def ort_run():
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    helper, tp = onnx.helper, onnx.TensorProto
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 4

    def run(x, w, b=None, **attrs):
        names = ["X", "W"] + (["B"] if b is not None else [])
        node = helper.make_node("ConvTranspose", names, ["Y"], **attrs)
        arrays = [x, w] + ([b] if b is not None else [])
        inputs = [helper.make_tensor_value_info(n, tp.FLOAT, list(a.shape)) for n, a in zip(names, arrays)]
        graph = helper.make_graph([node], "g", inputs, [helper.make_tensor_value_info("Y", tp.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 22)])
        model.ir_version = 10
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return sess.run(None, {n: a for n, a in zip(names, arrays)})[0]
    return run


def _ort_case(seed):
    rng = np.random.default_rng(seed)
    rank = int(rng.integers(1, 4))
    group = int(rng.integers(1, 3))
    c, m_g = group * int(rng.integers(1, 3)), int(rng.integers(1, 3))
    spatial = rng.integers(1, {1: 7, 2: 5, 3: 3}[rank] + 1, rank)
    kernel = rng.integers(1, 5, rank)
    strides = rng.integers(1, 4, rank)
    dilations = rng.integers(1, 3, rank)
    attrs = {"strides": strides.tolist(), "dilations": dilations.tolist(), "group": group}
    if rng.random() < 0.5:
        attrs["output_padding"] = [int(rng.integers(0, s + (rng.random() < 0.15))) for s in strides]
    mode = rng.choice(["pads", "SAME_UPPER", "SAME_LOWER", "VALID", "output_shape", "output_shape", "none"])
    full = (spatial - 1) * strides + (kernel - 1) * dilations + 1
    if mode == "pads":
        attrs["pads"] = rng.integers(0, 4, 2 * rank).tolist()
    elif mode == "output_shape":
        attrs["output_shape"] = [max(1, int(f + rng.integers(-3, s + 2))) for f, s in zip(full, strides)]
        if rng.random() < 0.3:
            attrs["auto_pad"] = str(rng.choice(["SAME_UPPER", "SAME_LOWER", "VALID"]))
    elif mode != "none":
        attrs["auto_pad"] = str(mode)
    if rng.random() < 0.3:
        attrs["kernel_shape"] = kernel.tolist()
    x = rng.standard_normal((int(rng.integers(1, 3)), c) + tuple(spatial)).astype(np.float32)
    w = rng.standard_normal((c, m_g) + tuple(kernel)).astype(np.float32)
    b = rng.standard_normal(m_g * group).astype(np.float32) if rng.random() < 0.5 else None
    return x, w, b, attrs


def test_onnxruntime_random(ort_run):
    outcomes = []
    for seed in range(N_ORT):
        x, w, b, attrs = _ort_case(seed)
        outcomes.append(_agree(compat.onnx_conv_transpose, ort_run, x, w, b, **attrs))
    assert outcomes.count("answered") >= N_ORT // 2  # the draw exercises both outcomes
    assert any(o.startswith("refused") for o in outcomes)


@pytest.mark.parametrize("auto_pad", ["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID"])
def test_onnxruntime_output_shape_range(ort_run, auto_pad):
    """Every output_shape from 1 to beyond the reachable range: same refusals, same crops (odd totals)."""
    rng = np.random.default_rng(7)
    x = rng.standard_normal((1, 1, 4)).astype(np.float32)
    w = rng.standard_normal((1, 1, 3)).astype(np.float32)
    for s, op in [(1, 0), (2, 1), (3, 0), (3, 2)]:
        for out in range(1, 4 * s + 3 + s + 1):
            attrs = dict(strides=[s], output_padding=[op], output_shape=[out], auto_pad=auto_pad)
            _agree(compat.onnx_conv_transpose, ort_run, x, w, **attrs)


def test_onnxruntime_same_with_short_kernel(ort_run):
    """SEMANTICS pitfall 2: SAME with (k - 1) * d + 1 < stride -- we follow onnxruntime (natural size)."""
    x = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 4)
    w = np.ones((1, 1, 1), np.float32)
    for auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        for op in (0, 1):
            attrs = dict(strides=[2], auto_pad=auto_pad, output_padding=[op])
            assert _agree(compat.onnx_conv_transpose, ort_run, x, w, **attrs) == "answered"


# --------------------------------------------------------------------------------------------- TensorFlow


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("tensorflow")


def _tf_case(seed):
    rng = np.random.default_rng(1000 + seed)
    rank = int(rng.integers(1, 4))
    kind = rng.choice(["SAME", "VALID", "explicit"] if rank == 2 else ["SAME", "VALID"])
    # TF's oneDNN path answers grouped, dilated and NCHW 2-D (not with explicit padding); its plain CPU kernels
    # refuse them (we don't)
    onednn = rank == 2 and kind != "explicit"
    channels_last = not onednn or rng.random() < 0.6
    fmt = compat.TF_FORMATS[rank][0 if channels_last else 1]
    groups = int(rng.integers(1, 3)) if onednn else 1
    c_in, c_out_g = groups * int(rng.integers(1, 3)), int(rng.integers(1, 3))
    spatial = rng.integers(1, {1: 7, 2: 5, 3: 3}[rank] + 1, rank)
    kernel = rng.integers(1, 5, rank)
    strides = rng.integers(1, 4, rank)
    dilations = np.ones(rank, int)
    if onednn and rng.random() < 0.4:
        dilations = rng.integers(1, 4, rank)
    keff = (kernel - 1) * dilations + 1
    if kind == "SAME":
        padding, lo, hi = "SAME", (spatial - 1) * strides + 1, spatial * strides
    else:
        pads = rng.integers(0, 3, (rank, 2)) if kind == "explicit" else np.zeros((rank, 2), int)
        pads[(spatial - 1) * strides + keff - pads.sum(1) + strides - 1 < 1] = 0  # keep some size >= 1 valid
        lo = (spatial - 1) * strides + keff - pads.sum(1)
        hi, padding = lo + strides - 1, "VALID"
        if kind == "explicit":
            pairs = [[0, 0]] + pads.tolist() + [[0, 0]]
            padding = pairs if channels_last else [pairs[0], pairs[-1]] + pairs[1:-1]
    # mostly valid sizes, some just outside the range; never below the kernel span with VALID, where TF's
    # oneDNN path answers what its reference kernels refuse (see test_tensorflow_reference_kernels)
    floor = keff if kind == "VALID" else np.ones(rank, int)
    out = [int(rng.integers(max(a - 2, m), b + 3)) if rng.random() < 0.3 else int(rng.integers(max(a, 1), b + 1))
           for a, b, m in zip(lo, hi, floor)]
    n = int(rng.integers(1, 3))
    c_out = c_out_g * groups
    shape = [n] + out + [c_out] if channels_last else [n, c_out] + out
    if rank == 2 and groups == 1 and rng.random() < 0.3:
        shape = out  # TF's Conv2DBackpropInput also takes the spatial sizes alone
    x_shape = (n,) + tuple(spatial) + (c_in,) if channels_last else (n, c_in) + tuple(spatial)
    x = rng.standard_normal(x_shape).astype(np.float32)
    f = rng.standard_normal(tuple(kernel) + (c_out_g, c_in)).astype(np.float32)
    strides_arg = [int(s) for s in strides] if rng.random() < 0.5 else (
        [1] + [int(s) for s in strides] + [1] if channels_last else [1, 1] + [int(s) for s in strides])
    kw = dict(strides=strides_arg, padding=padding, data_format=fmt, dilations=[int(d) for d in dilations])
    return x, f, shape, kw


# What TensorFlow's CPU kernels lack, not what its API forbids: its Eigen kernels (the default where oneDNN is
# off, e.g. on AMD hosts) refuse these, its oneDNN kernels compute them. compat follows the API.
TF_KERNEL_GAPS = ("do not yet support dilation rates larger than 1", "only supports NHWC",
                  "Gradients for grouped convolutions are not supported")


def _tf_by_parts(op, x, f, shape, strides, padding, data_format, dilations):
    """TensorFlow's own answer built from calls every CPU kernel takes: channels-last data, no dilation (the
    filter with its zeros inserted), one group at a time. Each step is the API's definition of the feature."""
    rank = f.ndim - 2
    spatial = [int(s) for s in (strides if len(strides) == rank else
                                (strides[1:-1] if data_format.endswith("C") else strides[2:]))]
    if not data_format.endswith("C"):  # channels first: the same layer on transposed data
        last = compat.TF_FORMATS[rank][0]
        to_last, to_first = (0, *range(2, rank + 2), 1), (0, rank + 1, *range(1, rank + 1))
        shape_last = list(shape) if len(shape) == rank else [shape[0], *shape[2:], shape[1]]
        pad_last = padding if isinstance(padding, str) else [padding[0], *padding[2:], padding[1]]
        y = _tf_by_parts(op, np.transpose(x, to_last), f, shape_last, spatial, pad_last, last, dilations)
        return np.transpose(y, to_first)
    if any(d > 1 for d in dilations):
        dilated = np.zeros(tuple((k - 1) * d + 1 for k, d in zip(f.shape[:rank], dilations)) + f.shape[rank:],
                           f.dtype)
        dilated[tuple(slice(None, None, d) for d in dilations)] = f
        return _tf_by_parts(op, x, dilated, shape, spatial, padding, data_format, [1] * rank)
    c_out_g = f.shape[-2]  # the filter's depth: output channels per group
    groups = shape[-1] // c_out_g if len(shape) == rank + 2 else 1
    if groups > 1:
        c_in_g = x.shape[-1] // groups
        shape_g = list(shape[:-1]) + [c_out_g]
        part = [slice(g * c_in_g, (g + 1) * c_in_g) for g in range(groups)]
        return np.concatenate([_tf_by_parts(op, x[..., p], f[..., p], shape_g, spatial, padding, data_format, dilations)
                               for p in part], axis=-1)
    return np.asarray(op(x, f, shape, strides=spatial, padding=padding, data_format=data_format))


def _tf_engine(op):
    """TensorFlow's conv*_transpose, and where this host's CPU kernel lacks a feature its API defines, the same
    layer by parts (``_tf_by_parts``): which kernel TensorFlow runs here changes no expectation."""
    def run(x, f, shape, **kw):
        try:
            return np.asarray(op(x, f, shape, **kw))
        except Exception as exc:
            if not any(gap in str(exc) for gap in TF_KERNEL_GAPS):
                raise
        return _tf_by_parts(op, x, f, shape, kw["strides"], kw["padding"], kw["data_format"], kw["dilations"])
    return run


def test_tensorflow_random(tf):
    ops = {1: tf.nn.conv1d_transpose, 2: tf.nn.conv2d_transpose, 3: tf.nn.conv3d_transpose}
    outcomes = []
    for seed in range(N_TF):
        x, f, shape, kw = _tf_case(seed)
        rank = f.ndim - 2
        ours = compat.tf_conv2d_transpose if rank == 2 and seed % 2 else compat.tf_conv_transpose
        outcomes.append(_agree(ours, _tf_engine(ops[rank]), x, f, shape, **kw))
    assert outcomes.count("answered") >= N_TF // 2
    assert any(o.startswith("refused") for o in outcomes)


@pytest.mark.skipif(os.environ.get("TF_ENABLE_ONEDNN_OPTS") == "0", reason="this run is the one without oneDNN")
def test_tensorflow_random_without_onednn(tf):
    """The same draw against TensorFlow's Eigen CPU kernels (oneDNN off, as TensorFlow runs on hosts it does not
    enable oneDNN on): the flag is read once at import, hence a child process."""
    env = {**os.environ, "TF_ENABLE_ONEDNN_OPTS": "0"}
    run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                          f"{__file__}::test_tensorflow_random"], env=env, capture_output=True, text=True,
                         timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "1 passed" in run.stdout


@pytest.mark.parametrize("padding", ["SAME", "VALID"])
def test_tensorflow_output_shape_range(tf, padding):
    """Every output size 0..in*stride+kernel+2: TF's refusals are ours; in=6, k=3, s=2 accepts SAME {11,12}
    and VALID {13,14} only (SEMANTICS pitfall 6)."""
    rng = np.random.default_rng(11)
    x = rng.standard_normal((1, 6, 1)).astype(np.float32)
    f = rng.standard_normal((3, 1, 1)).astype(np.float32)
    accepted = []
    for out in range(1, 18):
        r = _agree(compat.tf_conv_transpose, tf.nn.conv1d_transpose, x, f, [1, out, 1], 2, padding)
        if r == "answered":
            accepted.append(out)
    assert accepted == ([11, 12] if padding == "SAME" else [13, 14])


def test_tensorflow_seed003_shape(tf):
    """Seed 003 at reduced size: bilinear [3, 3, 3, 64] filters, stride 2, SAME, 64 -> 3 channels."""
    rng = np.random.default_rng(3)
    pool = rng.standard_normal((1, 15, 10, 64)).astype(np.float32)
    kernel2 = rng.standard_normal((3, 3, 3, 64)).astype(np.float32)
    expected = tf.nn.conv2d_transpose(pool, kernel2, [1, 30, 20, 3], strides=[1, 2, 2, 1], padding="SAME").numpy()
    y = compat.tf_conv2d_transpose(pool, kernel2, [1, 30, 20, 3], strides=[1, 2, 2, 1], padding="SAME")
    assert y.shape == expected.shape == (1, 30, 20, 3)
    _close(y, expected)


# (input shape, kernel size, output_shape, padding), stride 2, ones; ``refused`` by TF's reference kernels
REFERENCE_CASES = [((0, 3, 4, 1), 3, [0, 6, 8, 1], "SAME"), ((0, 3, 4, 1), 3, [0, 20, 8, 1], "SAME"),  # refused
                   ((1, 0, 4, 1), 3, [1, 1, 9, 1], "VALID"), ((1, 0, 4, 1), 3, [1, 0, 9, 1], "VALID"),
                   ((1, 0, 4, 1), 3, [1, 3, 9, 1], "VALID"),  # refused
                   ((1, 0, 4, 1), 3, [1, 0, 8, 1], "SAME"), ((1, 1, 1, 1), 2, [1, 1, 2, 1], "VALID"),  # refused
                   ((1, 1, 1, 1), 2, [1, 2, 3, 1], "VALID"), ((1, 2, 1, 1), 4, [1, 3, 4, 1], "VALID")]  # refused

_REFERENCE_SCRIPT = """
import json, sys
import numpy as np, tensorflow as tf
out = []
for x_shape, k, shape, padding in json.loads(sys.argv[1]):
    try:
        y = tf.nn.conv2d_transpose(np.ones(x_shape, np.float32), np.ones((k, k, 1, 1), np.float32), shape, 2,
                                   padding).numpy()
        out.append(y.tolist())
    except Exception:
        out.append(None)
print(json.dumps(out))
"""


def test_tensorflow_reference_kernels(tf):
    """Cases where TF's default oneDNN path skips its shape checks (empty inputs, VALID sizes below the kernel
    span): the oracle is TF's reference CPU kernels (TF_ENABLE_ONEDNN_OPTS=0, in a subprocess)."""
    env = dict(os.environ, TF_ENABLE_ONEDNN_OPTS="0", TF_CPP_MIN_LOG_LEVEL="3")
    run = subprocess.run([sys.executable, "-c", _REFERENCE_SCRIPT, json.dumps(REFERENCE_CASES)], env=env,
                         capture_output=True, text=True, timeout=120, check=True)
    expected = json.loads(run.stdout.strip().splitlines()[-1])
    for (x_shape, k, shape, padding), exp in zip(REFERENCE_CASES, expected):
        x, f = np.ones(x_shape, np.float32), np.ones((k, k, 1, 1), np.float32)
        if exp is None:
            with pytest.raises(ValueError, match="output_shape"):
                compat.tf_conv2d_transpose(x, f, shape, 2, padding)
        else:
            y = compat.tf_conv2d_transpose(x, f, shape, 2, padding)
            assert y.shape == tuple(shape)
            np.testing.assert_array_equal(y, np.asarray(exp, np.float32).reshape(shape))
    assert [i for i, e in enumerate(expected) if e is None] == [1, 4, 6, 8]


# --------------------------------------------------------------------------------------------- PyTorch


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def test_torch_onnx_symmetric_pads(torch):
    """onnx_conv_transpose with symmetric pads is torch's conv_transpose (groups, dilation, output_padding)."""
    fns = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
           3: torch.nn.functional.conv_transpose3d}
    for seed in range(N_TORCH):
        rng = np.random.default_rng(2000 + seed)
        rank = 1 + seed % 3
        group = int(rng.integers(1, 3))
        c, m_g = group * int(rng.integers(1, 3)), int(rng.integers(1, 3))
        spatial = tuple(int(v) for v in rng.integers(2, {1: 8, 2: 6, 3: 4}[rank], rank))
        kernel = tuple(int(v) for v in rng.integers(1, 5, rank))
        s = [int(v) for v in rng.integers(1, 4, rank)]
        d = [int(v) for v in rng.integers(1, 3, rank)]
        op = [int(rng.integers(0, v)) for v in s]
        p = [int(rng.integers(0, (k - 1) * dd // 2 + 1)) for k, dd in zip(kernel, d)]
        x = rng.standard_normal((2, c) + spatial)
        w = rng.standard_normal((c, m_g) + kernel)
        b = rng.standard_normal(m_g * group)
        expected = fns[rank](torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(b), stride=s, padding=p,
                             output_padding=op, groups=group, dilation=d).numpy()
        y = compat.onnx_conv_transpose(x, w, b, strides=s, pads=p + p, output_padding=op, group=group,
                                       dilations=d)
        assert y.shape == expected.shape
        np.testing.assert_allclose(y, expected, rtol=1e-9, atol=1e-9)


def test_torch_correlation_weights(torch):
    """Zero-fill, pad, correlate (torch's conv = cross-correlation) == conv_transpose(from_correlation_weights)."""
    for seed in range(N_TORCH):
        rng = np.random.default_rng(3000 + seed)
        rank = 1 + seed % 3
        c_in, c_out = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        spatial = tuple(int(v) for v in rng.integers(1, {1: 8, 2: 6, 3: 4}[rank], rank))
        kernel = tuple(int(v) for v in rng.integers(1, 5, rank))
        s = int(rng.integers(1, 4))
        p = [int(rng.integers(0, min(k - 1, ((i - 1) * s + k - 1) // 2) + 1)) for i, k in zip(spatial, kernel)]
        x = rng.standard_normal((1, c_in) + spatial)
        w = rng.standard_normal((c_out, c_in) + kernel)  # correlation layout [C_out, C_in, *k]
        z = fd.zero_fill(x, (s,) * rank, padding=[(k - 1 - pp, k - 1 - pp) for k, pp in zip(kernel, p)])
        conv = {1: torch.nn.functional.conv1d, 2: torch.nn.functional.conv2d, 3: torch.nn.functional.conv3d}[rank]
        expected = conv(torch.from_numpy(z), torch.from_numpy(w)).numpy()
        y = fd.conv_transpose(x, compat.from_correlation_weights(w), stride=s, padding=p)
        assert y.shape == expected.shape
        np.testing.assert_allclose(y, expected, rtol=1e-9, atol=1e-9)
