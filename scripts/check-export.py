#!/usr/bin/env python3
"""Checks `eatnas-cli export` against the runtimes it exports to, on one checkpoint.

Usage: scripts/check-export.py CHECKPOINT [--data SPEC] [--cli PATH] [--formats pytorch,onnx]
(with the Python that scripts/python-env.sh prints: torch, safetensors, onnx, onnxruntime)

eatnas writes the first test batch's normalised inputs and logits (`eatnas-cli eval
--dump-logits`); then
- pytorch: the exported module, loaded with the checkpoint's safetensors (strict names), gives the
  same logits; and back: after one SGD step in PyTorch, the module's state_dict saved with
  safetensors gives in eatnas the logits PyTorch gives (and, loaded as foreign weights with
  `--arch`, about the same test accuracy: that path estimates the normalisation from the data);
- onnx: the exported model passes onnx.checker (full check), names its input, batch axis and class
  count in its metadata, and gives the same logits in onnxruntime, at the batch's size and at
  another (the batch axis is free).
Each check is also run on a broken subject (one weight perturbed) and must fail there: a check
that cannot fail proves nothing. Exits non-zero on any failure; prints the measured differences.
"""
import argparse
import importlib.util
import json
import os
import subprocess
import sys
import shutil
import tempfile

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

TOLERANCE = 1e-4  # max |logit difference|, absolute

parser = argparse.ArgumentParser()
parser.add_argument("checkpoint")
parser.add_argument("--data", default="fashion-mnist")
parser.add_argument("--cli", default="target/release/eatnas-cli")
parser.add_argument("--formats", default="pytorch,onnx")
args = parser.parse_args()

work = tempfile.mkdtemp(prefix="eatnas-export-")
weights = os.path.join(args.checkpoint, "model.safetensors") if os.path.isdir(args.checkpoint) else args.checkpoint
failures = []


