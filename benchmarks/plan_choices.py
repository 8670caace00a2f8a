"""Record the planner's choices, or compare two records: what a change of the model or of the variants moved.

    python benchmarks/plan_choices.py record OUT.json     # fd.plan on every workload file, auto/scatter/gather,
                                                           # float32/float64: variant, reason, every estimate
    python benchmarks/plan_choices.py compare A.json B.json

Measured calibration is off (the model's choices alone). ``compare`` prints every difference in variant, form,
reason or serial flag, and every estimate more than 1e-12 relative apart, and exits 1 when there is one.
"""

import json
import os
import sys
from pathlib import Path

os.environ["FASTDECONV_CALIBRATE"] = "0"

ROOT = Path(__file__).resolve().parent.parent
FILES = (ROOT / "src/fastdeconv/workloads.json", ROOT / "benchmarks/unseen_workloads.json",
         ROOT / "benchmarks/channel_rich_workloads.json")


def record(out: str) -> None:
    import numpy as np

    import fastdeconv as fd
    from fastdeconv import _cost, variants
    from fastdeconv import _geometry as geo

    result = {}
    for path in FILES:
        for w in json.loads(path.read_text())["workloads"]:
            rank = len(w["spatial"])
            kernel = list(w["kernel"]) if isinstance(w["kernel"], list) else [w["kernel"]] * rank
            x_shape = (w["N"], w["C_in"], *w["spatial"])
            w_shape = (w["C_in"], w["C_out"] // w.get("groups", 1), *kernel)
            kw = {n: w.get(n, d) for n, d in (("stride", 1), ("padding", 0), ("output_padding", 0), ("groups", 1),
                                             ("dilation", 1))}
            for method in ("auto", "scatter", "gather"):
                for dt in (np.float32, np.float64):
                    key = f"{path.name}:{w['name']}:{method}:{np.dtype(dt).name}"
                    try:
                        c = fd.plan(x_shape, w_shape, method=method, dtype=dt, **kw)
                    except ValueError as exc:
                        result[key] = {"error": str(exc)}
                        continue
                    p = geo.make_plan(x_shape, w_shape, np.dtype(dt), np.dtype(dt), kw["stride"], kw["padding"],
                                      kw["output_padding"], kw["groups"], kw["dilation"])
                    request = geo.make_request(method)
                    kept = _cost.choose(p, request, kept=True)
                    every = {}
                    for name in variants.names():
                        v = variants.get(name)
                        for k in ((False, True) if v.applies(p) and v.candidate_for(p, method) else ()):
                            seconds = v.estimate(p, c.threads, k)
                            if seconds is not None:
                                every[name + ("+kept" if k else "")] = seconds
                    result[key] = {"variant": c.variant, "method": c.method, "reason": c.reason, "serial": c.serial,
                                   "estimates": c.estimates, "kept_variant": kept.variant,
                                   "kept_estimates": kept.estimates, "all": every}
    Path(out).write_text(json.dumps(result, indent=0))
    print(f"{len(result)} cases -> {out}")


def compare(a_path: str, b_path: str) -> int:
    a, b = json.loads(Path(a_path).read_text()), json.loads(Path(b_path).read_text())
    diffs, worst = [], 0.0

    def close(x, y):
        nonlocal worst
        rel = abs(x - y) / max(abs(x), 1e-300)
        worst = max(worst, rel)
        return rel <= 1e-12

    for key in sorted(set(a) | set(b)):
        x, y = a.get(key), b.get(key)
        if x is None or y is None or "error" in x or "error" in y:
            if x != y:
                diffs.append((key, x, y))
            continue
        for field in ("variant", "method", "reason", "serial", "kept_variant"):
            if x[field] != y[field]:
                diffs.append((key, field, x[field], y[field]))
        for field in ("estimates", "kept_estimates"):
            if [n for n, _ in x[field]] != [n for n, _ in y[field]] or \
                    not all(close(s, t) for (_, s), (_, t) in zip(x[field], y[field])):
                diffs.append((key, field, x[field], y[field]))
        if x["all"].keys() != y["all"].keys() or not all(close(x["all"][n], y["all"][n]) for n in x["all"]):
            diffs.append((key, "all", x["all"], y["all"]))
    for d in diffs:
        print(*d)
    print(f"{len(a)} / {len(b)} cases, {len(diffs)} differences, largest relative estimate difference {worst:.3g}")
    return 1 if diffs else 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "record":
        record(sys.argv[2])
    elif len(sys.argv) == 4 and sys.argv[1] == "compare":
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    else:
        sys.exit(__doc__)
