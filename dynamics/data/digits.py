"""scikit-learn's handwritten digits: 1,797 8x8 grey images in 10 classes, shipped with sklearn.

A seeded random split keeps ``test_fraction`` of the images for testing; ``num_train`` keeps the
first N of the (shuffled) training images. With ``standardize`` every pixel is mapped to
``(x - mean) / std`` with the training statistics (pixels that never vary, such as the corners,
become 0); otherwise pixels are scaled to [0, 1] by their maximum value 16. ``flatten`` gives
``[n, 64]`` vectors, else NHWC images ``[n, 8, 8, 1]``.

It is the small real dataset of the edge-of-stability runs in ``docs/experiments.md``
(64-200-200-10 tanh MLP, MSE, full-batch GD: the setting of Cohen et al. 2021, "Gradient Descent
on Neural Networks Typically Occurs at the Edge of Stability", at a size a CPU runs in minutes).

Example:
  >>> ds = digits(0)
  >>> ds.train["x"].shape, ds.test["x"].shape, ds.num_classes
  ((1438, 64), (359, 64), 10)
"""

from __future__ import annotations

import numpy as np
from sklearn.datasets import load_digits

from dynamics.data import DATASETS, Dataset, DataSpec, split_indices, standardize_features
from dynamics.registry import ConfigError


@DATASETS.register("digits")
def digits(
    seed: int,
    test_fraction: float = 0.2,
    num_train: int | None = None,
    standardize: bool = True,
    flatten: bool = True,
) -> Dataset:
    """The digits dataset, split and standardized as described in the module doc."""
    if not 0.0 <= test_fraction < 1.0:
        raise ConfigError(f"data.test_fraction must be in [0, 1), got {test_fraction}")
    raw = load_digits()
    x, y = raw.data.astype(np.float64), raw.target.astype(np.int32)
    num_test = int(round(test_fraction * len(x)))
    tr, te = split_indices(len(x), len(x) - num_test, seed)
    if num_train is not None:
        if not 0 < num_train <= len(tr):
            raise ConfigError(f"data.num_train must be in [1, {len(tr)}], got {num_train}")
        tr = tr[:num_train]
    x_tr, x_te = x[tr], (x[te] if num_test else None)
    if standardize:
        x_tr, x_te = standardize_features(x_tr, x_te)
    else:
        x_tr, x_te = (None if a is None else (a / 16.0).astype(np.float32) for a in (x_tr, x_te))
    shape = (64,) if flatten else (8, 8, 1)
    x_tr = x_tr.reshape((-1, *shape))
    test = {"x": x_te.reshape((-1, *shape)), "y": y[te]} if num_test else None
    return Dataset({"x": x_tr, "y": y[tr]}, test, 10, DataSpec(shape, "float32", 10))
