"""Checkpoints: params, optimizer state and metadata in one `.npz` file.

Format: a NumPy `.npz` archive (read with `allow_pickle=False`, so loading
never runs code). Each array leaf is stored under its pytree path, prefixed by
`params` or `opt_state` (e.g. `params[0]['w']`, `opt_state.count`), plus
`__fnnet__`, a JSON string `{"format": 2, "metadata": ..., "has_opt_state": ...,
"dtypes": ...}`. Arrays of the dtypes NumPy cannot store (bfloat16, the float8
types) are stored as their bits (an unsigned integer array of the same width),
with the dtype's name in `dtypes`; format 1 (no `dtypes`) is read too.

A file is written to a temporary file beside it (`.{name}.fnnet-{pid}-XXXX.tmp`),
synced, then renamed over the target, so a crash, a SIGKILL or a full disk
mid-write leaves the previous checkpoint intact; the next save of the same
checkpoint removes the temporaries that dead processes left of it.
"""

import errno
import json
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from fnnet._atomic import write_atomically
from fnnet._checks import check_not_donated, describe
from fnnet._npz import Archive, open_npz, unreadable

__all__ = ["save", "load", "load_best"]

_HEADER = "__fnnet__"
_FORMAT = 2
_READABLE_FORMATS = (1, 2)  # 1: before bfloat16 and float8 were stored as bits


def _bits_dtype(dtype: np.dtype):
    """The unsigned dtype that stores `dtype`'s bits, for the ml_dtypes NumPy cannot store
    (bfloat16, float8_*, int4); None for NumPy's own dtypes."""
    if dtype.type.__module__ == "ml_dtypes" and dtype.itemsize in (1, 2, 4, 8):
        return np.dtype(f"<u{dtype.itemsize}")
    return None


def _leaf_array(name: str, leaf) -> np.ndarray:
    if not isinstance(leaf, (jax.Array, np.ndarray, np.generic, bool, int, float, complex)):
        raise TypeError(f"save: {name} must be an array or a number, got {type(leaf).__name__} {leaf!r:.60}")
    if jax.dtypes.issubdtype(getattr(leaf, "dtype", None), jax.dtypes.prng_key):
        raise TypeError(
            f"save: {name} is a PRNG key array; save its raw words, jax.random.key_data(key), "
            f"and remake it with jax.random.wrap_key_data"
        )
    array = np.asarray(leaf)
    if array.dtype.kind not in "biufc" and _bits_dtype(array.dtype) is None:
        raise TypeError(f"save: {name} must be a numeric array, got dtype {array.dtype}")
    return array


def _flatten(prefix: str, tree, dtypes=None) -> dict:
    """`{name: array}` for the leaves of `tree`, named by their paths; arrays of a dtype
    NumPy cannot store become their bits, and `dtypes` records their dtype's name."""
    leaves, _ = jax.tree_util.tree_flatten_with_path(tree)
    arrays = {}
    for path, leaf in leaves:
        name = prefix + jax.tree_util.keystr(path)
        array = _leaf_array(name, leaf)
        bits = _bits_dtype(array.dtype)
        if bits is not None:
            if dtypes is None:
                raise TypeError(f"save: {name} has dtype {array.dtype}, which needs format 2")
            dtypes[name] = array.dtype.name
            array = array.view(bits)
        arrays[name] = array
    return arrays


def save(path, params, opt_state=None, metadata: Optional[dict] = None) -> None:
    """Write `params`, `opt_state` and JSON-able `metadata` to `path` atomically.

    The file is written beside `path` under a temporary name, synced, and
    renamed over `path`: a crash, a SIGKILL or a full disk at any moment leaves
    either the previous file or the new one, never a mix. Temporaries of `path`
    that killed processes left behind are removed first.

    Args:
      path: file to write (conventionally ending in `.npz`).
      params: a pytree of arrays (or numbers): any NumPy dtype, and bfloat16,
        float16 and the float8 types.
      opt_state: an optimizer state (any pytree of arrays), or None.
      metadata: a dict of JSON values (numbers, strings, lists, dicts), or None.

    Raises:
      TypeError: a leaf that is not a numeric array or number (a str, an
        object), or metadata that JSON cannot write.
      ValueError: params or opt_state hold arrays a `train_step` was donated
        and deleted.
      OSError: the file cannot be written (FileNotFoundError, PermissionError,
        a full disk...); the message names `path`, and no temporary file stays.
    """
    check_not_donated("save", "params or opt_state", (params, opt_state))
    save_run(path, params, opt_state, metadata)


