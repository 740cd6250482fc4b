"""ResNet-20/-32 for CIFAR-shaped images (He et al. 2016, section 4.2).

A 3x3 convolution to 16 channels, then three stages of ``n`` basic blocks at 16, 32 and 64
channels (32x32, 16x16, 8x8), global average pooling and one linear layer: ``6n + 2`` layers,
``n = 3`` for ResNet-20 and ``n = 5`` for ResNet-32. A basic block is

    y = relu(x' + BN(conv3x3(relu(BN(conv3x3(x))))))

with the first block of stages 2 and 3 striding by 2. The shortcut ``x'`` is the paper's option A:
the identity, subsampled by 2 and zero-padded in channels where the shape changes, so it has no
parameters. Without BatchNorm (``batch_norm=False``) the convolutions carry biases instead.

Parameter counts with 10 classes (convolutions ``9 c_in c_out``, the head ``64 * 10 + 10``):

* ResNet-20: 267,696 + 650 = 268,346 weights, plus 1,376 BatchNorm scales and shifts: 269,722
  (the paper's 0.27M); 269,034 with biases and no BatchNorm.
* ResNet-32: 461,232 + 650 = 461,882, plus 2,272 BatchNorm parameters: 464,154 (0.46M);
  463,018 with biases and no BatchNorm.

``batch_norm=True`` (the paper's network) is available on the linen module (``ResNet(...,
batch_norm=True)``, ``train=True`` with ``mutable=["batch_stats"]``) but not from a config yet
(see :func:`dynamics.models.refuse_batch_norm`).

Example:
  >>> import jax, jax.numpy as jnp
  >>> from dynamics.data import DataSpec
  >>> model = resnet(DataSpec((32, 32, 3), "float32", 10), depth=20)
  >>> params = model.init(jax.random.key(0), jnp.zeros((1, 32, 32, 3)))
  >>> sum(p.size for p in jax.tree.leaves(params))
  269034
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from dynamics.models import MODELS, Model, from_linen, refuse_batch_norm
from dynamics.models.images import conv_norm, to_nhwc
from dynamics.models.images import image_shape as _image_shape
from dynamics.registry import ConfigError

STAGES = (16, 32, 64)


def _shortcut(x, channels: int, stride: int):
    """Option A: subsample by ``stride`` and zero-pad the new channels."""
    if stride > 1:
        x = x[:, ::stride, ::stride, :]
    extra = channels - x.shape[-1]
    if extra:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, 0), (extra // 2, extra - extra // 2)))
    return x


class BasicBlock(nn.Module):
    channels: int
    stride: int
    batch_norm: bool

    @nn.compact
    def __call__(self, x, train: bool):
        h = nn.relu(conv_norm(x, self.channels, train, self.batch_norm, self.stride))
        h = conv_norm(h, self.channels, train, self.batch_norm)
        return nn.relu(h + _shortcut(x, self.channels, self.stride))


class ResNet(nn.Module):
    blocks_per_stage: int
    num_outputs: int
    image_shape: tuple[int, int, int]
    channels_first: bool = False
    batch_norm: bool = False

    @nn.compact
    def __call__(self, x, train: bool = False):
        h = to_nhwc(x, self.image_shape, self.channels_first)
        h = nn.relu(conv_norm(h, STAGES[0], train, self.batch_norm))
        for i, channels in enumerate(STAGES):
            for j in range(self.blocks_per_stage):
                stride = 2 if i > 0 and j == 0 else 1
                h = BasicBlock(channels, stride, self.batch_norm)(h, train)
        return nn.Dense(self.num_outputs)(jnp.mean(h, axis=(1, 2)))


@MODELS.register("resnet")
def resnet(
    spec,
    depth: int = 20,
    batch_norm: bool = False,
    image_shape: Sequence[int] | None = None,
    channels_first: bool = False,
) -> Model:
    """The CIFAR ResNet of ``depth = 6n + 2`` layers (20, 32, 44, 56, 110, ...; module doc)."""
    if not isinstance(depth, int) or depth < 8 or (depth - 2) % 6:
        raise ConfigError(f"model.depth must be 6n + 2 (20, 32, 44, 56, 110), got {depth!r}")
    shape = _image_shape(spec, image_shape, "resnet")
    refuse_batch_norm(batch_norm, "resnet")
    return from_linen(ResNet((depth - 2) // 6, spec.num_outputs, shape, channels_first))
