"""Running the `planner` command line in tests: one way to invoke it and one check of a one-line error."""

from __future__ import annotations

import json

from click.testing import CliRunner

from planner.cli import main


def run(*args: str):
    """Invoke the CLI as `planner ...`; stdout and stderr come back separately (click >= 8.2)."""
    return CliRunner().invoke(main, [str(a) for a in args], prog_name="planner")


def run_json(*args: str):
    result = run(*args, "--json")
    assert result.exit_code == 0, result.stderr
    return json.loads(result.stdout)


def error_line(*args: str) -> str:
    """Run a command that must fail: exit 2, no traceback, nothing on stdout, exactly one line on stderr."""
    result = run(*args)
    # An uncaught exception shows up as result.exception (a traceback for a real user), not as SystemExit.
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}"
    assert result.exit_code == 2, (result.exit_code, result.stdout, result.stderr)
    assert "Traceback" not in result.output and "Traceback" not in result.stderr
    assert result.stdout == ""
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("planner"), lines[0]
    assert "error:" in lines[0]
    return lines[0]
