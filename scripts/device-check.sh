#!/usr/bin/env bash
# Every GPU check of the CUDA backend in one call of the device machine.
#
#   scripts/device-check.sh prepare
#       here (no GPU needed): builds the CUDA-capable test binaries, the GPU benchmark and the
#       CLI in release mode, strips them into .device/bin, copies ../shared's fixtures and spec
#       into .device/shared (../shared does not travel), and prints the device call to make.
#   scripts/device-check.sh run
#       there (an H100/H200 with CUDA 13 and PyTorch, no Rust): the op tests and the PyTorch
#       conformance fixtures on the CUDA device, the GPU benchmarks beside PyTorch+cuDNN, a
#       short training run; writes $OUT/report.md and the logs. About 6 minutes.
set -uo pipefail
cd "$(dirname "$0")/.."
DEVICE_DIR=.device

prepare() {
    set -e
    rm -rf "$DEVICE_DIR" && mkdir -p "$DEVICE_DIR/bin" "$DEVICE_DIR/shared"
    cp -r ../shared/fixtures ../shared/spec "$DEVICE_DIR/shared/"
    # The test and bench executables, found through cargo's JSON messages.
    executables() {
        cargo "$@" --message-format=json 2>/dev/null |
            python3 -c 'import json,sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") == "compiler-artifact" and m.get("executable"):
        print(m["target"]["name"], m["executable"])'
    }
    {
        executables test --release --no-run -p eatnas-tensor --test devices --test gradcheck
        executables test --release --no-run -p eatnas --test conformance --test network
        executables bench --no-run --bench cuda
        executables build --release -p eatnas-cli
    } | while read -r name path; do
        strip -o "$DEVICE_DIR/bin/$name" "$path"
    done
    ls -la "$DEVICE_DIR/bin"
    du -sh "$DEVICE_DIR"
    cat <<CALL

Device call (one run, timeout_s 540):
  command: bash scripts/device-check.sh run
  carry:   ["$DEVICE_DIR"]
CALL
}

step() {
    # step NAME SECONDS COMMAND...: runs with a time limit, output to $OUT/NAME.log, status to the report.
    local name=$1 limit=$2
    shift 2
    local start=$SECONDS
    timeout "$limit" "$@" >"$OUT/$name.log" 2>&1
    local rc=$?
    echo "- $name: exit $rc in $((SECONDS - start)) s" >>"$OUT/steps.md"
    return $rc
}

run() {
    : "${OUT:?run this on the device machine, where OUT is set}"
    local bin=$DEVICE_DIR/bin
    export EATNAS_TORCH_FIXTURES=$PWD/$DEVICE_DIR/shared/fixtures/torch
    export EATNAS_SHARED=$PWD/$DEVICE_DIR/shared
    export PYTHONUNBUFFERED=1
    : >"$OUT/steps.md"
    nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv >"$OUT/gpu.txt" 2>&1
    # Time limits add up to under 10 minutes; each step normally takes well under its limit.
    step devices 60 "$bin/devices" --nocapture
    step gradcheck 60 "$bin/gradcheck" --nocapture
    step conformance 60 "$bin/conformance" --nocapture
    step network 60 "$bin/network" --nocapture
    step eatnas_bench 120 env EATNAS_BENCH_DEVICE=cuda:0 "$bin/cuda"
    step torch_bench 120 python3 benches/baselines/pytorch_cuda.py
    step train 90 "$bin/eatnas-cli" train --arch "$EATNAS_SHARED/spec/fmnist-ref.json" \
        --data fashion-mnist --epochs 1 --device cuda:0 --out /tmp/eatnas-train --json
    # The demo large task's latency table on the GPU and its predictor's error on 30 networks
    # (issue 18; docs/latency.md). Last, so that a slow table cannot cost the steps above.
    step latency 90 bash -c "'$bin/eatnas-cli' latency build --device cuda:0 --repeats 5 --passes 1 \
        --out '$OUT/latency-cuda.json' && '$bin/eatnas-cli' latency check --device cuda:0 \
        --table '$OUT/latency-cuda.json' --networks 30 --repeats 5 --passes 1"
    {
        echo "# eatnas device check"
        echo
        cat "$OUT/gpu.txt"
        echo
        echo "## Steps"
        cat "$OUT/steps.md"
        echo
        echo "## Tests (last lines)"
        for t in devices gradcheck conformance network; do
            echo "### $t"
            echo '```'
            grep -E "test result|failures|panicked|worst|skipped|error|network:" "$OUT/$t.log" | tail -15
            echo '```'
        done
        echo
        echo "## Benchmarks"
        python3 benches/baselines/cuda_report.py "$OUT/eatnas_bench.log" "$OUT/torch_bench.log" 2>&1
        echo
        echo "## Training (fmnist-ref, 1 epoch, cuda:0)"
        echo '```'
        tail -3 "$OUT/train.log"
        echo '```'
        echo
        echo "## Latency table (demo large task, cuda:0)"
        echo '```'
        grep -E "^wrote|relative error|^measured against|error:" "$OUT/latency.log"
        echo '```'
    } >"$OUT/report.md"
    cat "$OUT/report.md"
}

case "${1:-}" in
prepare) prepare ;;
run) run ;;
*)
    echo "usage: scripts/device-check.sh prepare|run" >&2
    exit 2
    ;;
esac
