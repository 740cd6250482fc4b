"""Unit tests of the sweep helpers: grids, names, manifest states, the results table and plot."""

import csv
import json
import sys
from pathlib import Path

import ml_collections
import pytest
from absl import flags
from ml_collections import config_flags

from dynamics import sweep as sw
from dynamics.registry import ConfigError
from dynamics.sweep import manifest, naming, results

LR = "optimizer.learning_rate"


def test_product_zip_chain():
    runs = sw.chain(
        sw.product(sw.axis(LR, [0.1, 0.2]), sw.axis("seed", [0, 1, 2])),
        sw.zip(sw.axis("optimizer.name", ["adam", "sgd"]), sw.axis(LR, [1e-3, 1e-2])),
    )
    assert len(runs) == 8
    # The first axis varies slowest, like nested loops.
    assert [(r[LR], r["seed"]) for r in runs[:6]] == [
        (0.1, 0),
        (0.1, 1),
        (0.1, 2),
        (0.2, 0),
        (0.2, 1),
        (0.2, 2),
    ]
    assert runs[6:] == [
        {"optimizer.name": "adam", LR: 1e-3},
        {"optimizer.name": "sgd", LR: 1e-2},
    ]


def test_merge_errors():
    with pytest.raises(ConfigError, match="sets seed twice"):
        sw.product(sw.axis("seed", [0]), sw.axis("seed", [1]))
    with pytest.raises(ConfigError, match="different lengths"):
        sw.zip(sw.axis("seed", [0, 1]), sw.axis(LR, [0.1]))


def test_run_names():
    assert sw.run_name({}) == "base"
    assert sw.run_name({LR: 0.1, "seed": 3}) == "learning_rate=0.1,seed=3"
    # Keys sharing a last component keep enough of their path to stay apart.
    name = sw.run_name({"model.width": 8, "data.width": 4, "model.act": "relu"})
    assert name == "model.width=8,data.width=4,act=relu"
    # Exact floats: nearby values give different names; unsafe characters are replaced.
    assert sw.run_name({LR: 0.1}) != sw.run_name({LR: 0.1 + 1e-12})
    name = sw.run_name({"data.path": "a/b c", "model.widths": (32, 16)})
    assert (
        name.startswith("path=a_b_c,widths=32x16-")
        and len(name) == len("path=a_b_c,widths=32x16") + 11
    )
    # ... and names that only differed in those characters stay apart.
    assert sw.run_name({"data.path": "a/b"}) != sw.run_name({"data.path": "a_b"}) == "path=a_b"
    long = sw.run_name({f"k{i}": "v" * 20 for i in range(10)})
    assert len(long) == naming.MAX_NAME
    assert long != sw.run_name({f"k{i}": "v" * 20 for i in range(9)} | {"k9": "w" * 20})


def test_format_value_parses_back_through_config_flags(monkeypatch):
    """Each value written for the runner's command line is read back equal by ml_collections."""
    config = ml_collections.ConfigDict(
        {"lr": 0.5, "steps": 1, "name": "x", "widths": (1, 2), "single": (1,), "flag": False}
    )
    values = {"lr": 1e-05, "steps": 7, "name": "adam", "widths": (32, 16), "single": (4,)}
    values["flag"] = True
    argv = ["prog", *(f"--config.{k}={naming.format_value(v)}" for k, v in values.items())]
    monkeypatch.setattr(sys, "argv", argv)  # config_flags reads the overrides from sys.argv
    fv = flags.FlagValues()
    config_flags.DEFINE_config_dict("config", config, flag_values=fv)
    fv(argv)
    assert {k: fv.config[k] for k in values} == values


def _run(tmp_path, name="seed=0", **kw):
    return manifest.Run(name=name, overrides={"seed": 0}, workdir=str(tmp_path / name), **kw)


def _summary(run, **summary):
    workdir = Path(run.workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "summary.json").write_text(json.dumps(summary))


def test_manifest_round_trip(tmp_path):
    m = manifest.Manifest(config="/c.py:x", overrides=["--config.num_steps=3"], cwd="/repo")
    m.runs.append(_run(tmp_path, job_id="12_0", summary={"status": "completed", "loss": 0.5}))
    manifest.save(tmp_path, m)
    assert manifest.load(tmp_path) == m
    assert manifest.load(tmp_path / "nothing") is None
    assert not list(tmp_path.glob("*.tmp"))


