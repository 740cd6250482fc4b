"""End to end: a run with the sharpness probe logs it, with its threshold, to metrics.jsonl."""

import pytest

from configs import classification
from dynamics.train.build import build
from dynamics.train.loop import train
from dynamics.train.metrics import read_records


def test_run_with_sharpness_probe_writes_sharpness(tmp_path):
    config = classification.get_config("digits_mlp")
    config.model.widths = (16,)
    config.num_steps = 20
    config.probes.evaluation.every = 0
    config.checkpoint_every = 0
    config.plots = False
    config.probes.sharpness = {"every": 10, "k": 2, "num_examples": 256, "microbatch_size": 128}
    summary = train(build(config), tmp_path)
    assert summary["status"] == "completed"
    records = [r for r in read_records(tmp_path / "metrics.jsonl") if "sharpness" in r]
    assert [r["step"] for r in records] == [0, 10, 20]
    for r in records:
        assert r["sharpness"] >= r["sharpness_2"] > 0
        assert r["sharpness_threshold"] == pytest.approx(2 / config.optimizer.learning_rate)
        assert r["sharpness_residual"] < 1e-2 * r["sharpness"]