def cli(*argv):
    """Runs eatnas-cli; returns the JSON summary its last stdout line holds."""
    done = subprocess.run([args.cli, *argv], capture_output=True, text=True)
    if done.returncode != 0:
        sys.exit(f"eatnas-cli {' '.join(argv)} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def eatnas_logits(checkpoint, *extra):
    """(images, labels, logits, summary) of eatnas on the first test batch of `checkpoint`."""
    dump = tempfile.mktemp(suffix=".safetensors", dir=work)
    summary = cli("eval", "--checkpoint", checkpoint, "--data", args.data, "--dump-logits", dump, "--json", *extra)
    tensors = load_file(dump)
    return tensors["images"], tensors["labels"].long(), tensors["logits"], summary


def expect(name, diff, broken_diff):
    """Records a check: `diff` must be within TOLERANCE and the broken subject's must not."""
    ok = diff <= TOLERANCE and broken_diff > TOLERANCE
    print(f"{name}: max |difference| {diff:.3e} (tolerance {TOLERANCE:.0e}); "
          f"with one weight perturbed {broken_diff:.3e}: {'passed' if ok else 'FAILED'}")
    if not ok:
        failures.append(name)


def max_diff(a, b):
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape:
        return float("inf")
    return float(np.abs(a - b).max())


images, labels, logits, summary = eatnas_logits(args.checkpoint)
print(f"eatnas: logits {tuple(logits.shape)} of the first test batch (max |logit| {logits.abs().max():.3f}); "
      f"test top-1 {summary['test_top1']:.4f}")
formats = args.formats.split(",")


def check_pytorch():
    module_path = os.path.join(work, "model.py")
    cli("export", "--checkpoint", args.checkpoint, "--format", "pytorch", "--out", module_path, "--json")
    spec = importlib.util.spec_from_file_location("exported", module_path)
    exported = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(exported)
    model = exported.load(weights)  # strict: every name of the checkpoint, nothing else
    with torch.no_grad():
        ours = model(images)
        broken = exported.load(weights)
        next(broken.parameters()).view(-1)[0] += 0.5
        broken_logits = broken(images)
    expect("pytorch: exported module vs eatnas", max_diff(ours, logits), max_diff(broken_logits, logits))

    # Back: weights that PyTorch changed, in eatnas.
    model.train()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    with safe_open(weights, "pt") as f:
        metadata = f.metadata()
    loss = torch.nn.functional.cross_entropy(model(images), labels)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    model.eval()
    with torch.no_grad():
        stepped = model(images)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    back = os.path.join(work, "from-pytorch.safetensors")
    save_file(state, back, metadata=metadata)
    _, _, back_logits, back_summary = eatnas_logits(back)
    state_broken = dict(state)
    first = next(iter(state_broken))
    state_broken[first] = state_broken[first].clone()
    state_broken[first].view(-1)[0] += 0.5
    back_broken = os.path.join(work, "from-pytorch-broken.safetensors")
    save_file(state_broken, back_broken, metadata=metadata)
    _, _, broken_back_logits, _ = eatnas_logits(back_broken)
    print(f"pytorch: one SGD step changed the logits by up to {max_diff(stepped, logits):.3e}")
    expect("pytorch: PyTorch-trained weights in eatnas vs PyTorch", max_diff(back_logits, stepped),
           max_diff(broken_back_logits, stepped))

    # The same weights without eatnas's description, as weights trained elsewhere arrive.
    bare = os.path.join(work, "bare.safetensors")
    save_file(state, bare)
    arch = os.path.join(work, "arch.json")
    with open(arch, "w") as f:
        json.dump(exported.ARCH, f)
    foreign = cli("eval", "--checkpoint", bare, "--arch", arch, "--resolution", str(exported.RESOLUTION),
                  "--data", args.data, "--json")
    gap = abs(foreign["test_top1"] - back_summary["test_top1"])
    ok = gap <= 0.01
    print(f"pytorch: the same weights as foreign (--arch, normalisation estimated from the data): test top-1 "
          f"{foreign['test_top1']:.4f} against {back_summary['test_top1']:.4f} with eatnas's description: "
          f"{'passed' if ok else 'FAILED'} (within 0.01)")
    if not ok:
        failures.append("pytorch: foreign weights")


def check_onnx():
    import onnx
    import onnxruntime as ort
    from onnx import numpy_helper

    path = os.path.join(work, "model.onnx")
    cli("export", "--checkpoint", args.checkpoint, "--format", "onnx", "--out", path, "--json")
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    meta = {p.key: p.value for p in model.metadata_props}
    graph_input = model.graph.input[0]
    dims = graph_input.type.tensor_type.shape.dim
    shape = [d.dim_param or d.dim_value for d in dims]
    opset = max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    described = (meta.get("eatnas.input") == graph_input.name and dims[0].dim_param != ""
                 and int(meta.get("eatnas.classes", -1)) == logits.shape[1]
                 and shape[1:] == list(images.shape[1:]) and opset >= 13)
    print(f"onnx: opset {opset}, {len(model.graph.node)} nodes, input `{graph_input.name}` {shape}, "
          f"metadata {sorted(meta)}: {'passed' if described else 'FAILED'}")
    if not described:
        failures.append("onnx: description")

    def run(m, x):
        session = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return session.run(None, {graph_input.name: x})[0]

    x = images.numpy()
    broken = onnx.ModelProto()
    broken.CopyFrom(model)
    victim = next(t for t in broken.graph.initializer if t.name.endswith("depthwise.conv.weight"))
    values = numpy_helper.to_array(victim).copy()
    values.reshape(-1)[0] += 0.5
    victim.CopyFrom(numpy_helper.from_array(values, victim.name))
    expect("onnx: onnxruntime vs eatnas", max_diff(run(model, x), logits), max_diff(run(broken, x), logits))
    few = 7
    expect(f"onnx: onnxruntime on {few} images (free batch axis)", max_diff(run(model, x[:few]), logits[:few]),
           max_diff(run(broken, x[:few]), logits[:few]))


if "pytorch" in formats:
    check_pytorch()
if "onnx" in formats:
    check_onnx()
print("export check:", "passed" if not failures else "FAILED: " + "; ".join(failures))
if failures:
    print(f"export check: its files are kept in {work}")
    sys.exit(1)
shutil.rmtree(work)
