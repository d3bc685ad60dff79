#!/usr/bin/env python3
"""Writes a two-class image folder from Fashion-MNIST, laid out as `folder:DIR` reads it.

Usage: scripts/make-two-class-folder.py OUT [--classes A,B] [--train N] [--val N] [--src DIR]

Takes the first N training images of each of classes A and B into OUT/train/CLASS/*.png and the
first N test images into OUT/val/CLASS/*.png (28x28 grayscale PNG). The source is an IDX folder
(gzipped), by default the embedded demo. This is the short-training case of issue 12 that
`scripts/init-study.sh` measures. Standard library only; the same input gives the same bytes.
"""
import argparse
import gzip
import os
import struct
import zlib

NAMES = ["t-shirt", "trouser", "pullover", "dress", "coat", "sandal", "shirt", "sneaker", "bag", "boot"]


def read_idx(path):
    data = gzip.open(path).read()
    dims = data[3]
    shape = struct.unpack(">" + "I" * dims, data[4 : 4 + 4 * dims])
    return shape, data[4 + 4 * dims :]


def png(rows, cols, pixels):
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    raw = b"".join(b"\x00" + pixels[r * cols : (r + 1) * cols] for r in range(rows))
    header = struct.pack(">IIBBBBB", cols, rows, 8, 0, 0, 0, 0)  # 8-bit grayscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw, 9)) + chunk(b"IEND", b"")


def write_split(src, prefix, out, classes, per_class):
    (count, rows, cols), images = read_idx(os.path.join(src, f"{prefix}-images-idx3-ubyte.gz"))
    (_,), labels = read_idx(os.path.join(src, f"{prefix}-labels-idx1-ubyte.gz"))
    taken = {c: 0 for c in classes}
    size = rows * cols
    for i in range(count):
        c = labels[i]
        if c in taken and taken[c] < per_class:
            folder = os.path.join(out, NAMES[c])
            os.makedirs(folder, exist_ok=True)
            with open(os.path.join(folder, f"{i:05}.png"), "wb") as f:
                f.write(png(rows, cols, images[i * size : (i + 1) * size]))
            taken[c] += 1
    short = {NAMES[c]: n for c, n in taken.items() if n < per_class}
    if short:
        raise SystemExit(f"{src}/{prefix}: too few images for {short} (wanted {per_class} each)")


parser = argparse.ArgumentParser()
parser.add_argument("out")
parser.add_argument("--classes", default="0,1", help="two Fashion-MNIST class indices (0-9)")
parser.add_argument("--train", type=int, default=300)
parser.add_argument("--val", type=int, default=100)
parser.add_argument("--src", default=os.path.join(os.path.dirname(__file__), "..", "data", "fashion-mnist-demo"))
args = parser.parse_args()
classes = [int(c) for c in args.classes.split(",")]
if len(classes) != 2 or not all(0 <= c < 10 for c in classes) or classes[0] == classes[1]:
    raise SystemExit(f"--classes: expected two different indices in 0-9, got {args.classes}")
write_split(args.src, "train", os.path.join(args.out, "train"), classes, args.train)
write_split(args.src, "t10k", os.path.join(args.out, "val"), classes, args.val)
print(f"{args.out}: classes {[NAMES[c] for c in classes]}, {args.train} training and {args.val} validation images each")
