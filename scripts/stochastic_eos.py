"""The edge of stochastic stability, summarized and drawn from the runs of
``configs/stochastic_eos.py``: late medians of batch sharpness and lambda_max in units of 2/lr.

The late median of a probed metric is the median over the second half of its probes of the
running median of 3 consecutive probes (a single outlying probe does not move it). Usage:

  python -m experiments.sweep --config=configs/stochastic_eos.py --workdir=runs/eoss
  python -m scripts.stochastic_eos runs/eoss/* --figure=docs/figures/stochastic_eos.png
"""

from __future__ import annotations

import argparse
import json
import pathlib

import numpy as np

from dynamics.train.metrics import read_records


def running_median3(values) -> np.ndarray:
    a = np.asarray(values, np.float64)
    return np.array([np.median(a[max(0, i - 1) : i + 2]) for i in range(len(a))])


def late_median(values) -> float:
    """Median over the second half of the running median of 3."""
    smooth = running_median3(values)
    return float(np.median(smooth[len(smooth) // 2 :]))


def summarize(workdir) -> dict:
    """Batch size, 2/lr and the probed curves of one run, with their late medians / (2/lr)."""
    workdir = pathlib.Path(workdir)
    config = json.loads((workdir / "config.json").read_text())
    records = [r for r in read_records(workdir / "metrics.jsonl") if "batch_sharpness" in r]
    threshold = records[0]["batch_sharpness_threshold"]
    steps = [r["step"] for r in records]
    bs = np.array([r["batch_sharpness"] for r in records]) / threshold
    lam = np.array([r["sharpness"] for r in records]) / threshold
    losses = [r["train_loss"] for r in read_records(workdir / "metrics.jsonl") if "train_loss" in r]
    return {
        "batch_size": config["data"]["batch_size"] or "full",
        "threshold": threshold,
        "steps": steps,
        "batch_sharpness": bs,
        "lambda_max": lam,
        "batch_sharpness_late": late_median(bs),
        "lambda_max_late": late_median(lam),
        "lambda_max_late_max": float(np.max(running_median3(lam)[len(lam) // 2 :])),
        "batch_sharpness_stderr": float(
            np.median([r["batch_sharpness_stderr"] / r["batch_sharpness"] for r in records])
        ),
        "final_train_loss": losses[-1] if losses else None,
    }


def figure(summaries, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4), sharey=True)
    for s in summaries:
        label = f"batch {s['batch_size']}"
        axes[0].plot(s["steps"], s["batch_sharpness"], label=label)
        axes[1].plot(s["steps"], s["lambda_max"], label=label)
    for ax, title in zip(axes, ("batch sharpness / (2/lr)", "lambda_max / (2/lr)"), strict=True):
        ax.axhline(1.0, color="k", ls="--", lw=1)
        ax.set_title(title)
        ax.set_xlabel("step")
    axes[0].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("workdirs", nargs="+")
    parser.add_argument("--figure", default=None)
    args = parser.parse_args()
    summaries = [summarize(w) for w in args.workdirs]
    summaries.sort(key=lambda s: 10**9 if s["batch_size"] == "full" else s["batch_size"])
    print("batch | batch sharpness late | lambda_max late (max) | BS stderr | final train loss")
    for s in summaries:
        print(
            f"{s['batch_size']} | {s['batch_sharpness_late']:.3f} | {s['lambda_max_late']:.3f} "
            f"({s['lambda_max_late_max']:.3f}) | {100 * s['batch_sharpness_stderr']:.1f}% | "
            f"{s['final_train_loss']:.4g}"
        )
    if args.figure:
        figure(summaries, args.figure)


if __name__ == "__main__":
    main()
