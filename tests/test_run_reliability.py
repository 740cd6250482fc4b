"""``python -m experiments.run`` when a run is resumed, corrupted or stopped, in subprocesses.

Every test drives the real command line. The reference is one uninterrupted run; a resumed run
must write exactly its records (minibatches are a pure function of ``(seed, step)``).
"""

import json
import pathlib
import re
import shlex
import shutil
import signal
import subprocess

import pytest
from test_run_cli import REPO, _cmd, _env, _run

from dynamics.train.checkpoint import complete_steps
from dynamics.train.metrics import read_records

ARGS = [
    "--config.probes.evaluation.every=50",
    "--config.checkpoint_every=40",
    "--config.plots=False",
]
FULL = "--config.num_steps=400"
SHORT = "--config.num_steps=100"  # checkpoints at 80 and 100; its records are FULL's up to 100


def _no_constant(name):
    raise ValueError(f"{name} is not JSON")


def _strict(text: str):
    return json.loads(text, parse_constant=_no_constant)


def _strict_records(path: pathlib.Path) -> list[dict]:
    return [_strict(line) for line in path.read_text().splitlines()]


def _snapshot(directory: pathlib.Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in directory.rglob("*")
            if p.is_file()}  # fmt: skip


def _corrupt(checkpoint: pathlib.Path) -> None:
    """Truncates the largest array file of a checkpoint to half its size."""
    arrays = [p for p in (checkpoint / "state").rglob("*") if p.is_file() and p.parent.name == "d"]
    largest = max(arrays, key=lambda p: p.stat().st_size)
    with open(largest, "r+b") as f:
        f.truncate(largest.stat().st_size // 2)


@pytest.fixture(scope="module")
def full(tmp_path_factory) -> list[dict]:
    workdir = tmp_path_factory.mktemp("full")
    result = _run(*ARGS, FULL, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr
    return read_records(workdir / "metrics.jsonl")


@pytest.fixture(scope="module")
def short(tmp_path_factory) -> pathlib.Path:
    """A completed 100-step run (copy it before changing it)."""
    workdir = tmp_path_factory.mktemp("short") / "run"
    result = _run(*ARGS, SHORT, f"--workdir={workdir}")
    assert result.returncode == 0, result.stderr
    lines = result.stderr.splitlines()
    assert lines[0] == f"run directory: {workdir}"
    # Without a terminal: one progress line per 10% of the steps, with the loss and the speed.
    progress = [line for line in lines if line.startswith("progress:")]
    pattern = r"progress: step (\d+)/100 \(\1%\), loss \d\.\d+(e-\d+)?, [\d.]+ steps/s"
    assert all(re.fullmatch(pattern, line) for line in progress), progress
    assert [int(re.search(r"step (\d+)", line)[1]) for line in progress] == list(range(10, 101, 10))
    return workdir


def test_resume_refuses_a_changed_config_and_records_an_extension(tmp_path, short, full):
    workdir = tmp_path / "run"
    shutil.copytree(short, workdir)
    before = _snapshot(workdir)
    for change, named in [
        ("--config.optimizer.learning_rate=0.2", "optimizer.learning_rate (0.1 -> 0.2)"),
        ("--config.seed=1", "seed (0 -> 1)"),
        ("--config.model.widths=(16,)", "model.widths ([8] -> [16])"),
    ]:
        result = _run(*ARGS, FULL, change, f"--workdir={workdir}", "--resume")
        assert result.returncode == 2, result.stderr
        (line,) = result.stderr.strip().splitlines()
        refused = line.partition("different config: ")[2].partition(" differ from")[0]
        assert refused == named and "use --overwrite" in line  # raising num_steps is accepted
        assert _snapshot(workdir) == before

    # More steps and another checkpoint cadence: a pure extension, resumed and recorded.
    resumed = _run(*ARGS, FULL, "--config.checkpoint_every=50", f"--workdir={workdir}", "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert read_records(workdir / "metrics.jsonl") == full
    summary = _strict((workdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] == 100
    (entry,) = summary["resumes"]
    assert entry["step"] == 100
    assert entry["changed"] == {"checkpoint_every": [40, 50], "num_steps": [100, 400]}
    config = _strict((workdir / "config.json").read_text())
    assert config["num_steps"] == 400 and config["checkpoint_every"] == 50
    assert config["resume_history"] == [entry]


def test_resume_without_a_checkpoint_refuses_unless_the_directory_is_empty(tmp_path):
    workdir = tmp_path / "run"
    workdir.mkdir()
    (workdir / "metrics.jsonl").write_text('{"step": 0, "train_loss": 1.0}\n')
    (workdir / "config.json").write_text("{}")
    args = ["--config.num_steps=5", "--config.plots=False"]
    result = _run(*args, f"--workdir={workdir}", "--resume")
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"error: no checkpoint in {workdir}; use --overwrite to start again"
    )
    assert _snapshot(workdir) == {
        "metrics.jsonl": b'{"step": 0, "train_loss": 1.0}\n', "config.json": b"{}"
    }  # fmt: skip

    empty = tmp_path / "empty"
    empty.mkdir()
    result = _run(*args, f"--workdir={empty}", "--resume")
    assert result.returncode == 0, result.stderr
    assert f"{empty} is empty or absent: nothing to resume, starting afresh" in result.stderr
    assert _strict((empty / "summary.json").read_text())["step"] == 5


def test_a_corrupted_latest_checkpoint_falls_back_to_the_previous_one(tmp_path, short, full):
    workdir, broken = tmp_path / "run", tmp_path / "broken"
    shutil.copytree(short, workdir)
    shutil.copytree(short, broken)
    assert complete_steps(workdir / "checkpoints") == [80, 100]

    # None readable: one line, exit 2, nothing changed.
    _corrupt(broken / "checkpoints" / "80")
    _corrupt(broken / "checkpoints" / "100")
    before = _snapshot(broken)
    result = _run(*ARGS, FULL, f"--workdir={broken}", "--resume")
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    (line,) = lines
    assert line.startswith("error: no readable checkpoint in") and "step 100" in line
    assert "step 80" in line
    assert _snapshot(broken) == before

    # The newest unreadable: a warning naming it, the previous one restored, the records cut to
    # its step, and the resumed run writes the uninterrupted records.
    _corrupt(workdir / "checkpoints" / "100")
    result = _run(*ARGS, FULL, f"--workdir={workdir}", "--resume")
    assert result.returncode == 0, result.stderr
    (warning,) = [line for line in result.stderr.splitlines() if line.startswith("warning")]
    assert f"{workdir / 'checkpoints' / '100'} is unreadable" in warning
    assert "resuming from step 80" in warning
    assert _strict((workdir / "summary.json").read_text())["resumed_from"] == 80
    assert read_records(workdir / "metrics.jsonl") == full
    assert (workdir / "checkpoints-unreadable" / "100").is_dir()


@pytest.mark.parametrize("signum, code", [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_sigterm_and_sigint_checkpoint_then_resume_writes_the_uninterrupted_metrics(
    tmp_path, full, signum, code
):
    workdir = tmp_path / "run"
    proc = subprocess.Popen(
        _cmd(*ARGS, FULL, f"--workdir={workdir}"),
        cwd=REPO, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    # The run directory is named when the run starts, before any step.
    assert proc.stderr.readline() == f"run directory: {workdir}\n"
    assert proc.poll() is None
    for line in proc.stderr:
        if line.startswith("progress:"):  # 10% of the steps done
            proc.send_signal(signum)
            break
    rest = proc.stderr.read().strip().splitlines()
    assert proc.wait(timeout=120) == code, rest
    summary = _strict((workdir / "summary.json").read_text())
    assert summary["status"] == "interrupted" and summary["signal"] == signum.name
    step = summary["step"]
    assert 40 <= step < 400, "the run ended before the signal arrived"
    assert complete_steps(workdir / "checkpoints")[-1] == step
    assert read_records(workdir / "metrics.jsonl")[-1]["step"] <= step
    message = rest[-1]
    assert message.startswith(f"interrupted by {signum.name} at step {step} (checkpointed);")

    command = shlex.split(message.partition("resume with: ")[2])
    assert command[-2:] == [f"--workdir={workdir}", "--resume"]
    resumed = subprocess.run(command, cwd=REPO, env=_env(), capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr
    summary = _strict((workdir / "summary.json").read_text())
    assert summary["status"] == "completed" and summary["resumed_from"] == step
    assert read_records(workdir / "metrics.jsonl") == full


def test_ctrl_c_outside_the_loop_is_one_line_and_exit_130(monkeypatch, capsys):
    """Ctrl-C while the config is built (before the loop's own handler is installed)."""
    from experiments import run

    def interrupted(argv):
        raise KeyboardInterrupt

    monkeypatch.setattr(run, "_main", interrupted)
    assert run.main([]) == 130
    assert capsys.readouterr().err == "interrupted: stopped before a checkpoint could be written\n"
