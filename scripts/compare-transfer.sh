#!/usr/bin/env bash
# The transfer claim, measured over seeds: for each seed, stage 1, then stage 2 three ways with
# one budget and seed:
#   weights  - elastic architecture transfer, the networks starting from the basic architecture's
#              weights ([transfer] inherit_weights = true);
#   arch     - the paper's architecture-level transfer alone (inherit_weights = false);
#   scratch  - a random initial population.
# and prints the population quality (mean fitness of the top k) of each at equal evaluation
# counts and at equal compute time (summed training seconds), the mean and standard deviation
# over seeds, the paired difference to scratch at the end of the budget with a bootstrap 95%
# interval, and the final test top-1 of each arm's winner (with --final).
#
#   scripts/compare-transfer.sh [--final] [--inherit] CONFIG OUT_DIR SEED...
#
# --inherit adds a fourth arm: the transfer with weights where every mutated child also starts
# from its parent's weights ([large] inherit_weights = true), in OUT_DIR/seed-N/inherit.
#
# OUT_DIR/seed-N/run holds `eatnas-cli run` with weights (stage 1, weights, scratch, and the
# weights arm's final training with --final), OUT_DIR/seed-N/arch the arch-only stage 2;
# OUT_DIR/seed-N/final-{arch,scratch,inherit} the other arms' winners trained as the final
# training is.
# A finished part is not run again; the tables are written to OUT_DIR/tables.txt and
# OUT_DIR/tables.json, the curves with their spread to OUT_DIR/quality-*.svg (by matplotlib when
# it is installed).
set -euo pipefail
final=0 inherit=0
while [ "${1:-}" = "--final" ] || [ "${1:-}" = "--inherit" ]; do
  case $1 in --final) final=1 ;; --inherit) inherit=1 ;; esac
  shift
done
config=$1 out=$2
shift 2
cli=${EATNAS_CLI:-target/release/eatnas-cli}
mkdir -p "$out"
# One configuration per arm, from the effective configuration (every field written out).
"$cli" config --config "$config" > "$out/effective.toml"
python3 - "$out" <<'PY'
import re, sys
out = sys.argv[1]
text = open(f"{out}/effective.toml").read()
def setting(text, section, value):
    """`text` with `inherit_weights` of [section] set to `value`."""
    lines, current = [], None
    for line in text.split("\n"):
        m = re.match(r"^\[(.+)\]\s*$", line)
        if m:
            current = m.group(1)
        if current == section and re.match(r"^inherit_weights\s*=", line):
            line = f"inherit_weights = {value}"
        lines.append(line)
    return "\n".join(lines)
weights = setting(text, "transfer", "true")
open(f"{out}/weights.toml", "w").write(weights)
open(f"{out}/arch.toml", "w").write(setting(text, "transfer", "false"))
open(f"{out}/inherit.toml", "w").write(setting(weights, "large", "true"))
PY
for seed in "$@"; do
  dir="$out/seed-$seed"
  mkdir -p "$dir"
  run="$dir/run"
  if ! { [ -f "$run/summary.json" ] && { [ $final = 0 ] || grep -q '"test_top1"' "$run/summary.json"; }; }; then
    if [ -f "$run/command.json" ]; then
      "$cli" resume "$run" >/dev/null 2>>"$dir/run.log"
    elif [ $final = 1 ]; then
      "$cli" run --config "$out/weights.toml" --seed "$seed" --out "$run" >/dev/null 2>>"$dir/run.log"
    else
      # Stage 1, then stage 2 with weights and from scratch, no final training.
      "$cli" search --config "$out/weights.toml" --seed "$seed" --out "$run/stage1-search" >/dev/null 2>>"$dir/run.log"
      "$cli" transfer --seed-arch "$run/stage1-search/basic_arch.json" \
        --seed-weights "$run/stage1-search/basic_weights.safetensors" --from-scratch \
        --config "$out/weights.toml" --seed "$seed" --out "$run/stage2" >/dev/null 2>>"$dir/run.log"
      ln -sfn stage2/summary.json "$run/summary.json"
      ln -sfn stage2/transfer "$run/transfer"
      ln -sfn stage2/scratch "$run/scratch"
      cp "$run/stage1-search/basic_arch.json" "$run/basic_arch.json"
    fi
  fi
  if [ ! -f "$dir/arch/summary.json" ]; then
    rm -rf "$dir/arch"
    "$cli" transfer --seed-arch "$run/basic_arch.json" --config "$out/arch.toml" --seed "$seed" \
      --out "$dir/arch" >/dev/null 2>>"$dir/arch.log"
  fi
  if [ $inherit = 1 ] && [ ! -f "$dir/inherit/summary.json" ]; then
    rm -rf "$dir/inherit"
    "$cli" transfer --seed-arch "$run/basic_arch.json" --seed-weights "$run/basic_weights.safetensors" \
      --config "$out/inherit.toml" --seed "$seed" --out "$dir/inherit" >/dev/null 2>>"$dir/inherit.log"
  fi
  if [ $final = 1 ]; then
    # The other arms' winners, trained as the final training trains the weights arm's.
    arms="arch scratch"
    if [ $inherit = 1 ]; then arms="$arms inherit"; fi
    for arm in $arms; do
      arch_file=$(python3 - "$dir" "$arm" <<'PY'
import json, sys
dir, arm = sys.argv[1], sys.argv[2]
summary = json.load(open(f"{dir}/run/summary.json" if arm == "scratch" else f"{dir}/{arm}/summary.json"))
stage = summary["scratch" if arm == "scratch" else "transfer"]
path = f"{dir}/{arm}-winner.json"
json.dump(stage["best"]["arch"], open(path, "w"), indent=1)
print(path)
PY
)
      if [ ! -f "$dir/final-$arm/summary.json" ]; then
        python3 - "$out/weights.toml" "$arch_file" "$seed" "$dir/final-$arm" "$cli" <<'PY'
import json, subprocess, sys, tomllib
config, arch, seed, out, cli = sys.argv[1:]
c = tomllib.load(open(config, "rb"))
f, large = c["final"], c["large"]
args = [cli, "train", "--arch", arch, "--data", large["data"], "--epochs", str(f["epochs"]),
        "--batch-size", str(f["batch_size"]), "--lr", str(f["lr"]),
        "--warmup-epochs", str(f["warmup_epochs"]), "--val-fraction", str(f["val_fraction"]),
        "--init", f["init"], "--seed", seed, "--out", out, "--json"]
if "resolution" in large:
    args += ["--resolution", str(large["resolution"])]
if f.get("zero_residual_bn"):
    args += ["--zero-residual-bn"]
result = subprocess.run(args, check=True, capture_output=True, text=True)
open(f"{out}/summary.json", "w").write(result.stdout.strip().split("\n")[-1])
PY
      fi
    done
  fi
done
python3 "$(dirname "$0")/transfer-tables.py" "$out" "$@"
