"""CIFAR-10 from the standard python-pickle batches in a directory the user gives.

The directory (``cifar-10-batches-py`` from https://www.cs.toronto.edu/~kriz/cifar.html) holds
``data_batch_1`` ... ``data_batch_5`` and ``test_batch``, each a pickled dict with ``b"data"``
(uint8 ``[10000, 3072]``, channel-major: 1024 red, then green, then blue pixels, rows of 32) and
``b"labels"`` (a list of ints). Only the files the requested images come from need to be there.
Nothing is downloaded.

``num_train`` / ``num_test`` keep the *first* N images in file order, as Cohen et al. 2021
("Gradient descent on neural networks typically occurs at the edge of stability") did with the
first 5,000 training images. Pixels are divided by 255; with ``standardize`` each of the 3,072
features is then centered and scaled by the training subset's mean and standard deviation (their
preprocessing).
``flatten`` keeps the channel-major 3,072-vectors; otherwise images are NHWC ``[n, 32, 32, 3]``.
The split is fixed by the files, so ``seed`` is unused.

Example:
  >>> ds = cifar10(0, path="~/data/cifar-10-batches-py", num_train=5000)  # doctest: +SKIP
  >>> ds.train["x"].shape  # doctest: +SKIP
  (5000, 3072)
"""

from __future__ import annotations

import os
import pickle

import numpy as np

from dynamics.data import DATASETS, Dataset, DataSpec, standardize_features
from dynamics.registry import ConfigError

TRAIN_FILES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_FILE = "test_batch"


def _missing_error(path: str, missing: list[str]) -> ConfigError:
    return ConfigError(
        f"data.path {path!r}: expected a directory with the CIFAR-10 python batches "
        f"{', '.join((*TRAIN_FILES, TEST_FILE))}; missing: {', '.join(missing)}"
    )


def _read(
    path: str, root: str, names: tuple[str, ...], limit: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Concatenates batches in order, opening only as many files as the first ``limit`` need.

    Only those files have to exist: the first 5,000 training images need ``data_batch_1`` alone.
    """
    xs, ys, count = [], [], 0
    for i, name in enumerate(names):
        if limit is not None and count >= limit:
            break
        file = os.path.join(root, name)
        if not os.path.isfile(file):
            rest = [n for n in names[i:] if not os.path.isfile(os.path.join(root, n))]
            raise _missing_error(path, rest)
        with open(file, "rb") as fh:
            batch = pickle.load(fh, encoding="bytes")
        xs.append(np.asarray(batch[b"data"], dtype=np.uint8))
        ys.append(np.asarray(batch[b"labels"], dtype=np.int32))
        count += len(ys[-1])
    x, y = np.concatenate(xs), np.concatenate(ys)
    return (x, y) if limit is None else (x[:limit], y[:limit])


@DATASETS.register("cifar10")
def cifar10(
    seed: int,
    path: str = "",
    num_train: int | None = None,
    num_test: int | None = None,
    standardize: bool = True,
    flatten: bool = True,
) -> Dataset:
    """CIFAR-10 read from ``path`` (see the module doc); ``seed`` is unused."""
    del seed
    root = os.path.expanduser(path)
    if not os.path.isdir(root):
        raise _missing_error(path, ["the directory itself"])
    for name, n, least in (("num_train", num_train, 1), ("num_test", num_test, 0)):
        if n is not None and n < least:
            raise ConfigError(f"data.{name} must be >= {least}, got {n}")
    has_test = num_test != 0
    x_tr, y_tr = _read(path, root, TRAIN_FILES, num_train)
    x_te, y_te = _read(path, root, (TEST_FILE,), num_test) if has_test else (None, None)
    x_tr = x_tr.astype(np.float64) / 255.0
    x_te = None if x_te is None else x_te.astype(np.float64) / 255.0
    if standardize:
        x_tr, x_te = standardize_features(x_tr, x_te)
    else:
        x_tr, x_te = (None if a is None else a.astype(np.float32) for a in (x_tr, x_te))

    def layout(x):
        return x if flatten else x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)

    shape = (3072,) if flatten else (32, 32, 3)
    test = {"x": layout(x_te), "y": y_te} if has_test else None
    return Dataset({"x": layout(x_tr), "y": y_tr}, test, 10, DataSpec(shape, "float32", 10))
