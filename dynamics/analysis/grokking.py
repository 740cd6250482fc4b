"""Grokking: how long after fitting the training set does the test accuracy follow?

Power et al. (2022) found that small transformers on modular arithmetic fit the training set
early and generalize only much later; Nanda et al. (2023) traced the late generalization to
Fourier features cleaned up by weight decay; Prieto et al. (2025) traced the failure to generalize
without regularization to softmax collapse (float32 softmax rounding to exactly one-hot, zero loss
and gradient on those samples) and naive loss minimization (the gradient aligning with the
weights), and removed the delay with StableMax or the orthogonal gradient.

The summary of a run:

* ``steps_to_train``: first logged step with train accuracy ``>= 0.99``;
* ``steps_to_test``: first logged step with test accuracy ``>= 0.95``;
* ``delay`` = ``steps_to_test - steps_to_train`` and ``delay_ratio`` = ``steps_to_test /
  steps_to_train`` (grokking: ratio well above 1);
* ``peak_softmax_collapse`` (and its step) within ``collapse_window`` steps, and the best test
  accuracy within that window, when the run logs ``softmax_collapse``.

Example::

  summary = grokking_summary(records)
  summary["delay_ratio"]

The registered analysis ``"grokking"`` writes this summary and ``plots/grokking.png`` (train and
test accuracy against log steps); :func:`plot_arms` draws one panel per arm for a sweep.
"""

from __future__ import annotations

import pathlib
from collections.abc import Sequence
from typing import Any

import numpy as np

from dynamics.analysis import ANALYSES
from dynamics.analysis.eos import series


def steps_to(records: Sequence[dict[str, Any]], key: str, level: float) -> int | None:
    """First logged step whose ``key`` is at least ``level`` (None if never)."""
    steps, values = series(records, key)
    hits = np.flatnonzero(values >= level)
    return int(steps[hits[0]]) if hits.size else None


def grokking_summary(
    records: Sequence[dict[str, Any]],
    *,
    train_key: str = "train_accuracy",
    test_key: str = "test_accuracy",
    train_level: float = 0.99,
    test_level: float = 0.95,
    collapse_window: int = 3000,
) -> dict[str, Any]:
    """Steps to fit, steps to generalize, their delay, and the softmax-collapse peak."""
    to_train = steps_to(records, train_key, train_level)
    to_test = steps_to(records, test_key, test_level)
    _, test_acc = series(records, test_key)
    _, train_acc = series(records, train_key)
    out: dict[str, Any] = {
        "steps_to_train": to_train,
        "steps_to_test": to_test,
        "delay": None if to_train is None or to_test is None else to_test - to_train,
        "delay_ratio": None if not to_train or to_test is None else to_test / to_train,
        "final_train_accuracy": float(train_acc[-1]) if train_acc.size else None,
        "final_test_accuracy": float(test_acc[-1]) if test_acc.size else None,
        "best_test_accuracy": float(np.max(test_acc)) if test_acc.size else None,
    }
    steps, collapse = series(records, "softmax_collapse")
    inside = steps <= collapse_window
    if np.any(inside):
        k = int(np.argmax(np.where(inside, collapse, -np.inf)))
        t_steps, t_acc = series(records, test_key)
        window_acc = t_acc[t_steps <= collapse_window]
        out |= {
            "peak_softmax_collapse": float(collapse[k]),
            "peak_softmax_collapse_step": int(steps[k]),
            "best_test_accuracy_in_window": float(np.max(window_acc)) if window_acc.size else None,
        }
    return out


def plot_arms(
    arms: Sequence[tuple[str, Sequence[dict[str, Any]]]],
    path: str | pathlib.Path,
    *,
    train_key: str = "train_accuracy",
    test_key: str = "test_accuracy",
    title: str = "",
) -> None:
    """Train (dashed) and test (solid) accuracy against log steps, one panel per arm."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        1,
        len(arms),
        figsize=(max(3.2 * len(arms), 5.5), 3),
        squeeze=False,
        sharex=True,
        sharey=True,
    )
    for ax, (label, records) in zip(axes[0], arms, strict=True):
        for key, style, name in ((train_key, "--", "train"), (test_key, "-", "test")):
            steps, values = series(records, key)
            keep = steps > 0
            ax.plot(steps[keep], values[keep], style, label=name)
        ax.set_xscale("log")
        # Over less than a decade matplotlib labels the minor ticks too, and they overlap.
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(-0.02, 1.02)
        ax.set_title(label, fontsize=9)
        ax.set_xlabel("step")
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


@ANALYSES.register("grokking")
def grokking(
    records: Sequence[dict[str, Any]], config: Any, plots_dir: pathlib.Path
) -> dict[str, Any]:
    """Summary and figure of one run; ``config.analysis`` may rename the accuracy keys."""
    settings = dict(config.get("analysis", {}))
    keys = {k: settings[k] for k in ("train_key", "test_key") if k in settings}
    window = settings.get("collapse_window", 3000)
    summary = grokking_summary(records, collapse_window=window, **keys)
    plot_arms([(settings.get("label", "run"), records)], plots_dir / "grokking.png", **keys)
    return summary
