#!/usr/bin/env python3
"""Multi-fidelity against full proxies: OUT SEED... reads OUT/asha-{full,mf}-SEED/stage1/history.jsonl
(from `eatnas-cli search --config C --seed SEED --out OUT/asha-ARM-SEED` with the two
configurations of docs/results/asha/) and prints evaluations per hour of training, the best
full-rung accuracies found, and the full arm's best within the multi-fidelity arm's training
seconds (equal compute); then the paired differences over seeds with bootstrap 95% intervals."""
import json, sys

from seed_stats import bootstrap


def load(p):
    return [json.loads(l) for l in open(p) if l.strip()]


def promoted(r):
    """Whether a multi-fidelity line trained on to the second (full) rung."""
    return len(r.get("rungs", [])) == 2


def full_rung(arm, h):
    """The lines trained to the full rung (every line of the full arm)."""
    return [r for r in h if not r["cached"] and (arm == "full" or promoted(r))]


def best_within(h, seconds):
    """The best accuracy among the full arm's lines trained within `seconds` of training."""
    spent, best = 0.0, None
    for r in h:
        spent += r["seconds"]
        if spent > seconds:
            break
        if not r["cached"]:
            best = r["accuracy"] if best is None else max(best, r["accuracy"])
    return best


out = sys.argv[1]
print("seed  arm   evals  training s  evals/hour  promoted  best 3-epoch top-1  top-3 3-epoch mean  full's best at mf's seconds")
rows = {}
for seed in sys.argv[2:]:
    hist = {}
    for arm in ("full", "mf"):
        try:
            hist[arm] = load(f"{out}/asha-{arm}-{seed}/stage1/history.jsonl")
        except OSError:
            continue
    if len(hist) < 2:
        continue
    mf_seconds = sum(r["seconds"] for r in hist["mf"])
    for arm, h in hist.items():
        secs = sum(r["seconds"] for r in h)
        accs = sorted((r["accuracy"] for r in full_rung(arm, h)), reverse=True)
        promotions = sum(1 for r in h if promoted(r))
        at_equal = best_within(h, mf_seconds) if arm == "full" else None
        rows.setdefault(arm, []).append(
            (len(h) / secs * 3600, accs[0], sum(accs[:3]) / len(accs[:3]), at_equal)
        )
        print(
            f"{seed:>4}  {arm:<4}  {len(h):>5}  {secs:>10.1f}  {len(h)/secs*3600:>10.0f}  "
            f"{promotions if arm == 'mf' else '-':>8}  {accs[0]:>18.4f}  {sum(accs[:3])/len(accs[:3]):>19.4f}"
            + (f"  {at_equal:>27.4f}" if at_equal is not None else "")
        )
n = len(rows.get("mf", []))
for arm, v in rows.items():
    print(
        f"mean  {arm:<4}  evals/hour {sum(x[0] for x in v)/n:.0f}  best {sum(x[1] for x in v)/n:.4f}  "
        f"top-3 {sum(x[2] for x in v)/n:.4f}  ({n} seeds)"
    )
if n >= 2:
    full, mf = rows["full"], rows["mf"]
    for name, diffs in (
        ("evals/hour, mf / full", [m[0] / f[0] for f, m in zip(full, mf)]),
        ("best, mf - full (equal evaluations)", [m[1] - f[1] for f, m in zip(full, mf)]),
        ("best, mf - full (equal training seconds)", [m[1] - f[3] for f, m in zip(full, mf)]),
    ):
        lo, hi = bootstrap(diffs)
        print(f"{name}: {sum(diffs)/n:+.4f} [{lo:+.4f}, {hi:+.4f}]  per seed {', '.join(f'{d:+.4f}' for d in diffs)}")
