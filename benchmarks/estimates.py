"""Estimate against measurement: every applicable variant of every workload, forced, timed, beside its estimate.

    python benchmarks/estimates.py [--threads 2] [--rounds 5] [--json benchmarks/results/estimates.json]
                                   [--workload NAME ...]

The workloads: the package's (``src/fastdeconv/workloads.json``), ``benchmarks/unseen_workloads.json`` and
``benchmarks/channel_rich_workloads.json``. For each, the cost model's estimate of every variant ``auto`` ranks
(on this machine's profile: ``python -m fastdeconv machine --measure`` first), the median time of each forced
(``method=<name>``, one-off calls, float32) and of ``auto``, all interleaved round by round. A variant
estimated more than ``--skip`` times slower than the best and longer than a second is not timed (noted). The
summary counts the workloads whose chosen variant's estimate is within +-35% of its time and where ``auto`` is
within 10% / 25% of the fastest forced variant. ``benchmarks/make_performance_doc.py`` renders the JSON into
docs/performance.md.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
SETS = {"built-in": ROOT / "src" / "fastdeconv" / "workloads.json",
        "unseen": ROOT / "benchmarks" / "unseen_workloads.json",
        "channel-rich": ROOT / "benchmarks" / "channel_rich_workloads.json"}
DEFAULT_JSON = ROOT / "benchmarks" / "results" / "estimates.json"


def _medians(rounds: int, calls: dict) -> dict:
    """Median seconds of each of ``calls`` (name -> function of no arguments) over ``rounds`` rounds, the calls
    interleaved within a round in a fresh random order each round (a drift of the machine's speed hits them
    alike), after one call each (which loads the kernels); a call over a second stops its rounds at two."""
    for fn in calls.values():
        fn()
    times = {name: [] for name in calls}
    order = list(calls.items())
    shuffle = np.random.default_rng(0)
    for _ in range(rounds):
        # (a fresh order every round: no call always follows the same one, whose memory and caches it inherits)
        for i in shuffle.permutation(len(order)):
            name, fn = order[i]
            if len(times[name]) >= 2 and max(times[name]) > 1.0:
                continue
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: statistics.median(t) for name, t in times.items()}


def summary(rows: list[dict]) -> dict:
    """Counts over the workloads: the chosen variant's estimate within +-35% of its time; auto within 10% and
    25% of the fastest forced variant."""
    within35 = within10 = within25 = 0
    for r in rows:
        chosen = r["variants"].get(r["chosen"], {})
        if chosen.get("seconds"):
            within35 += abs(chosen["estimate"] / chosen["seconds"] - 1) <= 0.35
        fastest = min(v["seconds"] for v in r["variants"].values() if v.get("seconds"))
        within10 += r["auto_seconds"] <= 1.10 * fastest
        within25 += r["auto_seconds"] <= 1.25 * fastest
    return {"workloads": len(rows), "estimate_within_35pct": within35, "auto_within_10pct": within10,
            "auto_within_25pct": within25}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--skip", type=float, default=20.0)
    parser.add_argument("--json", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--workload", nargs="*", default=[])
    args = parser.parse_args(argv)

    import fastdeconv as fd
    from fastdeconv import _cost, _threads
    from fastdeconv.tools.compare import Workload

    threads = min(args.threads, _threads.max_threads())
    fd.set_num_threads(threads)
    rows = []
    for set_name, path in SETS.items():
        for d in json.loads(path.read_text(encoding="utf-8"))["workloads"]:
            if args.workload and d["name"] not in args.workload:
                continue
            w = Workload.from_dict(d)
            kw = {"stride": w.stride, "padding": w.padding, "output_padding": w.output_padding, "groups": w.groups,
                  "dilation": w.dilation}
            rng = np.random.default_rng(0)
            x = rng.standard_normal(w.x_shape).astype(np.float32)
            wt = rng.standard_normal(w.w_shape).astype(np.float32)
            choice = fd.plan(w.x_shape, w.w_shape, **kw)
            estimates = _cost.estimate(w.plan, choice.threads)
            best = min(estimates.values())
            variants, calls = {}, {"auto": partial(fd.conv_transpose, x, wt, **kw)}
            for name, est in sorted(estimates.items(), key=lambda kv: kv[1]):
                entry = {"estimate": est}
                if est > args.skip * best and est > 1.0:
                    entry["note"] = f"not timed: estimated {est / best:.0f}x the best"
                else:
                    try:
                        fd.conv_transpose(x, wt, method=name, **kw)
                        calls[name] = partial(fd.conv_transpose, x, wt, method=name, **kw)
                    except ValueError as exc:  # (refused: e.g. only an operator can run it)
                        entry["note"] = str(exc).split(":")[0]
                variants[name] = entry
            # (calls of a millisecond or less: ten times the rounds, their medians are otherwise a few samples of
            # microsecond noise)
            medians = _medians(args.rounds * (10 if best < 1e-3 else 1), calls)
            for name, seconds in medians.items():
                if name != "auto":
                    variants[name]["seconds"] = seconds
            auto = medians["auto"]
            row = {"name": w.name, "set": set_name, "geometry": f"{w.x_shape} * {w.w_shape} {kw}",
                   "chosen": choice.variant, "auto_seconds": auto, "variants": variants}
            rows.append(row)
            ch = variants[choice.variant]
            print(f"{set_name:12s} {w.name:24s} auto {auto * 1e3:9.3f} ms ({choice.variant}: est "
                  f"{ch['estimate'] * 1e3:.3f} ms, forced {ch.get('seconds', float('nan')) * 1e3:.3f} ms); fastest "
                  f"{min(v.get('seconds', np.inf) for v in variants.values()) * 1e3:.3f} ms", flush=True)
    profile = fd.machine.profile()
    result = {"command": "python benchmarks/estimates.py " + " ".join(argv if argv is not None else sys.argv[1:]),
              "threads": threads, "profile": {k: profile[k] for k in ("key", "kind", "rates", "seconds")},
              "rows": rows, "summary": summary(rows)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
    print(json.dumps(result["summary"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
