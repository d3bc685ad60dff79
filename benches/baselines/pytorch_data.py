#!/usr/bin/env python3
"""PyTorch's side of `cargo xtask bench data`: the rows of `benches/data.rs` on the same JPEG
folder, the way a PyTorch user reads ImageNet: PIL decodes and resizes, a `torch.utils.data`
`DataLoader` with worker processes batches. It does what torchvision's `ImageFolder` with
`Resize(224)`, `CenterCrop(224)`, `RandomCrop(224, padding=14)`, `RandomHorizontalFlip()`,
`ToTensor()` and `Normalize(...)` does, written out here because torchvision's wheels trail the
pinned torch.

    pytorch_data.py --folder DIR --threads N [--min-seconds 2]
        prints one JSON object per row: {"name", "ms" (median), "samples"}
"""
import argparse
import json
import os
import random
import statistics
import time

import numpy as np
import torch
from PIL import Image

SIZE = 224
BATCH = 64
PAD = SIZE // 16
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(3, 1, 1)


def files(folder):
    classes = sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)))
    return [
        (os.path.join(folder, c, f), label)
        for label, c in enumerate(classes)
        for f in sorted(os.listdir(os.path.join(folder, c)))
        if f.lower().endswith((".jpg", ".jpeg", ".png"))
    ]


def read(path):
    """Decoded, the shorter side resized to SIZE (bilinear, antialiased as torchvision's Resize
    on a PIL image), centre-cropped to SIZE x SIZE; planar uint8."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        if w <= h:
            nw, nh = SIZE, max(SIZE, round(h * SIZE / w))
        else:
            nw, nh = max(SIZE, round(w * SIZE / h)), SIZE
        image = image.resize((nw, nh), Image.BILINEAR)
        left, top = (nw - SIZE) // 2, (nh - SIZE) // 2
        image = image.crop((left, top, left + SIZE, top + SIZE))
        return np.asarray(image).transpose(2, 0, 1)


class Training(torch.utils.data.Dataset):
    def __init__(self, folder):
        self.files = files(folder)

    def __len__(self):
        return len(self.files)

    def __getitem__(self, index):
        path, label = self.files[index]
        planar = read(path)
        padded = np.zeros((3, SIZE + 2 * PAD, SIZE + 2 * PAD), dtype=np.uint8)
        padded[:, PAD:PAD + SIZE, PAD:PAD + SIZE] = planar
        top, left = random.randint(0, 2 * PAD), random.randint(0, 2 * PAD)
        crop = padded[:, top:top + SIZE, left:left + SIZE]
        if random.random() < 0.5:
            crop = crop[:, :, ::-1]
        image = torch.from_numpy(np.ascontiguousarray(crop)).float().div_(255.0)
        return image.sub_(MEAN).div_(STD), label


def decode(path):
    """Decoded to RGB, nothing more."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        image.load()
        return image


def time_each(function, paths, min_seconds):
    """Median ms of `function` on one path, over samples of 8 calls each."""
    samples, started, k = [], time.perf_counter(), 0
    while time.perf_counter() - started < min_seconds or len(samples) < 10:
        t = time.perf_counter()
        for _ in range(8):
            function(paths[k % len(paths)])
            k += 1
        samples.append((time.perf_counter() - t) / 8 * 1e3)
    return statistics.median(samples), len(samples)


def time_batches(folder, threads, min_seconds):
    """Median ms of one batch in steady state (the loader's workers ahead of the consumer), over
    samples of 4 batches each."""
    loader = torch.utils.data.DataLoader(
        Training(folder),
        batch_size=BATCH,
        shuffle=True,
        drop_last=True,
        num_workers=threads,
        persistent_workers=True,
        prefetch_factor=2,
    )

    def batches():
        while True:
            yield from loader

    it = batches()
    for _ in range(4):  # workers started and ahead
        next(it)
    samples, started = [], time.perf_counter()
    while time.perf_counter() - started < min_seconds or len(samples) < 10:
        t = time.perf_counter()
        for _ in range(4):
            next(it)
        samples.append((time.perf_counter() - t) / 4 * 1e3)
    return statistics.median(samples), len(samples)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--folder", required=True)
    parser.add_argument("--threads", type=int, required=True)
    parser.add_argument("--min-seconds", type=float, default=2.0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    paths = [p for p, _ in files(args.folder)]
    for name, function in [("data_decode", decode), ("data_read_224", read)]:
        ms, n = time_each(function, paths, args.min_seconds)
        print(json.dumps({"name": name, "ms": ms, "samples": n}), flush=True)
    ms, n = time_batches(args.folder, args.threads, args.min_seconds)
    print(json.dumps({"name": "data_batch64_224", "ms": ms, "samples": n}), flush=True)


if __name__ == "__main__":
    main()
