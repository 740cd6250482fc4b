"""The results of a sweep: one row per run (status, swept values, summary metrics), CSV and plot.

The printed table shows name, status, swept values, the ``final.*`` metrics of the runner's summary
and, for a failed run, its ``reason`` (the last line of its log); ``results.csv`` has every scalar
summary entry (nested keys dotted: ``final.loss``). Everything is computed from the manifest (and
each run's ``summary.json`` when it is newer), so ``python -m experiments.sweep --sweep_dir=DIR
--report`` rebuilds it without the config.

The plot shows a chosen summary metric against one swept field, one line per combination of the
other swept fields. If the summary also has ``<metric>_threshold`` (the repository's convention
for a metric and the value it is compared to, e.g. the final sharpness and ``2 / lr``), it is
drawn dashed in the same colour.

Example:
  >>> header, rows = table(manifest)  # doctest: +SKIP
  >>> print(format_table(header, rows))  # doctest: +SKIP
"""

from __future__ import annotations

import csv
import math
import numbers
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from dynamics.sweep.manifest import Manifest, Run


def flat_metrics(summary: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """Scalar entries of a summary (nested dicts as dotted keys), without ``status``."""
    out = {}
    for k, v in summary.items():
        key = prefix + k
        if isinstance(v, Mapping):
            out.update(flat_metrics(v, key + "."))
        elif key != "status" and (isinstance(v, numbers.Number | str) or v is None):
            out[key] = v
    return out


def swept_keys(runs: Sequence[Run]) -> list[str]:
    """The override fields of any run, in first-seen order."""
    return list(dict.fromkeys(k for r in runs for k in r.overrides))


def table(manifest: Manifest) -> tuple[list[str], list[list[Any]]]:
    """``(header, rows)``: name, status, every swept field, every summary metric, then the
    ``reason`` of failed runs (when there are any)."""
    keys = swept_keys(manifest.runs)
    metrics = [flat_metrics(r.summary) for r in manifest.runs]
    metric_keys = list(dict.fromkeys(k for m in metrics for k in m))
    reasons = ["reason"] if any(r.reason for r in manifest.runs) else []
    header = ["name", "status", *keys, *metric_keys, *reasons]
    rows = [
        [r.name, r.status, *(r.overrides.get(k) for k in keys), *(m.get(k) for k in metric_keys)]
        + ([r.reason] if reasons else [])
        for r, m in zip(manifest.runs, metrics, strict=True)
    ]
    return header, rows


def _cell(v: Any) -> str:
    if v is None:
        return "-"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """An aligned plain-text table."""
    cells = [list(header)] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(line.rstrip() for line in lines)


def write_csv(
    path: str | os.PathLike, header: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows([["" if v is None else v for v in row] for row in rows])


def _is_number(v: Any) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def default_x(runs: Sequence[Run]) -> str | None:
    """The first swept field with at least two distinct numeric values."""
    for key in swept_keys(runs):
        values = {r.overrides.get(key) for r in runs}
        if len(values) > 1 and all(_is_number(v) for v in values):
            return key
    return None


def default_metric(runs: Sequence[Run]) -> str | None:
    """``final.loss`` if the runs have it, else the first numeric ``final.*`` or other metric."""
    numeric = [k for r in runs for k, v in flat_metrics(r.summary).items() if _is_number(v)]
    for preferred in ("final.loss", *(k for k in numeric if k.startswith("final.")), *numeric):
        if preferred in numeric:
            return preferred
    return None


def brief(header: Sequence[str], rows: Sequence[Sequence[Any]], keep: int):
    """The first ``keep`` columns, the ``final.*`` metrics and ``reason`` (all columns if there
    are neither metrics nor reasons).

    The printed table shows what tells runs apart; ``results.csv`` keeps every summary entry
    (timings, versions, devices).
    """
    shown = [i for i, h in enumerate(header) if h.startswith("final.") or h == "reason"]
    cols = list(range(keep)) + [i for i in shown if i >= keep]
    if len(cols) == keep:
        return header, rows
    return [header[i] for i in cols], [[row[i] for i in cols] for row in rows]


def plot(manifest: Manifest, metric: str, path: str | os.PathLike, x: str | None = None) -> Path:
    """Plots ``metric`` from every run's summary against swept field ``x``; returns the file."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    x = x or default_x(manifest.runs)
    if x is None:
        raise ValueError("no swept field with numeric values to plot against; pass one")
    others = [k for k in swept_keys(manifest.runs) if k != x]
    groups: dict[tuple, list[tuple[float, float, float | None]]] = {}
    for run in manifest.runs:
        m = flat_metrics(run.summary)
        if not (_is_number(run.overrides.get(x)) and _is_number(m.get(metric))):
            continue
        label = tuple((k, run.overrides.get(k)) for k in others)
        threshold = m.get(f"{metric}_threshold")
        groups.setdefault(label, []).append((run.overrides[x], m[metric], threshold))

    fig, ax = plt.subplots(figsize=(6, 4))
    for label, points in groups.items():
        points.sort(key=lambda p: p[0])
        xs, ys, ts = zip(*points, strict=True)
        name = ", ".join(f"{k.split('.')[-1]}={v}" for k, v in label if v is not None) or metric
        (line,) = ax.plot(xs, ys, "o-", label=name)
        if all(_is_number(t) for t in ts):
            ax.plot(xs, ts, "--", color=line.get_color(), label=f"{name} ({metric}_threshold)")
    values = [p[0] for pts in groups.values() for p in pts]
    if values and min(values) > 0 and max(values) / min(values) > 20:
        ax.set_xscale("log")
    finite = [p[1] for pts in groups.values() for p in pts if math.isfinite(p[1])]
    if finite and min(finite) > 0 and max(finite) / min(finite) > 100:
        ax.set_yscale("log")
    ax.set_xlabel(x)
    ax.set_ylabel(metric)
    if groups:
        ax.legend(fontsize="small")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
