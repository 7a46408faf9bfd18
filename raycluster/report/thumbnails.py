"""Thumbnails read back from the WebDataset shards by sample key.

Only the shards that hold a wanted key are opened, each streamed once (tar in stream mode, so
object stores work), and only wanted images are decoded: the cost is bounded by the number of
thumbnails and the shards they live in, never by N.
"""
from __future__ import annotations

import io
import logging
import os
import tarfile
from collections import defaultdict

import fsspec
import numpy as np
import pyarrow.parquet as pq

from raycluster.data.shards import IMAGE_SUFFIXES, KEY_SUFFIX
from raycluster.data.store import EmbeddingStore
from raycluster.io import url_exists

log = logging.getLogger(__name__)



def shards_for_keys(store: EmbeddingStore, keys: set[str]) -> dict[str, list[str]]:
    """{shard URL: [keys in it]} for the wanted keys, from the store's part files (key column and
    the shard URL in each part's metadata); keys found in no part are left out."""
    wanted = set(keys)
    found = defaultdict(list)
    for path, meta in zip(store.part_files(), store.part_metadata()):
        shard = meta.get("shard")
        if not shard or not wanted:
            continue
        with store.fs.open(path, "rb") as handle:
            part_keys = pq.read_table(handle, columns=["key"]).column("key").to_pylist()
        hits = wanted.intersection(part_keys)
        if hits:
            found[shard] += sorted(hits)
            wanted -= hits
    return dict(found)


def thumbnail(data: bytes, size: int):
    """Encoded image -> RGB PIL image fitting a size x size box; small images (8x8 digits) are
    enlarged with nearest-neighbour so their pixels stay sharp."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image = image.convert("RGB")
        scale = size / max(image.size)
        target = (max(1, round(image.size[0] * scale)), max(1, round(image.size[1] * scale)))
        resample = Image.NEAREST if scale > 2 else Image.LANCZOS
        return image.resize(target, resample)


def write_thumbnails(store: EmbeddingStore, keys: dict[str, str], out_dir: str, size: int = 96) -> dict:
    """Write a JPEG thumbnail per wanted key.

    keys: {sample key: file name to write under out_dir}. Returns {"written": {key: file name},
    "missing": [keys not found in any shard], "unreadable": [keys whose image failed to decode],
    "shards_read": int}.
    """
    os.makedirs(out_dir, exist_ok=True)
    by_shard = shards_for_keys(store, set(keys))
    written, unreadable = {}, []
    for shard, shard_keys in by_shard.items():
        if not url_exists(shard):
            log.warning("shard %s (%d thumbnail keys) no longer exists", shard, len(shard_keys))
            continue
        pending = set(shard_keys)
        with fsspec.open(shard, "rb") as raw, tarfile.open(fileobj=raw, mode="r|*") as tar:
            for member in tar:
                match = KEY_SUFFIX.match(member.name)
                if not match or match.group(1) not in pending or match.group(2).lower() not in IMAGE_SUFFIXES:
                    continue
                key = match.group(1)
                pending.discard(key)
                try:
                    thumbnail(tar.extractfile(member).read(), size).save(os.path.join(out_dir, keys[key]),
                                                                        format="JPEG", quality=88)
                    written[key] = keys[key]
                except Exception as err:  # a corrupt image costs its thumbnail, not the report
                    log.warning("thumbnail for %s in %s: %s", key, shard, err)
                    unreadable.append(key)
                if not pending:
                    break
    missing = sorted(set(keys) - set(written) - set(unreadable))
    if missing:
        log.warning("%d thumbnail keys not found in the shards (e.g. %s)", len(missing), missing[:3])
    return {"written": written, "missing": missing, "unreadable": unreadable, "shards_read": len(by_shard)}


def thumbnail_names(indices: np.ndarray) -> list[str]:
    """File names for thumbnails of data rows: row index based, so any key is a safe name."""
    return [f"t{int(i):08d}.jpg" for i in indices]
