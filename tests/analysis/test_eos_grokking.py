"""EoS and grokking summaries on synthetic records with known answers."""

import numpy as np
import pytest

from dynamics.analysis.eos import eos_summary, first_crossing, loss_windows, optimizer_threshold
from dynamics.analysis.grokking import grokking_summary, plot_arms


def test_eos_summary_on_a_synthetic_trajectory():
    steps = np.arange(0, 1000, 10)
    threshold = np.full(steps.shape, 25.0)
    # Rises linearly from 10 to 25 by step 500, then alternates 0.98 / 1.05 / 1.2 x threshold.
    values = np.where(steps < 500, 10 + 15 * steps / 500, 25.0)
    later = np.flatnonzero(steps >= 500)
    values[later] = 25.0 * np.resize([0.98, 1.05, 1.05, 1.2], later.size)
    loss_steps = np.arange(1000)
    # Falls over long windows, with a +20% bump every other step (local oscillation).
    losses = np.exp(-loss_steps / 300) * (1 + 0.2 * (loss_steps % 2))
    s = eos_summary(steps, values, threshold, loss_steps, losses)
    crossing = int(steps[np.flatnonzero(values >= 0.95 * 25)[0]])
    assert s["first_crossing_step"] == crossing == 460  # 10 + 15 * 460 / 500 = 23.8 >= 23.75
    after = values[steps > crossing] / 25.0
    assert s["fraction_within"] == np.mean(np.abs(after - 1) <= 0.1)
    np.testing.assert_allclose(s["largest_overshoot"], 0.2)
    assert s["loss_falls_over_windows"] and s["loss_non_monotone_descent"]
    np.testing.assert_allclose(s["loss_increase_fraction"], 0.5, atol=0.01)


def test_eos_summary_without_crossing_and_monotone_loss():
    s = eos_summary([0, 1, 2], [1.0, 2.0, 3.0], [10.0, 10.0, 10.0])
    assert s["first_crossing_step"] is None and s["fraction_within"] is None
    assert first_crossing(np.array([1.0, 9.6]), np.array([10.0, 10.0])) == 1
    # A series that starts above the line (Adam's step-0 preconditioned sharpness) must come down.
    assert first_crossing(np.array([1e9, 5.0, 7.0, 9.6]), np.full(4, 10.0)) == 3
    assert first_crossing(np.array([1e9, 11.0]), np.full(2, 10.0)) is None
    w = loss_windows(np.linspace(1.0, 0.1, 40))
    assert w["loss_falls_over_windows"] and not w["loss_non_monotone_descent"]
    assert not loss_windows(np.linspace(0.1, 1.0, 40))["loss_falls_over_windows"]


def _records():
    steps = np.arange(0, 2001, 50)
    train = np.clip(steps / 100, 0, 1)
    test = np.where(steps >= 1200, 0.97, 0.02)
    collapse = np.exp(-(((steps - 600) / 300.0) ** 2)) * 0.6
    return [
        {
            "step": int(s),
            "train_accuracy": float(a),
            "test_accuracy": float(b),
            "softmax_collapse": float(c),
        }
        for s, a, b, c in zip(steps, train, test, collapse)
    ]


def test_grokking_summary_and_figure(tmp_path):
    s = grokking_summary(_records(), collapse_window=1000)
    assert s["steps_to_train"] == 100  # first logged step with train accuracy >= 0.99
    assert s["steps_to_test"] == 1200
    assert s["delay"] == 1100 and s["delay_ratio"] == 12.0
    assert s["peak_softmax_collapse_step"] == 600
    np.testing.assert_allclose(s["peak_softmax_collapse"], 0.6)
    assert s["best_test_accuracy_in_window"] == 0.02
    never = grokking_summary([{"step": 0, "train_accuracy": 0.5, "test_accuracy": 0.1}])
    assert never["steps_to_train"] is None and never["delay"] is None
    plot_arms([("a", _records()), ("b", _records())], tmp_path / "g.png")
    assert (tmp_path / "g.png").stat().st_size > 1000


def test_optimizer_threshold_reads_the_configured_momentum_through_the_table():
    """threshold="optimizer": heavy ball (2 + 2b)/lr with the config's b (the registry default 0.9
    when unset); Nesterov (2 + 2b)/(lr (1 + 2b)); a rule without a closed form is an error."""
    assert optimizer_threshold({"name": "momentum", "learning_rate": 0.1, "momentum": 0.5}) == (
        pytest.approx(3.0 / 0.1)
    )
    assert optimizer_threshold({"name": "momentum", "learning_rate": 0.1}) == pytest.approx(38.0)
    nesterov = {"name": "nesterov", "learning_rate": 0.2, "momentum": 0.8}
    assert optimizer_threshold(nesterov) == pytest.approx(3.6 / (0.2 * 2.6))
    with pytest.raises(ValueError, match="adam"):
        optimizer_threshold({"name": "adam", "learning_rate": 0.1})
