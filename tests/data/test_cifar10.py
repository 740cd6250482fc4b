"""CIFAR-10 loader on tiny files in the real python-pickle batch format."""

import os
import pickle

import numpy as np
import pytest

from dynamics.data import load_dataset
from dynamics.registry import ConfigError

PER_FILE = 4
MISSING_AFTER_FIRST = "missing: data_batch_2, data_batch_3, data_batch_4, data_batch_5$"


@pytest.fixture(scope="module")
def cifar_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cifar-10-batches-py")
    rng = np.random.default_rng(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = rng.integers(0, 256, size=(PER_FILE, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, size=PER_FILE)]
        # The real files are Python 2 pickles of dicts with bytes keys.
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [f"{i}.png".encode() for i in range(PER_FILE)],
        }
        with open(root / name, "wb") as f:
            pickle.dump(batch, f, protocol=2)
        batches[name] = (data, np.array(labels))
    return str(root), batches


def test_first_n_in_file_order_and_pixel_scaling(cifar_dir):
    path, batches = cifar_dir
    ds = load_dataset({"name": "cifar10", "path": path, "num_train": 6, "standardize": False}, 0)
    data = np.concatenate([batches["data_batch_1"][0], batches["data_batch_2"][0][:2]])
    labels = np.concatenate([batches["data_batch_1"][1], batches["data_batch_2"][1][:2]])
    np.testing.assert_allclose(ds.train["x"], data / 255.0, rtol=1e-6)
    np.testing.assert_array_equal(ds.train["y"], labels)
    np.testing.assert_allclose(ds.test["x"], batches["test_batch"][0] / 255.0, rtol=1e-6)
    assert ds.train["y"].dtype == np.int32 and ds.spec.input_shape == (3072,)
    full = load_dataset({"name": "cifar10", "path": path, "num_test": 0}, 0)
    assert full.train["x"].shape == (5 * PER_FILE, 3072) and full.test is None


def test_standardized_per_feature_with_train_statistics(cifar_dir):
    path, batches = cifar_dir
    ds = load_dataset({"name": "cifar10", "path": path, "num_train": 8}, 0)
    train = np.concatenate([batches["data_batch_1"][0], batches["data_batch_2"][0]]) / 255.0
    test = batches["test_batch"][0] / 255.0
    mean, std = train.mean(0), train.std(0)
    np.testing.assert_allclose(ds.train["x"], (train - mean) / std, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(ds.test["x"], (test - mean) / std, rtol=1e-4, atol=1e-5)


def test_nhwc_layout(cifar_dir):
    path, batches = cifar_dir
    ds = load_dataset(
        {"name": "cifar10", "path": path, "num_train": 2, "flatten": False, "standardize": False}, 0
    )
    data = batches["data_batch_1"][0]
    assert ds.train["x"].shape == (2, 32, 32, 3) and ds.spec.input_shape == (32, 32, 3)
    for n, h, w, c in [(0, 0, 0, 0), (1, 5, 7, 2), (0, 31, 2, 1)]:
        assert ds.train["x"][n, h, w, c] == np.float32(data[n, c * 1024 + h * 32 + w] / 255.0)


def test_missing_directory_or_files_is_one_line_config_error(cifar_dir, tmp_path):
    with pytest.raises(ConfigError) as err:
        load_dataset({"name": "cifar10", "path": str(tmp_path / "nowhere")}, 0)
    msg = str(err.value)
    assert "\n" not in msg and "nowhere" in msg and "data_batch_1" in msg and "test_batch" in msg
    partial = tmp_path / "partial"
    partial.mkdir()
    src, _ = cifar_dir
    for name in ["data_batch_1", "data_batch_2", "test_batch"]:
        os.symlink(os.path.join(src, name), partial / name)
    with pytest.raises(ConfigError, match="missing: data_batch_3, data_batch_4, data_batch_5$"):
        load_dataset({"name": "cifar10", "path": str(partial)}, 0)


def test_only_the_files_the_requested_images_come_from_are_needed(cifar_dir, tmp_path):
    # The cifar5k preset (first 5,000 training images, no test set) reads data_batch_1 alone.
    src, batches = cifar_dir
    os.symlink(os.path.join(src, "data_batch_1"), tmp_path / "data_batch_1")
    ds = load_dataset({"name": "cifar10", "path": str(tmp_path), "num_train": 3, "num_test": 0}, 0)
    np.testing.assert_array_equal(ds.train["y"], batches["data_batch_1"][1][:3])
    assert ds.test is None
    with pytest.raises(ConfigError, match=MISSING_AFTER_FIRST):
        load_dataset({"name": "cifar10", "path": str(tmp_path), "num_train": 6}, 0)
    with pytest.raises(ConfigError, match="missing: test_batch$"):
        load_dataset({"name": "cifar10", "path": str(tmp_path), "num_train": 3}, 0)
    with pytest.raises(ConfigError, match="num_train must be >= 1"):
        load_dataset({"name": "cifar10", "path": str(tmp_path), "num_train": 0}, 0)
