"""The central-flow figure (after Cohen et al. 2025, Figure 1): three panels against the step.

1. Loss: the discrete optimizer, its loss smoothed over ``smoothing`` steps, the central flow's
   loss and its predicted time-averaged loss, the stable flow.
2. Sharpness: the discrete optimizer's, the central flow's top two (held at 2/lr once on) and the
   stable flow's, with the threshold dashed.
3. Distance from the discrete optimizer: central and stable flows.
"""

from __future__ import annotations

import pathlib

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def _column(records, name):
    steps = [r["step"] for r in records if name in r]
    return np.array(steps), np.array([r[name] for r in records if name in r])


def plot_flows(records: list[dict], threshold: float, smoothing: int, path) -> pathlib.Path:
    """Writes the figure to ``path`` and returns it."""
    from dynamics.flows.experiment import smooth

    path = pathlib.Path(path)
    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    steps, gd = _column(records, "gd_loss")
    axes[0].plot(steps, gd, color="0.75", lw=0.8, label="discrete")
    axes[0].plot(
        steps, smooth(gd, smoothing), color="k", lw=1.2, label=f"discrete, {smoothing}-step mean"
    )
    axes[0].plot(*_column(records, "central_predicted_loss"), color="C3", lw=1.2,
                 label="central flow, predicted mean")  # fmt: skip
    axes[0].plot(*_column(records, "central_loss"), color="C3", lw=1, ls=":", label="central flow")
    axes[0].plot(*_column(records, "stable_loss"), color="C0", lw=1.2, label="stable flow")
    axes[0].set_yscale("log")
    axes[0].set_title("train loss")
    steps, gd_s = _column(records, "gd_sharpness")
    axes[1].plot(steps, gd_s, color="0.6", lw=0.8, label="discrete")
    eig = np.array([r["central_eigenvalues"][:2] for r in records])
    axes[1].plot(steps, eig[:, 0], color="C3", lw=1.2, label="central flow, top 2")
    if eig.shape[1] > 1:
        axes[1].plot(steps, eig[:, 1], color="C3", lw=1, ls="--")
    axes[1].plot(*_column(records, "stable_sharpness"), color="C0", lw=1.2, label="stable flow")
    axes[1].axhline(threshold, color="k", ls=":", lw=1, label="2/lr")
    top = max(threshold * 1.6, float(np.max(gd_s)) * 1.05)
    axes[1].set_ylim(0, top)
    axes[1].set_title("(effective) sharpness")
    axes[2].plot(*_column(records, "dist_central_gd"), color="C3", label="central flow")
    axes[2].plot(*_column(records, "dist_stable_gd"), color="C0", label="stable flow")
    axes[2].set_title("distance from the discrete optimizer")
    for ax in axes:
        ax.set_xlabel("step")
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
