"""Checkpoint steps on disk that can be trusted: written whole, verified before use.

Orbax makes a save atomic (temp dir, then rename), so a ``kill -9`` mid-save leaves the
previous checkpoints as they were. What Orbax does not catch is a checkpoint damaged
*after* it was written (a truncated copy, a flipped block, a full disk during a later
rsync): OCDBT data files carry no checksum, so a damaged file can restore as silently wrong
weights. So every committed step gets ``cotune_manifest.json`` (size and SHA-256 of each
file). Restoring verifies it, tries the newest step first, and on any problem warns with
what was wrong, moves that step to ``corrupt_checkpoints/`` and falls back to the previous
one. A failed save (``ENOSPC``: disk full) raises :class:`CheckpointError` saying which step
was lost and that the previous checkpoint is intact (docs/reliability.md).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import re
import shutil
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import jax
import orbax.checkpoint as ocp

T = TypeVar("T")
MANIFEST = "cotune_manifest.json"


class CheckpointError(RuntimeError):
    """A checkpoint could not be written or no usable one could be read (message for users)."""


class CheckpointWarning(UserWarning):
    """A damaged checkpoint was skipped; training resumed from an older one."""


_default_formatwarning = warnings.formatwarning


def _formatwarning(
    message: Warning | str,
    category: type[Warning],
    filename: str,
    lineno: int,
    line: str | None = None,
) -> str:
    # A CheckpointWarning is a message for the user: one line, without the "file:line:" and
    # the source line Python shows for warnings meant for programmers.
    if isinstance(category, type) and issubclass(category, CheckpointWarning):
        return f"warning: {message}\n"
    return _default_formatwarning(message, category, filename, lineno, line)


if getattr(warnings.formatwarning, "__name__", "") != "_formatwarning":
    warnings.formatwarning = _formatwarning

# TensorStore's status codes open the line that says what went wrong.
_TS_STATUS = re.compile(r"\b([A-Z][A-Z_]{3,}): ")


def summarize_error(e: BaseException, limit: int = 300) -> str:
    """One line for a user from an exception chain (Orbax and TensorStore errors included).

    Orbax wraps TensorStore's error in one that ends with a repr of the whole TensorStore
    spec (dozens of lines); the cause carries the useful part (``OUT_OF_RANGE: Error
    reading "layers.1..." ...``). The deepest message with a TensorStore status code wins,
    otherwise the outermost exception's first line; "See full TensorStore details" and what
    follows is dropped.
    """
    chain: list[BaseException] = []
    cur: BaseException | None = e
    while cur is not None and cur not in chain:
        chain.append(cur)
        cur = cur.__cause__ or cur.__context__

    def first_line(x: BaseException) -> str:
        text = str(x).split("See full TensorStore details")[0]
        lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
        return lines[0].rstrip(" .") if lines else ""

    pick = next((x for x in reversed(chain) if _TS_STATUS.search(first_line(x))), e)
    line = first_line(pick)
    m = _TS_STATUS.search(line)
    line = line[m.start() :] if m else line
    text = f"{type(pick).__name__}: {line}" if line and not m else line or type(pick).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- integrity


def _sha256(path: Path) -> str:
    with path.open("rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def step_dir(mgr: ocp.CheckpointManager, step: int) -> Path:
    """The folder Orbax wrote ``step`` to (default step naming: the bare number)."""
    return Path(str(mgr.directory)) / str(step)


def write_manifest(step_path: str | Path) -> None:
    """Record size + SHA-256 of every file of a committed step (atomic: temp, then rename)."""
    root = Path(step_path)
    files = {}
    for f in sorted(root.rglob("*")):
        if f.is_file() and f.name != MANIFEST and not f.name.startswith(MANIFEST):
            files[f.relative_to(root).as_posix()] = [f.stat().st_size, _sha256(f)]
    tmp = root / f"{MANIFEST}.tmp"
    tmp.write_text(json.dumps({"files": files}, indent=1), encoding="utf-8")
    os.replace(tmp, root / MANIFEST)


def verify_step(step_path: str | Path) -> str | None:
    """What is wrong with a step folder, or None if it matches its manifest.

    A step without a manifest (written before manifests existed, or killed between Orbax's
    commit and the manifest write) is not rejected here; Orbax's own restore is then the check.
    """
    root = Path(step_path)
    if not root.is_dir():
        return f"{root}: missing"
    man = root / MANIFEST
    if not man.is_file():
        return None
    try:
        files = json.loads(man.read_text(encoding="utf-8"))["files"]
        assert isinstance(files, dict)
    except Exception:  # noqa: BLE001 - any damage to the manifest is a damaged checkpoint
        return f"{man}: manifest unreadable (damaged)"
    for rel, (size, digest) in files.items():
        f = root / rel
        if not f.is_file():
            return f"{f}: file missing"
        got = f.stat().st_size
        if got != size:
            return f"{f}: {got} bytes, expected {size} (truncated or overwritten)"
        if _sha256(f) != digest:
            return f"{f}: content differs from what was written (SHA-256 mismatch: corrupted)"
    return None


def _is_enospc(e: BaseException | None) -> bool:
    seen = set()
    while e is not None and id(e) not in seen:
        seen.add(id(e))
        if isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        if "No space left on device" in str(e) or "ENOSPC" in str(e):
            return True
        e = e.__cause__ or e.__context__
    return False


def _remove_partial(mgr: ocp.CheckpointManager, step: int) -> None:
    """Delete what a failed save of ``step`` left (Orbax temp folder, unverified step folder)."""
    root = Path(str(mgr.directory))
    for p in root.glob(f"{step}*"):
        if p.is_dir() and (p.name == str(step) or p.name.startswith(f"{step}.")):
            shutil.rmtree(p, ignore_errors=True)


def _safe_steps(mgr: ocp.CheckpointManager) -> list[int]:
    try:
        mgr.reload()
        return sorted(mgr.all_steps())
    except Exception:  # noqa: BLE001 - listing is best effort after a failed save
        return []


def save_step(mgr: ocp.CheckpointManager, step: int, args: Any, *, force: bool = False) -> None:
    """``mgr.save(step)``, wait, write the manifest; a failure becomes :class:`CheckpointError`.

    Orbax writes into a temp folder and renames on success, so whatever fails here the
    previous checkpoints are untouched; the half-written step is removed to give the space back.
    """
    where = Path(str(mgr.directory))
    try:
        mgr.save(step, args=args, force=force)
        mgr.wait_until_finished()
        if jax.process_index() == 0:  # one writer on a shared file system
            write_manifest(step_dir(mgr, step))
    except Exception as e:  # noqa: BLE001 - re-raised below with what was lost and kept
        try:
            mgr.wait_until_finished()
        except Exception:  # noqa: BLE001 - the same failure, already being reported
            pass
        _remove_partial(mgr, step)
        prev = [s for s in _safe_steps(mgr) if s != step]
        kept = f"step {prev[-1]}" if prev else "none yet"
        if _is_enospc(e):
            what = "disk full (No space left on device)"
        else:
            what = summarize_error(e)
        raise CheckpointError(
            f"{where}: could not write checkpoint step {step}: {what}. The previous "
            f"checkpoint is intact ({kept}); free space and rerun with --resume."
        ) from e


def _quarantine(mgr: ocp.CheckpointManager, step: int) -> Path | None:
    """Move a damaged step out of Orbax's folder (kept for inspection, never deleted)."""
    src = step_dir(mgr, step)
    root = Path(str(mgr.directory))
    dst = root.parent / "corrupt_checkpoints" / f"{root.name}-{step}-{int(time.time())}"
    try:
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(src), str(dst))
    except OSError:
        shutil.rmtree(src, ignore_errors=True)
        dst = None
    mgr.reload()
    return dst


