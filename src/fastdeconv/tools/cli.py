"""Command line: ``python -m fastdeconv compare|warmup|calibrate|machine|tune ...`` (the ``fastdeconv`` script).

A user error (a bad flag value, an output path that cannot be written) ends the command with exit status 2
and one line on stderr naming the flag, before anything runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import warnings
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path

from . import compare as cmp
from . import workloads as wls


def _csv(kind: str, allowed: Sequence[str]):
    def parse(text: str) -> list[str]:
        items = [t.strip() for t in text.split(",") if t.strip()]
        if items == ["none"]:
            return []
        bad = [t for t in items if t not in allowed]
        if bad:
            raise argparse.ArgumentTypeError(f"unknown {kind} {', '.join(bad)}; choose from {', '.join(allowed)}")
        return list(dict.fromkeys(items))
    return parse


def _positive(kind: type):
    def parse(text: str):
        try:
            value = kind(text)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError(f"must be finite, got {text}")
        return value
    return parse


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line on stderr (no usage block) and exit status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message}\n")


def _dtypes(text: str) -> list[str]:
    items = [t.strip() for t in text.split(",") if t.strip()]
    bad = [t for t in items if t not in ("float32", "float64")]
    if not items or bad:
        raise argparse.ArgumentTypeError(f"choose float32 and/or float64 (comma-separated), got {text!r}")
    return list(dict.fromkeys(items))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m fastdeconv``."""
    parser = _Parser(prog="fastdeconv", description="fastdeconv command line tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    w = sub.add_parser(
        "warmup", help="compile every kernel into numba's on-disk cache (once after installing)",
        description="Compile every kernel fastdeconv can run into numba's on-disk cache, on all cores, so that "
                    "the first call of any layer in a later process loads compiled code instead of compiling.")
    w.add_argument("--dtypes", type=_dtypes, default=["float32", "float64"],
                   help="comma-separated dtypes to compile for (default: float32,float64)")
    w.add_argument("--jobs", type=_positive(int), default=None, metavar="N",
                   help="worker processes (default: the number of CPU cores)")
    w.add_argument("--no-progress", action="store_true", help="no progress bar")
    p = sub.add_parser(
        "compare", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="time scatter / gather / zerofill / auto against other engines and a reference",
        description="Per workload and engine: median time over interleaved rounds, GFLOP/s (2 x multiply-adds "
                    "of the direct definition), %% of this machine's roofline max(flops/peak, bytes/bandwidth), "
                    "speedup over the fastest installed peer (torch, onnxruntime, tensorflow, jax; absent ones "
                    "are skipped) and the error against an independent float64 NumPy reference.",
        epilog=wls.SHAPE_HELP + "\n\nbuilt-in workloads: " + ", ".join(_names()) +
        "\n\nexamples:\n  python -m fastdeconv compare --quick\n"
        "  python -m fastdeconv compare --all --threads 2 --plot compare.png --json compare.json\n"
        "  python -m fastdeconv compare --workload dcgan_l2 unet_up --methods scatter,gather,auto --peers torch")
    p.add_argument("--workload", nargs="+", action="extend", default=[], metavar="NAME",
                   help="built-in workload(s) to run (names may also be comma-separated)")
    p.add_argument("--all", action="store_true", help="every built-in workload (the default without "
                   "--workload/--shape, except with --quick)")
    p.add_argument("--shape", action="append", default=[], metavar="SPEC",
                   help="an ad-hoc workload, e.g. n=8,cin=64,cout=32,in=32x32,k=4,s=2,p=1 (syntax below)")
    p.add_argument("--methods", type=_csv("method", cmp.METHODS), default=list(cmp.METHODS),
                   help="comma-separated fastdeconv forms (default: %(default)s)".replace("%(default)s",
                                                                                        ",".join(cmp.METHODS)))
    p.add_argument("--peers", type=_csv("peer", cmp.PEERS), default=None,
                   help=f"comma-separated other engines, or 'none' (default: {','.join(cmp.PEERS)}; with --quick "
                        f"{','.join(cmp.QUICK_PEERS)}); peers that are not installed are skipped")
    p.add_argument("--threads", type=_positive(int), default=None, metavar="N",
                   help="threads for fastdeconv (numba), BLAS and every peer (default: numba's current count)")
    p.add_argument("--plot", metavar="PNG", help="save a bar chart of %% of roofline (needs matplotlib: "
                   "pip install fastdeconv[plot]; the extension picks the format: .png, .svg, .pdf, ...)")
    p.add_argument("--json", metavar="FILE", help="write every number to a JSON file")
    quick = ", ".join([wls.QUICK_WORKLOAD] + [d["name"] for d in wls.QUICK_LAYERS])
    p.add_argument("--quick", action="store_true",
                   help=f"small workloads ({quick} unless --workload/--shape), few repetitions: seconds")
    p.add_argument("--budget", type=_positive(float), default=None, metavar="SECONDS",
                   help="timing seconds per engine and workload (default 1.0; 0.05 with --quick)")
    p.add_argument("--rounds", type=_positive(int), default=None,
                   help="interleaved timing rounds; the median is reported (default 5; 3 with --quick)")
    p.add_argument("--peak-gflops", type=_positive(float), default=None,
                   help="compute roof in GFLOP/s (default: this machine's fp32 GEMM peak at the thread count in "
                        "use, measured once and cached)")
    p.add_argument("--stream-gbs", type=_positive(float), default=None,
                   help="memory roof in GB/s (default: this machine's streaming copy bandwidth, measured once "
                        "and cached)")
    p.add_argument("--no-check", action="store_true", help="skip the float64 reference check")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_calibrate(sub)
    _add_machine(sub)
    _add_tune(sub)
    return parser


