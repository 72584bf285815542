"""Accuracy of the disaggregated cost model on measured disaggregated deployments.

Every run of data/disagg.csv (aiconfigurator's silicon data: DeepSeek-R1 and a few others on TensorRT-LLM,
SGLang and vLLM) and every disaggregated run of data/inferencemax.csv without speculative decoding is
predicted by `planner estimate --csv` (planner.runs.predict_rows: parse_disagg_run, predict_disagg_all). Four
sets of predictions: the shipped calibration (its hand-off, the one disaggregated factor, fitted on these very
rows: in-sample); its aggregated factors with the hand-off at its prior (no disaggregated row read: held out as
a mode); and leave-one-model-out / leave-one-GPU-out, the hand-off refitted (calibrate.fit_disagg) without the
held-out model's or GPU type's rows. The aggregated factors come from aggregated runs of the same models and
GPUs in every set (their LOMO/LOSO is benchmarks/accuracy.py). Reported: median and 90th percentile of
|predicted / measured - 1| of TTFT and TPOT, overall, by source, GPU, engine and model, the median
predicted/measured ratio (the bias), the fitted hand-offs, and the share of rows predicted, with the reasons
of the others.

    python benchmarks/disagg_accuracy.py        # -> benchmarks/results/disagg_accuracy.md
"""

from __future__ import annotations

import argparse
import collections
import csv
import datetime as dt
import re
import shlex
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from _common import machine, publish, revision  # noqa: E402

from planner.calibrate import (  # noqa: E402
    DISAGG_FACTORS,
    DisaggSet,
    fit_disagg,
    load_calibration,
    predict_disagg_set,
)
from planner.runs import predict_rows, row_mode  # noqa: E402
from planner.specs import Factors  # noqa: E402

DATA = (ROOT / "data" / "disagg.csv", ROOT / "data" / "inferencemax.csv")
TARGETS = {"ttft": 0.30, "tpot": 0.20}
"""Issue 14's targets on held-out disaggregated runs: median |error| of TTFT <= 30%, TPOT <= 20%; and >= 90%
of the rows predicted."""


def load(paths: tuple[Path, ...], speculative: bool = False) -> list[dict[str, str]]:
    """The disaggregated rows of each file (without speculative decoding unless `speculative`), tagged with
    their source file and whether both worker counts are recorded."""
    rows = []
    for path in paths:
        with open(path, newline="", encoding="utf-8") as f:
            for r in csv.DictReader(f):
                plain = (r.get("spec_decoding") or "none").strip().lower() in ("", "none")
                if row_mode(r) == "disagg" and (plain or speculative):
                    recorded = bool(r.get("prefill_num_workers") and r.get("decode_num_workers"))
                    rows.append({**r, "_source": path.name, "_workers": "yes" if recorded else "no"})
    return rows


def concurrency(row: dict[str, str]) -> int:
    m = re.search(r"silicon_concurrency=(\d+)", row.get("silicon_data_source") or "")
    return int(m.group(1)) if m else int(row.get("batch_size") or 0)