def restore_step(mgr: Any, one: Any, step: int | None, *, quarantine: bool) -> Any:
    """``(step, restored)`` for the requested ``step``, or the newest good checkpoint when
    ``step`` is None (``restore_first_good``); a missing or damaged requested step raises
    :class:`CheckpointError` naming the steps there are. SFT and RL restore through this."""
    if step is None:
        return restore_first_good(mgr, one, quarantine=quarantine)
    if step not in mgr.all_steps():
        have = ", ".join(map(str, sorted(mgr.all_steps()))) or "none"
        raise CheckpointError(f"{mgr.directory}: no checkpoint at step {step} (steps: {have})")
    problem = verify_step(step_dir(mgr, step))
    if problem is not None:
        raise CheckpointError(f"checkpoint step {step} is unusable: {problem}")
    return step, one(step)


def restore_first_good(
    mgr: ocp.CheckpointManager,
    restore_one: Callable[[int], T],
    *,
    quarantine: bool = True,
) -> tuple[int, T] | None:
    """Restore the newest usable step, falling back step by step past damaged ones.

    ``restore_one(step)`` does the actual Orbax restore. Each damaged step gets a
    :class:`CheckpointWarning` naming what was wrong and (with ``quarantine``) is moved to
    ``corrupt_checkpoints/`` so a resumed run can write that step number again. Returns None
    when there is no checkpoint at all; raises :class:`CheckpointError` when none is usable.
    """
    steps = sorted(mgr.all_steps(), reverse=True)
    problems = []
    for step in steps:
        path = step_dir(mgr, step)
        problem = verify_step(path)
        if problem is None:
            try:
                return step, restore_one(step)
            except Exception as e:  # noqa: BLE001 - any restore failure means: try the previous
                problem = f"{path}: Orbax could not restore it ({summarize_error(e)})"
        problems.append(f"step {step}: {problem}")
        moved = _quarantine(mgr, step) if quarantine else None
        older = [s for s in steps if s < step]
        warnings.warn(
            f"checkpoint step {step} is unusable: {problem}. "
            + (f"Moved to {moved}. " if moved else "")
            + (f"Falling back to step {older[0]}." if older else "No older checkpoint."),
            CheckpointWarning,
            stacklevel=2,
        )
    if steps:
        raise CheckpointError(
            f"{mgr.directory}: no usable checkpoint ("
            + "; ".join(problems)
            + "). Start over with --force."
        )
    return None


def make_manager(directory: str | Path, keep: int, *, use_async: bool = False):
    """A ``CheckpointManager`` keeping ``keep`` steps, removing temp folders of killed saves."""
    opts = ocp.CheckpointManagerOptions(
        max_to_keep=keep,
        create=True,
        enable_async_checkpointing=use_async,
        cleanup_tmp_directories=True,
    )
    return ocp.CheckpointManager(Path(directory).absolute(), options=opts)
