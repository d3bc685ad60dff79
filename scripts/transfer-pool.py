#!/usr/bin/env python3
"""Pools runs of scripts/compare-transfer.sh over the same seeds (the same setting with other
proxies, say): the final trained winners' test top-1 of each arm, and each pair's paired
difference with every seed's difference averaged over the runs first, so the bootstrap 95%
interval resamples seeds, the independent unit (a seed's runs share its stage 1).

    scripts/transfer-pool.py TABLES.json TABLES.json...

Each TABLES.json is the tables.json that scripts/transfer-tables.py writes. Standard library only."""
import json
import sys

from seed_stats import bootstrap, mean, sd
from transfer_arms import ARMS, LABELS, PAIRS


def main():
    paths = sys.argv[1:]
    if len(paths) < 2:
        raise SystemExit(__doc__)
    runs = []
    for path in paths:
        try:
            with open(path) as f:
                tables = json.load(f)
            runs.append((tables["seeds"], tables["final_test_top1"]))
        except (OSError, ValueError, KeyError) as e:
            raise SystemExit(f"transfer-pool.py: {path}: not a readable tables.json ({e!r})")
    seeds = runs[0][0]
    for path, (other, _) in zip(paths, runs):
        if other != seeds:
            raise SystemExit(f"transfer-pool.py: {path} has seeds {other}, {paths[0]} has {seeds}: pool runs of the same seeds")
    print(f"Final trained winner, test top-1, {len(runs)} runs of seeds {' '.join(seeds)}: each seed's mean over the runs")
    for arm in ARMS:
        label = LABELS[arm]
        per_seed = [mean([final[arm][i] for _, final in runs]) for i in range(len(seeds))]
        runs_means = " ".join(f"{mean(final[arm]):.4f}" for _, final in runs)
        print(f"{label:>26}: {mean(per_seed):.4f} +- {sd(per_seed):.4f}  (each run's mean: {runs_means})")
    print("Paired difference, bootstrap 95% interval over seeds (each seed's difference averaged over the runs)")
    for a, b in PAIRS:
        per_seed = [mean([final[a][i] - final[b][i] for _, final in runs]) for i in range(len(seeds))]
        low, high = bootstrap(per_seed)
        ahead = sum(d > 0 for d in per_seed)
        pair = f"{LABELS[a]} - {LABELS[b]}"
        print(f"  {pair:<44} {mean(per_seed):+.4f}  [{low:+.4f}, {high:+.4f}]  per seed: "
              + " ".join(f"{d:+.4f}" for d in per_seed) + f"  ({ahead} of {len(seeds)} ahead)")


if __name__ == "__main__":
    main()