def same_runs(rows: list[dict[str, str]]) -> list[str]:
    """disagg.csv rows whose measured TTFT and TPOT are those of an InferenceMAX row (within 1%, same GPU,
    isl, osl, concurrency and precision): one run recorded twice; how each file records its layout."""
    key = lambda r: (r["system"], r["isl"], r["osl"], concurrency(r), r["precision"])  # noqa: E731
    imax = collections.defaultdict(list)
    for r in rows:
        if r["_source"] == "inferencemax.csv":
            imax[key(r)].append(r)

    def close(a: dict[str, str], b: dict[str, str]) -> bool:
        return all(abs(float(a[c]) / float(b[c]) - 1) < 0.01 for c in ("silicon_ttft_ms", "silicon_tpot_ms"))

    def layout(r: dict[str, str], pool: str) -> str:
        g = lambda c: r.get(f"{pool}_{c}") or "-"  # noqa: E731
        return f"{g('num_workers')} x TP{g('tp_size')} ADP{g('attention_dp_size')}"

    pairs = [(a, b) for a in rows if a["_source"] == "disagg.csv" for b in imax.get(key(a), []) if close(a, b)]
    mtp = len({a["id"] for a, b in pairs if (b.get("spec_decoding") or "none") == "mtp"})
    seen, lines = set(), []
    for a, b in pairs:
        if a["id"] in seen:
            continue
        seen.add(a["id"])
        if len(lines) < 8:
            lines.append(f"| {a['system']} | {a['isl']}/{a['osl']} | {concurrency(a)} | {layout(a, 'prefill')} | "
                         f"{layout(a, 'decode')} | {layout(b, 'prefill')} | {layout(b, 'decode')} |")
    return [
        "## One run, two records", "",
        f"{len(seen)} disagg.csv rows carry the measured TTFT and TPOT (within 1%) of an InferenceMAX row of the "
        "same GPU, lengths, concurrency and precision: the same runs. Their records differ: disagg.csv leaves "
        "the worker counts empty and attention DP unset, and writes as tp a worker's GPUs or the deployment's "
        "(a row with TP48 in both pools ran 8 prefill workers of ADP4 and one decode worker of ADP16, 48 GPUs "
        "in all; a TP2 decode worker was one of ADP2), where InferenceMAX records workers and attention DP. "
        "The planner reads a missing worker count as 1 and a tp as "
        "tensor parallelism, so on such rows it predicts another deployment than the one that ran; and "
        f"{mtp} of them match an InferenceMAX run with MTP speculative decoding that disagg.csv does not mark "
        "(a faster TPOT than the model without a draft predicts). First pairs (workers x layout per pool; "
        "`-` empty):", "",
        "| GPU | isl/osl | concurrency | disagg.csv prefill | disagg.csv decode | InferenceMAX prefill | "
        "InferenceMAX decode |",
        "|---|---|---:|---|---|---|---|", *lines, "",
    ]


def errors(rows: list[dict[str, str]], metric: str) -> np.ndarray:
    col = {"ttft": ("pred_ttft_ms", "silicon_ttft_ms"), "tpot": ("pred_tpot_ms", "silicon_tpot_ms")}[metric]
    return np.array([float(r[col[0]]) / float(r[col[1]]) for r in rows])


def cell(ratios: np.ndarray) -> str:
    e = np.abs(ratios - 1)
    return f"{np.median(e):.0%} / {np.percentile(e, 90):.0%}" if len(e) else "-"


def verdict(name: str, ratios: np.ndarray, target: float) -> str:
    med = float(np.median(np.abs(ratios - 1)))
    return f"{name} {med:.0%} ({'met' if med <= target else 'not met'})"


def unfitted(cal):
    """The calibration with every disaggregated factor back at its prior (the Factors default)."""
    profiles = [p.model_copy(update={"factors": {k: v for k, v in p.factors.items() if k not in DISAGG_FACTORS}})
                for p in cal.profiles]
    base = cal.base.model_copy(update={n: Factors.model_fields[n].default for n in DISAGG_FACTORS})
    return cal.model_copy(update={"profiles": profiles, "base": base})


