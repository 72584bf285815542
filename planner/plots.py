"""Pictures of studies (matplotlib): frontiers of tokens/s/GPU against tokens/s/user.

The chart of NVIDIA's study: interactivity (x) against throughput per GPU (y). Each frontier is the
step line of its optimal plans, a marker where the optimal layout changes (labelled with the
layout), optionally every layout's own Pareto curve in thin lines, and a line at a chosen SLA. A
frontier of serving auto draws both modes' curves (agg solid, disagg dashed) in its colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from planner.errors import SpecError
from planner.studies import Frontier, ModeCurve

FORMATS = (".png", ".svg", ".pdf")
"""File types a plot can be written as (by suffix)."""


LINESTYLES = {"agg": "-", "disagg": "--"}
"""How each serving mode's curve is drawn."""


def _distinct(f: Frontier) -> list[tuple[float, float, str, bool]]:
    """(tokens/s/user, tokens/s/GPU, layout, new layout) of each distinct plan, by interactivity."""
    seen, out = set(), []
    for pt in f.points:
        key = (pt.label, pt.batch.micro_batch, pt.batch.chunk_tokens)
        if key not in seen:
            seen.add(key)
            out.append((pt.metrics.tokens_per_s_per_user, pt.metrics.tokens_per_s_per_gpu, pt.label, pt.new_layout))
    return sorted(out)


def _distinct_mode(c: ModeCurve) -> list[tuple[float, float, str, bool]]:
    """The same for one serving mode's own curve: plans told apart by layout and figures."""
    seen, out = set(), []
    for pt in c.points:
        key = (pt.label, pt.tokens_per_s_per_user, pt.tokens_per_s_per_gpu)
        if key not in seen:
            seen.add(key)
            out.append((pt.tokens_per_s_per_user, pt.tokens_per_s_per_gpu, pt.label, pt.new_layout))
    return sorted(out)


def _curves(f: Frontier) -> list[tuple[str, str, float, list[tuple[float, float, str, bool]]]]:
    """(serving mode, legend suffix, first level, distinct plans) of each curve a frontier draws: its points,
    or under auto each mode's own curve [tokens/s/user]."""
    if f.serving != "auto":
        return [(f.serving, "", f.points[0].target_tokens_per_s_per_user if f.points else 0.0, _distinct(f))]
    return [(c.serving, f" ({c.serving})", c.points[0].target_tokens_per_s_per_user, _distinct_mode(c))
            for c in f.modes if c.points]


def _step(first: float, xs: list[float], ys: list[float]) -> tuple[list[float], list[float]]:
    """The step line of a frontier: a plan serves every SLA up to its own interactivity, so just past it the
    next plan's (lower) throughput holds."""
    sx, sy = [min(first, xs[0]), xs[0]], [ys[0], ys[0]]
    for x, y in zip(xs[1:], ys[1:]):
        sx += [sx[-1], x]
        sy += [y, y]
    return sx, sy


