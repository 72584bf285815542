"""Measure the wall time of the `planner solve --sla 20tok/s` command, and how much of it is imports.

Runs, each as a fresh subprocess, `--runs` times (default 7) after `--warmup` untimed runs:

- the full command ``planner solve --sla 20tok/s`` (the default case: GPT-MoE-1.8T on 64 GB200
  NVL72 GPUs, FP4, isl/osl 32768/1024), using the ``planner`` console script found on PATH, or
  ``python -m planner`` when there is none and the package has a ``__main__``;
- ``python -c "import planner.cli"``: interpreter start-up plus the imports the command pays;
- ``python -c "pass"``: bare interpreter start-up;

and reports median, min and max of each, plus the median of the solver time the command itself
prints ("solver: cpsat OPTIMAL in X s"). The Python used for the two `-c` runs is the one the
console script runs on (read from its shebang), else this interpreter.

The script fails with a clear message (exit status 2) when neither is available; install the
package (``pip install -e .``) to put ``planner`` on PATH.

Run from anywhere:

    python benchmarks/startup.py             # 7 runs each
    python benchmarks/startup.py --runs 15

The markdown table goes to benchmarks/results/startup.md (``--out`` to change) and is printed.
"""

from __future__ import annotations

import argparse
import datetime as dt
import importlib.util
import os
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from _common import ROOT, SUBPROCESS_ENV, machine, revision  # benchmarks/ is on sys.path when run as a script

SOLVE_ARGS: tuple[str, ...] = ("solve", "--sla", "20tok/s")
SOLVER_LINE = re.compile(r"^solver: \S+ (\S+) in ([0-9.]+) s", re.MULTILINE)
"""The command's last line, e.g. 'solver: cpsat OPTIMAL in 0.71 s, ...': status and solver wall [s]."""


@dataclass
class Measurement:
    """Wall times of one command over several runs [s]."""

    label: str
    argv: list[str]
    times: list[float] = field(default_factory=list)
    solver_s: list[float] = field(default_factory=list)
    statuses: set[str] = field(default_factory=set)

    def row(self) -> list[str]:
        t = self.times
        return [f"`{self.label}`", str(len(t)), f"{statistics.median(t):.3f}", f"{min(t):.3f}", f"{max(t):.3f}"]


class BenchmarkError(RuntimeError):
    """A command to time is missing or failed."""


def find_planner() -> tuple[list[str], str]:
    """The command that runs the CLI and the Python it runs on; raises BenchmarkError when there is none.

    The `planner` console script on PATH if there is one, else `python -m planner` when planner has a
    __main__ module importable from this interpreter.
    """
    exe = shutil.which("planner")
    if exe is not None:
        return [exe], script_python(exe)
    try:
        has_main = importlib.util.find_spec("planner.__main__") is not None
    except ModuleNotFoundError:
        has_main = False
    if has_main:
        return [sys.executable, "-m", "planner"], sys.executable
    raise BenchmarkError(
        "no `planner` executable on PATH, and `python -m planner` is not available (planner is not importable "
        f"or has no __main__.py): install the package first, e.g. `pip install -e {ROOT}`"
    )


def script_python(script: str) -> str:
    """The interpreter a console script runs on, from its shebang; this interpreter otherwise."""
    try:
        with open(script, "rb") as f:
            first = f.readline().decode(errors="replace").strip()
    except OSError:
        return sys.executable
    if first.startswith("#!"):
        parts = shlex.split(first[2:])
        if parts and "python" in Path(parts[0]).name and Path(parts[0]).exists():
            return parts[0]
    return sys.executable  # e.g. a pyenv shim (a shell script): the same interpreter in practice


def run_once(m: Measurement, cwd: str) -> None:
    """Time one run of the command; keep the solver time it prints, if any."""
    t0 = time.perf_counter()
    proc = subprocess.run(m.argv, cwd=cwd, capture_output=True, text=True, check=False, env=SUBPROCESS_ENV)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise BenchmarkError(f"`{shlex.join(m.argv)}` exited with {proc.returncode}: "
                             f"{(proc.stderr or proc.stdout).strip()[-500:]}")
    m.times.append(wall)
    found = SOLVER_LINE.search(proc.stdout)
    if found:
        m.statuses.add(found.group(1))
        m.solver_s.append(float(found.group(2)))


def planner_location(python: str, cwd: str) -> str:
    """Where `python` imports planner from, run in `cwd`."""
    proc = subprocess.run([python, "-c", "import planner; print(planner.__file__)"], cwd=cwd,
                          capture_output=True, text=True, check=False)
    return proc.stdout.strip() if proc.returncode == 0 else f"not importable ({proc.stderr.strip()[-200:]})"


