"""In-memory datasets, deterministic by seed, and minibatching as a pure function of the step.

Every dataset constructor is registered in ``DATASETS`` as ``fn(seed: int, **kwargs) -> Dataset``:

* ``modular_arithmetic``: ``a op b mod p`` (one-hot pairs or token sequences), grokking tasks.
* ``digits``: scikit-learn's 1,797 8x8 handwritten digits, standardized.
* ``synthetic``: teacher-network and linear regression, Gaussian inputs with random labels;
  ``points``: a few exact scalar regression examples (the datum of a scalar network).
* ``cifar10``: CIFAR-10 read from the python-pickle batches in a directory the user gives.

Inputs are float32 (or int32 tokens), classification labels int32 class indices, regression
targets float32 ``[n, output_dim]``. Arrays are NumPy; the runner puts them on devices.

Example:
  >>> from dynamics.data import load_dataset
  >>> ds = load_dataset({"name": "modular_arithmetic", "p": 7, "batch_size": 0}, seed=0)
  >>> ds.train["x"].shape, ds.spec.num_outputs  # 30% of the 49 one-hot pairs
  ((15, 14), 7)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

import numpy as np

from dynamics.registry import ConfigError, Registry


class DataSpec(NamedTuple):
    """What a model needs to know about its inputs and outputs.

    Attributes:
      input_shape: shape of one input example (without the example axis).
      input_dtype: ``"float32"`` or ``"int32"`` (tokens).
      num_outputs: width of the model output (classes, or regression output dimension).
      vocab_size: number of distinct tokens for token inputs, else None.
    """

    input_shape: tuple[int, ...]
    input_dtype: str
    num_outputs: int
    vocab_size: int | None = None


class Dataset(NamedTuple):
    """A train/test split held in memory.

    Attributes:
      train: ``{"x": inputs, "y": labels or targets}`` with a leading example axis.
      test: the same for the test split, or None.
      num_classes: number of classes for classification, None for regression.
      spec: the :class:`DataSpec` models are built from.
    """

    train: dict[str, np.ndarray]
    test: dict[str, np.ndarray] | None
    num_classes: int | None
    spec: DataSpec


DATASETS: Registry = Registry("dataset")

# Keys of the ``data`` config section that belong to the runner, not to the dataset constructor.
RUNNER_KEYS = ("name", "batch_size")


def load_dataset(data_cfg: Mapping[str, Any], seed: int) -> Dataset:
    """Builds the dataset named by ``data_cfg["name"]`` from a ``data`` config section.

    The remaining keys, except the runner's own (``RUNNER_KEYS``: ``name``, ``batch_size``), are
    the constructor's keyword arguments; a ``seed`` key there overrides the run's ``seed`` for
    the data alone (same split and inputs across init seeds). Unknown names or fields raise
    :class:`dynamics.registry.ConfigError`.
    """
    if "name" not in data_cfg:
        raise ConfigError(f"missing field data.name; valid choices: {', '.join(DATASETS.names())}")
    kwargs = {k: v for k, v in data_cfg.items() if k not in RUNNER_KEYS}
    return DATASETS.build(data_cfg["name"], {"seed": seed, **kwargs}, where="data")


def split_indices(num_examples: int, num_train: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A seeded random split of ``range(num_examples)`` into ``num_train`` and the rest."""
    perm = np.random.default_rng(seed).permutation(num_examples)
    return perm[:num_train], perm[num_train:]


def standardize_features(train: np.ndarray, test: np.ndarray | None):
    """Per-feature ``(x - mean) / std`` with the train statistics; zero-variance features -> 0."""
    mean = train.mean(axis=0)
    std = train.std(axis=0)
    scale = np.where(std > 0, 1.0 / np.where(std > 0, std, 1.0), 0.0)
    out = [((a - mean) * scale).astype(np.float32) for a in (train, test) if a is not None]
    return out[0], (out[1] if test is not None else None)


# The modules register themselves in DATASETS, so they are imported after it exists.
from dynamics.data import cifar10, digits, modular, synthetic  # noqa: E402, F401
from dynamics.data.batching import batch_indices, get_batch, steps_per_epoch  # noqa: E402, F401
