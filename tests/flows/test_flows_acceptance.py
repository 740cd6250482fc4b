"""Central flows on the calibrated setting (slow), ``configs/central_flows.py:gd_gaussian`` and
``:rmsprop_gaussian``: MLP 8-16-16-1 tanh, 128 Gaussian inputs with random +-1 targets, half-MSE,
float64, 1,000 steps of GD at lr 0.25 (2/lr = 8) and of RMSProp at lr 0.003. The thresholds are
those measured in ``docs/experiments.md`` with a margin; where they are looser than the targets
set for this setting, the docs say so."""

import jax
import numpy as np
import pytest

from configs import central_flows
from dynamics.flows.experiment import analyze, flow_kwargs, problem, simulate

pytestmark = pytest.mark.slow


def _run(preset):
    config = central_flows.get_config(preset)
    with jax.enable_x64(True):
        loss_fn, opt, params, batch = problem(config)
        records = list(
            simulate(loss_fn, opt, params, batch, config.num_steps, **flow_kwargs(config))
        )
        return records, analyze(records, opt.threshold)


@pytest.fixture(scope="module")
def gd():
    return _run("gd_gaussian")


@pytest.fixture(scope="module")
def rmsprop():
    return _run("rmsprop_gaussian")


def test_before_the_correction_central_is_stable_and_gd_follows_it(gd):
    records, out = gd
    assert 150 < out["first_crossing"] < 300
    assert out["correction_on"] <= out["first_crossing"]
    assert out["pre_max_dist_central_stable"] <= 1e-10
    assert out["pre_max_rel_dist_gd_stable_from_50"] <= 0.05  # measured 0.035


def test_every_eigenvalue_in_the_edge_band_is_held_at_two_over_lr(gd):
    records, out = gd
    assert out["central_sharpness_max_rel"] <= 0.005
    assert out["central_sharpness_median_rel"] <= 1e-5
    assert out["max_active"] >= 2
    assert out["second_eigenvalue_held_max_rel"] <= 0.01  # measured 0.0049
    # Both top eigenvalues pinned at the end, not only the top one.
    np.testing.assert_allclose(records[-1]["central_eigenvalues"][:2], 8.0, rtol=1e-3)


def test_central_flow_predicts_the_smoothed_gd_loss_far_better_than_the_stable_flow(gd):
    _, out = gd
    assert out["loss_error_central"] <= 0.25  # measured 0.21 (the paper-level target is 0.10)
    assert out["loss_error_central_last300"] <= 0.15  # measured 0.11
    assert out["loss_error_stable"] >= 3 * out["loss_error_central"]  # 0.78 vs 0.21
    # GD's own oscillation along the top edge direction has the predicted variance X_11.
    assert 0.5 <= out["variance_ratio_top_median"] <= 2.0  # measured 0.89


def test_central_flow_ends_closer_to_gd_than_the_stable_flow(gd):
    _, out = gd
    assert out["final_dist_ratio"] <= 0.25  # measured 0.22


def test_rmsprop_effective_sharpness_is_held_and_the_loss_predicted(rmsprop):
    records, out = rmsprop
    assert out["correction_on"] is not None
    assert out["central_sharpness_median_rel"] <= 1e-5  # measured 1.3e-7
    assert out["central_sharpness_max_rel"] <= 0.005  # measured 0.0012
    assert out["max_active"] >= 3  # measured 5 of the k = 6 tracked
    assert not any(r["central_full"] for r in records)
    assert out["loss_error_central"] <= 0.10  # measured 0.041
    assert out["loss_error_stable_from_crossing"] >= 2 * out["loss_error_central_from_crossing"]
    assert out["stable_stopped_at"] is not None  # its effective sharpness exploded
