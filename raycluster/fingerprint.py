"""Fingerprints of what made a cached artifact, so a rerun reuses it only when that is unchanged.

Every cached stage (shards, embedding store, a method's stages) goes through one helper:

    inputs = {"source": asdict(source), "listing": listing_hash(source.path)}
    if not reusable(directory, inputs, "shards", reuse):   # absent, or made from other inputs
        ...build into directory...
        write_fingerprint(directory, inputs)                # after the artifact is complete

`reusable` compares the inputs recorded beside the artifact (`<directory>/fingerprint.json`)
with the current ones. On a difference it logs which inputs changed and clears the directory
(`reuse="auto"`, the default), or raises `StaleArtifactError` (`reuse="strict"`).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
from typing import Any

import fsspec

from raycluster.errors import ConfigError

log = logging.getLogger(__name__)

FINGERPRINT_FILE = "fingerprint.json"
REUSE_MODES = ("auto", "strict")


class StaleArtifactError(ConfigError):
    """A cached artifact was made from other inputs and reuse=strict forbids rebuilding it."""


def canonical(inputs: Any) -> str:
    """JSON with sorted keys: equal inputs give equal text."""
    return json.dumps(inputs, sort_keys=True, default=str, separators=(",", ":"))


def fingerprint(inputs: Any) -> str:
    """sha256 (hex) of the canonical JSON of `inputs`."""
    return hashlib.sha256(canonical(inputs).encode()).hexdigest()


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def array_fingerprint(array) -> dict:
    """A numpy array's shape, dtype and sha256 of its bytes (a method stage's input rows)."""
    import numpy as np

    array = np.ascontiguousarray(array)
    return {"shape": list(array.shape), "dtype": str(array.dtype),
            "sha256": hashlib.sha256(memoryview(array).cast("B")).hexdigest()}


def listing_hash(root: str) -> str:
    """sha256 over (relative path, size, mtime_ns) of every file under `root`, recursively, in
    sorted order: any file added, removed, resized or touched changes it. Costs one stat per
    file (no reads). A single file: its own (name, size, mtime_ns)."""
    digest = hashlib.sha256()
    if os.path.isfile(root):
        stat = os.stat(root)
        digest.update(f"{os.path.basename(root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
        return digest.hexdigest()
    for directory, folders, files in os.walk(root):
        folders.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            stat = os.stat(path)
            digest.update(f"{os.path.relpath(path, root)}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()


def file_identities(urls: list[str]) -> dict:
    """url -> what identifies that file's content without reading it: name, size and, where the
    filesystem reports them, mtime / ETag / generation. One listing per parent folder, so a
    million shards on an object store cost a few LIST calls, not a million HEADs."""
    by_folder: dict = {}
    for url in urls:
        by_folder.setdefault(url.rsplit("/", 1)[0], []).append(url)
    identities = {}
    for folder, members in by_folder.items():
        fs, path = fsspec.core.url_to_fs(folder)
        listing = {os.path.basename(entry["name"].rstrip("/")): entry for entry in fs.ls(path, detail=True)}
        for url in members:
            entry = listing.get(os.path.basename(url)) or fs.info(fsspec.core.url_to_fs(url)[1])
            identity = {"name": os.path.basename(url), "size": entry.get("size")}
            for field in ("mtime", "LastModified", "ETag", "etag", "md5Hash", "generation"):
                if entry.get(field) is not None:
                    identity[field] = str(entry[field])
            identities[url] = identity
    return identities


def local_paths_in(config: Any) -> dict:
    """Every string in a (nested) config that names an existing local file or folder ->
    its content hash (files: sha256; folders: `listing_hash`). Weights and checkpoints named
    in an extractor's or method's config thereby enter its fingerprint."""
    found = {}

    def visit(value):
        if isinstance(value, dict):
            for item in value.values():
                visit(item)
        elif isinstance(value, (list, tuple)):
            for item in value:
                visit(item)
        elif isinstance(value, str) and "://" not in value and len(value) < 4096 and os.path.exists(value):
            path = os.path.abspath(value)
            found[path] = sha256_file(path) if os.path.isfile(path) else listing_hash(path)

    visit(config)
    return found


def read_fingerprint(directory: str) -> dict | None:
    path = f"{directory.rstrip('/')}/{FINGERPRINT_FILE}"
    fs, local = fsspec.core.url_to_fs(path)
    if not fs.exists(local):
        return None
    with fs.open(local, "r") as handle:
        return json.load(handle)


def write_fingerprint(directory: str, inputs: Any) -> None:
    """Record `inputs` beside the artifact in `directory` (atomically)."""
    from raycluster.io import atomic_write_bytes

    record = {"fingerprint": fingerprint(inputs), "inputs": json.loads(canonical(inputs))}
    atomic_write_bytes(f"{directory.rstrip('/')}/{FINGERPRINT_FILE}", json.dumps(record, indent=1).encode())


def changed_inputs(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted names of the inputs that differ between two records (for the log line)."""
    if isinstance(old, dict) and isinstance(new, dict):
        names = []
        for key in sorted(set(old) | set(new), key=str):
            names += changed_inputs(old.get(key), new.get(key), f"{prefix}{key}.")
        return names
    return [] if canonical(old) == canonical(new) else [prefix.rstrip(".") or "inputs"]


def reusable(directory: str, inputs: Any, what: str, reuse: str = "auto", owned: tuple[str, ...] = ()) -> bool:
    """Whether `directory` holds an artifact made from `inputs`.

    True: reuse it. False: there is nothing reusable; an artifact made from other inputs (or
    with no record of its inputs) has been removed, ready to be rebuilt: the files matching the
    glob patterns `owned` (e.g. "*.tar"), or the whole directory when none are given. With
    reuse="strict" a mismatch raises StaleArtifactError instead of removing anything."""
    if reuse not in REUSE_MODES:
        raise ConfigError(f"reuse={reuse!r}: expected one of {', '.join(REUSE_MODES)}")
    fs, local = fsspec.core.url_to_fs(directory)
    if not fs.exists(local) or not fs.ls(local, detail=False):
        return False
    record = read_fingerprint(directory)
    if record is not None and record.get("fingerprint") == fingerprint(inputs):
        return True
    changed = (changed_inputs(record.get("inputs"), json.loads(canonical(inputs))) if record
               else ["(no fingerprint recorded)"])
    message = f"{what} in {directory} were made from other inputs (changed: {', '.join(changed)})"
    if reuse == "strict":
        raise StaleArtifactError(f"{message}; reuse=strict: delete it or set reuse=auto to rebuild")
    log.warning("%s; rebuilding them", message)
    if owned:
        stale = [path for pattern in owned + (FINGERPRINT_FILE,) for path in fs.glob(f"{local.rstrip('/')}/{pattern}")]
        if stale:
            fs.rm(stale)
    else:
        fs.rm(local, recursive=True)
    return False