def _names() -> list[str]:
    try:
        return list(wls.builtin_workloads())
    except Exception:  # the help text must never fail
        return []


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 a correctness failure, 2 bad arguments, 130
    interrupted: Ctrl-C stops a command and its worker processes at once, the shell's status for SIGINT).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
    """
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("fastdeconv: interrupted", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "calibrate":
        return _calibrate_command(args, parser._subparsers._group_actions[0].choices["calibrate"])
    if args.command == "machine":
        return _machine_command(args)
    if args.command == "tune":
        return _tune_command(args, parser._subparsers._group_actions[0].choices["tune"])
    if args.command == "warmup":
        from .warmup import warmup

        done = warmup(args.dtypes, jobs=args.jobs, progress=not args.no_progress and sys.stderr.isatty())
        return 1 if done["errors"] else 0
    if args.command != "compare":
        parser.print_help()
        return 2
    compare_parser = parser._subparsers._group_actions[0].choices["compare"]
    try:
        workloads = _select(args)
    except (ValueError, TypeError) as exc:
        compare_parser.error(str(exc))
    peers = args.peers if args.peers is not None else list(cmp.QUICK_PEERS if args.quick else cmp.PEERS)
    if not args.methods and not peers:
        compare_parser.error("--methods and --peers select nothing to run: name at least one method or peer")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            compare_parser.error("--plot needs matplotlib: pip install 'fastdeconv[plot]'")
        problem = _plot_format_problem(args.plot)
        if problem:
            compare_parser.error(f"--plot {args.plot}: {problem}")
    for flag, path in (("--json", args.json), ("--plot", args.plot)):
        problem = path and _output_path_problem(path)
        if problem:
            compare_parser.error(f"{flag} {path}: {problem}")
    if args.json and args.plot and Path(args.json).resolve() == Path(args.plot).resolve():
        compare_parser.error("--json and --plot name the same file")
    opts = cmp.Options(methods=args.methods, peers=peers, threads=args.threads,
                       budget=args.budget or (0.05 if args.quick else 1.0),
                       rounds=args.rounds or (3 if args.quick else 5),
                       peak_gflops=args.peak_gflops, stream_gbs=args.stream_gbs, check=not args.no_check,
                       progress=not args.no_progress and sys.stderr.isatty(), precompile=True)
    if args.threads is not None:
        from .._threads import max_threads

        if args.threads > max_threads():
            compare_parser.error(f"--threads must be <= NUMBA_NUM_THREADS = {max_threads()}, got {args.threads}")
    result = cmp.compare(workloads, opts)
    result["command"] = "python -m fastdeconv " + " ".join(argv if argv is not None else sys.argv[1:])
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump(result, fh, indent=1)
    if args.plot:
        cmp.plot(result, args.plot)
        print(f"chart written to {args.plot}")
    return 0 if result["ok"] else 1


def _add_calibrate(sub) -> None:
    """The ``calibrate`` subcommand: inspect, clear, export or import the measured choices."""
    p = sub.add_parser(
        "calibrate", help="show, clear, export or import the measured choices (the calibration cache)",
        description="The measured choices of method='auto' (see fastdeconv.calibration), kept in calibration.json "
                    "in $FASTDECONV_CACHE_DIR (default ~/.cache/fastdeconv). Without an option: --show.")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--show", action="store_true", help="print every recorded choice (the default)")
    group.add_argument("--clear", action="store_true", help="delete every recorded choice")
    group.add_argument("--export", metavar="FILE", help="write the recorded choices to FILE (JSON)")
    group.add_argument("--import", dest="import_", metavar="FILE",
                       help="merge the choices of FILE (written by --export) into the cache")


def _calibrate_command(args, parser: argparse.ArgumentParser) -> int:
    from .. import calibration as cal

    if args.clear:
        cal.clear()
        print(f"cleared {cal.cache_file()}")
    elif args.export is not None:
        problem = _output_path_problem(args.export)
        if problem:
            parser.error(f"--export {args.export}: {problem}")
        with _one_line_warnings(parser):
            try:
                count = cal.export(args.export)
            except OSError as exc:
                parser.error(f"--export: cannot write {args.export!r}: {exc.strerror or exc}")
            except ValueError as exc:
                parser.error(f"--export: {exc}")
        print(f"exported {count} record(s) to {args.export}")
    elif args.import_ is not None:
        with _one_line_warnings(parser):
            try:
                count = cal.import_(args.import_)
            except (OSError, ValueError) as exc:
                parser.error(f"--import: {exc}")
        print(f"imported {count} new record(s) into {cal.cache_file()}")
    else:
        records = cal.show()
        print(f"{len(records)} recorded choice(s) in {cal.cache_file()}")
        for k, record in records.items():
            times = ", ".join(f"{name} {sec * 1e3:.3g} ms" for name, sec in sorted(record["seconds"].items(),
                                                                                   key=lambda kv: kv[1]))
            wins = record.get("wins")
            rounds = f"; rounds won {', '.join(f'{n} {w}' for n, w in wins.items())} of {record.get('rounds')}" \
                if wins else ""
            print(f"{k}\n    {record['variant']} (model: {record.get('model', '?')}): {times}{rounds}")
    return 0


def _add_machine(sub) -> None:
    """The ``machine`` subcommand: show or measure this machine's profile (the cost model's rates)."""
    p = sub.add_parser(
        "machine", help="show or measure this machine's profile (the speeds method='auto' decides from)",
        description="The machine profile (see fastdeconv.machine): BLAS GEMM, copy and numba kernel rates, "
                    "measured once per CPU, pool size and BLAS kernel and kept in profile.json in "
                    "$FASTDECONV_CACHE_DIR (default ~/.cache/fastdeconv). Without an option: --show.")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--show", action="store_true", help="print the profile in use (the default)")
    group.add_argument("--measure", action="store_true",
                       help="measure the full profile now (about a second once compiled) and store it")


_UNITS = {"sgemm_peak": (1e-9, "GFLOP/s"), "dgemm_peak": (1e-9, "GFLOP/s"), "bandwidth": (1e-9, "GB/s"),
          "direct_rate": (1e-9, "G multiply-adds/s"), "call": (1e6, "us"), "col2im_element": (1e9, "ns"),
          "im2col_element": (1e9, "ns"), "plane_tap": (1e9, "ns"), "winograd_element": (1e9, "ns")}


def _machine_command(args) -> int:
    from .. import machine

    if args.measure:
        record = machine.measure(full=True)
        print(f"measured the {record['kind']} profile in {record['seconds']:.2f} s")
    info = machine.profile()
    print(f"profile of {info['key']} ({info['kind']}, {info['source']}; measured in {info['seconds']:.2f} s)")
    for name, value in info["rates"].items():
        if name in _UNITS:
            scale, unit = _UNITS[name]
            print(f"  {name:18s} {value * scale:10.4g} {unit}")
        elif name == "gemm_half":
            print(f"  {name:18s} {', '.join(f'{v:.3g}' for v in value)} (M, N, K sides at half rate)")
        else:
            print(f"  {name:18s} {value:10.4g}")
    return 0


def _add_tune(sub) -> None:
    """The ``tune`` subcommand: measure the close candidates of workloads and keep the verdicts as wisdom."""
    p = sub.add_parser(
        "tune", help="time the close candidates of workloads and keep the verdicts as wisdom",
        description="Like FFTW's MEASURE: for each workload, time the variants the cost model rates within 1.6x "
                    "of the best on random data and record the fastest (when consistently faster) in "
                    "calibration's wisdom file, which method='auto' then follows in every process (see "
                    "fastdeconv.calibration; export/import it with 'calibrate').")
    p.add_argument("--workload", nargs="+", action="extend", default=[], metavar="NAME",
                   help="built-in workload(s) to tune (names may also be comma-separated)")
    p.add_argument("--all", action="store_true", help="every built-in workload")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32", help="default: float32")


def _tune_command(args, parser: argparse.ArgumentParser) -> int:
    from .. import calibration as cal

    builtin = wls.builtin_workloads()
    names = [n.strip() for item in args.workload for n in item.split(",") if n.strip()]
    unknown = [n for n in names if n not in builtin]
    if unknown:
        parser.error(f"--workload: unknown workload {', '.join(unknown)}; built-in: {', '.join(builtin)}")
    if args.all:
        names = list(builtin)
    if not names:
        parser.error("name --workload NAME ... or --all")
    for name in dict.fromkeys(names):
        w = builtin[name]
        record = cal.remeasure(w.x_shape, w.w_shape, stride=w.stride, padding=w.padding,
                               output_padding=w.output_padding, groups=w.groups, dilation=w.dilation,
                               dtype=args.dtype)
        if record is None:
            print(f"{name}: nothing to measure (the model is sure, or the layer is tiny)")
        else:
            times = ", ".join(f"{n} {sec * 1e3:.3g} ms" for n, sec in sorted(record["seconds"].items(),
                                                                             key=lambda kv: kv[1]))
            print(f"{name}: {record['variant']} (model: {record['model']}): {times}")
    return 0


@contextmanager
def _one_line_warnings(parser: argparse.ArgumentParser):
    """Warnings raised inside as one line each on stderr (no source line), printed only when the block succeeds:
    a command that fails says one line, its error."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        print(f"{parser.prog}: warning: {w.message}", file=sys.stderr)