def plot_frontiers(
    frontiers: Sequence[Frontier], path: str | Path, *, at: float | None = None, title: str | None = None,
    label_layouts: bool = True,
) -> Path:
    """Draw one or more frontiers on one chart and write it to `path` (.png, .svg or .pdf)."""
    path, plt = _figure(path)
    fig, ax = plt.subplots(figsize=(10, 6.2), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ys = []
    for i, f in enumerate(frontiers):
        colour = colours[i % len(colours)]
        for curve in f.layouts:
            # a step function like the frontier: each point serves the SLA levels up to its own interactivity
            ax.plot([p.tokens_per_s_per_user for p in curve.points], [p.tokens_per_s_per_gpu for p in curve.points],
                    color=colour, alpha=0.18, linewidth=0.8, zorder=1, drawstyle="steps-pre")
        for j, (mode, suffix, first, pts) in enumerate(_curves(f)):
            if not pts:
                continue
            if len(frontiers) == 1:  # one case: a colour per curve; several: a colour per case
                colour = colours[j % len(colours)]
            xs, yv = [p[0] for p in pts], [p[1] for p in pts]
            ys += yv
            sx, sy = _step(first, xs, yv)
            ax.plot(sx, sy, color=colour, linewidth=2, zorder=3, linestyle=LINESTYLES[mode],
                    label=f"{f.case}{suffix}" + (f", TTFT <= {f.max_ttft_s:g} s" if f.max_ttft_s else ""))
            ax.scatter(xs, yv, color=colour, s=18, zorder=4)
            changes = [p for p in pts if p[3]]
            ax.scatter([p[0] for p in changes], [p[1] for p in changes], color=colour, s=70, marker="D",
                       edgecolor="black", zorder=5)
            if label_layouts:
                for x, y, label, _ in changes:
                    ax.annotate(label, (x, y), textcoords="offset points", xytext=(6, 6), fontsize=7, color=colour,
                                rotation=20, zorder=6)
    if at is not None:
        ax.axvline(at, color="grey", linestyle="--", linewidth=1)
        ax.annotate(f"{at:g} tok/s/user", (at, 0.04), xycoords=("data", "axes fraction"), xytext=(4, 0),
                    textcoords="offset points", fontsize=8, color="grey")
    if ys and max(ys) / max(min(ys), 1e-9) > 30:
        ax.set_yscale("log")
    ax.set_xlabel("interactivity: tokens/s/user")
    ax.set_ylabel("throughput: tokens/s/GPU")
    first = frontiers[0] if frontiers else None
    if title is None and first is not None:
        title = f"Throughput vs interactivity, isl {first.isl} / osl {first.osl} tokens"
    ax.set_title(title or "", pad=14)
    ax.margins(x=0.06, y=0.12)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper right", fontsize=8)
    notes = ["diamonds: the optimal layout changes"]
    if any(f.layouts for f in frontiers):
        notes.append("thin lines: each layout's own curve")
    if any(f.serving == "auto" for f in frontiers):
        notes.append("solid: aggregated, dashed: disaggregated")
    ax.text(0.01, 0.01, "; ".join(notes), transform=ax.transAxes, fontsize=7, color="grey")
    return _write(fig, plt, path)


def _figure(path: str | Path):
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise SpecError(f"{path}: cannot tell the picture format; use a name ending in {', '.join(FORMATS)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return path, plt


def _write(fig, plt, path: Path) -> Path:
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as e:
        raise SpecError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        plt.close(fig)
    return path


def plot_fleet_costs(points: Sequence, path: str | Path, *, title: str | None = None) -> Path:
    """A fleet's cost against its demand (planner.fleetplan.cost_curve): the optimum's $/hour and the greedy
    baseline's at each demand level [output tokens/s], the demand of the fleet file marked."""
    path, plt = _figure(path)
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    opt = [(p.demand_tokens_per_s, p.cost_per_hour) for p in points if p.cost_per_hour is not None]
    gre = [(p.demand_tokens_per_s, p.greedy_cost_per_hour) for p in points if p.greedy_cost_per_hour is not None]
    if opt:
        proven = all(p.status == "OPTIMAL" for p in points if p.cost_per_hour is not None)
        ax.plot(*zip(*opt), marker="o", linewidth=2, label="optimum (proven)" if proven else "best found")
        loose = [(p.demand_tokens_per_s, p.cost_per_hour) for p in points if p.status == "FEASIBLE"]
        if loose:
            ax.scatter(*zip(*loose), s=90, facecolors="white", edgecolors="black", zorder=5,
                       label="not proven optimal in the time limit")
    if gre:
        ax.plot(*zip(*gre), marker="s", linewidth=1.2, linestyle="--", label="greedy: cheapest $/token first")
    for p in points:
        if p.scale == 1.0:
            ax.axvline(p.demand_tokens_per_s, color="grey", linestyle=":", linewidth=1)
            ax.annotate("the file's demand", (p.demand_tokens_per_s, 0.96), xycoords=("data", "axes fraction"),
                        xytext=(4, 0), textcoords="offset points", fontsize=8, color="grey")
    short = [p.demand_tokens_per_s for p in points if p.cost_per_hour is None]
    if short:
        ax.axvspan(min(short), max(p.demand_tokens_per_s for p in points), color="red", alpha=0.06)
        ax.annotate("beyond the inventory", (min(short), 0.04), xycoords=("data", "axes fraction"), xytext=(4, 0),
                    textcoords="offset points", fontsize=8, color="red")
    ax.set_xlabel("demand: output tokens/s (every workload's demand scaled alike)")
    ax.set_ylabel("cost: $/hour")
    ax.set_title(title or "Fleet cost against demand", pad=12)
    ax.set_ylim(bottom=0)
    ax.set_xlim(left=0)
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    return _write(fig, plt, path)


def plot_fleet_day(result, path: str | Path, *, title: str | None = None) -> Path:
    """A day plan (planner.fleetplan.FleetResult with hours): each hour's cost, the optimum's and the greedy
    baseline's [$/hour], against its demand [output tokens/s]."""
    path, plt = _figure(path)
    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=120)
    hours = [h.hour for h in result.hours]
    ax.step(hours, [h.cost_per_hour for h in result.hours], where="mid", linewidth=2, label="optimum $/hour")
    g = [(h.hour, h.greedy_cost_per_hour) for h in result.hours if h.greedy_cost_per_hour is not None]
    if g:
        ax.step(*zip(*g), where="mid", linewidth=1.2, linestyle="--", label="greedy $/hour")
    ax.set_xlabel("hour of the day")
    ax.set_ylabel("cost: $/hour")
    ax.set_ylim(bottom=0)
    right = ax.twinx()
    right.plot(hours, [h.demand_tokens_per_s for h in result.hours], color="grey", marker=".", linewidth=1,
               label="demand (right axis)")
    right.set_ylabel("demand: output tokens/s")
    right.set_ylim(bottom=0)
    lines = ax.get_legend_handles_labels()
    more = right.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], loc="upper left", fontsize=8)
    ax.set_title(title or "A day's autoscaling plan: cost per hour and demand", pad=12)
    ax.grid(True, alpha=0.3)
    ax.set_xticks(range(0, 24, 2))
    return _write(fig, plt, path)
