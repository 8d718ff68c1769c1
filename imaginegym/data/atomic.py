"""Atomic file writes: write under a temporary name, fsync, rename into place.

A reader sees either the old file or the complete new one, never a partial file, even
if the writer is killed (SIGKILL, power loss) at any moment. Temporary names start with
a dot and end in `.tmp`, so dataset readers never mistake them for shards.
"""

from __future__ import annotations

import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


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
    finally:
        tmp.unlink(missing_ok=True)


def write_json_atomic(final: Path, data: Any, *, overwrite: bool = True) -> None:
    """Write `data` as indented JSON to `final` atomically (see `atomic_write`)."""
    with atomic_write(final, overwrite=overwrite) as tmp:
        tmp.write_text(json.dumps(data, indent=2) + "\n")
