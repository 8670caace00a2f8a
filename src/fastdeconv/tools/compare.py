"""The compare tool behind ``python -m fastdeconv compare``: every form side by side with other engines.

For each workload (a geometry from ``workloads.json``, or an ad-hoc ``--shape``) and each engine (the
fastdeconv methods, and whichever of torch / onnxruntime / tensorflow / jax are importable) it reports the
median per-call time over interleaved rounds (a drift of the machine's speed hits every engine alike),
GFLOP/s of the direct definition (``2 * MACs``, the same count for every form, so zerofill's multiplications
by inserted zeros do not count as work), the percentage of this machine's roofline
``max(flops / peak, bytes / bandwidth)``, the speedup over the fastest peer, and the largest error against
an independent float64 NumPy reference (:func:`reference`).
"""

from __future__ import annotations

import importlib.resources
import json
import math
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import _geometry as geo
from .reference import conv_transpose_ref

METHODS = ("scatter", "gather", "zerofill", "auto")
PEERS = ("torch", "ort", "tf", "jax")
QUICK_WORKLOAD = "seed000_tiny"
QUICK_PEERS = ("torch", "ort", "jax")  # tensorflow is left out: importing it alone takes longer than the rest
PEERS_INSTALL = "pip install torch==2.13.0 onnxruntime onnx jax"
# ``--quick``: the tiny worked example plus three real layers, small enough that the whole command (numba
# compiling each variant they use, from an empty cache, and zerofill's extra work) stays within seconds
QUICK_LAYERS = (
    {"name": "dcgan_block", "N": 4, "C_in": 64, "C_out": 32, "spatial": [16, 16], "kernel": 4, "stride": 2,
     "padding": 1, "about": "a DCGAN generator block (64 -> 32 channels, 16x16 -> 32x32), batch 4"},
    {"name": "fcn_bilinear", "N": 1, "C_in": 21, "C_out": 21, "spatial": [16, 16], "kernel": 16, "stride": 8,
     "padding": 4, "groups": 21, "about": "FCN-8s bilinear 8x upsampling of 21 class maps (depthwise)"},
    {"name": "image_1ch", "N": 1, "C_in": 1, "C_out": 1, "spatial": [512, 512], "kernel": 4, "stride": 2,
     "padding": 1, "about": "a single-channel 512x512 image, 2x upsampling"},
)
RTOL = {np.dtype(np.float32): 1e-4, np.dtype(np.float64): 1e-10}
_PRECOMPILE_BYTES = 64 << 20  # workloads run ahead in the compiling workers only below this size
# relative numba compile time (seconds on one core, roughly) of each variant's kernels: the pool starts with
# the heaviest, so that the workers finish together (the direct variants have a tiny, a serial and a parallel
# kernel each)
_COMPILE_WEIGHT = {"scatter-direct": 7, "gather-plane": 6, "gather-direct": 5, "gather-winograd": 4.5,
                   "gather-gemm-cols": 3, "scatter-gemm-rows": 3, "gather-gemm-rows": 3, "gather-gemm": 3,
                   "zerofill": 2.5, "scatter-gemm": 2}

_GEOMETRY_KEYS = ("kernel", "stride", "padding", "output_padding", "dilation")
# --shape keys: short form -> workloads.json field
_SHAPE_KEYS = {"name": "name", "n": "N", "cin": "C_in", "cout": "C_out", "in": "spatial", "k": "kernel",
               "s": "stride", "p": "padding", "op": "output_padding", "g": "groups", "d": "dilation"}
SHAPE_HELP = """\
--shape SPEC describes one ad-hoc workload as comma-separated key=value pairs (float32, PyTorch semantics):
  in=HxW       spatial input size, 1 to 3 sizes joined by 'x' (required): in=1024, in=64x64, in=8x16x16
  cin=C        input channels (required)        cout=C   output channels (default: cin)
  n=N          batch (default 1)                g=G      groups (default 1)
  k=K s=S p=P op=O d=D                          kernel, stride, padding (cropped from both ends),
               output_padding, dilation: one int for every axis or one per axis joined by 'x'
               (defaults k=3 s=1 p=0 op=0 d=1)
  name=LABEL   label for the table (default: the spec itself)
example: --shape n=8,cin=64,cout=32,in=32x32,k=4,s=2,p=1"""


