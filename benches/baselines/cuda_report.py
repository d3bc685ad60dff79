#!/usr/bin/env python3
"""Merges the GPU benchmark lines of eatnas (`benches/cuda.rs`) and PyTorch
(`pytorch_cuda.py`) into one markdown table.

    cuda_report.py EATNAS.jsonl TORCH.jsonl
"""
import json
import sys


def load(path):
    rows, meta = {}, {}
    for line in open(path):
        line = line.strip()
        if not line.startswith("{"):
            continue
        obj = json.loads(line)
        if "name" in obj:
            rows[obj["name"]] = obj
        else:
            meta.update(obj)
    return rows, meta


def main():
    ours, _ = load(sys.argv[1])
    theirs, meta = load(sys.argv[2])
    copy = ours.get("copy_d2d_1024MiB")
    copy_gbps = copy["bytes"] / copy["ms"] / 1e6 if copy else float("nan")
    print(f"GPU: {meta.get('device', '?')}; PyTorch {meta.get('torch', '?')}, cuDNN {meta.get('cudnn', '?')}, float32 (TF32 off)")
    print(f"device-to-device copy: {copy_gbps:.0f} GB/s (read + write), the bandwidth reference\n")
    print("| row | eatnas ms | PyTorch ms | eatnas/PyTorch | eatnas GB/s | of copy bw | eatnas TFLOP/s | images/s (eatnas / PyTorch) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, row in ours.items():
        ms = row["ms"]
        torch_ms = theirs.get(name, {}).get("ms", float("nan"))
        gbps = row["bytes"] / ms / 1e6 if row["bytes"] else float("nan")
        tflops = row["flops"] / ms / 1e9 if row["flops"] else float("nan")
        images = ""
        if "trainstep" in name:
            n = int(name.split("_")[-1].split("x")[0])
            images = f"{n / ms * 1e3:.0f} / {n / torch_ms * 1e3:.0f}"
        print(f"| {name} | {ms:.3f} | {torch_ms:.3f} | {ms / torch_ms:.2f} | {gbps:.0f} | {gbps / copy_gbps:.0%} | {tflops:.1f} | {images} |")


if __name__ == "__main__":
    main()
