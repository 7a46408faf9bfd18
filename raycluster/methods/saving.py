"""A fitted method on disk without pickle: `method.safetensors`.

    save_fitted(method, "run/method.safetensors", settings=cfg.method)
    method = load_fitted("run/method.safetensors")   # a predictor

The file holds the method's learnt arrays (safetensors: raw tensors, no code) and, in its
metadata, JSON: the method's constructor settings (`_target_` + kwargs, as in
`configs/method/*.yaml`) and its learnt scalars. Loading checks that `_target_` names a
`ClusteringMethod` class of `raycluster.methods` before importing or calling anything, so a
crafted run folder cannot make `jobs/predict.py` run code.
"""
from __future__ import annotations

import json

import numpy as np

from raycluster.errors import ConfigError
from raycluster.methods.base import ClusteringMethod

FORMAT = "raycluster-method/1"


class NotAFittedMethodError(ValueError):
    """A file that is not a fitted method saved by `save_fitted`."""


def save_fitted(method: ClusteringMethod, path: str, settings: dict) -> None:
    """Write `method` (fitted) to `path` atomically. settings: the config it was built from."""
    from safetensors.numpy import save

    from raycluster.io import atomic_write_bytes

    arrays, values = method.fitted_state()
    arrays = {name: np.ascontiguousarray(array) for name, array in arrays.items()}
    metadata = {"format": FORMAT, "settings": json.dumps(settings, default=_plain),
                "values": json.dumps(values, default=_plain)}
    atomic_write_bytes(path, save(arrays, metadata=metadata))


def _plain(value):
    """JSON for the numpy / tuple values a config or state may hold."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"{type(value).__name__} is not JSON")


def method_class(target: str) -> type:
    """The ClusteringMethod class a saved `_target_` names; NotAFittedMethodError for anything else."""
    from raycluster.methods.base import method_class as resolve

    try:
        return resolve(target)
    except ConfigError as err:
        raise NotAFittedMethodError(f"saved {err}") from None


def _no_nested_targets(value, where: str = "settings") -> None:
    if isinstance(value, dict):
        if "_target_" in value and where != "settings":
            raise NotAFittedMethodError(f"saved method {where} names a class to build ({value['_target_']!r})")
        for key, item in value.items():
            _no_nested_targets(item, f"{where}.{key}")
    elif isinstance(value, list):
        for item in value:
            _no_nested_targets(item, where)


def load_fitted(path: str) -> ClusteringMethod:
    """The fitted method saved at `path`. Raises NotAFittedMethodError, before any class is
    imported or built, for a file that is not one (a pickle included: pickles are never read)."""
    import fsspec
    from safetensors import SafetensorError
    from safetensors.numpy import load

    with fsspec.open(path, "rb") as handle:
        data = handle.read()
    if data[:2] in (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05"):
        raise NotAFittedMethodError(f"{path} is a pickle (raycluster < 0.3 saved methods that way); pickles can run "
                                    "code when read and are not loaded: rerun jobs/train.py")
    try:   # the safetensors header: 8-byte little-endian length, then JSON
        header = json.loads(data[8:8 + int.from_bytes(data[:8], "little")]) if len(data) >= 8 else {}
        metadata = header.get("__metadata__") or {}
        if metadata.get("format") != FORMAT:
            raise NotAFittedMethodError(f"{path} is not a fitted raycluster method ({FORMAT})")
        settings, values = json.loads(metadata["settings"]), json.loads(metadata["values"])
    except (ValueError, KeyError, UnicodeDecodeError, OverflowError) as err:
        if isinstance(err, NotAFittedMethodError):
            raise
        raise NotAFittedMethodError(f"{path} is not a fitted raycluster method ({err})") from None
    if not isinstance(settings, dict) or not isinstance(settings.get("_target_"), str):
        raise NotAFittedMethodError(f"{path} names no method class")
    _no_nested_targets(settings)
    cls = method_class(settings["_target_"])
    try:
        arrays = load(data)
    except SafetensorError as err:
        raise NotAFittedMethodError(f"{path}: unreadable tensors ({err})") from None
    kwargs = {key: value for key, value in settings.items() if not key.startswith("_")}
    return cls(**kwargs).restore_fitted(arrays, values)
