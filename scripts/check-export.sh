#!/usr/bin/env bash
# The exports against the runtimes they export to. Trains two small networks on the embedded demo
# data (shared/spec/fmnist-ref.json and tests/fixtures/export-mix.json: MBConv and separable
# blocks, shortcuts, kernels 3 to 7, strides 1 and 2, widths 0.5 to 1.5), then runs
# scripts/check-export.py on each: the PyTorch module both ways, and the ONNX model in
# onnxruntime, each also on a perturbed copy where it must fail. Python: what
# scripts/python-env.sh prints (target/python-venv, created when missing).
#
#   scripts/check-export.sh [OUT_DIR]     (default target/export-check)
set -euo pipefail
cd "$(dirname "$0")/.."
out="$(realpath -m "${1:-target/export-check}")"
python="$(scripts/python-env.sh)"
cargo build --release -q -p eatnas-cli
rm -rf "$out"
mkdir -p "$out"
reference=../shared/spec/fmnist-ref.json
[ -f "$reference" ] || { echo "check-export: $reference is missing (../shared beside the checkout)" >&2; exit 1; }
for arch in "$reference" tests/fixtures/export-mix.json; do
  name="$(basename "$arch" .json)"
  target/release/eatnas-cli train --arch "$arch" --epochs 3 --data-fraction 0.3 --out "$out/$name" \
    > "$out/$name.train.log" 2>&1 || { cat "$out/$name.train.log" >&2; exit 1; }
  echo "check-export: $name ($(tail -1 "$out/$name.train.log"))"
  "$python" scripts/check-export.py "$out/$name" | tee "$out/$name.check.txt"
done
