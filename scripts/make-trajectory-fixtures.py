#!/usr/bin/env python3
"""PyTorch's training trajectories, written as the fixtures of `tests/trajectory.rs`.

Usage: scripts/make-trajectory-fixtures.py [--out tests/fixtures/trajectory]
(with a Python that has torch: the virtual environment `cargo xtask bench` creates under
target/python-venv from scripts/python-env.sh; safetensors is not needed, the files are written here).

For each case (fmnist-ref; a network of SepConv and MBConv blocks with skips) it fixes:
- the data: 256 images of the embedded Fashion-MNIST demo, normalised in float32 with their own
  mean and standard deviation, no augmentation; and their order: a seeded permutation each epoch,
  cut into batches of 32 (`batches`, one row of image indices per step);
- the initial weights (PyTorch's default initialisation, float32), BN at weight 1, bias 0,
  running mean 0, running variance 1;
- the recipe: Nesterov SGD with momentum 0.9, weight decay 5e-4 on convolution and classifier
  weights only, lr 0.1 with a linear warm-up of half an epoch then cosine decay to zero per step,
  label smoothing 0.1, BN momentum 0.1, 3 epochs (24 steps).

It trains in float64 (the reference: each step's loss and learning rate, the final parameters and
BN running statistics), then three times in float32 (plain; initial weights moved by one part in
10^7; images moved by one part in 10^7). How far those float32 runs land from the float64 one is
the drift that float32 arithmetic alone produces on this trajectory: the test's tolerance is a
multiple of it (see tests/trajectory.rs). Last, it trains the float64 reference again with the
recipe off by one thing at a time (no Nesterov, weight decay on BN parameters and biases too, no
label smoothing, weight decay 1e-4, BN momentum 0.01) and prints, for each, how many times the tolerance
its deviation is: a recipe the test could not tell from the right one would show a ratio below 1.

Each file: tensors `x` (256, 1, 28, 28) f32, `labels` (256) i64, `batches` (24, 32) i64,
`init.NAME` and `final.NAME` for every parameter and buffer (ARCH.md names); metadata (JSON
values) `arch`, `in_channels`, `classes`, `recipe` (TrainConfig fields), `steps_per_epoch`,
`loss` and `lr` (per step, float64 reference), `loss_drift` (per step, worst float32 run),
`tensor_drift` (per final tensor: worst float32 run's L2 distance), `torch_version`.
"""
import argparse
import copy
import json
import math
import os

import torch

from eatnas_torch import DEMO, SHARED, exported_module, read_idx, write_safetensors

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
IMAGES, BATCH, EPOCHS = 256, 32, 3
RECIPE = {
    "epochs": EPOCHS,
    "batch_size": BATCH,
    "lr": 0.1,
    "momentum": 0.9,
    "nesterov": True,
    "weight_decay": 5e-4,
    "warmup_epochs": 0.5,
    "label_smoothing": 0.1,
}
BN_MOMENTUM = 0.1

MIXED = {
    "format": "eatnas-arch/1",
    "name": "trajectory-mixed",
    "stem": {"channels": 8, "kernel": 3, "stride": 1},
    "blocks": [
        {"op": "sep", "kernel": 3, "skip": True, "layers": 2, "width": 1.0, "base_channels": 8, "stride": 1},
        {"op": "mb3", "kernel": 5, "skip": True, "layers": 2, "width": 1.0, "base_channels": 12, "stride": 2},
        {"op": "mb6", "kernel": 3, "skip": True, "layers": 2, "width": 1.0, "base_channels": 16, "stride": 2},
        {"op": "sep", "kernel": 7, "skip": False, "layers": 1, "width": 1.5, "base_channels": 16, "stride": 2},
        {"op": "mb6", "kernel": 3, "skip": False, "layers": 1, "width": 1.0, "base_channels": 32, "stride": 1},
    ],
    "head": {"channels": 64},
}


