"""Nanda et al. (2023) grokking: a 1-layer transformer on a + b mod 113 (30% train, AdamW wd 1).

Runs ``configs/grokking.py:nanda`` through ``python -m experiments.run`` (full batch, AdamW lr
1e-3, betas (0.9, 0.98), weight decay 1; the paper's budget is 50k epochs = 50k full-batch
steps, the config's default 30k), then writes ``<out>/nanda.png`` and prints the steps to 99% train
and 95% test accuracy.

Example:
  python scripts/nanda_grokking.py --steps=30000 --out=runs/nanda
"""

import argparse
import json
import pathlib
import subprocess
import sys

from dynamics.analysis.eos import load_records
from dynamics.analysis.grokking import grokking_summary, plot_arms


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="runs/nanda")
    parser.add_argument("--figure", default=None, help="also copy the figure here")
    args = parser.parse_args()
    workdir = pathlib.Path(args.out) / f"seed{args.seed}"
    if not (workdir / "summary.json").exists():
        cmd = [sys.executable, "-m", "experiments.run", "--config=configs/grokking.py:nanda",
               f"--workdir={workdir}", f"--config.num_steps={args.steps}",
               f"--config.seed={args.seed}", "--config.progress=False", "--overwrite"]  # fmt: skip
        subprocess.run(cmd, check=True)
    records = load_records(workdir)
    print(json.dumps(grokking_summary(records)))
    for path in filter(None, (pathlib.Path(args.out) / "nanda.png", args.figure)):
        plot_arms([("1-layer transformer, wd 1", records)], path, title="a + b mod 113 (Nanda)")
        print(f"figure: {path}")


if __name__ == "__main__":
    main()
