"""Digits: split sizes, labels, and standardization with the train statistics."""

import numpy as np
from sklearn.datasets import load_digits

from dynamics.data import load_dataset


def test_standardization_matches_numpy_rederivation():
    raw = load_dataset({"name": "digits", "standardize": False, "batch_size": 32}, seed=4)
    ds = load_dataset({"name": "digits"}, seed=4)
    train = 16.0 * raw.train["x"].astype(np.float64)
    test = 16.0 * raw.test["x"].astype(np.float64)
    assert np.allclose(train, np.round(train)) and train.max() == 16.0  # raw pixel counts
    mean, std = train.mean(0), train.std(0)
    safe = np.where(std > 0, std, 1.0)
    np.testing.assert_allclose(
        ds.train["x"], np.where(std > 0, (train - mean) / safe, 0), atol=1e-5
    )
    np.testing.assert_allclose(ds.test["x"], np.where(std > 0, (test - mean) / safe, 0), atol=1e-5)
    varying = std > 0
    assert not varying.all()  # some corner pixels are always 0
    np.testing.assert_allclose(ds.train["x"][:, varying].std(0), 1.0, rtol=1e-4)
    assert np.all(ds.train["x"][:, ~varying] == 0) and np.all(ds.test["x"][:, ~varying] == 0)
    np.testing.assert_array_equal(ds.train["y"], raw.train["y"])


def test_shapes_labels_and_subsets():
    ds = load_dataset({"name": "digits"}, seed=0)
    assert ds.train["x"].shape == (1438, 64) and ds.test["x"].shape == (359, 64)
    assert ds.train["x"].dtype == np.float32 and ds.train["y"].dtype == np.int32
    labels = np.sort(np.concatenate([ds.train["y"], ds.test["y"]]))
    np.testing.assert_array_equal(labels, np.sort(load_digits().target))
    assert ds.num_classes == 10 and ds.spec.num_outputs == 10
    img = load_dataset({"name": "digits", "flatten": False, "num_train": 100}, seed=0)
    assert img.train["x"].shape == (100, 8, 8, 1) and img.spec.input_shape == (8, 8, 1)
    np.testing.assert_array_equal(img.train["y"], ds.train["y"][:100])
    other = load_dataset({"name": "digits"}, seed=1)
    assert not np.array_equal(other.train["y"], ds.train["y"])