_PSEUDO_FILESYSTEMS = ("/proc", "/sys", "/dev")


def _output_path_problem(path: str) -> str | None:
    """Why ``path`` cannot receive an output file (checked before the run, so no result is lost), or None.

    Only a regular file, a symbolic link to one or a new name in an existing directory is written: never a
    directory, FIFO, device or socket, a link to one, or a dangling link (``_store.output_problem``).
    """
    from .._store import output_problem

    target = Path(path)
    if not path or target.name in ("", ".", ".."):
        return "is not a file name"
    parent = target.parent if str(target.parent) else Path(".")
    resolved = Path(os.path.realpath(target))
    if any(str(resolved) == d or str(resolved).startswith(d + "/") for d in _PSEUDO_FILESYSTEMS):
        return "is on a system pseudo-filesystem (/proc, /sys, /dev); choose a regular file"
    problem = output_problem(target)
    if problem:
        return problem
    if not parent.exists():
        return f"directory {str(parent)!r} does not exist"
    if not parent.is_dir():
        return f"{str(parent)!r} is not a directory"
    if target.is_dir():
        return "is a directory; give a file name"
    if target.exists() and not target.is_file():
        return "exists and is not a regular file"
    existed = target.exists()
    try:
        with open(target, "a", encoding="utf-8"):
            pass
    except OSError as exc:
        return f"cannot be written ({exc.strerror or type(exc).__name__})"
    if not existed:
        try:
            target.unlink()
        except OSError:
            pass
    return None


