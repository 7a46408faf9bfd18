"""Sample sources that become WebDataset shards: scikit-learn digits, MNIST IDX, image folders.

Each source yields `Sample`s: a unique key, encoded image bytes with their extension, an
optional integer label and JSON-able metadata. Sources never decode more than one image at a
time, so a folder of millions of photos streams.
"""
from __future__ import annotations

import gzip
import io
import os
from collections import Counter
from dataclasses import dataclass, field
from typing import Iterator, Optional

import numpy as np
from PIL import Image

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")


@dataclass
class Sample:
    key: str                      # unique within the dataset; becomes the WebDataset __key__
    image: bytes                  # encoded image file bytes
    ext: str                      # "png", "jpg", ...: the tar member suffix
    label: Optional[int] = None
    meta: dict = field(default_factory=dict)


def encode_png(pixels: np.ndarray) -> bytes:
    """Encode a (H, W) or (H, W, 3) uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def digits_samples(limit: Optional[int] = None) -> Iterator[Sample]:
    """scikit-learn's 1,797 8x8 handwritten digits (ships with scikit-learn), as 8-bit PNGs.

    Pixel values 0..16 are scaled to 0..255 so the PNGs look like images.
    """
    from sklearn.datasets import load_digits

    digits = load_digits()
    n = len(digits.images) if limit is None else min(limit, len(digits.images))
    for index in range(n):
        pixels = np.round(digits.images[index] * (255.0 / 16.0)).astype(np.uint8)
        label = int(digits.target[index])
        yield Sample(f"digits_{index:06d}", encode_png(pixels), "png", label, {"class_name": str(label)})


def read_idx(path: str, offset: int) -> np.ndarray:
    """Read a (gzipped) IDX file's payload as uint8 (offset: 16 for images, 8 for labels)."""
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as handle:
        return np.frombuffer(handle.read(), np.uint8, offset=offset)


def mnist_arrays(path: str, split: str = "t10k") -> tuple[np.ndarray, np.ndarray]:
    """MNIST from IDX files in `path` (`{split}-images-idx3-ubyte[.gz]`, `{split}-labels-idx1-ubyte[.gz]`)
    -> images (N, 28, 28) uint8, labels (N,) uint8."""
    def find(stem: str) -> str:
        for name in (stem + ".gz", stem):
            if os.path.exists(os.path.join(path, name)):
                return os.path.join(path, name)
        raise FileNotFoundError(f"MNIST file {stem}[.gz] not found in {path!r}")

    images = read_idx(find(f"{split}-images-idx3-ubyte"), 16).reshape(-1, 28, 28)
    labels = read_idx(find(f"{split}-labels-idx1-ubyte"), 8)
    if len(images) != len(labels):
        raise ValueError(f"MNIST in {path!r}: {len(images)} images but {len(labels)} labels")
    return images, labels


def mnist_samples(path: str, split: str = "t10k", limit: Optional[int] = None) -> Iterator[Sample]:
    """MNIST samples (PNG-encoded) from the IDX files in `path`; see `mnist_arrays`."""
    images, labels = mnist_arrays(path, split)
    n = len(images) if limit is None else min(limit, len(images))
    for index in range(n):
        label = int(labels[index])
        yield Sample(f"mnist_{split}_{index:06d}", encode_png(images[index]), "png", label,
                     {"class_name": str(label)})


def folder_classes(root: str, classes: Optional[int] = None) -> list[str]:
    """Sorted class sub-folder names of `root` (folders holding at least one image at any depth);
    the first `classes` of them when given."""
    names = sorted(entry.name for entry in os.scandir(root) if entry.is_dir() and _holds_images(entry.path))
    if classes is not None:
        if classes > len(names):
            raise ValueError(f"classes={classes} but {root!r} has only {len(names)} class folders")
        names = names[:classes]
    return names


def _holds_images(directory: str) -> bool:
    for _, _, files in os.walk(directory):
        if any(os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS for name in files):
            return True
    return False


def _walk_files(directory: str) -> Iterator[str]:
    """Every file under `directory`, recursively, in sorted order (deterministic keys and shards)."""
    for current, folders, files in os.walk(directory):
        folders.sort()
        for name in sorted(files):
            yield os.path.join(current, name)


