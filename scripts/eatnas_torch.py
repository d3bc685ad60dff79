"""Helpers shared by the PyTorch scripts: eatnas networks as PyTorch modules, the embedded demo
data, and safetensors files written without the safetensors package."""
import gzip
import json
import os
import struct

import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SHARED = os.environ.get("EATNAS_SHARED", os.path.join(ROOT, "..", "shared"))
TEMPLATE = os.path.join(ROOT, "crates", "train", "src", "export", "pytorch_module.py.in")
DEMO = os.path.join(ROOT, "data", "fashion-mnist-demo")


def exported_module(arch, in_channels, classes, resolution):
    """The module `eatnas-cli export` would write for `arch`, as a Python namespace."""
    source = open(TEMPLATE).read()
    for key, value in {
        "@ARCH@": json.dumps(arch),
        "@NORMALIZE@": json.dumps({"mean": [0.0] * in_channels, "std": [1.0] * in_channels}),
        "@IN_CHANNELS@": str(in_channels),
        "@CLASSES@": str(classes),
        "@RESOLUTION@": str(resolution),
    }.items():
        source = source.replace(key, value)
    namespace = {"__name__": "exported"}
    exec(compile(source, TEMPLATE, "exec"), namespace)
    return namespace


def read_idx(path):
    """(shape, payload bytes) of a gzipped IDX file."""
    data = gzip.open(path).read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return shape, data[4 + 4 * dims :]


def demo_split(prefix, src=DEMO):
    """(pixels (N, 1, 28, 28) float32 in [0, 1], labels (N,) int64) of the demo's `train` or `t10k`."""
    (count, rows, cols), pixels = read_idx(os.path.join(src, f"{prefix}-images-idx3-ubyte.gz"))
    _, labels = read_idx(os.path.join(src, f"{prefix}-labels-idx1-ubyte.gz"))
    x = torch.frombuffer(bytearray(pixels), dtype=torch.uint8).view(count, 1, rows, cols).float() / 255.0
    return x, torch.tensor(list(labels), dtype=torch.int64)


def write_safetensors(path, tensors, metadata=None):
    """Writes float32 and int64 tensors (and string metadata, JSON-encoded) atomically."""
    header = {"__metadata__": {k: json.dumps(v) for k, v in (metadata or {}).items()}}
    offset, blobs = 0, []
    for name in sorted(tensors):
        t = tensors[name].detach().contiguous()
        dtype = {torch.float32: "F32", torch.int64: "I64"}[t.dtype]
        blob = t.numpy().tobytes()
        header[name] = {"dtype": dtype, "shape": list(t.shape), "data_offsets": [offset, offset + len(blob)]}
        offset += len(blob)
        blobs.append(blob)
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(text)) + text + b"".join(blobs))
    os.replace(tmp, path)


def torchvision_init(model):
    """torchvision's MobileNet-V2 initialisation (what eatnas's `--init torchvision` draws)."""
    for m in model.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, mode="fan_out")
        elif isinstance(m, torch.nn.BatchNorm2d):
            torch.nn.init.ones_(m.weight)
            torch.nn.init.zeros_(m.bias)
        elif isinstance(m, torch.nn.Linear):
            torch.nn.init.normal_(m.weight, 0, 0.01)
            torch.nn.init.zeros_(m.bias)
