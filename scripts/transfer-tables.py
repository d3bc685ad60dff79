#!/usr/bin/env python3
"""Tables and plots of scripts/compare-transfer.sh: OUT_DIR SEED...

Reads each seed's three stage-2 arms (weights, arch, scratch), and writes OUT_DIR/tables.txt,
OUT_DIR/tables.json and OUT_DIR/quality-evaluations.svg / quality-time.svg (mean curve of each
arm with its +-1 standard deviation shaded). Standard library only.
"""
import json
import sys

from seed_stats import bootstrap, mean, sd
import transfer_arms
from transfer_arms import LABELS

ARMS = list(transfer_arms.ARMS)
COLOURS = {"weights": "#2ca02c", "arch": "#1f77b4", "scratch": "#d62728", "inherit": "#9467bd"}
# The optional fourth arm: transfer with weights, and every mutated child from its parent's
# weights too (seed-N/inherit, from scripts/compare-transfer.sh --inherit).


def history(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def load(out, seed):
    d = f"{out}/seed-{seed}"
    paths = {
        "weights": f"{d}/run/transfer/history.jsonl",
        "arch": f"{d}/arch/transfer/history.jsonl",
        "scratch": f"{d}/run/scratch/history.jsonl",
    }
    if "inherit" in ARMS:
        paths["inherit"] = f"{d}/inherit/transfer/history.jsonl"
    arms = {}
    for arm, path in paths.items():
        records = history(path)
        seconds, total = [], 0.0
        for r in records:
            total += r["seconds"]
            seconds.append(total)
        arms[arm] = {"quality": [r["quality"]["top_k_mean"] for r in records], "seconds": seconds}
    finals = {}
    for arm, path in (("weights", f"{d}/run/summary.json"), ("arch", f"{d}/final-arch/summary.json"),
                      ("scratch", f"{d}/final-scratch/summary.json"), ("inherit", f"{d}/final-inherit/summary.json")):
        try:
            s = json.load(open(path))
            final = s["final"] if "final" in s else s
            finals[arm] = final["test_top1"]
            # A final training that collapsed says nothing about the arm's search: named, kept.
            if final.get("learned_nothing"):
                print(f"warning: {path}: the final training learned nothing (test top-1 {final['test_top1']:.4f}); "
                      "train that winner again before reading this table", file=sys.stderr)
        except (OSError, KeyError, ValueError):
            finals[arm] = None
    return arms, finals


def at_time(arm, t):
    """Quality of the population once `t` training seconds were spent (None before any)."""
    value = None
    for q, s in zip(arm["quality"], arm["seconds"]):
        if s <= t + 1e-9:
            value = q
    return value


def svg(path, title, x_label, series):
    """series: arm -> list of (x, mean, sd)."""
    w, h, left, right, top, bottom = 800, 500, 70, 20, 40, 50
    xs = [p[0] for pts in series.values() for p in pts]
    ys = [v for pts in series.values() for p in pts for v in (p[1] - p[2], p[1] + p[2])]
    x0, x1 = min(xs), max(xs)
    y0, y1 = min(ys), max(ys)
    pad = (y1 - y0) * 0.05 or 0.01
    y0, y1 = y0 - pad, y1 + pad
    fx = lambda x: left + (x - x0) / ((x1 - x0) or 1) * (w - left - right)
    fy = lambda y: top + (y1 - y) / (y1 - y0) * (h - top - bottom)
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" font-family="sans-serif" font-size="12">',
             f'<rect width="{w}" height="{h}" fill="white"/>',
             f'<text x="{w/2}" y="22" text-anchor="middle" font-size="16">{title}</text>',
             f'<text x="{w-right}" y="{top-4}" text-anchor="end" font-size="11">lines: mean over seeds; bands: +-1 standard deviation</text>',
             f'<line x1="{left}" y1="{h-bottom}" x2="{w-right}" y2="{h-bottom}" stroke="black"/>',
             f'<line x1="{left}" y1="{top}" x2="{left}" y2="{h-bottom}" stroke="black"/>',
             f'<text x="{w/2}" y="{h-12}" text-anchor="middle">{x_label}</text>',
             f'<text x="16" y="{h/2}" text-anchor="middle" transform="rotate(-90 16 {h/2})">population quality (mean fitness of the top k)</text>']
    for i in range(6):
        y = y0 + (y1 - y0) * i / 5
        parts.append(f'<text x="{left-6}" y="{fy(y)+4:.1f}" text-anchor="end">{y:.3f}</text>')
        x = x0 + (x1 - x0) * i / 5
        parts.append(f'<text x="{fx(x):.1f}" y="{h-bottom+16}" text-anchor="middle">{x:.0f}</text>')
    for k, (arm, pts) in enumerate(series.items()):
        c = COLOURS[arm]
        band = [(fx(x), fy(m + s)) for x, m, s in pts] + [(fx(x), fy(m - s)) for x, m, s in reversed(pts)]
        parts.append('<polygon fill="%s" fill-opacity="0.15" points="%s"/>' % (c, " ".join(f"{a:.1f},{b:.1f}" for a, b in band)))
        parts.append('<polyline fill="none" stroke="%s" stroke-width="2" points="%s"/>' % (c, " ".join(f"{fx(x):.1f},{fy(m):.1f}" for x, m, _ in pts)))
        ly = h - bottom - 20 - 18 * k
        parts.append(f'<line x1="{w-260}" y1="{ly}" x2="{w-235}" y2="{ly}" stroke="{c}" stroke-width="2"/>')
        parts.append(f'<text x="{w-230}" y="{ly+4}">{LABELS[arm]}</text>')
    parts.append("</svg>")
    open(path, "w").write("\n".join(parts))