def _plot_format_problem(path: str) -> str | None:
    """An image extension matplotlib cannot write, or None."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    formats = sorted(Figure().canvas.get_supported_filetypes())
    suffix = Path(path).suffix.lower().lstrip(".")
    if suffix in formats:
        return None
    what = f"unknown image extension {'.' + suffix!r}" if suffix else "has no image extension"
    return f"{what}; use one of {', '.join('.' + f for f in formats)}"


def _select(args) -> list:
    builtin = wls.builtin_workloads()
    known = {**builtin, **wls.quick_workloads()}
    names = []
    for item in args.workload:
        parts = [n.strip() for n in item.split(",") if n.strip()]
        if not parts:
            raise ValueError(f"--workload: empty name {item!r}; built-in: {', '.join(builtin)}")
        names += parts
    unknown = [n for n in names if n not in known]
    if unknown:
        raise ValueError(f"--workload: unknown workload {', '.join(unknown)}; built-in: {', '.join(builtin)}; "
                         f"with --quick also: {', '.join(n for n in known if n not in builtin)}")
    chosen = [known[n] for n in dict.fromkeys(names)]
    for spec in args.shape:
        try:
            chosen.append(wls.parse_shape(spec))
        except ValueError as exc:
            raise ValueError(f"--shape {spec!r}: {exc}") from None
    if args.all:
        chosen = list(builtin.values()) + [w for w in chosen if w.name not in builtin]
    if not chosen:
        chosen = list(wls.quick_workloads().values()) if args.quick else list(builtin.values())
    return chosen


if __name__ == "__main__":
    sys.exit(main())
