"""The edge of stochastic stability on ``configs/stochastic_eos.py`` (Andreyev & Beneventano 2024).

Full batch reproduces GD's edge of stability; at batch sizes 32 and 64 the late median of batch
sharpness is within +-15% of 2/lr while lambda_max stays at most 0.9 x 2/lr at batch 32, at
least 0.1 x 2/lr below full batch's. The runs are the config's protocol with probes every 250
steps and 64 fresh minibatches per probe (about 1% standard error) to fit the CPU budget
(measured: 62 s of CPU, 3.6 min wall on the loaded 2-core machine).
"""

import pytest

from configs import stochastic_eos
from dynamics.sweep.launch import check_runs, load_sweep
from dynamics.train.build import build
from dynamics.train.config import validate
from dynamics.train.loop import train
from scripts.stochastic_eos import late_median, summarize


@pytest.mark.parametrize("preset", stochastic_eos.PRESETS)
def test_every_preset_and_the_sweep_validate(preset):
    config, runs = load_sweep(f"configs/stochastic_eos.py:{preset}")
    validate(config, num_devices=1)
    check_runs(config, runs)
    assert len(runs) == 7


def test_unknown_preset_names_the_choices():
    with pytest.raises(ValueError, match="valid presets: 128, 16, 256, 32, 64, 8, full"):
        stochastic_eos.get_config("12")


def test_late_median_ignores_one_outlying_probe_and_the_first_half():
    values = [9.0, 9.0, 9.0, 1.0, 1.0, 5.0, 1.0, 1.0]
    assert late_median(values) == 1.0


def _run(tmp_path, preset):
    config = stochastic_eos.get_config(preset)
    config.plots = False
    config.progress = False
    config.probes.evaluation.every = 0
    config.log_every = 250
    del config.probes["trace_condition"]
    config.probes.sharpness.every = 250
    config.probes.batch_sharpness.update(every=250, num_batches=64)
    assert train(build(config), tmp_path / preset)["status"] == "completed"
    return summarize(tmp_path / preset)


@pytest.mark.slow
def test_batch_sharpness_hovers_at_two_over_lr_while_lambda_max_is_suppressed(tmp_path):
    full, b32, b64 = (_run(tmp_path, p) for p in ("full", "32", "64"))
    assert 0.97 <= full["lambda_max_late"] <= 1.10, full
    assert 0.95 <= full["batch_sharpness_late"] <= 1.05, full
    for s in (b32, b64):
        assert 0.85 <= s["batch_sharpness_late"] <= 1.15, s
    assert b32["lambda_max_late_max"] <= 0.9, b32
    assert b32["lambda_max_late"] <= full["lambda_max_late"] - 0.1
