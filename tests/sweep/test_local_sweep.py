"""End-to-end sweeps on this machine: real runner processes, re-runs, --report, config errors."""

import contextlib
import csv
import io
import json
import shutil
import sys
import time
from pathlib import Path

import pytest

from dynamics.sweep import manifest
from dynamics.sweep.local import run_local
from experiments import sweep as sweep_cli

REPO = Path(__file__).resolve().parents[2]
CONFIG = "tests/sweep/tiny_config.py"
GOOD, DIVERGED, FAILED = (
    "learning_rate=0.1",
    "learning_rate=10000.0",
    "learning_rate=0.2,num_train=100000",
)
NAMES = {GOOD: "completed", DIVERGED: "diverged", FAILED: "failed"}


@contextlib.contextmanager
def sweep_context():
    """The sweep runs from the repository; its runs get one CPU device (not the session's 8)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(REPO)
        mp.setenv("JAX_PLATFORMS", "cpu")
        mp.setenv("XLA_FLAGS", "--xla_force_host_platform_device_count=1")
        yield


def sweep(*args):
    """``python -m experiments.sweep ARGS`` in this process; returns (exit code, stdout)."""
    out = io.StringIO()
    with sweep_context(), contextlib.redirect_stdout(out):
        code = sweep_cli.main(list(args))
    return code, out.getvalue()


def commands(sweep_dir, name):
    """The runner command lines a run's log has seen, one per launch."""
    log = Path(sweep_dir, "logs", f"{name}.log")
    return [line for line in log.read_text().splitlines() if line.startswith("$ ")]


@pytest.fixture(scope="module")
def first(tmp_path_factory):
    sweep_dir = tmp_path_factory.mktemp("sweep")
    return sweep_dir, *sweep(f"--config={CONFIG}", f"--sweep_dir={sweep_dir}", "--max_parallel=3")


def test_sweep_runs_everything_despite_failures(first):
    sweep_dir, code, out = first
    assert code == 0, out[-3000:]
    m = manifest.load(sweep_dir)
    assert {r.name: r.status for r in m.runs} == NAMES
    for run in m.runs:
        assert run.job_id.startswith("local:")
        assert Path(run.workdir).parent == sweep_dir
    bad = m.run(FAILED)
    assert bad.returncode == 2 and "num_train" in (sweep_dir / "logs" / f"{FAILED}.log").read_text()
    # The printed table and results.csv list every run with its status and summary metrics.
    for name, status in NAMES.items():
        assert any(line.split()[:2] == [name, status] for line in out.splitlines())
    with open(sweep_dir / "results.csv") as f:
        rows = {r["name"]: r for r in csv.DictReader(f)}
    assert {n: r["status"] for n, r in rows.items()} == NAMES
    assert float(rows[GOOD]["optimizer.learning_rate"]) == 0.1
    final = m.run(GOOD).summary["final"]
    assert float(rows[GOOD]["final.loss"]) == pytest.approx(final["loss"], rel=1e-6)
    assert float(rows[GOOD]["final.train_accuracy"]) == pytest.approx(final["train_accuracy"])
    assert rows[FAILED]["final.loss"] == ""
    assert "final.loss against optimizer.learning_rate" in out
    assert (sweep_dir / "plots" / "final.loss.png").stat().st_size > 1000


def test_rerun_skips_resumes_and_retries(first):
    sweep_dir, _, _ = first
    m = manifest.load(sweep_dir)
    # Interrupt the good run after its first checkpoint: no summary, no last checkpoint.
    cut = Path(m.run(GOOD).workdir)
    (cut / "summary.json").unlink()
    steps = sorted(int(p.name) for p in (cut / "checkpoints").iterdir() if p.name.isdigit())
    shutil.rmtree(cut / "checkpoints" / str(steps[-1]))
    before = (Path(m.run(DIVERGED).workdir) / "summary.json").read_text()
    base = [f"--config={CONFIG}", f"--sweep_dir={sweep_dir}", "--max_parallel=2"]

    # Without --retry_failed the failed run stays as it is.
    code, out = sweep(*base, "--dry_run")
    assert code == 0 and "1 resume, 2 skip" in out, out
    assert f"skip   {FAILED} [failed]" in out and f"resume {GOOD} [interrupted]" in out

    code, out = sweep(*base, "--retry_failed")
    assert code == 0, out[-3000:]
    assert "1 resume, 1 skip, 1 retry" in out, out
    m = manifest.load(sweep_dir)
    assert {r.name: r.status for r in m.runs} == NAMES
    resumed = commands(sweep_dir, GOOD)
    assert len(resumed) == 2 and "--resume" in resumed[1]
    assert json.loads((cut / "summary.json").read_text())["resumed_from"] == steps[-2]
    retried = commands(sweep_dir, FAILED)
    assert len(retried) == 2 and "--overwrite" in retried[1]
    assert len(commands(sweep_dir, DIVERGED)) == 1
    assert (Path(m.run(DIVERGED).workdir) / "summary.json").read_text() == before