def folder_samples(root: str, classes: Optional[int] = None, limit: Optional[int] = None,
                   class_names: Optional[dict] = None, skipped: Optional[Counter] = None) -> Iterator[Sample]:
    """Images under `root` at any depth, labelled by their top-level sub-folder when there are any.

    With class sub-folders (top-level folders that hold images), label = index of the folder in
    sorted order and meta carries the folder name (and a readable name from `class_names`);
    images directly in `root` beside them are samples without a label. Without class folders
    every image is unlabelled. Files that are not images (by extension) are counted in `skipped`
    ({reason: count}), never dropped silently. Files are read as bytes, never decoded here: a
    corrupt image is found (and counted) at extraction time.
    """
    if not os.path.isdir(root):
        raise FileNotFoundError(f"image folder {root!r} does not exist; point data.source.path at your images")
    skipped = Counter() if skipped is None else skipped
    folders = folder_classes(root, classes)
    groups = [(label, os.path.join(root, name), name) for label, name in enumerate(folders)]
    if classes is None or not folders:
        groups.insert(0, (None, root, None))   # images directly in root (all of them when there are no class folders)
    produced = 0
    for label, directory, wnid in groups:
        paths = _walk_files(directory) if wnid is not None or not folders else \
            (os.path.join(root, name) for name in sorted(os.listdir(root)) if os.path.isfile(os.path.join(root, name)))
        for path in paths:
            relative = os.path.relpath(path, root)
            stem, ext = os.path.splitext(relative)
            if ext.lower() not in IMAGE_EXTENSIONS:
                skipped[f"not an image ({ext.lower() or 'no extension'})"] += 1
                continue
            if limit is not None and produced >= limit:
                return
            with open(path, "rb") as handle:
                data = handle.read()
            meta = {"file": relative}
            if wnid is not None:
                meta["class_id"] = wnid
                meta["class_name"] = (class_names or {}).get(wnid, wnid)
            # WebDataset splits member names at the first dot and tar paths at "/": neither in a key
            # (write_shards names any key two paths map to).
            key = stem.replace(os.sep, "_").replace(".", "_")
            yield Sample(key, data, ext.lower().lstrip(".").replace("jpeg", "jpg"), label, meta)
            produced += 1
    if not produced:
        reasons = ", ".join(f"{count} {reason}" for reason, count in skipped.items()) or "it is empty"
        raise ValueError(f"no images found under {root!r} ({reasons}); images: {', '.join(IMAGE_EXTENSIONS)}")


def samples_from_source(kind: str, path: Optional[str] = None, classes: Optional[int] = None,
                        limit: Optional[int] = None, skipped: Optional[Counter] = None) -> Iterator[Sample]:
    """Dispatch on a source kind (the `data.source` config group); `skipped` counts files a
    folder source passed over, by reason."""
    if kind == "digits":
        return digits_samples(limit)
    if kind == "procedural":
        if not limit:
            raise ValueError("data.source.kind=procedural needs data.source.limit (the number of images)")
        return procedural_samples(limit)
    if kind in ("mnist", "folder") and not path:
        raise ValueError(f"data.source.kind={kind} needs data.source.path")
    if kind == "mnist":
        return mnist_samples(path, limit=limit)
    if kind == "folder":
        return folder_samples(path, classes, limit, read_class_names(path), skipped)
    raise ValueError(f"unknown data.source.kind {kind!r}: expected digits, mnist, folder or procedural")


def read_class_names(root: str) -> dict:
    """`classes.tsv` (wnid<TAB>name) beside or inside an image root, when present."""
    for candidate in (os.path.join(root, "classes.tsv"), os.path.join(os.path.dirname(root.rstrip("/")), "classes.tsv")):
        if os.path.exists(candidate):
            with open(candidate) as handle:
                rows = [line.rstrip("\n").split("\t", 1) for line in handle if "\t" in line]
            return {wnid: name for wnid, name in rows}
    return {}


