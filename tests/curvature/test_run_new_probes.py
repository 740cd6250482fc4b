"""The new probes in real runs: from the command line, checkpointed, resumed to the same numbers."""

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from configs import classification
from dynamics.train.build import build
from dynamics.train.loop import train
from dynamics.train.metrics import read_records

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = "--config=configs/classification.py:digits_mlp"
NEW = ("batch_sharpness", "update_sharpness", "trace_condition/trace", "spectral_norm/Dense_0")


def _config():
    config = classification.get_config("digits_mlp")
    config.model.widths = (16,)
    config.data.batch_size = 32
    config.num_steps = 20
    config.probes.evaluation.every = 0
    config.checkpoint_every = 10
    config.plots = False
    config.probes.batch_sharpness = {"every": 10, "num_batches": 16}
    config.probes.update_sharpness = {"every": 10, "num_examples": 256}
    config.probes.trace_condition = {"every": 10, "num_probes": 6, "num_examples": 256}
    config.probes.spectral_norms = {"every": 10, "num_iters": 3}
    config.probes.sharpness = {"every": 10, "k": 1, "num_examples": 256, "blocks": "layers"}
    return config


def _probe_records(path):
    return {r["step"]: r for r in read_records(path) if "batch_sharpness" in r}


def test_new_probes_are_logged_checkpointed_and_resume_exactly(tmp_path):
    whole = tmp_path / "whole"
    assert train(build(_config()), whole)["status"] == "completed"
    records = _probe_records(whole / "metrics.jsonl")
    assert sorted(records) == [0, 10, 20]
    for r in records.values():
        for name in NEW:
            assert np.isfinite(r[name]), name
        assert r["sharpness/Dense_0"] <= r["sharpness"] * (1 + 1e-4)
        assert r["sharpness/Dense_1"] <= r["sharpness"] * (1 + 1e-4)
        assert r["batch_sharpness_threshold"] == pytest.approx(
            2 / _config().optimizer.learning_rate
        )

    # Stop after step 10 (its checkpoint holds the spectral_norms vectors), then resume.
    part = tmp_path / "part"
    first = _config()
    first.num_steps = 10
    train(build(first), part)
    train(build(_config()), part, resume=True)
    resumed = _probe_records(part / "metrics.jsonl")
    for name in (*NEW, "update_spectral_norm/Dense_1", "sharpness/Dense_1"):
        assert resumed[20][name] == pytest.approx(records[20][name], rel=1e-6), name


def _experiments_run(*args):
    env = dict(os.environ, CI="1", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    command = [sys.executable, "-m", "experiments.run", CONFIG, *args]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)


def test_batch_sharpness_probe_from_the_command_line(tmp_path):
    out = _experiments_run(
        "--config.model.widths=(8,)",
        "--config.data.batch_size=32",
        "--config.num_steps=10",
        "--config.probes.evaluation.every=0",
        "--config.plots=False",
        "--config.probes.batch_sharpness.every=5",
        "--config.probes.batch_sharpness.num_batches=8",
        f"--workdir={tmp_path / 'run'}",
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert sorted(_probe_records(tmp_path / "run" / "metrics.jsonl")) == [0, 5, 10]


def test_bad_blocks_option_exits_with_code_2_and_writes_nothing(tmp_path):
    out = _experiments_run(
        "--config.probes.sharpness.every=5",
        "--config.probes.sharpness.blocks=7",
        f"--workdir={tmp_path / 'run'}",
    )
    assert out.returncode == 2
    assert "probe blocks must be 'layers'" in out.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.slow
def test_block_metrics_on_eight_devices_equal_one_device(tmp_path):
    """The per-block sharpness, trace and density of a run with the batch on 8 devices."""
    records = {}
    for devices in (1, 8):
        config = _config()
        config.num_steps = 1
        config.mesh.data = devices
        config.probes = {
            "sharpness": {"every": 1, "k": 1, "num_examples": 256, "blocks": "layers"},
            "hessian_trace": {"every": 1, "num_probes": 6, "num_examples": 256, "blocks": "layers"},
            "spectral_density": {
                "every": 1, "num_probes": 2, "num_iters": 8, "num_points": 16,
                "num_examples": 256, "blocks": ["Dense_1/*"],
            },
        }  # fmt: skip
        train(build(config), tmp_path / str(devices))
        records[devices] = next(r for r in read_records(tmp_path / str(devices) / "metrics.jsonl"))
    one, eight = records[1], records[8]
    names = [k for k in one if "/" in k and k.split("/")[0] in ("sharpness", "hessian_trace")]
    assert {"sharpness/Dense_0", "sharpness/Dense_1", "hessian_trace/Dense_1"} <= set(names)
    for name in names:
        assert eight[name] == pytest.approx(one[name], rel=1e-4), name
    np.testing.assert_allclose(
        eight["spectral_density/Dense_1"], one["spectral_density/Dense_1"], rtol=1e-3, atol=1e-6
    )
