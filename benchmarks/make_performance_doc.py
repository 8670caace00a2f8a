"""Regenerate docs/performance.md and the README's headline table from committed measurements.

    python benchmarks/make_performance_doc.py [--compare benchmarks/results/compare.json]
                                              [--first-call benchmarks/results/first_call.json] [--check]

Inputs: the JSON of ``python -m fastdeconv compare --all --json FILE`` (with the peers installed), the JSON of
``python benchmarks/first_call.py --cold --json FILE`` and (optional) that of ``python benchmarks/estimates.py``.
Nothing above docs/performance.md's history section is
typed by hand: rerun the commands, then this. The history (earlier measurements, what was tried and not kept) is
written by hand below ``HISTORY_START`` in docs/performance.md, its one home; this script keeps it as it is.
``--check`` writes nothing and exits 1 when either file is not what it would write.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
DEFAULT_JSON = RESULTS / "compare.json"
DEFAULT_FIRST_CALL = RESULTS / "first_call.json"
DEFAULT_ESTIMATES = RESULTS / "estimates.json"
PERFORMANCE = ROOT / "docs" / "performance.md"
README = ROOT / "README.md"
HEADLINE_START = "<!-- headline:start -->"
HEADLINE_END = "<!-- headline:end -->"
HISTORY_START = "<!-- history: written by hand; make_performance_doc.py keeps everything from here on -->"
PEER_NAMES = {"torch": "torch", "ort": "onnxruntime", "tf": "tensorflow", "jax": "jax"}


def load(path: Path) -> dict:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def load_first_call(path: Path) -> dict | None:
    return load(path) if Path(path).exists() else None


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.3f}" if ms < 0.1 else f"{ms:.2f}" if ms < 10 else f"{ms:.1f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def _variant(entry: dict) -> str:
    note = entry.get("note", "")
    return note.split("picks ", 1)[1].split()[0] if "picks " in note else "-"


def _peers(result: dict) -> list[str]:
    return [e for e in result["results"][0]["engines"] if not e.startswith("fd:")] if result["results"] else []


def _host_line(result: dict) -> str:
    m = result["machine"]
    return (f"{m.get('cpu', m.get('machine', '?'))}, {m['threads']} thread(s); roofline {m['peak_gflops']:g} GFLOP/s "
            f"fp32 GEMM, {m['stream_gbs']:g} GB/s copy")


def first_call_summary(first_call: dict | None) -> str:
    """One sentence: the warm-up's time and the slowest first call in a fresh process, cold and warm."""
    if not first_call:
        return ""
    rows = first_call["rows"].values()
    cold = [r["cold"]["first_call"] + r["cold"]["import"] for r in rows if "cold" in r]
    warm = [r["warm"]["first_call"] + r["warm"]["import"] for r in rows if "warm" in r]
    parts = []
    if "warmup_seconds" in first_call:
        parts.append(f"`python -m fastdeconv warmup` took {first_call['warmup_seconds']:.0f} s on this host's "
                     f"{first_call['host']['cpu_count']} cores")
    if warm:
        floor = (f" (numba's own floor, a trivial cached kernel's first call with numpy and numba imported: "
                 f"{first_call['numba_floor']:.2f} s)" if "numba_floor" in first_call else "")
        parts.append(f"afterwards the first call of every workload in a fresh process, `import fastdeconv` "
                     f"included, took {min(warm):.2f}-{max(warm):.2f} s{floor}")
    if cold:
        parts.append(f"without it, numba compiling, {min(cold):.1f}-{max(cold):.1f} s")
    return "; ".join(parts) + " (`" + first_call["command"] + "`)."


def describe(w: dict) -> str:
    """A layer in words and numbers, from its geometry: batch, channels, spatial size in and out, kernel."""
    def axes(v):
        return "×".join(map(str, v))
    out = [(i - 1) * s - 2 * p + d * (k - 1) + op + 1 for i, s, p, d, k, op in
           zip(w["spatial"], w["stride"], w["padding"], w["dilation"], w["kernel"], w["output_padding"])]
    kind = ", depthwise" if w["groups"] > 1 and w["groups"] == w["c_in"] else ""
    return (f"batch {w['n']}, {w['c_in']}→{w['c_out']} channels{kind}, {axes(w['spatial'])} → {axes(out)}, "
            f"kernel {axes(w['kernel'])}, stride {axes(w['stride'])}")