def save_run(
    path, params, opt_state=None, metadata: Optional[dict] = None, best_params=None, exclusive=False
) -> None:
    """`save`, and for `fit`'s early stopping the best params so far (entries prefixed
    `best_params`, read by `load_best`; `load` leaves them out); `exclusive`: refuse to
    replace a file at `path` (a run's first save, `_atomic.write_atomically`)."""
    if not isinstance(path, (str, os.PathLike)) or not isinstance(os.fspath(path), str):
        raise TypeError(f"save: path must be a str or os.PathLike of one, got {describe(path)}")
    path = os.fspath(path)
    dtypes: dict = {}
    arrays = _flatten("params", params, dtypes)
    if opt_state is not None:
        arrays.update(_flatten("opt_state", opt_state, dtypes))
    if best_params is not None:
        arrays.update(_flatten("best_params", best_params, dtypes))
    try:
        header = json.dumps(
            {
                "format": _FORMAT,
                "metadata": metadata,
                "has_opt_state": opt_state is not None,
                "has_best_params": best_params is not None,
                "dtypes": dtypes,
            }
        )
    except (TypeError, ValueError, RecursionError) as error:
        raise TypeError(f"save: metadata must be JSON-serializable: {error}") from None
    arrays[_HEADER] = np.array(header)
    write_atomically(path, lambda file: np.savez(file, **arrays), "save", exclusive)


# Reading -------------------------------------------------------------------------------------


def _corrupt_header(path: str, why: str) -> ValueError:
    return ValueError(f"load: {path!r} has a corrupt header: {why}")


def _read_header(archive: Archive) -> dict:
    path = archive.path
    if _HEADER not in archive.entries:
        raise ValueError(f"load: {path!r} is an .npz file but not an fnnet checkpoint (no {_HEADER!r} entry)")
    shape, dtype = archive.header(_HEADER)
    if shape != () or dtype.kind != "U":
        raise unreadable(path, f"entry {_HEADER!r} is {dtype}{list(shape)}, not a string")
    try:
        header = json.loads(str(archive.data(_HEADER)))
    except (ValueError, TypeError, RecursionError) as error:
        raise _corrupt_header(path, str(error) or type(error).__name__) from None
    if not isinstance(header, dict):
        raise _corrupt_header(path, f"{header!r} is not a JSON object")
    if header.get("format") not in _READABLE_FORMATS:
        raise ValueError(f"load: {path!r} has format {header.get('format')!r}, expected 1 or 2")
    if not isinstance(header.get("dtypes", {}), dict):
        raise _corrupt_header(path, "dtypes is not a JSON object")
    return header


def _stored_dtype(path: str, name: str, dtype: np.dtype, recorded) -> np.dtype:
    """The dtype entry `name` holds: `dtype`, or the one recorded for its bits."""
    if recorded is None:
        return dtype
    try:
        logical = np.dtype(jnp.dtype(recorded))
    except (TypeError, ValueError):
        logical = None
    if logical is None or _bits_dtype(logical) != dtype:
        raise _corrupt_header(path, f"entry {name!r} is {dtype}, not the bits of a {recorded!r} array")
    return logical


def _like_leaf(leaf):
    """(shape, dtype) of a leaf of `like`: an array, a ShapeDtypeStruct or a number."""
    if hasattr(leaf, "shape") and hasattr(leaf, "dtype"):
        return tuple(leaf.shape), np.dtype(leaf.dtype)
    array = np.asarray(leaf)
    return array.shape, array.dtype


def _unflatten(archive: Archive, prefix: str, like, dtypes: dict) -> Any:
    path = archive.path
    leaves, treedef = jax.tree_util.tree_flatten_with_path(like)
    restored = []
    for key_path, leaf in leaves:
        name = prefix + jax.tree_util.keystr(key_path)
        if name not in archive.entries:
            raise ValueError(
                f"load: {path!r} has no entry {name!r}: it was saved from another model or optimizer"
            )
        shape, stored = archive.header(name)
        dtype = _stored_dtype(path, name, stored, dtypes.get(name))
        expected_shape, expected_dtype = _like_leaf(leaf)
        if shape != expected_shape or dtype != expected_dtype:
            hint = ""
            if "['running']" in name and dtype.itemsize < expected_dtype.itemsize == 4:
                hint = (
                    f" (BatchNorm keeps its running statistics in at least float32: a checkpoint of "
                    f"{dtype} ones loads with a template whose 'running' leaves are {dtype}; cast them after)"
                )
            raise ValueError(
                f"load: {path!r} entry {name!r} is {dtype}{list(shape)}, "
                f"expected {expected_dtype}{list(expected_shape)}{hint}"
            )
        data = archive.data(name).view(dtype)
        if jax.dtypes.canonicalize_dtype(dtype) != dtype:  # 64 bits without x64: JAX would cut them
            restored.append(data)  # NumPy, in the template's dtype
        else:
            restored.append(jax.device_put(data))  # jnp.asarray compiles per shape
    return jax.tree_util.tree_unflatten(treedef, restored)


