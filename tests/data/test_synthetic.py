"""Synthetic data: shapes, the linear map, noise, and random labels."""

import numpy as np
import pytest

from dynamics.data import load_dataset
from dynamics.data.synthetic import synthetic
from dynamics.registry import ConfigError


def test_linear_targets_are_exactly_linear_and_noise_is_added():
    ds = synthetic(0, kind="linear", num_train=200, num_test=50, input_dim=8, output_dim=3)
    x = np.concatenate([ds.train["x"], ds.test["x"]]).astype(np.float64)
    y = np.concatenate([ds.train["y"], ds.test["y"]]).astype(np.float64)
    w, res, *_ = np.linalg.lstsq(x, y, rcond=None)
    assert np.abs(x @ w - y).max() < 1e-5 and ds.num_classes is None
    assert ds.spec.num_outputs == 3 and ds.train["y"].shape == (200, 3)
    noisy = synthetic(
        0, kind="linear", num_train=200, num_test=50, input_dim=8, output_dim=3, noise=0.1
    )
    np.testing.assert_array_equal(noisy.train["x"], ds.train["x"])
    assert abs(np.std(noisy.train["y"] - ds.train["y"]) - 0.1) < 0.01


def test_teacher_is_a_deterministic_nonlinear_function():
    kw = dict(kind="teacher", num_train=500, num_test=0, input_dim=16, teacher_widths=(32, 32))
    a, b = synthetic(0, **kw), synthetic(0, **kw)
    np.testing.assert_array_equal(a.train["y"], b.train["y"])
    assert a.test is None and a.train["y"].shape == (500, 1) and a.train["y"].dtype == np.float32
    x, y = a.train["x"].astype(np.float64), a.train["y"].astype(np.float64)
    residual = y - x @ np.linalg.lstsq(x, y, rcond=None)[0]
    assert 0.05 < residual.std() / y.std() < 0.99  # not linear, not noise
    assert 0.1 < y.std() < 10.0


def test_random_labels():
    ds = synthetic(0, kind="random_labels", num_train=1000, num_test=100, input_dim=32)
    y = ds.train["y"]
    assert y.dtype == np.int32 and ds.num_classes == 10 and ds.spec.num_outputs == 10
    counts = np.bincount(y, minlength=10)
    assert counts.min() > 60 and counts.max() < 140
    assert ds.train["x"].shape == (1000, 32) and abs(ds.train["x"].std() - 1.0) < 0.02
    with pytest.raises(ConfigError, match="data.kind"):
        synthetic(0, kind="spiral")


def test_one_hot_inputs_with_gaussian_targets():
    ds = synthetic(0, kind="one_hot", num_train=20, num_test=0, input_dim=20, output_dim=2)
    np.testing.assert_array_equal(ds.train["x"], np.eye(20, dtype=np.float32))
    assert ds.train["y"].shape == (20, 2) and 0.5 < ds.train["y"].std() < 1.5
    with pytest.raises(ConfigError, match="input_dim must be num_train \\+ num_test = 20"):
        synthetic(0, kind="one_hot", num_train=20, num_test=0, input_dim=32)


def test_points_are_exact():
    ds = load_dataset({"name": "points", "x": (1.0, -2.0), "y": (0.5, 3.0)}, seed=0)
    np.testing.assert_array_equal(ds.train["x"], [[1.0], [-2.0]])
    np.testing.assert_array_equal(ds.train["y"], [[0.5], [3.0]])
    assert ds.test is None and ds.num_classes is None and ds.spec.num_outputs == 1
    single = load_dataset({"name": "points", "x": 1.0, "y": -0.25}, seed=0)
    assert single.train["x"].shape == (1, 1) and single.train["y"][0, 0] == -0.25
    with pytest.raises(ConfigError, match="same non-zero length"):
        load_dataset({"name": "points", "x": (1.0,), "y": ()}, seed=0)
