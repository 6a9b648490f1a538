"""Writing outputs without destroying anything: one place for every command's ``--out``.

* :func:`check_output` runs before any computation. It refuses an existing output unless
  ``force``, refuses to write over one of the command's own inputs even with ``force``, and
  checks that the output can be created at all (right kind, parent is a writable folder).
* :func:`atomic_open` / :func:`atomic_write_text` / :func:`atomic_write_bytes` write a file
  through a temporary file in the same folder and ``os.replace`` it into place, so a crash
  leaves the old file or the new one, never half of one.
* :func:`atomic_dir` does the same for a folder: the body writes into a temporary sibling
  that is renamed over the target only when the body finishes.
* :func:`set_aside` is for run folders that must be written in place (so that ``--resume``
  finds them after a crash): the old folder is moved to a hidden sibling and deleted only
  once the new run has finished.

Every problem is an :class:`OutputError` (a ``ValueError``) whose message is one line naming
the path and what was expected; commands print it and exit with code 2.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Literal

__all__ = [
    "OutputError",
    "atomic_dir",
    "atomic_open",
    "atomic_write_bytes",
    "atomic_write_text",
    "check_output",
    "set_aside",
]


class OutputError(ValueError):
    """An output that must not or cannot be written; the message is for users."""


def _umask() -> int:
    # os.umask can only be read by setting it; put it straight back.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _same(a: Path, b: Path) -> bool:
    """Whether two paths name the same file (also through symlinks and hard links)."""
    try:
        if os.path.samefile(a, b):
            return True
    except OSError:  # one of them does not exist
        pass
    return a.resolve() == b.resolve()


def _inside(child: Path, folder: Path) -> bool:
    return child.resolve().is_relative_to(folder.resolve())


def check_output(
    path: str | Path,
    kind: Literal["file", "dir"] = "file",
    *,
    force: bool = False,
    inputs: Iterable[str | Path | None] = (),
    flag: str = "--out",
    exists_hint: str = "pass --force to overwrite it",
    in_place: bool = False,
) -> Path:
    """Check, before any work, that ``path`` may be written as a ``kind``; return it.

    Refused (``OutputError``): ``path`` exists and ``force`` is false (an empty folder is fine
    for ``kind="dir"``); ``path`` is a folder where a file is expected or the other way
    round; ``path`` is one of ``inputs``, or for a folder contains one of them or the current
    folder (replacing it would delete them), even with ``force``; ``path`` cannot be created
    (an ancestor is a file, or the folder that would hold it is not writable).
    ``in_place=True`` is for a folder that is continued rather than replaced (``--resume``):
    inputs inside it are then allowed.
    """
    p = Path(path).expanduser()
    where = f"{flag} {p}" if flag else str(p)
    for raw in inputs:
        if raw is None or str(raw) == "":
            continue
        inp = Path(raw).expanduser()
        if _same(p, inp):
            raise OutputError(
                f"{where}: is also an input of this command; write the output elsewhere "
                "(--force never overwrites an input)"
            )
        if kind == "dir" and not in_place and inp.exists() and _inside(inp, p):
            raise OutputError(
                f"{where}: contains the input {inp}; write the output elsewhere "
                "(--force never overwrites an input)"
            )
    if kind == "file" and p.is_dir():
        raise OutputError(f"{where}: is a directory, expected a file path")
    if kind == "dir" and p.exists() and not p.is_dir():
        raise OutputError(f"{where}: is a file, expected a folder")
    if kind == "dir" and not in_place and p.is_dir() and _inside(Path.cwd(), p):
        raise OutputError(f"{where}: is the current folder or contains it; name a new folder")
    exists = p.exists() or p.is_symlink()
    if exists and not force and not (kind == "dir" and p.is_dir() and not any(p.iterdir())):
        raise OutputError(f"{where}: already exists; {exists_hint}")
    # The nearest existing ancestor must be a folder we may create entries in.
    parent = p.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    if not parent.is_dir():
        raise OutputError(f"{where}: cannot be created: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise OutputError(f"{where}: cannot be written: no write permission in {parent}")
    if kind == "dir" and p.is_dir() and not os.access(p, os.W_OK | os.X_OK):
        raise OutputError(f"{where}: cannot be written: no write permission in {p}")
    return p


# --------------------------------------------------------------------------- files


@contextmanager
def atomic_open(path: str | Path, mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside ``path`` for writing; on a clean exit it replaces
    ``path`` in one rename. If the body raises, the temporary file is removed and ``path``
    is left as it was."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, mode, encoding=None if "b" in mode else encoding) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; match a normal open()
        os.replace(tmp, p)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def atomic_write_text(path: str | Path, text: str, encoding: str = "utf-8") -> None:
    with atomic_open(path, "w", encoding) as f:
        f.write(text)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


# --------------------------------------------------------------------------- folders


def _hidden_sibling(p: Path, tag: str) -> Path:
    """A fresh, unused name beside ``p`` (created then removed, so nothing else takes it)."""
    name = Path(tempfile.mkdtemp(dir=p.parent, prefix=f".{p.name}.{tag}-"))
    name.rmdir()
    return name


@contextmanager
def atomic_dir(path: str | Path) -> Iterator[Path]:
    """Yield a new temporary folder beside ``path``; when the body finishes it becomes
    ``path`` (an existing ``path`` is replaced, so call :func:`check_output` first). If the
    body raises, the temporary folder is removed and ``path`` is untouched."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=p.parent, prefix=f".{p.name}.tmp-"))
    try:
        yield tmp
        tmp.chmod(0o777 & ~_umask())  # mkdtemp makes 0700
        old = None
        if p.exists() or p.is_symlink():
            # rename() cannot replace a non-empty folder: move the old one aside first and
            # put it back if the final rename fails.
            old = _hidden_sibling(p, "old")
            os.replace(p, old)
        try:
            os.replace(tmp, p)
        except BaseException:
            if old is not None:
                os.replace(old, p)
            raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def set_aside(path: str | Path) -> Iterator[Path | None]:
    """For a folder rewritten in place: move an existing ``path`` to a hidden sibling (which
    is yielded; ``None`` if there was nothing) and delete it only when the body finishes. If
    the body raises or the process dies, the old folder is still there under that name."""
    p = Path(path)
    if not (p.exists() or p.is_symlink()):
        yield None
        return
    old = _hidden_sibling(p, "old")
    os.replace(p, old)
    yield old
    shutil.rmtree(old, ignore_errors=True) if old.is_dir() else old.unlink()
