"""A sweep on a real Slurm: a one-node cluster on localhost, three runs as one submitit job array.

The cluster is started by ``scripts/local_slurm.sh`` (which installs slurm-wlm and munge with apt
when they are missing) on free ports with its own state directory, and its daemons are stopped by
pid at the end. Without root or apt the test fails: it is part of CI, not optional.
"""

import csv
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from dynamics.sweep import manifest
from dynamics.train.metrics import read_records

REPO = Path(__file__).resolve().parents[2]
SCRIPT = REPO / "scripts" / "local_slurm.sh"


def free_port():
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (exited, not yet reaped by its parent) is not running either.
    status = Path(f"/proc/{pid}/status")
    return not (status.exists() and "\nState:\tZ" in status.read_text())


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.fail("the Slurm test must run as root: it starts slurmctld, slurmd and munged")
    if not (shutil.which("apt-get") or shutil.which("slurmctld")):
        pytest.fail("the Slurm test needs apt-get (to install slurm-wlm and munge) or Slurm itself")
    state = tmp_path_factory.mktemp("slurm")
    env = dict(os.environ, SLURMCTLD_PORT=str(free_port()), SLURMD_PORT=str(free_port()))
    start = subprocess.run(
        [SCRIPT, "start", state], env=env, capture_output=True, text=True, timeout=1200
    )
    listed = subprocess.run([SCRIPT, "pids", state], capture_output=True, text=True, timeout=60)
    pids = [int(p) for p in listed.stdout.split()]
    try:
        assert start.returncode == 0, start.stdout[-2000:] + start.stderr[-2000:]
        assert len(pids) == 3
        yield state / "slurm.conf"
    finally:
        # The script stops the daemons by the pids in their pid files (and removes munge's
        # directory); whatever it missed is stopped here by the pids read at start.
        subprocess.run([SCRIPT, "stop", state], capture_output=True, timeout=120)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while any(alive(p) for p in pids) and time.monotonic() < deadline:
            time.sleep(0.1)
        for pid in pids:
            if alive(pid):
                os.kill(pid, signal.SIGKILL)
        assert not any(alive(p) for p in pids)


def test_sweep_on_slurm(cluster, tmp_path):
    env = dict(os.environ, SLURM_CONF=str(cluster), JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    sweep_dir = tmp_path / "sweep"
    argv = [sys.executable, "-m", "experiments.sweep", "--config=tests/sweep/tiny_config.py:three"]
    argv += [f"--sweep_dir={sweep_dir}", "--executor=slurm", "--poll=1", "--time_min=10"]
    argv += ["--cpus_per_task=1", "--sbatch=comment=dynamics-test"]
    proc = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]

    m = manifest.load(sweep_dir)
    names = ["learning_rate=0.05", "learning_rate=0.1", "learning_rate=0.2"]
    assert [r.name for r in m.runs] == names
    assert [r.status for r in m.runs] == ["completed"] * 3, proc.stdout[-3000:]
    # One job array: ids ARRAY_0, ARRAY_1, ARRAY_2.
    arrays = {r.job_id.split("_")[0] for r in m.runs}
    assert len(arrays) == 1 and sorted(r.job_id.split("_")[1] for r in m.runs) == ["0", "1", "2"]
    sbatch = next((sweep_dir / "slurm").glob("*_submission.sh")).read_text()
    assert "#SBATCH --comment=dynamics-test" in sbatch and "#SBATCH --time=10" in sbatch

    with open(sweep_dir / "results.csv") as f:
        rows = list(csv.DictReader(f))
    assert [(r["name"], r["status"]) for r in rows] == [(n, "completed") for n in names]
    assert [float(r["optimizer.learning_rate"]) for r in rows] == [0.05, 0.1, 0.2]
    assert all(float(r["final.loss"]) < float("inf") for r in rows)
    # Progress: each run is reported when Slurm starts it and when it ends.
    for name in names:
        assert f"{name}: running" in proc.stdout and f"{name}: completed" in proc.stdout


LONG = ["--config.num_steps=20000", "--config.checkpoint_every=500", "--config.log_every=100"]
LONG += ["--config.probes.evaluation.every=1000", "--config.plots=False"]
ONE = "--config=tests/sweep/tiny_config.py:one"


def slurm_env(cluster):
    env = dict(os.environ, SLURM_CONF=str(cluster), JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    return env


@pytest.fixture(scope="module")
def uninterrupted(cluster, tmp_path_factory):
    """The metrics of the requeue test's run without an interruption."""
    workdir = tmp_path_factory.mktemp("reference") / "run"
    ref = subprocess.run(
        [sys.executable, "-m", "experiments.run", ONE, *LONG,
         "--config.optimizer.learning_rate=0.1", f"--workdir={workdir}"],
        cwd=REPO, env=slurm_env(cluster), capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert ref.returncode == 0, ref.stderr[-3000:]
    return read_records(workdir / "metrics.jsonl")


@pytest.mark.parametrize("signal_name", ["TERM", "USR2"])
def test_a_preempted_run_is_requeued_and_resumes_from_its_checkpoint(
    cluster, uninterrupted, tmp_path, signal_name
):
    """``scancel --signal=TERM`` (what a preemption sends to the job's processes) stops the runner
    directly; ``--signal=USR2`` (submitit's signal before the time limit) reaches the task, whose
    ``checkpoint()`` stops the runner. Either way the job requeues itself, the requeued job runs
    the runner with ``--resume``, and the metrics are those of an uninterrupted run."""
    env = slurm_env(cluster)
    sweep_dir = tmp_path / "sweep"
    argv = [sys.executable, "-m", "experiments.sweep", ONE, f"--sweep_dir={sweep_dir}"]
    argv += ["--executor=slurm", "--poll=1", "--time_min=10", "--cpus_per_task=1", *LONG]
    sweep = subprocess.Popen(
        argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    workdir = sweep_dir / "learning_rate=0.1"
    deadline = time.monotonic() + 600
    signalled_at = None
    while time.monotonic() < deadline and sweep.poll() is None:
        records = read_records(workdir / "metrics.jsonl") if workdir.exists() else []
        if records and records[-1]["step"] >= 2000:
            job_id = manifest.load(sweep_dir).runs[0].job_id
            signalled_at = records[-1]["step"]
            scancel = ["scancel", f"--signal={signal_name}", job_id]
            subprocess.run(scancel, env=env, check=True, timeout=60)
            break
        time.sleep(0.05)
    assert signalled_at is not None and signalled_at < 20000, "the run ended before the signal"
    out, _ = sweep.communicate(timeout=900)
    assert sweep.returncode == 0, out[-3000:]

    (run,) = manifest.load(sweep_dir).runs
    assert run.status == "completed", out[-3000:]
    shown = subprocess.run(
        ["scontrol", "show", "job", run.job_id], env=env, capture_output=True, text=True
    ).stdout
    assert "Restarts=1" in shown, shown
    commands = [line for line in (sweep_dir / "logs" / f"{run.name}.log").read_text().splitlines()
                if line.startswith("$ ")]  # fmt: skip
    assert len(commands) == 2 and "--resume" not in commands[0] and "--resume" in commands[1]
    summary = json.loads((workdir / "summary.json").read_text())
    # The runner checkpointed where the signal stopped it (the end of the chunk in flight), not at
    # its last periodic checkpoint (every 500 steps).
    assert summary["status"] == "completed" and signalled_at <= summary["resumed_from"] < 20000
    assert read_records(workdir / "metrics.jsonl") == uninterrupted
