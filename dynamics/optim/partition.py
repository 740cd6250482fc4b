"""Which leaves are matrices, how they are viewed as matrices, and the AdamW fallback for the rest.

Matrix update rules (Muon, Scion, Conda, ...) act on 2-D weights. This module holds the one rule
for everything else, so every matrix rule in ``dynamics.optim`` treats a parameter tree alike.

Default labelling (``default_labels``): a leaf with ``ndim >= 2 + batch_ndim`` is ``"matrix"``,
anything else (biases, norm scales, scalars) is ``"fallback"`` and goes to AdamW. Embedding
tables and output heads are 2-D and therefore ``"matrix"`` by default; send them to the fallback
with ``labels=`` (a pytree of labels or a function ``params -> labels``), e.g. ::

    labels = lambda p: jax.tree_util.tree_map_with_path(
        lambda path, x: "fallback" if "embed" in jax.tree_util.keystr(path) or x.ndim < 2
        else "matrix", p)

Matrix view (``to_matrices``): the leading ``batch_ndim`` axes are a batch of independent
matrices (stacked layers from ``nn.scan``/``vmap``); the *last* axis is the output axis (fan-out,
Flax ``Dense``/``Conv`` layout) and every axis in between is flattened into the input axis
(fan-in). A Flax conv kernel ``(h, w, c_in, c_out)`` is therefore the ``(h w c_in, c_out)``
matrix, and a stack ``(L, d_in, d_out)`` with ``batch_ndim=1`` is ``L`` matrices ``(d_in,
d_out)``. PyTorch-layout ``(out, in)`` weights are handled by the rules' ``layout="out_in"``
option, which only swaps the roles of the two axes in shape factors.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax

MATRIX = "matrix"
FALLBACK = "fallback"
LAYOUTS = ("in_out", "out_in")


def default_labels(params: Any, *, batch_ndim: int = 0) -> Any:
    """Labels each leaf ``"matrix"`` if ``ndim >= 2 + batch_ndim`` else ``"fallback"``."""
    return jax.tree.map(lambda x: MATRIX if jnp.ndim(x) >= 2 + batch_ndim else FALLBACK, params)


def matrix_shape(shape: tuple[int, ...], batch_ndim: int = 0) -> tuple[int, int, int]:
    """``(B, fan_in, fan_out)``: the shape of the matrix view of a leaf of ``shape``."""
    if len(shape) < 2 + batch_ndim:
        raise ValueError(f"a matrix leaf needs ndim >= {2 + batch_ndim}, got shape {shape}")
    return math.prod(shape[:batch_ndim]), math.prod(shape[batch_ndim:-1]), shape[-1]


def to_matrices(x: jax.Array, batch_ndim: int = 0) -> jax.Array:
    """Views ``x`` as a batch of matrices ``(B, fan_in, fan_out)`` by the module's rule."""
    return x.reshape(matrix_shape(x.shape, batch_ndim))


def from_matrices(m: jax.Array, like: jax.Array) -> jax.Array:
    """Inverse of ``to_matrices``: reshapes ``(B, fan_in, fan_out)`` back to ``like.shape``."""
    return m.reshape(like.shape)


def fan_in_out(shape: tuple[int, ...], batch_ndim: int = 0, layout: str = "in_out"):
    """``(fan_in, fan_out)`` of a leaf of ``shape`` under the matrix view and ``layout``."""
    rows, cols = math.prod(shape[batch_ndim:-1]), shape[-1]
    if layout == "in_out":
        return rows, cols
    if layout == "out_in":
        return cols, rows
    raise ValueError(f"unknown layout {layout!r}; choices: {', '.join(LAYOUTS)}")


def matrix_map(fn: Callable[[jax.Array], jax.Array], x: jax.Array, batch_ndim: int = 0):
    """Applies ``fn`` to the ``(B, m, n)`` matrix view of ``x`` and restores the shape."""
    return from_matrices(fn(to_matrices(x, batch_ndim)), x)


def with_fallback(
    matrix_tx: optax.GradientTransformation,
    fallback_tx: optax.GradientTransformation,
    *,
    labels: Any = None,
    batch_ndim: int = 0,
) -> optax.GradientTransformationExtraArgs:
    """Routes ``"matrix"`` leaves to ``matrix_tx`` and ``"fallback"`` leaves to ``fallback_tx``.

    Args:
      matrix_tx: the full update rule for matrices (already scaled by the learning rate).
      fallback_tx: the full update rule for the remaining leaves.
      labels: None for ``default_labels``; a pytree of ``"matrix"``/``"fallback"`` strings or a
        function ``params -> labels``.
      batch_ndim: leading axes treated as a batch of matrices by the default labelling.
    """
    if labels is None:

        def labels(params):
            return default_labels(params, batch_ndim=batch_ndim)

    return optax.partition({MATRIX: matrix_tx, FALLBACK: fallback_tx}, labels)


def adamw_fallback(
    learning_rate: optax.ScalarOrSchedule,
    *,
    b1: float = 0.9,
    b2: float = 0.999,
    eps: float = 1e-8,
    weight_decay: float = 0.0,
) -> optax.GradientTransformation:
    """The AdamW rule for non-matrix leaves (decoupled decay, off by default for biases)."""
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)


def matrix_optimizer(
    scale_tx: optax.GradientTransformation,
    learning_rate: optax.ScalarOrSchedule,
    *,
    weight_decay: float = 0.0,
    labels: Any = None,
    batch_ndim: int = 0,
    adam_learning_rate: optax.ScalarOrSchedule | None = None,
    adam_b1: float = 0.9,
    adam_b2: float = 0.999,
    adam_eps: float = 1e-8,
    adam_weight_decay: float = 0.0,
    fallback: optax.GradientTransformation | None = None,
) -> optax.GradientTransformationExtraArgs:
    """The optax alias of a matrix rule, with the AdamW fallback for non-matrix leaves.

    Matrices: ``scale_tx -> add_decayed_weights(weight_decay) -> scale_by_learning_rate``, so the
    decoupled decay is ``p <- p - lr (u + wd p)`` as in ``optax.adamw``. Other leaves:
    ``fallback`` when given, else ``optax.adamw(adam_learning_rate or learning_rate, ...)``.
    """
    matrix_tx = optax.chain(
        scale_tx,
        optax.add_decayed_weights(weight_decay),
        optax.scale_by_learning_rate(learning_rate),
    )
    if fallback is None:
        fallback = adamw_fallback(
            learning_rate if adam_learning_rate is None else adam_learning_rate,
            b1=adam_b1,
            b2=adam_b2,
            eps=adam_eps,
            weight_decay=adam_weight_decay,
        )
    return with_fallback(matrix_tx, fallback, labels=labels, batch_ndim=batch_ndim)
