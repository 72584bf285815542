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
    path = Path(path)
    if path.suffix.lower() not in FORMATS:
        raise SpecError(f"{path}: cannot tell the picture format; use a name ending in {', '.join(FORMATS)}")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    fig.tight_layout()
    try:
        fig.savefig(path)
    except OSError as e:
        raise SpecError(f"{path}: cannot write ({e.strerror or e})") from None
    finally:
        plt.close(fig)
    return path
