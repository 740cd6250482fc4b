"""The ``central_flows`` program of ``experiments.run``: one run directory, bad configs."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from dynamics.train.metrics import read_records

REPO = pathlib.Path(__file__).resolve().parents[2]
CONFIG = "--config=configs/central_flows.py:gd_gaussian"


def _run(*args, timeout=600):
    env = dict(os.environ, CI="1", XLA_FLAGS="--xla_force_host_platform_device_count=1")
    return subprocess.run(
        [sys.executable, "-m", "experiments.run", CONFIG, *args],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


@pytest.mark.parametrize(
    "override, words",
    [
        ("--config.optimizer.name=adam", ["optimizer.name", "sgd, rmsprop"]),
        ("--config.flows.dt=0.3", ["flows", "dt"]),
        ("--config.program=centralflows", ["program", "central_flows"]),
        ("--config.data.batch_size=32", ["data.batch_size", "full-batch"]),
        ("--resume", ["--resume", "--overwrite"]),
    ],
)
def test_bad_configs_fail_in_one_line_with_code_2_and_write_nothing(tmp_path, override, words):
    workdir = tmp_path / "run"
    result = _run(override, f"--workdir={workdir}")
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.strip().splitlines() if line]
    assert len(lines) == 1 and all(w in lines[0] for w in words), result.stderr
    assert not workdir.exists()


@pytest.mark.slow  # compiles the three processes in a subprocess (about a minute)
def test_one_run_directory_with_the_three_processes(tmp_path):
    workdir = tmp_path / "run"
    result = _run("--config.num_steps=3", "--config.flows.k=2", f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr
    records = read_records(workdir / "metrics.jsonl")
    assert [r["step"] for r in records] == [0, 1, 2, 3]
    for key in ("gd_loss", "central_loss", "stable_loss", "dist_central_gd", "dist_stable_gd"):
        assert key in records[-1]
    assert records[0]["gd_loss"] == records[0]["central_loss"] == records[0]["stable_loss"]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "completed" and "analysis" in summary
    assert json.loads((workdir / "config.json").read_text())["program"] == "central_flows"
    assert (workdir / "plots" / "central_flows.png").stat().st_size > 0