def heldout_section(rows: list[dict[str, str]]) -> list[str]:
    """In-sample, prior and LOMO/LOSO errors of the disaggregated runs, and the fitted hand-offs."""
    shipped = load_calibration(None)
    prior = unfitted(shipped)
    ds = DisaggSet.of(rows, shipped)
    sets = {"shipped (hand-off fitted on these runs)": predict_disagg_set(ds, shipped),
            "hand-off at its prior (held out as a mode)": predict_disagg_set(ds, prior)}
    for scheme, col in (("LOMO", "model"), ("LOSO", "system")):
        groups = ds.column(col)
        ttft, tpot = np.empty(len(ds.runs)), np.empty(len(ds.runs))
        for g in sorted(set(groups)):
            train = ds.subset(groups != g)
            fitted = fit_disagg(train, prior) if len(train.runs) else prior
            pred = predict_disagg_set(ds.subset(groups == g), fitted)
            ttft[groups == g], tpot[groups == g] = pred["ttft_ms"], pred["tpot_ms"]
        sets[f"{scheme} (hand-off refitted without the held-out {col})"] = {"ttft_ms": ttft, "tpot_ms": tpot}
    out = ["## Fitted and held out", "",
           f"{len(ds.runs)} disaggregated runs with measurements. Cells: median / 90th percentile of "
           "|predicted / measured - 1|.", "",
           "| predictions | TTFT | TPOT | median pred/meas TTFT |", "|---|---:|---:|---:|"]
    for name, pred in sets.items():
        tt, tp = pred["ttft_ms"] / ds.ttft_ms, pred["tpot_ms"] / ds.tpot_ms
        out.append(f"| {name} | {cell(tt)} | {cell(tp)} | {np.median(tt):.2f} |")
    bound = Factors.model_fields["disagg_handoff_ms"].metadata
    top = next(float(m.le) for m in bound if hasattr(m, "le"))
    fitted = [(p.label, p.factors["disagg_handoff_ms"], p.rows) for p in shipped.profiles
              if "disagg_handoff_ms" in p.factors]
    out += ["", "Fitted hand-off of the shipped calibration (prior 30 ms, bounds 0-"
            f"{top:g} ms): " + ", ".join(f"{label} {v:g} ms{' (at its bound)' if v >= top else ''}"
                                         for label, v, _ in fitted) + ".", ""]
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "disagg_accuracy.md")
    args = ap.parse_args(argv)
    started = dt.datetime.now(dt.timezone.utc)
    t0 = time.perf_counter()
    rows = load(DATA)
    out = predict_rows(rows, load_calibration(None))
    done = [r for r in out if r["pred_tpot_ms"] and r.get("silicon_tpot_ms") and r.get("silicon_ttft_ms")]
    refused = collections.Counter(r["error"].split(":")[0] for r in out if r["error"])
    held = heldout_section(rows)
    wall = time.perf_counter() - t0
    tt, tp = errors(done, "ttft"), errors(done, "tpot")
    lines = [
        "# Accuracy on disaggregated deployments", "",
        f"Reproduce: `{shlex.join(['python', 'benchmarks/disagg_accuracy.py', *sys.argv[1:]])}`", "",
        f"Machine: {machine()}. Date: {started:%Y-%m-%d %H:%M} UTC. {revision()}. Wall time {wall:.0f} s.", "",
        f"Data: {', '.join(f'`data/{p.name}`' for p in DATA)} (mode disagg, no speculative decoding): "
        f"{len(rows)} rows, "
        f"{len(done)} predicted ({len(done) / len(rows):.0%}). Calibration: the shipped `planner/calibration.yaml` "
        "(aggregated factors fitted to aggregated runs; the hand-off to these runs, so the first table is "
        "in-sample; held out below). Cells: median / 90th percentile of |predicted / measured - 1|.", "",
        "| shipped calibration | rows | TTFT | TPOT | median pred/meas TTFT | median pred/meas TPOT |",
        "|---|---:|---:|---:|---:|---:|",
        f"| all | {len(done)} | {cell(tt)} | {cell(tp)} | {np.median(tt):.2f} | {np.median(tp):.2f} |", "",
        "Targets of issue 14 (held out: median TTFT <= 30%, TPOT <= 20%, >= 90% of rows predicted), here on the "
        "shipped calibration (the held-out figures below are no better): "
        + ", ".join([verdict("TTFT", tt, TARGETS["ttft"]), verdict("TPOT", tp, TARGETS["tpot"]),
                     f"rows {len(done) / len(rows):.0%} ({'met' if len(done) >= 0.9 * len(rows) else 'not met'})"])
        + ".", "",
        "| by | group | rows | TTFT | TPOT | median pred/meas TTFT | median pred/meas TPOT |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for by, key in (("source", "_source"), ("workers recorded", "_workers"), ("system", "system"),
                    ("backend", "backend"), ("model", "model_path")):
        groups = collections.defaultdict(list)
        for k, r in enumerate(done):
            groups[r[key]].append(k)
        for g, idx in sorted(groups.items()):
            a, b = tt[idx], tp[idx]
            lines.append(f"| {by} | {g} | {len(idx)} | {cell(a)} | {cell(b)} | {np.median(a):.2f} | "
                         f"{np.median(b):.2f} |")
    lines += ["", "Rows not predicted, by reason:", ""]
    lines += [f"- {n} x {reason}" for reason, n in refused.most_common()]
    lines += ["", *held, "", *same_runs(load(DATA, speculative=True))]
    publish(args.out, "\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
