"""Atomic file writes: write under a temporary name, fsync, rename into place.

A reader sees either the old file or the complete new one, never a partial file, even
if the writer is killed (SIGKILL, power loss) at any moment. Temporary names start with
a dot and end in `.tmp`, so dataset readers never mistake them for shards.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

# Errors that mean "out of room", with the fix to print for each.
_NO_ROOM = {
    errno.ENOSPC: "free some space and run again",
    errno.EDQUOT: "free some space within your quota (or raise it) and run again",
    errno.EFBIG: "raise the file size limit (`ulimit -f`) or write to another filesystem",
}
# Writers such as torch.save report a full disk as a RuntimeError without an errno; a
# failure while less than this is free is taken to be one.
_LOW_SPACE = 1 << 20  # bytes


def temp_path(final: Path) -> Path:
    """A unique temporary name beside `final` (same directory, so rename is atomic)."""
    return final.with_name(f".{final.name}.{uuid.uuid4().hex[:12]}.tmp")


def is_temp(name: str) -> bool:
    """True for a file name made by `temp_path`."""
    return name.startswith(".") and name.endswith(".tmp")


def fsync_file(path: Path) -> None:
    """Flush a closed file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_write(final: Path, *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path to write; on success it is fsynced and renamed to `final`.

    With `overwrite=False` the file is published with a hard link, which fails if
    `final` exists, so of several concurrent writers exactly one wins; the others get
    `FileExistsError` and their temporary file is removed. On any error nothing is left
    behind and an existing `final` is untouched.

    Raises:
        OSError: (errno ENOSPC, EDQUOT or EFBIG) the disk filled up while writing, also
            when the writer inside the `with` block reported it otherwise (torch.save
            raises RuntimeError); the message names `final`, the free space and the fix.
    """
    tmp = temp_path(final)
    try:
        yield tmp
        fsync_file(tmp)
        if overwrite:
            os.replace(tmp, final)
        else:
            os.link(tmp, final)
        fsync_dir(final.parent)
    except Exception as err:
        tmp.unlink(missing_ok=True)  # first, so the free space reported is what is left
        no_room = _no_room_error(final, err)
        if no_room is None:
            raise
        raise no_room from err
    finally:
        tmp.unlink(missing_ok=True)


def _no_room_error(final: Path, err: Exception) -> OSError | None:
    """A clear OSError if `err` means the filesystem of `final` ran out of room, else None."""
    try:
        free = shutil.disk_usage(final.parent).free
    except OSError:
        return None
    code = _errno_of(err)
    if code is None and free < _LOW_SPACE:
        code = errno.ENOSPC
    if code not in _NO_ROOM:
        return None
    intact = f"; the previous {final.name} is intact" if final.exists() else ""
    return OSError(
        code,
        f"could not write {final}: {os.strerror(code).lower()} ({free} bytes free in "
        f"{final.parent}); {_NO_ROOM[code]}{intact}",
    )


def _errno_of(err: BaseException | None) -> int | None:
    """The errno of the first OSError in `err`'s chain of causes, if any."""
    while err is not None:
        if isinstance(err, OSError) and err.errno is not None:
            return err.errno
        err = err.__cause__ or err.__context__
    return None


def write_json_atomic(final: Path, data: Any, *, overwrite: bool = True) -> None:
    """Write `data` as indented JSON to `final` atomically (see `atomic_write`)."""
    with atomic_write(final, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
