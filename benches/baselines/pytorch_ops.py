#!/usr/bin/env python3
"""PyTorch's side of `cargo xtask bench cpu`: the rows of `benches/ops.rs`, same shapes, same
networks (built by the module `eatnas-cli export` writes), same recipe, on the CPU.

    pytorch_ops.py --threads 2 [--rows NAME,NAME] [--min-seconds 2]
        times every row; prints one JSON object per row: {"name", "ms" (median), "samples"}
    pytorch_ops.py --threads 2 --memory NAME
        runs one row a few times in this process and prints {"name", "peak_mb", "base_mb"}:
        the process's peak resident memory and its resident memory just before the first run
        (inputs, parameters and the runtime in place), so that peak - base is what the row
        itself needs.
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "scripts"))
from eatnas_torch import SHARED, exported_module  # noqa: E402  (the module `eatnas-cli export` writes)


def uniform(*shape, requires_grad=False, device="cpu"):
    return (torch.rand(*shape, device=device) * 2 - 1).requires_grad_(requires_grad)


def conv_row(n, c, size, cout, kernel, stride, groups):
    x = uniform(n, c, size, size)
    w = uniform(cout, c // groups, kernel, kernel)

    def run():
        with torch.no_grad():
            F.conv2d(x, w, None, stride, kernel // 2, 1, groups)

    return run


def mbconv_row(n, c, size, kernel, device="cpu"):
    m = exported_module({"stem": {}, "blocks": [], "head": {}}, 1, 10, size)
    block = m["MBConv"](c, c, 6, kernel, 1, True).to(device).train()
    x = uniform(n, c, size, size, requires_grad=True, device=device)
    dy = uniform(n, c, size, size, device=device)

    def run():
        x.grad = None
        block.zero_grad(set_to_none=True)
        block(x).backward(dy)

    return run


def trainstep_row(arch, n, channels, size, classes=10, weight_decay=5e-4, device="cpu"):
    model = exported_module(arch, channels, classes, size)["EatNet"](arch, channels, classes).to(device).train()
    named = list(model.named_parameters())
    decayed = lambda name: name.endswith("conv.weight") or name == "classifier.weight"
    opt = torch.optim.SGD(
        [
            {"params": [p for k, p in named if decayed(k)], "weight_decay": weight_decay},
            {"params": [p for k, p in named if not decayed(k)], "weight_decay": 0.0},
        ],
        lr=0.01,
        momentum=0.9,
        nesterov=True,
    )
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    x = uniform(n, channels, size, size, device=device)
    labels = torch.arange(n, device=device) % classes

    def run():
        opt.zero_grad(set_to_none=True)
        loss_fn(model(x), labels).backward()
        opt.step()

    return run


def rows():
    """Name -> a function that builds the row and returns one run of it."""
    counts = json.load(open(os.path.join(SHARED, "fixtures", "torch", "counts.json")))
    fmnist_ref = json.load(open(os.path.join(SHARED, "spec", "fmnist-ref.json")))
    return {
        "dwconv3x3_fwd_32x144x56x56": lambda: conv_row(32, 144, 56, 144, 3, 1, 144),
        "dwconv5x5_fwd_32x144x56x56": lambda: conv_row(32, 144, 56, 144, 5, 1, 144),
        "dwconv7x7_fwd_32x144x56x56": lambda: conv_row(32, 144, 56, 144, 7, 1, 144),
        "pwconv_fwd_32x24x56x56_to144": lambda: conv_row(32, 24, 56, 144, 1, 1, 1),
        "conv3x3s2_fwd_32x3x224x224_to32": lambda: conv_row(32, 3, 224, 32, 3, 2, 1),
        "mbconv6_k3_fwdbwd_32x24x56x56": lambda: mbconv_row(32, 24, 56, 3),
        "mbconv6_k5_fwdbwd_64x40x16x16": lambda: mbconv_row(64, 40, 16, 5),
        "mobilenetv2_trainstep_64x3x32x32": lambda: trainstep_row(counts[0]["arch"], 64, 3, 32),
        "fmnist_ref_trainstep_128x1x28x28": lambda: trainstep_row(fmnist_ref, 128, 1, 28),
    }


def resident_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", default=None, help="comma-separated row names (default: all)")
    parser.add_argument("--min-seconds", type=float, default=2.0)
    parser.add_argument("--min-samples", type=int, default=10)
    parser.add_argument("--memory", default=None, help="one row whose peak memory to measure")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    table = rows()
    if args.memory:
        run = table[args.memory]()
        base = resident_mb()
        for _ in range(3):
            run()
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print(json.dumps({"name": args.memory, "peak_mb": peak, "base_mb": base}), flush=True)
        return
    names = args.rows.split(",") if args.rows else list(table)
    for name in names:
        run = table[name]()
        run()  # warm-up: first-touch allocations, oneDNN primitive creation
        run()
        samples = []
        start = time.perf_counter()
        while len(samples) < args.min_samples or time.perf_counter() - start < args.min_seconds:
            t = time.perf_counter()
            run()
            samples.append(time.perf_counter() - t)
        ms = statistics.median(samples) * 1e3
        print(json.dumps({"name": name, "ms": ms, "samples": len(samples)}), flush=True)


if __name__ == "__main__":
    main()
