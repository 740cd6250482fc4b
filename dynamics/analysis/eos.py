"""Edge of stability: does a curvature measurement rise to its stability threshold and stay there?

Cohen et al. (2021, "Gradient Descent on Neural Networks Typically Occurs at the Edge of
Stability"): under full-batch GD the sharpness ``lambda_max(H)`` rises (progressive sharpening)
until it reaches ``2/lr``, then hovers at or just above it while the loss keeps falling over long
windows but not monotonically. The same picture holds for other rules in their own geometry:
heavy ball at ``(2 + 2b)/lr``, Adam's preconditioned sharpness at ``(2 + 2b1)/((1 - b1) lr)``
(Cohen et al. 2022), or any rule's step-map spectral radius at 1.

The summary, for a metric ``m_t`` logged with its threshold ``tau_t``:

* ``first_crossing_step``: the first step with ``m_t >= 0.95 tau_t`` after a step below it
  (None if never);
* ``fraction_within``: the fraction of *later* measurements with ``|m_t / tau_t - 1| <= 0.1``;
* ``largest_overshoot``: ``max_t m_t / tau_t - 1`` after the crossing;
* ``loss_falls_over_windows``: after the crossing, the mean loss of each of ``num_windows``
  consecutive windows is below the previous window's; ``loss_increase_fraction``: the fraction
  of logged steps where the loss went *up* (local oscillation); ``loss_non_monotone_descent`` is
  both together (falls over long windows, increases on more than 5% of the logged steps).

Example::

  summary = eos_summary(steps, sharpness, thresholds, loss_steps, losses)
  summary["fraction_within"]  # 1.0 when every measurement after the crossing is within 10%

The registered analysis ``"edge_of_stability"`` reads ``config.analysis.metric`` (default
``"sharpness"``) and its ``<metric>_threshold`` from the run's records, writes the summary and
the figure ``plots/edge_of_stability.png`` (metric with its threshold, and the loss).
``config.analysis.cross_fraction`` and ``band`` change 0.95 and 0.1;
``config.analysis.threshold`` overrides the logged threshold: a number, or ``"optimizer"`` for
the linear-stability threshold of the configured rule (:func:`optimizer_threshold`).
"""

from __future__ import annotations

import json
import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from dynamics.analysis import ANALYSES
from dynamics.optim import registry


def first_crossing(
    values: np.ndarray, thresholds: np.ndarray, fraction: float = 0.95
) -> int | None:
    """Index of the first rise to ``values[i] >= fraction * thresholds[i]``, or None.

    A series that starts above the line must first come below it: Adam's preconditioned
    sharpness at step 0 is measured with ``nu = 0`` (``P = eps``) and is huge, which is not the
    rise the edge of stability is about.
    """
    above = np.asarray(values) >= fraction * np.asarray(thresholds)
    below = np.flatnonzero(~above)
    if not below.size:
        return None
    hits = np.flatnonzero(above[below[0] :])
    return int(below[0] + hits[0]) if hits.size else None


def loss_windows(losses: np.ndarray, num_windows: int = 4) -> dict[str, Any]:
    """Long-window descent and local oscillation of a loss curve (see the module docstring)."""
    losses = np.asarray(losses, np.float64)
    if losses.size < 2 * num_windows:
        return {
            "loss_falls_over_windows": None,
            "loss_increase_fraction": None,
            "loss_non_monotone_descent": None,
        }
    means = [float(np.mean(chunk)) for chunk in np.array_split(losses, num_windows)]
    falls = all(b < a for a, b in zip(means[:-1], means[1:], strict=True))
    increase_fraction = float(np.mean(np.diff(losses) > 0))
    return {
        "loss_window_means": means,
        "loss_falls_over_windows": falls,
        "loss_increase_fraction": increase_fraction,
        "loss_non_monotone_descent": bool(falls and increase_fraction > 0.05),
    }


def eos_summary(
    steps: Sequence[int],
    values: Sequence[float],
    thresholds: Sequence[float],
    loss_steps: Sequence[int] = (),
    losses: Sequence[float] = (),
    *,
    cross_fraction: float = 0.95,
    band: float = 0.10,
    num_windows: int = 4,
) -> dict[str, Any]:
    """Edge-of-stability statistics of a curvature metric against its threshold.

    Args:
      steps, values, thresholds: the metric's measurements (same length).
      loss_steps, losses: the training loss, used after the first crossing.
      cross_fraction: the crossing is ``values >= cross_fraction * thresholds``.
      band: ``fraction_within`` counts ``|value / threshold - 1| <= band``.
      num_windows: windows of the post-crossing loss for ``loss_falls_over_windows``.
    """
    steps = np.asarray(steps)
    ratio = np.asarray(values, np.float64) / np.asarray(thresholds, np.float64)
    out: dict[str, Any] = {
        "initial_value": float(np.asarray(values)[0]) if len(values) else None,
        "max_ratio": float(np.max(ratio)) if ratio.size else None,
    }
    i = first_crossing(ratio, np.ones_like(ratio), cross_fraction)
    if i is None:
        return out | {
            "first_crossing_step": None,
            "fraction_within": None,
            "largest_overshoot": None,
            "num_later": 0,
        }
    later = ratio[i + 1 :]
    out |= {
        "first_crossing_step": int(steps[i]),
        "num_later": int(later.size),
        "fraction_within": float(np.mean(np.abs(later - 1.0) <= band)) if later.size else None,
        "largest_overshoot": float(np.max(ratio[i:]) - 1.0),
        "final_ratio": float(ratio[-1]),
    }
    loss_steps = np.asarray(loss_steps)
    if loss_steps.size:
        after = np.asarray(losses, np.float64)[loss_steps >= steps[i]]
        out |= loss_windows(after, num_windows)
        out["loss_initial"] = float(np.asarray(losses)[0])
        out["loss_final"] = float(np.asarray(losses)[-1])
    return out


