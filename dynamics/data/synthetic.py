"""Synthetic data: teacher-network, linear and one-hot regression, random labels.

Inputs are ``x ~ N(0, I_input_dim)`` (basis vectors for ``"one_hot"``); train and test are drawn
from the same seeded stream.

* ``"teacher"``: ``y = T(x) + noise * eps`` with ``T`` a random MLP with ``teacher_widths``
  hidden layers, ``teacher_activation``, weights ``N(0, 1/fan_in)`` and no biases, so every
  pre-activation has unit variance; targets float32 ``[n, output_dim]``.
* ``"linear"``: ``y = x W / sqrt(input_dim) + noise * eps`` with ``W ~ N(0, 1)``: unit-variance
  targets whatever the input dimension.
* ``"one_hot"``: example ``i`` is the basis vector ``e_i`` (so ``input_dim`` must equal
  ``num_train + num_test``) with target ``y_i ~ N(0, I_output_dim)``: one free output per datum,
  the setting of Agarwala et al. 2023's second-order regression model (``model.name =
  "quadratic"`` on these inputs is exactly their per-datum model).
* ``"random_labels"``: ``y`` uniform in ``[0, num_classes)``, independent of ``x``: a
  classification task that can only be memorized (Zhang et al. 2017, "Understanding deep
  learning requires rethinking generalization"); e.g. 1,000 Gaussian inputs in 32 dimensions
  with 10 random labels, on which full-batch GD shows the progressive sharpening of Cohen et al.
  (2021).
* ``"random_signs"``: regression targets ``y`` uniform in ``{-1, +1}^output_dim``, independent of
  ``x``: 128 of them in 8 dimensions are the central-flow tests' setting
  (``configs/central_flows.py:gd_gaussian``).

``points`` is a separate entry for a handful of exact regression examples given in the config,
e.g. the single datum ``(x, y)`` of a scalar network (Kreisler et al. 2023).

Example:
  >>> points(0, x=(1.0,), y=(2.0,)).train["y"]
  array([[2.]], dtype=float32)
  >>> ds = synthetic(0, kind="random_labels", num_train=1000, num_test=0, input_dim=32)
  >>> ds.train["x"].shape, ds.train["y"][:5].dtype, ds.test
  ((1000, 32), dtype('int32'), None)
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from dynamics.data import DATASETS, Dataset, DataSpec
from dynamics.registry import ConfigError

KINDS = ("teacher", "linear", "one_hot", "random_labels", "random_signs")
_ACTIVATIONS = {"tanh": np.tanh, "relu": lambda h: np.maximum(h, 0.0), "linear": lambda h: h}


def _teacher(rng, input_dim, widths, output_dim, activation):
    dims = (input_dim, *widths, output_dim)
    weights = [
        rng.standard_normal((i, o)) / np.sqrt(i) for i, o in zip(dims[:-1], dims[1:], strict=True)
    ]

    def apply(x):
        for w in weights[:-1]:
            x = activation(x @ w)
        return x @ weights[-1]

    return apply


@DATASETS.register("synthetic")
def synthetic(
    seed: int,
    kind: str = "teacher",
    num_train: int = 1000,
    num_test: int = 1000,
    input_dim: int = 32,
    output_dim: int = 1,
    num_classes: int = 10,
    noise: float = 0.0,
    teacher_widths: tuple[int, ...] = (128,),
    teacher_activation: str = "tanh",
) -> Dataset:
    """Synthetic regression or random-label classification (see the module doc)."""
    if kind not in KINDS:
        raise ConfigError(f"unknown data.kind {kind!r}; valid choices: {', '.join(KINDS)}")
    if teacher_activation not in _ACTIVATIONS:
        raise ConfigError(
            f"unknown data.teacher_activation {teacher_activation!r}; "
            f"valid choices: {', '.join(sorted(_ACTIVATIONS))}"
        )
    if num_train < 1 or num_test < 0:
        raise ConfigError(
            f"data.num_train must be >= 1 and data.num_test >= 0, got {num_train}, {num_test}"
        )
    n = num_train + num_test
    if kind == "one_hot" and input_dim != n:
        raise ConfigError(
            f"data.input_dim must be num_train + num_test = {n} for kind 'one_hot', got {input_dim}"
        )
    rng = np.random.default_rng(seed)
    x = np.eye(n) if kind == "one_hot" else rng.standard_normal((n, input_dim))
    if kind == "random_labels":
        y = rng.integers(0, num_classes, size=n).astype(np.int32)
        spec, classes = DataSpec((input_dim,), "float32", num_classes), num_classes
    else:
        if kind == "one_hot":
            y = rng.standard_normal((n, output_dim))
        elif kind == "random_signs":
            y = rng.choice([-1.0, 1.0], size=(n, output_dim))
        elif kind == "teacher":
            activation = _ACTIVATIONS[teacher_activation]
            y = _teacher(rng, input_dim, tuple(teacher_widths), output_dim, activation)(x)
        else:
            y = x @ (rng.standard_normal((input_dim, output_dim)) / np.sqrt(input_dim))
        y = (y + noise * rng.standard_normal((n, output_dim))).astype(np.float32)
        spec, classes = DataSpec((input_dim,), "float32", output_dim), None
    x = x.astype(np.float32)
    train = {"x": x[:num_train], "y": y[:num_train]}
    test = {"x": x[num_train:], "y": y[num_train:]} if num_test else None
    return Dataset(train, test, classes, spec)


@DATASETS.register("points")
def points(
    seed: int, x: float | Sequence[float] = (1.0,), y: float | Sequence[float] = (1.0,)
) -> Dataset:
    """Scalar regression examples ``(x_i, y_i)`` exactly as given: inputs and targets ``[n, 1]``.

    No test split; ``seed`` is unused.
    """
    del seed
    xs = np.atleast_1d(np.asarray(x, np.float32)).reshape(-1, 1)
    ys = np.atleast_1d(np.asarray(y, np.float32)).reshape(-1, 1)
    if len(xs) != len(ys) or not len(xs):
        raise ConfigError(
            f"data.x and data.y need the same non-zero length, got {len(xs)}, {len(ys)}"
        )
    return Dataset({"x": xs, "y": ys}, None, None, DataSpec((1,), "float32", 1))