def synthetic_jpeg_samples(n: int, width: int = 500, height: int = 375, classes: int = 10, seed: int = 0,
                           quality: int = 90) -> Iterator[Sample]:
    """`n` photo-sized JPEGs for throughput benchmarks: smooth colour fields plus texture, so
    file sizes (~30-60 KB at 500x375) and decode cost resemble photos more than pure noise does."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    for index in range(n):
        label = index % classes
        phase = rng.uniform(0, 2 * np.pi, 3)
        frequency = rng.uniform(0.005, 0.03, 3)
        channels = [127 + 100 * np.sin(frequency[c] * (x + (c + 1) * y) + phase[c]) for c in range(3)]
        pixels = np.stack(channels, axis=-1) + rng.normal(0, 12, (height, width, 3))
        buffer = io.BytesIO()
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(buffer, format="JPEG", quality=quality)
        yield Sample(f"synthetic_{index:07d}", buffer.getvalue(), "jpg", label, {"class_name": f"class_{label}"})


SHAPES = ("disc", "square", "triangle", "ring")
COLOURS = ((220, 40, 40), (40, 170, 60), (40, 80, 220), (230, 200, 40))
TEXTURES = ("solid", "stripes", "checks", "dots")


def procedural_templates(size: int = 32) -> np.ndarray:
    """(64, size, size, 3) float32 class templates in [0, 255]: 4 shapes x 4 colours x 4
    textures (class = shape * 16 + colour * 4 + texture) on a grey background. Textures are
    coarse (period size/2) and cover the background too, so they survive a downscale to 8 px."""
    y, x = (np.mgrid[0:size, 0:size].astype(np.float32) + 0.5) / size - 0.5
    radius = np.hypot(x, y)
    masks = {"disc": radius < 0.36, "square": (abs(x) < 0.3) & (abs(y) < 0.3),
             "triangle": (y > -0.32) & (y < 0.3) & (abs(x) < (y + 0.32) * 0.55), "ring": (radius < 0.4) & (radius > 0.24)}
    period = size // 2
    cells = (np.mgrid[0:size, 0:size] // (period // 2)).astype(np.int64)
    textures = {"solid": np.ones((size, size)), "stripes": (cells[0] % 2 == 0) * 0.8 + 0.2,
                "checks": ((cells[0] + cells[1]) % 2 == 0) * 0.8 + 0.2,
                "dots": (np.hypot((np.mgrid[0:size, 0:size][0] % period) - period / 2,
                                  (np.mgrid[0:size, 0:size][1] % period) - period / 2) < period / 3) * 0.8 + 0.2}
    templates = []
    for shape in SHAPES:
        for colour in COLOURS:
            for texture in TEXTURES:
                image = np.full((size, size, 3), 128.0, np.float32) * (0.6 + 0.4 * textures[texture][..., None])
                inside = masks[shape]
                image[inside] = np.asarray(colour, np.float32)[None, :] * textures[texture][inside][:, None]
                templates.append(image)
    return np.stack(templates)


def procedural_samples(n: int, seed: int = 0, size: int = 32, chunk: int = 1000) -> Iterator[Sample]:
    """`n` labelled size x size JPEGs of 64 procedural classes (`procedural_templates`), each
    shifted by up to 1 px, brightness-jittered and with Gaussian pixel noise; sample i has class
    i % 64 and key `proc_<i>`. Drawn `chunk` images at a time (one generator per chunk of
    `seed`), so ~0.15 ms an image, most of it the JPEG encoder."""
    templates = procedural_templates(size)
    names = [f"{s}-{'rgby'[c]}-{t}" for s in SHAPES for c in range(len(COLOURS)) for t in TEXTURES]
    for first in range(0, n, chunk):
        count = min(chunk, n - first)
        rng = np.random.default_rng([seed, first // chunk])
        labels = (np.arange(first, first + count) % len(templates)).astype(np.int64)
        shifts = rng.integers(-1, 2, (count, 2))
        images = templates[labels] * rng.uniform(0.9, 1.1, (count, 1, 1, 1)).astype(np.float32)
        images += rng.normal(0, 20, images.shape).astype(np.float32)
        pixels = np.clip(images, 0, 255).astype(np.uint8)
        for offset in range(count):
            buffer = io.BytesIO()
            shifted = np.roll(pixels[offset], tuple(shifts[offset]), axis=(0, 1))
            Image.fromarray(shifted).save(buffer, format="JPEG", quality=90)
            label = int(labels[offset])
            yield Sample(f"proc_{first + offset:09d}", buffer.getvalue(), "jpg", label, {"class_name": names[label]})