# --------------------------------------------------------------------------- workloads


@dataclass(frozen=True)
class Workload:
    """One geometry to time: float32 x (n, c_in, *spatial), weight (c_in, c_out // groups, *kernel)."""

    name: str
    n: int
    c_in: int
    c_out: int
    spatial: tuple[int, ...]
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    padding: tuple[int, ...]
    output_padding: tuple[int, ...]
    dilation: tuple[int, ...]
    groups: int = 1
    about: str = ""
    plan: geo.Plan = field(repr=False, compare=False, default=None)

    @classmethod
    def from_dict(cls, d: dict) -> Workload:
        """A validated workload from a ``workloads.json`` entry (symmetric ints or per-axis lists).

        Parameters
        ----------
        d : dict
            Keys ``name, N, C_in, C_out, spatial, kernel, stride, padding, output_padding, groups, dilation``
            (``about`` optional); geometry values are an int or one int per spatial axis.

        Returns
        -------
        Workload

        Raises
        ------
        ValueError
            A missing key, or a geometry that ``conv_transpose`` would refuse (the message says why).
        """
        if not isinstance(d, dict):
            raise TypeError(f"a workload must be a dict, got {type(d).__name__}")
        missing = [k for k in ("name", "C_in", "spatial") if k not in d]
        if missing:
            raise ValueError(f"workload {d.get('name', '?')!r} lacks {', '.join(missing)}")
        spatial = d["spatial"]
        spatial = tuple(geo.as_int(v, "spatial") for v in (spatial if np.ndim(spatial) else [spatial]))
        rank = len(spatial)
        if not 1 <= rank <= geo.MAX_RANK:
            raise ValueError(f"workload {d['name']!r}: spatial must have 1 to 3 sizes, got {spatial}")
        name = str(d["name"])
        c_in = geo.as_int(d["C_in"], "C_in")
        groups = geo.as_int(d.get("groups", 1), "groups")
        c_out = geo.as_int(d.get("C_out", c_in), "C_out")
        if groups < 1 or c_out < 1 or c_out % groups:
            raise ValueError(f"workload {name!r}: C_out ({c_out}) must be a positive multiple of groups ({groups})")
        defaults = {"kernel": 3, "stride": 1, "padding": 0, "output_padding": 0, "dilation": 1}
        geometry = {k: geo.per_axis(d.get(k, defaults[k]), rank, k) for k in _GEOMETRY_KEYS}
        n = geo.as_int(d.get("N", 1), "N")
        if n < 1 or c_in < 1:
            raise ValueError(f"workload {name!r}: N and C_in must be >= 1, got N={n}, C_in={c_in}")
        wl = cls(name=name, n=n, c_in=c_in, c_out=c_out, spatial=spatial, groups=groups,
                 about=str(d.get("about", "")), **geometry)
        plan = geo.make_plan(wl.x_shape, wl.w_shape, np.float32, np.float32, wl.stride, wl.padding,
                             wl.output_padding, wl.groups, wl.dilation)
        object.__setattr__(wl, "plan", plan)
        return wl

    @property
    def rank(self) -> int:
        return len(self.spatial)

    @property
    def x_shape(self) -> tuple[int, ...]:
        return (self.n, self.c_in) + self.spatial

    @property
    def w_shape(self) -> tuple[int, ...]:
        return (self.c_in, self.c_out // self.groups) + self.kernel

    @property
    def out_shape(self) -> tuple[int, ...]:
        return self.plan.out_shape

    @property
    def flops(self) -> int:
        """``2 * multiply-adds`` of the direct definition (no zero is multiplied)."""
        return 2 * self.plan.macs

    def nbytes(self, itemsize: int = 4) -> int:
        """Least memory traffic of one call: read x and weight once, write the output once."""
        return itemsize * sum(math.prod(s) for s in (self.x_shape, self.w_shape, self.out_shape))

    def kwargs(self) -> dict:
        """Keyword arguments of ``conv_transpose`` for this geometry."""
        return {"stride": self.stride, "padding": self.padding, "output_padding": self.output_padding,
                "groups": self.groups, "dilation": self.dilation}

    def to_dict(self) -> dict:
        d = asdict(self)
        d.pop("plan")
        return d

    def describe(self) -> str:
        """Compact one-line geometry, in the ``--shape`` syntax."""
        def axes(v):
            return "x".join(map(str, v))
        return (f"n={self.n},cin={self.c_in},cout={self.c_out},in={axes(self.spatial)},k={axes(self.kernel)},"
                f"s={axes(self.stride)},p={axes(self.padding)},op={axes(self.output_padding)},g={self.groups},"
                f"d={axes(self.dilation)}")


def builtin_workloads() -> dict[str, Workload]:
    """The built-in workloads (``fastdeconv/workloads.json``), by name, in file order.

    Returns
    -------
    dict of str to Workload
    """
    text = importlib.resources.files("fastdeconv").joinpath("workloads.json").read_text(encoding="utf-8")
    return {d["name"]: Workload.from_dict(d) for d in json.loads(text)["workloads"]}


def quick_workloads() -> dict[str, Workload]:
    """The workloads of ``compare --quick``: ``seed000_tiny`` and the small real layers of ``QUICK_LAYERS``.

    Returns
    -------
    dict of str to Workload
    """
    quick = {QUICK_WORKLOAD: builtin_workloads()[QUICK_WORKLOAD]}
    quick.update((d["name"], Workload.from_dict(d)) for d in QUICK_LAYERS)
    return quick


def parse_shape(spec: str) -> Workload:
    """An ad-hoc workload from the compact ``--shape`` syntax (see ``SHAPE_HELP``).

    Parameters
    ----------
    spec : str
        e.g. ``"n=8,cin=64,cout=32,in=32x32,k=4,s=2,p=1"``.

    Returns
    -------
    Workload

    Raises
    ------
    ValueError
        Unknown or repeated key, a value that is not an int (or ints joined by 'x'), a missing ``in`` or
        ``cin``, or a geometry ``conv_transpose`` refuses.
    """
    if not isinstance(spec, str) or not spec.strip():
        raise ValueError("shape must be a non-empty string like 'cin=64,cout=32,in=32x32,k=4,s=2,p=1'")
    fields: dict = {}
    for item in spec.replace(" ", ",").split(","):
        if not item:
            continue
        key, sep, value = item.partition("=")
        key = key.strip().lower()
        if not sep or key not in _SHAPE_KEYS:
            raise ValueError(f"shape: {item!r} is not key=value with key in {', '.join(_SHAPE_KEYS)}")
        target = _SHAPE_KEYS[key]
        if target in fields:
            raise ValueError(f"shape: key {key!r} given twice")
        if target == "name":
            fields[target] = value
            continue
        try:
            ints = [int(v) for v in value.lower().split("x")]
        except ValueError:
            raise ValueError(f"shape: {key}={value!r} must be an int or ints joined by 'x'") from None
        if target in ("N", "C_in", "C_out", "groups") and len(ints) != 1:
            raise ValueError(f"shape: {key} takes one int, got {value!r}")
        fields[target] = ints[0] if len(ints) == 1 and target != "spatial" else ints
    for required in ("spatial", "C_in"):
        if required not in fields:
            key = next(k for k, v in _SHAPE_KEYS.items() if v == required)
            raise ValueError(f"shape: {key}= is required (got {spec!r})")
    fields.setdefault("name", spec)
    return Workload.from_dict(fields)


def make_inputs(wl: Workload, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Standard-normal float32 x and weight for a workload (the same arrays for every engine)."""
    rng = np.random.default_rng(seed)
    geo.check_memory(wl.x_shape, np.float32, "the workload's input")
    return (rng.standard_normal(wl.x_shape, dtype=np.float32),
            rng.standard_normal(wl.w_shape, dtype=np.float32))


# --------------------------------------------------------------------------- the reference


def reference(x: np.ndarray, weight: np.ndarray, wl: Workload) -> np.ndarray:
    """Transposed convolution straight from the definition, in float64 NumPy, independent of the kernels: the
    tests' reference (:func:`fastdeconv.tools.reference.conv_transpose_ref`) with the workload's geometry.

    Parameters
    ----------
    x : numpy.ndarray
        (N, C_in, *spatial).
    weight : numpy.ndarray
        (C_in, C_out // groups, *kernel).
    wl : Workload
        The geometry.

    Returns
    -------
    numpy.ndarray
        float64 (N, C_out, *out_spatial).
    """
    geo.check_memory(wl.out_shape, np.float64, "the reference's output")
    return conv_transpose_ref(x, weight, **wl.kwargs())


def max_rel_error(y: np.ndarray, ref: np.ndarray) -> float:
    """``max |y - ref| / max |ref|`` (inf when the shapes differ)."""
    y = np.asarray(y)
    if y.shape != ref.shape:
        return math.inf
    scale = float(np.max(np.abs(ref))) if ref.size else 0.0
    err = float(np.max(np.abs(y.astype(np.float64) - ref))) if ref.size else 0.0
    return err / scale if scale > 0 else err


# --------------------------------------------------------------------------- engines


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


def _fastdeconv(method: str):
    from .._api import conv_transpose

    def make(x, w, wl):
        kw = wl.kwargs()
        return lambda: conv_transpose(x, w, method=method, **kw)
    return make


def auto_choice(wl: Workload) -> str | None:
    """The form ``method="auto"`` picks for a workload, when the package can say (else None)."""
    import fastdeconv

    try:
        if hasattr(fastdeconv, "plan"):
            chosen = fastdeconv.plan(wl.x_shape, wl.w_shape, **wl.kwargs())
            for attr in ("variant", "method"):
                value = chosen.get(attr) if isinstance(chosen, dict) else getattr(chosen, attr, None)
                if isinstance(value, str):
                    return value
        from .._api import choose_method

        return choose_method(wl.plan)
    except Exception:  # purely informative: never let it break a comparison
        return None


# --------------------------------------------------------------------------- compiling ahead


def variants_needed(wl: Workload, methods: Sequence[str]) -> list[str]:
    """The variants a comparison of ``wl`` will run: each form's pick, and for ``auto`` also the candidates its
    first call may time (the one-time calibration)."""
    from .. import _cost

    needed = []
    for method in methods:
        plan = geo.make_plan(wl.x_shape, wl.w_shape, np.float32, np.float32, wl.stride, wl.padding,
                             wl.output_padding, wl.groups, wl.dilation, None, method)
        choice = _cost.choose(plan)
        needed.append(choice.variant)
        if method == "auto":
            try:
                from .. import _calibrate

                needed += list(_calibrate.candidates(plan, choice.estimates))
            except Exception:  # only a hint of what to compile ahead: the call itself stays correct
                pass
    return list(dict.fromkeys(needed))


def _compile_variant(variant: str, specs: list[str]) -> None:
    """Worker: run ``variant`` once on each workload (by ``--shape`` spec), so that numba compiles and caches
    exactly the kernels the comparison will load."""
    from .warmup import _forced

    for spec in specs:
        wl = parse_shape(spec)
        x, w = make_inputs(wl)
        _forced(variant, x, w, wl.kwargs())


def start_compiling(workloads: Sequence[Workload], methods: Sequence[str], jobs: int | None = None):
    """Compile the variants the comparison needs in worker processes (numba compiles on one core; this uses
    all of them), writing numba's on-disk cache; returns the pool's futures (empty when not worth it).

    Nothing is timed in the workers; when the cache is already warm they only load it.
    """
    jobs = jobs or os.cpu_count() or 1
    by_variant: dict[str, list[str]] = {}
    for wl in sorted(workloads, key=lambda w: w.nbytes()):
        for variant in variants_needed(wl, methods):
            specs = by_variant.setdefault(variant, [])
            if variant != "zerofill" or not specs:  # its kernels do not depend on the shape: the smallest one
                specs.append(wl.describe() + f",name={wl.name}")
    if jobs < 2 or len(by_variant) < 2:
        return None, []
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    from .warmup import _worker_init

    pool = ProcessPoolExecutor(max_workers=min(jobs, len(by_variant)), initializer=_worker_init,
                               mp_context=multiprocessing.get_context("spawn"))
    # the variants with the most kernels first, so that the workers finish together
    order = sorted(by_variant, key=lambda v: -_COMPILE_WEIGHT.get(v, 1))
    return pool, [pool.submit(_compile_variant, v, by_variant[v]) for v in order]


def finish_compiling(pool, futures) -> None:
    """Wait for :func:`start_compiling`'s workers (a failure there is not fatal: the call compiles itself); an
    interrupt meanwhile stops them at once (``_interrupts.stop_workers``) and is raised."""
    if pool is None:
        return
    from .. import _interrupts

    try:
        for _ in _interrupts.results_as_completed(futures):
            pass
    except BaseException:
        _interrupts.stop_workers(pool)
        raise
    pool.shutdown()


# --------------------------------------------------------------------------- timing


def measure(fns: dict[str, Callable[[], object]], budget: float, rounds: int) -> dict[str, float]:
    """Median seconds per call of each callable over ``rounds`` interleaved batches.

    Each callable has already been called once (warm-up). A batch repeats a call so that the batch lasts
    about ``budget / rounds`` seconds; a call slower than ``budget`` is timed once, not ``rounds`` times.
    """
    per: dict[str, list[float]] = {name: [] for name in fns}
    batch: dict[str, int] = {}
    for name, f in fns.items():
        t0 = time.perf_counter()
        f()
        one = max(time.perf_counter() - t0, 1e-7)
        batch[name] = max(1, int(budget / rounds / one))
        if one > budget:
            per[name].append(one)
    for _ in range(rounds):
        for name, f in fns.items():
            if per[name] and batch[name] == 1 and per[name][0] > budget:
                continue
            t0 = time.perf_counter()
            for _ in range(batch[name]):
                f()
            per[name].append((time.perf_counter() - t0) / batch[name])
    return {name: statistics.median(v) for name, v in per.items()}


class _Progress:
    """A progress bar on stderr: tqdm, else rich, else plain lines (disabled when not wanted)."""

    def __init__(self, total: int, enabled: bool):
        self.kind, self.total, self.done = "off", total, 0
        if not enabled:
            return
        try:
            from tqdm import tqdm

            self.bar, self.kind = tqdm(total=total, file=sys.stderr, leave=False, unit="engine"), "tqdm"
            return
        except ImportError:
            pass
        try:
            from rich.progress import Progress

            self.bar, self.kind = Progress(transient=True), "rich"
            self.bar.start()
            self.task = self.bar.add_task("compare", total=total)
            return
        except ImportError:
            self.kind = "plain"

    def step(self, label: str) -> None:
        self.done += 1
        if self.kind == "tqdm":
            self.bar.set_description(label)
            self.bar.update(1)
        elif self.kind == "rich":
            self.bar.update(self.task, advance=1, description=label)
        elif self.kind == "plain":
            print(f"[{self.done}/{self.total}] {label}", file=sys.stderr, flush=True)

    def write(self, line: str) -> None:
        if self.kind == "tqdm":
            self.bar.write(line, file=sys.stdout)
        else:
            print(line, flush=True)

    def close(self) -> None:
        if self.kind in ("tqdm", "rich"):
            self.bar.close() if self.kind == "tqdm" else self.bar.stop()


# --------------------------------------------------------------------------- the comparison


@dataclass
class Options:
    """Settings of one comparison (the CLI's flags)."""

    methods: Sequence[str] = METHODS
    peers: Sequence[str] = PEERS
    threads: int | None = None
    budget: float = 1.0  # seconds of timing per engine and workload
    rounds: int = 5
    peak_gflops: float | None = None  # None: this machine's, measured once (``tools.roofline``)
    stream_gbs: float | None = None
    check: bool = True
    progress: bool = True
    roof_source: str = ""  # where the roofs came from (filled in by ``compare``)
    # compile the needed kernels in worker processes first (all cores). Off by default: spawned workers import
    # the caller's ``__main__``, which must then be guarded by ``if __name__ == "__main__"`` (the CLI's is)
    precompile: bool = False


def _with_roofline(opts: Options, threads: int) -> Options:
    """``opts`` with both roofs filled in: the given ones, else this machine's (measured once, then cached)."""
    from dataclasses import replace

    from .roofline import cpu_name, roofline

    peak, stream = opts.peak_gflops, opts.stream_gbs
    if peak is None or stream is None:
        roof = roofline(threads)
        how = "measured earlier, cached" if roof["source"] == "cached" else roof["source"].replace("measured",
                                                                                                "measured now", 1)
        source = f"{roof['cpu']} (roofline {how}"
        peak = roof["peak_gflops"] if peak is None else peak
        stream = roof["stream_gbs"] if stream is None else stream
        source += ", partly overridden)" if opts.peak_gflops or opts.stream_gbs else ")"
    else:
        source = f"{cpu_name()} (roofline given)"
    return replace(opts, peak_gflops=float(peak), stream_gbs=float(stream), roof_source=source)


def roofline_seconds(wl: Workload, peak_gflops: float, stream_gbs: float) -> float:
    """``max(flops / peak, bytes / bandwidth)``: no engine can beat it on this machine."""
    return max(wl.flops / (peak_gflops * 1e9), wl.nbytes() / (stream_gbs * 1e9))


def compare(workloads: Sequence[Workload], opts: Options, write: Callable[[str], None] | None = None) -> dict:
    """Time every method and peer on every workload; print the table as it goes; return the results.

    Parameters
    ----------
    workloads : sequence of Workload
    opts : Options
    write : callable, optional
        Receives each table line (default: print to stdout, above the progress bar).

    Returns
    -------
    dict
        JSON-ready: ``machine`` (threads, peaks, versions), ``skipped_peers``, ``results`` (one entry per
        workload with ``engines`` -> seconds, gflops, roofline_pct, speedup_vs_best_peer, max_rel_err, ok),
        and ``geomean_speedup`` per method over the workloads that had a peer.
    """
    if not workloads:
        raise ValueError("workloads must not be empty")
    bad = [m for m in opts.methods if m not in METHODS]
    if bad:
        raise ValueError(f"methods must be among {', '.join(METHODS)}; got {', '.join(bad)}")
    bad = [p for p in opts.peers if p not in PEERS]
    if bad:
        raise ValueError(f"peers must be among {', '.join(PEERS)}; got {', '.join(bad)}")
    threads = set_threads(opts.threads)
    opts = _with_roofline(opts, threads)  # first: measuring it needs the cores to itself
    # numba compiles the kernels the comparison needs on every core while the peers load (only workloads small
    # enough to run in a worker)
    small = [wl for wl in workloads if wl.nbytes() < _PRECOMPILE_BYTES]
    pool, futures = start_compiling(small, opts.methods) if opts.precompile else (None, [])
    try:
        makers = {f"fd:{m}": _fastdeconv(m) for m in opts.methods}
        peer_makers, skipped = load_peers(opts.peers, threads)
    except BaseException:  # a Ctrl-C above all: the workers stop now, not after their compilations
        if pool is not None:
            from .. import _interrupts

            _interrupts.stop_workers(pool)
        raise
    finish_compiling(pool, futures)
    makers.update(peer_makers)
    engines = list(makers)
    progress = _Progress(len(workloads) * len(engines), opts.progress and len(workloads) * len(engines) > 1)
    out = write or progress.write
    for name, why in skipped.items():
        out(f"# peer {name} skipped ({why})")
    if any(why.startswith(("ModuleNotFoundError", "ImportError")) for why in skipped.values()):
        out(f"# to time the other engines too: {PEERS_INSTALL}")
    load = _load_average()
    if load is not None and load > 0.5 * (os.cpu_count() or 1):
        out(f"# load average {load:.1f} on {os.cpu_count()} cores: other work is running, timings are noisy")
    out(f"# {threads} thread(s) on {opts.roof_source}; roofline = max(flops / {opts.peak_gflops:g} GFLOP/s, "
        f"bytes / {opts.stream_gbs:g} GB/s); speedup = fastest peer time / engine time; "
        f"err = max|y - ref| / max|ref| vs float64 NumPy")
    out(_header())
    results = []
    try:
        for wl in workloads:
            results.append(_compare_one(wl, makers, opts, progress, out))
    finally:
        progress.close()
    geomean = {}
    for m in opts.methods:
        sp = [r["engines"][f"fd:{m}"]["speedup_vs_best_peer"] for r in results
              if r["engines"].get(f"fd:{m}", {}).get("speedup_vs_best_peer")]
        if sp:
            geomean[m] = math.exp(sum(map(math.log, sp)) / len(sp))
    if geomean:
        out("geomean speedup over the fastest peer: " + ", ".join(f"{m} {_ratio(v)}" for m, v in geomean.items())
            + f" ({len(results)} workload(s))")
    wrong = [f"{r['workload']['name']}/{e}" for r in results for e, v in r["engines"].items() if v["ok"] is False]
    failures = [f for f in wrong if "/fd:" in f]  # a peer's disagreement is reported, not fastdeconv's failure
    out("correctness: " + ("not checked (--no-check)" if not opts.check else
                           "all engines agree with the reference" if not wrong else "MISMATCH in " + ", ".join(wrong)))
    return {"machine": _machine(threads, opts), "skipped_peers": skipped, "results": results,
            "geomean_speedup": geomean, "ok": not failures}


def _header() -> str:
    return (f"{'workload':<16}{'engine':<12}{'time ms':>10}{'GFLOP/s':>10}{'% roof':>8}{'speedup':>9}"
            f"{'err':>10}  check")


def _compare_one(wl: Workload, makers: dict, opts: Options, progress: _Progress, out) -> dict:
    x, w = make_inputs(wl)
    ref = reference(x, w, wl) if opts.check else None
    tol = RTOL[np.dtype(np.float32)]
    fns, info = {}, {}
    for name, make in makers.items():
        progress.step(f"{wl.name} {name}")
        entry = {"seconds": None, "gflops": None, "roofline_pct": None, "speedup_vs_best_peer": None,
                 "max_rel_err": None, "ok": None, "note": ""}
        info[name] = entry
        try:
            f = make(x, w, wl)
            if f is None:
                entry["note"] = "unsupported geometry"
                continue
            y = f()  # warm-up: compiles / loads the numba cache, builds the peer's graph
            if ref is not None:
                err = max_rel_error(y, ref)
                entry["max_rel_err"], entry["ok"] = err, bool(err <= tol)
            fns[name] = f
        except Exception as exc:
            entry["note"] = f"error {type(exc).__name__}: {str(exc)[:80]}"
            entry["ok"] = False if name.startswith("fd:") else None
    times = measure(fns, opts.budget, opts.rounds) if fns else {}
    roof = roofline_seconds(wl, opts.peak_gflops, opts.stream_gbs)
    peer_times = [t for name, t in times.items() if not name.startswith("fd:")]
    best_peer = min(peer_times) if peer_times else None
    choice = auto_choice(wl) if "fd:auto" in makers else None
    for name, t in times.items():
        entry = info[name]
        entry.update(seconds=t, gflops=wl.flops / t / 1e9, roofline_pct=100.0 * roof / t,
                     speedup_vs_best_peer=(best_peer / t) if best_peer else None)
    if choice:
        info["fd:auto"]["note"] = (info["fd:auto"]["note"] + f" picks {choice}").strip()
    for name, e in info.items():
        out(_row(wl.name, name, e))
    best = min(peer_times) if peer_times else None
    best_name = next((n for n, t in times.items() if t == best and not n.startswith("fd:")), None)
    return {"workload": wl.to_dict(), "geometry": wl.describe(), "gflop": wl.flops / 1e9, "bytes": wl.nbytes(),
            "roofline_seconds": roof, "best_peer": best_name, "engines": info}


def _row(workload: str, engine: str, e: dict) -> str:
    def num(v, fmt):
        return format(v, fmt) if v is not None else "-"
    check = {True: "ok", False: "FAIL", None: "-"}[e["ok"]]
    line = (f"{workload:<16}{engine:<12}{num(e['seconds'] and e['seconds'] * 1e3, '.3f'):>10}"
            f"{num(e['gflops'], '.1f'):>10}{num(e['roofline_pct'], '.1f'):>8}"
            f"{_ratio(e['speedup_vs_best_peer']):>9}"
            f"{num(e['max_rel_err'], '.1e'):>10}  {check}")
    return line + (f"  {e['note']}" if e["note"] else "")


def _ratio(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x" if v >= 0.1 else f"{v:.3f}x"


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):  # not on every platform
        return None


def _machine(threads: int, opts: Options) -> dict:
    import numba

    from .._store import cpu_name

    versions = {"python": platform.python_version(), "numpy": np.__version__, "numba": numba.__version__}
    for mod in ("torch", "onnxruntime", "tensorflow", "jax"):
        if mod in sys.modules:
            versions[mod] = getattr(sys.modules[mod], "__version__", "?")
    return {"threads": threads, "cpu_count": os.cpu_count(), "machine": platform.machine(),
            "load_average_at_end": _load_average(),
            "peak_gflops": opts.peak_gflops, "stream_gbs": opts.stream_gbs, "roofline_source": opts.roof_source,
            "cpu": cpu_name(), "versions": versions,
            "budget_seconds": opts.budget, "rounds": opts.rounds}


# --------------------------------------------------------------------------- the chart


def plot(result: dict, path: str) -> None:
    """A grouped bar chart of % of roofline per workload and engine (log scale), saved as PNG.

    Parameters
    ----------
    result : dict
        What :func:`compare` returned.
    path : str
        Output file (PNG).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["results"]
    engines = [e for e in rows[0]["engines"]] if rows else []
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 2.0 + 0.25 * len(rows) * len(engines))), 5.0))
    width = 0.8 / max(1, len(engines))
    for j, engine in enumerate(engines):
        xs, hs = [], []
        for i, r in enumerate(rows):
            pct = r["engines"].get(engine, {}).get("roofline_pct")
            if pct:
                xs.append(i + (j - (len(engines) - 1) / 2) * width)
                hs.append(pct)
        ax.bar(xs, hs, width, label=engine)
    ax.set_yscale("log")
    ax.set_xticks(range(len(rows)), [r["workload"]["name"] for r in rows], rotation=30, ha="right")
    ax.set_ylabel("% of roofline (higher is better)")
    m = result["machine"]
    ax.set_title(f"conv_transpose, {m['threads']} thread(s): roofline max(flops/{m['peak_gflops']:g} GFLOP/s, "
                 f"bytes/{m['stream_gbs']:g} GB/s)", fontsize=9)
    ax.legend(fontsize=8, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
