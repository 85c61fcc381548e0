"""Reading an `.npz` one entry at a time, each entry's header before its data.

`np.load` reads an entry's array as its `.npy` header claims: a corrupt or
hostile header that claims 10**12 values makes it allocate them. Here the
caller sees an entry's shape and dtype first (to compare them with what it
expects), and data is read only when the header claims no more bytes than
the entry holds. Nothing is ever unpickled.
"""

import contextlib
import os
import zipfile
import zlib

import numpy as np

# Raised by zipfile, zlib and numpy's .npy reader on a truncated or corrupt file.
_CORRUPT = (
    ValueError,
    OSError,
    EOFError,
    zipfile.BadZipFile,
    zlib.error,
    KeyError,
    NotImplementedError,
    RuntimeError,
)
_NPY_MAGIC = b"\x93NUMPY"
_MAX_DEFLATE_RATIO = 1032  # the most a deflated zip member can grow


def unreadable(path: str, why) -> ValueError:
    return ValueError(
        f"load: {path!r} is not a readable fnnet checkpoint (truncated, corrupt or not an .npz): {why}"
    )


def _npy_header(file):
    """(shape, dtype) from a .npy header, reading no data."""
    version = np.lib.format.read_magic(file)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(file)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(file)
    else:
        raise ValueError(f".npy format version {version} is not supported")
    return tuple(shape), dtype


class _Lying(Exception):
    pass


class Archive:
    """The entries of an open `.npz`, by name (without `.npy`); errors name `path`."""

    def __init__(self, path: str, archive: zipfile.ZipFile, size: int):
        self.path, self.archive, self.size = path, archive, size
        self.entries = {
            info.filename[: -len(".npy")]: info
            for info in archive.infolist()
            if info.filename.endswith(".npy")
        }

    def header(self, name: str):
        """(shape, dtype) of entry `name`, reading no data."""
        try:
            with self.archive.open(self.entries[name]) as member:
                shape, dtype = _npy_header(member)
        except _CORRUPT as error:
            raise unreadable(self.path, f"entry {name!r}: {error}") from None
        if dtype.hasobject:
            raise unreadable(self.path, f"entry {name!r} holds Python objects (a pickle)")
        return shape, dtype

    def data(self, name: str) -> np.ndarray:
        """The array of entry `name`, once its header claims no more than the entry holds
        (its size in the zip directory, itself bounded by the file's size)."""
        info = self.entries[name]
        try:
            with self.archive.open(info) as member:
                shape, dtype = _npy_header(member)
                claimed = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if (
                    claimed > info.file_size - member.tell()
                    or info.file_size > _MAX_DEFLATE_RATIO * self.size
                ):
                    raise _Lying(f"entry {name!r} claims {dtype}{list(shape)}, more than the file holds")
                member.seek(0)
                return np.lib.format.read_array(member, allow_pickle=False)
        except _Lying as error:
            raise unreadable(self.path, error) from None
        except _CORRUPT as error:
            raise unreadable(self.path, f"entry {name!r}: {error}") from None


@contextlib.contextmanager
def open_npz(path: str):
    """The `.npz` at `path` as an `Archive`; ValueError for anything else (a lone `.npy`,
    a truncated or corrupt zip)."""
    with open(path, "rb") as file:
        try:
            if file.read(len(_NPY_MAGIC)) == _NPY_MAGIC:
                file.seek(0)
                shape, dtype = _npy_header(file)
                archive: "str | zipfile.ZipFile" = f"it holds one {dtype}{list(shape)} array"
            else:
                file.seek(0)
                archive = zipfile.ZipFile(file)
        except _CORRUPT as error:
            raise unreadable(path, error) from None
        if isinstance(archive, str):
            raise unreadable(path, archive)
        with archive:
            yield Archive(path, archive, os.path.getsize(path))