def test_report_rebuilds_from_manifest(first, tmp_path):
    sweep_dir, _, _ = first
    copy = tmp_path / "copy"
    shutil.copytree(sweep_dir, copy, ignore=shutil.ignore_patterns("results.csv", "plots"))
    # Without --config: the manifest alone (and the runs' summaries) rebuild table and plot.
    code, _ = sweep(f"--sweep_dir={copy}", "--report", "--metric=final.loss")
    assert code == 0
    assert (copy / "results.csv").read_text() == (sweep_dir / "results.csv").read_text()
    assert (copy / "plots" / "final.loss.png").exists()


def test_config_errors_fail_before_launching(tmp_path, capsys):
    for bad, message in [
        ("--config.optimizer.nam=1", "unknown field optimizer.nam for sgd; valid fields"),
        ("--config.optimizer.learning_rate=1", "also set by the sweep"),
        # A shared value is applied to every run and validated before anything launches.
        ("--config.optimizer.name=adamm", "unknown optimizer 'adamm'"),
        ("--config.num_steps=many", "num_steps"),
        ("--config.probes.sharpnes.every=5", "unknown probe 'sharpnes'"),
    ]:
        assert sweep_cli.main([f"--config={CONFIG}", f"--sweep_dir={tmp_path}", bad]) == 2
        assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    code = sweep_cli.main(
        [f"--config={CONFIG}:three", f"--sweep_dir={tmp_path}", "--limit=2", "--dry_run"]
    )
    out = capsys.readouterr().out
    assert code == 0 and "2 runs" in out and "2 start" in out
    assert "learning_rate=0.2" not in out and not list(tmp_path.iterdir())


def test_local_executor_parallelism_and_exit_codes(tmp_path):
    """Real processes: never more than max_parallel at once; exit codes recorded."""
    stamp = "import sys, time; open(sys.argv[1], 'a').write(f'{time.time()}\\n'); time.sleep(1.0); "
    jobs = []
    for i, code in enumerate([0, 3, 0, 0]):
        run = manifest.Run(name=f"r{i}", overrides={"i": i}, workdir=str(tmp_path / f"r{i}"))
        argv = [sys.executable, "-c", stamp + f"sys.exit({code})", str(tmp_path / f"t{i}")]
        jobs.append((run, argv))
    events = []
    start = time.time()
    run_local(
        jobs, str(tmp_path), tmp_path / "logs", 2, lambda r: events.append((r.name, r.status))
    )
    starts = sorted(float((tmp_path / f"t{i}").read_text()) - start for i in range(4))
    # Two at a time: the third starts only after one of the first two ended (1 s each).
    assert starts[2] - starts[0] > 0.9 and starts[1] - starts[0] < 0.8
    assert [r.status for r, _ in jobs] == ["failed"] * 4  # no summary.json: a runner bug is failed
    assert [r.returncode for r, _ in jobs] == [0, 3, 0, 0]
    assert events.count(("r1", "running")) == 1 and ("r1", "failed") in events


def test_slurm_options_from_config_section_and_flags():
    """Flags win over the config's sweep section; --sbatch lines add to the section's."""
    section = {"partition": "cpu", "time_min": 30, "mem": "4G", "sbatch": {"account": "lab"}}
    args, _ = sweep_cli.parse_args(
        ["--config=c.py", "--partition=gpu", "--gpus_per_task=1", "--sbatch=--qos=high"]
    )
    opts = sweep_cli.slurm_options(args, section)
    assert (opts.partition, opts.time_min, opts.mem, opts.gpus_per_task) == ("gpu", 30, "4G", 1)
    assert opts.sbatch == {"account": "lab", "qos": "high"}
    params = opts.submitit_parameters()
    assert params["additional_parameters"] == {"account": "lab", "qos": "high"}
    assert "cpus_per_task" not in params  # unset: Slurm's default, not submitit's
    with pytest.raises(sweep_cli.ConfigError, match="unknown field sweep.gpus"):
        sweep_cli.sweep_section({"sweep": {"gpus": 1}})
