"""Small fsspec helpers: atomic writes and existence checks on local paths or URLs."""
from __future__ import annotations

import os
import uuid

import fsspec


def url_exists(url: str) -> bool:
    fs, path = fsspec.core.url_to_fs(url)
    return fs.exists(path)


def is_local(fs) -> bool:
    """Whether an fsspec filesystem is the local disk."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def atomic_write_bytes(url: str, data: bytes) -> None:
    """Write `data` to `url` via a temporary sibling and a rename.

    Local files: readers never see a partial file (os.replace is atomic). Object stores: a
    PUT is already all-or-nothing, and the rename is a copy; the temp name keeps a crashed
    writer's leftovers out of `*.tar` / `*.parquet` globs.
    """
    fs, path = fsspec.core.url_to_fs(url)
    parent = os.path.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    temp = f"{path}.tmp-{uuid.uuid4().hex[:8]}"
    with fs.open(temp, "wb") as handle:
        handle.write(data)
    if is_local(fs):
        os.replace(temp, path)
    else:
        fs.mv(temp, path)
