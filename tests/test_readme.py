"""Every example of the README runs from the repository alone and shows its real output: each `$ planner`
line of a console block gives the output shown after it (wall times masked; a `...` ends the part shown),
and each Python block runs. `python tests/readme_examples.py --write` refreshes the shown outputs."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from readme_examples import NOT_IN_SUITE, REPO, Command, commands, differs, masked, python_blocks, run, workdir

COMMANDS = commands()
BLOCKS = python_blocks()
SHIPPED_FIT = {"planner calibrate data/calibration.csv data/inferencemax.csv -o calibration.yaml":
               "planner/calibration.yaml"}
"""Examples the suite does not run (readme_examples.NOT_IN_SUITE says why) and the shipped file standing in
for what they write."""


@pytest.fixture(scope="module")
def cwd(tmp_path_factory) -> Path:
    """One folder for all examples, in README order (later ones read files earlier ones write)."""
    return workdir(tmp_path_factory.mktemp("readme"))


def test_the_readme_has_examples():
    assert len(COMMANDS) >= 15 and len(BLOCKS) >= 3
    assert all(c.argv for c in COMMANDS)


def test_only_the_full_fit_is_left_to_the_script():
    assert set(NOT_IN_SUITE) == set(SHIPPED_FIT) <= {c.text for c in COMMANDS}


@pytest.mark.parametrize("cmd", COMMANDS, ids=lambda c: f"line{c.line}")
def test_console_example(cmd: Command, cwd: Path):
    if cmd.text in NOT_IN_SUITE:
        shutil.copy(REPO / SHIPPED_FIT[cmd.text], cwd / cmd.argv[-1])
        return
    code, got = run(cmd, cwd)
    error = any(line.startswith("planner") and "error:" in line for line in cmd.shown)
    assert code == (2 if error else 0), (cmd.text, code, got[-3:])
    assert not differs(cmd, got), "\n".join(["README shows:", *masked(cmd.shown), "the command prints:",
                                             *masked(got)])


@pytest.mark.parametrize("start, code", BLOCKS, ids=[f"line{s}" for s, _ in BLOCKS])
def test_python_example(start: int, code: str, cwd: Path, monkeypatch):
    monkeypatch.chdir(cwd)
    exec(compile(code, f"README.md:{start}", "exec"), {"__name__": "readme_example"})
    assert os.getcwd() == str(cwd)
