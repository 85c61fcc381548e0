"""Writing a checkpoint atomically: a temporary file beside it, synced, renamed over it.

The temporary is named `.{name}.fnnet-{pid}-XXXX.tmp`, so it can be tied to its
checkpoint and its writer: a SIGKILL mid-write leaves it behind, and the next
write of the same checkpoint removes those whose writer has ended. Errors name
the checkpoint, never the temporary file.
"""

import errno
import os
import re
import tempfile


def named_error(error: OSError, path: str, owner: str) -> OSError:
    """`error` again (the same class, as OSError picks it from errno), naming the
    checkpoint rather than the temporary file."""
    message = f"{owner}: cannot write checkpoint {path!r}: {error.strerror or error}"
    return OSError(error.errno, message) if error.errno else type(error)(message)


def _temporary(folder: str, base: str) -> tuple:
    """`(handle, path)` of a new temporary file for checkpoint `base` in `folder`."""
    return tempfile.mkstemp(dir=folder, prefix=f".{base}.fnnet-{os.getpid()}-", suffix=".tmp")


def _remove_stale_temporaries(folder: str, base: str) -> None:
    """Remove the temporaries of checkpoint `base` left by processes that have ended
    (a SIGKILL mid-write); a live writer's temporary stays. POSIX only."""
    if os.name != "posix":
        return
    pattern = re.compile(re.escape(f".{base}.fnnet-") + r"(\d+)-[A-Za-z0-9_]+\.tmp")
    try:
        names = os.listdir(folder)
    except OSError:
        return
    for name in names:
        match = pattern.fullmatch(name)
        if match is None or int(match.group(1)) == os.getpid():
            continue
        try:
            os.kill(int(match.group(1)), 0)  # signal 0: only asks whether the process exists
        except ProcessLookupError:
            try:
                os.remove(os.path.join(folder, name))
            except OSError:
                pass
        except OSError:  # alive, another user's process
            pass


def check_writable(path, owner: str) -> None:
    """Raise the OSError a write of `path` would meet (a missing or read-only folder, `path`
    a folder or naming none), naming `path`, by creating and removing a temporary file
    beside it."""
    path = os.fspath(path)
    folder, base = os.path.split(os.path.abspath(path))
    if os.path.isdir(path) or not path or path.endswith(tuple(filter(None, (os.sep, os.altsep)))):
        raise IsADirectoryError(errno.EISDIR, f"{owner}: checkpoint {path!r} is a folder, not a file's path")
    if not os.path.isdir(folder):
        why = "is a file" if os.path.exists(folder) else "does not exist"
        raise FileNotFoundError(
            errno.ENOENT, f"{owner}: cannot write checkpoint {path!r}: its folder {folder!r} {why}"
        )
    try:
        handle, temporary = _temporary(folder, base)
        os.close(handle)
        os.remove(temporary)
    except OSError as error:
        raise named_error(error, path, owner) from error


def write_atomically(path: str, write, owner: str, exclusive: bool = False) -> None:
    """`write(file)` into a temporary file beside `path`, then rename it over `path`; with
    `exclusive`, link it there instead, refusing (FileExistsError) a file that appeared at
    `path` meanwhile: a run's first save never replaces another run's checkpoint."""
    folder, base = os.path.split(os.path.abspath(path))
    _remove_stale_temporaries(folder, base)
    try:
        handle, temporary = _temporary(folder, base)
    except OSError as error:
        raise named_error(error, path, owner) from error
    try:
        with os.fdopen(handle, "wb") as file:
            write(file)
            file.flush()
            os.fsync(file.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(temporary, 0o666 & ~umask)  # mkstemp makes it 0600; give the usual mode
        if exclusive:
            _link(temporary, path)
        else:
            os.replace(temporary, path)
    except BaseException as error:
        if os.path.exists(temporary):
            os.remove(temporary)
        if isinstance(error, OSError):
            raise named_error(error, path, owner) from error
        raise
    _sync_folder(folder)


def _link(temporary: str, path: str) -> None:
    """Put `temporary` at `path` unless a file is there (a hard link fails atomically if
    one is; where links are refused, a check then a rename), and remove `temporary`."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise FileExistsError(
            errno.EEXIST, "a file appeared there since this run started (another run's?); it is left as it is"
        ) from None
    except OSError:  # a file system without hard links
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, "a file appeared there since this run started") from None
        os.replace(temporary, path)
        return
    os.remove(temporary)


def _sync_folder(folder: str) -> None:
    """Make the rename durable (a power cut after it keeps the new file); POSIX only."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    try:
        handle = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return
    try:
        os.fsync(handle)
    except OSError:
        pass
    finally:
        os.close(handle)