def optimizer_threshold(optimizer: Any) -> float:
    """The sharpness threshold of a constant-lr rule from its config section.

    Read from the rule's row of :data:`dynamics.optim.registry.TABLE` with the section's keyword
    arguments (the constructor's defaults where the config sets none): GD ``2/lr``; heavy ball
    ``(2 + 2b)/lr``; Nesterov ``(2 + 2b)/(lr (1 + 2b))``; unnormalized SAM on GD
    ``(sqrt(1 + 8 rho/lr) - 1)/(2 rho)`` (see :mod:`dynamics.curvature.thresholds`).
    """
    threshold = registry.sharpness_threshold(optimizer, optimizer["learning_rate"])
    if threshold is None:
        raise ValueError(f"no closed-form sharpness threshold for optimizer {optimizer['name']!r}")
    return threshold


def series(records: Sequence[dict[str, Any]], key: str) -> tuple[np.ndarray, np.ndarray]:
    """``(steps, values)`` of the records that carry ``key``."""
    rows = [(r["step"], r[key]) for r in records if key in r and r[key] is not None]
    if not rows:
        return np.zeros((0,), np.int64), np.zeros((0,), np.float64)
    steps, values = zip(*rows, strict=True)
    return np.asarray(steps), np.asarray(values, np.float64)


def load_records(run_dir: str | pathlib.Path) -> list[dict[str, Any]]:
    """The records of ``<run_dir>/metrics.jsonl``."""
    with open(pathlib.Path(run_dir) / "metrics.jsonl") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_metric_and_loss(
    runs: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    metric: str,
    loss_key: str,
    path: str | pathlib.Path,
    title: str = "",
    extras: Sequence[str] = (),
) -> None:
    """Left: ``metric`` of each run with its threshold (dashed), ``extras`` dotted on a twin
    axis; right: the loss (log scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_m, ax_l) = plt.subplots(1, 2, figsize=(10, 3.6))
    ax_x = ax_m.twinx() if extras else None
    for i, (label, records) in enumerate(runs):
        color = f"C{i}"
        steps, values = series(records, metric)
        t_steps, thresholds = series(records, f"{metric}_threshold")
        ax_m.plot(steps, values, color=color, label=label)
        if t_steps.size:
            ax_m.plot(t_steps, thresholds, "--", color=color, lw=1)
        if extras:
            for extra in extras:
                e_steps, e_values = series(records, extra)
                ax_x.plot(e_steps, e_values, ":", color=color, label=f"{label} {extra}")
            ax_x.set_ylabel(f"dotted: {', '.join(extras)}")
        l_steps, losses = series(records, loss_key)
        ax_l.plot(l_steps, losses, color=color, lw=0.8, label=label)
    ax_m.set_xlabel("step")
    ax_m.set_ylabel(f"{metric} (dashed: threshold)")
    top = max(np.max(series(r, metric)[1], initial=0.0) for _, r in runs)
    line = max(np.max(series(r, f"{metric}_threshold")[1], initial=0.0) for _, r in runs)
    if line > 0 and top > 10 * line:  # a transient far above the line: zoom on the line
        ax_m.set_ylim(0, 2 * line)
    ax_l.set_xlabel("step")
    ax_l.set_ylabel(loss_key)
    ax_l.set_yscale("log")
    ax_m.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@ANALYSES.register("edge_of_stability")
def edge_of_stability(
    records: Sequence[dict[str, Any]], config: Any, plots_dir: pathlib.Path
) -> dict[str, Any]:
    """Summary and figure of one run; ``config.analysis`` may set ``metric`` and ``loss_key``."""
    settings = config.get("analysis", {})
    metric = settings.get("metric", "sharpness")
    loss_key = settings.get("loss_key", "loss")
    steps, values = series(records, metric)
    _, thresholds = series(records, f"{metric}_threshold")
    fixed = settings.get("threshold")
    if fixed is not None:
        fixed = optimizer_threshold(config.optimizer) if fixed == "optimizer" else float(fixed)
        thresholds = np.full(steps.shape, fixed)
        records = [r | {f"{metric}_threshold": fixed} if metric in r else r for r in records]
    loss_steps, losses = series(records, loss_key)
    if not steps.size or thresholds.size != steps.size:
        raise ValueError(f"edge_of_stability needs '{metric}' and '{metric}_threshold' records")
    bands = {k: settings[k] for k in ("cross_fraction", "band") if k in settings}
    summary = {"metric": metric, **bands}
    summary |= eos_summary(steps, values, thresholds, loss_steps, losses, **bands)
    extras = tuple(settings.get("also_plot", ()))
    for extra in extras:
        _, extra_values = series(records, extra)
        if extra_values.size:
            summary[f"{extra}_initial"] = float(extra_values[0])
            summary[f"{extra}_final"] = float(extra_values[-1])
    plot_metric_and_loss(
        [("run", records)], metric, loss_key, plots_dir / "edge_of_stability.png", extras=extras
    )
    return summary