def _extra_entries(archive: Archive, prefixes: dict) -> list:
    """The entries under `prefixes` (prefix -> the template it is read with) that the
    templates have no leaf for."""
    expected = {
        prefix + jax.tree_util.keystr(p)
        for prefix, like in prefixes.items()
        for p, _ in jax.tree_util.tree_flatten_with_path(like)[0]
    }
    return sorted(
        name for name in archive.entries if name.startswith(tuple(prefixes)) and name not in expected
    )


def load(path, params, opt_state=None):
    """Read a checkpoint written by `save`, checked against templates of what it holds.

    Each entry's shape and dtype are compared with the templates before its data
    is read, so a corrupt or hostile file cannot make `load` allocate more than
    they hold; nothing is ever unpickled.

    Args:
      path: the checkpoint file.
      params: params with the structure, shapes and dtypes expected (e.g.
        freshly initialised ones, or `jax.eval_shape` of them).
      opt_state: None to read the params alone, or an optimizer state to read
        too (e.g. `opt.init(params)`).

    Returns:
      `(params, opt_state, metadata)`, with the templates' dtypes (bfloat16
      included; a 64-bit leaf without jax_enable_x64, which JAX would hold in 32
      bits, as a NumPy array); `opt_state` None when none was asked for.

    Raises:
      FileNotFoundError: no file at `path`.
      ValueError: a truncated, corrupt or foreign file, or one whose entries
        differ from the templates in names, shapes or dtypes.
    """
    path = _checkpoint_path("load", path)
    with open_npz(path) as archive:
        return _load(archive, (params, opt_state))


def _checkpoint_path(owner: str, path) -> str:
    """`path` as a str naming a file that exists, else the error naming `owner`."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{owner}: path must be a str or os.PathLike, got {describe(path)}")
    path = os.fspath(path)
    if not isinstance(path, str):
        raise TypeError(f"{owner}: path must be a str or os.PathLike of one, got {path!r}")
    if os.path.isdir(path):
        raise IsADirectoryError(errno.EISDIR, f"{owner}: checkpoint {path!r} is a folder, not a file")
    if not os.path.exists(path):
        raise FileNotFoundError(errno.ENOENT, f"{owner}: checkpoint {path!r} does not exist")
    return path


def load_best(path, params):
    """The best params in a checkpoint of `fit` with `EarlyStopping(restore_best=True)`.

    `load` reads the run's last params (where it resumes); these are those of its best
    epoch so far, what `fit` returns. `params` is a template, as for `load`.

    Example:
      >>> fnnet.load_best("run.npz", params)  # doctest: +SKIP
    """
    path = _checkpoint_path("load_best", path)
    with open_npz(path) as archive:
        header = _read_header(archive)
        if not header.get("has_best_params"):
            raise ValueError(
                f"load_best: {archive.path!r} holds no best params (a run without early stopping's "
                f"restore_best): use load"
            )
        best = _unflatten(archive, "best_params", params, header.get("dtypes", {}))
        extra = _extra_entries(archive, {"best_params": params})
        if extra:
            raise ValueError(
                f"load_best: {archive.path!r} has entries {extra[:5]} that the template does not: "
                f"it was saved from another model"
            )
        return best


def read_metadata(path):
    """The metadata of the checkpoint at `path`, read without its arrays (for a resume,
    which compares the run record before it asks for arrays of this run's shapes)."""
    with open_npz(os.fspath(path)) as archive:
        return _read_header(archive).get("metadata")


def _load(archive: Archive, like):
    path = archive.path
    header = _read_header(archive)
    dtypes = header.get("dtypes", {})
    like_params, like_state = like
    params = _unflatten(archive, "params", like_params, dtypes)
    opt_state = None
    if like_state is not None:
        if not header.get("has_opt_state"):
            raise ValueError(f"load: {path!r} holds no optimizer state, but opt_state asks for one")
        opt_state = _unflatten(archive, "opt_state", like_state, dtypes)
    templates = {"params": like_params, **({} if like_state is None else {"opt_state": like_state})}
    known = ("params", "opt_state") + (("best_params",) if header.get("has_best_params") else ())
    extra = _extra_entries(archive, templates) + sorted(
        name for name in archive.entries if name != _HEADER and not name.startswith(known)
    )
    if extra:
        raise ValueError(
            f"load: {path!r} has entries {extra[:5]} that the templates do not: "
            f"it was saved from another model or optimizer"
        )
    return params, opt_state, header.get("metadata")
