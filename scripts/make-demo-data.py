#!/usr/bin/env python3
"""Builds the embedded demo data: a class-balanced subset of Fashion-MNIST.

Reads the full set from Debian's `dataset-fashion-mnist` (/usr/share/datasets/fashion-mnist) and
writes the first 1,000 training and first 200 test images of each class, in the original order,
as gzipped IDX files under data/fashion-mnist-demo/. Deterministic: the same input gives the same
bytes.
"""
import gzip
import os
import struct
import sys

SRC = sys.argv[1] if len(sys.argv) > 1 else "/usr/share/datasets/fashion-mnist"
DST = os.path.join(os.path.dirname(__file__), "..", "data", "fashion-mnist-demo")


def read_idx(path):
    data = gzip.open(path).read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return shape, data[4 + 4 * dims :]


def write_idx(path, magic_type, shape, payload):
    header = bytes([0, 0, magic_type, len(shape)]) + struct.pack(">" + "I" * len(shape), *shape)
    with open(path, "wb") as raw:
        # mtime=0 keeps the bytes reproducible.
        with gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, compresslevel=9) as f:
            f.write(header + payload)


def subset(prefix, per_class):
    (count, rows, cols), images = read_idx(os.path.join(SRC, f"{prefix}-images-idx3-ubyte.gz"))
    (_,), labels = read_idx(os.path.join(SRC, f"{prefix}-labels-idx1-ubyte.gz"))
    taken = {c: 0 for c in range(10)}
    keep = []
    for i in range(count):
        if taken[labels[i]] < per_class:
            taken[labels[i]] += 1
            keep.append(i)
    size = rows * cols
    write_idx(os.path.join(DST, f"{prefix}-images-idx3-ubyte.gz"), 0x08, (len(keep), rows, cols),
              b"".join(images[i * size : (i + 1) * size] for i in keep))
    write_idx(os.path.join(DST, f"{prefix}-labels-idx1-ubyte.gz"), 0x08, (len(keep),), bytes(labels[i] for i in keep))
    print(f"{prefix}: {len(keep)} images, {per_class} per class")


os.makedirs(DST, exist_ok=True)
subset("train", 1000)
subset("t10k", 200)
