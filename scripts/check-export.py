#!/usr/bin/env python3
"""Checks that `eatnas-cli export --format pytorch` gives the same logits as eatnas.

Usage: scripts/check-export.py CHECKPOINT_DIR [--data SPEC] [--cli PATH]

Where PyTorch and safetensors are installed: exports the checkpoint's module, has eatnas write the
first test batch's inputs and logits (`eatnas-cli eval --dump-logits`), runs the same inputs
through the PyTorch module loaded with the checkpoint's safetensors (strict names), and compares.
It then round-trips: the PyTorch module's state_dict saved with safetensors is evaluated by eatnas
(`eval --arch`), which must give the same accuracy. Exits non-zero on any difference.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import tempfile

import torch
from safetensors.torch import load_file, save_file

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint")
parser.add_argument("--data", default="fashion-mnist")
parser.add_argument("--cli", default="target/release/eatnas-cli")
args = parser.parse_args()

work = tempfile.mkdtemp(prefix="eatnas-export-")
module_path = os.path.join(work, "model.py")
dump = os.path.join(work, "logits.safetensors")
subprocess.run([args.cli, "export", "--checkpoint", args.checkpoint, "--format", "pytorch", "--out", module_path], check=True)
first = subprocess.run(
    [args.cli, "eval", "--checkpoint", args.checkpoint, "--data", args.data, "--dump-logits", dump, "--json"],
    check=True, capture_output=True, text=True)
eatnas_summary = json.loads(first.stdout.strip().splitlines()[-1])

spec = importlib.util.spec_from_file_location("exported", module_path)
exported = importlib.util.module_from_spec(spec)
spec.loader.exec_module(exported)
weights = os.path.join(args.checkpoint, "model.safetensors") if os.path.isdir(args.checkpoint) else args.checkpoint
model = exported.load(weights)

reference = load_file(dump)
with torch.no_grad():
    logits = model(reference["images"])
diff = (logits - reference["logits"]).abs().max().item()
scale = reference["logits"].abs().max().item()
print(f"logits: {tuple(logits.shape)}, max |pytorch - eatnas| = {diff:.3e} (max |logit| {scale:.3f})")
same_top1 = (logits.argmax(1) == reference["logits"].argmax(1)).float().mean().item()
print(f"same top-1 class on {same_top1 * 100:.1f}% of the batch")

# Round trip: weights saved from PyTorch evaluate in eatnas to the same accuracy.
state = {k: v.contiguous() for k, v in model.state_dict().items()}
back = os.path.join(work, "from-pytorch.safetensors")
save_file(state, back)
arch = os.path.join(work, "arch.json")
with open(arch, "w") as f:
    json.dump(exported.ARCH, f)
second = subprocess.run(
    [args.cli, "eval", "--checkpoint", back, "--arch", arch, "--resolution", str(exported.RESOLUTION), "--data", args.data, "--json"],
    check=True, capture_output=True, text=True)
roundtrip = json.loads(second.stdout.strip().splitlines()[-1])
print(f"eatnas test top-1: {eatnas_summary['test_top1']:.4f}; PyTorch-saved weights in eatnas: {roundtrip['test_top1']:.4f}")

ok = diff <= 1e-4 * max(scale, 1.0) and same_top1 == 1.0 and abs(roundtrip["test_top1"] - eatnas_summary["test_top1"]) < 5e-3
print("export check:", "passed" if ok else "FAILED")
sys.exit(0 if ok else 1)