def headline(result: dict, first_call: dict | None = None) -> str:
    """The README's table: per built-in workload, auto's variant and time against the fastest peer."""
    rows = ["| layer | `auto` runs | fastdeconv ms | fastest other engine, ms | speedup |", "|---|---|---|---|---|"]
    for r in result["results"]:
        auto = r["engines"].get("fd:auto", {})
        best = r.get("best_peer")
        peer = r["engines"].get(best, {}) if best else {}
        rows.append(f"| {r['workload']['name']}: {describe(r['workload'])} | `{_variant(auto)}` | "
                    f"{_ms(auto.get('seconds'))} | "
                    f"{_ms(peer.get('seconds'))} ({PEER_NAMES.get(best, best) if best else '-'}) | "
                    f"{_x(auto.get('speedup_vs_best_peer'))} |")
    geo = result.get("geomean_speedup", {}).get("auto")
    peers = ", ".join(PEER_NAMES.get(p, p) for p in _peers(result))
    lines = ["Per-call times on " + _host_line(result) + ", against the fastest of " + (peers or "no peer") +
             " at the same thread count" + (f" (geometric-mean speedup of `auto`: **{geo:.2f}x**)" if geo else "") +
             ":", "", *rows, "", f"Made by `{result['command']}` (a virtual machine whose speed moves between "
             "runs: read the ratios rather than the absolute times) and regenerated by "
             "`python benchmarks/make_performance_doc.py`; every engine's numbers are in "
             "[docs/performance.md](docs/performance.md)."]
    summary = first_call_summary(first_call)
    return "\n".join(lines + (["", summary[0].upper() + summary[1:]] if summary else []))


def history() -> str:
    """docs/performance.md's hand-written history: everything from ``HISTORY_START`` on."""
    text = PERFORMANCE.read_text(encoding="utf-8")
    if HISTORY_START not in text:
        raise SystemExit(f"{PERFORMANCE.relative_to(ROOT)} lacks the history marker {HISTORY_START!r}")
    return text[text.index(HISTORY_START):]


def estimates_section(est: dict | None) -> list[str]:
    """Every applicable variant's estimate beside its measured time, per workload (``benchmarks/estimates.py``)."""
    if not est:
        return []
    s = est["summary"]
    rates = est["profile"]["rates"]
    out = ["", "## Estimate against measurement", "",
           f"`{est['command']}` on `{est['profile']['key']}` ({est['profile']['kind']} profile: "
           f"{rates['sgemm_peak'] / 1e9:.0f} GFLOP/s sgemm per core, {rates['bandwidth'] / 1e9:.0f} GB/s copy per "
           f"core), {est['threads']} threads, float32, one-off calls, median times in ms. Every variant `auto` ranks "
           "is forced (`method=<name>`); `*` marks `auto`'s choice.", "",
           f"Of {s['workloads']} workloads: the chosen variant's estimate is within +-35% of its time on "
           f"{s['estimate_within_35pct']}; `auto` is within 10% of the fastest forced variant on "
           f"{s['auto_within_10pct']} and within 25% on {s['auto_within_25pct']}.", "",
           "| set | workload | auto | variant | estimate | measured | est / measured |",
           "|---|---|---|---|---|---|---|"]
    for r in est["rows"]:
        for i, (name, v) in enumerate(r["variants"].items()):
            head = f"| {r['set']} | {r['name']} | {_ms(r['auto_seconds'])} |" if i == 0 else "| | | |"
            ratio = f"{v['estimate'] / v['seconds']:.2f}" if v.get("seconds") else v.get("note", "-")
            mark = "*" if name == r["chosen"] else ""
            out.append(f"{head} {name}{mark} | {_ms(v['estimate'])} | {_ms(v.get('seconds'))} | {ratio} |")
    return out


