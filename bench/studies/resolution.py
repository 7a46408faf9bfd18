"""What does a UNet's input resolution destroy? Pixel variance kept through the downscale, per dataset.

Study, 2026-12-04. Decision it produced: 16 px stays the MNIST experiments' resolution (compute); DiEC and DiFiC log this measure for their data and warn under 0.75 (docs/methods/diec.md).

    python bench/studies/resolution.py                      # MNIST test, its strokes thinned, the 8x8 digits
    python bench/studies/resolution.py --sizes 12 16 20 24 --json rows.jsonl
Each image goes through what a UNet at `size` px sees (`raycluster.diffusion.unet.kept_variance`:
antialiased bilinear downscale) and back to its own grid (bilinear); the share of the pixel
variance about the mean image that survives the round trip, 1 - |x - up(down(x))|^2 / |x - mean|^2,
says how much of what tells images apart the downscale keeps (DiEC and DiFiC log it, and warn
under `KEPT_VARIANCE_WARNING`). No labels, no training.
`mnist-test-thin` is MNIST with each stroke eroded by a 2x2 grey erosion: finer strokes, as in a
set of the same shape that is not digits. Images smaller than a size are enlarged (a whole
factor) and lose nothing: the 8x8 digits keep 1.0 at every size here.
Rows (--json): {"bench", "dataset", "size", "kept_variance", "n"}.
"""
from __future__ import annotations

import argparse
import gzip
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/common.py
from common import SHARED, append_json_rows  # noqa: E402


def mnist_test(rows: int) -> np.ndarray:
    """(rows, 1, 28, 28) float32 in [0, 1]: the first MNIST test digits, read from the IDX file."""
    raw = gzip.open(SHARED / "mnist-test" / "t10k-images-idx3-ubyte.gz").read()
    return np.frombuffer(raw, np.uint8, offset=16).reshape(-1, 1, 28, 28)[:rows].astype(np.float32) / 255


def thinned(images: np.ndarray) -> np.ndarray:
    """(N, 1, H, W) -> the same images with every stroke eroded by a 2x2 grey erosion."""
    from scipy.ndimage import grey_erosion

    return np.stack([grey_erosion(image[0], size=(2, 2)) for image in images])[:, None]


def digits() -> np.ndarray:
    """(1797, 1, 8, 8) float32 in [0, 1]: scikit-learn's digits."""
    from sklearn.datasets import load_digits

    return (load_digits().images[:, None] / 16).astype(np.float32)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[12, 16, 20, 24, 28])
    parser.add_argument("--rows", type=int, default=10_000, help="MNIST test digits read")
    parser.add_argument("--json", default=None)
    args = parser.parse_args(argv)

    sets = {"digits": digits()}
    if (SHARED / "mnist-test").exists():
        mnist = mnist_test(args.rows)
        sets = {"mnist-test": mnist, "mnist-test-thin": thinned(mnist), **sets}
    else:
        print(f"mnist-test skipped: {SHARED / 'mnist-test'} not found")
    import torch

    from raycluster.diffusion.unet import kept_variance

    rows = [{"bench": "resolution", "dataset": name, "size": size,
             "kept_variance": round(kept_variance(torch.from_numpy(images) * 2 - 1, size), 4),
             "n": len(images)} for name, images in sets.items() for size in args.sizes]
    print(f"\n{'dataset':<16}" + "".join(f"{size:>8} px" for size in args.sizes))
    for name in sets:
        kept = [row["kept_variance"] for row in rows if row["dataset"] == name]
        print(f"{name:<16}" + "".join(f"{value:>11.3f}" for value in kept))
    append_json_rows(args.json, rows)


if __name__ == "__main__":
    main()
