"""Image inputs for the convolutional and vision models: the ``(H, W, C)`` shape and NHWC layout,
and the convolution (+ BatchNorm) layer the CIFAR networks share.

A model over images takes either ``spec.input_shape = (H, W, C)`` as it is, or flat vectors that
it reshapes to ``image_shape = (H, W, C)``; ``channels_first=True`` reads each flat vector as
``(C, H, W)`` first, the layout of CIFAR-10's 3,072-vectors.

Example:
  >>> import numpy as np
  >>> from dynamics.data import DataSpec
  >>> image_shape(DataSpec((3072,), "float32", 10), (32, 32, 3), "cnn")
  (32, 32, 3)
  >>> to_nhwc(np.zeros((2, 3072)), (32, 32, 3), channels_first=True).shape
  (2, 32, 32, 3)
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import flax.linen as nn

from dynamics.registry import ConfigError


def image_shape(spec, shape: Sequence[int] | None, model: str) -> tuple[int, int, int]:
    """The ``(H, W, C)`` of ``spec``'s inputs, given as ``shape`` for flat inputs."""
    if shape is None:
        if len(spec.input_shape) != 3:
            raise ConfigError(
                f"model.image_shape is required by model {model!r} for inputs of shape "
                f"{tuple(spec.input_shape)}; give (H, W, C) or use image inputs "
                "(data.flatten=False)"
            )
        shape = spec.input_shape
    shape = tuple(int(d) for d in shape)
    if len(shape) != 3 or math.prod(shape) != math.prod(spec.input_shape):
        raise ConfigError(
            f"model.image_shape {shape} must be (H, W, C) with "
            f"{math.prod(spec.input_shape)} entries"
        )
    return shape


def to_nhwc(x, shape: tuple[int, int, int], channels_first: bool):
    """A batch of images or flat vectors as ``[batch, H, W, C]``."""
    h, w, c = shape
    if channels_first:
        return x.reshape((x.shape[0], c, h, w)).transpose(0, 2, 3, 1)
    return x.reshape((x.shape[0], h, w, c))


def conv_norm(h, features: int, train: bool, batch_norm: bool, stride: int = 1):
    """A 3x3 SAME convolution, then BatchNorm (Ioffe & Szegedy 2015; momentum 0.9, eps 1e-5, batch
    statistics when ``train``) if ``batch_norm``; the convolution has a bias only without it,
    since the BatchNorm shift replaces it. Call inside a compact linen module."""
    h = nn.Conv(
        features, (3, 3), strides=(stride, stride), padding="SAME", use_bias=not batch_norm
    )(h)
    if batch_norm:
        h = nn.BatchNorm(use_running_average=not train, momentum=0.9, epsilon=1e-5)(h)
    return h
