"""Convolutional network on NHWC images: conv blocks, then dense layers, then a linear output.

Each block is ``act(conv_kxk(h))`` followed by 2x2 pooling (``pool="avg"`` or ``"max"``; ``"none"``
keeps the resolution, SAME padding throughout). The feature map is flattened into ``dense``
hidden layers and a linear layer of ``spec.num_outputs`` units.

Inputs whose ``spec.input_shape`` is already ``(H, W, C)`` are used as they are. Flat inputs are
reshaped to ``image_shape = (H, W, C)``; ``channels_first=True`` reads each flat vector as
``(C, H, W)`` first, the layout of CIFAR-10's 3,072-vectors.

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

import math
from collections.abc import Callable, Sequence

import flax.linen as nn
import jax

from dynamics.models import MODELS, Model, from_linen, get_activation
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
        h_, w_, c_ = self.image_shape
        if self.channels_first:
            h = x.reshape((x.shape[0], c_, h_, w_)).transpose(0, 2, 3, 1)
        else:
            h = x.reshape((x.shape[0], h_, w_, c_))
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
    if image_shape is None:
        if len(spec.input_shape) != 3:
            raise ConfigError(
                f"model.image_shape is required for inputs of shape {tuple(spec.input_shape)}; "
                "give (H, W, C) or use image inputs (data.flatten=False)"
            )
        image_shape = spec.input_shape
    image_shape = tuple(int(d) for d in image_shape)
    if len(image_shape) != 3 or math.prod(image_shape) != math.prod(spec.input_shape):
        raise ConfigError(
            f"model.image_shape {image_shape} must be (H, W, C) with "
            f"{math.prod(spec.input_shape)} entries"
        )
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
