"""Scalar network ``f(x) = x * prod_{i=1}^D w_i`` (Kreisler et al. 2023, "Gradient descent
monotonically decreases the sharpness of gradient flow solutions in scalar networks and beyond").

The parameters are one vector ``{"w": [D]}``. With squared loss on one datum ``(x, y)`` gradient
flow conserves ``w_i^2 - w_j^2``; its solution from ``w`` is ``w_i* = sign(w_i) sqrt(w_i^2 + c)``
with ``prod_i (w_i^2 + c) = y^2 / x^2``. For the loss ``(f - y)^2 / 2`` the Hessian at that
minimum is ``x^2 grad(prod w) grad(prod w)^T``, rank one, with sharpness ``y^2 sum_i 1/w_i*^2``
(for any ``x``).

Inputs of any shape are flattened; every input coordinate is multiplied by the same product, so
``spec.num_outputs`` must equal the input size (1 for the paper's scalar datum).

``init_weights`` (a length-D sequence) starts at exact values, ignoring the rng, so an experiment
can place the weights near a chosen minimum; otherwise ``w_i = init_scale * (1 + 0.1 n_i)`` with
``n_i ~ N(0, 1)``: near-balanced positive weights.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from dynamics.data import DataSpec
  >>> model = scalar_network(DataSpec((1,), "float32", 1), depth=3, init_weights=(1.0, 2.0, 3.0))
  >>> params = model.init(jax.random.key(0), jnp.ones((1, 1)))
  >>> model.apply(params, jnp.array([[2.0]]))
  Array([[12.]], dtype=float32)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import jax
import jax.numpy as jnp

from dynamics.models import MODELS, Model
from dynamics.registry import ConfigError


@MODELS.register("scalar_network")
def scalar_network(
    spec,
    depth: int = 4,
    init_weights: Sequence[float] | None = None,
    init_scale: float = 1.0,
) -> Model:
    """``f(x) = x * prod_i w_i`` with ``depth`` scalar weights (see the module doc)."""
    size = math.prod(spec.input_shape)
    if spec.num_outputs != size:
        raise ConfigError(
            f"model 'scalar_network' outputs x * prod(w), so it needs num_outputs == input size; "
            f"got {spec.num_outputs} outputs for inputs of shape {tuple(spec.input_shape)}"
        )
    if init_weights is not None and len(init_weights) != depth:
        raise ConfigError(f"model.init_weights has {len(init_weights)} values, depth is {depth}")

    def init(rng, x):
        dtype = jnp.result_type(float)
        if init_weights is not None:
            return {"w": jnp.asarray(init_weights, dtype)}
        return {"w": init_scale * (1.0 + 0.1 * jax.random.normal(rng, (depth,), dtype))}

    def apply(params, x):
        return x.reshape((x.shape[0], -1)) * jnp.prod(params["w"])

    return Model(init, apply)
