"""The other engines ``python -m fastdeconv compare`` times fastdeconv against (torch, onnxruntime, TensorFlow,
JAX; whichever are importable), each given the same thread count."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

import numpy as np


def set_threads(n: int | None) -> int:
    """Use ``n`` threads in fastdeconv, BLAS and (when they are imported later) the peers; return the count.

    ``None`` keeps fastdeconv's current count and gives the peers the same.
    """
    from .. import _threads

    if n is not None:
        _threads.set_num_threads(n)
    n = _threads.get_num_threads()
    os.environ["OMP_NUM_THREADS"] = str(n)
    os.environ["TF_NUM_INTRAOP_THREADS"] = str(n)
    os.environ["TF_NUM_INTEROP_THREADS"] = "1"
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    if "jax" not in sys.modules:
        flags = os.environ.get("XLA_FLAGS", "")
        extra = f"--xla_cpu_multi_thread_eigen={'false' if n == 1 else 'true'} intra_op_parallelism_threads={n}"
        os.environ["XLA_FLAGS"] = (flags + " " + extra).strip()
    return n


def _torch(threads: int):
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(threads)

    def make(x, w, wl):
        fn = (F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d)[wl.rank - 1]
        tx, tw, kw = torch.from_numpy(x), torch.from_numpy(w), wl.kwargs()
        return lambda: fn(tx, tw, **kw).numpy()
    return make


def _ort(threads: int):
    import onnxruntime as ort
    from onnx import TensorProto, helper

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3

    def make(x, w, wl):
        node = helper.make_node("ConvTranspose", ["X", "W"], ["Y"], strides=list(wl.stride),
                                pads=list(wl.padding) * 2, output_padding=list(wl.output_padding),
                                group=wl.groups, dilations=list(wl.dilation), kernel_shape=list(wl.kernel))
        graph = helper.make_graph(
            [node], "g",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape)),
             helper.make_tensor_value_info("W", TensorProto.FLOAT, list(w.shape))],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        sess = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return lambda: sess.run(None, {"X": x, "W": w})[0]
    return make


def _tf(threads: int):
    import tensorflow as tf

    def make(x, w, wl):
        if wl.groups != 1 or any(d != 1 for d in wl.dilation):
            return None  # TF's CPU transposed convolutions support neither
        nd = wl.rank
        tx = tf.constant(np.ascontiguousarray(np.moveaxis(x, 1, -1)))
        tw = tf.constant(np.ascontiguousarray(np.transpose(w, tuple(range(2, 2 + nd)) + (1, 0))))
        fn = (tf.nn.conv1d_transpose, tf.nn.conv2d_transpose, tf.nn.conv3d_transpose)[nd - 1]
        full = [(i - 1) * s + k + op for i, s, k, op in zip(wl.spatial, wl.stride, wl.kernel, wl.output_padding)]
        out = list(wl.out_shape[2:])
        strides = list(wl.stride)
        if nd == 2 and all(p >= op for p, op in zip(wl.padding, wl.output_padding)):
            pads = [[0, 0]] + [[p, p - op] for p, op in zip(wl.padding, wl.output_padding)] + [[0, 0]]
            f = tf.function(lambda: fn(tx, tw, [wl.n] + out + [wl.c_out], strides=strides, padding=pads))
        else:
            crop = (slice(None),) + tuple(slice(p, p + o) for p, o in zip(wl.padding, out)) + (slice(None),)
            f = tf.function(lambda: fn(tx, tw, [wl.n] + full + [wl.c_out], strides=strides, padding="VALID")[crop])
        return lambda: np.moveaxis(f().numpy(), -1, 1)
    return make


def _jax(threads: int):
    import jax

    jax.config.update("jax_platforms", "cpu")

    def make(x, w, wl):
        nd, g = wl.rank, wl.groups
        c_in_g, c_out_g = wl.c_in // g, wl.c_out // g
        wk = w.reshape((g, c_in_g, c_out_g) + wl.kernel).swapaxes(1, 2).reshape((wl.c_out, c_in_g) + wl.kernel)
        wk = np.ascontiguousarray(np.flip(wk, axis=tuple(range(2, 2 + nd))))
        pads = [(d * (k - 1) - p, d * (k - 1) - p + op)
                for d, k, p, op in zip(wl.dilation, wl.kernel, wl.padding, wl.output_padding)]
        dims = "DHW"[3 - nd:]
        f = jax.jit(lambda a, b: jax.lax.conv_general_dilated(
            a, b, (1,) * nd, pads, lhs_dilation=wl.stride, rhs_dilation=wl.dilation,
            dimension_numbers=("NC" + dims, "OI" + dims, "NC" + dims), feature_group_count=g))
        jx, jw = jax.numpy.asarray(x), jax.numpy.asarray(wk)
        return lambda: np.asarray(f(jx, jw).block_until_ready())
    return make


_PEER_FACTORIES = {"torch": _torch, "ort": _ort, "tf": _tf, "jax": _jax}


def load_peers(names: Iterable[str], threads: int) -> tuple[dict, dict[str, str]]:
    """Factories of the importable peers among ``names``, and why each other one was skipped."""
    makers, skipped = {}, {}
    for name in names:
        try:
            makers[name] = _PEER_FACTORIES[name](threads)
        except Exception as exc:  # an engine that is not installed (or broken) is skipped, and said so
            skipped[name] = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:100]
    return makers, skipped
