"""PNG figures of a run from its metric records, written to ``plots/``.

* ``loss.png``: the minibatch ``loss`` and the full-dataset ``train_loss``/``test_loss`` against
  the step (log scale when every value is positive).
* ``accuracy.png``: ``accuracy``, ``train_accuracy``, ``test_accuracy`` (classification runs).
* ``<X>.png`` for every metric ``X`` logged with a companion ``X_threshold`` (e.g. sharpness and
  2/lr): ``X`` with the threshold as a dashed line, the edge-of-stability picture.
* ``metrics.png``: every other scalar metric, one panel per name; names sharing a prefix before
  ``/`` (``weight_norm/Dense_0/kernel``, ...) share a panel.
* ``spectral_density.png``: the Hessian spectral densities of the ``spectral_density`` probe, one
  curve per measured step (log density, so the bulk near zero and the outliers both show).
"""

from __future__ import annotations

import math
import pathlib
from collections import defaultdict

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

LOSSES = ("loss", "train_loss", "test_loss")
ACCURACIES = ("accuracy", "train_accuracy", "test_accuracy")


def _series(records: list[dict]) -> dict[str, tuple[list, list]]:
    series = defaultdict(lambda: ([], []))
    for record in records:
        for name, value in record.items():
            if name != "step" and isinstance(value, int | float) and not isinstance(value, bool):
                series[name][0].append(record["step"])
                series[name][1].append(value)
    return dict(series)


def _panel(ax, series, names, title, log=False):
    for name in names:
        steps, values = series[name]
        ax.plot(steps, values, label=name, lw=1)
    ax.set_title(title)
    ax.set_xlabel("step")
    values = [v for n in names for v in series[n][1] if math.isfinite(v)]
    if log and values and min(values) > 0:
        ax.set_yscale("log")
    if len(names) > 1 and len(names) <= 10:
        ax.legend(fontsize=7)


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_run(records: list[dict], plots_dir) -> list[pathlib.Path]:
    """Writes the figures described in the module docstring; returns their paths."""
    plots_dir = pathlib.Path(plots_dir)
    plots_dir.mkdir(parents=True, exist_ok=True)
    series = _series(records)
    written = []

    def single(names, title, filename, log=False):
        names = [n for n in names if n in series]
        if names:
            fig, ax = plt.subplots(figsize=(6, 4))
            _panel(ax, series, names, title, log)
            _save(fig, plots_dir / filename)
            written.append(plots_dir / filename)
        return names

    done = set(single(LOSSES, "loss", "loss.png", log=True))
    done |= set(single(ACCURACIES, "accuracy", "accuracy.png"))
    for name in sorted(series):
        threshold = f"{name}_threshold"
        if threshold in series:
            fig, ax = plt.subplots(figsize=(6, 4))
            steps, values = series[name]
            ax.plot(steps, values, lw=1, label=name)
            ax.plot(*series[threshold], "k--", lw=1, label=threshold)
            ax.set_title(name)
            ax.set_xlabel("step")
            ax.legend(fontsize=7)
            _save(fig, plots_dir / f"{name.replace('/', '_')}.png")
            written.append(plots_dir / f"{name.replace('/', '_')}.png")
            done |= {name, threshold}

    densities = [r for r in records if "spectral_density" in r]
    if densities:
        fig, ax = plt.subplots(figsize=(6, 4))
        colors = plt.cm.viridis([i / max(1, len(densities) - 1) for i in range(len(densities))])
        for record, color in zip(densities, colors, strict=True):
            # The smoothed density underflows far from the Ritz values; floor it for the log axis.
            density = [max(d, 1e-12) for d in record["spectral_density"]]
            ax.plot(record["spectral_density_grid"], density, color=color, lw=1,
                    label=f"step {record['step']}")  # fmt: skip
        ax.set_yscale("log")
        ax.set_xlabel("Hessian eigenvalue")
        ax.set_ylabel("density")
        ax.set_title("spectral density (SLQ)")
        if len(densities) <= 10:
            ax.legend(fontsize=7)
        _save(fig, plots_dir / "spectral_density.png")
        written.append(plots_dir / "spectral_density.png")

    groups = defaultdict(list)
    for name in sorted(series):
        if name not in done:
            groups[name.split("/")[0]].append(name)
    if groups:
        cols = min(3, len(groups))
        rows = math.ceil(len(groups) / cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4 * cols, 3 * rows), squeeze=False)
        for ax, (group, names) in zip(axes.flat, groups.items(), strict=False):
            _panel(ax, series, names, group)
        for ax in axes.flat[len(groups) :]:
            ax.axis("off")
        _save(fig, plots_dir / "metrics.png")
        written.append(plots_dir / "metrics.png")
    return written
