"""The workloads ``python -m fastdeconv compare`` times: the built-in set (package data), ``--quick``'s small
layers and ad-hoc ``--shape`` specs, with their inputs and the float64 reference they are checked against."""

from __future__ import annotations

import importlib.resources
import json
import math
from dataclasses import asdict, dataclass, field

import numpy as np

from .. import _geometry as geo
from .reference import conv_transpose_ref

QUICK_WORKLOAD = "seed000_tiny"
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
