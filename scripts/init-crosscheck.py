#!/usr/bin/env python3
"""The same initial weights trained by PyTorch and by eatnas: does the collapse of short trainings
come with the initialisation, in both frameworks alike? (issue 12, docs/initialisation.md)

Usage: scripts/init-crosscheck.py [--pair 0,1] [--seeds 0,1,2,3,4] [--cli target/release/eatnas-cli]
(with a Python that has torch: the one `scripts/python-env.sh` prints).

For each seed and each of torchvision's and PyTorch's default initialisation, PyTorch draws
fmnist-ref's weights and writes them to safetensors. eatnas trains from them
(`eatnas-cli train --initial-weights`) on the two-class folder of scripts/make-two-class-folder.py,
and PyTorch trains from the same weights on the same images with the same recipe (2 epochs, batch
32, Nesterov SGD 0.9, lr 0.1 cosine per step, weight decay 5e-4 on conv and classifier weights,
label smoothing 0.1, crop with 2-pixel padding, flips, 10% held out, normalisation estimated on
the training split). The data order and augmentation draws differ between the two (each
framework's own), so single runs differ; the collapse rate is what is compared. Prints one JSON
line per run and a table.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from eatnas_torch import ROOT, SHARED, demo_split, exported_module, torchvision_init, write_safetensors  # noqa: E402

parser = argparse.ArgumentParser()
parser.add_argument("--pair", default="0,1")
parser.add_argument("--seeds", default="0,1,2,3,4")
parser.add_argument("--cli", default=os.path.join(ROOT, "target", "release", "eatnas-cli"))
parser.add_argument("--work", default=None)
args = parser.parse_args()
torch.set_num_threads(2)
classes = [int(c) for c in args.pair.split(",")]
work = args.work or tempfile.mkdtemp(prefix="eatnas-crosscheck-")
folder = os.path.join(work, "folder")
if not os.path.isdir(folder):
    subprocess.run([sys.executable, os.path.join(ROOT, "scripts", "make-two-class-folder.py"), folder, "--classes", args.pair], check=True, stdout=subprocess.DEVNULL)


def two_class(prefix, per_class):
    """The images make-two-class-folder.py writes, in the folder's class order (sorted names)."""
    x, y = demo_split(prefix)
    keep = {c: [i for i in range(len(y)) if y[i] == c][:per_class] for c in classes}
    names = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]
    order = sorted(classes, key=lambda c: names[c])
    xs = torch.cat([x[keep[c]] for c in order])
    ys = torch.cat([torch.full((per_class,), k, dtype=torch.int64) for k, _ in enumerate(order)])
    return xs, ys


arch = json.load(open(os.path.join(SHARED, "spec", "fmnist-ref.json")))
EatNet = exported_module(arch, 1, 2, 28)["EatNet"]
train_x, train_y = two_class("train", 300)
test_x, test_y = two_class("t10k", 100)


def pytorch_run(state, seed):
    g = torch.Generator().manual_seed(seed)
    perm = torch.randperm(len(train_y), generator=g)
    held = len(perm) // 10
    tr = perm[held:]
    x, y = train_x[tr], train_y[tr]
    mean, std = x.mean().item(), x.std().item()
    model = EatNet()
    model.load_state_dict(state)
    decay = [p for n, p in model.named_parameters() if n.endswith("conv.weight") or n == "classifier.weight"]
    rest = [p for n, p in model.named_parameters() if not (n.endswith("conv.weight") or n == "classifier.weight")]
    sgd = torch.optim.SGD([{"params": decay, "weight_decay": 5e-4}, {"params": rest, "weight_decay": 0.0}],
                          lr=0.1, momentum=0.9, nesterov=True)
    steps_per_epoch = len(y) // 32
    total = 2 * steps_per_epoch
    schedule = torch.optim.lr_scheduler.LambdaLR(sgd, lambda s: 0.5 * (1 + torch.cos(torch.tensor(torch.pi * min(s / total, 1.0))).item()))
    loss_fn = torch.nn.CrossEntropyLoss(label_smoothing=0.1)
    model.train()
    for _ in range(2):
        order = torch.randperm(len(y), generator=g)
        for b in range(steps_per_epoch):
            idx = order[b * 32 : (b + 1) * 32]
            xb = torch.nn.functional.pad(x[idx], (2, 2, 2, 2))
            dx, dy = torch.randint(0, 5, (2,), generator=g).tolist()
            xb = xb[:, :, dy : dy + 28, dx : dx + 28]
            flip = torch.rand(len(idx), generator=g) < 0.5
            xb = torch.where(flip.view(-1, 1, 1, 1), xb.flip(3), xb)
            sgd.zero_grad(set_to_none=True)
            loss_fn(model((xb - mean) / std), y[idx]).backward()
            sgd.step()
            schedule.step()
    with torch.no_grad():
        # With the running statistics (what evaluation uses), and with the test batch's own
        # statistics: a network that only collapses with the former has running statistics that
        # do not describe its weights.
        running = (model.eval()((test_x - mean) / std).argmax(1) == test_y).float().mean().item()
        batch = (model.train()((test_x - mean) / std).argmax(1) == test_y).float().mean().item()
        return running, batch


rows = []
for seed in [int(s) for s in args.seeds.split(",")]:
    for scheme in ["torchvision", "pytorch"]:
        torch.manual_seed(seed)
        model = EatNet()
        if scheme == "torchvision":
            torchvision_init(model)
        state = {k: v.clone() for k, v in model.state_dict().items()}
        weights = os.path.join(work, f"{scheme}-{seed}.safetensors")
        write_safetensors(weights, state)
        out = os.path.join(work, f"run-{scheme}-{seed}")
        subprocess.run(["rm", "-rf", out], check=True)
        result = subprocess.run([args.cli, "train", "--arch", os.path.join(SHARED, "spec", "fmnist-ref.json"),
                                 "--data", f"folder:{folder}", "--epochs", "2", "--batch-size", "32",
                                 "--initial-weights", weights, "--seed", str(seed), "--out", out, "--json"],
                                check=True, capture_output=True, text=True)
        eatnas = json.loads(result.stdout.strip().splitlines()[-1])["test_top1"]
        running, batch = pytorch_run(state, seed)
        row = {"seed": seed, "init": scheme, "eatnas_test_top1": eatnas, "pytorch_test_top1": running,
               "pytorch_test_top1_batch_statistics": batch}
        rows.append(row)
        print(json.dumps(row), flush=True)

print(f"\npair {args.pair}: test top-1 (%) after 2 epochs from the same initial weights")
print("| init | eatnas | PyTorch | PyTorch, batch statistics | collapsed (50%): eatnas / PyTorch |\n|---|---|---|---|---|")
for scheme in ["torchvision", "pytorch"]:
    r = [x for x in rows if x["init"] == scheme]
    e = " ".join(f"{100 * x['eatnas_test_top1']:.1f}" for x in r)
    p = " ".join(f"{100 * x['pytorch_test_top1']:.1f}" for x in r)
    b = " ".join(f"{100 * x['pytorch_test_top1_batch_statistics']:.1f}" for x in r)
    ce = sum(abs(x["eatnas_test_top1"] - 0.5) < 1e-6 for x in r)
    cp = sum(abs(x["pytorch_test_top1"] - 0.5) < 1e-6 for x in r)
    print(f"| {scheme} | {e} | {p} | {b} | {ce}/{len(r)} / {cp}/{len(r)} |")
