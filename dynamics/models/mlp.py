"""Fully connected network: ``x -> act(W_1 x + b_1) -> ... -> W_L h + b_L``.

Inputs of any shape are flattened per example. ``init="default"`` uses Flax's initializers
(kernels LeCun normal, variance 1/fan_in, biases 0); ``init="torch"`` reproduces
``torch.nn.Linear``: kernel and bias both ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` (what Cohen et al.
2021's PyTorch edge-of-stability code trains).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from dynamics.data import DataSpec
  >>> model = mlp(DataSpec((64,), "float32", 10), widths=(200, 200), activation="tanh")
  >>> params = model.init(jax.random.key(0), jnp.zeros((1, 64)))
  >>> params["Dense_0"]["kernel"].shape
  (64, 200)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dynamics.models import MODELS, Model, from_linen, get_activation
from dynamics.registry import ConfigError

INITS = ("default", "torch")


def symmetric_uniform(bound: float):
    """Initializer drawing ``U(-bound, bound)``."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_uniform(fan_in: int):
    """``U(+-1/sqrt(fan_in))``: PyTorch's default for Linear/Conv weights and biases."""
    return symmetric_uniform(1.0 / fan_in**0.5)


def dense(features: int, fan_in: int, use_bias: bool, init: str, name: str | None = None):
    """A Dense layer with Flax's or PyTorch's default initialization."""
    if init == "torch":
        u = torch_uniform(fan_in)
        return nn.Dense(features, use_bias=use_bias, kernel_init=u, bias_init=u, name=name)
    return nn.Dense(features, use_bias=use_bias, name=name)


def check_init(init: str) -> None:
    if init not in INITS:
        raise ConfigError(f"unknown model.init {init!r}; valid choices: {', '.join(INITS)}")


class MLP(nn.Module):
    widths: Sequence[int]
    num_outputs: int
    act: Callable[[jax.Array], jax.Array]
    use_bias: bool = True
    init_style: str = "default"

    @nn.compact
    def __call__(self, x):
        h = x.reshape((x.shape[0], -1))
        for width in self.widths:
            h = self.act(dense(width, h.shape[-1], self.use_bias, self.init_style)(h))
        return dense(self.num_outputs, h.shape[-1], self.use_bias, self.init_style)(h)


@MODELS.register("mlp")
def mlp(
    spec,
    widths: Sequence[int] = (200, 200),
    activation: str = "tanh",
    use_bias: bool = True,
    init: str = "default",
) -> Model:
    """An MLP with hidden ``widths`` and a linear output layer of ``spec.num_outputs`` units."""
    check_init(init)
    act = get_activation(activation)
    return from_linen(MLP(tuple(widths), spec.num_outputs, act, use_bias, init))
