"""Time fastdeconv against other CPU transposed-convolution engines, side by side in one process.

Usage (from the project root, with fastdeconv importable):
    python benchmarks/peers.py                       # all workloads of fastdeconv's workloads.json
    python benchmarks/peers.py --only dcgan_l1,big_1ch --methods auto,scatter,gather
    python benchmarks/peers.py --peers torch,ort --json results.json
    python benchmarks/peers.py --layout channels_last  # NHWC data: torch channels_last, TF NHWC, fastdeconv
                                                       # data_format="channels_last" (ort transposes around NCHW)

Peers are used when importable: torch (pip install torch==2.13.0 takes the local CPU build),
ort (pip install onnxruntime onnx), tf (pip install tensorflow-cpu), jax (pip install jax).
Every engine gets the same float32 arrays (channels-first, or channels-last with --layout channels_last) and the
same thread count. Each figure is the
median per-call time over interleaved rounds, so a drift of the machine's speed hits all engines alike; each
batch starts after --gap idle seconds and the engines' order rotates, so no engine pays for the thread pool
another one left spinning.
The last line is the geometric mean of (fastest peer time / fastdeconv auto time) over the workloads:
above 1 means fastdeconv is faster. Outputs are checked against the first peer that ran.
"""
import argparse
import json
import math
import os
import statistics
import sys
import time

THREADS = os.environ.get("PEERS_THREADS", "2")
os.environ.setdefault("OMP_NUM_THREADS", THREADS)
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", THREADS)
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("NUMBA_NUM_THREADS", THREADS)

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_WORKLOADS = os.path.join(os.path.dirname(HERE), "src", "fastdeconv", "workloads.json")
LAYOUT = ["channels_first"]  # set by --layout: the layout of x and of every engine's result


def channels_last():
    return LAYOUT[0] == "channels_last"


def out_size(i, k, s, p, op, d):
    return (i - 1) * s - 2 * p + d * (k - 1) + op + 1


def flops(w):
    n = 2 * w["N"] * w["C_in"] * (w["C_out"] // w["groups"]) * w["kernel"] ** len(w["spatial"])
    for i in w["spatial"]:
        n *= i
    return n


def make_torch():
    import torch
    import torch.nn.functional as F

    torch.set_num_threads(int(THREADS))

    def run(x, wt, w):
        nd = len(w["spatial"])
        fn = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}[nd]
        tx, tw = torch.from_numpy(x), torch.from_numpy(wt)
        kw = dict(stride=w["stride"], padding=w["padding"], output_padding=w["output_padding"],
                  groups=w["groups"], dilation=w["dilation"])
        if channels_last():  # torch's channels_last memory format: the NHWC bytes seen as an NCHW tensor
            if nd == 1:
                return None  # (no channels-last memory format for 1-D)
            tx = tx.permute(0, nd + 1, *range(1, nd + 1))
            fmt = torch.channels_last if nd == 2 else torch.channels_last_3d
            tw = tw.contiguous(memory_format=fmt)
            back = (0,) + tuple(range(2, nd + 2)) + (1,)
            return lambda: fn(tx, tw, **kw).permute(*back).numpy()
        return lambda: fn(tx, tw, **kw).numpy()
    return run


