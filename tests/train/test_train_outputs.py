"""What a run leaves on disk: metrics.jsonl after a kill, truncation on resume, plots, summary."""

import datetime
import json
import math

import pytest

from configs import classification
from dynamics.train import plots, summary
from dynamics.train.metrics import MetricWriter, read_records, truncate
from experiments.run import default_workdir


def test_records_survive_a_cut_line_and_truncate_to_the_checkpoint(tmp_path):
    path = tmp_path / "metrics.jsonl"
    with MetricWriter(path) as writer:
        for step in (0, 10, 20, 30):
            writer.write({"step": step, "loss": 1.0 / (step + 1)})
        writer.write({"step": 40, "loss": math.nan})
    with open(path, "a") as f:
        f.write('{"step": 50, "lo')  # a kill in the middle of a write
    records = read_records(path)
    assert [r["step"] for r in records] == [0, 10, 20, 30, 40]
    assert records[-1]["loss"] is None  # NaN is not JSON: null
    assert '"loss": null' in path.read_text().splitlines()[4]
    assert truncate(path, 20) == records[:3]
    assert read_records(path) == records[:3]
    with MetricWriter(path) as writer:  # the resumed run appends after the kept records
        writer.write({"step": 30, "loss": 0.25})
    assert [r["step"] for r in read_records(path)] == [0, 10, 20, 30]


def test_tensorboard_events_when_asked(tmp_path):
    with MetricWriter(tmp_path / "metrics.jsonl", tmp_path / "tb") as writer:
        writer.write({"step": 1, "loss": 0.5, "grads": [1.0, 2.0]})
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "tb").iterdir())


def test_plots_pair_metrics_with_thresholds(tmp_path):
    records = [
        {"step": s, "loss": 1 / (s + 1), "train_accuracy": s / 10, "sharpness": s / 2,
         "sharpness_threshold": 4.0, "weight_norm/a": 1.0 + s, "weight_norm/b": 2.0, "lr": 0.1}
        for s in range(10)
    ]  # fmt: skip
    records[5] |= {"spectral_density_grid": [-1.0, 0.0, 1.0], "spectral_density": [0.1, 2.0, 0.0]}
    written = {p.name for p in plots.plot_run(records, tmp_path / "plots")}
    expected = {"loss.png", "accuracy.png", "sharpness.png", "metrics.png", "spectral_density.png"}
    assert written == expected
    assert all((tmp_path / "plots" / name).stat().st_size > 1000 for name in written)


def test_summary_fields(tmp_path):
    config = classification.get_config("digits_mlp")
    records = [{"step": 0, "train_loss": 2.0}, {"step": 5, "loss": 1.0, "train_loss": 0.5}]
    result = summary.build(config, records, status="completed", step=5, steps_per_sec=3.0)
    assert result["final"] == {"train_loss": 0.5, "loss": 1.0}
    assert result["status"] == "completed" and result["steps_per_sec"] == 3.0
    # A diverged run's final holds its last record only, non-finite values as None.
    diverged = [{"step": 0, "train_accuracy": 0.1}, {"step": 7, "loss": math.inf, "diverged": True}]
    result = summary.build(config, diverged, status="diverged", step=7, steps_per_sec=math.nan)
    assert result["final"] == {"loss": math.inf} and result["final_step"] == 7
    summary.write(tmp_path, result)
    text = (tmp_path / "summary.json").read_text()
    strict = json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} in summary.json"))
    assert strict["final"] == {"loss": None} and strict["steps_per_sec"] is None
    result = summary.build(config, records, status="completed", step=5, steps_per_sec=3.0)
    assert result["versions"]["jax"] and result["devices"]["count"] >= 1
    assert result["git_commit"] is None or len(result["git_commit"]) == 40
    summary.write(tmp_path, result)
    assert json.loads((tmp_path / "summary.json").read_text())["final"]["loss"] == 1.0


def test_default_workdir_names_config_preset_and_time():
    now = datetime.datetime(2026, 1, 2, 3, 4, 5)
    path = default_workdir("configs/classification.py:modular_mlp", now)
    assert str(path) == "runs/classification-modular_mlp/20260102-030405"
    assert (
        str(default_workdir("configs/classification.py", now))
        == "runs/classification/20260102-030405"
    )


def test_analysis_hook_result_goes_into_the_summary(tmp_path):
    from dynamics.analysis import ANALYSES

    @ANALYSES.register("_test_runner_last_step")
    def last_step(records, config, plots_dir):
        (plots_dir / "extra.png").write_bytes(b"png")
        return {"last_step": records[-1]["step"], "lr": config.optimizer.learning_rate}

    config = classification.get_config("digits_mlp")
    assert summary.analyze(config, [{"step": 3}], tmp_path / "plots") == {}
    config.analysis.name = "_test_runner_last_step"
    result = summary.analyze(config, [{"step": 3}], tmp_path / "plots")
    assert result == {"analysis": {"last_step": 3, "lr": 0.1}}
    assert (tmp_path / "plots" / "extra.png").exists()


def test_parameters_split_on_model_by_their_last_dimension():
    import jax
    import numpy as np
    from jax.sharding import PartitionSpec as P

    from dynamics.train import sharding

    mesh = sharding.make_mesh(2, 4)
    params = {"kernel": np.zeros((3, 8)), "bias": np.zeros(8), "odd": np.zeros((4, 6))}
    specs = {k: s.spec for k, s in sharding.param_sharding(mesh, params).items()}
    assert specs == {"kernel": P(None, "model"), "bias": P(), "odd": P()}
    placed = sharding.put(params, sharding.param_sharding(mesh, params))
    assert placed["kernel"].addressable_shards[0].data.shape == (3, 2)
    assert sharding.dataset_sharding(mesh, 10).spec == P("data")
    assert sharding.dataset_sharding(mesh, 9).spec == P()
    assert jax.device_count() == 8
