"""Command line: ``python -m fastdeconv compare ...`` (also installed as the ``fastdeconv`` script)."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence

from . import _compare as cmp


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
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be > 0, got {text}")
        return value
    return parse


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m fastdeconv``."""
    parser = argparse.ArgumentParser(prog="fastdeconv", description="fastdeconv command line tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    p = sub.add_parser(
        "compare", formatter_class=argparse.RawDescriptionHelpFormatter,
        help="time scatter / gather / zerofill / auto against other engines and a reference",
        description="Per workload and engine: median time over interleaved rounds, GFLOP/s (2 x multiply-adds "
                    "of the direct definition), %% of this machine's roofline max(flops/peak, bytes/bandwidth), "
                    "speedup over the fastest installed peer (torch, onnxruntime, tensorflow, jax; absent ones "
                    "are skipped) and the error against an independent float64 NumPy reference.",
        epilog=cmp.SHAPE_HELP + "\n\nbuilt-in workloads: " + ", ".join(_names()) +
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
                   "pip install fastdeconv[plot])")
    p.add_argument("--json", metavar="FILE", help="write every number to a JSON file")
    p.add_argument("--quick", action="store_true",
                   help=f"one small workload ({cmp.QUICK_WORKLOAD} unless --workload/--shape), few repetitions: "
                        "a few seconds")
    p.add_argument("--budget", type=_positive(float), default=None, metavar="SECONDS",
                   help="timing seconds per engine and workload (default 1.0; 0.05 with --quick)")
    p.add_argument("--rounds", type=_positive(int), default=None,
                   help="interleaved timing rounds; the median is reported (default 5; 3 with --quick)")
    p.add_argument("--peak-gflops", type=_positive(float), default=cmp.DEFAULT_PEAK_GFLOPS,
                   help="compute roof in GFLOP/s (default %(default)s: fp32 GEMM, 2 threads, AVX-512)")
    p.add_argument("--stream-gbs", type=_positive(float), default=cmp.DEFAULT_STREAM_GBS,
                   help="memory roof in GB/s (default %(default)s: streaming copy)")
    p.add_argument("--no-check", action="store_true", help="skip the float64 reference check")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_calibrate(sub)
    return parser


def _names() -> list[str]:
    try:
        return list(cmp.builtin_workloads())
    except Exception:  # the help text must never fail
        return []


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; return the exit status (0 ok, 1 a correctness failure, 2 bad arguments).

    Parameters
    ----------
    argv : sequence of str, optional
        Arguments without the program name (default: ``sys.argv[1:]``).

    Returns
    -------
    int
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command == "calibrate":
        return _calibrate_command(args, parser._subparsers._group_actions[0].choices["calibrate"])
    if args.command != "compare":
        parser.print_help()
        return 2
    compare_parser = parser._subparsers._group_actions[0].choices["compare"]
    try:
        workloads = _select(args)
    except (ValueError, TypeError) as exc:
        compare_parser.error(str(exc))
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            compare_parser.error("--plot needs matplotlib: pip install 'fastdeconv[plot]'")
    peers = args.peers if args.peers is not None else list(cmp.QUICK_PEERS if args.quick else cmp.PEERS)
    opts = cmp.Options(methods=args.methods, peers=peers, threads=args.threads,
                       budget=args.budget or (0.05 if args.quick else 1.0),
                       rounds=args.rounds or (3 if args.quick else 5),
                       peak_gflops=args.peak_gflops, stream_gbs=args.stream_gbs, check=not args.no_check,
                       progress=not args.no_progress and sys.stderr.isatty())
    if args.threads is not None:
        from ._threads import max_threads

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
    from . import calibration as cal

    if args.clear:
        cal.clear()
        print(f"cleared {cal.cache_file()}")
    elif args.export is not None:
        try:
            count = cal.export(args.export)
        except OSError as exc:
            parser.error(f"--export: cannot write {args.export!r}: {exc.strerror or exc}")
        print(f"exported {count} record(s) to {args.export}")
    elif args.import_ is not None:
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


def _select(args) -> list:
    builtin = cmp.builtin_workloads()
    names = [n for item in args.workload for n in item.split(",") if n]
    unknown = [n for n in names if n not in builtin]
    if unknown:
        raise ValueError(f"unknown workload {', '.join(unknown)}; built-in: {', '.join(builtin)}")
    chosen = [builtin[n] for n in dict.fromkeys(names)]
    chosen += [cmp.parse_shape(s) for s in args.shape]
    if args.all:
        chosen = list(builtin.values()) + [w for w in chosen if w.name not in builtin]
    if not chosen:
        chosen = [builtin[cmp.QUICK_WORKLOAD]] if args.quick else list(builtin.values())
    return chosen


if __name__ == "__main__":
    sys.exit(main())