def bytecode_note() -> str:
    """The runs use cached bytecode: PYTHONDONTWRITEBYTECODE, if set here, is removed from their environment."""
    unset = " (PYTHONDONTWRITEBYTECODE, set here, is removed from the runs' environment)" if os.environ.get(
        "PYTHONDONTWRITEBYTECODE") else ""
    return f"Bytecode caching is on{unset}, so the warm-up runs leave .pyc files for the timed ones."


def load_note(load: tuple[float, float, float] | None) -> str:
    """The 1/5/15-minute load average when the run started, to judge how busy the machine was."""
    return f"Load average at start: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}." if load else ""


def report(ms: list[Measurement], planner_exe: str, python: str, where: str, warmup: int,
           started: dt.datetime, load: tuple[float, float, float] | None, rev: str) -> str:
    """The markdown report."""
    full, imp, bare = ms[:3]
    med = statistics.median
    cmd = shlex.join(["python", "benchmarks/startup.py", *sys.argv[1:]])
    head = ["command", "runs", "median s", "min s", "max s"]
    lines = [
        "# Start-up time of `planner solve`",
        "",
        f"Machine: {machine()}. Date: {started:%Y-%m-%d %H:%M} UTC.{rev}",
        "",
        f"Reproduce: `{cmd}`",
        "",
        f"CLI run as `{planner_exe}`; `python` = `{python}`; planner imported from `{where}`. Each run is a "
        f"fresh process started from an empty temporary directory, after {warmup} untimed warm-up "
        f"run{'s' if warmup != 1 else ''} of each command. {bytecode_note()} {load_note(load)}",
        "",
        "| " + " | ".join(head) + " |",
        "|---|---:|---:|---:|---:|",
        *("| " + " | ".join(m.row()) + " |" for m in ms),
    ]
    if full.solver_s:
        s = full.solver_s
        status = "/".join(sorted(full.statuses))
        lines.append(f"| solver time printed by `planner solve` ({status}) | {len(s)} | {med(s):.3f} | "
                     f"{min(s):.3f} | {max(s):.3f} |")
    rest = med(full.times) - med(imp.times) - (med(full.solver_s) if full.solver_s else 0.0)
    lines += [
        "",
        f"Of the {med(full.times):.2f} s median of the full command: interpreter start-up "
        f"{med(bare.times):.2f} s, imports of planner.cli {med(imp.times) - med(bare.times):.2f} s "
        f"(`import planner.cli` median {med(imp.times):.2f} s, {med(imp.times) / med(full.times):.0%} of the "
        "command)"
        + (f", the searches {med(full.solver_s):.2f} s as printed (the plan's; auto also runs the other mode's)"
           f", and {rest:.2f} s for the rest (catalog loading, problem and model building, lazy imports, the "
           "other mode's search, output)." if full.solver_s else "."),
        "",
        f"Target of issue 14: `planner {' '.join(SOLVE_ARGS)}` (serving auto, both modes searched) within 1.5 s "
        f"with process start: median {med(full.times):.2f} s, "
        + ("met." if med(full.times) <= 1.5 else "**not met**."),
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--runs", type=int, default=7, help="timed runs per command (median, min, max reported)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed runs per command first")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "startup.md",
                    help="markdown file [default: benchmarks/results/startup.md]")
    args = ap.parse_args(argv)
    if args.runs < 1 or args.warmup < 0:
        ap.error("--runs must be at least 1 and --warmup at least 0")
    try:
        cli, python = find_planner()
    except BenchmarkError as e:
        print(f"startup.py: error: {e}", file=sys.stderr)
        return 2
    started = dt.datetime.now(dt.timezone.utc)
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    rev = f" {revision()}." if revision() else ""  # at the start: the code the runs use
    ms = [
        Measurement("planner " + " ".join(SOLVE_ARGS), [*cli, *SOLVE_ARGS]),
        Measurement('python -c "import planner.cli"', [python, "-c", "import planner.cli"]),
        Measurement('python -c "pass"', [python, "-c", "pass"]),
        *(Measurement("planner " + " ".join(SOLVE_ARGS) + f" --serving {mode}", [*cli, *SOLVE_ARGS, "--serving", mode])
          for mode in ("agg", "disagg")),
    ]
    with tempfile.TemporaryDirectory() as cwd:
        where = planner_location(python, cwd)
        try:
            for m in ms:
                for _ in range(args.warmup):
                    run_once(m, cwd)
                m.times.clear()
                m.solver_s.clear()
                for i in range(args.runs):
                    run_once(m, cwd)
                    print(f"{m.label}: run {i + 1}/{args.runs} {m.times[-1]:.3f} s", file=sys.stderr, flush=True)
        except BenchmarkError as e:
            print(f"startup.py: error: {e}", file=sys.stderr)
            return 1
    text = report(ms, shlex.join(cli), python, where, args.warmup, started, load, rev)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(text)
    print(f"written to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