@pytest.mark.parametrize(
    "summary, prior, retry, status, action",
    [
        (None, "pending", False, "pending", "start"),
        ({"status": "completed"}, "running", False, "completed", "skip"),
        ({"status": "diverged"}, "running", True, "diverged", "skip"),
        ({"status": "failed"}, "running", False, "failed", "skip"),
        ({"status": "failed"}, "running", True, "failed", "retry"),
        ({"status": "running"}, "running", False, "interrupted", "resume"),
    ],
)
def test_refresh_and_action(tmp_path, summary, prior, retry, status, action):
    run = _run(tmp_path, status=prior)
    if summary is not None:
        _summary(run, **summary)
    manifest.refresh(run)
    assert (run.status, manifest.action(run, retry)) == (status, action)


def test_finish(tmp_path):
    # Runner exited non-zero before writing a summary: failed, and it stays failed.
    run = manifest.finish(_run(tmp_path, status="running"), 2)
    assert run.status == "failed"
    assert manifest.refresh(run).status == "failed"
    # The process vanished (killed, timed out) after creating its workdir: resumed next time.
    run = _run(tmp_path, name="seed=1", status="running")
    (tmp_path / "seed=1").mkdir()
    assert manifest.finish(run, None).status == "interrupted"
    # A summary wins over the exit code.
    run = _run(tmp_path, name="seed=2", status="running")
    _summary(run, status="diverged", final_loss=float("inf"))
    assert manifest.finish(run, 1).status == "diverged"
    # Stopped by SIGTERM / SIGINT with a checkpoint (exit 143 / 130, summary "interrupted"):
    # resumed next time; the same summary with any other exit code (a refused resume) failed.
    for code, status in [(143, "interrupted"), (130, "interrupted"), (2, "failed")]:
        run = _run(tmp_path, name=f"seed={code}", status="running")
        _summary(run, status="interrupted", step=40)
        assert manifest.finish(run, code).status == status
        assert manifest.action(run, retry_failed=False) == ("resume" if code != 2 else "skip")


def _swept_manifest(tmp_path):
    m = manifest.Manifest(config="/c.py", overrides=[], cwd="/")
    for i, (lr, opt) in enumerate([(0.1, "sgd"), (0.2, "sgd"), (0.1, "adam"), (0.2, "adam")]):
        summary = {"status": "completed", "final": {"sharpness": 10 * lr + i}, "note": "ok"}
        summary["final"]["sharpness_threshold"] = 2 / lr
        m.runs.append(
            manifest.Run(
                name=f"r{i}",
                overrides={LR: lr, "optimizer.name": opt},
                workdir=str(tmp_path / f"r{i}"),
                status="completed",
                summary=summary,
            )
        )
    m.runs.append(
        manifest.Run(name="bad", overrides={LR: 0.4, "optimizer.name": "sgd"}, workdir="/x")
    )
    m.runs[-1].status = "failed"
    return m


def test_table_csv_and_plot(tmp_path):
    m = _swept_manifest(tmp_path)
    header, rows = results.table(m)
    assert header == [
        "name",
        "status",
        LR,
        "optimizer.name",
        "final.sharpness",
        "final.sharpness_threshold",
        "note",
    ]
    assert rows[1] == ["r1", "completed", 0.2, "sgd", 3.0, 10.0, "ok"]
    assert rows[-1] == ["bad", "failed", 0.4, "sgd", None, None, None]
    text = results.format_table(header, rows)
    assert text.splitlines()[2].split() == ["r0", "completed", "0.1", "sgd", "1", "20", "ok"]
    short, short_rows = results.brief(header, rows, keep=4)
    assert short == header[:-1] and short_rows[0] == rows[0][:-1]  # "note" is not a final metric
    results.write_csv(tmp_path / "results.csv", header, rows)
    with open(tmp_path / "results.csv") as f:
        read = list(csv.reader(f))
    assert read[0] == header and read[5] == ["bad", "failed", "0.4", "sgd", "", "", ""]
    assert results.default_x(m.runs) == LR
    assert results.default_metric(m.runs) == "final.sharpness"
    path = results.plot(m, "final.sharpness", tmp_path / "plots" / "s.png")
    assert path.stat().st_size > 1000
    m.runs = m.runs[:1]
    with pytest.raises(ValueError, match="no swept field"):
        results.plot(m, "final.sharpness", tmp_path / "p.png")
