"""Checkpoints: params, optimizer state and metadata in one `.npz` file.

Format: a NumPy `.npz` archive (read with `allow_pickle=False`, so loading
never runs code). Each array leaf is stored under its pytree path, prefixed by
`params` or `opt_state` (e.g. `params[0]['w']`, `opt_state.count`), plus
`__fnnet__`, a JSON string `{"format": 1, "metadata": ...}`. Files are written
to a temporary file in the same folder, synced, then renamed over the target,
so a crash or a full disk mid-write leaves the previous checkpoint intact.
"""

import json
import os
import tempfile
import zipfile
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["save", "load"]

_HEADER = "__fnnet__"
_FORMAT = 1


def _flatten(prefix: str, tree) -> dict:
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {prefix + jax.tree_util.keystr(path): np.asarray(leaf) for path, leaf in leaves}


def save(path, params, opt_state=None, metadata: Optional[dict] = None) -> None:
    """Write `params`, `opt_state` and JSON-able `metadata` to `path` atomically.

    Args:
      path: file to write (conventionally ending in `.npz`).
      params: a pytree of arrays.
      opt_state: an optimizer state (any pytree of arrays), or None.
      metadata: a dict of JSON values (numbers, strings, lists, dicts), or None.
    """
    path = os.fspath(path)
    arrays = {**_flatten("params", params)}
    if opt_state is not None:
        arrays.update(_flatten("opt_state", opt_state))
    try:
        header = json.dumps({"format": _FORMAT, "metadata": metadata, "has_opt_state": opt_state is not None})
    except TypeError as error:
        raise TypeError(f"save: metadata must be JSON-serializable: {error}") from None
    arrays[_HEADER] = np.array(header)
    folder = os.path.dirname(os.path.abspath(path))
    handle, temporary = tempfile.mkstemp(dir=folder, prefix=".fnnet-", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as file:
            np.savez(file, **arrays)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it 0600; give the usual mode
        os.replace(temporary, path)
    except BaseException:
        if os.path.exists(temporary):
            os.remove(temporary)
        raise


def _read(path: str) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"load: checkpoint {path!r} does not exist")
    try:
        # Our own handle: np.load leaks the one it opens when the zip is corrupt.
        with open(path, "rb") as file:
            archive = np.load(file, allow_pickle=False)
            if not isinstance(archive, np.lib.npyio.NpzFile):  # a single .npy array
                raise ValueError(f"it holds one {archive.dtype}{list(archive.shape)} array")
            with archive:
                arrays = {name: archive[name] for name in archive.files}
    # NotImplementedError, RuntimeError: zipfile on a corrupt compression or encryption field
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, KeyError, NotImplementedError,
            RuntimeError) as error:
        raise ValueError(f"load: {path!r} is not a readable fnnet checkpoint "
                         f"(truncated, corrupt or not an .npz): {error}") from None
    if _HEADER not in arrays:
        raise ValueError(f"load: {path!r} is an .npz file but not an fnnet checkpoint "
                         f"(no {_HEADER!r} entry)")
    return arrays


def _unflatten(path, prefix, like, arrays) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    restored = []
    for key_path, leaf in leaves:
        name = prefix + jax.tree_util.keystr(key_path)
        if name not in arrays:
            raise ValueError(f"load: {path!r} has no entry {name!r}: it was saved from "
                             f"another model or optimizer")
        stored, expected = arrays.pop(name), np.asarray(leaf)
        if stored.shape != expected.shape or stored.dtype != expected.dtype:
            raise ValueError(f"load: {path!r} entry {name!r} is {stored.dtype}{list(stored.shape)}, "
                             f"expected {expected.dtype}{list(expected.shape)}")
        restored.append(jnp.asarray(stored))
    return jax.tree_util.tree_unflatten(treedef, restored)


def load(path, like):
    """Read a checkpoint written by `save`, checked against `like`.

    Args:
      path: the checkpoint file.
      like: `(params, opt_state)` with the structure, shapes and dtypes expected
        (e.g. freshly initialised ones); `opt_state` may be None.

    Returns:
      `(params, opt_state, metadata)`.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: a truncated, corrupt or foreign file, or one whose entries
        differ from `like` in names, shapes or dtypes.
    """
    path = os.fspath(path)
    if not (isinstance(like, tuple) and len(like) == 2):
        raise TypeError("load: like must be a pair (params, opt_state), opt_state may be None; "
                        f"got {type(like).__name__}")
    arrays = _read(path)
    try:
        header = json.loads(str(arrays.pop(_HEADER)))
    except (ValueError, TypeError) as error:
        raise ValueError(f"load: {path!r} has a corrupt header: {error}") from None
    if not isinstance(header, dict):
        raise ValueError(f"load: {path!r} has a corrupt header: {header!r} is not a JSON object")
    if header.get("format") != _FORMAT:
        raise ValueError(f"load: {path!r} has format {header.get('format')!r}, expected {_FORMAT}")
    like_params, like_state = like
    params = _unflatten(path, "params", like_params, arrays)
    opt_state = None
    if like_state is not None:
        if not header.get("has_opt_state"):
            raise ValueError(f"load: {path!r} holds no optimizer state, but like asks for one")
        opt_state = _unflatten(path, "opt_state", like_state, arrays)
    extra = sorted(k for k in arrays if like_state is not None or not k.startswith("opt_state"))
    if extra:
        raise ValueError(f"load: {path!r} has entries {extra[:5]} that like does not: "
                         f"it was saved from another model or optimizer")
    return params, opt_state, header.get("metadata")
