"""A user's own Flax module, optax optimizer and optax schedule, named by import path in a config
and run through ``experiments.run`` in a subprocess: the module lives in a tiny package the test
writes and puts on ``PYTHONPATH``, as a researcher's own code would be."""

import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PACKAGE = '''
import flax.linen as nn


class TwoLayer(nn.Module):
    """tanh MLP; num_outputs comes from the dataset when the config leaves it out."""

    hidden: int
    num_outputs: int

    @nn.compact
    def __call__(self, x):
        return nn.Dense(self.num_outputs)(nn.tanh(nn.Dense(self.hidden)(x)))
'''

CONFIG = """
import ml_collections

from dynamics.train.config import base_config


def get_config():
    c = base_config()
    c.num_steps = 30
    c.log_every = 10
    c.probes.evaluation.every = 0
    c.checkpoint_every = 0
    c.plots = False
    c.model = ml_collections.ConfigDict({"name": "mynets.nets:TwoLayer", "hidden": 16})
    c.loss.name = "cross_entropy"
    c.optimizer.name = "optax:lion"
    c.optimizer.learning_rate = 3e-3
    c.optimizer.b2 = 0.98
    c.optimizer.schedule = ml_collections.ConfigDict(
        {"name": "optax:warmup_cosine_decay_schedule", "init_value": 0.0, "warmup_steps": 5}
    )
    return c
"""


def _run(tmp_path, *args):
    (tmp_path / "mynets").mkdir(exist_ok=True)
    (tmp_path / "mynets" / "__init__.py").write_text("")
    (tmp_path / "mynets" / "nets.py").write_text(textwrap.dedent(PACKAGE))
    (tmp_path / "byo.py").write_text(textwrap.dedent(CONFIG))
    env = dict(os.environ, CI="1", JAX_PLATFORMS="cpu", PYTHONPATH=f"{REPO}{os.pathsep}{tmp_path}")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", f"--config={tmp_path / 'byo.py'}", *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip


def test_own_module_optax_optimizer_and_schedule_train(tmp_path):
    workdir = tmp_path / "run"
    result = _run(tmp_path, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["final_step"] == 30
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train_loss"] for r in records if "train_loss" in r]
    assert losses[-1] < 0.7 * losses[0], losses
    lrs = {r["step"]: r["learning_rate"] for r in records if "learning_rate" in r}
    # The optax schedule's peak is optimizer.learning_rate, its decay_steps num_steps: the
    # update recorded at step 10 used lr(9) = 3e-3 (1 + cos(pi (9 - 5) / (30 - 5))) / 2.
    assert abs(lrs[10] - 3e-3 * 0.5 * (1 + math.cos(math.pi * 4 / 25))) < 1e-8


def test_bad_fields_of_imported_pieces_are_one_line(tmp_path):
    for flag, expected in (
        ("--config.optimizer.b3=0.5", "unknown field optimizer.b3 for lion; valid fields: b1, b2,"),
        ("--config.model.depth=3", "unknown field model.depth for TwoLayer; valid fields: hidden,"),
        ("--config.model.name=mynets.nets:Missing", "cannot import model.name"),
    ):
        result = _run(tmp_path, f"--workdir={tmp_path / 'bad'}", flag)
        assert result.returncode == 2, result.stderr[-2000:]
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and expected in lines[0], result.stderr
        assert not (tmp_path / "bad").exists()
