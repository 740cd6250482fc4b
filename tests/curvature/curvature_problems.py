"""Small float64 problems with dense Hessians, the reference every curvature test checks against.

Imported by the tests as ``curvature_problems`` (pytest puts this folder on ``sys.path``).

Each problem is returned as NumPy float64 arrays (parameters, data) plus pure functions; tests move
them to JAX inside ``with jax.enable_x64(True):`` so that the dense ``jax.hessian`` + ``eigh``
reference and the matrix-free code both run in float64.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

from dynamics.data import DataSpec
from dynamics.models import build_model


@dataclasses.dataclass
class Problem:
    params: Any  # NumPy float64 pytree
    data: dict  # NumPy arrays
    apply_fn: Callable
    per_example_loss: Callable

    def loss_fn(self, params, batch):
        return jnp.mean(self.per_example_loss(self.apply_fn(params, batch["x"]), batch["y"]))

    def jax_params(self):
        return jax.tree.map(jnp.asarray, self.params)

    def jax_data(self):
        return jax.tree.map(jnp.asarray, self.data)

    def dense_hessian(self) -> np.ndarray:
        return self.dense_hessian_at(self.jax_params())

    def dense_hessian_at(self, params) -> np.ndarray:
        flat, unravel = ravel_pytree(params)
        hessian = jax.jit(jax.hessian(lambda f, d: self.loss_fn(unravel(f), d)))
        return np.asarray(hessian(flat, self.jax_data()))

    def ravel(self, tree) -> np.ndarray:
        """NumPy, so that no float64 value is truncated outside ``jax.enable_x64``."""
        return np.concatenate([np.ravel(np.asarray(x)) for x in jax.tree.leaves(tree)])

    def unravel(self, flat):
        return ravel_pytree(self.jax_params())[1](jnp.asarray(flat))


def mse(outputs, y):
    onehot = jax.nn.one_hot(y, outputs.shape[-1], dtype=outputs.dtype)
    return 0.5 * jnp.sum((outputs - onehot) ** 2, axis=-1)


def cross_entropy(outputs, y):
    return -jnp.take_along_axis(jax.nn.log_softmax(outputs), y[:, None], axis=-1)[:, 0]


def _mlp_apply(params, x):
    h = jnp.tanh(x @ params["w1"] + params["b1"])
    return h @ params["w2"] + params["b2"]


def make_mlp(loss=mse, n=32, seed=0) -> Problem:
    """A 4-6-3 tanh MLP (51 parameters) away from a minimum: its Hessian is indefinite."""
    rng = np.random.default_rng(seed)
    params = {
        "w1": rng.normal(size=(4, 6)),
        "b1": 0.1 * rng.normal(size=6),
        "w2": rng.normal(size=(6, 3)),
        "b2": 0.1 * rng.normal(size=3),
    }
    data = {"x": rng.normal(size=(n, 4)), "y": rng.integers(0, 3, size=n).astype(np.int32)}
    return Problem(params, data, _mlp_apply, loss)


def make_wide_mlp(seed=0) -> Problem:
    """An 8-24-4 tanh MLP (316 parameters): Krylov methods must converge well before the space
    is exhausted (the 51-parameter MLP is decomposed exactly by 51 Lanczos steps)."""
    rng = np.random.default_rng(seed)
    params = {
        "w1": rng.normal(size=(8, 24)) / np.sqrt(8),
        "b1": 0.1 * rng.normal(size=24),
        "w2": rng.normal(size=(24, 4)) / np.sqrt(24),
        "b2": 0.1 * rng.normal(size=4),
    }
    data = {"x": rng.normal(size=(64, 8)), "y": rng.integers(0, 4, size=64).astype(np.int32)}
    return Problem(params, data, _mlp_apply, mse)


def make_transformer(seed=0) -> Problem:
    """A 1-layer pre-LN transformer (d 4, 2 heads) on length-3 sequences over 5 tokens."""
    spec = DataSpec((3,), "int32", 4, vocab_size=5)
    model = build_model(
        {"name": "transformer", "num_layers": 1, "d_model": 4, "num_heads": 2, "d_mlp": 8}, spec
    )
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 5, size=(16, 3)).astype(np.int32)
    params = model.init(jax.random.key(seed), jnp.asarray(x))
    params = jax.tree.map(lambda p: np.asarray(p, np.float64), params)
    data = {"x": x, "y": rng.integers(0, 4, size=16).astype(np.int32)}
    return Problem(params, data, model.apply, cross_entropy)
