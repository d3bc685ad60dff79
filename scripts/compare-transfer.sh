#!/usr/bin/env bash
# Runs `eatnas-cli run` (transfer and scratch baseline) for several seeds of one configuration
# and prints the population quality of both at equal evaluation counts, per seed and averaged.
#
#   scripts/compare-transfer.sh [--search-only] CONFIG OUT_DIR SEED...
#
# --search-only runs `search` then `transfer --seed-arch basic_arch.json --from-scratch` (both
# stage-2 searches, no final training). Each seed's folder (OUT_DIR/seed-N) holds the full
# output, quality.svg included; a finished seed is not run again.
set -euo pipefail
search_only=0
if [ "${1:-}" = "--search-only" ]; then search_only=1; shift; fi
config=$1 out=$2
shift 2
cli=${EATNAS_CLI:-target/release/eatnas-cli}
mkdir -p "$out"
for seed in "$@"; do
  dir="$out/seed-$seed"
  if [ $search_only = 1 ]; then
    stage1="$dir/stage1-search" dir="$dir/stage2"
    if [ -f "$dir/summary.json" ]; then continue; fi
    [ -f "$stage1/summary.json" ] || "$cli" search --config "$config" --seed "$seed" --out "$stage1" >/dev/null
    "$cli" transfer --seed-arch "$stage1/basic_arch.json" --from-scratch --config "$config" --seed "$seed" --out "$dir" >/dev/null
    continue
  fi
  if [ -f "$dir/summary.json" ] && grep -q '"final"' "$dir/summary.json"; then continue; fi
  if [ -f "$dir/command.json" ]; then "$cli" resume "$dir" >/dev/null; else "$cli" run --config "$config" --seed "$seed" --out "$dir" >/dev/null; fi
done
python3 - "$out" "$search_only" "$@" <<'PY'
import json, sys
out, search_only, seeds = sys.argv[1], sys.argv[2] == "1", sys.argv[3:]
rows = []
for seed in seeds:
    s = json.load(open(f"{out}/seed-{seed}/" + ("stage2/" if search_only else "") + "summary.json"))
    t, c = s["transfer"]["quality_curve"], s["scratch"]["quality_curve"]
    rows.append((seed, t, c, s["final"]["test_top1"] if "final" in s else float("nan")))
n = min(len(r[1]) for r in rows)
marks = sorted({1, n // 4, n // 2, 3 * n // 4, n} - {0})
print(f"population quality (mean fitness of the top k) at equal evaluation counts, {out}")
print("seed  " + "  ".join(f"@{m:>3}: transfer / scratch" for m in marks) + "   mean over curve t / s   final test top-1")
for seed, t, c, final in rows:
    cells = "  ".join(f"      {t[m-1]:.4f} / {c[m-1]:.4f}" for m in marks)
    print(f"{seed:>4}  {cells}        {sum(t)/len(t):.4f} / {sum(c)/len(c):.4f}      {final:.4f}")
avg = lambda xs: sum(xs) / len(xs)
cells = "  ".join(f"      {avg([r[1][m-1] for r in rows]):.4f} / {avg([r[2][m-1] for r in rows]):.4f}" for m in marks)
print(f"mean  {cells}        {avg([avg(r[1]) for r in rows]):.4f} / {avg([avg(r[2]) for r in rows]):.4f}")
PY
