"""``python -m experiments.run`` in subprocesses: errors, refusals, kill + resume, divergence.

Each JAX process start costs seconds, so the runs are tiny and few.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import orbax.checkpoint as ocp
import pytest

from dynamics.train.metrics import read_records

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIG = "--config=configs/classification.py:digits_mlp"
SMALL = ["--config.model.widths=(8,)", "--config.data.batch_size=32", "--config.log_every=10"]


def _env():
    env = dict(os.environ, CI="1")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    return env


def _cmd(*args):
    return [sys.executable, "-m", "experiments.run", CONFIG, *SMALL, *args]


def _run(*args, timeout=300):
    return subprocess.run(
        _cmd(*args), cwd=REPO, env=_env(), capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.parametrize(
    "overrides, words",
    [
        ("--config.model.name=mlpp", ["model.name", "mlp", "transformer"]),
        ("--config.data.name=mnist", ["data.name", "digits", "cifar10"]),
        ("--config.loss.name=hinge", ["loss.name", "cross_entropy", "stablemax"]),
        ("--config.optimizer.name=adamm", ["optimizer.name", "adamw", "muon"]),
        ("--config.optimizer.schedule.name=exp", ["schedule.name", "warmup_cosine"]),
        ("--config.num_steps=many", ["num_steps", "many"]),
        ("--config.model.depth=3", ["model.depth"]),
        ("--config.optimizer.eps_root=1e-16", ["optimizer.eps_root", "valid fields"]),
        ("--config.mesh.data=2", ["mesh.data", "devices"]),
        ("--config.data.batch_size=5000", ["data.batch_size", "training examples"]),
        ("--config.probes.sharpnes.every=5", ["probes.sharpnes", "sharpness", "step_stability"]),
        (
            "--config.probes.preconditioned_sharpness.every=5",
            ["preconditioned_sharpness", "adam, adamw, rmsprop"],
        ),
        (
            "--config.probes.hessian_trace.every=5 --config.probes.hessian_trace.num_probes=4",
            ["probes.hessian_trace", "multiple of 3"],
        ),
    ],
)
def test_config_errors_exit_2_with_one_line_and_write_nothing(tmp_path, overrides, words):
    workdir = tmp_path / "run"
    result = _run(*overrides.split(), f"--workdir={workdir}")
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for word in words:
        assert word in lines[0]
    assert not workdir.exists()
    assert list(tmp_path.iterdir()) == []


def test_probes_are_added_from_the_command_line(tmp_path):
    """A probe the config file does not define is turned on by naming it, and a constructor
    argument it does not list is set by naming it; probes.evaluation.every = 0 evaluates at step 0
    and at the end only."""
    probe = "--config.probes.sharpness"
    args = [
        f"{probe}.every=5",
        f"{probe}.k=1",
        f"{probe}.num_iters=8",
        "--config.probes.evaluation.every=0",
    ]
    args += ["--config.optimizer.name=adam", "--config.optimizer.eps_root=1e-16"]
    result = _run(*args, "--config.num_steps=10", "--config.plots=False", f"--workdir={tmp_path}")
    assert result.returncode == 0, result.stderr
    records = read_records(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records if "sharpness" in r] == [0, 5, 10]
    assert all(r["sharpness"] > 0 and "sharpness_2" not in r for r in records if "sharpness" in r)
    assert [r["step"] for r in records if "train_accuracy" in r] == [0, 10]
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["probes"]["sharpness"] == {"every": 5, "k": 1, "num_iters": 8}
    assert saved["optimizer"]["name"] == "adam" and saved["optimizer"]["eps_root"] == 1e-16


def test_existing_workdir_is_refused_untouched_unless_overwritten(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    args = ["--config.num_steps=5", "--config.plots=False", f"--workdir={tmp_path}"]
    result = _run(*args)
    assert result.returncode == 2
    assert "--resume or --overwrite" in result.stderr
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]
    assert (tmp_path / "notes.txt").read_text() == "mine"

    result = _run(*args, "--overwrite")
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoints", "config.json", "metrics.jsonl", "summary.json"
    ]  # fmt: skip
    assert read_records(tmp_path / "metrics.jsonl")[-1]["step"] == 5


def test_sigkill_then_resume_writes_the_uninterrupted_metrics(tmp_path):
    args = [
        "--config.num_steps=400",
        "--config.probes.evaluation.every=50",
        "--config.checkpoint_every=25",
    ]
    args.append("--config.plots=False")
    full = _run(*args, f"--workdir={tmp_path / 'full'}")
    assert full.returncode == 0, full.stderr
    expected = read_records(tmp_path / "full" / "metrics.jsonl")

    workdir = tmp_path / "killed"
    proc = subprocess.Popen(
        _cmd(*args, f"--workdir={workdir}"),
        cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline and proc.poll() is None:
        records = read_records(workdir / "metrics.jsonl")
        if records and records[-1]["step"] >= 60:
            proc.send_signal(signal.SIGKILL)
            break
        time.sleep(0.01)
    assert proc.wait() == -signal.SIGKILL, "the run ended before it could be killed"
    killed_at = read_records(workdir / "metrics.jsonl")[-1]["step"]
    assert killed_at < 400

    resumed = _run(*args, f"--workdir={workdir}", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["status"] == "completed"
    assert 25 <= summary["resumed_from"] <= killed_at
    assert read_records(workdir / "metrics.jsonl") == expected


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def test_divergence_is_a_recorded_result_in_strict_json(tmp_path):
    result = _run("--config.num_steps=300", "--config.optimizer.learning_rate=1e4",
                  f"--workdir={tmp_path}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "diverged" in result.stderr
    # Strict JSON: NaN / Infinity literals would raise here.
    summary = json.loads((tmp_path / "summary.json").read_text(), parse_constant=_no_constant)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    records = [json.loads(line, parse_constant=_no_constant) for line in lines]
    assert summary["status"] == "diverged"
    step = summary["diverged_step"]
    assert 0 < step < 300 and summary["step"] == step
    assert records[-1]["step"] == step and records[-1]["diverged"] is True
    assert records[-1]["loss"] is None  # not finite
    assert not any("diverged" in r for r in records[:-1])
    # final: the diverging step's values only, not the step-0 accuracies next to them.
    assert summary["final_step"] == step
    assert summary["final"] == {
        k: v for k, v in records[-1].items() if k not in ("step", "diverged")
    }
    assert "train_accuracy" not in summary["final"]
    # The last finite state, the one the diverging step started from, is checkpointed: the
    # state a run of step - 1 steps ends with.
    assert summary["checkpoint_step"] == step - 1
    state = ocp.PyTreeCheckpointer().restore(tmp_path / "checkpoints" / str(step - 1) / "state")
    assert int(state["step"]) == step - 1
    assert all(np.isfinite(p).all() for p in jax.tree.leaves(state["params"]))
    assert (tmp_path / "plots" / "loss.png").exists()
    short = tmp_path / "short"
    result = _run(f"--config.num_steps={step - 1}", "--config.optimizer.learning_rate=1e4",
                  "--config.plots=False", f"--workdir={short}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    expected = ocp.PyTreeCheckpointer().restore(short / "checkpoints" / str(step - 1) / "state")
    for ours, ref in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(ours, ref)
    # Recomputed from step 0 above; from the checkpoint at step - 2 here.
    assert step > 3
    again = tmp_path / "again"
    result = _run("--config.num_steps=300", "--config.optimizer.learning_rate=1e4",
                  f"--config.checkpoint_every={step - 2}", "--config.plots=False",
                  f"--workdir={again}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    state = ocp.PyTreeCheckpointer().restore(again / "checkpoints" / str(step - 1) / "state")
    for ours, ref in zip(jax.tree.leaves(state), jax.tree.leaves(expected), strict=True):
        np.testing.assert_array_equal(ours, ref)