def main():
    out, seeds = sys.argv[1], sys.argv[2:]
    import os
    if all(os.path.exists(f"{out}/seed-{s}/inherit/summary.json") for s in seeds):
        ARMS.append("inherit")
    runs = {s: load(out, s) for s in seeds}
    n = min(len(a[arm]["quality"]) for a, _ in runs.values() for arm in ARMS)
    marks = sorted({1, n // 4, n // 2, 3 * n // 4, n} - {0})
    lines, table = [], {"seeds": seeds, "evaluations": n}
    f = lambda xs: f"{mean(xs):.4f} +- {sd(xs):.4f}"

    lines.append(f"Population quality at equal evaluation counts, mean +- sd over {len(seeds)} seeds ({out})")
    lines.append("evals  " + "".join(f"{LABELS[a]:>28}" for a in ARMS))
    table["at_evaluations"] = {}
    for m in marks:
        vals = {a: [runs[s][0][a]["quality"][m - 1] for s in seeds] for a in ARMS}
        table["at_evaluations"][m] = {a: {"mean": mean(v), "sd": sd(v), "per_seed": v} for a, v in vals.items()}
        lines.append(f"{m:>5}  " + "".join(f"{f(vals[a]):>28}" for a in ARMS))

    lines.append("")
    lines.append("Population quality at equal compute time (summed training seconds; fractions of each seed's shortest arm)")
    lines.append("time   " + "".join(f"{LABELS[a]:>28}" for a in ARMS))
    table["at_time"] = {}
    for frac in (0.25, 0.5, 0.75, 1.0):
        vals = {a: [] for a in ARMS}
        for s in seeds:
            arms = runs[s][0]
            t = frac * min(arms[a]["seconds"][n - 1] for a in ARMS)
            for a in ARMS:
                vals[a].append(at_time(arms[a], t))
        cell = lambda v: f(v) if all(x is not None for x in v) else "(not every seed yet)"
        table["at_time"][frac] = {a: v for a, v in vals.items()}
        lines.append(f"{frac:>5.0%}  " + "".join(f"{cell(vals[a]):>28}" for a in ARMS))

    lines.append("")
    lines.append(f"Paired difference at the end of the budget ({n} evaluations), bootstrap 95% interval over seeds")
    table["paired_at_budget"] = {}
    pairs = list(transfer_arms.PAIRS)
    if "inherit" in ARMS:
        pairs += [("inherit", "scratch"), ("inherit", "weights")]
    def paired(key, a, b, d):
        """table[key][a-b] and its line: the paired differences d with their bootstrap interval."""
        lo, hi = bootstrap(d)
        table[key][f"{a}-{b}"] = {"mean": mean(d), "ci95": [lo, hi], "per_seed": d}
        lines.append(f"  {LABELS[a]:>24} - {LABELS[b]:<24} {mean(d):+.4f}  [{lo:+.4f}, {hi:+.4f}]  per seed: "
                     + " ".join(f"{x:+.4f}" for x in d))

    for a, b in pairs:
        paired("paired_at_budget", a, b,
               [runs[s][0][a]["quality"][n - 1] - runs[s][0][b]["quality"][n - 1] for s in seeds])

    lines.append("")
    lines.append("Final trained winner, test top-1")
    table["final_test_top1"] = {}
    for a in ARMS:
        v = [runs[s][1][a] for s in seeds]
        table["final_test_top1"][a] = v
        got = [x for x in v if x is not None]
        shown = f(got) if got else "-"
        lines.append(f"  {LABELS[a]:>24}: {shown}  per seed: " + " ".join("-" if x is None else f"{x:.4f}" for x in v))
    # The paper's claim is about the network a search ends with: the same pairs as above, on it.
    finals = table["final_test_top1"]
    compared = [(a, b) for a, b in pairs if None not in finals[a] + finals[b]]
    if compared:
        lines.append("")
        lines.append("Paired difference of the final trained winners' test top-1, bootstrap 95% interval over seeds")
        table["paired_final_test_top1"] = {}
    for a, b in compared:
        paired("paired_final_test_top1", a, b, [x - y for x, y in zip(finals[a], finals[b])])

    text = "\n".join(lines)
    print(text)
    open(f"{out}/tables.txt", "w").write(text + "\n")
    json.dump(table, open(f"{out}/tables.json", "w"), indent=1)

    by_eval = {a: [(i + 1, mean(q), sd(q)) for i, q in
                   enumerate(zip(*[runs[s][0][a]["quality"][:n] for s in seeds]))] for a in ARMS}
    svg(f"{out}/quality-evaluations.svg", f"Stage 2 over {len(seeds)} seeds: quality against evaluations",
        "evaluations", by_eval)
    horizon = min(runs[s][0][a]["seconds"][n - 1] for s in seeds for a in ARMS)
    steps = [horizon * i / 40 for i in range(1, 41)]
    by_time = {}
    for a in ARMS:
        pts = []
        for t in steps:
            v = [at_time(runs[s][0][a], t) for s in seeds]
            if all(x is not None for x in v):
                pts.append((t, mean(v), sd(v)))
        by_time[a] = pts
    svg(f"{out}/quality-time.svg", f"Stage 2 over {len(seeds)} seeds: quality against training seconds",
        "summed training seconds", by_time)


main()
