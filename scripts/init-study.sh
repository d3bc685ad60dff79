#!/usr/bin/env bash
# Measures the weight-initialisation schemes on short trainings (issue 12, docs/initialisation.md):
#   1. two-class image folders made from Fashion-MNIST (300 training, 100 test images per class),
#      fmnist-ref trained 2 epochs at batch 32, 5 seeds: test top-1 of each run;
#   2. the demo's stage-1 proxies: 20 architectures sampled with the demo's seed, each trained
#      with the demo's proxy recipe: validation top-1 and how many collapse (a constant
#      prediction: top-1 at most 15% on 10 classes);
#   3. fmnist-ref trained 3 epochs on the full Fashion-MNIST (Debian's dataset-fashion-mnist),
#      when it is installed; the embedded 10,000-image demo otherwise.
# Usage: scripts/init-study.sh [OUT] (default runs/init-study). Overrides: SCHEMES, SEEDS, PAIRS
# (part 1), SEARCH_SEED (part 2: which 20 architectures; default 0, the demo's), FULL_SCHEMES
# (part 3; "none" skips it).
# Writes OUT/results.md and OUT/results.jsonl. Takes about 15 minutes on 2 cores (part 3 most).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-runs/init-study}
schemes=${SCHEMES:-"pytorch pytorch+zero-residual-bn torchvision depthwise-fan-in fan-in"}
seeds=${SEEDS:-"0 1 2 3 4"}
pairs=${PAIRS:-"0,1 5,7 2,4"}
cargo build --release -q -p eatnas-cli
mkdir -p "$out"
# A copy: a rebuild while the study runs must not change the binary under it.
cp target/release/eatnas-cli "$out/eatnas-cli"
cli=$out/eatnas-cli
results="$out/results.jsonl"
: > "$results"

# "pytorch+zero-residual-bn" -> --init pytorch --zero-residual-bn
init_flags() {
  local scheme=${1%%+*}
  if [[ $1 == *+zero-residual-bn ]]; then echo "--init $scheme --zero-residual-bn"; else echo "--init $scheme"; fi
}
field() { python3 -c "import json,sys; print(json.loads(sys.stdin.read().strip().splitlines()[-1])['$1'])"; }

for pair in $pairs; do
  folder="$out/folders/${pair/,/-}"
  [ -d "$folder" ] || python3 scripts/make-two-class-folder.py "$folder" --classes "$pair" > /dev/null
  for scheme in $schemes; do
    for seed in $seeds; do
      run="$out/two-class/${pair/,/-}/$scheme/$seed"
      rm -rf "$run"
      # shellcheck disable=SC2046
      top1=$($cli train --arch ../shared/spec/fmnist-ref.json --data "folder:$folder" --epochs 2 \
        --batch-size 32 $(init_flags "$scheme") --seed "$seed" --out "$run" --json 2>/dev/null | field test_top1)
      echo "{\"part\":\"two-class\",\"pair\":\"$pair\",\"scheme\":\"$scheme\",\"seed\":$seed,\"test_top1\":$top1}" >> "$results"
    done
    echo "two-class $pair $scheme done"
  done
done

# The demo's stage 1 as the configuration's defaults, with a population of 20 that is all the
# budget: 20 sampled architectures, no evolution, the same 20 for every scheme.
for scheme in $schemes; do
  base=${scheme%%+*}
  zero=false; [[ $scheme == *+zero-residual-bn ]] && zero=true
  config="$out/proxies/$scheme.toml"
  mkdir -p "$out/proxies"
  sed -e "s/^inherited_epochs = 1$/inherited_epochs = 1\ninit = \"$base\"\nzero_residual_bn = $zero/" \
      -e 's/^population = 8$/population = 20/' -e 's/^budget = 16$/budget = 20/' configs/demo.toml > "$config"
  rm -rf "$out/proxies/$scheme"
  $cli search --config "$config" --seed "${SEARCH_SEED:-0}" --out "$out/proxies/$scheme" --json > /dev/null 2>&1
  python3 - "$out/proxies/$scheme/stage1/history.jsonl" "$scheme" >> "$results" <<'PY'
import json, sys
for line in open(sys.argv[1]):
    h = json.loads(line)
    print(json.dumps({"part": "proxies", "scheme": sys.argv[2], "genome": h["genome"], "val_top1": h["accuracy"], "seconds": h["seconds"]}))
PY
  echo "proxies $scheme done"
done

data=fashion-mnist
[ -f /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ] && data=idx:/usr/share/datasets/fashion-mnist
full=${FULL_SCHEMES:-$schemes}
[ "$full" = none ] && full=""
for scheme in $full; do
  run="$out/fmnist-ref/$scheme"
  rm -rf "$run"
  # shellcheck disable=SC2046
  top1=$($cli train --arch ../shared/spec/fmnist-ref.json --data "$data" --epochs 3 --batch-size 128 \
    $(init_flags "$scheme") --seed 0 --out "$run" --json 2>/dev/null | field test_top1)
  echo "{\"part\":\"fmnist-ref\",\"data\":\"$data\",\"scheme\":\"$scheme\",\"test_top1\":$top1}" >> "$results"
  echo "fmnist-ref $scheme done"
done

python3 - "$results" > "$out/results.md" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
schemes = list(dict.fromkeys(r["scheme"] for r in rows))
print("## Two-class folders: fmnist-ref, 2 epochs, batch 32; test top-1 (%) per seed\n")
pairs = list(dict.fromkeys(r["pair"] for r in rows if r["part"] == "two-class"))
print("| pair | scheme | seeds | mean | runs above 80% | collapsed (50%) |\n|---|---|---|---|---|---|")
for pair in pairs:
    for s in schemes:
        t = [100 * r["test_top1"] for r in rows if r["part"] == "two-class" and r["pair"] == pair and r["scheme"] == s]
        if t:
            print(f"| {pair} | {s} | {' '.join(f'{v:.1f}' for v in t)} | {statistics.mean(t):.1f} | {sum(v > 80 for v in t)}/{len(t)} | {sum(abs(v - 50) < 0.01 for v in t)}/{len(t)} |")
print("\n## The demo's stage-1 proxies: 20 sampled architectures, validation top-1 (%)\n")
print("| scheme | mean | median | best | collapsed (<= 15%) |\n|---|---|---|---|---|")
for s in schemes:
    v = [100 * r["val_top1"] for r in rows if r["part"] == "proxies" and r["scheme"] == s]
    if v:
        print(f"| {s} | {statistics.mean(v):.1f} | {statistics.median(v):.1f} | {max(v):.1f} | {sum(x <= 15 for x in v)}/{len(v)} |")
print("\n## fmnist-ref, 3 epochs, batch 128, seed 0: test top-1 (%)\n")
print("| scheme | data | test top-1 |\n|---|---|---|")
for r in rows:
    if r["part"] == "fmnist-ref":
        print(f"| {r['scheme']} | {r['data']} | {100 * r['test_top1']:.2f} |")
PY
cat "$out/results.md"