def make_ort():
    import onnxruntime as ort
    from onnx import TensorProto, helper

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(THREADS)
    so.inter_op_num_threads = 1

    def run(x, wt, w):
        if channels_last():  # ONNX is NCHW only: transposes around it (both copies timed)
            xc = np.ascontiguousarray(np.moveaxis(x, -1, 1))
            inner = nchw(xc, wt, w)

            def call():
                np.copyto(xc, np.moveaxis(x, -1, 1))
                return np.ascontiguousarray(np.moveaxis(inner(), 1, -1))
            return call
        return nchw(x, wt, w)

    def nchw(x, wt, w):
        nd = len(w["spatial"])
        node = helper.make_node("ConvTranspose", ["X", "W"], ["Y"], strides=[w["stride"]] * nd,
                                pads=[w["padding"]] * (2 * nd), output_padding=[w["output_padding"]] * nd,
                                group=w["groups"], dilations=[w["dilation"]] * nd)
        graph = helper.make_graph(
            [node], "g",
            [helper.make_tensor_value_info("X", TensorProto.FLOAT, list(x.shape)),
             helper.make_tensor_value_info("W", TensorProto.FLOAT, list(wt.shape))],
            [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        sess = ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
        return lambda: sess.run(None, {"X": x, "W": wt})[0]
    return run


def make_tf():
    import tensorflow as tf

    def run(x, wt, w):
        nd = len(w["spatial"])
        if w["groups"] != 1 or w["dilation"] != 1:
            return None  # TF's CPU kernels support neither for transposed convolution
        s, p, op, k = w["stride"], w["padding"], w["output_padding"], w["kernel"]
        tx = tf.constant(x if channels_last() else np.ascontiguousarray(np.moveaxis(x, 1, -1)))
        tw = tf.constant(np.ascontiguousarray(np.transpose(wt, tuple(range(2, 2 + nd)) + (1, 0))))
        fn = {1: tf.nn.conv1d_transpose, 2: tf.nn.conv2d_transpose, 3: tf.nn.conv3d_transpose}[nd]
        full = [(i - 1) * s + k + op for i in w["spatial"]]
        osp = [out_size(i, k, s, p, op, 1) for i in w["spatial"]]
        crop = (slice(None),) + tuple(slice(p, p + o) for o in osp) + (slice(None),)
        if nd == 2 and p >= op:
            pads = [[0, 0], [p, p - op], [p, p - op], [0, 0]]
            f = tf.function(lambda: fn(tx, tw, [x.shape[0]] + osp + [wt.shape[1]], strides=s, padding=pads))
        else:
            f = tf.function(lambda: fn(tx, tw, [x.shape[0]] + full + [wt.shape[1]], strides=s,
                                       padding="VALID")[crop])
        if channels_last():
            return lambda: f().numpy()
        return lambda: np.moveaxis(f().numpy(), -1, 1)
    return run


def make_jax():
    import jax

    jax.config.update("jax_platforms", "cpu")

    def run(x, wt, w):
        nd, g, d, s = len(w["spatial"]), w["groups"], w["dilation"], w["stride"]
        op, k = w["output_padding"], w["kernel"]
        cin, cog = wt.shape[0], wt.shape[1]
        wk = wt.reshape((g, cin // g, cog) + wt.shape[2:]).swapaxes(1, 2).reshape((g * cog, cin // g) + wt.shape[2:])
        wk = np.ascontiguousarray(np.flip(wk, axis=tuple(range(2, 2 + nd))))
        pe = d * (k - 1) - w["padding"]
        sp = "DHW"[3 - nd:]
        data = "N" + sp + "C" if channels_last() else "NC" + sp
        f = jax.jit(lambda a, b: jax.lax.conv_general_dilated(
            a, b, (1,) * nd, [(pe, pe + op)] * nd, lhs_dilation=(s,) * nd, rhs_dilation=(d,) * nd,
            dimension_numbers=(data, "OI" + sp, data), feature_group_count=g))
        jx, jw = jax.numpy.asarray(x), jax.numpy.asarray(wk)
        return lambda: np.asarray(f(jx, jw).block_until_ready())
    return run


def make_fastdeconv(method):
    """fastdeconv with method=auto/scatter/gather/zerofill, or "op": a fastdeconv.ConvTranspose operator (auto)."""
    import fastdeconv as fd

    def run(x, wt, w):
        kw = dict(stride=w["stride"], padding=w["padding"], output_padding=w["output_padding"],
                  groups=w["groups"], dilation=w["dilation"], data_format=LAYOUT[0])
        if method == "op":
            op = fd.ConvTranspose(wt, **kw)
            return lambda: op(x)
        return lambda: fd.conv_transpose(x, wt, method=method, **kw)
    return run


PEERS = {"torch": make_torch, "ort": make_ort, "tf": make_tf, "jax": make_jax}


def measure(fns, tmin, rounds=5, gap=0.1):
    """Median per-call seconds of each callable, over `rounds` interleaved batches.

    Engines keep their thread pools spinning for a while after a call (onnxruntime's, OpenMP's), which slows
    whatever runs next on the same cores. So each batch starts after `gap` seconds of idle, and the order of
    the engines rotates from round to round: no engine always follows the same one."""
    per = {name: [] for name in fns}
    batch = {}
    for name, f in list(fns.items()):
        time.sleep(gap)
        f()
        t0 = time.perf_counter()
        f()
        one = max(time.perf_counter() - t0, 1e-7)
        batch[name] = max(1, int(tmin / rounds / one))
        if one > tmin:  # a call slower than the whole budget is timed once, not five more times
            per[name] = [one]
    names = list(fns)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:
            f = fns[name]
            if len(per[name]) == 1 and batch[name] == 1 and per[name][0] > tmin:
                continue
            time.sleep(gap)
            t0 = time.perf_counter()
            for _ in range(batch[name]):
                f()
            per[name].append((time.perf_counter() - t0) / batch[name])
    return {name: statistics.median(v) for name, v in per.items()}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--workloads", default=DEFAULT_WORKLOADS)
    ap.add_argument("--only", default="", help="comma-separated workload names")
    ap.add_argument("--peers", default="torch,ort,tf,jax")
    ap.add_argument("--methods", default="auto",
                    help="fastdeconv methods to time (auto, scatter, gather, zerofill, op); '' for none")
    ap.add_argument("--tmin", type=float, default=1.0, help="seconds spent on each engine per workload")
    ap.add_argument("--gap", type=float, default=0.1, help="idle seconds before each engine's batch")
    ap.add_argument("--json", default="")
    ap.add_argument("--layout", default="channels_first", choices=["channels_first", "channels_last"],
                    help="layout of x and of the results for every engine")
    a = ap.parse_args(argv)
    LAYOUT[0] = a.layout

    wls = json.load(open(a.workloads))["workloads"]
    if a.only:
        wls = [w for w in wls if w["name"] in a.only.split(",")]
    makers = {}
    for name in filter(None, a.peers.split(",")):
        try:
            makers[name] = PEERS[name]()
        except Exception as e:  # an engine that is not installed is skipped, and said so
            print(f"# peer {name} unavailable: {type(e).__name__}: {e}")
    for m in filter(None, a.methods.split(",")):
        try:
            makers["fd:" + m] = make_fastdeconv(m)
        except Exception as e:
            print(f"# fastdeconv unavailable: {type(e).__name__}: {e}")
            break

    cols = list(makers)
    print("times in ms (GFLOP/s); speedup = fastest peer / fd:auto")
    print("workload".ljust(16) + "".join(c.rjust(18) for c in cols) + "speedup".rjust(10))
    rng = np.random.default_rng(0)
    results, speedups = [], []
    for w in wls:
        x = rng.standard_normal((w["N"], w["C_in"]) + tuple(w["spatial"]), dtype=np.float32)
        if channels_last():
            x = np.ascontiguousarray(np.moveaxis(x, 1, -1))
        wt = rng.standard_normal((w["C_in"], w["C_out"] // w["groups"]) + (w["kernel"],) * len(w["spatial"]),
                                 dtype=np.float32)
        fns, notes, ref = {}, [], None
        for name, mk in makers.items():
            try:
                f = mk(x, wt, w)
                if f is None:
                    continue
                y = np.asarray(f())
                if ref is None:
                    ref = y
                elif y.shape != ref.shape or not np.allclose(y, ref, rtol=1e-3, atol=1e-3 * (1 + np.abs(ref).max())):
                    notes.append(f"{name} MISMATCH")
                fns[name] = f
            except Exception as e:
                notes.append(f"{name} error {type(e).__name__}: {str(e)[:80]}")
        t = measure(fns, a.tmin / max(1, len(fns)) * len(fns), gap=a.gap) if fns else {}
        peer_t = [v for k, v in t.items() if not k.startswith("fd:")]
        sp = None
        if peer_t and "fd:auto" in t:
            sp = min(peer_t) / t["fd:auto"]
            speedups.append(sp)
        fl = flops(w)
        cells = "".join((f"{t[c]*1e3:.3f} ({fl/t[c]/1e9:.1f})" if c in t else "n/a").rjust(18) for c in cols)
        print(w["name"].ljust(16) + cells + (f"{sp:.2f}x" if sp else "-").rjust(10)
              + ("  " + "; ".join(notes) if notes else ""), flush=True)
        results.append({"workload": w["name"], "seconds": t, "gflop": fl / 1e9, "speedup_vs_fastest_peer": sp,
                        "notes": notes})
    gm = math.exp(sum(map(math.log, speedups)) / len(speedups)) if speedups else float("nan")
    if a.json:
        json.dump({"threads": int(THREADS), "layout": a.layout, "results": results, "geomean_speedup": gm},
                  open(a.json, "w"), indent=1)
    print(f"geomean speedup of fd:auto over the fastest peer: {gm:.2f}x over {len(speedups)} workloads")


if __name__ == "__main__":
    sys.exit(main())
