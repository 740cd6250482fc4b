"""``experiments.run`` and ``experiments.sweep`` as a user meets them, in subprocesses.

Concurrent launches that share a default workdir name, one-line errors with exit code 2 (the same
line from both commands), one flag convention, dry runs that can be pasted into a shell, and a
failed sweep run's reason in the sweep's records. Each JAX process start costs seconds, so the runs
are tiny.
"""

import csv
import datetime
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from dynamics.sweep import manifest

REPO = Path(__file__).resolve().parents[1]
SMALL = ["--config.model.widths=(8,)", "--config.data.batch_size=32", "--config.log_every=10"]
SMALL += ["--config.num_steps=20", "--config.plots=False"]


def _env():
    env = dict(os.environ, CI="1", JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=1"
    return env


def command(module, *args, cwd=REPO, timeout=300):
    return subprocess.run(
        [sys.executable, "-m", f"experiments.{module}", *args],
        cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout,
    )  # fmt: skip


def one_line_error(result):
    assert result.returncode == 2, result.stdout[-2000:] + result.stderr[-2000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    return lines[0]


def test_runs_started_together_each_claim_their_own_default_workdir(tmp_path):
    # Earlier runs hold the default names of this and the next ten minutes: every new run has to
    # take a suffixed name, and four runs started at once contend for the same ones.
    base = tmp_path / "runs" / "classification-digits_mlp"
    now = datetime.datetime.now()
    taken = {(now + datetime.timedelta(seconds=s)).strftime("%Y%m%d-%H%M%S") for s in range(600)}
    for name in taken:
        (base / name).mkdir(parents=True)
        (base / name / "notes.txt").write_text("an earlier run")
    config = f"--config={REPO / 'configs' / 'classification.py'}:digits_mlp"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "experiments.run", config, *SMALL, f"--config.seed={seed}"],
            cwd=tmp_path,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        for seed in range(4)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert [p.returncode for p in procs] == [0] * 4, outputs
    workdirs = [tmp_path / out.strip().splitlines()[-1].rpartition(" -> ")[2] for out, _ in outputs]
    assert len(set(workdirs)) == 4
    for seed, workdir in enumerate(workdirs):
        stamp, _, suffix = workdir.name.rpartition("-")
        assert workdir.parent == base and stamp in taken and int(suffix) >= 1
        assert json.loads((workdir / "summary.json").read_text())["status"] == "completed"
        assert json.loads((workdir / "config.json").read_text())["seed"] == seed
    for name in taken:
        assert [p.name for p in (base / name).iterdir()] == ["notes.txt"]


@pytest.mark.parametrize("module", ["run", "sweep"])
def test_a_missing_config_file_is_one_line(module, tmp_path):
    out = tmp_path / "out"
    flag = "--workdir" if module == "run" else "--sweep_dir"
    result = command(module, "--config=configs/nope.py", f"{flag}={out}")
    assert one_line_error(result) == "error: config file configs/nope.py does not exist"
    assert not out.exists()


PRESETS = {
    "adaptive_eos": "adam, optimizers",
    "central_flows": "gd_digits, gd_gaussian, rmsprop_digits, rmsprop_gaussian",
    "classification": "digits_mlp, modular_mlp",
    "edge_of_stability": "cifar5k, cnn, digits, momentum, sam",
    "grokking": "grokfast, grokfast_baseline, grokfast_ema, grokfast_ma, mlp, mlp_baseline, "
    "mlp_grokfast_ema, mlp_grokfast_ma, mlp_orthograd, mlp_stablemax, mlp_wd, nanda",
    "scalar_eos": "depth2, depth4, depth8, quadratic, sign_flip",
    "stochastic_eos": "128, 16, 256, 32, 64, 8, full",
}


def test_every_config_lists_its_presets():
    configs = sorted(p.stem for p in (REPO / "configs").glob("*.py") if p.stem != "_presets")
    assert configs == sorted(PRESETS)


@pytest.mark.parametrize("module", ["run", "sweep"])
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_an_unknown_preset_is_the_same_line_from_run_and_sweep(module, name):
    line = one_line_error(command(module, f"--config=configs/{name}.py:digitz"))
    assert line == (
        f"error: unknown preset 'digitz' for configs/{name}.py; valid presets: {PRESETS[name]}"
    )


@pytest.mark.parametrize("module", ["run", "sweep"])
def test_override_errors_are_the_same_line_from_run_and_sweep(module, tmp_path):
    config = "--config=configs/classification.py"
    for args, message in [
        (["--config.num_stepz=3"], "unknown field config.num_stepz (did you mean num_steps?)"),
        (["--config.mesh.dat=2"], "unknown field config.mesh.dat (did you mean mesh.data?)"),
        # Both commands refuse the space form, which absl would read for its own flags.
        (
            ["--config.num_steps", "200"],
            "override --config.num_steps has no value: write --config.FIELD=VALUE as one argument",
        ),
        (
            ["--config.optimizer.learning_rate=0"],
            "optimizer.learning_rate must be a number > 0, got 0",
        ),
        (
            ["--config.optimizer.schedule.name=warmup_cosine"]
            + ["--config.optimizer.schedule.end_value=0.5"],
            "optimizer.schedule.end_value = 0.5 is above the peak optimizer.learning_rate = 0.1",
        ),
    ]:
        flag = "--workdir" if module == "run" else "--sweep_dir"
        line = one_line_error(command(module, config, *args, f"{flag}={tmp_path / 'out'}"))
        assert line.startswith("error: ") and message in line, line
        assert not (tmp_path / "out").exists()


def test_both_commands_spell_flags_with_underscores():
    line = one_line_error(command("sweep", "--config=configs/classification.py", "--dry-run"))
    assert "dry-run" in line and "dry_run" in line
    line = one_line_error(command("run", "--config=configs/classification.py", "--work-dir=x"))
    assert "work-dir" in line
    sweep_help = command("sweep", "--help").stdout
    for flag in ("--max_parallel", "--sweep_dir", "--dry_run", "--retry_failed", "--time_min"):
        assert flag in sweep_help


def test_a_run_shorter_than_its_warmup_runs_with_a_warning(tmp_path):
    args = ["--config.optimizer.schedule.name=warmup_cosine", f"--workdir={tmp_path}"]
    result = command("run", "--config=configs/classification.py", *SMALL, *args)
    assert result.returncode == 0, result.stderr
    assert (
        "warning: num_steps = 20 is shorter than optimizer.schedule.warmup_steps = 100"
        in result.stderr
    )
    assert json.loads((tmp_path / "summary.json").read_text())["status"] == "completed"


GOOD, FAILED = "learning_rate=0.1", "learning_rate=0.2,num_train=100000"


def test_dry_run_commands_paste_into_a_shell_and_failures_keep_their_reason(tmp_path):
    sweep_dir = tmp_path / "my sweep"  # a space: the printed commands must be quoted
    args = ["--config=tests/sweep/tiny_config.py", f"--sweep_dir={sweep_dir}"]
    dry = command("sweep", *args, "--dry_run")
    assert dry.returncode == 0, dry.stderr
    assert not sweep_dir.exists()
    lines = [line.strip() for line in dry.stdout.splitlines() if "experiments.run" in line]
    assert len(lines) == 3
    assert all(shlex.split(line)[:3] == [sys.executable, "-m", "experiments.run"] for line in lines)
    workdir = f"--workdir={(sweep_dir / GOOD).resolve()}"
    (good,) = [line for line in lines if workdir in shlex.split(line)]
    pasted = subprocess.run(
        ["bash", "-c", good], cwd=REPO, env=_env(), capture_output=True, text=True, timeout=300
    )
    assert pasted.returncode == 0, pasted.stderr
    summary = json.loads((sweep_dir / GOOD / "summary.json").read_text())
    assert summary["status"] == "completed"

    # The sweep itself skips the pasted run, runs the other two and records why one failed.
    result = command("sweep", *args, "--max_parallel=2", timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    m = manifest.load(sweep_dir)
    assert {r.name: r.status for r in m.runs}[GOOD] == "completed"
    assert not (sweep_dir / "logs" / f"{GOOD}.log").exists()
    failed = m.run(FAILED)
    assert failed.status == "failed" and failed.reason.startswith("error: ")
    assert "num_train" in failed.reason
    log = (sweep_dir / "logs" / f"{FAILED}.log").read_text().strip().splitlines()
    assert failed.reason == log[-1]
    assert any(
        line.startswith(FAILED) and failed.reason in line for line in result.stdout.splitlines()
    )
    with open(sweep_dir / "results.csv") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert rows[FAILED]["reason"] == failed.reason and rows[GOOD]["reason"] == ""
