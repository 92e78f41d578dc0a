"""The project as a wheel, built from the checkout the launcher runs from (``pip wheel --no-deps``).

Only ``pyproject.toml``, ``README.md`` and the ``mixgrpo`` package are copied
into a scratch directory and built there, so the checkout gets no build
artefacts and local run directories never travel.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from mixgrpo.errors import InputError
import mixgrpo

_SOURCES = ("pyproject.toml", "README.md", "LICENSE")


def project_root() -> Path:
    """The checkout holding the imported ``mixgrpo`` package; ValueError when it is not a checkout."""
    root = Path(mixgrpo.__file__).resolve().parent.parent
    pyproject = root / "pyproject.toml"
    if not pyproject.is_file() or 'name = "mixgrpo"' not in pyproject.read_text():
        raise InputError(f"launching needs the mixgrpo source checkout (no pyproject.toml next to {root / 'mixgrpo'}); "
                         "install it with `pip install -e .` from a clone")
    return root


def wheel_command(source: Path, out_dir: Path) -> list[str]:
    """The pip command that builds the wheel (no build isolation when setuptools is at hand: works offline)."""
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out_dir)]
    if importlib.util.find_spec("setuptools") is not None:
        command.append("--no-build-isolation")
    return command + [str(source)]


def build_wheel(out_dir: Path) -> Path:
    """Build the project's wheel into ``out_dir``; its path."""
    root = project_root()
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mixgrpo-wheel-") as scratch:
        source = Path(scratch) / "src"
        source.mkdir()
        for name in _SOURCES:
            if (root / name).is_file():
                shutil.copy2(root / name, source / name)
        shutil.copytree(root / "mixgrpo", source / "mixgrpo", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        built = Path(scratch) / "dist"
        done = subprocess.run(wheel_command(source, built), capture_output=True, text=True, check=False)
        if done.returncode != 0:
            tail = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ValueError(f"building the mixgrpo wheel failed: {tail}")
        wheels = sorted(built.glob("mixgrpo-*.whl"))
        if not wheels:
            raise ValueError("building the mixgrpo wheel produced no wheel")
        target = out_dir / wheels[0].name
        shutil.copy2(wheels[0], target)
    return target
