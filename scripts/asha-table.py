#!/usr/bin/env python3
"""Multi-fidelity against full proxies: OUT SEED... reads OUT/asha-{full,mf}-SEED/stage1/history.jsonl
(from `eatnas-cli search --config C --seed SEED --out OUT/asha-ARM-SEED` with the two
configurations of docs/results/asha/) and prints evaluations per hour of training and the best
full-rung accuracies found."""
import json, sys
def load(p):
    return [json.loads(l) for l in open(p) if l.strip()]
print("seed  arm   evals  training s  evals/hour  promoted  best 3-epoch top-1  top-3 3-epoch mean")
rows = {}
out = sys.argv[1]
for seed in sys.argv[2:]:
    for arm in ("full", "mf"):
        try:
            h = load(f"{out}/asha-{arm}-{seed}/stage1/history.jsonl")
        except OSError:
            continue
        secs = sum(r["seconds"] for r in h)
        full = [r for r in h if not r["cached"] and (arm == "full" or len(r.get("rungs", [])) == 2)]
        accs = sorted((r["accuracy"] for r in full), reverse=True)
        promoted = sum(1 for r in h if len(r.get("rungs", [])) == 2)
        rows.setdefault(arm, []).append((len(h) / secs * 3600, accs[0], sum(accs[:3]) / len(accs[:3])))
        print(f"{seed:>4}  {arm:<4}  {len(h):>5}  {secs:>10.1f}  {len(h)/secs*3600:>10.0f}  {promoted if arm == 'mf' else '-':>8}  {accs[0]:>18.4f}  {sum(accs[:3])/len(accs[:3]):>19.4f}")
for arm, v in rows.items():
    n = len(v)
    print(f"mean  {arm:<4}  evals/hour {sum(x[0] for x in v)/n:.0f}  best {sum(x[1] for x in v)/n:.4f}  top-3 {sum(x[2] for x in v)/n:.4f}  ({n} seeds)")
