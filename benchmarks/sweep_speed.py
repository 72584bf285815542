"""Wall time of `planner sweep` on a grid, one process against local processes against a local Ray, and whether
the three give the same rows.

    python benchmarks/sweep_speed.py [--grid sweeps/what-if.yaml] [--runs 3] [--out FILE.md]

Each run solves every scenario (no cache). The Ray figure includes starting the local Ray (`ray.init`), as
`planner sweep --ray` pays it; its start is also timed alone. Rows are compared without the wall-time columns.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import ROOT, machine, publish, revision  # noqa: E402


def _rows(result) -> list[dict]:
    """The rows without their wall-time columns (planner.sweeps.WALL_COLUMNS, the only ones runs may differ in)."""
    from planner.sweeps import WALL_COLUMNS

    return [{k: v for k, v in row.items() if k not in WALL_COLUMNS} for row in result.rows]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grid", default=str(ROOT / "sweeps" / "what-if.yaml"))
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "sweep_speed.md"))
    args = ap.parse_args(argv)
    sys.path.insert(0, str(ROOT))
    import os

    import planner
    from planner.sweeps import load_grid

    load = os.getloadavg()
    grid = load_grid(args.grid)
    runners = {"one process (--jobs 1)": {"jobs": 1}, "2 local processes (--jobs 2)": {"jobs": 2},
               "local Ray, 2 CPUs (--ray --jobs 2)": {"ray": "local", "jobs": 2}}
    times: dict[str, list[float]] = {name: [] for name in runners}
    rows: dict[str, list[dict]] = {}
    ray_start = None
    for name, kw in runners.items():
        for _ in range(args.runs):
            t0 = time.perf_counter()
            result = planner.sweep(args.grid, **kw)
            times[name].append(time.perf_counter() - t0)
            rows.setdefault(name, _rows(result))
            if "ray" in kw:
                import ray

                ray.shutdown()
    try:
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - t0
        ray.shutdown()
    except ImportError:
        pass
    first = next(iter(rows.values()))
    same = all(r == first for r in rows.values())
    plans = sum(1 for r in first if r.get("status") == "plan")
    base = statistics.median(times["one process (--jobs 1)"])
    lines = [
        "# Sweep speed", "",
        f"Reproduce: `python benchmarks/sweep_speed.py --grid {Path(args.grid).relative_to(ROOT)} --runs {args.runs}`",
        "",
        f"Machine: {machine()}. {revision()}. Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC. "
        f"Load average at start {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}.", "",
        f"Grid: `{Path(args.grid).relative_to(ROOT)}`, {grid.size()} scenarios ({plans} with a plan); "
        "no cache, every scenario solved in every run.", "",
        "| runner | runs | median s | min s | max s | vs one process |", "|---|---:|---:|---:|---:|---:|",
    ]
    for name, ts in times.items():
        med = statistics.median(ts)
        lines.append(f"| {name} | {len(ts)} | {med:.2f} | {min(ts):.2f} | {max(ts):.2f} | {base / med:.2f}x |")
    lines += ["", f"Rows identical (wall-time columns aside) across the three runners: **{same}**."]
    if ray_start is not None:
        lines.append(f"Starting a local Ray alone (`ray.init`, 2 CPUs) took {ray_start:.2f} s of the Ray runs' time.")
    lines += ["", "On 2 cores the processes and Ray cannot beat one process by much: they pay for starting workers "
              "(and Ray for its own processes) and share the same two cores. They are for machines with more "
              "cores and for Ray clusters."]
    publish(Path(args.out), "\n".join(lines) + "\n")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
