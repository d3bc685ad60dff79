#!/usr/bin/env python3
"""How well a proxy orders the best networks of `eatnas-cli fidelity` measurements: Kendall's
tau-b over the K architectures with the highest reference top-1, each proxy run ranked on its own
and averaged over runs (as the report's `kendall_tau` is over all of them), then over the files; with
two or more reference seeds, also how well the reference's own runs agree over those K.

    scripts/fidelity-top.py [--top K] FIDELITY.json...

The report's own `top_half_kendall_tau` is this with K = half the ranked architectures (rounded
up); the script gives any K, reads reports written before that field, and averages over files.

A search's last generations choose among good networks: a proxy can rank a random sample well
(telling poor networks from good ones) and still order the good ones by chance. Standard library
only."""
import argparse
import itertools
import json
import math


def kendall_tau_b(xs, ys):
    concordant = discordant = ties_x = ties_y = 0
    for i, j in itertools.combinations(range(len(xs)), 2):
        dx, dy = xs[i] - xs[j], ys[i] - ys[j]
        if dx == 0 and dy == 0:
            continue
        if dx == 0:
            ties_x += 1
        elif dy == 0:
            ties_y += 1
        elif dx * dy > 0:
            concordant += 1
        else:
            discordant += 1
    denominator = math.sqrt((concordant + discordant + ties_x) * (concordant + discordant + ties_y))
    return (concordant - discordant) / denominator if denominator else float("nan")


def top_tau(report, top):
    points = [p for p in report["points"] if p.get("reference") is not None]
    points.sort(key=lambda p: -p["reference"])
    best = points[:top]
    runs = [p.get("proxy_runs") or [p["proxy"]] for p in best]
    reference = [p["reference"] for p in best]
    taus = [kendall_tau_b([r[k] for r in runs], reference) for k in range(len(runs[0]))]
    return sum(taus) / len(taus), len(best), self_agreement(best)


def self_agreement(points):
    """Kendall's tau-b between two reference runs over `points`, the mean over every pair; None
    with one run."""
    runs = [p.get("reference_runs") or [] for p in points]
    count = min(len(r) for r in runs)
    pairs = list(itertools.combinations(range(count), 2))
    if not pairs:
        return None
    taus = [kendall_tau_b([r[a] for r in runs], [r[b] for r in runs]) for a, b in pairs]
    return sum(taus) / len(taus)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--top", type=int, default=6, help="architectures ranked (default 6)")
    parser.add_argument("reports", nargs="+")
    args = parser.parse_args()
    if args.top < 3:
        parser.error(f"--top {args.top}: a rank correlation needs at least 3 architectures")
    taus, agreements = [], []
    for path in args.reports:
        try:
            with open(path) as f:
                report = json.load(f)
            tau, n, agreement = top_tau(report, args.top)
        except (OSError, ValueError, KeyError, IndexError) as e:
            raise SystemExit(f"fidelity-top.py: {path}: not a readable fidelity.json report ({e!r})")
        taus.append(tau)
        line = f"{path}: tau over the {n} best by the reference {tau:.3f} (all {report['kendall_tau']:.3f})"
        if agreement is not None:
            agreements.append(agreement)
            line += f"; the reference's runs agree over them at {agreement:.3f}"
        print(line)
    if len(taus) > 1:
        print(f"mean over {len(taus)}: {sum(taus) / len(taus):.3f}")
    if len(agreements) > 1:
        print(f"the reference's self-agreement, mean over {len(agreements)}: {sum(agreements) / len(agreements):.3f}")


if __name__ == "__main__":
    main()
