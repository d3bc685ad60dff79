#!/usr/bin/env python3
"""PyTorch+cuDNN's side of the GPU benchmarks: the rows of `benches/cuda.rs`, same names, same
shapes, same networks (the module `eatnas-cli export` writes), float32 with TF32 off, cuDNN's
autotuner on. Prints one JSON object per row: {"name", "ms" (median), "batches"}.

    pytorch_cuda.py [--rows NAME,NAME]
"""
import argparse
import json
import os
import statistics
import time

import torch
import torch.nn.functional as F

from pytorch_ops import SHARED, exported_module, mbconv_row, trainstep_row

torch.backends.cudnn.benchmark = True
torch.backends.cuda.matmul.allow_tf32 = False
torch.backends.cudnn.allow_tf32 = False
DEV = torch.device("cuda")


def uniform(*shape):
    return torch.rand(*shape, device=DEV) * 2 - 1


def copy_row(mib):
    x = torch.zeros(mib * 2**20 // 4, device=DEV)

    def run():
        x.clone()

    return run


def depthwise_row(n, c, size, k, stride, backward):
    x = uniform(n, c, size, size)
    w = uniform(c, 1, k, k)
    out = (size + stride - 1) // stride
    dy = uniform(n, c, out, out)

    def forward():
        with torch.no_grad():
            F.conv2d(x, w, None, stride, k // 2, 1, c)

    def grads():
        # cuDNN's backward kernels for both gradients, without a forward pass.
        torch.ops.aten.convolution_backward(
            dy, x, w, None, [stride, stride], [k // 2, k // 2], [1, 1], False, [0, 0], c, [True, True, False]
        )

    return grads if backward else forward


def conv_row(n, cin, size, cout, k, stride):
    x = uniform(n, cin, size, size)
    w = uniform(cout, cin, k, k)

    def run():
        with torch.no_grad():
            F.conv2d(x, w, None, stride, k // 2)

    return run


def mbconv_infer_row(n, c, size, kernel):
    m = exported_module({"stem": {}, "blocks": [], "head": {}}, 1, 10, size)
    block = m["MBConv"](c, c, 6, kernel, 1, True).to(DEV).eval()
    x = uniform(n, c, size, size)

    def run():
        with torch.no_grad():
            block(x)

    return run


def mobilenet_row(n):
    counts = json.load(open(os.path.join(SHARED, "fixtures", "torch", "counts.json")))
    return trainstep_row(counts[0]["arch"], n, 3, 224, classes=1000, weight_decay=4e-5, device=DEV)


def rows():
    table = {"copy_d2d_1024MiB": lambda: copy_row(1024)}
    for k in (3, 5, 7):
        table[f"dwconv{k}x{k}_fwd_128x144x56x56"] = lambda k=k: depthwise_row(128, 144, 56, k, 1, False)
        table[f"dwconv{k}x{k}_bwd_128x144x56x56"] = lambda k=k: depthwise_row(128, 144, 56, k, 1, True)
    table["dwconv3x3s2_fwd_128x96x112x112"] = lambda: depthwise_row(128, 96, 112, 3, 2, False)
    table["dwconv3x3s2_bwd_128x96x112x112"] = lambda: depthwise_row(128, 96, 112, 3, 2, True)
    table["pwconv_fwd_128x24x56x56_to144"] = lambda: conv_row(128, 24, 56, 144, 1, 1)
    table["conv3x3s2_fwd_128x3x224x224_to32"] = lambda: conv_row(128, 3, 224, 32, 3, 2)
    table["mbconv6_k3_fwdbwd_128x24x56x56"] = lambda: mbconv_row(128, 24, 56, 3, device=DEV)
    table["mbconv6_k5_fwdbwd_128x40x16x16"] = lambda: mbconv_row(128, 40, 16, 5, device=DEV)
    table["mbconv6_k3_infer_128x24x56x56"] = lambda: mbconv_infer_row(128, 24, 56, 3)
    table["mobilenetv2_trainstep_128x3x224x224"] = lambda: mobilenet_row(128)
    return table


def median_ms(run, batches, per_batch):
    times = []
    for _ in range(batches):
        torch.cuda.synchronize()
        t = time.perf_counter()
        for _ in range(per_batch):
            run()
        torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3 / per_batch)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rows", default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    table = rows()
    names = args.rows.split(",") if args.rows else list(table)
    print(json.dumps({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                      "cudnn": torch.backends.cudnn.version()}), flush=True)
    for name in names:
        run = table[name]()
        run()
        run()  # warm-up: cuDNN autotuning, the caching allocator
        once = median_ms(run, 1, 1)
        per_batch = max(1, min(200, int(50.0 / max(once, 1e-3))))
        print(json.dumps({"name": name, "ms": median_ms(run, 7, per_batch), "batches": 7}), flush=True)


if __name__ == "__main__":
    main()
