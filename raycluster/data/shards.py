"""Write WebDataset tar shards and stream their samples back.

Layout written by `write_shards(samples, out_dir)`:
    out_dir/shard-000000.tar ...   members `<key>.<png|jpg>`, `<key>.cls` (when labelled), `<key>.json`
    out_dir/manifest.json          shard names and sample counts, class names; written last
    out_dir/build-in-progress.json while writing: the source; removed once the manifest exists
Every file is written to a temporary name and renamed, so a crash leaves no half shard;
whether a rerun reuses them is decided by their source's fingerprint (`pipeline.ensure_shards`).
Paths may be local or any fsspec URL.
"""
from __future__ import annotations

import io
import json
import logging
import os
import re
import tarfile
import time
from typing import Iterable, Iterator, Optional, Sequence, Union

import fsspec

from raycluster.data.builtin import Sample
from raycluster.errors import ShardNotFoundError
from raycluster.io import atomic_write_bytes, url_exists

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
BUILDING = "build-in-progress.json"


def shard_name(index: int) -> str:
    return f"shard-{index:06d}.tar"


def _add_member(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = mtime
    tar.addfile(info, io.BytesIO(data))


def write_shards(samples: Iterable[Sample], out_dir: str, samples_per_shard: int = 1000,
                 source: Optional[dict] = None, skipped: Optional[dict] = None) -> dict:
    """Write `samples` as tar shards of `samples_per_shard` each; return the manifest dict.

    Manifest: {"shards": [{"name", "count"}], "num_samples", "classes": {label: name},
    "source", "skipped": {reason: files}} (skipped: what the source passed over, read once the
    samples are exhausted). Keys must be unique and contain no dots (WebDataset splits names at the
    first dot).
    """
    if samples_per_shard < 1:
        raise ValueError(f"samples_per_shard must be >= 1, got {samples_per_shard}")
    fs, root = fsspec.core.url_to_fs(out_dir)
    fs.makedirs(root, exist_ok=True)
    atomic_write_bytes(f"{out_dir.rstrip('/')}/{BUILDING}", json.dumps({"source": source or {}}).encode())
    shards, classes, seen = [], {}, set()
    buffer, count, mtime = None, 0, time.time()

    def flush():
        nonlocal buffer, count
        if buffer is None:
            return
        buffer_tar.close()
        name = shard_name(len(shards))
        atomic_write_bytes(f"{out_dir.rstrip('/')}/{name}", buffer.getvalue())
        shards.append({"name": name, "count": count})
        log.info("wrote %s (%d samples)", name, count)
        buffer, count = None, 0

    for sample in samples:
        if "." in sample.key or sample.key in seen:
            raise ValueError(f"sample key {sample.key!r} is duplicated or contains a dot")
        seen.add(sample.key)
        if buffer is None:
            buffer = io.BytesIO()
            buffer_tar = tarfile.open(fileobj=buffer, mode="w")
        _add_member(buffer_tar, f"{sample.key}.{sample.ext}", sample.image, mtime)
        if sample.label is not None:
            _add_member(buffer_tar, f"{sample.key}.cls", str(sample.label).encode(), mtime)
            if "class_name" in sample.meta:
                classes[int(sample.label)] = sample.meta["class_name"]
        _add_member(buffer_tar, f"{sample.key}.json", json.dumps(sample.meta).encode(), mtime)
        count += 1
        if count >= samples_per_shard:
            flush()
    flush()
    if not shards:
        raise ValueError(f"no samples to write to {out_dir!r}")
    manifest = {"shards": shards, "num_samples": sum(s["count"] for s in shards),
                "classes": {str(k): v for k, v in sorted(classes.items())}, "source": source or {},
                "skipped": dict(skipped or {})}
    atomic_write_bytes(f"{out_dir.rstrip('/')}/{MANIFEST}", json.dumps(manifest, indent=1).encode())
    fs.rm(f"{root.rstrip('/')}/{BUILDING}")
    return manifest


def read_manifest(shard_dir: str) -> Optional[dict]:
    """The manifest of a shard directory written by `write_shards`, or None."""
    path = f"{shard_dir.rstrip('/')}/{MANIFEST}"
    if not url_exists(path):
        return None
    with fsspec.open(path, "r") as handle:
        return json.load(handle)


def resolve_shards(spec: Union[str, Sequence[str]]) -> list[str]:
    """Expand a shard spec to a sorted list of existing shard URLs.

    spec: a directory (its *.tar files), a brace pattern ("shards-{000000..000127}.tar"), a
    single tar path, or a list of any of these. Raises ShardNotFoundError naming the missing
    shards, so a typo never turns into a silently smaller dataset.
    """
    from braceexpand import braceexpand

    specs = [spec] if isinstance(spec, str) else list(spec)
    paths, missing = [], []
    for item in specs:
        fs, root = fsspec.core.url_to_fs(item)
        if "{" not in item and fs.isdir(root):
            found = sorted(p for p in fs.ls(root, detail=False) if p.endswith(".tar"))
            if not found:
                missing.append(f"{item}/*.tar (directory has no shards)")
            paths += [_with_protocol(item, p) for p in found]
            continue
        for path in braceexpand(item):
            (paths if url_exists(path) else missing).append(path)
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise ShardNotFoundError(f"{len(missing)} shard(s) not found: {shown}")
    if not paths:
        raise ShardNotFoundError(f"no shards match {spec!r}")
    # Absolute local paths: Ray reports them back in `__url__`, and workers may run elsewhere.
    return [p if "://" in p else os.path.abspath(p) for p in paths]


def _with_protocol(spec: str, path: str) -> str:
    """fs.ls drops the protocol ("s3://b/k" -> "b/k"); put it back for remote specs."""
    protocol = spec.split("://", 1)[0] + "://" if "://" in spec else ""
    return path if path.startswith(protocol) else protocol + path


IMAGE_SUFFIXES = frozenset({"jpg", "jpeg", "png", "bmp", "webp", "gif", "tif", "tiff", "ppm", "pgm"})
# WebDataset's key/suffix split of a member name: the key is everything before the basename's first dot.
KEY_SUFFIX = re.compile(r"^((?:.*/|)[^.]+)[.]([^/]*)$")


def shard_samples(url: str) -> Iterator[dict]:
    """One WebDataset tar (local path or fsspec URL), streamed -> its samples in archive order.

    Each sample: {"key": str, "image": bytes or None, "cls": bytes or None}. A sample's members
    must be adjacent (the WebDataset spec); any image suffix counts as the image; other members
    (json, txt, ...) are skipped unread. A key without an image member comes with image None,
    so the caller can count it as corrupt. Raises ValueError when a key's members are split.
    """
    current, seen = None, set()
    with fsspec.open(url, "rb") as stream, tarfile.open(fileobj=stream, mode="r|*") as tar:
        for member in tar:
            match = KEY_SUFFIX.match(member.name) if member.isreg() else None
            if match is None:
                continue
            key, suffix = match.group(1), match.group(2).lower()
            if current is None or key != current["key"]:
                if current is not None:
                    yield current
                    seen.add(current["key"])
                if key in seen:
                    raise ValueError(f"{url}: the members of sample {key!r} are not adjacent in the tar "
                                     "(WebDataset needs them together: rebuild it with `tar --sort=name`)")
                current = {"key": key, "image": None, "cls": None}
            if suffix in IMAGE_SUFFIXES:
                current["image"] = tar.extractfile(member).read()
            elif suffix == "cls":
                current["cls"] = tar.extractfile(member).read()
    if current is not None:
        yield current


def shard_batches(url: str, rows: int) -> Iterator[dict]:
    """`shard_samples(url)` in batches of up to `rows`, as transforms.decode_batch takes them:
    `__key__`, `__url__`, `image`, `cls` lists."""
    batch = {"__key__": [], "__url__": [], "image": [], "cls": []}
    for sample in shard_samples(url):
        for column, value in (("__key__", sample["key"]), ("__url__", url), ("image", sample["image"]),
                              ("cls", sample["cls"])):
            batch[column].append(value)
        if len(batch["__key__"]) == rows:
            yield batch
            batch = {column: [] for column in batch}
    if batch["__key__"]:
        yield batch