def performance_doc(result: dict, first_call: dict | None, est: dict | None = None) -> str:
    """docs/performance.md's text; ``est``: the estimates JSON (default: ``DEFAULT_ESTIMATES`` when it exists)."""
    if est is None:
        est = load_first_call(DEFAULT_ESTIMATES)
    m = result["machine"]
    out = ["# Performance", "",
           "Generated by `python benchmarks/make_performance_doc.py` from `benchmarks/results/compare.json` and "
           "`benchmarks/results/first_call.json`; do not edit it by hand above the history section (which is written "
           "by hand and kept by the script).", "", "## Host", "",
           f"- CPU: {m.get('cpu', '?')} ({m['cpu_count']} cores, {m['machine']}); {m['threads']} thread(s) for every "
           "engine.",
           "- Roofline (measured by `fastdeconv.tools.roofline` on this host): "
           f"{m['peak_gflops']:g} GFLOP/s fp32 GEMM, "
           f"{m['stream_gbs']:g} GB/s streaming copy; `% roof` = roofline time / measured time.",
           "- Versions: " + ", ".join(f"{k} {v}" for k, v in m["versions"].items()) + ".",
           f"- Timing: median per-call time over {m['rounds']} interleaved rounds, {m['budget_seconds']:g} s per "
           "engine and workload, engines interleaved. A virtual machine, whose speed moves between runs (load "
           f"average {m.get('load_average_at_end') or 0:.1f} at the end on {m['cpu_count']} cores): read ratios, not "
           "absolute times; the smaller layers move most between runs.", "",
           "## Commands", "", "```bash", result["command"]]
    if first_call:
        out.append(first_call["command"])
    out += ["python benchmarks/make_performance_doc.py", "```", "", "## Summary", "",
            "Times in ms; `speedup` is the fastest other engine's time over `auto`'s.", "",
            "| workload | `auto` variant | auto | scatter | gather | zerofill | fastest peer | speedup |",
            "|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        e = r["engines"]
        best = r.get("best_peer")
        cells = [_ms(e.get(f"fd:{k}", {}).get("seconds")) for k in ("auto", "scatter", "gather", "zerofill")]
        out.append(f"| {r['workload']['name']} | {_variant(e.get('fd:auto', {}))} | " + " | ".join(cells) +
                   f" | {_ms(e.get(best, {}).get('seconds')) if best else '-'} ({best or '-'}) | "
                   f"{_x(e.get('fd:auto', {}).get('speedup_vs_best_peer'))} |")
    geo = result.get("geomean_speedup", {})
    if geo:
        out += ["", "Geometric-mean speedup over the fastest peer: " +
                ", ".join(f"{k} {v:.2f}x" for k, v in geo.items()) + "."]
    out += ["", "## Every engine", "",
            "| workload | geometry | engine | ms | GFLOP/s | % roof | speedup | max rel. error |",
            "|---|---|---|---|---|---|---|---|"]
    for r in result["results"]:
        for i, (name, e) in enumerate(r["engines"].items()):
            def f(key, fmt, e=e):
                return "-" if e.get(key) is None else format(e[key], fmt)
            note = f" ({e['note']})" if e.get("note") and not e.get("seconds") else ""
            where = f"| {r['workload']['name']} | `{r['geometry']}` |" if i == 0 else "| | |"
            out.append(f"{where} {name}{note} | {_ms(e.get('seconds'))} | "
                       f"{f('gflops', '.1f')} | {f('roofline_pct', '.1f')} | {_x(e.get('speedup_vs_best_peer'))} | "
                       f"{f('max_rel_err', '.1e')} |")
    if first_call:
        out += ["", "## First call in a fresh process", "",
                "One `conv_transpose` call (`method=\"auto\"`, float32) in a new interpreter with an empty calibration "
                "cache: *cold* with an empty numba cache (compilation included), *warm* after `python -m "
                "fastdeconv warmup`" + (f", which took {first_call['warmup_seconds']:.1f} s (float32 and float64, "
                                        f"{first_call['host']['cpu_count']} cores)" if "warmup_seconds" in first_call
                                        else "") + "; both with `import fastdeconv` (and numpy) included" +
                (f". numba's own floor on this host, a trivial cached kernel's first call with numpy and numba "
                 f"imported (the median of five interpreters): {first_call['numba_floor']:.2f} s"
                 if "numba_floor" in first_call else "") + ". Seconds.", "",
                "| workload | variant | cold first call | warm first call | second call (ms) |",
                "|---|---|---|---|---|"]
        for name, row in first_call["rows"].items():
            cold, warm = row.get("cold"), row.get("warm")
            some = warm or cold
            cells = [f"{r['first_call'] + r['import']:.2f}" if r else "-" for r in (cold, warm)]
            out.append(f"| {name} | {some['variant']} | {cells[0]} | {cells[1]} | {some['second_call'] * 1e3:.1f} |")
    out += estimates_section(est)
    out += ["", history()]
    return "\n".join(out)


def _replace_headline(readme: str, table: str) -> str:
    start, end = readme.index(HEADLINE_START), readme.index(HEADLINE_END)
    return readme[:start + len(HEADLINE_START)] + "\n" + table + "\n" + readme[end:]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--compare", type=Path, default=DEFAULT_JSON)
    parser.add_argument("--first-call", type=Path, default=DEFAULT_FIRST_CALL)
    parser.add_argument("--estimates", type=Path, default=DEFAULT_ESTIMATES)
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a file is out of date")
    args = parser.parse_args(argv)
    result = load(args.compare)
    if not result.get("results") or any(not math.isfinite(v) for v in result.get("geomean_speedup", {}).values()):
        raise SystemExit(f"{args.compare}: no usable results")
    first_call = load_first_call(args.first_call)
    doc = performance_doc(result, first_call, load_first_call(args.estimates))
    readme = _replace_headline(README.read_text(encoding="utf-8"), headline(result, first_call))
    stale = [p for p, text in ((PERFORMANCE, doc), (README, readme))
             if not p.exists() or p.read_text(encoding="utf-8") != text]
    if args.check:
        for p in stale:
            print(f"{p.relative_to(ROOT)} is out of date", file=sys.stderr)
        return 1 if stale else 0
    PERFORMANCE.parent.mkdir(exist_ok=True)
    PERFORMANCE.write_text(doc, encoding="utf-8")
    README.write_text(readme, encoding="utf-8")
    print(f"wrote {PERFORMANCE.relative_to(ROOT)} and the README's headline table")
    return 0


if __name__ == "__main__":
    sys.exit(main())
