"""Several processes (`jax.distributed`): what each process holds, and who writes files.

With several processes, a global array's shards sit on every process's devices:
each process reads only its own (`host_parts`), and one process, the writer,
writes files such as checkpoints (`on_writer`) while the others wait.
"""

import hashlib
import zlib
from collections.abc import Callable

import jax
import numpy as np


def host_parts(a) -> list | None:
    """The values of array `a` this process holds, as NumPy arrays (all of `a`, or its
    local shards when other processes hold the rest); None for a tracer (inside `jit`
    or `vmap`), whose values are not known yet."""
    if isinstance(a, jax.core.Tracer):
        return None
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        return [np.asarray(shard.data) for shard in a.addressable_shards]
    return [np.asarray(a)]


def whole(a) -> np.ndarray | None:
    """All of array `a` as NumPy where this process holds all of it (a replicated global
    array: a local copy); None for a tracer or an array other processes hold parts of."""
    if isinstance(a, jax.core.Tracer):
        return None
    if isinstance(a, jax.Array) and not a.is_fully_addressable:
        copies = (s.data for s in a.addressable_shards if s.data.shape == a.shape)
        return next((np.asarray(copy) for copy in copies), None)
    return np.asarray(a)


def count_nonfinite(a) -> int:
    """How many NaN or infinite values this process holds of `a` (0 for a tracer)."""
    parts = host_parts(a) or []
    return sum(int(np.sum(~np.isfinite(p))) for p in parts if np.issubdtype(p.dtype, np.inexact))


def count_beyond(a, dtype) -> int:
    """How many values this process holds of `a` lie beyond `dtype`'s range (0 for a tracer):
    those that turn infinite (floats) or wrap around (ints) when `a` is put on a device in
    `dtype`."""
    parts = host_parts(a) or []
    info = np.finfo(dtype) if np.issubdtype(dtype, np.floating) else np.iinfo(dtype)
    numbers = [
        p
        for p in parts
        if np.issubdtype(p.dtype, np.number) and not np.issubdtype(p.dtype, np.complexfloating)
    ]
    return sum(int(np.count_nonzero(p > info.max)) + int(np.count_nonzero(p < info.min)) for p in numbers)


def check_same_on_every_process(owner: str, mesh, trees: dict) -> None:
    """Raise ValueError unless every process passed equal values for `trees` (name -> pytree).

    With a mesh over several processes, `device_put` and `jit` take each device's
    part of a host array from that device's own process: copies that differ between
    processes would be mixed without a word. One all-gather of a checksum per leaf
    compares them; arrays that are already global (not fully addressable) are each
    process's own part, and tracers have no values yet: both are left out. Nothing to
    do for one process.
    """
    if mesh is None or len({device.process_index for device in mesh.devices.flat}) < 2:
        return
    names, sums = [], []
    for name, tree in trees.items():
        for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
            if isinstance(leaf, jax.core.Tracer) or (
                isinstance(leaf, jax.Array) and not leaf.is_fully_addressable
            ):
                continue
            a = np.ascontiguousarray(leaf)
            names.append(name + jax.tree_util.keystr(path))
            sums.append(zlib.crc32(a.tobytes(), zlib.crc32(f"{a.shape}{a.dtype}".encode())))
    from jax.experimental import multihost_utils

    every = np.asarray(multihost_utils.process_allgather(np.asarray(sums, np.uint32)))
    differ = [name for i, name in enumerate(names) if len(set(every[:, i].tolist())) > 1]
    if differ:
        raise ValueError(
            f"{owner}: every process must pass the same {', '.join(differ)}, but they "
            f"differ between processes (each device would take its own process's "
            f"copy); load or draw them identically everywhere"
        )


def is_writer() -> bool:
    """Whether this process writes files such as checkpoints: the only process, or
    process 0 when `jax.distributed` runs several (which would otherwise race to write
    the same file)."""
    return jax.process_index() == 0


def on_writer(write: Callable, *args, **kwargs) -> None:
    """`write(*args, **kwargs)` on the writer process only (see `is_writer`); with several
    processes, every process then waits until it is done, so none reads the file early,
    and each raises if the writer failed (the writer re-raising its own error)."""
    error = None
    if is_writer():
        try:
            write(*args, **kwargs)
        except Exception as caught:  # noqa: BLE001  # re-raised below, once the others know
            error = caught
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        failed = multihost_utils.broadcast_one_to_all(np.int32(error is not None))
        if error is None and int(failed):
            raise RuntimeError(
                f"{getattr(write, '__name__', 'write')} failed on process 0, the writer; see its error"
            )
    if error is not None:
        raise error


def tree_digest(tree) -> str:
    """A hash of a pytree's leaves: their paths, dtypes, shapes and values (of a leaf spread
    over several processes, its shape and dtype only: every process comes to one hash)."""
    hasher = hashlib.sha256()
    for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
        values = whole(leaf)
        dtype, shape = (leaf.dtype, leaf.shape) if values is None else (values.dtype, values.shape)
        hasher.update(f"{jax.tree_util.keystr(path)}: {dtype}{list(shape)};".encode())
        if values is not None:
            hasher.update(np.ascontiguousarray(values).tobytes())
    return hasher.hexdigest()[:32]
