"""The README's examples: every `$ planner ...` line of its console blocks with the output it shows, and
every Python block, run from a fresh copy of the repository's data (tests/test_readme.py).

    python tests/readme_examples.py           # run them all and list the examples whose output differs
    python tests/readme_examples.py --write   # rewrite the README's shown outputs with the real ones
    python tests/readme_examples.py --write --skip-full-fit   # the same, the full calibration fit left as shown

Output is compared line by line after masking wall times (`in 0.12 s`, a trailing `0.2 s`); a `...` line in
the README ends the part shown (the rest of the real output is not compared).
"""

from __future__ import annotations

import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
NOT_IN_SUITE = {"planner calibrate data/calibration.csv data/inferencemax.csv -o calibration.yaml":
                "the full fit of 1,650 runs takes about 10 minutes on 2 cores; the test suite puts the shipped "
                "calibration (that fit's result) in its place, fits subsets through the same command "
                "(tests/test_runs.py), and this script runs it"}
"""Examples the test suite does not run, with the reason (`python tests/readme_examples.py` runs them all)."""
README = REPO / "README.md"
TIMES = [re.compile(r"(?<=in )\d+(?:\.\d+)? s\b"), re.compile(r"(?<=; )\d+(?:\.\d+)? s$"),
         re.compile(r"(?<=  )\d+(?:\.\d+)? s$")]
"""Wall times in outputs: 'in 0.12 s', '...; 0.2 s' at the end of a line, a last column '10.1 s'."""


@dataclass
class Command:
    """One `$ planner ...` line of a console block and the output the README shows after it."""

    line: int  # 1-based line of the command in the README
    argv: list[str]
    redirect: str | None  # `> FILE`
    shown: list[str]  # the lines the README shows (up to a '...' line, which `truncated` records)
    truncated: bool

    @property
    def text(self) -> str:
        return shlex.join(["planner", *self.argv])


def commands(text: str | None = None) -> list[Command]:
    """Every planner command of the README's console blocks, in order."""
    lines = (text if text is not None else README.read_text()).splitlines()
    out: list[Command] = []
    inside = False
    for i, raw in enumerate(lines):
        if raw.startswith("```"):
            inside = raw.strip() == "```console"
            continue
        if not inside:
            continue
        if raw.startswith("$ planner"):
            cmd = raw[2:].split("  #")[0].strip()
            redirect = None
            if ">" in cmd:
                cmd, redirect = (x.strip() for x in cmd.split(">", 1))
            out.append(Command(i + 1, shlex.split(cmd)[1:], redirect, [], False))
        elif raw.startswith("$ "):
            raise ValueError(f"README line {i + 1}: a console example that is not a planner command")
        elif out and out[-1].line < i + 1 and not out[-1].truncated:
            if raw.strip() == "...":
                out[-1].truncated = True
            else:
                out[-1].shown.append(raw)
    for cmd in out:  # a blank line before the next command separates examples: not output
        while cmd.shown and not cmd.shown[-1].strip():
            cmd.shown.pop()
    return out


def python_blocks(text: str | None = None) -> list[tuple[int, str]]:
    """(first line, code) of every ```python block of the README."""
    lines = (text if text is not None else README.read_text()).splitlines()
    blocks, start = [], None
    for i, raw in enumerate(lines):
        if raw.strip() == "```python":
            start = i + 1
        elif raw.startswith("```") and start is not None:
            blocks.append((start + 1, "\n".join(lines[start:i])))
            start = None
    return blocks


def workdir(path: Path) -> Path:
    """A folder that looks like the repository to the examples: data/, fleets/, sweeps/ and tests/ linked in."""
    path.mkdir(parents=True, exist_ok=True)
    for name in ("data", "fleets", "sweeps", "tests"):
        link = path / name
        if not link.exists():
            link.symlink_to(REPO / name, target_is_directory=True)
    return path


def run(cmd: Command, cwd: Path) -> tuple[int, list[str]]:
    """Run one command in `cwd` through the CLI; (exit code, output lines, stdout and stderr as written)."""
    from click.testing import CliRunner

    from planner.cli import main

    here = Path.cwd()
    os.chdir(cwd)
    try:
        result = CliRunner().invoke(main, cmd.argv, prog_name="planner")
    finally:
        os.chdir(here)
    if cmd.redirect:
        (cwd / cmd.redirect).write_text(result.stdout)
        return result.exit_code, [line for line in result.stderr.splitlines()]
    return result.exit_code, result.output.splitlines()


def masked(lines: list[str]) -> list[str]:
    """Lines with their wall times replaced by 'T s', and table columns compared by content: a wall time's width
    (6.4 s or 22.1 s) moves the columns after it and the rule under the header, so runs of spaces count as one
    and a rule of dashes as one dash per column."""
    out = []
    for line in lines:
        for pattern in TIMES:
            line = pattern.sub("T s", line)
        line = line.rstrip()
        if re.fullmatch(r"[- ]+", line):
            line = re.sub(r"-+", "-", line)
        out.append(re.sub(r" {2,}", "  ", line))
    return out


def differs(cmd: Command, got: list[str]) -> bool:
    """The real output does not start with (or, untruncated, equal) what the README shows, times masked; a
    command shown without output (an example of the command alone) only has to run."""
    if not cmd.shown and not cmd.truncated:
        return False
    want, have = masked(cmd.shown), masked(got)
    return have[:len(want)] != want if cmd.truncated else have != want


def rewrite(text: str, results: dict[int, list[str]]) -> str:
    """The README with each command's shown output replaced by its real one (as long as was shown)."""
    lines = text.splitlines()
    out: list[str] = []
    by_line = {c.line: c for c in commands(text)}
    skip_until = -1
    for i, raw in enumerate(lines, 1):
        if i <= skip_until:
            continue
        out.append(raw)
        cmd = by_line.get(i)
        if cmd is None or cmd.line not in results:
            continue
        got = results[cmd.line]
        n = len(cmd.shown)
        if not n and not cmd.truncated:
            continue  # a command shown alone stays alone
        out += got[:n] if cmd.truncated else got
        skip_until = i + n  # the old shown lines (the '...' line and blank separators stay)
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    import shutil
    import tempfile

    write = "--write" in argv
    skip_fit = "--skip-full-fit" in argv  # NOT_IN_SUITE examples: the shipped file in place, their output kept
    text = README.read_text()
    results, bad = {}, 0
    with tempfile.TemporaryDirectory() as d:
        cwd = workdir(Path(d))
        for cmd in commands(text):
            if skip_fit and cmd.text in NOT_IN_SUITE:
                shutil.copy(REPO / "planner" / "calibration.yaml", cwd / cmd.argv[-1])
                continue
            code, got = run(cmd, cwd)
            results[cmd.line] = got
            if differs(cmd, got) or (code != 0 and not any("error:" in x for x in cmd.shown)):
                bad += 1
                print(f"README line {cmd.line}: {cmd.text} (exit {code}) differs", file=sys.stderr)
    if write:
        README.write_text(rewrite(text, results))
        print(f"rewrote the outputs of {len(results)} commands", file=sys.stderr)
    return 1 if bad and not write else 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main(sys.argv[1:]))
