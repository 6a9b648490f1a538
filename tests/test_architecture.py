"""The import contracts of pyproject.toml ([tool.importlinter]): cotune's layers import one
way (docs/design.md), imports inside functions included, and the check catches a breach."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONFIG = ROOT / "pyproject.toml"
LINT = Path(sys.executable).with_name("lint-imports")


def _lint(package_parent: Path, cwd: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with the repo's contracts over the ``cotune`` found in ``package_parent``."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run(
        [str(LINT), "--config", str(CONFIG), "--no-cache", "--no-logo"],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
    )


def test_imports_follow_the_layers(tmp_path: Path) -> None:
    out = _lint(ROOT / "src", tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


def test_an_upward_import_inside_a_function_breaks_the_contract(tmp_path: Path) -> None:
    """A copy of the package with one upward import added (the floor's format.py reaching
    up to quickstart, hidden inside a function) fails, and the report names that import."""
    shutil.copytree(
        ROOT / "src" / "cotune", tmp_path / "cotune", ignore=shutil.ignore_patterns("__pycache__")
    )
    fmt = tmp_path / "cotune" / "format.py"
    fmt.write_text(
        fmt.read_text() + "\n\ndef _upward():\n    from cotune.quickstart import quickstart\n"
    )
    out = _lint(tmp_path, tmp_path)
    assert out.returncode != 0
    assert "cotune.format is not allowed to import cotune.quickstart" in out.stdout, out.stdout
    assert "cotune.format -> cotune.quickstart" in out.stdout
