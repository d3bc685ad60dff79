#!/usr/bin/env bash
# The Slurm coordinator's overhead per evaluation: a stage-1 search of 100 one-step evaluations
# (32 training images, one batch) with two workers through Slurm, and the same on the local
# executor. Reports, from the history lines' `ran` times: submission -> start (Slurm's
# scheduling, the job's start-up), end -> result read (the poll), and the coordinator's CPU time.
#
#   SLURM_CONF=... scripts/slurm-overhead.sh [OUT_DIR] [POLL_SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
out="${1:-runs/slurm-overhead}"
poll="${2:-1.0}"
cargo build --release -p eatnas-cli -q
mkdir -p "$out"
bin="$out/eatnas-cli"
cp target/release/eatnas-cli "$bin"
sed -e 's/^workers = 1/workers = 2/' \
    -e "s/^poll_seconds = 1.0/poll_seconds = $poll/" \
    -e '/^\[small\]/,/^\[small.macro\]/ s/^data_fraction = .*/data_fraction = 0.0064/' \
    -e '/^\[small\]/,/^\[small.macro\]/ s/^val_fraction = .*/val_fraction = 0.5/' \
    -e '/^\[stage1\]/,/^\[large\]/ s/^population = .*/population = 10/' \
    -e '/^\[stage1\]/,/^\[large\]/ s/^sample = .*/sample = 3/' \
    -e '/^\[stage1\]/,/^\[large\]/ s/^budget = .*/budget = 100/' \
    configs/tiny.toml > "$out/overhead.toml"
for executor in slurm local; do
  rm -rf "$out/$executor"
  /usr/bin/time -f "%e s wall, %U s user, %S s system" -o "$out/$executor.time" \
    "$bin" search --config "$out/overhead.toml" --out "$out/$executor" --executor "$executor" --json \
    > "$out/$executor.json" 2> "$out/$executor.log"
done
python3 - "$out" <<'PY'
import json, statistics, sys
out = sys.argv[1]
def load(name):
    lines = [json.loads(l) for l in open(f"{out}/{name}/stage1/history.jsonl")]
    summary = json.loads(open(f"{out}/{name}.json").read().strip().splitlines()[-1])
    return lines, summary
rows = []
for name in ["slurm", "local"]:
    lines, summary = load(name)
    ran = [l["ran"] for l in lines if l["ran"]]
    start = [r["started_at"] - r["submitted_at"] for r in ran]
    collect = [r["collected_at"] - r["finished_at"] for r in ran]
    work = [r["finished_at"] - r["started_at"] for r in ran]
    wall = open(f"{out}/{name}.time").read().strip()
    q = lambda v: f"median {statistics.median(v):.3f} s, p90 {sorted(v)[int(len(v) * 0.9)]:.3f} s, max {max(v):.3f} s"
    print(f"{name}: {len(lines)} evaluations ({len(ran)} run, {len(lines) - len(ran)} cached), {wall}")
    print(f"  submission -> start: {q(start)}")
    print(f"  end -> result read:  {q(collect)}")
    print(f"  in the worker (read data, one step, validate, write): {q(work)}")
    print(f"  coordinator CPU: {summary['coordinator_cpu_seconds']:.2f} s in all, {summary['coordinator_cpu_seconds'] / len(lines) * 1000:.1f} ms per evaluation")
PY
