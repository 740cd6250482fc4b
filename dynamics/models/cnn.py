"""Convolutional network on NHWC images: conv blocks, then dense layers, then a linear output.

Each block is ``act(conv_kxk(h))`` followed by 2x2 pooling (``pool="avg"`` or ``"max"``; ``"none"``
keeps the resolution, SAME padding throughout). The feature map is flattened into ``dense``
hidden layers and a linear layer of ``spec.num_outputs`` units.

Inputs are images ``(H, W, C)`` or flat vectors read as ``image_shape`` (``channels_first`` for
CIFAR-10's channel-major 3,072-vectors), as in :mod:`dynamics.models.images`.

Example:
  >>> import jax, jax.numpy as jnp
  >>> from dynamics.data import DataSpec
  >>> spec = DataSpec((3072,), "float32", 10)  # flattened CIFAR-10
  >>> model = cnn(spec, image_shape=(32, 32, 3), channels_first=True)
  >>> params = model.init(jax.random.key(0), jnp.zeros((1, 3072)))
  >>> params["Conv_0"]["kernel"].shape  # (kh, kw, in, out)
  (3, 3, 3, 32)
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import flax.linen as nn
import jax

from dynamics.models import MODELS, Model, from_linen, get_activation
from dynamics.models.images import image_shape as _image_shape
from dynamics.models.images import to_nhwc
from dynamics.registry import ConfigError

POOLS = ("avg", "max", "none")


class CNN(nn.Module):
    channels: Sequence[int]
    dense: Sequence[int]
    num_outputs: int
    act: Callable[[jax.Array], jax.Array]
    pool: str
    kernel_size: int
    image_shape: tuple[int, int, int]
    channels_first: bool

    @nn.compact
    def __call__(self, x):
        h = to_nhwc(x, self.image_shape, self.channels_first)
        for c in self.channels:
            h = self.act(nn.Conv(c, (self.kernel_size, self.kernel_size), padding="SAME")(h))
            if self.pool == "avg":
                h = nn.avg_pool(h, (2, 2), strides=(2, 2))
            elif self.pool == "max":
                h = nn.max_pool(h, (2, 2), strides=(2, 2))
        h = h.reshape((h.shape[0], -1))
        for width in self.dense:
            h = self.act(nn.Dense(width)(h))
        return nn.Dense(self.num_outputs)(h)


@MODELS.register("cnn")
def cnn(
    spec,
    channels: Sequence[int] = (32, 32),
    dense: Sequence[int] = (128,),
    activation: str = "relu",
    pool: str = "avg",
    kernel_size: int = 3,
    image_shape: Sequence[int] | None = None,
    channels_first: bool = False,
) -> Model:
    """A CNN over images of ``spec.input_shape`` or ``image_shape`` (see the module doc)."""
    if pool not in POOLS:
        raise ConfigError(f"unknown model.pool {pool!r}; valid choices: {', '.join(POOLS)}")
    image_shape = _image_shape(spec, image_shape, "cnn")
    return from_linen(
        CNN(
            tuple(channels),
            tuple(dense),
            spec.num_outputs,
            get_activation(activation),
            pool,
            kernel_size,
            image_shape,
            channels_first,
        )
    )
