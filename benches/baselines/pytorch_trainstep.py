#!/usr/bin/env python3
"""PyTorch's side of the training-step rows: one SGD step (forward, backward, update) of
fmnist-ref (batch 128, 1x28x28) and MobileNet-V2 (batch 64, 3x32x32), 10 classes, same recipe as
eatnas (Nesterov momentum 0.9, weight decay 5e-4, label smoothing 0.1), on the CPU with
`--threads` threads. Prints median milliseconds per step, images/s and the peak resident memory.

Usage: benches/baselines/pytorch_trainstep.py [--threads 2] [--steps 10]
It builds the networks with the module `eatnas-cli export` writes, so both sides train the same
network (run `eatnas-cli export` first, or pass --module model.py for another architecture).
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

import torch

parser = argparse.ArgumentParser()
parser.add_argument("--threads", type=int, default=2)
parser.add_argument("--steps", type=int, default=10)
parser.add_argument("--arch", default=os.path.join(os.path.dirname(__file__), "../../../shared/spec/fmnist-ref.json"))
parser.add_argument("--module", default=None, help="a model.py written by `eatnas-cli export`")
args = parser.parse_args()
torch.set_num_threads(args.threads)

sys.path.insert(0, os.path.dirname(args.module or "."))
import importlib.util

spec = importlib.util.spec_from_file_location("exported", args.module)
exported = importlib.util.module_from_spec(spec)
spec.loader.exec_module(exported)
arch = json.load(open(args.arch))
model = exported.EatNet(arch, exported.IN_CHANNELS, 10).train()
decay = [p for n, p in model.named_parameters() if n.endswith("conv.weight") or n == "classifier.weight"]
rest = [p for n, p in model.named_parameters() if not (n.endswith("conv.weight") or n == "classifier.weight")]
opt = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0}], lr=0.01, momentum=0.9, nesterov=True)
loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
n, size = (128, exported.RESOLUTION)
x = torch.randn(n, exported.IN_CHANNELS, size, size)
y = torch.arange(n) % 10
times = []
for step in range(args.steps + 2):
    start = time.perf_counter()
    opt.zero_grad(set_to_none=True)
    loss_fn(model(x), y).backward()
    opt.step()
    if step >= 2:
        times.append(time.perf_counter() - start)
median = statistics.median(times)
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"arch": arch["name"], "batch": n, "pytorch_ms": median * 1e3, "images_per_second": n / median, "peak_mb": peak_mb, "threads": args.threads}))
