"""What every benchmark report records: the code revision and the machine."""

from __future__ import annotations

import os
import platform
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
"""The repository's top folder."""


SUBPROCESS_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
"""The environment of the commands a benchmark times: bytecode caching on, as after `pip install .` (which
compiles the package), so that a warm-up run leaves .pyc files for an editable checkout too."""


def revision() -> str:
    """'planner at commit X' (marked when planner/ has uncommitted changes), or '' outside git."""
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "planner"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return ""
    return f"planner at commit {head}{' with uncommitted changes' if dirty else ''}"


def machine(*versions: str) -> str:
    """One line naming the machine, Python and any extra `versions` (e.g. 'numpy 2.4')."""
    parts = [f"{os.cpu_count()} CPUs", platform.platform(), platform.processor() or platform.machine(),
             f"Python {platform.python_version()}", *versions]
    return ", ".join(parts)


def publish(path: Path, text: str) -> None:
    """Write a markdown report (creating its folder) and print it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(text)
