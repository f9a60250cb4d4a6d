"""Atomic file writes: write a temporary file next to the target, then rename it over the target.

Source: project convention (issue 13, "one home for atomic writes"); POSIX ``rename(2)`` and
Windows ``MoveFileEx`` semantics as exposed by :func:`os.replace`.

Every result, cache, checkpoint and figure the project writes goes through :func:`atomic_path`
(or its two helpers), so that a reader, or a later run resuming an interrupted one, sees either
the previous complete file or the new complete file, never a half-written one.

This module is the bottom of the library: it imports nothing from ``adjointlib``.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from pathlib import Path
from typing import Iterator

__all__ = ["atomic_path", "write_text_atomic", "write_bytes_atomic"]


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary sibling of ``path`` to write; rename it onto ``path`` only if the block succeeds.

    Source: project convention (module docstring).

    Guarantees:

    * the temporary file is in the same folder as ``path`` (so the rename never crosses file
      systems) and is named ``<name>.<8 hex digits>.tmp<suffix>``: unique per call, so two
      writers of the same target never share a temporary file;
    * when the ``with`` block finishes without an exception, the temporary file replaces
      ``path`` with :func:`os.replace` (atomic: readers see the old file or the new one);
    * when the block raises (any exception, KeyboardInterrupt included), ``path`` is left
      untouched, the temporary file is removed if it was created, and the exception propagates.

    Not guaranteed: durability after a power failure (nothing is fsync-ed); a process killed
    with SIGKILL leaves its ``*.tmp*`` file behind (the target is still intact).

    ``suffix`` is appended to the temporary name for writers that add an extension or pick a
    format from the name: ``np.savez`` appends ``.npz`` to a name that does not end with it, so
    write ``.npz`` files with ``suffix=".npz"``.

    Raises: FileNotFoundError if ``path``'s folder does not exist (it is not created) or if the
    block did not create the temporary file; whatever the block raises.
    Shapes: none (yields a :class:`pathlib.Path`).
    """
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{uuid.uuid4().hex[:8]}.tmp{suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str, encoding: str = "utf-8", newline: str | None = None) -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_path`); returns ``path`` as a Path.

    Source: project convention. Convention: ``encoding`` and ``newline`` as for :func:`open`
    (``newline=None`` writes ``\\n`` as the platform's line separator).
    Raises: FileNotFoundError if ``path``'s folder does not exist; OSError from the write (the
    target is then untouched and no temporary file remains).
    """
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", encoding=encoding, newline=newline) as handle:
        handle.write(text)
    return path


def write_bytes_atomic(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_path`); returns ``path`` as a Path.

    Source: project convention.
    Raises: FileNotFoundError if ``path``'s folder does not exist; OSError from the write (the
    target is then untouched and no temporary file remains).
    """
    path = Path(path)
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return path