def demo_data():
    (count, rows, cols), pixels = read_idx(os.path.join(DEMO, "train-images-idx3-ubyte.gz"))
    _, labels = read_idx(os.path.join(DEMO, "train-labels-idx1-ubyte.gz"))
    # Every 37th image: all classes, not the file's first run of one class.
    picked = [(i * 37) % count for i in range(IMAGES)]
    x = torch.tensor([[pixels[i * rows * cols + j] for j in range(rows * cols)] for i in picked], dtype=torch.float32)
    x = (x / 255.0).view(IMAGES, 1, rows, cols)
    x = (x - x.mean()) / x.std()
    return x.contiguous(), torch.tensor([labels[i] for i in picked], dtype=torch.int64)


def batches(seed):
    g = torch.Generator().manual_seed(seed)
    steps = [torch.randperm(IMAGES, generator=g).view(-1, BATCH) for _ in range(EPOCHS)]
    return torch.cat(steps).contiguous()


def decays(name):
    return name.endswith("conv.weight") or name == "classifier.weight"


def lr_at(step, recipe, steps_per_epoch):
    warmup = round(recipe["warmup_epochs"] * steps_per_epoch)
    total = recipe["epochs"] * steps_per_epoch
    if step < warmup:
        return recipe["lr"] * (step + 1) / warmup
    progress = min((step - warmup) / max(total - warmup, 1), 1.0)
    return recipe["lr"] * 0.5 * (1.0 + math.cos(math.pi * progress))


def make_sgd(model, recipe, decay_all=False):
    named = list(model.named_parameters())
    groups = [
        {"params": [p for n, p in named if decay_all or decays(n)], "weight_decay": recipe["weight_decay"]},
        {"params": [p for n, p in named if not (decay_all or decays(n))], "weight_decay": 0.0},
    ]
    return torch.optim.SGD(groups, lr=recipe["lr"], momentum=recipe["momentum"], nesterov=recipe["nesterov"])


def set_bn_momentum(model, bn_momentum):
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = bn_momentum


def step(model, sgd, x, labels, lr, recipe):
    """One training step at `lr`; returns the loss."""
    for group in sgd.param_groups:
        group["lr"] = lr
    sgd.zero_grad(set_to_none=True)
    loss = torch.nn.CrossEntropyLoss(label_smoothing=recipe["label_smoothing"])(model(x), labels)
    loss.backward()
    sgd.step()
    return loss.item()


def momenta(model, sgd):
    """The optimizer's momentum buffers by parameter name (zeros before the first step)."""
    out = {}
    for name, p in model.named_parameters():
        buf = sgd.state.get(p, {}).get("momentum_buffer")
        out[name] = (buf if buf is not None else torch.zeros_like(p)).detach().clone()
    return out


def train(model, x, labels, order, recipe, dtype, bn_momentum=BN_MOMENTUM, decay_all=False, snapshots=()):
    """Trains a copy of `model` as the recipe says; returns (losses, lrs, final state, and the
    (state, momenta) before each step listed in `snapshots`)."""
    model = copy.deepcopy(model).to(dtype).train()
    set_bn_momentum(model, bn_momentum)
    sgd = make_sgd(model, recipe, decay_all)
    steps_per_epoch = order.shape[0] // recipe["epochs"]
    losses, lrs, before = [], [], {}
    x = x.to(dtype)
    for s in range(order.shape[0]):
        if s in snapshots:
            before[s] = (state_of(model), momenta(model, sgd))
        lr = lr_at(s, recipe, steps_per_epoch)
        lrs.append(lr)
        losses.append(step(model, sgd, x[order[s]], labels[order[s]], lr, recipe))
    return losses, lrs, state_of(model), before


