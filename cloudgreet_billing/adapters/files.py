"""Every file the toolkit writes goes through here: exports, outbox messages, demo files.

The rules, the same for each:

- A path that is the billing store, or its ``-wal``, ``-shm`` or ``-journal`` file, is
  refused before anything is touched (exit 2), however it is reached: the same path, a
  symlink, ``..``, or a hard link to the same file.
- A symlink is followed: the file it points to is the one checked and written, and the
  link itself stays as it was (still a link, to the new contents).
- A FIFO, a character device (``/dev/null``, a terminal, ``/dev/full``) or a descriptor
  path (``/dev/stdout``, ``/dev/fd/N``) is written through, never replaced by a file.
- Anything else is written to a temporary file in the target's own folder, flushed to
  disk, then renamed over the target: a reader sees the old file or the whole new one.
- A failure while writing (a full disk, no permission) is one line naming the path and
  the cause (exit 1); the temporary file is removed and the target is left as it was.
"""

from __future__ import annotations

import errno
import os
import stat
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Final

from cloudgreet_billing.errors import BadInput, BillingError, ExitCode

#: The files SQLite keeps next to a database, by suffix.
SQLITE_COMPANIONS: Final = ("-wal", "-shm", "-journal")
#: Paths that name an already open descriptor, not a file to create.
_DESCRIPTOR_PREFIXES: Final = ("/dev/fd/", "/proc/self/fd/")
_DESCRIPTOR_PATHS: Final = ("/dev/stdin", "/dev/stdout", "/dev/stderr")


class FileWriteError(BillingError):
    """Writing a file failed part-way (disk full, permission denied): nothing was left."""

    def __init__(self, message: str, hint: str | None = None, **details: object) -> None:
        super().__init__(message, hint, "file_write", ExitCode.FAILED, dict(details))


def store_files(database: Path) -> list[Path]:
    """The SQLite store ``database`` and the companion files SQLite keeps beside it."""
    return [database, *(Path(f"{database}{suffix}") for suffix in SQLITE_COMPANIONS)]


def write_file(
    path: Path,
    pieces: Iterable[str | bytes],
    *,
    protected: Sequence[Path] = (),
) -> Path:
    """Write ``pieces`` (text is UTF-8) to ``path`` by the rules above; returns the file
    written (the symlink's target when ``path`` is one).

    ``protected`` are files that must never be written (the store's). ``pieces`` is
    closed before this returns or raises, so that a generator reading the store finishes
    while the store is still open.
    """
    try:
        target = _target(path, protected)
        if target is None:
            _write_through(path, pieces)
            return path
        _replace(target, path, pieces)
        return target
    finally:
        close = getattr(pieces, "close", None)
        if callable(close):
            close()


def write_bytes(path: Path, data: bytes, *, protected: Sequence[Path] = ()) -> Path:
    """``write_file`` for one piece."""
    return write_file(path, (data,), protected=protected)


def refuse_store_files(path: Path, protected: Sequence[Path]) -> None:
    """Raise ``BadInput`` (exit 2) when ``path`` is, or reaches, one of ``protected``."""
    resolved = path.resolve()
    for guarded in protected:
        if resolved == guarded.resolve() or _same_file(resolved, guarded):
            raise BadInput(
                f"refusing to write {path}: it is the billing store's file {_absolute(guarded)}",
                hint="choose another file name, e.g. -o export.csv; nothing was written",
                code="refused_overwrite",
                path=str(path),
            )


def refuse_store_descriptor(fd: int, shown: str, protected: Sequence[Path]) -> None:
    """``refuse_store_files`` for an open descriptor (stdout redirected with ``>>``)."""
    try:
        opened = os.fstat(fd)
    except OSError:
        return
    for guarded in protected:
        try:
            found = guarded.stat()
        except OSError:
            continue
        if (found.st_dev, found.st_ino) == (opened.st_dev, opened.st_ino):
            raise BadInput(
                f"refusing to write {shown}: it is the billing store's file {_absolute(guarded)}",
                hint="redirect the export to another file, e.g. > export.csv; nothing was written",
                code="refused_overwrite",
            )


def _absolute(path: Path) -> str:
    return os.path.normpath(path.absolute())


def _same_file(first: Path, second: Path) -> bool:
    try:
        return first.samefile(second)
    except OSError:
        return False


def _is_descriptor_path(path: Path) -> bool:
    shown = _absolute(path)
    return shown in _DESCRIPTOR_PATHS or shown.startswith(_DESCRIPTOR_PREFIXES)


def _target(path: Path, protected: Sequence[Path]) -> Path | None:
    """The regular file to replace, or None when ``path`` is written through."""
    # /dev/stdout too: `-o /dev/stdout >> billing.db` would append to the store.
    refuse_store_files(path, protected)
    if _is_descriptor_path(path):
        if not path.exists():
            raise BadInput(f"cannot write {path}: no such descriptor", code="bad_path")
        return None
    resolved = path.resolve()
    try:
        mode = resolved.stat().st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise _failure(path, exc) from None
    if mode is not None and stat.S_ISDIR(mode):
        raise BadInput(f"cannot write {path}: it is a folder", hint="give a file name")
    if mode is not None and not stat.S_ISREG(mode):
        # A FIFO, a device, a socket: the reader or the driver takes the bytes.
        return None
    if mode is None and resolved.is_relative_to("/dev"):
        raise BadInput(f"cannot write {path}: there is no such device", code="bad_path")
    folder = resolved.parent
    if not folder.is_dir():
        raise BadInput(
            f"cannot write {path}: the folder {folder} does not exist",
            hint=f"create it first with mkdir -p {folder}",
            code="bad_path",
        )
    return resolved


def _write_through(path: Path, pieces: Iterable[str | bytes]) -> None:
    # O_APPEND: /dev/stdout redirected to a file (`>>` in the shell) keeps what is there.
    flags = os.O_WRONLY | os.O_APPEND | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        raise _failure(path, exc) from None
    try:
        for piece in _encoded(pieces):
            _write_all(fd, piece)
    except OSError as exc:
        raise _failure(path, exc) from None
    finally:
        os.close(fd)


def _replace(target: Path, shown: Path, pieces: Iterable[str | bytes]) -> None:
    folder = target.parent
    try:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=folder)
    except OSError as exc:
        raise _failure(shown, exc, folder=folder) from None
    temporary = Path(name)
    try:
        try:
            for piece in _encoded(pieces):
                _write_all(fd, piece)
            os.fsync(fd)
        finally:
            os.close(fd)
        temporary.replace(target)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise _failure(shown, exc) from None
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _sync_folder(folder)


def _sync_folder(folder: Path) -> None:
    """Make the rename itself durable; not every file system lets a folder be synced."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _encoded(pieces: Iterable[str | bytes]) -> Iterator[bytes]:
    for piece in pieces:
        yield piece.encode("utf-8") if isinstance(piece, str) else piece


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        written = os.write(fd, view)
        view = view[written:]


def _failure(path: Path, exc: OSError, *, folder: Path | None = None) -> FileWriteError:
    cause = exc.strerror or type(exc).__name__
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        fix = "free some space, then run it again"
    elif exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        fix = f"make {folder or path} writable by this user, or write somewhere else"
    else:
        fix = "run it again once that is fixed"
    inside = f" in the folder {folder}" if folder is not None else ""
    return FileWriteError(
        f"cannot write {path}: {cause}{inside}",
        hint=f"nothing was written; {fix}",
        path=str(path),
    )