def state_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def one_step(model, state, momentum, x, labels, lr, recipe, dtype, bn_momentum=BN_MOMENTUM, decay_all=False):
    """From `state` and `momentum` (rounded to float32 first: the values the fixture stores), one
    step in `dtype`; returns (loss, state after, momenta after)."""
    model = copy.deepcopy(model).to(dtype).train()
    set_bn_momentum(model, bn_momentum)
    model.load_state_dict({k: v.float().to(dtype) for k, v in state.items()})
    sgd = make_sgd(model, recipe, decay_all)
    for name, p in model.named_parameters():
        sgd.state[p]["momentum_buffer"] = momentum[name].float().to(dtype).clone()
    loss = step(model, sgd, x.to(dtype), labels, lr, recipe)
    return loss, state_of(model), momenta(model, sgd)


def perturbed(t, generator):
    sign = torch.randint(0, 2, t.shape, generator=generator).to(t.dtype) * 2 - 1
    return t * (1 + 1e-7 * sign)


# Steps checked one at a time from PyTorch's own state (weights, BN statistics, momenta): the
# first, and one late in the cosine phase.
ONE_STEPS = (0, 13)
FACTOR = 4.0


def case(name, arch, seed, x, labels, out):
    torch.manual_seed(seed)
    model = exported_module(arch, 1, 10, 28)["EatNet"]()
    init = state_of(model)
    order = batches(seed)
    steps_per_epoch = order.shape[0] // EPOCHS
    losses, lrs, final, before = train(model, x, labels, order, RECIPE, torch.float64, snapshots=ONE_STEPS)

    g = torch.Generator().manual_seed(seed + 1000)
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for p in moved.parameters():
            p.copy_(perturbed(p, g))
    x_moved = perturbed(x, g)
    runs = [
        train(model, x, labels, order, RECIPE, torch.float32),
        train(moved, x, labels, order, RECIPE, torch.float32),
        train(model, x_moved, labels, order, RECIPE, torch.float32),
    ]
    loss_drift = [max(abs(r[0][s] - losses[s]) for r in runs) for s in range(len(losses))]
    tensor_drift = {k: max((r[2][k].double() - final[k]).norm().item() for r in runs) for k in final}

    # One step from the float64 run's state before it: the reference in float64, the drift from
    # float32 (plain, and with the images moved).
    one = {}
    for s in ONE_STEPS:
        state, momentum = before[s]
        xb, yb = x[order[s]], labels[order[s]]
        ref = one_step(model, state, momentum, xb, yb, lrs[s], RECIPE, torch.float64)
        f32 = [one_step(model, state, momentum, b, yb, lrs[s], RECIPE, torch.float32) for b in (xb, x_moved[order[s]])]
        one[s] = dict(
            state=state, momentum=momentum, ref=ref,
            loss_drift=max(abs(r[0] - ref[0]) for r in f32),
            state_drift={k: max((r[1][k].double() - ref[1][k]).norm().item() for r in f32) for k in ref[1]},
        )

    # The test's bounds (tests/trajectory.rs): each step's loss within FACTOR times the float32
    # drift so far plus 1e-5 of the loss, each final tensor within FACTOR times its drift plus
    # 1e-6 per element (as the L2 norm of an error of 1e-6 in every element).
    running = [max(loss_drift[: s + 1]) for s in range(len(losses))]
    loss_bound = [FACTOR * running[s] + 1e-5 * abs(losses[s]) for s in range(len(losses))]

    def tensor_bound(drift, t):
        return FACTOR * drift + 1e-6 * math.sqrt(t.numel())

    def free_ratio(run):
        r_losses, _, r_final, _ = run
        worst_loss = max(abs(a - b) / bound for a, b, bound in zip(r_losses, losses, loss_bound))
        worst_tensor = max((r_final[k].double() - final[k]).norm().item() / tensor_bound(tensor_drift[k], final[k]) for k in final)
        return worst_loss, worst_tensor

    def one_ratio(s, result):
        o = one[s]
        loss, state, momentum = result
        worst = abs(loss - o["ref"][0]) / (FACTOR * o["loss_drift"] + 1e-6 * abs(o["ref"][0]))
        for k in state:
            worst = max(worst, (state[k].double() - o["ref"][1][k]).norm().item() / tensor_bound(o["state_drift"][k], state[k]))
        return worst

    print(f"{name}: loss {losses[0]:.4f} -> {losses[-1]:.4f} over {len(losses)} steps")
    print(f"  float32 drift, whole run: loss {loss_drift[1]:.1e} after one step, {max(loss_drift):.1e} at worst; "
          f"worst final tensor {max(tensor_drift.values()):.1e}")
    for s in ONE_STEPS:
        print(f"  float32 drift, step {s} alone: loss {one[s]['loss_drift']:.1e}, worst tensor {max(one[s]['state_drift'].values()):.1e}")
    for label, run in [("float32 (plain)", runs[0]), ("float32 (weights moved)", runs[1]), ("float32 (images moved)", runs[2])]:
        print(f"  {label:32} whole run: worst loss / bound {free_ratio(run)[0]:.3f}, worst tensor / bound {free_ratio(run)[1]:.3f}")
    off = {
        "momentum without Nesterov": dict(recipe={**RECIPE, "nesterov": False}),
        "weight decay on BN and biases": dict(decay_all=True),
        "no label smoothing": dict(recipe={**RECIPE, "label_smoothing": 0.0}),
        "weight decay 1e-4": dict(recipe={**RECIPE, "weight_decay": 1e-4}),
        "BN momentum 0.01": dict(bn_momentum=0.01),
    }
    print("  the recipe off by one thing, in float64: deviation / bound")
    for label, change in off.items():
        change = dict(change)
        recipe = change.pop("recipe", RECIPE)
        whole = free_ratio(train(model, x, labels, order, recipe, torch.float64, **change))
        alone = [one_ratio(s, one_step(model, one[s]["state"], one[s]["momentum"], x[order[s]], labels[order[s]], lrs[s], recipe, torch.float64, **change)) for s in ONE_STEPS]
        print(f"    {label:32} whole run: loss {whole[0]:8.1f}, tensors {whole[1]:8.1f}; "
              + ", ".join(f"step {s} alone {r:8.1f}" for s, r in zip(ONE_STEPS, alone)))

    tensors = {"x": x, "labels": labels, "batches": order}
    tensors.update({f"init.{k}": v.float() for k, v in init.items()})
    tensors.update({f"final.{k}": v.float() for k, v in final.items()})
    for s in ONE_STEPS:
        o = one[s]
        if s > 0:  # step 0 starts from init.* with zero momenta
            tensors.update({f"step{s}.before.{k}": v.float() for k, v in o["state"].items()})
            tensors.update({f"step{s}.momentum.{k}": v.float() for k, v in o["momentum"].items()})
        tensors.update({f"step{s}.after.{k}": v.float() for k, v in o["ref"][1].items()})
    metadata = {
        "arch": arch,
        "in_channels": 1,
        "classes": 10,
        "recipe": RECIPE,
        "bn_momentum": BN_MOMENTUM,
        "steps_per_epoch": steps_per_epoch,
        "loss": losses,
        "lr": lrs,
        "loss_drift": loss_drift,
        "tensor_drift": tensor_drift,
        "one_steps": {
            str(s): {"loss": one[s]["ref"][0], "loss_drift": one[s]["loss_drift"], "state_drift": one[s]["state_drift"]}
            for s in ONE_STEPS
        },
        "factor": FACTOR,
        "torch_version": torch.__version__,
    }
    write_safetensors(os.path.join(out, f"{name}.safetensors"), tensors, metadata)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "trajectory"))
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    x, labels = demo_data()
    fmnist_ref = json.load(open(os.path.join(SHARED, "spec", "fmnist-ref.json")))
    case("fmnist-ref", fmnist_ref, 0, x, labels, args.out)
    case("mixed", MIXED, 1, x, labels, args.out)


if __name__ == "__main__":
    main()
